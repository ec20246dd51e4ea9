//! The Raft log in RocksDB, with group commit.
//!
//! `append` writes the entries to RocksDB's memtable and WAL (readable at
//! once) and hands the flush callback to one flusher thread. The flusher
//! drains every callback waiting, fsyncs the WAL once, and completes them
//! all: one fsync covers every append that arrived while the last one ran,
//! which is how the log gets past the disk's fsyncs per second.
//!
//! The leader writes its own new entries in parallel with replicating them
//! (the Raft thesis, §10.2.1): openraft 0.9 waits for an append's callback
//! before it sends the entries to followers, so for entries this member
//! authored as the current leader the callback comes at once, and the fsync
//! follows. openraft then counts the leader in the quorum early; what keeps
//! the guarantee is the durable mark (`LogStore::durable`): the state
//! machine applies nothing (so no client is answered, no read sees it) and
//! the leader tells followers of no commit index beyond what its own disk
//! holds. Everything visible is on a majority of disks. Entries from another
//! leader, votes, truncations: all as before, fsynced before they count.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hstack_daemon::format::{decode_body, encode_body, Format, FormatError};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError, Vote};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use crate::metrics::CoordMetrics;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";
/// The store's format header (magic and version), written when it is
/// created; every value is postcard of that version.
const KEY_FORMAT: &[u8] = b"format";

/// The Raft log store (RocksDB: entries, vote, committed, purged).
pub(crate) const LOG_FORMAT: Format = Format {
    magic: *b"HSTKRLOG",
    what: "raft log",
    version: 1,
    oldest: 1,
};

/// The newest entries are also kept in memory, up to these bounds.
const TAIL_MAX_ENTRIES: usize = 4096;
const TAIL_MAX_BYTES: usize = 32 << 20;

/// WAL kept before the column families holding it are flushed.
const WAL_LIMIT: u64 = 128 << 20;

/// The committed log id is written to RocksDB at most this often. A stale
/// one only means re-applying a little more from the log after a restart.
const COMMITTED_SAVE_INTERVAL: Duration = Duration::from_millis(200);

/// The newest entry known to be on disk. `epoch` changes when the log is
/// truncated, so an fsync that began before cannot move the mark past the
/// cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    pub last: Option<LogId>,
    epoch: u64,
}

impl Durable {
    /// Whether the entry at `index` is on disk.
    pub fn covers(&self, index: u64) -> bool {
        self.last.is_some_and(|l| l.index >= index)
    }
}

/// One append, as the flusher sees it.
struct FlushReq {
    last: LogId,
    epoch: u64,
    /// openraft's callback, unless it was already called (the leader's own
    /// entries).
    done: Option<LogFlushed<TypeConfig>>,
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: Arc<Flusher>,
    durable: tokio::sync::watch::Sender<Durable>,
    /// The vote last saved, to tell the current leader's own appends.
    vote: Arc<Mutex<Option<Vote<NodeId>>>>,
    /// This member's id, when its own leader appends may be acknowledged
    /// before their fsync (see the module comment).
    parallel_append_as: Option<NodeId>,
    /// Appends written but not yet fsynced.
    unflushed: tokio::sync::watch::Sender<usize>,
    tail: Arc<Mutex<Tail>>,
    committed: Arc<Mutex<Committed>>,
}

/// The newest entries, contiguous by index. openraft reads every entry
/// back right after appending it, once per follower to replicate it and
/// once to apply it; serving those reads from here saves a RocksDB
/// iterator and a decode each. (The payload is shared, so a clone is
/// cheap.)
#[derive(Default)]
struct Tail {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, e: Entry, size: usize) {
        if let Some((last, _)) = self.entries.back() {
            if last.log_id.index + 1 != e.log_id.index {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        self.entries.push_back((e, size));
        self.bytes += size;
        while self.entries.len() > TAIL_MAX_ENTRIES || self.bytes > TAIL_MAX_BYTES {
            let Some((_, n)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= n;
        }
    }

    /// Drops every entry at or after `index`.
    fn truncate(&mut self, index: u64) {
        while let Some((e, n)) = self.entries.back() {
            if e.log_id.index < index {
                break;
            }
            self.bytes -= n;
            self.entries.pop_back();
        }
    }

    /// Drops every entry at or before `index`.
    fn purge(&mut self, index: u64) {
        while let Some((e, n)) = self.entries.front() {
            if e.log_id.index > index {
                break;
            }
            self.bytes -= n;
            self.entries.pop_front();
        }
    }

    /// The entries `start..end`, if all of them are here.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        let last = self.entries.back()?.0.log_id.index;
        if start < first || end > last + 1 {
            return None;
        }
        let from = (start - first) as usize;
        let to = end.saturating_sub(first) as usize;
        Some(
            self.entries
                .range(from..to.max(from))
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

/// The newest committed log id, and when it was last written to RocksDB.
#[derive(Default)]
struct Committed {
    latest: Option<LogId>,
    known: bool,
    saved_at: Option<Instant>,
}

/// The flusher thread and the way to it. When the last store handle goes,
/// the thread is told to stop and joined, so the database closes there and
/// then, never in a detached thread racing the process's exit (RocksDB
/// aborts if its mutexes are torn down under it).
struct Flusher {
    tx: Option<std::sync::mpsc::Sender<FlushReq>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl LogStore {
    pub fn open(dir: &Path, metrics: Option<CoordMetrics>) -> Result<Self, StorageError> {
        Self::open_with_wal_limit(dir, metrics, WAL_LIMIT)
    }

    fn open_with_wal_limit(
        dir: &Path,
        metrics: Option<CoordMetrics>,
        wal_limit: u64,
    ) -> Result<Self, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // The meta column family sees a few small writes and would never
        // fill its memtable, pinning every WAL file since its oldest
        // unflushed write (up to ~1 GiB by default, all replayed at
        // start). Past this much WAL, RocksDB flushes it.
        opts.set_max_total_wal_size(wal_limit);
        // Recovery replays the WAL up to the first damaged record: what
        // survives is always a prefix, so a committed marker or a vote
        // never outlives the entries written before it (RocksDB's
        // default, stated because the module's reasoning rests on it).
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
        let cfs = [CF_LOGS, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        let db = Arc::new(db);
        // What recovery found may have been in the page cache only (a
        // killed process, not a lost machine): make it durable, so the mark
        // can start at the last entry.
        db.flush_wal(true)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let (tx, rx) = std::sync::mpsc::channel::<FlushReq>();
        let (unflushed, _) = tokio::sync::watch::channel(0usize);
        let (durable, _) = tokio::sync::watch::channel(Durable::default());
        let fdb = db.clone();
        let fu = unflushed.clone();
        let fd = durable.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flusher(fdb, rx, fu, fd, metrics))
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let flusher = Arc::new(Flusher {
            tx: Some(tx),
            thread: Some(thread),
        });
        let store = Self {
            db,
            flusher,
            durable,
            vote: Arc::default(),
            parallel_append_as: None,
            unflushed,
            tail: Arc::default(),
            committed: Arc::default(),
        };
        store.check_format()?;
        *store.vote.lock().expect("vote lock") = store.get_meta(KEY_VOTE)?;
        let last = store.last_or_purged()?;
        store.durable.send_modify(|d| d.last = last);
        Ok(store)
    }

    /// Lets this member, as leader, write its own entries in parallel with
    /// replicating them (see the module comment). The caller must gate the
    /// state machine and the commit index it sends on `durable`.
    ///
    /// A saved vote that makes this member the leader is demoted to a
    /// candidate's vote for the same term. openraft 0.9 would otherwise
    /// resume leading that term at once, and after a power loss that took
    /// entries it had already sent, it would write different entries under
    /// the same log ids; followers holding the old ones see matching ids
    /// and keep them. As a candidate it must win a new term first.
    pub fn with_parallel_append(mut self, id: NodeId) -> Result<Self, StorageError> {
        self.parallel_append_as = Some(id);
        let vote = *self.vote.lock().expect("vote lock");
        if let Some(v) = vote {
            if v.is_committed() && v.leader_id.node_id == id {
                let demoted = Vote::new(v.leader_id.term, id);
                self.put_meta(KEY_VOTE, &demoted, true)?;
                *self.vote.lock().expect("vote lock") = Some(demoted);
                tracing::info!(
                    term = v.leader_id.term,
                    "was leader; restarting as a candidate"
                );
            }
        }
        Ok(self)
    }

    /// The newest entry on disk.
    pub fn durable(&self) -> tokio::sync::watch::Receiver<Durable> {
        self.durable.subscribe()
    }

    /// Whether `entries` are this member's own, appended as the leader of
    /// the vote it holds, so the append may count before its fsync.
    fn own_leader_entries<'a>(&self, mut entries: impl Iterator<Item = &'a Entry>) -> bool {
        let Some(me) = self.parallel_append_as else {
            return false;
        };
        let vote = self.vote.lock().expect("vote lock");
        let Some(vote) = vote.as_ref() else {
            return false;
        };
        vote.is_committed()
            && vote.leader_id.node_id == me
            && entries.all(|e| e.log_id.leader_id == vote.leader_id)
    }

    fn last_or_purged(&self) -> Result<Option<LogId>, StorageError> {
        match self.last_log_id()? {
            Some(l) => Ok(Some(l)),
            None => self.get_meta(KEY_PURGED),
        }
    }

    /// How many appends wait for their fsync. The leader's proposer hands
    /// Raft its next entry when this is 0, letting what arrives meanwhile
    /// join that entry: one entry per fsync.
    pub fn unflushed(&self) -> tokio::sync::watch::Receiver<usize> {
        self.unflushed.subscribe()
    }

    fn logs(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(CF_LOGS)
            .expect("column family created at open")
    }

    fn meta(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(CF_META)
            .expect("column family created at open")
    }

    /// Stamps a new store with this build's format; refuses a store of a
    /// version this build does not read, or one from before versions
    /// (values it would misread).
    fn check_format(&self) -> Result<(), StorageError> {
        let read = |e| io_err(ErrorSubject::Store, ErrorVerb::Read, e);
        let stored = self.db.get_cf(self.meta(), KEY_FORMAT).map_err(read)?;
        match stored {
            Some(h) => {
                LOG_FORMAT
                    .check(&h)
                    .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
                Ok(())
            }
            None => {
                let empty = self
                    .db
                    .iterator_cf(self.logs(), IteratorMode::Start)
                    .next()
                    .is_none()
                    && self
                        .db
                        .iterator_cf(self.meta(), IteratorMode::Start)
                        .next()
                        .is_none();
                if !empty {
                    return Err(io_err(
                        ErrorSubject::Store,
                        ErrorVerb::Read,
                        FormatError::UnknownVersion {
                            what: LOG_FORMAT.what,
                            found: 0,
                            oldest: LOG_FORMAT.oldest,
                            newest: LOG_FORMAT.version,
                            hint: " (it has no format stamp: an hstack from before versioned formats wrote it)",
                        },
                    ));
                }
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                self.db
                    .put_cf_opt(self.meta(), KEY_FORMAT, LOG_FORMAT.header(), &wo)
                    .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
            }
        }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let v = self
            .db
            .get_cf(self.meta(), key)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        match v {
            None => Ok(None),
            Some(b) => decode_body(LOG_FORMAT.what, &b)
                .map(Some)
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e)),
        }
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        v: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let bytes = encode_body(v);
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db
            .put_cf_opt(self.meta(), key, bytes, &wo)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    /// Writes `entries` to the memtable and the WAL, unsynced, and to the
    /// tail. Returns the last one's id and whether it may count as written
    /// before its fsync (`own_leader_entries`); None if there were none.
    fn write_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Option<(LogId, bool)>, StorageError> {
        let mut batch = WriteBatch::default();
        let mut kept: Vec<(Entry, usize)> = Vec::new();
        for e in entries {
            let bytes = encode_body(&e);
            batch.put_cf(self.logs(), key(e.log_id.index), &bytes);
            kept.push((e, bytes.len()));
        }
        let Some(last) = kept.last().map(|(e, _)| e.log_id) else {
            return Ok(None);
        };
        let early = self.own_leader_entries(kept.iter().map(|(e, _)| e));
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db
            .write_opt(batch, &wo)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let mut tail = self.tail.lock().expect("tail lock");
        for (e, n) in kept {
            tail.push(e, n);
        }
        Ok(Some((last, early)))
    }

    /// Hands an append to the flusher: durable (and `done` called) after
    /// the next fsync.
    fn queue_flush(
        &self,
        last: LogId,
        done: Option<LogFlushed<TypeConfig>>,
    ) -> Result<(), StorageError> {
        self.unflushed.send_modify(|u| *u += 1);
        let epoch = self.durable.borrow().epoch;
        self.flusher
            .tx
            .as_ref()
            .expect("present until the flusher is dropped")
            .send(FlushReq { last, epoch, done })
            .map_err(|e| {
                io_err(
                    ErrorSubject::Logs,
                    ErrorVerb::Write,
                    std::io::Error::other(e.to_string()),
                )
            })
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut it = self.db.iterator_cf(self.logs(), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(Err(e)) => Err(io_err(ErrorSubject::Logs, ErrorVerb::Read, e)),
            Some(Ok((_, v))) => {
                let e: Entry = decode_body(LOG_FORMAT.what, &v)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(e.log_id))
            }
        }
    }
}

fn flusher(
    db: Arc<DB>,
    rx: std::sync::mpsc::Receiver<FlushReq>,
    unflushed: tokio::sync::watch::Sender<usize>,
    durable: tokio::sync::watch::Sender<Durable>,
    metrics: Option<CoordMetrics>,
) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let started = Instant::now();
        let res = db.flush_wal(true).map_err(std::io::Error::other);
        if let Some(m) = &metrics {
            m.log_fsync_seconds.observe(started.elapsed().as_secs_f64());
            m.log_fsync_batch.observe(waiting.len() as f64);
        }
        if let Err(e) = &res {
            if waiting.iter().any(|r| r.done.is_none()) {
                // Raft already counts these entries as written; carrying on
                // could acknowledge what the disk does not hold.
                panic!("raft log fsync failed after a parallel append: {e}");
            }
        } else {
            durable.send_if_modified(|d| {
                let before = d.last;
                for r in &waiting {
                    // By index: within an epoch the log only grows, and a
                    // mark left by a purge may carry a newer term.
                    if r.epoch == d.epoch && !d.covers(r.last.index) {
                        d.last = Some(r.last);
                    }
                }
                d.last != before
            });
        }
        let n = waiting.len();
        for r in waiting {
            if let Some(cb) = r.done {
                let r = match &res {
                    Ok(()) => Ok(()),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                };
                cb.log_io_completed(r);
            }
        }
        unflushed.send_modify(|u| *u = u.saturating_sub(n));
    }
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => *x + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Some(*x + 1),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        if let Some(end) = end {
            if let Some(hit) = self.tail.lock().expect("tail lock").get(start, end) {
                return Ok(hit);
            }
        }
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.logs(),
            IteratorMode::From(&key(start), Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().expect("8-byte keys"));
            if !range.contains(&idx) {
                break;
            }
            let e: Entry = decode_body(LOG_FORMAT.what, &v)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            out.push(e);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.get_meta(KEY_PURGED)?,
            last_log_id: self.last_or_purged()?,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, true)?;
        *self.vote.lock().expect("vote lock") = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced, and written at most every COMMITTED_SAVE_INTERVAL:
        // an older value only means re-applying more after a restart.
        let write = {
            let mut c = self.committed.lock().expect("committed lock");
            c.latest = committed;
            c.known = true;
            let due = c
                .saved_at
                .is_none_or(|t| t.elapsed() >= COMMITTED_SAVE_INTERVAL);
            if due {
                c.saved_at = Some(Instant::now());
            }
            due
        };
        if write {
            self.put_meta(KEY_COMMITTED, &committed, false)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        {
            let c = self.committed.lock().expect("committed lock");
            if c.known {
                return Ok(c.latest);
            }
        }
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let Some((last, early)) = self.write_entries(entries)? else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        if early {
            self.queue_flush(last, None)?;
            callback.log_io_completed(Ok(()));
        } else {
            self.queue_flush(last, Some(callback))?;
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Memory first, so a concurrent reader never finds there what the
        // database no longer has.
        self.tail.lock().expect("tail lock").truncate(log_id.index);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.logs(), key(log_id.index), key(u64::MAX));
        self.db
            .write(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        // Rare (a follower whose log disagrees with a new leader's): sync
        // what is left, so the durable mark can restart from its end, and
        // let no fsync begun before the cut move the mark past it.
        self.db
            .flush_wal(true)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let last = self.last_or_purged()?;
        self.durable.send_modify(|d| {
            d.epoch += 1;
            d.last = last;
        });
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Purged entries are applied or in an installed snapshot: at least
        // that far is durable (a snapshot install purges a log that may
        // end before it, or hold other entries, without a truncate).
        self.durable.send_if_modified(|d| {
            let raise = !d.covers(log_id.index);
            if raise {
                d.last = Some(log_id);
            }
            raise
        });
        self.tail.lock().expect("tail lock").purge(log_id.index);
        self.put_meta(KEY_PURGED, &log_id, false)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.logs(), key(0), key(log_id.index + 1));
        self.db
            .write(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::sm::StateMachine;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().expect("temp dir");
            let metrics = CoordMetrics::new(&prometheus::Registry::new());
            let log = LogStore::open(&dir.path().join("log"), Some(metrics.clone()))?;
            let sm = StateMachine::open(&dir.path().join("sm"), metrics)?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's storage conformance suite against the RocksDB log store.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).expect("storage suite");
    }

    fn blank(index: u64) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    #[test]
    fn tail_serves_only_what_it_holds() {
        let mut t = Tail::default();
        for i in 5..10 {
            t.push(blank(i), 10);
        }
        let idx =
            |v: Option<Vec<Entry>>| v.map(|v| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>());
        assert_eq!(idx(t.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(idx(t.get(7, 8)), Some(vec![7]));
        assert_eq!(idx(t.get(7, 7)), Some(vec![]));
        assert_eq!(idx(t.get(4, 6)), None, "4 was never here");
        assert_eq!(idx(t.get(9, 11)), None, "10 is not here yet");
        t.truncate(8);
        assert_eq!(idx(t.get(5, 9)), None);
        assert_eq!(idx(t.get(5, 8)), Some(vec![5, 6, 7]));
        t.purge(5);
        assert_eq!(idx(t.get(5, 6)), None);
        assert_eq!(t.bytes, 20);
        // A gap (after a truncate the database handled alone) starts afresh.
        t.push(blank(20), 10);
        assert_eq!(idx(t.get(6, 8)), None);
        assert_eq!(idx(t.get(20, 21)), Some(vec![20]));
        assert_eq!(t.bytes, 10);
        for i in 21..21 + TAIL_MAX_ENTRIES as u64 {
            t.push(blank(i), 1);
        }
        assert_eq!(t.entries.len(), TAIL_MAX_ENTRIES);
        assert_eq!(idx(t.get(20, 21)), None, "the oldest entry made room");
    }

    fn wal_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// One small write to the meta column family must not pin the WAL:
    /// past the limit, RocksDB flushes what holds the oldest WAL file and
    /// deletes it, so the WAL (replayed in full at every start) stays near
    /// the limit however long the member runs.
    #[tokio::test]
    async fn meta_writes_do_not_pin_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 1 << 20;
        let mut log = LogStore::open_with_wal_limit(dir.path(), None, limit).unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        let value = vec![7u8; 4096];
        for i in 0..2048u64 {
            // 8 MiB of log entries, far under the logs' memtable size: only
            // the WAL limit can make RocksDB flush and drop old WAL files.
            log.db.put_cf(log.logs(), key(i), &value).unwrap();
        }
        // RocksDB checks the limit on each write and flushes in the
        // background, so under a busy machine the WAL may run past it for a
        // while; later writes (one every 50 ms here) bring it back.
        let mut wal = wal_bytes(dir.path());
        for i in 0..200u64 {
            if wal <= 3 * limit {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            log.db.put_cf(log.logs(), key(10_000 + i), &value).unwrap();
            wal = wal_bytes(dir.path());
        }
        assert!(
            wal <= 3 * limit,
            "{wal} bytes of WAL kept with a {limit}-byte limit"
        );
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    }

    fn entry(term: u64, leader: NodeId, index: u64) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(term, leader), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    /// Only entries this member wrote as the leader of the vote it holds may
    /// count before their fsync; a follower's appends never do.
    #[tokio::test]
    async fn only_the_leaders_own_entries_skip_the_fsync_wait() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("a"), None)
            .unwrap()
            .with_parallel_append(1)
            .unwrap();
        let own = [entry(2, 1, 7)];
        assert!(!log.own_leader_entries(own.iter()), "no vote yet");
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        assert!(
            !log.own_leader_entries(own.iter()),
            "a candidate, not a leader"
        );
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        assert!(log.own_leader_entries(own.iter()));
        assert!(
            !log.own_leader_entries([entry(1, 1, 6), entry(2, 1, 7)].iter()),
            "an entry from an earlier term of this member, sent back by a later leader"
        );
        log.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
        assert!(
            !log.own_leader_entries([entry(3, 2, 8)].iter()),
            "a follower of member 2"
        );
        assert!(!log.own_leader_entries(own.iter()));

        let mut plain = LogStore::open(&dir.path().join("b"), None).unwrap();
        plain.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        assert!(!plain.own_leader_entries(own.iter()), "not enabled");
    }

    async fn until(d: &mut tokio::sync::watch::Receiver<Durable>, f: impl Fn(&Durable) -> bool) {
        tokio::time::timeout(std::time::Duration::from_secs(10), d.wait_for(|x| f(x)))
            .await
            .expect("durable mark moved in time")
            .expect("store alive");
    }

    /// The durable mark follows the fsyncs, drops back to the end of the
    /// log on a truncation, and an fsync queued before the cut cannot move
    /// it past the cut.
    #[tokio::test]
    async fn durable_mark_follows_fsyncs_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path(), None)
            .unwrap()
            .with_parallel_append(1)
            .unwrap();
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        let mut d = log.durable();
        assert_eq!(d.borrow().last, None);

        let (last, early) = log.write_entries((1..=5).map(blank)).unwrap().unwrap();
        assert_eq!((last.index, early), (5, true));
        log.queue_flush(last, None).unwrap();
        until(&mut d, |x| x.covers(5)).await;

        let before_cut = d.borrow().epoch;
        let (last, _) = log.write_entries((6..=8).map(blank)).unwrap().unwrap();
        log.truncate(blank(6).log_id).await.unwrap();
        assert_eq!(d.borrow().last, Some(blank(5).log_id));
        let mut unflushed = log.unflushed();
        log.unflushed.send_modify(|u| *u += 1);
        let stale = FlushReq {
            last,
            epoch: before_cut,
            done: None,
        };
        log.flusher.tx.as_ref().unwrap().send(stale).unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            unflushed.wait_for(|n| *n == 0),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            d.borrow().last,
            Some(blank(5).log_id),
            "stale fsync ignored"
        );

        let (last, _) = log.write_entries((6..=9).map(blank)).unwrap().unwrap();
        log.queue_flush(last, None).unwrap();
        until(&mut d, |x| x.covers(9)).await;
        drop((d, unflushed, log));

        // Reopened, the mark starts at the last entry.
        let log = reopen(dir.path()).await;
        assert_eq!(log.durable().borrow().last, Some(blank(9).log_id));
    }

    /// A member that was leader restarts as a candidate of its term, so it
    /// cannot resume leading it (and reuse log ids it may have lost).
    #[tokio::test]
    async fn a_leaders_vote_is_demoted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path(), None).unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        drop(log);
        let mut log = reopen(dir.path()).await.with_parallel_append(2).unwrap();
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(Vote::new_committed(3, 1)),
            "another member's leadership is kept"
        );
        drop(log);
        let mut log = reopen(dir.path()).await.with_parallel_append(1).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        assert!(!log.own_leader_entries([entry(3, 1, 1)].iter()));
        drop(log);
        let mut log = reopen(dir.path()).await;
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(Vote::new(3, 1)),
            "saved, not only cached"
        );
    }

    /// A purge (a snapshot installed over a shorter or different log)
    /// raises the mark to the purged id; later fsyncs move it by index.
    #[tokio::test]
    async fn a_purge_raises_the_durable_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path(), None).unwrap();
        let mut d = log.durable();
        let (last, _) = log.write_entries((1..=3).map(blank)).unwrap().unwrap();
        log.queue_flush(last, None).unwrap();
        until(&mut d, |x| x.covers(3)).await;
        let snap = entry(5, 2, 50).log_id;
        log.purge(snap).await.unwrap();
        assert_eq!(d.borrow().last, Some(snap));
        log.purge(blank(10).log_id).await.unwrap();
        assert_eq!(d.borrow().last, Some(snap), "never lowered");
        let (last, _) = log
            .write_entries((51..=52).map(|i| entry(5, 2, i)))
            .unwrap()
            .unwrap();
        log.queue_flush(last, None).unwrap();
        until(&mut d, |x| x.covers(52)).await;
    }

    /// Applying is what makes an entry visible: it waits for the disk.
    #[tokio::test]
    async fn nothing_is_applied_before_it_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = CoordMetrics::new(&prometheus::Registry::new());
        let (mark, rx) = tokio::sync::watch::channel(Durable::default());
        let mut sm = StateMachine::open(dir.path(), metrics)
            .unwrap()
            .gated_on(rx);
        let mut probe = sm.clone();
        let mut apply = Box::pin(sm.apply(vec![blank(1), blank(2)]));
        let wait = std::time::Duration::from_millis(100);
        assert!(tokio::time::timeout(wait, &mut apply).await.is_err());
        mark.send_modify(|d| d.last = Some(blank(1).log_id));
        assert!(tokio::time::timeout(wait, &mut apply).await.is_err());
        assert_eq!(probe.applied_state().await.unwrap().0, None);
        mark.send_modify(|d| d.last = Some(blank(2).log_id));
        apply.await.unwrap();
        assert_eq!(
            probe.applied_state().await.unwrap().0,
            Some(blank(2).log_id)
        );
    }

    /// Reopens the store in `dir` once the last handle's flusher let go.
    async fn reopen(dir: &Path) -> LogStore {
        for _ in 0..100 {
            match LogStore::open(dir, None) {
                Ok(l) => return l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        panic!("could not reopen {}", dir.display());
    }

    use crate::testing::sample_entries;

    async fn write_sample(log: &mut LogStore) {
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.write_entries(sample_entries()).unwrap();
        log.db.flush_wal(true).unwrap();
        log.save_committed(Some(sample_entries()[2].log_id))
            .await
            .unwrap();
        log.db.flush_wal(true).unwrap();
    }

    async fn check_sample(log: &mut LogStore) {
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(Vote::new_committed(2, 1))
        );
        let got = log.try_get_log_entries(1..4).await.unwrap();
        assert_eq!(format!("{got:?}"), format!("{:?}", sample_entries()));
        assert_eq!(
            log.read_committed().await.unwrap(),
            Some(sample_entries()[2].log_id)
        );
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(sample_entries()[2].log_id));
    }

    /// Entries, the vote and the committed index come back after the store
    /// is closed and opened again.
    #[tokio::test]
    async fn entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path(), None).unwrap();
        write_sample(&mut log).await;
        drop(log);
        // The flusher thread lets go of the database once it sees the store gone.
        let mut log = reopen(dir.path()).await;
        check_sample(&mut log).await;
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().to_string();
            // RocksDB's own logs and lock: not part of the data.
            if name == "LOCK" || name.starts_with("LOG") {
                continue;
            }
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }

    /// The raft log of format 1, as kept in `tests/fixtures/formats/`
    /// (`HSTACK_BLESS=1` writes it when missing), reads back exactly.
    #[tokio::test]
    async fn a_raft_log_of_format_1_reads_back() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/formats/raft-log-v1");
        if !fixture.exists() {
            assert!(
                std::env::var_os("HSTACK_BLESS").is_some(),
                "fixture {} is missing; run `HSTACK_BLESS=1 cargo test -p hstack-coord of_format_1` to write it",
                fixture.display()
            );
            let dir = tempfile::tempdir().unwrap();
            let mut log = LogStore::open(dir.path(), None).unwrap();
            write_sample(&mut log).await;
            drop(log);
            let log = reopen(dir.path()).await;
            drop(log);
            std::thread::sleep(std::time::Duration::from_millis(200));
            copy_dir(dir.path(), &fixture);
        }
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture, dir.path());
        let mut log = reopen(dir.path()).await;
        check_sample(&mut log).await;
        drop(log);
        // A store stamped with another version is refused, by name.
        let other = tempfile::tempdir().unwrap();
        copy_dir(&fixture, other.path());
        {
            let db = DB::open_cf(&Options::default(), other.path(), [CF_LOGS, CF_META]).unwrap();
            let mut h = LOG_FORMAT.header();
            h[8..].copy_from_slice(&9u32.to_le_bytes());
            db.put_cf(db.cf_handle(CF_META).unwrap(), KEY_FORMAT, h)
                .unwrap();
        }
        let e = LogStore::open(other.path(), None).err().expect("refused");
        assert!(e.to_string().contains("version 9"), "{e}");
        // And one without a stamp (an older hstack's) is not misread.
        let old = tempfile::tempdir().unwrap();
        copy_dir(&fixture, old.path());
        {
            let db = DB::open_cf(&Options::default(), old.path(), [CF_LOGS, CF_META]).unwrap();
            db.delete_cf(db.cf_handle(CF_META).unwrap(), KEY_FORMAT)
                .unwrap();
        }
        let e = LogStore::open(old.path(), None).err().expect("refused");
        assert!(e.to_string().contains("no format stamp"), "{e}");
    }
}
