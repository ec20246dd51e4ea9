//! RandomTextWriter (Hadoop's example of that name, our own text): a
//! map-only job writing `--size` bytes of text in `mapreduce.job.maps`
//! files — lines of 10 to 15 words drawn from a Zipf distribution over a
//! vocabulary of 100,000 words of two to four letters, frequent words the
//! short ones, as natural text is. Map `i` always writes the same text, so
//! a corpus can be made again bit for bit. The sample corpus the main job
//! counts, and the input of `hstack bench mr wordcount`.

use super::Job;
use crate::api::{Emit, Mapper, TaskContext};
use crate::conf::{self, JobConf};
use crate::fs::Fs;
use crate::io::{self, InputFormat, OutputFormat, RecordReader, Split};
use crate::spec::JobSpec;

pub const SIZE: &str = "mapreduce.randomtext.bytes";
pub const MAPS: &str = "mapreduce.job.maps";
pub const VOCABULARY: usize = 100_000;

/// Word `r` (by rank) of the vocabulary: letters in bijective base 26 of
/// a scrambled number, two letters for the 676 most frequent, three for
/// the next 17,576, four for the rest.
pub fn word(r: usize, out: &mut Vec<u8>) {
    let (len, first, class) = if r < 676 {
        (2, 0, 676)
    } else if r < 676 + 17_576 {
        (3, 676, 17_576)
    } else {
        (4, 676 + 17_576, 456_976)
    };
    // An odd multiplier permutes the class, so rank and spelling differ.
    let mut x = ((r - first) as u64 * 48_271 + 12_345) % class as u64;
    let start = out.len();
    for _ in 0..len {
        out.push(b'a' + (x % 26) as u8);
        x /= 26;
    }
    out[start..].reverse();
}

/// Zipf (s = 1) over the vocabulary: cumulative weights to search.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut t = 0.0;
        for r in 0..n {
            t += 1.0 / (r + 1) as f64;
            cdf.push(t);
        }
        for c in &mut cdf {
            *c /= t;
        }
        Self { cdf }
    }

    #[inline]
    pub fn rank(&self, u: f64) -> usize {
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

/// A small, fast generator (xorshift64*), seeded per map.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes text lines into `out` until it holds at least `bytes` bytes.
pub fn fill(rng: &mut Rng, zipf: &Zipf, words: &[Vec<u8>], bytes: usize, out: &mut Vec<u8>) {
    while out.len() < bytes {
        let n = 10 + (rng.next_u64() % 6) as usize;
        for i in 0..n {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(&words[zipf.rank(rng.unit())]);
        }
        out.push(b'\n');
    }
}

pub struct RandomText;

/// The pieces of text each map writes.
struct Pieces;

/// Text a record stands for, at most.
const PIECE: u64 = 1 << 20;

/// A map's pieces: (map index, piece number) → its bytes, a record per
/// MiB of text, so the map's progress moves as it writes.
struct PieceReader {
    index: u64,
    left: u64,
    next: u64,
    total: u64,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl RecordReader for PieceReader {
    fn next(&mut self) -> anyhow::Result<Option<(&[u8], &[u8])>> {
        if self.left == 0 {
            return Ok(None);
        }
        let n = self.left.min(PIECE);
        self.left -= n;
        self.key.clear();
        self.key.extend_from_slice(&self.index.to_be_bytes());
        self.key.extend_from_slice(&self.next.to_be_bytes());
        self.value.clear();
        self.value.extend_from_slice(&n.to_be_bytes());
        self.next += 1;
        Ok(Some((&self.key, &self.value)))
    }
    fn progress(&self) -> f32 {
        if self.total == 0 {
            1.0
        } else {
            1.0 - self.left as f32 / self.total as f32
        }
    }
}

impl InputFormat for Pieces {
    fn reader(
        &self,
        _fs: &dyn Fs,
        split: &Split,
        _conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordReader>> {
        Ok(Box::new(PieceReader {
            index: split.start,
            left: split.len,
            next: 0,
            total: split.len,
            key: Vec::with_capacity(16),
            value: Vec::with_capacity(8),
        }))
    }
}

struct TextMap {
    zipf: Zipf,
    words: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

impl Mapper for TextMap {
    fn map(
        &mut self,
        key: &[u8],
        value: &[u8],
        out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            key.len() == 16 && value.len() == 8,
            "not a randomtext piece"
        );
        let index = u64::from_be_bytes(key[..8].try_into()?);
        let piece = u64::from_be_bytes(key[8..].try_into()?);
        let bytes = u64::from_be_bytes(value.try_into()?) as usize;
        // Each piece from its own seed: the same text on every run.
        let mut rng = Rng::new((index << 32) ^ piece ^ 0x5eed);
        self.buf.clear();
        fill(&mut rng, &self.zipf, &self.words, bytes, &mut self.buf);
        // Lines out without their newline (the text output adds it).
        for line in self.buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            out.emit(line, b"")?;
        }
        Ok(())
    }
}

impl Job for RandomText {
    fn prepare(&self, spec: &mut JobSpec, _fs: &dyn Fs) -> anyhow::Result<()> {
        anyhow::ensure!(
            spec.inputs.is_empty(),
            "randomtext reads no input: give --size BYTES and the output directory"
        );
        let size: u64 = spec
            .conf
            .get(SIZE)
            .ok_or_else(|| anyhow::anyhow!("randomtext needs --size BYTES (or -D {SIZE}=BYTES)"))?
            .parse()
            .map_err(|_| anyhow::anyhow!("{SIZE} must be a number of bytes"))?;
        anyhow::ensure!(size > 0, "--size must be above 0");
        let maps = match spec.conf.get(MAPS) {
            Some(m) => m
                .parse::<u64>()
                .ok()
                .filter(|m| *m > 0)
                .ok_or_else(|| anyhow::anyhow!("{MAPS} must be a number above 0"))?,
            None => size.div_ceil(256 << 20).max(2),
        };
        spec.conf.set(conf::REDUCES, "0");
        spec.splits = (0..maps)
            .map(|m| Split {
                path: String::new(),
                start: m,
                len: size * (m + 1) / maps - size * m / maps,
                file_len: size,
                ..Default::default()
            })
            .collect();
        Ok(())
    }
    fn mapper(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Mapper>> {
        let words = (0..VOCABULARY)
            .map(|r| {
                let mut w = Vec::with_capacity(4);
                word(r, &mut w);
                w
            })
            .collect();
        Ok(Box::new(TextMap {
            zipf: Zipf::new(VOCABULARY),
            words,
            buf: Vec::with_capacity(PIECE as usize + 256),
        }))
    }
    fn input_format(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn InputFormat>> {
        Ok(Box::new(Pieces))
    }
    fn output_format(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn OutputFormat>> {
        io::output_format("text")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_is_distinct_short_and_zipf_skewed() {
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for r in 0..VOCABULARY {
            let mut w = Vec::new();
            word(r, &mut w);
            total += w.len();
            assert!(seen.insert(w), "word {r} repeats");
        }
        assert!(total / VOCABULARY <= 4);
        let z = Zipf::new(VOCABULARY);
        let mut rng = Rng::new(1);
        let top = (0..100_000).filter(|_| z.rank(rng.unit()) == 0).count();
        // p(rank 0) = 1 / H(100000) ≈ 0.083.
        assert!((7_000..10_000).contains(&top), "{top}");
    }
}
