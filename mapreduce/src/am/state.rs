//! The application master's picture of its job, and every decision it
//! makes: which attempts need containers (maps asked where their block
//! is), what an allocated or ended container means, when an attempt has
//! failed, hung, or should be backed up, when a finished map must run
//! again, and when the job is done. No I/O here — the master's loop and
//! its RPC handlers feed it events, and tests drive it the same way.

use std::collections::{BTreeSet, HashMap, HashSet};

use hstack_proto::scheduler as pb;
use hstack_scheduler::exit;

use crate::conf;
use crate::counters::{self as c, Counters};
use crate::history::{AttemptRec, JobInfo, TaskRec};
use crate::spec::{self, JobSpec};

/// Container priorities (lower first, as YARN's): reduces once asked go
/// before maps, as in Hadoop's MapReduce master.
pub const MAP_PRIORITY: i32 = 20;
/// Attempts a task may lose through no fault of its own, per attempt it
/// may fail, before the job gives up on it.
pub const KILLS_PER_ATTEMPT: u32 = 5;
pub const REDUCE_PRIORITY: i32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AState {
    /// Wants a container.
    Pending,
    /// Has one, being started or starting.
    Starting,
    Running,
    Succeeded,
    Failed,
    Killed,
}

impl AState {
    fn name(self) -> &'static str {
        match self {
            AState::Pending => "PENDING",
            AState::Starting => "STARTING",
            AState::Running => "RUNNING",
            AState::Succeeded => "SUCCEEDED",
            AState::Failed => "FAILED",
            AState::Killed => "KILLED",
        }
    }
    fn live(self) -> bool {
        matches!(self, AState::Pending | AState::Starting | AState::Running)
    }
}

#[derive(Clone, Debug)]
pub struct Attempt {
    pub id: String,
    pub n: u32,
    pub state: AState,
    pub ask_id: u64,
    pub asked: bool,
    pub container: String,
    pub node_id: String,
    pub host: String,
    pub locality: String,
    pub speculative: bool,
    pub start_ms: u64,
    pub finish_ms: u64,
    pub progress: f32,
    pub status: String,
    pub last_progress_ms: u64,
    /// The input record a map attempt reported last (skipping mode).
    pub record: u64,
    pub counters: Counters,
    pub diagnostics: String,
    pub shuffle_addr: String,
    pub commit_granted: bool,
    /// Recovered from an earlier master's records.
    pub recovered: bool,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub id: String,
    pub is_map: bool,
    pub index: u32,
    pub attempts: Vec<Attempt>,
    /// The attempt whose output counts.
    pub done: Option<usize>,
    pub failures: u32,
    /// Input records that crashed attempts (skipped from then on).
    pub skip: BTreeSet<u64>,
    /// Reduces that could not fetch the done attempt's output.
    pub fetch_failures: u32,
}

impl Task {
    fn live_attempts(&self) -> usize {
        self.attempts.iter().filter(|a| a.state.live()).count()
    }
    fn state(&self) -> &'static str {
        if self.done.is_some() {
            "SUCCEEDED"
        } else if self.attempts.iter().any(|a| a.state == AState::Running) {
            "RUNNING"
        } else if self.live_attempts() > 0 {
            "PENDING"
        } else {
            "FAILED"
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    Succeeded,
    Failed(String),
    Killed(String),
}

/// A map whose output reduces may fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEvent {
    pub map: u32,
    pub attempt_id: String,
    pub shuffle_addr: String,
    pub obsolete: bool,
}

/// Settings of the master's decisions, from the job's configuration.
#[derive(Clone, Debug)]
pub struct Policy {
    pub map_attempts: u32,
    pub reduce_attempts: u32,
    pub timeout_ms: u64,
    pub speculate_maps: bool,
    pub speculate_reduces: bool,
    pub slowstart: f64,
    pub map_resource: pb::Resource,
    pub reduce_resource: pb::Resource,
    pub skip_after: u32,
    pub skip_records: u64,
    pub map_limit: u64,
    pub reduce_limit: u64,
}

impl Policy {
    pub fn of(conf: &crate::JobConf) -> Self {
        let res = |k| pb::Resource {
            memory_mb: conf.u64(k) as i64,
            vcores: 1,
        };
        Self {
            map_attempts: conf.u64(conf::MAP_ATTEMPTS) as u32,
            reduce_attempts: conf.u64(conf::REDUCE_ATTEMPTS) as u32,
            timeout_ms: conf.u64(conf::TASK_TIMEOUT),
            speculate_maps: conf.bool(conf::MAP_SPECULATIVE),
            speculate_reduces: conf.bool(conf::REDUCE_SPECULATIVE),
            slowstart: conf.f64(conf::SLOWSTART),
            map_resource: res(conf::MAP_MEMORY_MB),
            reduce_resource: res(conf::REDUCE_MEMORY_MB),
            skip_after: conf.u64(conf::SKIP_START_ATTEMPTS) as u32,
            skip_records: conf.u64(conf::SKIP_MAX_RECORDS),
            map_limit: conf.u64(conf::RUNNING_MAP_LIMIT),
            reduce_limit: conf.u64(conf::RUNNING_REDUCE_LIMIT),
        }
    }
}

/// A container to start: for which attempt.
#[derive(Clone, Debug)]
pub struct Launch {
    pub attempt_id: String,
    pub is_map: bool,
    pub index: u32,
    pub container: pb::Container,
}

pub struct JobState {
    pub spec: JobSpec,
    pub job_id: String,
    pub app_id: String,
    pub am_attempt: u32,
    pub policy: Policy,
    pub maps: Vec<Task>,
    pub reduces: Vec<Task>,
    pub phase: Phase,
    pub events: Vec<MapEvent>,
    next_ask: u64,
    asks: HashMap<u64, (bool, u32, usize)>,
    by_attempt: HashMap<String, (bool, u32, usize)>,
    by_container: HashMap<String, (bool, u32, usize)>,
    /// Containers to stop on their nodes (killed attempts).
    pub to_stop: Vec<(String, String)>,
    pub releases: Vec<String>,
    /// Shuffle ports by node id (from the node managers' aux metadata).
    pub shuffle_ports: HashMap<String, u16>,
    /// Job counters: launched, failed and killed attempts.
    pub job_counters: Counters,
    pub submit_ms: u64,
    pub start_ms: u64,
    pub finish_ms: u64,
    pub uber: bool,
    /// Maps done since the loop last wrote their recovery records.
    pub newly_done_maps: Vec<u32>,
    pub lost_nodes: HashSet<String>,
    /// An earlier master committed the job (its counters are gone).
    pub already_committed: bool,
}

fn new_attempt(job_id: &str, is_map: bool, index: u32, n: u32, speculative: bool) -> Attempt {
    Attempt {
        id: spec::attempt_id(job_id, is_map, index, n),
        n,
        state: AState::Pending,
        ask_id: 0,
        asked: false,
        container: String::new(),
        node_id: String::new(),
        host: String::new(),
        locality: String::new(),
        speculative,
        start_ms: 0,
        finish_ms: 0,
        progress: 0.0,
        status: String::new(),
        last_progress_ms: 0,
        record: 0,
        counters: Counters::default(),
        diagnostics: String::new(),
        shuffle_addr: String::new(),
        commit_granted: false,
        recovered: false,
    }
}

impl JobState {
    pub fn new(spec: JobSpec, job_id: &str, app_id: &str, am_attempt: u32, now: u64) -> Self {
        let policy = Policy::of(&spec.conf);
        // Attempt numbers go on from the master's attempt, so a restarted
        // master never reuses an earlier master's attempt ids.
        let base = (am_attempt.saturating_sub(1)) * 1000;
        let mk = |is_map: bool, i: u32| Task {
            id: spec::task_id(job_id, is_map, i),
            is_map,
            index: i,
            attempts: vec![new_attempt(job_id, is_map, i, base, false)],
            done: None,
            failures: 0,
            skip: BTreeSet::new(),
            fetch_failures: 0,
        };
        let maps = (0..spec.maps()).map(|i| mk(true, i)).collect();
        let reduces = (0..spec.reduces()).map(|i| mk(false, i)).collect();
        let mut s = Self {
            spec,
            job_id: job_id.to_string(),
            app_id: app_id.to_string(),
            am_attempt,
            policy,
            maps,
            reduces,
            phase: Phase::Running,
            events: Vec::new(),
            next_ask: 1,
            asks: HashMap::new(),
            by_attempt: HashMap::new(),
            by_container: HashMap::new(),
            to_stop: Vec::new(),
            releases: Vec::new(),
            shuffle_ports: HashMap::new(),
            job_counters: Counters::default(),
            submit_ms: now,
            start_ms: now,
            finish_ms: 0,
            uber: false,
            newly_done_maps: Vec::new(),
            lost_nodes: HashSet::new(),
            already_committed: false,
        };
        s.reindex();
        s
    }

    fn reindex(&mut self) {
        self.by_attempt.clear();
        for (is_map, tasks) in [(true, &self.maps), (false, &self.reduces)] {
            for t in tasks {
                for (k, a) in t.attempts.iter().enumerate() {
                    self.by_attempt.insert(a.id.clone(), (is_map, t.index, k));
                }
            }
        }
    }

    fn task(&self, is_map: bool, i: u32) -> &Task {
        if is_map {
            &self.maps[i as usize]
        } else {
            &self.reduces[i as usize]
        }
    }

    fn task_mut(&mut self, is_map: bool, i: u32) -> &mut Task {
        if is_map {
            &mut self.maps[i as usize]
        } else {
            &mut self.reduces[i as usize]
        }
    }

    pub fn find(&self, attempt_id: &str) -> Option<(bool, u32, usize)> {
        self.by_attempt.get(attempt_id).copied()
    }

    pub fn attempt(&self, attempt_id: &str) -> Option<&Attempt> {
        let (m, i, k) = self.find(attempt_id)?;
        self.task(m, i).attempts.get(k)
    }

    fn attempt_mut(&mut self, attempt_id: &str) -> Option<&mut Attempt> {
        let (m, i, k) = self.find(attempt_id)?;
        self.task_mut(m, i).attempts.get_mut(k)
    }

    /// Adds a fresh attempt to a task (after a failure, a kill, or as a
    /// backup).
    fn add_attempt(&mut self, is_map: bool, i: u32, speculative: bool) {
        let job_id = self.job_id.clone();
        let t = self.task_mut(is_map, i);
        let n = t.attempts.last().map_or(0, |a| a.n + 1);
        let a = new_attempt(&job_id, is_map, i, n, speculative);
        let id = a.id.clone();
        t.attempts.push(a);
        let k = t.attempts.len() - 1;
        self.by_attempt.insert(id, (is_map, i, k));
    }

    /// Recovery: a task an earlier master saw finish.
    pub fn recover(&mut self, is_map: bool, i: u32, r: &crate::child::TaskRecord) {
        let (attempt_id, node_id, shuffle_addr, locality) = (
            r.attempt_id.as_str(),
            r.node_id.as_str(),
            r.shuffle_addr.as_str(),
            r.locality.as_str(),
        );
        let counters = r.counters.clone();
        let t = self.task_mut(is_map, i);
        let a = &mut t.attempts[0];
        a.id = attempt_id.to_string();
        a.state = AState::Succeeded;
        a.node_id = node_id.to_string();
        a.host = node_id
            .rsplit_once(':')
            .map_or(node_id, |h| h.0)
            .to_string();
        a.shuffle_addr = shuffle_addr.to_string();
        a.locality = locality.to_string();
        a.counters = counters;
        a.progress = 1.0;
        a.recovered = true;
        t.done = Some(0);
        if is_map {
            self.events.push(MapEvent {
                map: i,
                attempt_id: attempt_id.to_string(),
                shuffle_addr: shuffle_addr.to_string(),
                obsolete: false,
            });
        }
        self.reindex();
    }

    pub fn maps_done(&self) -> usize {
        self.maps.iter().filter(|t| t.done.is_some()).count()
    }

    pub fn reduces_done(&self) -> usize {
        self.reduces.iter().filter(|t| t.done.is_some()).count()
    }

    /// Every task's output is in: the job can commit.
    pub fn complete(&self) -> bool {
        if self.reduces.is_empty() {
            self.maps_done() == self.maps.len()
        } else {
            self.reduces_done() == self.reduces.len()
        }
    }

    /// Asks for every attempt that wants a container and has not asked.
    pub fn asks(&mut self) -> Vec<pb::ResourceAsk> {
        if self.phase != Phase::Running {
            return Vec::new();
        }
        let reduces_may_start = self.maps.is_empty()
            || self.maps_done() as f64 >= self.policy.slowstart * self.maps.len() as f64;
        let mut out = Vec::new();
        let mut marks = Vec::new();
        // `mapreduce.job.running.{map,reduce}.limit`: attempts holding or
        // asking for a container at once (0: no limit).
        let in_use = |tasks: &[Task]| {
            tasks
                .iter()
                .flat_map(|t| t.attempts.iter())
                .filter(|a| a.state.live() && (a.asked || a.state != AState::Pending))
                .count() as u64
        };
        let mut room = [
            (self.policy.map_limit > 0)
                .then(|| self.policy.map_limit.saturating_sub(in_use(&self.maps))),
            (self.policy.reduce_limit > 0).then(|| {
                self.policy
                    .reduce_limit
                    .saturating_sub(in_use(&self.reduces))
            }),
        ];
        for t in self.maps.iter().chain(if reduces_may_start {
            self.reduces.iter()
        } else {
            [].iter()
        }) {
            for (k, a) in t.attempts.iter().enumerate() {
                if a.state != AState::Pending || a.asked {
                    continue;
                }
                let r = &mut room[usize::from(!t.is_map)];
                if *r == Some(0) {
                    continue;
                }
                if let Some(n) = r {
                    *n -= 1;
                }
                let id = self.next_ask + marks.len() as u64;
                let (nodes, racks) = if t.is_map {
                    let s = &self.spec.splits[t.index as usize];
                    // Not the nodes of a lost node's host.
                    let hosts = s
                        .hosts
                        .iter()
                        .filter(|h| {
                            !self
                                .lost_nodes
                                .iter()
                                .any(|n| n.starts_with(&format!("{h}:")))
                        })
                        .cloned()
                        .collect();
                    (
                        hosts,
                        s.racks
                            .iter()
                            .cloned()
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect(),
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                out.push(pb::ResourceAsk {
                    id,
                    priority: if t.is_map {
                        MAP_PRIORITY
                    } else {
                        REDUCE_PRIORITY
                    },
                    resource: Some(if t.is_map {
                        self.policy.map_resource
                    } else {
                        self.policy.reduce_resource
                    }),
                    count: 1,
                    nodes,
                    racks,
                    relax_locality: true,
                });
                marks.push((id, t.is_map, t.index, k));
            }
        }
        self.next_ask += marks.len() as u64;
        for (id, m, i, k) in marks {
            self.asks.insert(id, (m, i, k));
            let a = &mut self.task_mut(m, i).attempts[k];
            a.asked = true;
            a.ask_id = id;
        }
        out
    }

    /// A container the scheduler placed: the attempt to start in it, or
    /// `None` (released: nothing wants it any more).
    pub fn allocated(&mut self, c: &pb::Container, now: u64) -> Option<Launch> {
        let Some((m, i, k)) = self.asks.remove(&c.ask_id) else {
            self.releases.push(c.id.clone());
            return None;
        };
        let running = self.phase == Phase::Running;
        let t = self.task_mut(m, i);
        let task_done = t.done.is_some();
        let a = &mut t.attempts[k];
        if a.state != AState::Pending || !running || task_done {
            if a.state == AState::Pending {
                a.state = AState::Killed;
                a.diagnostics = "not needed any more".into();
            }
            self.releases.push(c.id.clone());
            return None;
        }
        a.state = AState::Starting;
        a.container = c.id.clone();
        a.node_id = c.node_id.clone();
        a.host = c
            .node_id
            .rsplit_once(':')
            .map_or(c.node_id.as_str(), |h| h.0)
            .to_string();
        a.locality = c.locality.clone();
        a.start_ms = now;
        a.last_progress_ms = now;
        let id = a.id.clone();
        self.by_container.insert(c.id.clone(), (m, i, k));
        self.job_counters.add(
            c::JOB,
            if m {
                c::TOTAL_LAUNCHED_MAPS
            } else {
                c::TOTAL_LAUNCHED_REDUCES
            },
            1,
        );
        Some(Launch {
            attempt_id: id,
            is_map: m,
            index: i,
            container: c.clone(),
        })
    }

    /// The node manager took the container.
    pub fn started(&mut self, attempt_id: &str, shuffle_port: Option<u16>, now: u64) {
        let Some(a) = self.attempt_mut(attempt_id) else {
            return;
        };
        if a.state == AState::Starting {
            a.state = AState::Running;
            a.last_progress_ms = now;
        }
        let node = a.node_id.clone();
        if let Some(p) = shuffle_port {
            self.shuffle_ports.insert(node, p);
        }
    }

    /// Ends an attempt that did not succeed; asks for another when the
    /// task may still run. A failure counts against the task's attempts,
    /// a kill does not.
    fn end_attempt(&mut self, attempt_id: &str, state: AState, why: String, now: u64) {
        let Some((m, i, k)) = self.find(attempt_id) else {
            return;
        };
        let max = if m {
            self.policy.map_attempts
        } else {
            self.policy.reduce_attempts
        };
        let t = self.task_mut(m, i);
        let a = &mut t.attempts[k];
        if !a.state.live() {
            return;
        }
        a.state = state;
        a.finish_ms = now;
        a.diagnostics = why.clone();
        let speculative_sibling_live = t.attempts.iter().any(|x| x.state.live());
        let done = t.done.is_some();
        if state == AState::Failed {
            t.failures += 1;
        }
        let failures = t.failures;
        // Kills do not count as failures, but a task whose containers are
        // lost or refused over and over must end some time.
        let kills = t
            .attempts
            .iter()
            .filter(|x| x.state == AState::Killed)
            .count() as u32;
        let tid = t.id.clone();
        self.job_counters.add(
            c::JOB,
            match (m, state) {
                (true, AState::Failed) => c::NUM_FAILED_MAPS,
                (false, AState::Failed) => c::NUM_FAILED_REDUCES,
                (true, _) => c::NUM_KILLED_MAPS,
                (false, _) => c::NUM_KILLED_REDUCES,
            },
            1,
        );
        if done || speculative_sibling_live || self.phase != Phase::Running {
            return;
        }
        if failures >= max {
            self.phase = Phase::Failed(format!(
                "task {tid} failed {failures} times; the last attempt: {why}"
            ));
            return;
        }
        if kills >= KILLS_PER_ATTEMPT * max {
            self.phase = Phase::Failed(format!(
                "task {tid} was stopped {kills} times without failing (its containers lost, refused or preempted); the last: {why}"
            ));
            return;
        }
        self.add_attempt(m, i, false);
    }

    /// A container ended (from the resource manager).
    pub fn completed(&mut self, s: &pb::ContainerStatus, now: u64) {
        let Some(&(m, i, k)) = self.by_container.get(&s.container_id) else {
            return;
        };
        let a = &self.task(m, i).attempts[k];
        if !a.state.live() {
            return;
        }
        let id = a.id.clone();
        let what = if s.diagnostics.is_empty() {
            format!(
                "its container {} ended with exit status {}",
                s.container_id,
                exit::name(s.exit_status)
            )
        } else {
            format!(
                "its container {} ended with exit status {}: {}",
                s.container_id,
                exit::name(s.exit_status),
                s.diagnostics
            )
        };
        let state = if exit::is_not_its_fault(s.exit_status)
            || s.exit_status == exit::KILLED_BY_RESOURCEMANAGER
        {
            AState::Killed
        } else {
            AState::Failed
        };
        self.end_attempt(&id, state, what, now);
    }

    /// The node manager would not start the container.
    pub fn start_failed(&mut self, attempt_id: &str, why: &str, now: u64) {
        self.end_attempt(
            attempt_id,
            AState::Killed,
            format!("its container did not start: {why}"),
            now,
        );
    }

    /// A progress report; the reply says whether the attempt is to stop.
    pub fn status(
        &mut self,
        attempt_id: &str,
        progress: f32,
        status: &str,
        counters: Counters,
        record: u64,
        now: u64,
    ) -> Option<String> {
        let over = self.phase != Phase::Running;
        // A reduce waiting for maps to finish is not hung.
        let waiting_for_maps = self.maps_done() < self.maps.len();
        let Some(a) = self.attempt_mut(attempt_id) else {
            return Some(format!("{attempt_id} is not an attempt of this job"));
        };
        let is_reduce = a.id.contains("_r_");
        match a.state {
            AState::Starting | AState::Running => {
                a.state = AState::Running;
                if progress > a.progress
                    || status != a.status
                    || record != a.record
                    || (is_reduce && waiting_for_maps)
                {
                    a.last_progress_ms = now;
                }
                a.progress = progress.clamp(0.0, 1.0);
                a.status = status.to_string();
                a.counters = counters;
                a.record = record;
                if over {
                    return Some("the job is over".into());
                }
                None
            }
            AState::Succeeded => None,
            _ => Some(if a.diagnostics.is_empty() {
                "this attempt was stopped".into()
            } else {
                a.diagnostics.clone()
            }),
        }
    }

    /// A reduce (or map-only map) attempt asks to commit: the first of a
    /// task's attempts to ask is granted, unless that one is gone.
    pub fn can_commit(&mut self, attempt_id: &str) -> bool {
        let Some((m, i, k)) = self.find(attempt_id) else {
            return false;
        };
        if self.phase != Phase::Running {
            return false;
        }
        let t = self.task_mut(m, i);
        if t.done.is_some() {
            return false;
        }
        if t.attempts
            .iter()
            .enumerate()
            .any(|(j, a)| j != k && a.commit_granted && a.state.live())
        {
            return false;
        }
        if !t.attempts[k].state.live() {
            return false;
        }
        t.attempts[k].commit_granted = true;
        true
    }

    /// An attempt finished. A map's output is announced to the reduces;
    /// other attempts of the task (backups) are killed.
    pub fn done(&mut self, attempt_id: &str, counters: Counters, now: u64) -> Result<(), String> {
        let Some((m, i, k)) = self.find(attempt_id) else {
            return Err(format!("{attempt_id} is not an attempt of this job"));
        };
        let port = {
            let a = &self.task(m, i).attempts[k];
            self.shuffle_ports.get(&a.node_id).copied()
        };
        let t = self.task_mut(m, i);
        if t.done.is_some() || !t.attempts[k].state.live() {
            let a = &mut t.attempts[k];
            if a.state.live() {
                a.state = AState::Killed;
                a.finish_ms = now;
                a.diagnostics = "another attempt of the task finished first".into();
            }
            return Err("another attempt of this task finished first".into());
        }
        // Output through the committer (reduces, and maps of a map-only
        // job): only the attempt granted the commit.
        let needs_commit = !m || self.reduces.is_empty();
        if needs_commit && !self.task(m, i).attempts[k].commit_granted {
            return Err("this attempt was not granted the commit".into());
        }
        let has_reduces = !self.reduces.is_empty();
        if m && has_reduces && port.is_none() {
            let node = self.task(m, i).attempts[k].node_id.clone();
            self.phase = Phase::Failed(format!(
                "node {node} runs no mapreduce_shuffle service, so reduces cannot fetch map output from it \
                 (set aux_services = [\"mapreduce_shuffle\"] on every node manager)"
            ));
            return Err("no shuffle service on this node".into());
        }
        let t = self.task_mut(m, i);
        t.done = Some(k);
        let a = &mut t.attempts[k];
        a.state = AState::Succeeded;
        a.progress = 1.0;
        a.finish_ms = now;
        a.counters = counters;
        if m && has_reduces {
            let addr = match port {
                Some(p) => format!("{}:{p}", a.host),
                None => String::new(),
            };
            a.shuffle_addr = addr.clone();
            let ev = MapEvent {
                map: i,
                attempt_id: a.id.clone(),
                shuffle_addr: addr,
                obsolete: false,
            };
            self.events.push(ev);
            self.newly_done_maps.push(i);
        }
        // Backups of the task: killed.
        let others: Vec<(String, String, String)> = self
            .task(m, i)
            .attempts
            .iter()
            .enumerate()
            .filter(|(j, a)| *j != k && a.state.live())
            .map(|(_, a)| (a.id.clone(), a.node_id.clone(), a.container.clone()))
            .collect();
        for (id, node, container) in others {
            if !container.is_empty() {
                self.to_stop.push((node, container));
            }
            self.kill_attempt(&id, "another attempt of the task finished first", now);
        }
        Ok(())
    }

    fn kill_attempt(&mut self, attempt_id: &str, why: &str, now: u64) {
        let Some(a) = self.attempt_mut(attempt_id) else {
            return;
        };
        if !a.state.live() {
            return;
        }
        a.state = AState::Killed;
        a.finish_ms = now;
        a.diagnostics = why.to_string();
        let m = a.id.contains("_m_");
        self.job_counters.add(
            c::JOB,
            if m {
                c::NUM_KILLED_MAPS
            } else {
                c::NUM_KILLED_REDUCES
            },
            1,
        );
    }

    /// An attempt reports its own failure.
    pub fn failed(&mut self, attempt_id: &str, why: &str, bad_record: u64, now: u64) {
        let Some((m, i, _)) = self.find(attempt_id) else {
            return;
        };
        // An attempt that lost the commit to another (a backup) did not
        // fail: it is killed, and counts nothing against the task.
        let t = self.task(m, i);
        let beaten = t.done.is_some()
            || t.attempts
                .iter()
                .any(|a| a.id != attempt_id && a.commit_granted && a.state.live());
        if beaten {
            self.kill_attempt(attempt_id, why, now);
            return;
        }
        if m && bad_record > 0 && self.policy.skip_records > 0 {
            let t = &mut self.maps[i as usize];
            // Skipping starts once the task has failed often enough.
            if t.failures + 1 >= self.policy.skip_after {
                t.skip.insert(bad_record - 1);
            }
        }
        self.end_attempt(attempt_id, AState::Failed, why.to_string(), now);
    }

    /// Re-runs a finished map whose output was lost: killed when its node
    /// went, failed (counted) when reduces could not fetch it.
    fn rerun_map(&mut self, i: u32, why: &str, failed: bool, now: u64) {
        let max = self.policy.map_attempts;
        let t = &mut self.maps[i as usize];
        let Some(k) = t.done.take() else { return };
        if failed {
            t.failures += 1;
        }
        let (failures, tid) = (t.failures, t.id.clone());
        let a = &mut t.attempts[k];
        a.state = if failed {
            AState::Failed
        } else {
            AState::Killed
        };
        a.finish_ms = now;
        a.diagnostics = why.to_string();
        t.fetch_failures = 0;
        let id = a.id.clone();
        for e in &mut self.events {
            if e.attempt_id == id {
                e.obsolete = true;
            }
        }
        self.events.push(MapEvent {
            map: i,
            attempt_id: id,
            shuffle_addr: String::new(),
            obsolete: true,
        });
        self.job_counters.add(
            c::JOB,
            if failed {
                c::NUM_FAILED_MAPS
            } else {
                c::NUM_KILLED_MAPS
            },
            1,
        );
        if failed && failures >= max {
            self.phase = Phase::Failed(format!(
                "task {tid} failed {failures} times; the last attempt: {why}"
            ));
            return;
        }
        self.add_attempt(true, i, false);
    }

    /// A reduce could not fetch a map's output. Three reports, or one
    /// when the map's node is gone, and the map runs again.
    pub fn fetch_failure(&mut self, map_attempt: &str, now: u64) {
        let Some((true, i, k)) = self.find(map_attempt) else {
            return;
        };
        let t = &mut self.maps[i as usize];
        if t.done != Some(k) {
            return;
        }
        t.fetch_failures += 1;
        let lost = self.lost_nodes.contains(&t.attempts[k].node_id);
        if t.fetch_failures >= 3 || lost {
            let n = t.fetch_failures;
            self.rerun_map(
                i,
                &format!("its output could not be fetched ({n} reports)"),
                !lost,
                now,
            );
        }
    }

    /// A node the resource manager lost: finished maps there run again
    /// while reduces still need them.
    pub fn node_lost(&mut self, node_id: &str, now: u64) {
        if !self.lost_nodes.insert(node_id.to_string()) {
            return;
        }
        if self.reduces.is_empty() || self.reduces_done() == self.reduces.len() {
            return;
        }
        let on_it: Vec<u32> = self
            .maps
            .iter()
            .filter(|t| t.done.is_some_and(|k| t.attempts[k].node_id == node_id))
            .map(|t| t.index)
            .collect();
        for i in on_it {
            self.rerun_map(i, &format!("its node {node_id} was lost"), false, now);
        }
    }

    /// Attempts that reported no progress for `mapreduce.task.timeout`:
    /// failed, their containers stopped.
    pub fn time_out(&mut self, now: u64) {
        let t = self.policy.timeout_ms;
        if t == 0 {
            return;
        }
        let mut hung = Vec::new();
        for task in self.maps.iter().chain(self.reduces.iter()) {
            for a in &task.attempts {
                if matches!(a.state, AState::Running | AState::Starting)
                    && now.saturating_sub(a.last_progress_ms) > t
                {
                    hung.push((a.id.clone(), a.node_id.clone(), a.container.clone()));
                }
            }
        }
        for (id, node, container) in hung {
            self.to_stop.push((node, container));
            self.end_attempt(
                &id,
                AState::Failed,
                format!("timed out after {t} ms without progress"),
                now,
            );
        }
    }

    /// Backup attempts for stragglers: a task whose only attempt has run
    /// well past the typical duration of its kind, and which at its pace
    /// would finish later than a fresh attempt would.
    pub fn speculate(&mut self, now: u64) {
        for is_map in [true, false] {
            let on = if is_map {
                self.policy.speculate_maps
            } else {
                self.policy.speculate_reduces
            };
            let tasks = if is_map { &self.maps } else { &self.reduces };
            if !on || tasks.is_empty() {
                continue;
            }
            let durations: Vec<u64> = tasks
                .iter()
                .filter_map(|t| t.done.map(|k| &t.attempts[k]))
                .filter(|a| !a.recovered && a.finish_ms > a.start_ms)
                .map(|a| a.finish_ms - a.start_ms)
                .collect();
            // Only near the end: most of the tasks done.
            if durations.is_empty() || durations.len() * 4 < tasks.len() * 3 {
                continue;
            }
            let mean = durations.iter().sum::<u64>() / durations.len() as u64;
            let running_backups = tasks
                .iter()
                .filter(|t| {
                    t.done.is_none() && t.attempts.iter().any(|a| a.speculative && a.state.live())
                })
                .count();
            let limit = (tasks.len() / 10).max(1);
            if running_backups >= limit {
                continue;
            }
            let mut pick = None;
            for t in tasks.iter().filter(|t| t.done.is_none()) {
                let live: Vec<&Attempt> = t.attempts.iter().filter(|a| a.state.live()).collect();
                if live.len() != 1 || live[0].state != AState::Running {
                    continue;
                }
                let a = live[0];
                let ran = now.saturating_sub(a.start_ms);
                if ran < mean.saturating_mul(3) / 2 + 1000 {
                    continue;
                }
                let p = f64::from(a.progress).max(0.01);
                let eta = (ran as f64 * (1.0 - p) / p) as u64;
                if eta > mean {
                    pick = Some(t.index);
                    break;
                }
            }
            if let Some(i) = pick {
                self.add_attempt(is_map, i, true);
            }
        }
    }

    /// Map-output events from `from` on.
    pub fn map_events(&self, from: usize) -> &[MapEvent] {
        &self.events[from.min(self.events.len())..]
    }

    /// The job's counters: every task's successful attempt, plus the job
    /// counters and the locality of the maps that count.
    pub fn counters(&self) -> Counters {
        let mut total = self.job_counters.clone();
        for t in self.maps.iter().chain(self.reduces.iter()) {
            if let Some(k) = t.done {
                let a = &t.attempts[k];
                total.merge(&a.counters);
                if t.is_map && !self.uber {
                    let name = match a.locality.as_str() {
                        "node-local" => c::DATA_LOCAL_MAPS,
                        "rack-local" => c::RACK_LOCAL_MAPS,
                        _ => c::OTHER_LOCAL_MAPS,
                    };
                    total.add(c::JOB, name, 1);
                }
            }
        }
        total
    }

    fn progress_of(tasks: &[Task]) -> f32 {
        if tasks.is_empty() {
            return 1.0;
        }
        tasks
            .iter()
            .map(|t| match t.done {
                Some(_) => 1.0,
                None => t
                    .attempts
                    .iter()
                    .filter(|a| a.state.live())
                    .map(|a| a.progress)
                    .fold(0.0, f32::max),
            })
            .sum::<f32>()
            / tasks.len() as f32
    }

    /// The job as the master sees it (progress between 0 and 1).
    pub fn progress(&self) -> f32 {
        let m = Self::progress_of(&self.maps);
        if self.reduces.is_empty() {
            return m;
        }
        (m + Self::progress_of(&self.reduces)) / 2.0
    }

    pub fn info(&self) -> JobInfo {
        let rec = |t: &Task| TaskRec {
            task_id: t.id.clone(),
            is_map: t.is_map,
            index: t.index,
            state: t.state().into(),
            attempts: t
                .attempts
                .iter()
                .map(|a| AttemptRec {
                    attempt_id: a.id.clone(),
                    state: a.state.name().into(),
                    node: a.node_id.clone(),
                    container: a.container.clone(),
                    locality: a.locality.clone(),
                    speculative: a.speculative,
                    start_ms: a.start_ms,
                    finish_ms: a.finish_ms,
                    progress: a.progress,
                    status: a.status.clone(),
                    diagnostics: a.diagnostics.clone(),
                })
                .collect(),
        };
        let (state, diagnostics) = match &self.phase {
            Phase::Running => ("RUNNING", String::new()),
            Phase::Succeeded if self.already_committed => (
                "SUCCEEDED",
                "committed by an earlier attempt of the master, which ended before it said so (its counters are lost)".to_string(),
            ),
            Phase::Succeeded => ("SUCCEEDED", String::new()),
            Phase::Failed(d) => ("FAILED", d.clone()),
            Phase::Killed(d) => ("KILLED", d.clone()),
        };
        JobInfo {
            job_id: self.job_id.clone(),
            app_id: self.app_id.clone(),
            name: self.spec.name(),
            user: self.spec.user.clone(),
            queue: self.spec.conf.str(conf::QUEUE).to_string(),
            job: self.spec.job.clone(),
            output: self.spec.output.clone(),
            state: state.into(),
            diagnostics,
            maps: self.maps.len() as u32,
            reduces: self.reduces.len() as u32,
            maps_done: self.maps_done() as u32,
            reduces_done: self.reduces_done() as u32,
            map_progress: Self::progress_of(&self.maps),
            reduce_progress: Self::progress_of(&self.reduces),
            submit_ms: self.submit_ms,
            start_ms: self.start_ms,
            finish_ms: self.finish_ms,
            am_attempt: self.am_attempt,
            uber: self.uber,
            counters: self.counters(),
            tasks: self
                .maps
                .iter()
                .chain(self.reduces.iter())
                .map(rec)
                .collect(),
        }
    }

    /// Every live attempt's container (to stop when the job ends).
    pub fn live_containers(&self) -> Vec<(String, String)> {
        self.maps
            .iter()
            .chain(self.reduces.iter())
            .flat_map(|t| t.attempts.iter())
            .filter(|a| {
                matches!(a.state, AState::Starting | AState::Running) && !a.container.is_empty()
            })
            .map(|a| (a.node_id.clone(), a.container.clone()))
            .collect()
    }

    /// Whether a failure of a map task's next attempt would name a record
    /// to skip (as `failed` decides).
    pub fn skip_mode(&self, is_map: bool, i: u32) -> bool {
        is_map
            && self.policy.skip_records > 0
            && self.maps[i as usize].failures + 1 >= self.policy.skip_after
    }

    /// Skipped records of a map task (for its next attempt).
    pub fn skips(&self, is_map: bool, i: u32) -> Vec<u64> {
        if !is_map {
            return Vec::new();
        }
        self.maps[i as usize].skip.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Split;

    fn job(maps: u32, reduces: u32, set: &[(&str, &str)]) -> JobState {
        let mut spec = JobSpec {
            job: "wordcount".into(),
            output: "/out".into(),
            ..Default::default()
        };
        spec.conf.set(conf::REDUCES, reduces.to_string());
        spec.conf.set(conf::SLOWSTART, "1");
        for (k, v) in set {
            spec.conf.set(k, *v);
        }
        spec.splits = (0..maps)
            .map(|i| Split {
                path: "/in".into(),
                start: u64::from(i) * 100,
                len: 100,
                file_len: 100 * u64::from(maps),
                hosts: vec![format!("10.0.0.{}", i + 1)],
                racks: vec!["/r1".into()],
            })
            .collect();
        JobState::new(spec, "job_1_0001", "application_1_0001", 1, 0)
    }

    fn container(id: &str, ask: u64, node: &str) -> pb::Container {
        pb::Container {
            id: id.into(),
            node_id: node.into(),
            ask_id: ask,
            locality: "node-local".into(),
            ..Default::default()
        }
    }

    fn counters(n: i64) -> Counters {
        let mut c = Counters::default();
        c.add(c::TASK, c::MAP_INPUT_RECORDS, n);
        c
    }

    /// Asks, allocates, starts and finishes every pending attempt of one
    /// kind; returns their attempt ids.
    fn run_all(s: &mut JobState, now: u64, node_of: impl Fn(u32) -> String) -> Vec<String> {
        let asks = s.asks();
        let mut ids = Vec::new();
        for a in asks {
            let (m, i, _) = s.asks[&a.id];
            let l = s
                .allocated(&container(&format!("c{}", a.id), a.id, &node_of(i)), now)
                .expect("wanted");
            s.started(&l.attempt_id, Some(13562), now);
            assert_eq!(l.is_map, m);
            ids.push(l.attempt_id);
        }
        ids
    }

    #[test]
    fn maps_ask_for_their_block_then_reduces_after_the_maps() {
        let mut s = job(2, 1, &[]);
        let asks = s.asks();
        assert_eq!(asks.len(), 2, "reduces wait for the maps (slow start 1)");
        assert_eq!(asks[0].nodes, vec!["10.0.0.1".to_string()]);
        assert_eq!(asks[0].priority, MAP_PRIORITY);
        assert!(s.asks().is_empty(), "nothing is asked twice");
        for a in asks {
            let (_, i, _) = s.asks[&a.id];
            let l = s
                .allocated(
                    &container(&format!("c{i}"), a.id, &format!("10.0.0.{}:8041", i + 1)),
                    5,
                )
                .unwrap();
            s.started(&l.attempt_id, Some(13562), 5);
            s.done(&l.attempt_id, counters(10), 9).unwrap();
        }
        assert_eq!(s.events.len(), 2);
        assert_eq!(s.events[0].shuffle_addr, "10.0.0.1:13562");
        let r = s.asks();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].priority, REDUCE_PRIORITY);
        let l = s
            .allocated(&container("cr", r[0].id, "10.0.0.2:8041"), 10)
            .unwrap();
        s.started(&l.attempt_id, None, 10);
        assert!(
            s.done(&l.attempt_id, Counters::default(), 11).is_err(),
            "a reduce must be granted the commit first"
        );
        assert!(s.can_commit(&l.attempt_id));
        s.done(&l.attempt_id, Counters::default(), 12).unwrap();
        assert!(s.complete());
        let c = s.counters();
        assert_eq!(c.get(c::TASK, c::MAP_INPUT_RECORDS), 20);
        assert_eq!(c.get(c::JOB, c::DATA_LOCAL_MAPS), 2);
        assert_eq!(c.get(c::JOB, c::TOTAL_LAUNCHED_MAPS), 2);
    }

    #[test]
    fn failures_retry_up_to_the_limit_and_kills_do_not_count() {
        let mut s = job(1, 0, &[(conf::MAP_ATTEMPTS, "2")]);
        let ids = run_all(&mut s, 1, |_| "n:1".into());
        // Lost with its node: not its fault, asked again.
        s.completed(
            &pb::ContainerStatus {
                container_id: "c1".into(),
                exit_status: exit::ABORTED,
                ..Default::default()
            },
            2,
        );
        assert_eq!(s.maps[0].failures, 0);
        let ids2 = run_all(&mut s, 3, |_| "n:2".into());
        assert_ne!(ids, ids2);
        s.failed(&ids2[0], "boom", 0, 4);
        assert_eq!(s.maps[0].failures, 1);
        assert_eq!(s.phase, Phase::Running);
        let ids3 = run_all(&mut s, 5, |_| "n:3".into());
        s.completed(
            &pb::ContainerStatus {
                container_id: format!("c{}", s.maps[0].attempts[2].ask_id),
                exit_status: 1,
                ..Default::default()
            },
            6,
        );
        let _ = ids3;
        assert!(
            matches!(&s.phase, Phase::Failed(d) if d.contains("failed 2 times")),
            "{:?}",
            s.phase
        );
        let c = s.counters();
        assert_eq!(c.get(c::JOB, c::NUM_FAILED_MAPS), 2);
        assert_eq!(c.get(c::JOB, c::NUM_KILLED_MAPS), 1);
        assert_eq!(
            c.get(c::TASK, c::MAP_INPUT_RECORDS),
            0,
            "failed attempts count nothing"
        );
    }

    #[test]
    fn hung_attempts_time_out_and_stragglers_get_one_backup() {
        let mut s = job(8, 0, &[(conf::TASK_TIMEOUT, "1000")]);
        let ids = run_all(&mut s, 0, |i| format!("n:{i}"));
        // Seven finish in 2 s; the eighth reports little progress.
        for id in &ids[..7] {
            assert!(s.can_commit(id));
            s.done(id, counters(1), 2000).unwrap();
        }
        s.status(&ids[7], 0.05, "slow", Counters::default(), 0, 2000);
        s.speculate(2500);
        assert_eq!(
            s.maps[7].attempts.len(),
            1,
            "not yet: it has run only 2.5 s"
        );
        s.status(&ids[7], 0.1, "slow", Counters::default(), 0, 4500);
        s.speculate(4500);
        assert_eq!(s.maps[7].attempts.len(), 2, "a backup");
        assert!(s.maps[7].attempts[1].speculative);
        s.speculate(4600);
        assert_eq!(s.maps[7].attempts.len(), 2, "one backup at a time");
        // The backup wins; the original is stopped.
        let b = run_all(&mut s, 4700, |_| "n:9".into());
        assert!(s.can_commit(&b[0]));
        assert!(!s.can_commit(&ids[7]), "one commit per task");
        s.done(&b[0], counters(1), 5000).unwrap();
        assert_eq!(s.maps[7].attempts[0].state, AState::Killed);
        assert!(s.to_stop.iter().any(|(n, _)| n == "n:7"));
        assert!(s.complete());
        assert_eq!(s.counters().get(c::TASK, c::MAP_INPUT_RECORDS), 8);

        // No progress for longer than the timeout: failed and stopped.
        let mut s = job(1, 0, &[(conf::TASK_TIMEOUT, "1000")]);
        let ids = run_all(&mut s, 0, |_| "n:1".into());
        s.status(&ids[0], 0.5, "", Counters::default(), 0, 500);
        s.time_out(1400);
        assert_eq!(s.maps[0].attempts[0].state, AState::Running);
        s.status(&ids[0], 0.5, "", Counters::default(), 0, 1400);
        s.time_out(2600);
        assert_eq!(s.maps[0].attempts[0].state, AState::Failed);
        assert!(s.maps[0].attempts[0].diagnostics.contains("timed out"));
        assert_eq!(s.maps[0].attempts.len(), 2, "another attempt");
    }

    #[test]
    fn finished_maps_of_a_lost_node_or_unfetchable_run_again() {
        let mut s = job(2, 1, &[]);
        let ids = run_all(&mut s, 0, |i| format!("10.0.0.{}:8041", i + 1));
        for id in &ids {
            s.done(id, counters(5), 1).unwrap();
        }
        s.node_lost("10.0.0.1:8041", 2);
        assert!(s.maps[0].done.is_none(), "map 0 runs again");
        assert!(s
            .events
            .iter()
            .any(|e| e.attempt_id == ids[0] && e.obsolete));
        assert_eq!(s.maps[0].failures, 0, "a lost node is not the map's fault");
        let again = s.asks();
        assert!(
            again.iter().any(|a| a.nodes.is_empty()),
            "not asked on the lost node: {again:?}"
        );
        // Reports of a map that cannot be fetched: the third re-runs it.
        for _ in 0..2 {
            s.fetch_failure(&ids[1], 3);
        }
        assert!(s.maps[1].done.is_some());
        s.fetch_failure(&ids[1], 3);
        assert!(s.maps[1].done.is_none());
        assert_eq!(s.maps[1].failures, 1);
        assert_eq!(
            s.counters().get(c::TASK, c::MAP_INPUT_RECORDS),
            0,
            "re-run maps count again only when done"
        );
    }

    #[test]
    fn a_restarted_master_keeps_what_finished_and_numbers_attempts_apart() {
        let mut spec = job(2, 1, &[]).spec;
        spec.conf.set(conf::SLOWSTART, "0");
        let mut s = JobState::new(spec, "job_1_0001", "application_1_0001", 2, 0);
        s.recover(
            true,
            0,
            &crate::child::TaskRecord {
                attempt_id: "attempt_1_0001_m_000000_0".into(),
                node_id: "10.0.0.1:8041".into(),
                shuffle_addr: "10.0.0.1:13562".into(),
                locality: "node-local".into(),
                counters: counters(7),
            },
        );
        assert_eq!(s.maps_done(), 1);
        assert_eq!(s.events.len(), 1);
        let asks = s.asks();
        assert_eq!(asks.len(), 2, "map 1 and the reduce");
        assert!(
            s.maps[1].attempts[0].id.ends_with("_1000"),
            "{}",
            s.maps[1].attempts[0].id
        );
        assert_eq!(s.counters().get(c::TASK, c::MAP_INPUT_RECORDS), 7);
    }
}

#[cfg(test)]
mod skip_tests {
    use super::*;

    #[test]
    fn a_record_that_keeps_crashing_is_skipped_once_skipping_is_on() {
        let mut spec = JobSpec {
            job: "wordcount".into(),
            ..Default::default()
        };
        spec.conf.set(conf::REDUCES, "0");
        spec.conf.set(conf::SKIP_MAX_RECORDS, "1");
        spec.conf.set(conf::SKIP_START_ATTEMPTS, "2");
        spec.splits = vec![crate::io::Split::default()];
        let mut s = JobState::new(spec, "job_1_0001", "application_1_0001", 1, 0);
        let id0 = s.maps[0].attempts[0].id.clone();
        assert!(!s.skip_mode(true, 0));
        // The first failure on record 41: not skipped yet, but the next
        // attempt's failure will be (it is told so).
        s.failed(&id0, "crashed", 42, 1);
        assert!(s.skips(true, 0).is_empty());
        assert!(s.skip_mode(true, 0));
        let id1 = s.maps[0].attempts[1].id.clone();
        s.failed(&id1, "crashed", 42, 2);
        assert_eq!(s.skips(true, 0), vec![41], "the next attempt skips it");
        assert_eq!(s.phase, Phase::Running);
        // Skipping off (Hadoop's default): never.
        let mut spec = s.spec.clone();
        spec.conf.set(conf::SKIP_MAX_RECORDS, "0");
        let mut s = JobState::new(spec, "job_1_0001", "application_1_0001", 1, 0);
        for k in 0..2 {
            let id = s.maps[0].attempts[k].id.clone();
            s.failed(&id, "crashed", 42, 1);
        }
        assert!(s.skips(true, 0).is_empty());
        assert!(!s.skip_mode(true, 0));
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn the_running_map_limit_holds_asks_back() {
        let mut spec = JobSpec {
            job: "wordcount".into(),
            ..Default::default()
        };
        spec.conf.set(conf::REDUCES, "0");
        spec.conf.set(conf::RUNNING_MAP_LIMIT, "2");
        spec.splits = vec![crate::io::Split::default(); 5];
        let mut s = JobState::new(spec, "job_1_0001", "application_1_0001", 1, 0);
        let a = s.asks();
        assert_eq!(a.len(), 2);
        assert!(s.asks().is_empty(), "two held already");
        let c = pb::Container {
            id: "c1".into(),
            node_id: "n:1".into(),
            ask_id: a[0].id,
            ..Default::default()
        };
        let l = s.allocated(&c, 1).unwrap();
        s.started(&l.attempt_id, None, 1);
        assert!(s.asks().is_empty(), "still two: one running, one asked");
        assert!(s.can_commit(&l.attempt_id));
        s.done(&l.attempt_id, Counters::default(), 2).unwrap();
        assert_eq!(s.asks().len(), 1, "one more once one finished");
    }
}
