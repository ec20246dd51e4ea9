//! Sequence files: a binary sequence of key/value records with sync
//! markers, splittable and optionally block-compressed (the role Hadoop's
//! SequenceFile plays; our own encoding).
//!
//! ```text
//! header: "HSTKSEQF" | version u32 | flags u32 (bit 0: lz4) | sync [16]
//! chunk:  sync [16] | raw length u32 | stored length u32 | records u32
//!         | crc32c u32 (of the three lengths and the stored bytes) | stored
//! record: key length varint | value length varint | key | value
//! ```
//!
//! The sync marker is 16 random bytes chosen per file. A chunk belongs to
//! the split its marker starts in: a reader seeks to its split's first
//! byte, scans for the marker, and reads whole chunks while they start
//! before its end.

use std::io::Read;

use hstack_daemon::format::{Format, HEADER_LEN};

use crate::conf::{self, JobConf};
use crate::fs::{Fs, FsWrite};
use crate::io::{InputFormat, OutputFormat, RecordReader, RecordWriter, Split};
use crate::varint;

pub const SEQ: Format = Format {
    magic: *b"HSTKSEQF",
    what: "sequence file",
    version: 1,
    oldest: 1,
};

const SYNC: usize = 16;
/// Header bytes: format header, flags, sync marker.
pub const FILE_HEADER: usize = HEADER_LEN + 4 + SYNC;
const CHUNK_HEAD: usize = SYNC + 16;
const FLAG_LZ4: u32 = 1;
/// Raw bytes of records per chunk (one sync marker each).
pub const CHUNK: usize = 256 << 10;

pub struct SeqWriter {
    w: Box<dyn FsWrite>,
    sync: [u8; SYNC],
    compress: bool,
    block: Vec<u8>,
    records: u32,
    out: Vec<u8>,
}

impl SeqWriter {
    pub fn new(mut w: Box<dyn FsWrite>, compress: bool) -> anyhow::Result<Self> {
        let sync: [u8; SYNC] = rand::random();
        let mut h = SEQ.header().to_vec();
        h.extend_from_slice(&(if compress { FLAG_LZ4 } else { 0 }).to_le_bytes());
        h.extend_from_slice(&sync);
        w.write_all(&h)?;
        Ok(Self {
            w,
            sync,
            compress,
            block: Vec::with_capacity(CHUNK + 4096),
            records: 0,
            out: Vec::new(),
        })
    }

    pub fn append(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        varint::put(&mut self.block, key.len() as u64);
        varint::put(&mut self.block, value.len() as u64);
        self.block.extend_from_slice(key);
        self.block.extend_from_slice(value);
        self.records += 1;
        if self.block.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> anyhow::Result<()> {
        if self.records == 0 {
            return Ok(());
        }
        self.out.clear();
        self.out.extend_from_slice(&self.sync);
        let raw = self.block.len() as u32;
        let body_at = CHUNK_HEAD;
        self.out.resize(CHUNK_HEAD, 0);
        if self.compress {
            let max = lz4_flex::block::get_maximum_output_size(self.block.len());
            self.out.resize(CHUNK_HEAD + max, 0);
            let n = lz4_flex::block::compress_into(&self.block, &mut self.out[body_at..])?;
            self.out.truncate(CHUNK_HEAD + n);
        } else {
            self.out.extend_from_slice(&self.block);
        }
        let stored = (self.out.len() - CHUNK_HEAD) as u32;
        self.out[SYNC..SYNC + 4].copy_from_slice(&raw.to_le_bytes());
        self.out[SYNC + 4..SYNC + 8].copy_from_slice(&stored.to_le_bytes());
        self.out[SYNC + 8..SYNC + 12].copy_from_slice(&self.records.to_le_bytes());
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&self.out[SYNC..SYNC + 12]),
            &self.out[body_at..],
        );
        self.out[SYNC + 12..SYNC + 16].copy_from_slice(&crc.to_le_bytes());
        self.w.write_all(&self.out)?;
        self.block.clear();
        self.records = 0;
        Ok(())
    }

    pub fn close(mut self) -> anyhow::Result<()> {
        self.flush_chunk()?;
        self.w.close()
    }
}

/// A byte stream that can scan for a pattern and read exact runs.
struct Scan {
    r: Box<dyn Read + Send>,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    eof: bool,
    /// File offset of `buf[lo]`.
    pos: u64,
}

impl Scan {
    fn fill(&mut self) -> std::io::Result<()> {
        if self.lo > 0 {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
        if self.hi == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let n = self.r.read(&mut self.buf[self.hi..])?;
        self.eof |= n == 0;
        self.hi += n;
        Ok(())
    }

    /// At least `n` bytes buffered; false if the stream ends first.
    fn ensure(&mut self, n: usize) -> std::io::Result<bool> {
        while self.hi - self.lo < n {
            if self.eof {
                return Ok(false);
            }
            if self.buf.len() - self.lo < n {
                let want = (n + self.lo).max(self.buf.len());
                self.buf.resize(want, 0);
            }
            self.fill()?;
        }
        Ok(true)
    }

    /// Moves to the next occurrence of `pat`; false if there is none.
    fn find(&mut self, pat: &[u8]) -> std::io::Result<bool> {
        loop {
            if let Some(i) = memchr::memmem::find(&self.buf[self.lo..self.hi], pat) {
                self.lo += i;
                self.pos += i as u64;
                return Ok(true);
            }
            if self.eof {
                return Ok(false);
            }
            let keep = pat.len() - 1;
            if self.hi - self.lo > keep {
                let skip = self.hi - self.lo - keep;
                self.lo += skip;
                self.pos += skip as u64;
            }
            self.fill()?;
        }
    }

    fn consume(&mut self, n: usize) {
        self.lo += n;
        self.pos += n as u64;
    }

    fn bytes(&self, n: usize) -> &[u8] {
        &self.buf[self.lo..self.lo + n]
    }
}

fn damaged(path: &str, at: u64, what: &str) -> anyhow::Error {
    anyhow::anyhow!("{path}: sequence file is damaged at byte {at}: {what}")
}

/// The header of a sequence file: (compressed, sync marker).
fn read_header(fs: &dyn Fs, path: &str) -> anyhow::Result<(bool, [u8; SYNC])> {
    let mut h = [0u8; FILE_HEADER];
    let mut r = fs.open(path, 0)?;
    r.read_exact(&mut h)
        .map_err(|_| anyhow::anyhow!("{path}: too short to be a sequence file"))?;
    SEQ.check(&h).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let flags = u32::from_le_bytes(h[HEADER_LEN..HEADER_LEN + 4].try_into().expect("4"));
    Ok((
        flags & FLAG_LZ4 != 0,
        h[HEADER_LEN + 4..].try_into().expect("16"),
    ))
}

pub struct SeqReader {
    path: String,
    scan: Scan,
    sync: [u8; SYNC],
    compressed: bool,
    start: u64,
    end: u64,
    done: bool,
    raw: Vec<u8>,
    rpos: usize,
    stored: Vec<u8>,
    k: (usize, usize),
    v: (usize, usize),
}

impl SeqReader {
    pub fn open(fs: &dyn Fs, split: &Split) -> anyhow::Result<Self> {
        let (compressed, sync) = read_header(fs, &split.path)?;
        let from = split.start.max(FILE_HEADER as u64);
        let r = fs.open(&split.path, from)?;
        Ok(Self {
            path: split.path.clone(),
            scan: Scan {
                r,
                buf: vec![0; 256 << 10],
                lo: 0,
                hi: 0,
                eof: false,
                pos: from,
            },
            sync,
            compressed,
            start: split.start,
            end: split.start + split.len,
            done: false,
            raw: Vec::new(),
            rpos: 0,
            stored: Vec::new(),
            k: (0, 0),
            v: (0, 0),
        })
    }

    /// Reads the chunk at the scan position into `raw`.
    fn read_chunk(&mut self) -> anyhow::Result<bool> {
        if !self.scan.find(&self.sync)? || self.scan.pos >= self.end {
            return Ok(false);
        }
        let at = self.scan.pos;
        if !self.scan.ensure(CHUNK_HEAD)? {
            return Err(damaged(&self.path, at, "a cut chunk header"));
        }
        let h = self.scan.bytes(CHUNK_HEAD);
        let word =
            |i: usize| u32::from_le_bytes(h[SYNC + 4 * i..SYNC + 4 * i + 4].try_into().expect("4"));
        let (raw, stored, _records, crc) = (word(0) as usize, word(1) as usize, word(2), word(3));
        if raw > 1 << 30 || stored > 1 << 30 {
            return Err(damaged(&self.path, at, "a chunk longer than a GiB"));
        }
        let lens = h[SYNC..SYNC + 12].to_vec();
        if !self.scan.ensure(CHUNK_HEAD + stored)? {
            return Err(damaged(&self.path, at, "a cut chunk"));
        }
        let body = &self.scan.bytes(CHUNK_HEAD + stored)[CHUNK_HEAD..];
        if crc32c::crc32c_append(crc32c::crc32c(&lens), body) != crc {
            return Err(damaged(&self.path, at, "a chunk fails its checksum"));
        }
        if !self.compressed {
            if stored != raw {
                return Err(damaged(&self.path, at, "a plain chunk of two lengths"));
            }
            self.raw.clear();
            self.raw.extend_from_slice(body);
        } else {
            self.stored.clear();
            self.stored.extend_from_slice(body);
            self.raw.resize(raw, 0);
            let n = lz4_flex::block::decompress_into(&self.stored, &mut self.raw)
                .map_err(|e| damaged(&self.path, at, &format!("lz4: {e}")))?;
            if n != raw {
                return Err(damaged(&self.path, at, "a chunk shorter than it says"));
            }
        }
        self.scan.consume(CHUNK_HEAD + stored);
        self.rpos = 0;
        Ok(true)
    }
}

impl RecordReader for SeqReader {
    fn next(&mut self) -> anyhow::Result<Option<(&[u8], &[u8])>> {
        while self.rpos >= self.raw.len() {
            if self.done || !self.read_chunk()? {
                self.done = true;
                return Ok(None);
            }
        }
        let b = &self.raw[self.rpos..];
        let bad = || anyhow::anyhow!("{}: sequence file has a cut record", self.path);
        let (kl, a) = varint::get(b).ok_or_else(bad)?;
        let (vl, c) = varint::get(&b[a..]).ok_or_else(bad)?;
        let ks = self.rpos + a + c;
        let vs = ks + kl as usize;
        let e = vs + vl as usize;
        if e > self.raw.len() {
            return Err(bad());
        }
        self.k = (ks, vs);
        self.v = (vs, e);
        self.rpos = e;
        Ok(Some((&self.raw[ks..vs], &self.raw[vs..e])))
    }

    fn progress(&self) -> f32 {
        if self.end <= self.start {
            return 1.0;
        }
        ((self.scan.pos.saturating_sub(self.start)) as f32 / (self.end - self.start) as f32)
            .min(1.0)
    }
}

pub struct SeqInput;

impl InputFormat for SeqInput {
    fn reader(
        &self,
        fs: &dyn Fs,
        split: &Split,
        _conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordReader>> {
        Ok(Box::new(SeqReader::open(fs, split)?))
    }
}

/// Sequence-file output, lz4 block-compressed with
/// `mapreduce.output.fileoutputformat.compress=true`.
pub struct SeqOutput;

struct SeqRecordWriter(SeqWriter);

impl RecordWriter for SeqRecordWriter {
    fn write(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.0.append(key, value)
    }
    fn close(self: Box<Self>) -> anyhow::Result<()> {
        self.0.close()
    }
}

impl OutputFormat for SeqOutput {
    fn writer(
        &self,
        fs: &dyn Fs,
        path: &str,
        conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordWriter>> {
        let w = fs.create(path, conf.u64(conf::OUTPUT_REPLICATION) as u32)?;
        Ok(Box::new(SeqRecordWriter(SeqWriter::new(
            w,
            conf.bool(conf::OUTPUT_COMPRESS),
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::LocalFs;

    fn write(path: &str, n: u32, compress: bool) {
        let fs = LocalFs::new();
        let mut w = SeqWriter::new(fs.create(path, 0).unwrap(), compress).unwrap();
        for i in 0..n {
            let v = format!("value {i} {}", "x".repeat((i % 50) as usize));
            w.append(&i.to_be_bytes(), v.as_bytes()).unwrap();
        }
        w.close().unwrap();
    }

    fn read_splits(path: &str, size: u64) -> Vec<u32> {
        let fs = LocalFs::new();
        let len = std::fs::metadata(path).unwrap().len();
        let mut got = Vec::new();
        let mut start = 0;
        while start < len {
            let l = size.min(len - start);
            let split = Split {
                path: path.into(),
                start,
                len: l,
                file_len: len,
                ..Default::default()
            };
            let mut r = SeqInput.reader(&fs, &split, &JobConf::default()).unwrap();
            while let Some((k, v)) = r.next().unwrap() {
                let i = u32::from_be_bytes(k.try_into().unwrap());
                assert!(v.starts_with(format!("value {i} ").as_bytes()));
                got.push(i);
            }
            start += l;
        }
        got
    }

    #[test]
    fn every_split_size_reads_every_record_once_plain_and_compressed() {
        let dir = tempfile::tempdir().unwrap();
        for compress in [false, true] {
            let p = dir.path().join(format!("f{compress}.seq"));
            let p = p.to_str().unwrap();
            write(p, 60_000, compress);
            let len = std::fs::metadata(p).unwrap().len();
            for size in [5000, 100_000, 262_144, 1 << 20, len] {
                let got = read_splits(p, size);
                assert_eq!(
                    got,
                    (0..60_000).collect::<Vec<_>>(),
                    "split size {size}, lz4 {compress}"
                );
            }
        }
        let plain = std::fs::metadata(dir.path().join("ffalse.seq"))
            .unwrap()
            .len();
        let lz4 = std::fs::metadata(dir.path().join("ftrue.seq"))
            .unwrap()
            .len();
        assert!(lz4 < plain / 2, "compressed {lz4} vs plain {plain}");
    }

    #[test]
    fn damage_is_reported_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.seq");
        let p = p.to_str().unwrap();
        write(p, 10_000, true);
        let mut b = std::fs::read(p).unwrap();
        let at = b.len() / 2;
        b[at] ^= 0x10;
        std::fs::write(p, &b).unwrap();
        let fs = LocalFs::new();
        let split = Split {
            path: p.into(),
            start: 0,
            len: b.len() as u64,
            file_len: b.len() as u64,
            ..Default::default()
        };
        let mut r = SeqInput.reader(&fs, &split, &JobConf::default()).unwrap();
        let e = loop {
            match r.next() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("damage went unnoticed"),
                Err(e) => break e,
            }
        };
        assert!(e.to_string().contains("damaged"), "{e}");
        let t = dir.path().join("t.txt");
        std::fs::write(&t, b"just some text, long enough for a header").unwrap();
        let split = Split {
            path: t.to_str().unwrap().into(),
            start: 0,
            len: 10,
            file_len: 10,
            ..Default::default()
        };
        let e = SeqInput
            .reader(&fs, &split, &JobConf::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("not an hstack sequence file"), "{e}");
    }
}
