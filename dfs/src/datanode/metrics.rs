//! The datanode's metrics, registered in the registry a datanode is given
//! (never the global one), so in-process datanodes keep their own.

use hstack_daemon::metrics::Metrics;
use prometheus::{IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub struct DatanodeMetrics {
    pub bytes_written_total: IntCounter,
    pub bytes_read_total: IntCounter,
    pub blocks_written_total: IntCounter,
    pub blocks_read_total: IntCounter,
    pub blocks_replicated_total: IntCounter,
    pub blocks_deleted_total: IntCounter,
    pub blocks_recovered_total: IntCounter,
    pub write_errors_total: IntCounter,
    pub read_errors_total: IntCounter,
    pub scanner_blocks_verified_total: IntCounter,
    pub scanner_corrupt_total: IntCounter,
    pub heartbeat_failures_total: IntCounter,
    pub short_circuit_served_total: IntCounter,
    pub short_circuit_refused_total: IntCounter,
    pub short_circuit_revoked_total: IntCounter,
    /// Replica files handed to short-circuit readers and still held.
    pub short_circuit_open: IntGauge,
    /// Open data transfer connections (HDFS's xceiver count).
    pub xceivers: IntGauge,
    pub replicas: IntGauge,
    pub failed_volumes: IntGauge,
}

impl DatanodeMetrics {
    pub fn new(r: &Registry) -> Self {
        let m = Metrics::new(r, "datanode");
        let counter = |name: &str, help: &str| m.counter(name, help);
        let gauge = |name: &str, help: &str| m.gauge(name, help);
        Self {
            bytes_written_total: counter(
                "bytes_written_total",
                "Block bytes stored by write pipelines and replication",
            ),
            bytes_read_total: counter("bytes_read_total", "Block bytes sent to readers"),
            blocks_written_total: counter(
                "blocks_written_total",
                "Replicas finalized by write pipelines",
            ),
            blocks_read_total: counter("blocks_read_total", "Block reads served to the end"),
            blocks_replicated_total: counter(
                "blocks_replicated_total",
                "Replicas this node copied to other datanodes on the namenode's command",
            ),
            blocks_deleted_total: counter(
                "blocks_deleted_total",
                "Replicas deleted on the namenode's command",
            ),
            blocks_recovered_total: counter(
                "blocks_recovered_total",
                "Lease recoveries this node led to a commit",
            ),
            write_errors_total: counter(
                "write_errors_total",
                "Write pipelines that failed here (disk, checksum, protocol, downstream)",
            ),
            read_errors_total: counter(
                "read_errors_total",
                "Block reads that failed here (missing replica, disk, peer gone)",
            ),
            scanner_blocks_verified_total: counter(
                "scanner_blocks_verified_total",
                "Replicas re-verified by the block scanner",
            ),
            scanner_corrupt_total: counter(
                "scanner_corrupt_total",
                "Corrupt replicas the block scanner found",
            ),
            heartbeat_failures_total: counter(
                "heartbeat_failures_total",
                "Heartbeats the namenode did not answer",
            ),
            short_circuit_served_total: counter(
                "short_circuit_served_total",
                "Short-circuit requests answered with a replica's file descriptors",
            ),
            short_circuit_refused_total: counter(
                "short_circuit_refused_total",
                "Short-circuit requests refused (replica missing, being written, corrupt, stale or short)",
            ),
            short_circuit_revoked_total: counter(
                "short_circuit_revoked_total",
                "Short-circuit grants revoked because the replica was deleted, changed or found corrupt",
            ),
            short_circuit_open: gauge(
                "short_circuit_open",
                "Replica file descriptors handed to short-circuit readers and still held",
            ),
            xceivers: gauge("xceivers", "Open data transfer connections"),
            replicas: gauge("replicas", "Replicas held, finalized or being written"),
            failed_volumes: gauge(
                "failed_volumes",
                "Storage directories taken out of service after failing their check",
            ),
        }
    }
}
