//! How an [`Edit`] changes the tree: every check first, so a refused edit
//! changes nothing, then the change.

use smallvec::SmallVec;

use super::{
    BlockRec, Body, Caller, Edit, Effects, FileInode, Inode, InodeId, Namespace, UnderConstruction,
    EXEC, MAX_REPLICATION, ROOT, WRITE,
};
use crate::error::{Code, FsError, FsResult};
use crate::path;

impl Namespace {
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
            Edit::Create { .. } => self.create(edit, caller)?,
            Edit::AddBlock {
                inode,
                client,
                block,
                previous_len,
            } => self.add_block(*inode, client, block, *previous_len, caller)?,
            Edit::AbandonBlock {
                inode,
                client,
                block_id,
            } => self.abandon_block(*inode, client, *block_id)?,
            Edit::UpdateBlock {
                inode,
                block_id,
                gen_stamp,
                len,
            } => self.update_block(*inode, *block_id, *gen_stamp, *len)?,
            Edit::Close {
                inode,
                client,
                time,
                last_len,
            } => self.close(*inode, client, *time, *last_len)?,
            Edit::ReassignLease { inode, client } => self.reassign_lease(*inode, client)?,
            Edit::Rename { src, dst, time } => self.rename(src, dst, *time, caller)?,
            Edit::Delete {
                path: p,
                recursive,
                time,
            } => self.delete(p, *recursive, *time, caller)?,
            Edit::SetReplication {
                path: p,
                replication,
            } => self.set_replication(p, *replication, caller)?,
            Edit::SetPermission { path: p, perm } => self.set_permission(p, *perm, caller)?,
            Edit::SetOwner {
                path: p,
                owner,
                group,
            } => self.set_owner(p, owner.as_deref(), group.as_deref(), caller)?,
            Edit::SetTimes {
                path: p,
                mtime,
                atime,
            } => self.set_times(p, *mtime, *atime, caller)?,
            Edit::GenStamp { gen_stamp } => {
                self.gen_stamp = self.gen_stamp.max(*gen_stamp);
                Effects::default()
            }
        };
        Ok(fx)
    }

    /// A new file (replacing a closed one when `overwrite` says so).
    fn create(&mut self, edit: &Edit, caller: Option<&Caller>) -> FsResult<Effects> {
        let Edit::Create {
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
        } = edit
        else {
            unreachable!("create is called with a Create edit")
        };
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
        Ok(fx)
    }

    fn add_block(
        &mut self,
        inode: InodeId,
        client: &str,
        block: &BlockRec,
        previous_len: Option<u64>,
        caller: Option<&Caller>,
    ) -> FsResult<Effects> {
        let f = self.file_being_written(inode, client)?;
        if let (Some(_), None) = (previous_len, f.blocks.last()) {
            return Err(FsError::invalid(
                "previous block given but the file has none",
            ));
        }
        if block.id < self.next_block && caller.is_some() {
            return Err(FsError::invalid("block id already used"));
        }
        let f = self.file_mut(inode);
        if let (Some(len), Some(last)) = (previous_len, f.blocks.last_mut()) {
            last.len = len;
        }
        f.blocks.push(*block);
        self.next_block = self.next_block.max(block.id + 1);
        self.gen_stamp = self.gen_stamp.max(block.gen_stamp);
        Ok(Effects::on(inode))
    }

    fn abandon_block(&mut self, inode: InodeId, client: &str, block_id: u64) -> FsResult<Effects> {
        let f = self.file_being_written(inode, client)?;
        if f.blocks.last().map(|b| b.id) != Some(block_id) {
            return Err(FsError::invalid(format!(
                "block {block_id} is not the file's last block"
            )));
        }
        self.file_mut(inode).blocks.pop();
        Ok(Effects {
            inode: Some(inode),
            removed_blocks: vec![block_id],
            ..Effects::default()
        })
    }

    fn update_block(
        &mut self,
        inode: InodeId,
        block_id: u64,
        gen_stamp: u64,
        len: u64,
    ) -> FsResult<Effects> {
        let f = self.file(inode).ok_or_else(|| gone(inode))?;
        let Some(i) = f.blocks.iter().position(|b| b.id == block_id) else {
            return Err(FsError::invalid(format!(
                "block {block_id} does not belong to inode {inode}"
            )));
        };
        if gen_stamp < f.blocks[i].gen_stamp {
            return Err(FsError::invalid(format!(
                "generation stamp {gen_stamp} is older than the block's {}",
                f.blocks[i].gen_stamp
            )));
        }
        let b = &mut self.file_mut(inode).blocks[i];
        b.gen_stamp = gen_stamp;
        b.len = len;
        self.gen_stamp = self.gen_stamp.max(gen_stamp);
        Ok(Effects::on(inode))
    }

    fn close(
        &mut self,
        inode: InodeId,
        client: &str,
        time: i64,
        last_len: Option<u64>,
    ) -> FsResult<Effects> {
        self.file_being_written(inode, client)?;
        let f = self.file_mut(inode);
        if let (Some(len), Some(last)) = (last_len, f.blocks.last_mut()) {
            last.len = len;
        }
        f.uc = None;
        // An empty last block (a writer that died before writing to
        // it) is dropped.
        let mut removed = Vec::new();
        if f.blocks.last().is_some_and(|b| b.len == 0) {
            removed.push(f.blocks.pop().expect("checked").id);
        }
        let ino = self.inodes.get_mut(&inode).expect("checked");
        ino.mtime = time;
        Ok(Effects {
            inode: Some(inode),
            removed_blocks: removed,
            closed: vec![inode],
            ..Effects::default()
        })
    }

    fn reassign_lease(&mut self, inode: InodeId, client: &str) -> FsResult<Effects> {
        let f = self.file(inode).ok_or_else(|| gone(inode))?;
        if f.uc.is_none() {
            return Err(FsError::invalid(format!("inode {inode} is not open")));
        }
        let f = self.file_mut(inode);
        f.uc.as_mut().expect("checked").client = client.to_string();
        Ok(Effects::on(inode))
    }

    fn delete(
        &mut self,
        p: &str,
        recursive: bool,
        time: i64,
        caller: Option<&Caller>,
    ) -> FsResult<Effects> {
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
            if recursive {
                self.check_subtree(c, id)?;
            }
        }
        let mut fx = Effects::default();
        self.detach(parent, id, &mut fx);
        self.touch_dir(parent, time);
        fx.inode = Some(id);
        Ok(fx)
    }

    fn set_replication(
        &mut self,
        p: &str,
        replication: u16,
        caller: Option<&Caller>,
    ) -> FsResult<Effects> {
        check_replication(replication)?;
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
            Body::File(f) => f.replication = replication,
        }
        Ok(Effects {
            inode: Some(id),
            replication_changed: vec![id],
            ..Effects::default()
        })
    }

    fn set_permission(&mut self, p: &str, perm: u16, caller: Option<&Caller>) -> FsResult<Effects> {
        if perm > 0o1777 {
            return Err(FsError::invalid(format!("invalid permission {perm:o}")));
        }
        let id = self.resolve(p, caller)?;
        if let Some(c) = caller {
            self.check_owner(c, id)?;
        }
        self.inodes.get_mut(&id).expect("resolved").perm = perm;
        Ok(Effects::on(id))
    }

    fn set_owner(
        &mut self,
        p: &str,
        owner: Option<&str>,
        group: Option<&str>,
        caller: Option<&Caller>,
    ) -> FsResult<Effects> {
        let id = self.resolve(p, caller)?;
        if let Some(c) = caller {
            if owner.is_some() && !self.is_superuser(c) {
                return Err(FsError::new(
                    Code::PermissionDenied,
                    format!("Permission denied: only the superuser may change the owner of {p}"),
                ));
            }
            self.check_owner(c, id)?;
            if let Some(g) = group {
                if !self.is_superuser(c) && !c.groups.iter().any(|x| x == g) {
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
        let o = owner.map(|o| self.intern(o));
        let g = group.map(|g| self.intern(g));
        let ino = self.inodes.get_mut(&id).expect("resolved");
        if let Some(o) = o {
            ino.owner = o;
        }
        if let Some(g) = g {
            ino.group = g;
        }
        Ok(Effects::on(id))
    }

    fn set_times(
        &mut self,
        p: &str,
        mtime: Option<i64>,
        atime: Option<i64>,
        caller: Option<&Caller>,
    ) -> FsResult<Effects> {
        let id = self.resolve(p, caller)?;
        if let Some(c) = caller {
            self.check(c, id, WRITE)?;
        }
        let ino = self.inodes.get_mut(&id).expect("resolved");
        if let Some(m) = mtime {
            ino.mtime = m;
        }
        if let Some(a) = atime {
            ino.atime = a;
        }
        Ok(Effects::on(id))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn mkdirs(
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
    pub(super) fn make_dirs(
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
    pub(super) fn prepare_parent(
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

    pub(super) fn rename(
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

    pub(super) fn file_being_written(&self, inode: InodeId, client: &str) -> FsResult<&FileInode> {
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

    pub(super) fn file_mut(&mut self, id: InodeId) -> &mut FileInode {
        match &mut self.inodes.get_mut(&id).expect("checked").body {
            Body::File(f) => f,
            Body::Dir(_) => unreachable!("checked to be a file"),
        }
    }

    pub(super) fn link(&mut self, parent: InodeId, id: InodeId, ino: Inode) {
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

    pub(super) fn unlink(&mut self, parent: InodeId, id: InodeId) {
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
    pub(super) fn detach(&mut self, parent: InodeId, id: InodeId, fx: &mut Effects) {
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

    pub(super) fn touch_dir(&mut self, id: InodeId, time: i64) {
        if let Some(d) = self.inodes.get_mut(&id) {
            if time > d.mtime {
                d.mtime = time;
            }
        }
    }
}

pub(super) enum Parent {
    Existing(InodeId),
    Missing { base: InodeId, names: Vec<String> },
}

pub(super) fn gone(inode: InodeId) -> FsError {
    FsError::new(
        Code::FileNotFound,
        format!("inode {inode} no longer exists (the file was deleted)"),
    )
}

pub(super) fn check_replication(r: u16) -> FsResult<()> {
    if r == 0 || r > MAX_REPLICATION {
        return Err(FsError::invalid(format!(
            "replication {r} is outside 1..={MAX_REPLICATION}"
        )));
    }
    Ok(())
}
