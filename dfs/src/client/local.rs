//! The client's side of short-circuit local reads (protocol:
//! `crate::short_circuit`): a replica on this host is read straight from
//! its files, which the datanode hands over on its Unix domain socket.
//!
//! A blocking thread per block reads ahead, a window at a time, into
//! reused buffers: a positional read of the data through the page cache
//! (the kernel told the file is read sequentially), a read of the
//! window's checksums, and a check of every 512-byte chunk against its
//! CRC32C, exactly as the transfer path checks packets. Verified windows
//! go to the reader as `Bytes` lent from the buffer, so nothing is copied
//! after the page cache. The connection to the datanode stays open while
//! the files are in use; before handing out each window the reader looks
//! for the datanode's revocation (or the connection ending).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hstack_proto::dfs as pb;
use tokio::sync::mpsc;

use crate::blockstore::{check_meta_header, verify_chunks, CHUNK, META_HEADER};
use crate::error::{Code, FsError, FsResult};
use crate::namespace::BlockRec;
use crate::short_circuit::{
    decode_frame, encode_request, recv_with_fds, FdReply, FdRequest, Revoke,
};

/// Bytes read, verified and handed out at a time.
pub const WINDOW: usize = 1 << 20;
/// Windows read ahead of the reader.
const AHEAD: usize = 2;
/// How long the datanode has to answer on its socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
/// A socket that could not be reached is not tried again for this long.
const UNUSABLE_FOR: Duration = Duration::from_secs(10);

/// What a client remembers about hosts and sockets.
#[derive(Default)]
pub(crate) struct LocalState {
    /// Per datanode host: whether it is this host.
    hosts: Mutex<HashMap<String, bool>>,
    /// Sockets that refused us, and when.
    unusable: Mutex<HashMap<String, Instant>>,
    /// Window buffers, shared by the client's readers.
    pool: Arc<Pool>,
}

impl LocalState {
    /// Whether `host` (an address or a name) is this host: a loopback
    /// address (every 127.x.y.z, so each datanode of a local cluster on
    /// its own 127.0.1.i counts), or an address this host can bind.
    pub(crate) async fn is_local(&self, host: &str) -> bool {
        if host.is_empty() {
            return false;
        }
        if let Some(v) = self.hosts.lock().expect("hosts lock").get(host) {
            return *v;
        }
        let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match tokio::net::lookup_host((host, 0)).await {
                Ok(a) => a.map(|a| a.ip()).collect(),
                Err(_) => vec![],
            },
        };
        let local = !ips.is_empty() && ips.iter().all(|ip| is_this_host(*ip));
        self.hosts
            .lock()
            .expect("hosts lock")
            .insert(host.to_string(), local);
        local
    }

    fn usable(&self, path: &str) -> bool {
        let mut u = self.unusable.lock().expect("unusable sockets lock");
        match u.get(path) {
            Some(t) if t.elapsed() < UNUSABLE_FOR => false,
            Some(_) => {
                u.remove(path);
                true
            }
            None => true,
        }
    }

    fn set_unusable(&self, path: &str) {
        self.unusable
            .lock()
            .expect("unusable sockets lock")
            .insert(path.to_string(), Instant::now());
    }
}

fn is_this_host(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    // Binding succeeds only for an address of one of this host's
    // interfaces.
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// A replica being read from its files.
pub(crate) struct LocalBlock {
    pub block: BlockRec,
    pub node: pb::DatanodeInfo,
    /// Held open while the files are read; the datanode revokes on it.
    conn: UnixStream,
    rx: mpsc::Receiver<FsResult<Bytes>>,
}

impl LocalBlock {
    /// Asks `node` (on this host) for `block`'s files and starts reading
    /// them from `from` (an offset in the block). Any failure here means
    /// "use the transfer port"; a corrupt checksum file is `Corrupt`.
    pub(crate) async fn open(
        state: &LocalState,
        block: BlockRec,
        node: &pb::DatanodeInfo,
        from: u64,
        client: &str,
    ) -> FsResult<Self> {
        let path = node.domain_socket_path.clone();
        if !state.usable(&path) {
            return Err(FsError::new(
                Code::Unavailable,
                format!("{path}: refused recently"),
            ));
        }
        let req = FdRequest {
            block,
            client: client.to_string(),
        };
        let asked = tokio::task::spawn_blocking({
            let path = path.clone();
            move || ask(&path, &req)
        })
        .await
        .map_err(|e| FsError::new(Code::Io, format!("short-circuit request: {e}")))?;
        let (conn, data, meta) = match asked {
            Ok(x) => x,
            Err(Asked::Unreachable(e)) => {
                state.set_unusable(&path);
                return Err(FsError::new(Code::Unavailable, format!("{path}: {e}")));
            }
            Err(Asked::Refused(e)) => return Err(e),
        };
        let what = format!("block {} on {} (short-circuit): ", block.id, node.id);
        let mut head = [0u8; META_HEADER as usize];
        meta.read_exact_at(&mut head, 0)
            .map_err(|e| FsError::new(Code::Corrupt, format!("{what}checksum file: {e}")))?;
        check_meta_header(&what, &head)?;
        // Sequential: the kernel reads further ahead.
        let _ = nix::fcntl::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&data),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
        let (tx, rx) = mpsc::channel(AHEAD);
        let reader = WindowReader {
            what,
            data,
            meta,
            pool: state.pool.clone(),
        };
        let end = block.len;
        tokio::task::spawn_blocking(move || reader.run(from, end, tx));
        Ok(Self {
            block,
            node: node.clone(),
            conn,
            rx,
        })
    }

    /// The next verified bytes (from the chunk holding the first offset
    /// on, then window by window); `None` at the block's end. A revoked
    /// grant is `Unavailable`.
    pub(crate) async fn next(&mut self) -> FsResult<Option<Bytes>> {
        if let Some(why) = self.revoked() {
            return Err(FsError::new(
                Code::Unavailable,
                format!(
                    "block {} on {}: the datanode revoked the short-circuit read ({why})",
                    self.block.id, self.node.id
                ),
            ));
        }
        match self.rx.recv().await {
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }

    /// Why the datanode took the files back, if it did (or went away).
    pub(crate) fn revoked(&mut self) -> Option<String> {
        let mut buf = [0u8; 512];
        match self.conn.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(format!("connection failed: {e}")),
            Ok(0) => Some("the datanode closed the connection".into()),
            Ok(n) => Some(match decode_frame::<Revoke>(&buf[..n]) {
                Ok(Some((r, _))) => r.reason,
                _ => "revoked".into(),
            }),
        }
    }
}

enum Asked {
    /// The socket is not there or not answering: not worth trying soon.
    Unreachable(io::Error),
    /// The datanode answered no (or answered nonsense).
    Refused(FsError),
}

/// The request on the datanode's socket (blocking): the connection, left
/// non-blocking for the revocation checks, and the data and checksum
/// files.
fn ask(path: &str, req: &FdRequest) -> Result<(UnixStream, File, File), Asked> {
    let mut s = UnixStream::connect(path).map_err(Asked::Unreachable)?;
    let bad =
        |e: io::Error| Asked::Refused(FsError::new(Code::Unavailable, format!("{path}: {e}")));
    s.set_read_timeout(Some(SOCKET_TIMEOUT)).map_err(bad)?;
    s.set_write_timeout(Some(SOCKET_TIMEOUT)).map_err(bad)?;
    s.write_all(&encode_request(req)).map_err(bad)?;
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    let mut fds = Vec::new();
    let (reply, used) = loop {
        if let Some(r) = decode_frame::<FdReply>(&buf[..got]).map_err(bad)? {
            break r;
        }
        if got == buf.len() {
            return Err(bad(io::Error::other("the reply is too long")));
        }
        let n = recv_with_fds(&s, &mut buf[got..], &mut fds).map_err(bad)?;
        if n == 0 {
            return Err(bad(io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
    };
    match reply {
        FdReply::Refused { error, message } => Err(Asked::Refused(FsError::new(
            Code::from_name(&error).unwrap_or(Code::Io),
            message,
        ))),
        FdReply::Granted { .. } if fds.len() != 2 => Err(bad(io::Error::other(format!(
            "{} descriptors came, expected 2",
            fds.len()
        )))),
        FdReply::Granted { .. } if used < got => {
            Err(bad(io::Error::other("revoked as soon as granted")))
        }
        FdReply::Granted { .. } => {
            s.set_nonblocking(true).map_err(bad)?;
            let meta = File::from(fds.pop().expect("two"));
            let data = File::from(fds.pop().expect("two"));
            Ok((s, data, meta))
        }
    }
}

/// Reads a replica's files window by window, on a blocking thread.
struct WindowReader {
    /// "block N on dnX (short-circuit): ", for messages.
    what: String,
    data: File,
    meta: File,
    pool: Arc<Pool>,
}

impl WindowReader {
    /// Sends verified windows of `[from, end)` until the end, an error,
    /// or the reader going away.
    fn run(self, from: u64, end: u64, tx: mpsc::Sender<FsResult<Bytes>>) {
        let mut pos = from / CHUNK as u64 * CHUNK as u64;
        let mut skip = (from - pos) as usize;
        let mut raw = Vec::new();
        let mut sums = Vec::new();
        while pos < end {
            let n = (end - pos).min(WINDOW as u64) as usize;
            let b = match self.window(pos, n, &mut raw, &mut sums) {
                Ok(b) => b.slice(skip..),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            skip = 0;
            if tx.blocking_send(Ok(b)).is_err() {
                return;
            }
            pos += n as u64;
        }
    }

    /// `[pos, pos + n)` (`pos` on a chunk boundary), verified.
    fn window(
        &self,
        pos: u64,
        n: usize,
        raw: &mut Vec<u8>,
        sums: &mut Vec<u32>,
    ) -> FsResult<Bytes> {
        let mut buf = self.pool.take();
        // A short file reads as an error: the transfer path will tell.
        self.data
            .read_exact_at(&mut buf[..n], pos)
            .map_err(|e| FsError::new(Code::Io, format!("{}reading at {pos}: {e}", self.what)))?;
        let chunks = n.div_ceil(CHUNK);
        raw.resize(chunks * 4, 0);
        self.meta
            .read_exact_at(raw, META_HEADER + pos / CHUNK as u64 * 4)
            .map_err(|e| {
                FsError::new(
                    Code::Corrupt,
                    format!("{}checksum file too short: {e}", self.what),
                )
            })?;
        sums.clear();
        sums.extend(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))),
        );
        verify_chunks(&self.what, pos, &buf[..n], sums)?;
        Ok(Bytes::from_owner(Lent {
            buf,
            len: n,
            pool: self.pool.clone(),
        }))
    }
}

/// Window buffers, reused: a buffer comes back when the last `Bytes` of
/// it is dropped.
#[derive(Default)]
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept idle: for a few readers, the windows in flight and the
/// one being read.
const POOL_MAX: usize = 4 * (AHEAD + 2);

impl Pool {
    fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .expect("pool lock")
            .pop()
            .unwrap_or_else(|| vec![0; WINDOW])
    }
}

struct Lent {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().expect("pool lock");
        if free.len() < POOL_MAX {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}
