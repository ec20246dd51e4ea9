//! What a job is, in one serializable value: which job, its inputs and
//! output, its configuration, and what submission worked out (the splits,
//! total-order boundaries). The client writes it where every task can read
//! it; each task process rebuilds the job from it.

use serde::{Deserialize, Serialize};

use crate::conf::JobConf;
use crate::io::Split;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobSpec {
    /// A built-in job (`wordcount`, `terasort`, …) or `streaming`.
    pub job: String,
    /// Its arguments as given (for `mr status` and the history).
    pub args: Vec<String>,
    pub user: String,
    pub inputs: Vec<String>,
    pub output: String,
    pub conf: JobConf,
    /// One per map task.
    pub splits: Vec<Split>,
    /// Total-order partition boundaries (sort, terasort): reduces − 1 keys.
    pub bounds: Vec<serde_bytes::ByteBuf>,
    /// Files every task gets in its working directory (streaming's
    /// `-file`), as paths in the job's file system.
    #[serde(default)]
    pub files: Vec<String>,
}

impl JobSpec {
    pub fn reduces(&self) -> u32 {
        self.conf.reduces()
    }

    pub fn maps(&self) -> u32 {
        self.splits.len() as u32
    }

    /// The job's name: `mapreduce.job.name`, else the job and its output.
    pub fn name(&self) -> String {
        match self.conf.get(crate::conf::JOB_NAME) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => format!("{} {}", self.job, self.output),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a job spec serializes")
    }

    pub fn decode(b: &[u8]) -> anyhow::Result<Self> {
        serde_json::from_slice(b)
            .map_err(|e| anyhow::anyhow!("a job description that does not parse: {e}"))
    }
}

/// A job id without its `job_` (`1700000000123_0007`).
fn bare(job_id: &str) -> &str {
    job_id.strip_prefix("job_").unwrap_or(job_id)
}

/// `task_<ts>_<seq>_m_000003` (or `_r_`), as Hadoop names tasks.
pub fn task_id(job_id: &str, is_map: bool, index: u32) -> String {
    let kind = if is_map { "m" } else { "r" };
    format!("task_{}_{kind}_{index:06}", bare(job_id))
}

/// `attempt_<ts>_<seq>_m_000003_1`.
pub fn attempt_id(job_id: &str, is_map: bool, index: u32, attempt: u32) -> String {
    let kind = if is_map { "m" } else { "r" };
    format!("attempt_{}_{kind}_{index:06}_{attempt}", bare(job_id))
}

/// `part-r-00003` / `part-m-00003`.
pub fn part_name(is_map: bool, index: u32) -> String {
    format!("part-{}-{index:05}", if is_map { "m" } else { "r" })
}
