//! One client connection: the `Session` stream.
//!
//! The reader turns frames into pending replies in arrival order: writes are
//! proposed at once (so a session's writes keep their order), reads wait
//! behind any earlier write of the session and run when they reach the head
//! of the queue, after that write is applied on this member. Replies leave in
//! request order; watch events are pushed into the same outbound channel by
//! the state machine, so an event precedes any reply that observes it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use hstack_proto::coord as pb;
use pb::client_frame::Frame as In;
use pb::request::Op;
use pb::server_frame::Frame as Out;
use tokio::sync::{mpsc, oneshot, watch};

use crate::acl::{self, perm};
use crate::error::{Code, CoordError};
use crate::metrics::{Outcome, OPS};
use crate::node::Node;
use crate::path;
use crate::types::Committed;
use crate::types::{AclEntry, AuthId, CreateKind, OpOutcome, Txn, TxnResult, WriteOp};
use crate::watch::WatchKind;
use hstack_coord_client::{Stat, MAX_DATA};

const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long a resuming client waits for this member to catch up to what it saw.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

type Sink = mpsc::UnboundedSender<pb::ServerFrame>;
/// The identities a connection holds (shared by the requests sent with them).
type Auth = Arc<Vec<AuthId>>;

/// The ZooKeeper paths served from the member itself, not the tree.
pub const ZOOKEEPER: &str = "/zookeeper";
pub const ZOOKEEPER_CONFIG: &str = "/zookeeper/config";

enum Pending {
    Ready(pb::ServerFrame),
    Write {
        xid: u64,
        op: usize,
        started: Instant,
        rx: oneshot::Receiver<Result<Committed, CoordError>>,
    },
    Read {
        req: pb::Request,
        started: Instant,
        auth: Auth,
    },
    /// CloseSession: reply, then end the stream.
    Close {
        xid: u64,
        rx: oneshot::Receiver<Result<Committed, CoordError>>,
    },
}

fn frame(f: Out) -> pb::ServerFrame {
    pb::ServerFrame { frame: Some(f) }
}

fn error_reply(xid: u64, zxid: u64, e: &CoordError) -> pb::Reply {
    pb::Reply {
        xid,
        zxid,
        code: e.code as i32,
        message: e.message.clone(),
        result: None,
    }
}

fn ok_reply(xid: u64, zxid: u64, result: pb::reply::Result) -> pb::Reply {
    pb::Reply {
        xid,
        zxid,
        result: Some(result),
        ..Default::default()
    }
}

fn session_error(e: CoordError) -> pb::ServerFrame {
    frame(Out::Error(pb::SessionError {
        code: e.code as i32,
        message: e.message,
    }))
}

/// Serves one client connection: `inbound` (gRPC's stream, or the frames
/// the ZooKeeper front end decodes) until it ends; everything for the
/// client goes to `out`. `peer` is the client's address (its `ip` identity).
pub async fn serve<S, E>(node: Arc<Node>, mut inbound: S, out: Sink, peer: Option<IpAddr>)
where
    S: Stream<Item = Result<pb::ClientFrame, E>> + Unpin,
{
    let mut auth: Auth = Arc::new(peer.map(acl::ip_id).into_iter().collect());
    let first = tokio::time::timeout(CONNECT_WAIT, inbound.next()).await;
    let connect = match first {
        Ok(Some(Ok(pb::ClientFrame {
            frame: Some(In::Connect(c)),
        }))) => c,
        Ok(Some(Ok(_))) => {
            let _ = out.send(session_error(CoordError::new(
                Code::InvalidArgument,
                "the first frame must be connect",
            )));
            return;
        }
        _ => return,
    };
    let (session_id, reply) = match establish(&node, &connect).await {
        Ok(x) => x,
        Err(e) => {
            let _ = out.send(session_error(e));
            return;
        }
    };
    {
        let mut sm = node.sm.lock();
        if sm.tree.session(session_id).is_none() {
            drop(sm);
            let _ = out.send(session_error(CoordError::new(
                Code::SessionExpired,
                "session expired",
            )));
            return;
        }
        sm.watches.attach(session_id, out.clone());
        // Under the lock: no event can slip in before the connect reply.
        let _ = out.send(frame(Out::Connected(reply)));
    }
    node.touch(session_id);
    node.metrics.connections.inc();
    let (ptx, prx) = mpsc::unbounded_channel::<Pending>();
    // Reads queued but not yet evaluated: a later write waits for them, so a
    // read never observes a write the session sent after it.
    let (reads_tx, mut reads_rx) = watch::channel(0usize);
    let responder = tokio::spawn(respond(
        node.clone(),
        session_id,
        prx,
        out.clone(),
        reads_tx.clone(),
    ));
    while let Some(item) = inbound.next().await {
        let Ok(f) = item else { break };
        node.touch(session_id);
        match f.frame {
            Some(In::Ping(_)) => {
                let zxid = node.sm.lock().tree.last_zxid();
                let _ = ptx.send(Pending::Ready(frame(Out::Pong(pb::Pong { zxid }))));
            }
            Some(In::Request(req)) if matches!(req.op, Some(Op::Auth(_) | Op::WhoAmI(_))) => {
                let reply = session_local(&node, &mut auth, req);
                let _ = ptx.send(Pending::Ready(frame(Out::Reply(reply))));
            }
            Some(In::Request(req)) => {
                let closing = matches!(req.op, Some(Op::Close(_)));
                if is_write(&req) {
                    tokio::select! {
                        _ = reads_rx.wait_for(|n| *n == 0) => {}
                        // The client is gone (the responder stopped): so are we.
                        _ = out.closed() => break,
                    }
                }
                let pending = classify(&node, session_id, &auth, req).await;
                if matches!(pending, Pending::Read { .. }) {
                    reads_tx.send_modify(|n| *n += 1);
                }
                let _ = ptx.send(pending);
                if closing {
                    break;
                }
            }
            Some(In::Connect(_)) | None => {
                let e =
                    CoordError::new(Code::InvalidArgument, "connect may only be the first frame");
                let _ = ptx.send(Pending::Ready(frame(Out::Reply(error_reply(0, 0, &e)))));
            }
        }
    }
    drop(ptx);
    let _ = responder.await;
    node.sm.lock().watches.detach(session_id, &out);
    node.metrics.connections.dec();
}

/// Auth and whoAmI: they change or show the connection's identities, in
/// request order.
fn session_local(node: &Node, auth: &mut Auth, req: pb::Request) -> pb::Reply {
    let zxid = node.sm.lock().tree.last_zxid();
    let op_idx = req.op.as_ref().map(op_index).unwrap_or(0);
    let result = match req.op {
        Some(Op::Auth(a)) => {
            acl::authenticate(&a.scheme, &a.auth, &node.cfg.superuser_digest).map(|ids| {
                let mut all = (**auth).clone();
                for id in ids {
                    if !all.contains(&id) {
                        all.push(id);
                    }
                }
                *auth = Arc::new(all);
                pb::reply::Result::Empty(pb::Empty {})
            })
        }
        _ => Ok(pb::reply::Result::WhoAmI(pb::WhoAmIResult {
            ids: auth
                .iter()
                .map(|a| pb::AuthId {
                    scheme: a.scheme.clone(),
                    id: a.id.clone(),
                })
                .collect(),
        })),
    };
    match result {
        Ok(r) => {
            node.metrics.count(op_idx, Outcome::Ok);
            pb::Reply {
                xid: req.xid,
                zxid,
                result: Some(r),
                ..Default::default()
            }
        }
        Err(e) => {
            node.metrics.count(op_idx, Outcome::Error);
            error_reply(req.xid, zxid, &e)
        }
    }
}

fn acl_of_pb(acl: &[pb::Acl]) -> Vec<AclEntry> {
    acl.iter()
        .map(|a| AclEntry {
            perms: a.perms as u32,
            scheme: a.scheme.clone(),
            id: a.id.clone(),
        })
        .collect()
}

fn acl_pb(acl: &[AclEntry]) -> Vec<pb::Acl> {
    acl.iter()
        .map(|a| pb::Acl {
            perms: a.perms as i32,
            scheme: a.scheme.clone(),
            id: a.id.clone(),
        })
        .collect()
}

async fn establish(
    node: &Node,
    c: &pb::ConnectRequest,
) -> Result<(u64, pb::ConnectReply), CoordError> {
    // Never let a client see an older state than it already saw (a new
    // session included: ZooKeeper refuses it too).
    let deadline = Instant::now() + CATCH_UP_WAIT;
    loop {
        let zxid = node.sm.lock().tree.last_zxid();
        if zxid >= c.last_zxid_seen {
            break;
        }
        if Instant::now() > deadline {
            return Err(CoordError::unavailable(format!(
                "member {} is behind (zxid {zxid} < {}); try another member",
                node.id, c.last_zxid_seen
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cfg = &node.cfg;
    if c.session_id == 0 {
        let timeout_ms = c
            .timeout_ms
            .clamp(cfg.min_session_timeout_ms, cfg.max_session_timeout_ms);
        let password: u64 = rand::random();
        let committed = node
            .write(Txn::CreateSession {
                password,
                timeout_ms,
            })
            .await?;
        let TxnResult::SessionCreated {
            session_id,
            timeout_ms,
        } = committed.applied.result
        else {
            return Err(CoordError::new(
                Code::RuntimeInconsistency,
                "unexpected result for create session",
            ));
        };
        tracing::debug!(
            session = format!("{session_id:#x}"),
            timeout_ms,
            "session created"
        );
        let reply = pb::ConnectReply {
            session_id,
            password,
            timeout_ms,
            member_id: node.id,
            last_zxid: committed.applied.zxid,
        };
        return Ok((session_id, reply));
    }
    let sm = node.sm.lock();
    match sm.tree.session(c.session_id) {
        Some(info) if info.password == c.password => Ok((
            c.session_id,
            pb::ConnectReply {
                session_id: c.session_id,
                password: c.password,
                timeout_ms: info.timeout_ms,
                member_id: node.id,
                last_zxid: sm.tree.last_zxid(),
            },
        )),
        Some(_) => Err(CoordError::new(
            Code::SessionExpired,
            "wrong session password",
        )),
        None => Err(CoordError::new(
            Code::SessionExpired,
            format!("session {:#x} expired", c.session_id),
        )),
    }
}

fn create_kind(c: &pb::Create) -> Result<(CreateKind, bool), CoordError> {
    use pb::CreateMode as M;
    let mode = M::try_from(c.mode).map_err(|_| {
        CoordError::new(
            Code::InvalidArgument,
            format!("unknown create mode {}", c.mode),
        )
    })?;
    let ttl = || {
        if c.ttl_ms <= 0 {
            Err(CoordError::new(
                Code::InvalidArgument,
                format!("TTL nodes need ttl_ms > 0, got {}", c.ttl_ms),
            ))
        } else {
            Ok(CreateKind::Ttl(c.ttl_ms))
        }
    };
    Ok(match mode {
        M::Persistent => (CreateKind::Persistent, false),
        M::PersistentSequential => (CreateKind::Persistent, true),
        M::Ephemeral => (CreateKind::Ephemeral, false),
        M::EphemeralSequential => (CreateKind::Ephemeral, true),
        M::Container => (CreateKind::Container, false),
        M::PersistentWithTtl => (ttl()?, false),
        M::PersistentSequentialWithTtl => (ttl()?, true),
    })
}

/// Validates a write op before it goes anywhere near the log; `auth` fills
/// in an ACL's `auth` entries.
fn write_op(op: &Op, auth: &[AuthId]) -> Result<Option<WriteOp>, CoordError> {
    let check_data = |d: &[u8]| {
        if d.len() > MAX_DATA {
            Err(CoordError::new(
                Code::InvalidArgument,
                format!("data is {} bytes; the limit is {MAX_DATA}", d.len()),
            ))
        } else {
            Ok(())
        }
    };
    Ok(Some(match op {
        Op::Create(c) => {
            let (kind, sequential) = create_kind(c)?;
            path::validate_create(&c.path, sequential)?;
            check_data(&c.data)?;
            let acl = if c.acl.is_empty() {
                acl::open()
            } else {
                acl::fixup(&acl_of_pb(&c.acl), auth)?
            };
            if acl == acl::open() {
                WriteOp::Create {
                    path: c.path.clone(),
                    data: c.data.clone(),
                    kind,
                    sequential,
                }
            } else {
                WriteOp::CreateAcl {
                    path: c.path.clone(),
                    data: c.data.clone(),
                    kind,
                    sequential,
                    acl,
                }
            }
        }
        Op::SetAcl(s) => {
            path::validate(&s.path)?;
            WriteOp::SetAcl {
                path: s.path.clone(),
                acl: acl::fixup(&acl_of_pb(&s.acl), auth)?,
                version: s.version,
            }
        }
        Op::Delete(d) => {
            path::validate(&d.path)?;
            WriteOp::Delete {
                path: d.path.clone(),
                version: d.version,
            }
        }
        Op::SetData(s) => {
            path::validate(&s.path)?;
            check_data(&s.data)?;
            WriteOp::SetData {
                path: s.path.clone(),
                data: s.data.clone(),
                version: s.version,
            }
        }
        Op::Check(c) => {
            path::validate(&c.path)?;
            WriteOp::Check {
                path: c.path.clone(),
                version: c.version,
            }
        }
        _ => return Ok(None),
    }))
}

fn is_write(req: &pb::Request) -> bool {
    matches!(
        req.op,
        Some(
            Op::Create(_)
                | Op::Delete(_)
                | Op::SetData(_)
                | Op::Check(_)
                | Op::Multi(_)
                | Op::Close(_)
                | Op::SetAcl(_)
        )
    )
}

/// The op's index in `metrics::OPS`.
fn op_index(op: &Op) -> usize {
    match op {
        Op::Create(_) => 0,
        Op::Delete(_) => 1,
        Op::SetData(_) => 2,
        Op::Check(_) => 3,
        Op::GetData(_) => 4,
        Op::Exists(_) => 5,
        Op::GetChildren(_) => 6,
        Op::Multi(_) => 7,
        Op::Sync(_) => 8,
        Op::SetWatches(_) => 9,
        Op::AddWatch(_) => 10,
        Op::Close(_) => 11,
        Op::GetAcl(_) => 12,
        Op::SetAcl(_) => 13,
        Op::Auth(_) => 14,
        Op::WhoAmI(_) => 15,
        Op::GetAllChildrenNumber(_) => 16,
        Op::GetEphemerals(_) => 17,
        Op::MultiRead(_) => 18,
        Op::RemoveWatches(_) => 19,
    }
}

fn op_name(op: &Op) -> &'static str {
    OPS[op_index(op)]
}

async fn classify(node: &Node, session_id: u64, auth: &Auth, req: pb::Request) -> Pending {
    let xid = req.xid;
    let started = Instant::now();
    let Some(op) = &req.op else {
        let e = CoordError::new(Code::InvalidArgument, "request without an operation");
        return Pending::Ready(frame(Out::Reply(error_reply(xid, 0, &e))));
    };
    let op_idx = op_index(op);
    let reject = |e: CoordError| {
        node.metrics.count(op_idx, Outcome::Rejected);
        Pending::Ready(frame(Out::Reply(error_reply(xid, 0, &e))))
    };
    if node.sm.lock().tree.session(session_id).is_none() {
        return reject(CoordError::new(
            Code::SessionExpired,
            format!("session {session_id:#x} expired"),
        ));
    }
    let txn = match op {
        Op::Close(_) => {
            let rx = node
                .propose(Txn::CloseSession {
                    session_id,
                    expired: false,
                })
                .await;
            return Pending::Close { xid, rx };
        }
        Op::Multi(m) => {
            let mut ops = Vec::with_capacity(m.ops.len());
            for (i, r) in m.ops.iter().enumerate() {
                match r.op.as_ref().map(|o| write_op(o, auth)) {
                    Some(Ok(Some(w))) => ops.push(w),
                    Some(Err(e)) => {
                        return reject(CoordError::new(e.code, format!("op {i}: {}", e.message)))
                    }
                    _ => {
                        return reject(CoordError::new(
                            Code::InvalidArgument,
                            format!(
                            "op {i}: only create, delete, set_data and check may appear in a multi"
                        ),
                        ))
                    }
                }
            }
            Txn::WriteAs {
                session_id,
                auth: (**auth).clone(),
                ops,
            }
        }
        other => match write_op(other, auth) {
            Ok(Some(w)) => Txn::WriteAs {
                session_id,
                auth: (**auth).clone(),
                ops: vec![w],
            },
            Ok(None) => {
                return Pending::Read {
                    req,
                    started,
                    auth: auth.clone(),
                }
            }
            Err(e) => return reject(e),
        },
    };
    let rx = node.propose(txn).await;
    Pending::Write {
        xid,
        op: op_idx,
        started,
        rx,
    }
}

async fn respond(
    node: Arc<Node>,
    session_id: u64,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    out: Sink,
    reads: watch::Sender<usize>,
) {
    while let Some(p) = rx.recv().await {
        let f = match p {
            Pending::Ready(f) => f,
            Pending::Write {
                xid,
                op,
                started,
                rx,
            } => {
                let reply = match rx.await {
                    Ok(Ok(c)) => {
                        // Answered once applied here too, as ZooKeeper's
                        // server answers after its own apply: another
                        // session on this member then sees the write, and
                        // the write's watch events go out before its reply.
                        // Replies go out in order, so the session's next
                        // read sees this write (read-your-writes).
                        node.sm.wait_applied(c.index).await;
                        write_reply(xid, c)
                    }
                    Ok(Err(e)) => error_reply(xid, 0, &e),
                    Err(_) => {
                        error_reply(xid, 0, &CoordError::unavailable("member is shutting down"))
                    }
                };
                let outcome = if reply.code == 0 {
                    Outcome::Ok
                } else {
                    Outcome::Error
                };
                node.metrics.count(op, outcome);
                node.metrics
                    .write_seconds
                    .observe(started.elapsed().as_secs_f64());
                frame(Out::Reply(reply))
            }
            Pending::Read { req, started, auth } => {
                // Sent under the state-machine lock: no event for a watch this
                // read sets can overtake its reply.
                read(&node, session_id, &auth, req, &out).await;
                reads.send_modify(|n| *n -= 1);
                node.metrics
                    .read_seconds
                    .observe(started.elapsed().as_secs_f64());
                continue;
            }
            Pending::Close { xid, rx } => {
                let reply = match rx.await {
                    Ok(Ok(c)) => {
                        node.sm.wait_applied(c.index).await;
                        pb::Reply {
                            xid,
                            zxid: c.applied.zxid,
                            result: Some(pb::reply::Result::Empty(pb::Empty {})),
                            ..Default::default()
                        }
                    }
                    Ok(Err(e)) => error_reply(xid, 0, &e),
                    Err(_) => {
                        error_reply(xid, 0, &CoordError::unavailable("member is shutting down"))
                    }
                };
                let _ = out.send(frame(Out::Reply(reply)));
                return;
            }
        };
        if out.send(f).is_err() {
            return;
        }
    }
}

pub fn stat_pb(s: &Stat) -> pb::Stat {
    pb::Stat::from(s)
}

fn outcome_pb(o: OpOutcome) -> pb::reply::Result {
    use pb::reply::Result as R;
    match o {
        OpOutcome::Created { path, stat } => R::Create(pb::CreateResult {
            path,
            stat: Some(stat_pb(&stat)),
        }),
        OpOutcome::Set(stat) => R::Stat(stat_pb(&stat)),
        OpOutcome::Deleted | OpOutcome::Checked => R::Empty(pb::Empty {}),
    }
}

fn write_reply(xid: u64, c: Committed) -> pb::Reply {
    let zxid = c.applied.zxid;
    match c.applied.result {
        TxnResult::Ops(Ok(mut outcomes)) if outcomes.len() == 1 => pb::Reply {
            xid,
            zxid,
            result: Some(outcome_pb(outcomes.remove(0))),
            ..Default::default()
        },
        TxnResult::Ops(Ok(outcomes)) => {
            let results = outcomes
                .into_iter()
                .map(|o| pb::Reply {
                    xid,
                    zxid,
                    result: Some(outcome_pb(o)),
                    ..Default::default()
                })
                .collect();
            ok_reply(
                xid,
                zxid,
                pb::reply::Result::Multi(pb::MultiResult { results }),
            )
        }
        TxnResult::Ops(Err(f)) => {
            let mut r = error_reply(xid, zxid, &f.error);
            // A multi reports each op: the failed one's error, the rest inconsistent.
            let inconsistent = CoordError::new(
                Code::RuntimeInconsistency,
                format!("op {} failed; nothing was applied", f.index),
            );
            r.message = if f.index > 0 || r.message.is_empty() {
                format!("op {}: {}", f.index, f.error.message)
            } else {
                r.message
            };
            r.result = Some(pb::reply::Result::Multi(pb::MultiResult {
                results: (0..=f.index)
                    .map(|i| {
                        if i == f.index {
                            error_reply(xid, zxid, &f.error)
                        } else {
                            error_reply(xid, zxid, &inconsistent)
                        }
                    })
                    .collect(),
            }));
            r
        }
        other => error_reply(
            xid,
            zxid,
            &CoordError::new(
                Code::RuntimeInconsistency,
                format!("unexpected result {other:?}"),
            ),
        ),
    }
}

async fn read(node: &Node, session_id: u64, auth: &[AuthId], req: pb::Request, out: &Sink) {
    let xid = req.xid;
    let op = req.op.expect("classified as a read");
    let op_idx = op_index(&op);
    if req.linearizable || matches!(op, Op::Sync(_)) {
        if let Err(e) = node.sync().await {
            node.metrics.count(op_idx, Outcome::Error);
            let _ = out.send(frame(Out::Reply(error_reply(xid, 0, &e))));
            return;
        }
    }
    let mut sm = node.sm.lock();
    let reply = match op {
        Op::MultiRead(m) => {
            let zxid = sm.tree.last_zxid();
            let results = m
                .ops
                .into_iter()
                .map(|r| match r.op {
                    Some(o @ (Op::GetData(_) | Op::GetChildren(_))) => {
                        read_now(node, &mut sm, session_id, auth, xid, o)
                    }
                    _ => error_reply(
                        xid,
                        zxid,
                        &CoordError::new(
                            Code::InvalidArgument,
                            "only get_data and get_children may appear in a multi_read",
                        ),
                    ),
                })
                .collect();
            ok_reply(
                xid,
                zxid,
                pb::reply::Result::Multi(pb::MultiResult { results }),
            )
        }
        op => read_now(node, &mut sm, session_id, auth, xid, op),
    };
    let outcome = if reply.code == 0 {
        Outcome::Ok
    } else {
        Outcome::Error
    };
    let _ = out.send(frame(Out::Reply(reply)));
    node.metrics.watches.set(sm.watches.count() as i64);
    drop(sm);
    node.metrics.count(op_idx, outcome);
}

/// `/zookeeper/config` as ZooKeeper's dynamic configuration file has it.
fn config_text(node: &Node, sm: &crate::sm::SmInner) -> Vec<u8> {
    let mut text = String::new();
    let membership = sm.membership.membership();
    for (id, m) in membership.nodes() {
        let role = if membership.voter_ids().any(|v| v == *id) {
            "participant"
        } else {
            "observer"
        };
        let (host, raft_port) = m.raft_addr.rsplit_once(':').unwrap_or((&m.raft_addr, "0"));
        text.push_str(&format!(
            "server.{id}={host}:{raft_port}:{raft_port}:{role};{}\n",
            m.client_addr
        ));
    }
    let version = sm.last_applied.map(|l| l.index).unwrap_or(0);
    let _ = node;
    text.push_str(&format!("version={version:x}"));
    text.into_bytes()
}

fn virtual_stat(data_length: usize, num_children: i32) -> pb::Stat {
    pb::Stat {
        data_length: data_length as i32,
        num_children,
        ..Default::default()
    }
}

fn read_now(
    node: &Node,
    sm: &mut crate::sm::SmInner,
    session_id: u64,
    auth: &[AuthId],
    xid: u64,
    op: Op,
) -> pb::Reply {
    use pb::reply::Result as R;
    let zxid = sm.tree.last_zxid();
    let ok = |r: R| pb::Reply {
        xid,
        zxid,
        result: Some(r),
        ..Default::default()
    };
    let path_ok = |p: &str| path::validate(p);
    let result: Result<pb::Reply, CoordError> = (|| match op {
        Op::GetData(g) if g.path == ZOOKEEPER_CONFIG || g.path == ZOOKEEPER => {
            let data = if g.path == ZOOKEEPER {
                vec![]
            } else {
                config_text(node, sm)
            };
            let stat = virtual_stat(data.len(), (g.path == ZOOKEEPER) as i32);
            Ok(ok(R::Data(pb::DataResult {
                data,
                stat: Some(stat),
            })))
        }
        Op::Exists(e) if e.path == ZOOKEEPER_CONFIG || e.path == ZOOKEEPER => {
            let len = if e.path == ZOOKEEPER {
                0
            } else {
                config_text(node, sm).len()
            };
            Ok(ok(R::Stat(virtual_stat(len, (e.path == ZOOKEEPER) as i32))))
        }
        Op::GetChildren(g) if g.path == ZOOKEEPER_CONFIG || g.path == ZOOKEEPER => {
            let children = if g.path == ZOOKEEPER {
                vec!["config".to_string()]
            } else {
                vec![]
            };
            let stat = virtual_stat(0, children.len() as i32);
            Ok(ok(R::Children(pb::ChildrenResult {
                children,
                stat: Some(stat),
            })))
        }
        Op::GetData(g) => {
            path_ok(&g.path)?;
            sm.tree.check_acl(&g.path, perm::READ, auth)?;
            let (data, stat) = sm.tree.get_data(&g.path)?;
            if g.watch {
                sm.watches.add(session_id, &g.path, WatchKind::Data);
            }
            Ok(ok(R::Data(pb::DataResult {
                data,
                stat: Some(stat_pb(&stat)),
            })))
        }
        Op::Exists(e) => {
            path_ok(&e.path)?;
            let stat = sm.tree.stat(&e.path);
            if e.watch {
                let kind = if stat.is_some() {
                    WatchKind::Data
                } else {
                    WatchKind::Exist
                };
                sm.watches.add(session_id, &e.path, kind);
            }
            match stat {
                Some(s) => Ok(ok(R::Stat(stat_pb(&s)))),
                None => Err(crate::error::no_node(&e.path)),
            }
        }
        Op::GetChildren(g) => {
            path_ok(&g.path)?;
            sm.tree.check_acl(&g.path, perm::READ, auth)?;
            let (children, stat) = sm.tree.children(&g.path)?;
            if g.watch {
                sm.watches.add(session_id, &g.path, WatchKind::Child);
            }
            Ok(ok(R::Children(pb::ChildrenResult {
                children,
                stat: Some(stat_pb(&stat)),
            })))
        }
        Op::GetAcl(g) => {
            path_ok(&g.path)?;
            sm.tree.check_acl(&g.path, perm::READ | perm::ADMIN, auth)?;
            let (acl, stat) = sm.tree.get_acl(&g.path)?;
            Ok(ok(R::Acl(pb::AclResult {
                acl: acl_pb(&acl),
                stat: Some(stat_pb(&stat)),
            })))
        }
        Op::GetAllChildrenNumber(g) => {
            path_ok(&g.path)?;
            sm.tree.check_acl(&g.path, perm::READ, auth)?;
            let count = sm.tree.count_descendants(&g.path)?;
            Ok(ok(R::Count(pb::CountResult { count })))
        }
        Op::GetEphemerals(g) => {
            let prefix = if g.prefix.is_empty() {
                path::ROOT
            } else {
                &g.prefix
            };
            if !prefix.starts_with('/') {
                return Err(CoordError::new(
                    Code::InvalidArgument,
                    format!("invalid prefix {prefix:?}: must start with '/'"),
                ));
            }
            Ok(ok(R::Children(pb::ChildrenResult {
                children: sm.tree.ephemerals(session_id, prefix),
                stat: None,
            })))
        }
        Op::RemoveWatches(r) => {
            path_ok(&r.path)?;
            use pb::WatcherType as T;
            use WatchKind as K;
            let kinds: &[WatchKind] = match T::try_from(r.kind) {
                Ok(T::WatcherChildren) => &[K::Child],
                Ok(T::WatcherData) => &[K::Data, K::Exist],
                Ok(T::WatcherAny) => &[K::Child, K::Data, K::Exist, K::Persistent, K::Recursive],
                Ok(T::WatcherPersistent) => &[K::Persistent],
                Ok(T::WatcherPersistentRecursive) => &[K::Recursive],
                _ => {
                    return Err(CoordError::new(
                        Code::InvalidArgument,
                        format!("unknown watcher type {}", r.kind),
                    ))
                }
            };
            if sm.watches.remove(session_id, &r.path, kinds, r.check_only) {
                Ok(ok(R::Empty(pb::Empty {})))
            } else {
                Err(CoordError::new(
                    Code::NoWatcher,
                    format!("no such watch on {}", r.path),
                ))
            }
        }
        Op::Sync(s) => {
            path_ok(&s.path)?;
            Ok(ok(R::Empty(pb::Empty {})))
        }
        Op::SetWatches(w) => {
            for p in w
                .data
                .iter()
                .chain(&w.exist)
                .chain(&w.child)
                .chain(&w.persistent)
                .chain(&w.persistent_recursive)
            {
                path_ok(p)?;
            }
            sm.watches.set_watches(session_id, &w, &sm.tree);
            Ok(ok(R::Empty(pb::Empty {})))
        }
        Op::AddWatch(a) => {
            path_ok(&a.path)?;
            let kind = if a.recursive {
                WatchKind::Recursive
            } else {
                WatchKind::Persistent
            };
            sm.watches.add(session_id, &a.path, kind);
            Ok(ok(R::Empty(pb::Empty {})))
        }
        other => Err(CoordError::new(
            Code::InvalidArgument,
            format!("{} is not a read", op_name(&other)),
        )),
    })();
    result.unwrap_or_else(|e| error_reply(xid, zxid, &e))
}
