//! Input and output formats. An [`InputFormat`] turns a split (a byte
//! range of a file) into records; an [`OutputFormat`] writes a task's
//! records into a file. Jobs name the ones they use (`text`, `kv`, `seq`,
//! `tera`) or bring their own: a reader over another source only has to
//! produce records.

pub mod seq;
pub mod tera;
pub mod text;

use serde::{Deserialize, Serialize};

use crate::api::Emit;
use crate::conf::JobConf;
use crate::fs::Fs;

/// A map's input: `len` bytes of `path` from `start`, and where they are
/// stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub path: String,
    pub start: u64,
    pub len: u64,
    pub file_len: u64,
    pub hosts: Vec<String>,
    pub racks: Vec<String>,
}

/// Records of one split; each borrowed until the next call.
pub trait RecordReader: Send {
    fn next(&mut self) -> anyhow::Result<Option<(&[u8], &[u8])>>;
    /// How far through its split, 0 to 1.
    fn progress(&self) -> f32;
}

pub trait InputFormat: Send + Sync {
    /// Whether a file may be cut into several splits.
    fn splittable(&self) -> bool {
        true
    }
    fn reader(
        &self,
        fs: &dyn Fs,
        split: &Split,
        conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordReader>>;
}

/// Writes one output file; `close` makes it complete.
pub trait RecordWriter: Send {
    fn write(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()>;
    fn close(self: Box<Self>) -> anyhow::Result<()>;
}

pub trait OutputFormat: Send + Sync {
    fn writer(
        &self,
        fs: &dyn Fs,
        path: &str,
        conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordWriter>>;
}

/// A record writer as an [`Emit`], counting what it wrote.
pub struct WriterEmit {
    pub w: Box<dyn RecordWriter>,
    pub records: u64,
}

impl Emit for WriterEmit {
    fn emit(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.records += 1;
        self.w.write(key, value)
    }
}

/// The input format of a name (`mapreduce.job.inputformat`).
pub fn input_format(name: &str) -> anyhow::Result<Box<dyn InputFormat>> {
    Ok(match name {
        "text" => Box::new(text::TextInput),
        "kv" => Box::new(text::KeyValueInput),
        "seq" => Box::new(seq::SeqInput),
        "tera" => Box::new(tera::TeraInput),
        other => anyhow::bail!("no input format {other:?} (there are text, kv, seq and tera)"),
    })
}

/// The output format of a name (`mapreduce.job.outputformat`).
pub fn output_format(name: &str) -> anyhow::Result<Box<dyn OutputFormat>> {
    Ok(match name {
        "text" => Box::new(text::TextOutput),
        "seq" => Box::new(seq::SeqOutput),
        "tera" => Box::new(tera::TeraOutput),
        other => anyhow::bail!("no output format {other:?} (there are text, seq and tera)"),
    })
}

/// Bytes a writer gathers before it hands them to the file system.
pub(crate) const OUT_BUF: usize = 256 << 10;
