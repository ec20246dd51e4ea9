//! The Raft state machine: the znode tree in memory, local watches, and
//! snapshots on disk (`DIR/snapshot.bin`, replaced atomically).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hstack_daemon::format::Format;
use hstack_proto::coord as pb;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::Code;
use crate::logstore::Durable;
use crate::metrics::CoordMetrics;
use crate::tree::DataTree;
use crate::types::{
    Applied, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, Txn, TypeConfig,
};
use crate::watch::Watches;

const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The snapshot file: its meta and its payload.
pub(crate) const SNAPSHOT_FORMAT: Format = Format {
    magic: *b"HSTKCSNP",
    what: "coordination snapshot file",
    version: 1,
    oldest: 1,
};

/// A snapshot's payload (the tree), in the file and as sent to members.
pub(crate) const PAYLOAD_FORMAT: Format = Format {
    magic: *b"HSTKCTRE",
    what: "coordination snapshot",
    // 2: nodes carry ACLs (a version-1 tree reads back with every node open).
    version: 2,
    oldest: 1,
};

pub struct SmInner {
    pub tree: DataTree,
    pub watches: Watches,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

pub struct SmShared {
    inner: Mutex<SmInner>,
    /// The last log id of the snapshot on disk; held while one is written, so
    /// a build and an install never race and an older never replaces a newer.
    on_disk: Mutex<Option<LogId>>,
    applied: watch::Sender<u64>,
    dir: PathBuf,
    metrics: CoordMetrics,
}

#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    tree: DataTree,
}

#[derive(Deserialize)]
struct SnapshotPayloadV1 {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    tree: crate::tree::DataTreeV1,
}

/// A snapshot payload of any version this build reads.
fn decode_payload(bytes: &[u8]) -> Result<SnapshotPayload, hstack_daemon::format::FormatError> {
    let (version, body) = PAYLOAD_FORMAT.check(bytes)?;
    if version == 1 {
        let v1: SnapshotPayloadV1 = hstack_daemon::format::decode_body(PAYLOAD_FORMAT.what, body)?;
        return Ok(SnapshotPayload {
            last_applied: v1.last_applied,
            membership: v1.membership,
            tree: v1.tree.into(),
        });
    }
    hstack_daemon::format::decode_body(PAYLOAD_FORMAT.what, body)
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Cheap handle to the shared state machine.
#[derive(Clone)]
pub struct StateMachine {
    pub shared: Arc<SmShared>,
    /// When set, nothing is applied before the local log holds it on disk:
    /// the leader counts itself in the quorum before its own fsync (see
    /// `logstore`), and applying is what makes an entry visible.
    durable: Option<watch::Receiver<Durable>>,
}

impl StateMachine {
    /// Opens the state machine in `dir`, starting from the snapshot there, if any.
    pub fn open(dir: &Path, metrics: CoordMetrics) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let mut inner = SmInner {
            tree: DataTree::default(),
            watches: Watches::default(),
            last_applied: None,
            membership: StoredMembership::default(),
        };
        if let Some(file) = read_snapshot_file(dir)? {
            let payload = decode_payload(&file.data).map_err(|e| sm_err(ErrorVerb::Read, e))?;
            inner.tree = payload.tree;
            inner.last_applied = payload.last_applied;
            inner.membership = payload.membership;
        }
        let applied_index = inner.last_applied.map(|l| l.index).unwrap_or(0);
        let (applied, _) = watch::channel(applied_index);
        let on_disk = Mutex::new(inner.last_applied);
        Ok(Self {
            shared: Arc::new(SmShared {
                inner: Mutex::new(inner),
                on_disk,
                applied,
                dir: dir.to_path_buf(),
                metrics,
            }),
            durable: None,
        })
    }

    /// Applies each entry only once `durable` covers it.
    pub fn gated_on(mut self, durable: watch::Receiver<Durable>) -> Self {
        self.durable = Some(durable);
        self
    }
}

impl SmShared {
    pub fn lock(&self) -> MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the log index `index` is applied here.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|v| *v >= index).await;
    }
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn read_snapshot_file(dir: &Path) -> Result<Option<SnapshotFile>, StorageError> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => SNAPSHOT_FORMAT
            .decode(&bytes)
            .map(Some)
            .map_err(|e| sm_err(ErrorVerb::Read, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(sm_err(ErrorVerb::Read, e)),
    }
}

impl SmShared {
    /// Replaces the snapshot on disk unless it already holds a newer one.
    fn save_snapshot(&self, file: &SnapshotFile) -> Result<(), StorageError> {
        let mut on_disk = self.on_disk.lock().unwrap_or_else(|p| p.into_inner());
        if file.meta.last_log_id < *on_disk {
            return Ok(());
        }
        write_snapshot_file(&self.dir, file)?;
        *on_disk = file.meta.last_log_id;
        Ok(())
    }
}

fn write_snapshot_file(dir: &Path, file: &SnapshotFile) -> Result<(), StorageError> {
    let bytes = SNAPSHOT_FORMAT.encode(file);
    hstack_daemon::write_atomic(&dir.join(SNAPSHOT_FILE), &bytes)
        .map_err(|e| sm_err(ErrorVerb::Write, e))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = {
            let inner = self.shared.lock();
            let payload = SnapshotPayload {
                last_applied: inner.last_applied,
                membership: inner.membership.clone(),
                tree: inner.tree.clone(),
            };
            drop(inner);
            let data = PAYLOAD_FORMAT.encode(&payload);
            let id = match payload.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, data.len()),
                None => format!("0-0-{}", data.len()),
            };
            let meta = SnapshotMeta {
                last_log_id: payload.last_applied,
                last_membership: payload.membership,
                snapshot_id: id,
            };
            (meta, data)
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            data,
        };
        self.shared.save_snapshot(&file)?;
        self.shared.metrics.snapshots_total.inc();
        tracing::info!(snapshot = %meta.snapshot_id, bytes = file.data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(file.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let inner = self.shared.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Applied>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let (Some(durable), Some(last)) = (self.durable.as_mut(), entries.last()) {
            let index = last.log_id.index;
            if !durable.borrow().covers(index) {
                self.shared.metrics.apply_waits_for_fsync_total.inc();
                durable
                    .wait_for(|d| d.covers(index))
                    .await
                    .map_err(|e| sm_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))?;
            }
        }
        let mut out = Vec::new();
        let mut inner = self.shared.lock();
        let inner = &mut *inner;
        let mut txns_applied = 0u64;
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(vec![]),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(vec![]);
                }
                EntryPayload::Normal(batch) => {
                    let mut results = Vec::with_capacity(batch.txns.len());
                    let mut changes = Vec::new();
                    for txn in batch.txns.iter() {
                        changes.clear();
                        let (zxid, result) = inner.tree.apply(txn, batch.time_ms, &mut changes);
                        inner.watches.trigger(&changes, zxid);
                        if let Txn::CloseSession {
                            session_id,
                            expired: true,
                        } = txn
                        {
                            self.shared.metrics.sessions_expired_total.inc();
                            if let Some(sink) = inner.watches.sink(*session_id).cloned() {
                                let err = pb::SessionError {
                                    code: Code::SessionExpired as i32,
                                    message: format!("session {session_id:#x} expired"),
                                };
                                let _ = sink.send(pb::ServerFrame {
                                    frame: Some(pb::server_frame::Frame::Error(err)),
                                });
                                inner.watches.detach(*session_id, &sink);
                            }
                        }
                        results.push(Applied { zxid, result });
                    }
                    txns_applied += batch.txns.len() as u64;
                    out.push(results);
                }
            }
        }
        let m = &self.shared.metrics;
        m.txns_applied_total.inc_by(txns_applied);
        m.znodes.set(inner.tree.node_count() as i64);
        m.sessions.set(inner.tree.session_count() as i64);
        m.watches.set(inner.watches.count() as i64);
        if let Some(l) = inner.last_applied {
            m.last_applied_index.set(l.index as i64);
            self.shared.applied.send_replace(l.index);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let payload = decode_payload(&data).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        self.shared.save_snapshot(&SnapshotFile {
            meta: meta.clone(),
            data,
        })?;
        let mut inner = self.shared.lock();
        let old_zxid = inner.tree.last_zxid();
        inner.tree = payload.tree;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        let inner = &mut *inner;
        inner.watches.after_snapshot(&inner.tree, old_zxid);
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        self.shared.applied.send_replace(index);
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(read_snapshot_file(&self.shared.dir)?.map(|f| Snapshot {
            meta: f.meta,
            snapshot: Box::new(Cursor::new(f.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;

    use super::*;
    use crate::testing::sample_entries;

    fn metrics() -> CoordMetrics {
        CoordMetrics::new(&prometheus::Registry::new())
    }

    fn check(sm: &StateMachine) {
        let inner = sm.shared.lock();
        let (data, stat) = inner.tree.get_data("/app").unwrap();
        assert_eq!((data, stat.version), (vec![0, 255, 7], 1));
        assert!(
            inner.tree.get_data("/c").is_err(),
            "the container was reaped"
        );
        let (children, _) = inner.tree.children("/").unwrap();
        assert!(
            children.iter().any(|c| c.starts_with("gone")),
            "{children:?}"
        );
        assert_eq!(inner.last_applied, Some(sample_entries()[2].log_id));
        assert!(inner.membership.membership().get_node(&1).is_some());
    }

    /// A coordination snapshot of format 1, as kept in
    /// `tests/fixtures/formats/` (`HSTACK_BLESS=1` writes it when
    /// missing), opens to the same tree; another version is refused.
    #[tokio::test]
    async fn a_snapshot_of_format_1_reads_back() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/formats/coord-snapshot-v1");
        if !fixture.exists() {
            assert!(
                std::env::var_os("HSTACK_BLESS").is_some(),
                "fixture {} is missing; run `HSTACK_BLESS=1 cargo test -p hstack-coord of_format_1` to write it",
                fixture.display()
            );
            let dir = tempfile::tempdir().unwrap();
            let mut sm = StateMachine::open(dir.path(), metrics()).unwrap();
            sm.apply(sample_entries()).await.unwrap();
            let mut b = sm.get_snapshot_builder().await;
            b.build_snapshot().await.unwrap();
            std::fs::copy(dir.path().join(SNAPSHOT_FILE), &fixture).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&fixture, dir.path().join(SNAPSHOT_FILE)).unwrap();
        let mut sm = StateMachine::open(dir.path(), metrics()).unwrap();
        check(&sm);
        // The payload as a member catching up receives it.
        let snap = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        let other = tempfile::tempdir().unwrap();
        let mut follower = StateMachine::open(other.path(), metrics()).unwrap();
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        check(&follower);
        // Another version is refused, by name.
        let mut bytes = std::fs::read(&fixture).unwrap();
        bytes[8..12].copy_from_slice(&5u32.to_le_bytes());
        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join(SNAPSHOT_FILE), bytes).unwrap();
        let e = StateMachine::open(bad.path(), metrics())
            .err()
            .expect("refused");
        assert!(e.to_string().contains("version 5"), "{e}");
    }
}
