//! The namenode's Prometheus metrics (`hstack_namenode_*`).

use hstack_daemon::metrics::Metrics;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

#[derive(Clone)]
pub struct NnMetrics {
    pub ops: IntCounterVec,
    pub op_errors: IntCounterVec,
    pub files: IntGauge,
    pub inodes: IntGauge,
    pub blocks: IntGauge,
    pub live_datanodes: IntGauge,
    pub dead_datanodes: IntGauge,
    pub failed_volumes: IntGauge,
    pub decommissioning_datanodes: IntGauge,
    pub under_replicated: IntGauge,
    pub missing: IntGauge,
    pub corrupt: IntGauge,
    pub pending_replication: IntGauge,
    pub capacity: IntGauge,
    pub remaining: IntGauge,
    pub safe_mode: IntGauge,
    pub open_leases: IntGauge,
    pub last_txid: IntGauge,
    pub replications_scheduled: IntCounter,
    pub lease_recoveries: IntCounter,
    pub checkpoints: IntCounter,
    pub bad_replicas_reported: IntCounter,
}

impl NnMetrics {
    pub fn new(r: &Registry) -> Self {
        let m = Metrics::new(r, "namenode");
        let ops = m.counter_vec("ops_total", "RPCs served, by operation", &["op"]);
        let op_errors = m.counter_vec(
            "op_errors_total",
            "RPCs answered with an error, by operation and error code",
            &["op", "code"],
        );
        Self {
            ops,
            op_errors,
            files: m.gauge("files", "Files in the namespace"),
            inodes: m.gauge("inodes", "Files and directories in the namespace"),
            blocks: m.gauge("blocks", "Blocks in the block map"),
            live_datanodes: m.gauge("live_datanodes", "Datanodes heartbeating"),
            dead_datanodes: m.gauge("dead_datanodes", "Datanodes declared dead"),
            failed_volumes: m.gauge(
                "failed_volumes",
                "Storage directories live datanodes took out of service",
            ),
            decommissioning_datanodes: m
                .gauge("decommissioning_datanodes", "Datanodes being drained"),
            under_replicated: m.gauge(
                "under_replicated_blocks",
                "Blocks with fewer live replicas than their file asks for",
            ),
            missing: m.gauge("missing_blocks", "Blocks with no readable replica"),
            corrupt: m.gauge("corrupt_blocks", "Blocks with a known-corrupt replica"),
            pending_replication: m.gauge(
                "pending_replication_blocks",
                "Replica copies scheduled and not yet reported",
            ),
            capacity: m.gauge("capacity_bytes", "Capacity of live datanodes"),
            remaining: m.gauge("remaining_bytes", "Free space on live datanodes"),
            safe_mode: m.gauge("safe_mode", "1 while the namenode is in safe mode"),
            open_leases: m.gauge("open_leases", "Clients holding write leases"),
            last_txid: m.gauge("last_txid", "Newest edit log transaction"),
            replications_scheduled: m.counter(
                "replications_scheduled_total",
                "Replica copies scheduled by the replication monitor",
            ),
            lease_recoveries: m.counter(
                "lease_recoveries_total",
                "Files whose lease the namenode recovered",
            ),
            checkpoints: m.counter("checkpoints_total", "Checkpoint images saved"),
            bad_replicas_reported: m.counter(
                "bad_replicas_reported_total",
                "Corrupt replicas reported by clients and scanners",
            ),
        }
    }
}
