//! `hstack resourcemanager`: applications, node managers and the
//! scheduler (`state`), the three gRPC services on one port
//! (`ApplicationClient`, `ApplicationMaster`, `ResourceTracker`), the
//! launcher that starts application masters' containers on their nodes,
//! the monitor (lost nodes, silent masters, containers never started,
//! preemption), and the REST view under `/ws/v1/cluster`.

pub mod config;
mod metrics;
mod rest;
mod service;
mod state;
pub mod store;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hstack_daemon::{AtPath, Launch, StartError};
use hstack_proto::scheduler as pb;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use config::RmConfig;
use metrics::RmMetrics;
use state::{AmLaunch, Ctx, State};
use store::{FileStore, MemoryStore, StateStore};

use crate::sched::Scheduler;

/// The running resource manager.
pub struct ResourceManager {
    pub(crate) cfg: RmConfig,
    pub(crate) cluster_ts: u64,
    token_key: Vec<u8>,
    /// The RPC address application masters are told to call.
    pub(crate) address: String,
    store: Box<dyn StateStore>,
    metrics: RmMetrics,
    state: Mutex<State>,
    started: Instant,
    launches: mpsc::UnboundedSender<AmLaunch>,
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ResourceManager {
    /// Runs `f` on the state under the lock, with the context of now.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut State, &Ctx) -> T) -> T {
        let cx = Ctx {
            cfg: &self.cfg,
            cluster_ts: self.cluster_ts,
            token_key: &self.token_key,
            rm_address: &self.address,
            store: self.store.as_ref(),
            metrics: &self.metrics,
            now: self.started.elapsed().as_millis() as u64,
            wall: wall_ms(),
        };
        let mut st = self.lock();
        f(&mut st, &cx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands application masters' containers to the launcher.
    pub(crate) fn launch_all(&self, l: Vec<AmLaunch>) {
        for x in l {
            let _ = self.launches.send(x);
        }
    }
}

/// `hstack resourcemanager`.
pub struct ResourceManagerRole;

impl hstack_daemon::Role for ResourceManagerRole {
    const NAME: &'static str = "resourcemanager";
    type Config = RmConfig;
    type State = Arc<ResourceManager>;

    fn id(_cfg: &RmConfig) -> Result<String, StartError> {
        Ok("rm".into())
    }

    fn announce_dir(cfg: &RmConfig) -> PathBuf {
        cfg.data_path()
    }

    async fn start(cfg: RmConfig, launch: &mut Launch) -> Result<Arc<ResourceManager>, StartError> {
        start(cfg, launch).await
    }
}

async fn start(cfg: RmConfig, launch: &mut Launch) -> Result<Arc<ResourceManager>, StartError> {
    let dir = cfg.data_path();
    std::fs::create_dir_all(&dir).at(&dir)?;
    let sched_cfg = cfg
        .scheduler_config()
        .map_err(|m| StartError::bad_value("queues_file", &cfg.queues_file, m))?;
    let store: Box<dyn StateStore> = match cfg.store.as_str() {
        "file" => {
            let p = dir.join("state");
            Box::new(FileStore::open(&p).map_err(|e| StartError::storage(&p, e))?)
        }
        _ => Box::new(MemoryStore::default()),
    };
    let stored = store
        .load()
        .map_err(|e| StartError::storage(&dir.join("state"), e))?;
    let rpc = launch.bind("rpc", "rpc_addr", &cfg.rpc_addr).await?;
    let address = hstack_daemon::advertised(launch.bound("rpc"), &cfg.advertise_host);
    let (tx, rx) = mpsc::unbounded_channel();
    let metrics = RmMetrics::new(launch.registry());
    let rm = Arc::new(ResourceManager {
        cluster_ts: wall_ms(),
        token_key: crate::token::new_key(),
        address,
        store,
        metrics,
        state: Mutex::new(State::new(Scheduler::new(sched_cfg))),
        started: Instant::now(),
        launches: tx,
        cfg: cfg.clone(),
    });
    let recovered = stored.len();
    rm.with(|st, cx| st.recover(cx, stored))
        .map_err(|e| StartError::failed("recovering applications", e))?;
    if recovered > 0 {
        tracing::info!(
            applications = recovered,
            "applications recovered from the state store"
        );
    }

    let (status_rm, tables_rm) = (rm.clone(), rm.clone());
    launch
        .serve_http_with(
            "http_addr",
            &cfg.http_addr,
            Arc::new(move || (true, status_rm.with(|st, _| st.status_rows()))),
            hstack_daemon::HttpExtras {
                tables: Some(Arc::new(move || {
                    tables_rm.with(|st, cx| st.status_tables(cx))
                })),
                routes: Some(rest::routes(rm.clone())),
            },
        )
        .await?;
    let svc = service::RmService { rm: rm.clone() };
    launch.serve_grpc("rpc", rpc, move |mut s| {
        s.add_service(
            pb::application_client_server::ApplicationClientServer::new(svc.clone())
                .max_decoding_message_size(16 << 20),
        )
        .add_service(
            pb::application_master_server::ApplicationMasterServer::new(svc.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .add_service(
            pb::resource_tracker_server::ResourceTrackerServer::new(svc)
                .max_decoding_message_size(64 << 20),
        )
    })?;
    launch.spawn("launcher", launcher(rm.clone(), rx, launch.shutdown()));
    launch.spawn_until_shutdown("monitor", monitor(rm.clone()));
    tracing::info!(
        scheduler = cfg.scheduler.name(),
        address = %rm.address,
        "resource manager started"
    );
    Ok(rm)
}

/// Starts application masters' containers on their nodes, each in its
/// own task; a start that fails fails the attempt.
async fn launcher(
    rm: Arc<ResourceManager>,
    mut rx: mpsc::UnboundedReceiver<AmLaunch>,
    shutdown: hstack_daemon::Shutdown,
) {
    loop {
        let l = tokio::select! {
            _ = shutdown.wait() => return,
            l = rx.recv() => match l { Some(l) => l, None => return },
        };
        let rm = rm.clone();
        tokio::spawn(
            async move {
            let id = l
                .request
                .token
                .as_ref()
                .map(|t| t.container_id.clone())
                .unwrap_or_default();
            let r = crate::nm::client::start_one(&l.node_id, l.request).await;
            if let Err(e) = r {
                tracing::warn!(container = %id, node = %l.node_id, "could not start an application master: {e}");
                rm.with(|st, cx| st.am_launch_failed(cx, &id, e.to_string()));
            }
        }
            .in_current_span(),
        );
    }
}

/// Twice a second: lost nodes, silent masters, stale containers; and
/// preemption every `preemption_interval_ms`.
async fn monitor(rm: Arc<ResourceManager>) {
    let mut last_preempt = Instant::now();
    let every = Duration::from_millis(rm.cfg.preemption_interval_ms);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let preempt = rm.cfg.preemption && last_preempt.elapsed() >= every;
        if preempt {
            last_preempt = Instant::now();
        }
        rm.with(|st, cx| st.tick(cx, preempt));
    }
}
