//! The file system with real processes: a namenode and six datanodes on
//! two racks, small blocks.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use hstack_tests::dfs::{dn_host, pattern as data, put_file as put, read_file as read};
use hstack_tests::hstack_dfs::client::{CreateOptions, DfsClient};
use hstack_tests::hstack_dfs::placement::max_per_rack;
use hstack_tests::hstack_dfs::Code;
use hstack_tests::{hstack, wait_for, DfsCluster};

const B: u64 = DfsCluster::BLOCK;

/// Every block: replicas on distinct nodes, on ≥ 2 racks (when it has ≥ 2
/// replicas), at most the per-rack cap on one rack.
async fn check_placement(c: &DfsClient, path: &str, racks: usize) -> anyhow::Result<()> {
    let lbs = c.block_locations(path, 0, 0).await?;
    for b in &lbs.blocks {
        let nodes: HashSet<&str> = b.locs.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(nodes.len(), b.locs.len(), "two replicas on one node: {b:?}");
        let mut per_rack = std::collections::HashMap::new();
        for l in &b.locs {
            *per_rack.entry(l.rack.as_str()).or_insert(0usize) += 1;
        }
        if b.locs.len() >= 2 {
            assert!(per_rack.len() >= 2, "{path}: block on one rack: {b:?}");
        }
        let cap = max_per_rack(b.locs.len(), racks);
        assert!(
            per_rack.values().all(|n| *n <= cap),
            "{path}: per-rack cap {cap} broken: {per_rack:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_and_placement() -> anyhow::Result<()> {
    let cluster = DfsCluster::start(6, 2, &[]).await?;
    let c = cluster.client().await?;
    let sizes = [0, 1, 511, 512, 513, B - 1, B, B + 1, 3 * B + 4321];
    for (i, len) in sizes.iter().enumerate() {
        let path = format!("/rt/f{len}");
        let bytes = data(*len, i as u64);
        put(&c, &path, &bytes).await?;
        let back = read(&c, &path).await?;
        assert!(
            back == bytes,
            "{path}: {} bytes back, {} written",
            back.len(),
            bytes.len()
        );
        let st = c.stat(&path).await?.expect("exists");
        assert_eq!(
            (st.len, st.replication, st.under_construction),
            (*len, 3, false)
        );
        let lbs = c.block_locations(&path, 0, 0).await?;
        assert_eq!(lbs.blocks.len() as u64, len.div_ceil(B), "{path}");
        for b in &lbs.blocks {
            assert_eq!(b.locs.len(), 3, "{path}: {b:?}");
        }
        check_placement(&c, &path, cluster.racks).await?;
    }
    // A range read in the middle of the multi-block file.
    let big = data(3 * B + 4321, 8);
    let mut r = c.open(&format!("/rt/f{}", 3 * B + 4321)).await?;
    r.seek(B - 100)?;
    let mut got = Vec::new();
    while got.len() < 300 {
        got.extend_from_slice(&r.read_chunk().await?.expect("more data"));
    }
    assert_eq!(&got[..300], &big[(B - 100) as usize..(B + 200) as usize]);

    // Writer-local: a client on datanode 3's host gets the first replica there.
    let local = cluster.client_as(None, Some(&dn_host(2))).await?;
    put(&local, "/rt/local", &data(2 * B + 1, 9)).await?;
    let lbs = local.block_locations("/rt/local", 0, 0).await?;
    for b in &lbs.blocks {
        assert!(
            b.locs.iter().any(|l| l.id == "dn3"),
            "writer-local replica missing: {b:?}"
        );
        assert_eq!(b.locs[0].id, "dn3", "the local replica is read first");
    }
    check_placement(&local, "/rt/local", cluster.racks).await?;

    // The CLI: put/get a file, ls, fsck.
    let tmp = cluster.dir.path().join("cli-in");
    std::fs::write(&tmp, data(B + 7, 10))?;
    let nn = cluster.nn.addr("rpc");
    let (ok, _, err) = hstack(&[
        "dfs",
        "--namenode",
        &nn,
        "put",
        tmp.to_str().unwrap(),
        "/cli/in",
    ])?;
    assert!(
        !ok && err.contains("no such file"),
        "put into a missing dir fails: {err}"
    );
    hstack(&["dfs", "--namenode", &nn, "mkdir", "-p", "/cli"])?;
    let (ok, _, err) = hstack(&[
        "dfs",
        "--namenode",
        &nn,
        "put",
        tmp.to_str().unwrap(),
        "/cli/in",
    ])?;
    assert!(ok, "{err}");
    let out = cluster.dir.path().join("cli-out");
    let (ok, _, err) = hstack(&[
        "dfs",
        "--namenode",
        &nn,
        "get",
        "/cli/in",
        out.to_str().unwrap(),
    ])?;
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&out)?, data(B + 7, 10));
    let (ok, json, err) = hstack(&["admin", "--namenode", &nn, "fsck", "/", "--json"])?;
    assert!(ok, "fsck: {err}");
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(v["healthy"], true);
    assert_eq!(v["files"], sizes.len() + 2);
    cluster.check_logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() -> anyhow::Result<()> {
    let cluster = DfsCluster::start(6, 2, &[]).await?;
    let c = cluster.client().await?;
    c.mkdirs("/d/sub", 0, true).await?;
    put(&c, "/d/f", &data(1000, 1)).await?;
    c.set_permission("/d", 0o755).await?;
    let snapshot = |c: DfsClient| async move {
        let mut v = Vec::new();
        for p in ["/", "/d", "/d/sub"] {
            v.push(format!("{:?}", c.list(p).await.unwrap()));
        }
        v
    };
    let before = snapshot(c.clone()).await;
    let expect = |r: Result<(), hstack_tests::hstack_dfs::FsError>, kind: Code, words: &str| {
        let e = r.expect_err("must fail");
        assert_eq!(e.code, kind, "{e}");
        assert!(e.message.contains(words), "{e} lacks {words:?}");
    };
    for bad in ["a", "//", "/a/./b", "/a/../b", "/a\0b", ""] {
        match c.mkdirs(bad, 0, true).await {
            Ok(st) => panic!("{bad:?} was accepted: {st:?}"),
            Err(e) => assert_eq!(e.code, Code::InvalidPath, "{bad:?}: {e}"),
        }
    }
    let over = c
        .create(
            "/d/sub",
            &CreateOptions {
                overwrite: true,
                ..Default::default()
            },
        )
        .await;
    expect(over.map(|_| ()), Code::IsDirectory, "is a directory");
    expect(
        c.delete("/d", false).await,
        Code::DirectoryNotEmpty,
        "not empty",
    );
    let w = c
        .create(
            "/d/r",
            &CreateOptions {
                replication: 7,
                ..Default::default()
            },
        )
        .await;
    expect(
        w.map(|_| ()),
        Code::InvalidArgument,
        "more than the 6 datanodes",
    );
    expect(
        c.set_replication("/d/f", 9).await,
        Code::InvalidArgument,
        "datanodes",
    );
    expect(
        c.set_replication("/d/f", 0).await,
        Code::InvalidArgument,
        "at least 1",
    );
    let mut r = c.open("/d/f").await?;
    expect(r.seek(1001), Code::InvalidArgument, "past the end");
    expect(
        c.open("/nope").await.map(|_| ()),
        Code::FileNotFound,
        "/nope",
    );
    // Permission: alice cannot write in the superuser's 0755 directory.
    let alice = cluster.client_as(Some("alice"), None).await?;
    let w = alice.create("/d/alice", &CreateOptions::default()).await;
    expect(w.map(|_| ()), Code::PermissionDenied, "user=alice");
    expect(
        alice.delete("/d/f", false).await,
        Code::PermissionDenied,
        "alice",
    );
    // Safe mode refuses writes.
    let mut admin = c.admin();
    admin
        .set_safe_mode(hstack_tests::hstack_proto_dfs::SafeModeRequest {
            action: hstack_tests::hstack_proto_dfs::SafeModeAction::SafeModeEnter as i32,
            caller: c.caller(),
        })
        .await?;
    let w = c.create("/d/safe", &CreateOptions::default()).await;
    expect(w.map(|_| ()), Code::SafeMode, "safe mode");
    expect(
        c.mkdirs("/d/x", 0, false).await.map(|_| ()),
        Code::SafeMode,
        "safe mode",
    );
    admin
        .set_safe_mode(hstack_tests::hstack_proto_dfs::SafeModeRequest {
            action: hstack_tests::hstack_proto_dfs::SafeModeAction::SafeModeLeave as i32,
            caller: c.caller(),
        })
        .await?;
    assert_eq!(
        snapshot(c.clone()).await,
        before,
        "a refused request changed the namespace"
    );
    // A next block before any datanode reported the previous one:
    // NotReplicatedYet (the client retries it), and the file keeps its
    // one block. Here the "previous" block was never written at all.
    {
        use hstack_tests::hstack_proto_dfs as pb;
        let caller = pb::Caller {
            user: c.user().to_string(),
            client_name: "raw-writer".into(),
            host: "127.0.0.1".into(),
        };
        let mut nn = c.namenode();
        let st = nn
            .create(pb::CreateRequest {
                caller: Some(caller.clone()),
                path: "/d/nry".into(),
                permission: 0o644,
                ..Default::default()
            })
            .await?
            .into_inner()
            .status
            .expect("a status");
        let add = |previous: Option<pb::Block>| pb::AddBlockRequest {
            caller: Some(caller.clone()),
            path: "/d/nry".into(),
            inode_id: st.inode_id,
            previous,
            excluded: vec![],
        };
        let first = nn.add_block(add(None)).await?.into_inner().block;
        let mut unreported = first.expect("a block");
        unreported.len = 100;
        let e: hstack_tests::hstack_dfs::FsError = nn
            .add_block(add(Some(unreported)))
            .await
            .expect_err("no replica reported")
            .into();
        assert_eq!(e.code, Code::NotReplicatedYet, "{e}");
        assert!(e.message.contains("retry"), "{e}");
        let lbs = c.block_locations("/d/nry", 0, 0).await?;
        assert_eq!(lbs.blocks.len(), 1, "{lbs:?}");
        c.delete("/d/nry", false).await?;
    }
    // The CLI says so too, with a non-zero status.
    let nnaddr = cluster.nn.addr("rpc");
    let (ok, _, err) = hstack(&["dfs", "--namenode", &nnaddr, "rm", "/d"])?;
    assert!(!ok && err.contains("not empty"), "{err}");
    let src = cluster.dir.path().join("small");
    std::fs::write(&src, b"x")?;
    let (ok, _, err) = hstack(&[
        "dfs",
        "--namenode",
        &nnaddr,
        "put",
        "--replication",
        "0",
        src.to_str().unwrap(),
        "/d/zero",
    ])?;
    assert!(!ok && err.contains("at least 1"), "{err}");
    let (ok, _, _) = hstack(&["dfs", "--namenode", &nnaddr, "test", "-d", "/d/f"])?;
    assert!(!ok, "test -d on a file");
    // Garbage on the data transfer port: the datanode stays up.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(cluster.dns[0].addr("transfer"))?;
        s.write_all(b"GET / HTTP/1.1\r\n\r\n")?;
    }
    assert_eq!(read(&c, "/d/f").await?, data(1000, 1));
    cluster.check_logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namenode_killed_mid_workload_keeps_every_acknowledged_file() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut cluster = DfsCluster::start(6, 2, &["--checkpoint-txns", "40"]).await?;
    let c = cluster.client().await?;
    let written = std::sync::Arc::new(AtomicU64::new(0));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // Writes files until told to stop or a put fails. Its client rides out
    // the restart below where it safely can: a call that never reached the
    // namenode, or one it may repeat, is tried again; a create or add-block
    // whose reply was lost fails.
    let writer = {
        let (c, written, stop) = (c.clone(), written.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let path = format!("/w/{i}");
                let bytes = data(i * 997 % (2 * B), i);
                match put(&c, &path, &bytes).await {
                    Ok(()) => acked.push((path, bytes)),
                    Err(e) => return (acked, Some((i, e))),
                }
                written.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            (acked, None)
        })
    };
    // Killed with edits both in a checkpoint image and after it.
    let nn_log = cluster.nn.log.clone();
    let count = || written.load(Ordering::SeqCst);
    wait_for(
        "a checkpoint and 20 files",
        Duration::from_secs(30),
        || async {
            let log = std::fs::read_to_string(&nn_log).ok()?;
            (log.contains("checkpoint saved") && count() >= 20).then_some(())
        },
    )
    .await?;
    let after_checkpoint = count() + 5;
    wait_for(
        "5 files after the checkpoint",
        Duration::from_secs(30),
        || async { (count() >= after_checkpoint).then_some(()) },
    )
    .await?;
    cluster.nn.kill9();
    // A client that starts while the namenode is down waits for it (HDFS's
    // connect retries), through its start-up safe mode, and then works: a
    // real `hstack dfs put`, whose warning shows it is waiting, not failed.
    let during = data(B + 3, 77);
    let local = cluster.dir.path().join("during.bin");
    std::fs::write(&local, &during)?;
    let nn = cluster.nn.addr("rpc");
    let local_arg = local.display().to_string();
    let mut patient =
        hstack_tests::hstack_spawn(&["dfs", "--namenode", &nn, "put", &local_arg, "/during"])?;
    let stderr = patient.stderr.take().expect("piped");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let warned = lines
        .recv_timeout(Duration::from_secs(30))
        .context("the client said nothing while the namenode was down")?;
    assert!(
        warned.contains("cannot reach the namenode") && warned.contains("trying again"),
        "{warned}"
    );
    assert!(
        patient.try_wait()?.is_none(),
        "the client gave up instead of waiting: {warned}"
    );
    cluster.nn.restart().await?;
    let status = tokio::task::spawn_blocking(move || patient.wait()).await??;
    assert!(status.success(), "the waiting put failed: {status}");
    assert_eq!(read(&c, "/during").await?, during);
    stop.store(true, Ordering::SeqCst);
    let (acked, failed) = writer.await?;
    assert!(acked.len() >= 20, "{} files acknowledged", acked.len());
    cluster.wait_live(6).await?;
    let c = cluster.client().await?;
    for (path, bytes) in &acked {
        assert!(
            read(&c, path).await? == *bytes,
            "{path} differs after the restart"
        );
    }
    // A file whose call was lost with the namenode: absent, or present and
    // readable (open, or closed by lease recovery) — never corrupt; and the
    // error said the namenode may have done it.
    if let Some((i, e)) = failed {
        assert!(e.to_string().contains("may or may not"), "{e}");
        let unacked = format!("/w/{i}");
        if c.stat(&unacked).await?.is_some() {
            let lbs = c.block_locations(&unacked, 0, 0).await?;
            assert!(lbs.file_len <= data(i * 997 % (2 * B), i).len() as u64);
        }
    }
    // And it takes new writes.
    put(&c, "/after", b"still here").await?;
    // The restart started from the checkpoint image, then replayed the
    // edits logged after it.
    let log = std::fs::read_to_string(&cluster.nn.log)?;
    assert!(
        log.contains("loaded image"),
        "the restart did not use the image"
    );
    cluster.check_logs()
}

/// The administrative calls are the superuser's (or the supergroup's), as in
/// HDFS, with the caller's groups from the namenode's own lookup: a client
/// cannot name itself into the supergroup. A refused call changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_are_the_superusers_and_groups_come_from_the_namenode() -> anyhow::Result<()> {
    use hstack_tests::hstack_proto_dfs as pb;
    let cluster = DfsCluster::start(3, 1, &[]).await?;
    let nn = cluster.nn.addr("rpc");
    let denied = hstack_tests::hstack_proto::Code::PermissionDenied;
    // HSTACK_GROUPS was once sent as the caller's groups; now nothing is.
    let mallory = [("HSTACK_USER", "mallory"), ("HSTACK_GROUPS", "supergroup")];
    for args in [
        vec!["admin", "--namenode", &nn, "safemode", "enter"],
        vec!["admin", "--namenode", &nn, "report"],
        vec!["admin", "--namenode", &nn, "decommission", "dn1"],
        vec!["admin", "--namenode", &nn, "remove-dead", "dn1"],
    ] {
        let r = hstack_tests::hstack_env(&args, &mallory)?;
        assert_eq!(r.code, Some(denied.exit_status() as i32), "{args:?}: {r:?}");
        assert!(r.stderr.contains("error[PermissionDenied]"), "{}", r.stderr);
        assert!(r.stderr.contains("only the superuser"), "{}", r.stderr);
    }
    // Reading the safe mode is anyone's (clients ask it).
    let r = hstack_tests::hstack_env(&["admin", "--namenode", &nn, "safemode", "get"], &mallory)?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("OFF"), "{}", r.stdout);
    // Nothing changed: no safe mode, dn1 in service.
    let report = cluster.report().await?;
    assert!(!report.safe_mode);
    let dn1 = report
        .datanodes
        .iter()
        .find(|d| d.id == "dn1")
        .expect("dn1");
    assert_eq!(dn1.state(), pb::DatanodeState::Live);
    // The superuser (the user running the namenode and this test) may.
    let me: &[(&str, &str)] = &[];
    let r = hstack_tests::hstack_env(&["admin", "--namenode", &nn, "safemode", "enter"], me)?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let r = hstack_tests::hstack_env(&["admin", "--namenode", &nn, "safemode", "leave"], me)?;
    assert_eq!(r.code, Some(0), "{r:?}");
    // A reader's report of a bad replica: only from someone who may read
    // the file. The superuser's private file, reported by mallory: refused,
    // and the replica is not marked corrupt.
    let c = cluster.client().await?;
    put(&c, "/private", &data(5000, 9)).await?;
    c.set_permission("/private", 0o600).await?;
    let lbs = c.block_locations("/private", 0, 0).await?;
    let b = &lbs.blocks[0];
    let m = cluster.client_as(Some("mallory"), None).await?;
    let req = pb::ReportBadBlocksRequest {
        blocks: vec![pb::BadBlock {
            block: b.block,
            datanode: b.locs[0].id.clone(),
            reason: "a lie".into(),
        }],
        caller: m.caller(),
    };
    let e = m.namenode().report_bad_blocks(req).await.unwrap_err();
    let e = hstack_tests::hstack_proto::Error::from_status(&e);
    assert_eq!(e.code, denied, "{e}");
    let r = hstack_tests::hstack_env(
        &["admin", "--namenode", &nn, "fsck", "/private", "--json"],
        me,
    )?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let js: serde_json::Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(js["corrupt"], 0, "{js}");
    // fsck shows only a tree its caller could list: mallory may not look
    // inside the superuser's 0700 directory; its owner may.
    c.mkdirs("/secret", 0o755, false).await?;
    put(&c, "/secret/f", &data(100, 3)).await?;
    c.set_permission("/secret", 0o700).await?;
    let r = hstack_tests::hstack_env(&["admin", "--namenode", &nn, "fsck", "/secret"], &mallory)?;
    assert_eq!(r.code, Some(denied.exit_status() as i32), "{r:?}");
    assert!(r.stderr.contains("error[PermissionDenied]"), "{}", r.stderr);
    assert!(!r.stdout.contains("/secret/f"), "{}", r.stdout);
    let r = hstack_tests::hstack_env(&["admin", "--namenode", &nn, "fsck", "/secret"], me)?;
    assert_eq!(r.code, Some(0), "{r:?}");
    cluster.check_logs()
}
