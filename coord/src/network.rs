//! Member-to-member traffic over the `CoordPeer` gRPC service: Raft RPCs,
//! proposals forwarded by followers, session liveness and read indexes.
//! Payloads are postcard; both ends are the same binary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hstack_proto::coord::coord_peer_client::CoordPeerClient;
use hstack_proto::coord::PeerMessage;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::error::CoordError;
use crate::logstore::Durable;
use crate::metrics::CoordMetrics;
use crate::types::{MemberNode, NodeId, TypeConfig};

/// What peer payloads are called in errors.
pub(crate) const PEER_PAYLOAD: &str = "peer message";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PeerKind {
    Append = 1,
    Vote = 2,
    Snapshot = 3,
    Touch = 5,
    ReadIndex = 6,
}

impl PeerKind {
    pub fn from_u32(k: u32) -> Option<Self> {
        Some(match k {
            1 => Self::Append,
            2 => Self::Vote,
            3 => Self::Snapshot,
            5 => Self::Touch,
            6 => Self::ReadIndex,
            _ => return None,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub struct TouchRequest {
    pub sessions: Vec<u64>,
}

pub type ReadIndexReply = Result<u64, CoordError>;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made: the request was certainly not delivered.
    #[error("cannot connect to peer {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("peer {addr} unreachable: {message}")]
    Unreachable { addr: String, message: String },
    #[error("peer {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("bad payload: {0}")]
    Codec(String),
}

/// Connections to peers, by address, shared by Raft and the forwarder.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    fn channel(&self, addr: &str) -> Result<Channel, CallError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| CallError::Unreachable {
                addr: addr.to_string(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5));
        let ch = ep.connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// Opens a `Pipe` stream to `addr`.
    pub async fn open_pipe(&self, addr: &str) -> Result<Pipe, CallError> {
        let mut client = CoordPeerClient::new(self.channel(addr)?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let outbound = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let inbound = client
            .pipe(outbound)
            .await
            .map_err(|s| status_error(addr, s))?
            .into_inner();
        Ok(Pipe {
            addr: addr.to_string(),
            tx,
            inbound: tokio::sync::Mutex::new(inbound),
        })
    }

    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        kind: PeerKind,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let payload = hstack_daemon::format::encode_body(req);
        let mut client = CoordPeerClient::new(self.channel(addr)?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let fut = client.call(PeerMessage {
            kind: kind as u32,
            payload,
        });
        let resp = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| CallError::Timeout {
                addr: addr.to_string(),
                timeout,
            })?
            .map_err(|s| status_error(addr, s))?;
        hstack_daemon::format::decode_body(PEER_PAYLOAD, &resp.into_inner().payload)
            .map_err(|e| CallError::Codec(e.to_string()))
    }
}

fn status_error(addr: &str, s: tonic::Status) -> CallError {
    let message = s.message().to_string();
    // tonic reports a failed connect as Unavailable with this text; it is
    // the only case where we know nothing was sent.
    if s.code() == tonic::Code::Unavailable && message.contains("connect error") {
        CallError::Connect {
            addr: addr.to_string(),
            message,
        }
    } else {
        CallError::Unreachable {
            addr: addr.to_string(),
            message,
        }
    }
}

/// A long-lived stream to one peer: one call at a time, replies in order.
pub struct Pipe {
    addr: String,
    tx: tokio::sync::mpsc::UnboundedSender<PeerMessage>,
    // A Mutex only to make the stream Sync (openraft wants a Sync network);
    // there is never contention: one call at a time.
    inbound: tokio::sync::Mutex<tonic::Streaming<PeerMessage>>,
}

impl Pipe {
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: PeerKind,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let addr = self.addr.clone();
        let payload = hstack_daemon::format::encode_body(req);
        let gone = |message: &str| CallError::Unreachable {
            addr: addr.clone(),
            message: message.to_string(),
        };
        self.tx
            .send(PeerMessage {
                kind: kind as u32,
                payload,
            })
            .map_err(|_| gone("stream closed"))?;
        let mut inbound = self.inbound.lock().await;
        let msg = tokio::time::timeout(timeout, inbound.message())
            .await
            .map_err(|_| CallError::Timeout {
                addr: addr.clone(),
                timeout,
            })?
            .map_err(|s| status_error(&addr, s))?
            .ok_or_else(|| gone("stream ended"))?;
        hstack_daemon::format::decode_body(PEER_PAYLOAD, &msg.payload)
            .map_err(|e| CallError::Codec(e.to_string()))
    }
}

pub struct Network {
    pub peers: Peers,
    pub metrics: CoordMetrics,
    /// The local log's durable mark, when the leader writes in parallel
    /// with replication (see `logstore`).
    pub durable: Option<watch::Receiver<Durable>>,
}

pub struct Conn {
    target: NodeId,
    addr: String,
    peers: Peers,
    metrics: CoordMetrics,
    durable: Option<watch::Receiver<Durable>>,
    /// AppendEntries go down this stream (reopened after any failure).
    pipe: Option<Pipe>,
}

impl PeerKind {
    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Append => "append",
            PeerKind::Vote => "vote",
            PeerKind::Snapshot => "snapshot",
            PeerKind::Touch => "touch",
            PeerKind::ReadIndex => "read_index",
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> Conn {
        Conn {
            target,
            addr: node.raft_addr.clone(),
            peers: self.peers.clone(),
            metrics: self.metrics.clone(),
            durable: self.durable.clone(),
            pipe: None,
        }
    }
}

impl Conn {
    /// AppendEntries on the pipe, the rest as unary calls.
    async fn transport<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: PeerKind,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        if kind != PeerKind::Append {
            return self.peers.call(&self.addr, kind, req, timeout).await;
        }
        if self.pipe.is_none() {
            self.pipe = Some(self.peers.open_pipe(&self.addr).await?);
        }
        let pipe = self.pipe.as_mut().expect("opened above");
        let r = pipe.call(kind, req, timeout).await;
        if r.is_err() {
            // Its reply may still arrive later: never reuse the stream.
            self.pipe = None;
        }
        r
    }

    async fn raft_call<Req, Resp, E>(
        &mut self,
        kind: PeerKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let started = std::time::Instant::now();
        let reply: Result<Result<Resp, RaftError<NodeId, E>>, CallError> =
            self.transport(kind, req, option.hard_ttl()).await;
        self.metrics
            .peer_rpc_seconds
            .with_label_values(&[kind.label()])
            .observe(started.elapsed().as_secs_f64());
        let reply = reply.map_err(|e| {
            let reason = match e {
                CallError::Timeout { .. } => "timeout",
                CallError::Unreachable { .. } | CallError::Connect { .. } => "unreachable",
                _ => "error",
            };
            self.metrics
                .peer_rpc_failures
                .with_label_values(&[kind.label(), reason])
                .inc();
            match e {
                CallError::Unreachable { .. } | CallError::Connect { .. } => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>>
    {
        if let (Some(durable), Some(commit)) = (self.durable.as_mut(), rpc.leader_commit) {
            // openraft counted this leader in the quorum before its own
            // fsync; a follower must not apply what only it might hold.
            // The fsync began before any follower had the entries, so this
            // wait is short and rare; after half the soft deadline, send the
            // smaller commit index the disk vouches for.
            if !durable.borrow().covers(commit.index) {
                self.metrics.commit_waits_for_fsync_total.inc();
                let _ = tokio::time::timeout(
                    option.soft_ttl() / 2,
                    durable.wait_for(|d| d.covers(commit.index)),
                )
                .await;
                let now = durable.borrow().last;
                if now < rpc.leader_commit {
                    rpc.leader_commit = now;
                }
            }
        }
        self.raft_call(PeerKind::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MemberNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.raft_call(PeerKind::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>> {
        self.raft_call(PeerKind::Vote, &rpc, &option).await
    }
}
