//! The resource manager's gRPC services: decode, call the state, encode.

use std::sync::Arc;

use hstack_proto::scheduler as pb;
use hstack_proto::Error;
use tonic::{Request, Response, Status};

use super::ResourceManager;
use crate::wire;

#[derive(Clone)]
pub(crate) struct RmService {
    pub rm: Arc<ResourceManager>,
}

fn answer<T>(r: Result<T, Error>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl pb::application_client_server::ApplicationClient for RmService {
    async fn get_new_application(
        &self,
        _req: Request<pb::Empty>,
    ) -> Result<Response<pb::NewApplicationReply>, Status> {
        answer(Ok(self.rm.with(|st, cx| st.new_application(cx))))
    }

    async fn submit_application(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        answer(
            self.rm
                .with(|st, cx| st.submit(cx, r))
                .map(|()| pb::Empty {}),
        )
    }

    async fn get_application_report(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::ApplicationReport>, Status> {
        let r = req.into_inner();
        answer(wire::app_id(&r.app_id).and_then(|id| self.rm.with(|st, _| st.report(id))))
    }

    async fn list_applications(
        &self,
        req: Request<pb::ListApplicationsRequest>,
    ) -> Result<Response<pb::ApplicationList>, Status> {
        let r = req.into_inner();
        answer(Ok(self.rm.with(|st, _| st.list(&r))))
    }

    async fn kill_application(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::ApplicationReport>, Status> {
        let r = req.into_inner();
        answer(
            wire::app_id(&r.app_id).and_then(|id| self.rm.with(|st, cx| st.kill(cx, id, &r.user))),
        )
    }

    async fn get_containers(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::ContainerReportList>, Status> {
        let r = req.into_inner();
        answer(wire::app_id(&r.app_id).and_then(|id| self.rm.with(|st, _| st.containers(id))))
    }

    async fn get_cluster_nodes(
        &self,
        _req: Request<pb::Empty>,
    ) -> Result<Response<pb::NodeList>, Status> {
        answer(Ok(self.rm.with(|st, cx| st.nodes(cx))))
    }

    async fn get_queues(
        &self,
        _req: Request<pb::Empty>,
    ) -> Result<Response<pb::QueueList>, Status> {
        answer(Ok(self.rm.with(|st, _| st.queues())))
    }

    async fn get_cluster_metrics(
        &self,
        _req: Request<pb::Empty>,
    ) -> Result<Response<pb::ClusterMetrics>, Status> {
        answer(Ok(self.rm.with(|st, cx| st.cluster_metrics(cx))))
    }
}

#[tonic::async_trait]
impl pb::application_master_server::ApplicationMaster for RmService {
    async fn register_application_master(
        &self,
        req: Request<pb::RegisterAmRequest>,
    ) -> Result<Response<pb::RegisterAmReply>, Status> {
        let r = req.into_inner();
        answer(self.rm.with(|st, cx| st.register_am(cx, r)))
    }

    async fn allocate(
        &self,
        req: Request<pb::AllocateRequest>,
    ) -> Result<Response<pb::AllocateReply>, Status> {
        let r = req.into_inner();
        answer(self.rm.with(|st, cx| st.allocate(cx, r)))
    }

    async fn finish_application_master(
        &self,
        req: Request<pb::FinishAmRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        answer(
            self.rm
                .with(|st, cx| st.finish_am(cx, r))
                .map(|()| pb::Empty {}),
        )
    }
}

#[tonic::async_trait]
impl pb::resource_tracker_server::ResourceTracker for RmService {
    async fn register_node_manager(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeReply>, Status> {
        let r = req.into_inner();
        let node = r.node_id.clone();
        let (reply, kill) = self
            .rm
            .with(|st, cx| st.register_node(cx, r))
            .map_err(Status::from)?;
        // What it runs and should not: its first heartbeat's reply says
        // so again (kills are stateless); log it here.
        for k in kill {
            tracing::info!(node = %node, container = %k.container_id, "will kill a container it should not run");
        }
        Ok(Response::new(reply))
    }

    async fn node_heartbeat(
        &self,
        req: Request<pb::NodeHeartbeatRequest>,
    ) -> Result<Response<pb::NodeHeartbeatReply>, Status> {
        let r = req.into_inner();
        let (reply, launches) = self.rm.with(|st, cx| st.heartbeat(cx, r));
        self.rm.launch_all(launches);
        Ok(Response::new(reply))
    }
}
