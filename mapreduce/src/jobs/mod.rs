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

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// MurmurHash3's finalizer: every input bit reaches every output bit (the
/// hash table takes its buckets from the low bits and its tags from the
/// high ones).
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl std::hash::Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            h = (h ^ u64::from_le_bytes(c.try_into().expect("8")))
                .wrapping_mul(MIX)
                .rotate_left(31);
        }
        let r = chunks.remainder();
        if !r.is_empty() {
            let mut t = [0u8; 8];
            t[..r.len()].copy_from_slice(r);
            h = (h ^ u64::from_le_bytes(t))
                .wrapping_mul(MIX)
                .rotate_left(31);
        }
        self.0 = h;
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(MIX).rotate_left(31);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        fmix64(self.0)
    }
}

/// Counts of words (or any short byte strings): words of up to seven
/// bytes are packed into one integer key (their bytes and their length),
/// so counting them hashes one word and compares integers — no
/// allocation, no byte comparison; longer ones go to a byte-keyed map.
pub struct WordCounts {
    /// A direct-mapped cache of short words' counts in front of the map:
    /// the frequent words of natural text (Zipf) stay in it, and a count
    /// is one access to a few kilobytes that stay in the CPU's cache,
    /// where the map's table is megabytes.
    front_keys: Vec<u64>,
    front_counts: Vec<u64>,
    short: std::collections::HashMap<u64, u64, std::hash::BuildHasherDefault<WordHasher>>,
    long: ByteMap<u64>,
}

const FRONT_BITS: u32 = 11;

impl Default for WordCounts {
    fn default() -> Self {
        Self {
            front_keys: vec![0; 1 << FRONT_BITS],
            front_counts: vec![0; 1 << FRONT_BITS],
            short: Default::default(),
            long: Default::default(),
        }
    }
}

#[inline]
fn pack(w: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..w.len()].copy_from_slice(w);
    b[7] = w.len() as u8;
    u64::from_le_bytes(b)
}

fn unpack(k: u64) -> Vec<u8> {
    let b = k.to_le_bytes();
    b[..b[7] as usize].to_vec()
}

impl WordCounts {
    #[inline]
    pub fn add(&mut self, w: &[u8], n: u64) {
        if w.len() <= 7 {
            // (a packed word is never 0: its length byte is at least 1)
            let k = pack(w);
            let i = (k.wrapping_mul(MIX) >> (64 - FRONT_BITS)) as usize;
            if self.front_keys[i] == k {
                self.front_counts[i] += n;
                return;
            }
            let old = std::mem::replace(&mut self.front_keys[i], k);
            let was = std::mem::replace(&mut self.front_counts[i], n);
            if old != 0 {
                *self.short.entry(old).or_insert(0) += was;
            }
        } else if let Some(c) = self.long.get_mut(w) {
            *c += n;
        } else {
            self.long.insert(w.to_vec(), n);
        }
    }

    /// Moves the cache's counts into the map.
    fn settle(&mut self) {
        for i in 0..self.front_keys.len() {
            let k = std::mem::take(&mut self.front_keys[i]);
            if k != 0 {
                *self.short.entry(k).or_insert(0) += std::mem::take(&mut self.front_counts[i]);
            }
        }
    }

    /// Distinct words held in the map (the cache's few not counted).
    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.front_keys.iter().all(|k| *k == 0)
    }

    /// Every (word, count), sorted by word; the counts are cleared.
    pub fn drain_sorted(&mut self) -> Vec<(Vec<u8>, u64)> {
        self.settle();
        let mut all: Vec<(Vec<u8>, u64)> =
            self.short.drain().map(|(k, n)| (unpack(k), n)).collect();
        all.extend(self.long.drain());
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Emits every (word, count) in order (decimal counts) and clears.
    pub fn flush(&mut self, out: &mut dyn Emit) -> anyhow::Result<()> {
        let mut b = Vec::with_capacity(20);
        for (k, n) in self.drain_sorted() {
            b.clear();
            io::text::write_decimal(&mut b, n);
            out.emit(&k, &b)?;
        }
        Ok(())
    }
}

/// Words of a line: runs of bytes between ASCII whitespace (what Hadoop's
/// WordCount gets from StringTokenizer).
pub fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c))
        .filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_counts_are_exact_through_the_cache() {
        let mut c = WordCounts::default();
        let mut want: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
        let mut x = 7u64;
        for _ in 0..200_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 1 + (x >> 60) as usize % 12;
            let w: Vec<u8> = (0..len)
                .map(|i| b'a' + ((x >> (i * 5)) % 3) as u8)
                .collect();
            c.add(&w, 1);
            *want.entry(w).or_default() += 1;
        }
        c.add(b"zz", 5);
        *want.entry(b"zz".to_vec()).or_default() += 5;
        assert_eq!(c.drain_sorted(), want.into_iter().collect::<Vec<_>>());
        assert!(c.is_empty());
    }
}
