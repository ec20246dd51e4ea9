//! Talking to the resource manager as a client (`hstack app`, `hstack
//! node`, `hstack queue`, the tests): one channel, retries of what may be
//! repeated while the resource manager is unreachable.

use std::time::Duration;

use hstack_proto::retry::Backoff;
use hstack_proto::scheduler as pb;
use hstack_proto::{Code, Error};
use tonic::transport::Channel;

type Client = pb::application_client_client::ApplicationClientClient<Channel>;

#[derive(Clone)]
pub struct RmClient {
    c: Client,
    pub address: String,
}

impl RmClient {
    pub fn new(address: &str) -> Result<RmClient, Error> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| {
                Error::new(
                    Code::InvalidArgument,
                    format!("resource manager {address:?}: {e}"),
                )
            })?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(RmClient {
            c: Client::new(ch).max_decoding_message_size(64 << 20),
            address: address.to_string(),
        })
    }

    /// Calls `f`, again while the resource manager is unreachable (for up
    /// to 15 s): every call here may be repeated (a repeated submission is
    /// accepted once).
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
            .with_patience(Duration::from_secs(15));
        hstack_proto::retry::call_repeatable(&self.c, b, f).await
    }

    pub async fn new_application(&self) -> Result<pb::NewApplicationReply, Error> {
        self.call(|mut c| async move { c.get_new_application(pb::Empty {}).await })
            .await
    }

    /// Submits (asking for an id first if `req.app_id` is empty); the id.
    pub async fn submit(&self, mut req: pb::SubmitRequest) -> Result<String, Error> {
        if req.app_id.is_empty() {
            req.app_id = self.new_application().await?.app_id;
        }
        let id = req.app_id.clone();
        self.call(|mut c| {
            let r = req.clone();
            async move { c.submit_application(r).await }
        })
        .await?;
        Ok(id)
    }

    pub async fn report(&self, app: &str) -> Result<pb::ApplicationReport, Error> {
        let req = pb::AppRequest {
            app_id: app.to_string(),
            user: String::new(),
        };
        self.call(|mut c| {
            let r = req.clone();
            async move { c.get_application_report(r).await }
        })
        .await
    }

    pub async fn list(
        &self,
        req: pb::ListApplicationsRequest,
    ) -> Result<pb::ApplicationList, Error> {
        self.call(|mut c| {
            let r = req.clone();
            async move { c.list_applications(r).await }
        })
        .await
    }

    pub async fn kill(&self, app: &str, user: &str) -> Result<pb::ApplicationReport, Error> {
        let req = pb::AppRequest {
            app_id: app.to_string(),
            user: user.to_string(),
        };
        self.call(|mut c| {
            let r = req.clone();
            async move { c.kill_application(r).await }
        })
        .await
    }

    pub async fn containers(&self, app: &str) -> Result<pb::ContainerReportList, Error> {
        let req = pb::AppRequest {
            app_id: app.to_string(),
            user: String::new(),
        };
        self.call(|mut c| {
            let r = req.clone();
            async move { c.get_containers(r).await }
        })
        .await
    }

    pub async fn nodes(&self) -> Result<pb::NodeList, Error> {
        self.call(|mut c| async move { c.get_cluster_nodes(pb::Empty {}).await })
            .await
    }

    pub async fn queues(&self) -> Result<pb::QueueList, Error> {
        self.call(|mut c| async move { c.get_queues(pb::Empty {}).await })
            .await
    }

    pub async fn metrics(&self) -> Result<pb::ClusterMetrics, Error> {
        self.call(|mut c| async move { c.get_cluster_metrics(pb::Empty {}).await })
            .await
    }
}

/// Whether an application's state is final.
pub fn is_over(r: &pb::ApplicationReport) -> bool {
    matches!(
        pb::AppState::try_from(r.state).unwrap_or_default(),
        pb::AppState::Finished | pb::AppState::Failed | pb::AppState::Killed
    )
}
