//! In-process datanodes on loopback sockets, each with its own store; no
//! namenode.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::xceiver::{read_remote, replicate};
use super::*;
use crate::blockstore::{checksums, ReplicaState};
use crate::error::{Code, FsError};
use crate::namespace::BlockRec;
use crate::transfer::{open_pipeline, Packet, PipelineTx, Recovery, Status, Target, PACKET};

struct Node {
    ctx: Arc<XceiverCtx>,
    addr: String,
    events: mpsc::UnboundedReceiver<Event>,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(id: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlockStore::open(&[dir.path().to_path_buf()], 0).unwrap());
        let (tx, events) = mpsc::unbounded_channel();
        let metrics = DatanodeMetrics::new(&prometheus::Registry::new());
        let ctx = Arc::new(XceiverCtx::new(store, id.into(), false, metrics, tx));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(serve_transfer(l, ctx.clone()));
        Self {
            ctx,
            addr,
            events,
            _dir: dir,
        }
    }

    fn target(&self) -> Target {
        Target {
            id: self.ctx.id.clone(),
            addr: self.addr.clone(),
        }
    }

    fn events(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            v.push(e);
        }
        v
    }

    /// The replica's bytes, read and verified from the store.
    fn stored(&self, b: &BlockRec) -> Vec<u8> {
        let mut r = self.ctx.store.open_read(b).unwrap();
        let len = r.len as usize;
        r.read_verified(0, len).unwrap()
    }

    /// Stores a finalized replica directly.
    fn put(&self, b: BlockRec, data: &[u8]) -> BlockRec {
        let mut w = self.ctx.store.create_rbw(b).unwrap();
        let mut off = 0;
        for piece in data.chunks(PACKET) {
            w.append(off, piece, &checksums(piece)).unwrap();
            off += piece.len() as u64;
        }
        self.ctx.store.finalize(w, false).unwrap()
    }
}

async fn nodes(n: usize) -> Vec<Node> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Node::start(&format!("dn{}", i + 1)).await);
    }
    v
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 7) as u8).collect()
}

fn block(id: u64, gen_stamp: u64) -> BlockRec {
    BlockRec {
        id,
        gen_stamp,
        len: 0,
    }
}

/// Sends `data[from..]` in packets from `seqno`, then the empty last
/// packet; returns the seqno after the last.
async fn send_rest(tx: &mut PipelineTx, data: &[u8], from: usize, mut seqno: u64) -> u64 {
    let mut off = from;
    while off < data.len() {
        let end = (off + PACKET).min(data.len());
        let p = Packet::new(
            seqno,
            off as u64,
            Bytes::copy_from_slice(&data[off..end]),
            false,
        );
        tx.send(&p).await.unwrap();
        off = end;
        seqno += 1;
    }
    let last = Packet::new(seqno, data.len() as u64, Bytes::new(), true);
    tx.send(&last).await.unwrap();
    seqno + 1
}

fn finalized(b: BlockRec, len: usize) -> Event {
    Event::Received(BlockRec {
        len: len as u64,
        ..b
    })
}

#[tokio::test]
async fn a_three_node_pipeline_stores_identical_finalized_replicas() {
    let mut dns = nodes(3).await;
    let b = block(42, 1001);
    let data = pattern(200 * 1024 + 123);
    let targets: Vec<Target> = dns.iter().map(Node::target).collect();
    let (mut tx, mut rx) = open_pipeline(b, &targets, "client", None).await.unwrap();
    let packets = send_rest(&mut tx, &data, 0, 0).await;
    assert_eq!(packets, 5, "4 data packets and the empty last one");
    for seqno in 0..packets {
        let ack = rx.next_ack().await.unwrap();
        assert_eq!(ack.seqno, seqno);
        assert_eq!(ack.statuses, vec![Status::Ok; 3]);
    }
    let want = BlockRec {
        len: data.len() as u64,
        ..b
    };
    for dn in &mut dns {
        let r = dn.ctx.store.get(42).unwrap();
        assert_eq!(
            (r.state, r.len),
            (ReplicaState::Finalized, data.len() as u64)
        );
        assert_eq!(dn.stored(&want), data, "{}", dn.ctx.id);
        assert_eq!(dn.events(), vec![finalized(b, data.len())], "{}", dn.ctx.id);
        assert_eq!(dn.ctx.metrics.blocks_written_total.get(), 1);
    }
    let all = read_remote(&dns[1].addr, b, 0, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(all, data);
    let middle = read_remote(&dns[2].addr, b, 70_000, 50_000).await.unwrap();
    assert_eq!(middle, &data[70_000..120_000]);
    let tail = read_remote(&dns[0].addr, b, 200_000, 1 << 20)
        .await
        .unwrap();
    assert_eq!(tail, &data[200_000..], "clipped to the replica");
    let none = read_remote(&dns[0].addr, b, 1000, 0).await.unwrap();
    assert!(
        none.is_empty(),
        "a read of 0 bytes gets one empty last packet"
    );
    assert_eq!(
        dns[1].ctx.metrics.bytes_written_total.get(),
        data.len() as u64
    );
}

#[tokio::test]
async fn a_bad_checksum_is_acked_as_such_and_nothing_is_finalized() {
    let mut dns = nodes(3).await;
    let b = block(7, 1);
    let data = pattern(3 * PACKET);
    let targets: Vec<Target> = dns.iter().map(Node::target).collect();
    let (mut tx, mut rx) = open_pipeline(b, &targets, "client", None).await.unwrap();
    let good = Packet::new(0, 0, Bytes::copy_from_slice(&data[..PACKET]), false);
    tx.send(&good).await.unwrap();
    let mut bad = Packet::new(
        1,
        PACKET as u64,
        Bytes::copy_from_slice(&data[PACKET..2 * PACKET]),
        false,
    );
    bad.sums[3] ^= 1;
    tx.send(&bad).await.unwrap();
    tx.flush().await.unwrap();
    let ack = rx.next_ack().await.unwrap();
    assert_eq!((ack.seqno, ack.statuses), (0, vec![Status::Ok; 3]));
    let ack = rx.next_ack().await.unwrap();
    assert_eq!(ack.seqno, 1);
    // Every node saw the same bad bytes (each forwards before checking).
    assert_eq!(ack.statuses, vec![Status::ChecksumError; 3]);
    assert_eq!(ack.first_bad(), Some(0));
    for dn in &mut dns {
        let r = dn.ctx.store.get(7).unwrap();
        assert_eq!(r.state, ReplicaState::Rbw, "{}", dn.ctx.id);
        assert_eq!(dn.ctx.store.disk_len(7).unwrap().1, PACKET as u64);
        assert!(dn.events().is_empty());
    }
    // The pipeline is over: the datanode closed it.
    assert!(rx.next_ack().await.is_err());
    // A lone datanode blames itself too.
    let (mut tx, mut rx) = open_pipeline(block(8, 1), &targets[2..], "client", None)
        .await
        .unwrap();
    let bad = Packet {
        offset: 0,
        seqno: 0,
        ..bad
    };
    tx.send(&bad).await.unwrap();
    tx.flush().await.unwrap();
    let ack = rx.next_ack().await.unwrap();
    assert_eq!(ack.statuses, vec![Status::ChecksumError]);
    assert_eq!(dns[2].ctx.metrics.write_errors_total.get(), 2);
}

#[tokio::test]
async fn a_dead_second_target_fails_setup_naming_it() {
    let dns = nodes(2).await;
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let targets = vec![
        dns[0].target(),
        Target {
            id: "dead".into(),
            addr: dead_addr,
        },
        dns[1].target(),
    ];
    let e = match open_pipeline(block(3, 1), &targets, "client", None).await {
        Ok(_) => panic!("a pipeline through a closed port"),
        Err(e) => e,
    };
    assert_eq!(e.bad_node, 1, "{}", e.error);
    assert_eq!(e.error.code, Code::Unavailable);
    assert!(e.error.message.contains("dead"), "{}", e.error);
    assert!(
        dns[0].ctx.store.get(3).is_none(),
        "the empty replica is not left behind"
    );
    // A dead head is node 0, from the writer's own connect.
    let e = match open_pipeline(block(3, 1), &targets[1..], "client", None).await {
        Ok(_) => panic!("a pipeline through a closed port"),
        Err(e) => e,
    };
    assert_eq!(e.bad_node, 0);
    // A finalized replica refuses a second write: node 0 is to blame.
    dns[1].put(block(4, 1), b"x");
    let e = match open_pipeline(block(4, 1), &[dns[1].target()], "client", None).await {
        Ok(_) => panic!("overwrote a finalized replica"),
        Err(e) => e,
    };
    assert_eq!((e.bad_node, e.error.code), (0, Code::AlreadyExists));
}

#[tokio::test]
async fn bad_reads_are_refused_and_garbage_does_not_stop_the_server() {
    let dns = nodes(1).await;
    let data = pattern(1000);
    let b = dns[0].put(block(5, 3), &data);
    let e = read_remote(&dns[0].addr, b, 1001, 10).await.unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(
        e.message,
        "offset 1001 is past the end of block 5 (1000 bytes)"
    );
    assert!(read_remote(&dns[0].addr, b, 1000, 10)
        .await
        .unwrap()
        .is_empty());
    let e = read_remote(&dns[0].addr, block(6, 1), 0, 10)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::FileNotFound);
    let newer = BlockRec { gen_stamp: 4, ..b };
    let e = read_remote(&dns[0].addr, newer, 0, 10).await.unwrap_err();
    assert_eq!(e.code, Code::Corrupt, "a stale replica is not served");

    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"HSDT\x07\0\0\0\x01x"] {
        let mut s = tokio::net::TcpStream::connect(&dns[0].addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("the datanode closes the connection");
        match read {
            Ok(n) => assert_eq!(n, 0, "no answer to garbage"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
    assert_eq!(read_remote(&dns[0].addr, b, 0, 1000).await.unwrap(), data);
}

#[tokio::test]
async fn a_rebuilt_pipeline_resumes_from_the_acknowledged_bytes() {
    let mut dns = nodes(3).await;
    let old = block(9, 1);
    let data = pattern(3 * PACKET + 5000);
    let targets: Vec<Target> = dns.iter().map(Node::target).collect();
    let (mut tx, mut rx) = open_pipeline(old, &targets, "client", None).await.unwrap();
    for i in 0..3 {
        let p = Packet::new(
            i as u64,
            (i * PACKET) as u64,
            Bytes::copy_from_slice(&data[i * PACKET..(i + 1) * PACKET]),
            false,
        );
        tx.send(&p).await.unwrap();
    }
    tx.flush().await.unwrap();
    for seqno in 0..2 {
        assert_eq!(rx.next_ack().await.unwrap().seqno, seqno);
    }
    // The writer saw two acks, then lost the second datanode.
    drop((tx, rx));
    let acked = 2 * PACKET;
    let new = block(9, 2);
    let survivors = [targets[0].clone(), targets[2].clone()];
    let recovery = Recovery {
        min_gen_stamp: 1,
        from: acked as u64,
    };
    let (mut tx, mut rx) = open_pipeline(new, &survivors, "client", Some(recovery))
        .await
        .unwrap();
    let packets = send_rest(&mut tx, &data, acked, 0).await;
    for seqno in 0..packets {
        let ack = rx.next_ack().await.unwrap();
        assert_eq!((ack.seqno, ack.statuses), (seqno, vec![Status::Ok; 2]));
    }
    for i in [0, 2] {
        let r = dns[i].ctx.store.get(9).unwrap();
        assert_eq!(
            (r.state, r.gen_stamp, r.len),
            (ReplicaState::Finalized, 2, data.len() as u64)
        );
        assert_eq!(dns[i].events(), vec![finalized(new, data.len())]);
        let got = read_remote(&dns[i].addr, new, 0, data.len() as u64)
            .await
            .unwrap();
        assert_eq!(got, data);
    }
    let r = dns[1].ctx.store.get(9).unwrap();
    assert_eq!(
        (r.state, r.gen_stamp),
        (ReplicaState::Rbw, 1),
        "left behind at the old stamp"
    );
    // A replica that missed the rebuild refuses to join at the new stamp
    // from a stamp it never had.
    let stale = Recovery {
        min_gen_stamp: 2,
        from: 0,
    };
    let e = match open_pipeline(block(9, 3), &[targets[1].clone()], "c", Some(stale)).await {
        Ok(_) => panic!("a stale replica joined"),
        Err(e) => e,
    };
    assert_eq!((e.bad_node, e.error.code), (0, Code::Corrupt));
}

/// A `WriteBlock` in recovery mode, sent by anyone who can reach the
/// transfer port, could reopen a finalized replica at length 0 (issue 13's
/// review): now a finalized replica is never cut, and a replica outside
/// the recovery's stamps is never touched.
#[tokio::test]
async fn a_recovery_write_never_cuts_a_finalized_replica_nor_another_generation() {
    let dns = nodes(1).await;
    let data = pattern(3 * PACKET + 100);
    let b = dns[0].put(block(21, 5), &data);
    let target = [dns[0].target()];
    let cut_to_zero = Recovery {
        min_gen_stamp: 5,
        from: 0,
    };
    let e = match open_pipeline(block(21, 6), &target, "c", Some(cut_to_zero)).await {
        Ok(_) => panic!("a finalized replica was reopened at length 0"),
        Err(e) => e,
    };
    assert_eq!(e.error.code, Code::AlreadyExists, "{}", e.error);
    let cut_some = Recovery {
        min_gen_stamp: 5,
        from: PACKET as u64,
    };
    assert!(open_pipeline(block(21, 6), &target, "c", Some(cut_some))
        .await
        .is_err());
    // Another generation: older and newer stamps than the recovery names.
    for (min, new) in [(6, 7), (1, 4)] {
        let other = Recovery {
            min_gen_stamp: min,
            from: data.len() as u64,
        };
        let e = match open_pipeline(block(21, new), &target, "c", Some(other)).await {
            Ok(_) => panic!("a replica of stamp 5 joined a recovery of {min}..={new}"),
            Err(e) => e,
        };
        assert_eq!(e.error.code, Code::Corrupt, "{}", e.error);
    }
    // Nothing changed: the replica is whole, at its stamp, finalized.
    let r = dns[0].ctx.store.get(21).unwrap();
    assert_eq!(
        (r.state, r.gen_stamp, r.len),
        (ReplicaState::Finalized, 5, data.len() as u64)
    );
    assert_eq!(dns[0].stored(&b), data);
    // What a writer that missed the last ack does: the same length, a new
    // stamp. The replica keeps every byte.
    let restamp = Recovery {
        min_gen_stamp: 5,
        from: data.len() as u64,
    };
    let (mut tx, mut rx) = open_pipeline(block(21, 6), &target, "c", Some(restamp))
        .await
        .unwrap();
    let packets = send_rest(&mut tx, &data, data.len(), 0).await;
    for seqno in 0..packets {
        assert_eq!(rx.next_ack().await.unwrap().seqno, seqno);
    }
    let r = dns[0].ctx.store.get(21).unwrap();
    assert_eq!((r.gen_stamp, r.len), (6, data.len() as u64));
    assert_eq!(
        read_remote(&dns[0].addr, block(21, 6), 0, data.len() as u64)
            .await
            .unwrap(),
        data
    );
}

#[tokio::test]
async fn a_replica_being_written_reads_up_to_what_is_on_disk() {
    let dns = nodes(1).await;
    let b = block(11, 1);
    let data = pattern(2 * PACKET);
    let (mut tx, mut rx) = open_pipeline(b, &[dns[0].target()], "client", None)
        .await
        .unwrap();
    let p = Packet::new(0, 0, Bytes::copy_from_slice(&data[..PACKET]), false);
    tx.send(&p).await.unwrap();
    tx.flush().await.unwrap();
    rx.next_ack().await.unwrap();
    let got = read_remote(&dns[0].addr, b, 100, 1 << 20).await.unwrap();
    assert_eq!(got, &data[100..PACKET]);
    let v = recovery::visible_length(&dns[0].ctx, b).unwrap();
    assert_eq!(v.len, PACKET as u64);
}

#[tokio::test]
async fn replication_copies_a_replica_and_refuses_to_spread_a_bad_one() {
    let mut dns = nodes(3).await;
    let data = pattern(PACKET + 700);
    let b = dns[0].put(block(12, 4), &data);
    let to = [dns[1].target(), dns[2].target()];
    replicate(&dns[0].ctx, b, &to).await.unwrap();
    for dn in &mut dns[1..] {
        assert_eq!(dn.stored(&b), data);
        assert_eq!(dn.events(), vec![Event::Received(b)]);
    }
    // Flip a byte of the source's second chunk.
    let path = dns[0]._dir.path().join("current/finalized/blk_13");
    let c = dns[0].put(block(13, 1), &data);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let e = replicate(&dns[0].ctx, c, &to).await.unwrap_err();
    assert_eq!(e.code, Code::Corrupt);
    assert!(matches!(&dns[0].events()[..], [Event::Corrupt { block, .. }] if block.id == 13));
    for dn in &dns[1..] {
        let r = dn.ctx.store.get(13);
        assert!(
            r.is_none_or(|r| r.state == ReplicaState::Rbw),
            "nothing finalized"
        );
    }
}

#[tokio::test]
async fn recovery_fences_the_writer_and_cuts_replicas_to_the_agreed_length() {
    let mut dns = nodes(1).await;
    let ctx = dns[0].ctx.clone();
    let b = block(20, 5);
    let data = pattern(3 * PACKET);
    let (mut tx, mut rx) = open_pipeline(b, &[dns[0].target()], "client", None)
        .await
        .unwrap();
    for i in 0..2 {
        let p = Packet::new(
            i as u64,
            (i * PACKET) as u64,
            Bytes::copy_from_slice(&data[i * PACKET..(i + 1) * PACKET]),
            false,
        );
        tx.send(&p).await.unwrap();
    }
    tx.flush().await.unwrap();
    rx.next_ack().await.unwrap();
    rx.next_ack().await.unwrap();
    // Step 1 stops the writer that is still connected.
    let (rec, state) = recovery::init_recovery(&ctx, b, 6).unwrap();
    assert_eq!(state, recovery::RecoveryState::Rbw);
    assert_eq!((rec.gen_stamp, rec.len), (5, 2 * PACKET as u64));
    let p = Packet::new(
        2,
        2 * PACKET as u64,
        Bytes::copy_from_slice(&data[2 * PACKET..]),
        false,
    );
    tx.send(&p).await.unwrap();
    tx.flush().await.unwrap();
    let ack = rx.next_ack().await.unwrap();
    assert_eq!(ack.statuses, vec![Status::Error], "fenced");
    assert_eq!(ctx.store.disk_len(20).unwrap().1, 2 * PACKET as u64);
    // Step 2: cut to the agreed length at the new stamp, finalized.
    let done = recovery::update_recovery(&ctx, b, 6, PACKET as u64).unwrap();
    assert_eq!((done.gen_stamp, done.len), (6, PACKET as u64));
    assert_eq!(dns[0].events(), vec![Event::Received(done)]);
    assert_eq!(dns[0].stored(&done), &data[..PACKET]);
    // Done again (a retried recovery): same answer.
    assert_eq!(
        recovery::update_recovery(&ctx, b, 6, PACKET as u64).unwrap(),
        done
    );
    let (_, state) = recovery::init_recovery(&ctx, block(21, 1), 2).unwrap();
    assert_eq!(state, recovery::RecoveryState::Missing);
    // The fenced writer lets its claim go once its connection winds down
    // (after the ack above).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ctx.fences.len() != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(ctx.fences.len(), 0, "no claims left behind");
}

#[tokio::test]
async fn the_scanner_reports_a_corrupt_replica() {
    let mut dns = nodes(1).await;
    let data = pattern(5000);
    let good = dns[0].put(block(30, 1), &data);
    let bad = dns[0].put(block(31, 1), &data);
    let path = dns[0]._dir.path().join("current/finalized/blk_31");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let t = std::time::Instant::now();
    let (verified, corrupt) = scanner::pass(&dns[0].ctx, Duration::from_millis(100)).await;
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!((verified, corrupt), (1, 1));
    match &dns[0].events()[..] {
        [Event::Corrupt { block, reason }] => {
            assert_eq!(*block, bad);
            assert!(reason.contains("offset 3584"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(dns[0].ctx.metrics.scanner_corrupt_total.get(), 1);
    let _ = good;
}

#[tokio::test]
async fn run_keeps_its_id_and_serves_without_a_namenode() {
    let dir = tempfile::tempdir().unwrap();
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let namenode = dead.local_addr().unwrap().to_string();
    drop(dead);
    let cfg = DatanodeConfig {
        data_dirs: vec![dir.path().join("d1").display().to_string()],
        namenode,
        transfer_addr: "127.0.0.1:0".into(),
        rpc_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        scan_period_ms: 500,
        ..Default::default()
    };
    let start = |cfg: DatanodeConfig| async move {
        use hstack_daemon::Role;
        let id = DatanodeRole::id(&cfg).unwrap();
        let shutdown = hstack_daemon::Shutdown::new();
        hstack_daemon::launch::<DatanodeRole>(cfg, id, shutdown, prometheus::Registry::new())
            .await
            .unwrap()
    };
    let h = start(cfg.clone()).await;
    let id = h.id.clone();
    assert_eq!(id.len(), 36, "{id}");
    assert!(!h.state.is_ready(), "no namenode, not ready");
    let transfer = h.addrs["transfer"].to_string();
    let e = read_remote(&transfer, block(1, 1), 0, 1).await.unwrap_err();
    assert_eq!(e.code, Code::FileNotFound);
    let mut dn = pb::datanode_client::DatanodeClient::connect(format!("http://{}", h.addrs["rpc"]))
        .await
        .unwrap();
    let s = dn
        .get_replica_visible_length(pb::Block {
            id: 1,
            gen_stamp: 1,
            len: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(FsError::from(s).code, Code::FileNotFound);
    // Shutdown joins every task, the accept loops included: the ports are
    // free again and the same configuration starts.
    h.shutdown().trigger();
    h.wait().await.unwrap();
    let again = start(cfg).await;
    assert_eq!(again.id, id, "the id survives a restart");
}
