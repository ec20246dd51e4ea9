//! The resource manager's metrics (`hstack_resourcemanager_*`), in the
//! registry its launch gives.

use hstack_daemon::metrics::Metrics;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

#[derive(Clone)]
pub(crate) struct RmMetrics {
    pub apps_submitted: IntCounter,
    /// By final status.
    pub apps_completed: IntCounterVec,
    /// By state (accepted, running).
    pub apps: IntGaugeVec,
    pub attempt_failures: IntCounter,
    /// By state (running, lost).
    pub nodes: IntGaugeVec,
    pub nodes_lost: IntCounter,
    /// By locality.
    pub containers_allocated: IntCounterVec,
    pub containers_running: IntGauge,
    pub containers_preempted: IntCounter,
    pub memory_total_mb: IntGauge,
    pub memory_used_mb: IntGauge,
    pub vcores_total: IntGauge,
    pub vcores_used: IntGauge,
    pub node_heartbeats: IntCounter,
    pub allocate_calls: IntCounter,
    /// Time the scheduler spent on one node heartbeat.
    pub schedule_seconds: Histogram,
}

impl RmMetrics {
    pub fn new(r: &Registry) -> RmMetrics {
        let m = Metrics::new(r, "resourcemanager");
        RmMetrics {
            apps_submitted: m.counter("apps_submitted_total", "Applications submitted"),
            apps_completed: m.counter_vec(
                "apps_completed_total",
                "Applications ended, by final status (succeeded, failed, killed, undefined)",
                &["final_status"],
            ),
            apps: m.gauge_vec(
                "apps",
                "Applications not yet ended, by state (accepted, running)",
                &["state"],
            ),
            attempt_failures: m.counter(
                "attempt_failures_total",
                "Application attempts that failed (their master exited, was lost or went silent)",
            ),
            nodes: m.gauge_vec(
                "nodes",
                "Node managers by state (running, lost)",
                &["state"],
            ),
            nodes_lost: m.counter("nodes_lost_total", "Node managers declared lost"),
            containers_allocated: m.counter_vec(
                "containers_allocated_total",
                "Containers placed, by locality (node-local, rack-local, off-switch)",
                &["locality"],
            ),
            containers_running: m
                .gauge("containers_running", "Containers placed and not yet ended"),
            containers_preempted: m.counter(
                "containers_preempted_total",
                "Containers taken back by preemption",
            ),
            memory_total_mb: m.gauge("memory_total_mb", "Memory of the live node managers"),
            memory_used_mb: m.gauge("memory_used_mb", "Memory in containers"),
            vcores_total: m.gauge("vcores_total", "Virtual cores of the live node managers"),
            vcores_used: m.gauge("vcores_used", "Virtual cores in containers"),
            node_heartbeats: m.counter("node_heartbeats_total", "Node manager heartbeats"),
            allocate_calls: m.counter(
                "allocate_calls_total",
                "Allocate calls of application masters",
            ),
            schedule_seconds: m.histogram(
                "schedule_seconds",
                "Time the scheduler spent placing containers on one node heartbeat",
                hstack_daemon::metrics::LATENCY_BUCKETS.to_vec(),
            ),
        }
    }
}
