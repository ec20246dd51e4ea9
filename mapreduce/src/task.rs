//! One attempt of a map or reduce task, the same whether it runs in a
//! container on the cluster or in the local runner: build the job from
//! its spec, read, map or reduce, write, and report progress as it goes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::{Emit, Partitioner, TaskContext, TaskInfo};
use crate::committer::Committer;
use crate::conf;
use crate::counters::{self as c, Counters};
use crate::fs::{self, Fs, FsKind};
use crate::io::WriterEmit;
use crate::jobs::{self, Job};
use crate::mapside::{MapOutput, MapOutputConf, SortBuffer};
use crate::merge::{self, RecordSource};
use crate::spec::{self, JobSpec};

/// Told how far an attempt is, now and then; answers whether to go on.
pub trait Progress: Send + Sync {
    fn progress(&self, fraction: f32, status: &str);
    /// The map input record about to be processed (numbered from 0), so
    /// that a crash can be pinned on it.
    fn record(&self, _n: u64) {}
    /// No record to blame (the mapper failed before taking any).
    fn no_record(&self) {}
}

/// Reports nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn progress(&self, _fraction: f32, _status: &str) {}
}

/// Records between progress reports.
const REPORT_EVERY: u64 = 8192;

/// Which attempt to run, and where.
pub struct Attempt<'a> {
    pub spec: &'a JobSpec,
    pub job_id: &'a str,
    pub index: u32,
    pub attempt: u32,
    /// The job's file system (input and output).
    pub fs: Arc<dyn Fs>,
    /// The attempt's own directory on local disk (a map's output goes
    /// here).
    pub work: PathBuf,
    pub progress: &'a dyn Progress,
    /// Input records (by number, sorted) a map skips: they crashed
    /// earlier attempts.
    pub skip: &'a [u64],
    /// A failure would put the record on the skip list (the master's
    /// `skip_mode`): the mapper is told through [`conf::SKIP_MODE`].
    pub skip_mode: bool,
}

/// A mapper's error meaning "the record before the one I was given
/// crashed me" (Streaming: the process died before it read this one).
#[derive(Debug)]
pub struct PreviousRecordFailed(pub String);

impl std::fmt::Display for PreviousRecordFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PreviousRecordFailed {}

impl Attempt<'_> {
    pub fn attempt_id(&self, is_map: bool) -> String {
        spec::attempt_id(self.job_id, is_map, self.index, self.attempt)
    }

    fn context(&self, is_map: bool) -> TaskContext {
        let split = if is_map {
            self.spec.splits.get(self.index as usize)
        } else {
            None
        };
        let info = TaskInfo {
            job_id: self.job_id.to_string(),
            task_id: spec::task_id(self.job_id, is_map, self.index),
            attempt_id: self.attempt_id(is_map),
            is_map,
            partition: self.index,
            input_file: split.map(|s| s.path.clone()).unwrap_or_default(),
            input_start: split.map_or(0, |s| s.start),
            input_length: split.map_or(0, |s| s.len),
            work_dir: self.work.clone(),
        };
        let mut ctx = TaskContext::new(Arc::new(self.spec.conf.clone()), info);
        let committer = Committer::new(self.fs.clone(), &self.spec.output);
        ctx.side = Some((self.fs.clone(), committer.attempt_dir(&ctx.info.attempt_id)));
        ctx
    }
}

/// What a finished map attempt leaves.
#[derive(Debug)]
pub struct MapDone {
    /// The partitioned output (none for a map-only job, whose output went
    /// to the committer).
    pub output: Option<MapOutput>,
    pub counters: Counters,
}

/// Partitions map output into the sort buffer.
struct Collector<'a> {
    partitioner: &'a dyn Partitioner,
    reduces: u32,
    buf: SortBuffer,
}

impl Emit for Collector<'_> {
    #[inline]
    fn emit(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        let p = self.partitioner.partition(key, value, self.reduces);
        anyhow::ensure!(
            p < self.reduces,
            "the partitioner chose partition {p} of {}",
            self.reduces
        );
        self.buf.collect(p, key, value)
    }
}

fn fs_counter(kind: FsKind, read: bool) -> &'static str {
    match (kind, read) {
        (FsKind::Dfs, true) => c::HDFS_BYTES_READ,
        (FsKind::Dfs, false) => c::HDFS_BYTES_WRITTEN,
        (FsKind::Local, true) => c::FILE_BYTES_READ,
        (FsKind::Local, false) => c::FILE_BYTES_WRITTEN,
    }
}

/// Adds the job file system's bytes and the local disk's to `ctx`.
fn count_bytes(ctx: &mut TaskContext, fs: &dyn Fs, local_read: u64, local_written: u64) {
    ctx.counters
        .add(c::FS, fs_counter(fs.kind(), true), fs.bytes_read() as i64);
    ctx.counters.add(
        c::FS,
        fs_counter(fs.kind(), false),
        fs.bytes_written() as i64,
    );
    ctx.counters
        .add(c::FS, c::FILE_BYTES_READ, local_read as i64);
    ctx.counters
        .add(c::FS, c::FILE_BYTES_WRITTEN, local_written as i64);
}

/// Whether record `n` is one to skip (counted).
#[inline]
fn skipping(a: &Attempt<'_>, n: u64, skipped: &mut u64) -> bool {
    if !a.skip.is_empty() && a.skip.binary_search(&n).is_ok() {
        *skipped += 1;
        return true;
    }
    false
}

/// A mapper's error; the record it blames becomes the attempt's record
/// (what its failure report names).
fn blame(a: &Attempt<'_>, e: anyhow::Error, last_fed: Option<u64>) -> anyhow::Error {
    if e.downcast_ref::<PreviousRecordFailed>().is_some() {
        match last_fed {
            Some(n) => a.progress.record(n),
            None => a.progress.no_record(),
        }
    }
    e
}

/// Runs a map attempt.
pub fn run_map(a: &Attempt<'_>) -> anyhow::Result<MapDone> {
    let spec = a.spec;
    // Counts of this task's own bytes.
    let fs = a.fs.fork();
    let job = jobs::lookup(&spec.job)?;
    let split = spec
        .splits
        .get(a.index as usize)
        .ok_or_else(|| anyhow::anyhow!("map {} of a job with {} maps", a.index, spec.maps()))?;
    std::fs::create_dir_all(&a.work)?;
    let mut ctx = a.context(true);
    if a.skip_mode {
        let mut c = (*ctx.conf).clone();
        c.set(conf::SKIP_MODE, "true");
        ctx.conf = Arc::new(c);
    }
    let input = job.input_format(spec)?;
    let mut reader = input.reader(fs.as_ref(), split, &spec.conf)?;
    let mut mapper = job.mapper(spec)?;
    mapper.setup(&mut ctx)?;
    let reduces = spec.reduces();
    let mut records = 0u64;
    let mut skipped = 0u64;
    // The last record the mapper was given.
    let mut last_fed: Option<u64> = None;
    let (output, local_read, local_written) = if reduces > 0 {
        let partitioner = job.partitioner(spec);
        let combiner = job
            .combiner(spec)?
            .map(|r| (r, TaskContext::new(ctx.conf.clone(), ctx.info.clone())));
        let conf = MapOutputConf {
            dir: a.work.clone(),
            reduces,
            sort_bytes: (spec.conf.u64(conf::SORT_MB) << 20) as usize,
            compress: spec.conf.bool(conf::MAP_OUTPUT_COMPRESS),
        };
        std::fs::create_dir_all(&conf.dir)?;
        let mut out = Collector {
            partitioner: partitioner.as_ref(),
            reduces,
            buf: SortBuffer::new(conf, combiner),
        };
        while let Some((k, v)) = reader.next()? {
            if skipping(a, records, &mut skipped) {
                records += 1;
                continue;
            }
            a.progress.record(records);
            mapper
                .map(k, v, &mut out, &mut ctx)
                .map_err(|e| blame(a, e, last_fed))?;
            last_fed = Some(records);
            records += 1;
            if records % REPORT_EVERY == 0 {
                a.progress.progress(reader.progress() * 0.9, ctx.status());
            }
        }
        mapper.cleanup(&mut out, &mut ctx)?;
        a.progress.progress(0.9, "sorting");
        let (mo, stats, cctx) = out.buf.finish()?;
        if let Some(cc) = cctx {
            ctx.counters.merge(&cc.counters);
        }
        let t = c::TASK;
        ctx.counters
            .add(t, c::MAP_OUTPUT_RECORDS, stats.output_records as i64);
        ctx.counters
            .add(t, c::MAP_OUTPUT_BYTES, stats.output_bytes as i64);
        ctx.counters.add(
            t,
            c::MAP_OUTPUT_MATERIALIZED_BYTES,
            stats.materialized_bytes as i64,
        );
        ctx.counters
            .add(t, c::SPILLED_RECORDS, stats.spilled_records as i64);
        ctx.counters
            .add(t, c::COMBINE_INPUT_RECORDS, stats.combine_input as i64);
        ctx.counters
            .add(t, c::COMBINE_OUTPUT_RECORDS, stats.combine_output as i64);
        (Some(mo), stats.local_read, stats.local_written)
    } else {
        let of = job.output_format(spec)?;
        let dir = Committer::new(fs.clone(), &spec.output).attempt_dir(&ctx.info.attempt_id);
        let path = fs::join(&dir, &spec::part_name(true, a.index));
        let mut out = WriterEmit {
            w: of.writer(fs.as_ref(), &path, &spec.conf)?,
            records: 0,
        };
        while let Some((k, v)) = reader.next()? {
            if skipping(a, records, &mut skipped) {
                records += 1;
                continue;
            }
            a.progress.record(records);
            mapper
                .map(k, v, &mut out, &mut ctx)
                .map_err(|e| blame(a, e, last_fed))?;
            last_fed = Some(records);
            records += 1;
            if records % REPORT_EVERY == 0 {
                a.progress.progress(reader.progress(), ctx.status());
            }
        }
        mapper.cleanup(&mut out, &mut ctx)?;
        ctx.counters
            .add(c::TASK, c::MAP_OUTPUT_RECORDS, out.records as i64);
        out.w.close()?;
        (None, 0, 0)
    };
    ctx.counters
        .add(c::TASK, c::MAP_INPUT_RECORDS, records as i64);
    if skipped > 0 {
        ctx.counters
            .add(c::TASK, c::MAP_SKIPPED_RECORDS, skipped as i64);
    }
    count_bytes(&mut ctx, fs.as_ref(), local_read, local_written);
    a.progress.progress(1.0, ctx.status());
    Ok(MapDone {
        output,
        counters: ctx.counters,
    })
}

/// Runs a reduce attempt over `input` (the merge of every map's
/// partition), writing `part-r-NNNNN` into the attempt's directory.
pub fn run_reduce(
    a: &Attempt<'_>,
    input: &mut dyn RecordSource,
    shuffle: &crate::reduceside::ShuffleStats,
) -> anyhow::Result<Counters> {
    let spec = a.spec;
    let fs = a.fs.fork();
    let job = jobs::lookup(&spec.job)?;
    std::fs::create_dir_all(&a.work)?;
    let mut ctx = a.context(false);
    let mut reducer = job.reducer(spec)?;
    let of = job.output_format(spec)?;
    let dir = Committer::new(fs.clone(), &spec.output).attempt_dir(&ctx.info.attempt_id);
    let path = fs::join(&dir, &spec::part_name(false, a.index));
    let mut out = WriterEmit {
        w: of.writer(fs.as_ref(), &path, &spec.conf)?,
        records: 0,
    };
    reducer.setup(&mut ctx)?;
    let mut groups = 0u64;
    let g = merge::for_each_group(input, |k, vals| {
        groups += 1;
        if groups % 1024 == 0 {
            // Groups done: what tells the master the reduce is not hung.
            a.progress.record(groups);
            let done = shuffle.records.max(1) as f64;
            let f = 0.34 + 0.66 * (groups as f64 / done).min(1.0);
            a.progress.progress(f as f32, ctx.status());
        }
        reducer.reduce(k, vals, &mut out, &mut ctx)
    })?;
    reducer.cleanup(&mut out, &mut ctx)?;
    let t = c::TASK;
    ctx.counters.add(t, c::REDUCE_INPUT_GROUPS, g.groups as i64);
    ctx.counters
        .add(t, c::REDUCE_INPUT_RECORDS, g.records as i64);
    ctx.counters
        .add(t, c::REDUCE_OUTPUT_RECORDS, out.records as i64);
    ctx.counters
        .add(t, c::REDUCE_SHUFFLE_BYTES, shuffle.shuffled_bytes as i64);
    ctx.counters
        .add(t, c::SHUFFLED_MAPS, shuffle.segments as i64);
    out.w.close()?;
    count_bytes(
        &mut ctx,
        fs.as_ref(),
        shuffle.local_read,
        shuffle.local_written,
    );
    a.progress.progress(1.0, ctx.status());
    Ok(ctx.counters)
}

/// The local directory of an attempt under `root`.
pub fn work_dir(root: &Path, attempt_id: &str) -> PathBuf {
    root.join(attempt_id)
}

/// The job a spec names (for checks before anything runs).
pub fn job_of(spec: &JobSpec) -> anyhow::Result<Box<dyn Job>> {
    jobs::lookup(&spec.job)
}
