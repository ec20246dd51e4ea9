//! The four-letter words: a connection whose first four bytes are one of
//! them gets a plain-text answer and is closed (ZooKeeper's `ruok`, `mntr`,
//! …). Only the words in `four_letter_words` answer; any other known word
//! gets ZooKeeper's "not in the whitelist" line.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::Front;
use crate::node::Node;

/// The words hstack answers.
pub const FOUR_LETTER_WORDS: [&str; 9] = [
    "ruok", "srvr", "stat", "mntr", "conf", "cons", "envi", "wchs", "isro",
];

/// Words ZooKeeper knows that hstack does not answer (refused like a word
/// outside the whitelist, rather than read as a frame length).
const OTHER_WORDS: [&str; 10] = [
    "dump", "reqs", "wchc", "wchp", "crst", "srst", "dirs", "gtmk", "stmk", "hash",
];

/// The word the first four bytes spell, if they spell one.
pub fn word(head: &[u8; 4]) -> Option<&'static str> {
    let s = std::str::from_utf8(head).ok()?;
    FOUR_LETTER_WORDS
        .iter()
        .chain(OTHER_WORDS.iter())
        .find(|w| **w == s)
        .copied()
}

fn version() -> String {
    format!("3.8.0-hstack-{}", env!("CARGO_PKG_VERSION"))
}

fn mode(node: &Node) -> &'static str {
    let m = node.raft.metrics();
    let state = m.borrow().state;
    use openraft::ServerState as S;
    match state {
        S::Leader => "leader",
        S::Follower | S::Candidate => "follower",
        S::Learner => "observer",
        S::Shutdown => "shutdown",
    }
}

fn latency_ms(node: &Node) -> (f64, u64) {
    let (mut sum, mut count) = (0.0, 0u64);
    for h in [&node.metrics.read_seconds, &node.metrics.write_seconds] {
        sum += h.get_sample_sum();
        count += h.get_sample_count();
    }
    let avg = if count == 0 {
        0.0
    } else {
        sum * 1000.0 / count as f64
    };
    (avg, count)
}

pub fn answer(node: &Node, front: &Front, word: &str) -> String {
    let allowed = node
        .cfg
        .four_letter_words
        .iter()
        .any(|w| w == "*" || w == word);
    if !allowed || !FOUR_LETTER_WORDS.contains(&word) {
        return format!("{word} is not executed because it is not in the whitelist.\n");
    }
    let (nodes, sessions, zxid, watches, ephemerals) = {
        let sm = node.sm.lock();
        let eph: usize = sm.tree.sessions().map(|(_, s)| s.ephemerals.len()).sum();
        (
            sm.tree.node_count(),
            sm.tree.session_count(),
            sm.tree.last_zxid(),
            sm.watches.count(),
            eph,
        )
    };
    let conns = front.connections();
    let received = front.received.load(Ordering::Relaxed);
    let sent = front.sent.load(Ordering::Relaxed);
    let (avg, _) = latency_ms(node);
    let mut out = String::new();
    match word {
        "ruok" => out.push_str("imok"),
        "isro" => out.push_str("rw"),
        "srvr" | "stat" => {
            let _ = writeln!(out, "Zookeeper version: {}, built by hstack", version());
            if word == "stat" {
                out.push_str("Clients:\n");
                for c in &conns {
                    let _ = writeln!(
                        out,
                        " /{}[1](queued=0,recved={},sent={})",
                        c.peer,
                        c.received.load(Ordering::Relaxed),
                        c.sent.load(Ordering::Relaxed)
                    );
                }
                out.push('\n');
            }
            let _ = writeln!(out, "Latency min/avg/max: 0/{avg:.4}/0");
            let _ = writeln!(out, "Received: {received}");
            let _ = writeln!(out, "Sent: {sent}");
            let _ = writeln!(out, "Connections: {}", conns.len());
            let _ = writeln!(out, "Outstanding: 0");
            let _ = writeln!(out, "Zxid: {zxid:#x}");
            let _ = writeln!(out, "Mode: {}", mode(node));
            let _ = writeln!(out, "Node count: {nodes}");
        }
        "mntr" => {
            let m = mode(node);
            let mut kv = |k: &str, v: String| {
                let _ = writeln!(out, "zk_{k}\t{v}");
            };
            kv("version", version());
            kv("avg_latency", format!("{avg:.4}"));
            kv("max_latency", "0".into());
            kv("min_latency", "0".into());
            kv("packets_received", received.to_string());
            kv("packets_sent", sent.to_string());
            kv("num_alive_connections", conns.len().to_string());
            kv("outstanding_requests", "0".into());
            kv("server_state", m.into());
            kv("znode_count", nodes.to_string());
            kv("watch_count", watches.to_string());
            kv("ephemerals_count", ephemerals.to_string());
            kv("global_sessions", sessions.to_string());
            kv("last_zxid", zxid.to_string());
            if m == "leader" {
                let metrics = node.raft.metrics();
                let metrics = metrics.borrow();
                let followers = metrics
                    .replication
                    .as_ref()
                    .map(|r| r.len().saturating_sub(1));
                kv("followers", followers.unwrap_or(0).to_string());
                kv("synced_followers", followers.unwrap_or(0).to_string());
            }
        }
        "conf" => {
            let c = &node.cfg;
            let _ = writeln!(out, "clientPort={}", port_of(&c.zk_addr));
            let _ = writeln!(out, "secureClientPort=-1");
            let _ = writeln!(out, "dataDir={}", c.data_dir);
            let _ = writeln!(out, "dataLogDir={}/raft-log", c.data_dir);
            let _ = writeln!(out, "tickTime={}", c.tick_ms);
            let _ = writeln!(out, "minSessionTimeout={}", c.min_session_timeout_ms);
            let _ = writeln!(out, "maxSessionTimeout={}", c.max_session_timeout_ms);
            let _ = writeln!(out, "serverId={}", c.id);
            let _ = writeln!(out, "jute.maxbuffer={}", c.jute_max_buffer);
            let _ = writeln!(
                out,
                "4lw.commands.whitelist={}",
                c.four_letter_words.join(",")
            );
        }
        "cons" => {
            for c in &conns {
                let est = c
                    .established
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                let _ = writeln!(
                    out,
                    " /{}[1](queued=0,recved={},sent={},sid={:#x},est={est},to={},lzxid={:#x})",
                    c.peer,
                    c.received.load(Ordering::Relaxed),
                    c.sent.load(Ordering::Relaxed),
                    c.session.load(Ordering::Relaxed),
                    c.timeout_ms.load(Ordering::Relaxed),
                    c.last_zxid.load(Ordering::Relaxed),
                );
            }
            out.push('\n');
        }
        "envi" => {
            out.push_str("Environment:\n");
            let _ = writeln!(out, "zookeeper.version={}", version());
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| {
                std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default()
            });
            let _ = writeln!(out, "host.name={host}");
            let _ = writeln!(out, "java.version=none (hstack is written in Rust)");
            let _ = writeln!(out, "os.name={}", std::env::consts::OS);
            let _ = writeln!(out, "os.arch={}", std::env::consts::ARCH);
            let _ = writeln!(
                out,
                "user.dir={}",
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            );
            let _ = writeln!(out, "process.id={}", std::process::id());
        }
        "wchs" => {
            let watching = conns
                .iter()
                .filter(|c| c.session.load(Ordering::Relaxed) != 0)
                .count();
            let _ = writeln!(out, "{watching} connections watching {watches} paths");
            let _ = writeln!(out, "Total watches:{watches}");
        }
        _ => {}
    }
    out
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}
