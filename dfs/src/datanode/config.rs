//! `hstack datanode` configuration: keys, defaults and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use hstack_daemon::LogFormat;
use serde::{Deserialize, Serialize};

/// Every key of a datanode (`--print-default-config` prints them).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct DatanodeConfig {
    /// This datanode's id, unique in the cluster. Empty: a random id is made
    /// on first start and kept in the first data directory (`datanode_id`),
    /// so a restarted datanode is the same node to the namenode.
    #[arg(long)]
    pub id: String,
    /// Directories (disks) holding replicas, used round-robin.
    #[arg(long, value_delimiter = ',')]
    pub data_dirs: Vec<String>,
    /// `host:port` of the namenode's RPC server.
    #[arg(long)]
    pub namenode: String,
    /// Data transfer server (block reads and write pipelines).
    #[arg(long)]
    pub transfer_addr: String,
    /// gRPC server (replica recovery, visible length).
    #[arg(long)]
    pub rpc_addr: String,
    /// /metrics, /healthz, /readyz, status page.
    #[arg(long)]
    pub http_addr: String,
    /// Host clients and other datanodes use to reach this one; empty = the
    /// bound IP (or the hostname when bound to 0.0.0.0).
    #[arg(long)]
    pub advertise_host: String,
    /// This node's rack, for placement (`/dc/rack` style paths).
    #[arg(long)]
    pub rack: String,
    /// The block scanner re-verifies every finalized replica this often,
    /// spreading a pass over the period.
    #[arg(long)]
    pub scan_period_ms: u64,
    /// fsync a replica's files when it is finalized (HDFS's
    /// `dfs.datanode.synconclose`). Off by default, as in HDFS: a replica
    /// lives on several machines, and the page cache reaches disk soon.
    #[arg(long, action = clap::ArgAction::Set)]
    pub sync_on_close: bool,
    /// Block data moves between disk and memory with `O_DIRECT`: whole
    /// aligned packets are written, and reads come in 1 MiB windows,
    /// without the copy through the page cache (faster for streams read
    /// or written once: see docs/benchmarks.md). Off, everything goes
    /// through the page cache, as in HDFS, which lets the cache serve hot
    /// blocks. File systems without `O_DIRECT` (tmpfs) fall back on their
    /// own.
    #[arg(long, action = clap::ArgAction::Set)]
    pub direct_io: bool,
    /// Storage directories that may fail before the datanode stops (HDFS's
    /// `dfs.datanode.failed.volumes.tolerated`). Below `data_dirs`' count.
    #[arg(long)]
    pub failed_volumes_tolerated: usize,
    /// Every storage directory in service is checked this often, and soon
    /// after a block read or write fails with an I/O error.
    #[arg(long)]
    pub volume_check_ms: u64,
    /// Unix domain socket where clients on this host get replicas' file
    /// descriptors for short-circuit local reads. A relative path is under
    /// the first data directory; empty turns short-circuit reads off.
    #[arg(long)]
    pub domain_socket_path: String,
    /// Runtime worker threads; 0 = one per core.
    #[arg(long)]
    pub worker_threads: usize,
    /// `human` (one line per event) or `json`.
    #[arg(long, value_enum)]
    pub log_format: LogFormat,
    /// An `EnvFilter` directive (`info`, `info,hstack_dfs=debug`); `RUST_LOG` wins.
    #[arg(long)]
    pub log_level: String,
}

impl Default for DatanodeConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            data_dirs: vec!["./data/datanode".into()],
            namenode: "127.0.0.1:8020".into(),
            transfer_addr: "0.0.0.0:9866".into(),
            rpc_addr: "0.0.0.0:9867".into(),
            http_addr: "0.0.0.0:9864".into(),
            advertise_host: String::new(),
            rack: "/default-rack".into(),
            scan_period_ms: 6 * 3600 * 1000,
            sync_on_close: false,
            direct_io: true,
            failed_volumes_tolerated: 0,
            volume_check_ms: 60_000,
            domain_socket_path: "dn.sock".into(),
            worker_threads: 0,
            log_format: LogFormat::Human,
            log_level: "info".into(),
        }
    }
}

impl DatanodeConfig {
    pub fn data_paths(&self) -> Vec<PathBuf> {
        self.data_dirs.iter().map(PathBuf::from).collect()
    }

    /// Checks what serde cannot: ranges and address syntax.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("id = {:?} must not contain whitespace", self.id));
        }
        if self.data_dirs.is_empty() || self.data_dirs.iter().any(|d| d.trim().is_empty()) {
            return Err("data_dirs needs at least one directory and no empty entries".into());
        }
        for (k, v) in [
            ("transfer_addr", &self.transfer_addr),
            ("rpc_addr", &self.rpc_addr),
            ("http_addr", &self.http_addr),
        ] {
            if v.parse::<SocketAddr>().is_err() {
                return Err(format!("{k} = {v:?} is not an IP:PORT address"));
            }
        }
        match self.namenode.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => {
                return Err(format!(
                    "namenode = {:?} is not a HOST:PORT address",
                    self.namenode
                ))
            }
        }
        if !self.rack.starts_with('/') || self.rack.contains(char::is_whitespace) {
            return Err(format!(
                "rack = {:?}: expected a path such as /default-rack",
                self.rack
            ));
        }
        if self.scan_period_ms == 0 {
            return Err("scan_period_ms must be > 0".into());
        }
        if self.volume_check_ms == 0 {
            return Err("volume_check_ms must be > 0".into());
        }
        // An absolute path too long for a socket is a mistake to name; the
        // default under a deep data directory only turns the feature off
        // (with a warning at start: `short_circuit::socket_path`).
        let p = std::path::Path::new(&self.domain_socket_path);
        if p.is_absolute() && p.as_os_str().len() > super::short_circuit::MAX_SOCKET_PATH {
            return Err(format!(
                "domain_socket_path = {:?} is {} bytes, more than a Unix socket path may have ({}); give a shorter path, or \"\" to turn short-circuit reads off",
                self.domain_socket_path,
                p.as_os_str().len(),
                super::short_circuit::MAX_SOCKET_PATH
            ));
        }
        if self.failed_volumes_tolerated >= self.data_dirs.len() {
            return Err(format!(
                "failed_volumes_tolerated = {} must be less than the {} data_dirs",
                self.failed_volumes_tolerated,
                self.data_dirs.len()
            ));
        }
        Ok(())
    }
}

hstack_daemon::role_config!(DatanodeConfig);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_a_flag() {
        hstack_daemon::assert_flags_round_trip::<DatanodeConfig>();
    }

    #[test]
    fn defaults_are_valid() {
        DatanodeConfig::default().validate().unwrap();
    }

    #[test]
    fn invalid_values_are_named() {
        let bad = [
            DatanodeConfig {
                transfer_addr: "nowhere".into(),
                ..Default::default()
            },
            DatanodeConfig {
                namenode: "8020".into(),
                ..Default::default()
            },
            DatanodeConfig {
                data_dirs: vec![],
                ..Default::default()
            },
            DatanodeConfig {
                rack: "rack1".into(),
                ..Default::default()
            },
            DatanodeConfig {
                scan_period_ms: 0,
                ..Default::default()
            },
            DatanodeConfig {
                failed_volumes_tolerated: 1,
                ..Default::default()
            },
            DatanodeConfig {
                domain_socket_path: format!("/{}", "x".repeat(120)),
                ..Default::default()
            },
        ];
        let keys = [
            "transfer_addr",
            "namenode",
            "data_dirs",
            "rack",
            "scan_period_ms",
            "failed_volumes_tolerated",
            "domain_socket_path",
        ];
        for (c, k) in bad.iter().zip(keys) {
            let e = c.validate().unwrap_err();
            assert!(e.contains(k), "{e}");
        }
    }
}
