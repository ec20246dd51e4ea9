//! The member's gRPC services: the client API (`Coord`: sessions and
//! ensemble administration) and the peer API (`CoordPeer`: Raft, forwarded
//! proposals, session liveness).

use std::collections::BTreeMap;
use std::sync::Arc;

use hstack_proto::coord as pb;
use openraft::ChangeMembers;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::{Code, CoordError};
use crate::forward::ForwardResult;
use crate::network::{PeerKind, ReadIndexReply, TouchRequest};
use crate::node::{not_leader, write_error, Node};
use crate::types::{MemberNode, Txn};

pub(crate) struct CoordService {
    pub node: Arc<Node>,
    pub me: MemberNode,
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
        let peer = request.remote_addr().map(|a| a.ip());
        tokio::spawn(
            crate::session::serve(self.node.clone(), request.into_inner(), tx, peer)
                .in_current_span(),
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
        let remote = req.remote_addr();
        let req = req.into_inner();
        // Before an ensemble exists there are no members to trust: a
        // bootstrap comes from this host (or an initial member's), not
        // from whoever it names.
        self.node
            .admit(remote, "bootstrap")
            .await
            .map_err(Status::from)?;
        if req.members.is_empty() {
            return Err(CoordError::new(
                Code::InvalidArgument,
                "bootstrap needs at least one member",
            )
            .into());
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
                    Code::InvalidArgument,
                    format!("bad or duplicate member id {}", m.id),
                )
                .into());
            }
        }
        if !members.contains_key(&self.node.id) {
            return Err(CoordError::new(
                Code::InvalidArgument,
                format!("member {} must be in its own ensemble", self.node.id),
            )
            .into());
        }
        self.node.raft.initialize(members).await.map_err(|e| {
            CoordError::new(Code::InvalidArgument, format!("cannot bootstrap: {e}"))
        })?;
        Ok(Response::new(self.node.members_reply()))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        let remote = req.remote_addr();
        self.node
            .admit(remote, "add a member")
            .await
            .map_err(Status::from)?;
        let req = req.into_inner();
        let m = req
            .member
            .ok_or_else(|| CoordError::new(Code::InvalidArgument, "member is required"))?;
        if m.id == 0 || m.raft_addr.is_empty() || m.client_addr.is_empty() {
            return Err(CoordError::new(
                Code::InvalidArgument,
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
        let remote = req.remote_addr();
        self.node
            .admit(remote, "remove a member")
            .await
            .map_err(Status::from)?;
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
                    CoordError::new(Code::InvalidArgument, "cannot remove the last voter").into(),
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
        let leader = self.node.leader();
        let named = leader
            .as_ref()
            .map(|(id, n)| format!("member {id} at {}", n.client_addr))
            .unwrap_or_else(|| "the leader once elected".into());
        // The hint is the leader's client address, for a client to act on.
        Err(CoordError::not_leader(
            format!("not the leader; send this to {named}"),
            leader.map(|(_, n)| n.client_addr),
        )
        .into())
    }
}

pub(crate) struct PeerService {
    pub node: Arc<Node>,
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<pb::PeerMessage>, Status> {
    let payload = hstack_daemon::format::encode_body(v);
    Ok(Response::new(pb::PeerMessage { kind: 0, payload }))
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, Status> {
    hstack_daemon::format::decode_body(crate::network::PEER_PAYLOAD, b)
        .map_err(|e| Status::invalid_argument(format!("bad peer payload: {e}")))
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
        self.node
            .admit_peer(req.remote_addr())
            .await
            .map_err(Status::from)?;
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
        self.node
            .admit_peer(req.remote_addr())
            .await
            .map_err(Status::from)?;
        let mut inbound = req.into_inner();
        let node = self.node.clone();
        let (tx, rx) = mpsc::unbounded_channel::<Result<pb::PeerMessage, Status>>();
        tokio::spawn(
            async move {
                let send = |tx: &mpsc::UnboundedSender<Result<pb::PeerMessage, Status>>,
                            r: ForwardResult| {
                    {
                        let payload = hstack_daemon::format::encode_body(&r);
                        let _ = tx.send(Ok(pb::PeerMessage { kind: 0, payload }));
                    }
                };
                while let Some(Ok(msg)) = futures::StreamExt::next(&mut inbound).await {
                    let Ok((seq, txns)) = hstack_daemon::format::decode_body::<(u64, Vec<Txn>)>(
                        crate::network::PEER_PAYLOAD,
                        &msg.payload,
                    ) else {
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
        self.node
            .admit_peer(req.remote_addr())
            .await
            .map_err(Status::from)?;
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
