//! `hstack bench …`: parses, runs an engine of `hstack-bench`, prints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use hstack_bench::coord::{BenchOpts, Protocol, Workload};
use hstack_bench::dfs::{DfsBench, DfsWorkload, NnBench, NnOp, ReadPath};

use crate::dfs::NnEndpoint;
use crate::output::{self, human_bytes, parse_size};
use crate::zk::Endpoints;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Closed-loop load on the coordination service: ops/s and latency.
    Coord(BenchCoordArgs),
    /// The same load through ZooKeeper's protocol (a lean pipelined jute
    /// client, one connection per session): against hstack's ZooKeeper
    /// ports, or a real ZooKeeper ensemble (`--servers`) to compare the
    /// two with one load generator.
    Zk(BenchCoordArgs),
    /// File system throughput: write or read files through the datanodes.
    Dfs(BenchDfsArgs),
    /// Namenode operations per second over real RPC (NNThroughputBenchmark's shape).
    Namenode(BenchNamenodeArgs),
    /// The namenode's memory per file and block, measured in this process.
    NamenodeMemory(BenchMemoryArgs),
    /// The scheduler under simulated load, in this process (as Hadoop's
    /// Scheduler Load Simulator): allocations per second and latency.
    Scheduler(BenchSchedulerArgs),
    /// End to end on a running cluster: submit to every container of a
    /// distributed shell running.
    Shell(BenchShellArgs),
    /// MapReduce end to end on a running cluster: wordcount, terasort, or
    /// the fixed cost of a one-block job.
    Mr(BenchMrArgs),
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Coord(a) => coord(a, Protocol::Grpc).await,
        BenchCmd::Zk(a) => coord(a, Protocol::Zookeeper).await,
        BenchCmd::Dfs(a) => dfs(a).await,
        BenchCmd::Namenode(a) => namenode(a).await,
        BenchCmd::NamenodeMemory(a) => memory(a),
        BenchCmd::Scheduler(a) => scheduler(a),
        BenchCmd::Shell(a) => shell(a).await,
        BenchCmd::Mr(a) => mr(a).await,
    }
}

#[derive(Args)]
pub struct BenchCoordArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[arg(long, value_enum, default_value = "write")]
    workload: Workload,
    /// Outstanding requests.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Sessions the requests are spread over (at most one per request).
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Linearizable reads (read index through the leader; gRPC only).
    #[arg(long)]
    linearizable: bool,
    /// `bench zk`: the ZooKeeper-protocol servers (`host:port,…`); default
    /// the ZooKeeper ports of the local cluster's members.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    #[arg(long)]
    json: bool,
}

async fn coord(a: BenchCoordArgs, protocol: Protocol) -> anyhow::Result<()> {
    let members = match protocol {
        Protocol::Grpc => a.endpoints.coord_members()?,
        Protocol::Zookeeper if !a.servers.is_empty() => a.servers.clone(),
        Protocol::Zookeeper => {
            let dir = a
                .endpoints
                .cluster
                .clone()
                .unwrap_or_else(|| std::path::PathBuf::from(crate::local::DEFAULT_DIR));
            let zk = crate::local::ClusterFile::load(&dir)?.addrs("coord", "zk");
            if zk.is_empty() {
                anyhow::bail!("no ZooKeeper ports in {}: pass --servers", dir.display());
            }
            zk
        }
    };
    if protocol == Protocol::Zookeeper && a.linearizable {
        anyhow::bail!("--linearizable is for hstack's gRPC; over ZooKeeper's protocol, sync first");
    }
    let opts = BenchOpts {
        protocol,
        members,
        workload: a.workload,
        concurrency: a.concurrency,
        sessions: a.sessions,
        warmup: Duration::from_secs(a.warmup_secs),
        duration: Duration::from_secs(a.duration_secs.max(1)),
        value_size: a.value_size,
        keys: a.keys,
        linearizable: a.linearizable,
    };
    let r = hstack_bench::coord::run_bench(opts).await?;
    if a.json {
        return output::json(&r);
    }
    output::table(
        &[
            "protocol",
            "workload",
            "outstanding",
            "sessions",
            "ops/s",
            "p50",
            "p99",
            "p99.9",
            "errors",
        ],
        &[vec![
            format!("{:?}", r.protocol).to_lowercase(),
            format!("{:?}", r.workload).to_lowercase(),
            r.concurrency.to_string(),
            r.sessions.to_string(),
            format!("{:.0}", r.ops_per_sec),
            format!("{} µs", r.p50_us),
            format!("{} µs", r.p99_us),
            format!("{} µs", r.p999_us),
            r.errors.to_string(),
        ]],
    );
    Ok(())
}

#[derive(Args)]
pub struct BenchDfsArgs {
    #[command(flatten)]
    endpoint: NnEndpoint,
    #[arg(value_enum)]
    workload: DfsWorkload,
    /// Bytes per file (suffixes k, m, g, …: powers of 1024).
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
    /// With `--path both`, before each path.
    #[arg(long)]
    drop_caches: bool,
    /// How `read` reads replicas on this host: `tcp` through the datanodes'
    /// transfer ports, `local` from the replicas' files (short-circuit
    /// reads), `both` one after the other (tcp first), one row each
    /// (`--json`: an array of both results).
    #[arg(long, value_enum, default_value = "both")]
    path: PathChoice,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PathChoice {
    Tcp,
    Local,
    Both,
}

async fn dfs(a: BenchDfsArgs) -> anyhow::Result<()> {
    let c = a.endpoint.connect().await?;
    let paths: &[ReadPath] = match (a.workload, a.path) {
        (DfsWorkload::Write, _) => &[ReadPath::Tcp],
        (_, PathChoice::Tcp) => &[ReadPath::Tcp],
        (_, PathChoice::Local) => &[ReadPath::Local],
        (_, PathChoice::Both) => &[ReadPath::Tcp, ReadPath::Local],
    };
    let mut results = Vec::new();
    for &read_path in paths {
        results.push(dfs_run(&a, &c, read_path).await?);
    }
    if a.json {
        return match results.as_slice() {
            [one] => output::json(one),
            all => output::json(&all),
        };
    }
    let rows = results
        .iter()
        .map(|r| {
            vec![
                format!("{:?}", r.workload).to_lowercase(),
                r.path.unwrap_or("-").to_string(),
                r.files.to_string(),
                human_bytes(r.bytes),
                r.replication.to_string(),
                format!("{:.2}", r.seconds),
                format!("{:.0}", r.mb_per_sec),
            ]
        })
        .collect::<Vec<_>>();
    output::table(
        &[
            "workload",
            "path",
            "files",
            "bytes",
            "replication",
            "seconds",
            "MB/s",
        ],
        &rows,
    );
    Ok(())
}

/// One run of `a` along `read_path`.
async fn dfs_run(
    a: &BenchDfsArgs,
    c: &hstack_dfs::client::DfsClient,
    read_path: ReadPath,
) -> anyhow::Result<hstack_bench::dfs::DfsResult> {
    let b = DfsBench {
        workload: a.workload,
        size: a.size,
        concurrency: a.concurrency,
        replication: a.replication,
        block_size: a.block_size.unwrap_or(0),
        dir: a.dir.clone(),
        drop_caches: a.drop_caches,
        read_path,
    };
    let done = Arc::new(AtomicU64::new(0));
    let total = a.size.saturating_mul(a.concurrency as u64);
    let bar = output::progress(
        &format!("{:?}", a.workload).to_lowercase(),
        Some(total),
        a.json,
    );
    let shown = {
        let (done, bar) = (done.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let r = hstack_bench::dfs::run_dfs(c, &b, done).await;
    shown.abort();
    bar.finish_and_clear();
    r
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

async fn namenode(a: BenchNamenodeArgs) -> anyhow::Result<()> {
    if a.connections == 0 {
        anyhow::bail!("--connections must be at least 1");
    }
    let mut clients = Vec::new();
    for _ in 0..a.connections {
        clients.push(a.endpoint.connect().await?);
    }
    let b = NnBench {
        op: a.op,
        ops: a.ops,
        concurrency: a.concurrency,
        dir: a.dir.clone(),
    };
    let r = hstack_bench::dfs::run_namenode(&clients, &b).await?;
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

fn memory(a: BenchMemoryArgs) -> anyhow::Result<()> {
    let r = hstack_bench::dfs::memory_footprint(a.files)?;
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

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SchedChoice {
    Fifo,
    Capacity,
    Fair,
    /// Each of the three in turn.
    All,
}

#[derive(Args)]
pub struct BenchSchedulerArgs {
    #[arg(long = "scheduler", value_enum, default_value = "all")]
    kind: SchedChoice,
    /// Simulated node managers.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    #[arg(long, default_value_t = 40)]
    nodes_per_rack: usize,
    /// Simulated running applications, each always asking.
    #[arg(long, default_value_t = 1000)]
    apps: usize,
    /// Each node's memory (suffixes as `dfs -put --block-size`).
    #[arg(long, default_value = "64g", value_parser = parse_size)]
    node_memory: u64,
    #[arg(long, default_value_t = 32)]
    node_vcores: u32,
    /// Each container's memory.
    #[arg(long, default_value = "1g", value_parser = parse_size)]
    container_memory: u64,
    #[arg(long, default_value_t = 1)]
    container_vcores: u32,
    /// Simulated seconds measured (one heartbeat of every node each).
    #[arg(long, default_value_t = 30)]
    rounds: u64,
    #[arg(long, default_value_t = 5)]
    warmup_rounds: u64,
    /// A container runs MIN..=MAX simulated seconds.
    #[arg(long, default_value_t = 5)]
    runtime_min: u64,
    #[arg(long, default_value_t = 20)]
    runtime_max: u64,
    /// Asks each application keeps outstanding.
    #[arg(long, default_value_t = 50)]
    outstanding: u32,
    /// The fraction of asks node-local to three random nodes.
    #[arg(long, default_value_t = 0.5)]
    local_fraction: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

fn scheduler(a: BenchSchedulerArgs) -> anyhow::Result<()> {
    use hstack_bench::scheduler::{run_scheduler, SchedBench};
    use hstack_scheduler::{Resource, SchedulerKind};
    let kinds = match a.kind {
        SchedChoice::Fifo => vec![SchedulerKind::Fifo],
        SchedChoice::Capacity => vec![SchedulerKind::Capacity],
        SchedChoice::Fair => vec![SchedulerKind::Fair],
        SchedChoice::All => vec![
            SchedulerKind::Fifo,
            SchedulerKind::Capacity,
            SchedulerKind::Fair,
        ],
    };
    let mb = |b: u64| b.div_ceil(1 << 20);
    let mut results = Vec::new();
    for kind in kinds {
        let b = SchedBench {
            kind,
            nodes: a.nodes,
            nodes_per_rack: a.nodes_per_rack,
            apps: a.apps,
            node_memory_mb: mb(a.node_memory),
            node_vcores: a.node_vcores,
            container: Resource::new(mb(a.container_memory), a.container_vcores),
            rounds: a.rounds,
            warmup_rounds: a.warmup_rounds,
            runtime_secs: (a.runtime_min, a.runtime_max.max(a.runtime_min)),
            outstanding: a.outstanding,
            local_fraction: a.local_fraction.clamp(0.0, 1.0),
            seed: a.seed,
        };
        let total = a.rounds + a.warmup_rounds;
        let bar = output::counter(&format!("{} scheduler, rounds", kind.name()), total, a.json);
        let r = run_scheduler(&b, |round| bar.set_position(round));
        bar.finish_and_clear();
        results.push(r?);
    }
    if a.json {
        return output::json(&results);
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.scheduler.to_string(),
                r.nodes.to_string(),
                r.apps.to_string(),
                r.allocations.to_string(),
                format!("{:.0}", r.allocations_per_sec),
                format!("{} / {} µs", r.heartbeat_p50_us, r.heartbeat_p99_us),
                format!(
                    "{:.2} / {:.2} µs",
                    r.per_allocation_p50_us, r.per_allocation_p99_us
                ),
                format!("{} / {} ms", r.wait_p50_ms, r.wait_p99_ms),
                format!(
                    "{:.0}% / {:.0}%",
                    r.node_local * 100.0,
                    r.rack_local * 100.0
                ),
                format!("{:.0}%", r.utilization * 100.0),
            ]
        })
        .collect();
    output::table(
        &[
            "scheduler",
            "nodes",
            "apps",
            "allocations",
            "allocations/s",
            "heartbeat p50 / p99",
            "per allocation p50 / p99",
            "ask wait p50 / p99 (simulated)",
            "node- / rack-local",
            "cluster used",
        ],
        &rows,
    );
    Ok(())
}

#[derive(Args)]
pub struct BenchShellArgs {
    #[command(flatten)]
    rm: crate::yarn::RmEndpoint,
    #[arg(long, default_value_t = 20)]
    containers: u32,
    #[arg(long, default_value = "256m", value_parser = parse_size)]
    memory: u64,
    #[arg(long, default_value_t = 5)]
    runs: u32,
}

async fn shell(a: BenchShellArgs) -> anyhow::Result<()> {
    use hstack_bench::scheduler::{run_shell, ShellBench};
    let exe = std::env::current_exe()?.display().to_string();
    let b = ShellBench {
        rm: a.rm.address()?,
        containers: a.containers,
        memory_mb: a.memory.div_ceil(1 << 20),
        runs: a.runs,
        exe,
    };
    let json = a.rm.json();
    let bar = output::counter("runs", u64::from(a.runs), json);
    let r = run_shell(&b, |n| bar.set_position(u64::from(n))).await;
    bar.finish_and_clear();
    let r = r?;
    if json {
        return output::json(&r);
    }
    output::table(
        &["containers", "runs", "median", "min", "max"],
        &[vec![
            r.containers.to_string(),
            r.runs.to_string(),
            format!("{:.3} s", r.median_secs),
            format!("{:.3} s", r.min_secs),
            format!("{:.3} s", r.max_secs),
        ]],
    );
    Ok(())
}

#[derive(Args)]
pub struct BenchMrArgs {
    #[command(flatten)]
    at: crate::mr::MrEndpoint,
    #[arg(value_enum)]
    workload: hstack_bench::mr::MrWorkload,
    /// Input bytes (made once, kept in --dir for later runs).
    #[arg(long, default_value = "1g", value_parser = parse_size)]
    size: u64,
    #[arg(long, default_value_t = 2)]
    reduces: u32,
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Also time the tools one would use instead, on the same data.
    #[arg(long)]
    reference: bool,
    /// Where inputs and outputs go in the file system.
    #[arg(long, default_value = "/bench/mr")]
    dir: String,
    /// A setting of the measured jobs (`-D mapreduce.task.io.sort.mb=200`).
    /// Unless given, mapreduce.job.running.map.limit is this machine's
    /// CPUs: on one machine more maps at once than cores only share the
    /// caches (see docs/benchmarks.md).
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    define: Vec<String>,
}

async fn mr(a: BenchMrArgs) -> anyhow::Result<()> {
    use hstack_bench::mr::{run_mr, MrBench};
    let b = MrBench {
        workload: a.workload,
        size: a.size,
        reduces: a.reduces,
        runs: a.runs,
        reference: a.reference,
        namenode: a.at.namenode_address()?,
        rm: a.at.rm_address()?,
        exe: std::env::current_exe()?.display().to_string(),
        dir: a.dir.trim_end_matches('/').to_string(),
        user: a.at.user(),
        conf: {
            let mut c = hstack_mapreduce::JobConf::default();
            for d in &a.define {
                c.set_pair(d)?;
            }
            let limit = hstack_mapreduce::conf::RUNNING_MAP_LIMIT;
            if c.get(limit).is_none() {
                let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
                c.set(limit, cpus.to_string());
            }
            c.0.into_iter().collect()
        },
    };
    let json = a.at.json();
    let bar = output::counter("runs", u64::from(a.runs), json);
    let r = run_mr(&b, |n| bar.set_position(u64::from(n))).await;
    bar.finish_and_clear();
    let r = r?;
    if json {
        return output::json(&r);
    }
    let mut rows = vec![vec![
        format!("hstack mr {:?}", r.workload).to_lowercase(),
        output::human_bytes(r.bytes),
        format!("{:.3} s", r.median_secs),
        format!("{:.3}–{:.3} s", r.min_secs, r.max_secs),
        format!("{:.1} MB/s", r.mb_per_sec),
        format!(
            "{} maps ({} data-local), {} reduces{}",
            r.maps,
            r.data_local_maps,
            r.reduces,
            if r.uber { ", in the master" } else { "" }
        ),
    ]];
    if let Some(x) = &r.reference {
        rows.push(vec![
            x.tool.clone(),
            output::human_bytes(r.bytes),
            format!("{:.3} s", x.seconds),
            String::new(),
            format!("{:.1} MB/s", r.bytes as f64 / 1e6 / x.seconds),
            format!("hstack takes {:.2}x its time", r.median_secs / x.seconds),
        ]);
    }
    output::table(
        &["what", "input", "median", "range", "throughput", "notes"],
        &rows,
    );
    Ok(())
}
