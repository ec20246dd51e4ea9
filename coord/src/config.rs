//! `hstack coord` configuration: keys, defaults and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use hstack_daemon::LogFormat;
use serde::{Deserialize, Serialize};

use crate::error::{Code, CoordError};
use crate::types::MemberNode;

/// Every key of a coordination member (`--print-default-config` prints them).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct CoordConfig {
    /// This member's id, unique in the ensemble, > 0.
    #[arg(long)]
    pub id: u64,
    /// Raft log, snapshots and the address file live here.
    #[arg(long)]
    pub data_dir: String,
    /// gRPC client API (ZooKeeper's 2181 is reserved for the jute protocol).
    #[arg(long)]
    pub client_addr: String,
    /// ZooKeeper's own protocol (jute), for ZooKeeper clients (kazoo,
    /// zkCli.sh, Curator) and the four-letter words.
    #[arg(long)]
    pub zk_addr: String,
    /// Raft and member-to-member traffic.
    #[arg(long)]
    pub raft_addr: String,
    /// /metrics, /healthz, /readyz, status page.
    #[arg(long)]
    pub http_addr: String,
    /// Host other members and clients use to reach this one; empty = the
    /// bound IP (or the hostname when bound to 0.0.0.0).
    #[arg(long)]
    pub advertise_host: String,
    /// `ID=HOST:RAFT_PORT:CLIENT_PORT:HTTP_PORT` for each founding member.
    /// The member with the smallest id forms the ensemble on first start.
    /// Empty: wait to be bootstrapped (the Bootstrap RPC; the test harness
    /// does this) or added to a running ensemble (`hstack zk add-member`).
    #[arg(long, value_delimiter = ',')]
    pub initial_members: Vec<String>,
    /// How often the Raft leader heartbeats its followers.
    #[arg(long)]
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time between these two
    /// starts an election.
    #[arg(long)]
    pub election_timeout_min_ms: u64,
    #[arg(long)]
    pub election_timeout_max_ms: u64,
    /// How often session liveness is forwarded to the leader and expiry and
    /// container/TTL clean-up run.
    #[arg(long)]
    pub tick_ms: u64,
    /// The session timeouts a client may ask for are clamped to these.
    #[arg(long)]
    pub min_session_timeout_ms: u32,
    #[arg(long)]
    pub max_session_timeout_ms: u32,
    /// Build a snapshot (and compact the log) after this many entries.
    #[arg(long)]
    pub snapshot_logs: u64,
    /// Entries kept in the log behind a snapshot, for slow followers.
    #[arg(long)]
    pub keep_logs: u64,
    /// Most transactions in one Raft entry (group commit).
    #[arg(long)]
    pub max_batch: usize,
    /// Raft entries this member's proposer keeps in flight (uncommitted)
    /// at once; proposals arriving meanwhile form the next, larger entry.
    #[arg(long)]
    pub max_inflight_batches: usize,
    /// Runtime worker threads; 0 = one per core. Members that share a
    /// machine (a local cluster) run best with 1 each.
    #[arg(long)]
    pub worker_threads: usize,
    /// The operator's identity that passes every ACL check, as ZooKeeper's
    /// `zookeeper.DigestAuthenticationProvider.superDigest`:
    /// `super:BASE64(SHA1(super:PASSWORD))`; empty = none.
    #[arg(long)]
    pub superuser_digest: String,
    /// The four-letter words the ZooKeeper port answers (ZooKeeper's
    /// `4lw.commands.whitelist`); `*` = all of them.
    #[arg(long, value_delimiter = ',')]
    pub four_letter_words: Vec<String>,
    /// Longest ZooKeeper frame accepted (ZooKeeper's `jute.maxbuffer`);
    /// a longer one closes the connection.
    #[arg(long)]
    pub jute_max_buffer: u32,
    /// `human` (one line per event) or `json`.
    #[arg(long, value_enum)]
    pub log_format: LogFormat,
    /// An `EnvFilter` directive (`info`, `info,openraft=debug`); `RUST_LOG` wins.
    #[arg(long)]
    pub log_level: String,
}

impl Default for CoordConfig {
    fn default() -> Self {
        Self {
            id: 1,
            data_dir: "./data/coord".into(),
            client_addr: "0.0.0.0:2281".into(),
            zk_addr: "0.0.0.0:2181".into(),
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
            superuser_digest: String::new(),
            four_letter_words: [
                "ruok", "srvr", "stat", "mntr", "conf", "cons", "envi", "wchs", "isro",
            ]
            .map(String::from)
            .to_vec(),
            jute_max_buffer: (1 << 20) + 1024,
            log_format: LogFormat::Human,
            log_level: "info,openraft=warn".into(),
        }
    }
}

impl CoordConfig {
    pub fn data_path(&self) -> PathBuf {
        PathBuf::from(&self.data_dir)
    }

    /// Checks what serde cannot: ranges and address syntax.
    pub fn validate(&self) -> Result<(), CoordError> {
        let bad = |m: String| Err(CoordError::new(Code::InvalidArgument, m));
        if self.id == 0 {
            return bad("id must be > 0".into());
        }
        for (k, v) in [
            ("client_addr", &self.client_addr),
            ("zk_addr", &self.zk_addr),
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
        for w in &self.four_letter_words {
            if w != "*" && !crate::zk::FOUR_LETTER_WORDS.contains(&w.as_str()) {
                return bad(format!(
                    "four_letter_words: unknown word {w:?} (known: {}, or *)",
                    crate::zk::FOUR_LETTER_WORDS.join(" ")
                ));
            }
        }
        if !self.superuser_digest.is_empty() && !self.superuser_digest.contains(':') {
            return bad("superuser_digest must be USER:BASE64(SHA1(USER:PASSWORD))".into());
        }
        if self.jute_max_buffer < 1024 {
            return bad("jute_max_buffer must be at least 1024".into());
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
            Code::InvalidArgument,
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

hstack_daemon::role_config!(CoordConfig);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_a_flag() {
        hstack_daemon::assert_flags_round_trip::<CoordConfig>();
    }

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
