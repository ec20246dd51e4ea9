//! What /proc says of a container's processes: which belong to its
//! process group (and carry its CONTAINER_ID, so a recycled group id is
//! never mistaken for it), and how much memory they hold.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// (pid, process group) of every process.
fn all() -> Vec<(i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name in parentheses: state, ppid, pgrp, …
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let pgrp = rest.split_whitespace().nth(2).and_then(|s| s.parse().ok());
        if let Some(g) = pgrp {
            out.push((pid, g));
        }
    }
    out
}

/// Whether `pid`'s environment has `CONTAINER_ID=<container>`.
pub(crate) fn is_of(pid: i32, container: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("CONTAINER_ID={container}");
    env.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
}

/// The processes of process group `pgid` that belong to `container`.
pub(crate) fn members(pgid: i32, container: &str) -> Vec<i32> {
    all()
        .into_iter()
        .filter(|(_, g)| *g == pgid)
        .map(|(p, _)| p)
        .filter(|p| is_of(*p, container))
        .collect()
}

/// Resident bytes of `pids` together.
pub(crate) fn rss_bytes(pids: &[i32]) -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/statm")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|r| r.parse::<u64>().ok())
        })
        .map(|pages| pages * page)
        .sum()
}

/// SIGKILL to each of `pids`.
pub(crate) fn kill_all(pids: &[i32]) {
    for p in pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
}

/// A signal to a whole process group.
pub(crate) fn signal_group(pgid: i32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid), sig);
}
