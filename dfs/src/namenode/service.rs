//! The namenode's RPCs: what clients, administrators and datanodes ask.
//! Each handler checks its input, then changes state through
//! `Namenode::write` (applied, logged, durable before the answer) or reads
//! it under the lock.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use hstack_proto::dfs as pb;
use tonic::{Request, Response, Status};

use super::{expected, now_ms, rack_of, Namenode, State};
use crate::blockmap::{AdminState, BlockMap, Command, Datanode, NodeIdx, NodeStats};
use crate::error::{FsError, FsResult, Kind};
use crate::namespace::{self, BlockRec, Caller, Edit, InodeId, MAX_REPLICATION};
use crate::path;
use crate::placement;

pub struct NamenodeService {
    pub nn: std::sync::Arc<Namenode>,
}

/// Who is calling: the checked caller, its client name and its host (as
/// given, else the address the call came from).
struct Who {
    caller: Caller,
    client: String,
    host: String,
}

fn who(c: Option<pb::Caller>, remote: Option<SocketAddr>) -> FsResult<Who> {
    let c = c.unwrap_or_default();
    if c.user.is_empty() {
        return Err(FsError::invalid("the request names no user"));
    }
    let host = if c.host.is_empty() {
        remote.map(|a| a.ip().to_string()).unwrap_or_default()
    } else {
        c.host
    };
    Ok(Who {
        caller: Caller {
            user: c.user,
            groups: c.groups,
        },
        client: c.client_name,
        host,
    })
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

fn block_pb(b: BlockRec) -> pb::Block {
    b.to_pb()
}

fn block_rec(b: Option<pb::Block>) -> FsResult<BlockRec> {
    BlockRec::from_pb(b)
}

fn dn_info(n: &Datanode) -> pb::DatanodeInfo {
    pb::DatanodeInfo {
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
        state: n.state_name().to_string(),
        last_contact_ms: n.last_contact.elapsed().as_millis() as i64,
        blocks: n.blocks,
    }
}

fn infos(bm: &BlockMap, nodes: &[NodeIdx]) -> Vec<pb::DatanodeInfo> {
    nodes.iter().map(|n| dn_info(bm.node(*n))).collect()
}

fn status_pb(s: namespace::Status) -> pb::FileStatus {
    pb::FileStatus {
        path: s.path,
        is_dir: s.is_dir,
        len: s.len,
        replication: s.replication as u32,
        block_size: s.block_size,
        mtime_ms: s.mtime,
        atime_ms: s.atime,
        permission: s.perm as u32,
        owner: s.owner,
        group: s.group,
        inode_id: s.inode,
        children: s.children,
        under_construction: s.under_construction,
    }
}

fn command_pb(bm: &BlockMap, c: Command) -> pb::DatanodeCommand {
    use pb::datanode_command::Cmd;
    let cmd = match c {
        Command::Replicate { block, targets } => Cmd::Replicate(pb::ReplicateCommand {
            block: Some(block_pb(block)),
            targets: infos(bm, &targets),
        }),
        Command::Delete(blocks) => Cmd::Delete(pb::DeleteCommand {
            blocks: blocks.into_iter().map(block_pb).collect(),
        }),
        Command::Recover {
            block,
            new_gen_stamp,
            replicas,
        } => Cmd::Recover(pb::RecoverCommand {
            block: Some(block_pb(block)),
            new_gen_stamp,
            replicas: infos(bm, &replicas),
        }),
    };
    pb::DatanodeCommand { cmd: Some(cmd) }
}

impl Namenode {
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
                Kind::FileNotFound,
                format!("file (inode {inode}) does not exist"),
            )
        })?;
        match &f.uc {
            Some(uc) if uc.client == client => Ok(()),
            Some(uc) => Err(FsError::new(
                Kind::LeaseMismatch,
                format!(
                    "{}: the lease is held by {}, not {client}",
                    st.ns.full_path(inode),
                    uc.client
                ),
            )),
            None => Err(FsError::new(
                Kind::LeaseMismatch,
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
                Kind::FileNotFound,
                format!("block {id} does not belong to any file"),
            )
        })
    }

    fn report(&self, st: &State) -> pb::DatanodeReport {
        let h = st.bm.health(st.expected_fn());
        let live = st.bm.nodes.iter().filter(|n| n.alive);
        let (capacity, used, remaining) = live.fold((0, 0, 0), |(c, u, r), n| {
            (c + n.capacity, u + n.used, r + n.remaining)
        });
        let mut datanodes: Vec<pb::DatanodeInfo> = st.bm.listed().map(dn_info).collect();
        datanodes.sort_by(|a, b| (&a.rack, &a.id).cmp(&(&b.rack, &b.id)));
        pb::DatanodeReport {
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

    fn fsck(&self, st: &State, p: &str) -> FsResult<pb::FsckReply> {
        let (files, directories) = st.ns.walk_files(p)?;
        let racks_in_cluster: HashSet<&str> = st
            .bm
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.rack.as_str())
            .collect();
        let mut out = pb::FsckReply {
            directories,
            ..Default::default()
        };
        for (fpath, inode) in files {
            let f = st.ns.file(inode).expect("walk_files lists files");
            let mut ff = pb::FsckFile {
                path: fpath,
                len: f.len(),
                replication: f.replication as u32,
                blocks: vec![],
                under_construction: f.uc.is_some(),
            };
            for (i, b) in f.blocks.iter().enumerate() {
                out.total_blocks += 1;
                let mut fb = pb::FsckBlock {
                    block: Some(block_pb(*b)),
                    ..Default::default()
                };
                let uc = f.uc.is_some() && i + 1 == f.blocks.len();
                if let Some(info) = st.bm.blocks.get(&b.id) {
                    fb.replicas = infos(&st.bm, &info.replicas);
                    fb.replicas.retain(|r| r.state != "dead");
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

    fn safe_mode_reply(&self, st: &State) -> pb::SafeModeReply {
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
        pb::SafeModeReply {
            on: st.in_safe_mode(),
            reason,
            blocks_total: total,
            blocks_safe: safe,
        }
    }
}

impl NamenodeService {
    fn done<T>(&self, op: &'static str, r: FsResult<T>) -> Result<Response<T>, Status> {
        let m = &self.nn.metrics;
        m.ops.with_label_values(&[op]).inc();
        match r {
            Ok(v) => Ok(Response::new(v)),
            Err(e) => {
                m.op_errors.with_label_values(&[op, e.kind.name()]).inc();
                Err(e.into())
            }
        }
    }

    /// A plain namespace change: safe mode check, apply, log, sync.
    async fn change(&self, what: String, w: &Who, edit: Edit) -> FsResult<Option<InodeId>> {
        let nn = &self.nn;
        nn.write(|st, log| {
            nn.check_not_safe(st, &what)?;
            Ok(st.apply(log, edit, Some(&w.caller))?.inode)
        })
        .await
    }
}

#[tonic::async_trait]
impl pb::namenode_server::Namenode for NamenodeService {
    async fn mkdirs(
        &self,
        req: Request<pb::MkdirsRequest>,
    ) -> Result<Response<pb::FileStatusReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let p = path::normalize(&r.path)?;
            let nn = &self.nn;
            nn.write(|st, log| {
                nn.check_not_safe(st, &format!("create directory {p}"))?;
                let edit = Edit::Mkdirs {
                    path: p.clone(),
                    perm: if r.permission == 0 {
                        0o755
                    } else {
                        (r.permission & 0o1777) as u16
                    },
                    owner: w.caller.user.clone(),
                    group: st.ns.inherited_group(&p),
                    time: now_ms(),
                    create_parent: r.create_parent,
                };
                let id = st
                    .apply(log, edit, Some(&w.caller))?
                    .inode
                    .expect("mkdirs names it");
                Ok(pb::FileStatusReply {
                    status: Some(status_pb(st.ns.status_of(id, p.clone()))),
                })
            })
            .await
        }
        .await;
        self.done("mkdirs", res)
    }

    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::FileStatusReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let client = w.writer()?.to_string();
            let p = path::normalize(&r.path)?;
            let nn = &self.nn;
            nn.write(|st, log| {
                nn.check_not_safe(st, &format!("create {p}"))?;
                let replication = if r.replication == 0 {
                    nn.cfg.default_replication
                } else {
                    nn.check_replication(st, r.replication)?
                };
                let block_size = nn.check_block_size(r.block_size)?;
                // A file still held by a writer whose lease passed its soft
                // limit: recover it, and let this client try again. Only a
                // caller who may overwrite the file can set that off.
                if let (true, Ok(id)) = (r.overwrite, st.ns.writable_file(&p, &w.caller)) {
                    if let Some(uc) = st.ns.file(id).and_then(|f| f.uc.as_deref()) {
                        let holder = uc.client.clone();
                        let stale = st.leases.get(&holder).is_none_or(|l| {
                            l.renewed.elapsed().as_millis() as u64 >= nn.cfg.lease_soft_limit_ms
                        });
                        if holder != client && stale && !st.recovering.contains_key(&id) {
                            nn.start_recovery(st, id, Instant::now())?;
                            return Err(FsError::new(
                                Kind::AlreadyExists,
                                format!("{p}: is being written by {holder}, whose lease expired; lease recovery has started, try again shortly"),
                            ));
                        }
                    }
                }
                let edit = Edit::Create {
                    path: p.clone(),
                    perm: if r.permission == 0 {
                        0o644
                    } else {
                        (r.permission & 0o777) as u16
                    },
                    owner: w.caller.user.clone(),
                    group: st.ns.inherited_group(&p),
                    time: now_ms(),
                    replication,
                    block_size,
                    overwrite: r.overwrite,
                    create_parent: r.create_parent,
                    client: client.clone(),
                    client_host: w.host.clone(),
                };
                let id = st.apply(log, edit, Some(&w.caller))?.inode.expect("create names it");
                Ok(pb::FileStatusReply {
                    status: Some(status_pb(st.ns.status_of(id, p.clone()))),
                })
            })
            .await
        }
        .await;
        self.done("create", res)
    }

    async fn add_block(
        &self,
        req: Request<pb::AddBlockRequest>,
    ) -> Result<Response<pb::LocatedBlock>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let client = w.writer()?.to_string();
            let previous = r.previous.map(|b| block_rec(Some(b))).transpose()?;
            let inode = r.inode_id;
            let nn = &self.nn;
            nn.write(|st, log| {
                nn.check_not_safe(st, "add a block")?;
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
                // has reported the previous one, so a writer never runs
                // ahead of blocks that may exist nowhere. The client retries.
                if let Some(p) = previous.filter(|b| b.len > 0) {
                    if st.bm.blocks.get(&p.id).map_or(0, |i| i.replicas.len()) == 0 {
                        return Err(FsError::new(
                            Kind::NotReplicatedYet,
                            format!(
                                "{}: no datanode has reported block {} yet; retry",
                                st.ns.full_path(inode),
                                p.id
                            ),
                        ));
                    }
                }
                let (replication, block_size) = (f.replication as usize, f.block_size);
                let excluded: HashSet<String> = r.excluded.iter().cloned().collect();
                let host = w.host.clone();
                let targets = st.bm.choose_for_write(
                    &mut st.rng,
                    replication,
                    Some(&host),
                    block_size,
                    &excluded,
                );
                if targets.is_empty() {
                    return Err(FsError::new(
                        Kind::Unavailable,
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
                Ok(pb::LocatedBlock {
                    block: Some(block_pb(block)),
                    offset,
                    locs: infos(&st.bm, &targets),
                    corrupt: false,
                })
            })
            .await
        }
        .await;
        self.done("add_block", res)
    }

    async fn abandon_block(
        &self,
        req: Request<pb::AbandonBlockRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let client = w.writer()?.to_string();
            let b = block_rec(r.block)?;
            self.change(
                "abandon a block".into(),
                &w,
                Edit::AbandonBlock {
                    inode: r.inode_id,
                    client,
                    block_id: b.id,
                },
            )
            .await?;
            Ok(pb::Empty {})
        }
        .await;
        self.done("abandon_block", res)
    }

    async fn complete(
        &self,
        req: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let client = w.writer()?.to_string();
            let last = r.last.map(|b| block_rec(Some(b))).transpose()?;
            let inode = r.inode_id;
            let nn = &self.nn;
            nn.write(|st, log| {
                nn.check_not_safe(st, "complete a file")?;
                let f = st.ns.file(inode).ok_or_else(|| {
                    FsError::new(
                        Kind::FileNotFound,
                        format!("file (inode {inode}) does not exist"),
                    )
                })?;
                let last_id = f.blocks.last().map(|b| b.id);
                if f.uc.is_none() && last.map(|b| b.id) == last_id {
                    // A retry of a complete that succeeded.
                    return Ok(pb::CompleteReply { complete: true });
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
                        return Ok(pb::CompleteReply { complete: false });
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
                Ok(pb::CompleteReply { complete: true })
            })
            .await
        }
        .await;
        self.done("complete", res)
    }

    async fn get_block_locations(
        &self,
        req: Request<pb::GetBlockLocationsRequest>,
    ) -> Result<Response<pb::LocatedBlocks>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(r.caller, remote)?;
            let mut guard = self.nn.lock();
            let st = &mut *guard;
            let (_, f) = st.ns.open(&r.path, Some(&w.caller))?;
            let file_len = f.len();
            if r.offset > file_len {
                return Err(FsError::invalid(format!(
                    "offset {} is past the end of {} ({file_len} bytes)",
                    r.offset, r.path
                )));
            }
            let end = if r.length == 0 {
                u64::MAX
            } else {
                r.offset.saturating_add(r.length)
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
            let mut out = pb::LocatedBlocks {
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
                if !(start < end && (off > r.offset || (is_uc_last && start >= r.offset))) {
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
                let lb = pb::LocatedBlock {
                    block: Some(block_pb(b)),
                    offset: start,
                    locs: infos(&st.bm, &locs),
                    corrupt,
                };
                if is_uc_last {
                    out.last_block = Some(lb.clone());
                }
                out.blocks.push(lb);
            }
            out.last_block_complete = !uc;
            Ok(out)
        })();
        self.done("get_block_locations", res)
    }

    async fn rename(&self, req: Request<pb::RenameRequest>) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let what = format!("rename {} to {}", r.src, r.dst);
            let edit = Edit::Rename {
                src: r.src,
                dst: r.dst,
                time: now_ms(),
            };
            self.change(what, &w, edit).await?;
            Ok(pb::Empty {})
        }
        .await;
        self.done("rename", res)
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let what = format!("delete {}", r.path);
            let edit = Edit::Delete {
                path: r.path,
                recursive: r.recursive,
                time: now_ms(),
            };
            self.change(what, &w, edit).await?;
            Ok(pb::DeleteReply { deleted: true })
        }
        .await;
        self.done("delete", res)
    }

    async fn get_listing(
        &self,
        req: Request<pb::GetListingRequest>,
    ) -> Result<Response<pb::Listing>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(r.caller, remote)?;
            let limit = match r.limit {
                0 => 1000,
                n => n.min(10_000) as usize,
            };
            let st = self.nn.lock();
            let (entries, remaining) =
                st.ns
                    .list(&r.path, &r.start_after, limit, Some(&w.caller))?;
            Ok(pb::Listing {
                entries: entries.into_iter().map(status_pb).collect(),
                remaining: remaining as u32,
            })
        })();
        self.done("get_listing", res)
    }

    async fn get_file_info(
        &self,
        req: Request<pb::PathRequest>,
    ) -> Result<Response<pb::FileStatusReply>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(r.caller, remote)?;
            let st = self.nn.lock();
            Ok(pb::FileStatusReply {
                status: st.ns.stat(&r.path, Some(&w.caller))?.map(status_pb),
            })
        })();
        self.done("get_file_info", res)
    }

    async fn set_replication(
        &self,
        req: Request<pb::SetReplicationRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let nn = &self.nn;
            nn.write(|st, log| {
                nn.check_not_safe(st, &format!("set the replication of {}", r.path))?;
                let replication = nn.check_replication(st, r.replication)?;
                st.apply(
                    log,
                    Edit::SetReplication {
                        path: r.path.clone(),
                        replication,
                    },
                    Some(&w.caller),
                )
            })
            .await?;
            Ok(pb::Empty {})
        }
        .await;
        self.done("set_replication", res)
    }

    async fn set_permission(
        &self,
        req: Request<pb::SetPermissionRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            if r.permission > 0o1777 {
                return Err(FsError::invalid(format!(
                    "invalid permission {:o}",
                    r.permission
                )));
            }
            let what = format!("change the permission of {}", r.path);
            let edit = Edit::SetPermission {
                path: r.path,
                perm: r.permission as u16,
            };
            self.change(what, &w, edit).await?;
            Ok(pb::Empty {})
        }
        .await;
        self.done("set_permission", res)
    }

    async fn set_owner(
        &self,
        req: Request<pb::SetOwnerRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let some = |s: String| (!s.is_empty()).then_some(s);
            let (owner, group) = (some(r.owner), some(r.group));
            if owner.is_none() && group.is_none() {
                return Err(FsError::invalid("give an owner, a group or both"));
            }
            let what = format!("change the owner of {}", r.path);
            let edit = Edit::SetOwner {
                path: r.path,
                owner,
                group,
            };
            self.change(what, &w, edit).await?;
            Ok(pb::Empty {})
        }
        .await;
        self.done("set_owner", res)
    }

    async fn set_times(
        &self,
        req: Request<pb::SetTimesRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let opt = |t: i64| (t >= 0).then_some(t);
            let what = format!("set the times of {}", r.path);
            let edit = Edit::SetTimes {
                path: r.path,
                mtime: opt(r.mtime_ms),
                atime: opt(r.atime_ms),
            };
            self.change(what, &w, edit).await?;
            Ok(pb::Empty {})
        }
        .await;
        self.done("set_times", res)
    }

    async fn get_content_summary(
        &self,
        req: Request<pb::PathRequest>,
    ) -> Result<Response<pb::ContentSummary>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(r.caller, remote)?;
            let s = self.nn.lock().ns.summary(&r.path, Some(&w.caller))?;
            Ok(pb::ContentSummary {
                length: s.length,
                files: s.files,
                directories: s.directories,
                space_consumed: s.space_consumed,
            })
        })();
        self.done("get_content_summary", res)
    }

    async fn renew_lease(
        &self,
        req: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = (|| {
            let w = who(r.caller, remote)?;
            let client = w.writer()?;
            if let Some(l) = self.nn.lock().leases.get_mut(client) {
                l.renewed = Instant::now();
            }
            Ok(pb::Empty {})
        })();
        self.done("renew_lease", res)
    }

    async fn update_block_for_pipeline(
        &self,
        req: Request<pb::UpdateBlockForPipelineRequest>,
    ) -> Result<Response<pb::LocatedBlock>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let client = w.writer()?.to_string();
            let b = block_rec(r.block)?;
            let nn = &self.nn;
            nn.write(|st, log| {
                nn.check_not_safe(st, "rebuild a pipeline")?;
                let inode = Namenode::block_owner(st, b.id)?;
                Namenode::held_file(st, inode, &client)?;
                let gs = st.ns.next_gen_stamp();
                st.apply(log, Edit::GenStamp { gen_stamp: gs }, None)?;
                Ok(pb::LocatedBlock {
                    block: Some(block_pb(BlockRec { gen_stamp: gs, ..b })),
                    ..Default::default()
                })
            })
            .await
        }
        .await;
        self.done("update_block_for_pipeline", res)
    }

    async fn update_pipeline(
        &self,
        req: Request<pb::UpdatePipelineRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let res = async {
            let w = who(r.caller, remote)?;
            let client = w.writer()?.to_string();
            let old = block_rec(r.old_block)?;
            let new = block_rec(r.new_block)?;
            if old.id != new.id {
                return Err(FsError::invalid(
                    "a pipeline update cannot change the block id",
                ));
            }
            let nn = &self.nn;
            nn.write(|st, log| {
                nn.check_not_safe(st, "update a pipeline")?;
                let inode = Namenode::block_owner(st, old.id)?;
                Namenode::held_file(st, inode, &client)?;
                let nodes = r
                    .new_nodes
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
                Ok(pb::Empty {})
            })
            .await
        }
        .await;
        self.done("update_pipeline", res)
    }

    async fn report_bad_blocks(
        &self,
        req: Request<pb::ReportBadBlocksRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let res = (|| {
            let mut st = self.nn.lock();
            for bad in r.blocks {
                let b = block_rec(bad.block)?;
                let n = st.node_idx(&bad.datanode)?;
                tracing::warn!(block = b.id, datanode = %bad.datanode, reason = %bad.reason, "corrupt replica reported");
                st.bm.mark_corrupt(b.id, n);
                self.nn.metrics.bad_replicas_reported.inc();
            }
            Ok(pb::Empty {})
        })();
        self.done("report_bad_blocks", res)
    }

    async fn get_datanode_report(
        &self,
        _req: Request<pb::Empty>,
    ) -> Result<Response<pb::DatanodeReport>, Status> {
        let st = self.nn.lock();
        let rep = self.nn.report(&st);
        drop(st);
        self.done("get_datanode_report", Ok(rep))
    }

    async fn fsck(&self, req: Request<pb::FsckRequest>) -> Result<Response<pb::FsckReply>, Status> {
        let r = req.into_inner();
        let p = if r.path.is_empty() {
            "/".into()
        } else {
            r.path
        };
        let res = self.nn.fsck(&self.nn.lock(), &p);
        self.done("fsck", res)
    }

    async fn set_safe_mode(
        &self,
        req: Request<pb::SafeModeRequest>,
    ) -> Result<Response<pb::SafeModeReply>, Status> {
        let r = req.into_inner();
        let res = (|| {
            let mut st = self.nn.lock();
            match r.action.as_str() {
                "get" => {}
                "enter" => {
                    st.safe.manual = true;
                    tracing::warn!("safe mode entered by an administrator");
                }
                "leave" => {
                    if st.in_safe_mode() {
                        tracing::warn!("safe mode left by an administrator");
                    }
                    st.safe.manual = false;
                    st.safe.startup = false;
                }
                other => {
                    return Err(FsError::invalid(format!(
                        "safe mode action {other:?}: expected get, enter or leave"
                    )))
                }
            }
            st.bm.postpone_deletes = st.in_safe_mode();
            Ok(self.nn.safe_mode_reply(&st))
        })();
        self.done("set_safe_mode", res)
    }

    async fn remove_dead_datanodes(
        &self,
        req: Request<pb::RemoveDeadDatanodesRequest>,
    ) -> Result<Response<pb::DatanodeReport>, Status> {
        let r = req.into_inner();
        let res = (|| {
            let mut st = self.nn.lock();
            let idx = find_datanodes(&st.bm, &r.datanodes)?;
            // All or nothing: every one must be dead.
            if let Some(n) = idx.iter().map(|i| st.bm.node(*i)).find(|n| n.alive) {
                return Err(FsError::invalid(format!(
                    "datanode {} is {}: only dead datanodes can be removed (stop it, and wait for it to be declared dead)",
                    n.id,
                    n.state_name()
                )));
            }
            for i in idx {
                tracing::info!(datanode = %st.bm.node(i).id, "dead datanode removed from the lists");
                st.bm.forget(i);
            }
            self.nn.update_gauges(&st);
            Ok(self.nn.report(&st))
        })();
        self.done("remove_dead_datanodes", res)
    }

    async fn decommission(
        &self,
        req: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DatanodeReport>, Status> {
        let r = req.into_inner();
        let res = (|| {
            let mut st = self.nn.lock();
            let idx = find_datanodes(&st.bm, &r.datanodes)?;
            for i in idx {
                let state = if r.recommission {
                    AdminState::InService
                } else if st.bm.node(i).admin == AdminState::Decommissioned {
                    AdminState::Decommissioned
                } else {
                    AdminState::Decommissioning
                };
                tracing::info!(datanode = %st.bm.node(i).id, ?state, "administrative state changed");
                st.bm.set_admin(i, state);
            }
            Ok(self.nn.report(&st))
        })();
        self.done("decommission", res)
    }

    async fn register_datanode(
        &self,
        req: Request<pb::DatanodeRegistration>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let r = req.into_inner();
        let res = (|| {
            let info = r
                .info
                .ok_or_else(|| FsError::invalid("registration without datanode info"))?;
            if info.id.is_empty() || info.transfer_addr.is_empty() {
                return Err(FsError::invalid(
                    "a datanode must give its id and transfer address",
                ));
            }
            if !r.cluster_id.is_empty() && r.cluster_id != self.nn.cluster_id {
                tracing::warn!(datanode = %info.id, theirs = %r.cluster_id, "refused a datanode of another cluster");
                return Err(FsError::invalid(format!(
                    "datanode {} belongs to cluster {}, this namenode serves {} (is the namenode's name_dir the right one?); it was not registered and none of its blocks was touched",
                    info.id, r.cluster_id, self.nn.cluster_id
                )));
            }
            let mut st = self.nn.lock();
            let rack = rack_of(&st, &info.host, &info.rack);
            let now = Instant::now();
            st.bm.register(
                &info.id,
                &info.host,
                &info.transfer_addr,
                &info.rpc_addr,
                &info.http_addr,
                &rack,
                now,
            );
            st.bm.heartbeat(
                &info.id,
                NodeStats {
                    capacity: info.capacity,
                    used: info.used,
                    remaining: info.remaining,
                    xceivers: info.xceivers,
                    failed_volumes: info.failed_volumes,
                },
                now,
            );
            tracing::info!(datanode = %info.id, host = %info.host, %rack, addr = %info.transfer_addr, "datanode registered");
            Ok(pb::RegisterReply {
                id: info.id,
                heartbeat_ms: self.nn.cfg.heartbeat_ms,
                block_report_ms: self.nn.cfg.block_report_ms,
                cluster_id: self.nn.cluster_id.clone(),
            })
        })();
        self.done("register_datanode", res)
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let r = req.into_inner();
        let mut st = self.nn.lock();
        let cmds = st.bm.heartbeat(
            &r.id,
            NodeStats {
                capacity: r.capacity,
                used: r.used,
                remaining: r.remaining,
                xceivers: r.xceivers,
                failed_volumes: r.failed_volumes,
            },
            Instant::now(),
        );
        let reply = match cmds {
            None => pb::HeartbeatReply {
                commands: vec![],
                reregister: true,
            },
            Some(cmds) => pb::HeartbeatReply {
                commands: cmds.into_iter().map(|c| command_pb(&st.bm, c)).collect(),
                reregister: false,
            },
        };
        drop(st);
        self.done("heartbeat", Ok(reply))
    }

    async fn block_report(
        &self,
        req: Request<pb::BlockReportRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let res = (|| {
            let mut guard = self.nn.lock();
            let st = &mut *guard;
            let n = st.node_idx(&r.id)?;
            let blocks = r
                .blocks
                .into_iter()
                .map(|b| block_rec(Some(b)))
                .collect::<FsResult<Vec<_>>>()?;
            let ns = &st.ns;
            st.bm
                .full_report(n, &blocks, |id, inode| expected(ns, id, inode));
            tracing::info!(datanode = %r.id, replicas = blocks.len(), "full block report");
            Ok(pb::Empty {})
        })();
        self.done("block_report", res)
    }

    async fn block_received_and_deleted(
        &self,
        req: Request<pb::IncrementalBlockReport>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let res = (|| {
            let mut guard = self.nn.lock();
            let st = &mut *guard;
            let n = st.node_idx(&r.id)?;
            for b in r.received {
                let b = block_rec(Some(b))?;
                let e = st
                    .bm
                    .blocks
                    .get(&b.id)
                    .and_then(|i| expected(&st.ns, b.id, i.inode));
                st.bm.replica_reported(n, b, e.as_ref());
            }
            for b in r.deleted {
                st.bm.replica_deleted(n, b.id);
            }
            Ok(pb::Empty {})
        })();
        self.done("block_received_and_deleted", res)
    }

    async fn commit_block_synchronization(
        &self,
        req: Request<pb::CommitBlockSyncRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let res = async {
            let old = block_rec(r.old_block)?;
            self.nn
                .write(|st, log| {
                    let Some(inode) = st.bm.blocks.get(&old.id).map(|i| i.inode) else {
                        // The file went away meanwhile.
                        return Ok(());
                    };
                    let Some(uc) = st.ns.file(inode).and_then(|f| f.uc.clone()) else {
                        // Already closed (a retried commit).
                        return Ok(());
                    };
                    if r.delete_block {
                        st.apply(
                            log,
                            Edit::AbandonBlock {
                                inode,
                                client: uc.client.clone(),
                                block_id: old.id,
                            },
                            None,
                        )?;
                    } else {
                        st.apply(
                            log,
                            Edit::UpdateBlock {
                                inode,
                                block_id: old.id,
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
                            id: old.id,
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
                        block = old.id,
                        len = r.new_len,
                        "lease recovery closed the file"
                    );
                    Ok(())
                })
                .await?;
            Ok(pb::Empty {})
        }
        .await;
        self.done("commit_block_synchronization", res)
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
                    Kind::FileNotFound,
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
