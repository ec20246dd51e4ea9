//! Auxiliary services: work a node manager hosts for applications beside
//! their containers (YARN's `yarn.nodemanager.aux-services`), such as the
//! MapReduce shuffle serving map outputs to reducers. A service is
//! registered under a name by the code that provides it (before the node
//! manager starts), and run by nodes whose `aux_services` names it. It
//! hears when an application's first container starts here and when the
//! application is over, may listen on a port of its own, and tells
//! application masters what they need of it (its port) in the reply to
//! every StartContainers.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use hstack_daemon::Shutdown;

/// What a service is given when the node manager starts it.
#[derive(Clone, Debug)]
pub struct AuxContext {
    pub node_id: String,
    pub local_dirs: Vec<PathBuf>,
    pub log_dir: PathBuf,
    /// Its own directory under the node's data directory.
    pub data_dir: PathBuf,
}

pub type ServeFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pub trait AuxService: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// The address it wants to listen on (`host:port`, port 0 for any),
    /// announced under its name; `None` if it serves nothing.
    fn listen_addr(&self) -> Option<String> {
        None
    }
    /// Serves on the listener bound for it, until `shutdown`.
    fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: Shutdown,
    ) -> ServeFuture {
        Box::pin(async move {
            // Held open (not answered) until the node stops.
            let _held = listener;
            shutdown.wait().await
        })
    }
    /// The first container of `app` (run by `user`) starts on this node.
    fn app_started(&self, _app: &str, _user: &str) {}
    /// `app` is over: what the service kept of it may go.
    fn app_finished(&self, _app: &str) {}
    /// What application masters are told of it (given the port it bound).
    fn meta(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Told the address it was bound to.
    fn bound(&self, _addr: std::net::SocketAddr) {}
}

pub type AuxFactory = fn(&AuxContext) -> Result<Arc<dyn AuxService>, String>;

fn registry() -> &'static Mutex<HashMap<String, AuxFactory>> {
    static R: OnceLock<Mutex<HashMap<String, AuxFactory>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Makes a service available to node managers under `name`.
pub fn register(name: &str, factory: AuxFactory) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_string(), factory);
}

pub(crate) fn lookup(name: &str) -> Option<AuxFactory> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .copied()
}

pub(crate) fn known() -> Vec<String> {
    let mut v: Vec<String> = registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    v.sort();
    v
}
