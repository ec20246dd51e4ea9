//! The edit log and checkpoint images.
//!
//! Every namespace change is an [`Edit`] with a transaction id (txid). The
//! namenode appends it to the log's buffer while it still holds the
//! namespace lock (so the log's order is the order edits were applied) and,
//! after letting go of the lock, waits for the txid to be durable before it
//! answers. One writer thread writes and fsyncs whatever has piled up in the
//! meantime: group commit, one fsync for many edits.
//!
//! Storage sits behind the [`Journal`] trait. [`LocalJournal`] keeps
//! segments in a directory, as HDFS's `current/` does:
//! `edits_<first>-<last>` (finalized) and `edits_inprogress_<first>`; a
//! quorum journal implements the same trait later. A segment starts with
//! its format's header ([`SEGMENT_FORMAT`]: magic and version), then each
//! record is framed as `[len: u32 LE][crc32c: u32 LE][postcard (txid,
//! edit)]`, so a record torn by a crash is recognised and dropped: it was
//! never acknowledged.
//!
//! The open segment is filled with zeros to the next MiB past its records,
//! as HDFS preallocates its edit files: an fsync of a write inside the
//! file's size need not also write the inode, which appending would on
//! every sync (on this project's ext4 test disk that second write made
//! each fsync about half as slow again). A zero length ends the records,
//! and a finalized segment is cut to its last record.
//!
//! Images (`image_<txid>`, [`IMAGE_FORMAT`]) hold the whole namespace as of
//! a txid, written to a temporary file, fsynced, then renamed. A segment
//! or image of a format version this build does not read is refused with
//! an error naming the version: never misread.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use hstack_daemon::format::{decode_body, encode_body, Format, FormatError, HEADER_LEN};

use crate::error::{Code, FsError, FsResult};
use crate::namespace::{Edit, Image};

/// An edit log segment file: this header, then framed records.
pub const SEGMENT_FORMAT: Format = Format {
    magic: *b"HSTKEDIT",
    what: "edit log segment",
    version: 1,
    oldest: 1,
};

/// A namespace image file: this header, the image, its crc32c.
pub const IMAGE_FORMAT: Format = Format {
    magic: *b"HSTKFSIM",
    what: "namespace image",
    version: 1,
    oldest: 1,
};

/// One stored run of edits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub first: u64,
    /// `None` while in progress.
    pub last: Option<u64>,
}

/// Where the edit log lives. Called from the log's writer thread (writes)
/// and at start-up (reads); implementations may block.
pub trait Journal: Send + 'static {
    /// Makes every stored segment finalized (an in-progress one left by a
    /// crash is cut at its last whole record) and lists them by txid.
    fn recover(&mut self) -> io::Result<Vec<Segment>>;
    /// Every edit with txid ≥ `from`, in order.
    fn read_from(&self, from: u64) -> io::Result<Vec<(u64, Edit)>>;
    /// The edits `from..=to`, read from finalized segments only, so it may
    /// run while the writer appends to the open one (the checkpointer).
    fn read_finalized(&self, from: u64, to: u64) -> io::Result<Vec<(u64, Edit)>>;
    fn start_segment(&mut self, first: u64) -> io::Result<()>;
    /// Appends framed records to the open segment (not yet durable).
    fn write(&mut self, records: &[u8]) -> io::Result<()>;
    /// Makes everything written durable.
    fn sync(&mut self) -> io::Result<()>;
    fn finalize_segment(&mut self, first: u64, last: u64) -> io::Result<()>;
    /// Drops finalized segments that end before `txid`.
    fn purge_before(&mut self, txid: u64) -> io::Result<()>;
}

/// Segments as files in one directory.
pub struct LocalJournal {
    dir: PathBuf,
    open: Option<OpenSegment>,
}

struct OpenSegment {
    first: u64,
    file: File,
    /// Bytes of records written.
    len: u64,
    /// Bytes in the file: records, then zeros.
    filled: u64,
}

/// How far ahead of its records an open segment is zero-filled.
const PREFILL: u64 = 1 << 20;

impl LocalJournal {
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            open: None,
        })
    }

    fn inprogress(&self, first: u64) -> PathBuf {
        self.dir.join(format!("edits_inprogress_{first:019}"))
    }

    fn finalized(&self, first: u64, last: u64) -> PathBuf {
        self.dir.join(format!("edits_{first:019}-{last:019}"))
    }

    fn list(&self) -> io::Result<Vec<(Segment, PathBuf)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(first) = name.strip_prefix("edits_inprogress_") {
                if let Ok(first) = first.parse() {
                    out.push((Segment { first, last: None }, e.path()));
                }
            } else if let Some(range) = name.strip_prefix("edits_") {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(first), Ok(last)) = (a.parse(), b.parse()) {
                        out.push((
                            Segment {
                                first,
                                last: Some(last),
                            },
                            e.path(),
                        ));
                    }
                }
            }
        }
        out.sort_by_key(|(s, _)| s.first);
        Ok(out)
    }

    /// The edits `from..=to` in the segments that hold them (finalized
    /// ones only if asked).
    fn read(&self, from: u64, to: u64, finalized_only: bool) -> io::Result<Vec<(u64, Edit)>> {
        let mut out = Vec::new();
        for (seg, path) in self.list()? {
            let ends_before = seg.last.is_some_and(|l| l < from);
            if ends_before || seg.first > to || (finalized_only && seg.last.is_none()) {
                continue;
            }
            let (records, _) = read_records(&path, seg.last.is_none())?;
            out.extend(records.into_iter().filter(|(t, _)| (from..=to).contains(t)));
        }
        Ok(out)
    }
}

impl Journal for LocalJournal {
    fn recover(&mut self) -> io::Result<Vec<Segment>> {
        for (seg, path) in self.list()? {
            if seg.last.is_some() {
                continue;
            }
            let (records, good_len) = read_records(&path, true)?;
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(good_len)?;
            f.sync_all()?;
            match records.last() {
                None => fs::remove_file(&path)?,
                Some((last, _)) => {
                    let to = self.finalized(seg.first, *last);
                    fs::rename(&path, to)?;
                }
            }
        }
        sync_dir(&self.dir)?;
        Ok(self.list()?.into_iter().map(|(s, _)| s).collect())
    }

    fn read_from(&self, from: u64) -> io::Result<Vec<(u64, Edit)>> {
        self.read(from, u64::MAX, false)
    }

    fn read_finalized(&self, from: u64, to: u64) -> io::Result<Vec<(u64, Edit)>> {
        self.read(from, to, true)
    }

    fn start_segment(&mut self, first: u64) -> io::Result<()> {
        let path = self.inprogress(first);
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        f.write_all_at(&SEGMENT_FORMAT.header(), 0)?;
        sync_dir(&self.dir)?;
        self.open = Some(OpenSegment {
            first,
            file: f,
            len: HEADER_LEN as u64,
            filled: 0,
        });
        Ok(())
    }

    fn write(&mut self, records: &[u8]) -> io::Result<()> {
        let Some(seg) = &mut self.open else {
            return Err(io::Error::other("no open edit log segment"));
        };
        let end = seg.len + records.len() as u64;
        seg.file.write_all_at(records, seg.len)?;
        seg.len = end;
        if end >= seg.filled {
            // Zeros after the records, up to the next MiB past them.
            let to = (end + 1).next_multiple_of(PREFILL);
            let zeros = vec![0u8; (to - end) as usize];
            seg.file.write_all_at(&zeros, end)?;
            seg.filled = to;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        match &mut self.open {
            Some(seg) => seg.file.sync_data(),
            None => Ok(()),
        }
    }

    fn finalize_segment(&mut self, first: u64, last: u64) -> io::Result<()> {
        if let Some(seg) = self.open.take() {
            if seg.first != first {
                return Err(io::Error::other(format!(
                    "finalizing segment {first}, but {} is open",
                    seg.first
                )));
            }
            seg.file.set_len(seg.len)?;
            seg.file.sync_all()?;
        }
        let from = self.inprogress(first);
        if last < first {
            // Nothing was written to it.
            fs::remove_file(&from)?;
        } else {
            fs::rename(&from, self.finalized(first, last))?;
        }
        sync_dir(&self.dir)
    }

    fn purge_before(&mut self, txid: u64) -> io::Result<()> {
        for (seg, path) in self.list()? {
            if seg.last.is_some_and(|l| l < txid) {
                fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    hstack_daemon::sync_dir(dir)
}

/// Frames one record.
pub fn frame(txid: u64, edit: &Edit, out: &mut Vec<u8>) {
    let payload = encode_body(&(txid, edit));
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

fn format_error(path: &Path, e: FormatError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

/// The whole records of a segment file, and the length they cover with
/// the header (what follows is a torn or corrupt tail). An in-progress
/// segment whose header never reached the disk holds nothing; any other
/// segment without this format's header is refused.
fn read_records(path: &Path, in_progress: bool) -> io::Result<(Vec<(u64, Edit)>, u64)> {
    let mut r = BufReader::new(File::open(path)?);
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..])? {
            0 => break,
            n => got += n,
        }
    }
    if in_progress && header[..got].iter().all(|b| *b == 0) {
        return Ok((vec![], 0));
    }
    SEGMENT_FORMAT
        .check(&header[..got])
        .map_err(|e| format_error(path, e))?;
    let mut out = Vec::new();
    let mut good = HEADER_LEN as u64;
    loop {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 0 || len > 64 << 20 {
            // Zeros: the unwritten, prefilled rest of an open segment.
            break;
        }
        let mut payload = vec![0u8; len];
        match r.read_exact(&mut payload) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        if crc32c::crc32c(&payload) != crc {
            break;
        }
        match decode_body::<(u64, Edit)>(SEGMENT_FORMAT.what, &payload) {
            Ok(rec) => out.push(rec),
            // A record whose checksum holds but whose body does not decode
            // was written by a build that encodes edits otherwise: refuse,
            // rather than cut the log there.
            Err(e) => return Err(format_error(path, e)),
        }
        good += 8 + len as u64;
    }
    Ok((out, good))
}

enum Chunk {
    Records {
        bytes: Vec<u8>,
        last: u64,
    },
    /// Finalize the open segment (ending at `last`) and start one at `last + 1`.
    Roll {
        last: u64,
    },
}

struct State {
    queue: VecDeque<Chunk>,
    /// The txid the next edit gets.
    next_txid: u64,
    stopping: bool,
    /// The writer is asleep on `wake` (only then does `append` signal it:
    /// a condvar signal is a system call even with nobody waiting).
    idle: bool,
}

/// A txid mark (durable, finalized) that tasks wait for. Each waiter is
/// woken once, when the mark reaches its txid or the log fails. (A watch
/// channel woke every waiter on every fsync: with 64 writers waiting and a
/// handful of edits per fsync, most of those wake-ups found nothing to do,
/// and they cost more CPU than the fsync.)
struct Mark {
    inner: Mutex<MarkState>,
}

struct MarkState {
    at: u64,
    closed: bool,
    waiters: BTreeMap<u64, Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl Mark {
    fn new(at: u64) -> Self {
        Self {
            inner: Mutex::new(MarkState {
                at,
                closed: false,
                waiters: BTreeMap::new(),
            }),
        }
    }

    fn advance(&self, to: u64) {
        let reached = {
            let mut m = self.inner.lock().expect("mark lock");
            if to <= m.at {
                return;
            }
            m.at = to;
            let later = m.waiters.split_off(&to.saturating_add(1));
            std::mem::replace(&mut m.waiters, later)
        };
        for tx in reached.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// Wakes every waiter with an error: the mark will not move again.
    fn close(&self) {
        let waiters = {
            let mut m = self.inner.lock().expect("mark lock");
            m.closed = true;
            std::mem::take(&mut m.waiters)
        };
        drop(waiters);
    }

    /// `true` once the mark is at `txid`, `false` if it never will be.
    async fn reached(&self, txid: u64) -> bool {
        let rx = {
            let mut m = self.inner.lock().expect("mark lock");
            if m.at >= txid {
                return true;
            }
            if m.closed {
                return false;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            m.waiters.entry(txid).or_default().push(tx);
            rx
        };
        rx.await.is_ok()
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The last durable txid.
    synced: Mark,
    /// The last txid of the newest finalized segment.
    rolled: Mark,
    failed: Mutex<Option<String>>,
}

/// The namenode's edit log, with group commit.
pub struct EditLog {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EditLog {
    /// Starts writing at `next_txid` in a new segment.
    pub fn start(mut journal: Box<dyn Journal>, next_txid: u64) -> FsResult<Self> {
        journal
            .start_segment(next_txid)
            .map_err(|e| crate::error::io("cannot start an edit log segment", e))?;
        let synced = Mark::new(next_txid - 1);
        let rolled = Mark::new(next_txid - 1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                next_txid,
                stopping: false,
                idle: false,
            }),
            wake: Condvar::new(),
            synced,
            rolled,
            failed: Mutex::new(None),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("edit-log-sync".into())
            .spawn(move || writer(s, journal, next_txid))
            .map_err(|e| crate::error::io("cannot start the edit log writer", e))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Logs an edit (not yet durable) and returns its txid. Call it while
    /// holding the lock under which the edit was applied.
    pub fn append(&self, edit: &Edit) -> u64 {
        let mut st = self.shared.state.lock().expect("edit log lock");
        let txid = st.next_txid;
        st.next_txid += 1;
        match st.queue.back_mut() {
            Some(Chunk::Records { bytes, last }) => {
                frame(txid, edit, bytes);
                *last = txid;
            }
            _ => {
                let mut bytes = Vec::with_capacity(256);
                frame(txid, edit, &mut bytes);
                st.queue.push_back(Chunk::Records { bytes, last: txid });
            }
        }
        let idle = st.idle;
        drop(st);
        if idle {
            self.shared.wake.notify_one();
        }
        txid
    }

    /// The last txid handed out.
    pub fn last_txid(&self) -> u64 {
        self.shared.state.lock().expect("edit log lock").next_txid - 1
    }

    /// Waits until `txid` is durable.
    pub async fn sync(&self, txid: u64) -> FsResult<()> {
        self.wait(&self.shared.synced, txid).await
    }

    /// Waits until the segments up to `txid` are finalized (see `roll`).
    pub async fn rolled(&self, txid: u64) -> FsResult<()> {
        self.wait(&self.shared.rolled, txid).await
    }

    async fn wait(&self, mark: &Mark, txid: u64) -> FsResult<()> {
        if mark.reached(txid).await {
            return Ok(());
        }
        Err(match self.failure() {
            Some(e) => FsError::new(Code::Io, format!("edit log failed: {e}")),
            None => FsError::new(Code::Io, "edit log stopped"),
        })
    }

    /// Ends the current segment after the last edit logged so far and
    /// starts the next; returns that last txid. `rolled` says when the
    /// segment is finalized.
    pub fn roll(&self) -> u64 {
        let mut st = self.shared.state.lock().expect("edit log lock");
        let last = st.next_txid - 1;
        st.queue.push_back(Chunk::Roll { last });
        drop(st);
        self.shared.wake.notify_one();
        last
    }

    pub fn failure(&self) -> Option<String> {
        self.shared.failed.lock().expect("lock").clone()
    }
}

impl Drop for EditLog {
    fn drop(&mut self) {
        self.shared.state.lock().expect("edit log lock").stopping = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Closes the marks when the writer ends, however it ends (a panic
/// included), so that no waiter is left waiting.
struct CloseMarks(Arc<Shared>);

impl Drop for CloseMarks {
    fn drop(&mut self) {
        self.0.synced.close();
        self.0.rolled.close();
    }
}

fn writer(shared: Arc<Shared>, mut journal: Box<dyn Journal>, first: u64) {
    let _close = CloseMarks(shared.clone());
    let mut seg_first = first;
    loop {
        let chunks: Vec<Chunk> = {
            let mut st = shared.state.lock().expect("edit log lock");
            while st.queue.is_empty() && !st.stopping {
                st.idle = true;
                st = shared.wake.wait(st).expect("edit log lock");
                st.idle = false;
            }
            if st.queue.is_empty() {
                break;
            }
            st.queue.drain(..).collect()
        };
        let mut res = Ok(());
        let mut durable = None;
        for c in chunks {
            res = match c {
                Chunk::Records { bytes, last } => {
                    let r = journal.write(&bytes);
                    durable = Some(last);
                    r
                }
                Chunk::Roll { last } => {
                    let r = journal
                        .sync()
                        .inspect(|_| shared.synced.advance(last))
                        .and_then(|_| journal.finalize_segment(seg_first, last))
                        .and_then(|_| journal.start_segment(last + 1));
                    seg_first = last + 1;
                    if r.is_ok() {
                        shared.rolled.advance(last);
                    }
                    r
                }
            };
            if res.is_err() {
                break;
            }
        }
        if res.is_ok() && durable.is_some() {
            res = journal.sync();
        }
        match res {
            Ok(()) => {
                if let Some(last) = durable {
                    shared.synced.advance(last);
                }
            }
            Err(e) => {
                tracing::error!("edit log write failed: {e}; no further edit will be acknowledged");
                *shared.failed.lock().expect("lock") = Some(e.to_string());
                return;
            }
        }
    }
}

pub fn image_path(dir: &Path, txid: u64) -> PathBuf {
    dir.join(format!("image_{txid:019}"))
}

/// Writes an image durably: temporary file, fsync, rename, fsync the
/// directory. Layout: [`IMAGE_FORMAT`]'s header, the image in postcard,
/// the crc32c of the postcard bytes.
pub fn save_image(dir: &Path, img: &Image) -> io::Result<PathBuf> {
    let body = encode_body(img);
    let path = image_path(dir, img.txid);
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::io::BufWriter::new(File::create(&tmp)?);
        f.write_all(&IMAGE_FORMAT.header())?;
        f.write_all(&body)?;
        f.write_all(&crc32c::crc32c(&body).to_le_bytes())?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Deletes images a crash left half-written (`image_<txid>.tmp`).
pub fn remove_unfinished_images(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("image_") && name.ends_with(".tmp") {
            tracing::info!(file = %name, "removing an image a crash left unfinished");
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Images in `dir`, newest first.
pub fn list_images(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(t) = name.strip_prefix("image_") {
            if let Ok(t) = t.parse::<u64>() {
                out.push((t, e.path()));
            }
        }
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.0));
    Ok(out)
}

pub fn load_image(path: &Path) -> FsResult<Image> {
    let bytes = fs::read(path).map_err(|e| crate::error::io(&path.display().to_string(), e))?;
    let corrupt = |why: &str| FsError::new(Code::Corrupt, format!("{}: {why}", path.display()));
    let (_, rest) = IMAGE_FORMAT.check(&bytes).map_err(|e| match e {
        // Not damage: data this build must not touch (a version it does
        // not read, or an image from before versioned formats). Skipping
        // it for an older image, or none, could start an empty namespace.
        FormatError::UnknownVersion { .. } | FormatError::NotThisFormat { .. } => {
            FsError::new(Code::Unimplemented, format!("{}: {e}", path.display()))
        }
        e => corrupt(&e.to_string()),
    })?;
    if rest.len() < 4 {
        return Err(corrupt("too short"));
    }
    let (body, crc) = rest.split_at(rest.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(corrupt("checksum mismatch"));
    }
    decode_body(IMAGE_FORMAT.what, body).map_err(|e| corrupt(&e.to_string()))
}

/// Keeps the newest `keep` images and drops the edits no kept image needs.
pub fn purge_old(dir: &Path, journal: &mut dyn Journal, keep: usize) -> io::Result<()> {
    let images = list_images(dir)?;
    if images.len() <= keep {
        return Ok(());
    }
    for (_, p) in &images[keep..] {
        fs::remove_file(p)?;
    }
    let oldest_kept = images[keep - 1].0;
    journal.purge_before(oldest_kept + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(i: u64) -> Edit {
        Edit::SetTimes {
            path: format!("/f{i}"),
            mtime: Some(i as i64),
            atime: None,
        }
    }

    #[tokio::test]
    async fn edits_are_durable_in_order_across_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = LocalJournal::open(dir.path()).unwrap();
        assert!(j.recover().unwrap().is_empty());
        let log = EditLog::start(Box::new(j), 1).unwrap();
        let mut last = 0;
        for i in 1..=50 {
            last = log.append(&edit(i));
            if i == 20 {
                assert_eq!(log.roll(), 20);
            }
        }
        assert_eq!(last, 50);
        log.sync(50).await.unwrap();
        // What a checkpoint reads while the writer goes on: the finalized
        // segments only, cut to the range asked for.
        log.rolled(20).await.unwrap();
        let reader = LocalJournal::open(dir.path()).unwrap();
        let done = reader.read_finalized(5, 20).unwrap();
        assert_eq!(
            done.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            (5..=20).collect::<Vec<_>>()
        );
        assert!(
            reader.read_finalized(21, 50).unwrap().is_empty(),
            "21.. still open"
        );
        // A finalized segment holds its records and nothing after them.
        let mut framed = Vec::new();
        for i in 1..=20 {
            frame(i, &edit(i), &mut framed);
        }
        let seg = dir.path().join(format!("edits_{:019}-{:019}", 1, 20));
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            (HEADER_LEN + framed.len()) as u64
        );
        drop(log);
        let mut j = LocalJournal::open(dir.path()).unwrap();
        let segs = j.recover().unwrap();
        assert_eq!(
            segs,
            vec![
                Segment {
                    first: 1,
                    last: Some(20)
                },
                Segment {
                    first: 21,
                    last: Some(50)
                }
            ]
        );
        let all = j.read_from(1).unwrap();
        assert_eq!(all.len(), 50);
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, (t, e))| *t == i as u64 + 1 && *e == edit(*t)));
        assert_eq!(j.read_from(30).unwrap()[0].0, 30);
    }

    #[tokio::test]
    async fn a_mark_wakes_each_waiter_once_it_is_reached_or_closed() {
        let mark = Arc::new(Mark::new(3));
        assert!(mark.reached(3).await, "already there");
        let wait = |t| {
            let m = mark.clone();
            tokio::spawn(async move { m.reached(t).await })
        };
        let (five, ten) = (wait(5), wait(10));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        mark.advance(7);
        assert!(five.await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!ten.is_finished(), "10 is not reached at 7");
        mark.advance(6);
        mark.close();
        assert!(!ten.await.unwrap(), "a closed mark fails its waiters");
        assert!(mark.reached(7).await, "what was reached stays reached");
        assert!(!mark.reached(8).await);
    }

    /// A journal in memory whose fsync fails once `fail` is set.
    struct Flaky {
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Journal for Flaky {
        fn recover(&mut self) -> io::Result<Vec<Segment>> {
            Ok(Vec::new())
        }
        fn read_from(&self, _: u64) -> io::Result<Vec<(u64, Edit)>> {
            Ok(Vec::new())
        }
        fn read_finalized(&self, _: u64, _: u64) -> io::Result<Vec<(u64, Edit)>> {
            Ok(Vec::new())
        }
        fn start_segment(&mut self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn write(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(io::Error::other("disk gone"));
            }
            Ok(())
        }
        fn finalize_segment(&mut self, _: u64, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn purge_before(&mut self, _: u64) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_its_waiters_and_every_later_one() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let log = EditLog::start(Box::new(Flaky { fail: fail.clone() }), 1).unwrap();
        for i in 1..=3 {
            log.append(&edit(i));
        }
        log.sync(3).await.unwrap();
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let t = log.append(&edit(4));
        let e = log.sync(t).await.unwrap_err();
        assert!(e.message.contains("edit log failed: disk gone"), "{e}");
        assert!(log.failure().is_some());
        log.sync(3).await.expect("what was durable stays durable");
        // Nothing writes any more: a later edit fails at once, not never.
        let t = log.append(&edit(5));
        let later = tokio::time::timeout(std::time::Duration::from_secs(5), log.sync(t));
        assert!(later.await.expect("does not hang").is_err());
        let rolled = tokio::time::timeout(std::time::Duration::from_secs(5), log.rolled(5));
        assert!(rolled.await.expect("does not hang").is_err());
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = LocalJournal::open(dir.path()).unwrap();
        j.start_segment(1).unwrap();
        let mut buf = Vec::new();
        for i in 1..=3 {
            frame(i, &edit(i), &mut buf);
        }
        let whole = buf.len();
        frame(4, &edit(4), &mut buf);
        // A crash in the middle of the fourth record.
        j.write(&buf[..whole + 5]).unwrap();
        j.sync().unwrap();
        drop(j);
        let open = dir.path().join(format!("edits_inprogress_{:019}", 1));
        assert_eq!(
            fs::metadata(&open).unwrap().len(),
            PREFILL,
            "the open segment is zero-filled ahead"
        );
        let mut j = LocalJournal::open(dir.path()).unwrap();
        let segs = j.recover().unwrap();
        assert_eq!(
            segs,
            vec![Segment {
                first: 1,
                last: Some(3)
            }]
        );
        assert_eq!(j.read_from(1).unwrap().len(), 3);
        let path = dir.path().join(format!("edits_{:019}-{:019}", 1, 3));
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            (HEADER_LEN + whole) as u64,
            "recovery cuts the torn record and the zeros"
        );
        // A flipped byte inside a record ends the readable log there.
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert_eq!(j.read_from(1).unwrap().len(), 2);
    }

    #[test]
    fn images_round_trip_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let ns = crate::namespace::Namespace::new("hdfs", "supergroup");
        let p = save_image(dir.path(), &ns.to_image()).unwrap();
        let img = load_image(&p).unwrap();
        assert_eq!(img.inodes.len(), 1);
        let mut bytes = fs::read(&p).unwrap();
        bytes[HEADER_LEN + 2] ^= 1;
        fs::write(&p, bytes).unwrap();
        assert_eq!(load_image(&p).unwrap_err().code, Code::Corrupt);
    }

    #[test]
    fn half_written_images_are_removed_and_finished_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ns = crate::namespace::Namespace::new("hdfs", "supergroup");
        let kept = save_image(dir.path(), &ns.into_image()).unwrap();
        let torn = image_path(dir.path(), 9).with_extension("tmp");
        fs::write(&torn, b"HSTKIMG1 cut short").unwrap();
        remove_unfinished_images(dir.path()).unwrap();
        assert!(!torn.exists());
        assert!(kept.exists());
        assert_eq!(list_images(dir.path()).unwrap().len(), 1);
    }
}
