//! The queue file: one table per queue, named by its full path
//! (`[queue."root.prod"]`); parents are implied by the names. The same
//! file shape serves the capacity and the fair scheduler, each with its
//! own keys; a key of the other scheduler is refused, by name, as every
//! other mistake is (at start, before anything listens).
//!
//! ```toml
//! [queue."root.prod"]
//! capacity = 70             # capacity: percent of the parent's
//! maximum_capacity = 100
//! [queue."root.dev"]
//! capacity = 30
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::records::Resource;

/// Which scheduler runs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// One queue, applications in submission order.
    Fifo,
    /// Hierarchical queues with guaranteed and maximum capacities.
    Capacity,
    /// Weighted fair shares with dominant resource fairness and preemption.
    Fair,
}

impl SchedulerKind {
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Fifo => "fifo",
            SchedulerKind::Capacity => "capacity",
            SchedulerKind::Fair => "fair",
        }
    }
}

/// One queue's table, as written. Every key optional; which apply
/// depends on the scheduler.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    // capacity
    pub capacity: Option<f64>,
    pub maximum_capacity: Option<f64>,
    pub user_limit_factor: Option<f64>,
    pub minimum_user_limit_percent: Option<f64>,
    pub maximum_am_resource_percent: Option<f64>,
    // fair
    pub weight: Option<f64>,
    pub min_memory_mb: Option<u64>,
    pub min_vcores: Option<u32>,
    pub max_memory_mb: Option<u64>,
    pub max_vcores: Option<u32>,
    pub min_share_preemption_timeout_ms: Option<u64>,
    pub fair_share_preemption_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFile {
    #[serde(default)]
    queue: BTreeMap<String, QueueSpec>,
}

/// A queue of the tree, with its settings resolved (defaults filled in,
/// capacities made absolute: fractions of the whole cluster).
#[derive(Clone, Debug, PartialEq)]
pub struct Queue {
    /// The full path, `root.prod`.
    pub path: String,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    /// Capacity: the guaranteed and the maximum share of the cluster.
    pub abs_capacity: f64,
    pub abs_max_capacity: f64,
    pub user_limit_factor: f64,
    pub minimum_user_limit_percent: f64,
    pub maximum_am_resource_percent: f64,
    /// Fair.
    pub weight: f64,
    pub min_share: Resource,
    /// `None`: no maximum.
    pub max_share: Option<Resource>,
    pub min_share_preemption_timeout_ms: u64,
    pub fair_share_preemption_timeout_ms: u64,
}

impl Queue {
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }

    /// The last part of the path (`prod` of `root.prod`).
    pub fn short_name(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }
}

/// What the queue file does not say.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueDefaults {
    pub maximum_am_resource_percent: f64,
    pub min_share_preemption_timeout_ms: u64,
    pub fair_share_preemption_timeout_ms: u64,
}

/// The queue tree; index 0 is `root`.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueTree {
    pub queues: Vec<Queue>,
}

/// A queue file mistake, naming the queue and key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QueueError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, QueueError> {
    Err(QueueError(m.into()))
}

const CAPACITY_KEYS: &[&str] = &[
    "capacity",
    "maximum_capacity",
    "user_limit_factor",
    "minimum_user_limit_percent",
    "maximum_am_resource_percent",
];
const FAIR_KEYS: &[&str] = &[
    "weight",
    "min_memory_mb",
    "min_vcores",
    "max_memory_mb",
    "max_vcores",
    "min_share_preemption_timeout_ms",
    "fair_share_preemption_timeout_ms",
];

fn keys_set(s: &QueueSpec) -> Vec<&'static str> {
    let mut v = Vec::new();
    let flags = [
        s.capacity.is_some(),
        s.maximum_capacity.is_some(),
        s.user_limit_factor.is_some(),
        s.minimum_user_limit_percent.is_some(),
        s.maximum_am_resource_percent.is_some(),
    ];
    for (k, set) in CAPACITY_KEYS.iter().zip(flags) {
        if set {
            v.push(*k);
        }
    }
    let flags = [
        s.weight.is_some(),
        s.min_memory_mb.is_some(),
        s.min_vcores.is_some(),
        s.max_memory_mb.is_some(),
        s.max_vcores.is_some(),
        s.min_share_preemption_timeout_ms.is_some(),
        s.fair_share_preemption_timeout_ms.is_some(),
    ];
    for (k, set) in FAIR_KEYS.iter().zip(flags) {
        if set {
            v.push(*k);
        }
    }
    v
}

impl QueueTree {
    /// The tree of a cluster with no queue file: `root.default` alone.
    pub fn single(defaults: &QueueDefaults) -> QueueTree {
        QueueTree::build(BTreeMap::new(), SchedulerKind::Fifo, defaults)
            .expect("the default tree is valid")
    }

    /// Parses and checks a queue file's text for `kind`.
    pub fn parse(
        text: &str,
        kind: SchedulerKind,
        defaults: &QueueDefaults,
    ) -> Result<QueueTree, QueueError> {
        let f: QueueFile = toml::from_str(text).map_err(|e| QueueError(e.to_string()))?;
        QueueTree::build(f.queue, kind, defaults)
    }

    fn build(
        specs: BTreeMap<String, QueueSpec>,
        kind: SchedulerKind,
        d: &QueueDefaults,
    ) -> Result<QueueTree, QueueError> {
        // Check names and keys.
        for (name, spec) in &specs {
            check_name(name)?;
            let allowed: &[&str] = match kind {
                SchedulerKind::Fifo => &[],
                SchedulerKind::Capacity => CAPACITY_KEYS,
                SchedulerKind::Fair => FAIR_KEYS,
            };
            for k in keys_set(spec) {
                if !allowed.contains(&k) {
                    let whose = if CAPACITY_KEYS.contains(&k) {
                        "the capacity scheduler's"
                    } else {
                        "the fair scheduler's"
                    };
                    return err(format!(
                        "queue {name:?}: {k} is {whose} key, and this resource manager runs the {} scheduler",
                        kind.name()
                    ));
                }
            }
        }
        if kind == SchedulerKind::Fifo && specs.keys().any(|n| n != "root" && n != "root.default") {
            return err(
                "the fifo scheduler has one queue, root.default: a queue file may not name others",
            );
        }
        // Every name and its implied parents; root.default when only root.
        let mut names: Vec<String> = vec!["root".into()];
        for name in specs.keys() {
            let mut at = String::new();
            for part in name.split('.') {
                if !at.is_empty() {
                    at.push('.');
                }
                at.push_str(part);
                if !names.contains(&at) {
                    names.push(at.clone());
                }
            }
        }
        if names.len() == 1 {
            names.push("root.default".into());
        }
        names.sort_by_key(|n| n.matches('.').count());
        let mut queues: Vec<Queue> = Vec::with_capacity(names.len());
        for name in &names {
            let parent = name.rsplit_once('.').map(|(p, _)| {
                queues
                    .iter()
                    .position(|q| q.path == p)
                    .expect("parents first")
            });
            let spec = specs.get(name).cloned().unwrap_or_default();
            let idx = queues.len();
            if let Some(p) = parent {
                queues[p].children.push(idx);
            }
            let min_share = Resource::new(
                spec.min_memory_mb.unwrap_or(0),
                spec.min_vcores.unwrap_or(0),
            );
            let max_share = match (spec.max_memory_mb, spec.max_vcores) {
                (None, None) => None,
                (m, c) => Some(Resource::new(m.unwrap_or(u64::MAX), c.unwrap_or(u32::MAX))),
            };
            if let Some(max) = max_share {
                if !min_share.fits_in(max) {
                    return err(format!(
                        "queue {name:?}: min share {min_share} exceeds max share {max}"
                    ));
                }
            }
            let weight = spec.weight.unwrap_or(1.0);
            if !(weight > 0.0 && weight.is_finite()) {
                return err(format!(
                    "queue {name:?}: weight must be above 0, not {weight}"
                ));
            }
            let pct = |key: &str, v: Option<f64>, default: f64| -> Result<f64, QueueError> {
                let v = v.unwrap_or(default);
                if !(0.0..=100.0).contains(&v) {
                    return err(format!("queue {name:?}: {key} must be 0 to 100, not {v}"));
                }
                Ok(v)
            };
            let ulf = spec.user_limit_factor.unwrap_or(1.0);
            if !(ulf > 0.0 && ulf.is_finite()) {
                return err(format!(
                    "queue {name:?}: user_limit_factor must be above 0, not {ulf}"
                ));
            }
            queues.push(Queue {
                path: name.clone(),
                parent,
                children: vec![],
                // NaN until the siblings are seen: "not named".
                abs_capacity: match spec.capacity {
                    None => f64::NAN,
                    Some(v) => pct("capacity", Some(v), 0.0)?,
                },
                abs_max_capacity: pct("maximum_capacity", spec.maximum_capacity, 100.0)?,
                user_limit_factor: ulf,
                minimum_user_limit_percent: pct(
                    "minimum_user_limit_percent",
                    spec.minimum_user_limit_percent,
                    100.0,
                )?,
                maximum_am_resource_percent: pct(
                    "maximum_am_resource_percent",
                    spec.maximum_am_resource_percent,
                    d.maximum_am_resource_percent,
                )?,
                weight,
                min_share,
                max_share,
                min_share_preemption_timeout_ms: spec
                    .min_share_preemption_timeout_ms
                    .unwrap_or(d.min_share_preemption_timeout_ms),
                fair_share_preemption_timeout_ms: spec
                    .fair_share_preemption_timeout_ms
                    .unwrap_or(d.fair_share_preemption_timeout_ms),
            });
        }
        // Capacities: percent of the parent, siblings summing to 100 (all
        // named, or none and shared equally); then made absolute.
        queues[0].abs_capacity = 1.0;
        queues[0].abs_max_capacity = 1.0;
        for p in 0..queues.len() {
            let children = queues[p].children.clone();
            if children.is_empty() {
                continue;
            }
            let named: Vec<usize> = children
                .iter()
                .copied()
                .filter(|c| !queues[*c].abs_capacity.is_nan())
                .collect();
            if !named.is_empty() && named.len() != children.len() {
                let missing = children
                    .iter()
                    .find(|c| queues[**c].abs_capacity.is_nan())
                    .map(|c| queues[*c].path.clone())
                    .unwrap_or_default();
                return err(format!(
                    "queue {missing:?}: capacity missing (its siblings under {:?} name theirs; name all or none)",
                    queues[p].path
                ));
            }
            let share = 100.0 / children.len() as f64;
            let sum: f64 = children
                .iter()
                .map(|c| {
                    let v = queues[*c].abs_capacity;
                    if v.is_nan() {
                        share
                    } else {
                        v
                    }
                })
                .sum();
            if (sum - 100.0).abs() > 0.01 {
                return err(format!(
                    "queue {:?}: the capacities of its children sum to {sum}, not 100",
                    queues[p].path
                ));
            }
            let (pa, pm) = (queues[p].abs_capacity, queues[p].abs_max_capacity);
            for c in children {
                let q = &mut queues[c];
                let cap = if q.abs_capacity.is_nan() {
                    share
                } else {
                    q.abs_capacity
                };
                if q.abs_max_capacity < cap {
                    return err(format!(
                        "queue {:?}: maximum_capacity {} is below its capacity {cap}",
                        q.path, q.abs_max_capacity
                    ));
                }
                q.abs_capacity = pa * cap / 100.0;
                q.abs_max_capacity = pm * q.abs_max_capacity / 100.0;
            }
        }
        Ok(QueueTree { queues })
    }

    /// The leaf a submission names: its full path, or (as YARN allows)
    /// the short name of exactly one leaf.
    pub fn resolve_leaf(&self, name: &str) -> Result<usize, String> {
        if let Some(i) = self.queues.iter().position(|q| q.path == name) {
            if !self.queues[i].is_leaf() {
                let kids: Vec<&str> = self.queues[i]
                    .children
                    .iter()
                    .map(|c| self.queues[*c].path.as_str())
                    .collect();
                return Err(format!(
                    "queue {name:?} has children ({}): applications go to a leaf queue",
                    kids.join(", ")
                ));
            }
            return Ok(i);
        }
        let found: Vec<usize> = (0..self.queues.len())
            .filter(|i| self.queues[*i].is_leaf() && self.queues[*i].short_name() == name)
            .collect();
        match found.as_slice() {
            [i] => Ok(*i),
            [] => Err(format!(
                "no queue {name:?} (leaf queues: {})",
                self.leaves()
                    .map(|i| self.queues[i].path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "queue name {name:?} is ambiguous: give the full path"
            )),
        }
    }

    pub fn leaves(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.queues.len()).filter(|i| self.queues[*i].is_leaf())
    }

    /// `q` and every queue above it.
    pub fn ancestry(&self, q: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(q), |i| self.queues[*i].parent)
    }
}

fn check_name(name: &str) -> Result<(), QueueError> {
    let ok = name == "root"
        || (name.starts_with("root.")
            && name.split('.').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }));
    if ok {
        Ok(())
    } else {
        err(format!(
            "queue {name:?}: a queue is named by its path from root, parts of letters, digits, '_' and '-' (root.prod.etl)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> QueueDefaults {
        QueueDefaults {
            maximum_am_resource_percent: 10.0,
            min_share_preemption_timeout_ms: 15_000,
            fair_share_preemption_timeout_ms: 30_000,
        }
    }

    #[test]
    fn capacities_become_absolute_and_leaves_resolve() {
        let t = QueueTree::parse(
            r#"
            [queue."root.prod"]
            capacity = 70
            [queue."root.dev"]
            capacity = 30
            maximum_capacity = 50
            [queue."root.dev.a"]
            [queue."root.dev.b"]
            "#,
            SchedulerKind::Capacity,
            &defaults(),
        )
        .unwrap();
        let q = |p: &str| &t.queues[t.queues.iter().position(|q| q.path == p).unwrap()];
        assert!((q("root.prod").abs_capacity - 0.7).abs() < 1e-9);
        assert!((q("root.dev.a").abs_capacity - 0.15).abs() < 1e-9);
        assert!((q("root.dev.a").abs_max_capacity - 0.5).abs() < 1e-9);
        assert_eq!(
            t.resolve_leaf("a").unwrap(),
            t.resolve_leaf("root.dev.a").unwrap()
        );
        let e = t.resolve_leaf("root.dev").unwrap_err();
        assert!(e.contains("has children"), "{e}");
        let e = t.resolve_leaf("nope").unwrap_err();
        assert!(
            e.contains("no queue \"nope\"") && e.contains("root.prod"),
            "{e}"
        );
    }

    #[test]
    fn mistakes_name_the_queue_and_key() {
        let cases = [
            (
                r#"[queue."root.a"]
capacity = 60
[queue."root.b"]
capacity = 30"#,
                SchedulerKind::Capacity,
                "sum to 90",
            ),
            (
                r#"[queue."root.a"]
capacity = 60
[queue."root.b"]"#,
                SchedulerKind::Capacity,
                "capacity missing",
            ),
            (
                r#"[queue."root.a"]
capacity = 100
maximum_capacity = 50"#,
                SchedulerKind::Capacity,
                "below its capacity",
            ),
            (
                r#"[queue."root.a"]
capacity = 140"#,
                SchedulerKind::Capacity,
                "0 to 100",
            ),
            (
                r#"[queue."root.a"]
weight = 2"#,
                SchedulerKind::Capacity,
                "weight is the fair scheduler's key",
            ),
            (
                r#"[queue."root.a"]
capacity = 100"#,
                SchedulerKind::Fair,
                "capacity is the capacity scheduler's key",
            ),
            (
                r#"[queue."root.a"]
weight = 0"#,
                SchedulerKind::Fair,
                "weight must be above 0",
            ),
            (
                r#"[queue."root.a"]
min_memory_mb = 10
max_memory_mb = 5"#,
                SchedulerKind::Fair,
                "exceeds max share",
            ),
            (r#"[queue."prod"]"#, SchedulerKind::Fair, "path from root"),
            (
                r#"[queue."root.a"]
capacty = 10"#,
                SchedulerKind::Capacity,
                "unknown field `capacty`",
            ),
            (r#"[queue."root.a"]"#, SchedulerKind::Fifo, "one queue"),
        ];
        for (text, kind, want) in cases {
            let e = QueueTree::parse(text, kind, &defaults())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn no_file_is_one_default_queue() {
        let t = QueueTree::single(&defaults());
        assert_eq!(t.queues.len(), 2);
        assert_eq!(t.resolve_leaf("default").unwrap(), 1);
        assert_eq!(t.queues[1].abs_capacity, 1.0);
    }
}
