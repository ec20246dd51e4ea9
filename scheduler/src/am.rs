//! The application master's side of the scheduler (YARN's AMRMClient and
//! NMClient): register with the resource manager, allocate in a loop
//! (asks out; containers placed and containers ended in), start placed
//! containers on their nodes, finish. The identity comes from the
//! environment the resource manager gave the master's container.

use std::time::Duration;

use hstack_proto::retry::Backoff;
use hstack_proto::scheduler as pb;
use hstack_proto::{Code, Error};
use tonic::transport::Channel;

pub use crate::nm::client::NodeClients;

type Client = pb::application_master_client::ApplicationMasterClient<Channel>;

pub struct AmClient {
    rm: Client,
    am: pb::AmIdentity,
    response_id: u64,
    pub app_id: String,
    pub container_id: String,
}

fn env(k: &str) -> Result<String, Error> {
    std::env::var(k).map_err(|_| {
        Error::new(
            Code::InvalidArgument,
            format!("{k} is not set: an application master runs in the container the resource manager started for it"),
        )
    })
}

impl AmClient {
    /// From HSTACK_RM_ADDRESS, HSTACK_ATTEMPT_ID, HSTACK_AM_TOKEN and
    /// CONTAINER_ID.
    pub fn from_env() -> Result<AmClient, Error> {
        let rm = env("HSTACK_RM_ADDRESS")?;
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{rm}"))
            .map_err(|e| {
                Error::new(
                    Code::InvalidArgument,
                    format!("HSTACK_RM_ADDRESS {rm:?}: {e}"),
                )
            })?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(AmClient {
            rm: Client::new(ch).max_decoding_message_size(64 << 20),
            am: pb::AmIdentity {
                attempt_id: env("HSTACK_ATTEMPT_ID")?,
                token: env("HSTACK_AM_TOKEN")?,
            },
            response_id: 0,
            app_id: env("HSTACK_APP_ID")?,
            container_id: env("CONTAINER_ID").unwrap_or_default(),
        })
    }

    /// Allocate is safe to repeat (the same response_id gets the same
    /// answer); so are register and finish.
    async fn retrying<T, F, Fut>(&mut self, f: F) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
            .with_patience(Duration::from_secs(60));
        hstack_proto::retry::call_repeatable(&self.rm, b, f).await
    }

    pub async fn register(
        &mut self,
        host: &str,
        tracking_url: &str,
    ) -> Result<pb::RegisterAmReply, Error> {
        let req = pb::RegisterAmRequest {
            am: Some(self.am.clone()),
            host: host.to_string(),
            tracking_url: tracking_url.to_string(),
        };
        self.retrying(|mut c| {
            let r = req.clone();
            async move { c.register_application_master(r).await }
        })
        .await
    }

    /// One allocate call: `asks` (by the master's own ids; a repeated id
    /// replaces) and `releases` out, progress reported.
    pub async fn allocate(
        &mut self,
        asks: Vec<pb::ResourceAsk>,
        releases: Vec<String>,
        progress: f32,
    ) -> Result<pb::AllocateReply, Error> {
        let req = pb::AllocateRequest {
            am: Some(self.am.clone()),
            response_id: self.response_id,
            asks,
            releases,
            progress,
        };
        let reply = self
            .retrying(|mut c| {
                let r = req.clone();
                async move { c.allocate(r).await }
            })
            .await?;
        self.response_id = reply.response_id;
        Ok(reply)
    }

    pub async fn finish(
        &mut self,
        status: pb::FinalStatus,
        diagnostics: &str,
    ) -> Result<(), Error> {
        let req = pb::FinishAmRequest {
            am: Some(self.am.clone()),
            final_status: status as i32,
            diagnostics: diagnostics.to_string(),
            tracking_url: String::new(),
        };
        self.retrying(|mut c| {
            let r = req.clone();
            async move { c.finish_application_master(r).await }
        })
        .await?;
        Ok(())
    }
}
