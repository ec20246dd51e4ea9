//! Calling node managers' ContainerManager: the resource manager starts
//! application masters with it, application masters their containers.
//! One channel per node, kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hstack_proto::scheduler as pb;
use hstack_proto::{Code, Error};
use tonic::transport::Channel;

type Client = pb::container_manager_client::ContainerManagerClient<Channel>;

fn connect(node_id: &str) -> Result<Client, Error> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{node_id}"))
        .map_err(|e| Error::new(Code::InvalidArgument, format!("node {node_id:?}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(Client::new(ch).max_decoding_message_size(16 << 20))
}

/// Starts one container on `node_id`; its failure as an error.
pub async fn start_one(
    node_id: &str,
    req: pb::StartContainerRequest,
) -> Result<pb::StartContainersReply, Error> {
    start_on(&mut connect(node_id)?, req).await
}

/// Sends one start to a node manager: a refusal of the container (in the
/// reply's `failed`) as an error too.
async fn start_on(
    c: &mut Client,
    req: pb::StartContainerRequest,
) -> Result<pb::StartContainersReply, Error> {
    let reply = c
        .start_containers(pb::StartContainersRequest {
            containers: vec![req],
        })
        .await
        .map_err(|s| Error::from_status(&s))?
        .into_inner();
    if let Some(f) = reply.failed.first() {
        let code = Code::try_from(f.code).unwrap_or(Code::Internal);
        return Err(Error::new(code, f.message.clone()));
    }
    Ok(reply)
}

/// Node managers by node id, for an application master.
#[derive(Default)]
pub struct NodeClients {
    clients: Mutex<HashMap<String, Client>>,
}

impl NodeClients {
    fn get(&self, node_id: &str) -> Result<Client, Error> {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.get(node_id) {
            return Ok(c.clone());
        }
        let c = connect(node_id)?;
        m.insert(node_id.to_string(), c.clone());
        Ok(c)
    }

    /// Starts `container` (as the resource manager placed it) running
    /// `launch`. The node's auxiliary services' metadata comes back.
    pub async fn start(
        &self,
        container: &pb::Container,
        launch: pb::LaunchContext,
    ) -> Result<HashMap<String, Vec<u8>>, Error> {
        let req = pb::StartContainerRequest {
            token: container.token.clone(),
            launch: Some(launch),
        };
        let reply = start_on(&mut self.get(&container.node_id)?, req).await?;
        Ok(reply.service_meta)
    }

    /// Stops a container (reported as killed by its application master).
    pub async fn stop(&self, node_id: &str, container_id: &str) -> Result<(), Error> {
        let mut c = self.get(node_id)?;
        c.stop_containers(pb::StopContainersRequest {
            container_ids: vec![container_id.to_string()],
            exit_status: crate::exit::KILLED_BY_APPMASTER,
        })
        .await
        .map_err(|s| Error::from_status(&s))?;
        Ok(())
    }
}
