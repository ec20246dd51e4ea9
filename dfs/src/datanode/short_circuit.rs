//! The datanode's side of short-circuit local reads (protocol:
//! `crate::short_circuit`): a Unix domain socket where a client on this
//! host gets a finalized replica's open files, and the datanode's hold on
//! what it handed out.
//!
//! The datanode keeps control (HDFS's `ShortCircuitRegistry`):
//!
//! - it hands out only a finalized replica, never one being written, nor
//!   one its scanner or a replication found corrupt, and only at the
//!   stamp the reader asks for or newer and with at least the bytes the
//!   reader expects;
//! - every grant is registered against its block until the client closes
//!   the connection. When the replica is deleted, reopened by a recovery
//!   or lost with its directory (`BlockStore::on_release`), or found
//!   corrupt here, each holder gets a `Revoke` frame and the connection
//!   ends; the client goes on through the transfer port.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::metrics::DatanodeMetrics;
use super::XceiverCtx;
use crate::blockstore::{Replica, ReplicaState};
use crate::error::{Code, FsError, FsResult};
use crate::short_circuit::{
    decode_frame, encode_frame, send_with_fds, FdReply, FdRequest, Revoke, MAGIC, VERSION,
};
use crate::transfer::timed;

/// Who holds which replica's descriptors, and which replicas are known
/// corrupt here.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Holders>,
}

#[derive(Default)]
struct Holders {
    next_slot: u64,
    /// Per block id: each holder's slot and where its revocation goes.
    held: HashMap<u64, Vec<(u64, oneshot::Sender<String>)>>,
    corrupt: HashSet<u64>,
}

/// One registered hold; unregistered when dropped.
pub struct Hold {
    registry: Arc<Registry>,
    block: u64,
    slot: u64,
    revoked: oneshot::Receiver<String>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut h = self.registry.lock();
        if let Some(v) = h.held.get_mut(&self.block) {
            v.retain(|(s, _)| *s != self.slot);
            if v.is_empty() {
                h.held.remove(&self.block);
            }
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Holders> {
        self.inner.lock().expect("short-circuit registry lock")
    }

    /// Registers a hold on `block` (before the replica is looked up, so a
    /// change after the look-up revokes it).
    pub fn hold(self: &Arc<Self>, block: u64) -> Hold {
        let (tx, rx) = oneshot::channel();
        let mut h = self.lock();
        h.next_slot += 1;
        let slot = h.next_slot;
        h.held.entry(block).or_default().push((slot, tx));
        Hold {
            registry: self.clone(),
            block,
            slot,
            revoked: rx,
        }
    }

    /// Tells every holder of `block` to stop; how many there were.
    pub fn revoke(&self, block: u64, why: &str) -> usize {
        let holders = self.lock().held.remove(&block).unwrap_or_default();
        let n = holders.len();
        for (_, tx) in holders {
            let _ = tx.send(why.to_string());
        }
        n
    }

    /// The replica here failed its checksums: no more grants, and the
    /// holders stop.
    pub fn mark_corrupt(&self, block: u64) {
        self.lock().corrupt.insert(block);
        self.revoke(block, "the replica is corrupt");
    }

    /// The replica left the index or changed (the store's release hook):
    /// a corrupt mark goes with it, and its holders stop.
    pub fn released(&self, block: u64) {
        self.lock().corrupt.remove(&block);
        self.revoke(block, "the replica was deleted or changed");
    }

    pub fn is_corrupt(&self, block: u64) -> bool {
        self.lock().corrupt.contains(&block)
    }

    /// Grants held now.
    pub fn held(&self) -> usize {
        self.lock().held.values().map(Vec::len).sum()
    }
}

/// The longest path a Unix socket may have (`sun_path` holds 108 bytes,
/// the terminating NUL included).
pub const MAX_SOCKET_PATH: usize = 107;

/// Where the socket goes: `configured` as is if absolute, else under the
/// first data directory; `None` if empty (short-circuit reads off), or if
/// the path under the data directory is too long for a socket (with a
/// warning: the datanode still serves through its transfer port).
pub fn socket_path(configured: &str, first_data_dir: &Path) -> Option<PathBuf> {
    if configured.is_empty() {
        return None;
    }
    let p = Path::new(configured);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        first_data_dir.join(p)
    };
    // The path is announced to clients, which may run elsewhere in the
    // file tree.
    let p = std::path::absolute(&p).unwrap_or(p);
    if p.as_os_str().len() > MAX_SOCKET_PATH {
        tracing::warn!(
            "domain_socket_path: {} is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes); no short-circuit reads (set an absolute domain_socket_path)",
            p.display()
        );
        return None;
    }
    Some(p)
}

/// Binds the socket at `path`, replacing a socket a previous run left
/// there (but nothing else).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Removes the socket file when the server ends.
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves the socket until the task is dropped.
pub async fn serve(listener: UnixListener, path: PathBuf, ctx: Arc<XceiverCtx>) {
    let _unlink = Unlink(path);
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                tokio::spawn(serve_conn(ctx.clone(), sock).in_current_span());
            }
            Err(e) => {
                tracing::warn!("failed to accept a short-circuit connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Counts a grant held for as long as it lives.
struct Open<'a>(&'a DatanodeMetrics);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.short_circuit_open.dec();
    }
}

async fn read_request(s: &mut UnixStream) -> std::io::Result<FdRequest> {
    let mut pre = [0u8; 5];
    s.read_exact(&mut pre).await?;
    if &pre[..4] != MAGIC {
        return Err(crate::short_circuit::bad_data(
            "not an hstack short-circuit connection (bad magic)".into(),
        ));
    }
    if pre[4] != VERSION {
        return Err(crate::short_circuit::bad_data(format!(
            "short-circuit protocol version {} is not supported (this datanode speaks {VERSION})",
            pre[4]
        )));
    }
    let mut buf = Vec::with_capacity(256);
    loop {
        if let Some((req, _)) = decode_frame(&buf)? {
            return Ok(req);
        }
        let mut piece = [0u8; 512];
        let n = s.read(&mut piece).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&piece[..n]);
    }
}

/// What ends a grant.
enum End {
    Revoked(String),
    ClientDone,
}

async fn serve_conn(ctx: Arc<XceiverCtx>, mut s: UnixStream) {
    let req = match timed("read the request", read_request(&mut s)).await {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
        Err(e) => {
            tracing::warn!("refused a short-circuit connection: {e}");
            return;
        }
    };
    let id = req.block.id;
    let m = &ctx.metrics;
    let mut hold = ctx.short_circuit.hold(id);
    let (replica, data, meta) = match check_and_open(&ctx, &req) {
        Ok(x) => x,
        Err(e) => {
            drop(hold);
            m.short_circuit_refused_total.inc();
            tracing::debug!(client = %req.client, "refused the files of block {id}: {e}");
            let reply = FdReply::Refused {
                error: e.code.name().to_string(),
                message: e.message,
            };
            let _ = timed("reply", s.write_all(&encode_frame(&reply))).await;
            return;
        }
    };
    let frame = encode_frame(&FdReply::Granted {
        gen_stamp: replica.gen_stamp,
        len: replica.len,
    });
    let fds = [data.as_raw_fd(), meta.as_raw_fd()];
    let sent = timed(
        "send the descriptors",
        s.async_io(Interest::WRITABLE, || send_with_fds(&s, &frame, &fds)),
    )
    .await;
    // The client has its own copies now (or none).
    drop((data, meta));
    match sent {
        Ok(n) if n < frame.len() => {
            if timed("reply", s.write_all(&frame[n..])).await.is_err() {
                return;
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(client = %req.client, "could not hand out block {id}: {e}");
            return;
        }
    }
    m.short_circuit_served_total.inc();
    m.short_circuit_open.inc();
    let _open = Open(m);
    tracing::debug!(client = %req.client, block = id, "handed out a replica's files");
    let mut buf = [0u8; 64];
    let end = tokio::select! {
        why = &mut hold.revoked => match why {
            Ok(why) => End::Revoked(why),
            Err(_) => End::ClientDone,
        },
        // The client closed (or said something it should not have).
        _ = s.read(&mut buf) => End::ClientDone,
    };
    if let End::Revoked(reason) = end {
        m.short_circuit_revoked_total.inc();
        tracing::debug!(client = %req.client, block = id, "revoked a short-circuit read: {reason}");
        let _ = timed("revoke", s.write_all(&encode_frame(&Revoke { reason }))).await;
    }
}

/// The replica's files, if this reader may have them.
fn check_and_open(ctx: &XceiverCtx, req: &FdRequest) -> FsResult<(Replica, File, File)> {
    let b = req.block;
    if ctx.short_circuit.is_corrupt(b.id) {
        return Err(FsError::new(
            Code::Corrupt,
            format!("block {}: the replica here is known to be corrupt", b.id),
        ));
    }
    let (r, data, meta) = ctx.store.open_files(b.id)?;
    if r.state != ReplicaState::Finalized {
        return Err(FsError::invalid(format!(
            "block {} is being written here; it is read through the transfer port",
            b.id
        )));
    }
    if r.gen_stamp < b.gen_stamp {
        return Err(FsError::new(
            Code::Corrupt,
            format!(
                "replica of block {} has stamp {}, the reader wants {}",
                b.id, r.gen_stamp, b.gen_stamp
            ),
        ));
    }
    if r.len < b.len {
        return Err(FsError::invalid(format!(
            "block {}: the replica here holds {} bytes, the reader expects {}",
            b.id, r.len, b.len
        )));
    }
    Ok((r, data, meta))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hstack_proto::dfs as pb;
    use tokio::sync::mpsc;

    use super::*;
    use crate::blockstore::{checksums, BlockStore};
    use crate::client::local::{LocalBlock, LocalState};
    use crate::datanode::{DatanodeMetrics, Event};
    use crate::namespace::BlockRec;

    struct Dn {
        ctx: Arc<XceiverCtx>,
        info: pb::DatanodeInfo,
        dir: tempfile::TempDir,
    }

    async fn datanode() -> Dn {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlockStore::open(&[dir.path().join("d")], 0).unwrap());
        let (tx, _rx) = mpsc::unbounded_channel();
        // The events are not looked at; keep the channel open.
        std::mem::forget(_rx);
        let metrics = DatanodeMetrics::new(&prometheus::Registry::new());
        let ctx = Arc::new(XceiverCtx::new(store, "dn1".into(), false, metrics, tx));
        let path = socket_path("dn.sock", &dir.path().join("d")).unwrap();
        let l = bind(&path).unwrap();
        tokio::spawn(serve(l, path.clone(), ctx.clone()));
        let info = pb::DatanodeInfo {
            id: "dn1".into(),
            host: "127.0.0.1".into(),
            domain_socket_path: path.display().to_string(),
            ..Default::default()
        };
        Dn { ctx, info, dir }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 13 + i / 511) as u8).collect()
    }

    /// A replica of `data`, finalized unless `open` (then left being
    /// written).
    fn put(dn: &Dn, id: u64, gs: u64, data: &[u8], open: bool) -> BlockRec {
        let b = BlockRec {
            id,
            gen_stamp: gs,
            len: 0,
        };
        let mut w = dn.ctx.store.create_rbw(b).unwrap();
        let mut off = 0;
        for piece in data.chunks(64 * 1024) {
            w.append(off, piece, &checksums(piece)).unwrap();
            off += piece.len() as u64;
        }
        if open {
            return BlockRec {
                len: data.len() as u64,
                ..b
            };
        }
        dn.ctx.store.finalize(w, false).unwrap()
    }

    async fn open(dn: &Dn, b: BlockRec, from: u64) -> FsResult<LocalBlock> {
        LocalBlock::open(&LocalState::default(), b, &dn.info, from, "test").await
    }

    async fn read_all(l: &mut LocalBlock) -> FsResult<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(b) = l.next().await? {
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn a_finalized_replica_is_handed_out_and_read_back() {
        let dn = datanode().await;
        let bytes = data(3 * (1 << 20) + 777);
        let b = put(&dn, 1, 5, &bytes, false);
        let mut l = open(&dn, b, 0).await.unwrap();
        assert_eq!(read_all(&mut l).await.unwrap(), bytes);
        // From the middle of a chunk.
        let mut l2 = open(&dn, b, 1000).await.unwrap();
        assert_eq!(read_all(&mut l2).await.unwrap(), &bytes[1000..]);
        // A reader with an older stamp (the replica was re-stamped since).
        let older = BlockRec { gen_stamp: 4, ..b };
        let l3 = open(&dn, older, 0).await.unwrap();
        let m = &dn.ctx.metrics;
        assert_eq!(m.short_circuit_served_total.get(), 3);
        assert_eq!(m.short_circuit_refused_total.get(), 0);
        assert_eq!(dn.ctx.short_circuit.held(), 3);
        assert_eq!(m.short_circuit_open.get(), 3);
        drop((l, l2, l3));
        until("the holds given back", || {
            dn.ctx.short_circuit.held() == 0 && m.short_circuit_open.get() == 0
        })
        .await;
    }

    #[tokio::test]
    async fn replicas_being_written_unknown_stale_or_short_are_refused() {
        let dn = datanode().await;
        let bytes = data(5000);
        let open_b = put(&dn, 1, 5, &bytes, true);
        let e = open(&dn, open_b, 0).await.err().expect("an rbw replica");
        assert_eq!(e.code, Code::InvalidArgument, "{e}");
        assert!(e.message.contains("being written"), "{e}");
        let b = put(&dn, 2, 5, &bytes, false);
        let unknown = BlockRec { id: 3, ..b };
        let e = open(&dn, unknown, 0).await.err().expect("an unknown block");
        assert_eq!(e.code, Code::FileNotFound, "{e}");
        let newer = BlockRec { gen_stamp: 6, ..b };
        let e = open(&dn, newer, 0).await.err().expect("a newer stamp");
        assert_eq!(e.code, Code::Corrupt, "{e}");
        assert!(e.message.contains("stamp 5"), "{e}");
        let longer = BlockRec { len: 6000, ..b };
        let e = open(&dn, longer, 0).await.err().expect("a longer block");
        assert_eq!(e.code, Code::InvalidArgument, "{e}");
        assert!(e.message.contains("holds 5000 bytes"), "{e}");
        let m = &dn.ctx.metrics;
        assert_eq!(m.short_circuit_refused_total.get(), 4);
        assert_eq!(m.short_circuit_served_total.get(), 0);
        assert_eq!(dn.ctx.short_circuit.held(), 0);
        // Garbage on the socket: dropped, the socket still serves.
        let mut s = UnixStream::connect(&dn.info.domain_socket_path)
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        assert!(buf.is_empty());
        let mut l = open(&dn, b, 0).await.unwrap();
        assert_eq!(read_all(&mut l).await.unwrap(), bytes);
    }

    #[tokio::test]
    async fn a_deleted_reopened_or_corrupt_replica_is_revoked() {
        let dn = datanode().await;
        let bytes = data(3 * (1 << 20));
        let m = dn.ctx.metrics.clone();
        // Deleted while held.
        let b = put(&dn, 1, 5, &bytes, false);
        let mut l = open(&dn, b, 0).await.unwrap();
        assert!(l.revoked().is_none());
        assert!(dn.ctx.store.delete(1).unwrap());
        until("the revocation", || {
            m.short_circuit_revoked_total.get() == 1
        })
        .await;
        let mut why = None;
        for _ in 0..500 {
            why = l.revoked();
            if why.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(why.expect("revoked").contains("deleted"));
        assert!(open(&dn, b, 0).await.is_err(), "gone");
        // Reopened by a recovery (a new stamp) while held.
        let b = put(&dn, 2, 5, &bytes, false);
        let mut l = open(&dn, b, 0).await.unwrap();
        let w = dn.ctx.store.reopen_rbw(2, 5, 6, b.len).unwrap();
        until("the second revocation", || {
            m.short_circuit_revoked_total.get() == 2
        })
        .await;
        let e = loop {
            match l.next().await {
                Err(e) => break e,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("read to the end despite the revocation"),
            }
        };
        assert_eq!(e.code, Code::Unavailable, "{e}");
        assert!(e.message.contains("revoked"), "{e}");
        let e = open(&dn, BlockRec { gen_stamp: 6, ..b }, 0)
            .await
            .err()
            .unwrap();
        assert!(e.message.contains("being written"), "{e}");
        dn.ctx.store.finalize(w, false).unwrap();
        // Found corrupt here (the scanner's event) while held: revoked, and
        // refused from then on, until the replica is replaced.
        let b = BlockRec { gen_stamp: 6, ..b };
        let _l = open(&dn, b, 0).await.unwrap();
        dn.ctx.event(Event::Corrupt {
            block: b,
            reason: "test".into(),
        });
        until("the third revocation", || {
            m.short_circuit_revoked_total.get() == 3
        })
        .await;
        let e = open(&dn, b, 0).await.err().unwrap();
        assert_eq!(e.code, Code::Corrupt, "{e}");
        dn.ctx.store.delete(2).unwrap();
        let b = put(&dn, 2, 7, &bytes, false);
        assert!(open(&dn, b, 0).await.is_ok(), "a new replica is served");
        until("the holds given back", || dn.ctx.short_circuit.held() == 1).await;
    }

    #[tokio::test]
    async fn a_flipped_byte_on_disk_is_found_by_the_reader() {
        let dn = datanode().await;
        let bytes = data(2 * (1 << 20) + 100);
        let b = put(&dn, 9, 5, &bytes, false);
        let file = dn.dir.path().join("d/current/finalized/blk_9");
        let mut raw = std::fs::read(&file).unwrap();
        raw[(1 << 20) + 1234] ^= 0x40;
        std::fs::write(&file, raw).unwrap();
        let mut l = open(&dn, b, 0).await.unwrap();
        let first = l.next().await.unwrap().unwrap();
        assert_eq!(&first[..], &bytes[..1 << 20], "the first window is intact");
        let e = l.next().await.expect_err("a checksum mismatch");
        assert_eq!(e.code, Code::Corrupt, "{e}");
        assert!(
            e.message
                .contains(&format!("chunk at offset {}", (1 << 20) + 1024)),
            "{e}"
        );
    }
}
