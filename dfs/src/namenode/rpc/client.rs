//! `ClientProtocol`: the namespace and writing files.

use std::sync::Arc;

use hstack_proto::dfs as pb;
use tonic::{Request, Response, Status};

use super::{answer, bad_replicas, located_pb, status_pb, who};
use crate::namenode::ops::CreateArgs;
use crate::namenode::Namenode;
use crate::wire;

pub(crate) struct ClientService {
    pub nn: Arc<Namenode>,
}

#[tonic::async_trait]
impl pb::client_protocol_server::ClientProtocol for ClientService {
    async fn mkdirs(
        &self,
        req: Request<pb::MkdirsRequest>,
    ) -> Result<Response<pb::FileStatusReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            let s = self
                .nn
                .mkdirs(&w, &r.path, r.permission, r.create_parent)
                .await?;
            Ok(pb::FileStatusReply {
                status: Some(status_pb(s)),
            })
        };
        answer(&self.nn, "mkdirs", res.await)
    }

    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::FileStatusReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            let args = CreateArgs {
                path: r.path,
                permission: r.permission,
                replication: r.replication,
                block_size: r.block_size,
                overwrite: r.overwrite,
                create_parent: r.create_parent,
            };
            let s = self.nn.create(&w, args).await?;
            Ok(pb::FileStatusReply {
                status: Some(status_pb(s)),
            })
        };
        answer(&self.nn, "create", res.await)
    }

    async fn add_block(
        &self,
        req: Request<pb::AddBlockRequest>,
    ) -> Result<Response<pb::LocatedBlock>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            let previous = r.previous.map(Into::into);
            let l = self
                .nn
                .add_block(&w, r.inode_id, previous, &r.excluded)
                .await?;
            Ok(located_pb(l))
        };
        answer(&self.nn, "add_block", res.await)
    }

    async fn abandon_block(
        &self,
        req: Request<pb::AbandonBlockRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            let b = wire::block(r.block)?;
            self.nn.abandon_block(&w, r.inode_id, b).await?;
            Ok(pb::Empty {})
        };
        answer(&self.nn, "abandon_block", res.await)
    }

    async fn complete(
        &self,
        req: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            let last = r.last.map(Into::into);
            let complete = self.nn.complete(&w, r.inode_id, last).await?;
            Ok(pb::CompleteReply { complete })
        };
        answer(&self.nn, "complete", res.await)
    }

    async fn get_block_locations(
        &self,
        req: Request<pb::GetBlockLocationsRequest>,
    ) -> Result<Response<pb::LocatedBlocks>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            let f = self.nn.block_locations(&w, &r.path, r.offset, r.length)?;
            Ok(pb::LocatedBlocks {
                file_len: f.file_len,
                under_construction: f.under_construction,
                blocks: f.blocks.into_iter().map(located_pb).collect(),
                last_block: f.last_block.map(located_pb),
                last_block_complete: f.last_block_complete,
            })
        })();
        answer(&self.nn, "get_block_locations", res)
    }

    async fn rename(&self, req: Request<pb::RenameRequest>) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            self.nn.rename(&w, r.src, r.dst).await?;
            Ok(pb::Empty {})
        };
        answer(&self.nn, "rename", res.await)
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            self.nn.delete(&w, r.path, r.recursive).await?;
            Ok(pb::DeleteReply { deleted: true })
        };
        answer(&self.nn, "delete", res.await)
    }

    async fn get_listing(
        &self,
        req: Request<pb::GetListingRequest>,
    ) -> Result<Response<pb::Listing>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            let (entries, remaining) = self.nn.list(&w, &r.path, &r.start_after, r.limit)?;
            Ok(pb::Listing {
                entries: entries.into_iter().map(status_pb).collect(),
                remaining: remaining as u32,
            })
        })();
        answer(&self.nn, "get_listing", res)
    }

    async fn get_file_info(
        &self,
        req: Request<pb::PathRequest>,
    ) -> Result<Response<pb::FileStatusReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            Ok(pb::FileStatusReply {
                status: self.nn.file_info(&w, &r.path)?.map(status_pb),
            })
        })();
        answer(&self.nn, "get_file_info", res)
    }

    async fn set_replication(
        &self,
        req: Request<pb::SetReplicationRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            self.nn.set_replication(&w, r.path, r.replication).await?;
            Ok(pb::Empty {})
        };
        answer(&self.nn, "set_replication", res.await)
    }

    async fn set_permission(
        &self,
        req: Request<pb::SetPermissionRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            self.nn.set_permission(&w, r.path, r.permission).await?;
            Ok(pb::Empty {})
        };
        answer(&self.nn, "set_permission", res.await)
    }

    async fn set_owner(
        &self,
        req: Request<pb::SetOwnerRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            let some = |s: String| (!s.is_empty()).then_some(s);
            self.nn
                .set_owner(&w, r.path, some(r.owner), some(r.group))
                .await?;
            Ok(pb::Empty {})
        };
        answer(&self.nn, "set_owner", res.await)
    }

    async fn set_times(
        &self,
        req: Request<pb::SetTimesRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            let opt = |t: i64| (t >= 0).then_some(t);
            self.nn
                .set_times(&w, r.path, opt(r.mtime_ms), opt(r.atime_ms))
                .await?;
            Ok(pb::Empty {})
        };
        answer(&self.nn, "set_times", res.await)
    }

    async fn get_content_summary(
        &self,
        req: Request<pb::PathRequest>,
    ) -> Result<Response<pb::ContentSummary>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            let s = self.nn.content_summary(&w, &r.path)?;
            Ok(pb::ContentSummary {
                length: s.length,
                files: s.files,
                directories: s.directories,
                space_consumed: s.space_consumed,
            })
        })();
        answer(&self.nn, "get_content_summary", res)
    }

    async fn get_fs_stats(
        &self,
        req: Request<pb::FsStatsRequest>,
    ) -> Result<Response<pb::FsStats>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            let s = self.nn.fs_stats(&w)?;
            Ok(pb::FsStats {
                capacity: s.capacity,
                used: s.used,
                remaining: s.remaining,
                under_replicated: s.under_replicated,
                corrupt: s.corrupt,
                missing: s.missing,
                files: s.files,
                blocks: s.blocks,
            })
        })();
        answer(&self.nn, "get_fs_stats", res)
    }

    async fn renew_lease(
        &self,
        req: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            self.nn.renew_lease(&w)?;
            Ok(pb::Empty {})
        })();
        answer(&self.nn, "renew_lease", res)
    }

    async fn update_block_for_pipeline(
        &self,
        req: Request<pb::UpdateBlockForPipelineRequest>,
    ) -> Result<Response<pb::LocatedBlock>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            let b = wire::block(r.block)?;
            let b = self.nn.update_block_for_pipeline(&w, b).await?;
            Ok(pb::LocatedBlock {
                block: Some(b.into()),
                ..Default::default()
            })
        };
        answer(&self.nn, "update_block_for_pipeline", res.await)
    }

    async fn update_pipeline(
        &self,
        req: Request<pb::UpdatePipelineRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(&self.nn, r.caller, remote)?;
            let old = wire::block(r.old_block)?;
            let new = wire::block(r.new_block)?;
            self.nn.update_pipeline(&w, old, new, &r.new_nodes).await?;
            Ok(pb::Empty {})
        };
        answer(&self.nn, "update_pipeline", res.await)
    }

    async fn report_bad_blocks(
        &self,
        req: Request<pb::ReportBadBlocksRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(&self.nn, r.caller, remote)?;
            self.nn.client_reports_bad(&w, &bad_replicas(r.blocks)?)?;
            Ok(pb::Empty {})
        })();
        answer(&self.nn, "report_bad_blocks", res)
    }
}
