//! The coordination service's metrics, registered in the registry a member
//! is given (never the global one), so in-process members keep their own.

use hstack_daemon::metrics::{Metrics, LATENCY_BUCKETS};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

/// Client operations, in the order of `CoordMetrics::request_counters`.
pub const OPS: [&str; 20] = [
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
    "get_acl",
    "set_acl",
    "auth",
    "who_am_i",
    "get_all_children_number",
    "get_ephemerals",
    "multi_read",
    "remove_watches",
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
    /// Raft RPCs this member sent that failed, by kind and reason
    /// (timeout, unreachable, error).
    pub peer_rpc_failures: IntCounterVec,
}

impl CoordMetrics {
    /// Counts one request of `OPS[op]`.
    pub fn count(&self, op: usize, outcome: Outcome) {
        self.request_counters[op][outcome as usize].inc();
    }

    pub fn new(r: &Registry) -> Self {
        let m = Metrics::new(r, "coord");
        let lat = LATENCY_BUCKETS.to_vec();
        let requests = m.counter_vec(
            "requests_total",
            "Client requests by operation and outcome",
            &["op", "outcome"],
        );
        let request_counters = OPS
            .iter()
            .map(|op| {
                ["ok", "error", "rejected"]
                    .map(|outcome| requests.with_label_values(&[op, outcome]))
            })
            .collect();
        let durations = m.histogram_vec(
            "request_duration_seconds",
            "Client request latency by kind (read, write)",
            &["kind"],
            lat.clone(),
        );
        Self {
            peer_rpc_seconds: m.histogram_vec(
                "peer_rpc_seconds",
                "Round trip of Raft RPCs sent, by kind",
                &["kind"],
                lat.clone(),
            ),
            peer_rpc_failures: m.counter_vec(
                "peer_rpc_failures_total",
                "Raft RPCs sent that failed, by kind and reason (timeout, unreachable, error)",
                &["kind", "reason"],
            ),
            peer_handle_seconds: m.histogram_vec(
                "peer_handle_seconds",
                "Time spent handling Raft RPCs received, by kind",
                &["kind"],
                lat.clone(),
            ),
            request_counters,
            read_seconds: durations.with_label_values(&["read"]),
            write_seconds: durations.with_label_values(&["write"]),
            txns_applied_total: m.counter("txns_applied_total", "Transactions applied to the tree"),
            proposal_batch_txns: m.histogram(
                "proposal_batch_txns",
                "Transactions per Raft entry (group commit)",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0],
            ),
            log_fsync_seconds: m.histogram("log_fsync_seconds", "Raft log WAL fsync time", lat),
            log_fsync_batch: m.histogram(
                "log_fsync_appends",
                "Log appends covered by one fsync",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 64.0],
            ),
            apply_waits_for_fsync_total: m.counter(
                "apply_waits_for_fsync_total",
                "Applies that waited for this member's own log fsync",
            ),
            commit_waits_for_fsync_total: m.counter(
                "commit_waits_for_fsync_total",
                "AppendEntries held until the leader's log fsync covered its commit index",
            ),
            znodes: m.gauge("znodes", "Znodes in the tree"),
            sessions: m.gauge("sessions", "Open sessions in the ensemble"),
            sessions_expired_total: m.counter("sessions_expired_total", "Sessions expired"),
            connections: m.gauge("connections", "Client sessions connected to this member"),
            watches: m.gauge("watches", "Watches registered on this member"),
            snapshots_total: m.counter("snapshots_total", "Snapshots built by this member"),
            last_applied_index: m.gauge("raft_last_applied_index", "Last Raft log index applied"),
            raft_term: m.gauge("raft_term", "Current Raft term"),
            is_leader: m.gauge("raft_is_leader", "1 if this member is the Raft leader"),
            leader_changes_total: m.counter(
                "raft_leader_changes_total",
                "Leader changes seen by this member",
            ),
        }
    }
}
