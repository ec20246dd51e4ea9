//! TeraGen and TeraValidate.
//!
//! TeraGen writes `mapreduce.terasort.num-rows` records of 100 bytes in
//! Hadoop's layout: a 10-byte random key, `00 11`, the row number as 32
//! hex digits, `88 99 AA BB`, 48 filler letters, `CC DD EE FF`. Row `i`
//! is the same on every run (its key comes from a hash of `i`). Each map
//! writes a range of rows and a side file `_checksum-m-NNNNN` with the
//! sum of its records' CRC32C and their count.
//!
//! TeraValidate reads sorted output, one map per file (files are not
//! split, so each map sees its file in order): it checks that each file
//! is sorted, that each file's first key is not below the previous one's
//! last, and sums the checksum, which must equal the input's when the
//! TeraGen directory is named (`mapreduce.teravalidate.expect-dir`). Its
//! single reduce writes `records`, `checksum` and one `error` line per
//! problem; no `error` line means the sort is right.

use std::io::Read;

use super::Job;
use crate::api::{Emit, Mapper, Reducer, TaskContext, Values};
use crate::conf::{self, JobConf};
use crate::fs::{self, Fs};
use crate::io::{self, tera, InputFormat, OutputFormat, RecordReader, Split};
use crate::spec::{self, JobSpec};

pub const ROWS: &str = "mapreduce.terasort.num-rows";
pub const MAPS: &str = "mapreduce.job.maps";
pub const EXPECT_DIR: &str = "mapreduce.teravalidate.expect-dir";
const EXPECT_SUM: &str = "mapreduce.teravalidate.expect-checksum";
const EXPECT_RECORDS: &str = "mapreduce.teravalidate.expect-records";

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Row `i`'s record.
pub fn record(i: u64, out: &mut [u8; tera::RECORD]) {
    let a = splitmix(i.wrapping_mul(2));
    let b = splitmix(i.wrapping_mul(2) + 1);
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..10].copy_from_slice(&b.to_be_bytes()[..2]);
    out[10] = 0x00;
    out[11] = 0x11;
    let hex = format!("{i:032X}");
    out[12..44].copy_from_slice(hex.as_bytes());
    out[44..48].copy_from_slice(&[0x88, 0x99, 0xAA, 0xBB]);
    for (j, c) in out[48..96].iter_mut().enumerate() {
        *c = b'A' + ((i + j as u64 / 4) % 26) as u8;
    }
    out[96..100].copy_from_slice(&[0xCC, 0xDD, 0xEE, 0xFF]);
}

/// The checksum of one record.
#[inline]
pub fn record_sum(key: &[u8], value: &[u8]) -> u64 {
    u64::from(crc32c::crc32c_append(crc32c::crc32c(key), value))
}

pub struct TeraGen;

/// Rows as input: a split's `start` is its first row, `len` its rows.
struct Rows;

struct RowReader {
    next: u64,
    end: u64,
    first: u64,
    key: Vec<u8>,
}

impl RecordReader for RowReader {
    fn next(&mut self) -> anyhow::Result<Option<(&[u8], &[u8])>> {
        if self.next >= self.end {
            return Ok(None);
        }
        self.key.clear();
        self.key.extend_from_slice(&self.next.to_be_bytes());
        self.next += 1;
        Ok(Some((&self.key, b"")))
    }
    fn progress(&self) -> f32 {
        if self.end == self.first {
            1.0
        } else {
            (self.next - self.first) as f32 / (self.end - self.first) as f32
        }
    }
}

impl InputFormat for Rows {
    fn reader(
        &self,
        _fs: &dyn Fs,
        split: &Split,
        _conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordReader>> {
        Ok(Box::new(RowReader {
            next: split.start,
            end: split.start + split.len,
            first: split.start,
            key: Vec::with_capacity(8),
        }))
    }
}

struct GenMap {
    rec: [u8; tera::RECORD],
    sum: u64,
    count: u64,
}

impl Mapper for GenMap {
    fn map(
        &mut self,
        key: &[u8],
        _v: &[u8],
        out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        let i = u64::from_be_bytes(key.try_into()?);
        record(i, &mut self.rec);
        self.sum = self
            .sum
            .wrapping_add(record_sum(&self.rec[..tera::KEY], &self.rec[tera::KEY..]));
        self.count += 1;
        out.emit(&self.rec[..tera::KEY], &self.rec[tera::KEY..])
    }

    fn cleanup(&mut self, _out: &mut dyn Emit, ctx: &mut TaskContext) -> anyhow::Result<()> {
        let name = format!("_checksum-m-{:05}", ctx.info.partition);
        let mut w = ctx.create_side_file(&name)?;
        w.write_all(format!("{:016x} {}\n", self.sum, self.count).as_bytes())?;
        w.close()
    }
}

impl Job for TeraGen {
    fn prepare(&self, spec: &mut JobSpec, _fs: &dyn Fs) -> anyhow::Result<()> {
        anyhow::ensure!(
            spec.inputs.is_empty(),
            "teragen reads no input: give --rows N and the output directory"
        );
        let rows: u64 = spec
            .conf
            .get(ROWS)
            .ok_or_else(|| anyhow::anyhow!("teragen needs --rows N (or -D {ROWS}=N)"))?
            .parse()
            .map_err(|_| anyhow::anyhow!("{ROWS} must be a number of rows"))?;
        anyhow::ensure!(rows > 0, "--rows must be at least 1");
        let maps = match spec.conf.get(MAPS) {
            Some(m) => m
                .parse::<u64>()
                .ok()
                .filter(|m| *m > 0)
                .ok_or_else(|| anyhow::anyhow!("{MAPS} must be a number above 0"))?,
            None => (rows * tera::RECORD as u64).div_ceil(128 << 20),
        }
        .min(rows);
        spec.conf.set(conf::REDUCES, "0");
        spec.splits = (0..maps)
            .map(|m| {
                let first = rows * m / maps;
                let end = rows * (m + 1) / maps;
                Split {
                    path: String::new(),
                    start: first,
                    len: end - first,
                    file_len: rows,
                    ..Default::default()
                }
            })
            .collect();
        Ok(())
    }
    fn mapper(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Mapper>> {
        Ok(Box::new(GenMap {
            rec: [0; tera::RECORD],
            sum: 0,
            count: 0,
        }))
    }
    fn input_format(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn InputFormat>> {
        Ok(Box::new(Rows))
    }
    fn output_format(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn OutputFormat>> {
        io::output_format("tera")
    }
}

/// The sum and count of a TeraGen output's side files.
pub fn generated_checksum(fs: &dyn Fs, dir: &str) -> anyhow::Result<(u64, u64)> {
    let mut sum = 0u64;
    let mut count = 0u64;
    let mut files = 0;
    for f in fs.list(dir)? {
        if !fs::base_name(&f.path).starts_with("_checksum-") {
            continue;
        }
        let mut s = String::new();
        fs.open(&f.path, 0)?.read_to_string(&mut s)?;
        let mut it = s.split_whitespace();
        let bad = || anyhow::anyhow!("{}: not a TeraGen checksum", f.path);
        let x = u64::from_str_radix(it.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
        let n: u64 = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        sum = sum.wrapping_add(x);
        count += n;
        files += 1;
    }
    anyhow::ensure!(
        files > 0,
        "{dir} holds no TeraGen checksums (_checksum-m-*): is it TeraGen's output?"
    );
    Ok((sum, count))
}

pub struct TeraValidate;

struct ValidateMap {
    file: String,
    first: Option<Vec<u8>>,
    last: Vec<u8>,
    count: u64,
    sum: u64,
    misordered: u64,
    first_misorder: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Mapper for ValidateMap {
    fn setup(&mut self, ctx: &mut TaskContext) -> anyhow::Result<()> {
        self.file = fs::base_name(&ctx.info.input_file).to_string();
        Ok(())
    }

    fn map(
        &mut self,
        key: &[u8],
        value: &[u8],
        _out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        if self.first.is_none() {
            self.first = Some(key.to_vec());
        } else if key < self.last.as_slice() {
            if self.misordered == 0 {
                self.first_misorder = format!(
                    "record {} (key {}) is below the one before (key {})",
                    self.count,
                    hex(key),
                    hex(&self.last)
                );
            }
            self.misordered += 1;
        }
        self.last.clear();
        self.last.extend_from_slice(key);
        self.sum = self.sum.wrapping_add(record_sum(key, value));
        self.count += 1;
        Ok(())
    }

    fn cleanup(&mut self, out: &mut dyn Emit, _ctx: &mut TaskContext) -> anyhow::Result<()> {
        let v = format!(
            "{} {} {} {:016x} {} {}",
            self.first.as_deref().map_or("-".into(), hex),
            if self.count == 0 {
                "-".into()
            } else {
                hex(&self.last)
            },
            self.count,
            self.sum,
            self.misordered,
            self.first_misorder.replace(' ', "_"),
        );
        out.emit(self.file.as_bytes(), v.as_bytes())
    }
}

struct ValidateReduce {
    prev: Option<(String, String)>,
    sum: u64,
    count: u64,
    errors: Vec<String>,
    expect: Option<(u64, u64)>,
}

impl Reducer for ValidateReduce {
    fn reduce(
        &mut self,
        key: &[u8],
        values: &mut dyn Values,
        _out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        let file = String::from_utf8_lossy(key).into_owned();
        while let Some(v) = values.next_value()? {
            let s = String::from_utf8_lossy(v).into_owned();
            let f: Vec<&str> = s.splitn(6, ' ').collect();
            anyhow::ensure!(f.len() == 6, "a summary that does not parse: {s}");
            let n: u64 = f[2].parse()?;
            self.count += n;
            self.sum = self.sum.wrapping_add(u64::from_str_radix(f[3], 16)?);
            if f[4] != "0" {
                self.errors.push(format!(
                    "{file}: {} records out of order; the first: {}",
                    f[4],
                    f[5].replace('_', " ")
                ));
            }
            if n > 0 {
                if let Some((pf, plast)) = &self.prev {
                    if f[0] < plast.as_str() {
                        self.errors.push(format!(
                            "{file} starts with key {} below the last key of {pf} ({plast})",
                            f[0]
                        ));
                    }
                }
                self.prev = Some((file.clone(), f[1].to_string()));
            }
        }
        Ok(())
    }

    fn cleanup(&mut self, out: &mut dyn Emit, _ctx: &mut TaskContext) -> anyhow::Result<()> {
        if let Some((sum, count)) = self.expect {
            if count != self.count {
                self.errors
                    .push(format!("{} records, but the input had {count}", self.count));
            }
            if sum != self.sum {
                self.errors.push(format!(
                    "checksum {:016x}, but the input's is {sum:016x}",
                    self.sum
                ));
            }
        }
        out.emit(b"records", self.count.to_string().as_bytes())?;
        out.emit(b"checksum", format!("{:016x}", self.sum).as_bytes())?;
        for e in &self.errors {
            out.emit(b"error", e.as_bytes())?;
        }
        Ok(())
    }
}

impl Job for TeraValidate {
    fn prepare(&self, spec: &mut JobSpec, fs: &dyn Fs) -> anyhow::Result<()> {
        spec.conf.set(conf::REDUCES, "1");
        if let Some(dir) = spec.conf.get(EXPECT_DIR).map(str::to_string) {
            let (sum, count) = generated_checksum(fs, &dir)?;
            spec.conf.set(EXPECT_SUM, format!("{sum:016x}"));
            spec.conf.set(EXPECT_RECORDS, count.to_string());
        }
        super::file_splits(self, spec, fs)
    }
    fn splittable(&self) -> bool {
        false
    }
    fn mapper(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Mapper>> {
        Ok(Box::new(ValidateMap {
            file: String::new(),
            first: None,
            last: Vec::new(),
            count: 0,
            sum: 0,
            misordered: 0,
            first_misorder: String::new(),
        }))
    }
    fn reducer(&self, spec: &JobSpec) -> anyhow::Result<Box<dyn Reducer>> {
        let expect = match (spec.conf.get(EXPECT_SUM), spec.conf.get(EXPECT_RECORDS)) {
            (Some(s), Some(n)) => Some((u64::from_str_radix(s, 16)?, n.parse()?)),
            _ => None,
        };
        Ok(Box::new(ValidateReduce {
            prev: None,
            sum: 0,
            count: 0,
            errors: Vec::new(),
            expect,
        }))
    }
    fn input_format(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn InputFormat>> {
        io::input_format("tera")
    }
}

/// `spec::part_name` for the report TeraValidate writes.
pub fn report_file(output: &str) -> String {
    fs::join(output, &spec::part_name(false, 0))
}
