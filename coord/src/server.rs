//! A coordination member: Raft, the state machine, the proposer (group
//! commit and forwarding to the leader), session liveness and expiry, the
//! container/TTL reaper, and the gRPC services.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hstack_daemon::Shutdown;
use hstack_proto::coord as pb;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::config::CoordConfig;
use crate::error::{Code, CoordError};
use crate::forward::{distribute, ForwardResult, Forwarder, Replies};
use crate::liveness::Liveness;
use crate::logstore::LogStore;
use crate::metrics::CoordMetrics;
use crate::network::{Network, PeerKind, Peers, ReadIndexReply, TouchRequest};
use crate::sm::{SmShared, StateMachine};
use crate::types::{Applied, Batch, MemberNode, NodeId, Raft, Txn, TypeConfig};

const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// A Raft entry stops growing past this many bytes of data.
const MAX_BATCH_BYTES: usize = 2 << 20;
/// Longest the leader's next batch waits for the log's fsync in progress.
const LOG_IDLE_WAIT: Duration = Duration::from_millis(2);
/// How long a proposal waits for a leader before it is refused.
const LEADER_WAIT: Duration = Duration::from_secs(3);

/// Roughly how many bytes a transaction adds to an entry.
fn txn_bytes(t: &Txn) -> usize {
    use crate::types::WriteOp;
    match t {
        Txn::Write { ops, .. } => ops
            .iter()
            .map(|o| match o {
                WriteOp::Create { path, data, .. } | WriteOp::SetData { path, data, .. } => {
                    32 + path.len() + data.len()
                }
                WriteOp::Delete { path, .. } | WriteOp::Check { path, .. } => 32 + path.len(),
            })
            .sum(),
        Txn::Reap { path, .. } => 32 + path.len(),
        _ => 32,
    }
}

/// A committed transaction as the proposer hands it back.
pub struct Committed {
    pub index: u64,
    pub applied: Applied,
}

struct Proposal {
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
    pub raft: Raft,
    pub sm: Arc<SmShared>,
    pub cfg: CoordConfig,
    pub metrics: CoordMetrics,
    pub peers: Peers,
    proposals: mpsc::Sender<Proposal>,
    liveness: Mutex<Liveness>,
    /// Log appends not yet fsynced (see LogStore::unflushed).
    log_unflushed: tokio::sync::watch::Receiver<usize>,
    /// One membership change at a time (see `Node::membership_change`).
    membership: tokio::sync::Mutex<()>,
}

/// A running member: the addresses it bound and how to stop it.
pub struct Handle {
    pub id: NodeId,
    pub client_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub node: Arc<Node>,
    shutdown: Shutdown,
}

impl Handle {
    /// Waits for the shutdown signal, then stops Raft.
    pub async fn wait(self) {
        self.shutdown.wait().await;
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!("failed to stop raft cleanly: {e}");
        }
    }
}

/// Starts a member with `cfg` and returns once it is listening.
pub async fn run(
    cfg: CoordConfig,
    shutdown: Shutdown,
    registry: prometheus::Registry,
) -> anyhow::Result<Handle> {
    cfg.validate()?;
    let dir = cfg.data_path();
    std::fs::create_dir_all(&dir)?;
    let metrics = CoordMetrics::new(&registry);
    hstack_daemon::register_build_info(&registry, "coord");

    let client_listener =
        tokio::net::TcpListener::bind(cfg.client_addr.parse::<SocketAddr>()?).await?;
    let raft_listener = tokio::net::TcpListener::bind(cfg.raft_addr.parse::<SocketAddr>()?).await?;
    let client_addr = client_listener.local_addr()?;
    let raft_addr = raft_listener.local_addr()?;

    let log_store = LogStore::open(&dir.join("raft-log"), Some(metrics.clone()))?
        .with_parallel_append(cfg.id)?;
    let log_unflushed = log_store.unflushed();
    let durable = log_store.durable();
    let sm = StateMachine::open(&dir.join("state"), metrics.clone())?.gated_on(durable.clone());
    let sm_shared = sm.shared.clone();
    let raft_cfg = openraft::Config {
        cluster_name: "hstack-coord".into(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_timeout_min_ms,
        election_timeout_max: cfg.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
        max_in_snapshot_log_to_keep: cfg.keep_logs,
        purge_batch_size: 256,
        // Entries carry up to MAX_BATCH_BYTES; keep one AppendEntries well
        // under the peer message limit.
        max_payload_entries: 16,
        ..Default::default()
    };
    let raft_cfg = Arc::new(raft_cfg.validate()?);
    let peers = Peers::default();
    let raft = Raft::new(
        cfg.id,
        raft_cfg,
        Network {
            peers: peers.clone(),
            metrics: metrics.clone(),
            durable: Some(durable),
        },
        log_store,
        sm,
    )
    .await?;

    let (ptx, prx) = mpsc::channel(65_536);
    let node = Arc::new(Node {
        id: cfg.id,
        raft: raft.clone(),
        sm: sm_shared,
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        peers,
        proposals: ptx,
        liveness: Mutex::new(Liveness::default()),
        log_unflushed,
        membership: tokio::sync::Mutex::new(()),
    });

    // HTTP first, so the address file lists every port at once.
    let status_node = node.clone();
    let http_state = hstack_daemon::HttpState {
        role: "coord".into(),
        id: cfg.id.to_string(),
        registry: registry.clone(),
        status: Arc::new(move || status_node.status_rows()),
    };
    let http_addr =
        hstack_daemon::serve_http(cfg.http_addr.parse()?, http_state, shutdown.clone()).await?;

    let me = MemberNode {
        raft_addr: hstack_daemon::advertised(raft_addr, &cfg.advertise_host),
        client_addr: hstack_daemon::advertised(client_addr, &cfg.advertise_host),
        http_addr: hstack_daemon::advertised(http_addr, &cfg.advertise_host),
    };

    // Services.
    let coord_svc = pb::coord_server::CoordServer::new(CoordService {
        node: node.clone(),
        me: me.clone(),
    })
    .max_decoding_message_size(4 << 20)
    .max_encoding_message_size(64 << 20);
    let peer_svc = pb::coord_peer_server::CoordPeerServer::new(PeerService { node: node.clone() })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    hstack_daemon::spawn_grpc!(client_listener, coord_svc, shutdown.clone(), "client")?;
    hstack_daemon::spawn_grpc!(raft_listener, peer_svc, shutdown.clone(), "raft")?;

    tokio::spawn(proposer_loop(node.clone(), prx).in_current_span());
    tokio::spawn(leader_watch(node.clone(), shutdown.clone()).in_current_span());
    tokio::spawn(ticker(node.clone(), shutdown.clone()).in_current_span());

    // Form the ensemble from static configuration if we are its smallest id.
    let initial = cfg.parse_initial_members()?;
    if let Some((min_id, _)) = initial.iter().min_by_key(|(id, _)| *id) {
        if *min_id == cfg.id && !raft.is_initialized().await? {
            let members: BTreeMap<NodeId, MemberNode> = initial.into_iter().collect();
            tracing::info!(
                members = members.len(),
                "forming the ensemble from initial_members"
            );
            if let Err(e) = raft.initialize(members).await {
                tracing::warn!("initialize: {e}");
            }
        }
    }

    tracing::info!(%client_addr, %raft_addr, %http_addr, "coordination member started");
    Ok(Handle {
        id: cfg.id,
        client_addr,
        raft_addr,
        http_addr,
        node,
        shutdown,
    })
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
    async fn settle_membership(&self) -> Result<(), CoordError> {
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

    async fn enqueue(
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

    fn status_rows(&self) -> (bool, Vec<(String, String)>) {
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

fn not_leader(message: String) -> CoordError {
    CoordError::new(Code::NotLeader, message)
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, MemberNode>>) -> CoordError {
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
async fn proposer_loop(node: Arc<Node>, mut rx: mpsc::Receiver<Proposal>) {
    let mut fwd: Option<Forwarder> = None;
    let slots = Arc::new(tokio::sync::Semaphore::new(node.cfg.max_inflight_batches));
    while let Some(first) = rx.recv().await {
        // Wait for an in-flight slot first: what arrives meanwhile joins
        // this batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
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
/// period whenever this member becomes leader.
async fn leader_watch(node: Arc<Node>, shutdown: Shutdown) {
    let mut rx = node.raft.metrics();
    let mut last_leader = None;
    let mut was_leader = false;
    loop {
        {
            let m = rx.borrow_and_update();
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
async fn ticker(node: Arc<Node>, shutdown: Shutdown) {
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
    fn note_touches(&self, sessions: &[u64]) {
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

// ---- gRPC services ----

struct CoordService {
    node: Arc<Node>,
    me: MemberNode,
}

type FrameStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ServerFrame, Status>> + Send>>;

#[tonic::async_trait]
impl pb::coord_server::Coord for CoordService {
    type SessionStream = FrameStream;

    async fn session(
        &self,
        request: Request<tonic::Streaming<pb::ClientFrame>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(
            crate::session::serve(self.node.clone(), request.into_inner(), tx).in_current_span(),
        );
        let out =
            futures::StreamExt::map(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), Ok);
        Ok(Response::new(Box::pin(out)))
    }

    async fn members(
        &self,
        _: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        Ok(Response::new(self.node.members_reply()))
    }

    async fn bootstrap(
        &self,
        req: Request<pb::BootstrapRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        let req = req.into_inner();
        if req.members.is_empty() {
            return Err(
                CoordError::new(Code::BadArguments, "bootstrap needs at least one member").into(),
            );
        }
        let mut members = BTreeMap::new();
        for m in req.members {
            let node = if m.id == self.node.id && m.raft_addr.is_empty() {
                self.me.clone()
            } else {
                MemberNode {
                    raft_addr: m.raft_addr,
                    client_addr: m.client_addr,
                    http_addr: m.http_addr,
                }
            };
            if m.id == 0 || node.raft_addr.is_empty() || members.insert(m.id, node).is_some() {
                return Err(CoordError::new(
                    Code::BadArguments,
                    format!("bad or duplicate member id {}", m.id),
                )
                .into());
            }
        }
        if !members.contains_key(&self.node.id) {
            return Err(CoordError::new(
                Code::BadArguments,
                format!("member {} must be in its own ensemble", self.node.id),
            )
            .into());
        }
        self.node
            .raft
            .initialize(members)
            .await
            .map_err(|e| CoordError::new(Code::BadArguments, format!("cannot bootstrap: {e}")))?;
        Ok(Response::new(self.node.members_reply()))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        let req = req.into_inner();
        let m = req
            .member
            .ok_or_else(|| CoordError::new(Code::BadArguments, "member is required"))?;
        if m.id == 0 || m.raft_addr.is_empty() || m.client_addr.is_empty() {
            return Err(CoordError::new(
                Code::BadArguments,
                "member needs an id > 0, raft_addr and client_addr",
            )
            .into());
        }
        self.require_leader()?;
        let _one_at_a_time = self.node.membership.lock().await;
        self.node.settle_membership().await?;
        let node = MemberNode {
            raft_addr: m.raft_addr,
            client_addr: m.client_addr,
            http_addr: m.http_addr,
        };
        self.node
            .raft
            .add_learner(m.id, node, true)
            .await
            .map_err(write_error)?;
        if req.voter {
            self.node.settle_membership().await?;
            self.node
                .raft
                .change_membership(ChangeMembers::AddVoterIds([m.id].into()), true)
                .await
                .map_err(write_error)?;
        }
        Ok(Response::new(self.node.members_reply()))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        let id = req.into_inner().id;
        self.require_leader()?;
        let _one_at_a_time = self.node.membership.lock().await;
        self.node.settle_membership().await?;
        let reply = self.node.members_reply();
        let Some(info) = reply.members.iter().find(|m| m.id == id) else {
            return Err(CoordError::new(
                Code::NoNode,
                format!("member {id} is not in the ensemble"),
            )
            .into());
        };
        if info.voter {
            if reply.members.iter().filter(|m| m.voter).count() == 1 {
                return Err(
                    CoordError::new(Code::BadArguments, "cannot remove the last voter").into(),
                );
            }
            self.node
                .raft
                .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                .await
                .map_err(write_error)?;
        } else {
            self.node
                .raft
                .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                .await
                .map_err(write_error)?;
        }
        Ok(Response::new(self.node.members_reply()))
    }
}

impl CoordService {
    fn require_leader(&self) -> Result<(), Status> {
        if self.node.is_leader() {
            return Ok(());
        }
        let hint = self
            .node
            .leader()
            .map(|(id, n)| format!("member {id} at {}", n.client_addr));
        Err(not_leader(format!(
            "not the leader; send this to {}",
            hint.unwrap_or_else(|| "the leader once elected".into())
        ))
        .into())
    }
}

struct PeerService {
    node: Arc<Node>,
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<pb::PeerMessage>, Status> {
    let payload = bincode::serialize(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::PeerMessage { kind: 0, payload }))
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, Status> {
    bincode::deserialize(b).map_err(|e| Status::invalid_argument(format!("bad peer payload: {e}")))
}

#[tonic::async_trait]
impl pb::coord_peer_server::CoordPeer for PeerService {
    type ForwardStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PeerMessage, Status>> + Send>>;

    type PipeStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PeerMessage, Status>> + Send>>;

    /// Calls on one stream, handled one at a time, answered in order.
    async fn pipe(
        &self,
        req: Request<tonic::Streaming<pb::PeerMessage>>,
    ) -> Result<Response<Self::PipeStream>, Status> {
        let mut inbound = req.into_inner();
        let me = PeerService {
            node: self.node.clone(),
        };
        let (tx, rx) = mpsc::unbounded_channel::<Result<pb::PeerMessage, Status>>();
        tokio::spawn(
            async move {
                while let Some(Ok(msg)) = futures::StreamExt::next(&mut inbound).await {
                    let res = me.handle(msg).await;
                    let failed = res.is_err();
                    if tx.send(res.map(Response::into_inner)).is_err() || failed {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }

    /// A follower's forwarded batches: handed to Raft in arrival order
    /// (which is the follower's order), answered as each commits.
    async fn forward(
        &self,
        req: Request<tonic::Streaming<pb::PeerMessage>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let mut inbound = req.into_inner();
        let node = self.node.clone();
        let (tx, rx) = mpsc::unbounded_channel::<Result<pb::PeerMessage, Status>>();
        tokio::spawn(
            async move {
                let send = |tx: &mpsc::UnboundedSender<Result<pb::PeerMessage, Status>>,
                            r: ForwardResult| {
                    if let Ok(payload) = bincode::serialize(&r) {
                        let _ = tx.send(Ok(pb::PeerMessage { kind: 0, payload }));
                    }
                };
                while let Some(Ok(msg)) = futures::StreamExt::next(&mut inbound).await {
                    let Ok((seq, txns)) = bincode::deserialize::<(u64, Vec<Txn>)>(&msg.payload)
                    else {
                        tracing::warn!("dropping a forward stream with an undecodable batch");
                        return;
                    };
                    if !node.is_leader() {
                        // Refused before submitting: certainly not applied.
                        let results = txns
                            .iter()
                            .map(|_| Err(not_leader("not the leader".into())))
                            .collect();
                        send(&tx, ForwardResult { seq, results });
                        continue;
                    }
                    // Into this leader's own proposer, in order: forwarded and
                    // local transactions share entries (fewer, larger ones).
                    let mut waits = Vec::with_capacity(txns.len());
                    for txn in txns {
                        waits.push(node.enqueue(txn, true).await);
                    }
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut results = Vec::with_capacity(waits.len());
                        for w in waits {
                            results.push(match w.await {
                                Ok(r) => r.map(|c| (c.index, c.applied)),
                                Err(_) => Err(CoordError::unavailable("member is shutting down")),
                            });
                        }
                        send(&tx, ForwardResult { seq, results });
                    });
                }
            }
            .in_current_span(),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }

    async fn call(
        &self,
        req: Request<pb::PeerMessage>,
    ) -> Result<Response<pb::PeerMessage>, Status> {
        self.handle(req.into_inner()).await
    }
}

impl PeerService {
    /// Handles one peer message, timing it by kind.
    async fn handle(&self, msg: pb::PeerMessage) -> Result<Response<pb::PeerMessage>, Status> {
        let kind = PeerKind::from_u32(msg.kind);
        let started = std::time::Instant::now();
        let res = self.dispatch(kind, msg).await;
        if let Some(k) = kind {
            let elapsed = started.elapsed().as_secs_f64();
            self.node
                .metrics
                .peer_handle_seconds
                .with_label_values(&[k.label()])
                .observe(elapsed);
        }
        res
    }

    async fn dispatch(
        &self,
        kind: Option<PeerKind>,
        msg: pb::PeerMessage,
    ) -> Result<Response<pb::PeerMessage>, Status> {
        let raft = &self.node.raft;
        match kind {
            Some(PeerKind::Append) => encode(&raft.append_entries(decode(&msg.payload)?).await),
            Some(PeerKind::Vote) => encode(&raft.vote(decode(&msg.payload)?).await),
            Some(PeerKind::Snapshot) => encode(&raft.install_snapshot(decode(&msg.payload)?).await),
            Some(PeerKind::Touch) => {
                let req: TouchRequest = decode(&msg.payload)?;
                if self.node.is_leader() {
                    self.node.note_touches(&req.sessions);
                }
                encode(&())
            }
            Some(PeerKind::ReadIndex) => {
                let reply: ReadIndexReply = if self.node.is_leader() {
                    self.node.read_index().await
                } else {
                    Err(not_leader("not the leader".into()))
                };
                encode(&reply)
            }
            None => Err(Status::invalid_argument(format!(
                "unknown peer message kind {}",
                msg.kind
            ))),
        }
    }
}
