//! `hstack coord` configuration: keys, defaults and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Code, CoordError};
use crate::types::MemberNode;

/// Every key of a coordination member (`--print-default-config` prints them).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoordConfig {
    /// This member's id, unique in the ensemble, > 0.
    pub id: u64,
    /// Raft log, snapshots and the address file live here.
    pub data_dir: String,
    /// gRPC client API (ZooKeeper's 2181 is reserved for the jute protocol).
    pub client_addr: String,
    /// Raft and member-to-member traffic.
    pub raft_addr: String,
    /// /metrics, /healthz, /readyz, status page.
    pub http_addr: String,
    /// Host other members and clients use to reach this one; empty = the
    /// bound IP (or the hostname when bound to 0.0.0.0).
    pub advertise_host: String,
    /// `ID=HOST:RAFT_PORT:CLIENT_PORT:HTTP_PORT` for each founding member.
    /// The member with the smallest id forms the ensemble on first start.
    /// Empty: wait to be bootstrapped (the Bootstrap RPC; the test harness
    /// does this) or added to a running ensemble (`hstack zk add-member`).
    pub initial_members: Vec<String>,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How often session liveness is forwarded to the leader and expiry and
    /// container/TTL clean-up run.
    pub tick_ms: u64,
    pub min_session_timeout_ms: u32,
    pub max_session_timeout_ms: u32,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_logs: u64,
    /// Entries kept in the log behind a snapshot, for slow followers.
    pub keep_logs: u64,
    /// Most transactions in one Raft entry (group commit).
    pub max_batch: usize,
    /// Raft entries this member's proposer keeps in flight (uncommitted)
    /// at once; proposals arriving meanwhile form the next, larger entry.
    pub max_inflight_batches: usize,
    /// Runtime worker threads; 0 = one per core. Members that share a
    /// machine (a local cluster) run best with 1 each.
    pub worker_threads: usize,
    pub log_format: String,
    pub log_level: String,
}

impl Default for CoordConfig {
    fn default() -> Self {
        Self {
            id: 1,
            data_dir: "./data/coord".into(),
            client_addr: "0.0.0.0:2281".into(),
            raft_addr: "0.0.0.0:2888".into(),
            http_addr: "0.0.0.0:8081".into(),
            advertise_host: String::new(),
            initial_members: vec![],
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            tick_ms: 200,
            min_session_timeout_ms: 1000,
            max_session_timeout_ms: 60_000,
            snapshot_logs: 20_000,
            keep_logs: 2_000,
            max_batch: 2048,
            max_inflight_batches: 4,
            worker_threads: 0,
            log_format: "human".into(),
            log_level: "info,openraft=warn".into(),
        }
    }
}

/// Flags of `hstack coord`; each overrides the key of the same name.
#[derive(clap::Args, Clone, Debug, Default, Serialize)]
pub struct CoordFlags {
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_addr: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_host: Option<String>,
    /// Comma-separated `ID=HOST:RAFT:CLIENT:HTTP` entries.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_members: Option<Vec<String>>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_session_timeout_ms: Option<u32>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_session_timeout_ms: Option<u32>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_logs: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_logs: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_inflight_batches: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

impl CoordConfig {
    pub fn data_path(&self) -> PathBuf {
        PathBuf::from(&self.data_dir)
    }

    /// Checks what serde cannot: ranges and address syntax.
    pub fn validate(&self) -> Result<(), CoordError> {
        let bad = |m: String| Err(CoordError::new(Code::BadArguments, m));
        if self.id == 0 {
            return bad("id must be > 0".into());
        }
        for (k, v) in [
            ("client_addr", &self.client_addr),
            ("raft_addr", &self.raft_addr),
            ("http_addr", &self.http_addr),
        ] {
            if v.parse::<SocketAddr>().is_err() {
                return bad(format!("{k} = {v:?} is not an IP:PORT address"));
            }
        }
        if self.election_timeout_min_ms <= self.heartbeat_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return bad(
                "need heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms".into(),
            );
        }
        if self.min_session_timeout_ms < 2 * self.tick_ms as u32
            || self.max_session_timeout_ms < self.min_session_timeout_ms
        {
            return bad(
                "need 2 * tick_ms <= min_session_timeout_ms <= max_session_timeout_ms".into(),
            );
        }
        if self.max_batch == 0 || self.snapshot_logs == 0 || self.max_inflight_batches == 0 {
            return bad("max_batch, max_inflight_batches and snapshot_logs must be > 0".into());
        }
        if !["human", "json"].contains(&self.log_format.as_str()) {
            return bad(format!(
                "log_format = {:?}: expected human or json",
                self.log_format
            ));
        }
        self.parse_initial_members()?;
        Ok(())
    }

    pub fn parse_initial_members(&self) -> Result<Vec<(u64, MemberNode)>, CoordError> {
        self.initial_members
            .iter()
            .map(|s| parse_member(s))
            .collect()
    }
}

/// Parses `ID=HOST:RAFT_PORT:CLIENT_PORT:HTTP_PORT`.
pub fn parse_member(s: &str) -> Result<(u64, MemberNode), CoordError> {
    let bad = || {
        CoordError::new(
            Code::BadArguments,
            format!("member {s:?}: expected ID=HOST:RAFT_PORT:CLIENT_PORT:HTTP_PORT"),
        )
    };
    let (id, rest) = s.split_once('=').ok_or_else(bad)?;
    let id: u64 = id.trim().parse().map_err(|_| bad())?;
    let parts: Vec<&str> = rest.trim().split(':').collect();
    if id == 0
        || parts.len() != 4
        || parts[0].is_empty()
        || parts[1..].iter().any(|p| p.parse::<u16>().is_err())
    {
        return Err(bad());
    }
    let host = parts[0];
    Ok((
        id,
        MemberNode {
            raft_addr: format!("{host}:{}", parts[1]),
            client_addr: format!("{host}:{}", parts[2]),
            http_addr: format!("{host}:{}", parts[3]),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        CoordConfig::default().validate().unwrap();
    }

    #[test]
    fn member_syntax() {
        let (id, m) = parse_member("2=h:1:2:3").unwrap();
        assert_eq!(
            (id, m.raft_addr.as_str(), m.client_addr.as_str()),
            (2, "h:1", "h:2")
        );
        for bad in [
            "2=h:1:2",
            "x=h:1:2:3",
            "0=h:1:2:3",
            "2=h:1:2:99999",
            "h:1:2:3",
        ] {
            assert!(parse_member(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_values_are_named() {
        let c = CoordConfig {
            client_addr: "nowhere".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().message.contains("client_addr"));
        let c = CoordConfig {
            id: 0,
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }
}
