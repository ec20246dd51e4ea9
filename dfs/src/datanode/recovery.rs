//! Lease recovery, HDFS's way. When a writer dies its last block's replicas
//! may differ in length (each got a different prefix of the packets), and
//! the namenode cannot tell which bytes the writer saw acknowledged. It
//! picks one replica holder as the primary and hands it a new generation
//! stamp; the primary asks every replica for its state
//! (`InitReplicaRecovery`, which also stops a writer still appending),
//! agrees a length every kept replica can hold (a finalized replica's
//! length, else the shortest one being written: bytes past it were never
//! acknowledged), cuts them all to it at the new stamp
//! (`UpdateReplicaUnderRecovery`) and tells the namenode
//! (`CommitBlockSynchronization`). Replicas left at the old stamp are stale
//! from then on, so a copy that missed the agreement can never be mistaken
//! for a good one.

use std::sync::Arc;
use std::time::Duration;

use hstack_proto::dfs as pb;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::xceiver::{Event, XceiverCtx};
use crate::blockstore::ReplicaState;
use crate::error::{Code, FsError, FsResult};
use crate::namespace::BlockRec;

const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// A replica's state as `InitReplicaRecovery` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecoveryState {
    Finalized,
    Rbw,
    Missing,
}

impl RecoveryState {
    fn to_pb(self) -> pb::ReplicaRecoveryState {
        match self {
            RecoveryState::Finalized => pb::ReplicaRecoveryState::Finalized,
            RecoveryState::Rbw => pb::ReplicaRecoveryState::Rbw,
            RecoveryState::Missing => pb::ReplicaRecoveryState::Missing,
        }
    }

    fn from_pb(s: pb::ReplicaRecoveryState) -> Option<Self> {
        match s {
            pb::ReplicaRecoveryState::Finalized => Some(RecoveryState::Finalized),
            pb::ReplicaRecoveryState::Rbw => Some(RecoveryState::Rbw),
            pb::ReplicaRecoveryState::Missing => Some(RecoveryState::Missing),
            pb::ReplicaRecoveryState::Unknown => None,
        }
    }
}

/// Step 1 on one replica: stop any writer of the block and report what we
/// hold (id, stamp, bytes on disk with their checksums).
pub(crate) fn init_recovery(
    ctx: &XceiverCtx,
    block: BlockRec,
    new_gen_stamp: u64,
) -> FsResult<(BlockRec, RecoveryState)> {
    // Claiming the block fences a pipeline still appending to it.
    let (claim, found) = ctx
        .fences
        .claim(block.id, || ctx.store.visible_len(block.id));
    ctx.fences.release(claim);
    let (replica, len) = match found {
        Ok(f) => f,
        Err(e) if e.code == Code::FileNotFound => {
            let missing = BlockRec {
                id: block.id,
                gen_stamp: 0,
                len: 0,
            };
            return Ok((missing, RecoveryState::Missing));
        }
        Err(e) => return Err(e),
    };
    if replica.gen_stamp > new_gen_stamp {
        return Err(FsError::invalid(format!(
            "block {}: replica has stamp {}, newer than the recovery's {new_gen_stamp}",
            block.id, replica.gen_stamp
        )));
    }
    let state = match replica.state {
        ReplicaState::Finalized => RecoveryState::Finalized,
        ReplicaState::Rbw => RecoveryState::Rbw,
    };
    let rec = BlockRec {
        id: block.id,
        gen_stamp: replica.gen_stamp,
        len,
    };
    Ok((rec, state))
}

/// Step 2 on one replica: cut it to the agreed length at the new stamp and
/// finalize it (durably: the namenode is about to count on it).
pub(crate) fn update_recovery(
    ctx: &XceiverCtx,
    block: BlockRec,
    new_gen_stamp: u64,
    new_len: u64,
) -> FsResult<BlockRec> {
    let (claim, done) = ctx.fences.claim(block.id, || {
        let w = ctx
            .store
            .reopen_rbw(block.id, block.gen_stamp, new_gen_stamp, new_len)?;
        ctx.store.finalize(w, true)
    });
    ctx.fences.release(claim);
    let rec = done?;
    tracing::info!(
        block = rec.id,
        stamp = rec.gen_stamp,
        len = rec.len,
        "replica recovered"
    );
    ctx.count_replicas();
    ctx.event(Event::Received(rec));
    Ok(rec)
}

/// What a reader may see of a replica now (a file still being written).
pub(crate) fn visible_length(ctx: &XceiverCtx, block: BlockRec) -> FsResult<BlockRec> {
    let (replica, len) = ctx.store.visible_len(block.id)?;
    if replica.gen_stamp < block.gen_stamp {
        return Err(FsError::new(
            Code::Corrupt,
            format!(
                "replica of block {} has stamp {}, the reader wants {}",
                block.id, replica.gen_stamp, block.gen_stamp
            ),
        ));
    }
    Ok(BlockRec {
        id: block.id,
        gen_stamp: replica.gen_stamp,
        len,
    })
}

/// The datanode's gRPC API.
pub struct DatanodeService {
    ctx: Arc<XceiverCtx>,
}

impl DatanodeService {
    pub fn new(ctx: Arc<XceiverCtx>) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl pb::datanode_server::Datanode for DatanodeService {
    async fn init_replica_recovery(
        &self,
        req: Request<pb::InitRecoveryRequest>,
    ) -> Result<Response<pb::ReplicaRecoveryInfo>, Status> {
        let req = req.into_inner();
        let block = crate::wire::block(req.block)?;
        let (rec, state) = init_recovery(&self.ctx, block, req.new_gen_stamp)?;
        Ok(Response::new(pb::ReplicaRecoveryInfo {
            block: Some(pb::Block::from(rec)),
            state: state.to_pb() as i32,
        }))
    }

    async fn update_replica_under_recovery(
        &self,
        req: Request<pb::UpdateRecoveryRequest>,
    ) -> Result<Response<pb::Block>, Status> {
        let req = req.into_inner();
        let block = crate::wire::block(req.block)?;
        let rec = update_recovery(&self.ctx, block, req.new_gen_stamp, req.new_len)?;
        Ok(Response::new(pb::Block::from(rec)))
    }

    async fn get_replica_visible_length(
        &self,
        req: Request<pb::Block>,
    ) -> Result<Response<pb::Block>, Status> {
        let block = crate::wire::block(Some(req.into_inner()))?;
        Ok(Response::new(pb::Block::from(visible_length(
            &self.ctx, block,
        )?)))
    }
}

/// One replica of a block under recovery, as the primary sees it.
struct Participant {
    info: pb::DatanodeInfo,
    replica: BlockRec,
    state: RecoveryState,
}

async fn peer(info: &pb::DatanodeInfo) -> FsResult<pb::datanode_client::DatanodeClient<Channel>> {
    let unreachable = |e: String| {
        FsError::new(
            Code::Unavailable,
            format!("datanode {} at {}: {e}", info.id, info.rpc_addr),
        )
    };
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", info.rpc_addr))
        .map_err(|e| unreachable(e.to_string()))?
        .connect_timeout(PEER_TIMEOUT)
        .timeout(PEER_TIMEOUT)
        .connect()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(pb::datanode_client::DatanodeClient::new(ch))
}

async fn init_on(
    ctx: &XceiverCtx,
    info: &pb::DatanodeInfo,
    block: BlockRec,
    new_gen_stamp: u64,
) -> FsResult<(BlockRec, RecoveryState)> {
    if info.id == ctx.id {
        return init_recovery(ctx, block, new_gen_stamp);
    }
    let reply = peer(info)
        .await?
        .init_replica_recovery(pb::InitRecoveryRequest {
            block: Some(pb::Block::from(block)),
            new_gen_stamp,
        })
        .await
        .map_err(FsError::from)?
        .into_inner();
    let state = RecoveryState::from_pb(reply.state())
        .ok_or_else(|| FsError::invalid(format!("unknown replica state {:?}", reply.state)))?;
    Ok((crate::wire::block(reply.block)?, state))
}

async fn update_on(
    ctx: &XceiverCtx,
    info: &pb::DatanodeInfo,
    block: BlockRec,
    new_gen_stamp: u64,
    new_len: u64,
) -> FsResult<BlockRec> {
    if info.id == ctx.id {
        return update_recovery(ctx, block, new_gen_stamp, new_len);
    }
    let reply = peer(info)
        .await?
        .update_replica_under_recovery(pb::UpdateRecoveryRequest {
            block: Some(pb::Block::from(block)),
            new_gen_stamp,
            new_len,
        })
        .await
        .map_err(FsError::from)?
        .into_inner();
    crate::wire::block(Some(reply))
}

/// What the primary decided: the length to agree on, or that the block
/// holds no data at all.
#[derive(Debug, PartialEq)]
pub(crate) enum Agreement {
    /// Bring these replicas (indexes) to this length.
    Len { len: u64, keep: Vec<usize> },
    /// Every replica answered and none holds a byte: drop the block.
    Empty,
    /// Not enough answers to decide; the namenode tries again later.
    Undecided,
}

/// Picks the length: any finalized replica's (they all have the same one),
/// else the shortest replica being written. Replicas older than the
/// block's stamp missed writes and take no part.
pub(crate) fn agree(block: BlockRec, answers: &[Option<(BlockRec, RecoveryState)>]) -> Agreement {
    let keep: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            Some((r, s)) if *s != RecoveryState::Missing && r.gen_stamp >= block.gen_stamp => {
                Some(i)
            }
            _ => None,
        })
        .collect();
    let get = |i: usize| answers[i].as_ref().expect("kept replicas answered");
    if keep.is_empty() {
        let all_missing = answers
            .iter()
            .all(|a| matches!(a, Some((_, RecoveryState::Missing))));
        return if all_missing && !answers.is_empty() {
            Agreement::Empty
        } else {
            Agreement::Undecided
        };
    }
    let finalized = keep
        .iter()
        .map(|i| get(*i))
        .find(|(_, s)| *s == RecoveryState::Finalized);
    let len = match finalized {
        Some((r, _)) => r.len,
        None => keep.iter().map(|i| get(*i).0.len).min().unwrap_or(0),
    };
    if len == 0 {
        return Agreement::Empty;
    }
    Agreement::Len { len, keep }
}

/// Runs a recovery as its primary and commits it with the namenode.
pub(crate) async fn recover(
    ctx: &XceiverCtx,
    nn: &mut super::actor::NamenodeClient,
    cmd: pb::RecoverCommand,
) -> FsResult<()> {
    let block = crate::wire::block(cmd.block)?;
    let new_gs = cmd.new_gen_stamp;
    let mut parts = Vec::with_capacity(cmd.replicas.len());
    let mut answers = Vec::with_capacity(cmd.replicas.len());
    for info in cmd.replicas {
        match init_on(ctx, &info, block, new_gs).await {
            Ok((replica, state)) => {
                answers.push(Some((replica, state)));
                parts.push(Some(Participant {
                    info,
                    replica,
                    state,
                }));
            }
            Err(e) => {
                tracing::info!(
                    "block {}: replica on {} takes no part in recovery: {e}",
                    block.id,
                    info.id
                );
                answers.push(None);
                parts.push(None);
            }
        }
    }
    let commit =
        |new_len: u64, datanodes: Vec<String>, delete_block: bool| pb::CommitBlockSyncRequest {
            old_block: Some(pb::Block::from(block)),
            new_gen_stamp: new_gs,
            new_len,
            datanodes,
            delete_block,
        };
    let req = match agree(block, &answers) {
        Agreement::Undecided => {
            return Err(FsError::new(
                Code::Unavailable,
                format!(
                    "block {}: no replica at stamp {} or newer answered",
                    block.id, block.gen_stamp
                ),
            ))
        }
        Agreement::Empty => commit(0, vec![], true),
        Agreement::Len { len, keep } => {
            let mut synced = Vec::new();
            for i in keep {
                let p = parts[i].as_ref().expect("kept replicas answered");
                match update_on(ctx, &p.info, block, new_gs, len).await {
                    Ok(_) => synced.push(p.info.id.clone()),
                    Err(e) => tracing::info!(
                        "block {}: replica on {} ({:?}, {} bytes at stamp {}) not recovered: {e}",
                        block.id,
                        p.info.id,
                        p.state,
                        p.replica.len,
                        p.replica.gen_stamp
                    ),
                }
            }
            if synced.is_empty() {
                return Err(FsError::new(
                    Code::Unavailable,
                    format!(
                        "block {}: no replica could be brought to {len} bytes",
                        block.id
                    ),
                ));
            }
            commit(len, synced, false)
        }
    };
    let (len, nodes, delete) = (req.new_len, req.datanodes.len(), req.delete_block);
    tokio::time::timeout(PEER_TIMEOUT, nn.commit_block_synchronization(req))
        .await
        .map_err(|_| FsError::new(Code::Unavailable, "commit timed out"))?
        .map_err(FsError::from)?;
    ctx.metrics.blocks_recovered_total.inc();
    tracing::info!(
        block = block.id,
        stamp = new_gs,
        len,
        replicas = nodes,
        delete,
        "lease recovery committed"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(gs: u64, len: u64) -> BlockRec {
        BlockRec {
            id: 1,
            gen_stamp: gs,
            len,
        }
    }

    #[test]
    fn the_agreed_length_is_a_finalized_one_else_the_shortest() {
        use RecoveryState::*;
        let b = rec(5, 0);
        let a = [
            Some((rec(5, 2048), Rbw)),
            Some((rec(5, 1024), Rbw)),
            Some((rec(4, 512), Rbw)),
            None,
        ];
        assert_eq!(
            agree(b, &a),
            Agreement::Len {
                len: 1024,
                keep: vec![0, 1]
            }
        );
        let a = [Some((rec(5, 2048), Rbw)), Some((rec(5, 3000), Finalized))];
        assert_eq!(
            agree(b, &a),
            Agreement::Len {
                len: 3000,
                keep: vec![0, 1]
            }
        );
        let a = [Some((rec(5, 0), Rbw)), Some((rec(0, 0), Missing))];
        assert_eq!(agree(b, &a), Agreement::Empty);
        let a = [Some((rec(0, 0), Missing)), Some((rec(0, 0), Missing))];
        assert_eq!(agree(b, &a), Agreement::Empty);
        let a = [Some((rec(0, 0), Missing)), None];
        assert_eq!(agree(b, &a), Agreement::Undecided);
        let a = [Some((rec(4, 100), Rbw))];
        assert_eq!(agree(b, &a), Agreement::Undecided, "only stale replicas");
    }
}
