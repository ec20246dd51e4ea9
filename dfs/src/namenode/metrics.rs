//! The namenode's Prometheus metrics (`hstack_namenode_*`).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

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

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(format!("hstack_namenode_{name}"), help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(format!("hstack_namenode_{name}"), help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl NnMetrics {
    pub fn new(r: &Registry) -> Self {
        let ops = IntCounterVec::new(
            Opts::new("hstack_namenode_ops_total", "RPCs served, by operation"),
            &["op"],
        )
        .expect("valid metric");
        r.register(Box::new(ops.clone())).expect("unique metric");
        let op_errors = IntCounterVec::new(
            Opts::new(
                "hstack_namenode_op_errors_total",
                "RPCs answered with an error, by operation and error kind",
            ),
            &["op", "kind"],
        )
        .expect("valid metric");
        r.register(Box::new(op_errors.clone()))
            .expect("unique metric");
        Self {
            ops,
            op_errors,
            files: gauge(r, "files", "Files in the namespace"),
            inodes: gauge(r, "inodes", "Files and directories in the namespace"),
            blocks: gauge(r, "blocks", "Blocks in the block map"),
            live_datanodes: gauge(r, "live_datanodes", "Datanodes heartbeating"),
            dead_datanodes: gauge(r, "dead_datanodes", "Datanodes declared dead"),
            failed_volumes: gauge(
                r,
                "failed_volumes",
                "Storage directories live datanodes took out of service",
            ),
            decommissioning_datanodes: gauge(
                r,
                "decommissioning_datanodes",
                "Datanodes being drained",
            ),
            under_replicated: gauge(
                r,
                "under_replicated_blocks",
                "Blocks with fewer live replicas than their file asks for",
            ),
            missing: gauge(r, "missing_blocks", "Blocks with no readable replica"),
            corrupt: gauge(r, "corrupt_blocks", "Blocks with a known-corrupt replica"),
            pending_replication: gauge(
                r,
                "pending_replication_blocks",
                "Replica copies scheduled and not yet reported",
            ),
            capacity: gauge(r, "capacity_bytes", "Capacity of live datanodes"),
            remaining: gauge(r, "remaining_bytes", "Free space on live datanodes"),
            safe_mode: gauge(r, "safe_mode", "1 while the namenode is in safe mode"),
            open_leases: gauge(r, "open_leases", "Clients holding write leases"),
            last_txid: gauge(r, "last_txid", "Newest edit log transaction"),
            replications_scheduled: counter(
                r,
                "replications_scheduled_total",
                "Replica copies scheduled by the replication monitor",
            ),
            lease_recoveries: counter(
                r,
                "lease_recoveries_total",
                "Files whose lease the namenode recovered",
            ),
            checkpoints: counter(r, "checkpoints_total", "Checkpoint images saved"),
            bad_replicas_reported: counter(
                r,
                "bad_replicas_reported_total",
                "Corrupt replicas reported by clients and scanners",
            ),
        }
    }
}
