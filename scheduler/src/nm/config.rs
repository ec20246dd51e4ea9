//! `hstack nodemanager` configuration: keys, defaults and flags (YARN's
//! defaults where YARN has one).

use std::net::SocketAddr;
use std::path::PathBuf;

use hstack_daemon::LogFormat;
use serde::{Deserialize, Serialize};

/// How a container's memory limit is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryEnforcement {
    /// cgroup v2 if it is writable, else v1, else polling.
    Auto,
    /// A cgroup v1 `memory` (and `cpu`) hierarchy: the kernel holds the
    /// limit.
    CgroupV1,
    /// A cgroup v2 hierarchy with the memory and cpu controllers.
    CgroupV2,
    /// The resident memory of the container's process group, polled.
    Poll,
    /// No limit.
    Off,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct NmConfig {
    /// The node's name in logs; empty = this machine's name.
    #[arg(long)]
    pub id: String,
    /// The address file and the records of running containers.
    #[arg(long)]
    pub data_dir: String,
    /// Containers' working directories (empty = data_dir/local).
    #[arg(long, value_delimiter = ',')]
    pub local_dirs: Vec<String>,
    /// Containers' stdout and stderr (empty = data_dir/logs).
    #[arg(long)]
    pub log_dir: String,
    /// The ContainerManager (YARN's 8041). Its advertised host:port is the
    /// node's id to the resource manager.
    #[arg(long)]
    pub rpc_addr: String,
    /// /metrics, /healthz, /readyz, the status page, containers' logs
    /// (/logs/CONTAINER/stdout) and /ws/v1/node (YARN's 8042).
    #[arg(long)]
    pub http_addr: String,
    #[arg(long)]
    pub advertise_host: String,
    /// host:port of the resource manager.
    #[arg(long)]
    pub resource_manager: String,
    #[arg(long)]
    pub rack: String,
    /// Memory containers may use in all (MiB).
    #[arg(long)]
    pub memory_mb: u64,
    #[arg(long)]
    pub vcores: u32,
    /// auto, cgroup-v1, cgroup-v2, poll or off.
    #[arg(long, value_enum)]
    pub memory_enforcement: MemoryEnforcement,
    /// Where cgroup hierarchies are mounted.
    #[arg(long)]
    pub cgroup_mount: String,
    /// The directory under each hierarchy this node's containers go in.
    #[arg(long)]
    pub cgroup_hierarchy: String,
    /// How often containers' memory is checked.
    #[arg(long)]
    pub monitor_interval_ms: u64,
    /// Between SIGTERM and SIGKILL when a container is stopped.
    #[arg(long)]
    pub kill_grace_ms: u64,
    /// How long a finished application's container logs are kept.
    #[arg(long)]
    pub log_retain_ms: u64,
    /// Auxiliary services to run (by name; e.g. the MapReduce shuffle).
    #[arg(long, value_delimiter = ',')]
    pub aux_services: Vec<String>,
    #[arg(long)]
    pub worker_threads: usize,
    #[arg(long, value_enum)]
    pub log_format: LogFormat,
    #[arg(long)]
    pub log_level: String,
}

impl Default for NmConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            data_dir: "./data/nodemanager".into(),
            local_dirs: vec![],
            log_dir: String::new(),
            rpc_addr: "0.0.0.0:8041".into(),
            http_addr: "0.0.0.0:8042".into(),
            advertise_host: String::new(),
            resource_manager: "127.0.0.1:8032".into(),
            rack: "/default-rack".into(),
            memory_mb: 8192,
            vcores: 8,
            memory_enforcement: MemoryEnforcement::Auto,
            cgroup_mount: "/sys/fs/cgroup".into(),
            cgroup_hierarchy: "hstack".into(),
            monitor_interval_ms: 500,
            kill_grace_ms: 250,
            log_retain_ms: 3 * 3600 * 1000,
            aux_services: vec![],
            worker_threads: 0,
            log_format: LogFormat::Human,
            log_level: "info".into(),
        }
    }
}

impl NmConfig {
    pub fn data_path(&self) -> PathBuf {
        PathBuf::from(&self.data_dir)
    }

    pub fn local_paths(&self) -> Vec<PathBuf> {
        if self.local_dirs.is_empty() {
            vec![self.data_path().join("local")]
        } else {
            self.local_dirs.iter().map(PathBuf::from).collect()
        }
    }

    pub fn log_path(&self) -> PathBuf {
        if self.log_dir.is_empty() {
            self.data_path().join("logs")
        } else {
            PathBuf::from(&self.log_dir)
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [("rpc_addr", &self.rpc_addr), ("http_addr", &self.http_addr)] {
            if v.parse::<SocketAddr>().is_err() {
                return Err(format!("{k} = {v:?} is not an IP:PORT address"));
            }
        }
        if self
            .resource_manager
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!(
                "resource_manager = {:?} is not HOST:PORT",
                self.resource_manager
            ));
        }
        if self.memory_mb == 0 || self.vcores == 0 {
            return Err("memory_mb and vcores must be above 0".into());
        }
        if !self.rack.starts_with('/') {
            return Err(format!("rack = {:?}: a rack looks like /rack1", self.rack));
        }
        if self.monitor_interval_ms == 0 {
            return Err("monitor_interval_ms must be above 0".into());
        }
        if self.cgroup_hierarchy.is_empty() || self.cgroup_hierarchy.contains("..") {
            return Err(format!(
                "cgroup_hierarchy = {:?}: a relative directory name",
                self.cgroup_hierarchy
            ));
        }
        Ok(())
    }
}

hstack_daemon::role_config!(NmConfig);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_and_defaults_are_valid() {
        hstack_daemon::assert_flags_round_trip::<NmConfig>();
        NmConfig::default().validate().unwrap();
        let c = NmConfig {
            resource_manager: "nohost".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("resource_manager"));
        let c = NmConfig {
            rack: "rack1".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("rack"));
    }
}
