//! Where the resource manager keeps application state, behind one trait
//! (a later issue keeps it in the coordination service for an
//! active/standby pair): the submission, and how far it got. Two
//! implementations today, held to one conformance suite: `MemoryStore`
//! (lost at restart) and `FileStore` (one versioned file per application
//! under `data_dir/state`, replaced atomically).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hstack_daemon::format::{Format, FormatError};
use serde::{Deserialize, Serialize};

use crate::records::{AppId, Resource};

/// An application as stored: enough to show it after a restart and to
/// start it again if it had not finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredApp {
    pub id: AppId,
    pub name: String,
    pub queue: String,
    pub user: String,
    pub app_type: String,
    pub priority: i32,
    pub am_resource: Resource,
    pub am_command: String,
    pub am_env: BTreeMap<String, String>,
    pub max_attempts: u32,
    pub submit_ms: u64,
    /// Attempts started so far.
    pub attempts: u32,
    /// Of those, the failures that count against `max_attempts` (a master
    /// lost with its node, preempted, or cut short by a resource-manager
    /// restart does not count). Format version 2 on.
    pub failures: u32,
    /// `None` while it runs; else how it ended.
    pub outcome: Option<Outcome>,
}

/// Version 1's record: no `failures`, so every earlier attempt counted.
#[derive(Deserialize)]
struct StoredAppV1 {
    id: AppId,
    name: String,
    queue: String,
    user: String,
    app_type: String,
    priority: i32,
    am_resource: Resource,
    am_command: String,
    am_env: BTreeMap<String, String>,
    max_attempts: u32,
    submit_ms: u64,
    attempts: u32,
    outcome: Option<Outcome>,
}

impl From<StoredAppV1> for StoredApp {
    fn from(v: StoredAppV1) -> StoredApp {
        StoredApp {
            id: v.id,
            name: v.name,
            queue: v.queue,
            user: v.user,
            app_type: v.app_type,
            priority: v.priority,
            am_resource: v.am_resource,
            am_command: v.am_command,
            am_env: v.am_env,
            max_attempts: v.max_attempts,
            submit_ms: v.submit_ms,
            failures: v.attempts.saturating_sub(1),
            attempts: v.attempts,
            outcome: v.outcome,
        }
    }
}

/// Reads one stored record of any version this build reads.
pub fn decode_app(bytes: &[u8]) -> Result<StoredApp, FormatError> {
    let (version, body) = APP_FORMAT.check(bytes)?;
    let what = APP_FORMAT.what;
    match version {
        1 => hstack_daemon::format::decode_body::<StoredAppV1>(what, body).map(StoredApp::from),
        _ => hstack_daemon::format::decode_body(what, body),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// FINISHED, FAILED or KILLED.
    pub state: String,
    /// SUCCEEDED, FAILED, KILLED or UNDEFINED.
    pub final_status: String,
    pub diagnostics: String,
    pub finish_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: {source}")]
    Format {
        path: String,
        #[source]
        source: FormatError,
    },
}

/// The resource manager's state store.
pub trait StateStore: Send + Sync {
    /// Every stored application, by id.
    fn load(&self) -> Result<Vec<StoredApp>, StoreError>;
    /// Stores `app`, replacing what was stored under its id. Durable when
    /// it returns.
    fn put(&self, app: &StoredApp) -> Result<(), StoreError>;
    fn remove(&self, id: AppId) -> Result<(), StoreError>;
}

#[derive(Default)]
pub struct MemoryStore {
    apps: Mutex<BTreeMap<AppId, StoredApp>>,
}

impl StateStore for MemoryStore {
    fn load(&self) -> Result<Vec<StoredApp>, StoreError> {
        Ok(self.lock().values().cloned().collect())
    }

    fn put(&self, app: &StoredApp) -> Result<(), StoreError> {
        self.lock().insert(app.id, app.clone());
        Ok(())
    }

    fn remove(&self, id: AppId) -> Result<(), StoreError> {
        self.lock().remove(&id);
        Ok(())
    }
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<AppId, StoredApp>> {
        self.apps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The on-disk format of one stored application.
pub const APP_FORMAT: Format = Format {
    magic: *b"HSTKRMAP",
    what: "resource manager application record",
    version: 2,
    oldest: 1,
};

pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: AppId) -> PathBuf {
        self.dir.join(id.to_string())
    }
}

fn io(p: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: p.display().to_string(),
        message: e.to_string(),
    }
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Vec<StoredApp>, StoreError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        for e in entries {
            let e = e.map_err(|e| io(&self.dir, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            // Temporary files of an interrupted write are not records.
            if !name.starts_with("application_") || name.contains('.') {
                continue;
            }
            let p = e.path();
            let bytes = std::fs::read(&p).map_err(|e| io(&p, e))?;
            let app = decode_app(&bytes).map_err(|source| StoreError::Format {
                path: p.display().to_string(),
                source,
            })?;
            out.push(app);
        }
        out.sort_by_key(|a| a.id);
        Ok(out)
    }

    fn put(&self, app: &StoredApp) -> Result<(), StoreError> {
        let p = self.path(app.id);
        hstack_daemon::write_atomic(&p, &APP_FORMAT.encode(app)).map_err(|e| io(&p, e))
    }

    fn remove(&self, id: AppId) -> Result<(), StoreError> {
        let p = self.path(id);
        match std::fs::remove_file(&p) {
            Ok(()) => hstack_daemon::sync_dir(&self.dir).map_err(|e| io(&self.dir, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&p, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(seq: u32) -> StoredApp {
        StoredApp {
            id: AppId {
                cluster_ts: 1_700_000_000_000,
                seq,
            },
            name: "wordcount".into(),
            queue: "root.default".into(),
            user: "alice".into(),
            app_type: "MAPREDUCE".into(),
            priority: 0,
            am_resource: Resource::new(1024, 1),
            am_command: "hstack app shell-am --containers 2".into(),
            am_env: [("A".to_string(), "1".to_string())].into(),
            max_attempts: 2,
            submit_ms: 1_700_000_000_500,
            attempts: 1,
            failures: 0,
            outcome: None,
        }
    }

    /// What every store must do.
    fn conformance(store: &dyn StateStore) {
        assert!(store.load().unwrap().is_empty());
        let mut a = sample(1);
        store.put(&a).unwrap();
        store.put(&sample(2)).unwrap();
        assert_eq!(store.load().unwrap(), vec![a.clone(), sample(2)]);
        // Replaced, not added.
        a.attempts = 2;
        a.outcome = Some(Outcome {
            state: "FINISHED".into(),
            final_status: "SUCCEEDED".into(),
            diagnostics: String::new(),
            finish_ms: 1_700_000_009_000,
        });
        store.put(&a).unwrap();
        assert_eq!(store.load().unwrap(), vec![a.clone(), sample(2)]);
        store.remove(sample(2).id).unwrap();
        store.remove(sample(2).id).unwrap();
        assert_eq!(store.load().unwrap(), vec![a]);
    }

    #[test]
    fn the_memory_store_conforms() {
        conformance(&MemoryStore::default());
    }

    #[test]
    fn the_file_store_conforms_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        conformance(&s);
        let again = FileStore::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap().len(), 1);
        // A damaged record is refused by name, not misread.
        std::fs::write(dir.path().join("application_1_0009"), b"HSTKRMAP\x09\0\0\0").unwrap();
        let e = again.load().unwrap_err().to_string();
        assert!(
            e.contains("application_1_0009") && e.contains("version 9"),
            "{e}"
        );
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/formats")
            .join(name)
    }

    fn failed_sample() -> StoredApp {
        let mut app = sample(7);
        app.outcome = Some(Outcome {
            state: "FAILED".into(),
            final_status: "FAILED".into(),
            diagnostics: "attempt 2 of 2 failed".into(),
            finish_ms: 1_700_000_100_000,
        });
        app
    }

    /// Version 1's fixture (tests/fixtures/formats/rm-app-v1) still reads,
    /// its earlier attempts counted as failures.
    #[test]
    fn the_v1_fixture_reads_back() {
        let bytes = std::fs::read(fixture("rm-app-v1")).expect("the v1 fixture exists");
        assert_eq!(bytes[8], 1, "a version 1 record");
        let read = decode_app(&bytes).unwrap();
        assert_eq!(read, failed_sample());
    }

    /// The current version's fixture reads as it was written.
    /// `HSTACK_BLESS=1` writes it if missing.
    #[test]
    fn the_v2_fixture_reads_back() {
        let p = fixture("rm-app-v2");
        let mut app = failed_sample();
        app.attempts = 3;
        app.failures = 1;
        if !p.exists() && std::env::var_os("HSTACK_BLESS").is_some() {
            std::fs::write(&p, APP_FORMAT.encode(&app)).unwrap();
        }
        let bytes = std::fs::read(&p).expect("the fixture exists (HSTACK_BLESS=1 writes it)");
        assert_eq!(decode_app(&bytes).unwrap(), app);
    }
}
