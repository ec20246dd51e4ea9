//! `hstack bench dfs write|read`, `hstack bench namenode OP` and
//! `hstack bench namenode-memory`: file system benchmarks against a
//! running cluster (the first two) or the namenode's own data structures
//! (the last).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use hstack_dfs::client::{CreateOptions, DfsClient};
use serde::Serialize;

use crate::dfs::{human_bytes, NnEndpoint};
use crate::output;

#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DfsWorkload {
    Write,
    Read,
}

#[derive(Args)]
pub struct BenchDfsArgs {
    #[command(flatten)]
    endpoint: NnEndpoint,
    #[arg(value_enum)]
    workload: DfsWorkload,
    /// Bytes per file (suffixes k, m, g: powers of 1024).
    #[arg(long, default_value = "1g", value_parser = parse_size)]
    size: u64,
    /// Files written (or read) at once, one per client task.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value_t = 3)]
    replication: u32,
    /// Block size (default: the namenode's).
    #[arg(long, value_parser = parse_size)]
    block_size: Option<u64>,
    /// Directory of the benchmark files (`read` reads what `write` left).
    #[arg(long, default_value = "/bench/dfs")]
    dir: String,
    /// Before reading, flush and drop the page cache (needs root): a cold read.
    #[arg(long)]
    drop_caches: bool,
    #[arg(long)]
    json: bool,
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mul) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    num.parse::<u64>()
        .map(|n| n * mul)
        .map_err(|_| format!("{s:?} is not a size like 512, 64k, 128m or 1g"))
}

#[derive(Serialize)]
struct DfsResult {
    workload: DfsWorkload,
    files: usize,
    bytes: u64,
    replication: u32,
    seconds: f64,
    mb_per_sec: f64,
}

pub async fn bench_dfs(a: BenchDfsArgs) -> anyhow::Result<()> {
    let c = a.endpoint.connect().await?;
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if let DfsWorkload::Read = a.workload {
        if a.drop_caches {
            drop_caches()?;
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.concurrency {
        let c = c.clone();
        let path = format!("{}/f{i}", a.dir.trim_end_matches('/'));
        let done = done.clone();
        let (size, replication, block_size) = (a.size, a.replication, a.block_size.unwrap_or(0));
        let workload = a.workload;
        tasks.push(tokio::spawn(async move {
            match workload {
                DfsWorkload::Write => {
                    write_file(&c, &path, size, replication, block_size, &done).await
                }
                DfsWorkload::Read => read_file(&c, &path, &done).await,
            }
        }));
    }
    let progress = {
        let done = done.clone();
        let total = a.size * a.concurrency as u64;
        tokio::spawn(async move {
            use std::io::IsTerminal;
            if !std::io::stderr().is_terminal() {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let d = done.load(Ordering::Relaxed);
                eprint!("\r{} / {}\x1b[K", human_bytes(d), human_bytes(total));
            }
        })
    };
    for t in tasks {
        t.await??;
    }
    progress.abort();
    let secs = started.elapsed().as_secs_f64();
    let bytes = done.load(Ordering::Relaxed);
    let r = DfsResult {
        workload: a.workload,
        files: a.concurrency,
        bytes,
        replication: a.replication,
        seconds: secs,
        mb_per_sec: bytes as f64 / 1e6 / secs,
    };
    if a.json {
        return output::json(&r);
    }
    eprint!("\r\x1b[K");
    output::table(
        &[
            "workload",
            "files",
            "bytes",
            "replication",
            "seconds",
            "MB/s",
        ],
        &[vec![
            format!("{:?}", r.workload).to_lowercase(),
            r.files.to_string(),
            human_bytes(r.bytes),
            r.replication.to_string(),
            format!("{:.2}", r.seconds),
            format!("{:.0}", r.mb_per_sec),
        ]],
    );
    Ok(())
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

async fn read_file(c: &DfsClient, path: &str, done: &AtomicU64) -> anyhow::Result<()> {
    let mut r = c.open(path).await.with_context(|| {
        format!("{path}: run `hstack bench dfs write` with the same --dir first")
    })?;
    while let Some(b) = r.read_chunk().await? {
        done.fetch_add(b.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

fn drop_caches() -> anyhow::Result<()> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").context(
        "cannot drop the page cache (needs root): run without --drop-caches for a warm read",
    )
}

#[derive(Clone, Copy, Debug, ValueEnum, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum NnOp {
    Create,
    Open,
    Mkdir,
    Delete,
}

#[derive(Args)]
pub struct BenchNamenodeArgs {
    #[command(flatten)]
    endpoint: NnEndpoint,
    #[arg(value_enum)]
    op: NnOp,
    /// Operations in total.
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Client tasks issuing them (each waits for its answer: outstanding
    /// requests), spread over `--connections` connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Files and directories go under this directory.
    #[arg(long, default_value = "/bench/nn")]
    dir: String,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct NnResult {
    op: NnOp,
    ops: u64,
    concurrency: usize,
    seconds: f64,
    ops_per_sec: f64,
    errors: u64,
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

pub async fn bench_namenode(a: BenchNamenodeArgs) -> anyhow::Result<()> {
    if a.concurrency == 0 || a.connections == 0 {
        bail!("--concurrency and --connections must be at least 1");
    }
    let mut clients = Vec::new();
    for _ in 0..a.connections {
        clients.push(a.endpoint.connect().await?);
    }
    let dir = format!("{}/{:?}", a.dir.trim_end_matches('/'), a.op).to_lowercase();
    // Opens and deletes need the files first (not timed).
    if matches!(a.op, NnOp::Open | NnOp::Delete) {
        eprintln!("creating {} files to {:?} (not timed)", a.ops, a.op);
        let (_, errors) = nn_run(&clients, NnOp::Create, &dir, a.ops, a.concurrency).await;
        if errors > 0 {
            bail!("{errors} creates failed while preparing");
        }
    }
    let (seconds, errors) = nn_run(&clients, a.op, &dir, a.ops, a.concurrency).await;
    let r = NnResult {
        op: a.op,
        ops: a.ops,
        concurrency: a.concurrency,
        seconds,
        ops_per_sec: a.ops as f64 / seconds,
        errors,
    };
    if a.json {
        return output::json(&r);
    }
    output::table(
        &["op", "ops", "outstanding", "seconds", "ops/s", "errors"],
        &[vec![
            format!("{:?}", r.op).to_lowercase(),
            r.ops.to_string(),
            r.concurrency.to_string(),
            format!("{:.2}", r.seconds),
            format!("{:.0}", r.ops_per_sec),
            r.errors.to_string(),
        ]],
    );
    Ok(())
}

#[derive(Args)]
pub struct BenchMemoryArgs {
    /// Files, each with one block of three replicas.
    #[arg(long, default_value_t = 1_000_000)]
    files: u64,
    #[arg(long)]
    json: bool,
}

pub fn bench_memory(a: BenchMemoryArgs) -> anyhow::Result<()> {
    let r = hstack_dfs::namenode::memory_footprint(a.files)?;
    if a.json {
        return output::json(&r);
    }
    output::table(
        &[
            "files",
            "blocks",
            "objects",
            "resident bytes",
            "bytes/object",
            "image write",
            "image size",
        ],
        &[vec![
            r.files.to_string(),
            r.blocks.to_string(),
            r.objects.to_string(),
            human_bytes(r.bytes),
            format!("{:.1}", r.bytes_per_object),
            format!("{:.0} ms", r.image_write_seconds * 1e3),
            human_bytes(r.image_bytes),
        ]],
    );
    Ok(())
}
