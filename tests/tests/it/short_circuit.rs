//! Short-circuit local reads with real processes: the datanodes (each on
//! its own 127.0.1.i, all on this host) hand replica files to readers on
//! this host over their Unix sockets.

use std::time::Duration;

use hstack_tests::dfs::{pattern, put_file, read_file};
use hstack_tests::hstack_dfs::client::{ClientOptions, DfsClient};
use hstack_tests::{hstack_env, http_get, wait_for, DfsCluster};

/// A datanode's counter (0 if it has not counted yet).
async fn metric(cluster: &DfsCluster, dn: usize, name: &str) -> anyhow::Result<u64> {
    let (_, body) = http_get(&cluster.dns[dn].addr("http"), "/metrics")
        .await
        .ok_or_else(|| anyhow::anyhow!("dn{}: no /metrics", dn + 1))?;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// Each datanode's `hstack_datanode_short_circuit_served_total`.
async fn served(cluster: &DfsCluster) -> anyhow::Result<Vec<u64>> {
    let mut v = Vec::new();
    for i in 0..cluster.dns.len() {
        v.push(metric(cluster, i, "hstack_datanode_short_circuit_served_total").await?);
    }
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_reads_use_the_replica_files_and_fall_back_to_tcp() -> anyhow::Result<()> {
    let mut cluster = DfsCluster::start(4, 1, &[]).await?;
    cluster.allowed_errors.push("checksum".into());
    let nn = cluster.nn.addr("rpc");
    let c = cluster.client().await?;
    // Every datanode announced its socket, under its data directory.
    let report = cluster.report().await?;
    for d in &report.datanodes {
        assert!(
            d.domain_socket_path.ends_with("/data1/dn.sock"),
            "{}: {:?}",
            d.id,
            d.domain_socket_path
        );
    }

    // 1. Written and read back through the replicas' files, exactly.
    let len = 5 * DfsCluster::BLOCK + 12_345;
    let bytes = pattern(len, 7);
    put_file(&c, "/sc/a", &bytes).await?;
    let blocks = c.block_locations("/sc/a", 0, 0).await?.blocks.len() as u64;
    assert_eq!(blocks, 6);
    let before: u64 = served(&cluster).await?.iter().sum();
    let mut r = c.open("/sc/a").await?;
    let mut got = Vec::new();
    r.read_to_end(&mut got).await?;
    assert!(got == bytes, "the short-circuit read must return the file");
    assert_eq!((r.bytes_local, r.bytes_tcp), (len, 0));
    let after: u64 = served(&cluster).await?.iter().sum();
    assert_eq!(after - before, blocks, "one grant per block");
    // A read from the middle of a chunk to the end.
    let mut r = c.open("/sc/a").await?;
    r.seek(DfsCluster::BLOCK + 1001)?;
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).await?;
    assert!(tail == bytes[(DfsCluster::BLOCK + 1001) as usize..]);

    // 2. Turned off, the client reads through the transfer ports only.
    let o = ClientOptions {
        short_circuit: false,
        ..ClientOptions::default()
    };
    let tcp = DfsClient::connect(&nn, o).await?;
    let before = served(&cluster).await?;
    let mut r = tcp.open("/sc/a").await?;
    let mut got = Vec::new();
    r.read_to_end(&mut got).await?;
    assert!(got == bytes);
    assert_eq!((r.bytes_local, r.bytes_tcp), (0, len));
    assert_eq!(served(&cluster).await?, before, "no grant asked for");
    // And as a command: HSTACK_SHORT_CIRCUIT=0 turns it off, the default
    // is on.
    let text: Vec<u8> = (0..300_000u32)
        .map(|i| b"abcdefghij\n"[(i % 11) as usize])
        .collect();
    put_file(&c, "/sc/text", &text).await?;
    let cat =
        |env: &[(&str, &str)]| hstack_env(&["dfs", "--namenode", &nn, "cat", "/sc/text"], env);
    let before = served(&cluster).await?;
    let off = cat(&[("HSTACK_SHORT_CIRCUIT", "0")])?;
    assert_eq!(off.code, Some(0), "{off:?}");
    assert!(off.stdout.as_bytes() == text);
    assert_eq!(served(&cluster).await?, before, "HSTACK_SHORT_CIRCUIT=0");
    let on = cat(&[])?;
    assert_eq!(on.code, Some(0), "{on:?}");
    assert!(on.stdout.as_bytes() == text);
    let now: u64 = served(&cluster).await?.iter().sum();
    assert!(now > before.iter().sum(), "the default reads the files");

    // 3. A corrupt block file: the short-circuit reader finds it, reports
    // it, and reads that block from another replica.
    let one = pattern(DfsCluster::BLOCK, 11);
    put_file(&c, "/sc/bad", &one).await?;
    let lb = c.block_locations("/sc/bad", 0, 0).await?.blocks.remove(0);
    let id = lb.block.as_ref().expect("a block").id;
    // The reader takes the local replica of the lowest datanode id.
    let victim = lb
        .locs
        .iter()
        .map(|l| l.id.clone())
        .min()
        .expect("replicas");
    let n: usize = victim.trim_start_matches("dn").parse()?;
    let base = cluster.dir.path().join(&victim);
    let file = ["data1", "data2"]
        .iter()
        .map(|d| base.join(d).join(format!("current/finalized/blk_{id}")))
        .find(|p| p.exists())
        .expect("the replica's block file");
    let mut raw = std::fs::read(&file)?;
    raw[70_000] ^= 0x20;
    std::fs::write(&file, raw)?;
    let before = served(&cluster).await?;
    let mut r = c.open("/sc/bad").await?;
    let mut got = Vec::new();
    r.read_to_end(&mut got).await?;
    assert!(got == one, "the read must come back right");
    assert_eq!(r.corrupt_found, 1);
    let after = served(&cluster).await?;
    assert_eq!(
        after[n - 1],
        before[n - 1] + 1,
        "the corrupt replica was read from its file"
    );
    assert_eq!(
        r.bytes_local,
        one.len() as u64,
        "the good bytes came from another local replica's file"
    );
    let nn_log = cluster.nn.log.clone();
    wait_for("the reader's report", Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(&nn_log).ok()?;
        log.lines()
            .any(|l| {
                l.contains("corrupt replica reported")
                    && l.contains("by=\"a reader\"")
                    && l.contains(&victim)
            })
            .then_some(())
    })
    .await?;
    // The namenode replaces the corrupt copy.
    wait_for(
        "the corrupt replica replaced",
        Duration::from_secs(30),
        || async {
            let lbs = c.block_locations("/sc/bad", 0, 0).await.ok()?;
            let b = &lbs.blocks[0];
            (b.locs.len() == 3 && b.locs.iter().all(|l| l.id != victim)).then_some(())
        },
    )
    .await?;
    assert!(read_file(&c, "/sc/bad").await? == one);
    cluster.check_logs()
}
