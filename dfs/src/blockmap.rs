//! The namenode's soft state about blocks: which datanodes exist, which of
//! them hold which replica, which replicas are corrupt, and what each
//! datanode should do next. None of it is logged: after a restart it is
//! rebuilt from registrations and block reports (that is what safe mode
//! waits for).
//!
//! The namespace owns what a block *is* (id, generation stamp, length,
//! file); this map owns where it *lives*. The namenode passes the
//! namespace's view in where a decision needs it ([`Expected`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use rand::Rng;
use serde::Serialize;
use smallvec::SmallVec;

use crate::namespace::{BlockRec, InodeId};
use crate::placement::{self, Candidate};

pub type NodeIdx = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    InService,
    Decommissioning,
    Decommissioned,
}

/// What a heartbeat says of a datanode.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeStats {
    pub capacity: u64,
    pub used: u64,
    pub remaining: u64,
    pub xceivers: u32,
    pub failed_volumes: u32,
}

#[derive(Clone, Debug)]
pub struct Datanode {
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
    /// Storage directories the node took out of service.
    pub failed_volumes: u32,
    pub last_contact: Instant,
    pub alive: bool,
    pub admin: AdminState,
    /// Replicas the namenode believes this node holds.
    pub blocks: u64,
    /// Removed from the lists by an administrator while dead (`forget`);
    /// its slot stays so node indexes do not move.
    pub forgotten: bool,
    /// Commands waiting for the next heartbeat.
    pub commands: Vec<Command>,
    /// Replication streams this node is sending now (a throttle).
    pub sending: u32,
    /// The address its registration came from: its other DatanodeProtocol
    /// calls must come from there too (until there is authentication).
    pub from_ip: Option<std::net::IpAddr>,
    /// Its socket for short-circuit local reads, as it registered it
    /// (empty: none).
    pub domain_socket: String,
}

/// What reports show of a datanode: alive or not, and its administrative
/// state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Live,
    Dead,
    Decommissioning,
    Decommissioned,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Live => "live",
            NodeState::Dead => "dead",
            NodeState::Decommissioning => "decommissioning",
            NodeState::Decommissioned => "decommissioned",
        }
    }
}

impl Datanode {
    pub fn state(&self) -> NodeState {
        match (self.alive, self.admin) {
            (false, _) => NodeState::Dead,
            (true, AdminState::InService) => NodeState::Live,
            (true, AdminState::Decommissioning) => NodeState::Decommissioning,
            (true, AdminState::Decommissioned) => NodeState::Decommissioned,
        }
    }

    fn candidate(&self) -> Candidate {
        Candidate {
            id: self.id.clone(),
            host: self.host.clone(),
            rack: self.rack.clone(),
            remaining: self.remaining,
            load: self.xceivers + self.sending,
        }
    }

    /// May take new replicas.
    fn writable(&self) -> bool {
        self.alive && self.admin == AdminState::InService
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Copy `block` to `targets` (the first is the pipeline head).
    Replicate {
        block: BlockRec,
        targets: Vec<NodeIdx>,
    },
    Delete(Vec<BlockRec>),
    /// Lease recovery with this node as the primary.
    Recover {
        block: BlockRec,
        new_gen_stamp: u64,
        replicas: Vec<NodeIdx>,
    },
}

#[derive(Clone, Debug, Default)]
pub struct BlockInfo {
    pub inode: InodeId,
    /// Inline up to three (the usual replication): no heap allocation.
    pub replicas: SmallVec<[NodeIdx; 3]>,
    /// Replicas known to be bad (checksum, stale stamp, wrong length).
    pub corrupt: Option<Box<Vec<NodeIdx>>>,
}

impl BlockInfo {
    fn is_corrupt_on(&self, n: NodeIdx) -> bool {
        self.corrupt.as_ref().is_some_and(|c| c.contains(&n))
    }
}

/// What the namespace says about a block.
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    pub block: BlockRec,
    pub replication: u16,
    /// Being written: its length and replicas are still moving.
    pub under_construction: bool,
}

/// How a reported replica compares with the namespace.
#[derive(Debug, PartialEq)]
pub enum ReplicaVerdict {
    Good,
    /// Not in any file: delete it.
    Unknown,
    /// Older stamp or wrong length: corrupt.
    Stale,
}

/// The replica counts `report` and `fsck` show.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Health {
    pub blocks: u64,
    pub under_replicated: u64,
    pub missing: u64,
    pub corrupt: u64,
    pub excess: u64,
    pub pending_replication: u64,
}

struct Pending {
    targets: Vec<NodeIdx>,
    since: Instant,
    /// The nodes sending the copies (their stream counts drop when done).
    sources: Vec<NodeIdx>,
}

#[derive(Default)]
pub struct BlockMap {
    /// Replicas no file owns are left alone while set (safe mode: the
    /// namespace may not be the one these datanodes were written by).
    pub postpone_deletes: bool,
    /// An index map for the same reason as the namespace's inodes.
    pub blocks: IndexMap<u64, BlockInfo>,
    pub nodes: Vec<Datanode>,
    by_id: HashMap<String, NodeIdx>,
    pending: HashMap<u64, Pending>,
}

/// Replications one node sends at once (HDFS's
/// `dfs.namenode.replication.max-streams`).
pub const MAX_STREAMS: u32 = 4;

impl BlockMap {
    pub fn node(&self, idx: NodeIdx) -> &Datanode {
        &self.nodes[idx as usize]
    }

    pub fn idx_of(&self, id: &str) -> Option<NodeIdx> {
        self.by_id.get(id).copied()
    }

    /// The datanodes an administrator sees: all but the forgotten.
    pub fn listed(&self) -> impl Iterator<Item = &Datanode> {
        self.nodes.iter().filter(|n| !n.forgotten)
    }

    /// A listed datanode by id or transfer address.
    pub fn find(&self, name: &str) -> Option<NodeIdx> {
        self.idx_of(name).or_else(|| {
            self.nodes
                .iter()
                .position(|n| !n.forgotten && n.transfer_addr == name)
                .map(|i| i as NodeIdx)
        })
    }

    /// Drops a dead datanode from the lists (and from the dead count): it
    /// was retired. If it comes back it registers as a new node.
    pub fn forget(&mut self, n: NodeIdx) {
        let node = &mut self.nodes[n as usize];
        debug_assert!(!node.alive, "only dead datanodes are forgotten");
        node.forgotten = true;
        let id = node.id.clone();
        self.by_id.remove(&id);
    }

    /// Registers (or re-registers) a datanode; returns its index.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        id: &str,
        host: &str,
        transfer_addr: &str,
        rpc_addr: &str,
        http_addr: &str,
        rack: &str,
        now: Instant,
    ) -> NodeIdx {
        if let Some(&i) = self.by_id.get(id) {
            let n = &mut self.nodes[i as usize];
            n.host = host.into();
            n.transfer_addr = transfer_addr.into();
            n.rpc_addr = rpc_addr.into();
            n.http_addr = http_addr.into();
            n.rack = rack.into();
            n.last_contact = now;
            n.alive = true;
            return i;
        }
        let i = self.nodes.len() as NodeIdx;
        self.nodes.push(Datanode {
            id: id.into(),
            host: host.into(),
            transfer_addr: transfer_addr.into(),
            rpc_addr: rpc_addr.into(),
            http_addr: http_addr.into(),
            rack: rack.into(),
            capacity: 0,
            used: 0,
            remaining: 0,
            xceivers: 0,
            failed_volumes: 0,
            last_contact: now,
            alive: true,
            admin: AdminState::InService,
            blocks: 0,
            forgotten: false,
            commands: Vec::new(),
            sending: 0,
            from_ip: None,
            domain_socket: String::new(),
        });
        self.by_id.insert(id.into(), i);
        i
    }

    /// A heartbeat: fresh stats; returns the commands waiting, or `None`
    /// when the node is unknown or was declared dead (it must register and
    /// report again).
    pub fn heartbeat(&mut self, id: &str, stats: NodeStats, now: Instant) -> Option<Vec<Command>> {
        let i = *self.by_id.get(id)?;
        let n = &mut self.nodes[i as usize];
        if !n.alive {
            return None;
        }
        n.capacity = stats.capacity;
        n.used = stats.used;
        n.remaining = stats.remaining;
        n.xceivers = stats.xceivers;
        n.failed_volumes = stats.failed_volumes;
        n.last_contact = now;
        Some(std::mem::take(&mut n.commands))
    }

    /// Declares nodes silent for longer than `timeout` dead and forgets
    /// their replicas. Returns the ids declared dead.
    pub fn check_dead(&mut self, now: Instant, timeout: Duration) -> Vec<String> {
        let mut dead = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if n.alive && now.duration_since(n.last_contact) > timeout {
                n.alive = false;
                n.commands.clear();
                n.sending = 0;
                dead.push((i as NodeIdx, n.id.clone()));
            }
        }
        if dead.is_empty() {
            return vec![];
        }
        let gone: HashSet<NodeIdx> = dead.iter().map(|(i, _)| *i).collect();
        for b in self.blocks.values_mut() {
            b.replicas.retain(|r| !gone.contains(r));
            if let Some(c) = &mut b.corrupt {
                c.retain(|r| !gone.contains(r));
            }
        }
        for p in self.pending.values_mut() {
            p.targets.retain(|t| !gone.contains(t));
        }
        for (i, _) in &dead {
            self.nodes[*i as usize].blocks = 0;
        }
        dead.into_iter().map(|(_, id)| id).collect()
    }

    /// A new block of a file (AddBlock); its replicas come as the pipeline
    /// reports them.
    pub fn add_block(&mut self, id: u64, inode: InodeId) {
        self.blocks.insert(
            id,
            BlockInfo {
                inode,
                replicas: SmallVec::new(),
                corrupt: None,
            },
        );
    }

    /// A block left the namespace: every holder is told to delete it.
    pub fn remove_block(&mut self, block: BlockRec) {
        if let Some(p) = self.pending.remove(&block.id) {
            self.streams_done(&p.sources);
        }
        let Some(info) = self.blocks.swap_remove(&block.id) else {
            return;
        };
        let mut holders = info.replicas;
        holders.extend(info.corrupt.map(|c| *c).unwrap_or_default());
        holders.sort_unstable();
        holders.dedup();
        for n in holders {
            self.queue_delete(n, block);
            let node = &mut self.nodes[n as usize];
            node.blocks = node.blocks.saturating_sub(1);
        }
    }

    fn queue_delete(&mut self, n: NodeIdx, block: BlockRec) {
        let node = &mut self.nodes[n as usize];
        if !node.alive {
            return;
        }
        match node.commands.iter_mut().find_map(|c| match c {
            Command::Delete(v) => Some(v),
            _ => None,
        }) {
            Some(v) => v.push(block),
            None => node.commands.push(Command::Delete(vec![block])),
        }
    }

    /// Judges a reported replica against the namespace.
    pub fn verdict(reported: &BlockRec, expected: Option<&Expected>) -> ReplicaVerdict {
        let Some(e) = expected else {
            return ReplicaVerdict::Unknown;
        };
        if reported.gen_stamp < e.block.gen_stamp {
            return ReplicaVerdict::Stale;
        }
        if !e.under_construction && reported.len != e.block.len {
            return ReplicaVerdict::Stale;
        }
        ReplicaVerdict::Good
    }

    /// One replica reported (incremental report, or one line of a full
    /// one). Unknown replicas are deleted; stale ones marked corrupt.
    pub fn replica_reported(
        &mut self,
        n: NodeIdx,
        reported: BlockRec,
        expected: Option<&Expected>,
    ) -> ReplicaVerdict {
        let v = Self::verdict(&reported, expected);
        match v {
            ReplicaVerdict::Unknown if self.postpone_deletes => {}
            ReplicaVerdict::Unknown => self.queue_delete(n, reported),
            ReplicaVerdict::Stale => self.mark_corrupt(reported.id, n),
            ReplicaVerdict::Good => {
                if let Some(info) = self.blocks.get_mut(&reported.id) {
                    // Known corrupt here: it stays so until it is deleted.
                    if info.is_corrupt_on(n) {
                        return ReplicaVerdict::Stale;
                    }
                    if !info.replicas.contains(&n) {
                        info.replicas.push(n);
                        self.nodes[n as usize].blocks += 1;
                    }
                    if let Some(p) = self.pending.get_mut(&reported.id) {
                        p.targets.retain(|t| *t != n);
                        if p.targets.is_empty() {
                            let p = self.pending.remove(&reported.id).expect("present");
                            self.streams_done(&p.sources);
                        }
                    }
                }
            }
        }
        v
    }

    pub fn replica_deleted(&mut self, n: NodeIdx, block_id: u64) {
        if let Some(info) = self.blocks.get_mut(&block_id) {
            let before = info.replicas.len();
            info.replicas.retain(|r| *r != n);
            if info.replicas.len() < before {
                let node = &mut self.nodes[n as usize];
                node.blocks = node.blocks.saturating_sub(1);
            }
            if let Some(c) = &mut info.corrupt {
                c.retain(|r| *r != n);
                if c.is_empty() {
                    info.corrupt = None;
                }
            }
        }
    }

    /// A full block report replaces what the namenode believed the node
    /// held: replicas it no longer has are forgotten, corrupt ones too (a
    /// node that lost its disk, or restarted between deleting a replica
    /// and reporting it, sends no deletion).
    pub fn full_report(
        &mut self,
        n: NodeIdx,
        reported: &[BlockRec],
        expected: impl Fn(u64, InodeId) -> Option<Expected>,
    ) {
        let have: HashSet<u64> = reported.iter().map(|b| b.id).collect();
        let forgotten: Vec<u64> = self
            .blocks
            .iter()
            .filter(|(id, info)| {
                (info.replicas.contains(&n) || info.is_corrupt_on(n)) && !have.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in forgotten {
            self.replica_deleted(n, id);
        }
        for b in reported {
            let e = self
                .blocks
                .get(&b.id)
                .and_then(|info| expected(b.id, info.inode));
            self.replica_reported(n, *b, e.as_ref());
        }
    }

    /// A client or scanner found a bad replica.
    pub fn mark_corrupt(&mut self, block_id: u64, n: NodeIdx) {
        let Some(info) = self.blocks.get_mut(&block_id) else {
            return;
        };
        if info.replicas.contains(&n) {
            info.replicas.retain(|r| *r != n);
            let node = &mut self.nodes[n as usize];
            node.blocks = node.blocks.saturating_sub(1);
        }
        let c = info.corrupt.get_or_insert_with(Default::default);
        if !c.contains(&n) {
            c.push(n);
        }
    }

    /// Replicas that count: on live nodes, not corrupt, not being
    /// decommissioned.
    pub fn live_replicas(&self, info: &BlockInfo) -> usize {
        info.replicas
            .iter()
            .filter(|r| self.node(**r).writable())
            .count()
    }

    /// Any readable replica, decommissioning ones included.
    fn readable(&self, info: &BlockInfo) -> Vec<NodeIdx> {
        info.replicas
            .iter()
            .copied()
            .filter(|r| self.node(*r).alive)
            .collect()
    }

    /// Candidates for new replicas.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.nodes
            .iter()
            .filter(|n| n.writable())
            .map(Datanode::candidate)
            .collect()
    }

    pub fn writable_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.writable()).count()
    }

    pub fn live_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.alive).count()
    }

    /// Chooses a pipeline for a new block.
    pub fn choose_for_write<R: Rng>(
        &self,
        rng: &mut R,
        replication: usize,
        writer_host: Option<&str>,
        block_size: u64,
        excluded: &HashSet<String>,
    ) -> Vec<NodeIdx> {
        let cands = self.candidates();
        let picked = placement::choose_targets(
            rng,
            &cands,
            &[],
            writer_host,
            replication,
            block_size,
            excluded,
        );
        let racks: HashMap<String, String> = self
            .nodes
            .iter()
            .map(|n| (n.host.clone(), n.rack.clone()))
            .collect();
        placement::pipeline_order(picked, writer_host, &racks)
            .into_iter()
            .filter_map(|c| self.idx_of(&c.id))
            .collect()
    }

    /// One pass of the replication monitor: schedules copies for blocks
    /// short of replicas (fewest live replicas first), deletions for
    /// blocks with too many, and expires replications that never arrived.
    /// At most `limit` new replications are scheduled per pass.
    pub fn replication_pass<R: Rng>(
        &mut self,
        rng: &mut R,
        expected: impl Fn(u64, InodeId) -> Option<Expected>,
        now: Instant,
        pending_timeout: Duration,
        limit: usize,
    ) -> usize {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= pending_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let p = self.pending.remove(&id).expect("present");
            self.streams_done(&p.sources);
        }
        // Priority: live replicas held (0 live but readable on a
        // decommissioning node counts as 0), then block id.
        let mut queue: BTreeMap<(usize, u64), Expected> = BTreeMap::new();
        let mut excess = Vec::new();
        for (id, info) in &self.blocks {
            let Some(e) = expected(*id, info.inode) else {
                continue;
            };
            if e.under_construction {
                continue;
            }
            let live = self.live_replicas(info);
            let want = (e.replication as usize).min(self.writable_count().max(1));
            let in_flight = self.pending.get(id).map_or(0, |p| p.targets.len());
            if live + in_flight < want {
                queue.insert((live, *id), e);
            } else if live > e.replication as usize && in_flight == 0 {
                excess.push((*id, e.replication as usize));
            } else if info.corrupt.is_some() && live >= want {
                // Enough good copies: the corrupt ones can go.
                excess.push((*id, usize::MAX));
            }
        }
        let mut scheduled = 0;
        for (_, e) in queue {
            if scheduled >= limit {
                break;
            }
            if self.schedule_copy(rng, &e, now) {
                scheduled += 1;
            }
        }
        for (id, keep) in excess {
            self.trim(id, keep, &expected);
        }
        scheduled
    }

    fn schedule_copy<R: Rng>(&mut self, rng: &mut R, e: &Expected, now: Instant) -> bool {
        let id = e.block.id;
        let replication = e.replication as usize;
        let Some(info) = self.blocks.get(&id) else {
            return false;
        };
        let sources = self.readable(info);
        let Some(&source) = sources
            .iter()
            .filter(|s| !info.is_corrupt_on(**s))
            .min_by_key(|s| {
                let n = self.node(**s);
                // Prefer nodes leaving service (HDFS does), then idle ones.
                (n.admin == AdminState::InService, n.sending)
            })
        else {
            return false;
        };
        if self.node(source).sending >= MAX_STREAMS {
            return false;
        }
        let live: Vec<NodeIdx> = info
            .replicas
            .iter()
            .copied()
            .filter(|r| self.node(*r).writable())
            .collect();
        let pending: Vec<NodeIdx> = self.pending.get(&id).map_or(vec![], |p| p.targets.clone());
        let existing: Vec<Candidate> = live
            .iter()
            .chain(pending.iter())
            .map(|r| self.node(*r).candidate())
            .collect();
        let existing_refs: Vec<&Candidate> = existing.iter().collect();
        let mut excluded: HashSet<String> = info
            .replicas
            .iter()
            .chain(info.corrupt.iter().flat_map(|c| c.iter()))
            .map(|r| self.node(*r).id.clone())
            .collect();
        excluded.extend(pending.iter().map(|r| self.node(*r).id.clone()));
        let wanted = replication.saturating_sub(existing.len());
        if wanted == 0 {
            return false;
        }
        let cands = self.candidates();
        // A target must have room for the whole replica (HDFS's
        // isGoodTarget), as for a new block.
        let picked = placement::choose_targets(
            rng,
            &cands,
            &existing_refs,
            None,
            wanted,
            e.block.len,
            &excluded,
        );
        let targets: Vec<NodeIdx> = picked.iter().filter_map(|c| self.idx_of(&c.id)).collect();
        if targets.is_empty() {
            return false;
        }
        let block = e.block;
        let src = &mut self.nodes[source as usize];
        src.sending += 1;
        src.commands.push(Command::Replicate {
            block,
            targets: targets.clone(),
        });
        let p = self.pending.entry(id).or_insert(Pending {
            targets: vec![],
            since: now,
            sources: vec![],
        });
        p.targets.extend(targets);
        p.sources.push(source);
        true
    }

    /// Deletes excess replicas (down to `keep`; `usize::MAX` = only the
    /// corrupt ones), keeping the block on two racks when it can: the
    /// victim comes from the rack with the most replicas, and is the node
    /// with the least space left.
    fn trim(&mut self, id: u64, keep: usize, expected: &impl Fn(u64, InodeId) -> Option<Expected>) {
        let Some(info) = self.blocks.get(&id).cloned() else {
            return;
        };
        let Some(e) = expected(id, info.inode) else {
            return;
        };
        let block = e.block;
        for c in info.corrupt.iter().flat_map(|c| c.iter()) {
            self.queue_delete(*c, block);
        }
        if let Some(b) = self.blocks.get_mut(&id) {
            b.corrupt = None;
        }
        if keep == usize::MAX {
            return;
        }
        let mut live: Vec<NodeIdx> = info
            .replicas
            .iter()
            .copied()
            .filter(|r| self.node(*r).writable())
            .collect();
        while live.len() > keep {
            let mut per_rack: HashMap<&str, usize> = HashMap::new();
            for r in &live {
                *per_rack.entry(self.node(*r).rack.as_str()).or_default() += 1;
            }
            let Some(victim) = live.iter().copied().max_by_key(|r| {
                let n = self.node(*r);
                (per_rack[n.rack.as_str()], u64::MAX - n.remaining)
            }) else {
                break;
            };
            live.retain(|r| *r != victim);
            self.replica_deleted(victim, id);
            self.queue_delete(victim, block);
        }
    }

    /// Replications finished (or gave up) on their sources.
    fn streams_done(&mut self, sources: &[NodeIdx]) {
        for n in sources {
            let node = &mut self.nodes[*n as usize];
            node.sending = node.sending.saturating_sub(1);
        }
    }

    /// Moves decommissioning nodes whose every block is safely replicated
    /// elsewhere to decommissioned.
    pub fn check_decommission(&mut self, expected: impl Fn(u64, InodeId) -> Option<Expected>) {
        let leaving: Vec<NodeIdx> = (0..self.nodes.len() as NodeIdx)
            .filter(|i| {
                let n = self.node(*i);
                n.alive && n.admin == AdminState::Decommissioning
            })
            .collect();
        for n in leaving {
            let done = self.blocks.iter().all(|(id, info)| {
                if !info.replicas.contains(&n) {
                    return true;
                }
                match expected(*id, info.inode) {
                    None => true,
                    Some(e) => {
                        self.live_replicas(info)
                            >= (e.replication as usize).min(self.writable_count())
                    }
                }
            });
            if done {
                self.nodes[n as usize].admin = AdminState::Decommissioned;
            }
        }
    }

    pub fn set_admin(&mut self, n: NodeIdx, state: AdminState) {
        self.nodes[n as usize].admin = state;
    }

    pub fn health(&self, expected: impl Fn(u64, InodeId) -> Option<Expected>) -> Health {
        let mut h = Health {
            blocks: self.blocks.len() as u64,
            pending_replication: self.pending.values().map(|p| p.targets.len() as u64).sum(),
            ..Health::default()
        };
        for (id, info) in &self.blocks {
            let Some(e) = expected(*id, info.inode) else {
                continue;
            };
            if info.corrupt.is_some() {
                h.corrupt += 1;
            }
            if e.under_construction {
                continue;
            }
            let readable = self.readable(info).len();
            let live = self.live_replicas(info);
            if readable == 0 {
                h.missing += 1;
            } else if live < (e.replication as usize).min(self.writable_count().max(1)) {
                h.under_replicated += 1;
            } else if live > e.replication as usize {
                h.excess += 1;
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn space(remaining: u64) -> NodeStats {
        NodeStats {
            capacity: 1 << 40,
            remaining,
            ..Default::default()
        }
    }

    fn map(racks: &[(&str, usize)]) -> BlockMap {
        let mut m = BlockMap::default();
        let now = Instant::now();
        for (rack, n) in racks {
            for i in 0..*n {
                let id = format!("{rack}-dn{i}");
                m.register(&id, &format!("{rack}-h{i}"), "t", "r", "h", rack, now);
                m.heartbeat(&id, space(1 << 40), now).unwrap();
            }
        }
        m
    }

    fn rec(id: u64) -> BlockRec {
        BlockRec {
            id,
            gen_stamp: 5,
            len: 100,
        }
    }

    fn closed(id: u64, replication: u16) -> Expected {
        Expected {
            block: rec(id),
            replication,
            under_construction: false,
        }
    }

    #[test]
    fn reports_are_judged_against_the_namespace() {
        let mut m = map(&[("/r1", 2), ("/r2", 2)]);
        m.add_block(1, 10);
        let e = closed(1, 3);
        assert_eq!(
            m.replica_reported(0, rec(1), Some(&e)),
            ReplicaVerdict::Good
        );
        let stale = BlockRec {
            gen_stamp: 4,
            ..rec(1)
        };
        assert_eq!(
            m.replica_reported(1, stale, Some(&e)),
            ReplicaVerdict::Stale
        );
        let short = BlockRec { len: 99, ..rec(1) };
        assert_eq!(
            m.replica_reported(2, short, Some(&e)),
            ReplicaVerdict::Stale
        );
        assert_eq!(
            m.replica_reported(3, rec(99), None),
            ReplicaVerdict::Unknown
        );
        assert_eq!(m.blocks[&1].replicas[..], [0]);
        assert_eq!(**m.blocks[&1].corrupt.as_ref().unwrap(), vec![1, 2]);
        assert!(matches!(&m.nodes[3].commands[..], [Command::Delete(v)] if v[0].id == 99));
        // A full report that no longer lists the block forgets the replica.
        m.full_report(0, &[], |_, _| Some(e));
        assert!(m.blocks[&1].replicas.is_empty());
    }

    /// Block 1 (replication 3) on nodes 0, 3 and 4; then every node but
    /// node 0 (`/r1-dn0`) heartbeats a minute later, with `remaining(n)`
    /// bytes free, and node 0 is declared dead.
    fn first_node_dies(m: &mut BlockMap, remaining: impl Fn(usize) -> u64) -> (Expected, Instant) {
        m.add_block(1, 10);
        let e = closed(1, 3);
        for n in [0, 3, 4] {
            m.replica_reported(n, rec(1), Some(&e));
        }
        let later = Instant::now() + Duration::from_secs(60);
        for n in 1..m.nodes.len() {
            let id = m.nodes[n].id.clone();
            m.heartbeat(&id, space(remaining(n)), later).unwrap();
        }
        assert_eq!(
            m.check_dead(later, Duration::from_secs(30)),
            vec!["/r1-dn0"]
        );
        (e, later)
    }

    #[test]
    fn a_dead_node_triggers_re_replication_across_racks() {
        let mut m = map(&[("/r1", 3), ("/r2", 3)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // Node 0 (the only /r1 replica) goes silent.
        let (e, later) = first_node_dies(&mut m, |_| 1 << 40);
        assert_eq!(m.health(|_, _| Some(e)).under_replicated, 1);
        let n = m.replication_pass(&mut rng, |_, _| Some(e), later, Duration::from_secs(60), 10);
        assert_eq!(n, 1);
        // The copy goes to /r1 (the block is on /r2 only), from a holder.
        let (src, targets) = m
            .nodes
            .iter()
            .enumerate()
            .find_map(|(i, d)| match d.commands.first() {
                Some(Command::Replicate { targets, .. }) => Some((i, targets.clone())),
                _ => None,
            })
            .unwrap();
        assert!(src == 3 || src == 4);
        assert_eq!(m.node(targets[0]).rack, "/r1");
        // While it is pending, nothing more is scheduled.
        assert_eq!(
            m.replication_pass(&mut rng, |_, _| Some(e), later, Duration::from_secs(60), 10),
            0
        );
        m.replica_reported(targets[0], rec(1), Some(&e));
        assert_eq!(
            m.health(|_, _| Some(e)),
            Health {
                blocks: 1,
                ..Health::default()
            }
        );
        // The dead node comes back and must register again.
        assert!(m.heartbeat("/r1-dn0", space(0), later).is_none());
    }

    #[test]
    fn re_replication_skips_a_target_without_room() {
        // /r1: dn0 (will die), dn1 (full), dn2; /r2: dn0 and dn1 (nodes 3, 4).
        // The copy must go to /r1 (two per rack at most for three
        // replicas), and only /r1-dn2 has room: on every seed.
        for seed in 0..16 {
            let mut m = map(&[("/r1", 3), ("/r2", 2)]);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // rec(1) is 100 bytes; dn1 has 50 left.
            let (e, later) = first_node_dies(&mut m, |n| if n == 1 { 50 } else { 1 << 40 });
            let n =
                m.replication_pass(&mut rng, |_, _| Some(e), later, Duration::from_secs(60), 10);
            assert_eq!(n, 1);
            let targets: Vec<NodeIdx> = m
                .nodes
                .iter()
                .flat_map(|d| d.commands.iter())
                .filter_map(|c| match c {
                    Command::Replicate { targets, .. } => Some(targets.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(targets, vec![2], "seed {seed}");
        }
    }

    #[test]
    fn excess_and_corrupt_replicas_are_deleted_keeping_two_racks() {
        let mut m = map(&[("/r1", 3), ("/r2", 2)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        m.add_block(1, 10);
        let e = closed(1, 2);
        for n in [0, 1, 3] {
            m.replica_reported(n, rec(1), Some(&e));
        }
        m.replication_pass(
            &mut rng,
            |_, _| Some(e),
            Instant::now(),
            Duration::from_secs(60),
            10,
        );
        let deleted: Vec<usize> = (0..5)
            .filter(|i| matches!(m.nodes[*i].commands.first(), Some(Command::Delete(_))))
            .collect();
        assert_eq!(deleted.len(), 1);
        assert!(
            deleted[0] < 3,
            "the victim is on the rack with two replicas"
        );
        assert_eq!(m.blocks[&1].replicas.len(), 2);
        // A corrupt replica goes once enough good ones exist.
        m.nodes.iter_mut().for_each(|n| n.commands.clear());
        let holder = m.blocks[&1].replicas[0];
        m.mark_corrupt(1, holder);
        m.replication_pass(
            &mut rng,
            |_, _| Some(e),
            Instant::now(),
            Duration::from_secs(60),
            10,
        );
        assert!(m
            .nodes
            .iter()
            .any(|n| matches!(n.commands.first(), Some(Command::Replicate { .. }))));
    }

    /// A corrupt mark stays while the node still lists the replica, and
    /// goes with a full report that no longer lists it, even when no
    /// deletion was ever reported for it.
    #[test]
    fn a_corrupt_mark_goes_with_the_replica_a_full_report_omits() {
        let mut m = map(&[("/r1", 2), ("/r2", 2)]);
        m.add_block(1, 10);
        m.add_block(2, 10);
        let e1 = closed(1, 2);
        let e2 = closed(2, 2);
        for n in [0, 2] {
            m.replica_reported(n, rec(1), Some(&e1));
            m.replica_reported(n, rec(2), Some(&e2));
        }
        m.mark_corrupt(1, 0);
        let expect = |id: u64, _| Some(if id == 1 { e1 } else { e2 });
        m.full_report(0, &[rec(1), rec(2)], expect);
        assert!(m.blocks[&1].is_corrupt_on(0), "still listed: still corrupt");
        assert!(!m.blocks[&1].replicas.contains(&0));
        m.full_report(0, &[rec(2)], expect);
        assert!(m.blocks[&1].corrupt.is_none(), "gone from the node");
        assert_eq!(m.blocks[&1].replicas.as_slice(), &[2]);
        assert_eq!(m.blocks[&2].replicas.as_slice(), &[0, 2]);
        assert_eq!(m.nodes[0].blocks, 1);
    }

    #[test]
    fn decommission_completes_only_when_blocks_live_elsewhere() {
        let mut m = map(&[("/r1", 2), ("/r2", 2)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        m.add_block(1, 10);
        let e = closed(1, 2);
        m.replica_reported(0, rec(1), Some(&e));
        m.replica_reported(2, rec(1), Some(&e));
        m.set_admin(0, AdminState::Decommissioning);
        m.check_decommission(|_, _| Some(e));
        assert_eq!(m.nodes[0].admin, AdminState::Decommissioning);
        m.replication_pass(
            &mut rng,
            |_, _| Some(e),
            Instant::now(),
            Duration::from_secs(60),
            10,
        );
        let Some(Command::Replicate { targets, .. }) = m.nodes[0].commands.first().cloned() else {
            panic!(
                "the leaving node is the preferred source: {:?}",
                m.nodes[0].commands
            );
        };
        assert_eq!(targets, vec![1], "stays on two racks: /r1's other node");
        m.replica_reported(1, rec(1), Some(&e));
        m.check_decommission(|_, _| Some(e));
        assert_eq!(m.nodes[0].admin, AdminState::Decommissioned);
    }

    #[test]
    fn removed_blocks_are_deleted_from_every_holder() {
        let mut m = map(&[("/r1", 2)]);
        m.add_block(7, 10);
        let e = closed(7, 2);
        m.replica_reported(0, rec(7), Some(&e));
        m.replica_reported(1, rec(7), Some(&e));
        m.remove_block(rec(7));
        assert!(m.blocks.is_empty());
        for n in &m.nodes {
            assert_eq!(n.commands, vec![Command::Delete(vec![rec(7)])]);
            assert_eq!(n.blocks, 0);
        }
    }
}
