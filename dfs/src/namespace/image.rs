//! Checkpoint images: the whole namespace as of a txid, and back.

use std::collections::HashMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::{Inode, InodeId, Namespace, ROOT};
use crate::error::{Code, FsError, FsResult};

/// Everything a checkpoint image holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Image {
    pub txid: u64,
    pub next_inode: InodeId,
    pub next_block: u64,
    pub gen_stamp: u64,
    pub names: Vec<String>,
    pub inodes: Vec<(InodeId, Inode)>,
}

impl Image {
    fn new(
        (txid, next_inode, next_block, gen_stamp): (u64, InodeId, u64, u64),
        names: Vec<String>,
        mut inodes: Vec<(InodeId, Inode)>,
    ) -> Self {
        inodes.sort_unstable_by_key(|(k, _)| *k);
        Self {
            txid,
            next_inode,
            next_block,
            gen_stamp,
            names,
            inodes,
        }
    }
}

impl Namespace {
    pub fn from_image(img: Image, superuser: &str, supergroup: &str) -> FsResult<Self> {
        let mut name_ids = HashMap::new();
        for (i, n) in img.names.iter().enumerate() {
            name_ids.insert(n.clone(), i as u32);
        }
        let inodes: IndexMap<InodeId, Inode> = img.inodes.into_iter().collect();
        if !inodes.contains_key(&ROOT) {
            return Err(FsError::new(Code::Corrupt, "image has no root directory"));
        }
        Ok(Self {
            inodes,
            names: img.names,
            name_ids,
            next_inode: img.next_inode,
            next_block: img.next_block,
            gen_stamp: img.gen_stamp,
            txid: img.txid,
            superuser: superuser.into(),
            supergroup: supergroup.into(),
        })
    }

    /// The image of this namespace, consuming it (no copy of the inodes).
    pub fn into_image(self) -> Image {
        let header = self.header();
        Image::new(header, self.names, self.inodes.into_iter().collect())
    }

    /// The image of this namespace, copied.
    pub fn to_image(&self) -> Image {
        let inodes = self.inodes.iter().map(|(k, v)| (*k, v.clone())).collect();
        Image::new(self.header(), self.names.clone(), inodes)
    }

    /// txid, next inode, next block, generation stamp.
    pub(super) fn header(&self) -> (u64, InodeId, u64, u64) {
        (self.txid, self.next_inode, self.next_block, self.gen_stamp)
    }
}
