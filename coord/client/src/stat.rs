//! A znode's stat, as ZooKeeper defines it, and its wire form.

use hstack_proto::coord as pb;
use serde::{Deserialize, Serialize};

/// Largest data a znode may hold.
pub const MAX_DATA: usize = 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub czxid: u64,
    pub mzxid: u64,
    pub pzxid: u64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: u64,
    pub data_length: i32,
    pub num_children: i32,
}

impl From<&Stat> for pb::Stat {
    fn from(s: &Stat) -> Self {
        pb::Stat {
            czxid: s.czxid,
            mzxid: s.mzxid,
            pzxid: s.pzxid,
            ctime: s.ctime,
            mtime: s.mtime,
            version: s.version,
            cversion: s.cversion,
            aversion: s.aversion,
            ephemeral_owner: s.ephemeral_owner,
            data_length: s.data_length,
            num_children: s.num_children,
        }
    }
}

impl From<pb::Stat> for Stat {
    fn from(s: pb::Stat) -> Self {
        Stat {
            czxid: s.czxid,
            mzxid: s.mzxid,
            pzxid: s.pzxid,
            ctime: s.ctime,
            mtime: s.mtime,
            version: s.version,
            cversion: s.cversion,
            aversion: s.aversion,
            ephemeral_owner: s.ephemeral_owner,
            data_length: s.data_length,
            num_children: s.num_children,
        }
    }
}
