//! `hstack namenode` configuration: keys, defaults and flags. Defaults are
//! HDFS's where HDFS has one (`hdfs-default.xml`), so an operator's
//! intuitions carry over; tests and `hstack local up` shorten the timers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use hstack_daemon::LogFormat;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct NamenodeConfig {
    /// Edit log segments, checkpoint images and the address file.
    #[arg(long)]
    pub name_dir: String,
    /// Client, admin and datanode RPCs (HDFS's 8020).
    #[arg(long)]
    pub rpc_addr: String,
    /// /metrics, /healthz, /readyz, status page (HDFS's 9870).
    #[arg(long)]
    pub http_addr: String,
    /// The user who may do anything (HDFS: the user running the namenode).
    /// Empty = the user running this process.
    #[arg(long)]
    pub superuser: String,
    /// Members of this group are superusers too.
    #[arg(long)]
    pub supergroup: String,
    /// For files created without one (dfs.replication).
    #[arg(long)]
    pub default_replication: u16,
    /// For files created without one (dfs.blocksize).
    #[arg(long)]
    pub default_block_size: u64,
    /// Smallest block size a client may ask for
    /// (dfs.namenode.fs-limits.min-block-size).
    #[arg(long)]
    pub min_block_size: u64,
    /// How often datanodes heartbeat (dfs.heartbeat.interval).
    #[arg(long)]
    pub heartbeat_ms: u32,
    /// How often datanodes send a full block report (dfs.blockreport.intervalMsec).
    #[arg(long)]
    pub block_report_ms: u32,
    /// A datanode silent this long is dead and its replicas are copied
    /// elsewhere (HDFS: 2 × recheck + 10 × heartbeat = 10.5 min).
    #[arg(long)]
    pub dead_node_timeout_ms: u64,
    /// How often the replication monitor runs (dfs.namenode.redundancy.interval).
    #[arg(long)]
    pub replication_interval_ms: u64,
    /// Replications scheduled per run at most.
    #[arg(long)]
    pub replication_work_per_pass: usize,
    /// A scheduled copy that has not arrived after this long is scheduled
    /// again (dfs.namenode.reconstruction.pending.timeout-sec).
    #[arg(long)]
    pub pending_replication_timeout_ms: u64,
    /// After this long without a renewal, another client's create may take
    /// the file over (lease recovery starts).
    #[arg(long)]
    pub lease_soft_limit_ms: u64,
    /// After this long without a renewal, the namenode recovers the lease
    /// on its own: the file is closed at the length its replicas agree on.
    #[arg(long)]
    pub lease_hard_limit_ms: u64,
    /// Share of blocks that must have a reported replica before safe mode
    /// ends by itself (dfs.namenode.safemode.threshold-pct).
    #[arg(long)]
    pub safemode_threshold: f64,
    /// How long safe mode lasts after the threshold is reached
    /// (dfs.namenode.safemode.extension).
    #[arg(long)]
    pub safemode_extension_ms: u64,
    /// A checkpoint is taken this often…
    #[arg(long)]
    pub checkpoint_period_s: u64,
    /// …or after this many edits, whichever comes first.
    #[arg(long)]
    pub checkpoint_txns: u64,
    /// `HOST=RACK` entries; a datanode whose host is listed is placed on
    /// that rack whatever it says itself.
    #[arg(long, value_delimiter = ',')]
    pub rack_map: Vec<String>,
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

impl Default for NamenodeConfig {
    fn default() -> Self {
        Self {
            name_dir: "./data/namenode".into(),
            rpc_addr: "0.0.0.0:8020".into(),
            http_addr: "0.0.0.0:9870".into(),
            superuser: String::new(),
            supergroup: "supergroup".into(),
            default_replication: 3,
            default_block_size: 128 << 20,
            min_block_size: 1 << 20,
            heartbeat_ms: 3000,
            block_report_ms: 6 * 3600 * 1000,
            dead_node_timeout_ms: 630_000,
            replication_interval_ms: 3000,
            replication_work_per_pass: 200,
            pending_replication_timeout_ms: 300_000,
            lease_soft_limit_ms: 60_000,
            lease_hard_limit_ms: 3_600_000,
            safemode_threshold: 0.999,
            safemode_extension_ms: 30_000,
            checkpoint_period_s: 3600,
            checkpoint_txns: 1_000_000,
            rack_map: vec![],
            worker_threads: 0,
            log_format: LogFormat::Human,
            log_level: "info".into(),
        }
    }
}

impl NamenodeConfig {
    pub fn name_path(&self) -> PathBuf {
        PathBuf::from(&self.name_dir)
    }

    /// The superuser's name: configured, or who runs this process.
    pub fn superuser_name(&self) -> String {
        if !self.superuser.is_empty() {
            return self.superuser.clone();
        }
        std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "hstack".into())
    }

    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [("rpc_addr", &self.rpc_addr), ("http_addr", &self.http_addr)] {
            if v.parse::<SocketAddr>().is_err() {
                return Err(format!("{k} = {v:?} is not an IP:PORT address"));
            }
        }
        if self.default_replication == 0 {
            return Err("default_replication must be at least 1".into());
        }
        if self.min_block_size == 0 || self.min_block_size % 512 != 0 {
            return Err("min_block_size must be a positive multiple of 512".into());
        }
        if self.default_block_size < self.min_block_size || self.default_block_size % 512 != 0 {
            return Err(
                "default_block_size must be a multiple of 512 and at least min_block_size".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.safemode_threshold) {
            return Err("safemode_threshold must be between 0 and 1".into());
        }
        if self.heartbeat_ms == 0
            || self.dead_node_timeout_ms <= self.heartbeat_ms as u64
            || self.replication_interval_ms == 0
        {
            return Err(
                "need heartbeat_ms > 0, dead_node_timeout_ms > heartbeat_ms and replication_interval_ms > 0"
                    .into(),
            );
        }
        if self.lease_soft_limit_ms == 0 || self.lease_hard_limit_ms < self.lease_soft_limit_ms {
            return Err("need 0 < lease_soft_limit_ms <= lease_hard_limit_ms".into());
        }
        if self.checkpoint_period_s == 0 || self.checkpoint_txns == 0 {
            return Err("checkpoint_period_s and checkpoint_txns must be > 0".into());
        }
        self.racks()?;
        Ok(())
    }

    /// The host → rack map.
    pub fn racks(&self) -> Result<HashMap<String, String>, String> {
        let mut m = HashMap::new();
        for e in &self.rack_map {
            let Some((h, r)) = e.split_once('=') else {
                return Err(format!("rack_map entry {e:?}: expected HOST=RACK"));
            };
            if h.is_empty() || !r.starts_with('/') {
                return Err(format!(
                    "rack_map entry {e:?}: expected HOST=RACK with a rack like /rack1"
                ));
            }
            m.insert(h.to_string(), r.to_string());
        }
        Ok(m)
    }
}

hstack_daemon::role_config!(NamenodeConfig);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_a_flag() {
        hstack_daemon::assert_flags_round_trip::<NamenodeConfig>();
    }

    #[test]
    fn defaults_are_valid_and_bad_values_named() {
        NamenodeConfig::default().validate().unwrap();
        let c = NamenodeConfig {
            rack_map: vec!["h1=rack1".into()],
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("h1=rack1"));
        let c = NamenodeConfig {
            min_block_size: 1000,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("min_block_size"));
        let c = NamenodeConfig {
            rack_map: vec!["h1=/r1".into()],
            ..Default::default()
        };
        assert_eq!(c.racks().unwrap()["h1"], "/r1");
    }
}
