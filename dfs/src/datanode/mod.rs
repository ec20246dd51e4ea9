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
mod volumes;
mod xceiver;

pub use config::{DatanodeConfig, DatanodeFlags};
pub use metrics::DatanodeMetrics;
pub use recovery::DatanodeService;
pub use xceiver::{serve_transfer, Event, XceiverCtx};

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hstack_daemon::Shutdown;
use hstack_proto::dfs as pb;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::blockstore::BlockStore;
use crate::error::{FsError, FsResult};
use crate::namespace::BlockRec;
use actor::{Actor, NodeStatus};

/// A running datanode: the addresses it bound and how to wait for it.
pub struct DatanodeHandle {
    pub id: String,
    pub transfer_addr: SocketAddr,
    pub rpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub store: Arc<BlockStore>,
    status: Arc<NodeStatus>,
    shutdown: Shutdown,
}

impl DatanodeHandle {
    /// Registered with the namenode and its first full block report was
    /// accepted (what `/readyz` says).
    pub fn is_ready(&self) -> bool {
        self.status.ready.load(Ordering::Relaxed)
    }

    /// Waits for the shutdown signal. Replicas need no flushing: a replica
    /// being written is recovered from what reached its files.
    /// Until the datanode stops: an error if it stopped itself (too many
    /// failed storage directories).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.shutdown.wait().await;
        match self
            .status
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        }
    }
}

/// Starts a datanode with `cfg` and returns once it is listening; the
/// namenode is reached in the background, for as long as it takes.
pub async fn run(
    cfg: DatanodeConfig,
    shutdown: Shutdown,
    registry: prometheus::Registry,
) -> anyhow::Result<DatanodeHandle> {
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let dirs = cfg.data_paths();
    std::fs::create_dir_all(&dirs[0])
        .with_context(|| format!("cannot create data directory {}", dirs[0].display()))?;
    let id = node_id(&cfg.id, &dirs[0])?;
    // The caller's span names the role (the CLI's `node{role=datanode}`);
    // the id is known only now.
    let span = tracing::info_span!("datanode", id = %id);
    start(cfg, id, shutdown, registry).instrument(span).await
}

async fn start(
    cfg: DatanodeConfig,
    id: String,
    shutdown: Shutdown,
    registry: prometheus::Registry,
) -> anyhow::Result<DatanodeHandle> {
    let dirs = cfg.data_paths();
    let (direct_io, tolerated) = (cfg.direct_io, cfg.failed_volumes_tolerated);
    let store = tokio::task::spawn_blocking(move || {
        BlockStore::open(&dirs, tolerated).map(|s| s.with_direct_io(direct_io))
    })
    .await
    .context("opening the block store")?
    .map_err(|e| anyhow::anyhow!("cannot open the block store: {e}"))?;
    let store = Arc::new(store);
    let metrics = DatanodeMetrics::new(&registry);
    hstack_daemon::register_build_info(&registry, "datanode");

    let transfer_listener = tokio::net::TcpListener::bind(cfg.transfer_addr.parse::<SocketAddr>()?)
        .await
        .with_context(|| format!("cannot bind transfer_addr {}", cfg.transfer_addr))?;
    let rpc_listener = tokio::net::TcpListener::bind(cfg.rpc_addr.parse::<SocketAddr>()?)
        .await
        .with_context(|| format!("cannot bind rpc_addr {}", cfg.rpc_addr))?;
    let transfer_addr = transfer_listener.local_addr()?;
    let rpc_addr = rpc_listener.local_addr()?;

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
    let http_state = hstack_daemon::HttpState {
        role: "datanode".into(),
        id: id.clone(),
        registry: registry.clone(),
        status: Arc::new(move || {
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
        }),
    };
    let http_addr = hstack_daemon::serve_http(cfg.http_addr.parse()?, http_state, shutdown.clone())
        .await
        .with_context(|| format!("cannot serve http_addr {}", cfg.http_addr))?;

    let svc = pb::datanode_server::DatanodeServer::new(DatanodeService::new(ctx.clone()));
    hstack_daemon::spawn_grpc!(rpc_listener, svc, shutdown.clone(), "datanode")?;

    let transfer = tokio::spawn(serve_transfer(transfer_listener, ctx.clone()).in_current_span());
    let scanner = tokio::spawn(
        scanner::run(ctx.clone(), Duration::from_millis(cfg.scan_period_ms)).in_current_span(),
    );
    let volumes = tokio::spawn(
        volumes::run(
            ctx.clone(),
            Duration::from_millis(cfg.volume_check_ms),
            cfg.failed_volumes_tolerated,
            status.clone(),
            shutdown.clone(),
        )
        .in_current_span(),
    );
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.wait().await;
        transfer.abort();
        scanner.abort();
        volumes.abort();
    });

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
        ..Default::default()
    };
    let actor = Actor {
        ctx: ctx.clone(),
        nn: actor::namenode_client(&cfg.namenode)?,
        namenode: cfg.namenode.clone(),
        me,
        storage_dirs: cfg.data_dirs.clone(),
        status: status.clone(),
        events: events_rx,
        shutdown: shutdown.clone(),
    };
    tokio::spawn(actor.run().in_current_span());

    tracing::info!(%transfer_addr, %rpc_addr, %http_addr, namenode = %cfg.namenode, "datanode started");
    Ok(DatanodeHandle {
        id,
        transfer_addr,
        rpc_addr,
        http_addr,
        store,
        status,
        shutdown,
    })
}

/// The configured id, else the one kept in `dir`, else a new one (kept).
fn node_id(configured: &str, dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = dir.join("datanode_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
    let id = random_id();
    // Written whole or not at all: a torn id would make a new node.
    let tmp = dir.join("datanode_id.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write {}", path.display()))?;
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

pub(crate) fn block_to_pb(b: BlockRec) -> pb::Block {
    pb::Block {
        id: b.id,
        gen_stamp: b.gen_stamp,
        len: b.len,
    }
}

pub(crate) fn block_from_pb(b: Option<pb::Block>) -> FsResult<BlockRec> {
    let b = b.ok_or_else(|| FsError::invalid("a block is required"))?;
    Ok(BlockRec {
        id: b.id,
        gen_stamp: b.gen_stamp,
        len: b.len,
    })
}

#[cfg(test)]
mod tests;
