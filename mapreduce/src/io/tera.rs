//! TeraSort's records: 100 bytes each, the first 10 the key, no framing.
//! A split holds the records that start in it.

use std::io::Read;

use crate::conf::{self, JobConf};
use crate::fs::{Fs, FsWrite};
use crate::io::{InputFormat, OutputFormat, RecordReader, RecordWriter, Split, OUT_BUF};

pub const RECORD: usize = 100;
pub const KEY: usize = 10;

pub struct TeraInput;

struct TeraReader {
    r: Box<dyn Read + Send>,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    left: u64,
    total: u64,
}

impl RecordReader for TeraReader {
    fn next(&mut self) -> anyhow::Result<Option<(&[u8], &[u8])>> {
        if self.left == 0 {
            return Ok(None);
        }
        if self.hi - self.lo < RECORD {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
            while self.hi < RECORD {
                let n = self.r.read(&mut self.buf[self.hi..])?;
                if n == 0 {
                    anyhow::bail!("a TeraSort input ends inside a record");
                }
                self.hi += n;
            }
        }
        let rec = &self.buf[self.lo..self.lo + RECORD];
        self.lo += RECORD;
        self.left -= 1;
        Ok(Some((&rec[..KEY], &rec[KEY..])))
    }

    fn progress(&self) -> f32 {
        if self.total == 0 {
            1.0
        } else {
            1.0 - self.left as f32 / self.total as f32
        }
    }
}

impl InputFormat for TeraInput {
    fn reader(
        &self,
        fs: &dyn Fs,
        split: &Split,
        _conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordReader>> {
        anyhow::ensure!(
            split.file_len % RECORD as u64 == 0,
            "{} is {} bytes, not a whole number of {RECORD}-byte TeraSort records",
            split.path,
            split.file_len
        );
        let r = RECORD as u64;
        let first = split.start.div_ceil(r);
        let end = (split.start + split.len)
            .div_ceil(r)
            .min(split.file_len / r);
        let total = end.saturating_sub(first);
        Ok(Box::new(TeraReader {
            r: fs.open(&split.path, first * r)?,
            buf: vec![0; 1 << 20],
            lo: 0,
            hi: 0,
            left: total,
            total,
        }))
    }
}

pub struct TeraOutput;

struct TeraWriter {
    w: Box<dyn FsWrite>,
    buf: Vec<u8>,
}

impl RecordWriter for TeraWriter {
    fn write(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
        if self.buf.len() >= OUT_BUF {
            self.w.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> anyhow::Result<()> {
        if !self.buf.is_empty() {
            self.w.write_all(&self.buf)?;
        }
        self.w.close()
    }
}

impl OutputFormat for TeraOutput {
    fn writer(
        &self,
        fs: &dyn Fs,
        path: &str,
        conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordWriter>> {
        Ok(Box::new(TeraWriter {
            w: fs.create(path, conf.u64(conf::OUTPUT_REPLICATION) as u32)?,
            buf: Vec::with_capacity(OUT_BUF + RECORD),
        }))
    }
}
