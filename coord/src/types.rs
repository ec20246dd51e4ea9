//! The replicated vocabulary: Raft type configuration, member addresses, and
//! the transactions carried in log entries.

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::CoordError;
use hstack_coord_client::Stat;

/// A member's addresses, stored in the Raft membership so every member (and
/// every client asking any member) can find every other.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    pub raft_addr: String,
    pub client_addr: String,
    pub http_addr: String,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} client={}", self.raft_addr, self.client_addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Batch,
        R = Vec<Applied>,
        NodeId = u64,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberNode>;
pub type StorageError = openraft::StorageError<NodeId>;

/// One Raft log entry's payload: the transactions proposed together (group
/// commit) with the leader's clock reading for their ctime/mtime.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Batch {
    pub time_ms: i64,
    /// Shared: the log keeps recent entries in memory and hands out clones.
    pub txns: Arc<Vec<Txn>>,
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch of {} txns at {}", self.txns.len(), self.time_ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreateKind {
    Persistent,
    Ephemeral,
    Container,
    /// Persistent, deleted when it has no children and was not modified for this many ms.
    Ttl(i64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Create {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        kind: CreateKind,
        sequential: bool,
    },
    Delete {
        path: String,
        version: i32,
    },
    SetData {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
    // Appended variants (log entries written before them stay readable).
    /// A create with its own ACL (`Create` is world:anyone, every permission).
    CreateAcl {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        kind: CreateKind,
        sequential: bool,
        acl: Vec<AclEntry>,
    },
    SetAcl {
        path: String,
        acl: Vec<AclEntry>,
        version: i32,
    },
}

/// An identity a connection holds: `ip:ADDRESS` always, `digest:USER:HASH`
/// after an auth packet, `super:` for the operator's superuser digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuthId {
    pub scheme: String,
    pub id: String,
}

/// One entry of a node's ACL: the permission bits (`acl::perm`) granted to
/// the identities `scheme:id` names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AclEntry {
    pub perms: u32,
    pub scheme: String,
    pub id: String,
}

/// A state change. Every transaction gets the next zxid when applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Txn {
    CreateSession {
        password: u64,
        timeout_ms: u32,
    },
    CloseSession {
        session_id: u64,
        expired: bool,
    },
    /// One client request: a single op, or a multi (all or nothing).
    Write {
        session_id: u64,
        ops: Vec<WriteOp>,
    },
    /// Container / TTL clean-up: delete `path` if it still has this version
    /// and cversion and no children.
    Reap {
        path: String,
        version: i32,
        cversion: i32,
    },
    // Appended variants (log entries written before them stay readable).
    /// A client request made with these identities (ACLs are checked when
    /// it is applied). `Write` (older entries) predates ACLs: every node it
    /// can touch is open.
    WriteAs {
        session_id: u64,
        auth: Vec<AuthId>,
        ops: Vec<WriteOp>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpOutcome {
    Created { path: String, stat: Stat },
    Deleted,
    Set(Stat),
    Checked,
}

/// Which op of a multi failed, and why (the others report RuntimeInconsistency).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpFailure {
    pub index: usize,
    pub error: CoordError,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResult {
    SessionCreated { session_id: u64, timeout_ms: u32 },
    SessionClosed { existed: bool },
    Ops(Result<Vec<OpOutcome>, OpFailure>),
    Reaped(bool),
}

/// One applied transaction: its zxid and result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub zxid: u64,
    pub result: TxnResult,
}

/// A committed transaction as the proposer hands it back.
pub struct Committed {
    pub index: u64,
    pub applied: Applied,
}
