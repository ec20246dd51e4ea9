//! FIFO: one queue; applications served in order of priority (higher
//! first), then submission. No limits.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use super::{Container, Core, Policy, QueueInfo, SchedulerKind};
use crate::records::{AppId, Resource};

type Key = (Reverse<i32>, u64, AppId);

#[derive(Default)]
pub(crate) struct Fifo {
    /// Applications with outstanding asks, in serving order.
    active: BTreeSet<Key>,
    keys: HashMap<AppId, Key>,
    /// The last application passed over this heartbeat.
    cursor: Option<Key>,
}

impl Fifo {
    fn sync(&mut self, core: &Core, app: AppId) {
        let Some(k) = self.keys.get(&app).copied() else {
            return;
        };
        if core.apps.get(&app).is_some_and(|a| a.has_demand()) {
            self.active.insert(k);
        } else {
            self.active.remove(&k);
        }
    }
}

impl Policy for Fifo {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Fifo
    }

    fn add_app(&mut self, core: &Core, app: AppId) {
        let a = &core.apps[&app];
        self.keys.insert(app, (Reverse(a.priority), a.order, app));
        self.sync(core, app);
    }

    fn remove_app(&mut self, _core: &Core, app: &super::App) {
        if let Some(k) = self.keys.remove(&app.id) {
            self.active.remove(&k);
        }
    }

    fn demand_changed(&mut self, core: &Core, app: AppId) {
        self.sync(core, app);
    }

    fn allocated(&mut self, core: &Core, app: AppId, _c: &Container) {
        self.sync(core, app);
    }

    fn released(&mut self, _core: &Core, _app: AppId, _c: &Container) {}

    fn cluster_changed(&mut self, _core: &Core) {}

    fn begin_node(&mut self, _core: &Core, _node: super::NodeIdx) {
        self.cursor = None;
    }

    fn pick(&mut self, _core: &Core) -> Option<AppId> {
        let from = match &self.cursor {
            Some(c) => Bound::Excluded(*c),
            None => Bound::Unbounded,
        };
        self.active
            .range((from, Bound::Unbounded))
            .next()
            .map(|k| k.2)
    }

    fn pass_over(&mut self, _core: &Core, app: AppId) {
        self.cursor = self.keys.get(&app).copied();
    }

    fn admits(&self, _core: &Core, _app: AppId, _r: Resource, _is_am: bool) -> bool {
        true
    }

    fn queue_infos(&self, core: &Core) -> Vec<QueueInfo> {
        let pending = core
            .apps
            .values()
            .fold(Resource::ZERO, |acc, a| acc + a.pending);
        core.cfg
            .queues
            .queues
            .iter()
            .map(|q| QueueInfo {
                path: q.path.clone(),
                leaf: q.is_leaf(),
                capacity: 1.0,
                max_capacity: 1.0,
                used_share: core.used.dominant_share(core.total),
                used: core.used,
                pending,
                apps: core.apps.len(),
                weight: 1.0,
                min_share: Resource::ZERO,
                fair_share: 0.0,
                starved_ms: None,
            })
            .collect()
    }
}
