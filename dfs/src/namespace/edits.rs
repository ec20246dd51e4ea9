//! What is logged: one [`Edit`] per namespace change, with everything
//! needed to apply it again identically (times, ids, stamps), and the
//! [`Effects`] an applied edit reports for the block map.

use serde::{Deserialize, Serialize};

use super::{BlockRec, InodeId};

/// One change to the namespace, as logged. Everything an edit needs to be
/// applied again identically (times, ids, stamps) is in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Edit {
    Mkdirs {
        path: String,
        perm: u16,
        owner: String,
        group: String,
        time: i64,
        create_parent: bool,
    },
    Create {
        path: String,
        perm: u16,
        owner: String,
        group: String,
        time: i64,
        replication: u16,
        block_size: u64,
        overwrite: bool,
        create_parent: bool,
        client: String,
        client_host: String,
    },
    /// A new last block; `previous_len` is the final length of the block it
    /// follows.
    AddBlock {
        inode: InodeId,
        client: String,
        block: BlockRec,
        previous_len: Option<u64>,
    },
    AbandonBlock {
        inode: InodeId,
        client: String,
        block_id: u64,
    },
    /// A block of a file being written moves to a new generation stamp
    /// (pipeline recovery, lease recovery) and/or length.
    UpdateBlock {
        inode: InodeId,
        block_id: u64,
        gen_stamp: u64,
        len: u64,
    },
    /// The writer (or lease recovery, with `client` empty) closes the file.
    Close {
        inode: InodeId,
        client: String,
        time: i64,
        last_len: Option<u64>,
    },
    /// Lease recovery takes the file from its dead writer.
    ReassignLease {
        inode: InodeId,
        client: String,
    },
    Rename {
        src: String,
        dst: String,
        time: i64,
    },
    Delete {
        path: String,
        recursive: bool,
        time: i64,
    },
    SetReplication {
        path: String,
        replication: u16,
    },
    SetPermission {
        path: String,
        perm: u16,
    },
    SetOwner {
        path: String,
        owner: Option<String>,
        group: Option<String>,
    },
    SetTimes {
        path: String,
        mtime: Option<i64>,
        atime: Option<i64>,
    },
    /// A generation stamp handed out (pipeline or lease recovery).
    GenStamp {
        gen_stamp: u64,
    },
}

/// What an applied edit did that the block map must follow.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// The inode created or affected.
    pub inode: Option<InodeId>,
    /// Blocks that no longer belong to any file.
    pub removed_blocks: Vec<u64>,
    /// Files whose replication changed (their blocks need another look).
    pub replication_changed: Vec<InodeId>,
    /// Files that stopped being under construction or were deleted while
    /// they were: their leases go.
    pub closed: Vec<InodeId>,
}

impl Effects {
    /// Only `inode` affected.
    pub(super) fn on(inode: InodeId) -> Self {
        Self {
            inode: Some(inode),
            ..Self::default()
        }
    }
}
