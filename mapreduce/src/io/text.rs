//! Text: lines in, `key<TAB>value` lines out. A split holds the lines that
//! *start* in it: a reader whose split does not begin the file skips to
//! the first line start after its first byte, and reads on past its end
//! to finish its last line (Hadoop's LineRecordReader rule: a split
//! reads every line whose first byte is in `(start, end]`, and the first
//! split also the line at 0). `\n` ends a line; a `\r` before it is
//! dropped.

use std::io::Read;

use crate::conf::{self, JobConf};
use crate::fs::{Fs, FsWrite};
use crate::io::{InputFormat, OutputFormat, RecordReader, RecordWriter, Split, OUT_BUF};

/// Lines out of a byte stream, borrowed from its buffer.
pub struct LineReader {
    r: Box<dyn Read + Send>,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    eof: bool,
    /// File offset of `buf[lo]`.
    pub pos: u64,
}

const READ: usize = 1 << 20;

impl LineReader {
    pub fn new(r: Box<dyn Read + Send>, pos: u64) -> Self {
        Self {
            r,
            buf: vec![0; READ],
            lo: 0,
            hi: 0,
            eof: false,
            pos,
        }
    }

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
        if n == 0 {
            self.eof = true;
        }
        self.hi += n;
        Ok(())
    }

    /// The next line (without its end) and the offset it starts at.
    pub fn next_line(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        let mut searched = 0;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.lo + searched..self.hi]) {
                let s = self.lo;
                let e = s + searched + i;
                let start = self.pos;
                self.pos += (e + 1 - s) as u64;
                self.lo = e + 1;
                let line = &self.buf[s..e];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(Some((start, line)));
            }
            if self.eof {
                if self.lo == self.hi {
                    return Ok(None);
                }
                let (s, e) = (self.lo, self.hi);
                let start = self.pos;
                self.pos += (e - s) as u64;
                self.lo = e;
                let line = &self.buf[s..e];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(Some((start, line)));
            }
            searched = self.hi - self.lo;
            self.fill()?;
        }
    }
}

/// Lines of one split.
pub struct LineSplit {
    lines: LineReader,
    start: u64,
    end: u64,
}

impl LineSplit {
    pub fn open(fs: &dyn Fs, split: &Split) -> anyhow::Result<Self> {
        let r = fs.open(&split.path, split.start)?;
        let mut lines = LineReader::new(r, split.start);
        if split.start != 0 {
            // Its first (part) line belongs to the split before.
            lines.next_line()?;
        }
        Ok(Self {
            lines,
            start: split.start,
            end: split.start + split.len,
        })
    }

    #[inline]
    pub fn next_line(&mut self) -> anyhow::Result<Option<(u64, &[u8])>> {
        if self.lines.pos > self.end {
            return Ok(None);
        }
        Ok(self.lines.next_line()?)
    }

    pub fn progress(&self) -> f32 {
        if self.end == self.start {
            return 1.0;
        }
        ((self.lines.pos.saturating_sub(self.start)) as f32 / (self.end - self.start) as f32)
            .min(1.0)
    }
}

/// Key: the line's byte offset (decimal); value: the line.
pub struct TextInput;

struct TextReader {
    lines: LineSplit,
    key: Vec<u8>,
}

impl RecordReader for TextReader {
    fn next(&mut self) -> anyhow::Result<Option<(&[u8], &[u8])>> {
        match self.lines.next_line()? {
            None => Ok(None),
            Some((off, line)) => {
                self.key.clear();
                write_decimal(&mut self.key, off);
                Ok(Some((&self.key, line)))
            }
        }
    }
    fn progress(&self) -> f32 {
        self.lines.progress()
    }
}

pub(crate) fn write_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&b[i..]);
}

impl InputFormat for TextInput {
    fn reader(
        &self,
        fs: &dyn Fs,
        split: &Split,
        _conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordReader>> {
        Ok(Box::new(TextReader {
            lines: LineSplit::open(fs, split)?,
            key: Vec::with_capacity(20),
        }))
    }
}

/// Key and value split at the first separator
/// (`mapreduce.input.keyvaluelinerecordreader.key.value.separator`, a
/// tab by default); a line without one is all key.
pub struct KeyValueInput;

struct KvReader {
    lines: LineSplit,
    sep: Vec<u8>,
}

/// Splits at the first `sep`: (key, value); no `sep`: (line, "").
pub fn split_kv<'a>(line: &'a [u8], sep: &[u8]) -> (&'a [u8], &'a [u8]) {
    let at = if sep.len() == 1 {
        memchr::memchr(sep[0], line)
    } else {
        memchr::memmem::find(line, sep)
    };
    match at {
        Some(i) => (&line[..i], &line[i + sep.len()..]),
        None => (line, &[]),
    }
}

impl RecordReader for KvReader {
    fn next(&mut self) -> anyhow::Result<Option<(&[u8], &[u8])>> {
        let sep = &self.sep;
        Ok(self.lines.next_line()?.map(|(_, line)| split_kv(line, sep)))
    }
    fn progress(&self) -> f32 {
        self.lines.progress()
    }
}

impl InputFormat for KeyValueInput {
    fn reader(
        &self,
        fs: &dyn Fs,
        split: &Split,
        conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordReader>> {
        let sep = conf.str(conf::KV_SEPARATOR).as_bytes().to_vec();
        anyhow::ensure!(!sep.is_empty(), "{} is empty", conf::KV_SEPARATOR);
        Ok(Box::new(KvReader {
            lines: LineSplit::open(fs, split)?,
            sep,
        }))
    }
}

/// `key<sep>value\n`; an empty value writes the key alone.
pub struct TextOutput;

pub struct TextWriter {
    w: Box<dyn FsWrite>,
    buf: Vec<u8>,
    sep: Vec<u8>,
}

impl TextWriter {
    pub fn new(w: Box<dyn FsWrite>, sep: &[u8]) -> Self {
        Self {
            w,
            buf: Vec::with_capacity(OUT_BUF + 4096),
            sep: sep.to_vec(),
        }
    }
}

impl RecordWriter for TextWriter {
    #[inline]
    fn write(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.buf.extend_from_slice(key);
        if !value.is_empty() {
            self.buf.extend_from_slice(&self.sep);
            self.buf.extend_from_slice(value);
        }
        self.buf.push(b'\n');
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

impl OutputFormat for TextOutput {
    fn writer(
        &self,
        fs: &dyn Fs,
        path: &str,
        conf: &JobConf,
    ) -> anyhow::Result<Box<dyn RecordWriter>> {
        let w = fs.create(path, conf.u64(conf::OUTPUT_REPLICATION) as u32)?;
        Ok(Box::new(TextWriter::new(
            w,
            conf.str(conf::TEXT_OUT_SEPARATOR).as_bytes(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::LocalFs;

    /// Every way of cutting a file into splits reads each line exactly
    /// once, at its offset.
    #[test]
    fn splits_read_each_line_once_wherever_they_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.txt");
        let text = b"alpha\nbe\r\n\ngamma delta\nx\nlast line without newline";
        std::fs::write(&p, text).unwrap();
        let path = p.to_str().unwrap().to_string();
        let fs = LocalFs::new();
        let mut want = Vec::new();
        let mut off = 0u64;
        for l in text.split(|&b| b == b'\n') {
            let shown = l.strip_suffix(b"\r").unwrap_or(l);
            want.push((off.to_string(), String::from_utf8(shown.to_vec()).unwrap()));
            off += l.len() as u64 + 1;
        }
        let n = text.len() as u64;
        for size in 1..=n {
            let mut got = Vec::new();
            let mut start = 0;
            while start < n {
                let len = size.min(n - start);
                let split = Split {
                    path: path.clone(),
                    start,
                    len,
                    file_len: n,
                    ..Default::default()
                };
                let mut r = TextInput.reader(&fs, &split, &JobConf::default()).unwrap();
                while let Some((k, v)) = r.next().unwrap() {
                    got.push((
                        String::from_utf8(k.to_vec()).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    ));
                }
                start += len;
            }
            assert_eq!(got, want, "split size {size}");
        }
    }

    #[test]
    fn key_value_lines_split_at_the_first_separator() {
        assert_eq!(split_kv(b"a\tb\tc", b"\t"), (&b"a"[..], &b"b\tc"[..]));
        assert_eq!(split_kv(b"abc", b"\t"), (&b"abc"[..], &b""[..]));
        assert_eq!(split_kv(b"k::v", b"::"), (&b"k"[..], &b"v"[..]));
    }

    #[test]
    fn text_output_writes_key_tab_value_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out").join("part-r-00000");
        let fs = LocalFs::new();
        let mut w = TextOutput
            .writer(&fs, p.to_str().unwrap(), &JobConf::default())
            .unwrap();
        w.write(b"k", b"v").unwrap();
        w.write(b"alone", b"").unwrap();
        w.close().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"k\tv\nalone\n");
    }
}
