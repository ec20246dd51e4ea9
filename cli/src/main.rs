//! The one hstack binary: daemons, clients, the local cluster, benchmarks.

mod admin;
mod bench;
mod dfs;
mod local;
mod mr;
mod output;
mod yarn;
mod zk;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hstack_daemon::{run_daemon, DaemonArgs};

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

/// `hstack dfs -cat f | head` ends quietly when `head` has read enough,
/// as `cat` does: a client writing to a closed pipe dies of SIGPIPE instead
/// of panicking on the write error (Rust ignores SIGPIPE by default).
fn quiet_on_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restores the default disposition of one signal before any
    // other thread exists; no handler code runs.
    #[allow(unsafe_code)]
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
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
    Coord(DaemonArgs<hstack_coord::CoordConfig>),
    /// Coordination service client commands (in the spirit of zkCli).
    Zk(zk::ZkArgs),
    /// Run the file system's namenode.
    Namenode(DaemonArgs<hstack_dfs::namenode::NamenodeConfig>),
    /// Run a file system datanode.
    Datanode(DaemonArgs<hstack_dfs::datanode::DatanodeConfig>),
    /// File system shell (the verbs of `hdfs dfs`, in its spelling or ours).
    Dfs(dfs::DfsArgs),
    /// File system administration: report, fsck, safe mode, decommission.
    Admin(admin::AdminArgs),
    /// Run the scheduler's resource manager (YARN-style).
    Resourcemanager(DaemonArgs<hstack_scheduler::RmConfig>),
    /// Run a node manager: it runs containers for the resource manager.
    Nodemanager(DaemonArgs<hstack_scheduler::NmConfig>),
    /// Applications: the distributed shell, list, status, kill, logs.
    App(yarn::AppArgs),
    /// Node managers as the resource manager sees them.
    Node(yarn::NodeArgs),
    /// The scheduler's queues.
    Queue(yarn::QueueArgs),
    /// MapReduce: built-in jobs, Hadoop Streaming, job status and counters.
    Mr(mr::MrArgs),
    /// A whole cluster on this machine, as child processes.
    Local(local::LocalArgs),
    /// Benchmarks against a running cluster.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCmd,
    },
}

fn main() -> ExitCode {
    // `hstack dfs -ls …`, `hstack admin -report -live`: Hadoop's spellings.
    let cli = Cli::parse_from(dfs::hadoop_argv(std::env::args_os().collect()));
    match cli.cmd {
        // Every daemon goes through the one launch path (hstack_daemon::role).
        Cmd::Coord(args) => run_daemon::<hstack_coord::CoordRole>(args),
        Cmd::Namenode(args) => {
            return_freed_memory_at_once();
            run_daemon::<hstack_dfs::namenode::NamenodeRole>(args)
        }
        Cmd::Datanode(args) => run_daemon::<hstack_dfs::datanode::DatanodeRole>(args),
        Cmd::Resourcemanager(args) => run_daemon::<hstack_scheduler::ResourceManagerRole>(args),
        Cmd::Nodemanager(args) => {
            // The MapReduce shuffle runs in node managers that name it.
            hstack_mapreduce::shuffle::register();
            run_daemon::<hstack_scheduler::NodeManagerRole>(args)
        }
        client => run_client(client),
    }
}

/// A client command: its runtime, its logging, and its exit status.
fn run_client(cmd: Cmd) -> ExitCode {
    quiet_on_closed_pipe();
    if matches!(
        cmd,
        Cmd::Bench {
            what: bench::BenchCmd::NamenodeMemory(_)
        }
    ) {
        return_freed_memory_at_once();
    }
    // The coordination benchmarks' load generator (gRPC or ZooKeeper's
    // protocol, the same for every system measured) runs on one thread: it
    // shares the machine with the ensemble it measures, and one thread
    // costs it about a third less CPU per request than two (no wake-ups
    // across threads, no work stealing), CPU the members then have.
    let mut builder = if matches!(
        cmd,
        Cmd::Bench {
            what: bench::BenchCmd::Coord(_) | bench::BenchCmd::Zk(_)
        }
    ) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(
        cmd,
        Cmd::Dfs(_) | Cmd::Admin(_) | Cmd::Bench { .. } | Cmd::Mr(_)
    ) {
        // The file system client says why it waits (a namenode restarting,
        // a replica that failed).
        hstack_daemon::init_client_tracing();
    }
    let result = rt.block_on(async move {
        match cmd {
            Cmd::Zk(args) => zk::run(args).await,
            Cmd::Dfs(args) => dfs::run(args).await,
            Cmd::Admin(args) => admin::run(args).await,
            Cmd::Local(args) => local::run(args).await,
            Cmd::App(args) => yarn::app(args).await,
            Cmd::Node(args) => yarn::node(args).await,
            Cmd::Queue(args) => yarn::queue(args).await,
            Cmd::Mr(args) => mr::run(args).await,
            Cmd::Bench { what } => bench::run(what).await,
            Cmd::Coord(_)
            | Cmd::Namenode(_)
            | Cmd::Datanode(_)
            | Cmd::Resourcemanager(_)
            | Cmd::Nodemanager(_) => unreachable!("daemons"),
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit_of(&e),
    }
}

/// Prints a failed command's error and picks its exit status: the code's
/// own (distinct per code, `docs/architecture/daemon.md`) when an hstack
/// error is the cause, its name shown; else 1.
fn exit_of(e: &anyhow::Error) -> ExitCode {
    if let Some(s) = e.downcast_ref::<dfs::ExitStatus>() {
        return ExitCode::from(s.0);
    }
    match e
        .chain()
        .find_map(|c| c.downcast_ref::<hstack_proto::Error>())
    {
        Some(err) => {
            eprintln!("error[{}]: {e:#}", err.code.name());
            ExitCode::from(err.code.exit_status())
        }
        None => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
