//! ZooKeeper's own client protocol on `zk_addr` (2181): the jute frames of
//! `zookeeper.jute`, translated into the `Session` stream every hstack
//! client speaks, and served by the same `session::serve` over the same
//! tree, sessions and watches. Nothing here decides anything: requests
//! become `pb::ClientFrame`s, and replies, pongs and watch events come back
//! as `pb::ServerFrame`s (in request order, events first) to be encoded.
//!
//! A connection whose first four bytes spell a four-letter word (`ruok`,
//! `mntr`, …) gets that command's answer instead, as ZooKeeper does.

mod codec;
mod fourlw;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hstack_proto::coord as pb;
use pb::server_frame::Frame as Out;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::node::Node;
pub use fourlw::FOUR_LETTER_WORDS;

/// How long a new connection may take to send its first frame.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// One open ZooKeeper connection, as `cons` and `stat` list it.
pub(crate) struct ConnStats {
    pub peer: SocketAddr,
    pub session: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub timeout_ms: AtomicU64,
    pub last_zxid: AtomicU64,
    pub established: std::time::SystemTime,
}

/// What the front end shares between connections.
#[derive(Default)]
pub(crate) struct Front {
    conns: Mutex<Vec<Arc<ConnStats>>>,
    pub received: AtomicU64,
    pub sent: AtomicU64,
}

impl Front {
    pub fn connections(&self) -> Vec<Arc<ConnStats>> {
        self.conns.lock().expect("poisoned").clone()
    }
}

/// Accepts ZooKeeper connections until the listener fails (the daemon
/// stops the task at shutdown).
pub async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    let front = Arc::new(Front::default());
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("zk accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let (node, front) = (node.clone(), front.clone());
        tokio::spawn(
            async move {
                connection(node, front, sock, peer).await;
            }
            .in_current_span(),
        );
    }
}

/// What the writer encodes next, in request order.
pub(crate) enum Expect {
    /// The connect handshake's answer; `read_only` if the client sent the flag.
    Connect { read_only: bool },
    /// The reply to request `xid` of opcode `op`.
    Reply(codec::Pending),
    /// Bytes made here (an error for a request that never reached the
    /// session); `close` ends the connection after them.
    Local { bytes: Vec<u8>, close: bool },
}

async fn connection(node: Arc<Node>, front: Arc<Front>, sock: TcpStream, peer: SocketAddr) {
    let (rd, wr) = sock.into_split();
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let mut head = [0u8; 4];
    match tokio::time::timeout(HANDSHAKE_WAIT, rd.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    if let Some(word) = fourlw::word(&head) {
        let answer = fourlw::answer(&node, &front, word);
        let mut wr = wr;
        let _ = wr.write_all(answer.as_bytes()).await;
        let _ = wr.shutdown().await;
        return;
    }
    let max = node.cfg.jute_max_buffer;
    let Some(first) = read_body(&mut rd, head, max).await else {
        return;
    };
    let Ok((connect, read_only)) = codec::connect_request(&first) else {
        tracing::debug!(%peer, "zk: a first frame that is not a connect request; closing");
        return;
    };
    let stats = Arc::new(ConnStats {
        peer,
        session: AtomicU64::new(0),
        received: AtomicU64::new(1),
        sent: AtomicU64::new(0),
        timeout_ms: AtomicU64::new(0),
        last_zxid: AtomicU64::new(0),
        established: std::time::SystemTime::now(),
    });
    front.conns.lock().expect("poisoned").push(stats.clone());

    let (in_tx, in_rx) = mpsc::channel::<Result<pb::ClientFrame, Infallible>>(1024);
    let (out_tx, out_rx) = mpsc::unbounded_channel::<pb::ServerFrame>();
    let (fifo_tx, fifo_rx) = mpsc::unbounded_channel::<Expect>();
    let session = tokio::spawn(
        crate::session::serve(
            node.clone(),
            tokio_stream::wrappers::ReceiverStream::new(in_rx),
            out_tx,
            Some(peer.ip()),
        )
        .in_current_span(),
    );
    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(
        write_loop(
            node.clone(),
            front.clone(),
            stats.clone(),
            wr,
            out_rx,
            fifo_rx,
            done_tx,
        )
        .in_current_span(),
    );
    let _ = fifo_tx.send(Expect::Connect { read_only });
    let connect = pb::ClientFrame {
        frame: Some(pb::client_frame::Frame::Connect(connect)),
    };
    if in_tx.send(Ok(connect)).await.is_ok() {
        read_loop(&mut rd, max, &in_tx, &fifo_tx, &front, &stats, &mut done_rx).await;
    }
    drop(in_tx);
    drop(fifo_tx);
    let _ = session.await;
    let _ = writer.await;
    front
        .conns
        .lock()
        .expect("poisoned")
        .retain(|c| !Arc::ptr_eq(c, &stats));
}

/// The body of a frame whose length prefix is `head`, or None (the
/// connection ends) for a length out of bounds or a short read.
async fn read_body<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    head: [u8; 4],
    max: u32,
) -> Option<Vec<u8>> {
    let len = i32::from_be_bytes(head);
    if len < 0 || len as u32 > max {
        tracing::debug!(
            len,
            max,
            "zk: frame length out of bounds (jute.maxbuffer); closing"
        );
        return None;
    }
    let mut body = vec![0u8; len as usize];
    rd.read_exact(&mut body).await.ok()?;
    Some(body)
}

async fn read_loop<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    max: u32,
    in_tx: &mpsc::Sender<Result<pb::ClientFrame, Infallible>>,
    fifo: &mpsc::UnboundedSender<Expect>,
    front: &Front,
    stats: &ConnStats,
    writer_done: &mut oneshot::Receiver<()>,
) {
    let mut seq = 0u64;
    loop {
        let mut head = [0u8; 4];
        let read = tokio::select! {
            r = rd.read_exact(&mut head) => r,
            // The writer stopped (the session ended or the socket broke).
            _ = &mut *writer_done => return,
        };
        if read.is_err() {
            return;
        }
        let Some(body) = read_body(rd, head, max).await else {
            return;
        };
        front.received.fetch_add(1, Ordering::Relaxed);
        stats.received.fetch_add(1, Ordering::Relaxed);
        seq += 1;
        match codec::request(&body, seq) {
            Ok(codec::Decoded::Frame(frame, pending)) => {
                let closing = pending.op == codec::op::CLOSE;
                let _ = fifo.send(Expect::Reply(pending));
                if in_tx.send(Ok(frame)).await.is_err() || closing {
                    return;
                }
            }
            Ok(codec::Decoded::Local { bytes, close }) => {
                let _ = fifo.send(Expect::Local { bytes, close });
                if close {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(peer = %stats.peer, "zk: malformed request ({e}); closing");
                return;
            }
        }
    }
}

async fn write_loop(
    node: Arc<Node>,
    front: Arc<Front>,
    stats: Arc<ConnStats>,
    wr: tokio::net::tcp::OwnedWriteHalf,
    mut out_rx: mpsc::UnboundedReceiver<pb::ServerFrame>,
    mut fifo_rx: mpsc::UnboundedReceiver<Expect>,
    // Dropped when the writer stops, so the reader stops too.
    _done: oneshot::Sender<()>,
) {
    let mut wr = BufWriter::with_capacity(64 << 10, wr);
    let mut expected: VecDeque<Expect> = VecDeque::new();
    let mut fifo_open = true;
    let started = Instant::now();
    'outer: loop {
        // Locals at the head go out as soon as everything before them has.
        while matches!(expected.front(), Some(Expect::Local { .. })) {
            let Some(Expect::Local { bytes, close }) = expected.pop_front() else {
                unreachable!()
            };
            if wr.write_all(&bytes).await.is_err() {
                break 'outer;
            }
            if close {
                break 'outer;
            }
        }
        let idle = out_rx.is_empty() && (fifo_rx.is_empty() || !fifo_open);
        if !wr.buffer().is_empty() && idle && wr.flush().await.is_err() {
            break;
        }
        let f = tokio::select! {
            biased;
            e = fifo_rx.recv(), if fifo_open => {
                match e {
                    Some(e) => expected.push_back(e),
                    None => fifo_open = false,
                }
                continue;
            }
            f = out_rx.recv() => f,
        };
        let Some(f) = f else { break };
        let Some(frame) = f.frame else { continue };
        let handshaking = matches!(expected.front(), Some(Expect::Connect { .. }));
        let (bytes, close) = match frame {
            Out::Event(ev) => (codec::event(&ev), false),
            // The session expired under an open connection: ZooKeeper
            // closes it, and the client learns of the expiry on reconnecting.
            Out::Error(_) if !handshaking => break,
            other => {
                // Every reply answers the oldest expectation; the reader
                // queued it before the request left.
                let exp = match expected.pop_front() {
                    Some(e) => e,
                    None => match fifo_rx.recv().await {
                        Some(e) => e,
                        None => break,
                    },
                };
                let zxid_now = || node.sm.lock().tree.last_zxid();
                match codec::reply(exp, other, &zxid_now) {
                    Some(r) => {
                        if let Some(s) = r.session {
                            stats.session.store(s.0, Ordering::Relaxed);
                            stats.timeout_ms.store(s.1 as u64, Ordering::Relaxed);
                        }
                        if r.zxid > 0 {
                            stats.last_zxid.store(r.zxid as u64, Ordering::Relaxed);
                        }
                        (r.bytes, r.close)
                    }
                    None => break,
                }
            }
        };
        front.sent.fetch_add(1, Ordering::Relaxed);
        stats.sent.fetch_add(1, Ordering::Relaxed);
        if wr.write_all(&bytes).await.is_err() {
            break;
        }
        if close {
            break;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
    tracing::trace!(elapsed = ?started.elapsed(), "zk connection writer done");
}
