//! ZooKeeper requests to `pb::ClientFrame`s and `pb::ServerFrame`s back to
//! ZooKeeper replies: the records of `zookeeper.jute` the client protocol
//! uses, opcode by opcode.

use hstack_proto::coord as pb;
use pb::request::Op;
use pb::server_frame::Frame as Out;

use super::Expect;
use crate::error::Code;
use hstack_coord_client::jute::{Malformed, Reader, Result, Writer};

/// ZooKeeper's opcodes (`ZooDefs.OpCode`).
pub mod op {
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_ACL: i32 = 6;
    pub const SET_ACL: i32 = 7;
    pub const GET_CHILDREN: i32 = 8;
    pub const SYNC: i32 = 9;
    pub const PING: i32 = 11;
    pub const GET_CHILDREN2: i32 = 12;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CHECK_WATCHES: i32 = 17;
    pub const REMOVE_WATCHES: i32 = 18;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const CREATE_TTL: i32 = 21;
    pub const MULTI_READ: i32 = 22;
    pub const AUTH: i32 = 100;
    pub const SET_WATCHES: i32 = 101;
    pub const SASL: i32 = 102;
    pub const GET_EPHEMERALS: i32 = 103;
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    pub const SET_WATCHES2: i32 = 105;
    pub const ADD_WATCH: i32 = 106;
    pub const WHO_AM_I: i32 = 107;
    pub const CLOSE: i32 = -11;
    pub const ERROR: i32 = -1;
}

/// ZooKeeper's error codes (`KeeperException.Code`).
pub mod err {
    pub const OK: i32 = 0;
    pub const SYSTEM_ERROR: i32 = -1;
    pub const RUNTIME_INCONSISTENCY: i32 = -2;
    pub const CONNECTION_LOSS: i32 = -4;
    pub const UNIMPLEMENTED: i32 = -6;
    pub const OPERATION_TIMEOUT: i32 = -7;
    pub const BAD_ARGUMENTS: i32 = -8;
    pub const NO_NODE: i32 = -101;
    pub const NO_AUTH: i32 = -102;
    pub const BAD_VERSION: i32 = -103;
    pub const NO_CHILDREN_FOR_EPHEMERALS: i32 = -108;
    pub const NODE_EXISTS: i32 = -110;
    pub const NOT_EMPTY: i32 = -111;
    pub const SESSION_EXPIRED: i32 = -112;
    pub const INVALID_ACL: i32 = -114;
    pub const AUTH_FAILED: i32 = -115;
    pub const NO_WATCHER: i32 = -121;
    pub const RECONFIG_DISABLED: i32 = -123;
}

const XID_NOTIFICATION: i32 = -1;
const XID_PING: i32 = -2;
const SYNC_CONNECTED: i32 = 3;

/// ZooKeeper's code for one of ours.
pub fn zk_code(code: i32) -> i32 {
    match Code::try_from(code) {
        Ok(Code::Ok) => err::OK,
        Ok(Code::NoNode) => err::NO_NODE,
        Ok(Code::NoAuth) => err::NO_AUTH,
        Ok(Code::BadVersion) => err::BAD_VERSION,
        Ok(Code::NoChildrenForEphemerals) => err::NO_CHILDREN_FOR_EPHEMERALS,
        Ok(Code::NodeExists) => err::NODE_EXISTS,
        Ok(Code::NotEmpty) => err::NOT_EMPTY,
        Ok(Code::SessionExpired) => err::SESSION_EXPIRED,
        Ok(Code::InvalidAcl) => err::INVALID_ACL,
        Ok(Code::AuthFailed) => err::AUTH_FAILED,
        Ok(Code::NoWatcher) => err::NO_WATCHER,
        Ok(Code::RuntimeInconsistency) => err::RUNTIME_INCONSISTENCY,
        Ok(Code::InvalidArgument | Code::InvalidPath) => err::BAD_ARGUMENTS,
        Ok(Code::Unimplemented) => err::UNIMPLEMENTED,
        Ok(Code::TimedOut) => err::OPERATION_TIMEOUT,
        Ok(
            Code::Unavailable
            | Code::NotLeader
            | Code::ShuttingDown
            | Code::ConnectionLoss
            | Code::QuorumFailed,
        ) => err::CONNECTION_LOSS,
        _ => err::SYSTEM_ERROR,
    }
}

/// ZooKeeper validates only the paths of writes: a read of a path that
/// cannot exist finds no node (we call it an invalid argument).
fn read_code(ty: i32, code: i32) -> i32 {
    let read = matches!(
        ty,
        op::EXISTS
            | op::GET_DATA
            | op::GET_CHILDREN
            | op::GET_CHILDREN2
            | op::GET_ACL
            | op::GET_ALL_CHILDREN_NUMBER
    );
    if read && code == err::BAD_ARGUMENTS {
        err::NO_NODE
    } else {
        code
    }
}

/// A request on its way: what its reply must be encoded as.
pub struct Pending {
    pub xid: i32,
    pub op: i32,
    /// sync's reply names its path.
    pub path: String,
    /// A multi's (or multiRead's) op codes, in order.
    pub sub: Vec<i32>,
}

pub enum Decoded {
    Frame(pb::ClientFrame, Pending),
    /// Answered here, without the session: an error reply (and, for an
    /// unknown opcode, the end of the connection).
    Local {
        bytes: Vec<u8>,
        close: bool,
    },
}

/// A ConnectRequest: ours, and whether the client sent the read-only flag.
pub fn connect_request(body: &[u8]) -> Result<(pb::ConnectRequest, bool)> {
    let mut r = Reader::new(body);
    let _protocol_version = r.int()?;
    let last_zxid_seen = r.long()?;
    let timeout = r.int()?;
    let session_id = r.long()?;
    let passwd = r.buffer()?;
    let read_only = match r.remaining() {
        0 => false,
        1 => {
            r.bool()?;
            true
        }
        n => {
            return Err(Malformed(format!(
                "{n} bytes after a connect request: not a connect request"
            )))
        }
    };
    if timeout < 0 || last_zxid_seen < 0 {
        return Err(Malformed("a negative timeout or zxid".into()));
    }
    Ok((
        pb::ConnectRequest {
            session_id: session_id as u64,
            password: password_of(&passwd),
            timeout_ms: timeout as u32,
            last_zxid_seen: last_zxid_seen as u64,
        },
        read_only,
    ))
}

/// Our 64-bit password travels as ZooKeeper's 16 bytes: the value, then zeros.
fn password_bytes(p: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&p.to_be_bytes());
    b
}

fn password_of(b: &[u8]) -> u64 {
    if b.len() != 16 || b[8..].iter().any(|x| *x != 0) {
        // Never a password we handed out: the resume is refused.
        return 0;
    }
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

fn acl_list(r: &mut Reader) -> Result<Vec<pb::Acl>> {
    let n = r.count()?;
    (0..n)
        .map(|_| {
            Ok(pb::Acl {
                perms: r.int()?,
                scheme: r.string()?,
                id: r.string()?,
            })
        })
        .collect()
}

fn header_only(xid: i32, zxid: i64, err: i32) -> Vec<u8> {
    let mut w = Writer::frame();
    w.int(xid).long(zxid).int(err);
    w.finish()
}

/// One create record (create, create2, createContainer, createTTL).
fn create(r: &mut Reader, ty: i32) -> Result<std::result::Result<pb::Create, i32>> {
    let path = r.string()?;
    let data = r.buffer()?;
    let acl = acl_list(r)?;
    let flags = r.int()?;
    let ttl_ms = if ty == op::CREATE_TTL { r.long()? } else { 0 };
    if acl.is_empty() {
        return Ok(Err(err::INVALID_ACL));
    }
    let mode = if ty == op::CREATE_CONTAINER { 4 } else { flags };
    let ttl_mode = mode == 5 || mode == 6;
    if !(0..=6).contains(&mode) || (ty == op::CREATE_TTL) != ttl_mode {
        return Ok(Err(err::BAD_ARGUMENTS));
    }
    Ok(Ok(pb::Create {
        path,
        data,
        mode,
        ttl_ms,
        acl,
    }))
}

fn path_watch(r: &mut Reader) -> Result<(String, bool)> {
    Ok((r.string()?, r.bool()?))
}

/// A write op of a multi (or the only op of a request).
fn write_op(r: &mut Reader, ty: i32) -> Result<std::result::Result<Op, i32>> {
    Ok(Ok(match ty {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => match create(r, ty)? {
            Ok(c) => Op::Create(c),
            Err(e) => return Ok(Err(e)),
        },
        op::DELETE => Op::Delete(pb::Delete {
            path: r.string()?,
            version: r.int()?,
        }),
        op::SET_DATA => Op::SetData(pb::SetData {
            path: r.string()?,
            data: r.buffer()?,
            version: r.int()?,
        }),
        op::CHECK => Op::Check(pb::Check {
            path: r.string()?,
            version: r.int()?,
        }),
        _ => return Ok(Err(err::BAD_ARGUMENTS)),
    }))
}

/// Decodes one request frame (after the handshake); `seq` becomes our xid.
pub fn request(body: &[u8], seq: u64) -> Result<Decoded> {
    let mut r = Reader::new(body);
    let xid = r.int()?;
    let ty = r.int()?;
    let mut pending = Pending {
        xid,
        op: ty,
        path: String::new(),
        sub: vec![],
    };
    let local = |code: i32, close: bool| {
        Ok(Decoded::Local {
            bytes: header_only(xid, 0, code),
            close,
        })
    };
    let frame = |o: Op| pb::ClientFrame {
        frame: Some(pb::client_frame::Frame::Request(pb::Request {
            xid: seq,
            op: Some(o),
            linearizable: false,
        })),
    };
    let o = match ty {
        op::PING => {
            let f = pb::ClientFrame {
                frame: Some(pb::client_frame::Frame::Ping(pb::Ping {})),
            };
            return Ok(Decoded::Frame(f, pending));
        }
        op::CREATE
        | op::CREATE2
        | op::CREATE_CONTAINER
        | op::CREATE_TTL
        | op::DELETE
        | op::SET_DATA
        | op::CHECK => match write_op(&mut r, ty)? {
            Ok(o) => o,
            Err(code) => return local(code, false),
        },
        op::EXISTS => {
            let (path, watch) = path_watch(&mut r)?;
            Op::Exists(pb::Exists { path, watch })
        }
        op::GET_DATA => {
            let (path, watch) = path_watch(&mut r)?;
            Op::GetData(pb::GetData { path, watch })
        }
        op::GET_CHILDREN | op::GET_CHILDREN2 => {
            let (path, watch) = path_watch(&mut r)?;
            Op::GetChildren(pb::GetChildren { path, watch })
        }
        op::GET_ACL => Op::GetAcl(pb::GetAcl { path: r.string()? }),
        op::SET_ACL => {
            let path = r.string()?;
            let acl = acl_list(&mut r)?;
            let version = r.int()?;
            if acl.is_empty() {
                return local(err::INVALID_ACL, false);
            }
            Op::SetAcl(pb::SetAcl { path, acl, version })
        }
        op::SYNC => {
            let path = r.string()?;
            pending.path = path.clone();
            Op::Sync(pb::Sync { path })
        }
        op::MULTI | op::MULTI_READ => {
            let mut ops = Vec::new();
            loop {
                let sub = r.int()?;
                let done = r.bool()?;
                let _err = r.int()?;
                if done {
                    break;
                }
                let o = if ty == op::MULTI_READ {
                    let (path, watch) = match sub {
                        op::GET_DATA | op::GET_CHILDREN => (r.string()?, false),
                        _ => return local(err::BAD_ARGUMENTS, false),
                    };
                    let _ = watch;
                    if sub == op::GET_DATA {
                        Op::GetData(pb::GetData { path, watch: false })
                    } else {
                        Op::GetChildren(pb::GetChildren { path, watch: false })
                    }
                } else {
                    match write_op(&mut r, sub)? {
                        Ok(o) => o,
                        Err(code) => return local(code, false),
                    }
                };
                pending.sub.push(sub);
                ops.push(pb::Request {
                    xid: seq,
                    op: Some(o),
                    linearizable: false,
                });
            }
            if ty == op::MULTI {
                Op::Multi(pb::Multi { ops })
            } else {
                Op::MultiRead(pb::MultiRead { ops })
            }
        }
        op::SET_WATCHES | op::SET_WATCHES2 => {
            let relative_zxid = r.long()?;
            let data = r.strings()?;
            let exist = r.strings()?;
            let child = r.strings()?;
            let (persistent, persistent_recursive) = if ty == op::SET_WATCHES2 {
                (r.strings()?, r.strings()?)
            } else {
                (vec![], vec![])
            };
            Op::SetWatches(pb::SetWatches {
                relative_zxid: relative_zxid.max(0) as u64,
                data,
                exist,
                child,
                persistent,
                persistent_recursive,
            })
        }
        op::ADD_WATCH => {
            let path = r.string()?;
            let mode = r.int()?;
            if !(0..=1).contains(&mode) {
                return local(err::BAD_ARGUMENTS, false);
            }
            Op::AddWatch(pb::AddWatch {
                path,
                recursive: mode == 1,
            })
        }
        op::CHECK_WATCHES | op::REMOVE_WATCHES => Op::RemoveWatches(pb::RemoveWatches {
            path: r.string()?,
            kind: r.int()?,
            check_only: ty == op::CHECK_WATCHES,
        }),
        op::AUTH => {
            let _type = r.int()?;
            Op::Auth(pb::Auth {
                scheme: r.string()?,
                auth: r.buffer()?,
            })
        }
        op::GET_EPHEMERALS => Op::GetEphemerals(pb::GetEphemerals {
            prefix: r.string()?,
        }),
        op::GET_ALL_CHILDREN_NUMBER => {
            Op::GetAllChildrenNumber(pb::GetAllChildrenNumber { path: r.string()? })
        }
        op::WHO_AM_I => Op::WhoAmI(pb::WhoAmI {}),
        op::CLOSE => Op::Close(pb::CloseSession {}),
        op::RECONFIG => return local(err::RECONFIG_DISABLED, false),
        op::SASL => return local(err::UNIMPLEMENTED, false),
        // Anything else (deleteContainer is the server's own): ZooKeeper
        // answers Unimplemented and closes the connection.
        _ => return local(err::UNIMPLEMENTED, true),
    };
    if r.remaining() != 0 {
        return Err(Malformed(format!(
            "{} bytes after a request of type {ty}",
            r.remaining()
        )));
    }
    Ok(Decoded::Frame(frame(o), pending))
}

fn stat(w: &mut Writer, s: Option<&pb::Stat>) {
    let d = pb::Stat::default();
    let s = s.unwrap_or(&d);
    w.long(s.czxid as i64)
        .long(s.mzxid as i64)
        .long(s.ctime)
        .long(s.mtime)
        .int(s.version)
        .int(s.cversion)
        .int(s.aversion)
        .long(s.ephemeral_owner as i64)
        .int(s.data_length)
        .int(s.num_children)
        .long(s.pzxid as i64);
}

/// A watch notification.
pub fn event(ev: &pb::WatchEvent) -> Vec<u8> {
    let mut w = Writer::frame();
    w.int(XID_NOTIFICATION)
        .long(ev.zxid as i64)
        .int(0)
        .int(ev.r#type)
        .int(SYNC_CONNECTED)
        .string(&ev.path);
    w.finish()
}

/// An encoded reply: its bytes, whether the connection ends after it, the
/// zxid it carried, and for the handshake the session (id, timeout).
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub close: bool,
    pub zxid: i64,
    pub session: Option<(u64, u32)>,
}

fn encoded(bytes: Vec<u8>, close: bool, zxid: i64) -> Option<Encoded> {
    Some(Encoded {
        bytes,
        close,
        zxid,
        session: None,
    })
}

/// The body of a successful single op's reply.
fn result_body(w: &mut Writer, ty: i32, res: Option<&pb::reply::Result>, path: &str) {
    use pb::reply::Result as R;
    match (ty, res) {
        (op::CREATE, Some(R::Create(c))) => {
            w.string(&c.path);
        }
        (op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL, Some(R::Create(c))) => {
            w.string(&c.path);
            stat(w, c.stat.as_ref());
        }
        (op::EXISTS | op::SET_DATA | op::SET_ACL, Some(R::Stat(s))) => stat(w, Some(s)),
        (op::GET_DATA, Some(R::Data(d))) => {
            w.buffer(&d.data);
            stat(w, d.stat.as_ref());
        }
        (op::GET_CHILDREN, Some(R::Children(c))) => {
            w.strings(&c.children);
        }
        (op::GET_CHILDREN2, Some(R::Children(c))) => {
            w.strings(&c.children);
            stat(w, c.stat.as_ref());
        }
        (op::GET_EPHEMERALS, Some(R::Children(c))) => {
            w.strings(&c.children);
        }
        (op::GET_ACL, Some(R::Acl(a))) => {
            w.int(a.acl.len() as i32);
            for e in &a.acl {
                w.int(e.perms).string(&e.scheme).string(&e.id);
            }
            stat(w, a.stat.as_ref());
        }
        (op::GET_ALL_CHILDREN_NUMBER, Some(R::Count(c))) => {
            w.int(c.count);
        }
        (op::WHO_AM_I, Some(R::WhoAmI(who))) => {
            w.int(who.ids.len() as i32);
            for id in &who.ids {
                w.string(&id.scheme).string(&id.id);
            }
        }
        (op::SYNC, _) => {
            w.string(path);
        }
        // addWatch answers with an ErrorResponse (its code, again).
        (op::ADD_WATCH, _) => {
            w.int(0);
        }
        // delete, check, setWatches, addWatch, removeWatches, auth, close.
        _ => {}
    }
}

fn multi_header(w: &mut Writer, ty: i32, done: bool, err: i32) {
    w.int(ty).bool(done).int(err);
}

fn multi_body(w: &mut Writer, p: &Pending, reply: &pb::Reply) {
    // A multi of one op that succeeded comes back as that op's reply.
    let results: &[pb::Reply] = match &reply.result {
        Some(pb::reply::Result::Multi(m)) => &m.results,
        _ => std::slice::from_ref(reply),
    };
    let failed = reply.code != 0;
    for (i, ty) in p.sub.iter().enumerate() {
        let r = results.get(i);
        let code = match r {
            Some(r) => zk_code(r.code),
            // After a failed op: nothing ran.
            None => err::RUNTIME_INCONSISTENCY,
        };
        // Before the failed op, ZooKeeper reports Ok as an error result
        // (rolled back); our result for those is RuntimeInconsistency.
        let code = match r {
            Some(r) if failed && i < results.len() - 1 && r.code != 0 => err::OK,
            _ => code,
        };
        if failed || code != err::OK {
            multi_header(w, op::ERROR, false, code);
            w.int(code);
        } else {
            multi_header(w, *ty, false, 0);
            let res = r.and_then(|r| r.result.as_ref());
            result_body(w, *ty, res, "");
        }
    }
    multi_header(w, -1, true, -1);
}

/// Encodes what the session sent back for `exp`; None ends the connection
/// without a word (a refused handshake).
pub fn reply(exp: Expect, frame: Out, zxid_now: &dyn Fn() -> u64) -> Option<Encoded> {
    match (exp, frame) {
        (Expect::Connect { read_only }, Out::Connected(c)) => {
            let mut w = Writer::frame();
            w.int(0)
                .int(c.timeout_ms as i32)
                .long(c.session_id as i64)
                .buffer(&password_bytes(c.password));
            if read_only {
                w.bool(false);
            }
            Some(Encoded {
                bytes: w.finish(),
                close: false,
                zxid: c.last_zxid as i64,
                session: Some((c.session_id, c.timeout_ms)),
            })
        }
        (Expect::Connect { read_only }, Out::Error(e)) if e.code == Code::SessionExpired as i32 => {
            // ZooKeeper's answer to a resume of an expired session: a zero
            // timeout and session id, then the connection closes.
            let mut w = Writer::frame();
            w.int(0).int(0).long(0).buffer(&[0u8; 16]);
            if read_only {
                w.bool(false);
            }
            encoded(w.finish(), true, 0)
        }
        (Expect::Connect { .. }, _) => None,
        (Expect::Reply(_), Out::Pong(pong)) => encoded(
            header_only(XID_PING, pong.zxid as i64, 0),
            false,
            pong.zxid as i64,
        ),
        (Expect::Reply(p), Out::Reply(r)) => {
            let zxid = if r.zxid > 0 { r.zxid } else { zxid_now() } as i64;
            let code = read_code(p.op, zk_code(r.code));
            let mut w = Writer::frame();
            if p.op == op::MULTI
                && (r.code == 0 || matches!(r.result, Some(pb::reply::Result::Multi(_))))
            {
                w.int(p.xid).long(zxid).int(0);
                multi_body(&mut w, &p, &r);
                return encoded(w.finish(), false, zxid);
            }
            w.int(p.xid).long(zxid).int(code);
            if code == err::OK {
                if p.op == op::MULTI_READ {
                    multi_read_body(&mut w, &p, &r);
                } else {
                    result_body(&mut w, p.op, r.result.as_ref(), &p.path);
                }
            }
            // A refused auth ends the connection, as ZooKeeper's does.
            let close = p.op == op::CLOSE || (p.op == op::AUTH && code != err::OK);
            encoded(w.finish(), close, zxid)
        }
        (Expect::Reply(p), Out::Error(e)) => {
            // The session ended under the request (expired).
            let code = zk_code(e.code);
            encoded(header_only(p.xid, zxid_now() as i64, code), true, 0)
        }
        (Expect::Reply(_), _) | (Expect::Local { .. }, _) => None,
    }
}

fn multi_read_body(w: &mut Writer, p: &Pending, reply: &pb::Reply) {
    let results: &[pb::Reply] = match &reply.result {
        Some(pb::reply::Result::Multi(m)) => &m.results,
        _ => &[],
    };
    for (ty, r) in p.sub.iter().zip(results) {
        let code = read_code(*ty, zk_code(r.code));
        if code != err::OK {
            multi_header(w, op::ERROR, false, code);
            w.int(code);
        } else {
            multi_header(w, *ty, false, 0);
            result_body(w, *ty, r.result.as_ref(), "");
        }
    }
    multi_header(w, -1, true, -1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(xid: i32, ty: i32, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::default();
        w.int(xid).int(ty);
        body(&mut w);
        w.buf
    }

    #[test]
    fn a_create_becomes_ours() {
        let f = frame_of(7, op::CREATE, |w| {
            w.string("/a")
                .buffer(b"x")
                .int(1)
                .int(31)
                .string("world")
                .string("anyone")
                .int(3);
        });
        let Decoded::Frame(frame, p) = request(&f, 1).unwrap() else {
            panic!("local")
        };
        assert_eq!((p.xid, p.op), (7, op::CREATE));
        let Some(pb::client_frame::Frame::Request(req)) = frame.frame else {
            panic!()
        };
        let Some(Op::Create(c)) = req.op else {
            panic!()
        };
        assert_eq!((c.path.as_str(), c.mode, c.acl.len()), ("/a", 3, 1));
    }

    #[test]
    fn bad_requests_get_zookeepers_answers() {
        // Unknown opcode: Unimplemented, then the connection closes.
        let Decoded::Local { bytes, close } = request(&frame_of(1, 999, |_| {}), 1).unwrap() else {
            panic!()
        };
        assert!(close);
        assert_eq!(&bytes[16..20], &err::UNIMPLEMENTED.to_be_bytes());
        // An empty ACL: InvalidACL, the connection stays.
        let f = frame_of(2, op::CREATE, |w| {
            w.string("/a").buffer(b"").int(0).int(0);
        });
        let Decoded::Local { bytes, close } = request(&f, 1).unwrap() else {
            panic!()
        };
        assert!(!close);
        assert_eq!(&bytes[16..20], &err::INVALID_ACL.to_be_bytes());
        // Truncated and trailing garbage: malformed (the connection closes).
        assert!(request(&[0, 0, 0, 1, 0, 0, 0, 4, 0, 0], 1).is_err());
        let mut f = frame_of(3, op::GET_DATA, |w| {
            w.string("/a").bool(false);
        });
        f.push(9);
        assert!(request(&f, 1).is_err());
    }

    #[test]
    fn connect_round_trip() {
        let mut w = Writer::default();
        w.int(0)
            .long(5)
            .int(30000)
            .long(0x77)
            .buffer(&password_bytes(42))
            .bool(false);
        let (c, ro) = connect_request(&w.buf).unwrap();
        assert!(ro);
        assert_eq!(
            (c.session_id, c.password, c.timeout_ms, c.last_zxid_seen),
            (0x77, 42, 30000, 5)
        );
        assert_eq!(password_of(&[1; 16]), 0);
    }
}
