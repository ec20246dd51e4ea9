//! Sorting in total order: the input is sampled when the job is
//! submitted, `reduces − 1` boundaries are picked from the sorted sample,
//! and a total-order partitioner sends each key to the reduce of its
//! range — so `part-r-00000`, `part-r-00001`, … in order are one sorted
//! sequence. `sort` sorts text lines (by their bytes); `terasort` sorts
//! TeraSort records by their 10-byte keys and writes its output with
//! replication 1 unless told otherwise, as Hadoop's TeraSort does.

use super::{file_splits, Identity, Job};
use crate::api::{Emit, Mapper, TaskContext};
use crate::conf::{self};
use crate::fs::Fs;
use crate::io::{self, InputFormat, OutputFormat};
use crate::spec::JobSpec;
use crate::splits;

pub const SAMPLES: &str = "mapreduce.sort.samples";
/// Splits sampled at most.
const SAMPLED_SPLITS: usize = 10;

/// Keys from up to ten splits spread over the input, `samples` in all,
/// each the key `key_of` makes of a record.
pub fn sample(
    spec: &JobSpec,
    fs: &dyn Fs,
    input: &dyn InputFormat,
    key_of: fn(&[u8], &[u8]) -> Vec<u8>,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let want = spec
        .conf
        .get(SAMPLES)
        .map_or(Ok(20_000), str::parse::<usize>)
        .map_err(|_| anyhow::anyhow!("{SAMPLES} must be a number"))?;
    let n = spec.splits.len();
    if n == 0 || want == 0 {
        return Ok(Vec::new());
    }
    let picked = n.min(SAMPLED_SPLITS);
    let per = want.div_ceil(picked);
    let mut keys = Vec::with_capacity(want);
    for i in 0..picked {
        let split = &spec.splits[i * n / picked];
        let mut r = input.reader(fs, split, &spec.conf)?;
        let mut got = 0;
        while got < per {
            let Some((k, v)) = r.next()? else { break };
            keys.push(key_of(k, v));
            got += 1;
        }
    }
    Ok(keys)
}

fn set_bounds(spec: &mut JobSpec, keys: Vec<Vec<u8>>) {
    spec.bounds = splits::boundaries(keys, spec.reduces())
        .into_iter()
        .map(serde_bytes::ByteBuf::from)
        .collect();
}

pub struct Sort;

/// (offset, line) → (line, ·).
struct LineKey;

impl Mapper for LineKey {
    fn map(
        &mut self,
        _key: &[u8],
        line: &[u8],
        out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        out.emit(line, b"")
    }
}

impl Job for Sort {
    fn prepare(&self, spec: &mut JobSpec, fs: &dyn Fs) -> anyhow::Result<()> {
        file_splits(self, spec, fs)?;
        let input = self.input_format(spec)?;
        let keys = sample(spec, fs, input.as_ref(), |_, line| line.to_vec())?;
        set_bounds(spec, keys);
        Ok(())
    }
    fn mapper(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Mapper>> {
        Ok(Box::new(LineKey))
    }
    fn input_format(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn InputFormat>> {
        io::input_format("text")
    }
}

pub struct TeraSort;

impl Job for TeraSort {
    fn prepare(&self, spec: &mut JobSpec, fs: &dyn Fs) -> anyhow::Result<()> {
        if spec.conf.get(conf::OUTPUT_REPLICATION).is_none() {
            spec.conf.set(conf::OUTPUT_REPLICATION, "1");
        }
        file_splits(self, spec, fs)?;
        let keys = sample(spec, fs, &io::tera::TeraInput, |k, _| k.to_vec())?;
        set_bounds(spec, keys);
        Ok(())
    }
    fn mapper(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Mapper>> {
        Ok(Box::new(Identity))
    }
    fn input_format(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn InputFormat>> {
        io::input_format("tera")
    }
    fn output_format(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn OutputFormat>> {
        io::output_format("tera")
    }
}
