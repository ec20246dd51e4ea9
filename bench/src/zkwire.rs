//! A lean ZooKeeper-protocol client for the load generator: the connect
//! handshake, then pipelined requests on one TCP connection (Nagle off),
//! answered in order as ZooKeeper answers them. It knows only the few
//! requests the benchmark sends and reads only each reply's error code, so
//! the client costs little beside the servers it measures, whichever they
//! are (ZooKeeper's own ensemble or hstack's ZooKeeper port).
//!
//! Why not a general client crate: the one tried (`zookeeper-client`)
//! leaves Nagle's algorithm on and runs its own reactor thread, so with
//! more than one request in flight per session a request waits for the
//! previous reply's ACK; it measured the client, not the servers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hstack_proto::error::Code;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use hstack_coord_client::jute::Writer;
use hstack_coord_client::CoordError;

type Result<T> = std::result::Result<T, CoordError>;

const OP_CREATE: i32 = 1;
const OP_DELETE: i32 = 2;
const OP_GET_DATA: i32 = 4;
const OP_SET_DATA: i32 = 5;
const OP_CLOSE: i32 = -11;
/// Replies with these xids are not answers to a request (a watch event, a ping).
const XID_EVENT: i32 = -1;
const XID_PING: i32 = -2;

struct Request {
    op: i32,
    body: Vec<u8>,
    reply: oneshot::Sender<i32>,
}

/// One ZooKeeper session over one connection. Clones share it.
#[derive(Clone)]
pub struct ZkSession {
    tx: mpsc::UnboundedSender<Request>,
}

fn lost(what: impl std::fmt::Display) -> CoordError {
    CoordError::new(Code::ConnectionLoss, format!("zookeeper: {what}"))
}

fn zk_code(err: i32) -> Result<()> {
    let code = match err {
        0 => return Ok(()),
        -101 => Code::NoNode,
        -110 => Code::NodeExists,
        -103 => Code::BadVersion,
        -112 => Code::SessionExpired,
        -4 => Code::ConnectionLoss,
        _ => Code::Internal,
    };
    Err(CoordError::new(code, format!("zookeeper error {err}")))
}

impl ZkSession {
    /// Connects to `addr` (host:port) and opens a session.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self> {
        let sock = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| lost(format!("connecting to {addr} timed out")))?
            .map_err(|e| lost(format!("connecting to {addr}: {e}")))?;
        sock.set_nodelay(true).map_err(lost)?;
        let (rd, mut wr) = sock.into_split();
        let mut rd = BufReader::with_capacity(64 << 10, rd);
        let mut connect = Writer::frame();
        connect
            .int(0) // protocol version
            .long(0) // last zxid seen
            .int(timeout.as_millis() as i32)
            .long(0) // session id: a new session
            .buffer(&[0u8; 16])
            .bool(false); // read-only allowed
        wr.write_all(&connect.finish()).await.map_err(lost)?;
        let answer = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rd))
            .await
            .map_err(|_| lost(format!("{addr} did not answer the handshake")))?
            .map_err(lost)?;
        // protocol version (4), negotiated timeout (4), session id (8), ...
        let session = answer
            .get(8..16)
            .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(0);
        if session == 0 {
            return Err(CoordError::new(
                Code::SessionExpired,
                format!("{addr} refused the session"),
            ));
        }
        let pending: Arc<Mutex<VecDeque<oneshot::Sender<i32>>>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(wr, rx, pending.clone()));
        tokio::spawn(read_loop(rd, pending));
        Ok(ZkSession { tx })
    }

    async fn call(&self, op: i32, body: Writer) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                op,
                body: body.buf,
                reply,
            })
            .map_err(|_| lost("connection closed"))?;
        zk_code(rx.await.map_err(|_| lost("connection closed"))?)
    }

    pub async fn set_data(&self, path: &str, data: &[u8]) -> Result<()> {
        let mut b = Writer::default();
        b.string(path).buffer(data).int(-1);
        self.call(OP_SET_DATA, b).await
    }

    pub async fn get_data(&self, path: &str) -> Result<()> {
        let mut b = Writer::default();
        b.string(path).bool(false);
        self.call(OP_GET_DATA, b).await
    }

    /// Creates `path` open to anyone (world:anyone, all permissions).
    pub async fn create(&self, path: &str, data: &[u8], ephemeral: bool) -> Result<()> {
        let mut b = Writer::default();
        b.string(path)
            .buffer(data)
            .int(1) // one ACL entry
            .int(31) // all permissions
            .string("world")
            .string("anyone")
            .int(ephemeral as i32);
        self.call(OP_CREATE, b).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        let mut b = Writer::default();
        b.string(path).int(-1);
        self.call(OP_DELETE, b).await
    }

    /// Closes the session (its ephemerals go at once).
    pub async fn close(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.call(OP_CLOSE, Writer::default()),
        )
        .await;
    }
}

async fn read_frame<R: AsyncReadExt + Unpin>(rd: &mut R) -> std::io::Result<Vec<u8>> {
    let len = rd.read_i32().await?;
    if !(0..=64 << 20).contains(&len) {
        return Err(std::io::Error::other(format!("frame length {len}")));
    }
    let mut body = vec![0u8; len as usize];
    rd.read_exact(&mut body).await?;
    Ok(body)
}

/// Sends requests in the order they come, as many per write as are
/// waiting; each reply's waiter is queued before its request leaves, so
/// the reader can pair replies with waiters by order alone.
async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Request>,
    pending: Arc<Mutex<VecDeque<oneshot::Sender<i32>>>>,
) {
    let mut xid: i32 = 0;
    let mut buf = Vec::with_capacity(64 << 10);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(r) = next {
            xid += 1;
            let len = 8 + r.body.len() as i32;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&xid.to_be_bytes());
            buf.extend_from_slice(&r.op.to_be_bytes());
            buf.extend_from_slice(&r.body);
            pending.lock().expect("poisoned").push_back(r.reply);
            next = if buf.len() < 60 << 10 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if wr.write_all(&buf).await.is_err() {
            break;
        }
        buf.clear();
    }
    let _ = wr.shutdown().await;
}

async fn read_loop(
    mut rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    pending: Arc<Mutex<VecDeque<oneshot::Sender<i32>>>>,
) {
    while let Ok(reply) = read_frame(&mut rd).await {
        if reply.len() < 16 {
            break;
        }
        let xid = i32::from_be_bytes(reply[0..4].try_into().expect("4 bytes"));
        if xid == XID_EVENT || xid == XID_PING {
            continue;
        }
        let err = i32::from_be_bytes(reply[12..16].try_into().expect("4 bytes"));
        let Some(waiter) = pending.lock().expect("poisoned").pop_front() else {
            break;
        };
        let _ = waiter.send(err);
    }
    // The connection is gone: every waiter learns of it (its sender drops).
    pending.lock().expect("poisoned").clear();
}
