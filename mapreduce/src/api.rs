//! The API of a job compiled into hstack: a [`Mapper`], a [`Reducer`]
//! (which also serves as the combiner, as in Hadoop), a [`Partitioner`].
//! Keys and values are bytes; keys sort by their bytes (as Hadoop's
//! `Text` does). Records passed in are borrowed and valid only during the
//! call; emitted ones are copied.

use std::sync::Arc;

use crate::conf::JobConf;
use crate::counters::Counters;
use crate::fs::{Fs, FsWrite};

/// Where a task's code puts its records.
pub trait Emit {
    fn emit(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()>;
}

/// The values of one key, in the order the merge met them.
pub trait Values {
    fn next_value(&mut self) -> anyhow::Result<Option<&[u8]>>;
}

/// Which task an attempt belongs to and what it reads.
#[derive(Clone, Debug, Default)]
pub struct TaskInfo {
    pub job_id: String,
    /// `task_<job>_m_000003`.
    pub task_id: String,
    /// `attempt_<job>_m_000003_1`.
    pub attempt_id: String,
    pub is_map: bool,
    /// The map's index, or the reduce's partition.
    pub partition: u32,
    /// A map's split: file, first byte, length.
    pub input_file: String,
    pub input_start: u64,
    pub input_length: u64,
    /// A directory of the attempt's own, on local disk.
    pub work_dir: std::path::PathBuf,
}

/// What a task's code may see and do beside its records.
pub struct TaskContext {
    pub conf: Arc<JobConf>,
    pub info: TaskInfo,
    pub counters: Counters,
    status: String,
    /// Bumped by the framework as records move; read by the progress
    /// reporter.
    pub(crate) progress: f32,
    /// Where side files go: the file system and the attempt's directory
    /// (committed with the task's output).
    pub(crate) side: Option<(Arc<dyn Fs>, String)>,
}

impl TaskContext {
    pub fn new(conf: Arc<JobConf>, info: TaskInfo) -> Self {
        Self {
            conf,
            info,
            counters: Counters::default(),
            status: String::new(),
            progress: 0.0,
            side: None,
        }
    }

    /// A file beside the task's output (in the attempt's directory, so it
    /// is committed, or thrown away, with the task). Names starting with
    /// `_` are not read as input by later jobs.
    pub fn create_side_file(&mut self, name: &str) -> anyhow::Result<Box<dyn FsWrite>> {
        anyhow::ensure!(
            !name.is_empty() && !name.contains('/') && name != crate::committer::TASK_RECORD,
            "side file name {name:?}: one plain file name"
        );
        let Some((fs, dir)) = &self.side else {
            anyhow::bail!("this task has no output directory for side files");
        };
        fs.create(&crate::fs::join(dir, name), 0)
    }

    /// Adds `n` to a counter of the job's own.
    pub fn count(&mut self, group: &str, name: &str, n: i64) {
        self.counters.add(group, name, n);
    }

    /// What the task says it is doing (shown with its status).
    pub fn set_status(&mut self, s: impl Into<String>) {
        self.status = s.into();
    }

    pub fn status(&self) -> &str {
        &self.status
    }

    pub fn progress(&self) -> f32 {
        self.progress
    }

    /// The job's file system (where its input, output and shipped files
    /// are).
    pub fn fs(&self) -> Option<&Arc<dyn Fs>> {
        self.side.as_ref().map(|(fs, _)| fs)
    }
}

pub trait Mapper: Send {
    fn setup(&mut self, _ctx: &mut TaskContext) -> anyhow::Result<()> {
        Ok(())
    }
    fn map(
        &mut self,
        key: &[u8],
        value: &[u8],
        out: &mut dyn Emit,
        ctx: &mut TaskContext,
    ) -> anyhow::Result<()>;
    /// After the last record: a mapper that aggregates in memory emits
    /// here.
    fn cleanup(&mut self, _out: &mut dyn Emit, _ctx: &mut TaskContext) -> anyhow::Result<()> {
        Ok(())
    }
}

pub trait Reducer: Send {
    fn setup(&mut self, _ctx: &mut TaskContext) -> anyhow::Result<()> {
        Ok(())
    }
    fn reduce(
        &mut self,
        key: &[u8],
        values: &mut dyn Values,
        out: &mut dyn Emit,
        ctx: &mut TaskContext,
    ) -> anyhow::Result<()>;
    fn cleanup(&mut self, _out: &mut dyn Emit, _ctx: &mut TaskContext) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Which reduce a map-output record goes to.
pub trait Partitioner: Send + Sync {
    fn partition(&self, key: &[u8], value: &[u8], reduces: u32) -> u32;
}

/// The default: a fixed hash of the key's bytes (FNV-1a), the same in
/// every process and build, so that a job run locally and on the cluster
/// puts every key in the same output file.
pub struct HashPartitioner;

pub fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Partitioner for HashPartitioner {
    fn partition(&self, key: &[u8], _value: &[u8], reduces: u32) -> u32 {
        (fnv1a(key) % u64::from(reduces.max(1))) as u32
    }
}

/// Total order: partition `i` holds the keys from boundary `i - 1`
/// (inclusive) up to boundary `i` (exclusive), so the output files in
/// order are one sorted sequence. The boundaries come from sampling the
/// input when the job is submitted.
pub struct TotalOrderPartitioner {
    pub bounds: Vec<Vec<u8>>,
}

impl Partitioner for TotalOrderPartitioner {
    fn partition(&self, key: &[u8], _value: &[u8], reduces: u32) -> u32 {
        let i = self.bounds.partition_point(|b| b.as_slice() <= key);
        (i as u32).min(reduces.saturating_sub(1))
    }
}

/// Collects records in memory (tests, samplers).
#[derive(Default, Debug)]
pub struct VecEmit(pub Vec<(Vec<u8>, Vec<u8>)>);

impl Emit for VecEmit {
    fn emit(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.0.push((key.to_vec(), value.to_vec()));
        Ok(())
    }
}

/// Values over an in-memory list (tests).
pub struct SliceValues<'a> {
    pub values: &'a [Vec<u8>],
    pub i: usize,
}

impl Values for SliceValues<'_> {
    fn next_value(&mut self) -> anyhow::Result<Option<&[u8]>> {
        let v = self.values.get(self.i).map(Vec::as_slice);
        self.i += 1;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_order_partitions_by_boundaries() {
        let p = TotalOrderPartitioner {
            bounds: vec![b"g".to_vec(), b"p".to_vec()],
        };
        assert_eq!(p.partition(b"a", b"", 3), 0);
        assert_eq!(p.partition(b"g", b"", 3), 1);
        assert_eq!(p.partition(b"h", b"", 3), 1);
        assert_eq!(p.partition(b"p", b"", 3), 2);
        assert_eq!(p.partition(b"zzz", b"", 3), 2);
    }

    #[test]
    fn the_hash_is_fixed() {
        // FNV-1a's published test vector: a change would move keys
        // between reduces and break `--local` equality with the cluster.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!(HashPartitioner.partition(b"word", b"", 7) < 7);
    }
}
