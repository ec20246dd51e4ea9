//! The file system when things break: datanodes killed mid-write and at
//! rest, a replica with flipped bytes, a writer killed mid-file, a node
//! drained for decommissioning. Real processes, SIGKILL.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use hstack_tests::dfs::{dn_host, files_under, pattern as data, put_file, read_file as read};
use hstack_tests::hstack_dfs::client::{CreateOptions, DfsClient};
use hstack_tests::{hstack, hstack_spawn, wait_for, DfsCluster};

const B: u64 = DfsCluster::BLOCK;

/// The ids of the datanodes the namenode sees live.
async fn live_ids(c: &DfsClient) -> Option<HashSet<String>> {
    let report = hstack_tests::dfs::report_of(c).await.ok()?;
    Some(
        report
            .datanodes
            .iter()
            .filter(|d| d.state() == hstack_tests::hstack_proto_dfs::DatanodeState::Live)
            .map(|d| d.id.clone())
            .collect(),
    )
}

/// Waits until every block of `path` has `n` replicas on live, in-service
/// datanodes, on at least two racks; returns how long it took.
async fn wait_replicated(
    c: &DfsClient,
    path: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    wait_for(
        &format!("{path} back to {n} replicas on two racks"),
        timeout,
        || async {
            let lbs = c.block_locations(path, 0, 0).await.ok()?;
            let live = live_ids(c).await?;
            let ok = lbs.blocks.iter().all(|b| {
                let good: Vec<_> = b.locs.iter().filter(|l| live.contains(&l.id)).collect();
                let racks: HashSet<&str> = good.iter().map(|l| l.rack.as_str()).collect();
                good.len() == n && racks.len() >= 2
            });
            ok.then_some(())
        },
    )
    .await?;
    Ok(started.elapsed())
}

/// Waits until the namenode has declared `id` dead.
async fn wait_dead(c: &DfsClient, id: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("{id} declared dead"),
        Duration::from_secs(30),
        || async {
            let r = hstack_tests::dfs::report_of(c).await.ok()?;
            r.datanodes
                .iter()
                .any(|d| {
                    d.id == id && d.state() == hstack_tests::hstack_proto_dfs::DatanodeState::Dead
                })
                .then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanode_killed_mid_write_does_not_stop_the_write() -> anyhow::Result<()> {
    let mut cluster = DfsCluster::start(6, 2, &[]).await?;
    let c = cluster.client().await?;
    let bytes = data(6 * B + 999, 1);
    let mut w = c.create("/f", &CreateOptions::default()).await?;
    let half = (2 * B + B / 2) as usize;
    w.write(&bytes[..half]).await?;
    // The third block's pipeline, as the namenode knows it.
    let lbs = c.block_locations("/f", 0, 0).await?;
    let pipeline = lbs.last_block.expect("a block being written").locs;
    assert_eq!(pipeline.len(), 3);
    let victim = pipeline[1].id.clone();
    cluster.dn_by_id(&victim).kill9();
    for piece in bytes[half..].chunks(50_000) {
        w.write(piece).await?;
    }
    let recoveries = w.recoveries;
    w.close().await?;
    assert!(recoveries >= 1, "the pipeline was never rebuilt");
    assert!(read(&c, "/f").await? == bytes, "read back differs");
    wait_dead(&c, &victim).await?;
    let took = wait_replicated(&c, "/f", 3, Duration::from_secs(30)).await?;
    eprintln!("every block back to 3 replicas {took:?} after the write");
    cluster.check_logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_replication_restores_the_count_after_a_datanode_dies() -> anyhow::Result<()> {
    let mut cluster = DfsCluster::start(6, 2, &[]).await?;
    let c = cluster.client().await?;
    let bytes = data(4 * B, 2);
    put_file(&c, "/g", &bytes).await?;
    let lbs = c.block_locations("/g", 0, 0).await?;
    let victim = lbs.blocks[0].locs[0].id.clone();
    cluster.dn_by_id(&victim).kill9();
    wait_dead(&c, &victim).await?;
    let took = wait_replicated(&c, "/g", 3, Duration::from_secs(30)).await?;
    eprintln!("re-replicated {took:?} after the kill (dead-node timeout 3 s)");
    let lbs = c.block_locations("/g", 0, 0).await?;
    for b in &lbs.blocks {
        assert!(b.locs.iter().all(|l| l.id != victim), "{b:?}");
    }
    assert!(read(&c, "/g").await? == bytes);
    cluster.check_logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_replica_is_read_around_reported_and_replaced() -> anyhow::Result<()> {
    // No block scanner: only the reader can report the bad replica.
    let mut cluster = DfsCluster::start_with(6, 2, &[], &["--scan-period-ms", "3600000"]).await?;
    cluster.allowed_errors.push("checksum".into());
    let c = cluster.client().await?;
    let bytes = data(B, 3);
    put_file(&c, "/h", &bytes).await?;
    let lbs = c.block_locations("/h", 0, 0).await?;
    let b = lbs.blocks[0].clone();
    let id = b.block.as_ref().expect("block").id;
    let bad = b.locs[0].id.clone();
    let n: usize = bad.trim_start_matches("dn").parse()?;
    // Flip bytes in that replica's block file.
    let base = cluster.dir.path().join(&bad);
    let file = ["data1", "data2"]
        .iter()
        .map(|d| base.join(d).join(format!("current/finalized/blk_{id}")))
        .find(|p| p.exists())
        .expect("the replica's block file");
    let mut raw = std::fs::read(&file)?;
    raw[1000] ^= 0xff;
    raw[70_000] ^= 0x0f;
    std::fs::write(&file, raw)?;
    // A reader on that node's host reads that replica first.
    let near = cluster.client_as(None, Some(&dn_host(n - 1))).await?;
    let mut r = near.open("/h").await?;
    let mut got = Vec::new();
    r.read_to_end(&mut got).await?;
    assert!(got == bytes, "the read must come back right");
    // Reported by the reader itself (the namenode names who reported)...
    let nn_log = cluster.nn.log.clone();
    wait_for("the reader's report", Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(&nn_log).ok()?;
        log.lines()
            .any(|l| l.contains("corrupt replica reported") && l.contains("by=\"a reader\""))
            .then_some(())
    })
    .await?;
    // ...and replaced.
    wait_for(
        "the corrupt replica replaced",
        Duration::from_secs(30),
        || async {
            let lbs = c.block_locations("/h", 0, 0).await.ok()?;
            let b = &lbs.blocks[0];
            (b.locs.len() == 3 && b.locs.iter().all(|l| l.id != bad) && !b.corrupt).then_some(())
        },
    )
    .await?;
    wait_for(
        "the corrupt copy deleted",
        Duration::from_secs(30),
        || async { (!file.exists()).then_some(()) },
    )
    .await?;
    let nn = cluster.nn.addr("rpc");
    let (ok, out, err) = hstack(&["admin", "--namenode", &nn, "fsck", "/", "--json"])?;
    assert!(ok, "fsck after repair: {out} {err}");
    assert!(read(&c, "/h").await? == bytes);
    cluster.check_logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_recovery_closes_a_file_whose_writer_was_killed() -> anyhow::Result<()> {
    let cluster = DfsCluster::start(
        6,
        2,
        &[
            "--lease-soft-limit-ms",
            "1000",
            "--lease-hard-limit-ms",
            "2000",
        ],
    )
    .await?;
    let nn = cluster.nn.addr("rpc");
    let bytes = data(2 * B + B / 2, 4);
    let mut child = hstack_spawn(&["dfs", "--namenode", &nn, "put", "--quiet", "-", "/open"])?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(&bytes)?;
    stdin.flush()?;
    let c = cluster.client().await?;
    // Everything sent: the whole packets of the third block are out.
    wait_for(
        "the writer to reach the third block",
        Duration::from_secs(10),
        || async {
            let lbs = c.block_locations("/open", 0, 0).await.ok()?;
            (lbs.blocks.len() == 3).then_some(())
        },
    )
    .await?;
    // The third block's one packet is on every replica of the pipeline.
    let third = c.block_locations("/open", 0, 0).await?.blocks[2]
        .block
        .expect("block")
        .id;
    let name = format!("blk_{third}");
    wait_for(
        "the last packet on all three replicas",
        Duration::from_secs(10),
        || async {
            let full = files_under(cluster.dir.path())
                .iter()
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == name))
                .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == B / 2))
                .count();
            (full == 3).then_some(())
        },
    )
    .await?;
    child.kill()?;
    child.wait()?;
    drop(stdin);
    wait_for(
        "lease recovery to close /open",
        Duration::from_secs(30),
        || async {
            let st = c.stat("/open").await.ok()??;
            (!st.under_construction).then_some(())
        },
    )
    .await?;
    let back = read(&c, "/open").await?;
    assert!(
        back.len() as u64 >= 2 * B,
        "only {} bytes survived",
        back.len()
    );
    assert!(
        back == bytes[..back.len()],
        "the recovered data is not what was written"
    );
    eprintln!(
        "lease recovery kept {} of {} bytes",
        back.len(),
        bytes.len()
    );
    cluster.check_logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_drains_a_node_first() -> anyhow::Result<()> {
    let mut cluster = DfsCluster::start(6, 2, &[]).await?;
    let c = cluster.client().await?;
    for i in 0..4 {
        put_file(&c, &format!("/dec/{i}"), &data(2 * B + i, i)).await?;
    }
    let nn = cluster.nn.addr("rpc");
    let (ok, _, err) = hstack(&["admin", "--namenode", &nn, "decommission", "dn1"])?;
    assert!(ok, "{err}");
    wait_for("dn1 decommissioned", Duration::from_secs(30), || async {
        let r = hstack_tests::dfs::report_of(&c).await.ok()?;
        r.datanodes
            .iter()
            .any(|d| {
                d.id == "dn1"
                    && d.state() == hstack_tests::hstack_proto_dfs::DatanodeState::Decommissioned
            })
            .then_some(())
    })
    .await?;
    // Every block has its three replicas without dn1.
    for i in 0..4 {
        let lbs = c.block_locations(&format!("/dec/{i}"), 0, 0).await?;
        for b in &lbs.blocks {
            let others = b.locs.iter().filter(|l| l.id != "dn1").count();
            assert!(others >= 3, "block {b:?} relies on dn1");
        }
    }
    let (_, json, _) = hstack(&["admin", "--namenode", &nn, "report", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(v["under_replicated"], 0);
    // Retired: a live node cannot be dropped from the lists (and a list
    // with one live node in it drops none), a dead one can.
    let listed = |json: &str| -> anyhow::Result<Vec<String>> {
        let v: serde_json::Value = serde_json::from_str(json)?;
        Ok(v["datanodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| d["id"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default())
    };
    let (ok, _, err) = hstack(&["admin", "--namenode", &nn, "remove-dead", "dn1"])?;
    assert!(!ok && err.contains("only dead datanodes"), "{err}");
    cluster.dn_by_id("dn1").kill9();
    wait_dead(&c, "dn1").await?;
    let (ok, _, err) = hstack(&["admin", "--namenode", &nn, "remove-dead", "dn1", "dn2"])?;
    assert!(!ok && err.contains("dn2"), "{err}");
    let (ok, _, err) = hstack(&["admin", "--namenode", &nn, "remove-dead", "dn9"])?;
    assert!(!ok && err.contains("no datanode \"dn9\""), "{err}");
    let (_, json, _) = hstack(&["admin", "--namenode", &nn, "report", "--json"])?;
    assert_eq!(
        listed(&json)?.len(),
        6,
        "a refused removal removed something"
    );
    let (ok, json, err) = hstack(&["admin", "--namenode", &nn, "remove-dead", "dn1", "--json"])?;
    assert!(ok, "{err}");
    let left = listed(&json)?;
    assert_eq!(left.len(), 5);
    assert!(!left.contains(&"dn1".to_string()), "{left:?}");
    // And it comes back as a node like any other if it starts again.
    cluster.dn_by_id("dn1").restart().await?;
    cluster.wait_live(6).await?;
    cluster.check_logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namenode_on_an_empty_name_dir_touches_no_block() -> anyhow::Result<()> {
    let mut cluster = DfsCluster::start(6, 2, &[]).await?;
    let c = cluster.client().await?;
    let bytes = data(2 * B, 5);
    put_file(&c, "/keep", &bytes).await?;
    let block_files = |dir: &std::path::Path| -> usize {
        files_under(dir)
            .iter()
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().to_string();
                n.starts_with("blk_") && !n.ends_with(".meta")
            })
            .count()
    };
    let before = block_files(cluster.dir.path());
    assert_eq!(before, 6, "two blocks, three replicas each");
    // The operator points the namenode at an empty directory by mistake.
    cluster.nn.kill9();
    let name_dir = cluster.nn.data_dir.clone();
    std::fs::remove_dir_all(&name_dir)?;
    std::fs::create_dir_all(&name_dir)?;
    cluster.nn.restart().await?;
    let fresh = cluster.client().await?;
    wait_for(
        "every datanode refused",
        Duration::from_secs(30),
        || async {
            let log = std::fs::read_to_string(&cluster.nn.log).ok()?;
            let refused: HashSet<&str> = log
                .lines()
                .filter(|l| l.contains("refused a datanode of another cluster"))
                .filter_map(|l| l.split("datanode=").nth(1)?.split_whitespace().next())
                .collect();
            (refused.len() == 6).then_some(())
        },
    )
    .await?;
    let r = hstack_tests::dfs::report_of(&fresh).await?;
    assert!(
        r.datanodes.is_empty(),
        "datanodes of another cluster registered: {:?}",
        r.datanodes
    );
    assert_eq!(
        block_files(cluster.dir.path()),
        before,
        "a block was deleted"
    );
    cluster.check_logs()
}

/// A disk is pulled: its directory disappears (moved aside in one step,
/// then deleted, so a datanode writing into it meanwhile cannot get in
/// the way).
fn pull_disk(dir: &std::path::Path) -> std::io::Result<()> {
    let aside = dir.with_extension("pulled");
    std::fs::rename(dir, &aside)?;
    std::fs::remove_dir_all(&aside)
}

/// The datanodes holding a finalized replica of block `id`, from the
/// block files on disk.
fn holders(cluster: &DfsCluster, id: u64) -> HashSet<String> {
    let name = format!("blk_{id}");
    files_under(cluster.dir.path())
        .into_iter()
        .filter(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy() == name)
                && p.parent().is_some_and(|d| d.ends_with("current/finalized"))
        })
        .filter_map(|p| {
            let rel = p.strip_prefix(cluster.dir.path()).ok()?;
            Some(
                rel.components()
                    .next()?
                    .as_os_str()
                    .to_string_lossy()
                    .to_string(),
            )
        })
        .collect()
}

/// Waits until every block of `paths` has 3 replicas on live datanodes,
/// and the namenode's locations are exactly the nodes whose disks hold it.
async fn wait_disks_agree(
    cluster: &DfsCluster,
    c: &DfsClient,
    paths: &[String],
) -> anyhow::Result<()> {
    wait_for(
        "every block on 3 disks, as the namenode says",
        Duration::from_secs(30),
        || async {
            let live = live_ids(c).await?;
            for p in paths {
                let lbs = c.block_locations(p, 0, 0).await.ok()?;
                for b in &lbs.blocks {
                    let id = b.block.as_ref()?.id;
                    let listed: HashSet<String> = b
                        .locs
                        .iter()
                        .filter(|l| live.contains(&l.id))
                        .map(|l| l.id.clone())
                        .collect();
                    if listed.len() != 3 || listed != holders(cluster, id) {
                        return None;
                    }
                }
            }
            Some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_disk_leaves_service_and_its_replicas_are_copied_elsewhere() -> anyhow::Result<()>
{
    let mut cluster = DfsCluster::start_with(
        6,
        2,
        &[],
        &[
            "--failed-volumes-tolerated",
            "1",
            "--volume-check-ms",
            "300",
        ],
    )
    .await?;
    cluster.allowed_errors.push("storage director".into());
    let c = cluster.client().await?;
    let mut files = Vec::new();
    for i in 0..4u64 {
        let (path, bytes) = (format!("/v/{i}"), data(2 * B + 100, 40 + i));
        put_file(&c, &path, &bytes).await?;
        files.push((path, bytes));
    }
    let paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    wait_disks_agree(&cluster, &c, &paths).await?;
    // dn1's second disk goes away (its first holds the node's identity).
    let disk = cluster.dir.path().join("dn1").join("data2");
    let on_disk = files_under(&disk)
        .iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with("blk_") && !n.ends_with(".meta")
        })
        .count();
    assert!(on_disk > 0, "dn1's second disk holds no replica");
    // Renamed aside first: the checker's probe file may appear in it.
    pull_disk(&disk)?;
    let dn1_log = cluster.dn_by_id("dn1").log.clone();
    wait_for(
        "dn1 takes its disk out of service",
        Duration::from_secs(10),
        || async {
            let log = std::fs::read_to_string(&dn1_log).ok()?;
            log.contains("out of service").then_some(())
        },
    )
    .await?;
    // The lost replicas are copied from the others; dn1 keeps serving.
    wait_disks_agree(&cluster, &c, &paths).await?;
    let http = cluster.dn_by_id("dn1").addr("http");
    let metrics = hstack_tests::http_get(&http, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    assert!(
        metrics.contains("hstack_datanode_failed_volumes 1"),
        "{metrics}"
    );
    assert!(cluster.dn_by_id("dn1").is_running());
    // The namenode shows it too (heartbeats carry the count).
    let nn = cluster.nn.addr("rpc");
    wait_for(
        "admin report shows dn1's failed volume",
        Duration::from_secs(10),
        || async {
            let (_, json, _) = hstack(&["admin", "--namenode", &nn, "report", "--json"]).ok()?;
            let v: serde_json::Value = serde_json::from_str(&json).ok()?;
            let dn1 = v["datanodes"]
                .as_array()?
                .iter()
                .find(|d| d["id"] == "dn1")?;
            (dn1["failed_volumes"] == 1).then_some(())
        },
    )
    .await?;
    for (path, bytes) in &files {
        assert!(read(&c, path).await? == *bytes, "{path} differs");
    }
    // Its last disk too: more failures than tolerated, so dn1 stops (with
    // an error), is declared dead, and its replicas are copied again.
    pull_disk(&cluster.dir.path().join("dn1").join("data1"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = cluster.dn_by_id("dn1").exit_status() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "dn1 did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "dn1 stopped with {status}");
    let log = std::fs::read_to_string(&dn1_log)?;
    assert!(log.contains("more than failed_volumes_tolerated"), "{log}");
    wait_dead(&c, "dn1").await?;
    wait_disks_agree(&cluster, &c, &paths).await?;
    for (path, bytes) in &files {
        assert!(read(&c, path).await? == *bytes, "{path} differs");
    }
    cluster.check_logs()
}

/// A datanode that holds replicas but no cluster id does not guess which
/// cluster they belong to: it refuses to start, naming the file, rather
/// than join this namenode (which would delete replicas it does not know).
/// The namenode refuses a registration without a cluster id too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanode_with_replicas_and_no_cluster_id_joins_no_cluster() -> anyhow::Result<()> {
    let mut cluster = DfsCluster::start(3, 1, &[]).await?;
    let c = cluster.client().await?;
    put_file(&c, "/kept", &data(3000, 5)).await?;
    let id_file = cluster.dir.path().join("dn1/data1/cluster_id");
    let saved = std::fs::read_to_string(&id_file)?;
    cluster.dn_by_id("dn1").kill9();
    std::fs::remove_file(&id_file)?;
    let dn1 = cluster.dn_by_id("dn1");
    let e = dn1.restart().await.unwrap_err().to_string();
    assert!(e.contains("exited during start-up"), "{e}");
    let log = std::fs::read_to_string(&dn1.log)?;
    assert!(
        log.contains("cluster_id") && log.contains("missing or empty"),
        "{log}"
    );
    assert!(!id_file.exists(), "it adopted a cluster");
    // Put back, it starts and its replicas count again.
    std::fs::write(&id_file, saved)?;
    cluster.dn_by_id("dn1").restart().await?;
    cluster.wait_live(3).await?;
    // A registration naming no cluster is refused outright.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.nn.addr("rpc")))?
        .connect()
        .await?;
    let mut dp =
        hstack_tests::hstack_proto_dfs::datanode_protocol_client::DatanodeProtocolClient::new(ch);
    let reg = hstack_tests::hstack_proto_dfs::DatanodeRegistration {
        info: Some(hstack_tests::hstack_proto_dfs::DatanodeInfo {
            id: "intruder".into(),
            transfer_addr: "127.0.0.9:1".into(),
            ..Default::default()
        }),
        storage_dirs: vec![],
        cluster_id: String::new(),
    };
    let e = dp.register_datanode(reg).await.unwrap_err();
    let e = hstack_tests::hstack_proto::Error::from_status(&e);
    assert_eq!(
        e.code,
        hstack_tests::hstack_proto::Code::ClusterMismatch,
        "{e}"
    );
    assert!(cluster
        .report()
        .await?
        .datanodes
        .iter()
        .all(|d| d.id != "intruder"));
    // Nor may anyone speak for a registered datanode from elsewhere: an
    // empty block report for dn1 (which would forget its replicas) from
    // 127.0.0.9 is refused, and dn1 still holds /kept.
    let far = hstack_tests::hstack_daemon::net::channel_from(
        Some("127.0.0.9".parse()?),
        &cluster.nn.addr("rpc"),
    )?;
    let mut dp =
        hstack_tests::hstack_proto_dfs::datanode_protocol_client::DatanodeProtocolClient::new(far);
    let e = dp
        .block_report(hstack_tests::hstack_proto_dfs::BlockReportRequest {
            id: "dn1".into(),
            blocks: vec![],
        })
        .await
        .unwrap_err();
    let e = hstack_tests::hstack_proto::Error::from_status(&e);
    assert_eq!(
        e.code,
        hstack_tests::hstack_proto::Code::PermissionDenied,
        "{e}"
    );
    assert!(e.message.contains("127.0.0.9"), "{e}");
    let lbs = c.block_locations("/kept", 0, 0).await?;
    assert!(
        lbs.blocks
            .iter()
            .all(|b| b.locs.iter().any(|l| l.id == "dn1")),
        "{lbs:?}"
    );
    cluster.allowed_errors.push("missing or empty".into());
    cluster.allowed_errors.push("failed to start".into());
    cluster.check_logs()
}
