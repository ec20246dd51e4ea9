//! The file systems a job reads and writes, behind one blocking trait:
//! hstack's (through the DFS client) or the local one (for `--local`).
//! Task code runs on blocking threads; the DFS side runs its client on
//! the process's tokio runtime, streaming reads ahead of the reader and
//! writes behind the writer so that the network and the task's CPU
//! overlap. Each instance counts the bytes it moved (the
//! `FileSystemCounter`s).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use hstack_dfs::client::{CreateOptions, DfsClient};
use tokio::runtime::Handle;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    pub len: u64,
    pub is_dir: bool,
    pub block_size: u64,
}

/// Where a piece of a file is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockLoc {
    pub offset: u64,
    pub len: u64,
    pub hosts: Vec<String>,
    pub racks: Vec<String>,
}

/// A file being written: [`close`](FsWrite::close) makes it whole; a
/// writer dropped unclosed leaves no complete file.
pub trait FsWrite: Write + Send {
    fn close(self: Box<Self>) -> anyhow::Result<()>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    Local,
    Dfs,
}

pub trait Fs: Send + Sync {
    fn kind(&self) -> FsKind;
    /// `None` when nothing is there.
    fn status(&self, path: &str) -> anyhow::Result<Option<FileInfo>>;
    /// A directory's entries, by name.
    fn list(&self, dir: &str) -> anyhow::Result<Vec<FileInfo>>;
    fn open(&self, path: &str, offset: u64) -> anyhow::Result<Box<dyn Read + Send>>;
    /// A new file (never overwrites), its parents made. `replication` 0 is
    /// the file system's default.
    fn create(&self, path: &str, replication: u32) -> anyhow::Result<Box<dyn FsWrite>>;
    fn mkdirs(&self, path: &str) -> anyhow::Result<()>;
    /// Refuses when `dst` exists.
    fn rename(&self, src: &str, dst: &str) -> anyhow::Result<()>;
    /// Nothing there is not an error.
    fn delete(&self, path: &str, recursive: bool) -> anyhow::Result<()>;
    /// Where each block of a file is.
    fn blocks(&self, f: &FileInfo) -> anyhow::Result<Vec<BlockLoc>>;
    fn bytes_read(&self) -> u64;
    fn bytes_written(&self) -> u64;
    /// The same file system with counts of its own (one per task, so a
    /// task's counters hold its own bytes only).
    fn fork(&self) -> Arc<dyn Fs>;
}

/// `dir` joined with `name`.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The last component of a path.
pub fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// Files whose names start with `_` or `.` are not input (`_SUCCESS`,
/// `_temporary`, side files), as in Hadoop.
pub fn is_hidden(path: &str) -> bool {
    let b = base_name(path);
    b.starts_with('_') || b.starts_with('.')
}

#[derive(Default)]
struct Moved {
    read: AtomicU64,
    written: AtomicU64,
}

struct Counting<T> {
    inner: T,
    moved: Arc<Moved>,
}

impl<T: Read> Read for Counting<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.moved.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

// ---- the local file system ----

/// The local file system (`--local`, and tests).
#[derive(Default)]
pub struct LocalFs {
    moved: Arc<Moved>,
}

impl LocalFs {
    pub fn new() -> Self {
        Self::default()
    }
}

struct LocalWrite {
    f: std::io::BufWriter<std::fs::File>,
    moved: Arc<Moved>,
}

impl Write for LocalWrite {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.f.write(buf)?;
        self.moved.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

impl FsWrite for LocalWrite {
    fn close(mut self: Box<Self>) -> anyhow::Result<()> {
        self.f.flush()?;
        Ok(())
    }
}

fn local_info(path: &str, m: &std::fs::Metadata) -> FileInfo {
    FileInfo {
        path: path.to_string(),
        len: if m.is_dir() { 0 } else { m.len() },
        is_dir: m.is_dir(),
        block_size: 128 << 20,
    }
}

impl Fs for LocalFs {
    fn kind(&self) -> FsKind {
        FsKind::Local
    }

    fn status(&self, path: &str) -> anyhow::Result<Option<FileInfo>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(local_info(path, &m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("{path}: {e}")),
        }
    }

    fn list(&self, dir: &str) -> anyhow::Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {dir}"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = join(dir, &name);
            let m = std::fs::metadata(&path).with_context(|| path.clone())?;
            out.push(local_info(&path, &m));
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn open(&self, path: &str, offset: u64) -> anyhow::Result<Box<dyn Read + Send>> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(Counting {
            inner: f,
            moved: self.moved.clone(),
        }))
    }

    fn create(&self, path: &str, _replication: u32) -> anyhow::Result<Box<dyn FsWrite>> {
        if let Some(p) = Path::new(path).parent() {
            std::fs::create_dir_all(p).with_context(|| format!("cannot make {}", p.display()))?;
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("cannot create {path}"))?;
        Ok(Box::new(LocalWrite {
            f: std::io::BufWriter::with_capacity(1 << 20, f),
            moved: self.moved.clone(),
        }))
    }

    fn mkdirs(&self, path: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(path).with_context(|| format!("cannot make {path}"))
    }

    fn rename(&self, src: &str, dst: &str) -> anyhow::Result<()> {
        if Path::new(dst).exists() {
            bail!("cannot rename {src} to {dst}: {dst} exists");
        }
        if let Some(p) = Path::new(dst).parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::rename(src, dst).with_context(|| format!("cannot rename {src} to {dst}"))
    }

    fn delete(&self, path: &str, recursive: bool) -> anyhow::Result<()> {
        let r = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() && recursive => std::fs::remove_dir_all(path),
            Ok(m) if m.is_dir() => std::fs::remove_dir(path),
            Ok(_) => std::fs::remove_file(path),
        };
        r.with_context(|| format!("cannot delete {path}"))
    }

    fn blocks(&self, f: &FileInfo) -> anyhow::Result<Vec<BlockLoc>> {
        // One "block" per split-size piece; no hosts to prefer.
        let mut out = Vec::new();
        let mut off = 0;
        while off < f.len {
            let len = f.block_size.min(f.len - off);
            out.push(BlockLoc {
                offset: off,
                len,
                ..Default::default()
            });
            off += len;
        }
        Ok(out)
    }

    fn bytes_read(&self) -> u64 {
        self.moved.read.load(Ordering::Relaxed)
    }

    fn bytes_written(&self) -> u64 {
        self.moved.written.load(Ordering::Relaxed)
    }

    fn fork(&self) -> Arc<dyn Fs> {
        Arc::new(LocalFs::new())
    }
}

// ---- hstack's file system ----

/// hstack's file system through the DFS client. Made inside the tokio
/// runtime; used from blocking threads only.
pub struct DfsFs {
    client: DfsClient,
    rt: Handle,
    moved: Arc<Moved>,
}

fn dfs_err(e: hstack_dfs::FsError) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// Chunks in flight between the DFS reader task and the task's thread.
const READ_AHEAD: usize = 64;
/// Bytes a writer hands its DFS task at once.
const WRITE_PIECE: usize = 1 << 20;

struct DfsRead {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, hstack_dfs::FsError>>,
    cur: Bytes,
    moved: Arc<Moved>,
}

impl Read for DfsRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        self.moved.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

enum Piece {
    Data(Vec<u8>),
    Close,
}

struct DfsWrite {
    tx: Option<tokio::sync::mpsc::Sender<Piece>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    buf: Vec<u8>,
    rt: Handle,
    moved: Arc<Moved>,
    path: String,
}

impl DfsWrite {
    fn send(&mut self, p: Piece) -> std::io::Result<()> {
        let ok = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.blocking_send(p).is_ok());
        if ok {
            return Ok(());
        }
        // The writer task ended early: its error says why.
        let why = match self.task.take() {
            Some(t) => match self.rt.block_on(t) {
                Ok(Err(e)) => format!("{e:#}"),
                _ => "the writer stopped".into(),
            },
            None => "the writer stopped".into(),
        };
        Err(std::io::Error::other(format!("{}: {why}", self.path)))
    }
}

impl Write for DfsWrite {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_PIECE {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_PIECE + 4096));
            self.moved
                .written
                .fetch_add(full.len() as u64, Ordering::Relaxed);
            self.send(Piece::Data(full))?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl FsWrite for DfsWrite {
    fn close(mut self: Box<Self>) -> anyhow::Result<()> {
        let rest = std::mem::take(&mut self.buf);
        if !rest.is_empty() {
            self.moved
                .written
                .fetch_add(rest.len() as u64, Ordering::Relaxed);
            self.send(Piece::Data(rest))?;
        }
        self.send(Piece::Close)?;
        self.tx = None;
        let t = self.task.take().ok_or_else(|| anyhow!("closed twice"))?;
        self.rt
            .block_on(t)
            .map_err(|e| anyhow!("{}: the writer task failed: {e}", self.path))?
    }
}

impl DfsFs {
    /// Call inside the runtime the client runs on.
    pub fn new(client: DfsClient) -> Self {
        Self {
            client,
            rt: Handle::current(),
            moved: Arc::default(),
        }
    }

    pub fn client(&self) -> &DfsClient {
        &self.client
    }

    fn info(st: &hstack_proto::dfs::FileStatus) -> FileInfo {
        FileInfo {
            path: st.path.clone(),
            len: st.len,
            is_dir: st.is_dir,
            block_size: st.block_size,
        }
    }
}

impl Fs for DfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Dfs
    }

    fn status(&self, path: &str) -> anyhow::Result<Option<FileInfo>> {
        let st = self.rt.block_on(self.client.stat(path)).map_err(dfs_err)?;
        Ok(st.map(|mut s| {
            s.path = path.to_string();
            Self::info(&s)
        }))
    }

    fn list(&self, dir: &str) -> anyhow::Result<Vec<FileInfo>> {
        let entries = self.rt.block_on(self.client.list(dir)).map_err(dfs_err)?;
        let mut out: Vec<FileInfo> = entries
            .iter()
            .map(|s| {
                let mut i = Self::info(s);
                i.path = join(dir, base_name(&s.path));
                i
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn open(&self, path: &str, offset: u64) -> anyhow::Result<Box<dyn Read + Send>> {
        let mut r = self.rt.block_on(self.client.open(path)).map_err(dfs_err)?;
        r.seek(offset.min(r.len())).map_err(dfs_err)?;
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        self.rt.spawn(async move {
            loop {
                match r.read_chunk().await {
                    Ok(Some(b)) => {
                        if tx.send(Ok(b)).await.is_err() {
                            return; // the reader stopped early
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Ok(Box::new(DfsRead {
            rx,
            cur: Bytes::new(),
            moved: self.moved.clone(),
        }))
    }

    fn create(&self, path: &str, replication: u32) -> anyhow::Result<Box<dyn FsWrite>> {
        let o = CreateOptions {
            overwrite: false,
            replication,
            create_parent: true,
            ..Default::default()
        };
        let mut w = self
            .rt
            .block_on(self.client.create(path, &o))
            .map_err(dfs_err)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(4);
        let task = self.rt.spawn(async move {
            while let Some(p) = rx.recv().await {
                match p {
                    Piece::Data(d) => w.write(&d).await.map_err(dfs_err)?,
                    Piece::Close => return w.close().await.map_err(dfs_err),
                }
            }
            // Dropped unclosed: the file is abandoned, never completed.
            bail!("the writer was dropped before it was closed")
        });
        Ok(Box::new(DfsWrite {
            tx: Some(tx),
            task: Some(task),
            buf: Vec::with_capacity(WRITE_PIECE + 4096),
            rt: self.rt.clone(),
            moved: self.moved.clone(),
            path: path.to_string(),
        }))
    }

    fn mkdirs(&self, path: &str) -> anyhow::Result<()> {
        self.rt
            .block_on(self.client.mkdirs(path, 0, true))
            .map(|_| ())
            .map_err(dfs_err)
    }

    fn rename(&self, src: &str, dst: &str) -> anyhow::Result<()> {
        // The namenode moves into an existing directory (as `mv`); a
        // committer must never do that.
        if self.status(dst)?.is_some() {
            bail!("cannot rename {src} to {dst}: {dst} exists");
        }
        if let Some((parent, _)) = dst.trim_end_matches('/').rsplit_once('/') {
            if !parent.is_empty() {
                self.mkdirs(parent)?;
            }
        }
        self.rt
            .block_on(self.client.rename(src, dst))
            .map_err(dfs_err)
    }

    fn delete(&self, path: &str, recursive: bool) -> anyhow::Result<()> {
        match self.rt.block_on(self.client.delete(path, recursive)) {
            Ok(()) => Ok(()),
            Err(e) if e.code == hstack_dfs::Code::FileNotFound => Ok(()),
            Err(e) => Err(dfs_err(e)),
        }
    }

    fn blocks(&self, f: &FileInfo) -> anyhow::Result<Vec<BlockLoc>> {
        let lbs = self
            .rt
            .block_on(self.client.block_locations(&f.path, 0, f.len))
            .map_err(dfs_err)?;
        let bs = f.block_size.max(1);
        Ok(lbs
            .blocks
            .iter()
            .map(|b| {
                let len = b
                    .block
                    .as_ref()
                    .map(|x| x.len)
                    .unwrap_or(bs)
                    .min(f.len.saturating_sub(b.offset));
                BlockLoc {
                    offset: b.offset,
                    len,
                    hosts: b.locs.iter().map(|d| d.host.clone()).collect(),
                    racks: b.locs.iter().map(|d| d.rack.clone()).collect(),
                }
            })
            .collect())
    }

    fn bytes_read(&self) -> u64 {
        self.moved.read.load(Ordering::Relaxed)
    }

    fn bytes_written(&self) -> u64 {
        self.moved.written.load(Ordering::Relaxed)
    }

    fn fork(&self) -> Arc<dyn Fs> {
        Arc::new(DfsFs {
            client: self.client.clone(),
            rt: self.rt.clone(),
            moved: Arc::default(),
        })
    }
}
