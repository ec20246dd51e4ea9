//! The one hstack binary: daemons, clients, the local cluster, benchmarks.

mod admin;
mod bench_dfs;
mod dfs;
mod local;
mod output;
mod zk;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hstack_daemon::{CommonArgs, ConfigOutcome, Shutdown};
use tracing::Instrument;

/// mimalloc instead of glibc's allocator: under the namenode's create
/// benchmark glibc's malloc and free (with `malloc_consolidate`) were about
/// a tenth of all CPU; see docs/benchmarks.md.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (the crate does
/// not name it; the version is pinned exactly in Cargo.toml, and a test
/// checks the number against the option's documented default).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes the allocator give freed memory back to the system at once
/// rather than after its default second. For the namenode, whose resident
/// memory is what operators size it by and which moves no bulk data: with
/// the delay, a namenode that just loaded a million files showed 229 bytes
/// per object instead of the 126 it holds. Datanodes keep the delay:
/// without it their 1 MiB buffers went back and were faulted in again, and
/// replicated writes lost about a fifth of their throughput.
fn return_freed_memory_at_once() {
    // SAFETY: sets a plain integer option (unless the environment set it:
    // MIMALLOC_PURGE_DELAY still wins); mimalloc reads options at any
    // time, and this runs before any other thread is started.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set_default(PURGE_DELAY, 0)
    };
}

#[derive(Parser)]
#[command(
    name = "hstack",
    version,
    about = "A Hadoop-style data stack in one binary"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a coordination service member (ZooKeeper-style, Raft-replicated).
    Coord {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        flags: hstack_coord::CoordFlags,
    },
    /// Coordination service client commands (in the spirit of zkCli).
    Zk(zk::ZkArgs),
    /// Run the file system's namenode.
    Namenode {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        flags: hstack_dfs::namenode::NamenodeFlags,
    },
    /// Run a file system datanode.
    Datanode {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        flags: hstack_dfs::datanode::DatanodeFlags,
    },
    /// File system shell (the verbs of `hdfs dfs`).
    Dfs(dfs::DfsArgs),
    /// File system administration: report, fsck, safe mode, decommission.
    Admin(admin::AdminArgs),
    /// A whole cluster on this machine, as child processes.
    Local(local::LocalArgs),
    /// Benchmarks against a running cluster.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Closed-loop load on the coordination service: ops/s and latency.
    Coord(zk::BenchCoordArgs),
    /// File system throughput: write or read files through the datanodes.
    Dfs(bench_dfs::BenchDfsArgs),
    /// Namenode operations per second over real RPC (NNThroughputBenchmark's shape).
    Namenode(bench_dfs::BenchNamenodeArgs),
    /// The namenode's memory per file and block, measured in this process.
    NamenodeMemory(bench_dfs::BenchMemoryArgs),
}

/// What `main` runs once the runtime is up.
enum Job {
    Coord(Box<hstack_coord::CoordConfig>),
    Zk(zk::ZkArgs),
    Namenode(Box<hstack_dfs::namenode::NamenodeConfig>),
    Datanode(Box<hstack_dfs::datanode::DatanodeConfig>),
    Dfs(dfs::DfsArgs),
    Admin(admin::AdminArgs),
    Local(local::LocalArgs),
    BenchCoord(zk::BenchCoordArgs),
    BenchDfs(bench_dfs::BenchDfsArgs),
    BenchNamenode(bench_dfs::BenchNamenodeArgs),
    BenchMemory(bench_dfs::BenchMemoryArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A daemon's configuration comes first: it sizes the runtime.
    let job = match job_of(cli.cmd) {
        Ok(Some(job)) => job,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(job, Job::Namenode(_) | Job::BenchMemory(_)) {
        return_freed_memory_at_once();
    }
    // The coordination benchmark's load generator runs on one thread: it
    // shares the machine with the ensemble it measures, and one thread
    // costs it about a third less CPU per request than two (no wake-ups
    // across threads, no work stealing), CPU the members then have.
    let mut builder = if matches!(job, Job::BenchCoord(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let workers = match &job {
        Job::Coord(cfg) => cfg.worker_threads,
        Job::Namenode(cfg) => cfg.worker_threads,
        Job::Datanode(cfg) => cfg.worker_threads,
        _ => 0,
    };
    if workers > 0 {
        builder.worker_threads(workers);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(
        job,
        Job::Dfs(_) | Job::Admin(_) | Job::BenchDfs(_) | Job::BenchNamenode(_)
    ) {
        // The file system client says why it waits (a namenode restarting,
        // a replica that failed).
        hstack_daemon::init_client_tracing();
    }
    let result = rt.block_on(async move {
        match job {
            Job::Coord(cfg) => run_coord(*cfg).await,
            Job::Zk(args) => zk::run(args).await,
            Job::Namenode(cfg) => run_namenode(*cfg).await,
            Job::Datanode(cfg) => run_datanode(*cfg).await,
            Job::Dfs(args) => dfs::run(args).await,
            Job::Admin(args) => admin::run(args).await,
            Job::Local(args) => local::run(args).await,
            Job::BenchCoord(args) => zk::bench(args).await,
            Job::BenchDfs(args) => bench_dfs::bench_dfs(args).await,
            Job::BenchNamenode(args) => bench_dfs::bench_namenode(args).await,
            Job::BenchMemory(args) => bench_dfs::bench_memory(args),
        }
    });
    // A blocking thread stuck on a dead disk must not keep the process
    // from exiting (dropping the runtime would wait for it).
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<dfs::ExitStatus>().is_some() => {
            ExitCode::from(e.downcast_ref::<dfs::ExitStatus>().map_or(1, |s| s.0))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What to run; `None` when a daemon's flags asked only to print its
/// configuration (and it was printed).
fn job_of(cmd: Cmd) -> anyhow::Result<Option<Job>> {
    use hstack_dfs::{datanode::DatanodeConfig, namenode::NamenodeConfig};
    Ok(match cmd {
        Cmd::Coord { common, flags } => {
            coord_config(&common, &flags)?.map(|c| Job::Coord(Box::new(c)))
        }
        Cmd::Namenode { common, flags } => {
            daemon_config(&common, &flags, NamenodeConfig::validate)?
                .map(|c| Job::Namenode(Box::new(c)))
        }
        Cmd::Datanode { common, flags } => {
            daemon_config(&common, &flags, DatanodeConfig::validate)?
                .map(|c| Job::Datanode(Box::new(c)))
        }
        Cmd::Zk(args) => Some(Job::Zk(args)),
        Cmd::Dfs(args) => Some(Job::Dfs(args)),
        Cmd::Admin(args) => Some(Job::Admin(args)),
        Cmd::Local(args) => Some(Job::Local(args)),
        Cmd::Bench { what } => Some(match what {
            BenchCmd::Coord(args) => Job::BenchCoord(args),
            BenchCmd::Dfs(args) => Job::BenchDfs(args),
            BenchCmd::Namenode(args) => Job::BenchNamenode(args),
            BenchCmd::NamenodeMemory(args) => Job::BenchMemory(args),
        }),
    })
}

fn coord_config(
    common: &CommonArgs,
    flags: &hstack_coord::CoordFlags,
) -> anyhow::Result<Option<hstack_coord::CoordConfig>> {
    let validate = |c: &hstack_coord::CoordConfig| c.validate().map_err(|e| e.message);
    daemon_config(common, flags, validate)
}

/// The layered, validated configuration; `None` when a flag asked only to
/// print something (and it was printed).
fn daemon_config<T, F>(
    common: &CommonArgs,
    flags: &F,
    validate: impl Fn(&T) -> Result<(), String>,
) -> anyhow::Result<Option<T>>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default,
    F: serde::Serialize,
{
    match hstack_daemon::layer_config(common, "HSTACK_", flags, validate)? {
        ConfigOutcome::Exit(text) => {
            print!("{text}");
            Ok(None)
        }
        ConfigOutcome::Run(cfg) => Ok(Some(cfg)),
    }
}

async fn run_coord(cfg: hstack_coord::CoordConfig) -> anyhow::Result<()> {
    let format = cfg.log_format.parse().map_err(anyhow::Error::msg)?;
    hstack_daemon::init_tracing(format, &cfg.log_level);
    hstack_daemon::install_abort_on_panic();
    let span = tracing::info_span!("node", role = "coord", id = cfg.id);
    serve_coord(cfg).instrument(span).await
}

async fn serve_coord(cfg: hstack_coord::CoordConfig) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let registry = prometheus::Registry::new();
    let handle = hstack_coord::run(cfg.clone(), shutdown, registry).await?;
    hstack_daemon::announce(
        &cfg.data_path(),
        "coord",
        &cfg.id.to_string(),
        &[
            ("client", handle.client_addr),
            ("raft", handle.raft_addr),
            ("http", handle.http_addr),
        ],
    )?;
    handle.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// Logging and the panic hook as the daemon's configuration says, then
/// `body` inside the daemon's span.
async fn run_daemon(
    log_format: &str,
    log_level: &str,
    span: tracing::Span,
    body: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let format = log_format.parse().map_err(anyhow::Error::msg)?;
    hstack_daemon::init_tracing(format, log_level);
    hstack_daemon::install_abort_on_panic();
    body.instrument(span).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn run_namenode(cfg: hstack_dfs::namenode::NamenodeConfig) -> anyhow::Result<()> {
    let span = tracing::info_span!("node", role = "namenode");
    run_daemon(
        &cfg.log_format.clone(),
        &cfg.log_level.clone(),
        span,
        async move {
            let shutdown = Shutdown::new();
            shutdown.trigger_on_signals();
            let registry = prometheus::Registry::new();
            let handle = hstack_dfs::namenode::run(cfg.clone(), shutdown, registry).await?;
            hstack_daemon::announce(
                &cfg.name_path(),
                "namenode",
                "nn",
                &[("rpc", handle.rpc_addr), ("http", handle.http_addr)],
            )?;
            handle.wait().await;
            Ok(())
        },
    )
    .await
}

async fn run_datanode(cfg: hstack_dfs::datanode::DatanodeConfig) -> anyhow::Result<()> {
    let span = tracing::info_span!("node", role = "datanode");
    run_daemon(
        &cfg.log_format.clone(),
        &cfg.log_level.clone(),
        span,
        async move {
            let shutdown = Shutdown::new();
            shutdown.trigger_on_signals();
            let registry = prometheus::Registry::new();
            let handle = hstack_dfs::datanode::run(cfg.clone(), shutdown, registry).await?;
            hstack_daemon::announce(
                &cfg.data_paths()[0],
                "datanode",
                &handle.id.clone(),
                &[
                    ("transfer", handle.transfer_addr),
                    ("rpc", handle.rpc_addr),
                    ("http", handle.http_addr),
                ],
            )?;
            handle.wait().await?;
            Ok(())
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_named() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
            || std::env::var_os("MIMALLOC_RESET_DELAY").is_some()
        {
            eprintln!("MIMALLOC_PURGE_DELAY/RESET_DELAY set: the default cannot be checked");
            return;
        }
        // SAFETY: reads an integer option.
        #[allow(unsafe_code)]
        let ms = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        assert_eq!(ms, 1000, "mimalloc 3 purges after 1000 ms by default");
    }
}
