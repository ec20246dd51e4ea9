//! The map side of the shuffle: records the mapper emits are partitioned
//! and gathered in an in-memory buffer (`mapreduce.task.io.sort.mb`);
//! when it is full it is sorted by (partition, key) and spilled to a
//! local file, the combiner run over each key's values on the way out;
//! at the end the spills are merged, partition by partition (the
//! combiner again when there were at least three, as Hadoop's
//! `min.num.spills.for.combine`), into one output file and its index.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::api::{Emit, Reducer, TaskContext, Values};
use crate::ifile::{self, SegmentInfo, SegmentReader, SegmentWriter};
use crate::merge::{self, Merger, RecordSource};

/// Where and how a map's output is kept.
#[derive(Clone, Debug)]
pub struct MapOutputConf {
    pub dir: PathBuf,
    pub reduces: u32,
    /// Bytes of the sort buffer (records and their 24-byte entries).
    pub sort_bytes: usize,
    pub compress: bool,
}

/// What a map's output came to.
#[derive(Clone, Debug, Default)]
pub struct MapOutput {
    pub file: PathBuf,
    pub index: PathBuf,
    pub segments: Vec<SegmentInfo>,
}

/// The counters of the map side.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapSideStats {
    pub output_records: u64,
    pub output_bytes: u64,
    pub spilled_records: u64,
    pub spills: u64,
    pub combine_input: u64,
    pub combine_output: u64,
    pub materialized_bytes: u64,
    pub local_written: u64,
    pub local_read: u64,
}

#[derive(Clone, Copy)]
struct Meta {
    /// The key's first 8 bytes, big-endian, zero-padded: most comparisons
    /// end here.
    prefix: u64,
    part: u32,
    koff: u32,
    klen: u32,
    vlen: u32,
}

const META: usize = std::mem::size_of::<Meta>();

fn prefix(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[..n].copy_from_slice(&k[..n]);
    u64::from_be_bytes(b)
}

struct Spill {
    path: PathBuf,
    segs: Vec<SegmentInfo>,
}

pub struct SortBuffer {
    conf: MapOutputConf,
    data: Vec<u8>,
    meta: Vec<Meta>,
    spills: Vec<Spill>,
    combiner: Option<(Box<dyn Reducer>, TaskContext)>,
    pub stats: MapSideStats,
}

/// Counts bytes into a file.
struct CountingWriter<W: Write> {
    w: W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// A combiner's output going into a segment.
struct SegEmit<'w, 'a, W: Write> {
    w: &'w mut SegmentWriter<'a, W>,
    n: u64,
}

impl<W: Write> Emit for SegEmit<'_, '_, W> {
    fn emit(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.n += 1;
        Ok(self.w.append(key, value)?)
    }
}

/// One key's values in the sorted buffer.
struct BufValues<'a> {
    data: &'a [u8],
    metas: &'a [Meta],
    i: usize,
}

impl Values for BufValues<'_> {
    fn next_value(&mut self) -> anyhow::Result<Option<&[u8]>> {
        let Some(m) = self.metas.get(self.i) else {
            return Ok(None);
        };
        self.i += 1;
        let s = (m.koff + m.klen) as usize;
        Ok(Some(&self.data[s..s + m.vlen as usize]))
    }
}

impl SortBuffer {
    /// `combiner` runs with a context of its own (its counters are the
    /// task's in the end).
    pub fn new(conf: MapOutputConf, combiner: Option<(Box<dyn Reducer>, TaskContext)>) -> Self {
        // The whole buffer reserved at once: its pages are only taken as
        // they are written, and it never grows by copying (which would
        // hold the old and the new at once).
        let cap = conf.sort_bytes;
        Self {
            data: Vec::with_capacity(cap),
            meta: Vec::new(),
            spills: Vec::new(),
            combiner,
            stats: MapSideStats::default(),
            conf,
        }
    }

    /// Adds one record for partition `part`.
    #[inline]
    pub fn collect(&mut self, part: u32, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        let need = key.len() + value.len();
        if !self.meta.is_empty()
            && (self.data.len() + need + (self.meta.len() + 1) * META > self.conf.sort_bytes
                || self.data.len() + need > u32::MAX as usize)
        {
            self.spill()?;
        }
        let koff = self.data.len() as u32;
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
        self.meta.push(Meta {
            prefix: prefix(key),
            part,
            koff,
            klen: key.len() as u32,
            vlen: value.len() as u32,
        });
        self.stats.output_records += 1;
        self.stats.output_bytes += need as u64;
        Ok(())
    }

    fn sort(&mut self) {
        let data = &self.data;
        let key = |m: &Meta| &data[m.koff as usize..(m.koff + m.klen) as usize];
        // Ties by offset, i.e. by emission order: the result is the same
        // as a stable sort's, and the same on every run.
        self.meta.sort_unstable_by(|a, b| {
            (a.part, a.prefix)
                .cmp(&(b.part, b.prefix))
                .then_with(|| key(a).cmp(key(b)))
                .then(a.koff.cmp(&b.koff))
        });
    }

    /// Writes the sorted buffer, one segment per partition, to `path`.
    fn write_sorted(&mut self, path: &Path) -> anyhow::Result<Vec<SegmentInfo>> {
        self.sort();
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = CountingWriter {
            w: BufWriter::with_capacity(1 << 20, f),
            n: 0,
        };
        let mut segs = Vec::with_capacity(self.conf.reduces as usize);
        let mut i = 0;
        let data = &self.data;
        let metas = &self.meta;
        for p in 0..self.conf.reduces {
            let end = i + metas[i..].partition_point(|m| m.part == p);
            let mut sw = SegmentWriter::new(&mut w, 0, self.conf.compress);
            match &mut self.combiner {
                Some((c, ctx)) if i < end => {
                    // One run of the combiner per partition of a spill
                    // (setup, reduce per key, cleanup), as Hadoop runs it.
                    c.setup(ctx)?;
                    let mut j = i;
                    while j < end {
                        let k0 =
                            &data[metas[j].koff as usize..(metas[j].koff + metas[j].klen) as usize];
                        let mut e = j + 1;
                        while e < end
                            && metas[e].prefix == metas[j].prefix
                            && &data
                                [metas[e].koff as usize..(metas[e].koff + metas[e].klen) as usize]
                                == k0
                        {
                            e += 1;
                        }
                        let mut vals = BufValues {
                            data,
                            metas: &metas[j..e],
                            i: 0,
                        };
                        let mut out = SegEmit { w: &mut sw, n: 0 };
                        c.reduce(k0, &mut vals, &mut out, ctx)?;
                        self.stats.combine_input += (e - j) as u64;
                        self.stats.combine_output += out.n;
                        j = e;
                    }
                    let mut out = SegEmit { w: &mut sw, n: 0 };
                    c.cleanup(&mut out, ctx)?;
                    self.stats.combine_output += out.n;
                }
                _ => {
                    for m in &metas[i..end] {
                        let k = &data[m.koff as usize..(m.koff + m.klen) as usize];
                        let v =
                            &data[(m.koff + m.klen) as usize..(m.koff + m.klen + m.vlen) as usize];
                        sw.append(k, v)?;
                    }
                }
            }
            let mut seg = sw.finish()?;
            seg.offset = segs
                .last()
                .map_or(0, |s: &SegmentInfo| s.offset + s.part_len);
            self.stats.spilled_records += seg.records;
            segs.push(seg);
            i = end;
        }
        w.flush()?;
        self.stats.local_written += w.n;
        self.data.clear();
        self.meta.clear();
        Ok(segs)
    }

    fn spill(&mut self) -> anyhow::Result<()> {
        let path = self
            .conf
            .dir
            .join(format!("spill{}.out", self.spills.len()));
        let segs = self.write_sorted(&path)?;
        self.spills.push(Spill { path, segs });
        self.stats.spills += 1;
        Ok(())
    }

    /// Spills what is left and merges every spill into the map's output.
    pub fn finish(mut self) -> anyhow::Result<(MapOutput, MapSideStats, Option<TaskContext>)> {
        let file = self.conf.dir.join("file.out");
        let index = self.conf.dir.join("file.out.index");
        let segments = if self.spills.is_empty() {
            self.stats.spills = 1;
            self.write_sorted(&file)?
        } else {
            if !self.meta.is_empty() {
                self.spill()?;
            }
            if self.spills.len() == 1 {
                let s = self.spills.pop().expect("one");
                std::fs::rename(&s.path, &file)?;
                s.segs
            } else {
                self.merge_spills(&file)?
            }
        };
        ifile::write_index(&index, &segments)
            .with_context(|| format!("cannot write {}", index.display()))?;
        self.stats.materialized_bytes = segments.iter().map(|s| s.part_len).sum();
        let ctx = self.combiner.take().map(|(_, c)| c);
        Ok((
            MapOutput {
                file,
                index,
                segments,
            },
            self.stats,
            ctx,
        ))
    }

    fn merge_spills(&mut self, file: &Path) -> anyhow::Result<Vec<SegmentInfo>> {
        let f = File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
        let mut w = CountingWriter {
            w: BufWriter::with_capacity(1 << 20, f),
            n: 0,
        };
        let combine = self.spills.len() >= 3;
        let mut segs = Vec::new();
        let mut read = 0u64;
        for p in 0..self.conf.reduces as usize {
            let mut sources: Vec<Box<dyn RecordSource>> = Vec::new();
            for s in &self.spills {
                let seg = s.segs[p];
                read += seg.part_len;
                let mut f = File::open(&s.path)?;
                f.seek(SeekFrom::Start(seg.offset))?;
                let r = BufReader::with_capacity(128 << 10, f.take(seg.part_len));
                sources.push(Box::new(SegmentReader::new(r, &seg)));
            }
            let mut m = Merger::new(sources);
            let mut sw = SegmentWriter::new(&mut w, 0, self.conf.compress);
            match (&mut self.combiner, combine) {
                (Some((c, ctx)), true) => {
                    let mut out = SegEmit { w: &mut sw, n: 0 };
                    c.setup(ctx)?;
                    let g = merge::reduce_all(&mut m, c.as_mut(), &mut out, ctx)?;
                    c.cleanup(&mut out, ctx)?;
                    self.stats.combine_input += g.records;
                    self.stats.combine_output += out.n;
                }
                _ => {
                    while m.advance()? {
                        sw.append(m.key(), m.value())?;
                    }
                }
            }
            let mut seg = sw.finish()?;
            seg.offset = segs
                .last()
                .map_or(0, |s: &SegmentInfo| s.offset + s.part_len);
            self.stats.spilled_records += seg.records;
            segs.push(seg);
        }
        w.flush()?;
        self.stats.local_written += w.n;
        self.stats.local_read += read;
        for s in self.spills.drain(..) {
            let _ = std::fs::remove_file(&s.path);
        }
        Ok(segs)
    }
}

/// Reads partition `p` of a map output back (tests, the local runner).
pub fn open_segment(
    out: &MapOutput,
    p: usize,
) -> anyhow::Result<SegmentReader<BufReader<std::io::Take<File>>>> {
    let seg = out.segments[p];
    let mut f = File::open(&out.file)?;
    f.seek(SeekFrom::Start(seg.offset))?;
    Ok(SegmentReader::new(
        BufReader::with_capacity(128 << 10, f.take(seg.part_len)),
        &seg,
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::TaskInfo;

    struct Sum;
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
                n += std::str::from_utf8(v)?.parse::<u64>()?;
            }
            out.emit(key, n.to_string().as_bytes())
        }
    }

    fn read_part(out: &MapOutput, p: usize) -> Vec<(String, String)> {
        let mut r = open_segment(out, p).unwrap();
        let mut v = Vec::new();
        while r.next_record().unwrap() {
            v.push((
                String::from_utf8(r.key().to_vec()).unwrap(),
                String::from_utf8(r.value().to_vec()).unwrap(),
            ));
        }
        v
    }

    fn run(
        sort_bytes: usize,
        combine: bool,
        compress: bool,
    ) -> (MapOutput, MapSideStats, tempfile::TempDir) {
        // (the stats say how many spills there were)
        let dir = tempfile::tempdir().unwrap();
        let ctx = TaskContext::new(Arc::default(), TaskInfo::default());
        let combiner = combine.then(|| (Box::new(Sum) as Box<dyn Reducer>, ctx));
        let mut b = SortBuffer::new(
            MapOutputConf {
                dir: dir.path().to_path_buf(),
                reduces: 3,
                sort_bytes,
                compress,
            },
            combiner,
        );
        // 30,000 records over 1,000 keys, in a scrambled order.
        for i in 0..30_000u64 {
            let k = format!("k{:04}", (i * 7919) % 1000);
            let p = ((i * 7919) % 1000 % 3) as u32;
            b.collect(p, k.as_bytes(), b"1").unwrap();
        }
        let (out, stats, _) = b.finish().unwrap();
        (out, stats, dir)
    }

    fn check(out: &MapOutput, combined: bool) {
        let mut total = 0u64;
        for p in 0..3 {
            let recs = read_part(out, p);
            let mut sorted = recs.clone();
            sorted.sort();
            assert_eq!(recs, sorted, "partition {p} is sorted");
            for (k, v) in &recs {
                let n: u64 = k[1..].parse().unwrap();
                assert_eq!(n % 3, p as u64, "{k} in partition {p}");
                total += v.parse::<u64>().unwrap();
            }
            if !combined {
                assert_eq!(recs.len() % 30, 0);
            }
        }
        assert_eq!(total, 30_000);
    }

    #[test]
    fn one_spill_and_many_spills_give_sorted_partitions() {
        for compress in [false, true] {
            // Everything fits: one spill, renamed.
            let (out, st, _d) = run(64 << 20, false, compress);
            assert_eq!(st.spills, 1);
            check(&out, false);
            // A small buffer: many spills, merged.
            let (out, st, _d) = run(64 << 10, false, compress);
            assert!(st.spills > 3, "{st:?}");
            assert_eq!(st.spilled_records, 2 * 30_000, "spilled once, then merged");
            check(&out, false);
        }
    }

    #[test]
    fn the_combiner_runs_on_spill_and_on_merge() {
        let (out, _, _d) = run(64 << 20, true, false);
        check(&out, true);
        // One record per key once combined.
        let n: usize = (0..3).map(|p| read_part(&out, p).len()).sum();
        assert_eq!(n, 1000);
        let (out, _, _d) = run(32 << 10, true, true);
        check(&out, true);
        let n: usize = (0..3).map(|p| read_part(&out, p).len()).sum();
        assert_eq!(n, 1000, "combined again when the spills were merged");
    }
}
