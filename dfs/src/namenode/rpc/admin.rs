//! `AdminProtocol`: reports, fsck, safe mode, decommissioning. Everything
//! but fsck and reading the safe mode is for the superuser only.

use std::sync::Arc;

use hstack_proto::dfs as pb;
use tonic::{Request, Response, Status};

use super::{answer, nodes_pb, who};
use crate::namenode::ops::{Fsck, Report, SafeModeAction};
use crate::namenode::Namenode;

pub(crate) struct AdminService {
    pub nn: Arc<Namenode>,
}

fn report_pb(r: Report) -> pb::DatanodeReport {
    pb::DatanodeReport {
        datanodes: nodes_pb(r.datanodes),
        capacity: r.capacity,
        used: r.used,
        remaining: r.remaining,
        under_replicated: r.under_replicated,
        missing: r.missing,
        corrupt: r.corrupt,
        safe_mode: r.safe_mode,
        files: r.files,
        blocks: r.blocks,
        pending_replication: r.pending_replication,
        excess: r.excess,
    }
}

fn fsck_pb(f: Fsck) -> pb::FsckReply {
    pb::FsckReply {
        files: f
            .files
            .into_iter()
            .map(|file| pb::FsckFile {
                path: file.path,
                len: file.len,
                replication: file.replication,
                under_construction: file.under_construction,
                blocks: file
                    .blocks
                    .into_iter()
                    .map(|b| pb::FsckBlock {
                        block: Some(b.block.into()),
                        replicas: nodes_pb(b.replicas),
                        corrupt_on: b.corrupt_on,
                        problems: b.problems,
                    })
                    .collect(),
            })
            .collect(),
        directories: f.directories,
        total_blocks: f.total_blocks,
        under_replicated: f.under_replicated,
        mis_replicated: f.mis_replicated,
        missing: f.missing,
        corrupt: f.corrupt,
        healthy: f.healthy,
    }
}

#[tonic::async_trait]
impl pb::admin_protocol_server::AdminProtocol for AdminService {
    async fn get_datanode_report(
        &self,
        req: Request<pb::DatanodeReportRequest>,
    ) -> Result<Response<pb::DatanodeReport>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            Ok(report_pb(self.nn.report(&w)?))
        })();
        answer(&self.nn, "get_datanode_report", res)
    }

    async fn fsck(&self, req: Request<pb::FsckRequest>) -> Result<Response<pb::FsckReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            let p = if r.path.is_empty() { "/" } else { &r.path };
            Ok(fsck_pb(self.nn.fsck(&w, p)?))
        })();
        answer(&self.nn, "fsck", res)
    }

    async fn set_safe_mode(
        &self,
        req: Request<pb::SafeModeRequest>,
    ) -> Result<Response<pb::SafeModeReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            let action = match pb::SafeModeAction::try_from(r.action) {
                Ok(pb::SafeModeAction::SafeModeGet) => SafeModeAction::Get,
                Ok(pb::SafeModeAction::SafeModeEnter) => SafeModeAction::Enter,
                Ok(pb::SafeModeAction::SafeModeLeave) => SafeModeAction::Leave,
                Err(_) => {
                    return Err(crate::FsError::invalid(format!(
                        "safe mode action {}: expected get, enter or leave",
                        r.action
                    )))
                }
            };
            let s = self.nn.safe_mode(&w, action)?;
            Ok(pb::SafeModeReply {
                on: s.on,
                reason: s.reason,
                blocks_total: s.blocks_total,
                blocks_safe: s.blocks_safe,
            })
        })();
        answer(&self.nn, "set_safe_mode", res)
    }

    async fn decommission(
        &self,
        req: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DatanodeReport>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            Ok(report_pb(self.nn.decommission(
                &w,
                &r.datanodes,
                r.recommission,
            )?))
        })();
        answer(&self.nn, "decommission", res)
    }

    async fn remove_dead_datanodes(
        &self,
        req: Request<pb::RemoveDeadDatanodesRequest>,
    ) -> Result<Response<pb::DatanodeReport>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            Ok(report_pb(self.nn.remove_dead(&w, &r.datanodes)?))
        })();
        answer(&self.nn, "remove_dead_datanodes", res)
    }
}
