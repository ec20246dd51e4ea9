//! A follower's ordered, pipelined stream of proposals to the leader.
//!
//! The follower's proposer sends each batch down one `Forward` stream to
//! the current leader without waiting for the previous one; the leader hands
//! them to Raft in arrival order, so a session's writes keep their order
//! while many batches are in flight. Replies come back tagged with the
//! batch's sequence number. When the stream breaks, every batch still in
//! flight fails as `Unavailable` (it may or may not have been applied).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hstack_proto::coord as pb;
use hstack_proto::coord::coord_peer_client::CoordPeerClient;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tonic::transport::Endpoint;

use crate::error::CoordError;
use crate::types::{Applied, Committed, NodeId, Txn};

#[derive(Serialize, Deserialize)]
pub struct ForwardResult {
    pub seq: u64,
    /// Per transaction: the log index it was committed at and its result.
    /// (The leader merges forwarded transactions into its own batches, so
    /// one forwarded batch may span several entries.)
    pub results: Vec<Result<(u64, Applied), CoordError>>,
}

pub type Replies = Vec<tokio::sync::oneshot::Sender<Result<Committed, CoordError>>>;

/// In flight: seq -> (waiters, slot, when sent).
type Pending = Arc<Mutex<HashMap<u64, (Replies, OwnedSemaphorePermit, Instant)>>>;

/// Sends each transaction's result, or the error, to its waiter.
pub fn distribute(replies: Replies, res: Result<(u64, Vec<Applied>), CoordError>) {
    match res {
        Ok((index, applied)) => {
            for (reply, applied) in replies.into_iter().zip(applied) {
                let _ = reply.send(Ok(Committed { index, applied }));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// A forwarded batch unanswered this long means the leader is stuck: the
/// stream is dropped and its batches fail (their fate unknown).
const REPLY_DEADLINE: Duration = Duration::from_secs(5);

pub struct Forwarder {
    pub leader: NodeId,
    tx: mpsc::UnboundedSender<pb::PeerMessage>,
    pending: Pending,
    /// Set when the reply stream is gone.
    broken: Arc<AtomicBool>,
    next_seq: u64,
}

impl Forwarder {
    /// Opens a stream to the leader at `raft_addr`.
    /// Opens a stream to the leader at `raft_addr`.
    pub async fn open(leader: NodeId, raft_addr: &str) -> Result<Self, String> {
        let ep = Endpoint::from_shared(format!("http://{raft_addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let channel = ep
            .connect()
            .await
            .map_err(|e| format!("cannot connect to leader {leader} at {raft_addr}: {e}"))?;
        let mut client = CoordPeerClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (tx, rx) = mpsc::unbounded_channel();
        let outbound = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let inbound = client
            .forward(outbound)
            .await
            .map_err(|s| {
                format!(
                    "leader {leader} refused the forward stream: {}",
                    s.message()
                )
            })?
            .into_inner();
        let pending: Pending = Arc::default();
        let broken = Arc::new(AtomicBool::new(false));
        tokio::spawn(read_replies(inbound, pending.clone(), broken.clone()));
        Ok(Self {
            leader,
            tx,
            pending,
            broken,
            next_seq: 0,
        })
    }

    pub fn is_broken(&self) -> bool {
        self.tx.is_closed() || self.broken.load(Ordering::Acquire)
    }

    /// Sends one batch; `permit` (its in-flight slot) is released when the
    /// reply comes. `Err` gives the replies and permit back when the batch
    /// was certainly not sent (the stream is gone).
    pub fn send(
        &mut self,
        txns: &[Txn],
        replies: Replies,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), (Replies, OwnedSemaphorePermit)> {
        let seq = self.next_seq;
        self.next_seq += 1;
        // On the wire: (seq, Vec<Txn>) — a slice encodes as a Vec does.
        let payload = hstack_daemon::format::encode_body(&(seq, txns));
        lock(&self.pending).insert(seq, (replies, permit, Instant::now()));
        if self.tx.send(pb::PeerMessage { kind: 0, payload }).is_err() {
            let (replies, permit, _) = lock(&self.pending).remove(&seq).expect("inserted above");
            return Err((replies, permit));
        }
        // The reply reader may have given up just before the insert: then no
        // one would ever answer this batch.
        if self.broken.load(Ordering::Acquire) {
            if let Some((replies, _, _)) = lock(&self.pending).remove(&seq) {
                distribute(replies, Err(CoordError::unavailable(LOST)));
            }
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const LOST: &str = "the connection to the leader broke; the write may or may not have been applied";

async fn read_replies(
    mut inbound: tonic::Streaming<pb::PeerMessage>,
    pending: Pending,
    broken: Arc<AtomicBool>,
) {
    loop {
        let next = match tokio::time::timeout(Duration::from_secs(1), inbound.next()).await {
            Ok(next) => next,
            Err(_) => {
                let oldest = lock(&pending).values().map(|(_, _, sent)| *sent).min();
                if oldest.is_some_and(|t| t.elapsed() > REPLY_DEADLINE) {
                    tracing::warn!("the leader did not answer a forwarded batch within {REPLY_DEADLINE:?}; dropping the stream");
                    break;
                }
                continue;
            }
        };
        let Some(Ok(msg)) = next else { break };
        let Ok(r) = hstack_daemon::format::decode_body::<ForwardResult>(
            crate::network::PEER_PAYLOAD,
            &msg.payload,
        ) else {
            break;
        };
        let entry = lock(&pending).remove(&r.seq);
        if let Some((replies, _permit, _)) = entry {
            for (reply, res) in replies.into_iter().zip(r.results) {
                let _ = reply.send(res.map(|(index, applied)| Committed { index, applied }));
            }
        }
    }
    // The stream is gone: whatever was in flight has an unknown fate.
    broken.store(true, Ordering::Release);
    let lost: Vec<_> = lock(&pending).drain().collect();
    for (_, (replies, _, _)) in lost {
        distribute(replies, Err(CoordError::unavailable(LOST)));
    }
}
