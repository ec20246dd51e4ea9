//! The namenode's namespace: the inode tree, held in memory and changed only
//! by applying [`Edit`]s. The namenode validates a request by applying its
//! edit (every check runs before anything changes, so a refused edit leaves
//! the tree as it was), then logs the edit; restarting replays the logged
//! edits over the last image and arrives at exactly the same tree.
//!
//! Replica locations are not here: they are soft state rebuilt from block
//! reports (see `blockmap`). What is here per block is what must survive a
//! restart: id, generation stamp, length, and which file owns it.

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
    fn on(inode: InodeId) -> Self {
        Self {
            inode: Some(inode),
            ..Self::default()
        }
    }
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
    fn header(&self) -> (u64, InodeId, u64, u64) {
        (self.txid, self.next_inode, self.next_block, self.gen_stamp)
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

    pub fn is_superuser(&self, c: &Caller) -> bool {
        c.user == self.superuser || c.groups.contains(&self.supergroup)
    }

    fn child(&self, dir: &[InodeId], name: &str) -> Result<usize, usize> {
        dir.binary_search_by(|c| (*self.get(*c).name).cmp(name))
    }

    /// The inode ids along `comps` as far as they exist, root first.
    fn walk(&self, comps: &[&str]) -> Vec<InodeId> {
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
    fn resolve(&self, p: &str, caller: Option<&Caller>) -> FsResult<InodeId> {
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

    /// x on each directory the path passes through (not the target itself).
    fn check_traverse(
        &self,
        ids: &[InodeId],
        depth: usize,
        caller: Option<&Caller>,
    ) -> FsResult<()> {
        let Some(c) = caller else { return Ok(()) };
        for (i, id) in ids.iter().enumerate() {
            if i >= depth {
                break;
            }
            let ino = self.get(*id);
            if matches!(ino.body, Body::Dir(_)) {
                self.check(c, *id, EXEC)?;
            }
        }
        Ok(())
    }

    fn check(&self, c: &Caller, id: InodeId, want: u16) -> FsResult<()> {
        if self.is_superuser(c) {
            return Ok(());
        }
        let ino = self.get(id);
        let bits = if self.name(ino.owner) == c.user {
            (ino.perm >> 6) & 7
        } else if c.groups.iter().any(|g| g == self.name(ino.group)) {
            (ino.perm >> 3) & 7
        } else {
            ino.perm & 7
        };
        if bits & want == want {
            return Ok(());
        }
        let access = match want {
            READ => "READ",
            WRITE => "WRITE",
            EXEC => "EXECUTE",
            x if x == READ | EXEC => "READ_EXECUTE",
            x if x == WRITE | EXEC => "WRITE_EXECUTE",
            _ => "ALL",
        };
        Err(FsError::new(
            Code::PermissionDenied,
            format!(
                "Permission denied: user={}, access={access}, inode=\"{}\":{}:{}:{}{}",
                c.user,
                self.full_path(id),
                self.name(ino.owner),
                self.name(ino.group),
                if matches!(ino.body, Body::Dir(_)) {
                    'd'
                } else {
                    '-'
                },
                mode_string(ino.perm),
            ),
        ))
    }

    fn check_owner(&self, c: &Caller, id: InodeId) -> FsResult<()> {
        if self.is_superuser(c) || self.name(self.get(id).owner) == c.user {
            return Ok(());
        }
        Err(FsError::new(
            Code::PermissionDenied,
            format!(
                "Permission denied: {} is not the owner of {}",
                c.user,
                self.full_path(id)
            ),
        ))
    }

    // ------------------------------------------------------------------
    // Queries
    // ------------------------------------------------------------------

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

    /// Every file below (or at) `p`, with its path, in name order.
    pub fn walk_files(&self, p: &str) -> FsResult<(Vec<(String, InodeId)>, u64)> {
        let id = self.resolve(p, None)?;
        let mut files = Vec::new();
        let mut dirs = 0;
        let mut stack = vec![(id, path::normalize(p)?)];
        while let Some((id, at)) = stack.pop() {
            match &self.get(id).body {
                Body::Dir(c) => {
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

    // ------------------------------------------------------------------
    // Changes
    // ------------------------------------------------------------------

    /// Applies one edit. With a caller, permissions are checked first (a
    /// request); without, the edit is trusted (replay). Either way, on error
    /// nothing has changed.
    pub fn apply(&mut self, edit: &Edit, caller: Option<&Caller>) -> FsResult<Effects> {
        let fx = match edit {
            Edit::Mkdirs {
                path: p,
                perm,
                owner,
                group,
                time,
                create_parent,
            } => self.mkdirs(p, *perm, owner, group, *time, *create_parent, caller)?,
            Edit::Create {
                path: p,
                perm,
                owner,
                group,
                time,
                replication,
                block_size,
                overwrite,
                create_parent,
                client,
                client_host,
            } => {
                check_replication(*replication)?;
                if *block_size == 0 || block_size % 512 != 0 {
                    return Err(FsError::invalid(format!(
                        "block size {block_size} must be a positive multiple of 512"
                    )));
                }
                let (parent, name, existing) = self.prepare_parent(p, *create_parent, caller)?;
                let mut fx = Effects::default();
                if let Some(old) = existing {
                    match &self.get(old).body {
                        Body::Dir(_) => {
                            return Err(FsError::new(
                                Code::IsDirectory,
                                format!("{p}: is a directory"),
                            ))
                        }
                        Body::File(f) => {
                            if !overwrite {
                                return Err(FsError::new(
                                    Code::AlreadyExists,
                                    format!("{p}: file exists"),
                                ));
                            }
                            if let Some(uc) = &f.uc {
                                if uc.client != *client {
                                    return Err(FsError::new(
                                        Code::AlreadyExists,
                                        format!("{p}: is being written by {}", uc.client),
                                    ));
                                }
                            }
                        }
                    }
                    if let Some(c) = caller {
                        self.check(c, old, WRITE)?;
                    }
                }
                // Every check is done: from here on, change.
                let parent = match parent {
                    Parent::Existing(id) => id,
                    Parent::Missing { base, names } => {
                        self.make_dirs(base, &names, 0o755, owner, group, *time)
                    }
                };
                if let Some(old) = existing {
                    self.detach(parent, old, &mut fx);
                }
                let owner = self.intern(owner);
                let group = self.intern(group);
                let id = self.next_inode;
                self.next_inode += 1;
                self.link(
                    parent,
                    id,
                    Inode {
                        parent,
                        name: name.into(),
                        mtime: *time,
                        atime: *time,
                        perm: *perm & 0o777,
                        owner,
                        group,
                        body: Body::File(FileInode {
                            replication: *replication,
                            block_size: *block_size,
                            blocks: SmallVec::new(),
                            uc: Some(Box::new(UnderConstruction {
                                client: client.clone(),
                                client_host: client_host.clone(),
                            })),
                        }),
                    },
                );
                self.touch_dir(parent, *time);
                fx.inode = Some(id);
                fx
            }
            Edit::AddBlock {
                inode,
                client,
                block,
                previous_len,
            } => {
                let f = self.file_being_written(*inode, client)?;
                if let (Some(_), None) = (previous_len, f.blocks.last()) {
                    return Err(FsError::invalid(
                        "previous block given but the file has none",
                    ));
                }
                if block.id < self.next_block && caller.is_some() {
                    return Err(FsError::invalid("block id already used"));
                }
                let f = self.file_mut(*inode);
                if let (Some(len), Some(last)) = (previous_len, f.blocks.last_mut()) {
                    last.len = *len;
                }
                f.blocks.push(*block);
                self.next_block = self.next_block.max(block.id + 1);
                self.gen_stamp = self.gen_stamp.max(block.gen_stamp);
                Effects::on(*inode)
            }
            Edit::AbandonBlock {
                inode,
                client,
                block_id,
            } => {
                let f = self.file_being_written(*inode, client)?;
                if f.blocks.last().map(|b| b.id) != Some(*block_id) {
                    return Err(FsError::invalid(format!(
                        "block {block_id} is not the file's last block"
                    )));
                }
                self.file_mut(*inode).blocks.pop();
                Effects {
                    inode: Some(*inode),
                    removed_blocks: vec![*block_id],
                    ..Effects::default()
                }
            }
            Edit::UpdateBlock {
                inode,
                block_id,
                gen_stamp,
                len,
            } => {
                let f = self.file(*inode).ok_or_else(|| gone(*inode))?;
                let Some(i) = f.blocks.iter().position(|b| b.id == *block_id) else {
                    return Err(FsError::invalid(format!(
                        "block {block_id} does not belong to inode {inode}"
                    )));
                };
                if *gen_stamp < f.blocks[i].gen_stamp {
                    return Err(FsError::invalid(format!(
                        "generation stamp {gen_stamp} is older than the block's {}",
                        f.blocks[i].gen_stamp
                    )));
                }
                let b = &mut self.file_mut(*inode).blocks[i];
                b.gen_stamp = *gen_stamp;
                b.len = *len;
                self.gen_stamp = self.gen_stamp.max(*gen_stamp);
                Effects::on(*inode)
            }
            Edit::Close {
                inode,
                client,
                time,
                last_len,
            } => {
                self.file_being_written(*inode, client)?;
                let f = self.file_mut(*inode);
                if let (Some(len), Some(last)) = (last_len, f.blocks.last_mut()) {
                    last.len = *len;
                }
                f.uc = None;
                // An empty last block (a writer that died before writing to
                // it) is dropped.
                let mut removed = Vec::new();
                if f.blocks.last().is_some_and(|b| b.len == 0) {
                    removed.push(f.blocks.pop().expect("checked").id);
                }
                let ino = self.inodes.get_mut(inode).expect("checked");
                ino.mtime = *time;
                Effects {
                    inode: Some(*inode),
                    removed_blocks: removed,
                    closed: vec![*inode],
                    ..Effects::default()
                }
            }
            Edit::ReassignLease { inode, client } => {
                let f = self.file(*inode).ok_or_else(|| gone(*inode))?;
                if f.uc.is_none() {
                    return Err(FsError::invalid(format!("inode {inode} is not open")));
                }
                let f = self.file_mut(*inode);
                f.uc.as_mut().expect("checked").client = client.clone();
                Effects::on(*inode)
            }
            Edit::Rename { src, dst, time } => self.rename(src, dst, *time, caller)?,
            Edit::Delete {
                path: p,
                recursive,
                time,
            } => {
                let id = self.resolve(p, caller)?;
                if id == ROOT {
                    return Err(FsError::invalid("the root directory cannot be deleted"));
                }
                let parent = self.get(id).parent;
                if let Body::Dir(c) = &self.get(id).body {
                    if !c.is_empty() && !recursive {
                        return Err(FsError::new(
                            Code::DirectoryNotEmpty,
                            format!("{p}: directory is not empty"),
                        ));
                    }
                }
                if let Some(c) = caller {
                    self.check(c, parent, WRITE | EXEC)?;
                    self.check_sticky(c, parent, id)?;
                    if *recursive {
                        self.check_subtree(c, id)?;
                    }
                }
                let mut fx = Effects::default();
                self.detach(parent, id, &mut fx);
                self.touch_dir(parent, *time);
                fx.inode = Some(id);
                fx
            }
            Edit::SetReplication {
                path: p,
                replication,
            } => {
                check_replication(*replication)?;
                let id = self.resolve(p, caller)?;
                if let Some(c) = caller {
                    self.check(c, id, WRITE)?;
                }
                match &mut self.inodes.get_mut(&id).expect("resolved").body {
                    Body::Dir(_) => {
                        return Err(FsError::new(
                            Code::IsDirectory,
                            format!("{p}: is a directory (replication is per file)"),
                        ))
                    }
                    Body::File(f) => f.replication = *replication,
                }
                Effects {
                    inode: Some(id),
                    replication_changed: vec![id],
                    ..Effects::default()
                }
            }
            Edit::SetPermission { path: p, perm } => {
                if *perm > 0o1777 {
                    return Err(FsError::invalid(format!("invalid permission {perm:o}")));
                }
                let id = self.resolve(p, caller)?;
                if let Some(c) = caller {
                    self.check_owner(c, id)?;
                }
                self.inodes.get_mut(&id).expect("resolved").perm = *perm;
                Effects::on(id)
            }
            Edit::SetOwner {
                path: p,
                owner,
                group,
            } => {
                let id = self.resolve(p, caller)?;
                if let Some(c) = caller {
                    if owner.is_some() && !self.is_superuser(c) {
                        return Err(FsError::new(
                            Code::PermissionDenied,
                            format!(
                                "Permission denied: only the superuser may change the owner of {p}"
                            ),
                        ));
                    }
                    self.check_owner(c, id)?;
                    if let Some(g) = group {
                        if !self.is_superuser(c) && !c.groups.contains(g) {
                            return Err(FsError::new(
                                Code::PermissionDenied,
                                format!("Permission denied: {} is not in group {g}", c.user),
                            ));
                        }
                    }
                }
                for n in [owner, group].into_iter().flatten() {
                    if n.is_empty() || n.contains(char::is_whitespace) || n.contains(':') {
                        return Err(FsError::invalid(format!(
                            "invalid user or group name {n:?}"
                        )));
                    }
                }
                let o = owner.as_deref().map(|o| self.intern(o));
                let g = group.as_deref().map(|g| self.intern(g));
                let ino = self.inodes.get_mut(&id).expect("resolved");
                if let Some(o) = o {
                    ino.owner = o;
                }
                if let Some(g) = g {
                    ino.group = g;
                }
                Effects::on(id)
            }
            Edit::SetTimes {
                path: p,
                mtime,
                atime,
            } => {
                let id = self.resolve(p, caller)?;
                if let Some(c) = caller {
                    self.check(c, id, WRITE)?;
                }
                let ino = self.inodes.get_mut(&id).expect("resolved");
                if let Some(m) = mtime {
                    ino.mtime = *m;
                }
                if let Some(a) = atime {
                    ino.atime = *a;
                }
                Effects::on(id)
            }
            Edit::GenStamp { gen_stamp } => {
                self.gen_stamp = self.gen_stamp.max(*gen_stamp);
                Effects::default()
            }
        };
        Ok(fx)
    }

    #[allow(clippy::too_many_arguments)]
    fn mkdirs(
        &mut self,
        p: &str,
        perm: u16,
        owner: &str,
        group: &str,
        time: i64,
        create_parent: bool,
        caller: Option<&Caller>,
    ) -> FsResult<Effects> {
        let comps = path::components(p)?;
        let ids = self.walk(&comps);
        self.check_traverse(&ids, comps.len(), caller)?;
        let last = *ids.last().expect("root");
        if ids.len() == comps.len() + 1 {
            // Exists: fine for a directory (mkdir -p), an error for a file.
            return match self.get(last).body {
                Body::Dir(_) if create_parent => Ok(Effects::on(last)),
                Body::Dir(_) => Err(FsError::new(
                    Code::AlreadyExists,
                    format!("{p}: directory exists"),
                )),
                Body::File(_) => Err(FsError::new(
                    Code::AlreadyExists,
                    format!("{p}: a file exists there"),
                )),
            };
        }
        if let Body::File(_) = self.get(last).body {
            return Err(FsError::new(
                Code::ParentNotDirectory,
                format!("{p}: {} is a file", self.full_path(last)),
            ));
        }
        let missing = &comps[ids.len() - 1..];
        if missing.len() > 1 && !create_parent {
            return Err(crate::error::not_found(&path::join(
                &comps[..comps.len() - 1],
            )));
        }
        if let Some(c) = caller {
            self.check(c, last, WRITE | EXEC)?;
        }
        let names: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
        let id = self.make_dirs(last, &names, perm & 0o1777, owner, group, time);
        Ok(Effects::on(id))
    }

    /// Creates the chain `names` under `base`; returns the deepest.
    fn make_dirs(
        &mut self,
        base: InodeId,
        names: &[String],
        perm: u16,
        owner: &str,
        group: &str,
        time: i64,
    ) -> InodeId {
        let owner = self.intern(owner);
        let group = self.intern(group);
        let mut parent = base;
        for n in names {
            let id = self.next_inode;
            self.next_inode += 1;
            self.link(
                parent,
                id,
                Inode {
                    parent,
                    name: n.as_str().into(),
                    mtime: time,
                    atime: time,
                    perm,
                    owner,
                    group,
                    body: Body::Dir(Vec::new()),
                },
            );
            self.touch_dir(parent, time);
            parent = id;
        }
        parent
    }

    /// For a create: where the new entry goes, its name, and what is there
    /// now (checks write on the parent).
    fn prepare_parent(
        &self,
        p: &str,
        create_parent: bool,
        caller: Option<&Caller>,
    ) -> FsResult<(Parent, String, Option<InodeId>)> {
        let comps = path::components(p)?;
        let Some((name, parents)) = comps.split_last() else {
            return Err(FsError::new(Code::IsDirectory, "/: is a directory"));
        };
        let ids = self.walk(&comps);
        self.check_traverse(&ids, comps.len(), caller)?;
        if ids.len() == comps.len() + 1 {
            let existing = *ids.last().expect("root");
            let parent = ids[ids.len() - 2];
            if let Some(c) = caller {
                self.check(c, parent, WRITE)?;
            }
            return Ok((Parent::Existing(parent), name.to_string(), Some(existing)));
        }
        let last = *ids.last().expect("root");
        if let Body::File(_) = self.get(last).body {
            return Err(FsError::new(
                Code::ParentNotDirectory,
                format!("{p}: {} is a file", self.full_path(last)),
            ));
        }
        if let Some(c) = caller {
            self.check(c, last, WRITE)?;
        }
        if ids.len() == comps.len() {
            return Ok((Parent::Existing(last), name.to_string(), None));
        }
        if !create_parent {
            return Err(crate::error::not_found(&path::join(parents)));
        }
        let names = parents[ids.len() - 1..]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Ok((
            Parent::Missing { base: last, names },
            name.to_string(),
            None,
        ))
    }

    fn rename(
        &mut self,
        src: &str,
        dst: &str,
        time: i64,
        caller: Option<&Caller>,
    ) -> FsResult<Effects> {
        let sid = self.resolve(src, caller)?;
        if sid == ROOT {
            return Err(FsError::invalid("the root directory cannot be renamed"));
        }
        let src_norm = path::normalize(src)?;
        let mut dst_norm = path::normalize(dst)?;
        // Into an existing directory: keep the name (as `mv` does).
        if let Ok(did) = self.resolve(&dst_norm, caller) {
            if matches!(self.get(did).body, Body::Dir(_)) && did != sid {
                dst_norm = path::join(
                    &path::components(&dst_norm)?
                        .into_iter()
                        .chain([&*self.get(sid).name])
                        .collect::<Vec<_>>(),
                );
            }
        }
        if src_norm == dst_norm {
            return Ok(Effects::on(sid));
        }
        if path::is_within(&dst_norm, &src_norm) {
            return Err(FsError::invalid(format!(
                "cannot move {src_norm} into itself ({dst_norm})"
            )));
        }
        let (dparent_path, dname) = path::split_parent(&dst_norm)?;
        let dparent = self.resolve(&dparent_path, caller)?;
        if !matches!(self.get(dparent).body, Body::Dir(_)) {
            return Err(FsError::new(
                Code::ParentNotDirectory,
                format!("{dst}: {dparent_path} is a file"),
            ));
        }
        if let Body::Dir(c) = &self.get(dparent).body {
            if self.child(c, &dname).is_ok() {
                return Err(FsError::new(
                    Code::AlreadyExists,
                    format!("{dst_norm}: already exists"),
                ));
            }
        }
        let sparent = self.get(sid).parent;
        if let Some(c) = caller {
            self.check(c, sparent, WRITE | EXEC)?;
            self.check_sticky(c, sparent, sid)?;
            self.check(c, dparent, WRITE | EXEC)?;
        }
        self.unlink(sparent, sid);
        let mut ino = self.inodes.swap_remove(&sid).expect("resolved");
        ino.name = dname.as_str().into();
        ino.parent = dparent;
        self.link(dparent, sid, ino);
        self.touch_dir(sparent, time);
        self.touch_dir(dparent, time);
        Ok(Effects::on(sid))
    }

    fn check_sticky(&self, c: &Caller, parent: InodeId, child: InodeId) -> FsResult<()> {
        let p = self.get(parent);
        if p.perm & STICKY == 0 || self.is_superuser(c) {
            return Ok(());
        }
        let user = c.user.as_str();
        if self.name(p.owner) == user || self.name(self.get(child).owner) == user {
            return Ok(());
        }
        Err(FsError::new(
            Code::PermissionDenied,
            format!(
                "Permission denied: the sticky bit on {} keeps {} from removing {}",
                self.full_path(parent),
                user,
                self.full_path(child)
            ),
        ))
    }

    /// A recursive delete needs rwx on every directory below.
    fn check_subtree(&self, c: &Caller, id: InodeId) -> FsResult<()> {
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            if let Body::Dir(children) = &self.get(id).body {
                if !children.is_empty() {
                    self.check(c, id, READ | WRITE | EXEC)?;
                }
                stack.extend(children.iter().copied());
            }
        }
        Ok(())
    }

    fn file_being_written(&self, inode: InodeId, client: &str) -> FsResult<&FileInode> {
        let f = self.file(inode).ok_or_else(|| gone(inode))?;
        match &f.uc {
            None => Err(FsError::new(
                Code::LeaseMismatch,
                format!("{} is not open for writing", self.full_path(inode)),
            )),
            Some(uc) if uc.client != client => Err(FsError::new(
                Code::LeaseMismatch,
                format!(
                    "{} is held by {}, not {client}",
                    self.full_path(inode),
                    uc.client
                ),
            )),
            Some(_) => Ok(f),
        }
    }

    fn file_mut(&mut self, id: InodeId) -> &mut FileInode {
        match &mut self.inodes.get_mut(&id).expect("checked").body {
            Body::File(f) => f,
            Body::Dir(_) => unreachable!("checked to be a file"),
        }
    }

    fn link(&mut self, parent: InodeId, id: InodeId, ino: Inode) {
        let name = ino.name.clone();
        self.inodes.insert(id, ino);
        let pos = match &self.get(parent).body {
            Body::Dir(c) => self.child(c, &name).unwrap_or_else(|i| i),
            Body::File(_) => unreachable!("parents are directories"),
        };
        if let Body::Dir(c) = &mut self.inodes.get_mut(&parent).expect("exists").body {
            c.insert(pos, id);
        }
    }

    fn unlink(&mut self, parent: InodeId, id: InodeId) {
        let name = self.get(id).name.clone();
        let pos = match &self.get(parent).body {
            Body::Dir(c) => self.child(c, &name).ok(),
            Body::File(_) => None,
        };
        if let (Some(pos), Body::Dir(c)) =
            (pos, &mut self.inodes.get_mut(&parent).expect("exists").body)
        {
            c.remove(pos);
        }
    }

    /// Unlinks `id` from `parent` and drops it with everything below it,
    /// noting the blocks and open files that go with them.
    fn detach(&mut self, parent: InodeId, id: InodeId, fx: &mut Effects) {
        self.unlink(parent, id);
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            let Some(ino) = self.inodes.swap_remove(&id) else {
                continue;
            };
            match ino.body {
                Body::Dir(c) => stack.extend(c),
                Body::File(f) => {
                    fx.removed_blocks.extend(f.blocks.iter().map(|b| b.id));
                    if f.uc.is_some() {
                        fx.closed.push(id);
                    }
                }
            }
        }
    }

    fn touch_dir(&mut self, id: InodeId, time: i64) {
        if let Some(d) = self.inodes.get_mut(&id) {
            if time > d.mtime {
                d.mtime = time;
            }
        }
    }
}

enum Parent {
    Existing(InodeId),
    Missing { base: InodeId, names: Vec<String> },
}

fn gone(inode: InodeId) -> FsError {
    FsError::new(
        Code::FileNotFound,
        format!("inode {inode} no longer exists (the file was deleted)"),
    )
}

fn check_replication(r: u16) -> FsResult<()> {
    if r == 0 || r > MAX_REPLICATION {
        return Err(FsError::invalid(format!(
            "replication {r} is outside 1..={MAX_REPLICATION}"
        )));
    }
    Ok(())
}

/// `rwxr-xr-x`, with `t`/`T` for the sticky bit.
pub fn mode_string(perm: u16) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let b = (perm >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    if perm & STICKY != 0 {
        let last = if perm & 1 != 0 { 't' } else { 'T' };
        s.pop();
        s.push(last);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(user: &str) -> Caller {
        Caller {
            user: user.into(),
            groups: vec![format!("{user}-group")].into(),
        }
    }

    fn mkdir(p: &str, user: &str, perm: u16) -> Edit {
        Edit::Mkdirs {
            path: p.into(),
            perm,
            owner: user.into(),
            group: format!("{user}-group"),
            time: 10,
            create_parent: true,
        }
    }

    fn create(p: &str, user: &str) -> Edit {
        Edit::Create {
            path: p.into(),
            perm: 0o644,
            owner: user.into(),
            group: format!("{user}-group"),
            time: 20,
            replication: 3,
            block_size: 1024,
            overwrite: false,
            create_parent: false,
            client: format!("client-{user}"),
            client_host: "h1".into(),
        }
    }

    /// Adds one block to the open file `id` (hdfs's) and closes it at `len`.
    fn write_one_block(ns: &mut Namespace, id: InodeId, len: u64) -> BlockRec {
        let block = BlockRec {
            id: ns.next_block_id(),
            gen_stamp: ns.next_gen_stamp(),
            len: 0,
        };
        let client = "client-hdfs".to_string();
        let add = Edit::AddBlock {
            inode: id,
            client: client.clone(),
            block,
            previous_len: None,
        };
        ok(ns, add, "hdfs");
        let close = Edit::Close {
            inode: id,
            client,
            time: 40,
            last_len: Some(len),
        };
        ok(ns, close, "hdfs");
        block
    }

    fn snapshot(ns: &Namespace) -> Vec<u8> {
        hstack_daemon::format::encode_body(&ns.to_image())
    }

    /// Applies as `user`; on success the edit is returned for replay.
    fn ok(ns: &mut Namespace, e: Edit, user: &str) -> (Edit, Effects) {
        let fx = ns
            .apply(&e, Some(&caller(user)))
            .unwrap_or_else(|err| panic!("{e:?}: {err}"));
        (e, fx)
    }

    /// Must fail with `kind` and change nothing.
    fn refused(ns: &mut Namespace, e: Edit, user: &str, kind: Code) -> String {
        let before = snapshot(ns);
        let err = ns.apply(&e, Some(&caller(user))).unwrap_err();
        assert_eq!(err.code, kind, "{e:?}: {err}");
        assert_eq!(snapshot(ns), before, "{e:?} changed the namespace");
        err.message
    }

    fn names(ns: &Namespace, p: &str) -> Vec<String> {
        ns.list(p, "", 1000, None)
            .unwrap()
            .0
            .into_iter()
            .map(|s| s.path)
            .collect()
    }

    #[test]
    fn directories_files_and_listing() {
        let mut ns = Namespace::new("hdfs", "supergroup");
        ok(&mut ns, mkdir("/user/alice", "hdfs", 0o755), "hdfs");
        ok(&mut ns, mkdir("/user/bob", "hdfs", 0o755), "hdfs");
        ok(&mut ns, create("/user/alice/b", "hdfs"), "hdfs");
        ok(&mut ns, create("/user/alice/a", "hdfs"), "hdfs");
        assert_eq!(names(&ns, "/user"), vec!["/user/alice", "/user/bob"]);
        assert_eq!(
            names(&ns, "/user/alice/"),
            vec!["/user/alice/a", "/user/alice/b"]
        );
        // Paging.
        let (page, rest) = ns.list("/user/alice", "a", 1, None).unwrap();
        assert_eq!((page[0].path.as_str(), rest), ("/user/alice/b", 0));
        let (page, rest) = ns.list("/user/alice", "", 1, None).unwrap();
        assert_eq!((page.len(), rest), (1, 1));
        let st = ns.stat("/user/alice/a", None).unwrap().unwrap();
        assert!(!st.is_dir && st.under_construction && st.replication == 3);
        assert_eq!(ns.stat("/nope", None).unwrap(), None);
        // mkdir -p over an existing directory is fine; over a file it is not.
        ok(&mut ns, mkdir("/user", "hdfs", 0o755), "hdfs");
        refused(
            &mut ns,
            mkdir("/user/alice/a", "hdfs", 0o755),
            "hdfs",
            Code::AlreadyExists,
        );
        refused(
            &mut ns,
            mkdir("/user/alice/a/x", "hdfs", 0o755),
            "hdfs",
            Code::ParentNotDirectory,
        );
    }

    #[test]
    fn writable_file_is_what_an_overwrite_needs() {
        let mut ns = Namespace::new("hdfs", "supergroup");
        ok(&mut ns, mkdir("/open", "alice", 0o755), "hdfs");
        ok(&mut ns, mkdir("/shut", "alice", 0o700), "hdfs");
        ok(&mut ns, create("/open/f", "alice"), "alice");
        ok(&mut ns, create("/shut/f", "alice"), "alice");
        let id = ns.resolve_id("/open/f").unwrap();
        assert_eq!(ns.writable_file("/open/f", &caller("alice")).unwrap(), id);
        assert_eq!(ns.writable_file("/open/f", &caller("hdfs")).unwrap(), id);
        let deny = |p: &str| ns.writable_file(p, &caller("bob")).unwrap_err().code;
        assert_eq!(deny("/open/f"), Code::PermissionDenied, "0644, not bob's");
        assert_eq!(deny("/shut/f"), Code::PermissionDenied, "no traverse");
        assert_eq!(deny("/open/none"), Code::FileNotFound);
        assert_eq!(
            ns.writable_file("/open", &caller("alice"))
                .unwrap_err()
                .code,
            Code::IsDirectory
        );
    }

    #[test]
    fn bad_creates_and_deletes_change_nothing() {
        let mut ns = Namespace::new("hdfs", "supergroup");
        ok(&mut ns, mkdir("/d/sub", "hdfs", 0o755), "hdfs");
        ok(&mut ns, create("/d/f", "hdfs"), "hdfs");
        refused(&mut ns, create("/d/sub", "hdfs"), "hdfs", Code::IsDirectory);
        refused(&mut ns, create("/d/f", "hdfs"), "hdfs", Code::AlreadyExists);
        refused(
            &mut ns,
            create("/missing/f", "hdfs"),
            "hdfs",
            Code::FileNotFound,
        );
        refused(
            &mut ns,
            create("/d/f/g", "hdfs"),
            "hdfs",
            Code::ParentNotDirectory,
        );
        refused(
            &mut ns,
            create("relative", "hdfs"),
            "hdfs",
            Code::InvalidPath,
        );
        let mut zero = create("/d/z", "hdfs");
        if let Edit::Create { replication, .. } = &mut zero {
            *replication = 0;
        }
        refused(&mut ns, zero, "hdfs", Code::InvalidArgument);
        let mut odd = create("/d/z", "hdfs");
        if let Edit::Create { block_size, .. } = &mut odd {
            *block_size = 1000;
        }
        refused(&mut ns, odd, "hdfs", Code::InvalidArgument);
        let del = |p: &str, recursive| Edit::Delete {
            path: p.into(),
            recursive,
            time: 30,
        };
        refused(&mut ns, del("/d", false), "hdfs", Code::DirectoryNotEmpty);
        refused(&mut ns, del("/", true), "hdfs", Code::InvalidArgument);
        refused(&mut ns, del("/nope", true), "hdfs", Code::FileNotFound);
        let (_, fx) = ok(&mut ns, del("/d", true), "hdfs");
        assert_eq!(fx.closed.len(), 1, "the open file's lease goes");
        assert_eq!(ns.inode_count(), 1);
    }

    #[test]
    fn overwrite_replaces_a_closed_file_and_frees_its_blocks() {
        let mut ns = Namespace::new("hdfs", "supergroup");
        let (_, fx) = ok(&mut ns, create("/f", "hdfs"), "hdfs");
        let id = fx.inode.unwrap();
        let block = write_one_block(&mut ns, id, 700);
        assert_eq!(ns.stat("/f", None).unwrap().unwrap().len, 700);
        let mut over = create("/f", "hdfs");
        if let Edit::Create { overwrite, .. } = &mut over {
            *overwrite = true;
        }
        let (_, fx) = ok(&mut ns, over, "hdfs");
        assert_eq!(fx.removed_blocks, vec![block.id]);
        assert_ne!(fx.inode, Some(id));
        assert_eq!(ns.stat("/f", None).unwrap().unwrap().len, 0);
    }

    #[test]
    fn blocks_follow_the_lease() {
        let mut ns = Namespace::new("hdfs", "supergroup");
        ok(&mut ns, mkdir("/w", "hdfs", 0o777), "hdfs");
        let (_, fx) = ok(&mut ns, create("/w/f", "alice"), "alice");
        let id = fx.inode.unwrap();
        let b = |ns: &Namespace| BlockRec {
            id: ns.next_block_id(),
            gen_stamp: ns.next_gen_stamp(),
            len: 0,
        };
        let b1 = b(&ns);
        let add = |block, client: &str, previous_len| Edit::AddBlock {
            inode: id,
            client: client.into(),
            block,
            previous_len,
        };
        refused(
            &mut ns,
            add(b1, "someone-else", None),
            "alice",
            Code::LeaseMismatch,
        );
        ok(&mut ns, add(b1, "client-alice", None), "alice");
        let b2 = b(&ns);
        ok(&mut ns, add(b2, "client-alice", Some(1024)), "alice");
        ok(
            &mut ns,
            Edit::AbandonBlock {
                inode: id,
                client: "client-alice".into(),
                block_id: b2.id,
            },
            "alice",
        );
        let b3 = b(&ns);
        assert!(b3.id > b2.id, "block ids are never reused");
        ok(&mut ns, add(b3, "client-alice", Some(1024)), "alice");
        ok(
            &mut ns,
            Edit::UpdateBlock {
                inode: id,
                block_id: b3.id,
                gen_stamp: b3.gen_stamp + 5,
                len: 10,
            },
            "alice",
        );
        refused(
            &mut ns,
            Edit::UpdateBlock {
                inode: id,
                block_id: b3.id,
                gen_stamp: b3.gen_stamp,
                len: 10,
            },
            "alice",
            Code::InvalidArgument,
        );
        ok(
            &mut ns,
            Edit::Close {
                inode: id,
                client: "client-alice".into(),
                time: 50,
                last_len: Some(300),
            },
            "alice",
        );
        let f = ns.file(id).unwrap();
        assert_eq!(f.len(), 1324);
        assert_eq!(f.blocks.len(), 2);
        assert!(f.uc.is_none());
        let b4 = b(&ns);
        refused(
            &mut ns,
            add(b4, "client-alice", None),
            "alice",
            Code::LeaseMismatch,
        );
    }

    #[test]
    fn rename_rules() {
        let mut ns = Namespace::new("hdfs", "supergroup");
        ok(&mut ns, mkdir("/a/b", "hdfs", 0o755), "hdfs");
        ok(&mut ns, mkdir("/dst", "hdfs", 0o755), "hdfs");
        ok(&mut ns, create("/a/f", "hdfs"), "hdfs");
        let mv = |s: &str, d: &str| Edit::Rename {
            src: s.into(),
            dst: d.into(),
            time: 60,
        };
        refused(&mut ns, mv("/a", "/a/b/c"), "hdfs", Code::InvalidArgument);
        refused(&mut ns, mv("/nope", "/x"), "hdfs", Code::FileNotFound);
        refused(
            &mut ns,
            mv("/a/f", "/missing/f"),
            "hdfs",
            Code::FileNotFound,
        );
        ok(&mut ns, mv("/a/f", "/dst"), "hdfs");
        assert_eq!(names(&ns, "/dst"), vec!["/dst/f"]);
        ok(&mut ns, mv("/dst/f", "/a/g"), "hdfs");
        ok(&mut ns, create("/a/h", "hdfs"), "hdfs");
        refused(&mut ns, mv("/a/g", "/a/h"), "hdfs", Code::AlreadyExists);
        ok(&mut ns, mv("/a", "/z"), "hdfs");
        assert_eq!(names(&ns, "/z"), vec!["/z/b", "/z/g", "/z/h"]);
        assert_eq!(
            ns.full_path(ns.stat("/z/b", None).unwrap().unwrap().inode),
            "/z/b"
        );
    }

    #[test]
    fn permissions_are_checked_for_the_caller() {
        let mut ns = Namespace::new("hdfs", "supergroup");
        ok(&mut ns, mkdir("/secure", "hdfs", 0o755), "hdfs");
        ok(&mut ns, mkdir("/shared", "hdfs", 0o1777), "hdfs");
        let msg = refused(
            &mut ns,
            create("/secure/x", "alice"),
            "alice",
            Code::PermissionDenied,
        );
        assert!(msg.contains("user=alice, access=WRITE"), "{msg}");
        assert!(msg.contains("drwxr-xr-x"), "{msg}");
        ok(&mut ns, create("/shared/alice-file", "alice"), "alice");
        // The sticky bit keeps bob from deleting alice's file.
        let del = Edit::Delete {
            path: "/shared/alice-file".into(),
            recursive: false,
            time: 70,
        };
        refused(&mut ns, del.clone(), "bob", Code::PermissionDenied);
        // Only the owner (or the superuser) changes permissions.
        let chmod = |p: &str, perm| Edit::SetPermission {
            path: p.into(),
            perm,
        };
        refused(
            &mut ns,
            chmod("/shared/alice-file", 0o600),
            "bob",
            Code::PermissionDenied,
        );
        ok(&mut ns, chmod("/shared/alice-file", 0o600), "alice");
        let err = ns
            .open("/shared/alice-file", Some(&caller("bob")))
            .unwrap_err();
        assert_eq!(err.code, Code::PermissionDenied);
        assert!(ns
            .open("/shared/alice-file", Some(&caller("alice")))
            .is_ok());
        assert!(ns.open("/shared/alice-file", Some(&caller("hdfs"))).is_ok());
        // Traverse: no x on a directory hides what is below it.
        ok(&mut ns, mkdir("/shared/private", "alice", 0o700), "alice");
        ok(&mut ns, create("/shared/private/f", "alice"), "alice");
        let err = ns
            .stat("/shared/private/f", Some(&caller("bob")))
            .unwrap_err();
        assert_eq!(err.code, Code::PermissionDenied);
        // chown: only the superuser changes the owner.
        let chown = Edit::SetOwner {
            path: "/shared/alice-file".into(),
            owner: Some("bob".into()),
            group: None,
        };
        refused(&mut ns, chown.clone(), "alice", Code::PermissionDenied);
        ok(&mut ns, chown, "hdfs");
        ok(&mut ns, del, "bob");
    }

    #[test]
    fn replaying_the_edits_rebuilds_the_same_namespace() {
        let mut ns = Namespace::new("hdfs", "supergroup");
        let mut log = Vec::new();
        let mut push = |ns: &mut Namespace, e: Edit| {
            let (e, fx) = ok(ns, e, "hdfs");
            log.push(e);
            fx
        };
        push(&mut ns, mkdir("/a/b/c", "hdfs", 0o755));
        let id = push(&mut ns, create("/a/f", "hdfs")).inode.unwrap();
        let block = BlockRec {
            id: ns.next_block_id(),
            gen_stamp: ns.next_gen_stamp(),
            len: 0,
        };
        push(
            &mut ns,
            Edit::AddBlock {
                inode: id,
                client: "client-hdfs".into(),
                block,
                previous_len: None,
            },
        );
        push(
            &mut ns,
            Edit::Close {
                inode: id,
                client: "client-hdfs".into(),
                time: 99,
                last_len: Some(5),
            },
        );
        push(
            &mut ns,
            Edit::Rename {
                src: "/a/b".into(),
                dst: "/x".into(),
                time: 100,
            },
        );
        push(
            &mut ns,
            Edit::SetReplication {
                path: "/a/f".into(),
                replication: 2,
            },
        );
        push(
            &mut ns,
            Edit::SetOwner {
                path: "/x".into(),
                owner: Some("carol".into()),
                group: Some("staff".into()),
            },
        );
        push(
            &mut ns,
            Edit::Delete {
                path: "/x/c".into(),
                recursive: false,
                time: 101,
            },
        );
        let mut replayed = Namespace::new("hdfs", "supergroup");
        for e in &log {
            replayed.apply(e, None).unwrap();
        }
        assert_eq!(snapshot(&replayed), snapshot(&ns));
        // And through an image.
        let back = Namespace::from_image(ns.to_image(), "hdfs", "supergroup").unwrap();
        assert_eq!(snapshot(&back), snapshot(&ns));
        assert_eq!(names(&back, "/a"), vec!["/a/f"]);
    }

    #[test]
    fn summary_counts_replicated_space() {
        let mut ns = Namespace::new("hdfs", "supergroup");
        ok(&mut ns, mkdir("/s/t", "hdfs", 0o755), "hdfs");
        let id = ok(&mut ns, create("/s/t/f", "hdfs"), "hdfs")
            .1
            .inode
            .unwrap();
        write_one_block(&mut ns, id, 100);
        let s = ns.summary("/s", None).unwrap();
        assert_eq!(
            (s.files, s.directories, s.length, s.space_consumed),
            (1, 2, 100, 300)
        );
        assert_eq!(mode_string(0o1777), "rwxrwxrwt");
        assert_eq!(mode_string(0o644), "rw-r--r--");
    }
}
