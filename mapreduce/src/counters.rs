//! Counters: named totals in groups, as Hadoop's. The framework's groups
//! and names are Hadoop's own (`TaskCounter`, `FileSystemCounter`,
//! `JobCounter`), so an operator's dashboards and habits carry over; jobs
//! add their own groups. A job's counters are the sum over the one
//! attempt of each task that succeeded (a failed or killed attempt's
//! counters are dropped), plus the job counters the master keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const TASK: &str = "TaskCounter";
pub const FS: &str = "FileSystemCounter";
pub const JOB: &str = "JobCounter";

pub const MAP_INPUT_RECORDS: &str = "MAP_INPUT_RECORDS";
pub const MAP_OUTPUT_RECORDS: &str = "MAP_OUTPUT_RECORDS";
pub const MAP_OUTPUT_BYTES: &str = "MAP_OUTPUT_BYTES";
pub const MAP_OUTPUT_MATERIALIZED_BYTES: &str = "MAP_OUTPUT_MATERIALIZED_BYTES";
pub const MAP_SKIPPED_RECORDS: &str = "MAP_SKIPPED_RECORDS";
pub const COMBINE_INPUT_RECORDS: &str = "COMBINE_INPUT_RECORDS";
pub const COMBINE_OUTPUT_RECORDS: &str = "COMBINE_OUTPUT_RECORDS";
pub const SPILLED_RECORDS: &str = "SPILLED_RECORDS";
pub const REDUCE_INPUT_GROUPS: &str = "REDUCE_INPUT_GROUPS";
pub const REDUCE_INPUT_RECORDS: &str = "REDUCE_INPUT_RECORDS";
pub const REDUCE_OUTPUT_RECORDS: &str = "REDUCE_OUTPUT_RECORDS";
pub const REDUCE_SHUFFLE_BYTES: &str = "REDUCE_SHUFFLE_BYTES";
pub const SHUFFLED_MAPS: &str = "SHUFFLED_MAPS";
pub const MERGED_MAP_OUTPUTS: &str = "MERGED_MAP_OUTPUTS";

pub const FILE_BYTES_READ: &str = "FILE_BYTES_READ";
pub const FILE_BYTES_WRITTEN: &str = "FILE_BYTES_WRITTEN";
pub const HDFS_BYTES_READ: &str = "HDFS_BYTES_READ";
pub const HDFS_BYTES_WRITTEN: &str = "HDFS_BYTES_WRITTEN";

pub const TOTAL_LAUNCHED_MAPS: &str = "TOTAL_LAUNCHED_MAPS";
pub const TOTAL_LAUNCHED_REDUCES: &str = "TOTAL_LAUNCHED_REDUCES";
pub const NUM_FAILED_MAPS: &str = "NUM_FAILED_MAPS";
pub const NUM_FAILED_REDUCES: &str = "NUM_FAILED_REDUCES";
pub const NUM_KILLED_MAPS: &str = "NUM_KILLED_MAPS";
pub const NUM_KILLED_REDUCES: &str = "NUM_KILLED_REDUCES";
pub const DATA_LOCAL_MAPS: &str = "DATA_LOCAL_MAPS";
pub const RACK_LOCAL_MAPS: &str = "RACK_LOCAL_MAPS";
pub const OTHER_LOCAL_MAPS: &str = "OTHER_LOCAL_MAPS";

/// Group → name → total.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Counters(pub BTreeMap<String, BTreeMap<String, i64>>);

impl Counters {
    pub fn add(&mut self, group: &str, name: &str, n: i64) {
        if let Some(g) = self.0.get_mut(group) {
            if let Some(v) = g.get_mut(name) {
                *v += n;
                return;
            }
            g.insert(name.to_string(), n);
            return;
        }
        self.0
            .entry(group.to_string())
            .or_default()
            .insert(name.to_string(), n);
    }

    pub fn get(&self, group: &str, name: &str) -> i64 {
        self.0
            .get(group)
            .and_then(|g| g.get(name))
            .copied()
            .unwrap_or(0)
    }

    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Counters) {
        for (g, names) in &other.0 {
            for (n, v) in names {
                self.add(g, n, *v);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(|g| g.is_empty())
    }

    /// Every counter as (group, name, value), groups in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.0
            .iter()
            .flat_map(|(g, ns)| ns.iter().map(move |(n, v)| (g.as_str(), n.as_str(), *v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_merges() {
        let mut a = Counters::default();
        a.add(TASK, MAP_INPUT_RECORDS, 3);
        a.add(TASK, MAP_INPUT_RECORDS, 4);
        a.add("mine", "x", 1);
        let mut b = Counters::default();
        b.add(TASK, MAP_INPUT_RECORDS, 10);
        b.merge(&a);
        assert_eq!(b.get(TASK, MAP_INPUT_RECORDS), 17);
        assert_eq!(b.get("mine", "x"), 1);
        assert_eq!(b.get("mine", "y"), 0);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Counters>(&json).unwrap(), b);
    }
}
