//! Jobs: what a job is made of ([`Job`]), and the built-in ones, found by
//! name. Each built-in uses only the public API (`Mapper`, `Reducer`,
//! `Partitioner`, the formats), as a job of a user's own would.

pub mod grep;
pub mod index;
pub mod randomtext;
pub mod sort;
pub mod streaming;
pub mod tera;
pub mod wordcount;

use crate::api::{
    Emit, HashPartitioner, Mapper, Partitioner, Reducer, TaskContext, TotalOrderPartitioner, Values,
};
use crate::conf;
use crate::fs::Fs;
use crate::io::{self, InputFormat, OutputFormat};
use crate::spec::JobSpec;
use crate::splits;

pub trait Job: Send + Sync {
    /// What submission decides, before anything runs: checks of the job's
    /// own settings, defaults, the splits, partition boundaries. An error
    /// here fails the submission and changes nothing.
    fn prepare(&self, spec: &mut JobSpec, fs: &dyn Fs) -> anyhow::Result<()> {
        file_splits(self, spec, fs)
    }
    /// May an input file be cut into several splits?
    fn splittable(&self) -> bool {
        true
    }
    fn mapper(&self, spec: &JobSpec) -> anyhow::Result<Box<dyn Mapper>>;
    fn combiner(&self, _spec: &JobSpec) -> anyhow::Result<Option<Box<dyn Reducer>>> {
        Ok(None)
    }
    fn reducer(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Reducer>> {
        Ok(Box::new(Identity))
    }
    fn partitioner(&self, spec: &JobSpec) -> Box<dyn Partitioner> {
        if spec.bounds.is_empty() {
            Box::new(HashPartitioner)
        } else {
            Box::new(TotalOrderPartitioner {
                bounds: spec.bounds.iter().map(|b| b.to_vec()).collect(),
            })
        }
    }
    fn input_format(&self, spec: &JobSpec) -> anyhow::Result<Box<dyn InputFormat>> {
        io::input_format(spec.conf.str(conf::INPUT_FORMAT))
    }
    fn output_format(&self, spec: &JobSpec) -> anyhow::Result<Box<dyn OutputFormat>> {
        io::output_format(spec.conf.str(conf::OUTPUT_FORMAT))
    }
}

/// The default preparation: one split per block of every input file.
pub fn file_splits<J: Job + ?Sized>(
    job: &J,
    spec: &mut JobSpec,
    fs: &dyn Fs,
) -> anyhow::Result<()> {
    let files = splits::input_files(fs, &spec.inputs)?;
    spec.splits = splits::file_splits(fs, &files, job.splittable(), &spec.conf)?;
    Ok(())
}

/// The built-in jobs: (name, what it does).
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "wordcount",
        "count each word (split at whitespace) of text input",
    ),
    (
        "grep",
        "count the matches of a regular expression (--pattern)",
    ),
    (
        "sort",
        "sort text lines, in total order across the output files",
    ),
    ("invertedindex", "for each word, the input files it is in"),
    (
        "teragen",
        "write --rows TeraSort records (100 bytes, 10-byte keys)",
    ),
    ("terasort", "sort TeraSort records in total order"),
    (
        "teravalidate",
        "check TeraSort output: sorted, files in order, checksum",
    ),
];

/// The job of a name.
pub fn lookup(name: &str) -> anyhow::Result<Box<dyn Job>> {
    Ok(match name {
        "wordcount" => Box::new(wordcount::WordCount),
        "grep" => Box::new(grep::Grep),
        "sort" => Box::new(sort::Sort),
        "invertedindex" => Box::new(index::InvertedIndex),
        "randomtext" => Box::new(randomtext::RandomText),
        "teragen" => Box::new(tera::TeraGen),
        "terasort" => Box::new(sort::TeraSort),
        "teravalidate" => Box::new(tera::TeraValidate),
        // Not in BUILT_IN: it runs through `mr streaming`, not `mr run`.
        "streaming" => Box::new(streaming::Streaming),
        other => {
            let names: Vec<&str> = BUILT_IN.iter().map(|b| b.0).collect();
            anyhow::bail!("no built-in job {other:?} (there are {})", names.join(", "))
        }
    })
}

/// Passes every record through.
pub struct Identity;

impl Mapper for Identity {
    fn map(
        &mut self,
        key: &[u8],
        value: &[u8],
        out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        out.emit(key, value)
    }
}

impl Reducer for Identity {
    fn reduce(
        &mut self,
        key: &[u8],
        values: &mut dyn Values,
        out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        while let Some(v) = values.next_value()? {
            out.emit(key, v)?;
        }
        Ok(())
    }
}

/// Sums decimal values: the combiner and reducer of the counting jobs.
pub struct Sum;

pub fn parse_u64(v: &[u8]) -> anyhow::Result<u64> {
    let mut n = 0u64;
    anyhow::ensure!(!v.is_empty(), "an empty count");
    for &b in v {
        anyhow::ensure!(
            b.is_ascii_digit(),
            "not a count: {:?}",
            String::from_utf8_lossy(v)
        );
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| anyhow::anyhow!("a count above 2^64"))?;
    }
    Ok(n)
}

impl Reducer for Sum {
    fn reduce(
        &mut self,
        key: &[u8],
        values: &mut dyn Values,
        out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        let mut n = 0u64;
        while let Some(v) = values.next_value()? {
            n += parse_u64(v)?;
        }
        let mut b = Vec::with_capacity(20);
        io::text::write_decimal(&mut b, n);
        out.emit(key, &b)
    }
}

/// A hash map keyed by bytes with a fast, fixed hash (FNV-1a over 8-byte
/// words), for mappers that aggregate in memory.
pub type ByteMap<V> =
    std::collections::HashMap<Vec<u8>, V, std::hash::BuildHasherDefault<WordHasher>>;

#[derive(Default)]
pub struct WordHasher(u64);

impl std::hash::Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            h = (h ^ u64::from_le_bytes(c.try_into().expect("8"))).wrapping_mul(0x0100_0000_01b3);
            h ^= h >> 29;
        }
        for &b in chunks.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h ^ (h >> 32);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x0100_0000_01b3);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Emits every (key, count) of an aggregation map, sorted, and clears it.
pub fn flush_counts(m: &mut ByteMap<u64>, out: &mut dyn Emit) -> anyhow::Result<()> {
    let mut all: Vec<(Vec<u8>, u64)> = m.drain().collect();
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut b = Vec::with_capacity(20);
    for (k, n) in all {
        b.clear();
        io::text::write_decimal(&mut b, n);
        out.emit(&k, &b)?;
    }
    Ok(())
}

/// Words of a line: runs of bytes between ASCII whitespace (what Hadoop's
/// WordCount gets from StringTokenizer).
pub fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c))
        .filter(|w| !w.is_empty())
}
