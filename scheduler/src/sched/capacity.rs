//! The capacity scheduler: a tree of queues, each with a guaranteed and a
//! maximum share of the cluster. A heartbeat's room goes to the queue
//! furthest below its guarantee (used ÷ guaranteed, at each level of the
//! tree), so idle capacity is lent to busy queues up to their maximum, and
//! comes back to a queue as containers finish once it has demand again.
//! Inside a leaf, applications are served in priority then submission
//! order, each user up to its user limit; application masters of a leaf
//! together take at most `maximum_am_resource_percent` of its maximum.

use std::cmp::Reverse;
use std::collections::HashMap;

use super::queues::QueueTree;
use super::tree::Queues;
use super::{App, Container, Core, NodeIdx, Policy, QueueInfo, SchedulerKind};
use crate::records::{AppId, Resource};

/// Priority (higher first), then submission order.
type Key = (Reverse<i32>, u64);

#[derive(Default)]
struct User {
    used: Resource,
    apps: usize,
}

pub(crate) struct Capacity {
    qs: Queues<Key>,
    /// Per leaf, per user: what it uses and how many applications it has.
    users: Vec<HashMap<String, User>>,
}

const EPS: f64 = 1e-9;

fn share(core: &Core, r: Resource) -> f64 {
    r.dominant_share(core.total)
}

impl Capacity {
    pub(crate) fn new(tree: &QueueTree) -> Capacity {
        Capacity {
            qs: Queues::new(tree),
            users: tree.queues.iter().map(|_| HashMap::new()).collect(),
        }
    }

    fn key(a: &App) -> Key {
        (Reverse(a.priority), a.order)
    }

    /// The most a user of leaf `q` may use now, as a share of the cluster
    /// (YARN's user limit: an equal part of the queue's current capacity
    /// among its active users, at least `minimum_user_limit_percent` of
    /// it, at most `user_limit_factor` times the guarantee).
    fn user_limit(&self, core: &Core, q: usize, extra: Resource) -> f64 {
        let spec = &self.qs.tree.queues[q];
        let used = share(core, self.qs.q[q].used + extra);
        let current = used.max(spec.abs_capacity);
        let active = self.users[q].values().filter(|u| u.apps > 0).count().max(1) as f64;
        let limit = (current / active).max(current * spec.minimum_user_limit_percent / 100.0);
        let cap = (spec.abs_capacity * spec.user_limit_factor).min(spec.abs_max_capacity);
        limit.min(cap)
    }
}

impl Policy for Capacity {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Capacity
    }

    fn add_app(&mut self, core: &Core, app: AppId) {
        let a = &core.apps[&app];
        self.users[a.queue].entry(a.user.clone()).or_default().apps += 1;
        self.qs.add_app(core, app, Self::key(a));
    }

    fn remove_app(&mut self, _core: &Core, a: &App) {
        self.qs.remove_app(a);
        let users = &mut self.users[a.queue];
        if let Some(u) = users.get_mut(&a.user) {
            u.apps -= 1;
            if u.apps == 0 && u.used.is_zero() {
                users.remove(&a.user);
            }
        }
    }

    fn demand_changed(&mut self, core: &Core, app: AppId) {
        self.qs.sync(core, app, Self::key(&core.apps[&app]));
    }

    fn allocated(&mut self, core: &Core, app: AppId, c: &Container) {
        let a = &core.apps[&app];
        self.qs.account(a.queue, c, true);
        self.users[a.queue].entry(a.user.clone()).or_default().used += c.resource;
        self.qs.sync(core, app, Self::key(a));
    }

    fn released(&mut self, core: &Core, app: AppId, c: &Container) {
        let Some(a) = core.apps.get(&app) else {
            return;
        };
        self.qs.account(a.queue, c, false);
        if let Some(u) = self.users[a.queue].get_mut(&a.user) {
            u.used -= c.resource;
        }
    }

    fn cluster_changed(&mut self, _core: &Core) {}

    fn begin_node(&mut self, _core: &Core, _node: NodeIdx) {
        self.qs.begin_node();
    }

    /// The queue furthest below its guarantee first (used ÷ guaranteed),
    /// skipping a queue at its maximum.
    fn pick(&mut self, core: &Core) -> Option<AppId> {
        let min = core.cfg.min_allocation;
        self.qs.descend(0, &|qs: &Queues<Key>, c| {
            let spec = &qs.tree.queues[c];
            let used = qs.q[c].used;
            if share(core, used + min) > spec.abs_max_capacity + EPS {
                return None;
            }
            let cap = spec.abs_capacity;
            Some(if cap <= EPS {
                f64::INFINITY
            } else {
                share(core, used) / cap
            })
        })
    }

    fn pass_over(&mut self, core: &Core, app: AppId) {
        self.qs.pass_over(core, app);
    }

    fn admits(&self, core: &Core, app: AppId, r: Resource, is_am: bool) -> bool {
        let Some(a) = core.apps.get(&app) else {
            return false;
        };
        let tree = &self.qs.tree;
        // No queue on the way up past its maximum.
        for q in tree.ancestry(a.queue) {
            let after = share(core, self.qs.q[q].used + r);
            if after > tree.queues[q].abs_max_capacity + EPS {
                return false;
            }
        }
        let leaf = &self.qs.q[a.queue];
        let spec = &tree.queues[a.queue];
        if is_am && !leaf.am_used.is_zero() {
            // The first application master of a queue always may start.
            let cap = spec.abs_max_capacity * spec.maximum_am_resource_percent / 100.0;
            if share(core, leaf.am_used + r) > cap + EPS {
                return false;
            }
        }
        let user_used = self.users[a.queue]
            .get(&a.user)
            .map_or(Resource::ZERO, |u| u.used);
        // A user with nothing yet always gets its first container.
        if user_used.is_zero() {
            return true;
        }
        share(core, user_used + r) <= self.user_limit(core, a.queue, r) + EPS
    }

    fn queue_infos(&self, core: &Core) -> Vec<QueueInfo> {
        let tree = &self.qs.tree;
        let mut pending = vec![Resource::ZERO; tree.queues.len()];
        for a in core.apps.values() {
            for q in tree.ancestry(a.queue) {
                pending[q] += a.pending;
            }
        }
        tree.queues
            .iter()
            .enumerate()
            .map(|(i, q)| QueueInfo {
                path: q.path.clone(),
                leaf: q.is_leaf(),
                capacity: q.abs_capacity,
                max_capacity: q.abs_max_capacity,
                used_share: share(core, self.qs.q[i].used),
                used: self.qs.q[i].used,
                pending: pending[i],
                apps: self.qs.q[i].apps,
                weight: 1.0,
                min_share: Resource::ZERO,
                fair_share: 0.0,
                starved_ms: None,
            })
            .collect()
    }
}
