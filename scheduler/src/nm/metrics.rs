//! The node manager's metrics (`hstack_nodemanager_*`).

use hstack_daemon::metrics::Metrics;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

#[derive(Clone)]
pub(crate) struct NmMetrics {
    pub launched: IntCounter,
    /// By outcome (succeeded, failed, killed, killed_memory).
    pub completed: IntCounterVec,
    pub launch_failures: IntCounter,
    pub running: IntGauge,
    pub memory_allocated_mb: IntGauge,
    pub vcores_allocated: IntGauge,
    pub heartbeats: IntCounter,
    pub heartbeat_failures: IntCounter,
}

impl NmMetrics {
    pub fn new(r: &Registry) -> NmMetrics {
        let m = Metrics::new(r, "nodemanager");
        NmMetrics {
            launched: m.counter("containers_launched_total", "Containers started"),
            completed: m.counter_vec(
                "containers_completed_total",
                "Containers ended, by outcome (succeeded, failed, killed, killed_memory)",
                &["outcome"],
            ),
            launch_failures: m.counter(
                "container_launch_failures_total",
                "Container starts that failed on this node",
            ),
            running: m.gauge("containers_running", "Containers running"),
            memory_allocated_mb: m
                .gauge("memory_allocated_mb", "Memory given to running containers"),
            vcores_allocated: m.gauge(
                "vcores_allocated",
                "Virtual cores given to running containers",
            ),
            heartbeats: m.counter(
                "heartbeats_total",
                "Heartbeats answered by the resource manager",
            ),
            heartbeat_failures: m.counter(
                "heartbeat_failures_total",
                "Heartbeats and registrations that failed",
            ),
        }
    }
}
