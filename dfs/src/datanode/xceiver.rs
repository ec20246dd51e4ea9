//! The datanode's side of the data transfer protocol (see `transfer`):
//! one task per connection on the transfer port, as HDFS's `DataXceiver`.
//!
//! It knows nothing of the namenode: what it stored it announces as
//! [`Event`]s, which the namenode actor turns into incremental block
//! reports. That keeps it testable alone, with real sockets and no
//! namenode.
//!
//! A write pipeline runs as three parts: the receiver (in the connection's
//! task) reads a packet, forwards it downstream at once (so the next
//! datanode works while we do) and queues it for the disk writer; the disk
//! writer (a blocking thread) verifies and appends whatever is queued in
//! one go; the responder matches each stored packet with the downstream's
//! ack for it and sends our own ack upstream. So receiving, forwarding and
//! the disk overlap, and an ack still means the packet is stored here and
//! downstream. The disk writer finalizes the replica before it hands the
//! `last` packet to the responder, so the final ack means every replica
//! downstream of the writer is complete.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::fence::{Claim, Fences};
use super::metrics::DatanodeMetrics;
use crate::blockstore::{
    verify_chunks, BlockReader, BlockStore, Piece, RbwWriter, ReplicaState, CHUNK, READ_WINDOW,
};
use crate::error::{Code, FsError, FsResult};
use crate::namespace::BlockRec;
use crate::transfer::{
    open_pipeline, read_packet, recv_op, timed, write_ack, write_frame, Ack, Op, Packet,
    PipelineRx, PipelineTx, Recovery, Reply, Status, Target, PACKET,
};

/// Socket buffers of a connection's halves: several packets, so a
/// pipeline moves in large reads and writes.
const BUF: usize = 256 * 1024;

/// What the data path tells the namenode actor.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A replica was finalized (written, replicated to us, or recovered).
    Received(BlockRec),
    Deleted(BlockRec),
    /// The block scanner found a replica that fails its checksums.
    Corrupt {
        block: BlockRec,
        reason: String,
    },
}

/// What every connection shares.
pub struct XceiverCtx {
    pub store: Arc<BlockStore>,
    /// This datanode's id (for log lines and bad-block reports).
    pub id: String,
    pub sync_on_close: bool,
    pub metrics: DatanodeMetrics,
    events: mpsc::UnboundedSender<Event>,
    pub(crate) fences: Fences,
    /// Wakes the volume checker early (`suspect_volumes`).
    pub(crate) volume_check: tokio::sync::Notify,
    /// The replica files handed to short-circuit readers.
    pub short_circuit: Arc<super::short_circuit::Registry>,
}

impl XceiverCtx {
    pub fn new(
        store: Arc<BlockStore>,
        id: String,
        sync_on_close: bool,
        metrics: DatanodeMetrics,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        metrics.replicas.set(store.replica_count() as i64);
        let short_circuit = Arc::new(super::short_circuit::Registry::default());
        let registry = short_circuit.clone();
        store.on_release(move |id| registry.released(id));
        Self {
            store,
            id,
            sync_on_close,
            metrics,
            events,
            fences: Fences::default(),
            volume_check: tokio::sync::Notify::new(),
            short_circuit,
        }
    }

    /// An I/O error on a replica: have the storage directories checked.
    pub(crate) fn suspect_volumes(&self) {
        self.volume_check.notify_one();
    }

    /// Open data transfer connections.
    pub fn xceivers(&self) -> u32 {
        self.metrics.xceivers.get().max(0) as u32
    }

    pub(crate) fn event(&self, e: Event) {
        if let Event::Corrupt { block, .. } = &e {
            // No short-circuit reader gets (or keeps) it any more.
            self.short_circuit.mark_corrupt(block.id);
        }
        // The receiver lives as long as the datanode; after shutdown
        // nobody listens and nothing is lost that a block report won't
        // tell again.
        let _ = self.events.send(e);
    }

    pub(crate) fn count_replicas(&self) {
        self.metrics.replicas.set(self.store.replica_count() as i64);
    }
}

/// Serves the transfer port until the task is dropped.
pub async fn serve_transfer(listener: TcpListener, ctx: Arc<XceiverCtx>) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                tokio::spawn(serve_conn(ctx.clone(), sock, peer).in_current_span());
            }
            Err(e) => {
                // Out of descriptors, most likely: back off, keep serving.
                tracing::warn!("failed to accept a data transfer connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Counts an open connection for as long as it lives.
struct Active<'a>(&'a DatanodeMetrics);

impl<'a> Active<'a> {
    fn enter(m: &'a DatanodeMetrics) -> Self {
        m.xceivers.inc();
        Self(m)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.xceivers.dec();
    }
}

async fn serve_conn(ctx: Arc<XceiverCtx>, sock: TcpStream, peer: SocketAddr) {
    let _active = Active::enter(&ctx.metrics);
    let _ = sock.set_nodelay(true);
    let (r, w) = sock.into_split();
    let mut r = BufReader::with_capacity(BUF, r);
    let w = BufWriter::with_capacity(BUF, w);
    let op = match timed("read the op", recv_op(&mut r)).await {
        Ok(op) => op,
        // Opened and closed without a word: a port probe.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            tracing::debug!(%peer, "data transfer connection closed before its op");
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, "refused a data transfer connection: {e}");
            return;
        }
    };
    match op {
        Op::WriteBlock {
            block,
            targets,
            client,
            recovery,
        } => {
            let span = tracing::debug_span!("write_block", block = block.id, %peer);
            write_block(&ctx, r, w, block, targets, client, recovery)
                .instrument(span)
                .await
        }
        Op::ReadBlock {
            block,
            offset,
            len,
            client: _,
        } => {
            let span = tracing::debug_span!("read_block", block = block.id, %peer);
            read_block(&ctx, w, block, offset, len)
                .instrument(span)
                .await
        }
    }
}

// ---- WriteBlock ----

/// Opens the local replica a pipeline writes: a new one, or (pipeline
/// recovery) the one we hold, cut to what the writer knows was
/// acknowledged and moved to the new stamp.
fn open_replica(
    store: &BlockStore,
    block: BlockRec,
    recovery: Option<&Recovery>,
) -> FsResult<RbwWriter> {
    let Some(r) = recovery else {
        return store.create_rbw(block);
    };
    match store.reopen_rbw(block.id, r.min_gen_stamp, block.gen_stamp, r.from) {
        // A node joining a rebuilt pipeline before any data: start afresh.
        Err(e) if e.code == Code::FileNotFound && r.from == 0 => store.create_rbw(block),
        other => other,
    }
}

async fn write_block(
    ctx: &Arc<XceiverCtx>,
    up_r: BufReader<OwnedReadHalf>,
    mut up_w: BufWriter<OwnedWriteHalf>,
    block: BlockRec,
    targets: Vec<Target>,
    client: String,
    recovery: Option<Recovery>,
) {
    let (claim, opened) = ctx.fences.claim(block.id, || {
        open_replica(&ctx.store, block, recovery.as_ref())
    });
    let writer = match opened {
        Ok(w) => w,
        Err(e) => {
            ctx.metrics.write_errors_total.inc();
            if e.code == Code::Io {
                ctx.suspect_volumes();
            }
            tracing::warn!(
                "failed to open block {} (stamp {}) for writing: {e}",
                block.id,
                block.gen_stamp
            );
            let _ = timed("reply", write_frame(&mut up_w, &Reply::err(&e, Some(0)))).await;
            ctx.fences.release(claim);
            return;
        }
    };
    ctx.count_replicas();
    let n_down = targets.len();
    let mut down = None;
    if !targets.is_empty() {
        match open_pipeline(block, &targets, &client, recovery.clone()).await {
            Ok(p) => down = Some(p),
            Err(se) => {
                ctx.metrics.write_errors_total.inc();
                tracing::info!(
                    "block {}: downstream pipeline setup failed at {}: {}",
                    block.id,
                    targets[se.bad_node.min(n_down - 1)].id,
                    se.error
                );
                // A fresh replica holds nothing yet: don't leave it behind.
                if recovery.is_none() {
                    let _ = claim.run(|| ctx.store.delete(block.id));
                    ctx.count_replicas();
                }
                let reply = Reply::err(&se.error, Some(se.bad_node as u32 + 1));
                let _ = timed("reply", write_frame(&mut up_w, &reply)).await;
                ctx.fences.release(claim);
                return;
            }
        }
    }
    if let Err(e) = timed("reply", write_frame(&mut up_w, &Reply::ok())).await {
        tracing::debug!("writer went away before the pipeline started: {e}");
        ctx.fences.release(claim);
        return;
    }
    let (down_tx, down_rx) = match down {
        Some((tx, rx)) => (Some(tx), Some(rx)),
        None => (None, None),
    };
    let (disk_tx, disk_rx) = mpsc::channel(DISK_QUEUE);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let disk = DiskWriter {
        ctx: ctx.clone(),
        claim,
        block,
        writer: Some(writer),
    };
    let disk = tokio::task::spawn_blocking(move || disk.run(disk_rx, done_tx));
    let ((), (), claim) = tokio::join!(
        receive(block, up_r, down_tx, disk_tx),
        respond(up_w, down_rx, n_down, done_rx),
        disk,
    );
    match claim {
        Ok(claim) => ctx.fences.release(claim),
        Err(e) => tracing::error!("block {}: the disk writer failed: {e}", block.id),
    }
}

/// Packets waiting for the disk (2 MiB at 64 KiB each): the receiver
/// forwards ahead of the disk by this much at most.
const DISK_QUEUE: usize = 32;

/// At most this much data goes to the disk in one vectored write.
const DISK_BATCH: usize = 1 << 20;

/// One packet's outcome here, for the responder.
struct Done {
    seqno: u64,
    last: bool,
    status: Status,
    /// Still forwarding: an ack from downstream will come for this packet.
    forwarded: bool,
}

/// Reads packets from upstream, forwards each downstream at once (so the
/// next datanode works while we do) and queues it for the disk writer.
async fn receive(
    block: BlockRec,
    mut up: BufReader<OwnedReadHalf>,
    mut down: Option<PipelineTx>,
    to_disk: mpsc::Sender<(Packet, bool)>,
) {
    loop {
        // Nothing more buffered from upstream: push what we forwarded on
        // before waiting (a writer may be waiting for its acks).
        if up.buffer().is_empty() {
            if let Some(d) = &mut down {
                if let Err(e) = d.flush().await {
                    tracing::info!("block {}: lost the downstream datanode: {e}", block.id);
                    down = None;
                }
            }
        }
        let read = tokio::select! {
            r = timed("read a packet", read_packet(&mut up)) => r,
            // The disk writer refused a packet: the connection ends here.
            () = to_disk.closed() => return,
        };
        let p = match read {
            Ok(p) => p,
            Err(_) if to_disk.is_closed() => return,
            Err(e) => {
                // The writer (or the node upstream) is gone; the disk
                // writer stores what is queued, then counts it.
                tracing::debug!("block {}: reading from upstream: {e}", block.id);
                return;
            }
        };
        // `send` flushes: the packet that stops us (the last, or one the
        // disk refuses) reaches downstream, so its ack tells how every node
        // took it.
        if let Some(d) = &mut down {
            if let Err(e) = d.send(&p).await {
                tracing::info!("block {}: lost the downstream datanode: {e}", block.id);
                down = None;
            }
        }
        let last = p.last;
        // The disk writer stopped (it refused a packet) or the block is
        // complete.
        if to_disk.send((p, down.is_some())).await.is_err() || last {
            return;
        }
    }
}

/// The disk side of a write, on a blocking thread: verifies and appends
/// what the receiver queued, as many packets at once as are waiting (one
/// vectored `O_DIRECT` write for all of them when they are aligned), and
/// finalizes the replica before it hands the `last` packet to the
/// responder. Gives the claim back when done.
struct DiskWriter {
    ctx: Arc<XceiverCtx>,
    claim: Claim,
    block: BlockRec,
    writer: Option<RbwWriter>,
}

impl DiskWriter {
    fn run(
        mut self,
        mut queue: mpsc::Receiver<(Packet, bool)>,
        done: mpsc::UnboundedSender<Done>,
    ) -> Claim {
        let mut batch: Vec<(Packet, bool)> = Vec::new();
        loop {
            let Some(first) = queue.blocking_recv() else {
                // The queue ended before the last packet: the receiver lost
                // its upstream. The rbw replica stays for pipeline or lease
                // recovery.
                self.ctx.metrics.write_errors_total.inc();
                tracing::info!(
                    "block {}: writer went away mid-block; keeping the partial replica",
                    self.block.id
                );
                break;
            };
            batch.clear();
            let mut bytes = first.0.data.len();
            batch.push(first);
            while !batch[batch.len() - 1].0.last && bytes < DISK_BATCH {
                match queue.try_recv() {
                    Ok(next) => {
                        bytes += next.0.data.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            let statuses = self.store(&batch);
            for ((p, forwarded), status) in batch.iter().zip(statuses) {
                let stop = p.last || status != Status::Ok;
                if stop {
                    // Before the ack can go out: the receiver must know the
                    // connection ends here when upstream hangs up on it.
                    queue.close();
                }
                let d = Done {
                    seqno: p.seqno,
                    last: p.last,
                    status,
                    forwarded: *forwarded,
                };
                // The responder stopped (an error went upstream) or the
                // block is complete.
                if done.send(d).is_err() || stop {
                    return self.claim;
                }
            }
        }
        self.claim
    }

    /// Verifies and appends a batch (finalizing on the last packet): one
    /// status per packet, `Ok` up to the first refused one.
    fn store(&mut self, batch: &[(Packet, bool)]) -> Vec<Status> {
        let ctx = &*self.ctx;
        let id = self.block.id;
        let writer = &mut self.writer;
        let pieces: Vec<Piece<'_>> = batch
            .iter()
            .map(|(p, _)| Piece {
                offset: p.offset,
                data: &p.data,
                sums: &p.sums,
            })
            .collect();
        let stored = self.claim.run(|| -> (usize, FsResult<Option<BlockRec>>) {
            let Some(w) = writer.as_mut() else {
                return (
                    0,
                    Err(FsError::invalid(format!(
                        "block {id}: a packet after the last one"
                    ))),
                );
            };
            let (good, res) = w.append_all(&pieces);
            if let Err(e) = res {
                return (good, Err(e));
            }
            if !batch[batch.len() - 1].0.last {
                return (good, Ok(None));
            }
            let w = writer.take().expect("writer checked above");
            (good, ctx.store.finalize(w, ctx.sync_on_close).map(Some))
        });
        let (good, res) = match stored {
            Some(r) => r,
            None => {
                ctx.metrics.write_errors_total.inc();
                tracing::info!("block {id}: a newer pipeline or a recovery took the block over");
                return vec![Status::Error; batch.len()];
            }
        };
        let bytes: usize = pieces[..good].iter().map(|p| p.data.len()).sum();
        ctx.metrics.bytes_written_total.inc_by(bytes as u64);
        let mut statuses = vec![Status::Ok; good];
        match res {
            Ok(finalized) => {
                if let Some(b) = finalized {
                    ctx.metrics.blocks_written_total.inc();
                    tracing::debug!(block = b.id, len = b.len, "replica finalized");
                    ctx.event(Event::Received(b));
                }
            }
            Err(e) => {
                ctx.metrics.write_errors_total.inc();
                if e.code == Code::Io {
                    ctx.suspect_volumes();
                }
                let at = batch.get(good).map_or(0, |(p, _)| p.offset);
                tracing::warn!("block {id}: failed to store the packet at {at}: {e}");
                let status = if e.code == Code::Corrupt {
                    Status::ChecksumError
                } else {
                    Status::Error
                };
                // The finalize failing fails the last packet itself.
                statuses.truncate(good.min(batch.len() - 1));
                statuses.resize(batch.len(), status);
            }
        }
        statuses
    }
}

/// Sends one ack upstream per packet, in order, each with our status and
/// the downstream's. A downstream that died counts as `Error` for the node
/// after us; the nodes after that are unknown and reported `Ok` (the
/// writer blames the first failure).
async fn respond(
    mut up: BufWriter<OwnedWriteHalf>,
    mut down: Option<PipelineRx>,
    n_down: usize,
    mut done: mpsc::UnboundedReceiver<Done>,
) {
    while let Some(d) = done.recv().await {
        let mut statuses = Vec::with_capacity(1 + n_down);
        statuses.push(d.status);
        if n_down > 0 {
            let mut theirs = None;
            if let (true, Some(rx)) = (d.forwarded, &mut down) {
                match rx.next_ack().await {
                    Ok(a) if a.seqno == d.seqno && a.statuses.len() == n_down => {
                        theirs = Some(a.statuses)
                    }
                    Ok(a) => tracing::warn!(
                        "downstream acked packet {} with {} statuses, expected packet {} with {n_down}",
                        a.seqno,
                        a.statuses.len(),
                        d.seqno
                    ),
                    Err(e) => tracing::info!("lost the downstream datanode: {e}"),
                }
            }
            match theirs {
                Some(s) => statuses.extend(s),
                None => {
                    down = None;
                    statuses.push(Status::Error);
                    statuses.resize(1 + n_down, Status::Ok);
                }
            }
        }
        let stop = d.last || statuses.iter().any(|s| *s != Status::Ok);
        let ack = Ack {
            seqno: d.seqno,
            statuses,
        };
        if let Err(e) = timed("send an ack", write_ack(&mut up, &ack)).await {
            tracing::debug!("writer went away: {e}");
            return;
        }
        if stop {
            return;
        }
    }
}

// ---- ReadBlock ----

/// Opens a replica for reading up to what is visible now (a replica being
/// written grows while we read; we stop where it was at the start).
fn open_for_read(store: &BlockStore, block: &BlockRec) -> FsResult<BlockReader> {
    let (replica, visible) = store.visible_len(block.id)?;
    let mut r = store.open_read(block)?;
    if replica.state == ReplicaState::Rbw {
        r.len = visible;
    }
    Ok(r)
}

async fn read_block(
    ctx: &XceiverCtx,
    mut w: BufWriter<OwnedWriteHalf>,
    block: BlockRec,
    offset: u64,
    len: u64,
) {
    let opened = open_for_read(&ctx.store, &block).and_then(|r| {
        if offset > r.len {
            return Err(FsError::invalid(format!(
                "offset {offset} is past the end of block {} ({} bytes)",
                block.id, r.len
            )));
        }
        Ok(r)
    });
    let reader = match opened {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.read_errors_total.inc();
            if e.code == Code::Io {
                ctx.suspect_volumes();
            }
            tracing::debug!("refused a read of block {}: {e}", block.id);
            let _ = timed("reply", write_frame(&mut w, &Reply::err(&e, None))).await;
            return;
        }
    };
    if timed("reply", write_frame(&mut w, &Reply::ok()))
        .await
        .is_err()
    {
        return;
    }
    match send_range(ctx, &mut w, reader, offset, len).await {
        Ok(()) => ctx.metrics.blocks_read_total.inc(),
        // A reader that had enough and hung up is normal (a seek, a head).
        Err(SendError::Peer(e)) => tracing::debug!("reader of block {} went away: {e}", block.id),
        Err(SendError::Local(e)) => {
            ctx.metrics.read_errors_total.inc();
            ctx.suspect_volumes();
            tracing::warn!("failed to read block {}: {e}", block.id);
        }
    }
}

enum SendError {
    Local(FsError),
    Peer(io::Error),
}

/// Packets read ahead of the socket (2 MiB at 64 KiB each).
const READ_AHEAD: usize = 32;

/// Streams `[offset, offset + len)` (clipped to the replica) as packets of
/// whole chunks with their stored checksums; the reader verifies them. A
/// blocking thread reads ahead, a window at a time (see
/// `BlockReader::read_raw`), while this task sends. (Two threads keeping
/// two reads in flight measured no faster on the benchmark disk.)
async fn send_range(
    ctx: &XceiverCtx,
    w: &mut BufWriter<OwnedWriteHalf>,
    reader: BlockReader,
    offset: u64,
    len: u64,
) -> Result<(), SendError> {
    let end = offset.saturating_add(len).min(reader.len);
    let mut head = Vec::with_capacity(PACKET / CHUNK * 4 + 64);
    if offset >= end {
        let p = Packet::new(0, offset, Bytes::new(), true);
        return send_packet(w, &mut head, &p).await.map_err(SendError::Peer);
    }
    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    // Stops at its next packet once `rx` is gone (the reader hung up).
    tokio::task::spawn_blocking(move || read_ahead(reader, offset, end, tx));
    while let Some(p) = rx.recv().await {
        let p: Packet = p.map_err(SendError::Local)?;
        ctx.metrics.bytes_read_total.inc_by(p.data.len() as u64);
        send_packet(w, &mut head, &p)
            .await
            .map_err(SendError::Peer)?;
    }
    Ok(())
}

/// Reads `[offset, end)` window by window and cuts it into packets.
fn read_ahead(mut reader: BlockReader, offset: u64, end: u64, tx: mpsc::Sender<FsResult<Packet>>) {
    let mut pos = offset;
    let mut seqno = 0;
    while pos < end {
        let want = (end - pos).min(READ_WINDOW as u64) as usize;
        let (start, data, sums) = match reader.read_raw(pos, want) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        for off in (0..data.len()).step_by(PACKET) {
            let n = PACKET.min(data.len() - off);
            let p = Packet {
                seqno,
                offset: start + off as u64,
                last: start + (off + n) as u64 >= end,
                sums: sums[off / CHUNK..(off + n).div_ceil(CHUNK)].to_vec(),
                data: data.slice(off..off + n),
            };
            seqno += 1;
            if tx.blocking_send(Ok(p)).is_err() {
                return;
            }
        }
        pos = start + data.len() as u64;
    }
}

/// Header and checksums through the write buffer, the data straight to the
/// socket in the same vectored write (no copy of it here).
async fn send_packet(
    w: &mut BufWriter<OwnedWriteHalf>,
    head: &mut Vec<u8>,
    p: &Packet,
) -> io::Result<()> {
    head.clear();
    p.encode_head(head);
    timed("send a packet", w.flush()).await?;
    let mut bufs = [io::IoSlice::new(head), io::IoSlice::new(&p.data)];
    let mut rest = &mut bufs[..];
    while !rest.is_empty() {
        let n = timed("send a packet", w.get_mut().write_vectored(rest)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

// ---- Replication (a namenode command) ----

/// Copies a finalized replica through a pipeline of `targets`, as a writer
/// would, with the stored checksums. Each chunk is checked before it
/// leaves: a bad local copy is reported (`Event::Corrupt`) and not spread.
pub(crate) async fn replicate(
    ctx: &XceiverCtx,
    block: BlockRec,
    targets: &[Target],
) -> FsResult<()> {
    let replica = ctx.store.get(block.id).ok_or_else(|| {
        FsError::new(
            Code::FileNotFound,
            format!("block {} is not here", block.id),
        )
    })?;
    if replica.state != ReplicaState::Finalized {
        return Err(FsError::invalid(format!(
            "block {} is still being written here",
            block.id
        )));
    }
    let mut reader = ctx.store.open_read(&block)?;
    if reader.len != block.len {
        return Err(FsError::invalid(format!(
            "block {}: the replica here holds {} bytes, the namenode expects {}",
            block.id, reader.len, block.len
        )));
    }
    let len = reader.len;
    let (mut tx, mut rx) = open_pipeline(block, targets, "", None)
        .await
        .map_err(|se| {
            let who = targets.get(se.bad_node).map_or("?", |t| t.id.as_str());
            FsError::new(se.error.code, format!("target {who}: {}", se.error))
        })?;
    let last_seqno = len.div_ceil(PACKET as u64);
    let peer = |e: io::Error| FsError::new(Code::Unavailable, format!("pipeline: {e}"));
    let send = async {
        let mut pos = 0;
        let mut seqno = 0;
        while pos < len {
            let n = (len - pos).min(PACKET as u64) as usize;
            let (start, data, sums) = reader.read_raw(pos, n)?;
            if let Err(e) = verify_chunks(&format!("block {}: ", block.id), start, &data, &sums) {
                ctx.event(Event::Corrupt {
                    block,
                    reason: e.message.clone(),
                });
                return Err(e);
            }
            pos = start + data.len() as u64;
            let p = Packet {
                seqno,
                offset: start,
                last: false,
                sums,
                data,
            };
            tx.send(&p).await.map_err(peer)?;
            seqno += 1;
        }
        tx.send(&Packet::new(seqno, len, Bytes::new(), true))
            .await
            .map_err(peer)
    };
    let acks = async {
        loop {
            let a = rx.next_ack().await.map_err(peer)?;
            if let Some(i) = a.first_bad() {
                let who = targets.get(i).map_or("?", |t| t.id.as_str());
                return Err(FsError::new(
                    Code::Io,
                    format!(
                        "target {who} failed packet {}: {:?}",
                        a.seqno, a.statuses[i]
                    ),
                ));
            }
            if a.seqno >= last_seqno {
                return Ok(());
            }
        }
    };
    tokio::try_join!(send, acks)?;
    ctx.metrics.bytes_read_total.inc_by(len);
    Ok(())
}

/// Reads `[offset, offset + len)` of a block from a datanode (the client
/// does this too, with more care): the bytes, verified.
#[cfg(test)]
pub(crate) async fn read_remote(
    addr: &str,
    block: BlockRec,
    offset: u64,
    len: u64,
) -> FsResult<Vec<u8>> {
    use crate::transfer::{read_frame, send_op};
    let io = |e: io::Error| crate::error::io(addr, e);
    let s = crate::transfer::connect(addr).await.map_err(io)?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let op = Op::ReadBlock {
        block,
        offset,
        len,
        client: "test".into(),
    };
    send_op(&mut w, &op).await.map_err(io)?;
    let reply: Reply = read_frame(&mut r).await.map_err(io)?;
    reply.into_result()?;
    let mut out = Vec::new();
    let mut expect = 0;
    loop {
        let p = read_packet(&mut r).await.map_err(io)?;
        assert_eq!(p.seqno, expect, "packets in order");
        expect += 1;
        p.verify()?;
        let lo = offset.max(p.offset);
        let hi = (offset + len).min(p.offset + p.data.len() as u64);
        if hi > lo {
            out.extend_from_slice(&p.data[(lo - p.offset) as usize..(hi - p.offset) as usize]);
        }
        if p.last {
            return Ok(out);
        }
    }
}
