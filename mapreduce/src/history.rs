//! What a job was and is: one record (state, progress, counters, every
//! task and attempt), served by a running application master to `hstack
//! mr status`, and written when the job ends to the job history directory
//! in the file system (`mapreduce.jobhistory.done-dir`, by default
//! `/mr-history/done`, one `<job>.json` per job, as Hadoop's history
//! server reads), so a finished job stays queryable after its master is
//! gone.

use serde::{Deserialize, Serialize};

use crate::counters::Counters;

pub const DONE_DIR: &str = "mapreduce.jobhistory.done-dir";
pub const DEFAULT_DONE_DIR: &str = "/mr-history/done";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AttemptRec {
    pub attempt_id: String,
    /// PENDING, STARTING, RUNNING, SUCCEEDED, FAILED, KILLED.
    pub state: String,
    pub node: String,
    pub container: String,
    /// node-local, rack-local, off-switch (maps on the cluster).
    pub locality: String,
    pub speculative: bool,
    pub start_ms: u64,
    pub finish_ms: u64,
    pub progress: f32,
    pub status: String,
    pub diagnostics: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskRec {
    pub task_id: String,
    pub is_map: bool,
    pub index: u32,
    /// PENDING, RUNNING, SUCCEEDED, FAILED, KILLED.
    pub state: String,
    pub attempts: Vec<AttemptRec>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JobInfo {
    pub job_id: String,
    pub app_id: String,
    pub name: String,
    pub user: String,
    pub queue: String,
    /// The built-in job or `streaming`.
    pub job: String,
    pub output: String,
    /// RUNNING, COMMITTING, SUCCEEDED, FAILED, KILLED.
    pub state: String,
    pub diagnostics: String,
    pub maps: u32,
    pub reduces: u32,
    pub maps_done: u32,
    pub reduces_done: u32,
    pub map_progress: f32,
    pub reduce_progress: f32,
    pub submit_ms: u64,
    pub start_ms: u64,
    pub finish_ms: u64,
    /// The application master's attempt that ran (or finished) it.
    pub am_attempt: u32,
    /// Whether its tasks ran inside the application master (a small job).
    pub uber: bool,
    pub counters: Counters,
    pub tasks: Vec<TaskRec>,
}

impl JobInfo {
    pub fn is_over(&self) -> bool {
        matches!(self.state.as_str(), "SUCCEEDED" | "FAILED" | "KILLED")
    }
}

/// `job_<cluster ts>_<seq>` of `application_<cluster ts>_<seq>`.
pub fn job_id_of(app_id: &str) -> String {
    match app_id.strip_prefix("application_") {
        Some(rest) => format!("job_{rest}"),
        None => app_id.to_string(),
    }
}

/// `application_…` of `job_…`.
pub fn app_id_of(job_id: &str) -> String {
    match job_id.strip_prefix("job_") {
        Some(rest) => format!("application_{rest}"),
        None => job_id.to_string(),
    }
}

pub fn history_file(done_dir: &str, job_id: &str) -> String {
    crate::fs::join(done_dir, &format!("{job_id}.json"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_and_application_ids_map_both_ways() {
        assert_eq!(super::job_id_of("application_1700_0003"), "job_1700_0003");
        assert_eq!(super::app_id_of("job_1700_0003"), "application_1700_0003");
    }
}
