//! The member's core: Raft, the state machine, the proposer (group commit
//! and forwarding to the leader), session liveness and expiry, and the
//! container/TTL reaper. The gRPC services (`service`) and the sessions
//! (`session`) sit above it; it knows neither.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hstack_daemon::{Fatal, Shutdown};
use hstack_proto::coord as pb;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot};

use crate::config::CoordConfig;
use crate::error::{Code, CoordError};
use crate::forward::{distribute, Forwarder, Replies};
use crate::liveness::Liveness;
use crate::metrics::CoordMetrics;
use crate::network::{PeerKind, Peers, ReadIndexReply, TouchRequest};
use crate::sm::SmShared;
use crate::types::{Applied, Batch, Committed, MemberNode, NodeId, Raft, Txn, TypeConfig};

pub(crate) const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// A Raft entry stops growing past this many bytes of data.
const MAX_BATCH_BYTES: usize = 2 << 20;
/// Longest the leader's next batch waits for the log's fsync in progress.
const LOG_IDLE_WAIT: Duration = Duration::from_millis(2);
/// How long a proposal waits for a leader before it is refused.
pub(crate) const LEADER_WAIT: Duration = Duration::from_secs(3);

/// Roughly how many bytes a transaction adds to an entry.
fn txn_bytes(t: &Txn) -> usize {
    use crate::types::WriteOp;
    match t {
        Txn::Write { ops, .. } | Txn::WriteAs { ops, .. } => ops
            .iter()
            .map(|o| match o {
                WriteOp::Create { path, data, .. }
                | WriteOp::SetData { path, data, .. }
                | WriteOp::CreateAcl { path, data, .. } => 32 + path.len() + data.len(),
                WriteOp::Delete { path, .. }
                | WriteOp::Check { path, .. }
                | WriteOp::SetAcl { path, .. } => 32 + path.len(),
            })
            .sum(),
        Txn::Reap { path, .. } => 32 + path.len(),
        _ => 32,
    }
}

pub(crate) struct Proposal {
    txn: Txn,
    reply: oneshot::Sender<Result<Committed, CoordError>>,
    /// Forwarded to us as leader by a follower. If we are no longer leader
    /// when its batch goes out, it fails instead of travelling on: the
    /// follower sends its later writes to the new leader directly, and a
    /// re-forwarded one could land after them.
    forwarded: bool,
}

pub struct Node {
    pub id: NodeId,
    /// Where this member speaks ZooKeeper's protocol (advertised form).
    pub zk_addr: String,
    pub raft: Raft,
    pub sm: Arc<SmShared>,
    pub cfg: CoordConfig,
    pub metrics: CoordMetrics,
    pub peers: Peers,
    pub(crate) proposals: mpsc::Sender<Proposal>,
    pub(crate) liveness: Mutex<Liveness>,
    /// Log appends not yet fsynced (see LogStore::unflushed).
    pub(crate) log_unflushed: tokio::sync::watch::Receiver<usize>,
    /// One membership change at a time (see `Node::membership_change`).
    pub(crate) membership: tokio::sync::Mutex<()>,
    /// The member hosts peer traffic is admitted from, and the addresses
    /// they were resolved from (`admission`).
    pub(crate) admitted: Mutex<Option<crate::admission::Admitted>>,
}

impl Node {
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id) && m.state == ServerState::Leader
    }

    pub fn leader(&self) -> Option<(NodeId, MemberNode)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Waits until the effective membership's entry is applied here.
    /// openraft admits a membership change once the previous one is
    /// committed by its own count, which on this leader runs up to one
    /// fsync ahead of the disk (see `logstore`): two changes inside that
    /// window could both be lost to a power loss. Applying waits for the
    /// disk, so call this (under `membership`) before each change.
    pub(crate) async fn settle_membership(&self) -> Result<(), CoordError> {
        let index = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config.log_id().map(|l| l.index).unwrap_or(0)
        };
        tokio::time::timeout(LEADER_WAIT, self.sm.wait_applied(index))
            .await
            .map_err(|_| {
                CoordError::unavailable(format!(
                    "the last membership change (log index {index}) is not applied yet; retry"
                ))
            })
    }

    /// Queues a transaction; the reply comes once it is committed and applied
    /// on the leader (callers then wait for the local apply).
    pub async fn propose(&self, txn: Txn) -> oneshot::Receiver<Result<Committed, CoordError>> {
        self.enqueue(txn, false).await
    }

    pub(crate) async fn enqueue(
        &self,
        txn: Txn,
        forwarded: bool,
    ) -> oneshot::Receiver<Result<Committed, CoordError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self
            .proposals
            .send(Proposal {
                txn,
                reply: tx,
                forwarded,
            })
            .await
        {
            let _ =
                e.0.reply
                    .send(Err(CoordError::unavailable("member is shutting down")));
        }
        rx
    }

    /// Proposes and waits for the local apply.
    pub async fn write(&self, txn: Txn) -> Result<Committed, CoordError> {
        let c = self
            .propose(txn)
            .await
            .await
            .map_err(|_| CoordError::unavailable("member is shutting down"))??;
        self.sm.wait_applied(c.index).await;
        Ok(c)
    }

    /// The read index: the log index a linearizable read must see applied.
    pub async fn read_index(&self) -> Result<u64, CoordError> {
        if self.is_leader() {
            let (read, _) = self
                .raft
                .get_read_log_id()
                .await
                .map_err(|e| not_leader(e.to_string()))?;
            return Ok(read.map(|l| l.index).unwrap_or(0));
        }
        let (_, leader) = self
            .leader()
            .ok_or_else(|| not_leader("no leader elected yet".into()))?;
        let reply: ReadIndexReply = self
            .peers
            .call(&leader.raft_addr, PeerKind::ReadIndex, &(), FORWARD_TIMEOUT)
            .await
            .map_err(|e| CoordError::unavailable(e.to_string()))?;
        reply
    }

    /// Waits until everything committed before this call is applied here.
    pub async fn sync(&self) -> Result<(), CoordError> {
        let index = self.read_index().await?;
        self.sm.wait_applied(index).await;
        Ok(())
    }

    pub fn touch(&self, session: u64) {
        self.liveness().touch(session);
    }

    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn status_rows(&self) -> (bool, Vec<(String, String)>) {
        let m = self.raft.metrics();
        let m = m.borrow().clone();
        let ready = m.current_leader.is_some();
        let rows = vec![
            ("state".into(), format!("{:?}", m.state)),
            (
                "leader".into(),
                m.current_leader
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "none".into()),
            ),
            ("term".into(), m.current_term.to_string()),
            ("zookeeper address".into(), self.zk_addr.clone()),
            (
                "last_log_index".into(),
                m.last_log_index.unwrap_or(0).to_string(),
            ),
            (
                "last_applied".into(),
                m.last_applied.map(|l| l.index).unwrap_or(0).to_string(),
            ),
            ("znodes".into(), self.metrics.znodes.get().to_string()),
            ("sessions".into(), self.metrics.sessions.get().to_string()),
        ];
        (ready, rows)
    }

    pub fn members_reply(&self) -> pb::MembersReply {
        let m = self.raft.metrics();
        let m = m.borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched: BTreeMap<NodeId, u64> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, l)| (*id, l.map(|l| l.index).unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let last_applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(id, n)| {
                let role = if Some(*id) == m.current_leader {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                let role = if *id == self.id && m.state == ServerState::Candidate {
                    "candidate"
                } else {
                    role
                };
                let last_index = if *id == self.id {
                    last_applied
                } else {
                    matched.get(id).copied().unwrap_or(0)
                };
                pb::MemberInfo {
                    id: *id,
                    raft_addr: n.raft_addr.clone(),
                    client_addr: n.client_addr.clone(),
                    http_addr: n.http_addr.clone(),
                    role: role.into(),
                    voter: voters.contains(id),
                    last_index,
                }
            })
            .collect();
        pb::MembersReply {
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            responder_id: self.id,
            last_applied,
            last_zxid: self.sm.lock().tree.last_zxid(),
            members,
        }
    }
}

pub(crate) fn not_leader(message: String) -> CoordError {
    CoordError::new(Code::NotLeader, message)
}

pub(crate) fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, MemberNode>>,
) -> CoordError {
    match e {
        // The entry may already be in the log and be committed by the next
        // leader: its fate is unknown, unlike a refusal before submitting.
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            CoordError::unavailable(format!(
                "leadership moved (leader now {:?}); the write may or may not have been applied",
                f.leader_id
            ))
        }
        other => CoordError::unavailable(other.to_string()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Group commit: every proposal waiting goes into one Raft entry. On the
/// leader entries are pipelined into Raft; a follower pipelines them down
/// one ordered stream to the leader. Either way a session's writes keep
/// their order.
pub(crate) async fn proposer_loop(
    node: Arc<Node>,
    mut rx: mpsc::Receiver<Proposal>,
    shutdown: Shutdown,
) {
    let mut fwd: Option<Forwarder> = None;
    let slots = Arc::new(tokio::sync::Semaphore::new(node.cfg.max_inflight_batches));
    loop {
        // Proposals still queued at shutdown are dropped: their callers
        // hear "shutting down", and none of them was submitted.
        let first = tokio::select! {
            _ = shutdown.wait() => return,
            p = rx.recv() => match p {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for an in-flight slot first: what arrives meanwhile joins
        // this batch.
        // (A shutdown meanwhile drops the batch unsubmitted, as above.)
        let permit = tokio::select! {
            _ = shutdown.wait() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        if node.is_leader() {
            // One entry per fsync of the leader's log: while one runs, let
            // proposals pile up into this batch rather than go as entries
            // of their own. (With the leader's own appends acknowledged at
            // once, skipping this wait measured the same throughput with
            // 15% smaller entries; see docs/benchmarks.md.)
            let mut unflushed = node.log_unflushed.clone();
            let _ = tokio::time::timeout(LOG_IDLE_WAIT, unflushed.wait_for(|n| *n == 0)).await;
        }
        let mut bytes = txn_bytes(&first.txn);
        let mut batch = vec![first];
        while batch.len() < node.cfg.max_batch && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += txn_bytes(&p.txn);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        node.metrics.proposal_batch_txns.observe(batch.len() as f64);
        if !node.is_leader() && batch.iter().any(|p| p.forwarded) {
            let (forwarded, local): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| p.forwarded);
            for p in forwarded {
                let _ = p.reply.send(Err(not_leader(
                    "leadership moved before the write was submitted".into(),
                )));
            }
            batch = local;
            if batch.is_empty() {
                continue;
            }
        }
        let (txns, replies): (Vec<Txn>, Vec<_>) =
            batch.into_iter().map(|p| (p.txn, p.reply)).unzip();
        submit(&node, &mut fwd, permit, txns, replies).await;
    }
}

/// Submits one batch. On the leader it goes straight to Raft; on a follower,
/// down the forward stream to the leader. While no leader is known or
/// reachable the batch waits here (up to LEADER_WAIT), ahead of every later
/// proposal, so a session's writes keep their order.
async fn submit(
    node: &Arc<Node>,
    fwd: &mut Option<Forwarder>,
    mut permit: tokio::sync::OwnedSemaphorePermit,
    txns: Vec<Txn>,
    mut replies: Replies,
) {
    let deadline = Instant::now() + LEADER_WAIT;
    let mut last_err = String::new();
    loop {
        if node.is_leader() {
            *fwd = None;
            let entry = Batch {
                time_ms: now_ms(),
                txns: Arc::new(txns),
            };
            match node.raft.client_write_ff(entry).await {
                Ok(rx) => {
                    tokio::spawn(async move {
                        distribute(replies, await_commit(rx).await);
                        drop(permit);
                    });
                }
                Err(e) => distribute(replies, Err(CoordError::unavailable(e.to_string()))),
            }
            return;
        }
        if let Some((id, leader)) = node.leader() {
            if fwd.as_ref().is_none_or(|f| f.leader != id || f.is_broken()) {
                *fwd = match Forwarder::open(id, &leader.raft_addr).await {
                    Ok(f) => Some(f),
                    Err(e) => {
                        last_err = e;
                        None
                    }
                };
            }
            if let Some(f) = fwd.as_mut() {
                match f.send(&txns, replies, permit) {
                    Ok(()) => return,
                    // Not sent: the stream is gone. Try again with a new one.
                    Err(back) => {
                        (replies, permit) = back;
                        *fwd = None;
                    }
                }
            }
        } else {
            last_err = "no leader elected yet".into();
        }
        if Instant::now() > deadline {
            // Nothing was sent: certainly not applied.
            return distribute(
                replies,
                Err(not_leader(format!("no reachable leader: {last_err}"))),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type CommitRx = oneshot::Receiver<
    Result<openraft::raft::ClientWriteResponse<TypeConfig>, ClientWriteError<NodeId, MemberNode>>,
>;

/// Waits for a batch this leader handed to Raft to be committed and applied.
async fn await_commit(rx: CommitRx) -> Result<(u64, Vec<Applied>), CoordError> {
    match rx.await {
        Ok(Ok(resp)) => Ok((resp.log_id.index, resp.data)),
        Ok(Err(e)) => Err(write_error(RaftError::APIError(e))),
        Err(_) => Err(CoordError::unavailable(
            "raft stopped; the write may or may not have been applied",
        )),
    }
}

/// Follows Raft's view of leadership: metrics, and a fresh session grace
/// period whenever this member becomes leader. Raft stopping on its own (a
/// storage fault it cannot go on from) stops the member: half alive is
/// worse than dead.
pub(crate) async fn leader_watch(node: Arc<Node>, shutdown: Shutdown, fatal: Fatal) {
    let mut rx = node.raft.metrics();
    let mut last_leader = None;
    let mut was_leader = false;
    loop {
        {
            let m = rx.borrow_and_update();
            if let Err(e) = &m.running_state {
                // Stopped by our own shutdown is the normal end.
                if !shutdown.is_triggered() && !matches!(e, openraft::error::Fatal::Stopped) {
                    fatal.fail(format!("raft stopped: {e}"));
                }
                return;
            }
            node.metrics.raft_term.set(m.current_term as i64);
            if m.current_leader != last_leader {
                if let Some(l) = m.current_leader {
                    tracing::info!(leader = l, term = m.current_term, "leader elected");
                    node.metrics.leader_changes_total.inc();
                }
                last_leader = m.current_leader;
            }
            let leader = m.state == ServerState::Leader;
            node.metrics.is_leader.set(leader as i64);
            if leader && !was_leader {
                node.liveness().became_leader();
            }
            was_leader = leader;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = shutdown.wait() => return,
        }
    }
}

/// Every tick: forward session liveness to the leader; on the leader, expire
/// silent sessions and reap containers and TTL nodes, all through the log.
pub(crate) async fn ticker(node: Arc<Node>, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(Duration::from_millis(node.cfg.tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait() => return,
        }
        let touched = node.liveness().take_touched();
        if node.is_leader() {
            node.note_touches(&touched);
            node.expire_sessions();
            node.reap();
        } else if let Some((_, leader)) = node.leader() {
            if !touched.is_empty() {
                let n = node.clone();
                tokio::spawn(async move {
                    let req = TouchRequest { sessions: touched };
                    let r: Result<(), _> = n
                        .peers
                        .call(&leader.raft_addr, PeerKind::Touch, &req, FORWARD_TIMEOUT)
                        .await;
                    if let Err(e) = r {
                        tracing::debug!("failed to forward session liveness: {e}");
                    }
                });
            }
        }
    }
}

impl Node {
    pub(crate) fn note_touches(&self, sessions: &[u64]) {
        let timeouts: Vec<(u64, u32)> = {
            let sm = self.sm.lock();
            sessions
                .iter()
                .filter_map(|s| sm.tree.session(*s).map(|i| (*s, i.timeout_ms)))
                .collect()
        };
        self.liveness().renew(&timeouts, Instant::now());
    }

    fn expire_sessions(self: &Arc<Self>) {
        let sessions: Vec<(u64, u32)> = self
            .sm
            .lock()
            .tree
            .sessions()
            .map(|(id, i)| (id, i.timeout_ms))
            .collect();
        let due = self.liveness().due(&sessions, Instant::now());
        for id in due {
            tracing::info!(session = format!("{id:#x}"), "session expired");
            let node = self.clone();
            tokio::spawn(async move {
                let rx = node
                    .propose(Txn::CloseSession {
                        session_id: id,
                        expired: true,
                    })
                    .await;
                if !matches!(rx.await, Ok(Ok(_))) {
                    node.liveness().expiry_failed(id);
                }
            });
        }
    }

    fn reap(self: &Arc<Self>) {
        let due = self.sm.lock().tree.reap_candidates(now_ms());
        for (path, version, cversion) in due {
            let node = self.clone();
            tokio::spawn(async move {
                let _ = node
                    .propose(Txn::Reap {
                        path,
                        version,
                        cversion,
                    })
                    .await
                    .await;
            });
        }
    }
}
