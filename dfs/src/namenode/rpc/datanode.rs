//! `DatanodeProtocol`: what datanodes tell the namenode.

use std::sync::Arc;

use hstack_proto::dfs as pb;
use tonic::{Request, Response, Status};

use super::{answer, bad_replicas, nodes_pb};
use crate::blockmap::NodeStats;
use crate::error::FsResult;
use crate::namenode::ops::{BlockSync, DatanodeCommand, HeartbeatAnswer, Registration};
use crate::namenode::Namenode;
use crate::namespace::BlockRec;
use crate::wire;

pub(crate) struct DatanodeProtocolService {
    pub nn: Arc<Namenode>,
}

fn command_pb(c: DatanodeCommand) -> pb::DatanodeCommand {
    use pb::datanode_command::Cmd;
    let cmd = match c {
        DatanodeCommand::Replicate { block, targets } => Cmd::Replicate(pb::ReplicateCommand {
            block: Some(block.into()),
            targets: nodes_pb(targets),
        }),
        DatanodeCommand::Delete(blocks) => Cmd::Delete(pb::DeleteCommand {
            blocks: blocks.into_iter().map(Into::into).collect(),
        }),
        DatanodeCommand::Recover {
            block,
            new_gen_stamp,
            replicas,
        } => Cmd::Recover(pb::RecoverCommand {
            block: Some(block.into()),
            new_gen_stamp,
            replicas: nodes_pb(replicas),
        }),
    };
    pb::DatanodeCommand { cmd: Some(cmd) }
}

/// The address a call came from.
fn ip<T>(req: &Request<T>) -> Option<std::net::IpAddr> {
    req.remote_addr().map(|a| a.ip())
}

fn blocks(v: Vec<pb::Block>) -> Vec<BlockRec> {
    v.into_iter().map(Into::into).collect()
}

#[tonic::async_trait]
impl pb::datanode_protocol_server::DatanodeProtocol for DatanodeProtocolService {
    async fn handshake(
        &self,
        _req: Request<pb::Empty>,
    ) -> Result<Response<pb::HandshakeReply>, Status> {
        let res = self
            .nn
            .handshake()
            .map(|cluster_id| pb::HandshakeReply { cluster_id });
        answer(&self.nn, "handshake", res)
    }

    async fn register_datanode(
        &self,
        req: Request<pb::DatanodeRegistration>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let remote = ip(&req);
        let r = req.into_inner();
        let res = (|| {
            let info = r
                .info
                .ok_or_else(|| crate::FsError::invalid("registration without datanode info"))?;
            let reg = Registration {
                stats: NodeStats {
                    capacity: info.capacity,
                    used: info.used,
                    remaining: info.remaining,
                    xceivers: info.xceivers,
                    failed_volumes: info.failed_volumes,
                },
                id: info.id,
                host: info.host,
                transfer_addr: info.transfer_addr,
                rpc_addr: info.rpc_addr,
                http_addr: info.http_addr,
                rack: info.rack,
                domain_socket: info.domain_socket_path,
                cluster_id: r.cluster_id,
            };
            let done = self.nn.register_datanode(reg, remote)?;
            Ok(pb::RegisterReply {
                id: done.id,
                heartbeat_ms: done.heartbeat_ms,
                block_report_ms: done.block_report_ms,
                cluster_id: done.cluster_id,
            })
        })();
        answer(&self.nn, "register_datanode", res)
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let remote = ip(&req);
        let r = req.into_inner();
        let stats = NodeStats {
            capacity: r.capacity,
            used: r.used,
            remaining: r.remaining,
            xceivers: r.xceivers,
            failed_volumes: r.failed_volumes,
        };
        let res = self.nn.heartbeat(&r.id, stats, remote).map(|a| match a {
            HeartbeatAnswer::Reregister => pb::HeartbeatReply {
                commands: vec![],
                reregister: true,
            },
            HeartbeatAnswer::Commands(cmds) => pb::HeartbeatReply {
                commands: cmds.into_iter().map(command_pb).collect(),
                reregister: false,
            },
        });
        answer(&self.nn, "heartbeat", res)
    }

    async fn block_report(
        &self,
        req: Request<pb::BlockReportRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = ip(&req);
        let r = req.into_inner();
        let res = self
            .nn
            .block_report(&r.id, &blocks(r.blocks), remote)
            .map(|()| pb::Empty {});
        answer(&self.nn, "block_report", res)
    }

    async fn block_received_and_deleted(
        &self,
        req: Request<pb::IncrementalBlockReport>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = ip(&req);
        let r = req.into_inner();
        let deleted: Vec<u64> = r.deleted.iter().map(|b| b.id).collect();
        let res = self
            .nn
            .blocks_received_and_deleted(&r.id, &blocks(r.received), &deleted, remote)
            .map(|()| pb::Empty {});
        answer(&self.nn, "block_received_and_deleted", res)
    }

    async fn commit_block_synchronization(
        &self,
        req: Request<pb::CommitBlockSyncRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = ip(&req);
        let r = req.into_inner();
        let res = async {
            let sync = BlockSync {
                old: wire::block(r.old_block)?,
                new_gen_stamp: r.new_gen_stamp,
                new_len: r.new_len,
                datanodes: r.datanodes,
                delete_block: r.delete_block,
            };
            self.nn.commit_block_sync(sync, remote).await?;
            FsResult::Ok(pb::Empty {})
        };
        answer(&self.nn, "commit_block_synchronization", res.await)
    }

    async fn report_bad_blocks(
        &self,
        req: Request<pb::ReportBadBlocksRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = ip(&req);
        let r = req.into_inner();
        let res = (|| {
            self.nn
                .datanode_reports_bad(&bad_replicas(r.blocks)?, remote)?;
            Ok(pb::Empty {})
        })();
        answer(&self.nn, "report_bad_blocks", res)
    }
}
