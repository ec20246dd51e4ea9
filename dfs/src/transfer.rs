//! The data transfer protocol: how block bytes move between clients and
//! datanodes, and between datanodes. Plain TCP on the datanode's transfer
//! port, not gRPC: a block is a stream of large packets with checksums and
//! the pipeline acknowledges them back, as HDFS's DataTransferProtocol does.
//!
//! A connection starts with the 4 bytes `HSDT`, a version byte, and one
//! [`Op`] frame (`[len: u32 BE][postcard]`). The datanode answers with one
//! [`Reply`] frame.
//!
//! **WriteBlock.** The datanode opens the replica, connects to the next
//! target (if any) and forwards the op with the targets after it, waits for
//! that datanode's reply, then replies itself (`bad_node` names the first
//! node of the rest of the pipeline that failed to set up: 0 = this one).
//! Then the writer sends [`Packet`]s: each holds up to 64 KiB at `offset`
//! in the block and one CRC32C per 512-byte chunk. Every datanode verifies
//! and stores each packet and forwards it downstream; acknowledgements
//! ([`Ack`]) flow back upstream in packet order, each carrying one status
//! per pipeline node from the acknowledging one down, so the writer learns
//! which node failed. The block ends with an empty packet flagged `last`:
//! each datanode finalizes its replica before it acknowledges that packet,
//! so a writer holding the last ack knows every replica is complete.
//!
//! With `recovery` set, the datanodes do not start a new replica: they
//! reopen the one they hold at the new generation stamp, cut to the bytes
//! the writer knows were acknowledged, and the writer resends from there.
//!
//! **ReadBlock.** The datanode replies, then sends packets from the chunk
//! holding `offset` (with the stored checksums, which the reader verifies)
//! through `offset + len`, the final one flagged `last`.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::blockstore::CHUNK;
use crate::error::{Code, FsError, FsResult};
use crate::namespace::BlockRec;

pub const MAGIC: &[u8; 4] = b"HSDT";
pub const VERSION: u8 = 3;
/// Data bytes per packet (128 chunks).
pub const PACKET: usize = 64 * 1024;
/// Largest frame or packet accepted: anything bigger is garbage.
const MAX_FRAME: usize = 1 << 20;
/// How long a connection may stay silent (a peer that vanished without
/// closing it; a killed process closes its sockets at once).
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A node in a pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub id: String,
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// The replica must have at least this stamp (the one before recovery).
    pub min_gen_stamp: u64,
    /// Bytes acknowledged to the writer: the replica is cut here.
    pub from: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    WriteBlock {
        /// The block at its (new) generation stamp.
        block: BlockRec,
        /// The nodes after the receiving one.
        targets: Vec<Target>,
        /// The writing client ("" for a datanode replicating).
        client: String,
        recovery: Option<Recovery>,
    },
    ReadBlock {
        block: BlockRec,
        offset: u64,
        len: u64,
        client: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// An error kind name (`Code::name`) or "" for success.
    pub error: String,
    pub message: String,
    /// WriteBlock: index of the first node that failed, counting the
    /// replying node as 0.
    pub bad_node: Option<u32>,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            error: String::new(),
            message: String::new(),
            bad_node: None,
        }
    }

    pub fn err(e: &FsError, bad_node: Option<u32>) -> Self {
        Self {
            error: e.code.name().to_string(),
            message: e.message.clone(),
            bad_node,
        }
    }

    pub fn into_result(self) -> FsResult<()> {
        if self.error.is_empty() {
            return Ok(());
        }
        let kind = Code::from_name(&self.error).unwrap_or(Code::Io);
        Err(FsError::new(kind, self.message))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    pub seqno: u64,
    /// Offset of `data` in the block.
    pub offset: u64,
    pub last: bool,
    pub sums: Vec<u32>,
    pub data: Bytes,
}

const PACKET_HEADER: usize = 8 + 8 + 4 + 1;

/// Where a received packet's data starts in memory: a multiple of this.
const DATA_ALIGN: usize = crate::blockstore::DIRECT_ALIGN;

impl Packet {
    /// A packet of `data` with checksums computed here.
    pub fn new(seqno: u64, offset: u64, data: Bytes, last: bool) -> Self {
        Self {
            seqno,
            offset,
            last,
            sums: crate::blockstore::checksums(&data),
            data,
        }
    }

    /// The header and the checksums: everything before the data.
    pub fn encode_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seqno.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_be_bytes());
        out.push(self.last as u8);
        for s in &self.sums {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }

    /// Checks every chunk against its checksum; the error names the offset.
    pub fn verify(&self) -> FsResult<()> {
        crate::blockstore::verify_chunks("", self.offset, &self.data, &self.sums)
    }
}

pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Packet> {
    let mut h = [0u8; PACKET_HEADER];
    r.read_exact(&mut h).await?;
    let seqno = u64::from_be_bytes(h[0..8].try_into().expect("8"));
    let offset = u64::from_be_bytes(h[8..16].try_into().expect("8"));
    let len = u32::from_be_bytes(h[16..20].try_into().expect("4")) as usize;
    let last = match h[20] {
        0 => false,
        1 => true,
        f => return Err(bad_data(format!("bad packet flags {f}"))),
    };
    if len > MAX_FRAME {
        return Err(bad_data(format!("packet of {len} bytes is too large")));
    }
    let n = len.div_ceil(CHUNK);
    // The data lands at a page-aligned address, so a datanode can hand it
    // to the disk with O_DIRECT as it is (see `blockstore`).
    let mut body = Vec::with_capacity(DATA_ALIGN + n * 4 + len);
    let pad = (DATA_ALIGN - (body.as_ptr() as usize + n * 4) % DATA_ALIGN) % DATA_ALIGN;
    body.resize(pad + n * 4 + len, 0);
    r.read_exact(&mut body[pad..]).await?;
    let sums = body[pad..pad + n * 4]
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
        .collect();
    let data = Bytes::from(body).slice(pad + n * 4..);
    Ok(Packet {
        seqno,
        offset,
        last,
        sums,
        data,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    Error = 1,
    ChecksumError = 2,
}

impl Status {
    fn from_u8(b: u8) -> io::Result<Self> {
        match b {
            0 => Ok(Self::Ok),
            1 => Ok(Self::Error),
            2 => Ok(Self::ChecksumError),
            _ => Err(bad_data(format!("bad ack status {b}"))),
        }
    }
}

/// One acknowledgement: statuses of the acknowledging node and every node
/// after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ack {
    pub seqno: u64,
    pub statuses: Vec<Status>,
}

impl Ack {
    /// Index of the first node that did not succeed.
    pub fn first_bad(&self) -> Option<usize> {
        self.statuses.iter().position(|s| *s != Status::Ok)
    }
}

pub async fn write_ack<W: AsyncWrite + Unpin>(w: &mut W, a: &Ack) -> io::Result<()> {
    let mut buf = Vec::with_capacity(10 + a.statuses.len());
    buf.extend_from_slice(&a.seqno.to_be_bytes());
    // A u16: a pipeline is as long as the replication (at most 512).
    buf.extend_from_slice(&(a.statuses.len() as u16).to_be_bytes());
    buf.extend(a.statuses.iter().map(|s| *s as u8));
    w.write_all(&buf).await?;
    w.flush().await
}

pub async fn read_ack<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Ack> {
    let mut h = [0u8; 10];
    r.read_exact(&mut h).await?;
    let seqno = u64::from_be_bytes(h[0..8].try_into().expect("8"));
    let n = u16::from_be_bytes(h[8..10].try_into().expect("2")) as usize;
    if n > crate::namespace::MAX_REPLICATION as usize {
        return Err(bad_data(format!("an ack with {n} statuses")));
    }
    let mut st = vec![0u8; n];
    r.read_exact(&mut st).await?;
    let statuses = st
        .into_iter()
        .map(Status::from_u8)
        .collect::<io::Result<_>>()?;
    Ok(Ack { seqno, statuses })
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, v: &T) -> io::Result<()> {
    let body = hstack_daemon::format::encode_body(v);
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await
}

pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R) -> io::Result<T> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h).await?;
    let len = u32::from_be_bytes(h) as usize;
    if len > MAX_FRAME {
        return Err(bad_data(format!("frame of {len} bytes is too large")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    hstack_daemon::format::decode_body("data transfer frame", &body)
        .map_err(|e| bad_data(format!("undecodable frame: {e}")))
}

/// Writes the connection preamble and the op.
pub async fn send_op<W: AsyncWrite + Unpin>(w: &mut W, op: &Op) -> io::Result<()> {
    let mut pre = [0u8; 5];
    pre[..4].copy_from_slice(MAGIC);
    pre[4] = VERSION;
    w.write_all(&pre).await?;
    write_frame(w, op).await
}

/// Reads the preamble and the op (the datanode's side). Anything else on
/// the port is refused with a clear error.
pub async fn recv_op<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Op> {
    let mut pre = [0u8; 5];
    r.read_exact(&mut pre).await?;
    if &pre[..4] != MAGIC {
        return Err(bad_data(
            "not an hstack data transfer connection (bad magic)".into(),
        ));
    }
    if pre[4] != VERSION {
        return Err(bad_data(format!(
            "data transfer protocol version {} is not supported (this datanode speaks {VERSION})",
            pre[4]
        )));
    }
    read_frame(r).await
}

pub fn bad_data(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

/// Runs `f` with the protocol's I/O timeout.
pub async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what}: timed out"),
        )),
    }
}

pub async fn connect(addr: &str) -> io::Result<TcpStream> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr}")))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The writing end of a pipeline (a client, or a datanode replicating).
pub struct PipelineTx {
    w: BufWriter<OwnedWriteHalf>,
    buf: Vec<u8>,
}

/// The acknowledgements coming back.
pub struct PipelineRx {
    r: BufReader<OwnedReadHalf>,
}

/// Why a pipeline could not be set up: the index (in `targets`) of the
/// node to blame, and the error.
#[derive(Debug)]
pub struct SetupError {
    pub bad_node: usize,
    pub error: FsError,
}

/// Opens a pipeline through `targets` (at least one) for `block`.
pub async fn open_pipeline(
    block: BlockRec,
    targets: &[Target],
    client: &str,
    recovery: Option<Recovery>,
) -> Result<(PipelineTx, PipelineRx), SetupError> {
    let head = &targets[0];
    let blame = |bad_node: usize, e: FsError| SetupError { bad_node, error: e };
    let s = connect(&head.addr).await.map_err(|e| {
        blame(
            0,
            FsError::new(
                Code::Unavailable,
                format!("cannot reach datanode {} at {}: {e}", head.id, head.addr),
            ),
        )
    })?;
    let (r, w) = s.into_split();
    let mut w = BufWriter::with_capacity(PACKET + 4096, w);
    let mut r = BufReader::new(r);
    let op = Op::WriteBlock {
        block,
        targets: targets[1..].to_vec(),
        client: client.to_string(),
        recovery,
    };
    let io_err = |e: io::Error| {
        blame(
            0,
            FsError::new(
                Code::Unavailable,
                format!("datanode {} at {}: {e}", head.id, head.addr),
            ),
        )
    };
    timed("pipeline setup", send_op(&mut w, &op))
        .await
        .map_err(io_err)?;
    let reply: Reply = timed("pipeline setup", read_frame(&mut r))
        .await
        .map_err(io_err)?;
    let bad = reply.bad_node;
    if let Err(e) = reply.into_result() {
        return Err(blame(bad.unwrap_or(0) as usize, e));
    }
    Ok((
        PipelineTx {
            w,
            buf: Vec::with_capacity(PACKET_HEADER + PACKET / CHUNK * 4),
        },
        PipelineRx { r },
    ))
}

impl PipelineTx {
    pub async fn send(&mut self, p: &Packet) -> io::Result<()> {
        self.buf.clear();
        p.encode_head(&mut self.buf);
        // Into the write buffer as two pieces: no copy of the whole packet
        // beforehand.
        timed("send packet", self.w.write_all(&self.buf)).await?;
        timed("send packet", self.w.write_all(&p.data)).await?;
        // Flushed at once: a packet must not sit here while the writer
        // waits for acks or for its own input.
        timed("send packet", self.w.flush()).await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        timed("flush", self.w.flush()).await
    }
}

impl PipelineRx {
    pub async fn next_ack(&mut self) -> io::Result<Ack> {
        timed("wait for ack", read_ack(&mut self.r)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_packets_and_acks_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let op = Op::ReadBlock {
            block: BlockRec {
                id: 1,
                gen_stamp: 2,
                len: 3,
            },
            offset: 4,
            len: 5,
            client: "c".into(),
        };
        send_op(&mut a, &op).await.unwrap();
        assert_eq!(recv_op(&mut b).await.unwrap(), op);
        let data = Bytes::from(vec![7u8; 1500]);
        let p = Packet::new(9, 1024, data, true);
        let mut head = Vec::new();
        p.encode_head(&mut head);
        a.write_all(&head).await.unwrap();
        a.write_all(&p.data).await.unwrap();
        let q = read_packet(&mut b).await.unwrap();
        assert_eq!(q, p);
        q.verify().unwrap();
        let ack = Ack {
            seqno: 9,
            statuses: vec![Status::Ok, Status::ChecksumError],
        };
        write_ack(&mut b, &ack).await.unwrap();
        let got = read_ack(&mut a).await.unwrap();
        assert_eq!(got.first_bad(), Some(1));
        // A flipped byte is caught, with its chunk's offset.
        let mut bad = p.data.to_vec();
        bad[600] ^= 1;
        let p2 = Packet {
            data: Bytes::from(bad),
            ..p
        };
        assert!(p2.verify().unwrap_err().message.contains("offset 1536"));
    }

    #[tokio::test]
    async fn garbage_is_refused_clearly() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let e = recv_op(&mut b).await.unwrap_err();
        assert!(e.to_string().contains("bad magic"), "{e}");
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[b'H', b'S', b'D', b'T', VERSION, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        let e = recv_op(&mut b).await.unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        // Version 1 (one-byte ack counts) is refused, not misread.
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"HSDT\x01\x00\x00\x00\x00").await.unwrap();
        let e = recv_op(&mut b).await.unwrap_err();
        assert!(e.to_string().contains("version 1 is not supported"), "{e}");
    }

    #[tokio::test]
    async fn acks_carry_up_to_512_statuses() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let ack = Ack {
            seqno: 9,
            statuses: vec![Status::Ok; 300],
        };
        write_ack(&mut a, &ack).await.unwrap();
        assert_eq!(read_ack(&mut b).await.unwrap(), ack);
        a.write_all(&[0, 0, 0, 0, 0, 0, 0, 1, 0x02, 0x01])
            .await
            .unwrap();
        let e = read_ack(&mut b).await.unwrap_err();
        assert!(e.to_string().contains("513 statuses"), "{e}");
    }
}
