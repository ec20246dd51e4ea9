//! One client connection: the `Session` stream.
//!
//! The reader turns frames into pending replies in arrival order: writes are
//! proposed at once (so a session's writes keep their order), reads wait
//! behind any earlier write of the session and run when they reach the head
//! of the queue, after that write is applied on this member. Replies leave in
//! request order; watch events are pushed into the same outbound channel by
//! the state machine, so an event precedes any reply that observes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hstack_proto::coord as pb;
use pb::client_frame::Frame as In;
use pb::request::Op;
use pb::server_frame::Frame as Out;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Code, CoordError};
use crate::metrics::{Outcome, OPS};
use crate::node::Node;
use crate::path;
use crate::types::Committed;
use crate::types::{CreateKind, OpOutcome, Txn, TxnResult, WriteOp};
use crate::watch::WatchKind;
use hstack_coord_client::{Stat, MAX_DATA};

const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long a resuming client waits for this member to catch up to what it saw.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

type Sink = mpsc::UnboundedSender<pb::ServerFrame>;

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

fn session_error(e: CoordError) -> pb::ServerFrame {
    frame(Out::Error(pb::SessionError {
        code: e.code as i32,
        message: e.message,
    }))
}

pub async fn serve(node: Arc<Node>, mut inbound: tonic::Streaming<pb::ClientFrame>, out: Sink) {
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
            Some(In::Request(req)) => {
                let closing = matches!(req.op, Some(Op::Close(_)));
                if is_write(&req) {
                    tokio::select! {
                        _ = reads_rx.wait_for(|n| *n == 0) => {}
                        // The client is gone (the responder stopped): so are we.
                        _ = out.closed() => break,
                    }
                }
                let pending = classify(&node, session_id, req).await;
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

async fn establish(
    node: &Node,
    c: &pb::ConnectRequest,
) -> Result<(u64, pb::ConnectReply), CoordError> {
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
    // Resuming: never let the client see an older state than it already saw.
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

/// Validates a write op before it goes anywhere near the log.
fn write_op(op: &Op) -> Result<Option<WriteOp>, CoordError> {
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
            WriteOp::Create {
                path: c.path.clone(),
                data: c.data.clone(),
                kind,
                sequential,
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
    }
}

fn op_name(op: &Op) -> &'static str {
    OPS[op_index(op)]
}

async fn classify(node: &Node, session_id: u64, req: pb::Request) -> Pending {
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
                match r.op.as_ref().map(write_op) {
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
            Txn::Write { session_id, ops }
        }
        other => match write_op(other) {
            Ok(Some(w)) => Txn::Write {
                session_id,
                ops: vec![w],
            },
            Ok(None) => return Pending::Read { req, started },
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
    // The log index of this session's latest committed write. A write is
    // answered once the leader commits it; the session's next read waits
    // until this member has applied it (read-your-writes, and the write's
    // watch events before that read's reply).
    let mut floor = 0u64;
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
                        floor = floor.max(c.index);
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
            Pending::Read { req, started } => {
                node.sm.wait_applied(floor).await;
                // Sent under the state-machine lock: no event for a watch this
                // read sets can overtake its reply.
                read(&node, session_id, req, &out).await;
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
            pb::Reply {
                xid,
                zxid,
                result: Some(pb::reply::Result::Multi(pb::MultiResult { results })),
                ..Default::default()
            }
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

async fn read(node: &Node, session_id: u64, req: pb::Request, out: &Sink) {
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
    let reply = read_now(&mut sm, session_id, xid, op);
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

fn read_now(sm: &mut crate::sm::SmInner, session_id: u64, xid: u64, op: Op) -> pb::Reply {
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
        Op::GetData(g) => {
            path_ok(&g.path)?;
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
            let (children, stat) = sm.tree.children(&g.path)?;
            if g.watch {
                sm.watches.add(session_id, &g.path, WatchKind::Child);
            }
            Ok(ok(R::Children(pb::ChildrenResult {
                children,
                stat: Some(stat_pb(&stat)),
            })))
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
