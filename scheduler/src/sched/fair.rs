//! The fair scheduler: queues (a tree) share the cluster by weight, each
//! with a minimum and a maximum share; applications in a queue share it
//! equally. Shares are dominant resource shares (Ghodsi et al., DRF): an
//! application's share is the larger of its memory and CPU fractions, so a
//! memory-heavy and a CPU-heavy application end up with equal dominant
//! shares. A heartbeat's room goes first to queues below their minimum
//! share, then to the queue (and inside it the application) with the
//! smallest share for its weight.
//!
//! Preemption: a queue with demand that stays below its minimum share for
//! `min_share_preemption_timeout_ms`, or below
//! `fair_share_preemption_threshold` of its fair share for
//! `fair_share_preemption_timeout_ms`, gets containers taken back from
//! queues above their fair share (newest first, never an application
//! master, never taking a queue below its fair share).

use super::queues::QueueTree;
use super::tree::Queues;
use super::{
    share_key, App, Container, ContainerId, Core, NodeIdx, Policy, QueueInfo, SchedulerKind,
};
use crate::records::{AppId, Resource};

/// (dominant share, submission order).
type Key = (u64, u64);

#[derive(Default, Clone, Copy)]
struct Starved {
    min_since: Option<u64>,
    fair_since: Option<u64>,
}

pub(crate) struct Fair {
    qs: Queues<Key>,
    /// Each queue's share by weight alone, whatever the demand (the AM cap
    /// is taken of it).
    steady: Vec<f64>,
    starved: Vec<Starved>,
}

const EPS: f64 = 1e-9;

fn share(core: &Core, r: Resource) -> f64 {
    r.dominant_share(core.total)
}

/// Whether queue `q` taking `r` would pass its maximum share (or the
/// cluster).
fn at_max(qs: &Queues<Key>, core: &Core, q: usize, r: Resource) -> bool {
    let after = qs.q[q].used + r;
    qs.tree.queues[q]
        .max_share
        .is_some_and(|m| !after.fits_in(m))
        || !after.fits_in(core.total)
}

impl Fair {
    pub(crate) fn new(tree: &QueueTree) -> Fair {
        let mut steady = vec![0.0; tree.queues.len()];
        steady[0] = 1.0;
        for p in 0..tree.queues.len() {
            let kids = &tree.queues[p].children;
            let w: f64 = kids.iter().map(|c| tree.queues[*c].weight).sum();
            for c in kids {
                steady[*c] = steady[p] * tree.queues[*c].weight / w;
            }
        }
        Fair {
            qs: Queues::new(tree),
            steady,
            starved: vec![Starved::default(); tree.queues.len()],
        }
    }

    fn key(core: &Core, a: &App) -> Key {
        (share_key(a.used.dominant_share(core.total)), a.order)
    }

    fn sync(&mut self, core: &Core, app: AppId) {
        if let Some(a) = core.apps.get(&app) {
            self.qs.sync(core, app, Self::key(core, a));
        }
    }

    fn at_max(&self, core: &Core, q: usize, r: Resource) -> bool {
        at_max(&self.qs, core, q, r)
    }

    /// Each queue's instantaneous fair share of the cluster (dominant
    /// share), by water-filling: at each level the parent's share is
    /// divided among the children with demand by weight, each at least its
    /// minimum share and at most its demand.
    fn fair_shares(&self, core: &Core, demand: &[f64]) -> Vec<f64> {
        let n = self.qs.tree.queues.len();
        let mut fs = vec![0.0; n];
        fs[0] = demand[0].min(1.0);
        for p in 0..n {
            let kids: Vec<usize> = self.qs.tree.queues[p]
                .children
                .iter()
                .copied()
                .filter(|c| demand[*c] > EPS)
                .collect();
            if kids.is_empty() {
                continue;
            }
            let total: f64 = kids.iter().map(|c| demand[*c]).sum();
            let target = fs[p].min(total);
            let lo: Vec<f64> = kids
                .iter()
                .map(|c| share(core, self.qs.tree.queues[*c].min_share).min(demand[*c]))
                .collect();
            let lo_sum: f64 = lo.iter().sum();
            if lo_sum >= target {
                for (i, c) in kids.iter().enumerate() {
                    fs[*c] = if lo_sum > 0.0 {
                        lo[i] * target / lo_sum
                    } else {
                        0.0
                    };
                }
                continue;
            }
            let fill = |r: f64| -> f64 {
                kids.iter()
                    .enumerate()
                    .map(|(i, c)| (r * self.qs.tree.queues[*c].weight).clamp(lo[i], demand[*c]))
                    .sum()
            };
            let (mut a, mut b) = (0.0, 1.0);
            while fill(b) < target && b < 1e12 {
                b *= 2.0;
            }
            for _ in 0..64 {
                let m = (a + b) / 2.0;
                if fill(m) < target {
                    a = m;
                } else {
                    b = m;
                }
            }
            for (i, c) in kids.iter().enumerate() {
                fs[*c] = (b * self.qs.tree.queues[*c].weight).clamp(lo[i], demand[*c]);
            }
        }
        fs
    }

    /// Each queue's demand (used + outstanding) as a share of the cluster.
    fn demands(&self, core: &Core) -> (Vec<f64>, Vec<Resource>) {
        let mut pending = vec![Resource::ZERO; self.qs.q.len()];
        for a in core.apps.values() {
            for q in self.qs.tree.ancestry(a.queue) {
                pending[q] += a.pending;
            }
        }
        let d = (0..self.qs.q.len())
            .map(|q| share(core, self.qs.q[q].used + pending[q]).min(1.0))
            .collect();
        (d, pending)
    }
}

impl Policy for Fair {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Fair
    }

    fn add_app(&mut self, core: &Core, app: AppId) {
        self.qs
            .add_app(core, app, Self::key(core, &core.apps[&app]));
    }

    fn remove_app(&mut self, _core: &Core, a: &App) {
        self.qs.remove_app(a);
    }

    fn demand_changed(&mut self, core: &Core, app: AppId) {
        self.sync(core, app);
    }

    fn allocated(&mut self, core: &Core, app: AppId, c: &Container) {
        self.qs.account(core.apps[&app].queue, c, true);
        self.sync(core, app);
    }

    fn released(&mut self, core: &Core, app: AppId, c: &Container) {
        let Some(a) = core.apps.get(&app) else {
            return;
        };
        self.qs.account(a.queue, c, false);
        self.sync(core, app);
    }

    fn cluster_changed(&mut self, core: &Core) {
        let apps: Vec<AppId> = self.qs.apps().collect();
        for a in apps {
            self.sync(core, a);
        }
    }

    fn begin_node(&mut self, _core: &Core, _node: NodeIdx) {
        self.qs.begin_node();
    }

    /// Needy queues (below their minimum share) first, by how far below;
    /// then by share for weight. A queue at its maximum is skipped.
    fn pick(&mut self, core: &Core) -> Option<AppId> {
        let min = core.cfg.min_allocation;
        self.qs.descend(0, &|qs: &Queues<Key>, c| {
            if at_max(qs, core, c, min) {
                return None;
            }
            let spec = &qs.tree.queues[c];
            let used = share(core, qs.q[c].used);
            let min_share = share(core, spec.min_share);
            Some(if used + EPS < min_share {
                (0u8, used / min_share)
            } else {
                (1u8, used / spec.weight)
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
        if self
            .qs
            .tree
            .ancestry(a.queue)
            .any(|q| self.at_max(core, q, r))
        {
            return false;
        }
        let leaf = &self.qs.q[a.queue];
        if is_am && !leaf.am_used.is_zero() {
            let pct = self.qs.tree.queues[a.queue].maximum_am_resource_percent;
            let cap = self.steady[a.queue] * pct / 100.0;
            if share(core, leaf.am_used + r) > cap + EPS {
                return false;
            }
        }
        true
    }

    fn preempt(&mut self, core: &Core) -> Vec<ContainerId> {
        let now = core.now_ms;
        let (demand, pending) = self.demands(core);
        let fair = self.fair_shares(core, &demand);
        let threshold = core.cfg.fair_share_preemption_threshold;
        // What each starved leaf is owed, once its timeout has passed.
        let mut owed = 0.0;
        let mut starved = Vec::new();
        for q in self.qs.tree.leaves().collect::<Vec<_>>() {
            let spec = &self.qs.tree.queues[q];
            let used = share(core, self.qs.q[q].used);
            let wants = !pending[q].is_zero();
            let min_target = share(core, spec.min_share).min(demand[q]);
            let fair_target = fair[q].min(demand[q]);
            let s = &mut self.starved[q];
            let min_starved = wants && used + EPS < min_target;
            let fair_starved = wants && used + EPS < fair_target * threshold;
            s.min_since = if min_starved {
                s.min_since.or(Some(now))
            } else {
                None
            };
            s.fair_since = if fair_starved {
                s.fair_since.or(Some(now))
            } else {
                None
            };
            let mut need: f64 = 0.0;
            if let Some(t) = s.min_since {
                if now.saturating_sub(t) >= spec.min_share_preemption_timeout_ms {
                    need = need.max(min_target - used);
                }
            }
            if let Some(t) = s.fair_since {
                if now.saturating_sub(t) >= spec.fair_share_preemption_timeout_ms {
                    need = need.max(fair_target - used);
                }
            }
            if need > EPS {
                owed += need;
                starved.push(q);
            }
        }
        if starved.is_empty() {
            return Vec::new();
        }
        // What is already on its way back counts.
        let coming: f64 = core
            .preempting
            .iter()
            .filter_map(|c| core.containers.get(c))
            .map(|c| share(core, c.resource))
            .sum();
        owed -= coming;
        if owed <= EPS {
            return Vec::new();
        }
        // Victims: containers of leaves above their fair share, the most
        // over first, newest containers first; no application master; no
        // queue taken below its fair share.
        let mut over: Vec<(f64, usize)> = self
            .qs
            .tree
            .leaves()
            .filter(|q| !starved.contains(q))
            .map(|q| (share(core, self.qs.q[q].used) - fair[q], q))
            .filter(|(o, _)| *o > EPS)
            .collect();
        over.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut chosen = Vec::new();
        for (mut spare, q) in over {
            let mut victims: Vec<&Container> = core
                .apps
                .values()
                .filter(|a| a.queue == q)
                .flat_map(|a| a.containers.iter())
                .filter_map(|c| core.containers.get(c))
                .filter(|c| !c.is_am && !core.preempting.contains(&c.id))
                .collect();
            victims.sort_by(|a, b| b.allocated_ms.cmp(&a.allocated_ms).then(b.id.cmp(&a.id)));
            for c in victims {
                if owed <= EPS {
                    break;
                }
                let s = share(core, c.resource);
                if s > spare + EPS {
                    continue;
                }
                spare -= s;
                owed -= s;
                chosen.push(c.id);
            }
            if owed <= EPS {
                break;
            }
        }
        if !chosen.is_empty() {
            for q in starved {
                let s = &mut self.starved[q];
                s.min_since = s.min_since.map(|_| now);
                s.fair_since = s.fair_since.map(|_| now);
            }
        }
        chosen
    }

    fn queue_infos(&self, core: &Core) -> Vec<QueueInfo> {
        let (demand, pending) = self.demands(core);
        let fair = self.fair_shares(core, &demand);
        let now = core.now_ms;
        self.qs
            .tree
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let s = &self.qs.q[i];
                let st = self.starved[i];
                let since = match (st.min_since, st.fair_since) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                QueueInfo {
                    path: q.path.clone(),
                    leaf: q.is_leaf(),
                    capacity: self.steady[i],
                    max_capacity: q.max_share.map_or(1.0, |m| share(core, m.min(core.total))),
                    used_share: share(core, s.used),
                    used: s.used,
                    pending: pending[i],
                    apps: s.apps,
                    weight: q.weight,
                    min_share: q.min_share,
                    fair_share: fair[i],
                    starved_ms: since.map(|t| now.saturating_sub(t)),
                }
            })
            .collect()
    }
}
