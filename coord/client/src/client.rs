//! The coordination client: one session, kept alive across member failures.
//!
//! A background driver owns the connection. It pings at a third of the
//! session timeout, declares a member dead when nothing arrived for two
//! thirds of it, moves to the next member with the same session (never to
//! one that has not seen what this client saw), and re-registers its watches
//! there. Requests in flight when a connection drops fail with
//! `ConnectionLoss` (a write may or may not have applied, as in ZooKeeper);
//! requests made while reconnecting wait for the new connection.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hstack_proto::coord as pb;
use hstack_proto::coord::coord_client::CoordClient;
use pb::request::Op;
use pb::server_frame::Frame as Out;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tonic::transport::Endpoint;

use crate::error::{Code, CoordError, Result};
use crate::stat::Stat;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Client addresses (`host:port`) of the members to try.
    pub members: Vec<String>,
    pub session_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long one call may wait in all (including reconnecting).
    pub request_timeout: Duration,
    /// Start with a random member (spreads sessions); when false, try the
    /// members in the order given.
    pub shuffle: bool,
    /// Credentials sent on every connection before anything else, as
    /// (scheme, auth): `("digest", b"user:password")` (ZooKeeper's addauth).
    pub auth: Vec<(String, Vec<u8>)>,
}

impl ClientOptions {
    pub fn new(members: Vec<String>) -> Self {
        Self {
            members,
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            shuffle: true,
            auth: vec![],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    PersistentSequential,
    Ephemeral,
    EphemeralSequential,
    Container,
    /// Persistent, removed when childless and unmodified for this long.
    Ttl(Duration),
    TtlSequential(Duration),
}

impl CreateMode {
    fn to_pb(self) -> (pb::CreateMode, i64) {
        use pb::CreateMode as M;
        match self {
            CreateMode::Persistent => (M::Persistent, 0),
            CreateMode::PersistentSequential => (M::PersistentSequential, 0),
            CreateMode::Ephemeral => (M::Ephemeral, 0),
            CreateMode::EphemeralSequential => (M::EphemeralSequential, 0),
            CreateMode::Container => (M::Container, 0),
            CreateMode::Ttl(d) => (M::PersistentWithTtl, d.as_millis() as i64),
            CreateMode::TtlSequential(d) => (M::PersistentSequentialWithTtl, d.as_millis() as i64),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum EventKind {
    NodeCreated,
    NodeDeleted,
    NodeDataChanged,
    NodeChildrenChanged,
    /// The session is connected (again) to a member.
    Connected,
    /// The connection dropped; the session may still be alive.
    Disconnected,
    /// The session is gone, and with it its ephemeral nodes.
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WatchedEvent {
    pub kind: EventKind,
    pub path: String,
    pub zxid: u64,
}

/// One op of a `multi`.
#[derive(Clone, Debug)]
pub enum MultiOp {
    Create {
        path: String,
        data: Vec<u8>,
        mode: CreateMode,
    },
    Delete {
        path: String,
        version: Option<i32>,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: Option<i32>,
    },
    Check {
        path: String,
        version: i32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MultiResult {
    Created(String),
    Deleted,
    Set(Stat),
    Checked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    Connecting,
    Connected,
    Expired,
    Closed,
}

enum Cmd {
    Call {
        op: Op,
        linearizable: bool,
        reply: oneshot::Sender<Result<pb::Reply>>,
    },
}

#[derive(Default)]
struct WatchSet {
    data: BTreeSet<String>,
    exist: BTreeSet<String>,
    child: BTreeSet<String>,
    persistent: BTreeSet<String>,
    recursive: BTreeSet<String>,
}

/// One entry of a node's ACL: the permissions (`Acl::READ` …) granted to
/// the identities `scheme:id` names (ZooKeeper's model: schemes `world`
/// with id `anyone`, `auth`, `digest` with `user:base64(sha1(user:pw))`,
/// `ip` with `addr[/bits]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    pub perms: u32,
    pub scheme: String,
    pub id: String,
}

impl Acl {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const CREATE: u32 = 4;
    pub const DELETE: u32 = 8;
    pub const ADMIN: u32 = 16;
    pub const ALL: u32 = 31;

    /// zkCli's form `scheme:id:perms`, perms in `cdrwa` letters
    /// (`world:anyone:r`, `digest:bob:HASH=:cdrwa`, `auth::cdrwa`).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            CoordError::new(
                Code::InvalidAcl,
                format!("ACL {s:?}: {why} (expected scheme:id:perms, e.g. world:anyone:cdrwa)"),
            )
        };
        let (scheme, rest) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let (id, letters) = rest.rsplit_once(':').ok_or_else(|| bad("no permissions"))?;
        let mut perms = 0;
        for c in letters.chars() {
            perms |= match c {
                'r' => Self::READ,
                'w' => Self::WRITE,
                'c' => Self::CREATE,
                'd' => Self::DELETE,
                'a' => Self::ADMIN,
                other => return Err(bad(&format!("unknown permission {other:?}"))),
            };
        }
        if scheme.is_empty() {
            return Err(bad("empty scheme"));
        }
        Ok(Self {
            perms,
            scheme: scheme.into(),
            id: id.into(),
        })
    }

    /// The permissions as zkCli prints them (`cdrwa`).
    pub fn perm_letters(&self) -> String {
        [
            (Self::CREATE, 'c'),
            (Self::DELETE, 'd'),
            (Self::READ, 'r'),
            (Self::WRITE, 'w'),
            (Self::ADMIN, 'a'),
        ]
        .iter()
        .filter(|(bit, _)| self.perms & bit != 0)
        .map(|(_, c)| *c)
        .collect()
    }

    fn to_pb(&self) -> pb::Acl {
        pb::Acl {
            perms: self.perms as i32,
            scheme: self.scheme.clone(),
            id: self.id.clone(),
        }
    }

    fn of_pb(a: pb::Acl) -> Self {
        Self {
            perms: a.perms as u32,
            scheme: a.scheme,
            id: a.id,
        }
    }
}

struct Shared {
    /// Credentials re-sent on every new connection (options', then addauth's).
    auth: Mutex<Vec<(String, Vec<u8>)>>,
    events: broadcast::Sender<WatchedEvent>,
    state: watch::Sender<SessionState>,
    session: Mutex<(u64, u64, u32, u64)>, // id, password, timeout_ms, member id
    last_zxid: AtomicU64,
    watches: Mutex<WatchSet>,
}

/// A session with the coordination service. Cheap to clone; the session
/// closes when `close` is called or the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    opts: Arc<ClientOptions>,
    linearizable: bool,
}

impl Client {
    /// Connects to one of `opts.members` and opens a new session.
    pub async fn connect(opts: ClientOptions) -> Result<Self> {
        if opts.members.is_empty() {
            return Err(CoordError::new(
                Code::InvalidArgument,
                "no members to connect to",
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        let (state, _) = watch::channel(SessionState::Connecting);
        let shared = Arc::new(Shared {
            auth: Mutex::new(opts.auth.clone()),
            events,
            state,
            session: Mutex::new((0, 0, opts.session_timeout.as_millis() as u32, 0)),
            last_zxid: AtomicU64::new(0),
            watches: Mutex::new(WatchSet::default()),
        });
        let opts = Arc::new(opts);
        let mut state_rx = shared.state.subscribe();
        tokio::spawn(drive(opts.clone(), shared.clone(), rx));
        let deadline =
            opts.connect_timeout * (opts.members.len() as u32).max(1) + opts.connect_timeout;
        let waited = tokio::time::timeout(
            deadline,
            state_rx.wait_for(|s| *s != SessionState::Connecting),
        )
        .await;
        match waited {
            Ok(Ok(s)) if *s == SessionState::Connected => {}
            _ => {
                shared.state.send_replace(SessionState::Closed);
                return Err(CoordError::new(
                    Code::ConnectionLoss,
                    format!(
                        "could not open a session with any of {}",
                        opts.members.join(", ")
                    ),
                ));
            }
        }
        Ok(Self {
            tx,
            shared,
            opts,
            linearizable: false,
        })
    }

    /// A handle to the same session whose reads are linearizable (read index
    /// through the leader) instead of served from the member's state.
    pub fn linearizable(&self) -> Self {
        Self {
            linearizable: true,
            ..self.clone()
        }
    }

    pub fn session_id(&self) -> u64 {
        self.shared
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// The member this session is connected to now.
    pub fn member_id(&self) -> u64 {
        self.shared
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .3
    }

    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(
            self.shared
                .session
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .2 as u64,
        )
    }

    pub fn state(&self) -> SessionState {
        *self.shared.state.borrow()
    }

    pub fn last_zxid(&self) -> u64 {
        self.shared.last_zxid.load(Ordering::Relaxed)
    }

    /// Every watch event and session state change of this session.
    pub fn events(&self) -> broadcast::Receiver<WatchedEvent> {
        self.shared.events.subscribe()
    }

    /// Sends `op`. A read refused with `NotLeader` (a linearizable read or
    /// sync during an election) is retried until the request timeout; writes
    /// are not (a retried write could overtake a later write of the session;
    /// the server already retries writes it knows were not applied).
    async fn call(&self, op: Op) -> Result<pb::Reply> {
        let is_read = matches!(
            op,
            Op::GetData(_) | Op::Exists(_) | Op::GetChildren(_) | Op::Sync(_)
        );
        if !is_read {
            return self.call_once(op).await;
        }
        let mut backoff = hstack_proto::retry::Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(500),
        )
        .with_patience(self.opts.request_timeout);
        loop {
            match self.call_once(op.clone()).await {
                Err(e) if e.code == Code::NotLeader => {
                    if !backoff.pause().await {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    async fn call_once(&self, op: Op) -> Result<pb::Reply> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Call {
                op,
                linearizable: self.linearizable,
                reply,
            })
            .map_err(|_| CoordError::new(Code::SessionExpired, "the session is closed"))?;
        let r = tokio::time::timeout(self.opts.request_timeout, rx)
            .await
            .map_err(|_| {
                CoordError::new(
                    Code::ConnectionLoss,
                    format!("no reply within {:?}", self.opts.request_timeout),
                )
            })?
            .map_err(|_| CoordError::new(Code::SessionExpired, "the session is closed"))??;
        crate::error::of_reply(r.code, r.message.clone())?;
        Ok(r)
    }

    /// A create with its own ACL (`create` gives world:anyone everything).
    pub async fn create_with_acl(
        &self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
        acl: &[Acl],
    ) -> Result<(String, Stat)> {
        check_size(data)?;
        let (m, ttl_ms) = mode.to_pb();
        let r = self
            .call(Op::Create(pb::Create {
                path: path.into(),
                data: data.to_vec(),
                mode: m as i32,
                ttl_ms,
                acl: acl.iter().map(Acl::to_pb).collect(),
            }))
            .await?;
        match r.result {
            Some(pb::reply::Result::Create(c)) => {
                Ok((c.path, Stat::from(c.stat.unwrap_or_default())))
            }
            _ => Err(unexpected()),
        }
    }

    /// A node's ACL and stat.
    pub async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat)> {
        let r = self
            .call(Op::GetAcl(pb::GetAcl { path: path.into() }))
            .await?;
        match r.result {
            Some(pb::reply::Result::Acl(a)) => Ok((
                a.acl.into_iter().map(Acl::of_pb).collect(),
                Stat::from(a.stat.unwrap_or_default()),
            )),
            _ => Err(unexpected()),
        }
    }

    /// Replaces a node's ACL if its ACL version is `version` (None: any).
    pub async fn set_acl(&self, path: &str, acl: &[Acl], version: Option<i32>) -> Result<Stat> {
        let r = self
            .call(Op::SetAcl(pb::SetAcl {
                path: path.into(),
                acl: acl.iter().map(Acl::to_pb).collect(),
                version: version.unwrap_or(-1),
            }))
            .await?;
        match r.result {
            Some(pb::reply::Result::Stat(s)) => Ok(Stat::from(s)),
            _ => Err(unexpected()),
        }
    }

    /// Proves an identity for this session (`digest`, `user:password`);
    /// kept for every later connection of the session. AuthFailed if refused.
    pub async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<()> {
        self.call(Op::Auth(pb::Auth {
            scheme: scheme.into(),
            auth: auth.to_vec(),
        }))
        .await?;
        self.shared
            .auth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((scheme.into(), auth.to_vec()));
        Ok(())
    }

    /// The identities the session holds on its current connection, as
    /// (scheme, id).
    pub async fn who_am_i(&self) -> Result<Vec<(String, String)>> {
        let r = self.call(Op::WhoAmI(pb::WhoAmI {})).await?;
        match r.result {
            Some(pb::reply::Result::WhoAmI(w)) => {
                Ok(w.ids.into_iter().map(|i| (i.scheme, i.id)).collect())
            }
            _ => Err(unexpected()),
        }
    }

    pub async fn create(&self, path: &str, data: &[u8], mode: CreateMode) -> Result<String> {
        Ok(self.create_with_stat(path, data, mode).await?.0)
    }

    pub async fn create_with_stat(
        &self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> Result<(String, Stat)> {
        check_size(data)?;
        let (m, ttl_ms) = mode.to_pb();
        let r = self
            .call(Op::Create(pb::Create {
                path: path.into(),
                data: data.to_vec(),
                mode: m as i32,
                ttl_ms,
                acl: vec![],
            }))
            .await?;
        match r.result {
            Some(pb::reply::Result::Create(c)) => {
                Ok((c.path, Stat::from(c.stat.unwrap_or_default())))
            }
            _ => Err(unexpected()),
        }
    }

    /// `version` None deletes whatever the version.
    pub async fn delete(&self, path: &str, version: Option<i32>) -> Result<()> {
        self.call(Op::Delete(pb::Delete {
            path: path.into(),
            version: version.unwrap_or(-1),
        }))
        .await?;
        Ok(())
    }

    pub async fn set_data(&self, path: &str, data: &[u8], version: Option<i32>) -> Result<Stat> {
        check_size(data)?;
        let r = self
            .call(Op::SetData(pb::SetData {
                path: path.into(),
                data: data.to_vec(),
                version: version.unwrap_or(-1),
            }))
            .await?;
        match r.result {
            Some(pb::reply::Result::Stat(s)) => Ok(Stat::from(s)),
            _ => Err(unexpected()),
        }
    }

    pub async fn get_data(&self, path: &str, watch: bool) -> Result<(Vec<u8>, Stat)> {
        let r = self
            .call(Op::GetData(pb::GetData {
                path: path.into(),
                watch,
            }))
            .await?;
        match r.result {
            Some(pb::reply::Result::Data(d)) => {
                Ok((d.data, Stat::from(d.stat.unwrap_or_default())))
            }
            _ => Err(unexpected()),
        }
    }

    /// `None` when the node does not exist; with `watch` set, a watch is left
    /// either way (on creation if missing, on change if present).
    pub async fn exists(&self, path: &str, watch: bool) -> Result<Option<Stat>> {
        match self
            .call(Op::Exists(pb::Exists {
                path: path.into(),
                watch,
            }))
            .await
        {
            Ok(r) => match r.result {
                Some(pb::reply::Result::Stat(s)) => Ok(Some(Stat::from(s))),
                _ => Err(unexpected()),
            },
            Err(e) if e.code == Code::NoNode => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn get_children(&self, path: &str, watch: bool) -> Result<Vec<String>> {
        Ok(self.get_children_with_stat(path, watch).await?.0)
    }

    pub async fn get_children_with_stat(
        &self,
        path: &str,
        watch: bool,
    ) -> Result<(Vec<String>, Stat)> {
        let r = self
            .call(Op::GetChildren(pb::GetChildren {
                path: path.into(),
                watch,
            }))
            .await?;
        match r.result {
            Some(pb::reply::Result::Children(c)) => {
                Ok((c.children, Stat::from(c.stat.unwrap_or_default())))
            }
            _ => Err(unexpected()),
        }
    }

    /// Applies every op or none. On failure the error names the op that failed.
    pub async fn multi(&self, ops: Vec<MultiOp>) -> Result<Vec<MultiResult>> {
        let total: usize = ops
            .iter()
            .map(|o| match o {
                MultiOp::Create { data, .. } | MultiOp::SetData { data, .. } => data.len(),
                _ => 0,
            })
            .sum();
        if total > 3 * crate::MAX_DATA {
            return Err(CoordError::new(
                Code::InvalidArgument,
                format!("a multi of {total} bytes of data is too large"),
            ));
        }
        for o in &ops {
            if let MultiOp::Create { data, .. } | MultiOp::SetData { data, .. } = o {
                check_size(data)?;
            }
        }
        let reqs = ops
            .into_iter()
            .map(|o| {
                let op = match o {
                    MultiOp::Create { path, data, mode } => {
                        let (m, ttl_ms) = mode.to_pb();
                        Op::Create(pb::Create {
                            path,
                            data,
                            mode: m as i32,
                            ttl_ms,
                            acl: vec![],
                        })
                    }
                    MultiOp::Delete { path, version } => Op::Delete(pb::Delete {
                        path,
                        version: version.unwrap_or(-1),
                    }),
                    MultiOp::SetData {
                        path,
                        data,
                        version,
                    } => Op::SetData(pb::SetData {
                        path,
                        data,
                        version: version.unwrap_or(-1),
                    }),
                    MultiOp::Check { path, version } => Op::Check(pb::Check { path, version }),
                };
                pb::Request {
                    op: Some(op),
                    ..Default::default()
                }
            })
            .collect::<Vec<_>>();
        let single = reqs.len() == 1;
        let r = self.call(Op::Multi(pb::Multi { ops: reqs })).await?;
        let convert = |r: Option<pb::reply::Result>| match r {
            Some(pb::reply::Result::Create(c)) => MultiResult::Created(c.path),
            Some(pb::reply::Result::Stat(s)) => MultiResult::Set(Stat::from(s)),
            Some(pb::reply::Result::Empty(_)) => MultiResult::Checked,
            _ => MultiResult::Deleted,
        };
        match r.result {
            Some(pb::reply::Result::Multi(m)) => {
                Ok(m.results.into_iter().map(|r| convert(r.result)).collect())
            }
            other if single => Ok(vec![convert(other)]),
            _ => Err(unexpected()),
        }
    }

    /// Waits until the connected member has applied everything committed
    /// before the call.
    pub async fn sync(&self, path: &str) -> Result<()> {
        self.call(Op::Sync(pb::Sync { path: path.into() })).await?;
        Ok(())
    }

    /// A watch that stays: every event on `path` (and, when `recursive`, on
    /// its descendants, child-list changes excepted).
    pub async fn add_watch(&self, path: &str, recursive: bool) -> Result<()> {
        self.call(Op::AddWatch(pb::AddWatch {
            path: path.into(),
            recursive,
        }))
        .await?;
        Ok(())
    }

    /// Closes the session: its ephemeral nodes are deleted at once.
    pub async fn close(&self) -> Result<()> {
        if self.state() != SessionState::Connected {
            return Ok(());
        }
        let r = self.call(Op::Close(pb::CloseSession {})).await;
        self.shared.state.send_replace(SessionState::Closed);
        r.map(|_| ())
    }
}

/// Refuses data over the limit before it is sent (the server refuses it
/// too, but a message far over the limit would only break the connection).
fn check_size(data: &[u8]) -> Result<()> {
    if data.len() > crate::MAX_DATA {
        return Err(CoordError::new(
            Code::InvalidArgument,
            format!(
                "data is {} bytes; the limit is {}",
                data.len(),
                crate::MAX_DATA
            ),
        ));
    }
    Ok(())
}

fn unexpected() -> CoordError {
    CoordError::new(
        Code::RuntimeInconsistency,
        "unexpected reply from the server",
    )
}

impl Shared {
    fn watches(&self) -> std::sync::MutexGuard<'_, WatchSet> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, kind: EventKind, path: &str, zxid: u64) {
        let _ = self.events.send(WatchedEvent {
            kind,
            path: path.to_string(),
            zxid,
        });
    }

    fn note_zxid(&self, z: u64) {
        self.last_zxid.fetch_max(z, Ordering::Relaxed);
    }
}

enum ConnEnd {
    /// Try the next member.
    Lost,
    /// The session is over (expired or closed): stop.
    Over,
}

async fn drive(
    opts: Arc<ClientOptions>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let start = if opts.shuffle {
        rand::random::<usize>() % opts.members.len()
    } else {
        0
    };
    let mut attempt = 0usize;
    let mut failures = 0u32;
    // After a round of members that all failed; with jitter, so the
    // clients of a restarted ensemble do not all come back at once.
    let mut backoff =
        hstack_proto::retry::Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        let member = &opts.members[(start + attempt) % opts.members.len()];
        attempt += 1;
        match connection(&opts, &shared, member, &mut rx).await {
            ConnEnd::Over => break,
            ConnEnd::Lost => {}
        }
        if *shared.state.borrow() == SessionState::Connected {
            shared.state.send_replace(SessionState::Connecting);
            shared.emit(EventKind::Disconnected, "", 0);
            failures = 0;
            backoff.reset();
        }
        failures += 1;
        if failures as usize % opts.members.len() == 0 {
            backoff.pause().await;
        }
        if rx.is_closed() || *shared.state.borrow() == SessionState::Closed {
            break;
        }
    }
    // Fail whatever is still queued.
    rx.close();
    while let Ok(Cmd::Call { reply, .. }) = rx.try_recv() {
        let _ = reply.send(Err(CoordError::new(
            Code::SessionExpired,
            "the session is closed",
        )));
    }
}

async fn connection(
    opts: &ClientOptions,
    shared: &Shared,
    member: &str,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
) -> ConnEnd {
    let Ok(ep) = Endpoint::from_shared(format!("http://{member}")) else {
        return ConnEnd::Lost;
    };
    let ep = ep.connect_timeout(opts.connect_timeout).tcp_nodelay(true);
    let Ok(Ok(channel)) = tokio::time::timeout(opts.connect_timeout, ep.connect()).await else {
        return ConnEnd::Lost;
    };
    let mut client = CoordClient::new(channel).max_decoding_message_size(64 << 20);
    let (ftx, frx) = mpsc::unbounded_channel::<pb::ClientFrame>();
    let (sid, pw, timeout_ms, _) = *shared.session.lock().unwrap_or_else(|p| p.into_inner());
    let connect = pb::ConnectRequest {
        session_id: sid,
        password: pw,
        timeout_ms,
        last_zxid_seen: shared.last_zxid.load(Ordering::Relaxed),
    };
    let _ = ftx.send(pb::ClientFrame {
        frame: Some(pb::client_frame::Frame::Connect(connect)),
    });
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(frx);
    let Ok(Ok(resp)) = tokio::time::timeout(opts.connect_timeout, client.session(stream)).await
    else {
        return ConnEnd::Lost;
    };
    let mut inbound = resp.into_inner();
    let first = tokio::time::timeout(opts.connect_timeout, inbound.next()).await;
    let reply = match first {
        Ok(Some(Ok(pb::ServerFrame {
            frame: Some(Out::Connected(c)),
        }))) => c,
        Ok(Some(Ok(pb::ServerFrame {
            frame: Some(Out::Error(e)),
        }))) => {
            if e.code == Code::SessionExpired as i32 && sid != 0 {
                shared.state.send_replace(SessionState::Expired);
                shared.emit(EventKind::Expired, "", 0);
                return ConnEnd::Over;
            }
            tracing::debug!(member, "connection refused: {}", e.message);
            return ConnEnd::Lost;
        }
        _ => return ConnEnd::Lost,
    };
    *shared.session.lock().unwrap_or_else(|p| p.into_inner()) = (
        reply.session_id,
        reply.password,
        reply.timeout_ms,
        reply.member_id,
    );
    // Watches are re-registered relative to what this client had seen, not
    // to what the new member has: changes in between must fire.
    let relative_zxid = shared.last_zxid.load(Ordering::Relaxed);
    shared.note_zxid(reply.last_zxid);
    let timeout = Duration::from_millis(reply.timeout_ms as u64);

    // Re-register watches before anything else, so no event is missed.
    let mut pending: HashMap<u64, (oneshot::Sender<Result<pb::Reply>>, Option<WatchReg>)> =
        HashMap::new();
    let mut xid: u64 = 1;
    {
        let w = shared.watches();
        if !(w.data.is_empty()
            && w.exist.is_empty()
            && w.child.is_empty()
            && w.persistent.is_empty()
            && w.recursive.is_empty())
        {
            let sw = pb::SetWatches {
                relative_zxid,
                data: w.data.iter().cloned().collect(),
                exist: w.exist.iter().cloned().collect(),
                child: w.child.iter().cloned().collect(),
                persistent: w.persistent.iter().cloned().collect(),
                persistent_recursive: w.recursive.iter().cloned().collect(),
            };
            let req = pb::Request {
                xid: 0,
                op: Some(Op::SetWatches(sw)),
                linearizable: false,
            };
            let _ = ftx.send(pb::ClientFrame {
                frame: Some(pb::client_frame::Frame::Request(req)),
            });
        }
    }
    // Then the credentials, before any request that needs them.
    let auth = shared
        .auth
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (scheme, auth) in auth {
        let req = pb::Request {
            xid: 0,
            op: Some(Op::Auth(pb::Auth { scheme, auth })),
            linearizable: false,
        };
        let _ = ftx.send(pb::ClientFrame {
            frame: Some(pb::client_frame::Frame::Request(req)),
        });
    }
    shared.state.send_replace(SessionState::Connected);
    shared.emit(EventKind::Connected, "", reply.last_zxid);

    let mut ping = tokio::time::interval(timeout / 3);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let end = loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(Cmd::Call { op, linearizable, reply }) = cmd else {
                    // Every handle dropped: close the session.
                    let req = pb::Request { xid: 0, op: Some(Op::Close(pb::CloseSession {})), linearizable: false };
                    let _ = ftx.send(pb::ClientFrame { frame: Some(pb::client_frame::Frame::Request(req)) });
                    let _ = tokio::time::timeout(Duration::from_secs(1), inbound.next()).await;
                    break ConnEnd::Over;
                };
                let closing = matches!(op, Op::Close(_));
                let reg = watch_reg(&op);
                let req = pb::Request { xid, op: Some(op), linearizable };
                pending.insert(xid, (reply, reg));
                xid += 1;
                if ftx.send(pb::ClientFrame { frame: Some(pb::client_frame::Frame::Request(req)) }).is_err() {
                    break ConnEnd::Lost;
                }
                if closing {
                    // Wait for the reply, then stop.
                    while let Ok(Some(Ok(f))) = tokio::time::timeout(Duration::from_secs(5), inbound.next()).await {
                        if let Some(Out::Reply(r)) = f.frame {
                            if let Some((tx, _)) = pending.remove(&r.xid) {
                                let _ = tx.send(Ok(r));
                                break;
                            }
                        }
                    }
                    break ConnEnd::Over;
                }
            }
            f = inbound.next() => {
                let Some(Ok(f)) = f else { break ConnEnd::Lost };
                last_heard = Instant::now();
                match f.frame {
                    Some(Out::Reply(r)) => {
                        shared.note_zxid(r.zxid);
                        if let Some((tx, reg)) = pending.remove(&r.xid) {
                            if let Some(reg) = reg {
                                reg.record(shared, r.code);
                            }
                            let _ = tx.send(Ok(r));
                        }
                    }
                    Some(Out::Event(e)) => {
                        shared.note_zxid(e.zxid);
                        on_event(shared, e);
                    }
                    Some(Out::Pong(p)) => shared.note_zxid(p.zxid),
                    Some(Out::Error(e)) => {
                        if e.code == Code::SessionExpired as i32 {
                            shared.state.send_replace(SessionState::Expired);
                            shared.emit(EventKind::Expired, "", 0);
                            for (_, (tx, _)) in pending.drain() {
                                let _ = tx.send(Err(CoordError::new(Code::SessionExpired, e.message.clone())));
                            }
                            break ConnEnd::Over;
                        }
                        break ConnEnd::Lost;
                    }
                    Some(Out::Connected(_)) | None => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > timeout * 2 / 3 {
                    tracing::debug!(member, "no word from the member for {:?}; moving on", last_heard.elapsed());
                    break ConnEnd::Lost;
                }
                let _ = ftx.send(pb::ClientFrame { frame: Some(pb::client_frame::Frame::Ping(pb::Ping {})) });
            }
        }
    };
    for (_, (tx, _)) in pending.drain() {
        let _ = tx.send(Err(CoordError::new(
            Code::ConnectionLoss,
            format!("connection to {member} lost"),
        )));
    }
    end
}

/// A watch a request leaves behind, recorded when its reply arrives (the
/// driver sees the reply before any event the watch later produces).
enum WatchReg {
    Data(String),
    Exists(String),
    Child(String),
    Persistent(String),
    Recursive(String),
}

fn watch_reg(op: &Op) -> Option<WatchReg> {
    match op {
        Op::GetData(g) if g.watch => Some(WatchReg::Data(g.path.clone())),
        Op::Exists(e) if e.watch => Some(WatchReg::Exists(e.path.clone())),
        Op::GetChildren(g) if g.watch => Some(WatchReg::Child(g.path.clone())),
        Op::AddWatch(a) if a.recursive => Some(WatchReg::Recursive(a.path.clone())),
        Op::AddWatch(a) => Some(WatchReg::Persistent(a.path.clone())),
        _ => None,
    }
}

impl WatchReg {
    fn record(self, shared: &Shared, code: i32) {
        let ok = code == Code::Ok as i32;
        let no_node = code == Code::NoNode as i32;
        let mut w = shared.watches();
        match self {
            WatchReg::Data(p) if ok => {
                w.data.insert(p);
            }
            WatchReg::Exists(p) if ok => {
                w.data.insert(p);
            }
            WatchReg::Exists(p) if no_node => {
                w.exist.insert(p);
            }
            WatchReg::Child(p) if ok => {
                w.child.insert(p);
            }
            WatchReg::Persistent(p) if ok => {
                w.persistent.insert(p);
            }
            WatchReg::Recursive(p) if ok => {
                w.recursive.insert(p);
            }
            _ => {}
        }
    }
}

fn on_event(shared: &Shared, e: pb::WatchEvent) {
    use pb::EventType as E;
    let ty = E::try_from(e.r#type).unwrap_or(E::None);
    let kind = {
        let mut w = shared.watches();
        let p = &e.path;
        match ty {
            E::NodeCreated => {
                w.exist.remove(p);
                EventKind::NodeCreated
            }
            E::NodeDeleted => {
                w.data.remove(p);
                w.exist.remove(p);
                w.child.remove(p);
                EventKind::NodeDeleted
            }
            E::NodeDataChanged => {
                w.data.remove(p);
                w.exist.remove(p);
                EventKind::NodeDataChanged
            }
            E::NodeChildrenChanged => {
                w.child.remove(p);
                EventKind::NodeChildrenChanged
            }
            // This client never removes watches, so never hears of a removal.
            E::None | E::DataWatchRemoved | E::ChildWatchRemoved | E::PersistentWatchRemoved => {
                return
            }
        }
    };
    shared.emit(kind, &e.path, e.zxid);
}
