//! The process harness: real `hstack` processes in temporary directories on
//! ephemeral ports, started, waited on, killed (SIGKILL), paused
//! (SIGSTOP/SIGCONT) and restarted on the same data directory and ports, with
//! a scan of every node's log for panics and unexpected ERROR lines at the end.
//!
//! The binary is `$HSTACK_BIN`, or `hstack` in the target directory the test
//! executable runs from (`cargo build` it first; `scripts/test.sh` does).

use std::fs::OpenOptions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hstack_coord::{Client, ClientOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use hstack_coord;
pub use hstack_dfs;
pub use hstack_proto::dfs as hstack_proto_dfs;

pub mod dfs;
pub use dfs::DfsCluster;

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

/// One daemon process.
pub struct Proc {
    pub role: String,
    pub id: u64,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Addresses from the daemon's announcement (kept across restarts).
    pub addrs: std::collections::BTreeMap<String, std::net::SocketAddr>,
}

impl Proc {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.data_dir.join("addresses.json"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(hstack_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env(
                "RUST_LOG",
                std::env::var("HSTACK_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()
            .context("cannot start hstack")?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How the process ended; `None` while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    async fn wait_announced(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let dir = self.data_dir.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = hstack_daemon_announcement(&dir) {
                self.addrs = a;
                return Ok(());
            }
            if !self.is_running() {
                bail!(
                    "{} {} exited during start-up; log:\n{}",
                    self.role,
                    self.id,
                    tail(&self.log, 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} {} did not announce its addresses within {timeout:?}",
                    self.role,
                    self.id
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn addr(&self, key: &str) -> String {
        self.addrs
            .get(key)
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGTERM, then wait for a clean exit (SIGKILL after `grace`).
    pub fn terminate(&mut self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    /// Starts the daemon again on the same data directory and addresses.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("{} {} is still running", self.role, self.id);
        }
        // Every announced address `KEY` was bound through `--KEY-addr`.
        for (key, a) in &self.addrs {
            let flag = format!("--{key}-addr");
            if let Some(i) = self.args.iter().position(|x| *x == flag) {
                self.args[i + 1] = a.to_string();
            }
        }
        self.spawn()?;
        self.wait_announced(Duration::from_secs(30)).await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
    }
}

fn hstack_daemon_announcement(
    dir: &Path,
) -> Option<std::collections::BTreeMap<String, std::net::SocketAddr>> {
    let s = std::fs::read_to_string(dir.join("addresses.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&s).ok()?;
    serde_json::from_value(v.get("addrs")?.clone()).ok()
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
    let mut args: Vec<String> = vec![
        "coord".into(),
        "--id".into(),
        id.to_string(),
        "--data-dir".into(),
    ];
    args.push(data_dir.display().to_string());
    for flag in ["--client-addr", "--raft-addr", "--http-addr"] {
        args.push(flag.into());
        args.push("127.0.0.1:0".into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = Proc {
        role: "coord".into(),
        id,
        log: dir.join(format!("coord-{id}.log")),
        data_dir,
        args,
        child: None,
        addrs: Default::default(),
    };
    p.spawn()?;
    Ok(p)
}

/// Fails on a panic or an ERROR line in `log` not matching `allowed`.
pub fn check_log(log: &Path, allowed: &[String]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for line in text.lines() {
        let bad = line.contains("panicked") || line.contains(" ERROR ");
        if bad && !allowed.iter().any(|a| line.contains(a.as_str())) {
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

/// Starts `hstack ARGS…` in the background, its stdin and stdout piped.
pub fn hstack_spawn(args: &[&str]) -> anyhow::Result<Child> {
    Ok(Command::new(hstack_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// The raw response (status line, headers, body) of `GET path` on a
/// daemon's HTTP address; `None` if it cannot be reached.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    Some(buf)
}
