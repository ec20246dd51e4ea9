//! Daemons as child processes: what `hstack local` and the test harness
//! share. A daemon is `hstack ROLE ARGS…` with its output appended to a log
//! file; it binds its own ports (ephemeral ones where the flags say
//! `:0`) and announces them in `addresses.json` in its data directory,
//! which is read back here — so no port is ever picked by binding and
//! releasing it first (another process could take it in between).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One daemon process (alive or not).
pub struct DaemonProcess {
    pub role: String,
    pub id: String,
    /// Where it announces its addresses.
    pub data_dir: PathBuf,
    pub log: PathBuf,
    exe: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// In a process group of its own (a `hstack local` daemon outlives the
    /// command that started it and a Ctrl-C in that terminal).
    detach: bool,
    child: Option<Child>,
    /// From the daemon's announcement (kept across restarts).
    pub addrs: BTreeMap<String, SocketAddr>,
}

impl DaemonProcess {
    /// `exe ROLE args…`, announcing in `data_dir`, logging to `log`.
    pub fn new(
        exe: &Path,
        role: &str,
        id: &str,
        data_dir: &Path,
        log: &Path,
        args: Vec<String>,
    ) -> Self {
        Self {
            role: role.into(),
            id: id.into(),
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            exe: exe.to_path_buf(),
            args,
            env: vec![],
            detach: false,
            child: None,
            addrs: BTreeMap::new(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn detached(mut self) -> Self {
        self.detach = true;
        self
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Starts the process (a stale announcement is removed first).
    pub fn spawn(&mut self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        match std::fs::remove_file(self.data_dir.join(crate::ANNOUNCE_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg(&self.role)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if self.detach {
            cmd.process_group(0);
        }
        self.child = Some(cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", self.exe.display()),
            )
        })?);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How the process ended; `None` while it runs (or was never started).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the announcement; an error with the log's tail if the
    /// process exits first or `timeout` passes.
    pub async fn wait_announced(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = crate::read_announcement(&self.data_dir) {
                if Some(a.pid) == self.pid() {
                    self.addrs = a.addrs;
                    return Ok(());
                }
            }
            if !self.is_running() {
                return Err(format!(
                    "{} {} exited during start-up; last lines of {}:\n{}",
                    self.role,
                    self.id,
                    self.log.display(),
                    tail(&self.log, 30)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} {} did not announce its addresses within {timeout:?}; see {}",
                    self.role,
                    self.id,
                    self.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The announced address `name` (`rpc`, `http`, …), or "".
    pub fn addr(&self, name: &str) -> String {
        self.addrs
            .get(name)
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    pub fn signal(&self, sig: Signal) {
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

    /// SIGTERM, then wait for the exit (SIGKILL after `grace`); the exit
    /// status if it exited by itself.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.exit_status() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }

    /// Makes the next start bind exactly the addresses announced now:
    /// every announced address `KEY` was bound through `--KEY-addr`.
    pub fn pin_addresses(&mut self) {
        for (key, a) in &self.addrs {
            let flag = format!("--{key}-addr");
            if let Some(i) = self.args.iter().position(|x| *x == flag) {
                self.args[i + 1] = a.to_string();
            }
        }
    }

    /// Starts the daemon again on the same data directory and addresses.
    pub async fn restart(&mut self, timeout: Duration) -> Result<(), String> {
        if self.is_running() {
            return Err(format!("{} {} is still running", self.role, self.id));
        }
        self.pin_addresses();
        self.spawn().map_err(|e| e.to_string())?;
        self.wait_announced(timeout).await
    }
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    pid != 0 && kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `GET path` on a daemon's HTTP address: (status, body), or `None` if it
/// cannot be reached within a second.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    let get = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, addr)
            .body(Empty::<bytes::Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(1), get)
        .await
        .ok()
        .flatten()
}

/// Whether the daemon at `http` answers `/readyz` with 200.
pub async fn is_ready(http: &str) -> bool {
    matches!(http_get(http, "/readyz").await, Some((200, _)))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn an_unreachable_daemon_is_not_ready() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        assert!(!super::is_ready(&addr).await);
        assert_eq!(super::http_get(&addr, "/").await, None);
    }
}
