//! The namenode (`hstack namenode`): the namespace and its edit log, the
//! block map, leases, safe mode, and the monitors that keep replicas where
//! they should be.
//!
//! One lock guards the namespace, the block map and the leases together (as
//! HDFS's FSNamesystem lock does). A change is applied to the namespace
//! (which checks everything first), appended to the edit log and followed
//! in the block map under that lock; the RPC answers only after the edit
//! log has made it durable, outside the lock, so concurrent changes share
//! one fsync.

mod config;
mod footprint;
mod groups;
mod metrics;
mod monitor;
mod ops;
mod rpc;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;

pub use config::NamenodeConfig;
pub use footprint::{memory_footprint, Footprint};
use groups::Groups;
use hstack_daemon::{AtPath, Launch, StartError};
use metrics::NnMetrics;

use crate::blockmap::{BlockMap, Command, Expected, NodeIdx};
use crate::editlog::{self, EditLog, Journal, LocalJournal};
use crate::error::{Code, FsError, FsResult};
use crate::namespace::{BlockRec, Caller, Edit, Effects, InodeId, Namespace};

/// The lease holder name the namenode takes a file over with while it
/// recovers the file's last block.
pub const RECOVERY_HOLDER: &str = "hstack-namenode-lease-recovery";

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A client's lease: the files it has open for writing.
pub(crate) struct Lease {
    renewed: Instant,
    files: BTreeSet<InodeId>,
}

/// A lease recovery under way.
pub(crate) struct Recovering {
    /// When it (last) started: one that does not finish starts again.
    pub since: Instant,
    /// The generation stamp its primary datanode was given; a commit of any
    /// other stamp (a stale primary's, anyone else's) is refused. `None`
    /// while no replica is reachable to recover.
    pub gen_stamp: Option<u64>,
}

pub(crate) struct SafeMode {
    /// Entered by an administrator: only an administrator ends it.
    manual: bool,
    /// The start-up safe mode, until enough blocks are reported.
    startup: bool,
    /// When the threshold was first reached.
    reached: Option<Instant>,
}

pub(crate) struct State {
    pub ns: Namespace,
    pub bm: BlockMap,
    pub leases: HashMap<String, Lease>,
    /// Files whose lease the namenode is recovering.
    pub recovering: HashMap<InodeId, Recovering>,
    /// Pipelines of blocks being written (where lease recovery looks).
    pub uc_locs: HashMap<u64, Vec<NodeIdx>>,
    pub safe: SafeMode,
    pub rng: StdRng,
    pub racks: HashMap<String, String>,
}

/// What the namespace says a block should be, for the block map.
pub(crate) fn expected(ns: &Namespace, id: u64, inode: InodeId) -> Option<Expected> {
    let f = ns.file(inode)?;
    let pos = f.blocks.iter().rposition(|b| b.id == id)?;
    Some(Expected {
        block: f.blocks[pos],
        replication: f.replication,
        under_construction: f.uc.is_some() && pos + 1 == f.blocks.len(),
    })
}

impl State {
    /// Applies `edit` (checked for `caller`), logs it, and makes the block
    /// map and leases follow. On error nothing changed and nothing is logged.
    pub fn apply(
        &mut self,
        log: &EditLog,
        edit: Edit,
        caller: Option<&Caller>,
    ) -> FsResult<Effects> {
        let fx = self.ns.apply(&edit, caller)?;
        self.ns.txid = log.append(&edit);
        match &edit {
            Edit::Create { client, .. } => {
                if let Some(id) = fx.inode {
                    self.lease_add(client, id);
                }
            }
            Edit::AddBlock { inode, block, .. } => self.bm.add_block(block.id, *inode),
            Edit::ReassignLease { inode, client } => {
                for l in self.leases.values_mut() {
                    l.files.remove(inode);
                }
                if client != RECOVERY_HOLDER {
                    self.lease_add(client, *inode);
                }
            }
            _ => {}
        }
        for id in &fx.removed_blocks {
            self.uc_locs.remove(id);
            // Ids are never reused, so any stamp of this id can go.
            self.bm.remove_block(BlockRec {
                id: *id,
                gen_stamp: u64::MAX,
                len: 0,
            });
        }
        for inode in &fx.closed {
            for l in self.leases.values_mut() {
                l.files.remove(inode);
            }
            self.recovering.remove(inode);
            if let Some(f) = self.ns.file(*inode) {
                for b in &f.blocks {
                    self.uc_locs.remove(&b.id);
                }
            }
        }
        self.leases.retain(|_, l| !l.files.is_empty());
        Ok(fx)
    }

    fn lease_add(&mut self, client: &str, inode: InodeId) {
        let l = self.leases.entry(client.to_string()).or_insert(Lease {
            renewed: Instant::now(),
            files: BTreeSet::new(),
        });
        l.renewed = Instant::now();
        l.files.insert(inode);
    }

    pub fn expected_fn(&self) -> impl Fn(u64, InodeId) -> Option<Expected> + '_ {
        |id, inode| expected(&self.ns, id, inode)
    }

    /// (total, safe): blocks of closed files and complete blocks, and how
    /// many of them have a reported replica.
    pub fn safe_counts(&self) -> (u64, u64) {
        let mut total = 0;
        let mut safe = 0;
        for (id, info) in &self.bm.blocks {
            let Some(e) = expected(&self.ns, *id, info.inode) else {
                continue;
            };
            if e.under_construction {
                continue;
            }
            total += 1;
            if !info.replicas.is_empty() {
                safe += 1;
            }
        }
        (total, safe)
    }

    pub fn in_safe_mode(&self) -> bool {
        self.safe.manual || self.safe.startup
    }

    pub fn node_idx(&self, id: &str) -> FsResult<NodeIdx> {
        self.bm.idx_of(id).ok_or_else(|| {
            FsError::new(
                Code::DatanodeNotRegistered,
                format!("datanode {id} is not registered (register first)"),
            )
        })
    }
}

/// Which of an active/standby pair this namenode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HaState {
    Active,
    Standby,
}

pub struct Namenode {
    pub cfg: NamenodeConfig,
    /// Names this namespace; datanodes of another cluster are refused.
    pub cluster_id: String,
    st: Mutex<State>,
    log: EditLog,
    metrics: NnMetrics,
    name_dir: PathBuf,
    /// The txid of the newest checkpoint and when it was taken.
    last_checkpoint: Mutex<(u64, Instant)>,
    /// Callers' groups, as this host knows them.
    groups: Groups,
    /// A standby serves no reads or writes (`ops::Namenode::gate`). No
    /// namenode is a standby until high availability comes.
    standby: AtomicBool,
}

impl Namenode {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().expect("namenode lock")
    }

    /// Runs `f` under the lock (it applies and logs edits), then waits for
    /// what it logged to be durable. Edits logged before an error are
    /// synced too: they were applied.
    pub(crate) async fn write<R>(
        &self,
        f: impl FnOnce(&mut State, &EditLog) -> FsResult<R>,
    ) -> FsResult<R> {
        let (r, txid) = {
            let mut st = self.lock();
            if let Some(e) = self.log.failure() {
                // Not Unavailable: this lasts until an operator acts.
                return Err(FsError::new(
                    Code::Io,
                    format!("the edit log failed ({e}); this namenode accepts no changes"),
                ));
            }
            let r = f(&mut st, &self.log);
            (r, st.ns.txid)
        };
        self.log.sync(txid).await?;
        r
    }

    /// The error a change gets in safe mode.
    pub(crate) fn check_not_safe(&self, st: &State, what: &str) -> FsResult<()> {
        if !st.in_safe_mode() {
            return Ok(());
        }
        let reason = if st.safe.manual {
            "it was put in safe mode by an administrator; `hstack admin safemode leave` ends it"
                .to_string()
        } else {
            let (total, safe) = st.safe_counts();
            format!(
                "it is starting: {safe} of {total} blocks reported, safe mode ends at {:.1}%",
                self.cfg.safemode_threshold * 100.0
            )
        };
        let e = FsError::new(
            Code::SafeMode,
            format!("Cannot {what}: the namenode is in safe mode: {reason}"),
        );
        // The start-up safe mode ends by itself: clients wait it out.
        Err(if st.safe.manual { e } else { e.retry_later() })
    }
}

/// The cluster id kept in `dir/VERSION`, made up the first time.
fn cluster_id(dir: &Path) -> Result<String, StartError> {
    let f = dir.join("VERSION");
    if let Ok(s) = std::fs::read_to_string(&f) {
        if let Some(id) = s.lines().find_map(|l| l.strip_prefix("cluster_id=")) {
            let id = id.trim();
            if id.is_empty() {
                return Err(StartError::storage(&f, "has an empty cluster_id"));
            }
            return Ok(id.to_string());
        }
        return Err(StartError::storage(&f, "has no cluster_id line"));
    }
    let id = format!("CID-{:016x}", rand::random::<u64>());
    hstack_daemon::write_atomic(&f, format!("cluster_id={id}\n").as_bytes()).at(&f)?;
    tracing::info!(cluster = %id, "new cluster id");
    Ok(id)
}

/// Loads the newest readable image and replays the edits after it.
fn load(dir: &Path, cfg: &NamenodeConfig) -> anyhow::Result<(Namespace, LocalJournal)> {
    std::fs::create_dir_all(dir)?;
    editlog::remove_unfinished_images(dir)?;
    let mut journal = LocalJournal::open(dir)?;
    journal.recover()?;
    let ns = namespace_on_disk(dir, cfg, |from| journal.read_from(from))?;
    tracing::info!(
        txid = ns.txid,
        inodes = ns.inode_count(),
        "namespace loaded"
    );
    Ok((ns, journal))
}

/// The newest readable image in `dir` with the edits `read(image txid + 1)`
/// gives replayed on it.
fn namespace_on_disk(
    dir: &Path,
    cfg: &NamenodeConfig,
    read: impl FnOnce(u64) -> std::io::Result<Vec<(u64, Edit)>>,
) -> anyhow::Result<Namespace> {
    let superuser = cfg.superuser_name();
    let mut ns = None;
    for (txid, path) in editlog::list_images(dir)? {
        match editlog::load_image(&path) {
            Ok(img) => {
                tracing::info!(txid, path = %path.display(), "loaded image");
                ns = Some(Namespace::from_image(img, &superuser, &cfg.supergroup)?);
                break;
            }
            // An image of a format this build does not read: stop, rather
            // than start from an older one and leave it behind.
            Err(e) if e.code == Code::Unimplemented => anyhow::bail!("{e}"),
            Err(e) => tracing::warn!("skipping image {}: {e}", path.display()),
        }
    }
    let mut ns = ns.unwrap_or_else(|| Namespace::new(&superuser, &cfg.supergroup));
    let edits = read(ns.txid + 1)?;
    let n = edits.len();
    for (txid, edit) in edits {
        if txid != ns.txid + 1 {
            anyhow::bail!(
                "edit log gap: expected transaction {}, found {txid} (a segment is missing from {})",
                ns.txid + 1,
                dir.display()
            );
        }
        ns.apply(&edit, None)
            .map_err(|e| anyhow::anyhow!("replaying transaction {txid} ({edit:?}): {e}"))?;
        ns.txid = txid;
    }
    tracing::debug!(replayed = n, txid = ns.txid, "edits replayed");
    Ok(ns)
}

/// `hstack namenode`.
pub struct NamenodeRole;

impl hstack_daemon::Role for NamenodeRole {
    const NAME: &'static str = "namenode";
    type Config = NamenodeConfig;
    type State = Arc<Namenode>;

    fn id(_cfg: &NamenodeConfig) -> Result<String, StartError> {
        Ok("nn".into())
    }

    fn announce_dir(cfg: &NamenodeConfig) -> PathBuf {
        cfg.name_path()
    }

    async fn start(cfg: NamenodeConfig, launch: &mut Launch) -> Result<Arc<Namenode>, StartError> {
        start(cfg, launch).await
    }
}

/// Loads the namespace, binds and serves; returns once it listens.
async fn start(cfg: NamenodeConfig, launch: &mut Launch) -> Result<Arc<Namenode>, StartError> {
    let dir = cfg.name_path().join("current");
    let rpc_listener = launch.bind("rpc", "rpc_addr", &cfg.rpc_addr).await?;
    let (ns, journal) = {
        let (load_dir, cfg) = (dir.clone(), cfg.clone());
        tokio::task::spawn_blocking(move || load(&load_dir, &cfg))
            .await
            .map_err(|e| StartError::failed("loading the namespace", e))?
            .at(&dir)?
    };
    let txid = ns.txid;
    let cluster = cluster_id(&dir)?;
    let log = EditLog::start(Box::new(journal), txid + 1).at(&dir)?;
    let mut bm = BlockMap::default();
    // Nothing a datanode reports is deleted until safe mode ends.
    bm.postpone_deletes = true;
    let mut leases: HashMap<String, Lease> = HashMap::new();
    for (inode, f) in ns.files() {
        for b in &f.blocks {
            bm.add_block(b.id, inode);
        }
        if let Some(uc) = &f.uc {
            // The writer gets a full lease period to come back.
            leases
                .entry(uc.client.clone())
                .or_insert(Lease {
                    renewed: Instant::now(),
                    files: BTreeSet::new(),
                })
                .files
                .insert(inode);
        }
    }
    let racks = cfg
        .racks()
        .map_err(|m| StartError::bad_value("rack_map", cfg.rack_map.join(","), m))?;
    let state = State {
        ns,
        bm,
        leases,
        recovering: HashMap::new(),
        uc_locs: HashMap::new(),
        safe: SafeMode {
            manual: false,
            startup: true,
            reached: None,
        },
        rng: StdRng::from_entropy(),
        racks,
    };
    let metrics = NnMetrics::new(launch.registry());
    let node = Arc::new(Namenode {
        cfg: cfg.clone(),
        cluster_id: cluster,
        st: Mutex::new(state),
        log,
        metrics,
        name_dir: dir,
        last_checkpoint: Mutex::new((txid, Instant::now())),
        groups: Groups::default(),
        standby: AtomicBool::new(false),
    });

    let status_node = node.clone();
    let http_addr = launch
        .serve_http(
            "http_addr",
            &cfg.http_addr,
            Arc::new(move || status_node.status_rows()),
        )
        .await?;
    let (client, admin, datanode) = (
        rpc::ClientService { nn: node.clone() },
        rpc::AdminService { nn: node.clone() },
        rpc::DatanodeProtocolService { nn: node.clone() },
    );
    launch.serve_grpc("rpc", rpc_listener, move |mut server| {
        use hstack_proto::dfs::{
            admin_protocol_server::AdminProtocolServer,
            client_protocol_server::ClientProtocolServer,
            datanode_protocol_server::DatanodeProtocolServer,
        };
        let max = rpc::MAX_MESSAGE;
        server
            .add_service(
                ClientProtocolServer::new(client)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                AdminProtocolServer::new(admin)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                DatanodeProtocolServer::new(datanode)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
    })?;
    // The monitor lets a checkpoint being written finish before it stops.
    launch.spawn("monitor", monitor::run(node.clone(), launch.shutdown()));
    tracing::info!(rpc_addr = %launch.bound("rpc"), %http_addr, txid, "namenode started");
    Ok(node)
}

impl Namenode {
    fn status_rows(&self) -> (bool, Vec<(String, String)>) {
        let st = self.lock();
        let live = st.bm.live_count();
        let (total, safe) = st.safe_counts();
        let rows = vec![
            ("safe mode".to_string(), st.in_safe_mode().to_string()),
            ("blocks reported".into(), format!("{safe} of {total}")),
            ("live datanodes".into(), live.to_string()),
            (
                "dead datanodes".into(),
                (st.bm.listed().count() - live).to_string(),
            ),
            ("inodes".into(), st.ns.inode_count().to_string()),
            ("last txid".into(), st.ns.txid.to_string()),
            ("open leases".into(), st.leases.len().to_string()),
        ];
        // Ready: serving, and out of the start-up safe mode.
        (!st.safe.startup && self.log.failure().is_none(), rows)
    }

    /// Starts recovering the lease on `inode` (the writer is gone): the
    /// namenode takes the file over and asks a datanode holding the last
    /// block to agree a length with the others. Files with nothing to
    /// recover are closed at once.
    pub(crate) fn start_recovery(
        &self,
        st: &mut State,
        inode: InodeId,
        now: Instant,
    ) -> FsResult<()> {
        let Some(f) = st.ns.file(inode) else {
            st.recovering.remove(&inode);
            return Ok(());
        };
        let Some(uc) = &f.uc else {
            st.recovering.remove(&inode);
            return Ok(());
        };
        let holder = uc.client.clone();
        let last = f.blocks.last().copied();
        if holder != RECOVERY_HOLDER {
            st.apply(
                &self.log,
                Edit::ReassignLease {
                    inode,
                    client: RECOVERY_HOLDER.into(),
                },
                None,
            )?;
        }
        let locs: Vec<NodeIdx> = match last {
            None => vec![],
            Some(b) => {
                let mut v: Vec<NodeIdx> = st.uc_locs.get(&b.id).cloned().unwrap_or_default();
                if let Some(info) = st.bm.blocks.get(&b.id) {
                    for r in &info.replicas {
                        if !v.contains(r) {
                            v.push(*r);
                        }
                    }
                }
                v.retain(|n| st.bm.node(*n).alive);
                v
            }
        };
        match last {
            Some(b) if !locs.is_empty() => {
                let gs = st.ns.next_gen_stamp();
                st.apply(&self.log, Edit::GenStamp { gen_stamp: gs }, None)?;
                let primary = locs[0];
                tracing::info!(
                    inode,
                    block = b.id,
                    from = %holder,
                    primary = %st.bm.node(primary).id,
                    "lease recovery: asking the block's replicas to agree on a length"
                );
                st.bm.nodes[primary as usize]
                    .commands
                    .push(Command::Recover {
                        block: b,
                        new_gen_stamp: gs,
                        replicas: locs,
                    });
                st.recovering.insert(
                    inode,
                    Recovering {
                        since: now,
                        gen_stamp: Some(gs),
                    },
                );
            }
            Some(b) if st.uc_locs.contains_key(&b.id) => {
                // Its replicas exist but none is reachable: wait for one.
                tracing::warn!(
                    inode,
                    block = b.id,
                    "lease recovery: no live replica of the last block; waiting"
                );
                st.recovering.insert(
                    inode,
                    Recovering {
                        since: now,
                        gen_stamp: None,
                    },
                );
            }
            _ => {
                // No block, or a last block no datanode ever received.
                st.apply(
                    &self.log,
                    Edit::Close {
                        inode,
                        client: RECOVERY_HOLDER.into(),
                        time: now_ms(),
                        last_len: None,
                    },
                    None,
                )?;
                tracing::info!(inode, from = %holder, "lease recovery: closed the file");
            }
        }
        self.metrics.lease_recoveries.inc();
        Ok(())
    }
}

/// Known hosts' racks first, else what the datanode says.
pub(crate) fn rack_of(st: &State, host: &str, reported: &str) -> String {
    st.racks.get(host).cloned().unwrap_or_else(|| {
        if reported.is_empty() {
            "/default-rack".into()
        } else {
            reported.to_string()
        }
    })
}

/// Writes a new image, as HDFS's secondary namenode does, but in-process:
/// the edit log rolls to a new segment, and the image is built by loading
/// the last image and replaying the finalized edits up to the roll, so the
/// live namespace is never copied and its lock never held (at 1M files a
/// copy under the lock stalled every RPC for about 0.2 s). Costs one more
/// namespace's memory while it runs.
pub(crate) async fn checkpoint(nn: Arc<Namenode>) -> anyhow::Result<()> {
    let upto = nn.log.roll();
    nn.log.rolled(upto).await?;
    let n = nn.clone();
    let purged = tokio::task::spawn_blocking(move || -> anyhow::Result<std::io::Result<()>> {
        let dir = &n.name_dir;
        let mut journal = LocalJournal::open(dir)?;
        let ns = namespace_on_disk(dir, &n.cfg, |from| journal.read_finalized(from, upto))?;
        if ns.txid != upto {
            anyhow::bail!(
                "checkpoint replay ended at transaction {}, expected {upto}",
                ns.txid
            );
        }
        editlog::save_image(dir, &ns.into_image())?;
        *n.last_checkpoint.lock().expect("lock") = (upto, Instant::now());
        Ok(editlog::purge_old(dir, &mut journal as &mut dyn Journal, 2))
    })
    .await??;
    if let Err(e) = purged {
        // The image stands; the next checkpoint purges again.
        tracing::warn!("checkpoint saved, but purging old images and edits failed: {e}");
    }
    nn.metrics.checkpoints.inc();
    tracing::info!(txid = upto, "checkpoint saved");
    Ok(())
}
