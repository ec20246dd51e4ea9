//! A datanode's replicas on disk, laid out as HDFS lays them out:
//!
//! ```text
//! <dir>/current/rbw/blk_<id>                   being written
//! <dir>/current/rbw/blk_<id>_<genstamp>.meta
//! <dir>/current/finalized/blk_<id>             complete
//! <dir>/current/finalized/blk_<id>_<genstamp>.meta
//! ```
//!
//! The meta file is a 16-byte header (`HSTKMETA`, version, bytes per
//! checksum) followed by one CRC32C (little-endian u32) per 512-byte chunk
//! of the block. Several directories (disks) are used round-robin.
//! Replicas are indexed in memory at start-up by scanning the directories.
//!
//! A directory that fails its check (`check_volume`: its layout is there
//! and a file can be written, synced and removed; the datanode's volume
//! checker runs it) is taken out of service (`fail_volume`):
//! no new replica goes there, and its replicas leave the index, so the
//! datanode reports them gone and the namenode copies them from elsewhere
//! (HDFS's volume failure handling).
//!
//! Data is written with `O_DIRECT` where it can be (whole 4 KiB-aligned
//! packets, the usual case): the disk takes it straight from the packet's
//! buffer, which spares the CPU the copy into the page cache (on this
//! project's benchmark machine that copy was 45 % of all CPU during a
//! replication-3 write, three times per byte). Reads use `O_DIRECT` too,
//! in windows of up to 1 MiB into reused aligned buffers (`BufPool`). A
//! block's unaligned tail, and everything on a file system that refuses
//! `O_DIRECT`, goes through the page cache as before. The checksum file
//! always does.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::{Code, FsError, FsResult};
use crate::namespace::BlockRec;

pub const CHUNK: usize = 512;
const META_MAGIC: &[u8; 8] = b"HSTKMETA";
/// Bytes before the first checksum of a `.meta` file.
pub const META_HEADER: u64 = 16;

/// Address, offset and length alignment an `O_DIRECT` write needs (the
/// page size: enough for every disk's logical block size).
pub const DIRECT_ALIGN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaState {
    /// Being written (or interrupted while it was).
    Rbw,
    Finalized,
}

#[derive(Clone, Debug)]
pub struct Replica {
    pub gen_stamp: u64,
    pub len: u64,
    pub state: ReplicaState,
    pub dir: usize,
}

/// Told the id of each replica that leaves the index or changes under its
/// readers (see `BlockStore::on_release`).
type ReleaseHook = Box<dyn Fn(u64) + Send + Sync>;

pub struct BlockStore {
    dirs: Vec<PathBuf>,
    /// Why each directory was taken out of service; `None` while it works.
    failed: Mutex<Vec<Option<String>>>,
    replicas: Mutex<HashMap<u64, Replica>>,
    next_dir: Mutex<usize>,
    direct_io: bool,
    pool: Arc<BufPool>,
    release: Mutex<Option<ReleaseHook>>,
}

/// CRC32C of each 512-byte chunk of `data`.
pub fn checksums(data: &[u8]) -> Vec<u32> {
    data.chunks(CHUNK).map(crc32c::crc32c).collect()
}

/// Checks each chunk of `data` (which starts at `offset` in its block)
/// against its CRC32C. A mismatch is `Code::Corrupt`, prefixed with `what`
/// and naming the bad chunk's offset.
pub fn verify_chunks(what: &str, offset: u64, data: &[u8], sums: &[u32]) -> FsResult<()> {
    match data
        .chunks(CHUNK)
        .zip(sums)
        .position(|(c, s)| crc32c::crc32c(c) != *s)
    {
        None => Ok(()),
        Some(i) => Err(FsError::new(
            Code::Corrupt,
            format!(
                "{what}checksum mismatch in the chunk at offset {}",
                offset + (i * CHUNK) as u64
            ),
        )),
    }
}

/// A storage directory taken out of service.
#[derive(Debug)]
pub struct VolumeFailure {
    pub dir: PathBuf,
    pub reason: String,
    /// The replicas it held, now gone from this node.
    pub lost: Vec<BlockRec>,
}

impl BlockStore {
    /// Opens (creating) the directories and indexes what they hold. Up to
    /// `tolerated` directories that fail are left out of service (see
    /// `failed_volumes`); one more is an error.
    pub fn open(dirs: &[PathBuf], tolerated: usize) -> FsResult<Self> {
        if dirs.is_empty() {
            return Err(FsError::invalid(
                "a datanode needs at least one storage directory",
            ));
        }
        let mut replicas = HashMap::new();
        let mut failed = vec![None; dirs.len()];
        for (i, d) in dirs.iter().enumerate() {
            let found = (|| -> io::Result<Vec<_>> {
                let mut found = Vec::new();
                for state in [ReplicaState::Finalized, ReplicaState::Rbw] {
                    let sub = sub_dir(d, state);
                    fs::create_dir_all(&sub)?;
                    found.extend(scan(&sub)?.into_iter().map(|r| (r, state)));
                }
                check_dir(d)?;
                Ok(found)
            })();
            match found {
                Ok(found) => {
                    for ((id, gs, len), state) in found {
                        let r = Replica {
                            gen_stamp: gs,
                            len,
                            state,
                            dir: i,
                        };
                        // Copies of one block in two places (a crash
                        // between steps): a finalized copy wins over a
                        // leftover rbw one, then the newer stamp.
                        let rank = |r: &Replica| (r.state == ReplicaState::Finalized, r.gen_stamp);
                        match replicas.entry(id) {
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(r);
                            }
                            std::collections::hash_map::Entry::Occupied(mut o) => {
                                if rank(&r) > rank(o.get()) {
                                    o.insert(r);
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    let e = crate::error::io(&d.display().to_string(), e);
                    if failed.iter().flatten().count() >= tolerated {
                        return Err(e);
                    }
                    tracing::error!(
                        "storage directory {} failed ({e}); left out (failed_volumes_tolerated = {tolerated})",
                        d.display()
                    );
                    failed[i] = Some(e.message);
                }
            }
        }
        Ok(Self {
            dirs: dirs.to_vec(),
            failed: Mutex::new(failed),
            replicas: Mutex::new(replicas),
            next_dir: Mutex::new(0),
            direct_io: true,
            pool: Arc::default(),
            release: Mutex::new(None),
        })
    }

    /// Whether block data is written and read with `O_DIRECT` where it can
    /// be (on unless the datanode's `direct_io` is off).
    pub fn with_direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }

    /// The block file opened a second time with `O_DIRECT` (for writing or
    /// for reading), if the store uses it and the file system allows it.
    fn open_direct(&self, path: &Path, write: bool) -> Option<File> {
        if !self.direct_io {
            return None;
        }
        match OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(nix::libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::debug!(
                    "{}: no O_DIRECT ({e}); using the page cache",
                    path.display()
                );
                None
            }
        }
    }

    /// Has `f` called with a replica's id, after the fact, whenever the
    /// replica is deleted, leaves the index with its directory, or is
    /// reopened for writing (a recovery: new stamp, maybe cut). Whoever
    /// handed out its files (short-circuit reads) takes them back then.
    /// Replaces an earlier hook.
    pub fn on_release(&self, f: impl Fn(u64) + Send + Sync + 'static) {
        *self.release.lock().expect("release hook lock") = Some(Box::new(f));
    }

    fn released(&self, id: u64) {
        if let Some(f) = &*self.release.lock().expect("release hook lock") {
            f(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Replica>> {
        self.replicas.lock().expect("replica index lock")
    }

    pub fn get(&self, id: u64) -> Option<Replica> {
        self.lock().get(&id).cloned()
    }

    /// How many replicas are held, finalized or being written.
    pub fn replica_count(&self) -> usize {
        self.lock().len()
    }

    /// Every replica, for a block report (finalized ones at their length,
    /// ones being written too: the namenode needs them for recovery).
    pub fn report(&self) -> Vec<(BlockRec, ReplicaState)> {
        let index: Vec<(u64, Replica)> =
            self.lock().iter().map(|(id, r)| (*id, r.clone())).collect();
        let mut v: Vec<_> = index
            .into_iter()
            .map(|(id, r)| {
                let len = match r.state {
                    ReplicaState::Finalized => r.len,
                    ReplicaState::Rbw => self.disk_len(id).map_or(r.len, |(_, l)| l),
                };
                (
                    BlockRec {
                        id,
                        gen_stamp: r.gen_stamp,
                        len,
                    },
                    r.state,
                )
            })
            .collect();
        v.sort_by_key(|(b, _)| b.id);
        v
    }

    fn failed_lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<String>>> {
        self.failed.lock().expect("failed volumes lock")
    }

    /// The directories out of service, and why.
    pub fn failed_volumes(&self) -> Vec<(PathBuf, String)> {
        self.failed_lock()
            .iter()
            .zip(&self.dirs)
            .filter_map(|(f, d)| f.clone().map(|why| (d.clone(), why)))
            .collect()
    }

    /// The indexes of the directories in service.
    pub fn in_service(&self) -> Vec<usize> {
        self.failed_lock()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_none())
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether directory `i` works (see `check_dir`). Blocks on its disk.
    pub fn check_volume(&self, i: usize) -> io::Result<()> {
        check_dir(&self.dirs[i])
    }

    /// Takes directory `i` out of service, and its replicas out of the
    /// index; `None` if it was out already.
    pub fn fail_volume(&self, i: usize, why: &str) -> Option<VolumeFailure> {
        let reason = format!("{}: {why}", self.dirs[i].display());
        // The index lock first, then the flag: a replica is indexed only
        // under the index lock after a look at the flag (`index`), so none
        // of this directory's can slip in after the sweep below.
        let mut index = self.lock();
        {
            let mut failed = self.failed_lock();
            if failed[i].is_some() {
                return None;
            }
            failed[i] = Some(reason.clone());
        }
        let mut lost = Vec::new();
        index.retain(|id, r| {
            if r.dir != i {
                return true;
            }
            lost.push(BlockRec {
                id: *id,
                gen_stamp: r.gen_stamp,
                len: r.len,
            });
            false
        });
        drop(index);
        lost.sort_by_key(|b| b.id);
        for b in &lost {
            self.released(b.id);
        }
        Some(VolumeFailure {
            dir: self.dirs[i].clone(),
            reason,
            lost,
        })
    }

    /// Puts a replica in the index, unless its directory has failed.
    fn index(&self, id: u64, r: Replica) -> FsResult<()> {
        let mut index = self.lock();
        if let Some(why) = &self.failed_lock()[r.dir] {
            return Err(FsError::new(
                Code::Io,
                format!("block {id}: storage directory out of service ({why})"),
            ));
        }
        index.insert(id, r);
        Ok(())
    }

    /// (capacity, used by blocks, remaining) over the directories in
    /// service.
    pub fn usage(&self) -> (u64, u64, u64) {
        let used: u64 = self.lock().values().map(|r| r.len).sum();
        let mut cap = 0;
        let mut free = 0;
        // Directories on one file system count it once.
        let mut seen = Vec::new();
        for d in self.in_service().into_iter().map(|i| &self.dirs[i]) {
            if let Ok(s) = nix::sys::statvfs::statvfs(d) {
                if seen.contains(&s.filesystem_id()) {
                    continue;
                }
                seen.push(s.filesystem_id());
                cap += s.blocks() * s.fragment_size();
                free += s.blocks_available() * s.fragment_size();
            }
        }
        (cap, used, free)
    }

    fn paths(&self, dir: usize, state: ReplicaState, id: u64, gs: u64) -> (PathBuf, PathBuf) {
        let sub = sub_dir(&self.dirs[dir], state);
        (
            sub.join(format!("blk_{id}")),
            sub.join(format!("blk_{id}_{gs}.meta")),
        )
    }

    /// Starts a replica being written. A replica of the same block with an
    /// older stamp (a pipeline being rebuilt) is replaced; a finalized one
    /// with the same or a newer stamp is an error.
    pub fn create_rbw(&self, block: BlockRec) -> FsResult<RbwWriter> {
        if let Some(old) = self.get(block.id) {
            if old.gen_stamp >= block.gen_stamp && old.state == ReplicaState::Finalized {
                return Err(FsError::new(
                    Code::AlreadyExists,
                    format!("block {} already finalized here", block.id),
                ));
            }
            self.delete(block.id)?;
        }
        let dir = {
            let working = self.in_service();
            if working.is_empty() {
                return Err(FsError::new(
                    Code::Io,
                    "no storage directory is in service (all failed)",
                ));
            }
            let mut n = self.next_dir.lock().expect("dir lock");
            let d = working[*n % working.len()];
            *n += 1;
            d
        };
        let (data, meta) = self.paths(dir, ReplicaState::Rbw, block.id, block.gen_stamp);
        let io = |e| crate::error::io(&format!("block {}", block.id), e);
        let data_f = File::create(&data).map_err(io)?;
        let mut meta_f = File::create(&meta).map_err(io)?;
        let mut header = Vec::with_capacity(META_HEADER as usize);
        header.extend_from_slice(META_MAGIC);
        header.extend_from_slice(&1u16.to_le_bytes());
        header.extend_from_slice(&(CHUNK as u32).to_le_bytes());
        header.extend_from_slice(&[0, 0]);
        meta_f.write_all(&header).map_err(io)?;
        self.index(
            block.id,
            Replica {
                gen_stamp: block.gen_stamp,
                len: 0,
                state: ReplicaState::Rbw,
                dir,
            },
        )?;
        Ok(RbwWriter {
            block,
            dir,
            direct: self.open_direct(&data, true),
            data: data_f,
            meta: meta_f,
            len: 0,
        })
    }

    /// Moves a written replica to finalized at `len`.
    pub fn finalize(&self, w: RbwWriter, sync: bool) -> FsResult<BlockRec> {
        let io = |e| crate::error::io(&format!("block {}", w.block.id), e);
        if sync {
            w.data.sync_data().map_err(io)?;
            w.meta.sync_data().map_err(io)?;
        }
        let gs = w.block.gen_stamp;
        let (d0, m0) = self.paths(w.dir, ReplicaState::Rbw, w.block.id, gs);
        let (d1, m1) = self.paths(w.dir, ReplicaState::Finalized, w.block.id, gs);
        fs::rename(&m0, &m1).map_err(io)?;
        fs::rename(&d0, &d1).map_err(io)?;
        if sync {
            // The renames must survive a power loss too, or a synced replica
            // comes back in rbw/ or not at all (HDFS-5042): fsync the
            // directory that gained the files and the one that lost them.
            for dir in [d1.parent(), d0.parent()].into_iter().flatten() {
                fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io)?;
            }
        }
        let len = w.len;
        // Refused if the directory failed while the replica was written
        // (it left the index with the others).
        self.index(
            w.block.id,
            Replica {
                gen_stamp: gs,
                len,
                state: ReplicaState::Finalized,
                dir: w.dir,
            },
        )?;
        Ok(BlockRec {
            id: w.block.id,
            gen_stamp: gs,
            len,
        })
    }

    /// The replica and the length of its data on disk (a replica being
    /// written has grown past what the index says).
    pub fn disk_len(&self, id: u64) -> FsResult<(Replica, u64)> {
        let r = self
            .get(id)
            .ok_or_else(|| FsError::new(Code::FileNotFound, format!("block {id} is not here")))?;
        let (d, _) = self.paths(r.dir, r.state, id, r.gen_stamp);
        let len = fs::metadata(&d)
            .map_err(|e| crate::error::io(&d.display().to_string(), e))?
            .len();
        Ok((r, len))
    }

    /// The replica and the bytes of it a reader may rely on: a finalized
    /// replica's length; for one being written, the data whose checksums
    /// are on disk too (a writer appends data before its checksums, and a
    /// crash can tear either).
    pub fn visible_len(&self, id: u64) -> FsResult<(Replica, u64)> {
        let (r, data_len) = self.disk_len(id)?;
        if r.state == ReplicaState::Finalized {
            return Ok((r.clone(), r.len));
        }
        let (_, m) = self.paths(r.dir, r.state, id, r.gen_stamp);
        let meta_len = fs::metadata(&m)
            .map_err(|e| crate::error::io(&m.display().to_string(), e))?
            .len();
        let covered = meta_len.saturating_sub(META_HEADER) / 4 * CHUNK as u64;
        Ok((r, data_len.min(covered)))
    }

    /// Reopens a replica for a rebuilt pipeline or for lease recovery: it
    /// moves to `new_gs`, is cut to `len` (no more than it holds; whole
    /// chunks unless `len` is all it holds) and is being written again. A
    /// replica older than `min_gs` is refused: it missed writes.
    pub fn reopen_rbw(&self, id: u64, min_gs: u64, new_gs: u64, len: u64) -> FsResult<RbwWriter> {
        let (r, have) = self.disk_len(id)?;
        if r.gen_stamp < min_gs || r.gen_stamp > new_gs {
            return Err(FsError::new(
                Code::Corrupt,
                format!(
                    "block {id}: replica has stamp {}, recovery expects {min_gs}..={new_gs}",
                    r.gen_stamp
                ),
            ));
        }
        if len > have || (len % CHUNK as u64 != 0 && len != have) {
            return Err(FsError::invalid(format!(
                "block {id}: cannot cut a replica of {have} bytes to {len}"
            )));
        }
        // A finalized replica is complete: a pipeline recovery may give it
        // the new stamp (the writer missed the last ack), never cut it. Its
        // length is what the writer sent or what a lease recovery decided.
        if r.state == ReplicaState::Finalized && len != have {
            return Err(FsError::new(
                Code::AlreadyExists,
                format!(
                    "block {id}: the replica here is finalized at {have} bytes; a pipeline recovery cannot cut it to {len}"
                ),
            ));
        }
        let io = |e| crate::error::io(&format!("block {id}"), e);
        let (d0, m0) = self.paths(r.dir, r.state, id, r.gen_stamp);
        let (d1, m1) = self.paths(r.dir, ReplicaState::Rbw, id, new_gs);
        fs::rename(&m0, &m1).map_err(io)?;
        fs::rename(&d0, &d1).map_err(io)?;
        // Data is written at explicit offsets, checksums appended.
        let data = OpenOptions::new().write(true).open(&d1).map_err(io)?;
        let meta = OpenOptions::new().append(true).open(&m1).map_err(io)?;
        data.set_len(len).map_err(io)?;
        meta.set_len(META_HEADER + len.div_ceil(CHUNK as u64) * 4)
            .map_err(io)?;
        let indexed = self.index(
            id,
            Replica {
                gen_stamp: new_gs,
                len,
                state: ReplicaState::Rbw,
                dir: r.dir,
            },
        );
        // After the index changed: whoever looks the replica up from now
        // on finds it being written, and whoever held it before hears.
        self.released(id);
        indexed?;
        Ok(RbwWriter {
            block: BlockRec {
                id,
                gen_stamp: new_gs,
                len,
            },
            dir: r.dir,
            direct: self.open_direct(&d1, true),
            data,
            meta,
            len,
        })
    }

    pub fn delete(&self, id: u64) -> FsResult<bool> {
        let Some(r) = self.lock().remove(&id) else {
            return Ok(false);
        };
        self.released(id);
        let (d, m) = self.paths(r.dir, r.state, id, r.gen_stamp);
        for p in [d, m] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::error::io(&p.display().to_string(), e)),
            }
        }
        Ok(true)
    }

    /// Opens a replica for reading; `gen_stamp` must not be older than the
    /// replica's (a reader with a newer stamp than ours reads nothing).
    pub fn open_read(&self, block: &BlockRec) -> FsResult<BlockReader> {
        let r = self.get(block.id).ok_or_else(|| {
            FsError::new(
                Code::FileNotFound,
                format!("block {} is not here", block.id),
            )
        })?;
        if r.gen_stamp < block.gen_stamp {
            return Err(FsError::new(
                Code::Corrupt,
                format!(
                    "replica of block {} has stamp {}, the reader wants {}",
                    block.id, r.gen_stamp, block.gen_stamp
                ),
            ));
        }
        let (d, m) = self.paths(r.dir, r.state, block.id, r.gen_stamp);
        let io = |e| crate::error::io(&format!("block {}", block.id), e);
        Ok(BlockReader {
            id: block.id,
            len: r.len,
            data: File::open(&d).map_err(io)?,
            direct: self.open_direct(&d, false),
            meta: File::open(m).map_err(io)?,
            pool: self.pool.clone(),
        })
    }

    /// A replica's block and checksum files, opened for reading through the
    /// page cache (no `O_DIRECT`), with the index entry they belong to: for
    /// a reader on this host that reads them itself (short-circuit reads).
    /// The caller checks the entry's state, stamp and length.
    pub fn open_files(&self, id: u64) -> FsResult<(Replica, File, File)> {
        let r = self
            .get(id)
            .ok_or_else(|| FsError::new(Code::FileNotFound, format!("block {id} is not here")))?;
        let (d, m) = self.paths(r.dir, r.state, id, r.gen_stamp);
        let io = |e| crate::error::io(&format!("block {id}"), e);
        let data = File::open(&d).map_err(io)?;
        let meta = File::open(&m).map_err(io)?;
        Ok((r, data, meta))
    }

    /// Re-reads a replica and checks every chunk (the block scanner).
    pub fn verify(&self, block: &BlockRec) -> FsResult<()> {
        let mut r = self.open_read(block)?;
        let len = r.len;
        let mut off = 0;
        while off < len {
            let n = (len - off).min(1 << 20);
            r.read_verified(off, n as usize)?;
            off += n;
        }
        Ok(())
    }
}

/// Checks a `.meta` file's header (its first `META_HEADER` bytes): our
/// magic, version 1, 512 bytes per checksum.
pub fn check_meta_header(what: &str, h: &[u8]) -> FsResult<()> {
    let ok = h.len() >= META_HEADER as usize
        && &h[..8] == META_MAGIC
        && h[8..10] == 1u16.to_le_bytes()
        && h[10..14] == (CHUNK as u32).to_le_bytes();
    if ok {
        Ok(())
    } else {
        Err(FsError::new(
            Code::Corrupt,
            format!("{what}not a version 1 checksum file of 512-byte chunks"),
        ))
    }
}

/// A storage directory works if its layout is there and a file can be
/// created, written, synced and removed in it: a disk gone, unmounted or
/// read-only fails; a full one does not (its replicas are still good).
fn check_dir(dir: &Path) -> io::Result<()> {
    for state in [ReplicaState::Finalized, ReplicaState::Rbw] {
        let sub = sub_dir(dir, state);
        if !fs::metadata(&sub)?.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                sub.display()
            )));
        }
    }
    let probe = dir.join("current").join(".volume-check");
    let write = || -> io::Result<()> {
        let mut f = File::create(&probe)?;
        f.write_all(b"hstack volume check\n")?;
        f.sync_all()
    };
    match write() {
        Ok(()) => {}
        // Full is not failed: the replicas on it are still good.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::ENOSPC | nix::libc::EDQUOT)
            ) => {}
        Err(e) => return Err(e),
    }
    match fs::remove_file(&probe) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sub_dir(dir: &Path, state: ReplicaState) -> PathBuf {
    dir.join("current").join(match state {
        ReplicaState::Rbw => "rbw",
        ReplicaState::Finalized => "finalized",
    })
}

/// (id, genstamp, length) of each complete replica in `sub`.
fn scan(sub: &Path) -> io::Result<Vec<(u64, u64, u64)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(sub)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("blk_") else {
            continue;
        };
        let Some(rest) = rest.strip_suffix(".meta") else {
            continue;
        };
        let Some((id, gs)) = rest.split_once('_') else {
            continue;
        };
        let (Ok(id), Ok(gs)) = (id.parse::<u64>(), gs.parse::<u64>()) else {
            continue;
        };
        let data = sub.join(format!("blk_{id}"));
        let Ok(md) = fs::metadata(&data) else {
            // A meta file without its data: an interrupted delete.
            let _ = fs::remove_file(e.path());
            continue;
        };
        out.push((id, gs, md.len()));
    }
    Ok(out)
}

/// A replica being written: data and checksums appended in order.
#[derive(Debug)]
pub struct RbwWriter {
    pub block: BlockRec,
    dir: usize,
    data: File,
    /// `data`'s file again, opened with `O_DIRECT`.
    direct: Option<File>,
    meta: File,
    len: u64,
}

impl RbwWriter {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data` at `offset` (must be the current length, a multiple of
    /// 512 unless it is the last packet) with one checksum per chunk; the
    /// checksums are verified first.
    pub fn append(&mut self, offset: u64, data: &[u8], sums: &[u32]) -> FsResult<()> {
        let (_, res) = self.append_all(&[Piece { offset, data, sums }]);
        res
    }

    /// Appends pieces in order (each checked as `append` checks one), in
    /// one vectored write where it can. Returns how many were stored, and
    /// the error of the first refused piece (those before it are stored).
    pub fn append_all(&mut self, pieces: &[Piece<'_>]) -> (usize, FsResult<()>) {
        let mut end = self.len;
        let mut good = 0;
        let mut refused = Ok(());
        for p in pieces {
            if let Err(e) = self.check(end, p) {
                refused = Err(e);
                break;
            }
            end += p.data.len() as u64;
            good += 1;
        }
        let ok = &pieces[..good];
        let id = self.block.id;
        let io = |e| crate::error::io(&format!("block {id}"), e);
        let bufs: Vec<&[u8]> = ok
            .iter()
            .map(|p| p.data)
            .filter(|d| !d.is_empty())
            .collect();
        if let Err(e) = self.write_data(self.len, &bufs) {
            return (0, Err(io(e)));
        }
        let mut sums = Vec::with_capacity(ok.iter().map(|p| p.sums.len() * 4).sum());
        for s in ok.iter().flat_map(|p| p.sums) {
            sums.extend_from_slice(&s.to_le_bytes());
        }
        if let Err(e) = self.meta.write_all(&sums) {
            return (0, Err(io(e)));
        }
        self.len = end;
        (good, refused)
    }

    fn check(&self, end: u64, p: &Piece<'_>) -> FsResult<()> {
        let id = self.block.id;
        if p.offset != end {
            return Err(FsError::invalid(format!(
                "block {id}: packet at offset {}, expected {end}",
                p.offset
            )));
        }
        if !p.data.is_empty() && end % CHUNK as u64 != 0 {
            return Err(FsError::invalid(format!(
                "block {id}: a partial chunk was already written"
            )));
        }
        let want = p.data.len().div_ceil(CHUNK);
        if p.sums.len() != want {
            return Err(FsError::invalid(format!(
                "block {id}: {} checksums for {want} chunks",
                p.sums.len()
            )));
        }
        verify_chunks(&format!("block {id}: "), p.offset, p.data, p.sums)
    }

    /// Writes `bufs` back to back from `offset`: with `O_DIRECT` in one
    /// vectored write when every address, length and the offset allow it,
    /// else through the page cache (the kernel keeps the two coherent).
    fn write_data(&mut self, mut offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let aligned = |x: usize| x % DIRECT_ALIGN == 0;
        let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        if let Some(f) = &self.direct {
            let direct_ok = aligned(offset as usize)
                && bufs
                    .iter()
                    .all(|b| aligned(b.len()) && aligned(b.as_ptr() as usize));
            while direct_ok && !rest.is_empty() {
                match nix::sys::uio::pwritev(f, rest, offset as i64) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        offset += n as u64;
                        IoSlice::advance_slices(&mut rest, n);
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    // The file system wants more alignment than we gave
                    // (or a short write left us unaligned): the rest goes
                    // through the page cache.
                    Err(nix::errno::Errno::EINVAL) => {
                        tracing::debug!("block {}: O_DIRECT refused", self.block.id);
                        self.direct = None;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for b in rest.iter() {
            self.data.write_all_at(b, offset)?;
            offset += b.len() as u64;
        }
        Ok(())
    }
}

/// One packet's worth of a replica: its offset, data and checksums.
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a> {
    pub offset: u64,
    pub data: &'a [u8],
    pub sums: &'a [u32],
}

/// A replica opened for reading.
pub struct BlockReader {
    pub id: u64,
    pub len: u64,
    data: File,
    /// `data`'s file again, opened with `O_DIRECT`.
    direct: Option<File>,
    meta: File,
    pool: Arc<BufPool>,
}

impl std::fmt::Debug for BlockReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockReader")
            .field("id", &self.id)
            .field("len", &self.len)
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

/// Most a streaming reader asks for at once (`read_raw` takes more, in a
/// buffer of its own).
pub const READ_WINDOW: usize = 1 << 20;

/// Page-aligned read buffers, reused. A reused buffer is warm in the
/// caches (and, on a VM, already backed by the host: fresh memory faults
/// there on first touch, which made the copy out of the page cache the
/// most expensive step of a read).
#[derive(Default)]
pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Idle buffers kept (each a read window and a little).
const POOL_MAX: usize = 32;
/// Room for a window that starts and ends off the 4 KiB grid (up to 4 KiB
/// of alignment at each end) and for aligning the buffer's own address.
const POOL_BUF: usize = READ_WINDOW + 4 * DIRECT_ALIGN;

impl BufPool {
    fn take(&self, need: usize) -> Vec<u8> {
        if need <= POOL_BUF {
            if let Some(b) = self.free.lock().expect("buffer pool lock").pop() {
                return b;
            }
        }
        vec![0; need.max(POOL_BUF)]
    }
}

/// A pool buffer lent to a `Bytes`; back to the pool when the last slice
/// of it goes.
struct Lent {
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() == POOL_BUF {
            let mut free = self.pool.free.lock().expect("buffer pool lock");
            if free.len() < POOL_MAX {
                free.push(buf);
            }
        }
    }
}

impl BlockReader {
    /// Reads `len` bytes from `offset` (widened to whole chunks, clipped
    /// at the replica's end), returning the chunk-aligned start, the data
    /// and the stored checksums, without verifying them (the reader does).
    /// The data is read with `O_DIRECT` when it can be (no copy through the
    /// page cache, which a stream read once would only pollute).
    pub fn read_raw(&mut self, offset: u64, len: usize) -> FsResult<(u64, Bytes, Vec<u32>)> {
        if offset > self.len {
            return Err(FsError::invalid(format!(
                "block {}: offset {offset} is past its end ({})",
                self.id, self.len
            )));
        }
        let start = offset / CHUNK as u64 * CHUNK as u64;
        // Whole chunks: a checksum covers its chunk entire.
        let end = (offset + len as u64)
            .div_ceil(CHUNK as u64)
            .saturating_mul(CHUNK as u64)
            .min(self.len);
        let n = (end - start) as usize;
        let io = |e| crate::error::io(&format!("block {}", self.id), e);
        // Aligned around [start, end) for O_DIRECT.
        let a = DIRECT_ALIGN as u64;
        let astart = start / a * a;
        let head = (start - astart) as usize;
        let alen = (head + n).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        let mut buf = self.pool.take(alen + DIRECT_ALIGN);
        let base = (DIRECT_ALIGN - buf.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        let got = match &self.direct {
            Some(f) => read_direct(f, &mut buf[base..base + alen], astart).map_err(io)?,
            None => 0,
        };
        if got < head + n {
            // No O_DIRECT (or a short read at the file's end, which a
            // buffered read settles either way).
            self.direct = None;
            self.data
                .read_exact_at(&mut buf[base + head..base + head + n], start)
                .map_err(io)?;
        }
        let data = Bytes::from_owner(Lent {
            buf,
            range: base + head..base + head + n,
            pool: self.pool.clone(),
        });
        let chunks = n.div_ceil(CHUNK);
        let mut raw = vec![0u8; chunks * 4];
        self.meta
            .read_exact_at(&mut raw, META_HEADER + start / CHUNK as u64 * 4)
            .map_err(|e| {
                FsError::new(
                    Code::Corrupt,
                    format!("block {}: checksum file too short: {e}", self.id),
                )
            })?;
        let sums = raw
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok((start, data, sums))
    }

    /// Reads and verifies; a mismatch is `Code::Corrupt`.
    pub fn read_verified(&mut self, offset: u64, len: usize) -> FsResult<Vec<u8>> {
        let (start, data, sums) = self.read_raw(offset, len)?;
        verify_chunks(&format!("block {}: ", self.id), start, &data, &sums)?;
        let skip = (offset - start) as usize;
        let take = len.min(data.len().saturating_sub(skip));
        Ok(data[skip..skip + take].to_vec())
    }
}

/// Reads into `buf` from `offset` with `O_DIRECT` until it is full or the
/// file ends; how much was read. An `O_DIRECT` refusal reads nothing.
fn read_direct(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            // A short read not at a block boundary: the rest buffered.
            Ok(n) if n % DIRECT_ALIGN != 0 => return Ok(got + n),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => return Ok(0),
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(id: u64) -> BlockRec {
        BlockRec {
            id,
            gen_stamp: 7,
            len: 0,
        }
    }

    /// What the datanode's volume checker does, without its timeout.
    fn check_volumes(store: &BlockStore) -> Vec<VolumeFailure> {
        store
            .in_service()
            .into_iter()
            .filter_map(|i| {
                let e = store.check_volume(i).err()?;
                store.fail_volume(i, &e.to_string())
            })
            .collect()
    }

    fn write(store: &BlockStore, id: u64, data: &[u8]) -> BlockRec {
        let mut w = store.create_rbw(block(id)).unwrap();
        let mut off = 0;
        for piece in data.chunks(4096) {
            w.append(off, piece, &checksums(piece)).unwrap();
            off += piece.len() as u64;
        }
        store.finalize(w, false).unwrap()
    }

    #[test]
    fn replicas_round_trip_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().join("d1"), dir.path().join("d2")];
        let store = BlockStore::open(&dirs, 0).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let b = write(&store, 1, &data);
        assert_eq!(b.len, 10_000);
        write(&store, 2, b"");
        write(&store, 3, &data[..513]);
        let mut r = store.open_read(&b).unwrap();
        assert_eq!(r.read_verified(0, 10_000).unwrap(), data);
        assert_eq!(r.read_verified(700, 100).unwrap(), &data[700..800]);
        assert_eq!(r.read_verified(9_999, 100).unwrap(), &data[9_999..]);
        assert_eq!(r.read_verified(10_000, 5).unwrap(), b"");
        assert!(r.read_verified(10_001, 5).is_err(), "past the end");
        drop(store);
        let store = BlockStore::open(&dirs, 0).unwrap();
        let rep: Vec<(u64, u64)> = store.report().iter().map(|(b, _)| (b.id, b.len)).collect();
        assert_eq!(rep, vec![(1, 10_000), (2, 0), (3, 513)]);
        let (cap, used, free) = store.usage();
        assert_eq!(used, 10_513);
        assert!(cap > 0 && free > 0 && free <= cap);
        // Both directories are on one file system: counted once.
        let one = BlockStore::open(&dirs[..1], 0).unwrap().usage().0;
        assert_eq!(cap, one);
        store.verify(&b).unwrap();
        assert!(store.delete(1).unwrap());
        assert!(store.open_read(&b).is_err());
        assert!(!store.delete(1).unwrap());
    }

    #[test]
    fn a_failed_directory_leaves_service_with_its_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().join("d1"), dir.path().join("d2")];
        let store = BlockStore::open(&dirs, 1).unwrap();
        // Round-robin: odd ids in d1, even ids in d2.
        for id in 1..=4 {
            write(&store, id, &[id as u8; 700]);
        }
        let in_d2: Vec<u64> = store
            .lock()
            .iter()
            .filter(|(_, r)| r.dir == 1)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(in_d2.len(), 2);
        assert!(check_volumes(&store).is_empty(), "both work");
        // A writer was on d2 when its disk went away.
        let mut open = store.create_rbw(block(5)).unwrap();
        assert_eq!(open.dir, 0);
        let mut open2 = store.create_rbw(block(6)).unwrap();
        assert_eq!(open2.dir, 1);
        fs::remove_dir_all(&dirs[1]).unwrap();
        let failed = check_volumes(&store);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].dir, dirs[1]);
        let mut lost: Vec<u64> = failed[0].lost.iter().map(|b| b.id).collect();
        lost.sort();
        let mut expected = in_d2.clone();
        expected.push(6);
        expected.sort();
        assert_eq!(lost, expected, "d2's replicas, the one being written too");
        assert!(check_volumes(&store).is_empty(), "reported once");
        assert_eq!(store.failed_volumes().len(), 1);
        for id in &in_d2 {
            assert!(store.get(*id).is_none());
        }
        // d1 still serves and takes every new replica.
        write(&store, 7, b"x");
        write(&store, 8, b"y");
        assert!(store.lock().values().all(|r| r.dir == 0));
        open.append(0, b"z", &checksums(b"z")).unwrap();
        store.finalize(open, false).unwrap();
        // The writer on d2 cannot finalize into the index again.
        let _ = open2.append(0, b"z", &checksums(b"z"));
        assert!(store.finalize(open2, false).is_err());
        assert!(store.get(6).is_none());
        // At start, a broken directory is left out within the tolerance
        // (here d2 is a file, not a directory) and refused beyond it.
        drop(store);
        fs::write(&dirs[1], b"not a directory").unwrap();
        let e = match BlockStore::open(&dirs, 0) {
            Err(e) => e,
            Ok(_) => panic!("opened with a broken directory and no tolerance"),
        };
        assert!(e.message.contains("d2"), "{e}");
        let store = BlockStore::open(&dirs, 1).unwrap();
        assert_eq!(store.failed_volumes().len(), 1);
        assert!(store.get(1).is_some() && store.get(7).is_some());
        assert!(store.create_rbw(block(9)).is_ok());
        // With every directory gone, nothing can be written.
        fs::remove_dir_all(&dirs[0]).unwrap();
        assert_eq!(check_volumes(&store).len(), 1);
        let e = match store.create_rbw(block(10)) {
            Err(e) => e,
            Ok(_) => panic!("a replica created with no directory in service"),
        };
        assert!(e.message.contains("no storage directory"), "{e}");
    }

    #[test]
    fn of_two_copies_at_start_the_finalized_then_the_newer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().join("d1"), dir.path().join("d2")];
        let store = BlockStore::open(&dirs, 0).unwrap();
        // Block 1 finalized in d1, block 2 finalized in d2.
        write(&store, 1, &[1; 600]);
        write(&store, 2, &[2; 600]);
        drop(store);
        let copy = |from: &Path, to: &Path| {
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(from, to).unwrap();
        };
        let (fin, rbw) = (ReplicaState::Finalized, ReplicaState::Rbw);
        // A leftover rbw copy of block 1 in d2 (at a newer stamp): the
        // finalized one still wins.
        copy(
            &sub_dir(&dirs[0], fin).join("blk_1"),
            &sub_dir(&dirs[1], rbw).join("blk_1"),
        );
        copy(
            &sub_dir(&dirs[0], fin).join("blk_1_7.meta"),
            &sub_dir(&dirs[1], rbw).join("blk_1_9.meta"),
        );
        // A finalized copy of block 2 in d1 at a newer stamp wins over d2's.
        copy(
            &sub_dir(&dirs[1], fin).join("blk_2"),
            &sub_dir(&dirs[0], fin).join("blk_2"),
        );
        copy(
            &sub_dir(&dirs[1], fin).join("blk_2_7.meta"),
            &sub_dir(&dirs[0], fin).join("blk_2_8.meta"),
        );
        for order in [dirs.clone(), vec![dirs[1].clone(), dirs[0].clone()]] {
            let store = BlockStore::open(&order, 0).unwrap();
            let one = store.get(1).unwrap();
            assert_eq!((one.state, one.gen_stamp), (fin, 7));
            let two = store.get(2).unwrap();
            assert_eq!((two.state, two.gen_stamp), (fin, 8));
            assert_eq!(order[two.dir], dirs[0]);
        }
    }

    /// `data` copied to a page-aligned address (as `transfer` receives it).
    fn aligned(data: &[u8]) -> (Vec<u8>, usize) {
        let mut v = Vec::with_capacity(data.len() + DIRECT_ALIGN);
        let pad = (DIRECT_ALIGN - v.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        v.resize(pad, 0);
        v.extend_from_slice(data);
        (v, pad)
    }

    #[test]
    fn direct_and_buffered_writes_mix_in_one_replica() {
        let dir = tempfile::tempdir().unwrap();
        for direct in [true, false] {
            let store = BlockStore::open(&[dir.path().to_path_buf()], 0)
                .unwrap()
                .with_direct_io(direct);
            let id = 20 + direct as u64;
            let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
            let mut w = store.create_rbw(block(id)).unwrap();
            // Aligned packets (direct), a chunk-sized one that leaves the
            // offset unaligned (buffered), an aligned-length packet at that
            // offset (buffered), then a short tail.
            let cuts = [0, 65_536, 131_072, 131_584, 135_680, 200_000];
            for win in cuts.windows(2) {
                let piece = &data[win[0]..win[1]];
                let (buf, pad) = aligned(piece);
                w.append(win[0] as u64, &buf[pad..], &checksums(piece))
                    .unwrap();
                assert_eq!(store.visible_len(id).unwrap().1, win[1] as u64);
            }
            let b = store.finalize(w, true).unwrap();
            assert_eq!(b.len, 200_000);
            store.verify(&b).unwrap();
            let mut r = store.open_read(&b).unwrap();
            assert_eq!(r.read_verified(0, 200_000).unwrap(), data);
            // Reads that start and end off the 4 KiB grid, and at the end.
            for (off, len) in [(4095, 70_000), (512, 4096), (196_000, 10_000), (199_999, 1)] {
                let want = &data[off..(off + len).min(data.len())];
                assert_eq!(
                    r.read_verified(off as u64, len).unwrap(),
                    want,
                    "{off}+{len}"
                );
            }
            let (start, bytes, sums) = r.read_raw(4095, READ_WINDOW).unwrap();
            assert_eq!((start, bytes.len(), sums.len()), (3584, 196_416, 384));
        }
        // A replica being written, reopened at an unaligned length (a
        // rebuilt pipeline), takes aligned packets.
        let store = BlockStore::open(&[dir.path().to_path_buf()], 0).unwrap();
        let first = vec![3u8; 4096];
        let mut w = store.create_rbw(block(30)).unwrap();
        w.append(0, &first, &checksums(&first)).unwrap();
        drop(w);
        let data = vec![9u8; 16_384];
        let mut w = store.reopen_rbw(30, 7, 8, 512).unwrap();
        w.append(512, &data, &checksums(&data)).unwrap();
        let b = store.finalize(w, false).unwrap();
        assert_eq!(b.len, 512 + 16_384);
        store.verify(&b).unwrap();
    }

    #[test]
    fn bad_packets_are_refused_and_flipped_bytes_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(&[dir.path().to_path_buf()], 0).unwrap();
        let mut w = store.create_rbw(block(5)).unwrap();
        let data = vec![1u8; 1024];
        let mut sums = checksums(&data);
        assert_eq!(
            w.append(512, &data, &sums).unwrap_err().code,
            Code::InvalidArgument
        );
        sums[1] ^= 1;
        assert_eq!(w.append(0, &data, &sums).unwrap_err().code, Code::Corrupt);
        assert_eq!(w.len(), 0, "nothing written");
        w.append(0, &data, &checksums(&data)).unwrap();
        let b = store.finalize(w, true).unwrap();
        // Flip a byte in the stored block file.
        let path = dir.path().join("current/finalized/blk_5");
        let mut bytes = fs::read(&path).unwrap();
        bytes[600] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert_eq!(store.verify(&b).unwrap_err().code, Code::Corrupt);
        let mut r = store.open_read(&b).unwrap();
        assert!(r.read_verified(0, 512).is_ok(), "the first chunk is intact");
        assert_eq!(r.read_verified(512, 10).unwrap_err().code, Code::Corrupt);
        // A newer stamp cannot be read from an older replica.
        let newer = BlockRec { gen_stamp: 8, ..b };
        assert_eq!(store.open_read(&newer).unwrap_err().code, Code::Corrupt);
        // A rebuilt pipeline replaces an older replica being written.
        assert_eq!(
            store.create_rbw(block(5)).unwrap_err().code,
            Code::AlreadyExists
        );
        let w = store.create_rbw(newer).unwrap();
        assert_eq!(store.get(5).unwrap().gen_stamp, 8);
        drop(w);
    }

    #[test]
    fn a_replica_reopens_at_a_new_stamp_cut_to_the_agreed_length() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(&[dir.path().to_path_buf()], 0).unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut w = store.create_rbw(block(9)).unwrap();
        w.append(0, &data, &checksums(&data)).unwrap();
        drop(w); // the writer died
        assert_eq!(store.disk_len(9).unwrap().1, 3000);
        assert_eq!(store.report()[0].0.len, 3000);
        // Not chunk-aligned and not everything: refused, nothing changed.
        assert!(store.reopen_rbw(9, 7, 8, 1000).is_err());
        assert!(store.reopen_rbw(9, 8, 9, 1024).is_err(), "stale replica");
        let mut w = store.reopen_rbw(9, 7, 8, 1024).unwrap();
        w.append(1024, &data[1024..2048], &checksums(&data[1024..2048]))
            .unwrap();
        let b = store.finalize(w, true).unwrap();
        assert_eq!((b.gen_stamp, b.len), (8, 2048));
        let mut r = store.open_read(&b).unwrap();
        assert_eq!(r.read_verified(0, 4096).unwrap(), &data[..2048]);
        // Lease recovery of a finalized replica: cut to its whole length.
        let w = store.reopen_rbw(9, 8, 10, 2048).unwrap();
        let b = store.finalize(w, true).unwrap();
        assert_eq!((b.gen_stamp, b.len), (10, 2048));
        drop(store);
        let store = BlockStore::open(&[dir.path().to_path_buf()], 0).unwrap();
        assert_eq!(store.get(9).unwrap().gen_stamp, 10);
        store.verify(&b).unwrap();
    }
}
