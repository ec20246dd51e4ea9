//! The coordination service's metrics, registered in the registry a member
//! is given (never the global one), so in-process members keep their own.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Client operations, in the order of `CoordMetrics::request_counters`.
pub const OPS: [&str; 12] = [
    "create",
    "delete",
    "set_data",
    "check",
    "get_data",
    "exists",
    "get_children",
    "multi",
    "sync",
    "set_watches",
    "add_watch",
    "close",
];

#[derive(Clone, Copy)]
pub enum Outcome {
    Ok = 0,
    Error = 1,
    Rejected = 2,
}

#[derive(Clone)]
pub struct CoordMetrics {
    /// `hstack_coord_requests_total{op,outcome}`, resolved once: [op][outcome].
    request_counters: Vec<[IntCounter; 3]>,
    pub read_seconds: Histogram,
    pub write_seconds: Histogram,
    pub txns_applied_total: IntCounter,
    pub proposal_batch_txns: Histogram,
    pub log_fsync_seconds: Histogram,
    pub log_fsync_batch: Histogram,
    /// Applies that had to wait for the leader's own fsync.
    pub apply_waits_for_fsync_total: IntCounter,
    /// AppendEntries held back until the leader's disk had the commit index.
    pub commit_waits_for_fsync_total: IntCounter,
    pub znodes: IntGauge,
    pub sessions: IntGauge,
    pub sessions_expired_total: IntCounter,
    pub connections: IntGauge,
    pub watches: IntGauge,
    pub snapshots_total: IntCounter,
    pub last_applied_index: IntGauge,
    pub raft_term: IntGauge,
    pub is_leader: IntGauge,
    pub leader_changes_total: IntCounter,
    /// Round trip of Raft RPCs this member sent, by kind (append, vote, snapshot).
    pub peer_rpc_seconds: HistogramVec,
    /// Time this member spent handling Raft RPCs it received, by kind.
    pub peer_handle_seconds: HistogramVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Registering twice in one registry means two members share it: a bug.
    r.register(Box::new(c.clone()))
        .expect("metric registered once per registry");
    c
}

impl CoordMetrics {
    /// Counts one request of `OPS[op]`.
    pub fn count(&self, op: usize, outcome: Outcome) {
        self.request_counters[op][outcome as usize].inc();
    }

    pub fn new(r: &Registry) -> Self {
        let lat = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ];
        let requests = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "hstack_coord_requests_total",
                    "Client requests by operation and outcome",
                ),
                &["op", "outcome"],
            )
            .expect("valid"),
        );
        let request_counters = OPS
            .iter()
            .map(|op| {
                ["ok", "error", "rejected"]
                    .map(|outcome| requests.with_label_values(&[op, outcome]))
            })
            .collect();
        let durations = reg(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "hstack_coord_request_duration_seconds",
                    "Client request latency by kind (read, write)",
                )
                .buckets(lat.clone()),
                &["kind"],
            )
            .expect("valid"),
        );
        let peer_rpc_seconds = reg(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "hstack_coord_peer_rpc_seconds",
                    "Round trip of Raft RPCs sent, by kind",
                )
                .buckets(lat.clone()),
                &["kind"],
            )
            .expect("valid"),
        );
        let peer_handle_seconds = reg(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "hstack_coord_peer_handle_seconds",
                    "Time spent handling Raft RPCs received, by kind",
                )
                .buckets(lat.clone()),
                &["kind"],
            )
            .expect("valid"),
        );
        Self {
            peer_rpc_seconds,
            peer_handle_seconds,
            request_counters,
            read_seconds: durations.with_label_values(&["read"]),
            write_seconds: durations.with_label_values(&["write"]),
            txns_applied_total: reg(
                r,
                IntCounter::new(
                    "hstack_coord_txns_applied_total",
                    "Transactions applied to the tree",
                )
                .expect("valid"),
            ),
            proposal_batch_txns: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "hstack_coord_proposal_batch_txns",
                        "Transactions per Raft entry (group commit)",
                    )
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
                    ]),
                )
                .expect("valid"),
            ),
            log_fsync_seconds: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("hstack_coord_log_fsync_seconds", "Raft log WAL fsync time")
                        .buckets(lat),
                )
                .expect("valid"),
            ),
            log_fsync_batch: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "hstack_coord_log_fsync_appends",
                        "Log appends covered by one fsync",
                    )
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 64.0]),
                )
                .expect("valid"),
            ),
            apply_waits_for_fsync_total: reg(
                r,
                IntCounter::new(
                    "hstack_coord_apply_waits_for_fsync_total",
                    "Applies that waited for this member's own log fsync",
                )
                .expect("valid"),
            ),
            commit_waits_for_fsync_total: reg(
                r,
                IntCounter::new(
                    "hstack_coord_commit_waits_for_fsync_total",
                    "AppendEntries held until the leader's log fsync covered its commit index",
                )
                .expect("valid"),
            ),
            znodes: reg(
                r,
                IntGauge::new("hstack_coord_znodes", "Znodes in the tree").expect("valid"),
            ),
            sessions: reg(
                r,
                IntGauge::new("hstack_coord_sessions", "Open sessions in the ensemble")
                    .expect("valid"),
            ),
            sessions_expired_total: reg(
                r,
                IntCounter::new("hstack_coord_sessions_expired_total", "Sessions expired")
                    .expect("valid"),
            ),
            connections: reg(
                r,
                IntGauge::new(
                    "hstack_coord_connections",
                    "Client sessions connected to this member",
                )
                .expect("valid"),
            ),
            watches: reg(
                r,
                IntGauge::new("hstack_coord_watches", "Watches registered on this member")
                    .expect("valid"),
            ),
            snapshots_total: reg(
                r,
                IntCounter::new(
                    "hstack_coord_snapshots_total",
                    "Snapshots built by this member",
                )
                .expect("valid"),
            ),
            last_applied_index: reg(
                r,
                IntGauge::new(
                    "hstack_coord_raft_last_applied_index",
                    "Last Raft log index applied",
                )
                .expect("valid"),
            ),
            raft_term: reg(
                r,
                IntGauge::new("hstack_coord_raft_term", "Current Raft term").expect("valid"),
            ),
            is_leader: reg(
                r,
                IntGauge::new(
                    "hstack_coord_raft_is_leader",
                    "1 if this member is the Raft leader",
                )
                .expect("valid"),
            ),
            leader_changes_total: reg(
                r,
                IntCounter::new(
                    "hstack_coord_raft_leader_changes_total",
                    "Leader changes seen by this member",
                )
                .expect("valid"),
            ),
        }
    }
}
