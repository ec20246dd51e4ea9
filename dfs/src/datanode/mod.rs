//! The datanode daemon (`hstack datanode`): it stores replicas and moves
//! their bytes, and otherwise does what the namenode says.
//!
//! Three servers and two background tasks, loosely coupled on purpose:
//!
//! - the **xceiver** server on the transfer port (`xceiver`) moves block
//!   bytes for clients and other datanodes. It never waits on the
//!   namenode: a namenode that is down or failing over must not stall
//!   writes already under way. What it stores it announces as events;
//! - the **actor** (`actor`) is the namenode conversation: registration,
//!   block reports (full, and incremental from those events), heartbeats,
//!   and the commands heartbeats return;
//! - the **gRPC** service (`recovery`) is lease recovery between replicas;
//! - the **scanner** (`scanner`) re-verifies replicas at rest;
//! - the **short-circuit** socket (`short_circuit`) hands a finalized
//!   replica's open files to a client on this host, and revokes them when
//!   the replica goes;
//! - **HTTP** serves metrics, health and readiness (ready = the namenode
//!   knows our blocks, so sending clients here makes sense).
//!
//! A datanode's identity is its id, kept in its first data directory: a
//! restarted datanode (even on another address) is the same node with the
//! same replicas to the namenode.

mod actor;
mod config;
mod fence;
mod metrics;
mod recovery;
mod scanner;
pub mod short_circuit;
mod volumes;
mod xceiver;

pub use config::DatanodeConfig;
pub use metrics::DatanodeMetrics;
pub use recovery::DatanodeService;
pub use xceiver::{serve_transfer, Event, XceiverCtx};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hstack_daemon::{AtPath, Launch, StartError};
use hstack_proto::dfs as pb;
use tokio::sync::mpsc;

use crate::blockstore::BlockStore;
use actor::{Actor, NodeStatus};

/// `hstack datanode`.
pub struct DatanodeRole;

/// What a running datanode keeps: its store and its standing with the
/// namenode.
pub struct Datanode {
    pub store: Arc<BlockStore>,
    status: Arc<NodeStatus>,
}

impl Datanode {
    /// Registered with the namenode and its first full block report was
    /// accepted (what `/readyz` says).
    pub fn is_ready(&self) -> bool {
        self.status.ready.load(Ordering::Relaxed)
    }
}

impl hstack_daemon::Role for DatanodeRole {
    const NAME: &'static str = "datanode";
    type Config = DatanodeConfig;
    type State = Datanode;

    /// The configured id, else the one kept in the first data directory.
    fn id(cfg: &DatanodeConfig) -> Result<String, StartError> {
        let dir = &cfg.data_paths()[0];
        std::fs::create_dir_all(dir).map_err(|e| {
            StartError::storage(dir, format!("cannot create the data directory: {e}"))
        })?;
        node_id(&cfg.id, dir)
    }

    fn announce_dir(cfg: &DatanodeConfig) -> PathBuf {
        cfg.data_paths()[0].clone()
    }

    /// Returns once the datanode listens; the namenode is reached in the
    /// background, for as long as it takes. Replicas need no flushing at
    /// shutdown: a replica being written is recovered from what reached
    /// its files.
    async fn start(cfg: DatanodeConfig, launch: &mut Launch) -> Result<Datanode, StartError> {
        start(cfg, launch).await
    }
}

async fn start(cfg: DatanodeConfig, launch: &mut Launch) -> Result<Datanode, StartError> {
    let id = launch.id().to_string();
    let dirs = cfg.data_paths();
    let (direct_io, tolerated) = (cfg.direct_io, cfg.failed_volumes_tolerated);
    let open_dirs = dirs.clone();
    let store = tokio::task::spawn_blocking(move || {
        BlockStore::open(&open_dirs, tolerated).map(|s| s.with_direct_io(direct_io))
    })
    .await
    .map_err(|e| StartError::failed("opening the block store", e))?
    .map_err(|e| StartError::storage(&dirs[0], format!("cannot open the block store: {e}")))?;
    let store = Arc::new(store);
    let cluster_id = check_cluster_id(&dirs[0], &store)?;
    let metrics = DatanodeMetrics::new(launch.registry());

    let transfer_listener = launch
        .bind("transfer", "transfer_addr", &cfg.transfer_addr)
        .await?;
    let rpc_listener = launch.bind("rpc", "rpc_addr", &cfg.rpc_addr).await?;
    let transfer_addr = launch.bound("transfer");
    let rpc_addr = launch.bound("rpc");

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(XceiverCtx::new(
        store.clone(),
        id.clone(),
        cfg.sync_on_close,
        metrics,
        events_tx,
    ));
    let status = Arc::new(NodeStatus::default());

    let rows_ctx = ctx.clone();
    let rows_status = status.clone();
    let (namenode, rack) = (cfg.namenode.clone(), cfg.rack.clone());
    let status_rows = Arc::new(move || {
        let ready = rows_status.ready.load(Ordering::Relaxed);
        let (capacity, used, remaining) = rows_ctx.store.usage();
        let rows = vec![
            ("id".into(), rows_ctx.id.clone()),
            ("namenode".into(), namenode.clone()),
            ("rack".into(), rack.clone()),
            (
                "registered".into(),
                rows_status.registered.load(Ordering::Relaxed).to_string(),
            ),
            ("blocks".into(), rows_ctx.store.replica_count().to_string()),
            (
                "failed volumes".into(),
                rows_ctx
                    .store
                    .failed_volumes()
                    .iter()
                    .map(|(d, _)| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("capacity".into(), capacity.to_string()),
            ("used".into(), used.to_string()),
            ("remaining".into(), remaining.to_string()),
            ("xceivers".into(), rows_ctx.xceivers().to_string()),
        ];
        (ready, rows)
    });
    let http_addr = launch
        .serve_http("http_addr", &cfg.http_addr, status_rows)
        .await?;

    let svc = pb::datanode_server::DatanodeServer::new(DatanodeService::new(ctx.clone()));
    launch.serve_grpc("rpc", rpc_listener, move |mut server| {
        server.add_service(svc)
    })?;

    launch.spawn_until_shutdown("transfer", serve_transfer(transfer_listener, ctx.clone()));
    let socket = short_circuit::socket_path(&cfg.domain_socket_path, &dirs[0]);
    if let Some(path) = &socket {
        let listener = short_circuit::bind(path).map_err(|e| {
            StartError::bad_value(
                "domain_socket_path",
                &cfg.domain_socket_path,
                format!("cannot listen at {}: {e}", path.display()),
            )
        })?;
        launch.spawn_until_shutdown(
            "short_circuit",
            short_circuit::serve(listener, path.clone(), ctx.clone()),
        );
    }
    launch.spawn_until_shutdown(
        "scanner",
        scanner::run(ctx.clone(), Duration::from_millis(cfg.scan_period_ms)),
    );
    launch.spawn(
        "volumes",
        volumes::run(
            ctx.clone(),
            Duration::from_millis(cfg.volume_check_ms),
            cfg.failed_volumes_tolerated,
            launch.fatal(),
            launch.shutdown(),
        ),
    );

    let advertised = |a: SocketAddr| hstack_daemon::advertised(a, &cfg.advertise_host);
    let transfer_adv = advertised(transfer_addr);
    let host = transfer_adv
        .rsplit_once(':')
        .map_or(transfer_adv.as_str(), |(h, _)| h)
        .to_string();
    let me = pb::DatanodeInfo {
        id: id.clone(),
        host,
        transfer_addr: transfer_adv.clone(),
        rpc_addr: advertised(rpc_addr),
        http_addr: advertised(http_addr),
        rack: cfg.rack.clone(),
        domain_socket_path: socket
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string()),
        ..Default::default()
    };
    let nn = actor::namenode_client(&cfg.namenode, Some(transfer_addr.ip()))
        .map_err(|e| StartError::bad_value("namenode", &cfg.namenode, e.to_string()))?;
    let actor = Actor {
        ctx: ctx.clone(),
        nn,
        namenode: cfg.namenode.clone(),
        me,
        storage_dirs: cfg.data_dirs.clone(),
        cluster_id,
        status: status.clone(),
        events: events_rx,
        shutdown: launch.shutdown(),
    };
    launch.spawn("actor", actor.run());

    let domain_socket = socket
        .as_ref()
        .map_or(String::new(), |p| p.display().to_string());
    tracing::info!(%transfer_addr, %rpc_addr, %http_addr, namenode = %cfg.namenode, %domain_socket, "datanode started");
    Ok(Datanode { store, status })
}

/// Where a datanode keeps the id of the cluster its replicas belong to.
pub(crate) fn cluster_id_file(first_dir: &Path) -> PathBuf {
    first_dir.join("cluster_id")
}

/// A datanode without a cluster id learns it from the namenode, but only
/// while it holds no replica: replicas with no cluster to belong to might
/// be another cluster's, and a namenode that does not know them would
/// delete them.
/// Read once, at start: the id it returns (`None`: ask the namenode) is
/// the one the datanode registers with for its whole life, whatever
/// happens to the file later.
fn check_cluster_id(first_dir: &Path, store: &BlockStore) -> Result<Option<String>, StartError> {
    let f = cluster_id_file(first_dir);
    let known = std::fs::read_to_string(&f).map(|s| s.trim().to_string());
    let replicas = store.replica_count();
    match known {
        Ok(id) if !id.is_empty() => Ok(Some(id)),
        _ if replicas == 0 => Ok(None),
        _ => Err(StartError::storage(
            &f,
            format!(
                "missing or empty, but the data directories hold {replicas} replicas: \
                 their cluster is unknown, so this datanode will not join one \
                 (restore the file from a backup, or empty the directories)"
            ),
        )),
    }
}

/// The configured id, else the one kept in `dir`, else a new one (kept).
fn node_id(configured: &str, dir: &Path) -> Result<String, StartError> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = dir.join("datanode_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StartError::storage(&path, e)),
    }
    let id = random_id();
    // Written whole or not at all: a torn id would make a new node.
    hstack_daemon::write_atomic(&path, format!("{id}\n").as_bytes()).at(&path)?;
    tracing::info!(id = %id, "new datanode id");
    Ok(id)
}

/// A random (version 4) UUID.
fn random_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests;
