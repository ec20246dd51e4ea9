//! The one hstack binary: daemons, clients, the local cluster, benchmarks.

mod local;
mod output;
mod zk;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hstack_daemon::{CommonArgs, ConfigOutcome, Shutdown};
use tracing::Instrument;

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
}

/// What `main` runs once the runtime is up.
enum Job {
    Coord(Box<hstack_coord::CoordConfig>),
    Zk(zk::ZkArgs),
    Local(local::LocalArgs),
    BenchCoord(zk::BenchCoordArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A daemon's configuration comes first: it sizes the runtime.
    let job = match cli.cmd {
        Cmd::Coord { common, flags } => match coord_config(&common, &flags) {
            Ok(Some(cfg)) => Job::Coord(Box::new(cfg)),
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        Cmd::Zk(args) => Job::Zk(args),
        Cmd::Local(args) => Job::Local(args),
        Cmd::Bench {
            what: BenchCmd::Coord(args),
        } => Job::BenchCoord(args),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Job::Coord(cfg) = &job {
        if cfg.worker_threads > 0 {
            builder.worker_threads(cfg.worker_threads);
        }
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match job {
            Job::Coord(cfg) => run_coord(*cfg).await,
            Job::Zk(args) => zk::run(args).await,
            Job::Local(args) => local::run(args).await,
            Job::BenchCoord(args) => zk::bench(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The layered, validated configuration; `None` when a flag asked only to
/// print something (and it was printed).
fn coord_config(
    common: &CommonArgs,
    flags: &hstack_coord::CoordFlags,
) -> anyhow::Result<Option<hstack_coord::CoordConfig>> {
    let validate = |c: &hstack_coord::CoordConfig| c.validate().map_err(|e| e.message);
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
