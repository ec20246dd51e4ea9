//! The znode tree: ZooKeeper's data model as a deterministic state machine.
//! `apply` is the only mutator; given the same transactions in the same order
//! every member reaches the same tree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::acl::{self, perm};
use crate::error::{Code, CoordError, Result};
use crate::path;
use crate::types::{AclEntry, AuthId, CreateKind, OpFailure, OpOutcome, Txn, TxnResult, WriteOp};
pub use hstack_coord_client::{Stat, MAX_DATA};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Znode {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    stat: Stat,
    kind: CreateKind,
    children: BTreeSet<String>,
    /// Index into `DataTree::acls` (0: world:anyone, every permission).
    acl: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionInfo {
    pub timeout_ms: u32,
    pub password: u64,
    pub ephemerals: BTreeSet<String>,
}

/// What changed, for the watch manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created(String),
    Deleted(String),
    DataChanged(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataTree {
    nodes: HashMap<String, Znode>,
    sessions: BTreeMap<u64, SessionInfo>,
    /// Containers and TTL nodes: the candidates the leader's reaper checks.
    reapable: BTreeSet<String>,
    last_zxid: u64,
    /// Every distinct ACL a node has had, interned (nodes share a handful);
    /// entry 0 is world:anyone. Never shrinks: a failed multi may leave an
    /// unused entry, identically on every member.
    acls: Vec<Vec<AclEntry>>,
}

/// Format 1 of the snapshot payload's tree (before ACLs): every node open.
#[derive(Deserialize)]
pub struct DataTreeV1 {
    nodes: HashMap<String, ZnodeV1>,
    sessions: BTreeMap<u64, SessionInfo>,
    reapable: BTreeSet<String>,
    last_zxid: u64,
}

#[derive(Deserialize)]
struct ZnodeV1 {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    stat: Stat,
    kind: CreateKind,
    children: BTreeSet<String>,
}

impl From<DataTreeV1> for DataTree {
    fn from(v1: DataTreeV1) -> Self {
        let nodes = v1
            .nodes
            .into_iter()
            .map(|(p, n)| {
                let node = Znode {
                    data: n.data,
                    stat: n.stat,
                    kind: n.kind,
                    children: n.children,
                    acl: 0,
                };
                (p, node)
            })
            .collect();
        Self {
            nodes,
            sessions: v1.sessions,
            reapable: v1.reapable,
            last_zxid: v1.last_zxid,
            acls: vec![acl::open()],
        }
    }
}

impl Default for DataTree {
    fn default() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            path::ROOT.to_string(),
            Znode {
                data: vec![],
                stat: Stat::default(),
                kind: CreateKind::Persistent,
                children: BTreeSet::new(),
                acl: 0,
            },
        );
        Self {
            nodes,
            sessions: BTreeMap::new(),
            reapable: BTreeSet::new(),
            last_zxid: 0,
            acls: vec![acl::open()],
        }
    }
}

/// Records the first prior value of everything a multi touches, so a failed
/// multi leaves the tree exactly as it was.
#[derive(Default)]
///
/// Only a multi needs it: a single op checks everything before it changes
/// anything, and saving prior values is not free (a parent's snapshot holds
/// its whole child list).
struct Undo {
    enabled: bool,
    nodes: Vec<(String, Option<Znode>)>,
    sessions: Vec<(u64, Option<SessionInfo>)>,
    reapable: Vec<(String, bool)>,
}

impl DataTree {
    pub fn last_zxid(&self) -> u64 {
        self.last_zxid
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn session(&self, id: u64) -> Option<&SessionInfo> {
        self.sessions.get(&id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = (u64, &SessionInfo)> {
        self.sessions.iter().map(|(k, v)| (*k, v))
    }

    // ---- reads ----

    pub fn get_data(&self, p: &str) -> Result<(Vec<u8>, Stat)> {
        let n = self.nodes.get(p).ok_or_else(|| crate::error::no_node(p))?;
        Ok((n.data.clone(), n.stat.clone()))
    }

    pub fn stat(&self, p: &str) -> Option<Stat> {
        self.nodes.get(p).map(|n| n.stat.clone())
    }

    pub fn children(&self, p: &str) -> Result<(Vec<String>, Stat)> {
        let n = self.nodes.get(p).ok_or_else(|| crate::error::no_node(p))?;
        Ok((n.children.iter().cloned().collect(), n.stat.clone()))
    }

    /// A node's ACL and stat.
    pub fn get_acl(&self, p: &str) -> Result<(Vec<AclEntry>, Stat)> {
        let n = self.nodes.get(p).ok_or_else(|| crate::error::no_node(p))?;
        Ok((self.acls[n.acl as usize].clone(), n.stat.clone()))
    }

    /// NoAuth unless `auth` holds one of `perm` on `p`; NoNode if it is missing.
    pub fn check_acl(&self, p: &str, perm: u32, auth: &[AuthId]) -> Result<()> {
        let n = self.nodes.get(p).ok_or_else(|| crate::error::no_node(p))?;
        acl::check(&self.acls[n.acl as usize], perm, auth, p)
    }

    /// How many nodes lie below `p` (all descendants, not `p` itself).
    pub fn count_descendants(&self, p: &str) -> Result<i32> {
        self.nodes.get(p).ok_or_else(|| crate::error::no_node(p))?;
        if p == path::ROOT {
            return Ok(self.nodes.len() as i32 - 1);
        }
        let prefix = format!("{p}/");
        Ok(self.nodes.keys().filter(|k| k.starts_with(&prefix)).count() as i32)
    }

    /// The session's ephemeral nodes whose path starts with `prefix`.
    pub fn ephemerals(&self, session: u64, prefix: &str) -> Vec<String> {
        self.sessions
            .get(&session)
            .map(|s| {
                s.ephemerals
                    .iter()
                    .filter(|p| prefix == path::ROOT || p.starts_with(prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn intern_acl(&mut self, acl: &[AclEntry]) -> u32 {
        match self.acls.iter().position(|a| a == acl) {
            Some(i) => i as u32,
            None => {
                self.acls.push(acl.to_vec());
                (self.acls.len() - 1) as u32
            }
        }
    }

    /// Containers with no children that once had some, and TTL nodes with no
    /// children not modified for their TTL: (path, version, cversion).
    pub fn reap_candidates(&self, now_ms: i64) -> Vec<(String, i32, i32)> {
        let mut out = Vec::new();
        for p in &self.reapable {
            let Some(n) = self.nodes.get(p) else { continue };
            if !n.children.is_empty() {
                continue;
            }
            let due = match n.kind {
                CreateKind::Container => n.stat.cversion > 0,
                CreateKind::Ttl(ttl) => now_ms - n.stat.mtime > ttl,
                _ => false,
            };
            if due {
                out.push((p.clone(), n.stat.version, n.stat.cversion));
            }
        }
        out
    }

    // ---- writes ----

    /// Applies one transaction at `time_ms`, appending what changed to `changes`.
    pub fn apply(
        &mut self,
        txn: &Txn,
        time_ms: i64,
        changes: &mut Vec<Change>,
    ) -> (u64, TxnResult) {
        self.last_zxid += 1;
        let zxid = self.last_zxid;
        let result = match txn {
            Txn::CreateSession {
                password,
                timeout_ms,
            } => {
                // The zxid is unique and increasing, so it names the session.
                self.sessions.insert(
                    zxid,
                    SessionInfo {
                        timeout_ms: *timeout_ms,
                        password: *password,
                        ephemerals: BTreeSet::new(),
                    },
                );
                TxnResult::SessionCreated {
                    session_id: zxid,
                    timeout_ms: *timeout_ms,
                }
            }
            Txn::CloseSession { session_id, .. } => match self.sessions.remove(session_id) {
                Some(info) => {
                    // Deepest first cannot matter (ephemerals have no children),
                    // but a stable order keeps every member's events identical.
                    for p in info.ephemerals.iter() {
                        self.remove_node(p, zxid, time_ms, None);
                        changes.push(Change::Deleted(p.clone()));
                    }
                    TxnResult::SessionClosed { existed: true }
                }
                None => TxnResult::SessionClosed { existed: false },
            },
            Txn::Write { session_id, ops } => {
                self.apply_ops(*session_id, None, ops, zxid, time_ms, changes)
            }
            Txn::WriteAs {
                session_id,
                auth,
                ops,
            } => self.apply_ops(*session_id, Some(auth), ops, zxid, time_ms, changes),
            Txn::Reap {
                path: p,
                version,
                cversion,
            } => {
                let due = matches!(self.nodes.get(p), Some(n) if n.children.is_empty()
                    && n.stat.version == *version && n.stat.cversion == *cversion);
                if due {
                    self.remove_node(p, zxid, time_ms, None);
                    changes.push(Change::Deleted(p.clone()));
                }
                TxnResult::Reaped(due)
            }
        };
        (zxid, result)
    }

    /// One request's ops, all or nothing. `auth` None: a log entry from
    /// before ACLs (nothing to check).
    fn apply_ops(
        &mut self,
        session_id: u64,
        auth: Option<&[AuthId]>,
        ops: &[WriteOp],
        zxid: u64,
        time_ms: i64,
        changes: &mut Vec<Change>,
    ) -> TxnResult {
        let mut undo = Undo {
            enabled: ops.len() > 1,
            ..Undo::default()
        };
        let mut local = Vec::new();
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut failure = None;
        for (index, op) in ops.iter().enumerate() {
            match self.apply_op(session_id, auth, op, zxid, time_ms, &mut undo, &mut local) {
                Ok(o) => outcomes.push(o),
                Err(error) => {
                    failure = Some(OpFailure { index, error });
                    break;
                }
            }
        }
        match failure {
            None => {
                changes.extend(local);
                TxnResult::Ops(Ok(outcomes))
            }
            Some(f) => {
                self.rollback(undo);
                TxnResult::Ops(Err(f))
            }
        }
    }

    fn check(&self, auth: Option<&[AuthId]>, p: &str, perm: u32) -> Result<()> {
        match auth {
            Some(auth) => self.check_acl(p, perm, auth),
            None => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_op(
        &mut self,
        session_id: u64,
        auth: Option<&[AuthId]>,
        op: &WriteOp,
        zxid: u64,
        time_ms: i64,
        undo: &mut Undo,
        changes: &mut Vec<Change>,
    ) -> Result<OpOutcome> {
        match op {
            WriteOp::Create {
                path: p,
                data,
                kind,
                sequential,
            } => self.create(
                session_id,
                auth,
                p,
                data,
                *kind,
                *sequential,
                None,
                zxid,
                time_ms,
                undo,
                changes,
            ),
            WriteOp::CreateAcl {
                path: p,
                data,
                kind,
                sequential,
                acl,
            } => self.create(
                session_id,
                auth,
                p,
                data,
                *kind,
                *sequential,
                Some(acl),
                zxid,
                time_ms,
                undo,
                changes,
            ),
            WriteOp::SetAcl {
                path: p,
                acl,
                version,
            } => {
                path::validate(p)?;
                let n = self.nodes.get(p).ok_or_else(|| crate::error::no_node(p))?;
                self.check(auth, p, perm::ADMIN)?;
                check_version(p, *version, n.stat.aversion)?;
                self.save_node(undo, p);
                let idx = self.intern_acl(acl);
                let n = self.nodes.get_mut(p).expect("checked above");
                n.acl = idx;
                n.stat.aversion += 1;
                Ok(OpOutcome::Set(n.stat.clone()))
            }
            WriteOp::Delete { path: p, version } => {
                path::validate(p)?;
                if p == path::ROOT {
                    return Err(CoordError::new(Code::InvalidArgument, "cannot delete /"));
                }
                self.check(auth, path::parent(p), perm::DELETE)?;
                let n = self.nodes.get(p).ok_or_else(|| crate::error::no_node(p))?;
                check_version(p, *version, n.stat.version)?;
                if !n.children.is_empty() {
                    return Err(CoordError::new(
                        Code::NotEmpty,
                        format!("{p} has {} children", n.children.len()),
                    ));
                }
                self.remove_node(p, zxid, time_ms, Some(undo));
                changes.push(Change::Deleted(p.clone()));
                Ok(OpOutcome::Deleted)
            }
            WriteOp::SetData {
                path: p,
                data,
                version,
            } => {
                path::validate(p)?;
                if data.len() > MAX_DATA {
                    return Err(too_large(data.len()));
                }
                let n = self.nodes.get(p).ok_or_else(|| crate::error::no_node(p))?;
                self.check(auth, p, perm::WRITE)?;
                check_version(p, *version, n.stat.version)?;
                self.save_node(undo, p);
                let n = self.nodes.get_mut(p).expect("checked above");
                n.data = data.clone();
                n.stat.version += 1;
                n.stat.mzxid = zxid;
                n.stat.mtime = time_ms;
                n.stat.data_length = data.len() as i32;
                changes.push(Change::DataChanged(p.clone()));
                Ok(OpOutcome::Set(n.stat.clone()))
            }
            WriteOp::Check { path: p, version } => {
                path::validate(p)?;
                let n = self.nodes.get(p).ok_or_else(|| crate::error::no_node(p))?;
                self.check(auth, p, perm::READ)?;
                check_version(p, *version, n.stat.version)?;
                Ok(OpOutcome::Checked)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        session_id: u64,
        auth: Option<&[AuthId]>,
        p: &String,
        data: &[u8],
        kind: CreateKind,
        sequential: bool,
        acl: Option<&[AclEntry]>,
        zxid: u64,
        time_ms: i64,
        undo: &mut Undo,
        changes: &mut Vec<Change>,
    ) -> Result<OpOutcome> {
        let (kind, sequential) = (&kind, &sequential);
        {
            {
                path::validate_create(p, *sequential)?;
                if data.len() > MAX_DATA {
                    return Err(too_large(data.len()));
                }
                if p == path::ROOT {
                    return Err(CoordError::new(Code::NodeExists, "/ always exists"));
                }
                let parent_path = if *sequential && p.ends_with('/') {
                    &p[..p.len() - 1]
                } else {
                    path::parent(p)
                };
                let parent_path = if parent_path.is_empty() {
                    path::ROOT
                } else {
                    parent_path
                };
                let parent = self.nodes.get(parent_path).ok_or_else(|| {
                    CoordError::new(Code::NoNode, format!("parent {parent_path} does not exist"))
                })?;
                if let Some(auth) = auth {
                    acl::check(
                        &self.acls[parent.acl as usize],
                        perm::CREATE,
                        auth,
                        parent_path,
                    )?;
                }
                if parent.kind == CreateKind::Ephemeral {
                    return Err(CoordError::new(
                        Code::NoChildrenForEphemerals,
                        format!("{parent_path} is ephemeral and cannot have children"),
                    ));
                }
                let full = if *sequential {
                    format!("{p}{:010}", parent.stat.cversion)
                } else {
                    p.clone()
                };
                if self.nodes.contains_key(&full) {
                    return Err(CoordError::new(
                        Code::NodeExists,
                        format!("{full} already exists"),
                    ));
                }
                if *kind == CreateKind::Ephemeral && !self.sessions.contains_key(&session_id) {
                    return Err(CoordError::new(
                        Code::SessionExpired,
                        format!("session {session_id:#x} is not open"),
                    ));
                }
                if let CreateKind::Ttl(ttl) = kind {
                    if *ttl <= 0 {
                        return Err(CoordError::new(
                            Code::InvalidArgument,
                            format!("TTL must be positive, got {ttl}"),
                        ));
                    }
                }
                let stat = Stat {
                    czxid: zxid,
                    mzxid: zxid,
                    pzxid: zxid,
                    ctime: time_ms,
                    mtime: time_ms,
                    ephemeral_owner: if *kind == CreateKind::Ephemeral {
                        session_id
                    } else {
                        0
                    },
                    data_length: data.len() as i32,
                    ..Stat::default()
                };
                let acl = match acl {
                    Some(a) => self.intern_acl(a),
                    None => 0,
                };
                self.save_node(undo, parent_path);
                self.save_node(undo, &full);
                let parent = self.nodes.get_mut(parent_path).expect("checked above");
                parent.children.insert(path::name(&full).to_string());
                parent.stat.cversion += 1;
                parent.stat.pzxid = zxid;
                parent.stat.num_children += 1;
                self.nodes.insert(
                    full.clone(),
                    Znode {
                        data: data.to_vec(),
                        stat: stat.clone(),
                        kind: *kind,
                        children: BTreeSet::new(),
                        acl,
                    },
                );
                match kind {
                    CreateKind::Ephemeral => {
                        self.save_session(undo, session_id);
                        if let Some(s) = self.sessions.get_mut(&session_id) {
                            s.ephemerals.insert(full.clone());
                        }
                    }
                    CreateKind::Container | CreateKind::Ttl(_) => {
                        undo.reapable.push((full.clone(), false));
                        self.reapable.insert(full.clone());
                    }
                    CreateKind::Persistent => {}
                }
                changes.push(Change::Created(full.clone()));
                Ok(OpOutcome::Created { path: full, stat })
            }
        }
    }

    fn remove_node(&mut self, p: &str, zxid: u64, _time_ms: i64, mut undo: Option<&mut Undo>) {
        let parent_path = path::parent(p).to_string();
        if let Some(u) = undo.as_deref_mut() {
            self.save_node(u, p);
            self.save_node(u, &parent_path);
        }
        let Some(node) = self.nodes.remove(p) else {
            return;
        };
        if let Some(parent) = self.nodes.get_mut(&parent_path) {
            parent.children.remove(path::name(p));
            parent.stat.cversion += 1;
            parent.stat.pzxid = zxid;
            parent.stat.num_children -= 1;
        }
        if node.stat.ephemeral_owner != 0 {
            if let Some(u) = undo.as_deref_mut() {
                self.save_session(u, node.stat.ephemeral_owner);
            }
            if let Some(s) = self.sessions.get_mut(&node.stat.ephemeral_owner) {
                s.ephemerals.remove(p);
            }
        }
        if self.reapable.remove(p) {
            if let Some(u) = undo {
                u.reapable.push((p.to_string(), true));
            }
        }
    }

    fn save_node(&self, undo: &mut Undo, p: &str) {
        if undo.enabled && !undo.nodes.iter().any(|(q, _)| q == p) {
            undo.nodes.push((p.to_string(), self.nodes.get(p).cloned()));
        }
    }

    fn save_session(&self, undo: &mut Undo, id: u64) {
        if undo.enabled && !undo.sessions.iter().any(|(q, _)| *q == id) {
            undo.sessions.push((id, self.sessions.get(&id).cloned()));
        }
    }

    fn rollback(&mut self, undo: Undo) {
        for (p, prior) in undo.nodes.into_iter().rev() {
            match prior {
                Some(n) => self.nodes.insert(p, n),
                None => self.nodes.remove(&p),
            };
        }
        for (id, prior) in undo.sessions.into_iter().rev() {
            match prior {
                Some(s) => self.sessions.insert(id, s),
                None => self.sessions.remove(&id),
            };
        }
        for (p, was_present) in undo.reapable.into_iter().rev() {
            if was_present {
                self.reapable.insert(p);
            } else {
                self.reapable.remove(&p);
            }
        }
    }
}

fn check_version(p: &str, expected: i32, actual: i32) -> Result<()> {
    if expected != -1 && expected != actual {
        return Err(CoordError::new(
            Code::BadVersion,
            format!("{p} is at version {actual}, not {expected}"),
        ));
    }
    Ok(())
}

fn too_large(len: usize) -> CoordError {
    CoordError::new(
        Code::InvalidArgument,
        format!("data is {len} bytes; the limit is {MAX_DATA}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(p: &str, kind: CreateKind, seq: bool) -> WriteOp {
        WriteOp::Create {
            path: p.into(),
            data: b"d".to_vec(),
            kind,
            sequential: seq,
        }
    }

    fn write(
        t: &mut DataTree,
        sid: u64,
        ops: Vec<WriteOp>,
    ) -> (u64, Result<Vec<OpOutcome>, OpFailure>, Vec<Change>) {
        let mut ch = vec![];
        let (z, r) = t.apply(
            &Txn::Write {
                session_id: sid,
                ops,
            },
            1000,
            &mut ch,
        );
        match r {
            TxnResult::Ops(r) => (z, r, ch),
            other => panic!("{other:?}"),
        }
    }

    fn session(t: &mut DataTree) -> u64 {
        match t
            .apply(
                &Txn::CreateSession {
                    password: 7,
                    timeout_ms: 5000,
                },
                0,
                &mut vec![],
            )
            .1
        {
            TxnResult::SessionCreated { session_id, .. } => session_id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_sets_stat_and_parent() {
        let mut t = DataTree::default();
        let (z, r, ch) = write(&mut t, 0, vec![create("/a", CreateKind::Persistent, false)]);
        assert!(r.is_ok());
        assert_eq!(ch, vec![Change::Created("/a".into())]);
        let (data, st) = t.get_data("/a").unwrap();
        assert_eq!(data, b"d");
        assert_eq!(
            (st.czxid, st.mzxid, st.pzxid, st.version, st.data_length),
            (z, z, z, 0, 1)
        );
        let root = t.stat("/").unwrap();
        assert_eq!((root.cversion, root.num_children, root.pzxid), (1, 1, z));
    }

    #[test]
    fn sequential_names_use_parent_cversion() {
        let mut t = DataTree::default();
        let _ = write(&mut t, 0, vec![create("/q", CreateKind::Persistent, false)]);
        let (_, r, _) = write(
            &mut t,
            0,
            vec![create("/q/n-", CreateKind::Persistent, true)],
        );
        assert_eq!(
            r.unwrap()[0],
            OpOutcome::Created {
                path: "/q/n-0000000000".into(),
                stat: t.stat("/q/n-0000000000").unwrap()
            }
        );
        let _ = write(
            &mut t,
            0,
            vec![WriteOp::Delete {
                path: "/q/n-0000000000".into(),
                version: -1,
            }],
        );
        let (_, r, _) = write(&mut t, 0, vec![create("/q/", CreateKind::Persistent, true)]);
        // one create and one delete bumped cversion to 2
        assert!(
            matches!(&r.unwrap()[0], OpOutcome::Created { path, .. } if path == "/q/0000000002")
        );
    }

    #[test]
    fn version_rules() {
        let mut t = DataTree::default();
        let _ = write(&mut t, 0, vec![create("/a", CreateKind::Persistent, false)]);
        let (_, r, _) = write(
            &mut t,
            0,
            vec![WriteOp::SetData {
                path: "/a".into(),
                data: vec![1],
                version: 3,
            }],
        );
        assert_eq!(r.unwrap_err().error.code, Code::BadVersion);
        let (z, r, _) = write(
            &mut t,
            0,
            vec![WriteOp::SetData {
                path: "/a".into(),
                data: vec![1],
                version: 0,
            }],
        );
        match &r.unwrap()[0] {
            OpOutcome::Set(st) => assert_eq!((st.version, st.mzxid), (1, z)),
            o => panic!("{o:?}"),
        }
        let (_, r, _) = write(
            &mut t,
            0,
            vec![WriteOp::Delete {
                path: "/a".into(),
                version: 0,
            }],
        );
        assert_eq!(r.unwrap_err().error.code, Code::BadVersion);
        let (_, r, _) = write(
            &mut t,
            0,
            vec![WriteOp::Delete {
                path: "/a".into(),
                version: 1,
            }],
        );
        assert!(r.is_ok());
        assert!(t.stat("/a").is_none());
    }

    #[test]
    fn bad_writes_change_nothing() {
        let mut t = DataTree::default();
        let sid = session(&mut t);
        let _ = write(
            &mut t,
            sid,
            vec![create("/e", CreateKind::Ephemeral, false)],
        );
        let _ = write(
            &mut t,
            0,
            vec![
                create("/p", CreateKind::Persistent, false),
                create("/p/c", CreateKind::Persistent, false),
            ],
        );
        let before = format!(
            "{:?}",
            (t.children("/").unwrap(), t.stat("/p"), t.stat("/e"))
        );
        let cases = [
            (
                create("/e/child", CreateKind::Persistent, false),
                Code::NoChildrenForEphemerals,
            ),
            (
                create("/missing/x", CreateKind::Persistent, false),
                Code::NoNode,
            ),
            (
                create("/p", CreateKind::Persistent, false),
                Code::NodeExists,
            ),
            (
                WriteOp::Delete {
                    path: "/p".into(),
                    version: -1,
                },
                Code::NotEmpty,
            ),
            (
                WriteOp::SetData {
                    path: "/p".into(),
                    data: vec![0; MAX_DATA + 1],
                    version: -1,
                },
                Code::InvalidArgument,
            ),
            (
                create("/x", CreateKind::Ephemeral, false),
                Code::SessionExpired,
            ),
            (
                create("a", CreateKind::Persistent, false),
                Code::InvalidArgument,
            ),
            (
                WriteOp::Delete {
                    path: "/".into(),
                    version: -1,
                },
                Code::InvalidArgument,
            ),
        ];
        for (op, code) in cases {
            let (_, r, ch) = write(&mut t, 0, vec![op.clone()]);
            assert_eq!(r.unwrap_err().error.code, code, "{op:?}");
            assert!(ch.is_empty());
        }
        let after = format!(
            "{:?}",
            (t.children("/").unwrap(), t.stat("/p"), t.stat("/e"))
        );
        assert_eq!(before, after);
    }

    #[test]
    fn multi_is_all_or_nothing() {
        let mut t = DataTree::default();
        let sid = session(&mut t);
        let _ = write(&mut t, 0, vec![create("/a", CreateKind::Persistent, false)]);
        let root_before = t.stat("/").unwrap();
        let (_, r, ch) = write(
            &mut t,
            sid,
            vec![
                create("/b", CreateKind::Ephemeral, false),
                create("/c", CreateKind::Container, false),
                WriteOp::SetData {
                    path: "/a".into(),
                    data: b"new".to_vec(),
                    version: 0,
                },
                WriteOp::Delete {
                    path: "/a".into(),
                    version: -1,
                },
                WriteOp::Check {
                    path: "/a".into(),
                    version: -1,
                },
            ],
        );
        let f = r.unwrap_err();
        assert_eq!((f.index, f.error.code), (4, Code::NoNode));
        assert!(ch.is_empty());
        assert!(t.stat("/b").is_none() && t.stat("/c").is_none());
        assert_eq!(t.get_data("/a").unwrap().0, b"d");
        assert_eq!(t.stat("/").unwrap(), root_before);
        assert!(t.session(sid).unwrap().ephemerals.is_empty());
        assert!(t.reap_candidates(i64::MAX).is_empty());
        // and the same ops without the failing check all apply
        let (_, r, ch) = write(
            &mut t,
            sid,
            vec![
                create("/b", CreateKind::Ephemeral, false),
                WriteOp::Check {
                    path: "/a".into(),
                    version: 0,
                },
            ],
        );
        assert_eq!(r.unwrap().len(), 2);
        assert_eq!(ch, vec![Change::Created("/b".into())]);
    }

    #[test]
    fn closing_a_session_deletes_its_ephemerals() {
        let mut t = DataTree::default();
        let s1 = session(&mut t);
        let s2 = session(&mut t);
        let _ = write(
            &mut t,
            s1,
            vec![
                create("/e1", CreateKind::Ephemeral, false),
                create("/e2", CreateKind::Ephemeral, false),
            ],
        );
        let _ = write(&mut t, s2, vec![create("/f", CreateKind::Ephemeral, false)]);
        assert_eq!(t.stat("/e1").unwrap().ephemeral_owner, s1);
        let mut ch = vec![];
        let (_, r) = t.apply(
            &Txn::CloseSession {
                session_id: s1,
                expired: true,
            },
            0,
            &mut ch,
        );
        assert_eq!(r, TxnResult::SessionClosed { existed: true });
        assert_eq!(
            ch,
            vec![Change::Deleted("/e1".into()), Change::Deleted("/e2".into())]
        );
        assert!(t.stat("/e1").is_none() && t.stat("/f").is_some());
        // an expired session cannot create ephemerals
        let (_, r, _) = write(
            &mut t,
            s1,
            vec![create("/e3", CreateKind::Ephemeral, false)],
        );
        assert_eq!(r.unwrap_err().error.code, Code::SessionExpired);
    }

    #[test]
    fn containers_and_ttl_nodes_are_reaped() {
        let mut t = DataTree::default();
        let _ = write(
            &mut t,
            0,
            vec![
                create("/c", CreateKind::Container, false),
                create("/t", CreateKind::Ttl(50), false),
            ],
        );
        // a container that never had children is not reaped; the TTL node is once stale
        assert!(t.reap_candidates(1000 + 10).is_empty());
        let due = t.reap_candidates(1000 + 51);
        assert_eq!(due.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), ["/t"]);
        let _ = write(
            &mut t,
            0,
            vec![create("/c/x", CreateKind::Persistent, false)],
        );
        let _ = write(
            &mut t,
            0,
            vec![WriteOp::Delete {
                path: "/c/x".into(),
                version: -1,
            }],
        );
        let due = t.reap_candidates(1000 + 51);
        assert_eq!(due.len(), 2);
        for (p, v, cv) in due {
            let (_, r) = t.apply(
                &Txn::Reap {
                    path: p,
                    version: v,
                    cversion: cv,
                },
                2000,
                &mut vec![],
            );
            assert_eq!(r, TxnResult::Reaped(true));
        }
        assert!(t.stat("/c").is_none() && t.stat("/t").is_none());
        assert!(t.reap_candidates(i64::MAX).is_empty());
    }

    #[test]
    fn snapshot_round_trip_keeps_everything() {
        let mut t = DataTree::default();
        let s = session(&mut t);
        let _ = write(
            &mut t,
            s,
            vec![
                create("/a", CreateKind::Persistent, false),
                create("/a/e", CreateKind::Ephemeral, false),
            ],
        );
        let bytes = hstack_daemon::format::encode_body(&t);
        let u: DataTree = hstack_daemon::format::decode_body("tree", &bytes).unwrap();
        assert_eq!(u.last_zxid(), t.last_zxid());
        assert_eq!(u.stat("/a/e"), t.stat("/a/e"));
        assert_eq!(u.session(s).unwrap().ephemerals.len(), 1);
    }

    fn write_as(
        t: &mut DataTree,
        auth: &[AuthId],
        ops: Vec<WriteOp>,
    ) -> Result<Vec<OpOutcome>, OpFailure> {
        let txn = Txn::WriteAs {
            session_id: 0,
            auth: auth.to_vec(),
            ops,
        };
        match t.apply(&txn, 1000, &mut vec![]).1 {
            TxnResult::Ops(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn acls_are_checked_when_applied() {
        let mut t = DataTree::default();
        let alice = vec![AuthId {
            scheme: "digest".into(),
            id: acl::digest_of("alice:pw"),
        }];
        let bob = vec![AuthId {
            scheme: "digest".into(),
            id: acl::digest_of("bob:pw"),
        }];
        let mine = vec![AclEntry {
            perms: perm::ALL,
            scheme: "digest".into(),
            id: acl::digest_of("alice:pw"),
        }];
        let create = WriteOp::CreateAcl {
            path: "/s".into(),
            data: b"x".to_vec(),
            kind: CreateKind::Persistent,
            sequential: false,
            acl: mine.clone(),
        };
        write_as(&mut t, &bob, vec![create]).unwrap();
        assert_eq!(t.get_acl("/s").unwrap().0, mine);
        let set = |v: &[u8]| WriteOp::SetData {
            path: "/s".into(),
            data: v.to_vec(),
            version: -1,
        };
        let e = write_as(&mut t, &bob, vec![set(b"b")]).unwrap_err();
        assert_eq!(e.error.code, Code::NoAuth);
        assert_eq!(
            t.check_acl("/s", perm::READ, &bob).unwrap_err().code,
            Code::NoAuth
        );
        write_as(&mut t, &alice, vec![set(b"a")]).unwrap();
        // A child needs CREATE on the parent; a delete needs DELETE on it.
        let kid = create_op("/s/kid");
        assert_eq!(
            write_as(&mut t, &bob, vec![kid.clone()])
                .unwrap_err()
                .error
                .code,
            Code::NoAuth
        );
        write_as(&mut t, &alice, vec![kid]).unwrap();
        let del = WriteOp::Delete {
            path: "/s/kid".into(),
            version: -1,
        };
        assert_eq!(
            write_as(&mut t, &bob, vec![del.clone()])
                .unwrap_err()
                .error
                .code,
            Code::NoAuth
        );
        write_as(&mut t, &alice, vec![del]).unwrap();
        // setACL needs ADMIN and the ACL version; it bumps aversion only.
        let open = WriteOp::SetAcl {
            path: "/s".into(),
            acl: acl::open(),
            version: 0,
        };
        assert_eq!(
            write_as(&mut t, &bob, vec![open.clone()])
                .unwrap_err()
                .error
                .code,
            Code::NoAuth
        );
        let before = t.stat("/s").unwrap();
        write_as(&mut t, &alice, vec![open.clone()]).unwrap();
        let after = t.stat("/s").unwrap();
        assert_eq!((after.aversion, after.version), (1, before.version));
        assert_eq!(
            write_as(&mut t, &alice, vec![open]).unwrap_err().error.code,
            Code::BadVersion
        );
        write_as(&mut t, &bob, vec![set(b"now open")]).unwrap();
        // A failed multi leaves the ACLs as they were.
        let r = write_as(
            &mut t,
            &alice,
            vec![
                WriteOp::SetAcl {
                    path: "/s".into(),
                    acl: mine.clone(),
                    version: -1,
                },
                WriteOp::Check {
                    path: "/s".into(),
                    version: 99,
                },
            ],
        );
        assert!(r.is_err());
        assert_eq!(t.get_acl("/s").unwrap().0, acl::open());
        // The superuser passes everything; a pre-ACL entry checks nothing.
        let sup = vec![AuthId {
            scheme: acl::SUPER.into(),
            id: String::new(),
        }];
        write_as(
            &mut t,
            &alice,
            vec![WriteOp::SetAcl {
                path: "/s".into(),
                acl: mine,
                version: -1,
            }],
        )
        .unwrap();
        write_as(&mut t, &sup, vec![set(b"root")]).unwrap();
        let (_, r) = t.apply(
            &Txn::Write {
                session_id: 0,
                ops: vec![set(b"legacy")],
            },
            1000,
            &mut vec![],
        );
        assert!(matches!(r, TxnResult::Ops(Ok(_))), "{r:?}");
    }

    fn create_op(p: &str) -> WriteOp {
        WriteOp::Create {
            path: p.into(),
            data: vec![],
            kind: CreateKind::Persistent,
            sequential: false,
        }
    }

    #[test]
    fn acls_survive_a_snapshot_and_a_v1_tree_reads_back_open() {
        let mut t = DataTree::default();
        let acl = vec![AclEntry {
            perms: perm::READ,
            scheme: "ip".into(),
            id: "10.0.0.0/8".into(),
        }];
        write_as(
            &mut t,
            &[],
            vec![WriteOp::CreateAcl {
                path: "/n".into(),
                data: vec![],
                kind: CreateKind::Persistent,
                sequential: false,
                acl: acl.clone(),
            }],
        )
        .unwrap();
        let bytes = postcard::to_stdvec(&t).unwrap();
        let u: DataTree = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(u.get_acl("/n").unwrap().0, acl);
        assert_eq!(u.get_acl("/").unwrap().0, acl::open());
    }
}
