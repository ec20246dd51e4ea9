//! The process harness: real `hstack` processes in temporary directories on
//! ephemeral ports, started, waited on, killed (SIGKILL), paused
//! (SIGSTOP/SIGCONT) and restarted on the same data directory and ports, with
//! a scan of every node's log for panics and unexpected ERROR lines at the end.
//!
//! The binary is `$HSTACK_BIN`, or `hstack` in the target directory the test
//! executable runs from (`cargo build` it first; `scripts/test.sh` does).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hstack_coord_client::{Client, ClientOptions};
use hstack_daemon::process::DaemonProcess;

pub use hstack_coord_client as hstack_coord;
pub use hstack_daemon;
pub use hstack_dfs;
pub use hstack_proto;
pub use hstack_proto::dfs as hstack_proto_dfs;
pub use hstack_scheduler;

pub mod dfs;
pub mod mr;
pub mod yarn;
pub use dfs::DfsCluster;
pub use yarn::YarnCluster;

/// The `hstack` binary under test.
pub fn hstack_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HSTACK_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/hstack
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("hstack");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p hstack) or set HSTACK_BIN",
        bin.display()
    );
    bin
}

/// Polls `f` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One daemon process: the shared launcher (`hstack_daemon::process`,
/// which `hstack local` uses too), with the harness's numeric id.
pub struct Proc {
    pub id: u64,
    inner: DaemonProcess,
}

impl std::ops::Deref for Proc {
    type Target = DaemonProcess;
    fn deref(&self) -> &DaemonProcess {
        &self.inner
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut DaemonProcess {
        &mut self.inner
    }
}

impl Proc {
    /// `hstack ROLE ARGS…` (not started yet), announcing in `data_dir`.
    pub fn new(role: &str, id: u64, data_dir: &Path, log: &Path, args: Vec<String>) -> Self {
        let level = std::env::var("HSTACK_TEST_LOG").unwrap_or_else(|_| "info".into());
        let inner = DaemonProcess::new(&hstack_bin(), role, &id.to_string(), data_dir, log, args)
            .env("RUST_LOG", &level);
        Self { id, inner }
    }

    /// Starts it.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.inner.spawn().context("cannot start hstack")
    }

    pub async fn wait_announced(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.inner
            .wait_announced(timeout)
            .await
            .map_err(anyhow::Error::msg)
    }

    /// SIGTERM, then wait for a clean exit (SIGKILL after `grace`); how it
    /// exited if it did by itself.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.inner.terminate(grace)
    }

    /// Starts the daemon again on the same data directory and addresses.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.inner
            .restart(Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::msg)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.inner.resume();
        self.inner.kill9();
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    hstack_daemon::process::tail(path, n)
}

/// A coordination ensemble of real processes.
pub struct CoordEnsemble {
    pub nodes: Vec<Proc>,
    pub dir: tempfile::TempDir,
    /// ERROR lines matching any of these are expected in this test.
    pub allowed_errors: Vec<String>,
}

impl CoordEnsemble {
    /// Starts `n` members on ephemeral ports with extra `coord` flags and
    /// forms the ensemble (bootstrap through member 1).
    pub async fn start(n: u64, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("hstack-test-").tempdir()?;
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(spawn_member(dir.path(), id, extra)?);
        }
        for p in &mut nodes {
            p.wait_announced(Duration::from_secs(30)).await?;
        }
        let members = nodes
            .iter()
            .map(|p| hstack_coord::proto::MemberInfo {
                id: p.id,
                raft_addr: p.addr("raft"),
                client_addr: p.addr("client"),
                http_addr: p.addr("http"),
                ..Default::default()
            })
            .collect();
        hstack_coord::bootstrap(&nodes[0].addr("client"), members).await?;
        let me = Self {
            nodes,
            dir,
            allowed_errors: vec![],
        };
        me.wait_leader(Duration::from_secs(20)).await?;
        Ok(me)
    }

    /// Starts member `id` without joining it to the ensemble (for
    /// add-member); returns its (raft, client, http) addresses.
    pub async fn start_unjoined(&mut self, id: u64) -> anyhow::Result<(String, String, String)> {
        let mut p = spawn_member(self.dir.path(), id, &[])?;
        p.wait_announced(Duration::from_secs(30)).await?;
        let addrs = (p.addr("raft"), p.addr("client"), p.addr("http"));
        self.nodes.push(p);
        Ok(addrs)
    }

    /// A test that kills or pauses members expects the others to log that
    /// they cannot reach it.
    pub fn expect_member_failures(&mut self) {
        for pattern in [
            "Unreachable node",
            "did not answer within",
            "timeout after",
            "cannot connect to peer",
        ] {
            self.allowed_errors.push(pattern.to_string());
        }
    }

    pub fn node(&mut self, id: u64) -> &mut Proc {
        self.nodes
            .iter_mut()
            .find(|p| p.id == id)
            .expect("no such member")
    }

    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|p| p.addr("client")).collect()
    }

    /// Each member's ZooKeeper-protocol address.
    pub fn zk_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|p| p.addr("zk")).collect()
    }

    /// A session that may use any member.
    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(ClientOptions::new(self.client_addrs())).await?)
    }

    /// A session on member `id` first (then the others, in order).
    pub async fn client_on(&self, id: u64, timeout: Duration) -> anyhow::Result<Client> {
        let mut members = vec![self
            .nodes
            .iter()
            .find(|p| p.id == id)
            .expect("member")
            .addr("client")];
        members.extend(
            self.nodes
                .iter()
                .filter(|p| p.id != id)
                .map(|p| p.addr("client")),
        );
        let mut o = ClientOptions::new(members);
        o.shuffle = false;
        o.session_timeout = timeout;
        Ok(Client::connect(o).await?)
    }

    /// A session on member `id` only.
    pub async fn client_only(&self, id: u64) -> anyhow::Result<Client> {
        let addr = self
            .nodes
            .iter()
            .find(|p| p.id == id)
            .expect("member")
            .addr("client");
        let mut o = ClientOptions::new(vec![addr]);
        o.shuffle = false;
        Ok(Client::connect(o).await?)
    }

    /// The leader as seen by the running members, once they agree on one.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let addrs: Vec<String> = self.client_addrs();
        wait_for("a leader", timeout, || {
            let addrs = addrs.clone();
            async move {
                let mut seen = Vec::new();
                for a in &addrs {
                    if let Ok(Ok(r)) = tokio::time::timeout(
                        Duration::from_millis(500),
                        hstack_coord::members_of(a),
                    )
                    .await
                    {
                        seen.push(r.leader_id);
                    }
                }
                let first = *seen.first()?;
                (first != 0 && seen.len() > addrs.len() / 2 && seen.iter().all(|l| *l == first))
                    .then_some(first)
            }
        })
        .await
    }

    /// Fails on panics or unexpected ERROR lines in any member's log.
    pub fn check_logs(&self) -> anyhow::Result<()> {
        for p in &self.nodes {
            check_log(&p.log, &self.allowed_errors)?;
        }
        Ok(())
    }
}

fn spawn_member(dir: &Path, id: u64, extra: &[&str]) -> anyhow::Result<Proc> {
    let data_dir = dir.join(format!("coord-{id}"));
    std::fs::create_dir_all(&data_dir)?;
    let mut args: Vec<String> = vec!["--id".into(), id.to_string(), "--data-dir".into()];
    args.push(data_dir.display().to_string());
    for flag in ["--client-addr", "--zk-addr", "--raft-addr", "--http-addr"] {
        args.push(flag.into());
        args.push("127.0.0.1:0".into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = Proc::new(
        "coord",
        id,
        &data_dir,
        &dir.join(format!("coord-{id}.log")),
        args,
    );
    p.spawn()?;
    Ok(p)
}

/// ERROR lines that are not ours to judge: openraft logs every failed
/// replication RPC at ERROR, a peer that answered late on a loaded machine
/// or had already stopped at shutdown alike, and a message that reached a
/// member whose Raft core had already stopped (at shutdown:
/// `core_result=Err(Stopped)`) (docs/operations/coord.md, "Log lines").
/// What the tests hold members to (no acknowledged write lost, every
/// member converging) they check on the data, not here.
const NOT_OURS: &[&str] = &[
    "openraft::replication: RPCError",
    "core_result=Err(Stopped)",
];

/// Fails on a panic or an ERROR line in `log` not matching `allowed`.
pub fn check_log(log: &Path, allowed: &[String]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for line in text.lines() {
        let bad = line.contains("panicked") || line.contains(" ERROR ");
        let not_ours = NOT_OURS.iter().any(|a| line.contains(a));
        if bad && !not_ours && !allowed.iter().any(|a| line.contains(a.as_str())) {
            bail!("unexpected line in {}:\n{line}", log.display());
        }
    }
    Ok(())
}

/// Runs `hstack ARGS…` to completion and returns (status ok, stdout, stderr).
pub fn hstack(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = Command::new(hstack_bin()).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    ))
}

/// What a finished `hstack` command did.
#[derive(Debug)]
pub struct Ran {
    /// The exit status (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `hstack ARGS…` with `env` added to its environment (the rest of
/// its environment is this process's, without any `HSTACK_*` variable).
pub fn hstack_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Ran> {
    let mut cmd = Command::new(hstack_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("HSTACK_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.args(args).envs(env.iter().copied()).output()?;
    Ok(Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    })
}

/// Starts `hstack ARGS…` in the background, its stdin and stdout piped.
/// It is killed when dropped, so a test that fails half way leaves no
/// client process behind.
pub fn hstack_spawn(args: &[&str]) -> anyhow::Result<Spawned> {
    Ok(Spawned(Some(
        Command::new(hstack_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    )))
}

/// A child `hstack` command, killed (and reaped) when dropped.
pub struct Spawned(Option<Child>);

impl Spawned {
    /// Waits for it to end, collecting what it printed.
    pub fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        self.0.take().expect("a child").wait_with_output()
    }
}

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a child")
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// `GET path` on a daemon's HTTP address: (status, body), or `None` if
/// it cannot be reached.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    hstack_daemon::process::http_get(addr, path).await
}

/// Processes whose environment has `key` set to one of `values`.
pub fn procs_with_env(key: &str, values: &[String]) -> Vec<i32> {
    let wanted: Vec<Vec<u8>> = values
        .iter()
        .map(|v| format!("{key}={v}").into_bytes())
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    env.split(|b| *b == 0)
                        .any(|kv| wanted.iter().any(|w| w == kv))
                })
                .unwrap_or(false)
        })
        .collect()
}
