//! Member-to-member traffic over the `CoordPeer` gRPC service: Raft RPCs,
//! proposals forwarded by followers, session liveness and read indexes.
//! Payloads are bincode; both ends are the same binary.

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
use tonic::transport::{Channel, Endpoint};

use crate::error::CoordError;
use crate::types::{Applied, MemberNode, NodeId, Txn, TypeConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PeerKind {
    Append = 1,
    Vote = 2,
    Snapshot = 3,
    Forward = 4,
    Touch = 5,
    ReadIndex = 6,
}

impl PeerKind {
    pub fn from_u32(k: u32) -> Option<Self> {
        Some(match k {
            1 => Self::Append,
            2 => Self::Vote,
            3 => Self::Snapshot,
            4 => Self::Forward,
            5 => Self::Touch,
            6 => Self::ReadIndex,
            _ => return None,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub struct ForwardRequest {
    pub txns: Vec<Txn>,
}

/// The log index the batch was committed at and each transaction's result.
pub type ForwardReply = Result<(u64, Vec<Applied>), CoordError>;

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

    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        kind: PeerKind,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let payload = bincode::serialize(req).map_err(|e| CallError::Codec(e.to_string()))?;
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
            .map_err(|s| {
                let message = s.message().to_string();
                // tonic reports a failed connect as Unavailable with this text;
                // it is the only case where we know nothing was sent.
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
            })?;
        bincode::deserialize(&resp.into_inner().payload)
            .map_err(|e| CallError::Codec(e.to_string()))
    }
}

pub struct Network {
    pub peers: Peers,
}

pub struct Conn {
    target: NodeId,
    addr: String,
    peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> Conn {
        Conn {
            target,
            addr: node.raft_addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

impl Conn {
    async fn raft_call<Req, Resp, E>(
        &self,
        kind: PeerKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply: Result<Resp, RaftError<NodeId, E>> = self
            .peers
            .call(&self.addr, kind, req, option.hard_ttl())
            .await
            .map_err(|e| match e {
                CallError::Unreachable { .. } | CallError::Connect { .. } => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>>
    {
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
