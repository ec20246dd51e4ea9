//! `hstack nodemanager`: runs containers for the resource manager and
//! application masters (`containers`), holds them to their resources
//! (`limits`), registers with the resource manager and heartbeats its
//! containers' states (the replies say what to kill and which
//! applications are over), hosts auxiliary services (`aux`), and serves
//! containers' logs over HTTP.

pub mod aux;
pub mod client;
pub mod config;
mod containers;
mod limits;
mod metrics;
mod procs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hstack_daemon::axum::extract::{Path, Query, State};
use hstack_daemon::axum::http::StatusCode;
use hstack_daemon::axum::response::{IntoResponse, Response};
use hstack_daemon::axum::routing::get;
use hstack_daemon::axum::{Json, Router};
use hstack_daemon::{AtPath, Launch, Shutdown, StartError};
use hstack_proto::retry::Backoff;
use hstack_proto::scheduler as pb;
use tonic::{Request, Status};

pub use config::{MemoryEnforcement, NmConfig};
use containers::Containers;
use metrics::NmMetrics;

/// The running node manager.
pub struct NodeManager {
    pub node_id: String,
    containers: Arc<Containers>,
    registered: std::sync::atomic::AtomicBool,
}

impl NodeManager {
    pub fn limits(&self) -> &'static str {
        self.containers.limits.name()
    }
}

/// `hstack nodemanager`.
pub struct NodeManagerRole;

fn node_name(cfg: &NmConfig) -> String {
    if !cfg.id.is_empty() {
        return cfg.id.clone();
    }
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "nm".into())
}

impl hstack_daemon::Role for NodeManagerRole {
    const NAME: &'static str = "nodemanager";
    type Config = NmConfig;
    type State = Arc<NodeManager>;

    fn id(cfg: &NmConfig) -> Result<String, StartError> {
        Ok(node_name(cfg))
    }

    fn announce_dir(cfg: &NmConfig) -> PathBuf {
        cfg.data_path()
    }

    async fn start(cfg: NmConfig, launch: &mut Launch) -> Result<Arc<NodeManager>, StartError> {
        start(cfg, launch).await
    }
}

async fn start(cfg: NmConfig, launch: &mut Launch) -> Result<Arc<NodeManager>, StartError> {
    let data = cfg.data_path();
    for d in std::iter::once(data.clone())
        .chain(cfg.local_paths())
        .chain(std::iter::once(cfg.log_path()))
    {
        std::fs::create_dir_all(&d).at(&d)?;
    }
    let rpc = launch.bind("rpc", "rpc_addr", &cfg.rpc_addr).await?;
    let rpc_addr = launch.bound("rpc");
    let node_id = hstack_daemon::advertised(rpc_addr, &cfg.advertise_host);
    let name = launch.id().to_string();
    let limits = limits::Limits::setup(&cfg, &name).map_err(|m| {
        StartError::bad_value(
            "memory_enforcement",
            format!("{:?}", cfg.memory_enforcement).to_lowercase(),
            m,
        )
    })?;
    let ctx = aux::AuxContext {
        node_id: node_id.clone(),
        local_dirs: cfg.local_paths(),
        log_dir: cfg.log_path(),
        data_dir: data.join("aux"),
    };
    let mut services: Vec<Arc<dyn aux::AuxService>> = Vec::new();
    for s in &cfg.aux_services {
        let Some(factory) = aux::lookup(s) else {
            return Err(StartError::bad_value(
                "aux_services",
                cfg.aux_services.join(","),
                format!("no auxiliary service {s:?} in this build (known: {})", {
                    let k = aux::known();
                    if k.is_empty() {
                        "none".to_string()
                    } else {
                        k.join(", ")
                    }
                }),
            ));
        };
        let svc =
            factory(&ctx).map_err(|m| StartError::failed(format!("auxiliary service {s}"), m))?;
        if let Some(addr) = svc.listen_addr() {
            let key = format!("aux_services ({s})");
            let l = launch.bind(leak(s), &key, &addr).await?;
            svc.bound(launch.bound(leak(s)));
            let (svc2, shutdown) = (svc.clone(), launch.shutdown());
            launch.spawn("aux", svc2.serve(l, shutdown));
        }
        services.push(svc);
    }
    let metrics = NmMetrics::new(launch.registry());
    let containers = Arc::new(Containers::new(
        cfg.clone(),
        node_id.clone(),
        limits,
        metrics,
        services,
    ));
    let killed = containers
        .recover_orphans()
        .map_err(|e| StartError::storage(&data.join("containers"), e))?;
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed containers an earlier run of this node manager left running"
        );
    }
    let nm = Arc::new(NodeManager {
        node_id: node_id.clone(),
        containers: containers.clone(),
        registered: std::sync::atomic::AtomicBool::new(false),
    });

    let status_nm = nm.clone();
    let tables_c = containers.clone();
    launch
        .serve_http_with(
            "http_addr",
            &cfg.http_addr,
            Arc::new(move || {
                let c = &status_nm.containers;
                let ready = status_nm
                    .registered
                    .load(std::sync::atomic::Ordering::Relaxed);
                let used = c.used();
                (
                    ready,
                    vec![
                        ("node".into(), status_nm.node_id.clone()),
                        ("registered".into(), ready.to_string()),
                        ("limits".into(), c.limits.name().into()),
                        ("containers".into(), c.running().to_string()),
                        ("allocated".into(), used.to_string()),
                    ],
                )
            }),
            hstack_daemon::HttpExtras {
                tables: Some(Arc::new(move || {
                    vec![hstack_daemon::StatusTable {
                        title: "Containers".into(),
                        columns: [
                            "container",
                            "application",
                            "state",
                            "resource",
                            "running for",
                        ]
                        .map(String::from)
                        .to_vec(),
                        rows: tables_c.table(),
                    }]
                })),
                routes: Some(routes(nm.clone())),
            },
        )
        .await?;
    let svc = ContainerService { nm: nm.clone() };
    launch.serve_grpc("rpc", rpc, move |mut s| {
        s.add_service(pb::container_manager_server::ContainerManagerServer::new(
            svc,
        ))
    })?;
    let from = Some(rpc_addr.ip());
    let rm = hstack_daemon::net::channel_from(from, &cfg.resource_manager).map_err(|e| {
        StartError::bad_value("resource_manager", &cfg.resource_manager, e.to_string())
    })?;
    let bound_http = launch.bound("http");
    containers
        .http_port
        .store(bound_http.port(), std::sync::atomic::Ordering::Relaxed);
    let http = hstack_daemon::advertised(bound_http, &cfg.advertise_host);
    launch.spawn(
        "heartbeat",
        heartbeat_loop(nm.clone(), cfg.clone(), http, rm, launch.shutdown()),
    );
    let (mon, interval) = (
        containers.clone(),
        Duration::from_millis(cfg.monitor_interval_ms),
    );
    launch.spawn_until_shutdown("monitor", async move {
        let mut n = 0u64;
        loop {
            tokio::time::sleep(interval).await;
            mon.check_memory();
            n += 1;
            if n % 4 == 0 {
                mon.sweep();
            }
        }
    });
    let (stopper, shutdown) = (containers.clone(), launch.shutdown());
    launch.spawn("stop-containers", async move {
        shutdown.wait().await;
        stopper.stop_all().await;
    });
    tracing::info!(node = %node_id, limits = containers.limits.name(), memory_mb = cfg.memory_mb, vcores = cfg.vcores, rack = %cfg.rack, "node manager started");
    Ok(nm)
}

/// Names of announced listeners are static strings; an auxiliary
/// service's is made one once, at start.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

type RmClient = pb::resource_tracker_client::ResourceTrackerClient<tonic::transport::Channel>;

/// Registers, then heartbeats; registers again when told to (or after
/// the resource manager forgot this node).
async fn heartbeat_loop(
    nm: Arc<NodeManager>,
    cfg: NmConfig,
    http: String,
    ch: tonic::transport::Channel,
    shutdown: Shutdown,
) {
    let mut rm = RmClient::new(ch).max_decoding_message_size(64 << 20);
    let c = nm.containers.clone();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0u64;
    'register: loop {
        let req = pb::RegisterNodeRequest {
            node_id: nm.node_id.clone(),
            host: nm
                .node_id
                .rsplit_once(':')
                .map_or("", |(h, _)| h)
                .to_string(),
            http_addr: http.clone(),
            rack: cfg.rack.clone(),
            capability: Some(pb::Resource {
                memory_mb: cfg.memory_mb as i64,
                vcores: cfg.vcores as i32,
            }),
            containers: c.statuses(),
        };
        let reply = tokio::select! {
            _ = shutdown.wait() => return,
            r = rm.register_node_manager(req) => r,
        };
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let e = hstack_proto::Error::from_status(&s);
                c.metrics.heartbeat_failures.inc();
                if failures % 60 == 0 {
                    tracing::warn!(rm = %cfg.resource_manager, "cannot register with the resource manager: {e}");
                }
                failures += 1;
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(backoff.next_pause().unwrap_or(Duration::from_secs(5))) => {}
                }
                continue;
            }
        };
        failures = 0;
        backoff.reset();
        c.set_token_key(reply.token_key);
        nm.registered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(rm = %cfg.resource_manager, rack = %reply.rack, "registered with the resource manager");
        let every = Duration::from_millis(reply.heartbeat_ms.max(50));
        let mut response_id = 0;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let req = pb::NodeHeartbeatRequest {
                node_id: nm.node_id.clone(),
                response_id,
                containers: c.statuses(),
                healthy: true,
                health_report: String::new(),
                apps: c.apps(),
            };
            let r = match rm.node_heartbeat(req).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    c.metrics.heartbeat_failures.inc();
                    if failures % 60 == 0 {
                        tracing::warn!(rm = %cfg.resource_manager, "heartbeat failed: {}", hstack_proto::Error::from_status(&s));
                    }
                    failures += 1;
                    continue;
                }
            };
            failures = 0;
            c.metrics.heartbeats.inc();
            response_id = r.response_id;
            for k in r.kill {
                if let Ok(id) = crate::wire::container_id(&k.container_id) {
                    c.kill(id, k.exit_status, k.diagnostics);
                }
            }
            c.acknowledge(&r.acknowledged);
            c.finish_apps(&r.finished_apps);
            match pb::NodeAction::try_from(r.action).unwrap_or_default() {
                pb::NodeAction::Resync => {
                    tracing::info!(
                        "the resource manager does not know this node: registering again"
                    );
                    nm.registered
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    continue 'register;
                }
                pb::NodeAction::Shutdown => {
                    tracing::warn!("the resource manager told this node to shut down");
                    return;
                }
                pb::NodeAction::Normal => {}
            }
        }
    }
}

#[derive(Clone)]
struct ContainerService {
    nm: Arc<NodeManager>,
}

#[tonic::async_trait]
impl pb::container_manager_server::ContainerManager for ContainerService {
    async fn start_containers(
        &self,
        req: Request<pb::StartContainersRequest>,
    ) -> Result<tonic::Response<pb::StartContainersReply>, Status> {
        let c = &self.nm.containers;
        let mut reply = pb::StartContainersReply::default();
        for r in req.into_inner().containers {
            let id = r
                .token
                .as_ref()
                .map(|t| t.container_id.clone())
                .unwrap_or_default();
            match c.start(r) {
                Ok(()) => reply.started.push(id),
                Err(e) => {
                    tracing::warn!(container = %id, "refused to start a container: {e}");
                    reply.failed.push(pb::ContainerFailure {
                        container_id: id,
                        code: e.code as i32,
                        message: e.message,
                    });
                }
            }
        }
        for a in &c.aux {
            reply.service_meta.insert(a.name().to_string(), a.meta());
        }
        Ok(tonic::Response::new(reply))
    }

    async fn stop_containers(
        &self,
        req: Request<pb::StopContainersRequest>,
    ) -> Result<tonic::Response<pb::StopContainersReply>, Status> {
        let r = req.into_inner();
        let c = &self.nm.containers;
        let status = match r.exit_status {
            0 => crate::exit::KILLED_BY_APPMASTER,
            s => s,
        };
        let mut reply = pb::StopContainersReply::default();
        for s in r.container_ids {
            match crate::wire::container_id(&s) {
                Ok(id) if c.status_of(&id).is_some() => {
                    c.kill(
                        id,
                        status,
                        "killed: stopped by its application master".into(),
                    );
                    reply.stopped.push(s);
                }
                Ok(id) => reply.failed.push(pb::ContainerFailure {
                    container_id: s,
                    code: hstack_proto::Code::ContainerNotFound as i32,
                    message: format!("{id} is not on this node"),
                }),
                Err(e) => reply.failed.push(pb::ContainerFailure {
                    container_id: s,
                    code: e.code as i32,
                    message: e.message,
                }),
            }
        }
        Ok(tonic::Response::new(reply))
    }

    async fn get_container_statuses(
        &self,
        req: Request<pb::ContainerIds>,
    ) -> Result<tonic::Response<pb::ContainerStatusList>, Status> {
        let ids = req.into_inner().container_ids;
        let all = self.nm.containers.statuses();
        let statuses = all
            .into_iter()
            .filter(|s| ids.is_empty() || ids.contains(&s.container_id))
            .collect();
        Ok(tonic::Response::new(pb::ContainerStatusList { statuses }))
    }
}

#[derive(serde::Deserialize)]
struct LogQuery {
    /// Only the last this many bytes.
    tail: Option<u64>,
}

fn routes(nm: Arc<NodeManager>) -> Router {
    Router::new()
        .route("/logs/:container/:file", get(log))
        .route("/ws/v1/node/info", get(info))
        .route("/ws/v1/node/containers", get(containers_json))
        .with_state(nm)
}

async fn log(
    State(nm): State<Arc<NodeManager>>,
    Path((container, file)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let p = match nm.containers.log_file(&container, &file) {
        Ok(p) => p,
        Err(e) => {
            let code = if e.code == hstack_proto::Code::InvalidArgument {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::NOT_FOUND
            };
            return (code, format!("{e}\n")).into_response();
        }
    };
    match tokio::fs::read(&p).await {
        Ok(bytes) => {
            let start = q.tail.map_or(0, |t| bytes.len().saturating_sub(t as usize));
            bytes[start..].to_vec().into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}\n", p.display()),
        )
            .into_response(),
    }
}

async fn info(State(nm): State<Arc<NodeManager>>) -> Json<serde_json::Value> {
    let c = &nm.containers;
    Json(serde_json::json!({
        "nodeInfo": {
            "id": nm.node_id,
            "nodeManagerVersion": hstack_daemon::VERSION,
            "totalVmemAllocatedContainersMB": c.cfg.memory_mb,
            "totalPmemAllocatedContainersMB": c.cfg.memory_mb,
            "totalVCoresAllocatedContainers": c.cfg.vcores,
            "memoryEnforcement": c.limits.name(),
            "rack": c.cfg.rack,
        }
    }))
}

async fn containers_json(State(nm): State<Arc<NodeManager>>) -> Json<serde_json::Value> {
    let list: Vec<serde_json::Value> = nm
        .containers
        .statuses()
        .into_iter()
        .map(|s| {
            let state = pb::ContainerState::try_from(s.state).unwrap_or_default();
            serde_json::json!({
                "id": s.container_id,
                "state": crate::wire::container_state_name(state),
                "exitCode": s.exit_status,
                "diagnostics": s.diagnostics,
            })
        })
        .collect();
    Json(serde_json::json!({ "containers": { "container": list } }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU16, Ordering};

    use hstack_daemon::Role;

    use super::*;

    /// A service that listens and says its port.
    struct Probe {
        port: AtomicU16,
    }

    impl aux::AuxService for Probe {
        fn name(&self) -> &str {
            "probe"
        }
        fn listen_addr(&self) -> Option<String> {
            Some("127.0.0.1:0".into())
        }
        fn bound(&self, addr: std::net::SocketAddr) {
            self.port.store(addr.port(), Ordering::Relaxed);
        }
        fn meta(&self) -> Vec<u8> {
            self.port.load(Ordering::Relaxed).to_be_bytes().to_vec()
        }
        fn serve(
            self: Arc<Self>,
            listener: tokio::net::TcpListener,
            shutdown: Shutdown,
        ) -> aux::ServeFuture {
            Box::pin(async move {
                use tokio::io::AsyncWriteExt;
                loop {
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        c = listener.accept() => {
                            if let Ok((mut s, _)) = c {
                                let _ = s.write_all(b"probe").await;
                            }
                        }
                    }
                }
            })
        }
    }

    fn cfg(dir: &std::path::Path, aux: &[&str]) -> NmConfig {
        NmConfig {
            id: "nm-test".into(),
            data_dir: dir.display().to_string(),
            rpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            // Nothing answers there: the node keeps trying to register.
            resource_manager: "127.0.0.1:1".into(),
            memory_enforcement: MemoryEnforcement::Off,
            aux_services: aux.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// A named auxiliary service is started, listens (announced under its
    /// name), and every StartContainers reply carries what it tells
    /// masters; an unknown name stops the start, naming the key.
    #[tokio::test]
    async fn auxiliary_services_start_listen_and_are_told_to_masters() {
        aux::register("probe", |_| {
            Ok(Arc::new(Probe {
                port: AtomicU16::new(0),
            }))
        });
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), &["probe"]);
        let id = NodeManagerRole::id(&c).unwrap();
        let h = hstack_daemon::launch::<NodeManagerRole>(
            c,
            id,
            hstack_daemon::Shutdown::new(),
            prometheus::Registry::new(),
        )
        .await
        .unwrap();
        let port = h.addrs["probe"].port();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut got = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut s, &mut got)
            .await
            .unwrap();
        assert_eq!(got, "probe", "the service serves on its own port");
        let mut nm = pb::container_manager_client::ContainerManagerClient::connect(format!(
            "http://{}",
            h.addrs["rpc"]
        ))
        .await
        .unwrap();
        let reply = nm
            .start_containers(pb::StartContainersRequest {
                containers: vec![pb::StartContainerRequest::default()],
            })
            .await
            .unwrap()
            .into_inner();
        // No token: refused, and nothing started.
        assert!(reply.started.is_empty());
        assert_eq!(
            reply.failed[0].code,
            hstack_proto::Code::InvalidContainerToken as i32
        );
        assert_eq!(reply.service_meta["probe"], port.to_be_bytes().to_vec());
        h.shutdown().trigger();
        h.wait().await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), &["no-such-service"]);
        let e = hstack_daemon::launch::<NodeManagerRole>(
            c,
            "nm".into(),
            hstack_daemon::Shutdown::new(),
            prometheus::Registry::new(),
        )
        .await
        .err()
        .expect("refused");
        let m = e.to_string();
        assert!(
            m.contains("aux_services") && m.contains("no-such-service"),
            "{m}"
        );
    }
}
