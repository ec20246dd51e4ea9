//! Reading a file: block locations come from the namenode, nearest replica
//! first; bytes come straight from a datanode, and every chunk is checked
//! against its CRC32C here, at the reader. A replica that fails (refused
//! connection, short read, bad checksum) is skipped for the next one, and a
//! bad checksum is reported to the namenode so the replica gets replaced.

use std::collections::HashSet;

use bytes::Bytes;
use hstack_proto::dfs as pb;
use tokio::io::BufReader;
use tokio::net::tcp::OwnedReadHalf;

use super::retry::Repeat;
use super::DfsClient;
use crate::error::{Code, FsError, FsResult};
use crate::namespace::BlockRec;
use crate::transfer::{self, Op, Reply};

/// How long a reader waits to report a corrupt replica.
const REPORT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// An open connection streaming one block from one replica.
struct BlockIn {
    block: BlockRec,
    node: pb::DatanodeInfo,
    r: BufReader<OwnedReadHalf>,
    /// The stream is positioned at this file offset.
    pos: u64,
    /// File offset where the block ends.
    end: u64,
    done: bool,
    _w: tokio::net::tcp::OwnedWriteHalf,
}

pub struct FileReader {
    client: DfsClient,
    path: String,
    len: u64,
    blocks: Vec<pb::LocatedBlock>,
    pos: u64,
    cur: Option<BlockIn>,
    /// Replicas that failed us, per block id.
    failed: HashSet<(u64, String)>,
    /// Corrupt replicas found (reported to the namenode).
    pub corrupt_found: u32,
}

impl FileReader {
    pub(crate) async fn open(client: DfsClient, path: &str) -> FsResult<Self> {
        let lbs = client.block_locations(path, 0, 0).await?;
        Ok(Self {
            client,
            path: path.to_string(),
            len: lbs.file_len,
            blocks: lbs.blocks,
            pos: 0,
            cur: None,
            failed: HashSet::new(),
            corrupt_found: 0,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Moves to `pos`; past the end is an error.
    pub fn seek(&mut self, pos: u64) -> FsResult<()> {
        if pos > self.len {
            return Err(FsError::invalid(format!(
                "offset {pos} is past the end of {} ({} bytes)",
                self.path, self.len
            )));
        }
        if pos != self.pos {
            self.cur = None;
            self.pos = pos;
        }
        Ok(())
    }

    /// The next bytes (at most a packet's worth); `None` at the end.
    pub async fn read_chunk(&mut self) -> FsResult<Option<Bytes>> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let mut refreshed = false;
        loop {
            if self.cur.is_none() {
                match self.connect().await {
                    Ok(c) => self.cur = Some(c),
                    Err(e) if !refreshed => {
                        // Replicas may have moved: ask the namenode again.
                        tracing::debug!("re-fetching block locations: {e}");
                        refreshed = true;
                        self.failed.clear();
                        let lbs = self.client.block_locations(&self.path, 0, 0).await?;
                        self.blocks = lbs.blocks;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let cur = self.cur.as_mut().expect("connected");
            let piece = if cur.done {
                // The replica's stream ended before the block did.
                Err(FsError::new(
                    Code::Io,
                    format!(
                        "block {} on {}: the replica ends at offset {} of {}",
                        cur.block.id,
                        cur.node.id,
                        cur.pos - (cur.end - cur.block.len),
                        cur.block.len
                    ),
                ))
            } else {
                next_piece(cur).await
            };
            match piece {
                Ok(Some(b)) => {
                    self.pos += b.len() as u64;
                    if self.pos >= cur.end {
                        self.cur = None;
                    }
                    if b.is_empty() {
                        continue;
                    }
                    return Ok(Some(b));
                }
                // The last packet, empty: the next turn tells whether the
                // block is done (`pos` reached its end) or the replica short.
                Ok(None) => cur.done = true,
                Err(e) => {
                    let cur = self.cur.take().expect("connected");
                    tracing::warn!(
                        path = %self.path,
                        block = cur.block.id,
                        datanode = %cur.node.id,
                        "read failed, trying another replica: {e}"
                    );
                    if e.code == Code::Corrupt {
                        self.corrupt_found += 1;
                        self.report_bad(&cur, &e.message).await;
                    }
                    self.failed.insert((cur.block.id, cur.node.id));
                }
            }
        }
    }

    /// Reads everything from the current position into `out`.
    pub async fn read_to_end(&mut self, out: &mut Vec<u8>) -> FsResult<()> {
        while let Some(b) = self.read_chunk().await? {
            out.extend_from_slice(&b);
        }
        Ok(())
    }

    async fn report_bad(&self, cur: &BlockIn, why: &str) {
        let req = pb::ReportBadBlocksRequest {
            blocks: vec![pb::BadBlock {
                block: Some(pb::Block::from(cur.block)),
                datanode: cur.node.id.clone(),
                reason: why.to_string(),
            }],
            caller: self.client.caller(),
        };
        // Briefly: the read goes on from the next replica, and the
        // scanner or the next reader reports it again. (Not spawned: a
        // command that exits right after the read would drop it.)
        let report = self
            .client
            .call("report a corrupt replica", Repeat::Idempotent, |mut nn| {
                let req = req.clone();
                async move { nn.report_bad_blocks(req).await }
            });
        match tokio::time::timeout(REPORT_PATIENCE, report).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("cannot report a corrupt replica: {e}"),
            Err(_) => tracing::warn!(
                "cannot report a corrupt replica: no answer from the namenode in {REPORT_PATIENCE:?}"
            ),
        }
    }

    /// Connects to the best replica of the block holding `pos` that has
    /// not failed us.
    async fn connect(&mut self) -> FsResult<BlockIn> {
        let lb = self
            .blocks
            .iter()
            .find(|b| {
                b.offset <= self.pos && self.pos < b.offset + b.block.as_ref().map_or(0, |x| x.len)
            })
            .cloned()
            .ok_or_else(|| {
                FsError::new(
                    Code::Io,
                    format!("{}: no block holds offset {}", self.path, self.pos),
                )
            })?;
        let block = crate::wire::block(lb.block)?;
        let mut errors = Vec::new();
        for node in &lb.locs {
            if self.failed.contains(&(block.id, node.id.clone())) {
                continue;
            }
            let in_block = self.pos - lb.offset;
            match open_block(
                block,
                node,
                in_block,
                block.len - in_block,
                self.client.client_name(),
            )
            .await
            {
                Ok((r, w)) => {
                    return Ok(BlockIn {
                        block,
                        node: node.clone(),
                        r,
                        pos: self.pos,
                        end: lb.offset + block.len,
                        done: false,
                        _w: w,
                    })
                }
                Err(e) => {
                    errors.push(format!("{}: {}", node.id, e.message));
                    self.failed.insert((block.id, node.id.clone()));
                }
            }
        }
        Err(FsError::new(
            Code::Unavailable,
            format!(
                "{}: could not obtain block {} (offset {}) from any replica{}",
                self.path,
                block.id,
                lb.offset,
                if errors.is_empty() {
                    " (none is live)".to_string()
                } else {
                    format!(": {}", errors.join("; "))
                }
            ),
        ))
    }
}

async fn open_block(
    block: BlockRec,
    node: &pb::DatanodeInfo,
    offset: u64,
    len: u64,
    client: &str,
) -> FsResult<(BufReader<OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf)> {
    let io =
        |e: std::io::Error| FsError::new(Code::Unavailable, format!("{}: {e}", node.transfer_addr));
    let s = transfer::connect(&node.transfer_addr).await.map_err(io)?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::with_capacity(transfer::PACKET + 4096, r);
    let op = Op::ReadBlock {
        block,
        offset,
        len,
        client: client.to_string(),
    };
    transfer::timed("read setup", transfer::send_op(&mut w, &op))
        .await
        .map_err(io)?;
    let reply: Reply = transfer::timed("read setup", transfer::read_frame(&mut r))
        .await
        .map_err(io)?;
    reply.into_result()?;
    Ok((r, w))
}

/// The next verified bytes of the stream at `cur.pos`; `None` after the
/// last packet.
async fn next_piece(cur: &mut BlockIn) -> FsResult<Option<Bytes>> {
    let p = transfer::timed("read", transfer::read_packet(&mut cur.r))
        .await
        .map_err(|e| {
            FsError::new(
                Code::Unavailable,
                format!("{}: {e}", cur.node.transfer_addr),
            )
        })?;
    p.verify().map_err(|e| {
        FsError::new(
            Code::Corrupt,
            format!("block {} on {}: {}", cur.block.id, cur.node.id, e.message),
        )
    })?;
    if p.last {
        cur.done = true;
    }
    // The packet starts at a chunk boundary at or before our position.
    let block_start = cur.end - cur.block.len;
    let pkt_start = block_start + p.offset;
    let pkt_end = pkt_start + p.data.len() as u64;
    if pkt_start > cur.pos || (pkt_end < cur.pos) {
        return Err(FsError::new(
            Code::Io,
            format!(
                "block {} on {}: packet at {} does not cover offset {}",
                cur.block.id,
                cur.node.id,
                p.offset,
                cur.pos - block_start
            ),
        ));
    }
    let skip = (cur.pos - pkt_start) as usize;
    let data = p.data.slice(skip..);
    cur.pos += data.len() as u64;
    if data.is_empty() && p.last {
        return Ok(None);
    }
    Ok(Some(data))
}
