//! What the capacity and the fair scheduler share: per-queue usage over a
//! queue tree, the applications with outstanding asks in each leaf (in the
//! policy's order, by a key the policy chooses), and the walk down the
//! tree that picks the application to serve next on a heartbeat.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use super::queues::QueueTree;
use super::{App, Container, Core};
use crate::records::{AppId, Resource};

pub(crate) struct QState<K> {
    pub used: Resource,
    pub am_used: Resource,
    /// Applications with outstanding asks in the subtree.
    pub demand_apps: usize,
    pub apps: usize,
    /// Leaves: the applications with outstanding asks, in serving order.
    active: BTreeSet<(K, AppId)>,
    /// The last application passed over this heartbeat.
    cursor: Option<(K, AppId)>,
    /// Nothing more in the subtree can use this heartbeat's node.
    exhausted: bool,
}

impl<K> Default for QState<K> {
    fn default() -> Self {
        QState {
            used: Resource::ZERO,
            am_used: Resource::ZERO,
            demand_apps: 0,
            apps: 0,
            active: BTreeSet::new(),
            cursor: None,
            exhausted: false,
        }
    }
}

pub(crate) struct Queues<K> {
    pub tree: QueueTree,
    pub q: Vec<QState<K>>,
    keys: HashMap<AppId, K>,
    demanding: HashMap<AppId, bool>,
}

impl<K: Ord + Copy> Queues<K> {
    pub fn new(tree: &QueueTree) -> Self {
        Queues {
            q: tree.queues.iter().map(|_| QState::default()).collect(),
            tree: tree.clone(),
            keys: HashMap::new(),
            demanding: HashMap::new(),
        }
    }

    fn up(&self, leaf: usize) -> Vec<usize> {
        self.tree.ancestry(leaf).collect()
    }

    pub fn add_app(&mut self, core: &Core, app: AppId, key: K) {
        let leaf = core.apps[&app].queue;
        for q in self.up(leaf) {
            self.q[q].apps += 1;
        }
        self.sync(core, app, key);
    }

    pub fn remove_app(&mut self, a: &App) {
        if let Some(k) = self.keys.remove(&a.id) {
            self.q[a.queue].active.remove(&(k, a.id));
        }
        let was = self.demanding.remove(&a.id).unwrap_or(false);
        for q in self.up(a.queue) {
            self.q[q].apps -= 1;
            if was {
                self.q[q].demand_apps -= 1;
            }
        }
    }

    /// Files `app` under `key` (which may have changed), among the
    /// applications with outstanding asks if it has any.
    pub fn sync(&mut self, core: &Core, app: AppId, key: K) {
        let Some(a) = core.apps.get(&app) else {
            return;
        };
        let leaf = a.queue;
        if let Some(old) = self.keys.insert(app, key) {
            self.q[leaf].active.remove(&(old, app));
        }
        let demand = a.has_demand();
        if demand {
            self.q[leaf].active.insert((key, app));
        }
        let was = self.demanding.insert(app, demand).unwrap_or(false);
        if demand != was {
            for q in self.up(leaf) {
                if demand {
                    self.q[q].demand_apps += 1;
                } else {
                    self.q[q].demand_apps -= 1;
                }
            }
        }
    }

    pub fn apps(&self) -> impl Iterator<Item = AppId> + '_ {
        self.keys.keys().copied()
    }

    /// Counts a placed (`placed`) or ended container in its queues.
    pub fn account(&mut self, leaf: usize, c: &Container, placed: bool) {
        for q in self.up(leaf) {
            let s = &mut self.q[q];
            if placed {
                s.used += c.resource;
                if c.is_am {
                    s.am_used += c.resource;
                }
            } else {
                s.used -= c.resource;
                if c.is_am {
                    s.am_used -= c.resource;
                }
            }
        }
    }

    pub fn begin_node(&mut self) {
        for s in &mut self.q {
            s.cursor = None;
            s.exhausted = false;
        }
    }

    pub fn pass_over(&mut self, core: &Core, app: AppId) {
        if let (Some(a), Some(k)) = (core.apps.get(&app), self.keys.get(&app)) {
            self.q[a.queue].cursor = Some((*k, app));
        }
    }

    /// The next application to serve, walking down from `q`: at each
    /// level the children `order` ranks (lowest first; `None`: skip it
    /// this heartbeat), into the first leaf with an application not yet
    /// passed over.
    pub fn descend<O: PartialOrd>(
        &mut self,
        q: usize,
        order: &impl Fn(&Self, usize) -> Option<O>,
    ) -> Option<AppId> {
        if self.q[q].exhausted || self.q[q].demand_apps == 0 {
            return None;
        }
        if self.tree.queues[q].is_leaf() {
            let s = &self.q[q];
            let from = match &s.cursor {
                Some(c) => Bound::Excluded(*c),
                None => Bound::Unbounded,
            };
            let found = s.active.range((from, Bound::Unbounded)).next().copied();
            if found.is_none() {
                self.q[q].exhausted = true;
            }
            return found.map(|(_, app)| app);
        }
        let mut kids: Vec<(O, usize)> = self.tree.queues[q]
            .children
            .iter()
            .copied()
            .filter(|c| !self.q[*c].exhausted && self.q[*c].demand_apps > 0)
            .filter_map(|c| order(self, c).map(|o| (o, c)))
            .collect();
        kids.sort_by(|a, b| {
            a.0.partial_cmp(&b.0)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.1.cmp(&b.1))
        });
        for (_, c) in kids {
            if let Some(app) = self.descend(c, order) {
                return Some(app);
            }
        }
        self.q[q].exhausted = true;
        None
    }
}
