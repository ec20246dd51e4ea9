//! The reduce side of the shuffle: map-output segments arrive (fetched,
//! or read from local map outputs) and are kept in memory up to a budget
//! (`mapreduce.reduce.shuffle.buffer.mb`); when the budget is reached the
//! segments in memory are merged into one sorted file on local disk, and
//! a segment larger than a quarter of the budget goes to disk as it is.
//! When more files pile up than the merge factor, they are merged down
//! first; the reducer then reads one merge over everything, so its input
//! may be far larger than its memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Cursor, Write};
use std::path::PathBuf;

use anyhow::Context;

use crate::ifile::{SegmentInfo, SegmentReader, SegmentWriter};
use crate::merge::{Merger, RecordSource};

struct OnDisk {
    path: PathBuf,
    info: SegmentInfo,
}

/// The counters of the reduce side.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShuffleStats {
    pub shuffled_bytes: u64,
    pub segments: u64,
    /// Records in every segment received.
    pub records: u64,
    pub merges_to_disk: u64,
    pub local_written: u64,
    pub local_read: u64,
}

pub struct ShuffleStore {
    dir: PathBuf,
    budget: usize,
    factor: usize,
    mem: Vec<(Vec<u8>, SegmentInfo)>,
    mem_bytes: usize,
    disk: Vec<OnDisk>,
    files: usize,
    pub stats: ShuffleStats,
}

impl ShuffleStore {
    pub fn new(dir: PathBuf, budget: usize, factor: usize) -> Self {
        Self {
            dir,
            budget: budget.max(1),
            factor: factor.max(2),
            mem: Vec::new(),
            mem_bytes: 0,
            disk: Vec::new(),
            files: 0,
            stats: ShuffleStats::default(),
        }
    }

    fn next_path(&mut self) -> PathBuf {
        self.files += 1;
        self.dir.join(format!("merge{}.out", self.files))
    }

    /// Whether a segment of `len` bytes should go straight to disk.
    pub fn wants_disk(&self, len: u64) -> bool {
        len as usize > self.budget / 4
    }

    /// A whole segment (its checksum verified by the caller or the reader).
    pub fn add_memory(&mut self, bytes: Vec<u8>, info: SegmentInfo) -> anyhow::Result<()> {
        self.stats.shuffled_bytes += bytes.len() as u64;
        self.stats.segments += 1;
        self.stats.records += info.records;
        if info.records == 0 {
            return Ok(());
        }
        if self.mem_bytes + bytes.len() > self.budget && !self.mem.is_empty() {
            self.merge_memory()?;
        }
        self.mem_bytes += bytes.len();
        self.mem.push((bytes, SegmentInfo { offset: 0, ..info }));
        Ok(())
    }

    /// A segment already written to a file of its own (at offset 0).
    pub fn add_file(&mut self, path: PathBuf, info: SegmentInfo) -> anyhow::Result<()> {
        self.stats.shuffled_bytes += info.part_len;
        self.stats.segments += 1;
        self.stats.records += info.records;
        self.disk.push(OnDisk {
            path,
            info: SegmentInfo { offset: 0, ..info },
        });
        if self.disk.len() >= 2 * self.factor {
            self.merge_disk(self.factor)?;
        }
        Ok(())
    }

    /// A file for a segment about to be fetched to disk.
    pub fn disk_path(&mut self) -> PathBuf {
        self.next_path()
    }

    fn write_merged(
        &self,
        sources: Vec<Box<dyn RecordSource + '_>>,
        path: &PathBuf,
    ) -> anyhow::Result<SegmentInfo> {
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut sw = SegmentWriter::new(&mut w, 0, false);
        let mut m = Merger::new(sources);
        while m.advance()? {
            sw.append(m.key(), m.value())?;
        }
        let info = sw.finish()?;
        w.flush()?;
        Ok(info)
    }

    /// Merges every in-memory segment into one file.
    fn merge_memory(&mut self) -> anyhow::Result<()> {
        let mem = std::mem::take(&mut self.mem);
        self.mem_bytes = 0;
        let path = self.next_path();
        let sources: Vec<Box<dyn RecordSource + '_>> = mem
            .iter()
            .map(|(b, i)| {
                Box::new(SegmentReader::new(Cursor::new(b.as_slice()), i))
                    as Box<dyn RecordSource + '_>
            })
            .collect();
        let info = self.write_merged(sources, &path)?;
        self.stats.local_written += info.part_len;
        self.stats.merges_to_disk += 1;
        self.disk.push(OnDisk { path, info });
        Ok(())
    }

    /// Merges the `n` smallest files into one.
    fn merge_disk(&mut self, n: usize) -> anyhow::Result<()> {
        self.disk.sort_by_key(|d| d.info.part_len);
        let take: Vec<OnDisk> = self.disk.drain(..n.min(self.disk.len())).collect();
        let path = self.next_path();
        let mut sources: Vec<Box<dyn RecordSource>> = Vec::new();
        for d in &take {
            self.stats.local_read += d.info.part_len;
            sources.push(Box::new(SegmentReader::new(
                BufReader::with_capacity(256 << 10, File::open(&d.path)?),
                &d.info,
            )));
        }
        let info = self.write_merged(sources, &path)?;
        self.stats.local_written += info.part_len;
        self.stats.merges_to_disk += 1;
        for d in take {
            let _ = std::fs::remove_file(&d.path);
        }
        self.disk.push(OnDisk { path, info });
        Ok(())
    }

    /// One merge over everything, for the reducer. Files beyond the merge
    /// factor are merged down first.
    pub fn into_merger(mut self) -> anyhow::Result<(Merger<'static>, ShuffleStats)> {
        let in_memory = usize::from(!self.mem.is_empty());
        while self.disk.len() + in_memory > self.factor {
            // Merging n files into one leaves disk.len() − n + 1.
            let excess = self.disk.len() + in_memory - self.factor + 1;
            self.merge_disk(excess.clamp(2, self.factor))?;
        }
        let mut sources: Vec<Box<dyn RecordSource>> = Vec::new();
        for d in &self.disk {
            self.stats.local_read += d.info.part_len;
            sources.push(Box::new(SegmentReader::new(
                BufReader::with_capacity(256 << 10, File::open(&d.path)?),
                &d.info,
            )));
        }
        for (b, i) in std::mem::take(&mut self.mem) {
            sources.push(Box::new(SegmentReader::new(Cursor::new(b), &i)));
        }
        Ok((Merger::new(sources), self.stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(keys: impl Iterator<Item = u32>) -> (Vec<u8>, SegmentInfo) {
        let mut b = Vec::new();
        let mut w = SegmentWriter::new(&mut b, 0, false);
        for k in keys {
            w.append(format!("{k:08}").as_bytes(), b"v").unwrap();
        }
        let i = w.finish().unwrap();
        (b, i)
    }

    #[test]
    fn input_many_times_the_budget_merges_on_disk_and_stays_sorted() {
        let dir = tempfile::tempdir().unwrap();
        // 40 segments of ~60 KB each against a 100 KB budget, factor 4.
        let mut s = ShuffleStore::new(dir.path().to_path_buf(), 100_000, 4);
        for m in 0..40u32 {
            let (b, i) = segment((0..5000).map(|k| k * 40 + m));
            if m % 7 == 0 {
                let p = s.disk_path();
                std::fs::write(&p, &b).unwrap();
                s.add_file(p, i).unwrap();
            } else {
                s.add_memory(b, i).unwrap();
            }
        }
        let (mut m, stats) = s.into_merger().unwrap();
        assert!(stats.merges_to_disk > 3, "{stats:?}");
        let mut n = 0u32;
        while m.advance().unwrap() {
            assert_eq!(m.key(), format!("{n:08}").as_bytes());
            n += 1;
        }
        assert_eq!(n, 200_000);
    }
}
