//! Short-circuit local reads (HDFS's "short-circuit local reads"): a client
//! on a datanode's host asks the datanode, over a Unix domain socket, for
//! the open files of a finalized replica (its block file and its `.meta`
//! checksum file), and then reads them itself, without the copy through
//! the datanode and loopback TCP. This module is the protocol both sides
//! speak; the datanode's side is `datanode::short_circuit`, the client's
//! `client::local`.
//!
//! **Connection.** The client connects to the path the datanode announced
//! (`DatanodeInfo.domain_socket_path`), sends `HSSC`, a version byte and
//! one [`FdRequest`] frame (`[len: u32 BE][postcard]`, as on the transfer
//! port). The datanode answers with one [`FdReply`] frame; a `Granted`
//! reply carries two descriptors in the same message (`SCM_RIGHTS`): the
//! block file, then the checksum file, both opened read-only.
//!
//! **Holding and revoking.** The client keeps the connection open for as
//! long as it reads from the descriptors, and closes it when done. When
//! the replica is deleted, reopened by a recovery, lost with its storage
//! directory or found corrupt, the datanode writes one [`Revoke`] frame on
//! every connection holding it and closes them. The client looks for
//! that (or for the connection ending: the datanode went away) before each
//! read it hands out, and goes on through the transfer port.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use serde::{Deserialize, Serialize};

use crate::namespace::BlockRec;

pub const MAGIC: &[u8; 4] = b"HSSC";
pub const VERSION: u8 = 1;
/// Largest frame accepted on the socket.
const MAX_FRAME: usize = 64 * 1024;

/// A client asks for a replica's files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FdRequest {
    /// The block as the namenode gave it: the replica must have at least
    /// this stamp and hold at least `len` bytes.
    pub block: BlockRec,
    /// The client's name (for the datanode's log).
    pub client: String,
}

/// The datanode's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FdReply {
    /// Two descriptors ride with this message: data, then checksums.
    Granted {
        /// The replica's stamp and length.
        gen_stamp: u64,
        len: u64,
    },
    Refused {
        /// An error code's name (`Code::name`).
        error: String,
        message: String,
    },
}

/// Written by the datanode on a granted connection when the replica's
/// descriptors must not be read any more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revoke {
    pub reason: String,
}

/// `[len: u32 BE][postcard]`.
pub fn encode_frame<T: Serialize>(v: &T) -> Vec<u8> {
    let body = hstack_daemon::format::encode_body(v);
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    buf
}

/// A whole frame at the start of `buf`: the value and the bytes it took;
/// `None` until `buf` holds all of it.
pub fn decode_frame<T: serde::de::DeserializeOwned>(buf: &[u8]) -> io::Result<Option<(T, usize)>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(bad_data(format!("frame of {len} bytes is too large")));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let v = hstack_daemon::format::decode_body("short-circuit frame", &buf[4..4 + len])
        .map_err(|e| bad_data(format!("undecodable frame: {e}")))?;
    Ok(Some((v, 4 + len)))
}

pub fn bad_data(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

/// The preamble and the request, as the client sends them.
pub fn encode_request(req: &FdRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&encode_frame(req));
    out
}

/// Sends `bytes` with `fds` attached (`SCM_RIGHTS`) in one message; how
/// many bytes went (the descriptors ride with the first of them).
pub fn send_with_fds(sock: &impl AsRawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Receives into `buf`, adding any descriptors that came with the bytes
/// to `fds` (close-on-exec); how many bytes came (0: the peer closed).
pub fn recv_with_fds(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<UnixAddr>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => r.map_err(io::Error::from)?,
        };
        let n = msg.bytes;
        // The descriptors received are ours now, whatever happens next.
        // (With more than fit, the kernel flags the message truncated; a
        // datanode sends two.)
        let Ok(cmsgs) = msg.cmsgs() else {
            return Err(io::Error::other(
                "more descriptors came than expected (the message was cut)",
            ));
        };
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(raw.into_iter().map(owned_fd));
            }
        }
        return Ok(n);
    }
}

/// Takes ownership of a descriptor the kernel just installed in this
/// process for a received `SCM_RIGHTS` message.
#[allow(unsafe_code)]
fn owned_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` comes from an `SCM_RIGHTS` control message that
    // `recvmsg` has just received: the kernel installed it as a new, open
    // descriptor of this process, and nothing else in the process knows
    // its number, so this `OwnedFd` is its only owner and closes it once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn descriptors_pass_over_a_socket_pair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"passed along").unwrap();
        f.rewind().unwrap();
        let frame = encode_frame(&FdReply::Granted {
            gen_stamp: 3,
            len: 12,
        });
        assert_eq!(
            send_with_fds(&a, &frame, &[f.as_raw_fd(), f.as_raw_fd()]).unwrap(),
            frame.len()
        );
        drop(f);
        let mut buf = vec![0u8; 256];
        let mut fds = Vec::new();
        let n = recv_with_fds(&b, &mut buf, &mut fds).unwrap();
        let (reply, used): (FdReply, usize) = decode_frame(&buf[..n]).unwrap().unwrap();
        assert_eq!(used, n);
        assert_eq!(
            reply,
            FdReply::Granted {
                gen_stamp: 3,
                len: 12
            }
        );
        assert_eq!(fds.len(), 2);
        let mut got = String::new();
        std::fs::File::from(fds.remove(0))
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "passed along");
        drop(a);
        assert_eq!(recv_with_fds(&b, &mut buf, &mut fds).unwrap(), 0);
        assert!(decode_frame::<Revoke>(&[0, 0]).unwrap().is_none());
        assert!(decode_frame::<Revoke>(&[0xff, 0, 0, 0]).is_err());
    }
}
