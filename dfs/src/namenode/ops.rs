//! The namenode's operations, apart from the wire: typed arguments and
//! results, no protobuf. The RPC services (`rpc/`) only decode a request,
//! call one of these, and encode the answer.
//!
//! Every operation passes one gate first ([`Namenode::gate`]): its
//! category (HDFS's `OperationCategory`) against the namenode's state, so
//! a standby namenode refuses reads and writes in one place. Changes go
//! through `Namenode::write` (checked, applied, logged, durable before the
//! answer); reads look under the lock.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{expected, now_ms, rack_of, HaState, Namenode, State};
use crate::blockmap::{AdminState, BlockMap, Command, Datanode, NodeIdx, NodeState, NodeStats};
use crate::error::{Code, FsError, FsResult};
use crate::namespace::{self, BlockRec, Caller, Edit, InodeId, Summary, MAX_REPLICATION};
use crate::path;
use crate::placement;

/// What an operation is, for the gate (HDFS's `OperationCategory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Category {
    /// Reads the namespace: served by the active only (a standby's view
    /// may lag).
    Read,
    /// Changes the namespace: the active only.
    Write,
    /// Datanode traffic: every namenode of a pair keeps its block map.
    Datanode,
    /// Administration (reports, safe mode): answered by either.
    Admin,
}

/// Who is calling: the user and the groups the namenode itself looked up,
/// the client's name (its lease holder id) and its host.
pub(crate) struct Who {
    pub caller: Caller,
    pub client: String,
    pub host: String,
}

impl Who {
    fn writer(&self) -> FsResult<&str> {
        if self.client.is_empty() {
            return Err(FsError::invalid(
                "a writer must name its client (client_name)",
            ));
        }
        Ok(&self.client)
    }
}

/// A datanode as operations report it.
#[derive(Clone, Debug)]
pub(crate) struct NodeView {
    pub id: String,
    pub host: String,
    pub transfer_addr: String,
    pub rpc_addr: String,
    pub http_addr: String,
    pub rack: String,
    pub capacity: u64,
    pub used: u64,
    pub remaining: u64,
    pub xceivers: u32,
    pub failed_volumes: u32,
    pub state: NodeState,
    pub last_contact_ms: i64,
    pub blocks: u64,
    pub domain_socket: String,
}

fn view(n: &Datanode) -> NodeView {
    NodeView {
        id: n.id.clone(),
        host: n.host.clone(),
        transfer_addr: n.transfer_addr.clone(),
        rpc_addr: n.rpc_addr.clone(),
        http_addr: n.http_addr.clone(),
        rack: n.rack.clone(),
        capacity: n.capacity,
        used: n.used,
        remaining: n.remaining,
        xceivers: n.xceivers,
        failed_volumes: n.failed_volumes,
        state: n.state(),
        last_contact_ms: n.last_contact.elapsed().as_millis() as i64,
        blocks: n.blocks,
        domain_socket: n.domain_socket.clone(),
    }
}

fn views(bm: &BlockMap, nodes: &[NodeIdx]) -> Vec<NodeView> {
    nodes.iter().map(|n| view(bm.node(*n))).collect()
}

/// A block and where to find (or write) it.
#[derive(Clone, Debug)]
pub(crate) struct Located {
    pub block: BlockRec,
    /// Where the block starts in its file.
    pub offset: u64,
    pub locs: Vec<NodeView>,
    /// Only corrupt replicas are left: these are they.
    pub corrupt: bool,
}

/// The blocks of a byte range of a file.
#[derive(Debug, Default)]
pub(crate) struct LocatedFile {
    pub file_len: u64,
    pub under_construction: bool,
    pub blocks: Vec<Located>,
    /// The block being written, when the file is open.
    pub last_block: Option<Located>,
    pub last_block_complete: bool,
}

pub(crate) struct CreateArgs {
    pub path: String,
    /// 0 = the default (0644).
    pub permission: u32,
    /// 0 = the namenode's default.
    pub replication: u32,
    /// 0 = the namenode's default.
    pub block_size: u64,
    pub overwrite: bool,
    pub create_parent: bool,
}

/// The namenode's answer to `report`.
pub(crate) struct Report {
    pub datanodes: Vec<NodeView>,
    pub capacity: u64,
    pub used: u64,
    pub remaining: u64,
    pub under_replicated: u64,
    pub missing: u64,
    pub corrupt: u64,
    pub safe_mode: bool,
    pub files: u64,
    pub blocks: u64,
    pub pending_replication: u64,
    pub excess: u64,
}

pub(crate) struct FsckBlock {
    pub block: BlockRec,
    pub replicas: Vec<NodeView>,
    pub corrupt_on: Vec<String>,
    pub problems: Vec<String>,
}

pub(crate) struct FsckFile {
    pub path: String,
    pub len: u64,
    pub replication: u32,
    pub blocks: Vec<FsckBlock>,
    pub under_construction: bool,
}

#[derive(Default)]
pub(crate) struct Fsck {
    pub files: Vec<FsckFile>,
    pub directories: u64,
    pub total_blocks: u64,
    pub under_replicated: u64,
    pub mis_replicated: u64,
    pub missing: u64,
    pub corrupt: u64,
    pub healthy: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SafeModeAction {
    Get,
    Enter,
    Leave,
}

pub(crate) struct SafeModeInfo {
    pub on: bool,
    pub reason: String,
    pub blocks_total: u64,
    pub blocks_safe: u64,
}

/// What a datanode must do, as a heartbeat answers it.
pub(crate) enum DatanodeCommand {
    Replicate {
        block: BlockRec,
        targets: Vec<NodeView>,
    },
    Delete(Vec<BlockRec>),
    Recover {
        block: BlockRec,
        new_gen_stamp: u64,
        replicas: Vec<NodeView>,
    },
}

fn command(bm: &BlockMap, c: Command) -> DatanodeCommand {
    match c {
        Command::Replicate { block, targets } => DatanodeCommand::Replicate {
            block,
            targets: views(bm, &targets),
        },
        Command::Delete(blocks) => DatanodeCommand::Delete(blocks),
        Command::Recover {
            block,
            new_gen_stamp,
            replicas,
        } => DatanodeCommand::Recover {
            block,
            new_gen_stamp,
            replicas: views(bm, &replicas),
        },
    }
}

/// A datanode registering.
pub(crate) struct Registration {
    pub id: String,
    pub host: String,
    pub transfer_addr: String,
    pub rpc_addr: String,
    pub http_addr: String,
    pub rack: String,
    /// Where clients on its host ask for short-circuit reads ("": nowhere).
    pub domain_socket: String,
    pub stats: NodeStats,
    pub cluster_id: String,
}

pub(crate) struct Registered {
    pub id: String,
    pub heartbeat_ms: u32,
    pub block_report_ms: u32,
    pub cluster_id: String,
}

/// A heartbeat's answer: commands, or "register again" (the namenode
/// does not know this datanode: it restarted).
pub(crate) enum HeartbeatAnswer {
    Commands(Vec<DatanodeCommand>),
    Reregister,
}

/// A lease recovery's outcome, as the primary datanode commits it.
pub(crate) struct BlockSync {
    pub old: BlockRec,
    pub new_gen_stamp: u64,
    pub new_len: u64,
    /// Datanode ids holding the block at the new length.
    pub datanodes: Vec<String>,
    /// The file has no data in this block: drop it.
    pub delete_block: bool,
}

/// A corrupt replica someone reports.
pub(crate) struct BadReplica {
    pub block: BlockRec,
    pub datanode: String,
    pub reason: String,
}

impl Namenode {
    /// The one gate every operation passes: a standby serves only what it
    /// must (datanode traffic, administration).
    pub(crate) fn gate(&self, category: Category) -> FsResult<()> {
        match (self.ha_state(), category) {
            (HaState::Active, _) | (HaState::Standby, Category::Datanode | Category::Admin) => {
                Ok(())
            }
            (HaState::Standby, _) => Err(FsError::standby(
                "this namenode is the standby: it serves no reads or writes",
                None,
            )),
        }
    }

    /// Refuses anyone but the superuser (or a member of the supergroup).
    pub(crate) fn check_superuser(&self, who: &Who, what: &str) -> FsResult<()> {
        if self.lock().ns.is_superuser(&who.caller) {
            return Ok(());
        }
        Err(FsError::permission_denied(format!(
            "{what}: only the superuser may do this (user {} is neither {} nor in group {})",
            who.caller.user,
            self.cfg.superuser_name(),
            self.cfg.supergroup
        )))
    }

    /// A replication a client asks for: at least 1, at most what the
    /// cluster can hold.
    fn check_replication(&self, st: &State, r: u32) -> FsResult<u16> {
        if r == 0 {
            return Err(FsError::invalid("replication must be at least 1"));
        }
        let nodes = st.bm.writable_count();
        if r > MAX_REPLICATION as u32 || r as usize > nodes {
            return Err(FsError::invalid(format!(
                "replication {r} is more than the {nodes} datanodes in service"
            )));
        }
        Ok(r as u16)
    }

    fn check_block_size(&self, b: u64) -> FsResult<u64> {
        if b == 0 {
            return Ok(self.cfg.default_block_size);
        }
        if b < self.cfg.min_block_size || b % 512 != 0 {
            return Err(FsError::invalid(format!(
                "block size {b} must be a multiple of 512 and at least {} (min_block_size)",
                self.cfg.min_block_size
            )));
        }
        Ok(b)
    }

    /// The file being written as `inode` by `client`, for the pipeline
    /// calls: the lease must be theirs.
    fn held_file(st: &State, inode: InodeId, client: &str) -> FsResult<()> {
        let f = st.ns.file(inode).ok_or_else(|| {
            FsError::new(
                Code::FileNotFound,
                format!("file (inode {inode}) does not exist"),
            )
        })?;
        match &f.uc {
            Some(uc) if uc.client == client => Ok(()),
            Some(uc) => Err(FsError::new(
                Code::LeaseMismatch,
                format!(
                    "{}: the lease is held by {}, not {client}",
                    st.ns.full_path(inode),
                    uc.client
                ),
            )),
            None => Err(FsError::new(
                Code::LeaseMismatch,
                format!(
                    "{}: the file is not open for writing",
                    st.ns.full_path(inode)
                ),
            )),
        }
    }

    /// The file a block belongs to.
    fn block_owner(st: &State, id: u64) -> FsResult<InodeId> {
        st.bm.blocks.get(&id).map(|i| i.inode).ok_or_else(|| {
            FsError::new(
                Code::FileNotFound,
                format!("block {id} does not belong to any file"),
            )
        })
    }

    /// A plain namespace change: safe mode check, apply, log, sync.
    async fn change(&self, what: String, w: &Who, edit: Edit) -> FsResult<Option<InodeId>> {
        self.gate(Category::Write)?;
        self.write(|st, log| {
            self.check_not_safe(st, &what)?;
            Ok(st.apply(log, edit, Some(&w.caller))?.inode)
        })
        .await
    }

    // ---- the namespace ----

    pub(crate) async fn mkdirs(
        &self,
        w: &Who,
        path: &str,
        permission: u32,
        create_parent: bool,
    ) -> FsResult<namespace::Status> {
        self.gate(Category::Write)?;
        let p = path::normalize(path)?;
        self.write(|st, log| {
            self.check_not_safe(st, &format!("create directory {p}"))?;
            let edit = Edit::Mkdirs {
                path: p.clone(),
                perm: if permission == 0 {
                    0o755
                } else {
                    (permission & 0o1777) as u16
                },
                owner: w.caller.user.clone(),
                group: st.ns.inherited_group(&p),
                time: now_ms(),
                create_parent,
            };
            let id = st
                .apply(log, edit, Some(&w.caller))?
                .inode
                .expect("mkdirs names it");
            Ok(st.ns.status_of(id, p.clone()))
        })
        .await
    }

    pub(crate) async fn create(&self, w: &Who, a: CreateArgs) -> FsResult<namespace::Status> {
        self.gate(Category::Write)?;
        let client = w.writer()?.to_string();
        let p = path::normalize(&a.path)?;
        self.write(|st, log| {
            self.check_not_safe(st, &format!("create {p}"))?;
            let replication = if a.replication == 0 {
                self.cfg.default_replication
            } else {
                self.check_replication(st, a.replication)?
            };
            let block_size = self.check_block_size(a.block_size)?;
            self.recover_stale_writer(st, &p, w, &client, a.overwrite)?;
            let edit = Edit::Create {
                path: p.clone(),
                perm: if a.permission == 0 {
                    0o644
                } else {
                    (a.permission & 0o777) as u16
                },
                owner: w.caller.user.clone(),
                group: st.ns.inherited_group(&p),
                time: now_ms(),
                replication,
                block_size,
                overwrite: a.overwrite,
                create_parent: a.create_parent,
                client: client.clone(),
                client_host: w.host.clone(),
            };
            let id = st
                .apply(log, edit, Some(&w.caller))?
                .inode
                .expect("create names it");
            Ok(st.ns.status_of(id, p.clone()))
        })
        .await
    }

    /// A file still held by a writer whose lease passed its soft limit:
    /// recover it, and tell this client to try again. Only a caller who may
    /// overwrite the file can set that off.
    fn recover_stale_writer(
        &self,
        st: &mut State,
        p: &str,
        w: &Who,
        client: &str,
        overwrite: bool,
    ) -> FsResult<()> {
        let (true, Ok(id)) = (overwrite, st.ns.writable_file(p, &w.caller)) else {
            return Ok(());
        };
        let Some(uc) = st.ns.file(id).and_then(|f| f.uc.as_deref()) else {
            return Ok(());
        };
        let holder = uc.client.clone();
        let stale = st
            .leases
            .get(&holder)
            .is_none_or(|l| l.renewed.elapsed().as_millis() as u64 >= self.cfg.lease_soft_limit_ms);
        if holder != client && stale && !st.recovering.contains_key(&id) {
            self.start_recovery(st, id, Instant::now())?;
            return Err(FsError::new(
                Code::AlreadyExists,
                format!("{p}: is being written by {holder}, whose lease expired; lease recovery has started, try again shortly"),
            ));
        }
        Ok(())
    }

    pub(crate) async fn add_block(
        &self,
        w: &Who,
        inode: InodeId,
        previous: Option<BlockRec>,
        excluded: &[String],
    ) -> FsResult<Located> {
        self.gate(Category::Write)?;
        let client = w.writer()?.to_string();
        self.write(|st, log| {
            self.check_not_safe(st, "add a block")?;
            Namenode::held_file(st, inode, &client)?;
            let f = st.ns.file(inode).expect("held");
            let last = f.blocks.last().map(|b| b.id);
            if previous.map(|b| b.id) != last {
                return Err(FsError::invalid(format!(
                    "previous block {:?} is not the file's last block {last:?}",
                    previous.map(|b| b.id)
                )));
            }
            // HDFS's NotReplicatedYet: no next block until some datanode
            // has reported the previous one, so a writer never runs ahead
            // of blocks that may exist nowhere. The client retries.
            if let Some(p) = previous.filter(|b| b.len > 0) {
                if st.bm.blocks.get(&p.id).map_or(0, |i| i.replicas.len()) == 0 {
                    return Err(FsError::new(
                        Code::NotReplicatedYet,
                        format!(
                            "{}: no datanode has reported block {} yet; retry",
                            st.ns.full_path(inode),
                            p.id
                        ),
                    ));
                }
            }
            let (replication, block_size) = (f.replication as usize, f.block_size);
            let excluded: HashSet<String> = excluded.iter().cloned().collect();
            let targets = st.bm.choose_for_write(
                &mut st.rng,
                replication,
                Some(&w.host),
                block_size,
                &excluded,
            );
            if targets.is_empty() {
                return Err(FsError::new(
                    Code::NotEnoughDatanodes,
                    format!(
                        "{}: could only be written to 0 of the 1 minimum replicas: {} datanode(s) in service, {} excluded",
                        st.ns.full_path(inode),
                        st.bm.writable_count(),
                        excluded.len()
                    ),
                ));
            }
            let block = BlockRec {
                id: st.ns.next_block_id(),
                gen_stamp: st.ns.next_gen_stamp(),
                len: 0,
            };
            st.apply(
                log,
                Edit::AddBlock {
                    inode,
                    client: client.clone(),
                    block,
                    previous_len: previous.map(|b| b.len),
                },
                Some(&w.caller),
            )?;
            st.uc_locs.insert(block.id, targets.clone());
            let offset = st.ns.file(inode).expect("held").len();
            Ok(Located {
                block,
                offset,
                locs: views(&st.bm, &targets),
                corrupt: false,
            })
        })
        .await
    }

    pub(crate) async fn abandon_block(
        &self,
        w: &Who,
        inode: InodeId,
        block: BlockRec,
    ) -> FsResult<()> {
        let client = w.writer()?.to_string();
        let edit = Edit::AbandonBlock {
            inode,
            client,
            block_id: block.id,
        };
        self.change("abandon a block".into(), w, edit).await?;
        Ok(())
    }

    /// Closes the file; false while its last block is not reported yet.
    pub(crate) async fn complete(
        &self,
        w: &Who,
        inode: InodeId,
        last: Option<BlockRec>,
    ) -> FsResult<bool> {
        self.gate(Category::Write)?;
        let client = w.writer()?.to_string();
        self.write(|st, log| {
            self.check_not_safe(st, "complete a file")?;
            let f = st.ns.file(inode).ok_or_else(|| {
                FsError::new(
                    Code::FileNotFound,
                    format!("file (inode {inode}) does not exist"),
                )
            })?;
            let last_id = f.blocks.last().map(|b| b.id);
            if f.uc.is_none() && last.map(|b| b.id) == last_id {
                // A retry of a complete that succeeded.
                return Ok(true);
            }
            Namenode::held_file(st, inode, &client)?;
            if last.map(|b| b.id) != last_id {
                return Err(FsError::invalid(format!(
                    "last block {:?} is not the file's last block {last_id:?}",
                    last.map(|b| b.id)
                )));
            }
            if let Some(b) = last.filter(|b| b.len > 0) {
                let reported = st.bm.blocks.get(&b.id).map_or(0, |i| i.replicas.len());
                if reported == 0 {
                    // No datanode has reported the finished replica yet.
                    return Ok(false);
                }
            }
            st.apply(
                log,
                Edit::Close {
                    inode,
                    client,
                    time: now_ms(),
                    last_len: last.map(|b| b.len),
                },
                Some(&w.caller),
            )?;
            Ok(true)
        })
        .await
    }

    /// The blocks of `path` overlapping `offset..offset+length` (length 0:
    /// to the end), nearest replica first for the caller's host.
    pub(crate) fn block_locations(
        &self,
        w: &Who,
        path: &str,
        offset: u64,
        length: u64,
    ) -> FsResult<LocatedFile> {
        self.gate(Category::Read)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        let (_, f) = st.ns.open(path, Some(&w.caller))?;
        let file_len = f.len();
        if offset > file_len {
            return Err(FsError::invalid(format!(
                "offset {offset} is past the end of {path} ({file_len} bytes)"
            )));
        }
        let end = if length == 0 {
            u64::MAX
        } else {
            offset.saturating_add(length)
        };
        let reader_rack = st
            .bm
            .nodes
            .iter()
            .find(|n| n.host == w.host)
            .map(|n| n.rack.clone())
            .unwrap_or_default();
        let uc = f.uc.is_some();
        let n_blocks = f.blocks.len();
        let mut out = LocatedFile {
            file_len,
            under_construction: uc,
            ..Default::default()
        };
        let mut off = 0;
        let blocks = f.blocks.clone();
        for (i, b) in blocks.into_iter().enumerate() {
            let start = off;
            off += b.len;
            let is_uc_last = uc && i + 1 == n_blocks;
            if !(start < end && (off > offset || (is_uc_last && start >= offset))) {
                continue;
            }
            let mut locs: Vec<NodeIdx>;
            let mut corrupt = false;
            if is_uc_last {
                locs = st.uc_locs.get(&b.id).cloned().unwrap_or_default();
            } else {
                let info = st.bm.blocks.get(&b.id);
                locs = info.map(|i| i.replicas.to_vec()).unwrap_or_default();
                locs.retain(|n| st.bm.node(*n).alive);
                if locs.is_empty() {
                    // Only corrupt copies left: hand them out, flagged.
                    if let Some(c) = info.and_then(|i| i.corrupt.as_ref()) {
                        locs = c.iter().copied().filter(|n| st.bm.node(*n).alive).collect();
                        corrupt = !locs.is_empty();
                    }
                }
            }
            let bm = &st.bm;
            placement::sort_for_reader(&mut st.rng, &mut locs, |n| {
                let d = bm.node(*n);
                placement::distance(&w.host, &reader_rack, &d.host, &d.rack)
            });
            let lb = Located {
                block: b,
                offset: start,
                locs: views(&st.bm, &locs),
                corrupt,
            };
            if is_uc_last {
                out.last_block = Some(lb.clone());
            }
            out.blocks.push(lb);
        }
        out.last_block_complete = !uc;
        Ok(out)
    }

    pub(crate) async fn rename(&self, w: &Who, src: String, dst: String) -> FsResult<()> {
        let what = format!("rename {src} to {dst}");
        let edit = Edit::Rename {
            src,
            dst,
            time: now_ms(),
        };
        self.change(what, w, edit).await?;
        Ok(())
    }

    pub(crate) async fn delete(&self, w: &Who, path: String, recursive: bool) -> FsResult<()> {
        let what = format!("delete {path}");
        let edit = Edit::Delete {
            path,
            recursive,
            time: now_ms(),
        };
        self.change(what, w, edit).await?;
        Ok(())
    }

    /// Up to `limit` entries of a directory after `start_after`, and how
    /// many are left.
    pub(crate) fn list(
        &self,
        w: &Who,
        path: &str,
        start_after: &str,
        limit: u32,
    ) -> FsResult<(Vec<namespace::Status>, usize)> {
        self.gate(Category::Read)?;
        let limit = match limit {
            0 => 1000,
            n => n.min(10_000) as usize,
        };
        self.lock()
            .ns
            .list(path, start_after, limit, Some(&w.caller))
    }

    pub(crate) fn file_info(&self, w: &Who, path: &str) -> FsResult<Option<namespace::Status>> {
        self.gate(Category::Read)?;
        self.lock().ns.stat(path, Some(&w.caller))
    }

    pub(crate) async fn set_replication(
        &self,
        w: &Who,
        path: String,
        replication: u32,
    ) -> FsResult<()> {
        self.gate(Category::Write)?;
        self.write(|st, log| {
            self.check_not_safe(st, &format!("set the replication of {path}"))?;
            let replication = self.check_replication(st, replication)?;
            st.apply(
                log,
                Edit::SetReplication {
                    path: path.clone(),
                    replication,
                },
                Some(&w.caller),
            )
        })
        .await?;
        Ok(())
    }

    pub(crate) async fn set_permission(
        &self,
        w: &Who,
        path: String,
        permission: u32,
    ) -> FsResult<()> {
        if permission > 0o1777 {
            return Err(FsError::invalid(format!(
                "invalid permission {permission:o}"
            )));
        }
        let what = format!("change the permission of {path}");
        let edit = Edit::SetPermission {
            path,
            perm: permission as u16,
        };
        self.change(what, w, edit).await?;
        Ok(())
    }

    pub(crate) async fn set_owner(
        &self,
        w: &Who,
        path: String,
        owner: Option<String>,
        group: Option<String>,
    ) -> FsResult<()> {
        if owner.is_none() && group.is_none() {
            return Err(FsError::invalid("give an owner, a group or both"));
        }
        let what = format!("change the owner of {path}");
        let edit = Edit::SetOwner { path, owner, group };
        self.change(what, w, edit).await?;
        Ok(())
    }

    pub(crate) async fn set_times(
        &self,
        w: &Who,
        path: String,
        mtime: Option<i64>,
        atime: Option<i64>,
    ) -> FsResult<()> {
        let what = format!("set the times of {path}");
        let edit = Edit::SetTimes { path, mtime, atime };
        self.change(what, w, edit).await?;
        Ok(())
    }

    pub(crate) fn content_summary(&self, w: &Who, path: &str) -> FsResult<Summary> {
        self.gate(Category::Read)?;
        self.lock().ns.summary(path, Some(&w.caller))
    }

    // ---- writers ----

    pub(crate) fn renew_lease(&self, w: &Who) -> FsResult<()> {
        self.gate(Category::Write)?;
        let client = w.writer()?;
        if let Some(l) = self.lock().leases.get_mut(client) {
            l.renewed = Instant::now();
        }
        Ok(())
    }

    /// A new generation stamp for a block whose pipeline is rebuilt.
    pub(crate) async fn update_block_for_pipeline(
        &self,
        w: &Who,
        block: BlockRec,
    ) -> FsResult<BlockRec> {
        self.gate(Category::Write)?;
        let client = w.writer()?.to_string();
        self.write(|st, log| {
            self.check_not_safe(st, "rebuild a pipeline")?;
            let inode = Namenode::block_owner(st, block.id)?;
            Namenode::held_file(st, inode, &client)?;
            let gs = st.ns.next_gen_stamp();
            st.apply(log, Edit::GenStamp { gen_stamp: gs }, None)?;
            Ok(BlockRec {
                gen_stamp: gs,
                ..block
            })
        })
        .await
    }

    pub(crate) async fn update_pipeline(
        &self,
        w: &Who,
        old: BlockRec,
        new: BlockRec,
        new_nodes: &[String],
    ) -> FsResult<()> {
        self.gate(Category::Write)?;
        let client = w.writer()?.to_string();
        if old.id != new.id {
            return Err(FsError::invalid(
                "a pipeline update cannot change the block id",
            ));
        }
        self.write(|st, log| {
            self.check_not_safe(st, "update a pipeline")?;
            let inode = Namenode::block_owner(st, old.id)?;
            Namenode::held_file(st, inode, &client)?;
            let nodes = new_nodes
                .iter()
                .map(|id| st.node_idx(id))
                .collect::<FsResult<Vec<_>>>()?;
            st.apply(
                log,
                Edit::UpdateBlock {
                    inode,
                    block_id: old.id,
                    gen_stamp: new.gen_stamp,
                    len: new.len,
                },
                None,
            )?;
            st.uc_locs.insert(old.id, nodes);
            Ok(())
        })
        .await
    }

    /// A reader's report of corrupt replicas: the reader must be able to
    /// read the file each block belongs to (so a report comes from someone
    /// who could have read the replica), or be the superuser.
    pub(crate) fn client_reports_bad(&self, w: &Who, bad: &[BadReplica]) -> FsResult<()> {
        self.gate(Category::Write)?;
        let st = self.lock();
        if !st.ns.is_superuser(&w.caller) {
            for b in bad {
                let Some(info) = st.bm.blocks.get(&b.block.id) else {
                    continue;
                };
                let path = st.ns.full_path(info.inode);
                st.ns.open(&path, Some(&w.caller)).map_err(|e| {
                    FsError::permission_denied(format!(
                        "cannot report block {} of {path} corrupt: {e}",
                        b.block.id
                    ))
                })?;
            }
        }
        drop(st);
        self.mark_bad(bad, "a reader")
    }

    fn mark_bad(&self, bad: &[BadReplica], by: &str) -> FsResult<()> {
        let mut st = self.lock();
        // All or nothing: every datanode named must be known.
        let nodes = bad
            .iter()
            .map(|b| st.node_idx(&b.datanode))
            .collect::<FsResult<Vec<_>>>()?;
        for (b, n) in bad.iter().zip(nodes) {
            tracing::warn!(block = b.block.id, datanode = %b.datanode, reason = %b.reason, by, "corrupt replica reported");
            st.bm.mark_corrupt(b.block.id, n);
            self.metrics.bad_replicas_reported.inc();
        }
        Ok(())
    }

    // ---- administration ----

    pub(crate) fn report(&self, w: &Who) -> FsResult<Report> {
        self.gate(Category::Admin)?;
        self.check_superuser(w, "datanode report")?;
        Ok(self.report_of(&self.lock()))
    }

    /// The totals of the datanode report without the datanodes: what any
    /// caller may know (HDFS's getStats).
    pub(crate) fn fs_stats(&self, _w: &Who) -> FsResult<Report> {
        self.gate(Category::Read)?;
        let mut r = self.report_of(&self.lock());
        r.datanodes.clear();
        Ok(r)
    }

    fn report_of(&self, st: &State) -> Report {
        let h = st.bm.health(st.expected_fn());
        let live = st.bm.nodes.iter().filter(|n| n.alive);
        let (capacity, used, remaining) = live.fold((0, 0, 0), |(c, u, r), n| {
            (c + n.capacity, u + n.used, r + n.remaining)
        });
        let mut datanodes: Vec<NodeView> = st.bm.listed().map(view).collect();
        datanodes.sort_by(|a, b| (&a.rack, &a.id).cmp(&(&b.rack, &b.id)));
        Report {
            datanodes,
            capacity,
            used,
            remaining,
            under_replicated: h.under_replicated,
            missing: h.missing,
            corrupt: h.corrupt,
            safe_mode: st.in_safe_mode(),
            files: st.ns.files().count() as u64,
            blocks: h.blocks,
            pending_replication: h.pending_replication,
            excess: h.excess,
        }
    }

    /// Every file below `p` with its blocks' replicas and problems. Any
    /// caller who could list the whole tree may run it, as `hdfs fsck` (it
    /// reads metadata only); the superuser anywhere.
    pub(crate) fn fsck(&self, w: &Who, p: &str) -> FsResult<Fsck> {
        self.gate(Category::Admin)?;
        let st = self.lock();
        let (files, directories) = st.ns.walk_files(p, Some(&w.caller))?;
        let racks_in_cluster: HashSet<&str> = st
            .bm
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.rack.as_str())
            .collect();
        let mut out = Fsck {
            directories,
            ..Default::default()
        };
        for (fpath, inode) in files {
            let f = st.ns.file(inode).expect("walk_files lists files");
            let mut ff = FsckFile {
                path: fpath,
                len: f.len(),
                replication: f.replication as u32,
                blocks: vec![],
                under_construction: f.uc.is_some(),
            };
            for (i, b) in f.blocks.iter().enumerate() {
                out.total_blocks += 1;
                let mut fb = FsckBlock {
                    block: *b,
                    replicas: vec![],
                    corrupt_on: vec![],
                    problems: vec![],
                };
                let uc = f.uc.is_some() && i + 1 == f.blocks.len();
                if let Some(info) = st.bm.blocks.get(&b.id) {
                    fb.replicas = views(&st.bm, &info.replicas);
                    fb.replicas.retain(|r| r.state != NodeState::Dead);
                    fb.corrupt_on = info
                        .corrupt
                        .iter()
                        .flat_map(|c| c.iter())
                        .map(|n| st.bm.node(*n).id.clone())
                        .collect();
                    if !uc {
                        let live = st.bm.live_replicas(info);
                        let want = (f.replication as usize).min(st.bm.writable_count().max(1));
                        let readable = fb.replicas.len();
                        if readable == 0 {
                            out.missing += 1;
                            fb.problems.push("MISSING: no live replica".into());
                        } else if live < want {
                            out.under_replicated += 1;
                            fb.problems.push(format!(
                                "UNDER REPLICATED: {live} live of {} wanted",
                                f.replication
                            ));
                        }
                        let racks: HashSet<&str> =
                            fb.replicas.iter().map(|r| r.rack.as_str()).collect();
                        if readable >= 2 && racks.len() < 2 && racks_in_cluster.len() >= 2 {
                            out.mis_replicated += 1;
                            fb.problems
                                .push("MIS-REPLICATED: every replica on one rack".into());
                        }
                    }
                    if !fb.corrupt_on.is_empty() {
                        out.corrupt += 1;
                        fb.problems
                            .push(format!("CORRUPT replica on {}", fb.corrupt_on.join(", ")));
                    }
                } else if !uc {
                    out.missing += 1;
                    fb.problems.push("MISSING: not in the block map".into());
                }
                ff.blocks.push(fb);
            }
            out.files.push(ff);
        }
        // A block with good copies left is repaired by itself; one with
        // none (every replica lost or corrupt) shows as missing.
        out.healthy = out.missing == 0;
        Ok(out)
    }

    pub(crate) fn safe_mode(&self, w: &Who, action: SafeModeAction) -> FsResult<SafeModeInfo> {
        self.gate(Category::Admin)?;
        if action != SafeModeAction::Get {
            self.check_superuser(w, "safe mode")?;
        }
        let mut st = self.lock();
        match action {
            SafeModeAction::Get => {}
            SafeModeAction::Enter => {
                st.safe.manual = true;
                tracing::warn!(user = %w.caller.user, "safe mode entered by an administrator");
            }
            SafeModeAction::Leave => {
                if st.in_safe_mode() {
                    tracing::warn!(user = %w.caller.user, "safe mode left by an administrator");
                }
                st.safe.manual = false;
                st.safe.startup = false;
            }
        }
        st.bm.postpone_deletes = st.in_safe_mode();
        Ok(self.safe_mode_info(&st))
    }

    pub(crate) fn safe_mode_info(&self, st: &State) -> SafeModeInfo {
        let (total, safe) = st.safe_counts();
        let reason = if st.safe.manual {
            "entered by an administrator".to_string()
        } else if st.safe.startup {
            format!(
                "starting up: waiting for {:.1}% of blocks to be reported",
                self.cfg.safemode_threshold * 100.0
            )
        } else {
            String::new()
        };
        SafeModeInfo {
            on: st.in_safe_mode(),
            reason,
            blocks_total: total,
            blocks_safe: safe,
        }
    }

    /// Drops dead datanodes (retired for good) from the lists; all or
    /// nothing: every one named must be dead.
    pub(crate) fn remove_dead(&self, w: &Who, names: &[String]) -> FsResult<Report> {
        self.gate(Category::Admin)?;
        self.check_superuser(w, "remove dead datanodes")?;
        let mut st = self.lock();
        let idx = find_datanodes(&st.bm, names)?;
        if let Some(n) = idx.iter().map(|i| st.bm.node(*i)).find(|n| n.alive) {
            return Err(FsError::invalid(format!(
                "datanode {} is {}: only dead datanodes can be removed (stop it, and wait for it to be declared dead)",
                n.id,
                n.state().name()
            )));
        }
        for i in idx {
            tracing::info!(datanode = %st.bm.node(i).id, "dead datanode removed from the lists");
            st.bm.forget(i);
        }
        self.update_gauges(&st);
        Ok(self.report_of(&st))
    }

    pub(crate) fn decommission(
        &self,
        w: &Who,
        names: &[String],
        recommission: bool,
    ) -> FsResult<Report> {
        self.gate(Category::Admin)?;
        self.check_superuser(w, "decommission")?;
        let mut st = self.lock();
        let idx = find_datanodes(&st.bm, names)?;
        for i in idx {
            let state = if recommission {
                AdminState::InService
            } else if st.bm.node(i).admin == AdminState::Decommissioned {
                AdminState::Decommissioned
            } else {
                AdminState::Decommissioning
            };
            tracing::info!(datanode = %st.bm.node(i).id, ?state, "administrative state changed");
            st.bm.set_admin(i, state);
        }
        Ok(self.report_of(&st))
    }

    // ---- datanodes ----

    /// A DatanodeProtocol call for datanode `id` must come from the address
    /// it registered from: no one else may report for it (until there is
    /// authentication, the address is all a namenode can go by).
    fn check_source(st: &State, id: &str, remote: Option<IpAddr>) -> FsResult<NodeIdx> {
        let n = st.node_idx(id)?;
        let registered = st.bm.node(n).from_ip;
        let remote = remote.map(|ip| ip.to_canonical());
        if registered.is_some() && registered == remote {
            return Ok(n);
        }
        tracing::warn!(datanode = %id, ?remote, ?registered, "refused a datanode call from another address");
        Err(FsError::permission_denied(format!(
            "a call for datanode {id} came from {}, not from {} where it registered",
            remote.map_or("an unknown address".to_string(), |ip| ip.to_string()),
            registered.map_or("nowhere".to_string(), |ip| ip.to_string()),
        )))
    }

    pub(crate) fn handshake(&self) -> FsResult<String> {
        self.gate(Category::Datanode)?;
        Ok(self.cluster_id.clone())
    }

    pub(crate) fn register_datanode(
        &self,
        r: Registration,
        remote: Option<IpAddr>,
    ) -> FsResult<Registered> {
        self.gate(Category::Datanode)?;
        if r.id.is_empty() || r.transfer_addr.is_empty() {
            return Err(FsError::invalid(
                "a datanode must give its id and transfer address",
            ));
        }
        if r.cluster_id != self.cluster_id {
            tracing::warn!(datanode = %r.id, theirs = %r.cluster_id, "refused a datanode of another cluster");
            let theirs = if r.cluster_id.is_empty() {
                "no cluster (ask Handshake first)".to_string()
            } else {
                format!("cluster {}", r.cluster_id)
            };
            return Err(FsError::new(
                Code::ClusterMismatch,
                format!(
                    "datanode {} belongs to {theirs}, this namenode serves {} (is the namenode's name_dir the right one?); it was not registered and none of its blocks was touched",
                    r.id, self.cluster_id
                ),
            ));
        }
        let remote = remote.map(|ip| ip.to_canonical());
        let mut st = self.lock();
        // A live datanode keeps its id: a second process claiming it from
        // another address is refused (once the first is dead, the id may
        // move).
        if let Some(n) = st.bm.idx_of(&r.id) {
            let known = st.bm.node(n);
            if known.alive && known.from_ip.is_some() && known.from_ip != remote {
                tracing::warn!(datanode = %r.id, ?remote, registered = ?known.from_ip, "refused a second registration of a live datanode");
                return Err(FsError::new(
                    Code::AlreadyExists,
                    format!(
                        "datanode {} is alive and registered from {}; a registration from {} was refused (two datanodes share an id?)",
                        r.id,
                        known.from_ip.map_or(String::new(), |ip| ip.to_string()),
                        remote.map_or("an unknown address".to_string(), |ip| ip.to_string()),
                    ),
                ));
            }
        }
        let rack = rack_of(&st, &r.host, &r.rack);
        let now = Instant::now();
        let n = st.bm.register(
            &r.id,
            &r.host,
            &r.transfer_addr,
            &r.rpc_addr,
            &r.http_addr,
            &rack,
            now,
        );
        st.bm.nodes[n as usize].from_ip = remote;
        st.bm.nodes[n as usize].domain_socket = r.domain_socket;
        st.bm.heartbeat(&r.id, r.stats, now);
        tracing::info!(datanode = %r.id, host = %r.host, %rack, addr = %r.transfer_addr, "datanode registered");
        Ok(Registered {
            id: r.id,
            heartbeat_ms: self.cfg.heartbeat_ms,
            block_report_ms: self.cfg.block_report_ms,
            cluster_id: self.cluster_id.clone(),
        })
    }

    pub(crate) fn heartbeat(
        &self,
        id: &str,
        stats: NodeStats,
        remote: Option<IpAddr>,
    ) -> FsResult<HeartbeatAnswer> {
        self.gate(Category::Datanode)?;
        let mut st = self.lock();
        // Unknown: it registers again (below). Known: from its address only.
        if st.bm.idx_of(id).is_some() {
            Self::check_source(&st, id, remote)?;
        }
        Ok(match st.bm.heartbeat(id, stats, Instant::now()) {
            None => HeartbeatAnswer::Reregister,
            Some(cmds) => {
                HeartbeatAnswer::Commands(cmds.into_iter().map(|c| command(&st.bm, c)).collect())
            }
        })
    }

    pub(crate) fn block_report(
        &self,
        id: &str,
        blocks: &[BlockRec],
        remote: Option<IpAddr>,
    ) -> FsResult<()> {
        self.gate(Category::Datanode)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        let n = Self::check_source(st, id, remote)?;
        let ns = &st.ns;
        st.bm
            .full_report(n, blocks, |id, inode| expected(ns, id, inode));
        tracing::info!(datanode = %id, replicas = blocks.len(), "full block report");
        Ok(())
    }

    pub(crate) fn blocks_received_and_deleted(
        &self,
        id: &str,
        received: &[BlockRec],
        deleted: &[u64],
        remote: Option<IpAddr>,
    ) -> FsResult<()> {
        self.gate(Category::Datanode)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        let n = Self::check_source(st, id, remote)?;
        for b in received {
            let e = st
                .bm
                .blocks
                .get(&b.id)
                .and_then(|i| expected(&st.ns, b.id, i.inode));
            st.bm.replica_reported(n, *b, e.as_ref());
        }
        for b in deleted {
            st.bm.replica_deleted(n, *b);
        }
        Ok(())
    }

    /// A datanode's block scanner found corrupt replicas on that datanode:
    /// each report names the datanode it comes from, and only its own
    /// replicas.
    pub(crate) fn datanode_reports_bad(
        &self,
        bad: &[BadReplica],
        remote: Option<IpAddr>,
    ) -> FsResult<()> {
        self.gate(Category::Datanode)?;
        {
            let st = self.lock();
            for b in bad {
                Self::check_source(&st, &b.datanode, remote)?;
            }
        }
        self.mark_bad(bad, "a datanode")
    }

    /// The end of a lease recovery: the primary datanode says what length
    /// and stamp the replicas agreed on; the file is closed.
    pub(crate) async fn commit_block_sync(
        &self,
        r: BlockSync,
        remote: Option<IpAddr>,
    ) -> FsResult<()> {
        self.gate(Category::Datanode)?;
        self.write(|st, log| {
            let Some(inode) = st.bm.blocks.get(&r.old.id).map(|i| i.inode) else {
                // The file went away meanwhile.
                return Ok(());
            };
            let Some(uc) = st.ns.file(inode).and_then(|f| f.uc.clone()) else {
                // Already closed (a retried commit).
                return Ok(());
            };
            // Only the recovery under way may close the file: its stamp,
            // from a registered datanode's address. A stale primary (the
            // recovery started again since) or anyone else is refused.
            let current = st.recovering.get(&inode).and_then(|x| x.gen_stamp);
            if current != Some(r.new_gen_stamp) {
                return Err(FsError::invalid(format!(
                    "{}: no lease recovery with generation stamp {} is under way ({})",
                    st.ns.full_path(inode),
                    r.new_gen_stamp,
                    current.map_or("none is".to_string(), |g| format!(
                        "the current one's is {g}"
                    ))
                )));
            }
            let from = remote.map(|ip| ip.to_canonical());
            if from.is_none() || !st.bm.nodes.iter().any(|n| n.alive && n.from_ip == from) {
                return Err(FsError::permission_denied(
                    "a lease recovery is committed by a registered datanode",
                ));
            }
            if r.delete_block {
                st.apply(
                    log,
                    Edit::AbandonBlock {
                        inode,
                        client: uc.client.clone(),
                        block_id: r.old.id,
                    },
                    None,
                )?;
            } else {
                st.apply(
                    log,
                    Edit::UpdateBlock {
                        inode,
                        block_id: r.old.id,
                        gen_stamp: r.new_gen_stamp,
                        len: r.new_len,
                    },
                    None,
                )?;
            }
            st.apply(
                log,
                Edit::Close {
                    inode,
                    client: uc.client.clone(),
                    time: now_ms(),
                    last_len: None,
                },
                None,
            )?;
            if !r.delete_block {
                let b = BlockRec {
                    id: r.old.id,
                    gen_stamp: r.new_gen_stamp,
                    len: r.new_len,
                };
                let e = expected(&st.ns, b.id, inode);
                for id in &r.datanodes {
                    if let Some(n) = st.bm.idx_of(id) {
                        st.bm.replica_reported(n, b, e.as_ref());
                    }
                }
            }
            tracing::info!(
                path = %st.ns.full_path(inode),
                block = r.old.id,
                len = r.new_len,
                "lease recovery closed the file"
            );
            Ok(())
        })
        .await
    }

    pub(crate) fn ha_state(&self) -> HaState {
        if self.standby.load(Ordering::Relaxed) {
            HaState::Standby
        } else {
            HaState::Active
        }
    }
}

/// The listed datanodes named (ids or transfer addresses); an error naming
/// the first unknown one.
fn find_datanodes(bm: &BlockMap, names: &[String]) -> FsResult<Vec<NodeIdx>> {
    if names.is_empty() {
        return Err(FsError::invalid("name at least one datanode"));
    }
    names
        .iter()
        .map(|d| {
            bm.find(d).ok_or_else(|| {
                let known: Vec<&str> = bm.listed().map(|n| n.id.as_str()).collect();
                FsError::new(
                    Code::UnknownDatanode,
                    format!(
                        "no datanode {d:?} (known: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use hstack_daemon::Role;

    use super::*;
    use crate::namenode::{NamenodeConfig, NamenodeRole};

    fn who(user: &str) -> Who {
        Who {
            caller: Caller {
                user: user.into(),
                groups: Vec::new().into(),
            },
            client: "test-client".into(),
            host: "127.0.0.1".into(),
        }
    }

    /// A namenode in this process, over `dir`, with `superuser`.
    async fn start(
        dir: &std::path::Path,
        superuser: &str,
    ) -> hstack_daemon::Handle<std::sync::Arc<Namenode>> {
        let cfg = NamenodeConfig {
            name_dir: dir.display().to_string(),
            rpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            safemode_extension_ms: 0,
            superuser: superuser.into(),
            ..Default::default()
        };
        let id = NamenodeRole::id(&cfg).unwrap();
        hstack_daemon::launch::<NamenodeRole>(
            cfg,
            id,
            hstack_daemon::Shutdown::new(),
            prometheus::Registry::new(),
        )
        .await
        .unwrap()
    }

    /// The one gate: a standby namenode refuses reads and writes with
    /// `Standby`, and still takes datanode traffic and administration.
    #[tokio::test]
    async fn a_standby_refuses_reads_and_writes_at_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let h = start(dir.path(), "").await;
        let nn = h.state.clone();
        let me = who(&nn.cfg.superuser_name());
        nn.safe_mode(&me, SafeModeAction::Leave).unwrap();
        nn.mkdirs(&me, "/d", 0, true).await.unwrap();
        assert!(nn.file_info(&me, "/d").unwrap().is_some());

        nn.standby.store(true, Ordering::Relaxed);
        let e = nn.file_info(&me, "/d").unwrap_err();
        assert_eq!(e.code, Code::Standby, "{e}");
        let e = nn.mkdirs(&me, "/e", 0, true).await.unwrap_err();
        assert_eq!(e.code, Code::Standby, "{e}");
        let e = nn.list(&me, "/", "", 0).unwrap_err();
        assert_eq!(e.code, Code::Standby);
        // Datanodes and administrators are still heard.
        assert_eq!(nn.handshake().unwrap(), nn.cluster_id);
        assert!(!nn.safe_mode(&me, SafeModeAction::Get).unwrap().on);
        // Nothing a refused write asked for happened.
        nn.standby.store(false, Ordering::Relaxed);
        assert!(nn.file_info(&me, "/e").unwrap().is_none());
        h.shutdown().trigger();
        h.wait().await.unwrap();
    }

    #[tokio::test]
    async fn administration_is_the_superusers() {
        let dir = tempfile::tempdir().unwrap();
        let h = start(dir.path(), "hdfs").await;
        let nn = h.state.clone();
        let mut admins = who("alice");
        admins.caller.groups = vec!["supergroup".to_string()].into();
        for w in [who("alice"), who("nobody")] {
            let e = nn.report(&w).err().expect("refused");
            assert_eq!(e.code, Code::PermissionDenied);
            let e = nn
                .safe_mode(&w, SafeModeAction::Enter)
                .err()
                .expect("refused");
            assert_eq!(e.code, Code::PermissionDenied);
            assert!(nn.decommission(&w, &["dn1".into()], false).is_err());
        }
        // A member of the supergroup (as the namenode looked it up) may.
        assert!(nn.report(&admins).is_ok());
        assert!(nn.report(&who("hdfs")).is_ok());
        assert!(nn.safe_mode(&who("nobody"), SafeModeAction::Get).is_ok());
        h.shutdown().trigger();
        h.wait().await.unwrap();
    }

    fn registration(id: &str, cluster_id: &str) -> Registration {
        Registration {
            id: id.into(),
            host: "127.0.0.5".into(),
            transfer_addr: "127.0.0.5:1".into(),
            rpc_addr: "127.0.0.5:2".into(),
            http_addr: "127.0.0.5:3".into(),
            rack: String::new(),
            domain_socket: String::new(),
            stats: stats(),
            cluster_id: cluster_id.into(),
        }
    }

    fn stats() -> NodeStats {
        NodeStats {
            capacity: 1 << 40,
            remaining: 1 << 40,
            ..Default::default()
        }
    }

    /// Until there is authentication, a datanode is its registered
    /// address: reports for it from anywhere else, a second registration of
    /// its id while it lives, and a lease recovery's commit with a stamp
    /// the namenode did not hand out (or from no datanode's address) are
    /// refused, and change nothing.
    #[tokio::test]
    async fn datanode_calls_come_from_where_it_registered() {
        let dir = tempfile::tempdir().unwrap();
        let h = start(dir.path(), "").await;
        let nn = h.state.clone();
        let me = who(&nn.cfg.superuser_name());
        let home: IpAddr = "127.0.0.5".parse().unwrap();
        let far: IpAddr = "127.0.0.9".parse().unwrap();
        let cid = nn.cluster_id.clone();
        nn.register_datanode(registration("dn1", &cid), Some(home))
            .unwrap();
        nn.safe_mode(&me, SafeModeAction::Leave).unwrap();

        let denied = |r: FsResult<()>| {
            let e = r.expect_err("refused");
            assert_eq!(e.code, Code::PermissionDenied, "{e}");
            assert!(e.message.contains("127.0.0.9"), "{e}");
        };
        denied(nn.heartbeat("dn1", stats(), Some(far)).map(drop));
        denied(nn.block_report("dn1", &[], Some(far)));
        denied(nn.blocks_received_and_deleted("dn1", &[], &[1], Some(far)));
        let bad = BadReplica {
            block: BlockRec {
                id: 1,
                gen_stamp: 1,
                len: 0,
            },
            datanode: "dn1".into(),
            reason: "a lie".into(),
        };
        denied(nn.datanode_reports_bad(&[bad], Some(far)));
        let e = nn
            .register_datanode(registration("dn1", &cid), Some(far))
            .err()
            .expect("refused");
        assert_eq!(e.code, Code::AlreadyExists, "{e}");
        // From home (or its IPv4-mapped IPv6 form) all is well, and the
        // node is still the one that registered.
        nn.heartbeat("dn1", stats(), Some(home)).unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.5".parse().unwrap();
        nn.heartbeat("dn1", stats(), Some(mapped)).unwrap();
        let n = nn.lock().bm.idx_of("dn1").unwrap();
        assert_eq!(nn.lock().bm.node(n).from_ip, Some(home));

        // A file being written, its first block on dn1.
        let w = who("alice");
        nn.mkdirs(&me, "/w", 0o777, true).await.unwrap();
        let f = nn
            .create(
                &w,
                CreateArgs {
                    path: "/w/f".into(),
                    permission: 0,
                    replication: 1,
                    block_size: 0,
                    overwrite: false,
                    create_parent: false,
                },
            )
            .await
            .unwrap();
        let b = nn.add_block(&w, f.inode, None, &[]).await.unwrap().block;
        let sync = |gen_stamp: u64| BlockSync {
            old: b,
            new_gen_stamp: gen_stamp,
            new_len: 10,
            datanodes: vec!["dn1".into()],
            delete_block: false,
        };
        let open = || {
            nn.file_info(&me, "/w/f")
                .unwrap()
                .unwrap()
                .under_construction
        };
        // No recovery under way: refused.
        let e = nn
            .commit_block_sync(sync(b.gen_stamp + 1), Some(home))
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument, "{e}");
        assert!(open());
        // One under way with stamp g: another stamp (a stale primary's) is
        // refused, as is g from an address no datanode registered from.
        let g = b.gen_stamp + 7;
        nn.lock().recovering.insert(
            f.inode,
            crate::namenode::Recovering {
                since: Instant::now(),
                gen_stamp: Some(g),
            },
        );
        let e = nn
            .commit_block_sync(sync(g - 1), Some(home))
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument, "{e}");
        let e = nn.commit_block_sync(sync(g), Some(far)).await.unwrap_err();
        assert_eq!(e.code, Code::PermissionDenied, "{e}");
        assert!(open());
        // The primary's own commit closes the file.
        nn.commit_block_sync(sync(g), Some(home)).await.unwrap();
        assert!(!open());
        h.shutdown().trigger();
        h.wait().await.unwrap();
    }
}
