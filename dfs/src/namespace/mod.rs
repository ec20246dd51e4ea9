//! The namenode's namespace: the inode tree, held in memory and changed only
//! by applying [`Edit`]s. The namenode validates a request by applying its
//! edit (every check runs before anything changes, so a refused edit leaves
//! the tree as it was), then logs the edit; restarting replays the logged
//! edits over the last image and arrives at exactly the same tree.
//!
//! Replica locations are not here: they are soft state rebuilt from block
//! reports (see `blockmap`). What is here per block is what must survive a
//! restart: id, generation stamp, length, and which file owns it.

//!
//! The code is split by concern: `edits` (what is logged), `apply` (how an
//! edit changes the tree), `permissions` (who may), `image` (checkpoints);
//! this module holds the tree and its queries.

mod apply;
mod edits;
mod image;
mod permissions;

pub use edits::{Edit, Effects};
pub use image::Image;
pub use permissions::mode_string;

use std::collections::HashMap;

use compact_str::CompactString;
use indexmap::IndexMap;
use smallvec::SmallVec;

use serde::{Deserialize, Serialize};

use crate::error::{Code, FsError, FsResult};
use crate::path;

pub type InodeId = u64;
pub const ROOT: InodeId = 1;

/// Largest replication a file may ask for (the namenode also caps it at the
/// number of datanodes).
pub const MAX_REPLICATION: u16 = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRec {
    pub id: u64,
    pub gen_stamp: u64,
    pub len: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Inode {
    pub parent: InodeId,
    /// Inline up to 24 bytes (most names): no heap allocation per inode.
    pub name: CompactString,
    pub mtime: i64,
    pub atime: i64,
    pub perm: u16,
    /// Interned user and group names (see `Namespace::name`).
    pub owner: u32,
    pub group: u32,
    pub body: Body,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Body {
    /// Children sorted by name.
    Dir(Vec<InodeId>),
    File(FileInode),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileInode {
    pub replication: u16,
    pub block_size: u64,
    /// Inline while the file has one block (most files).
    pub blocks: SmallVec<[BlockRec; 1]>,
    /// Present while a writer holds the file open.
    pub uc: Option<Box<UnderConstruction>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnderConstruction {
    /// The lease holder (the writing client's name).
    pub client: String,
    pub client_host: String,
}

impl FileInode {
    pub fn len(&self) -> u64 {
        self.blocks.iter().map(|b| b.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Who asks: checked against owner, group and permission bits.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub user: String,
    pub groups: std::sync::Arc<[String]>,
}

/// A status as `ls` and `stat` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub path: String,
    pub inode: InodeId,
    pub is_dir: bool,
    pub len: u64,
    pub replication: u16,
    pub block_size: u64,
    pub mtime: i64,
    pub atime: i64,
    pub perm: u16,
    pub owner: String,
    pub group: String,
    pub children: u32,
    pub under_construction: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub length: u64,
    pub files: u64,
    pub directories: u64,
    pub space_consumed: u64,
}

const READ: u16 = 4;
const WRITE: u16 = 2;
const EXEC: u16 = 1;
const STICKY: u16 = 0o1000;

pub struct Namespace {
    /// An index map: a table of 8-byte indices over a dense vector of
    /// inodes, so a big namespace costs about the inodes themselves
    /// (see `footprint`).
    inodes: IndexMap<InodeId, Inode>,
    names: Vec<String>,
    name_ids: HashMap<String, u32>,
    next_inode: InodeId,
    next_block: u64,
    gen_stamp: u64,
    /// The last edit applied.
    pub txid: u64,
    superuser: String,
    supergroup: String,
}

/// The root's owner until someone changes it.
const ROOT_PERM: u16 = 0o755;

impl Namespace {
    pub fn new(superuser: &str, supergroup: &str) -> Self {
        let mut ns = Self {
            inodes: IndexMap::new(),
            names: Vec::new(),
            name_ids: HashMap::new(),
            next_inode: ROOT + 1,
            next_block: 1 << 30,
            gen_stamp: 1000,
            txid: 0,
            superuser: superuser.into(),
            supergroup: supergroup.into(),
        };
        let owner = ns.intern(superuser);
        let group = ns.intern(supergroup);
        ns.inodes.insert(
            ROOT,
            Inode {
                parent: ROOT,
                name: "".into(),
                mtime: 0,
                atime: 0,
                perm: ROOT_PERM,
                owner,
                group,
                body: Body::Dir(Vec::new()),
            },
        );
        ns
    }

    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    pub fn inode(&self, id: InodeId) -> Option<&Inode> {
        self.inodes.get(&id)
    }

    pub fn name(&self, id: u32) -> &str {
        self.names
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("?")
    }

    /// Every file with blocks: (inode, replication, blocks).
    pub fn files(&self) -> impl Iterator<Item = (InodeId, &FileInode)> {
        self.inodes.iter().filter_map(|(id, i)| match &i.body {
            Body::File(f) => Some((*id, f)),
            Body::Dir(_) => None,
        })
    }

    /// The ids the next AddBlock / recovery will use.
    pub fn next_block_id(&self) -> u64 {
        self.next_block
    }

    pub fn next_gen_stamp(&self) -> u64 {
        self.gen_stamp + 1
    }

    pub fn next_inode_id(&self) -> InodeId {
        self.next_inode
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(i) = self.name_ids.get(s) {
            return *i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_string());
        self.name_ids.insert(s.to_string(), i);
        i
    }

    fn get(&self, id: InodeId) -> &Inode {
        self.inodes.get(&id).expect("inode ids in the tree exist")
    }

    pub fn full_path(&self, mut id: InodeId) -> String {
        let mut parts = Vec::new();
        while id != ROOT {
            let i = self.get(id);
            parts.push(&*i.name);
            id = i.parent;
        }
        parts.reverse();
        path::join(&parts)
    }

    /// The group a new entry at `p` gets: its nearest existing ancestor's
    /// (HDFS's BSD rule). An invalid path gets the supergroup; the create
    /// itself reports the error.
    pub fn inherited_group(&self, p: &str) -> String {
        let Ok(comps) = path::components(p) else {
            return self.supergroup.clone();
        };
        let ids = self.walk(&comps);
        let dir = ids
            .iter()
            .rev()
            .find(|id| matches!(self.get(**id).body, Body::Dir(_)))
            .copied()
            .unwrap_or(ROOT);
        self.name(self.get(dir).group).to_string()
    }

    /// The inode at an existing path, without permission checks.
    pub fn resolve_id(&self, p: &str) -> FsResult<InodeId> {
        self.resolve(p, None)
    }

    pub(super) fn child(&self, dir: &[InodeId], name: &str) -> Result<usize, usize> {
        dir.binary_search_by(|c| (*self.get(*c).name).cmp(name))
    }

    /// The inode ids along `comps` as far as they exist, root first.
    pub(super) fn walk(&self, comps: &[&str]) -> Vec<InodeId> {
        let mut ids = vec![ROOT];
        for c in comps {
            let cur = self.get(*ids.last().expect("starts with the root"));
            match &cur.body {
                Body::Dir(children) => match self.child(children, c) {
                    Ok(i) => ids.push(children[i]),
                    Err(_) => break,
                },
                Body::File(_) => break,
            }
        }
        ids
    }

    /// Resolves an existing path, checking traverse (x) on every ancestor.
    pub(super) fn resolve(&self, p: &str, caller: Option<&Caller>) -> FsResult<InodeId> {
        let comps = path::components(p)?;
        let ids = self.walk(&comps);
        self.check_traverse(&ids, comps.len(), caller)?;
        if ids.len() != comps.len() + 1 {
            // A file in the middle of the path is an error of its own.
            let last = self.get(*ids.last().expect("root"));
            if ids.len() < comps.len() && matches!(last.body, Body::File(_)) {
                return Err(FsError::new(
                    Code::ParentNotDirectory,
                    format!("{p}: {} is a file", self.full_path(*ids.last().unwrap())),
                ));
            }
            return Err(crate::error::not_found(p));
        }
        Ok(*ids.last().expect("root"))
    }

    pub fn status_of(&self, id: InodeId, path: String) -> Status {
        let ino = self.get(id);
        let (is_dir, len, replication, block_size, children, uc) = match &ino.body {
            Body::Dir(c) => (true, 0, 0, 0, c.len() as u32, false),
            Body::File(f) => (
                false,
                f.len(),
                f.replication,
                f.block_size,
                0,
                f.uc.is_some(),
            ),
        };
        Status {
            path,
            inode: id,
            is_dir,
            len,
            replication,
            block_size,
            mtime: ino.mtime,
            atime: ino.atime,
            perm: ino.perm,
            owner: self.name(ino.owner).to_string(),
            group: self.name(ino.group).to_string(),
            children,
            under_construction: uc,
        }
    }

    /// `None` when the path does not exist.
    pub fn stat(&self, p: &str, caller: Option<&Caller>) -> FsResult<Option<Status>> {
        match self.resolve(p, caller) {
            Ok(id) => Ok(Some(self.status_of(id, path::normalize(p)?))),
            Err(e) if e.code == Code::FileNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A directory's entries after `start_after`, at most `limit`; and how
    /// many remain. A file lists as itself.
    pub fn list(
        &self,
        p: &str,
        start_after: &str,
        limit: usize,
        caller: Option<&Caller>,
    ) -> FsResult<(Vec<Status>, usize)> {
        let id = self.resolve(p, caller)?;
        let base = path::normalize(p)?;
        let ino = self.get(id);
        let children = match &ino.body {
            Body::File(_) => return Ok((vec![self.status_of(id, base)], 0)),
            Body::Dir(c) => c,
        };
        if let Some(c) = caller {
            self.check(c, id, READ | EXEC)?;
        }
        let from = if start_after.is_empty() {
            0
        } else {
            match self.child(children, start_after) {
                Ok(i) => i + 1,
                Err(i) => i,
            }
        };
        let to = (from + limit.max(1)).min(children.len());
        let out = children[from..to]
            .iter()
            .map(|c| {
                let name = &*self.get(*c).name;
                let child_path = if base == "/" {
                    format!("/{name}")
                } else {
                    format!("{base}/{name}")
                };
                self.status_of(*c, child_path)
            })
            .collect();
        Ok((out, children.len() - to))
    }

    /// A file's inode and blocks, for reading (checks read permission).
    pub fn open(&self, p: &str, caller: Option<&Caller>) -> FsResult<(InodeId, &FileInode)> {
        let id = self.resolve(p, caller)?;
        if let Some(c) = caller {
            self.check(c, id, READ)?;
        }
        match &self.get(id).body {
            Body::File(f) => Ok((id, f)),
            Body::Dir(_) => Err(FsError::new(
                Code::IsDirectory,
                format!("{p}: is a directory"),
            )),
        }
    }

    /// The id of an existing file the caller may write (what overwriting
    /// it takes: traverse on the way, write on the file).
    pub fn writable_file(&self, p: &str, caller: &Caller) -> FsResult<InodeId> {
        let id = self.resolve(p, Some(caller))?;
        self.check(caller, id, WRITE)?;
        match &self.get(id).body {
            Body::File(_) => Ok(id),
            Body::Dir(_) => Err(FsError::new(
                Code::IsDirectory,
                format!("{p}: is a directory"),
            )),
        }
    }

    pub fn file(&self, id: InodeId) -> Option<&FileInode> {
        match &self.inodes.get(&id)?.body {
            Body::File(f) => Some(f),
            Body::Dir(_) => None,
        }
    }

    pub fn summary(&self, p: &str, caller: Option<&Caller>) -> FsResult<Summary> {
        let id = self.resolve(p, caller)?;
        let mut s = Summary::default();
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            match &self.get(id).body {
                Body::Dir(c) => {
                    if let Some(caller) = caller {
                        self.check(caller, id, READ | EXEC)?;
                    }
                    s.directories += 1;
                    stack.extend(c.iter().copied());
                }
                Body::File(f) => {
                    s.files += 1;
                    s.length += f.len();
                    s.space_consumed += f.len() * f.replication as u64;
                }
            }
        }
        Ok(s)
    }

    /// Every file below (or at) `p`, with its path, in name order. With a
    /// caller, as `summary`: it must be able to reach `p` and to list every
    /// directory below it.
    pub fn walk_files(
        &self,
        p: &str,
        caller: Option<&Caller>,
    ) -> FsResult<(Vec<(String, InodeId)>, u64)> {
        let id = self.resolve(p, caller)?;
        let mut files = Vec::new();
        let mut dirs = 0;
        let mut stack = vec![(id, path::normalize(p)?)];
        while let Some((id, at)) = stack.pop() {
            match &self.get(id).body {
                Body::Dir(c) => {
                    if let Some(caller) = caller {
                        self.check(caller, id, READ | EXEC)?;
                    }
                    dirs += 1;
                    for child in c.iter().rev() {
                        let name = &*self.get(*child).name;
                        let sub = if at == "/" {
                            format!("/{name}")
                        } else {
                            format!("{at}/{name}")
                        };
                        stack.push((*child, sub));
                    }
                }
                Body::File(_) => files.push((at, id)),
            }
        }
        Ok((files, dirs))
    }
}

#[cfg(test)]
mod tests;
