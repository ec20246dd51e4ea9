//! The scheduler: the state every policy shares (nodes, applications,
//! their asks, containers) and the allocation cycle, with the policy
//! (FIFO, capacity, fair) behind one trait. Deterministic and free of I/O:
//! the resource manager, the tests and `hstack bench scheduler` drive the
//! same code, and time is what the caller says it is (`now_ms`).
//!
//! The allocation cycle runs on a node's heartbeat (`node_update`): while
//! the node has room for the smallest allocation, the policy names the
//! application to serve next, the application's asks are searched for
//! one that may go on this node (node-local, then rack-local, then
//! anywhere, as delay scheduling allows), and the policy's limits (queue
//! maximum, user limit, application-master share) admit it or not. An
//! application that can use nothing on this node is passed over for the
//! rest of the heartbeat.

pub mod queues;

mod capacity;
mod fair;
mod fifo;
#[cfg(test)]
mod tests;
mod tree;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use hstack_proto::{Code, Error};
use smallvec::SmallVec;

use crate::records::{AppId, Ask, AttemptId, ContainerId, Locality, Resource};
pub use queues::{QueueDefaults, QueueTree, SchedulerKind};

/// A node's index in the scheduler (stable while the scheduler lives).
pub type NodeIdx = u32;

/// The ask id of an application master's own container.
pub const AM_ASK: u64 = u64::MAX;

/// What the scheduler is built from (the resource manager's config,
/// resolved).
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub kind: SchedulerKind,
    pub queues: QueueTree,
    /// Asks are rounded up to multiples of this memory, and at least
    /// this many vcores.
    pub min_allocation: Resource,
    /// An ask above this is refused.
    pub max_allocation: Resource,
    /// Missed scheduling opportunities a node-local ask waits before it
    /// takes its rack (capped at the number of live nodes).
    pub node_locality_delay: u32,
    /// Further missed opportunities before it takes any node (capped the
    /// same way).
    pub rack_locality_delay: u32,
    /// Fair: preempt containers of over-share applications for a queue
    /// starved past its timeout.
    pub preemption: bool,
    /// Fair: a queue below this fraction of its fair share is starved.
    pub fair_share_preemption_threshold: f64,
}

/// A node manager as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct Node {
    /// `host:port` of its RPC server, YARN's NodeId.
    pub id: String,
    pub host: String,
    pub rack: String,
    rack_idx: u32,
    pub capacity: Resource,
    pub used: Resource,
    pub alive: bool,
    pub containers: HashSet<ContainerId>,
}

impl Node {
    pub fn free(&self) -> Resource {
        self.capacity.saturating_sub(self.used)
    }
}

/// A container the scheduler allocated.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub id: ContainerId,
    pub node: NodeIdx,
    pub resource: Resource,
    pub priority: i32,
    /// The ask it satisfied (`AM_ASK` for an application master).
    pub ask_id: u64,
    pub is_am: bool,
    pub locality: Locality,
    /// Missed scheduling opportunities of its ask's priority when it was
    /// placed (what delay scheduling counted).
    pub opportunities: u32,
    pub allocated_ms: u64,
}

/// An ask as filed: normalized, with how many are still wanted.
#[derive(Clone, Debug)]
struct AskEntry {
    ask: Ask,
    outstanding: u32,
    /// Racks it is local to: those named and those of the nodes named.
    racks: SmallVec<[u32; 4]>,
    /// The racks it named itself.
    named_racks: SmallVec<[u32; 4]>,
    is_am: bool,
}

/// An application's asks at one priority, indexed for the cycle.
#[derive(Clone, Debug, Default)]
struct PrioAsks {
    /// By host name or node id named.
    by_host: HashMap<String, BTreeSet<u64>>,
    /// Asks that named the rack itself and no node: local at once.
    rack_named: HashMap<u32, BTreeSet<u64>>,
    /// Asks local to the rack through a node they named: after a delay.
    rack_of_nodes: HashMap<u32, BTreeSet<u64>>,
    /// Asks with no locality at all.
    anywhere: BTreeSet<u64>,
    /// Asks with locality that may relax to any node after the delays.
    relaxed: BTreeSet<u64>,
    /// A lower bound of every ask's resource here (skip the priority on a
    /// node without room for it).
    smallest: Resource,
    /// Missed scheduling opportunities (delay scheduling).
    missed: u32,
}

/// An application as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct App {
    pub id: AppId,
    pub attempt: AttemptId,
    /// Its leaf queue's index in the queue tree.
    pub queue: usize,
    pub user: String,
    /// Application priority: higher first (FIFO, capacity).
    pub priority: i32,
    /// Submission order.
    pub order: u64,
    pub used: Resource,
    pub am_used: Resource,
    /// Outstanding asks' resources in total.
    pub pending: Resource,
    pub containers: BTreeSet<ContainerId>,
    next_seq: u64,
    asks: HashMap<u64, AskEntry>,
    prios: BTreeMap<i32, PrioAsks>,
}

impl App {
    pub fn has_demand(&self) -> bool {
        !self.pending.is_zero()
    }

    /// Whether its application master's container is still to be placed.
    pub fn wants_am(&self) -> bool {
        self.asks.get(&AM_ASK).is_some_and(|a| a.outstanding > 0)
    }

    pub fn outstanding(&self) -> u64 {
        self.asks.values().map(|a| u64::from(a.outstanding)).sum()
    }
}

/// A queue's state for reports (`hstack queue list`, the REST view).
#[derive(Clone, Debug, serde::Serialize)]
pub struct QueueInfo {
    pub path: String,
    pub leaf: bool,
    /// Guaranteed share of the cluster (capacity), or fair share (fair).
    pub capacity: f64,
    pub max_capacity: f64,
    /// Used share of the cluster (dominant resource).
    pub used_share: f64,
    pub used: Resource,
    pub pending: Resource,
    pub apps: usize,
    pub weight: f64,
    pub min_share: Resource,
    /// Fair: the queue's instantaneous fair share, as a share of the cluster.
    pub fair_share: f64,
    /// Fair: how long (ms) it has been starved, if it is.
    pub starved_ms: Option<u64>,
}

/// The state every policy reads.
pub struct Core {
    pub cfg: SchedulerConfig,
    pub nodes: Vec<Node>,
    by_id: HashMap<String, NodeIdx>,
    by_host: HashMap<String, SmallVec<[NodeIdx; 2]>>,
    racks: Vec<String>,
    rack_idx: HashMap<String, u32>,
    pub apps: HashMap<AppId, App>,
    pub containers: HashMap<ContainerId, Container>,
    /// Resources of live nodes.
    pub total: Resource,
    pub used: Resource,
    live_nodes: u32,
    next_order: u64,
    /// Containers chosen for preemption and not yet finished.
    pub preempting: HashSet<ContainerId>,
    pub now_ms: u64,
}

impl Core {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.by_id.get(id).map(|i| &self.nodes[*i as usize])
    }

    pub fn app(&self, id: AppId) -> Option<&App> {
        self.apps.get(&id)
    }

    pub fn live_nodes(&self) -> u32 {
        self.live_nodes
    }

    fn rack(&mut self, name: &str) -> u32 {
        if let Some(i) = self.rack_idx.get(name) {
            return *i;
        }
        let i = self.racks.len() as u32;
        self.racks.push(name.to_string());
        self.rack_idx.insert(name.to_string(), i);
        i
    }

    /// The racks of the live or known nodes on `host` (a host name or a
    /// node id).
    fn racks_of_host(&self, host: &str) -> SmallVec<[u32; 2]> {
        let mut out = SmallVec::new();
        if let Some(i) = self.by_id.get(host) {
            out.push(self.nodes[*i as usize].rack_idx);
        }
        if let Some(ns) = self.by_host.get(host) {
            for i in ns {
                let r = self.nodes[*i as usize].rack_idx;
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
        out
    }

    fn delays(&self) -> (u32, u32) {
        let n = self.live_nodes.max(1);
        (
            self.cfg.node_locality_delay.min(n),
            self.cfg.rack_locality_delay.min(n),
        )
    }
}

/// A policy: the order applications are served in, and the limits that
/// admit a container. One per scheduler kind.
pub(crate) trait Policy: Send {
    fn kind(&self) -> SchedulerKind;
    /// A new application (already in `core.apps`).
    fn add_app(&mut self, core: &Core, app: AppId);
    /// An application leaving (its containers were released first).
    fn remove_app(&mut self, core: &Core, app: &App);
    /// Its outstanding asks changed (perhaps to none, or from none).
    fn demand_changed(&mut self, core: &Core, app: AppId);
    /// A container of `app` was placed (`core` already counts it).
    fn allocated(&mut self, core: &Core, app: AppId, c: &Container);
    /// A container of `app` finished or was released (`core` no longer
    /// counts it).
    fn released(&mut self, core: &Core, app: AppId, c: &Container);
    /// Nodes came or went (the cluster's size changed).
    fn cluster_changed(&mut self, core: &Core);
    /// A node's heartbeat begins: forget who was passed over.
    fn begin_node(&mut self, core: &Core, node: NodeIdx);
    /// The application to serve next on the node, if any.
    fn pick(&mut self, core: &Core) -> Option<AppId>;
    /// `app` can use nothing more on this node this heartbeat.
    fn pass_over(&mut self, core: &Core, app: AppId);
    /// Whether the policy's limits let `app` take `r` now.
    fn admits(&self, core: &Core, app: AppId, r: Resource, is_am: bool) -> bool;
    /// Containers to preempt now, if the policy preempts.
    fn preempt(&mut self, _core: &Core) -> Vec<ContainerId> {
        Vec::new()
    }
    fn queue_infos(&self, core: &Core) -> Vec<QueueInfo>;
}

/// The scheduler the resource manager drives.
pub struct Scheduler {
    core: Core,
    policy: Box<dyn Policy>,
}

fn invalid_request(m: String) -> Error {
    Error::new(Code::InvalidResourceRequest, m)
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Scheduler {
        let policy: Box<dyn Policy> = match cfg.kind {
            SchedulerKind::Fifo => Box::new(fifo::Fifo::default()),
            SchedulerKind::Capacity => Box::new(capacity::Capacity::new(&cfg.queues)),
            SchedulerKind::Fair => Box::new(fair::Fair::new(&cfg.queues)),
        };
        Scheduler {
            core: Core {
                cfg,
                nodes: Vec::new(),
                by_id: HashMap::new(),
                by_host: HashMap::new(),
                racks: Vec::new(),
                rack_idx: HashMap::new(),
                apps: HashMap::new(),
                containers: HashMap::new(),
                total: Resource::ZERO,
                used: Resource::ZERO,
                live_nodes: 0,
                next_order: 0,
                preempting: HashSet::new(),
                now_ms: 0,
            },
            policy,
        }
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn kind(&self) -> SchedulerKind {
        self.policy.kind()
    }

    pub fn set_now(&mut self, now_ms: u64) {
        self.core.now_ms = now_ms;
    }

    /// A node joins (or rejoins with new resources). Its index.
    pub fn add_node(&mut self, id: &str, host: &str, rack: &str, capacity: Resource) -> NodeIdx {
        let c = &mut self.core;
        let rack_idx = c.rack(rack);
        let idx = match c.by_id.get(id) {
            Some(i) => {
                let n = &mut c.nodes[*i as usize];
                if n.alive {
                    c.total -= n.capacity;
                    c.live_nodes -= 1;
                }
                n.capacity = capacity;
                n.rack = rack.to_string();
                n.rack_idx = rack_idx;
                n.host = host.to_string();
                n.alive = true;
                *i
            }
            None => {
                let i = c.nodes.len() as NodeIdx;
                c.nodes.push(Node {
                    id: id.to_string(),
                    host: host.to_string(),
                    rack: rack.to_string(),
                    rack_idx,
                    capacity,
                    used: Resource::ZERO,
                    alive: true,
                    containers: HashSet::new(),
                });
                c.by_id.insert(id.to_string(), i);
                let on_host = c.by_host.entry(host.to_string()).or_default();
                if !on_host.contains(&i) {
                    on_host.push(i);
                }
                i
            }
        };
        c.total += capacity;
        c.live_nodes += 1;
        self.policy.cluster_changed(&self.core);
        idx
    }

    /// A node is lost or leaves: its containers are gone (returned, for
    /// their applications to hear of).
    pub fn remove_node(&mut self, id: &str) -> Vec<Container> {
        let Some(&i) = self.core.by_id.get(id) else {
            return Vec::new();
        };
        let ids: Vec<ContainerId> = {
            let n = &mut self.core.nodes[i as usize];
            if !n.alive {
                return Vec::new();
            }
            n.alive = false;
            n.containers.iter().copied().collect()
        };
        let mut lost: Vec<Container> = ids
            .into_iter()
            .filter_map(|c| self.finish_container(c))
            .collect();
        lost.sort_by_key(|c| c.id);
        let c = &mut self.core;
        let n = &c.nodes[i as usize];
        c.total -= n.capacity;
        c.live_nodes -= 1;
        self.policy.cluster_changed(&self.core);
        lost
    }

    /// Files a new application under its leaf queue (full path or unique
    /// short name). Nothing is filed on an error.
    pub fn add_app(
        &mut self,
        attempt: AttemptId,
        queue: &str,
        user: &str,
        priority: i32,
    ) -> Result<(), Error> {
        let app = attempt.app;
        if self.core.apps.contains_key(&app) {
            return Err(Error::new(
                Code::AlreadyExists,
                format!("{app} is already scheduled"),
            ));
        }
        let q = self.leaf(queue)?;
        let order = self.core.next_order;
        self.core.next_order += 1;
        self.core.apps.insert(
            app,
            App {
                id: app,
                attempt,
                queue: q,
                user: user.to_string(),
                priority,
                order,
                used: Resource::ZERO,
                am_used: Resource::ZERO,
                pending: Resource::ZERO,
                containers: BTreeSet::new(),
                next_seq: 1,
                asks: HashMap::new(),
                prios: BTreeMap::new(),
            },
        );
        self.policy.add_app(&self.core, app);
        Ok(())
    }

    /// The queue path an application would be filed under (a check at
    /// submission, before anything is stored).
    pub fn resolve_queue(&self, queue: &str) -> Result<String, Error> {
        let q = self.leaf(queue)?;
        Ok(self.core.cfg.queues.queues[q].path.clone())
    }

    fn leaf(&self, queue: &str) -> Result<usize, Error> {
        self.core
            .cfg
            .queues
            .resolve_leaf(queue)
            .map_err(|m| Error::new(Code::UnknownQueue, m))
    }

    /// A new attempt of `app` starts: the old attempt's asks are dropped
    /// and container numbers start again at 1. The old attempt's
    /// containers are returned for the caller to stop (YARN does not keep
    /// them across attempts by default).
    pub fn new_attempt(&mut self, attempt: AttemptId) -> Result<Vec<ContainerId>, Error> {
        let app = attempt.app;
        let Some(a) = self.core.apps.get_mut(&app) else {
            return Err(not_found(app));
        };
        a.attempt = attempt;
        a.next_seq = 1;
        a.asks.clear();
        a.prios.clear();
        a.pending = Resource::ZERO;
        let old: Vec<ContainerId> = a.containers.iter().copied().collect();
        self.policy.demand_changed(&self.core, app);
        Ok(old)
    }

    /// Removes an application; returns its containers still running, for
    /// the caller to stop.
    pub fn remove_app(&mut self, app: AppId) -> Vec<Container> {
        let Some(ids) = self
            .core
            .apps
            .get(&app)
            .map(|a| a.containers.iter().copied().collect::<Vec<_>>())
        else {
            return Vec::new();
        };
        let running: Vec<Container> = ids
            .into_iter()
            .filter_map(|c| self.finish_container(c))
            .collect();
        if let Some(a) = self.core.apps.remove(&app) {
            self.policy.remove_app(&self.core, &a);
        }
        running
    }

    /// Checks an ask and brings it to the scheduler's granularity.
    pub fn normalize(&self, ask: &Ask) -> Result<Resource, Error> {
        let cfg = &self.core.cfg;
        let r = ask.resource;
        if !r.is_positive() {
            return Err(invalid_request(format!(
                "ask {}: {r} asks for no memory or no vcores; both must be above 0",
                ask.id
            )));
        }
        let step = cfg.min_allocation.memory_mb.max(1);
        let n = Resource::new(
            r.memory_mb.div_ceil(step).saturating_mul(step),
            r.vcores.max(cfg.min_allocation.vcores),
        );
        if !n.fits_in(cfg.max_allocation) {
            return Err(invalid_request(format!(
                "ask {}: {r} is above the maximum allocation {}",
                ask.id, cfg.max_allocation
            )));
        }
        Ok(n)
    }

    /// Replaces the asks of `app` with the same ids (count 0 cancels).
    /// All are checked before any is filed: one bad ask files none.
    pub fn update_asks(&mut self, app: AppId, asks: &[Ask]) -> Result<(), Error> {
        self.update_asks_inner(app, asks, false)
    }

    /// Asks for the application master's container.
    pub fn ask_for_am(&mut self, app: AppId, resource: Resource) -> Result<(), Error> {
        let ask = Ask {
            id: AM_ASK,
            priority: 0,
            resource,
            count: 1,
            nodes: vec![],
            racks: vec![],
            relax_locality: true,
        };
        self.update_asks_inner(app, &[ask], true)
    }

    fn update_asks_inner(&mut self, app: AppId, asks: &[Ask], is_am: bool) -> Result<(), Error> {
        if !self.core.apps.contains_key(&app) {
            return Err(not_found(app));
        }
        let mut normalized = Vec::with_capacity(asks.len());
        for a in asks {
            if a.id == AM_ASK && !is_am {
                return Err(Error::new(
                    Code::InvalidArgument,
                    format!("ask id {AM_ASK} is the application master's own"),
                ));
            }
            if a.count > 1_000_000 {
                return Err(invalid_request(format!(
                    "ask {}: {} containers in one ask is more than 1,000,000",
                    a.id, a.count
                )));
            }
            let mut a2 = a.clone();
            a2.resource = self.normalize(a)?;
            normalized.push(a2);
        }
        for a in normalized {
            let racks: SmallVec<[u32; 4]> = {
                let c = &mut self.core;
                let mut r: SmallVec<[u32; 4]> = a.racks.iter().map(|n| c.rack(n)).collect();
                for h in &a.nodes {
                    for x in c.racks_of_host(h) {
                        if !r.contains(&x) {
                            r.push(x);
                        }
                    }
                }
                r
            };
            let Some(app_state) = self.core.apps.get_mut(&app) else {
                break;
            };
            unfile(app_state, a.id);
            if a.count > 0 {
                file(app_state, a, racks, is_am, &self.core.rack_idx);
            }
        }
        self.policy.demand_changed(&self.core, app);
        Ok(())
    }

    /// Marks a finished (or released, lost, preempted) container's
    /// resources free; `None` if it was not allocated (already finished).
    pub fn finish_container(&mut self, id: ContainerId) -> Option<Container> {
        let c = self.core.containers.remove(&id)?;
        self.core.preempting.remove(&id);
        let core = &mut self.core;
        let n = &mut core.nodes[c.node as usize];
        n.used -= c.resource;
        n.containers.remove(&id);
        core.used -= c.resource;
        if let Some(a) = core.apps.get_mut(&id.app()) {
            a.used -= c.resource;
            if c.is_am {
                a.am_used -= c.resource;
            }
            a.containers.remove(&id);
        }
        self.policy.released(&self.core, id.app(), &c);
        Some(c)
    }

    /// A node's heartbeat: place what fits on it. The containers placed.
    pub fn node_update(&mut self, node_id: &str) -> Vec<Container> {
        let Some(&n) = self.core.by_id.get(node_id) else {
            return Vec::new();
        };
        if !self.core.nodes[n as usize].alive {
            return Vec::new();
        }
        let min = self.core.cfg.min_allocation;
        let mut placed = Vec::new();
        self.policy.begin_node(&self.core, n);
        while min.fits_in(self.core.nodes[n as usize].free()) {
            let Some(app) = self.policy.pick(&self.core) else {
                break;
            };
            let Some((prio, ask_id, locality, opportunities)) = self.find_placement(app, n) else {
                self.policy.pass_over(&self.core, app);
                continue;
            };
            let (resource, is_am) = {
                let e = &self.core.apps[&app].asks[&ask_id];
                (e.ask.resource, e.is_am)
            };
            if !self.policy.admits(&self.core, app, resource, is_am) {
                self.policy.pass_over(&self.core, app);
                continue;
            }
            let c = self.commit(app, n, prio, ask_id, locality, opportunities);
            self.policy.allocated(&self.core, app, &c);
            placed.push(c);
        }
        placed
    }

    /// The ask of `app` to place on node `n`, if any may go there now.
    /// Counts a missed opportunity for each priority held back only by
    /// locality.
    fn find_placement(&mut self, app: AppId, n: NodeIdx) -> Option<(i32, u64, Locality, u32)> {
        let (d1, d2) = self.core.delays();
        let node = &self.core.nodes[n as usize];
        let free = node.free();
        let (host, id, rack) = (node.host.as_str(), node.id.as_str(), node.rack_idx);
        let a = self.core.apps.get_mut(&app)?;
        let asks = &a.asks;
        let fits = |k: &u64| asks[k].ask.resource.fits_in(free);
        for (prio, p) in a.prios.iter_mut() {
            if !p.smallest.fits_in(free) {
                continue;
            }
            let missed = p.missed;
            // Node-local.
            for name in [host, id] {
                if let Some(k) = p.by_host.get(name).and_then(|s| s.iter().find(|k| fits(k))) {
                    p.missed = 0;
                    return Some((*prio, *k, Locality::NodeLocal, missed));
                }
            }
            // The rack named, at once.
            if let Some(k) = p
                .rack_named
                .get(&rack)
                .and_then(|s| s.iter().find(|k| fits(k)))
            {
                return Some((*prio, *k, Locality::RackLocal, missed));
            }
            let mut held_back = false;
            // The rack of a node named, after the node delay.
            if let Some(s) = p.rack_of_nodes.get(&rack) {
                if let Some(k) = s.iter().find(|k| fits(k)) {
                    let e = &asks[k];
                    let may = e.ask.relax_locality || e.named_racks.contains(&rack);
                    if may && missed >= d1 {
                        return Some((*prio, *k, Locality::RackLocal, missed));
                    }
                    held_back |= may;
                }
            }
            // Anywhere: asks without locality at once; relaxed ones after
            // the delays.
            if let Some(k) = p.anywhere.iter().find(|k| fits(k)) {
                return Some((*prio, *k, Locality::OffSwitch, missed));
            }
            if !p.relaxed.is_empty() {
                if missed >= d2 {
                    let ok = p.relaxed.iter().find(|k| {
                        let e = &asks[*k];
                        let wait = if e.ask.nodes.is_empty() { d2 } else { d1 + d2 };
                        fits(k) && missed >= wait
                    });
                    if let Some(k) = ok {
                        return Some((*prio, *k, Locality::OffSwitch, missed));
                    }
                }
                held_back = true;
            }
            if held_back {
                p.missed = p.missed.saturating_add(1);
            }
        }
        None
    }

    fn commit(
        &mut self,
        app: AppId,
        n: NodeIdx,
        prio: i32,
        ask_id: u64,
        locality: Locality,
        opportunities: u32,
    ) -> Container {
        let core = &mut self.core;
        let now = core.now_ms;
        let a = core.apps.get_mut(&app).expect("picked");
        let e = a.asks.get_mut(&ask_id).expect("found");
        e.outstanding -= 1;
        let resource = e.ask.resource;
        let is_am = e.is_am;
        a.pending -= resource;
        if e.outstanding == 0 {
            unfile(a, ask_id);
        }
        let id = ContainerId {
            attempt: a.attempt,
            seq: a.next_seq,
        };
        a.next_seq += 1;
        a.used += resource;
        if is_am {
            a.am_used += resource;
        }
        a.containers.insert(id);
        let c = Container {
            id,
            node: n,
            resource,
            priority: prio,
            ask_id,
            is_am,
            locality,
            opportunities,
            allocated_ms: now,
        };
        let node = &mut core.nodes[n as usize];
        node.used += resource;
        node.containers.insert(id);
        core.used += resource;
        core.containers.insert(id, c.clone());
        c
    }

    /// Containers the policy takes back now (fair preemption). They stay
    /// allocated until they finish (`finish_container`).
    pub fn preempt(&mut self) -> Vec<ContainerId> {
        if !self.core.cfg.preemption {
            return Vec::new();
        }
        let chosen = self.policy.preempt(&self.core);
        for c in &chosen {
            self.core.preempting.insert(*c);
        }
        chosen
    }

    pub fn queue_infos(&self) -> Vec<QueueInfo> {
        self.policy.queue_infos(&self.core)
    }
}

fn not_found(app: AppId) -> Error {
    Error::new(Code::ApplicationNotFound, format!("{app} is not scheduled"))
}

/// Removes ask `id` from the app's indexes (if filed).
fn unfile(a: &mut App, id: u64) {
    let Some(e) = a.asks.remove(&id) else {
        return;
    };
    a.pending -= e.ask.resource.times(u64::from(e.outstanding));
    let prio = e.ask.priority;
    let Some(p) = a.prios.get_mut(&prio) else {
        return;
    };
    let drop_from = |m: &mut HashMap<String, BTreeSet<u64>>, k: &str| {
        if let Some(s) = m.get_mut(k) {
            s.remove(&id);
            if s.is_empty() {
                m.remove(k);
            }
        }
    };
    for h in &e.ask.nodes {
        drop_from(&mut p.by_host, h);
    }
    for r in &e.racks {
        for m in [&mut p.rack_named, &mut p.rack_of_nodes] {
            if let Some(s) = m.get_mut(r) {
                s.remove(&id);
                if s.is_empty() {
                    m.remove(r);
                }
            }
        }
    }
    p.anywhere.remove(&id);
    p.relaxed.remove(&id);
    if p.anywhere.is_empty()
        && p.relaxed.is_empty()
        && p.by_host.is_empty()
        && p.rack_named.is_empty()
        && p.rack_of_nodes.is_empty()
    {
        a.prios.remove(&prio);
    }
}

/// Files a normalized ask with `count > 0`. A rack it names is local at
/// once when it names no node; with nodes named, every rack waits the
/// node delay (a node-local ask goes rack-local only after it).
fn file(
    a: &mut App,
    ask: Ask,
    racks: SmallVec<[u32; 4]>,
    is_am: bool,
    rack_idx: &HashMap<String, u32>,
) {
    let id = ask.id;
    let p = a.prios.entry(ask.priority).or_insert_with(|| PrioAsks {
        smallest: ask.resource,
        ..Default::default()
    });
    p.smallest = p.smallest.min(ask.resource);
    let named_racks: SmallVec<[u32; 4]> = ask
        .racks
        .iter()
        .filter_map(|r| rack_idx.get(r).copied())
        .collect();
    if ask.nodes.is_empty() && ask.racks.is_empty() {
        p.anywhere.insert(id);
    } else {
        for h in &ask.nodes {
            p.by_host.entry(h.clone()).or_default().insert(id);
        }
        for r in &racks {
            if ask.nodes.is_empty() {
                p.rack_named.entry(*r).or_default().insert(id);
            } else {
                p.rack_of_nodes.entry(*r).or_default().insert(id);
            }
        }
        if ask.relax_locality {
            p.relaxed.insert(id);
        }
    }
    a.pending += ask.resource.times(u64::from(ask.count));
    a.asks.insert(
        id,
        AskEntry {
            outstanding: ask.count,
            ask,
            racks,
            named_racks,
            is_am,
        },
    );
}

/// A non-negative f64 as a key that sorts as the number does.
pub(crate) fn share_key(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else {
        x.to_bits()
    }
}
