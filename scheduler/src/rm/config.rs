//! `hstack resourcemanager` configuration: keys, defaults and flags.
//! Ports, the scheduler and queue defaults are YARN's (`yarn-default.xml`,
//! `capacity-scheduler.xml`), so an operator's intuitions carry over. The
//! liveness timeouts are shorter than YARN's ten minutes (a node is lost
//! after 10 s, a silent master after 60 s): failures are noticed quickly.

use std::net::SocketAddr;
use std::path::PathBuf;

use hstack_daemon::LogFormat;
use serde::{Deserialize, Serialize};

use crate::records::Resource;
use crate::sched::queues::{QueueDefaults, QueueTree, SchedulerKind};
use crate::sched::SchedulerConfig;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RmConfig {
    /// The address file and, with `store = "file"`, the application state.
    #[arg(long)]
    pub data_dir: String,
    /// Clients, application masters and node managers (YARN's 8032; one
    /// port serves what YARN splits over 8030-8032).
    #[arg(long)]
    pub rpc_addr: String,
    /// /metrics, /healthz, /readyz, the status page and the REST view
    /// under /ws/v1/cluster (YARN's 8088).
    #[arg(long)]
    pub http_addr: String,
    /// The host others should use for this resource manager; empty = the
    /// bound IP (or this machine's name when bound to 0.0.0.0).
    #[arg(long)]
    pub advertise_host: String,
    /// fifo, capacity or fair (YARN's default is capacity).
    #[arg(long, value_enum)]
    pub scheduler: SchedulerKind,
    /// The queue file (TOML, one table per queue path); empty = one queue,
    /// root.default.
    #[arg(long)]
    pub queues_file: String,
    /// Where application state is kept: "memory" (lost at restart) or
    /// "file" (under data_dir/state; unfinished applications start a new
    /// attempt after a restart).
    #[arg(long)]
    pub store: String,
    /// Asks are rounded up to a multiple of this (MiB).
    #[arg(long)]
    pub min_allocation_mb: u64,
    #[arg(long)]
    pub min_allocation_vcores: u32,
    /// A container may be at most this large; larger asks are refused.
    #[arg(long)]
    pub max_allocation_mb: u64,
    #[arg(long)]
    pub max_allocation_vcores: u32,
    /// Missed scheduling opportunities before a node-local ask takes its
    /// rack (capped at the number of live nodes).
    #[arg(long)]
    pub node_locality_delay: u32,
    /// Further missed opportunities before it takes any node.
    #[arg(long)]
    pub rack_locality_delay: u32,
    /// Fair scheduler: preempt for starved queues.
    #[arg(long, action = clap::ArgAction::Set)]
    pub preemption: bool,
    /// Fair: a queue below this fraction of its fair share is starved.
    #[arg(long)]
    pub fair_share_preemption_threshold: f64,
    /// Fair: how long a queue may stay below its minimum share (default
    /// for queues that do not say).
    #[arg(long)]
    pub min_share_preemption_timeout_ms: u64,
    /// Fair: how long below its fair share × the threshold.
    #[arg(long)]
    pub fair_share_preemption_timeout_ms: u64,
    /// How often preemption is considered.
    #[arg(long)]
    pub preemption_interval_ms: u64,
    /// Application masters of a queue may use this percent of its
    /// maximum (capacity) or steady share (fair), for queues that do not
    /// say. The first always starts.
    #[arg(long)]
    pub max_am_resource_percent: f64,
    /// Attempts an application gets when it does not say (YARN's
    /// yarn.resourcemanager.am.max-attempts).
    #[arg(long)]
    pub max_attempts: u32,
    /// How often node managers heartbeat.
    #[arg(long)]
    pub nm_heartbeat_ms: u64,
    /// A node manager silent this long is lost, with its containers.
    #[arg(long)]
    pub nm_expiry_ms: u64,
    /// An application master that has not called Allocate for this long
    /// has failed.
    #[arg(long)]
    pub am_expiry_ms: u64,
    /// A container not seen running this long after it was placed is
    /// taken back.
    #[arg(long)]
    pub container_launch_timeout_ms: u64,
    /// Finished applications kept for reports.
    #[arg(long)]
    pub completed_apps_kept: usize,
    /// Finished containers kept per application for reports.
    #[arg(long)]
    pub completed_containers_kept: usize,
    #[arg(long)]
    pub worker_threads: usize,
    #[arg(long, value_enum)]
    pub log_format: LogFormat,
    #[arg(long)]
    pub log_level: String,
}

impl Default for RmConfig {
    fn default() -> Self {
        Self {
            data_dir: "./data/resourcemanager".into(),
            rpc_addr: "0.0.0.0:8032".into(),
            http_addr: "0.0.0.0:8088".into(),
            advertise_host: String::new(),
            scheduler: SchedulerKind::Capacity,
            queues_file: String::new(),
            store: "memory".into(),
            min_allocation_mb: 1024,
            min_allocation_vcores: 1,
            max_allocation_mb: 8192,
            max_allocation_vcores: 4,
            node_locality_delay: 40,
            rack_locality_delay: 40,
            preemption: false,
            fair_share_preemption_threshold: 0.5,
            min_share_preemption_timeout_ms: 15_000,
            fair_share_preemption_timeout_ms: 30_000,
            preemption_interval_ms: 3000,
            max_am_resource_percent: 10.0,
            max_attempts: 2,
            nm_heartbeat_ms: 1000,
            nm_expiry_ms: 10_000,
            am_expiry_ms: 60_000,
            container_launch_timeout_ms: 60_000,
            completed_apps_kept: 1000,
            completed_containers_kept: 1000,
            worker_threads: 0,
            log_format: LogFormat::Human,
            log_level: "info".into(),
        }
    }
}

impl RmConfig {
    pub fn data_path(&self) -> PathBuf {
        PathBuf::from(&self.data_dir)
    }

    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [("rpc_addr", &self.rpc_addr), ("http_addr", &self.http_addr)] {
            if v.parse::<SocketAddr>().is_err() {
                return Err(format!("{k} = {v:?} is not an IP:PORT address"));
            }
        }
        if self.store != "memory" && self.store != "file" {
            return Err(format!(
                "store = {:?}: expected \"memory\" or \"file\"",
                self.store
            ));
        }
        if self.min_allocation_mb == 0 || self.min_allocation_vcores == 0 {
            return Err("min_allocation_mb and min_allocation_vcores must be above 0".into());
        }
        if self.max_allocation_mb < self.min_allocation_mb
            || self.max_allocation_vcores < self.min_allocation_vcores
        {
            return Err(format!(
                "max_allocation ({} MiB, {} vcores) is below min_allocation ({} MiB, {} vcores)",
                self.max_allocation_mb,
                self.max_allocation_vcores,
                self.min_allocation_mb,
                self.min_allocation_vcores
            ));
        }
        if !(0.0..=100.0).contains(&self.max_am_resource_percent) {
            return Err("max_am_resource_percent must be 0 to 100".into());
        }
        if !(0.0..=1.0).contains(&self.fair_share_preemption_threshold) {
            return Err("fair_share_preemption_threshold must be 0 to 1".into());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.nm_heartbeat_ms == 0 || self.nm_expiry_ms <= self.nm_heartbeat_ms {
            return Err("need nm_heartbeat_ms > 0 and nm_expiry_ms > nm_heartbeat_ms".into());
        }
        if self.am_expiry_ms == 0 || self.container_launch_timeout_ms == 0 {
            return Err("am_expiry_ms and container_launch_timeout_ms must be above 0".into());
        }
        if self.preemption_interval_ms == 0 {
            return Err("preemption_interval_ms must be above 0".into());
        }
        self.queue_tree()?;
        Ok(())
    }

    /// The queue tree, from the queue file (or the one default queue).
    pub fn queue_tree(&self) -> Result<QueueTree, String> {
        let defaults = QueueDefaults {
            maximum_am_resource_percent: self.max_am_resource_percent,
            min_share_preemption_timeout_ms: self.min_share_preemption_timeout_ms,
            fair_share_preemption_timeout_ms: self.fair_share_preemption_timeout_ms,
        };
        if self.queues_file.is_empty() {
            return Ok(QueueTree::single(&defaults));
        }
        let text = std::fs::read_to_string(&self.queues_file)
            .map_err(|e| format!("queues_file = {:?}: {e}", self.queues_file))?;
        QueueTree::parse(&text, self.scheduler, &defaults)
            .map_err(|e| format!("queues_file = {:?}: {e}", self.queues_file))
    }

    pub fn scheduler_config(&self) -> Result<SchedulerConfig, String> {
        Ok(SchedulerConfig {
            kind: self.scheduler,
            queues: self.queue_tree()?,
            min_allocation: Resource::new(self.min_allocation_mb, self.min_allocation_vcores),
            max_allocation: Resource::new(self.max_allocation_mb, self.max_allocation_vcores),
            node_locality_delay: self.node_locality_delay,
            rack_locality_delay: self.rack_locality_delay,
            preemption: self.preemption,
            fair_share_preemption_threshold: self.fair_share_preemption_threshold,
        })
    }
}

hstack_daemon::role_config!(RmConfig);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip() {
        hstack_daemon::assert_flags_round_trip::<RmConfig>();
    }

    #[test]
    fn defaults_are_valid_and_bad_values_named() {
        RmConfig::default().validate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("queues.toml");
        std::fs::write(&f, "[queue.\"root.a\"]\ncapacity = 50\n").unwrap();
        let c = RmConfig {
            queues_file: f.display().to_string(),
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.contains("queues_file") && e.contains("sum to 50"), "{e}");
        let c = RmConfig {
            max_allocation_mb: 10,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("max_allocation"));
        let c = RmConfig {
            queues_file: "/nonexistent/q.toml".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("/nonexistent/q.toml"));
    }
}
