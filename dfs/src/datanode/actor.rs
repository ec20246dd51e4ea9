//! The datanode's conversation with the namenode (HDFS's `BPServiceActor`):
//! register, send a full block report, then heartbeat; carry out the
//! commands heartbeats bring back; tell the namenode about every replica
//! that arrived or left (incremental reports) and every bad one found.
//!
//! The namenode is soft-state about datanodes: when it restarts it forgets
//! us and says so in a heartbeat reply (`reregister`), and we start over.
//! A namenode that is down only delays us: the actor retries with backoff
//! for as long as it takes and never stops the datanode. What it must
//! report meanwhile (incremental reports, bad blocks) waits in memory and is
//! retried; a full block report after registering covers anything lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hstack_daemon::Shutdown;
use hstack_proto::dfs as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::Instrument;

use super::recovery;
use super::xceiver::{self, Event, XceiverCtx};
use crate::error::{Code, FsError, FsResult};
use crate::namespace::BlockRec;
use crate::transfer::Target;

/// Used when the namenode's reply leaves them 0.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(3);
const DEFAULT_BLOCK_REPORT: Duration = Duration::from_secs(6 * 3600);
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// A full report of a big node takes a while to build and apply.
const REPORT_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the status page and `/readyz` show.
#[derive(Default)]
pub(crate) struct NodeStatus {
    pub registered: AtomicBool,
    /// Registered and the first full block report was accepted.
    pub ready: AtomicBool,
}

pub(crate) type NamenodeClient = pb::datanode_protocol_client::DatanodeProtocolClient<Channel>;

/// A client that connects when first used and reconnects by itself.
/// The datanode's channel to the namenode, leaving from `from` (the
/// address it serves on, when bound to one): the namenode takes a
/// datanode's reports only from the address it registered from.
pub(crate) fn namenode_client(
    addr: &str,
    from: Option<std::net::IpAddr>,
) -> anyhow::Result<NamenodeClient> {
    let ch = hstack_daemon::net::channel_from(from, addr)?;
    Ok(NamenodeClient::new(ch)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(64 << 20))
}

pub(crate) struct Actor {
    pub ctx: Arc<XceiverCtx>,
    pub nn: NamenodeClient,
    /// `host:port` of the namenode, for log lines.
    pub namenode: String,
    /// This node as the namenode should know it (usage filled per call).
    pub me: pb::DatanodeInfo,
    pub storage_dirs: Vec<String>,
    /// The cluster its replicas belong to, as start found it; `None` (no
    /// replicas, no id yet) until the namenode's handshake names it.
    pub cluster_id: Option<String>,
    pub status: Arc<NodeStatus>,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub shutdown: Shutdown,
}

/// Reports waiting to go to the namenode.
#[derive(Default)]
struct Pending {
    received: Vec<pb::Block>,
    deleted: Vec<pb::Block>,
    bad: Vec<pb::BadBlock>,
}

impl Pending {
    /// Keeps one entry per block, the latest: the two lists travel together
    /// and the namenode cannot see their order.
    fn add(&mut self, id: &str, e: Event) {
        match e {
            Event::Received(b) => {
                self.deleted.retain(|x| x.id != b.id);
                self.received.retain(|x| x.id != b.id);
                self.received.push(pb::Block::from(b));
            }
            Event::Deleted(b) => {
                self.received.retain(|x| x.id != b.id);
                self.deleted.retain(|x| x.id != b.id);
                self.deleted.push(pb::Block::from(b));
            }
            Event::Corrupt { block, reason } => self.bad.push(pb::BadBlock {
                block: Some(pb::Block::from(block)),
                datanode: id.to_string(),
                reason,
            }),
        }
    }
}

async fn rpc<T>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> FsResult<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(FsError::from(s)),
        Err(_) => Err(FsError::new(
            Code::Unavailable,
            format!("{what}: no answer in {limit:?}"),
        )),
    }
}

/// Waits between registration tries, with jitter: after a namenode
/// restart every datanode comes back, but not in the same instant.
fn new_backoff() -> hstack_proto::retry::Backoff {
    hstack_proto::retry::Backoff::new(Duration::from_millis(100), MAX_BACKOFF)
}

impl Actor {
    pub(crate) async fn run(mut self) {
        let mut pending = Pending::default();
        let mut backoff = new_backoff();
        let mut failures = 0u32;
        loop {
            self.status.ready.store(false, Ordering::Relaxed);
            self.status.registered.store(false, Ordering::Relaxed);
            let (heartbeat, report_every) = match self.register_and_report().await {
                Ok(t) => t,
                Err(e) => {
                    failures += 1;
                    // Loud once, then quiet: a namenode that is down for a
                    // while is an operations matter, not log noise.
                    if failures == 1 || failures % 60 == 0 {
                        tracing::warn!(
                            "failed to register with namenode {} ({failures} tries): {e}",
                            self.namenode
                        );
                    }
                    tokio::select! {
                        _ = self.shutdown.wait() => return,
                        _ = backoff.pause() => continue,
                    }
                }
            };
            if failures > 0 {
                tracing::info!("registered with namenode after {failures} failed tries");
            }
            failures = 0;
            backoff = new_backoff();
            if !self.serve(&mut pending, heartbeat, report_every).await {
                return;
            }
        }
    }

    fn usage(&self) -> (u64, u64, u64) {
        self.ctx.store.usage()
    }

    async fn register_and_report(&mut self) -> FsResult<(Duration, Duration)> {
        let (capacity, used, remaining) = self.usage();
        let info = pb::DatanodeInfo {
            capacity,
            used,
            remaining,
            xceivers: self.ctx.xceivers(),
            blocks: self.ctx.store.replica_count() as u64,
            failed_volumes: self.ctx.store.failed_volumes().len() as u32,
            ..self.me.clone()
        };
        let cluster_id = self.cluster_id().await?;
        let req = pb::DatanodeRegistration {
            info: Some(info),
            storage_dirs: self.storage_dirs.clone(),
            cluster_id,
        };
        let reply = rpc("register", RPC_TIMEOUT, self.nn.register_datanode(req)).await?;
        if !reply.id.is_empty() && reply.id != self.me.id {
            tracing::warn!(
                "the namenode calls this datanode {:?}, its id is {:?}; keeping its own",
                reply.id,
                self.me.id
            );
        }
        self.status.registered.store(true, Ordering::Relaxed);
        let ms = |v: u32, d: Duration| {
            if v == 0 {
                d
            } else {
                Duration::from_millis(v as u64)
            }
        };
        let heartbeat = ms(reply.heartbeat_ms, DEFAULT_HEARTBEAT);
        let report_every = ms(reply.block_report_ms, DEFAULT_BLOCK_REPORT);
        self.full_report().await?;
        self.status.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            heartbeat_ms = heartbeat.as_millis() as u64,
            "registered with the namenode; full block report accepted"
        );
        Ok((heartbeat, report_every))
    }

    /// The cluster this datanode's replicas belong to: kept in the first
    /// data directory and read at start, or (a datanode that held none
    /// then) the namenode's, asked once and kept from then on.
    async fn cluster_id(&mut self) -> FsResult<String> {
        if let Some(id) = &self.cluster_id {
            return Ok(id.clone());
        }
        let first = std::path::Path::new(&self.storage_dirs[0]);
        let f = super::cluster_id_file(first);
        let reply = rpc("handshake", RPC_TIMEOUT, self.nn.handshake(pb::Empty {})).await?;
        if reply.cluster_id.is_empty() {
            return Err(FsError::invalid("the namenode named no cluster id"));
        }
        hstack_daemon::write_atomic(&f, format!("{}\n", reply.cluster_id).as_bytes())
            .map_err(|e| crate::error::io(&f.display().to_string(), e))?;
        tracing::info!(cluster = %reply.cluster_id, "joined the cluster");
        self.cluster_id = Some(reply.cluster_id.clone());
        Ok(reply.cluster_id)
    }

    async fn full_report(&mut self) -> FsResult<()> {
        let blocks: Vec<pb::Block> = self
            .ctx
            .store
            .report()
            .into_iter()
            .map(|(b, _)| pb::Block::from(b))
            .collect();
        let n = blocks.len();
        self.ctx.metrics.replicas.set(n as i64);
        let req = pb::BlockReportRequest {
            id: self.me.id.clone(),
            blocks,
        };
        rpc("block report", REPORT_TIMEOUT, self.nn.block_report(req)).await?;
        tracing::debug!(replicas = n, "full block report sent");
        Ok(())
    }

    /// Heartbeats until the namenode asks us to register again (true) or
    /// the datanode shuts down (false).
    async fn serve(
        &mut self,
        pending: &mut Pending,
        heartbeat: Duration,
        report_every: Duration,
    ) -> bool {
        let mut next_heartbeat = Instant::now();
        let mut next_report = Instant::now() + report_every;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = self.shutdown.wait() => return false,
                _ = tokio::time::sleep_until(next_heartbeat) => {
                    next_heartbeat = Instant::now() + heartbeat;
                    match self.heartbeat().await {
                        Ok(reply) => {
                            if failing {
                                tracing::info!("the namenode answers heartbeats again");
                                failing = false;
                            }
                            if reply.reregister {
                                tracing::info!("the namenode asks this datanode to register again");
                                return true;
                            }
                            for c in reply.commands {
                                self.spawn_command(c);
                            }
                        }
                        // The namenode answered, with a refusal: it does not
                        // know us as we think it does. Start over.
                        Err(e) if e.is_answer() && !e.retryable() => {
                            self.ctx.metrics.heartbeat_failures_total.inc();
                            tracing::warn!("heartbeat refused ({e}); registering again");
                            return true;
                        }
                        Err(e) => {
                            self.ctx.metrics.heartbeat_failures_total.inc();
                            if !failing {
                                tracing::warn!("heartbeat failed: {e}");
                                failing = true;
                            }
                        }
                    }
                    // Retries whatever an earlier attempt could not send.
                    self.flush(pending).await;
                }
                _ = tokio::time::sleep_until(next_report) => {
                    next_report = Instant::now() + report_every;
                    if let Err(e) = self.full_report().await {
                        tracing::warn!("failed to send a full block report: {e}");
                        // Soon again, not a whole period later.
                        next_report = Instant::now() + heartbeat * 10;
                    }
                }
                ev = self.events.recv() => {
                    let Some(ev) = ev else { return false };
                    pending.add(&self.me.id, ev);
                    while let Ok(ev) = self.events.try_recv() {
                        pending.add(&self.me.id, ev);
                    }
                    self.flush(pending).await;
                }
            }
        }
    }

    async fn heartbeat(&mut self) -> FsResult<pb::HeartbeatReply> {
        let (capacity, used, remaining) = self.usage();
        let req = pb::HeartbeatRequest {
            id: self.me.id.clone(),
            capacity,
            used,
            remaining,
            xceivers: self.ctx.xceivers(),
            failed_volumes: self.ctx.store.failed_volumes().len() as u32,
        };
        rpc("heartbeat", RPC_TIMEOUT, self.nn.heartbeat(req)).await
    }

    /// Sends the incremental report and bad blocks waiting, in one call
    /// each; keeps them for the next try on failure.
    async fn flush(&mut self, pending: &mut Pending) {
        if !pending.received.is_empty() || !pending.deleted.is_empty() {
            let req = pb::IncrementalBlockReport {
                id: self.me.id.clone(),
                received: pending.received.clone(),
                deleted: pending.deleted.clone(),
            };
            match rpc(
                "incremental block report",
                RPC_TIMEOUT,
                self.nn.block_received_and_deleted(req),
            )
            .await
            {
                Ok(_) => {
                    pending.received.clear();
                    pending.deleted.clear();
                }
                Err(e) => tracing::debug!("incremental block report failed, will retry: {e}"),
            }
        }
        if !pending.bad.is_empty() {
            let req = pb::ReportBadBlocksRequest {
                blocks: pending.bad.clone(),
                caller: None,
            };
            match rpc(
                "bad block report",
                RPC_TIMEOUT,
                self.nn.report_bad_blocks(req),
            )
            .await
            {
                Ok(_) => pending.bad.clear(),
                Err(e) => tracing::debug!("bad block report failed, will retry: {e}"),
            }
        }
    }

    /// Commands run on their own: a copy of a large block must not hold
    /// up heartbeats.
    fn spawn_command(&self, c: pb::DatanodeCommand) {
        let Some(cmd) = c.cmd else {
            return;
        };
        let ctx = self.ctx.clone();
        let mut nn = self.nn.clone();
        tokio::spawn(
            async move {
                use pb::datanode_command::Cmd;
                match cmd {
                    Cmd::Replicate(r) => replicate(&ctx, r).await,
                    Cmd::Delete(d) => delete(ctx, d).await,
                    Cmd::Recover(r) => {
                        let id = r.block.as_ref().map_or(0, |b| b.id);
                        if let Err(e) = recovery::recover(&ctx, &mut nn, r).await {
                            tracing::warn!("failed to recover block {id}: {e}");
                        }
                    }
                }
            }
            .in_current_span(),
        );
    }
}

async fn replicate(ctx: &XceiverCtx, cmd: pb::ReplicateCommand) {
    let block = match crate::wire::block(cmd.block) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("ignoring a replicate command: {e}");
            return;
        }
    };
    if cmd.targets.is_empty() {
        tracing::warn!(
            "ignoring a replicate command for block {} without targets",
            block.id
        );
        return;
    }
    let targets: Vec<Target> = cmd
        .targets
        .into_iter()
        .map(|t| Target {
            id: t.id,
            addr: t.transfer_addr,
        })
        .collect();
    let names: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
    let names = names.join(",");
    match xceiver::replicate(ctx, block, &targets).await {
        Ok(()) => {
            ctx.metrics.blocks_replicated_total.inc();
            tracing::info!(block = block.id, len = block.len, to = %names, "block replicated");
        }
        Err(e) => tracing::warn!("failed to replicate block {} to {names}: {e}", block.id),
    }
}

async fn delete(ctx: Arc<XceiverCtx>, cmd: pb::DeleteCommand) {
    let c = ctx.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for b in cmd.blocks {
            let b = BlockRec {
                id: b.id,
                gen_stamp: b.gen_stamp,
                len: b.len,
            };
            let Some(r) = c.store.get(b.id) else {
                // Already gone: say so, the namenode's view is stale.
                out.push(b);
                continue;
            };
            if r.gen_stamp > b.gen_stamp {
                tracing::info!(
                    "not deleting block {}: the replica (stamp {}) is newer than the command's ({})",
                    b.id,
                    r.gen_stamp,
                    b.gen_stamp
                );
                continue;
            }
            // Fences a writer still appending to it.
            let (claim, res) = c.fences.claim(b.id, || c.store.delete(b.id));
            c.fences.release(claim);
            match res {
                Ok(_) => {
                    c.metrics.blocks_deleted_total.inc();
                    out.push(BlockRec {
                        gen_stamp: r.gen_stamp,
                        len: r.len,
                        ..b
                    });
                }
                Err(e) => tracing::warn!("failed to delete block {}: {e}", b.id),
            }
        }
        out
    })
    .await
    .unwrap_or_default();
    if !deleted.is_empty() {
        tracing::debug!(replicas = deleted.len(), "replicas deleted");
    }
    ctx.count_replicas();
    for b in deleted {
        ctx.event(Event::Deleted(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64) -> BlockRec {
        BlockRec {
            id,
            gen_stamp: 1,
            len: 10,
        }
    }

    #[test]
    fn pending_reports_keep_the_latest_state_of_each_block() {
        let mut p = Pending::default();
        p.add("dn", Event::Received(rec(1)));
        p.add("dn", Event::Received(rec(2)));
        p.add("dn", Event::Deleted(rec(1)));
        p.add("dn", Event::Received(rec(2)));
        p.add(
            "dn",
            Event::Corrupt {
                block: rec(3),
                reason: "bad".into(),
            },
        );
        let ids = |v: &[pb::Block]| v.iter().map(|b| b.id).collect::<Vec<_>>();
        assert_eq!(ids(&p.received), vec![2]);
        assert_eq!(ids(&p.deleted), vec![1]);
        assert_eq!(p.bad[0].datanode, "dn");
    }
}
