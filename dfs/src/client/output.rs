//! Writing a file: bytes are cut into packets (64 KiB, a CRC32C per 512
//! bytes) and streamed through a pipeline of datanodes, one block at a
//! time; acknowledgements come back on the same connection and are read by
//! a task of their own. Packets stay queued until every node acknowledged
//! them.
//!
//! When a node fails (an error status in an ack, or a broken connection),
//! the writer rebuilds the pipeline from the survivors: the namenode hands
//! out a new generation stamp (so the failed node's copy becomes stale),
//! the survivors reopen their replicas at that stamp cut to the bytes that
//! were acknowledged, the namenode learns the new pipeline, and the queued
//! packets are sent again. Only when no node is left does the write fail.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hstack_proto::dfs as pb;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::retry::Repeat;
use super::DfsClient;
use crate::error::{Code, FsError, FsResult};
use crate::namespace::BlockRec;
use crate::transfer::{self, Packet, PipelineRx, PipelineTx, Recovery, Target};

/// Packets in flight (unacknowledged) at most per pipeline.
const MAX_IN_FLIGHT: usize = 64;
/// Attempts to get a block whose pipeline can be set up.
const BLOCK_ATTEMPTS: usize = 4;

#[derive(Default)]
struct Acks {
    /// Sent, not yet acknowledged by every node, in order.
    unacked: VecDeque<Packet>,
    /// Bytes of the block every node acknowledged.
    acked: u64,
    /// The pipeline broke: (index of the node to blame, why).
    failed: Option<(usize, String)>,
}

struct Shared {
    acks: Mutex<Acks>,
    changed: Notify,
}

/// The block being written and its pipeline.
struct BlockOut {
    block: BlockRec,
    nodes: Vec<pb::DatanodeInfo>,
    tx: PipelineTx,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    /// Bytes of the block handed to the pipeline.
    sent: u64,
    seqno: u64,
}

pub struct FileWriter {
    client: DfsClient,
    path: String,
    inode: u64,
    block_size: u64,
    buf: BytesMut,
    cur: Option<BlockOut>,
    /// The last block finished (its final length), for addBlock/complete.
    prev: Option<BlockRec>,
    written: u64,
    closed: bool,
    /// Pipeline rebuilds so far (for tests and progress).
    pub recoveries: u32,
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Acks> {
    s.acks.lock().expect("ack state lock")
}

fn targets(nodes: &[pb::DatanodeInfo]) -> Vec<Target> {
    nodes
        .iter()
        .map(|n| Target {
            id: n.id.clone(),
            addr: n.transfer_addr.clone(),
        })
        .collect()
}

/// Reads acks until the block's last packet is acknowledged or the
/// pipeline breaks.
async fn read_acks(mut rx: PipelineRx, shared: Arc<Shared>) {
    loop {
        let res = rx.next_ack().await;
        let mut a = lock(&shared);
        let done = match res {
            Ok(ack) => match ack.first_bad() {
                Some(bad) => {
                    a.failed = Some((
                        bad,
                        format!(
                            "datanode {bad} of the pipeline reported {:?}",
                            ack.statuses[bad]
                        ),
                    ));
                    true
                }
                None => match a.unacked.front() {
                    Some(p) if p.seqno == ack.seqno => {
                        let p = a.unacked.pop_front().expect("front");
                        a.acked = p.offset + p.data.len() as u64;
                        p.last
                    }
                    _ => {
                        a.failed = Some((0, format!("unexpected ack for packet {}", ack.seqno)));
                        true
                    }
                },
            },
            // The head is gone (a node further down would have been named
            // in an ack by the head).
            Err(e) => {
                a.failed = Some((0, format!("lost the pipeline's first datanode: {e}")));
                true
            }
        };
        drop(a);
        shared.changed.notify_waiters();
        if done {
            return;
        }
    }
}

impl FileWriter {
    pub(crate) fn new(client: DfsClient, st: pb::FileStatus) -> Self {
        Self {
            client,
            path: st.path,
            inode: st.inode_id,
            block_size: st.block_size,
            buf: BytesMut::with_capacity(transfer::PACKET),
            cur: None,
            prev: None,
            written: 0,
            closed: false,
            recoveries: 0,
        }
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub async fn write(&mut self, mut data: &[u8]) -> FsResult<()> {
        if self.closed {
            return Err(FsError::invalid(format!("{}: already closed", self.path)));
        }
        while !data.is_empty() {
            if self.cur.is_none() {
                self.start_block().await?;
            }
            let cur = self.cur.as_ref().expect("started");
            let room_block = self.block_size - cur.sent - self.buf.len() as u64;
            let room_packet = transfer::PACKET - self.buf.len();
            let n = data.len().min(room_packet).min(room_block as usize);
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.written += n as u64;
            if self.buf.len() == transfer::PACKET || n as u64 == room_block {
                self.flush_packet(false).await?;
            }
            let cur = self.cur.as_ref().expect("started");
            if cur.sent == self.block_size {
                self.end_block().await?;
            }
        }
        Ok(())
    }

    /// Finishes the file: the last packets, the last block, and the
    /// namenode's complete (retried until the last block is reported).
    pub async fn close(mut self) -> FsResult<()> {
        self.finish().await
    }

    async fn finish(&mut self) -> FsResult<()> {
        if self.closed {
            return Ok(());
        }
        if !self.buf.is_empty() {
            if self.cur.is_none() {
                self.start_block().await?;
            }
            self.flush_packet(false).await?;
        }
        if self.cur.is_some() {
            self.end_block().await?;
        }
        let mut patience = Patience::new();
        loop {
            let req = pb::CompleteRequest {
                caller: self.client.caller(),
                path: self.path.clone(),
                inode_id: self.inode,
                last: self.prev.map(pb::Block::from),
            };
            // A retry of a complete that succeeded succeeds again.
            let done = self
                .client
                .call(
                    &format!("close {}", self.path),
                    Repeat::Idempotent,
                    |mut nn| {
                        let req = req.clone();
                        async move { nn.complete(req).await }
                    },
                )
                .await?
                .complete;
            if done {
                self.closed = true;
                self.client.writer_closed();
                return Ok(());
            }
            if !patience.pause().await {
                return Err(FsError::new(
                    Code::NotReplicatedYet,
                    format!(
                        "{}: the namenode did not see the last block's replicas in time; the file is not closed",
                        self.path
                    ),
                ));
            }
        }
    }

    /// AddBlock, retried while the namenode has not yet heard of the
    /// previous block from any datanode (`NotReplicatedYet`).
    async fn add_block(&self, excluded: &[String]) -> FsResult<pb::LocatedBlock> {
        let mut patience = Patience::new();
        loop {
            let req = pb::AddBlockRequest {
                caller: self.client.caller(),
                path: self.path.clone(),
                inode_id: self.inode,
                previous: self.prev.map(pb::Block::from),
                excluded: excluded.to_vec(),
            };
            let r = self
                .client
                .call(
                    &format!("add a block to {}", self.path),
                    Repeat::AtMostOnce,
                    |mut nn| {
                        let req = req.clone();
                        async move { nn.add_block(req).await }
                    },
                )
                .await;
            match r {
                Ok(lb) => return Ok(lb),
                Err(e) => {
                    if e.code != Code::NotReplicatedYet || !patience.pause().await {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Asks for a block and opens its pipeline; nodes that fail to set up
    /// are excluded and the block abandoned for another.
    async fn start_block(&mut self) -> FsResult<()> {
        let mut excluded: Vec<String> = Vec::new();
        let mut last_err = None;
        for _ in 0..BLOCK_ATTEMPTS {
            let lb = self.add_block(&excluded).await?;
            let block = crate::wire::block(lb.block)?;
            match transfer::open_pipeline(
                block,
                &targets(&lb.locs),
                self.client.client_name(),
                None,
            )
            .await
            {
                Ok((tx, rx)) => {
                    self.cur = Some(BlockOut::start(block, lb.locs, tx, rx, 0));
                    return Ok(());
                }
                Err(e) => {
                    let bad = lb.locs[e.bad_node.min(lb.locs.len() - 1)].id.clone();
                    tracing::warn!(block = block.id, datanode = %bad, "pipeline setup failed: {}", e.error);
                    excluded.push(bad);
                    last_err = Some(e.error);
                    let req = pb::AbandonBlockRequest {
                        caller: self.client.caller(),
                        path: self.path.clone(),
                        inode_id: self.inode,
                        block: Some(pb::Block::from(block)),
                    };
                    self.client
                        .call(
                            &format!("abandon block {}", block.id),
                            Repeat::AtMostOnce,
                            |mut nn| {
                                let req = req.clone();
                                async move { nn.abandon_block(req).await }
                            },
                        )
                        .await?;
                }
            }
        }
        Err(FsError::new(
            Code::Unavailable,
            format!(
                "{}: could not set up a pipeline for a new block (excluded {}): {}",
                self.path,
                excluded.join(", "),
                last_err.map(|e| e.message).unwrap_or_default()
            ),
        ))
    }

    /// Sends the buffered bytes as one packet (or an empty `last` one).
    async fn flush_packet(&mut self, last: bool) -> FsResult<()> {
        let data: Bytes = self.buf.split().freeze();
        let cur = self.cur.as_mut().expect("a block is open");
        let p = Packet::new(cur.seqno, cur.sent, data, last);
        cur.seqno += 1;
        cur.sent += p.data.len() as u64;
        // Wait for room in the window, or a failure.
        loop {
            let notified = cur.shared.changed.notified();
            {
                let a = lock(&cur.shared);
                if a.failed.is_some() || a.unacked.len() < MAX_IN_FLIGHT {
                    break;
                }
            }
            notified.await;
        }
        if lock(&cur.shared).failed.is_some() {
            // `recover` sends `p` after what is queued.
            return self.recover(Some(p)).await;
        }
        lock(&cur.shared).unacked.push_back(p.clone());
        if cur.tx.send(&p).await.is_err() {
            // The ack reader says whom to blame; `p` is queued.
            self.recover(None).await?;
        }
        Ok(())
    }

    /// Ends the current block: every data packet acknowledged first, then
    /// an empty last packet and its ack. Waiting first, as HDFS does, means
    /// a datanode finalizes a replica only after the writer holds an ack
    /// for all of its bytes: a pipeline rebuilt after that never has to cut
    /// a finalized replica (which datanodes refuse), only re-stamp it.
    async fn end_block(&mut self) -> FsResult<()> {
        if !self.buf.is_empty() {
            self.flush_packet(false).await?;
        }
        self.wait_acked().await?;
        self.flush_packet(true).await?;
        self.wait_acked().await?;
        let cur = self.cur.take().expect("a block is open");
        cur.reader.abort();
        self.prev = Some(BlockRec {
            len: cur.sent,
            ..cur.block
        });
        Ok(())
    }

    /// Until every packet sent is acknowledged, rebuilding the pipeline
    /// as often as it fails.
    async fn wait_acked(&mut self) -> FsResult<()> {
        loop {
            let shared = self.cur.as_ref().expect("a block is open").shared.clone();
            let notified = shared.changed.notified();
            let (empty, failed) = {
                let a = lock(&shared);
                (a.unacked.is_empty(), a.failed.is_some())
            };
            if empty && !failed {
                break;
            }
            if failed {
                self.recover(None).await?;
                continue;
            }
            notified.await;
        }
        Ok(())
    }

    /// Rebuilds the pipeline from the nodes that did not fail and resends
    /// what they have not all acknowledged (`pending` is a packet that was
    /// never queued, sent after the rest).
    async fn recover(&mut self, pending: Option<Packet>) -> FsResult<()> {
        let mut cur = self.cur.take().expect("a block is open");
        // Let the ack reader finish so its verdict is final (a live head
        // names the node after it that failed).
        let _ = cur.tx.flush().await;
        if tokio::time::timeout(Duration::from_secs(5), &mut cur.reader)
            .await
            .is_err()
        {
            cur.reader.abort();
        }
        let (blame, why, acked, mut queue) = {
            let mut a = lock(&cur.shared);
            let (blame, why) = a.failed.take().unwrap_or((0, "connection lost".into()));
            (blame, why, a.acked, std::mem::take(&mut a.unacked))
        };
        queue.extend(pending);
        let mut nodes = cur.nodes.clone();
        let mut blame = blame.min(nodes.len().saturating_sub(1));
        let mut why = why;
        let old = cur.block;
        loop {
            let gone = nodes.remove(blame);
            tracing::warn!(
                path = %self.path,
                block = old.id,
                datanode = %gone.id,
                "rebuilding the write pipeline without a failed datanode: {why}"
            );
            if nodes.is_empty() {
                return Err(FsError::new(
                    Code::Unavailable,
                    format!(
                        "{}: every datanode of the pipeline for block {} failed (last: {why})",
                        self.path, old.id
                    ),
                ));
            }
            let req = pb::UpdateBlockForPipelineRequest {
                caller: self.client.caller(),
                block: Some(pb::Block::from(cur.block)),
            };
            // A second call only skips a generation stamp.
            let lb = self
                .client
                .call(
                    &format!("new generation stamp for block {}", cur.block.id),
                    Repeat::Idempotent,
                    |mut nn| {
                        let req = req.clone();
                        async move { nn.update_block_for_pipeline(req).await }
                    },
                )
                .await?;
            let new = BlockRec {
                len: acked,
                ..crate::wire::block(lb.block)?
            };
            let recovery = Recovery {
                min_gen_stamp: old.gen_stamp,
                from: acked,
            };
            match transfer::open_pipeline(
                new,
                &targets(&nodes),
                self.client.client_name(),
                Some(recovery),
            )
            .await
            {
                Ok((tx, rx)) => {
                    let req = pb::UpdatePipelineRequest {
                        caller: self.client.caller(),
                        old_block: Some(pb::Block::from(cur.block)),
                        new_block: Some(pb::Block::from(new)),
                        new_nodes: nodes.iter().map(|n| n.id.clone()).collect(),
                    };
                    self.client
                        .call(
                            &format!("update the pipeline of block {}", cur.block.id),
                            Repeat::AtMostOnce,
                            |mut nn| {
                                let req = req.clone();
                                async move { nn.update_pipeline(req).await }
                            },
                        )
                        .await?;
                    let mut next = BlockOut::start(new, nodes, tx, rx, acked);
                    next.sent = cur.sent;
                    next.seqno = cur.seqno;
                    self.recoveries += 1;
                    // Resend in order. Everything is queued first: if the
                    // pipeline breaks again, the next recovery resends it.
                    lock(&next.shared).unacked.extend(queue.iter().cloned());
                    for p in &queue {
                        if next.tx.send(p).await.is_err() {
                            break;
                        }
                    }
                    self.cur = Some(next);
                    return Ok(());
                }
                Err(e) => {
                    cur.block = new;
                    blame = e.bad_node.min(nodes.len() - 1);
                    why = e.error.message;
                }
            }
        }
    }
}

impl BlockOut {
    fn start(
        block: BlockRec,
        nodes: Vec<pb::DatanodeInfo>,
        tx: PipelineTx,
        rx: PipelineRx,
        acked: u64,
    ) -> Self {
        let shared = Arc::new(Shared {
            acks: Mutex::new(Acks {
                acked,
                ..Acks::default()
            }),
            changed: Notify::new(),
        });
        let reader = tokio::spawn(read_acks(rx, shared.clone()));
        Self {
            block,
            nodes,
            tx,
            shared,
            reader,
            sent: acked,
            seqno: 0,
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if let Some(cur) = &self.cur {
            cur.reader.abort();
        }
        if !self.closed {
            // Abandoned without close: the lease expires and the namenode
            // recovers the file.
            self.client.writer_closed();
        }
    }
}

/// Waiting for the namenode to hear from the datanodes: 5 ms, doubling to
/// 500 ms, 40 times (about 17 s in all).
struct Patience {
    wait: Duration,
    left: u32,
}

impl Patience {
    fn new() -> Self {
        Self {
            wait: Duration::from_millis(5),
            left: 40,
        }
    }

    /// Sleeps before the next try; false once patience ran out.
    async fn pause(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Duration::from_millis(500));
        true
    }
}
