//! The containers of one node manager: started from a valid token, run as
//! `/bin/sh launch_container.sh` in their own working directory and
//! process group (and cgroups), stdout and stderr to their log directory;
//! watched for their exit and their memory; stopped with SIGTERM, then
//! SIGKILL after `kill_grace_ms`, to the whole group (and every process in
//! their cgroups). A record per running container under
//! `data_dir/containers` lets a node manager that was killed find and kill
//! what it left running when it starts again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use hstack_proto::scheduler as pb;
use hstack_proto::{Code, Error};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::aux::AuxService;
use super::config::NmConfig;
use super::limits::{ContainerGroups, Limits};
use super::metrics::NmMetrics;
use super::procs;
use crate::exit;
use crate::records::{AppId, ContainerId, Resource};
use crate::{token, wire};

enum RunState {
    Running,
    Done {
        exit_status: i32,
        diagnostics: String,
    },
}

struct Run {
    app: AppId,
    resource: Resource,
    pgid: Option<i32>,
    groups: ContainerGroups,
    log_dir: PathBuf,
    state: RunState,
    /// Why it is being stopped, and the status to report.
    kill: Option<(i32, String)>,
    /// Found over its memory limit.
    oom: Option<String>,
    started: Instant,
}

/// What is written for each running container, to find it after a
/// restart.
#[derive(Serialize, Deserialize)]
struct Record {
    container: String,
    pgid: i32,
    cgroup_dirs: Vec<PathBuf>,
}

#[derive(Default)]
struct Inner {
    runs: BTreeMap<ContainerId, Run>,
    /// Applications the resource manager said are over.
    finished: HashSet<AppId>,
    /// Applications with working directories here.
    apps: HashSet<AppId>,
    /// Finished applications' logs, and when they may go.
    logs_until: HashMap<AppId, Instant>,
    used: Resource,
    stopping: bool,
}

pub(crate) struct Containers {
    pub cfg: NmConfig,
    pub node_id: String,
    pub limits: Limits,
    pub metrics: NmMetrics,
    pub aux: Vec<Arc<dyn AuxService>>,
    /// The HTTP port as bound (0 until it is), told to containers.
    pub http_port: std::sync::atomic::AtomicU16,
    token_key: RwLock<Vec<u8>>,
    records: PathBuf,
    inner: Mutex<Inner>,
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn safe_name(what: &str, s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            Code::InvalidArgument,
            format!("{what} {s:?} is not a safe name (letters, digits, '-', '_', '.')"),
        ))
    }
}

/// What the container sees of the node manager's own environment.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "HOME",
    "TMPDIR",
    "RUST_BACKTRACE",
];

impl Containers {
    pub fn new(
        cfg: NmConfig,
        node_id: String,
        limits: Limits,
        metrics: NmMetrics,
        aux: Vec<Arc<dyn AuxService>>,
    ) -> Containers {
        let records = cfg.data_path().join("containers");
        Containers {
            cfg,
            node_id,
            limits,
            metrics,
            aux,
            http_port: std::sync::atomic::AtomicU16::new(0),
            token_key: RwLock::new(Vec::new()),
            records,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_token_key(&self, key: Vec<u8>) {
        *self.token_key.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    /// Kills what an earlier run of this node manager left running (its
    /// records say which process groups), and removes stale working
    /// directories. Logs stay.
    pub fn recover_orphans(&self) -> std::io::Result<usize> {
        std::fs::create_dir_all(&self.records)?;
        let mut killed = 0;
        for e in std::fs::read_dir(&self.records)?.flatten() {
            let p = e.path();
            if let Some(r) = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            {
                let pids = procs::members(r.pgid, &r.container);
                let mut in_groups = Vec::new();
                for d in &r.cgroup_dirs {
                    if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                        in_groups.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                    }
                }
                if !pids.is_empty() || !in_groups.is_empty() {
                    tracing::warn!(container = %r.container, processes = pids.len() + in_groups.len(), "killing a container an earlier run left running");
                    killed += 1;
                }
                procs::kill_all(&pids);
                procs::kill_all(&in_groups);
                for d in &r.cgroup_dirs {
                    for _ in 0..20 {
                        if std::fs::remove_dir(d).is_ok() || !d.exists() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(25));
                    }
                }
            }
            let _ = std::fs::remove_file(&p);
        }
        for local in self.cfg.local_paths() {
            let cache = local.join("usercache");
            if let Ok(users) = std::fs::read_dir(&cache) {
                for u in users.flatten() {
                    let _ = std::fs::remove_dir_all(u.path().join("appcache"));
                }
            }
        }
        Ok(killed)
    }

    /// Starts one container. Refused (and nothing left behind) without a
    /// valid token, for a container already known, or for an application
    /// that is over.
    pub fn start(self: &Arc<Self>, req: pb::StartContainerRequest) -> Result<(), Error> {
        let tok = req.token.ok_or_else(|| {
            Error::new(
                Code::InvalidContainerToken,
                "the request carries no container token",
            )
        })?;
        {
            let key = self.token_key.read().unwrap_or_else(|p| p.into_inner());
            token::verify(&key, &tok, &self.node_id, wall_ms())?;
        }
        let id = wire::container_id(&tok.container_id)?;
        let app = id.app();
        let resource = wire::resource(tok.resource.as_ref(), "the container's resource")?;
        safe_name("user", &tok.user)?;
        let launch = req.launch.unwrap_or_default();
        if launch.command.trim().is_empty() {
            return Err(Error::new(
                Code::InvalidArgument,
                format!("{id}: the command is empty"),
            ));
        }
        {
            let st = self.lock();
            if st.stopping {
                return Err(Error::new(
                    Code::ShuttingDown,
                    "this node manager is stopping",
                ));
            }
            if st.runs.contains_key(&id) {
                return Err(Error::new(
                    Code::AlreadyExists,
                    format!("{id} was already started here"),
                ));
            }
            if st.finished.contains(&app) {
                return Err(Error::new(
                    Code::ApplicationFinished,
                    format!("{app} is over: nothing of it starts"),
                ));
            }
        }
        let locals = self.cfg.local_paths();
        let local = &locals[(id.seq as usize) % locals.len()];
        let work = local
            .join("usercache")
            .join(&tok.user)
            .join("appcache")
            .join(app.to_string())
            .join(id.to_string());
        let log_dir = self
            .cfg
            .log_path()
            .join(app.to_string())
            .join(id.to_string());
        let io = |what: &str, p: &Path, e: std::io::Error| {
            Error::new(Code::Io, format!("{id}: {what} {}: {e}", p.display()))
        };
        std::fs::create_dir_all(&work).map_err(|e| io("cannot make", &work, e))?;
        // Absolute: the script is named from inside the working directory.
        let work = std::fs::canonicalize(&work).map_err(|e| io("cannot resolve", &work, e))?;
        std::fs::create_dir_all(&log_dir).map_err(|e| io("cannot make", &log_dir, e))?;
        let groups = self
            .limits
            .create(&id.to_string(), resource.memory_mb, resource.vcores)
            .map_err(|e| Error::new(Code::Io, format!("{id}: cannot make its cgroups: {e}")))?;
        let script = work.join("launch_container.sh");
        let text = format!(
            "#!/bin/sh\n# written by the hstack node manager {} for {id}\n{}{}\n",
            self.node_id,
            groups.join_lines(),
            launch.command
        );
        if let Err(e) = std::fs::write(&script, text) {
            groups.remove();
            return Err(io("cannot write", &script, e));
        }
        let open = |name: &str| std::fs::File::create(log_dir.join(name));
        let (out, err) = match (open("stdout"), open("stderr")) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                groups.remove();
                return Err(io("cannot open the logs in", &log_dir, e));
            }
        };
        let mut env: HashMap<String, String> = PASSED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        let (host, port) = self.node_id.rsplit_once(':').unwrap_or((&self.node_id, ""));
        let http_port = self
            .http_port
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_string();
        // The application's environment first: the node manager's own
        // variables win (a container cannot pose as another).
        env.extend(launch.env);
        for (k, v) in [
            ("CONTAINER_ID", id.to_string()),
            ("NM_HOST", host.to_string()),
            ("NM_PORT", port.to_string()),
            ("NM_HTTP_PORT", http_port),
            ("LOCAL_DIRS", work.display().to_string()),
            ("LOG_DIRS", log_dir.display().to_string()),
            ("USER", tok.user.clone()),
            ("LOGNAME", tok.user.clone()),
            ("PWD", work.display().to_string()),
            ("HSTACK_NM_ADDRESS", self.node_id.clone()),
            ("HSTACK_CONTAINER_MEMORY_MB", resource.memory_mb.to_string()),
            ("HSTACK_CONTAINER_VCORES", resource.vcores.to_string()),
        ] {
            env.insert(k.into(), v);
        }
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg(&script)
            .current_dir(&work)
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                groups.remove();
                self.metrics.launch_failures.inc();
                return Err(Error::new(
                    Code::Io,
                    format!("{id}: cannot start /bin/sh: {e}"),
                ));
            }
        };
        let pgid = child.id().map(|p| p as i32);
        if let Some(g) = pgid {
            let rec = Record {
                container: id.to_string(),
                pgid: g,
                cgroup_dirs: groups_dirs(&groups),
            };
            let p = self.records.join(id.to_string());
            if let Err(e) = std::fs::write(&p, serde_json::to_vec(&rec).unwrap_or_default()) {
                tracing::warn!(container = %id, "could not record it (a restart would not find it): {e}");
            }
        }
        let first_of_app = {
            let mut st = self.lock();
            st.used += resource;
            let first = st.apps.insert(app);
            st.runs.insert(
                id,
                Run {
                    app,
                    resource,
                    pgid,
                    groups,
                    log_dir,
                    state: RunState::Running,
                    kill: None,
                    oom: None,
                    started: Instant::now(),
                },
            );
            first
        };
        if first_of_app {
            for a in &self.aux {
                a.app_started(&app.to_string(), &tok.user);
            }
        }
        self.metrics.launched.inc();
        self.update_gauges();
        tracing::info!(container = %id, memory_mb = resource.memory_mb, vcores = resource.vcores, limits = self.limits.name(), "container started");
        let me = self.clone();
        tokio::spawn(
            async move {
                let status = child.wait().await;
                me.settle_oom_count(id, &status).await;
                me.exited(id, status);
            }
            .in_current_span(),
        );
        Ok(())
    }

    /// The kernel signals an OOM victim before it counts the kill in the
    /// cgroup, so a container SIGKILLed by nobody here may be reaped before
    /// its `oom_kill` count moves: give the count a moment (200 ms at most,
    /// only for such a container) so it is reported as killed for memory.
    async fn settle_oom_count(
        &self,
        id: ContainerId,
        status: &std::io::Result<std::process::ExitStatus>,
    ) {
        use std::os::unix::process::ExitStatusExt;
        let sigkill = matches!(status, Ok(s) if s.signal() == Some(Signal::SIGKILL as i32));
        if !sigkill {
            return;
        }
        let groups = {
            let st = self.lock();
            match st.runs.get(&id) {
                Some(r) if r.kill.is_none() && r.oom.is_none() && r.groups.is_used() => {
                    r.groups.clone()
                }
                _ => return,
            }
        };
        for _ in 0..20 {
            if groups.oom_kills() > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A container's process ended: what it ended as, and the cleanup.
    fn exited(&self, id: ContainerId, status: std::io::Result<std::process::ExitStatus>) {
        use std::os::unix::process::ExitStatusExt;
        let (code, signal) = match &status {
            Ok(s) => (s.code(), s.signal()),
            Err(_) => (None, None),
        };
        let mut st = self.lock();
        let Some(run) = st.runs.get_mut(&id) else {
            return;
        };
        // The rest of its process group and cgroups go with it.
        if let Some(g) = run.pgid {
            procs::signal_group(g, Signal::SIGKILL);
        }
        procs::kill_all(&run.groups.pids());
        let oom = run.oom.clone().or_else(|| {
            (run.groups.oom_kills() > 0).then(|| {
                format!(
                    "killed: it used more than its memory limit of {} MiB ({})",
                    run.resource.memory_mb,
                    self.limits.name()
                )
            })
        });
        let tail = stderr_tail(&run.log_dir.join("stderr"));
        let (exit_status, diagnostics) = if let Some((s, why)) = run.kill.clone() {
            (s, why)
        } else if let Some(why) = oom {
            (exit::KILLED_EXCEEDED_MEMORY, why)
        } else {
            match (code, signal) {
                (Some(0), _) => (0, String::new()),
                (Some(c), _) => {
                    let hint = match c {
                        127 => " (command not found)",
                        126 => " (command not executable)",
                        254 => " (it could not join its cgroups)",
                        _ => "",
                    };
                    let mut d = format!("exited with code {c}{hint}");
                    if !tail.is_empty() {
                        d += &format!("; stderr ends: {tail}");
                    }
                    (c, d)
                }
                (None, Some(sig)) => (128 + sig, format!("killed by signal {sig}")),
                (None, None) => (
                    exit::INVALID,
                    format!("its exit could not be read: {:?}", status.err()),
                ),
            }
        };
        let outcome = match exit_status {
            0 => "succeeded",
            exit::KILLED_EXCEEDED_MEMORY => "killed_memory",
            s if s < 0 && s != exit::INVALID => "killed",
            _ => "failed",
        };
        self.metrics.completed.with_label_values(&[outcome]).inc();
        tracing::info!(container = %id, exit_status, %diagnostics, ran_ms = run.started.elapsed().as_millis() as u64, "container ended");
        run.state = RunState::Done {
            exit_status,
            diagnostics,
        };
        let groups = run.groups.clone();
        let resource = run.resource;
        st.used -= resource;
        drop(st);
        groups.remove();
        let _ = std::fs::remove_file(self.records.join(id.to_string()));
        self.update_gauges();
    }

    /// Stops a running container: SIGTERM to its group, SIGKILL to
    /// everything of it after the grace time. Reported with `status`.
    pub fn kill(self: &Arc<Self>, id: ContainerId, status: i32, why: String) {
        let (pgid, groups) = {
            let mut st = self.lock();
            let Some(run) = st.runs.get_mut(&id) else {
                return;
            };
            if !matches!(run.state, RunState::Running) || run.kill.is_some() {
                return;
            }
            run.kill = Some((status, why.clone()));
            (run.pgid, run.groups.clone())
        };
        tracing::info!(container = %id, exit_status = status, %why, "stopping a container");
        if let Some(g) = pgid {
            procs::signal_group(g, Signal::SIGTERM);
        }
        let grace = Duration::from_millis(self.cfg.kill_grace_ms);
        let me = self.clone();
        tokio::spawn(
            async move {
                tokio::time::sleep(grace).await;
                let running = me
                    .lock()
                    .runs
                    .get(&id)
                    .is_some_and(|r| matches!(r.state, RunState::Running));
                if running {
                    if let Some(g) = pgid {
                        procs::signal_group(g, Signal::SIGKILL);
                    }
                    procs::kill_all(&groups.pids());
                }
            }
            .in_current_span(),
        );
    }

    /// One pass of the memory monitor.
    pub fn check_memory(self: &Arc<Self>) {
        let over: Vec<(ContainerId, String)> = {
            let mut st = self.lock();
            let polls = self.limits.polls();
            let mut over = Vec::new();
            for (id, run) in st.runs.iter_mut() {
                if !matches!(run.state, RunState::Running) || run.kill.is_some() {
                    continue;
                }
                let limit = run.resource.memory_mb << 20;
                let why = if polls {
                    let Some(g) = run.pgid else { continue };
                    let rss = procs::rss_bytes(&procs::members(g, &id.to_string()));
                    (rss > limit).then(|| {
                        format!(
                            "killed: it used {} MiB, more than its memory limit of {} MiB (poll)",
                            rss >> 20,
                            run.resource.memory_mb
                        )
                    })
                } else {
                    (run.groups.is_used() && run.groups.oom_kills() > 0).then(|| {
                        format!(
                            "killed: it used more than its memory limit of {} MiB ({})",
                            run.resource.memory_mb,
                            self.limits.name()
                        )
                    })
                };
                if let Some(w) = why {
                    run.oom = Some(w.clone());
                    over.push((*id, w));
                }
            }
            over
        };
        for (id, why) in over {
            self.kill(id, exit::KILLED_EXCEEDED_MEMORY, why);
        }
    }

    /// Every container: running, or ended and not yet acknowledged.
    pub fn statuses(&self) -> Vec<pb::ContainerStatus> {
        self.lock()
            .runs
            .iter()
            .map(|(id, r)| match &r.state {
                RunState::Running => pb::ContainerStatus {
                    container_id: id.to_string(),
                    state: pb::ContainerState::ContainerRunning as i32,
                    exit_status: exit::INVALID,
                    diagnostics: String::new(),
                },
                RunState::Done {
                    exit_status,
                    diagnostics,
                } => pb::ContainerStatus {
                    container_id: id.to_string(),
                    state: pb::ContainerState::Complete as i32,
                    exit_status: *exit_status,
                    diagnostics: diagnostics.clone(),
                },
            })
            .collect()
    }

    pub fn status_of(&self, id: &ContainerId) -> Option<pb::ContainerStatus> {
        let s = id.to_string();
        self.statuses().into_iter().find(|c| c.container_id == s)
    }

    /// The resource manager recorded these ends: forget them.
    pub fn acknowledge(&self, ids: &[String]) {
        let mut st = self.lock();
        for s in ids {
            if let Ok(id) = wire::container_id(s) {
                if st
                    .runs
                    .get(&id)
                    .is_some_and(|r| matches!(r.state, RunState::Done { .. }))
                {
                    st.runs.remove(&id);
                }
            }
        }
    }

    /// The applications this node holds anything of.
    pub fn apps(&self) -> Vec<String> {
        self.lock().apps.iter().map(|a| a.to_string()).collect()
    }

    /// Applications that are over: their containers stop, and once none
    /// runs their working directories go (their logs stay for
    /// `log_retain_ms`).
    pub fn finish_apps(self: &Arc<Self>, apps: &[String]) {
        for s in apps {
            let Ok(app) = wire::app_id(s) else { continue };
            let running: Vec<ContainerId> = {
                let mut st = self.lock();
                st.finished.insert(app);
                st.runs
                    .iter()
                    .filter(|(id, r)| id.app() == app && matches!(r.state, RunState::Running))
                    .map(|(id, _)| *id)
                    .collect()
            };
            for c in &running {
                self.kill(
                    *c,
                    exit::KILLED_AFTER_APP_COMPLETION,
                    "killed: its application is over".into(),
                );
            }
            if running.is_empty() {
                self.clean_app(app);
            }
        }
    }

    fn clean_app(self: &Arc<Self>, app: AppId) {
        let removed = self.lock().apps.remove(&app);
        if !removed {
            return;
        }
        for a in &self.aux {
            a.app_finished(&app.to_string());
        }
        let until = Instant::now() + Duration::from_millis(self.cfg.log_retain_ms);
        self.lock().logs_until.insert(app, until);
        for local in self.cfg.local_paths() {
            let cache = local.join("usercache");
            if let Ok(users) = std::fs::read_dir(&cache) {
                for u in users.flatten() {
                    let d = u.path().join("appcache").join(app.to_string());
                    if d.exists() {
                        if let Err(e) = std::fs::remove_dir_all(&d) {
                            tracing::warn!(%app, dir = %d.display(), "could not remove: {e}");
                        }
                    }
                }
            }
        }
        tracing::info!(%app, "application cleaned up");
    }

    /// Housekeeping: applications over whose last container ended are
    /// cleaned; logs past their retention go.
    pub fn sweep(self: &Arc<Self>) {
        let ready: Vec<AppId> = {
            let st = self.lock();
            st.finished
                .iter()
                .filter(|a| st.apps.contains(a))
                .filter(|a| {
                    !st.runs
                        .iter()
                        .any(|(id, r)| id.app() == **a && matches!(r.state, RunState::Running))
                })
                .copied()
                .collect()
        };
        for a in ready {
            self.clean_app(a);
        }
        let expired: Vec<AppId> = {
            let mut st = self.lock();
            let now = Instant::now();
            let gone: Vec<AppId> = st
                .logs_until
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(a, _)| *a)
                .collect();
            for a in &gone {
                st.logs_until.remove(a);
            }
            gone
        };
        for a in expired {
            let _ = std::fs::remove_dir_all(self.cfg.log_path().join(a.to_string()));
        }
    }

    /// At shutdown: every container stops (none is left orphaned), within
    /// the grace time and a little more.
    pub async fn stop_all(self: &Arc<Self>) {
        let running: Vec<ContainerId> = {
            let mut st = self.lock();
            st.stopping = true;
            st.runs
                .iter()
                .filter(|(_, r)| matches!(r.state, RunState::Running))
                .map(|(id, _)| *id)
                .collect()
        };
        for c in &running {
            self.kill(
                *c,
                exit::KILLED_BY_RESOURCEMANAGER,
                "killed: its node manager stopped".into(),
            );
        }
        let deadline = Instant::now() + Duration::from_millis(self.cfg.kill_grace_ms + 2000);
        while Instant::now() < deadline {
            let left = self
                .lock()
                .runs
                .values()
                .filter(|r| matches!(r.state, RunState::Running))
                .count();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.limits.teardown();
    }

    pub fn used(&self) -> Resource {
        self.lock().used
    }

    pub fn running(&self) -> usize {
        self.lock()
            .runs
            .values()
            .filter(|r| matches!(r.state, RunState::Running))
            .count()
    }

    /// The log file `name` of a container, if it exists here.
    pub fn log_file(&self, container: &str, name: &str) -> Result<PathBuf, Error> {
        let id = wire::container_id(container)?;
        safe_name("log file", name)?;
        let p = self
            .cfg
            .log_path()
            .join(id.app().to_string())
            .join(id.to_string())
            .join(name);
        if !p.is_file() {
            return Err(Error::new(
                Code::ContainerNotFound,
                format!("no log {name} of {id} on this node"),
            ));
        }
        Ok(p)
    }

    /// Rows for the status page's container table.
    pub fn table(&self) -> Vec<Vec<String>> {
        self.lock()
            .runs
            .iter()
            .map(|(id, r)| {
                let state = match &r.state {
                    RunState::Running => "RUNNING".to_string(),
                    RunState::Done { exit_status, .. } => {
                        format!("DONE ({})", exit::name(*exit_status))
                    }
                };
                vec![
                    id.to_string(),
                    r.app.to_string(),
                    state,
                    format!("{} MiB, {} vcores", r.resource.memory_mb, r.resource.vcores),
                    format!("{} s", r.started.elapsed().as_secs()),
                ]
            })
            .collect()
    }

    fn update_gauges(&self) {
        let (used, running) = {
            let st = self.lock();
            (
                st.used,
                st.runs
                    .values()
                    .filter(|r| matches!(r.state, RunState::Running))
                    .count(),
            )
        };
        self.metrics.running.set(running as i64);
        self.metrics.memory_allocated_mb.set(used.memory_mb as i64);
        self.metrics.vcores_allocated.set(i64::from(used.vcores));
    }
}

fn groups_dirs(g: &ContainerGroups) -> Vec<PathBuf> {
    g.dirs()
}

/// The last few hundred bytes of a container's stderr, on one line.
fn stderr_tail(p: &Path) -> String {
    let Ok(bytes) = std::fs::read(p) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(512);
    let s = String::from_utf8_lossy(&bytes[start..]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
