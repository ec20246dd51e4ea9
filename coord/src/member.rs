//! `hstack coord`: a member starts here, through the one launch path of
//! every role. It opens the Raft log and the state machine, binds the
//! client and peer ports, and spawns the member's background work.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hstack_daemon::{AtPath, Launch, StartError};
use hstack_proto::coord as pb;
use tokio::sync::mpsc;

use crate::config::CoordConfig;
use crate::liveness::Liveness;
use crate::logstore::LogStore;
use crate::metrics::CoordMetrics;
use crate::network::{Network, Peers};
use crate::node::{leader_watch, proposer_loop, ticker, Node};
use crate::service::{CoordService, PeerService};
use crate::sm::StateMachine;
use crate::types::{MemberNode, NodeId, Raft};

/// `hstack coord`.
pub struct CoordRole;

impl hstack_daemon::Role for CoordRole {
    const NAME: &'static str = "coord";
    type Config = CoordConfig;
    type State = Arc<Node>;

    fn id(cfg: &CoordConfig) -> Result<String, StartError> {
        Ok(cfg.id.to_string())
    }

    fn announce_dir(cfg: &CoordConfig) -> PathBuf {
        cfg.data_path()
    }

    async fn start(cfg: CoordConfig, launch: &mut Launch) -> Result<Arc<Node>, StartError> {
        start(cfg, launch).await
    }
}

async fn start(cfg: CoordConfig, launch: &mut Launch) -> Result<Arc<Node>, StartError> {
    let dir = cfg.data_path();
    std::fs::create_dir_all(&dir).at(&dir)?;
    let metrics = CoordMetrics::new(launch.registry());

    let client_listener = launch
        .bind("client", "client_addr", &cfg.client_addr)
        .await?;
    let raft_listener = launch.bind("raft", "raft_addr", &cfg.raft_addr).await?;
    let zk_listener = launch.bind("zk", "zk_addr", &cfg.zk_addr).await?;

    let log_dir = dir.join("raft-log");
    let log_store = LogStore::open(&log_dir, Some(metrics.clone()))
        .and_then(|s| s.with_parallel_append(cfg.id))
        .at(&log_dir)?;
    let log_unflushed = log_store.unflushed();
    let durable = log_store.durable();
    let state_dir = dir.join("state");
    let sm = StateMachine::open(&state_dir, metrics.clone())
        .at(&state_dir)?
        .gated_on(durable.clone());
    let sm_shared = sm.shared.clone();
    let raft_cfg = openraft::Config {
        cluster_name: "hstack-coord".into(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_timeout_min_ms,
        election_timeout_max: cfg.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
        max_in_snapshot_log_to_keep: cfg.keep_logs,
        purge_batch_size: 256,
        // Entries carry up to MAX_BATCH_BYTES; keep one AppendEntries well
        // under the peer message limit.
        max_payload_entries: 16,
        ..Default::default()
    };
    let raft_cfg = Arc::new(
        raft_cfg
            .validate()
            .map_err(|e| StartError::failed("raft configuration", e))?,
    );
    let peers = Peers::default();
    let raft: Raft = Raft::new(
        cfg.id,
        raft_cfg,
        Network {
            peers: peers.clone(),
            metrics: metrics.clone(),
            durable: Some(durable),
        },
        log_store,
        sm,
    )
    .await
    .map_err(|e| StartError::failed("starting raft", e))?;
    // Raft stops once the daemon stops, joined like every task; spawned
    // before anything else can fail, so a failed start stops it too.
    let (stop_raft, shutdown) = (raft.clone(), launch.shutdown());
    launch.spawn("raft", async move {
        shutdown.wait().await;
        if let Err(e) = stop_raft.shutdown().await {
            tracing::warn!("failed to stop raft cleanly: {e}");
        }
    });

    let (ptx, prx) = mpsc::channel(65_536);
    let node = Arc::new(Node {
        id: cfg.id,
        raft: raft.clone(),
        sm: sm_shared,
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        peers,
        proposals: ptx,
        liveness: Mutex::new(Liveness::default()),
        log_unflushed,
        membership: tokio::sync::Mutex::new(()),
        admitted: Mutex::new(None),
        zk_addr: hstack_daemon::advertised(launch.bound("zk"), &cfg.advertise_host),
    });

    let status_node = node.clone();
    let http_addr = launch
        .serve_http(
            "http_addr",
            &cfg.http_addr,
            Arc::new(move || status_node.status_rows()),
        )
        .await?;
    let (client_addr, raft_addr) = (launch.bound("client"), launch.bound("raft"));
    let me = MemberNode {
        raft_addr: hstack_daemon::advertised(raft_addr, &cfg.advertise_host),
        client_addr: hstack_daemon::advertised(client_addr, &cfg.advertise_host),
        http_addr: hstack_daemon::advertised(http_addr, &cfg.advertise_host),
    };

    let coord_svc = pb::coord_server::CoordServer::new(CoordService {
        node: node.clone(),
        me: me.clone(),
    })
    .max_decoding_message_size(4 << 20)
    .max_encoding_message_size(64 << 20);
    let peer_svc = pb::coord_peer_server::CoordPeerServer::new(PeerService { node: node.clone() })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    launch.serve_grpc("client", client_listener, move |mut s| {
        s.add_service(coord_svc)
    })?;
    launch.serve_grpc("raft", raft_listener, move |mut s| s.add_service(peer_svc))?;

    launch.spawn_until_shutdown("zk", crate::zk::accept_loop(node.clone(), zk_listener));
    launch.spawn(
        "proposer",
        proposer_loop(node.clone(), prx, launch.shutdown()),
    );
    launch.spawn(
        "leader-watch",
        leader_watch(node.clone(), launch.shutdown(), launch.fatal()),
    );
    launch.spawn("ticker", ticker(node.clone(), launch.shutdown()));

    // Form the ensemble from static configuration if we are its smallest id.
    let initial = cfg.parse_initial_members().map_err(|e| {
        StartError::bad_value("initial_members", cfg.initial_members.join(","), e.message)
    })?;
    if let Some((min_id, _)) = initial.iter().min_by_key(|(id, _)| *id) {
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::failed("reading the raft state", e))?;
        if *min_id == cfg.id && !initialized {
            let members: BTreeMap<NodeId, MemberNode> = initial.into_iter().collect();
            tracing::info!(
                members = members.len(),
                "forming the ensemble from initial_members"
            );
            if let Err(e) = raft.initialize(members).await {
                tracing::warn!("initialize: {e}");
            }
        }
    }

    let zk_addr = launch.bound("zk");
    tracing::info!(%client_addr, %zk_addr, %raft_addr, %http_addr, "coordination member started");
    Ok(node)
}
