//! Reading a file: block locations come from the namenode, nearest replica
//! first; bytes come straight from a datanode, and every chunk is checked
//! against its CRC32C here, at the reader. A replica that fails (refused
//! connection, short read, bad checksum) is skipped for the next one, and a
//! bad checksum is reported to the namenode so the replica gets replaced.
//!
//! A replica on this host is read from its files (short-circuit, see
//! `local`) when its datanode offers a socket for that and the client has
//! not turned it off. Anything going wrong there other than a bad checksum
//! (no socket, a refusal, a revocation, an I/O error) makes the reader go
//! on through that datanode's transfer port from where it was.

use std::collections::HashSet;

use bytes::Bytes;
use hstack_proto::dfs as pb;
use tokio::io::BufReader;
use tokio::net::tcp::OwnedReadHalf;

use super::local::LocalBlock;
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

/// Where the current block's bytes come from.
enum Source {
    Tcp(BlockIn),
    Local(LocalBlock),
}

impl Source {
    fn block(&self) -> BlockRec {
        match self {
            Source::Tcp(t) => t.block,
            Source::Local(l) => l.block,
        }
    }

    fn node(&self) -> &pb::DatanodeInfo {
        match self {
            Source::Tcp(t) => &t.node,
            Source::Local(l) => &l.node,
        }
    }
}

pub struct FileReader {
    client: DfsClient,
    path: String,
    len: u64,
    blocks: Vec<pb::LocatedBlock>,
    pos: u64,
    cur: Option<Source>,
    /// File offset where the current block ends.
    cur_end: u64,
    /// Replicas that failed us, per block id.
    failed: HashSet<(u64, String)>,
    /// Replicas whose short-circuit read failed (not their data): read
    /// through the transfer port.
    no_local: HashSet<(u64, String)>,
    short_circuit: bool,
    /// Corrupt replicas found (reported to the namenode).
    pub corrupt_found: u32,
    /// Bytes returned that were read from replica files on this host
    /// (short-circuit) and through transfer ports.
    pub bytes_local: u64,
    pub bytes_tcp: u64,
}

impl FileReader {
    pub(crate) async fn open(client: DfsClient, path: &str) -> FsResult<Self> {
        let lbs = client.block_locations(path, 0, 0).await?;
        Ok(Self {
            path: path.to_string(),
            len: lbs.file_len,
            blocks: lbs.blocks,
            pos: 0,
            cur: None,
            cur_end: 0,
            failed: HashSet::new(),
            no_local: HashSet::new(),
            short_circuit: client.options().short_circuit,
            client,
            corrupt_found: 0,
            bytes_local: 0,
            bytes_tcp: 0,
        })
    }

    /// Turns short-circuit reads on or off for this reader (from the next
    /// read on; the client's `short_circuit` option is the default).
    pub fn set_short_circuit(&mut self, on: bool) {
        if on != self.short_circuit {
            self.short_circuit = on;
            self.cur = None;
        }
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

    /// The next bytes (at most a packet's worth through a transfer port, a
    /// window of 1 MiB from a replica on this host); `None` at the end.
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
            let end = self.cur_end;
            let cur = self.cur.as_mut().expect("connected");
            let piece = match cur {
                // The replica's stream ended before the block did.
                Source::Tcp(t) if t.done => Err(FsError::new(
                    Code::Io,
                    format!(
                        "block {} on {}: the replica ends at offset {} of {}",
                        t.block.id,
                        t.node.id,
                        t.pos - (t.end - t.block.len),
                        t.block.len
                    ),
                )),
                Source::Tcp(t) => next_piece(t).await,
                Source::Local(l) => match l.next().await {
                    Ok(None) => Err(FsError::new(
                        Code::Io,
                        format!(
                            "block {} on {}: the replica's file ends at offset {} of {}",
                            l.block.id,
                            l.node.id,
                            self.pos - (end - l.block.len),
                            l.block.len
                        ),
                    )),
                    other => other,
                },
            };
            match piece {
                Ok(Some(b)) => {
                    self.pos += b.len() as u64;
                    match cur {
                        Source::Tcp(_) => self.bytes_tcp += b.len() as u64,
                        Source::Local(_) => self.bytes_local += b.len() as u64,
                    }
                    if self.pos >= end {
                        self.cur = None;
                    }
                    if b.is_empty() {
                        continue;
                    }
                    return Ok(Some(b));
                }
                // The last packet, empty: the next turn tells whether the
                // block is done (`pos` reached its end) or the replica short.
                Ok(None) => {
                    if let Source::Tcp(t) = cur {
                        t.done = true;
                    }
                }
                Err(e) => {
                    let cur = self.cur.take().expect("connected");
                    let (block, node) = (cur.block(), cur.node().id.clone());
                    let local = matches!(cur, Source::Local(_));
                    drop(cur);
                    if e.code == Code::Corrupt {
                        tracing::warn!(
                            path = %self.path,
                            block = block.id,
                            datanode = %node,
                            "read failed, trying another replica: {e}"
                        );
                        self.corrupt_found += 1;
                        self.report_bad(block, &node, &e.message).await;
                        self.failed.insert((block.id, node));
                    } else if local {
                        tracing::debug!(
                            path = %self.path,
                            block = block.id,
                            datanode = %node,
                            "short-circuit read failed, going on through the transfer port: {e}"
                        );
                        self.no_local.insert((block.id, node));
                    } else {
                        tracing::warn!(
                            path = %self.path,
                            block = block.id,
                            datanode = %node,
                            "read failed, trying another replica: {e}"
                        );
                        self.failed.insert((block.id, node));
                    }
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

    async fn report_bad(&self, block: BlockRec, datanode: &str, why: &str) {
        let req = pb::ReportBadBlocksRequest {
            blocks: vec![pb::BadBlock {
                block: Some(pb::Block::from(block)),
                datanode: datanode.to_string(),
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
    /// not failed us: through its files if it is on this host (and
    /// short-circuit reads are on), else through its transfer port.
    async fn connect(&mut self) -> FsResult<Source> {
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
        self.cur_end = lb.offset + block.len;
        let in_block = self.pos - lb.offset;
        let mut errors = Vec::new();
        for (node, local) in self.order(&lb.locs).await {
            if self.failed.contains(&(block.id, node.id.clone())) {
                continue;
            }
            if local && !self.no_local.contains(&(block.id, node.id.clone())) {
                let state = self.client.local_state();
                let name = self.client.client_name();
                match LocalBlock::open(state, block, node, in_block, name).await {
                    Ok(l) => {
                        tracing::debug!(
                            block = block.id,
                            datanode = %node.id,
                            "reading a replica on this host from its files"
                        );
                        return Ok(Source::Local(l));
                    }
                    Err(e) if e.code == Code::Corrupt => {
                        tracing::warn!(
                            path = %self.path,
                            block = block.id,
                            datanode = %node.id,
                            "read failed, trying another replica: {e}"
                        );
                        self.corrupt_found += 1;
                        self.report_bad(block, &node.id, &e.message).await;
                        self.failed.insert((block.id, node.id.clone()));
                        errors.push(format!("{}: {}", node.id, e.message));
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(
                            block = block.id,
                            datanode = %node.id,
                            "no short-circuit read, using the transfer port: {e}"
                        );
                        self.no_local.insert((block.id, node.id.clone()));
                    }
                }
            }
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
                    return Ok(Source::Tcp(BlockIn {
                        block,
                        node: node.clone(),
                        r,
                        pos: self.pos,
                        end: lb.offset + block.len,
                        done: false,
                        _w: w,
                    }))
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

    /// The replicas in the order to try, each with whether it can be read
    /// from its files here. Without short-circuit reads: the namenode's
    /// order (nearest first). With them, replicas on this host come first:
    /// the namenode's first if it is on the host the client says it runs
    /// on, else by datanode id, so that a file read again on a host with
    /// several datanodes (a local cluster) is read from the same replicas
    /// and the page cache serves it.
    async fn order<'a>(&self, locs: &'a [pb::DatanodeInfo]) -> Vec<(&'a pb::DatanodeInfo, bool)> {
        let mut out = Vec::with_capacity(locs.len());
        for n in locs {
            let local = self.short_circuit
                && !n.domain_socket_path.is_empty()
                && self.client.local_state().is_local(node_host(n)).await;
            out.push((n, local));
        }
        let declared = &self.client.options().host;
        let first_is_declared = !declared.is_empty()
            && out
                .first()
                .is_some_and(|(n, local)| *local && node_host(n) == declared);
        if self.short_circuit && !first_is_declared {
            // Stable: local ones by id, then the rest in the namenode's order.
            out.sort_by(|(a, la), (b, lb)| match (la, lb) {
                (true, true) => a.id.cmp(&b.id),
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                (false, false) => std::cmp::Ordering::Equal,
            });
        }
        out
    }
}

/// The host a datanode advertises (its transfer address's, if it gave
/// none).
fn node_host(n: &pb::DatanodeInfo) -> &str {
    if !n.host.is_empty() {
        return &n.host;
    }
    n.transfer_addr
        .rsplit_once(':')
        .map_or(n.transfer_addr.as_str(), |(h, _)| h)
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
