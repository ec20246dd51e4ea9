//! The resource manager's state and every change to it, under one lock:
//! applications and their attempts, node managers and their liveness, the
//! containers placed, and the scheduler. The gRPC services only decode,
//! call one of these and encode; what must happen outside the lock (an
//! application master's container to start on its node) comes back as an
//! effect for the caller to carry out.
//!
//! Containers are killed statelessly: while a node manager reports a
//! container running that the resource manager does not count as live,
//! every heartbeat's reply says to kill it, with the reason recorded when
//! it was let go (released, preempted, its attempt replaced, its
//! application finished). A lost reply loses nothing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use hstack_proto::scheduler as pb;
use hstack_proto::{Code, Error};

use super::config::RmConfig;
use super::metrics::RmMetrics;
use super::store::{Outcome, StateStore, StoredApp};
use crate::exit;
use crate::records::{AppId, AttemptId, ContainerId, Locality, Resource};
use crate::sched::{Container, Scheduler};
use crate::token;
use crate::wire;

/// An application master's container to start (outside the lock).
#[derive(Clone, Debug)]
pub(crate) struct AmLaunch {
    pub node_id: String,
    pub request: pb::StartContainerRequest,
}

struct Attempt {
    id: AttemptId,
    token: String,
    am_container: Option<ContainerId>,
    am_node: String,
    registered: bool,
    /// Monotonic ms of its last sign of life (its container starting, a
    /// register or allocate call).
    last_seen: u64,
    response_id: u64,
    last_reply: Option<pb::AllocateReply>,
    new_containers: Vec<pb::Container>,
    completed: Vec<pb::ContainerStatus>,
    preempting: Vec<String>,
}

struct AppRec {
    stored: StoredApp,
    state: pb::AppState,
    final_status: pb::FinalStatus,
    diagnostics: String,
    start_ms: u64,
    finish_ms: u64,
    progress: f32,
    tracking_url: String,
    attempt: Attempt,
    /// Attempt failures that count against `max_attempts`.
    failures: u32,
    /// Ended containers, newest last (bounded).
    history: VecDeque<pb::ContainerReport>,
}

impl AppRec {
    fn is_over(&self) -> bool {
        matches!(
            self.state,
            pb::AppState::Finished | pb::AppState::Failed | pb::AppState::Killed
        )
    }
}

struct NodeRec {
    id: String,
    host: String,
    http: String,
    rack: String,
    capability: Resource,
    lost: bool,
    last_heartbeat: u64,
    healthy: bool,
    health_report: String,
}

/// A container placed and not yet ended.
struct Live {
    node_id: String,
    node_http: String,
    resource: Resource,
    running: bool,
    allocated_at: u64,
    allocated_wall: u64,
    locality: Locality,
    opportunities: u32,
    is_am: bool,
}

pub(crate) struct State {
    pub sched: Scheduler,
    next_seq: u32,
    apps: BTreeMap<AppId, AppRec>,
    nodes: BTreeMap<String, NodeRec>,
    live: HashMap<ContainerId, Live>,
    /// Containers let go while perhaps still running: the exit status and
    /// diagnostics to report them with, until their node says they ended.
    dying: HashMap<ContainerId, (i32, String)>,
    finished_order: VecDeque<AppId>,
    apps_submitted: u32,
    /// Masters that unregistered and are exiting by themselves: not
    /// killed before the deadline (monotonic ms); their end is recorded
    /// when their node reports it.
    exiting: HashMap<ContainerId, (u64, pb::ContainerReport)>,
}

/// How long a master that finished may take to exit before it is killed.
const AM_EXIT_GRACE_MS: u64 = 10_000;

/// The start of a placed container's diagnostics when it never ran.
const NOT_STARTED: &str = "not started within";

/// What does not change while the resource manager runs.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a RmConfig,
    pub cluster_ts: u64,
    pub token_key: &'a [u8],
    pub rm_address: &'a str,
    pub store: &'a dyn StateStore,
    pub metrics: &'a RmMetrics,
    /// Monotonic ms.
    pub now: u64,
    /// Wall clock ms since the epoch.
    pub wall: u64,
}

fn invalid(m: impl Into<String>) -> Error {
    Error::new(Code::InvalidArgument, m)
}

fn store_failed(e: impl std::fmt::Display) -> Error {
    Error::new(Code::Io, format!("the state store failed: {e}"))
}

fn new_token() -> String {
    token::new_key()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn locality_name(l: Locality) -> &'static str {
    l.name()
}

impl State {
    pub fn new(sched: Scheduler) -> State {
        State {
            sched,
            next_seq: 1,
            apps: BTreeMap::new(),
            nodes: BTreeMap::new(),
            live: HashMap::new(),
            dying: HashMap::new(),
            finished_order: VecDeque::new(),
            apps_submitted: 0,
            exiting: HashMap::new(),
        }
    }

    // ---- applications ----

    pub fn new_application(&mut self, cx: &Ctx) -> pb::NewApplicationReply {
        let id = AppId {
            cluster_ts: cx.cluster_ts,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        pb::NewApplicationReply {
            app_id: id.to_string(),
            max_allocation: Some(wire::resource_pb(self.sched.core().cfg.max_allocation)),
        }
    }

    /// Stores and schedules a submission. A repeated submission of the
    /// same application (a retried call) is accepted once.
    pub fn submit(&mut self, cx: &Ctx, r: pb::SubmitRequest) -> Result<(), Error> {
        let id = if r.app_id.is_empty() {
            let id = AppId {
                cluster_ts: cx.cluster_ts,
                seq: self.next_seq,
            };
            self.next_seq += 1;
            id
        } else {
            wire::app_id(&r.app_id)?
        };
        let launch = r.am_launch.clone().unwrap_or_default();
        if let Some(a) = self.apps.get(&id) {
            let s = &a.stored;
            if s.name == r.name && s.user == r.user && s.am_command == launch.command {
                return Ok(());
            }
            return Err(Error::new(
                Code::AlreadyExists,
                format!("{id} was already submitted, with another definition"),
            ));
        }
        if id.cluster_ts != cx.cluster_ts || id.seq >= self.next_seq {
            return Err(invalid(format!(
                "{id} was not given out by this resource manager (ask GetNewApplication for an id)"
            )));
        }
        if launch.command.trim().is_empty() {
            return Err(invalid(
                "the application master's command is empty: nothing to run",
            ));
        }
        let user = if r.user.is_empty() {
            "hstack".to_string()
        } else {
            r.user.clone()
        };
        let am = wire::resource(r.am_resource.as_ref(), "the application master's resource")?;
        let am_resource = self.sched.normalize(&crate::records::Ask {
            id: 0,
            priority: 0,
            resource: am,
            count: 1,
            nodes: vec![],
            racks: vec![],
            relax_locality: true,
        })?;
        let queue_name = if r.queue.is_empty() {
            "default"
        } else {
            &r.queue
        };
        let queue = self.sched.resolve_queue(queue_name)?;
        let max_attempts = match r.max_attempts {
            0 => cx.cfg.max_attempts,
            n => n.min(cx.cfg.max_attempts),
        };
        let stored = StoredApp {
            id,
            name: if r.name.is_empty() {
                "N/A".into()
            } else {
                r.name.clone()
            },
            queue,
            user,
            app_type: if r.app_type.is_empty() {
                "HSTACK".into()
            } else {
                r.app_type.clone()
            },
            priority: r.priority,
            am_resource,
            am_command: launch.command.clone(),
            am_env: launch.env.into_iter().collect(),
            max_attempts,
            submit_ms: cx.wall,
            attempts: 1,
            failures: 0,
            outcome: None,
        };
        cx.store.put(&stored).map_err(store_failed)?;
        self.start(cx, stored, 1)?;
        self.apps_submitted += 1;
        cx.metrics.apps_submitted.inc();
        tracing::info!(app = %id, queue = %self.apps[&id].stored.queue, user = %self.apps[&id].stored.user, "application accepted");
        Ok(())
    }

    /// Files an application with the scheduler at attempt `n`, asking for
    /// its master's container.
    fn start(&mut self, cx: &Ctx, stored: StoredApp, n: u32) -> Result<(), Error> {
        let id = stored.id;
        let attempt = AttemptId {
            app: id,
            attempt: n,
        };
        self.sched
            .add_app(attempt, &stored.queue, &stored.user, stored.priority)?;
        self.sched.ask_for_am(id, stored.am_resource)?;
        let failures = stored.failures;
        self.apps.insert(
            id,
            AppRec {
                stored,
                state: pb::AppState::Accepted,
                final_status: pb::FinalStatus::Unspecified,
                diagnostics: String::new(),
                start_ms: 0,
                finish_ms: 0,
                progress: 0.0,
                tracking_url: String::new(),
                attempt: new_attempt(attempt, cx.now),
                failures,
                history: VecDeque::new(),
            },
        );
        Ok(())
    }

    /// After a restart: stored applications come back; those that had not
    /// finished start a new attempt.
    pub fn recover(&mut self, cx: &Ctx, stored: Vec<StoredApp>) -> Result<(), Error> {
        for mut s in stored {
            if s.id.cluster_ts == cx.cluster_ts {
                self.next_seq = self.next_seq.max(s.id.seq + 1);
            }
            if let Some(o) = s.outcome.clone() {
                let id = s.id;
                let attempt = AttemptId {
                    app: id,
                    attempt: s.attempts,
                };
                self.apps.insert(
                    id,
                    AppRec {
                        state: wire::app_state_of(&o.state).unwrap_or(pb::AppState::Finished),
                        final_status: final_of(&o.final_status),
                        diagnostics: o.diagnostics.clone(),
                        start_ms: 0,
                        finish_ms: o.finish_ms,
                        progress: 1.0,
                        tracking_url: String::new(),
                        attempt: new_attempt(attempt, cx.now),
                        failures: 0,
                        history: VecDeque::new(),
                        stored: s,
                    },
                );
                self.finished_order.push_back(id);
                continue;
            }
            s.attempts += 1;
            let n = s.attempts;
            cx.store.put(&s).map_err(store_failed)?;
            let id = s.id;
            if let Err(e) = self.start(cx, s, n) {
                tracing::warn!(app = %id, "not recovered: {e}");
                continue;
            }
            tracing::info!(app = %id, attempt = n, "application recovered: a new attempt starts");
        }
        Ok(())
    }

    pub fn report(&self, app: AppId) -> Result<pb::ApplicationReport, Error> {
        let a = self.apps.get(&app).ok_or_else(|| not_found(app))?;
        Ok(self.report_of(a))
    }

    fn report_of(&self, a: &AppRec) -> pb::ApplicationReport {
        let id = a.stored.id;
        let (used, running) = self
            .sched
            .core()
            .app(id)
            .map_or((Resource::ZERO, 0), |s| (s.used, s.containers.len() as u32));
        pb::ApplicationReport {
            app_id: id.to_string(),
            name: a.stored.name.clone(),
            queue: a.stored.queue.clone(),
            user: a.stored.user.clone(),
            app_type: a.stored.app_type.clone(),
            state: a.state as i32,
            final_status: a.final_status as i32,
            diagnostics: a.diagnostics.clone(),
            attempt: a.attempt.id.attempt,
            max_attempts: a.stored.max_attempts,
            am_container_id: a
                .attempt
                .am_container
                .map(|c| c.to_string())
                .unwrap_or_default(),
            am_node: a.attempt.am_node.clone(),
            tracking_url: a.tracking_url.clone(),
            progress: a.progress,
            submit_ms: a.stored.submit_ms,
            start_ms: a.start_ms,
            finish_ms: a.finish_ms,
            used: Some(wire::resource_pb(used)),
            running_containers: running,
            priority: a.stored.priority,
        }
    }

    pub fn list(&self, r: &pb::ListApplicationsRequest) -> pb::ApplicationList {
        let apps = self
            .apps
            .values()
            .filter(|a| r.states.is_empty() || r.states.contains(&(a.state as i32)))
            .filter(|a| {
                r.queue.is_empty()
                    || a.stored.queue == r.queue
                    || a.stored.queue.ends_with(&format!(".{}", r.queue))
            })
            .filter(|a| r.user.is_empty() || a.stored.user == r.user)
            .map(|a| self.report_of(a))
            .collect();
        pb::ApplicationList { apps }
    }

    pub fn containers(&self, app: AppId) -> Result<pb::ContainerReportList, Error> {
        let a = self.apps.get(&app).ok_or_else(|| not_found(app))?;
        let mut containers: Vec<pb::ContainerReport> = a.history.iter().cloned().collect();
        if let Some(s) = self.sched.core().app(app) {
            for c in &s.containers {
                if let Some(l) = self.live.get(c) {
                    containers.push(live_report(*c, l));
                }
            }
        }
        // A master that finished and is still exiting.
        containers.extend(self.exiting.iter().filter(|(c, _)| c.app() == app).map(
            |(_, (_, r))| {
                let mut r = r.clone();
                r.state = pb::ContainerState::ContainerRunning as i32;
                r
            },
        ));
        containers.sort_by(|x, y| x.container_id.cmp(&y.container_id));
        Ok(pb::ContainerReportList { containers })
    }

    pub fn kill(
        &mut self,
        cx: &Ctx,
        app: AppId,
        user: &str,
    ) -> Result<pb::ApplicationReport, Error> {
        let a = self.apps.get(&app).ok_or_else(|| not_found(app))?;
        if !a.is_over() {
            let who = if user.is_empty() { "a user" } else { user };
            self.finish(
                cx,
                app,
                pb::AppState::Killed,
                pb::FinalStatus::FinalKilled,
                format!("killed by {who}"),
            );
        }
        self.report(app)
    }

    /// Ends an application: its containers are let go (their nodes kill
    /// them), the outcome is stored, old finished applications beyond the
    /// limit are forgotten.
    fn finish(
        &mut self,
        cx: &Ctx,
        app: AppId,
        state: pb::AppState,
        final_status: pb::FinalStatus,
        diagnostics: String,
    ) {
        self.finish_with(cx, app, state, final_status, diagnostics, false);
    }

    /// `finish`; with `master_exits`, the master (which unregistered) is
    /// given `AM_EXIT_GRACE_MS` to exit by itself.
    fn finish_with(
        &mut self,
        cx: &Ctx,
        app: AppId,
        state: pb::AppState,
        final_status: pb::FinalStatus,
        diagnostics: String,
        master_exits: bool,
    ) {
        for c in self.sched.remove_app(app) {
            if master_exits && c.is_am {
                if let Some(r) = self.end_live(cx, &c, exit::INVALID, "") {
                    self.exiting.insert(c.id, (cx.now + AM_EXIT_GRACE_MS, r));
                }
                continue;
            }
            let report = self.end_live(
                cx,
                &c,
                exit::KILLED_AFTER_APP_COMPLETION,
                "the application finished",
            );
            self.dying.insert(
                c.id,
                (
                    exit::KILLED_AFTER_APP_COMPLETION,
                    "killed: its application finished".into(),
                ),
            );
            if let (Some(a), Some(r)) = (self.apps.get_mut(&app), report) {
                push_history(a, r, cx.cfg.completed_containers_kept);
            }
        }
        let Some(a) = self.apps.get_mut(&app) else {
            return;
        };
        a.state = state;
        a.final_status = final_status;
        a.diagnostics = diagnostics;
        a.finish_ms = cx.wall;
        a.stored.outcome = Some(Outcome {
            state: wire::app_state_name(state).into(),
            final_status: wire::final_status_name(final_status).into(),
            diagnostics: a.diagnostics.clone(),
            finish_ms: cx.wall,
        });
        if let Err(e) = cx.store.put(&a.stored) {
            tracing::warn!(%app, "could not store the outcome: {e}");
        }
        cx.metrics
            .apps_completed
            .with_label_values(&[&wire::final_status_name(final_status).to_lowercase()])
            .inc();
        tracing::info!(%app, state = wire::app_state_name(state), final_status = wire::final_status_name(final_status), diagnostics = %a.diagnostics, "application ended");
        self.finished_order.push_back(app);
        while self.finished_order.len() > cx.cfg.completed_apps_kept {
            if let Some(old) = self.finished_order.pop_front() {
                self.apps.remove(&old);
                if let Err(e) = cx.store.remove(old) {
                    tracing::warn!(app = %old, "could not forget it in the store: {e}");
                }
            }
        }
    }

    /// The current attempt failed: a new one starts, or (when it counts
    /// and none is left) the application fails.
    fn attempt_failed(&mut self, cx: &Ctx, app: AppId, why: String, counts: bool) {
        let Some(a) = self.apps.get_mut(&app) else {
            return;
        };
        if a.is_over() {
            return;
        }
        cx.metrics.attempt_failures.inc();
        if counts {
            a.failures += 1;
        }
        let n = a.attempt.id.attempt;
        tracing::warn!(%app, attempt = n, counts, "attempt failed: {why}");
        if a.failures >= a.stored.max_attempts {
            let max = a.stored.max_attempts;
            self.finish(
                cx,
                app,
                pb::AppState::Failed,
                pb::FinalStatus::FinalFailed,
                format!(
                    "{app} failed {max} time{} (attempt {n}: {why}); no attempt is left",
                    if max == 1 { "" } else { "s" }
                ),
            );
            return;
        }
        let next = AttemptId {
            app,
            attempt: n + 1,
        };
        a.attempt = new_attempt(next, cx.now);
        a.state = pb::AppState::Accepted;
        a.diagnostics = format!("attempt {n} failed: {why}; attempt {} starts", n + 1);
        a.stored.attempts = n + 1;
        a.stored.failures = a.failures;
        if let Err(e) = cx.store.put(&a.stored) {
            tracing::warn!(%app, "could not store the new attempt: {e}");
        }
        let am_resource = a.stored.am_resource;
        match self.sched.new_attempt(next) {
            Ok(old) => {
                for c in old {
                    self.dying.insert(
                        c,
                        (
                            exit::KILLED_BY_RESOURCEMANAGER,
                            format!("killed: attempt {n} was replaced"),
                        ),
                    );
                }
            }
            Err(e) => tracing::warn!(%app, "new attempt: {e}"),
        }
        if let Err(e) = self.sched.ask_for_am(app, am_resource) {
            tracing::warn!(%app, "asking for the new master's container: {e}");
        }
    }

    // ---- application masters ----

    fn attempt_of(&mut self, am: Option<&pb::AmIdentity>) -> Result<(AppId, &mut AppRec), Error> {
        let am = am.ok_or_else(|| invalid("the call names no application attempt"))?;
        let id = wire::attempt_id(&am.attempt_id)?;
        let a = self
            .apps
            .get_mut(&id.app)
            .ok_or_else(|| not_found(id.app))?;
        if a.attempt.id != id {
            return Err(Error::new(
                Code::ApplicationAttemptNotCurrent,
                format!(
                    "{id} is not the current attempt of {} (that is {})",
                    id.app, a.attempt.id
                ),
            ));
        }
        if a.attempt.token != am.token {
            return Err(Error::new(
                Code::PermissionDenied,
                format!("the token given for {id} is not its own"),
            ));
        }
        Ok((id.app, a))
    }

    pub fn register_am(
        &mut self,
        cx: &Ctx,
        r: pb::RegisterAmRequest,
    ) -> Result<pb::RegisterAmReply, Error> {
        let cfg = self.sched.core().cfg.clone();
        let (app, a) = self.attempt_of(r.am.as_ref())?;
        if a.is_over() {
            return Err(finished(app));
        }
        a.attempt.registered = true;
        a.attempt.last_seen = cx.now;
        a.state = pb::AppState::Running;
        if a.start_ms == 0 {
            a.start_ms = cx.wall;
        }
        a.tracking_url = r.tracking_url;
        tracing::info!(%app, attempt = a.attempt.id.attempt, host = %r.host, "application master registered");
        Ok(pb::RegisterAmReply {
            max_allocation: Some(wire::resource_pb(cfg.max_allocation)),
            min_allocation: Some(wire::resource_pb(cfg.min_allocation)),
            queue: a.stored.queue.clone(),
            attempt: a.attempt.id.attempt,
        })
    }

    pub fn allocate(
        &mut self,
        cx: &Ctx,
        r: pb::AllocateRequest,
    ) -> Result<pb::AllocateReply, Error> {
        cx.metrics.allocate_calls.inc();
        let (app, a) = match self.attempt_of(r.am.as_ref()) {
            Ok(x) => x,
            // A replaced attempt's master is told to stop, not to retry.
            Err(e) if e.code == Code::ApplicationAttemptNotCurrent => {
                return Ok(shutdown_reply(r.response_id + 1))
            }
            Err(e) => return Err(e),
        };
        if a.is_over() {
            return Ok(shutdown_reply(r.response_id + 1));
        }
        if !a.attempt.registered {
            return Err(Error::new(
                Code::ApplicationAttemptNotCurrent,
                format!("{} has not registered: register first", a.attempt.id),
            ));
        }
        a.attempt.last_seen = cx.now;
        // A retried call: the same answer again.
        if r.response_id + 1 == a.attempt.response_id {
            if let Some(last) = &a.attempt.last_reply {
                return Ok(last.clone());
            }
        }
        if r.response_id != a.attempt.response_id {
            return Err(invalid(format!(
                "allocate out of order: response_id {} but the last reply was {}",
                r.response_id, a.attempt.response_id
            )));
        }
        a.progress = r.progress.clamp(0.0, 1.0);
        let asks = r
            .asks
            .iter()
            .map(wire::ask)
            .collect::<Result<Vec<_>, _>>()?;
        let releases = r
            .releases
            .iter()
            .map(|c| wire::container_id(c))
            .collect::<Result<Vec<_>, _>>()?;
        for c in &releases {
            if c.app() != app {
                return Err(invalid(format!("{c} is not a container of {app}")));
            }
        }
        self.sched.update_asks(app, &asks)?;
        for c in releases {
            self.release(cx, c);
        }
        let core = self.sched.core();
        let available = core.total.saturating_sub(core.used);
        let num_nodes = core.live_nodes();
        let a = self.apps.get_mut(&app).expect("checked");
        let at = &mut a.attempt;
        at.response_id += 1;
        let reply = pb::AllocateReply {
            response_id: at.response_id,
            allocated: std::mem::take(&mut at.new_containers),
            completed: std::mem::take(&mut at.completed),
            preempting: std::mem::take(&mut at.preempting),
            num_nodes,
            available: Some(wire::resource_pb(available)),
            command: pb::AmCommand::None as i32,
        };
        at.last_reply = Some(reply.clone());
        Ok(reply)
    }

    /// An application master gives a container back.
    fn release(&mut self, cx: &Ctx, c: ContainerId) {
        let Some(l) = self.live.get(&c) else {
            return;
        };
        let why = "released by the application master";
        if l.running {
            self.dying.insert(c, (exit::ABORTED, why.into()));
            return;
        }
        // Never started: free at once (and kill it should it start).
        self.dying.insert(c, (exit::ABORTED, why.into()));
        self.complete(cx, c, exit::ABORTED, why.to_string());
    }

    pub fn finish_am(&mut self, cx: &Ctx, r: pb::FinishAmRequest) -> Result<(), Error> {
        let (app, a) = self.attempt_of(r.am.as_ref())?;
        if a.is_over() {
            return Ok(());
        }
        let final_status = pb::FinalStatus::try_from(r.final_status).unwrap_or_default();
        let state = match final_status {
            pb::FinalStatus::FinalKilled => pb::AppState::Killed,
            _ => pb::AppState::Finished,
        };
        if !r.tracking_url.is_empty() {
            a.tracking_url = r.tracking_url;
        }
        if final_status == pb::FinalStatus::Succeeded {
            a.progress = 1.0;
        }
        self.finish_with(cx, app, state, final_status, r.diagnostics, true);
        Ok(())
    }

    // ---- node managers ----

    pub fn register_node(
        &mut self,
        cx: &Ctx,
        r: pb::RegisterNodeRequest,
    ) -> Result<(pb::RegisterNodeReply, Vec<pb::ContainerKill>), Error> {
        let (host, port) = r
            .node_id
            .rsplit_once(':')
            .ok_or_else(|| invalid(format!("node id {:?} is not HOST:PORT", r.node_id)))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(invalid(format!("node id {:?} is not HOST:PORT", r.node_id)));
        }
        let cap = wire::resource(r.capability.as_ref(), "the node's capability")?;
        if !cap.is_positive() {
            return Err(Error::new(
                Code::InvalidResourceRequest,
                format!(
                    "node {} offers {cap}: a node needs memory and vcores",
                    r.node_id
                ),
            ));
        }
        let rack = if r.rack.is_empty() {
            "/default-rack".to_string()
        } else {
            r.rack.clone()
        };
        let reported: HashSet<ContainerId> = r
            .containers
            .iter()
            .filter(|s| s.state == pb::ContainerState::ContainerRunning as i32)
            .filter_map(|s| wire::container_id(&s.container_id).ok())
            .collect();
        // What the resource manager thought ran there and does not: gone
        // (the node manager restarted).
        let gone: Vec<ContainerId> = self
            .live
            .iter()
            .filter(|(c, l)| l.node_id == r.node_id && !reported.contains(c))
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            self.complete(
                cx,
                c,
                exit::ABORTED,
                format!("its node manager {} restarted", r.node_id),
            );
        }
        let host = if r.host.is_empty() {
            host.to_string()
        } else {
            r.host.clone()
        };
        self.sched.add_node(&r.node_id, &host, &rack, cap);
        self.nodes.insert(
            r.node_id.clone(),
            NodeRec {
                id: r.node_id.clone(),
                host: host.clone(),
                http: r.http_addr.clone(),
                rack: rack.clone(),
                capability: cap,
                lost: false,
                last_heartbeat: cx.now,
                healthy: true,
                health_report: String::new(),
            },
        );
        // What it runs that the resource manager does not count: kill.
        let kill = r
            .containers
            .iter()
            .filter(|s| s.state == pb::ContainerState::ContainerRunning as i32)
            .filter_map(|s| {
                let c = wire::container_id(&s.container_id).ok()?;
                self.kill_order(c)
            })
            .collect();
        self.update_gauges(cx);
        tracing::info!(node = %r.node_id, %rack, capability = %cap, "node manager registered");
        Ok((
            pb::RegisterNodeReply {
                token_key: cx.token_key.to_vec(),
                heartbeat_ms: cx.cfg.nm_heartbeat_ms,
                cluster_ts: cx.cluster_ts,
                rack,
            },
            kill,
        ))
    }

    /// The kill order for a container a node reports running, if the
    /// resource manager does not count it as live.
    fn kill_order(&self, c: ContainerId) -> Option<pb::ContainerKill> {
        if self.live.contains_key(&c) && !self.dying.contains_key(&c) {
            return None;
        }
        if self.exiting.contains_key(&c) && !self.dying.contains_key(&c) {
            return None;
        }
        let (status, why) = self.dying.get(&c).cloned().unwrap_or_else(|| {
            let over = self.apps.get(&c.app()).is_none_or(|a| a.is_over());
            if over {
                (exit::KILLED_AFTER_APP_COMPLETION, "killed: its application is over".into())
            } else {
                (
                    exit::KILLED_BY_RESOURCEMANAGER,
                    "killed: the resource manager does not know it (it was given up while its node was away)".into(),
                )
            }
        });
        Some(pb::ContainerKill {
            container_id: c.to_string(),
            exit_status: status,
            diagnostics: why,
        })
    }

    pub fn heartbeat(
        &mut self,
        cx: &Ctx,
        r: pb::NodeHeartbeatRequest,
    ) -> (pb::NodeHeartbeatReply, Vec<AmLaunch>) {
        cx.metrics.node_heartbeats.inc();
        let mut reply = pb::NodeHeartbeatReply {
            response_id: r.response_id + 1,
            next_heartbeat_ms: cx.cfg.nm_heartbeat_ms,
            ..Default::default()
        };
        let known = self.nodes.get(&r.node_id).is_some_and(|n| !n.lost);
        if !known {
            reply.action = pb::NodeAction::Resync as i32;
            return (reply, Vec::new());
        }
        if let Some(n) = self.nodes.get_mut(&r.node_id) {
            n.last_heartbeat = cx.now;
            n.healthy = r.healthy;
            n.health_report = r.health_report.clone();
        }
        for s in &r.containers {
            let Ok(c) = wire::container_id(&s.container_id) else {
                continue;
            };
            match pb::ContainerState::try_from(s.state).unwrap_or_default() {
                pb::ContainerState::ContainerRunning => {
                    if let Some(l) = self.live.get_mut(&c) {
                        if !l.running {
                            l.running = true;
                            if l.is_am {
                                if let Some(a) = self.apps.get_mut(&c.app()) {
                                    a.attempt.last_seen = cx.now;
                                }
                            }
                        }
                    }
                    if let Some(k) = self.kill_order(c) {
                        reply.kill.push(k);
                    }
                }
                pb::ContainerState::Complete => {
                    let (status, diag) = match self.dying.remove(&c) {
                        Some((st, why)) => (st, join_diag(&why, &s.diagnostics)),
                        None => (s.exit_status, s.diagnostics.clone()),
                    };
                    if self.live.contains_key(&c) {
                        self.complete(cx, c, status, diag);
                    } else if let Some((_, mut r)) = self.exiting.remove(&c) {
                        r.exit_status = status;
                        r.diagnostics = diag;
                        r.finished_ms = cx.wall;
                        if let Some(a) = self.apps.get_mut(&c.app()) {
                            push_history(a, r, cx.cfg.completed_containers_kept);
                        }
                    }
                    reply.acknowledged.push(s.container_id.clone());
                }
                _ => {}
            }
        }
        for app in &r.apps {
            let over = wire::app_id(app)
                .map(|id| self.apps.get(&id).is_none_or(|a| a.is_over()))
                .unwrap_or(true);
            if over {
                reply.finished_apps.push(app.clone());
            }
        }
        let mut launches = Vec::new();
        if r.healthy {
            let t = std::time::Instant::now();
            let placed = self.sched.node_update(&r.node_id);
            cx.metrics
                .schedule_seconds
                .observe(t.elapsed().as_secs_f64());
            for c in placed {
                if let Some(l) = self.placed(cx, &c) {
                    launches.push(l);
                }
            }
        }
        self.update_gauges(cx);
        (reply, launches)
    }

    /// A container the scheduler placed: counted live, handed to its
    /// application master (or, for a master, to be started by us).
    fn placed(&mut self, cx: &Ctx, c: &Container) -> Option<AmLaunch> {
        let node = &self.sched.core().nodes[c.node as usize];
        let node_id = node.id.clone();
        let http = self
            .nodes
            .get(&node_id)
            .map(|n| n.http.clone())
            .unwrap_or_default();
        cx.metrics
            .containers_allocated
            .with_label_values(&[locality_name(c.locality)])
            .inc();
        self.live.insert(
            c.id,
            Live {
                node_id: node_id.clone(),
                node_http: http.clone(),
                resource: c.resource,
                running: false,
                allocated_at: cx.now,
                allocated_wall: cx.wall,
                locality: c.locality,
                opportunities: c.opportunities,
                is_am: c.is_am,
            },
        );
        let a = self.apps.get_mut(&c.id.app())?;
        let tok = token::sign(
            cx.token_key,
            pb::ContainerToken {
                container_id: c.id.to_string(),
                node_id: node_id.clone(),
                resource: Some(wire::resource_pb(c.resource)),
                user: a.stored.user.clone(),
                expires_ms: cx.wall + cx.cfg.container_launch_timeout_ms,
                mac: vec![],
            },
        );
        let pc = pb::Container {
            id: c.id.to_string(),
            node_id: node_id.clone(),
            node_http: http,
            resource: Some(wire::resource_pb(c.resource)),
            priority: c.priority,
            ask_id: c.ask_id,
            locality: locality_name(c.locality).into(),
            opportunities: c.opportunities,
            token: Some(tok.clone()),
        };
        if !c.is_am {
            a.attempt.new_containers.push(pc);
            return None;
        }
        a.attempt.am_container = Some(c.id);
        a.attempt.am_node = node_id.clone();
        a.attempt.last_seen = cx.now;
        let mut env: HashMap<String, String> = a.stored.am_env.clone().into_iter().collect();
        env.insert("HSTACK_RM_ADDRESS".into(), cx.rm_address.to_string());
        env.insert("HSTACK_APP_ID".into(), c.id.app().to_string());
        env.insert("HSTACK_ATTEMPT_ID".into(), a.attempt.id.to_string());
        env.insert("HSTACK_AM_TOKEN".into(), a.attempt.token.clone());
        env.insert("HSTACK_APP_NAME".into(), a.stored.name.clone());
        tracing::info!(app = %c.id.app(), container = %c.id, node = %node_id, "application master placed");
        Some(AmLaunch {
            node_id,
            request: pb::StartContainerRequest {
                token: Some(tok),
                launch: Some(pb::LaunchContext {
                    command: a.stored.am_command.clone(),
                    env,
                }),
            },
        })
    }

    /// A master's container could not be started on its node.
    pub fn am_launch_failed(&mut self, cx: &Ctx, container: &str, why: String) {
        if let Ok(c) = wire::container_id(container) {
            self.dying
                .insert(c, (exit::ABORTED, format!("its start failed: {why}")));
            self.complete(cx, c, exit::ABORTED, format!("its start failed: {why}"));
        }
    }

    /// A live container ended (or was given up): resources back, the end
    /// recorded, its master told (or, for a master, the attempt failed).
    fn complete(&mut self, cx: &Ctx, c: ContainerId, status: i32, diagnostics: String) {
        let Some(sc) = self.sched.finish_container(c) else {
            self.live.remove(&c);
            return;
        };
        let Some(report) = self.end_live(cx, &sc, status, &diagnostics) else {
            return;
        };
        let app = c.app();
        let Some(a) = self.apps.get_mut(&app) else {
            return;
        };
        push_history(a, report, cx.cfg.completed_containers_kept);
        if a.is_over() || c.attempt != a.attempt.id {
            return;
        }
        if a.attempt.am_container == Some(c) {
            // Lost with its node or taken back: not the master's fault.
            // A master that could not start, or never came up, does count:
            // else a bad command would be retried for ever.
            let counts = !exit::is_not_its_fault(status)
                || diagnostics.starts_with("its start failed")
                || diagnostics.starts_with(NOT_STARTED);
            let why = format!(
                "its application master {c} ended with exit status {} before it finished: {}",
                exit::name(status),
                if diagnostics.is_empty() {
                    "no diagnostics"
                } else {
                    &diagnostics
                }
            );
            self.attempt_failed(cx, app, why, counts);
            return;
        }
        a.attempt.completed.push(pb::ContainerStatus {
            container_id: c.to_string(),
            state: pb::ContainerState::Complete as i32,
            exit_status: status,
            diagnostics,
        });
    }

    /// Forgets a live container; its report.
    fn end_live(
        &mut self,
        cx: &Ctx,
        c: &Container,
        status: i32,
        diagnostics: &str,
    ) -> Option<pb::ContainerReport> {
        let l = self.live.remove(&c.id)?;
        let mut r = live_report(c.id, &l);
        r.state = pb::ContainerState::Complete as i32;
        r.exit_status = status;
        r.diagnostics = diagnostics.to_string();
        r.finished_ms = cx.wall;
        Some(r)
    }

    // ---- the monitor ----

    /// Node managers silent too long are lost; masters silent too long
    /// have failed; containers never started are taken back; preemption.
    pub fn tick(&mut self, cx: &Ctx, preempt: bool) {
        let expired: Vec<String> = self
            .nodes
            .values()
            .filter(|n| !n.lost && cx.now.saturating_sub(n.last_heartbeat) > cx.cfg.nm_expiry_ms)
            .map(|n| n.id.clone())
            .collect();
        for id in expired {
            self.node_lost(cx, &id);
        }
        let silent: Vec<(AppId, u64)> = self
            .apps
            .values()
            .filter(|a| !a.is_over() && a.attempt.am_container.is_some())
            .filter(|a| {
                // A master counts from its container's start.
                let running = a
                    .attempt
                    .am_container
                    .and_then(|c| self.live.get(&c))
                    .is_some_and(|l| l.running);
                running && cx.now.saturating_sub(a.attempt.last_seen) > cx.cfg.am_expiry_ms
            })
            .map(|a| (a.stored.id, cx.now - a.attempt.last_seen))
            .collect();
        for (app, ms) in silent {
            if let Some(c) = self.apps.get(&app).and_then(|a| a.attempt.am_container) {
                self.dying.insert(
                    c,
                    (
                        exit::KILLED_BY_RESOURCEMANAGER,
                        "killed: its application master went silent".into(),
                    ),
                );
                self.complete(
                    cx,
                    c,
                    exit::KILLED_BY_RESOURCEMANAGER,
                    format!(
                        "it sent nothing for {ms} ms (am_expiry_ms {})",
                        cx.cfg.am_expiry_ms
                    ),
                );
            }
        }
        let late: Vec<ContainerId> = self
            .exiting
            .iter()
            .filter(|(c, (deadline, _))| cx.now > *deadline && !self.dying.contains_key(c))
            .map(|(c, _)| *c)
            .collect();
        for c in late {
            self.dying.insert(
                c,
                (
                    exit::KILLED_AFTER_APP_COMPLETION,
                    format!(
                        "killed: its master did not exit within {AM_EXIT_GRACE_MS} ms of finishing"
                    ),
                ),
            );
        }
        let stale: Vec<ContainerId> = self
            .live
            .iter()
            .filter(|(_, l)| {
                !l.running
                    && cx.now.saturating_sub(l.allocated_at) > cx.cfg.container_launch_timeout_ms
            })
            .map(|(c, _)| *c)
            .collect();
        for c in stale {
            let why = format!(
                "{NOT_STARTED} {} ms of its placement",
                cx.cfg.container_launch_timeout_ms
            );
            self.dying.insert(c, (exit::ABORTED, why.clone()));
            self.complete(cx, c, exit::ABORTED, why);
        }
        if preempt {
            self.sched.set_now(cx.now);
            for c in self.sched.preempt() {
                cx.metrics.containers_preempted.inc();
                self.dying.insert(
                    c,
                    (
                        exit::PREEMPTED,
                        "preempted: its queue was over its fair share while another was starved"
                            .into(),
                    ),
                );
                if let Some(a) = self.apps.get_mut(&c.app()) {
                    if a.attempt.id == c.attempt {
                        a.attempt.preempting.push(c.to_string());
                    }
                }
                tracing::info!(container = %c, "preempting");
            }
        }
        self.update_gauges(cx);
    }

    fn node_lost(&mut self, cx: &Ctx, id: &str) {
        tracing::warn!(node = %id, "node manager lost: no heartbeat within nm_expiry_ms");
        cx.metrics.nodes_lost.inc();
        if let Some(n) = self.nodes.get_mut(id) {
            n.lost = true;
        }
        let gone: Vec<ContainerId> = self
            .exiting
            .iter()
            .filter(|(_, (_, r))| r.node_id == id)
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            if let Some((_, mut r)) = self.exiting.remove(&c) {
                r.exit_status = exit::ABORTED;
                r.diagnostics = format!("its node {id} was lost");
                r.finished_ms = cx.wall;
                if let Some(a) = self.apps.get_mut(&c.app()) {
                    push_history(a, r, cx.cfg.completed_containers_kept);
                }
            }
        }
        let lost = self.sched.remove_node(id);
        for c in lost {
            let why = format!("its node {id} was lost");
            let report = self.end_live(cx, &c, exit::ABORTED, &why);
            self.dying.remove(&c.id);
            let app = c.id.app();
            let Some(a) = self.apps.get_mut(&app) else {
                continue;
            };
            if let Some(r) = report {
                push_history(a, r, cx.cfg.completed_containers_kept);
            }
            if a.is_over() || c.id.attempt != a.attempt.id {
                continue;
            }
            if a.attempt.am_container == Some(c.id) {
                let why = format!(
                    "its application master {} was on node {id}, which was lost",
                    c.id
                );
                self.attempt_failed(cx, app, why, false);
                continue;
            }
            a.attempt.completed.push(pb::ContainerStatus {
                container_id: c.id.to_string(),
                state: pb::ContainerState::Complete as i32,
                exit_status: exit::ABORTED,
                diagnostics: why,
            });
        }
    }

    // ---- reports ----

    pub fn nodes(&self, cx: &Ctx) -> pb::NodeList {
        let nodes = self
            .nodes
            .values()
            .map(|n| {
                let s = self.sched.core().node(&n.id);
                pb::NodeReport {
                    node_id: n.id.clone(),
                    host: n.host.clone(),
                    rack: n.rack.clone(),
                    http_addr: n.http.clone(),
                    state: if n.lost {
                        "LOST"
                    } else if !n.healthy {
                        "UNHEALTHY"
                    } else {
                        "RUNNING"
                    }
                    .into(),
                    capability: Some(wire::resource_pb(n.capability)),
                    used: Some(wire::resource_pb(s.map_or(Resource::ZERO, |s| s.used))),
                    containers: s.map_or(0, |s| s.containers.len() as u32),
                    last_heartbeat_ms_ago: cx.now.saturating_sub(n.last_heartbeat),
                    health_report: n.health_report.clone(),
                }
            })
            .collect();
        pb::NodeList { nodes }
    }

    pub fn queues(&self) -> pb::QueueList {
        let queues = self
            .sched
            .queue_infos()
            .into_iter()
            .map(|q| pb::QueueReport {
                path: q.path,
                leaf: q.leaf,
                capacity: q.capacity,
                max_capacity: q.max_capacity,
                used_share: q.used_share,
                used: Some(wire::resource_pb(q.used)),
                pending: Some(wire::resource_pb(q.pending)),
                apps: q.apps as u32,
                weight: q.weight,
                min_share: Some(wire::resource_pb(q.min_share)),
                fair_share: q.fair_share,
                starved_ms: q.starved_ms.unwrap_or(0),
            })
            .collect();
        pb::QueueList {
            scheduler: self.sched.kind().name().into(),
            queues,
        }
    }

    pub fn cluster_metrics(&self, cx: &Ctx) -> pb::ClusterMetrics {
        let core = self.sched.core();
        let count = |s: pb::AppState| self.apps.values().filter(|a| a.state == s).count() as u32;
        pb::ClusterMetrics {
            nodes_active: self.nodes.values().filter(|n| !n.lost).count() as u32,
            nodes_lost: self.nodes.values().filter(|n| n.lost).count() as u32,
            total: Some(wire::resource_pb(core.total)),
            used: Some(wire::resource_pb(core.used)),
            apps_submitted: self.apps_submitted,
            apps_running: count(pb::AppState::Running),
            apps_pending: count(pb::AppState::Accepted),
            apps_completed: count(pb::AppState::Finished),
            apps_failed: count(pb::AppState::Failed),
            apps_killed: count(pb::AppState::Killed),
            containers_running: self.live.len() as u32,
            scheduler: self.sched.kind().name().into(),
            cluster_ts: cx.cluster_ts,
        }
    }

    fn update_gauges(&self, cx: &Ctx) {
        let m = cx.metrics;
        let core = self.sched.core();
        m.containers_running.set(self.live.len() as i64);
        m.memory_total_mb.set(core.total.memory_mb as i64);
        m.memory_used_mb.set(core.used.memory_mb as i64);
        m.vcores_total.set(i64::from(core.total.vcores));
        m.vcores_used.set(i64::from(core.used.vcores));
        let lost = self.nodes.values().filter(|n| n.lost).count() as i64;
        m.nodes
            .with_label_values(&["running"])
            .set(self.nodes.len() as i64 - lost);
        m.nodes.with_label_values(&["lost"]).set(lost);
        let count = |s: pb::AppState| self.apps.values().filter(|a| a.state == s).count() as i64;
        m.apps
            .with_label_values(&["accepted"])
            .set(count(pb::AppState::Accepted));
        m.apps
            .with_label_values(&["running"])
            .set(count(pb::AppState::Running));
    }

    /// Rows and tables for the status page.
    pub fn status_rows(&self) -> Vec<(String, String)> {
        let core = self.sched.core();
        vec![
            ("scheduler".into(), self.sched.kind().name().into()),
            ("nodes".into(), format!("{} live", core.live_nodes())),
            (
                "resources".into(),
                format!("{} used of {}", core.used, core.total),
            ),
            ("applications".into(), self.apps.len().to_string()),
            ("containers".into(), self.live.len().to_string()),
        ]
    }

    pub fn status_tables(&self, cx: &Ctx) -> Vec<hstack_daemon::StatusTable> {
        let q = self.queues();
        let queues = hstack_daemon::StatusTable {
            title: format!("Queues ({} scheduler)", q.scheduler),
            columns: ["queue", "capacity", "max", "used", "apps"]
                .map(String::from)
                .to_vec(),
            rows: q
                .queues
                .iter()
                .map(|q| {
                    vec![
                        q.path.clone(),
                        format!("{:.1}%", q.capacity * 100.0),
                        format!("{:.1}%", q.max_capacity * 100.0),
                        format!("{:.1}%", q.used_share * 100.0),
                        q.apps.to_string(),
                    ]
                })
                .collect(),
        };
        let nodes = hstack_daemon::StatusTable {
            title: "Nodes".into(),
            columns: ["node", "rack", "state", "containers", "used", "capability"]
                .map(String::from)
                .to_vec(),
            rows: self
                .nodes(cx)
                .nodes
                .iter()
                .map(|n| {
                    let r = |x: &Option<pb::Resource>| {
                        let x = x.unwrap_or_default();
                        format!("{} MiB, {} vcores", x.memory_mb, x.vcores)
                    };
                    vec![
                        n.node_id.clone(),
                        n.rack.clone(),
                        n.state.clone(),
                        n.containers.to_string(),
                        r(&n.used),
                        r(&n.capability),
                    ]
                })
                .collect(),
        };
        let apps = hstack_daemon::StatusTable {
            title: "Applications".into(),
            columns: [
                "id",
                "name",
                "user",
                "queue",
                "state",
                "final status",
                "progress",
            ]
            .map(String::from)
            .to_vec(),
            rows: self
                .apps
                .values()
                .rev()
                .take(50)
                .map(|a| {
                    vec![
                        a.stored.id.to_string(),
                        a.stored.name.clone(),
                        a.stored.user.clone(),
                        a.stored.queue.clone(),
                        wire::app_state_name(a.state).into(),
                        wire::final_status_name(a.final_status).into(),
                        format!("{:.0}%", a.progress * 100.0),
                    ]
                })
                .collect(),
        };
        vec![queues, nodes, apps]
    }
}

fn new_attempt(id: AttemptId, now: u64) -> Attempt {
    Attempt {
        id,
        token: new_token(),
        am_container: None,
        am_node: String::new(),
        registered: false,
        last_seen: now,
        response_id: 0,
        last_reply: None,
        new_containers: Vec::new(),
        completed: Vec::new(),
        preempting: Vec::new(),
    }
}

fn live_report(c: ContainerId, l: &Live) -> pb::ContainerReport {
    pb::ContainerReport {
        container_id: c.to_string(),
        node_id: l.node_id.clone(),
        node_http: l.node_http.clone(),
        resource: Some(wire::resource_pb(l.resource)),
        state: if l.running {
            pb::ContainerState::ContainerRunning
        } else {
            pb::ContainerState::Allocated
        } as i32,
        exit_status: exit::INVALID,
        diagnostics: String::new(),
        allocated_ms: l.allocated_wall,
        finished_ms: 0,
        locality: locality_name(l.locality).into(),
        is_am: l.is_am,
        opportunities: l.opportunities,
    }
}

fn push_history(a: &mut AppRec, r: pb::ContainerReport, keep: usize) {
    a.history.push_back(r);
    while a.history.len() > keep.max(1) {
        a.history.pop_front();
    }
}

fn join_diag(why: &str, node_says: &str) -> String {
    if node_says.is_empty() {
        why.to_string()
    } else {
        format!("{why}; {node_says}")
    }
}

fn shutdown_reply(response_id: u64) -> pb::AllocateReply {
    pb::AllocateReply {
        response_id,
        command: pb::AmCommand::AmShutdown as i32,
        ..Default::default()
    }
}

fn final_of(name: &str) -> pb::FinalStatus {
    match name {
        "SUCCEEDED" => pb::FinalStatus::Succeeded,
        "FAILED" => pb::FinalStatus::FinalFailed,
        "KILLED" => pb::FinalStatus::FinalKilled,
        _ => pb::FinalStatus::Unspecified,
    }
}

fn not_found(app: AppId) -> Error {
    Error::new(
        Code::ApplicationNotFound,
        format!("{app} is not known to this resource manager"),
    )
}

fn finished(app: AppId) -> Error {
    Error::new(Code::ApplicationFinished, format!("{app} has finished"))
}
