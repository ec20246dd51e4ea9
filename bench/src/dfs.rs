//! File system benchmarks: throughput of whole files through the
//! datanodes (`run_dfs`), namenode operations per second over real RPC
//! (`run_namenode`, NNThroughputBenchmark's shape), and the namenode's
//! memory per file and block (`hstack_dfs::namenode::memory_footprint`).
//! The engines only measure; `hstack bench` parses and prints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use hstack_dfs::client::{CreateOptions, DfsClient};
use serde::Serialize;

pub use hstack_dfs::namenode::{memory_footprint, Footprint};

#[derive(Clone, Copy, Debug, clap::ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DfsWorkload {
    Write,
    Read,
}

/// How `read` reads replicas on the benchmark's host: through the
/// datanodes' transfer ports, or from the replicas' files (short-circuit
/// local reads; replicas elsewhere still come through their datanodes).
#[derive(Clone, Copy, Debug, clap::ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadPath {
    Tcp,
    Local,
}

/// One throughput run: `concurrency` files of `size` bytes, each by its
/// own task.
#[derive(Clone, Debug)]
pub struct DfsBench {
    pub workload: DfsWorkload,
    pub size: u64,
    pub concurrency: usize,
    pub replication: u32,
    /// 0 = the namenode's.
    pub block_size: u64,
    /// `read` reads what `write` left here.
    pub dir: String,
    /// Before reading, flush and drop the page cache (needs root).
    pub drop_caches: bool,
    /// How `read` reads.
    pub read_path: ReadPath,
}

#[derive(Clone, Debug, Serialize)]
pub struct DfsResult {
    pub workload: DfsWorkload,
    pub files: usize,
    pub bytes: u64,
    pub replication: u32,
    pub seconds: f64,
    pub mb_per_sec: f64,
    /// `read`: the path asked for, and the one the bytes took: `tcp`,
    /// `local` or `mixed` (some local reads fell back to the transfer
    /// port), with the bytes of each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asked: Option<ReadPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_bytes: Option<u64>,
}

/// Runs `b`, adding the bytes moved to `done` as it goes (for progress).
pub async fn run_dfs(
    c: &DfsClient,
    b: &DfsBench,
    done: Arc<AtomicU64>,
) -> anyhow::Result<DfsResult> {
    if b.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if b.workload == DfsWorkload::Read && b.drop_caches {
        drop_caches()?;
    }
    let started = Instant::now();
    let local = b.read_path == ReadPath::Local;
    let mut tasks = Vec::new();
    for i in 0..b.concurrency {
        let c = c.clone();
        let path = format!("{}/f{i}", b.dir.trim_end_matches('/'));
        let done = done.clone();
        let (size, replication, block_size) = (b.size, b.replication, b.block_size);
        let workload = b.workload;
        tasks.push(tokio::spawn(async move {
            match workload {
                DfsWorkload::Write => write_file(&c, &path, size, replication, block_size, &done)
                    .await
                    .map(|()| (0, 0)),
                DfsWorkload::Read => read_file(&c, &path, local, &done).await,
            }
        }));
    }
    let (mut local_bytes, mut tcp_bytes) = (0, 0);
    for t in tasks {
        let (l, t) = t.await??;
        local_bytes += l;
        tcp_bytes += t;
    }
    let secs = started.elapsed().as_secs_f64();
    let bytes = done.load(Ordering::Relaxed);
    let read = b.workload == DfsWorkload::Read;
    Ok(DfsResult {
        workload: b.workload,
        files: b.concurrency,
        bytes,
        replication: b.replication,
        seconds: secs,
        mb_per_sec: bytes as f64 / 1e6 / secs,
        asked: read.then_some(b.read_path),
        path: read.then_some(match (local_bytes, tcp_bytes) {
            (_, 0) if local_bytes > 0 => "local",
            (0, _) => "tcp",
            _ => "mixed",
        }),
        local_bytes: read.then_some(local_bytes),
        tcp_bytes: read.then_some(tcp_bytes),
    })
}

async fn write_file(
    c: &DfsClient,
    path: &str,
    size: u64,
    replication: u32,
    block_size: u64,
    done: &AtomicU64,
) -> anyhow::Result<()> {
    // Incompressible, and not the same bytes in every block.
    let chunk: Vec<u8> = (0..(4 << 20) + 4099u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut w = c
        .create(
            path,
            &CreateOptions {
                overwrite: true,
                replication,
                block_size,
                create_parent: true,
                ..Default::default()
            },
        )
        .await?;
    let mut left = size;
    let mut off = 0usize;
    while left > 0 {
        let n = (left as usize).min(1 << 20);
        let start = off % 4099;
        w.write(&chunk[start..start + n]).await?;
        off += 1;
        left -= n as u64;
        done.fetch_add(n as u64, Ordering::Relaxed);
    }
    w.close().await?;
    Ok(())
}

/// Reads the file to its end; the bytes read from local files and
/// through transfer ports.
async fn read_file(
    c: &DfsClient,
    path: &str,
    local: bool,
    done: &AtomicU64,
) -> anyhow::Result<(u64, u64)> {
    let mut r = c.open(path).await.with_context(|| {
        format!("{path}: run `hstack bench dfs write` with the same --dir first")
    })?;
    r.set_short_circuit(local);
    while let Some(b) = r.read_chunk().await? {
        done.fetch_add(b.len() as u64, Ordering::Relaxed);
    }
    Ok((r.bytes_local, r.bytes_tcp))
}

fn drop_caches() -> anyhow::Result<()> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").context(
        "cannot drop the page cache (needs root): run without --drop-caches for a warm read",
    )
}

#[derive(Clone, Copy, Debug, clap::ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NnOp {
    Create,
    Open,
    Mkdir,
    Delete,
}

/// `ops` operations `op`, from `concurrency` tasks over the clients given.
#[derive(Clone, Debug)]
pub struct NnBench {
    pub op: NnOp,
    pub ops: u64,
    pub concurrency: usize,
    /// Files and directories go under this directory.
    pub dir: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct NnResult {
    pub op: NnOp,
    pub ops: u64,
    pub concurrency: usize,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub errors: u64,
}

/// The file name of op `i`: 1,000 per directory, as NNThroughputBenchmark
/// spreads them.
fn nn_path(dir: &str, i: u64) -> String {
    format!("{dir}/d{}/f{}", i / 1000, i % 1000)
}

async fn nn_op(c: &DfsClient, op: NnOp, dir: &str, i: u64) -> anyhow::Result<()> {
    let p = nn_path(dir, i);
    match op {
        NnOp::Create => {
            let w = c
                .create(
                    &p,
                    &CreateOptions {
                        overwrite: true,
                        create_parent: true,
                        replication: 1,
                        ..Default::default()
                    },
                )
                .await?;
            w.close().await?;
        }
        NnOp::Open => {
            c.block_locations(&p, 0, 0).await?;
        }
        NnOp::Mkdir => {
            c.mkdirs(&format!("{p}-dir"), 0, true).await?;
        }
        NnOp::Delete => c.delete(&p, false).await?,
    }
    Ok(())
}

/// Runs `ops` operations `op` from `concurrency` tasks; (seconds, errors).
async fn nn_run(
    clients: &[DfsClient],
    op: NnOp,
    dir: &str,
    ops: u64,
    concurrency: usize,
) -> (f64, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let c = clients[t % clients.len()].clone();
        let (next, errors, dir) = (next.clone(), errors.clone(), dir.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    return;
                }
                if let Err(e) = nn_op(&c, op, &dir, i).await {
                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("first error: {e:#}");
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        started.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
    )
}

pub async fn run_namenode(clients: &[DfsClient], b: &NnBench) -> anyhow::Result<NnResult> {
    if b.concurrency == 0 || clients.is_empty() {
        bail!("--concurrency and --connections must be at least 1");
    }
    let dir = format!("{}/{:?}", b.dir.trim_end_matches('/'), b.op).to_lowercase();
    // Opens and deletes need the files first (not timed).
    if matches!(b.op, NnOp::Open | NnOp::Delete) {
        eprintln!("creating {} files to {:?} (not timed)", b.ops, b.op);
        let (_, errors) = nn_run(clients, NnOp::Create, &dir, b.ops, b.concurrency).await;
        if errors > 0 {
            bail!("{errors} creates failed while preparing");
        }
    }
    let (seconds, errors) = nn_run(clients, b.op, &dir, b.ops, b.concurrency).await;
    Ok(NnResult {
        op: b.op,
        ops: b.ops,
        concurrency: b.concurrency,
        seconds,
        ops_per_sec: b.ops as f64 / seconds,
        errors,
    })
}
