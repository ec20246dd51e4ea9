//! `hstack local up|status|down`: a pseudo-distributed cluster on this
//! machine as child processes of the same binary, described by
//! `DIR/cluster.json` so client commands (`--cluster DIR`) can find it.
//!
//! Every daemon binds its own ports (ephemeral on 127.0.0.1 the first
//! time) and announces them; they are kept in `cluster.json`, so `down`
//! then `up` restarts the same cluster on the same addresses (the Raft
//! membership remembers them). The coordination ensemble is formed once,
//! through the Bootstrap RPC, when its members have announced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hstack_daemon::process::DaemonProcess;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::output;

pub const DEFAULT_DIR: &str = "./local-cluster";
const CLUSTER_FILE: &str = "cluster.json";

#[derive(Args)]
pub struct LocalArgs {
    #[command(subcommand)]
    cmd: LocalCmd,
}

#[derive(Subcommand)]
enum LocalCmd {
    /// Start the local cluster and return once it is ready.
    Up {
        #[arg(long, env = "HSTACK_CLUSTER", default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Coordination members (an odd number: 1, 3, 5 or 7).
        #[arg(long, default_value_t = 3)]
        coord: u64,
        /// File system datanodes, split over two racks (each on its own
        /// loopback address, 127.0.1.N).
        #[arg(long, default_value_t = 6)]
        datanodes: u64,
        /// Seconds to wait for the cluster to become ready.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Each daemon: alive, ready, addresses.
    Status {
        #[arg(long, env = "HSTACK_CLUSTER", default_value = DEFAULT_DIR)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Stop every daemon of the local cluster (data is kept).
    Down {
        #[arg(long, env = "HSTACK_CLUSTER", default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonEntry {
    pub role: String,
    pub id: String,
    pub pid: u32,
    pub addrs: BTreeMap<String, String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterFile {
    pub daemons: Vec<DaemonEntry>,
}

impl ClusterFile {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let p = dir.join(CLUSTER_FILE);
        let s =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_str(&s).with_context(|| format!("{} is not a cluster file", p.display()))
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(CLUSTER_FILE);
        hstack_daemon::write_atomic(&path, serde_json::to_string_pretty(self)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn addrs(&self, role: &str, key: &str) -> Vec<String> {
        self.daemons
            .iter()
            .filter(|d| d.role == role)
            .filter_map(|d| d.addrs.get(key).cloned())
            .collect()
    }
}

fn alive(pid: u32) -> bool {
    hstack_daemon::process::alive(pid)
}

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    match args.cmd {
        LocalCmd::Up {
            dir,
            coord,
            datanodes,
            timeout_secs,
        } => up(&dir, coord, datanodes, Duration::from_secs(timeout_secs)).await,
        LocalCmd::Status { dir, json } => status(&dir, json).await,
        LocalCmd::Down { dir } => down(&dir),
    }
}

/// The daemons started so far; stopped again if `up` fails part way.
struct Starting {
    procs: Vec<DaemonProcess>,
    done: bool,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if !self.done {
            for p in &mut self.procs {
                p.terminate(Duration::from_secs(5));
            }
        }
    }
}

impl Starting {
    /// Starts one daemon (`hstack ROLE FLAGS…`) in its own process group,
    /// its output appended to `DIR/ROLE-ID.log`, and waits for it to
    /// announce the addresses it bound.
    async fn start(
        &mut self,
        dir: &Path,
        role: &str,
        id: &str,
        data_dir: &Path,
        flags: Vec<String>,
        timeout: Duration,
    ) -> anyhow::Result<&DaemonProcess> {
        let exe = std::env::current_exe().context("cannot find the hstack binary")?;
        let log = dir.join(format!("{role}-{id}.log"));
        let mut p = DaemonProcess::new(&exe, role, id, data_dir, &log, flags).detached();
        p.spawn()?;
        let announced = p.wait_announced(timeout).await;
        self.procs.push(p);
        announced.map_err(anyhow::Error::msg)?;
        Ok(self.procs.last().expect("just pushed"))
    }
}

/// `--FLAG VALUE` pairs.
fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(f, v)| [f.to_string(), v.to_string()])
        .collect()
}

async fn up(dir: &Path, coord: u64, datanodes: u64, timeout: Duration) -> anyhow::Result<()> {
    if coord == 0 || coord % 2 == 0 || coord > 7 {
        bail!("--coord must be 1, 3, 5 or 7 (got {coord})");
    }
    if datanodes == 0 || datanodes > 200 {
        bail!("--datanodes must be between 1 and 200 (got {datanodes})");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let previous = ClusterFile::load(&dir).ok();
    if let Some(prev) = &previous {
        let running: Vec<_> = prev.daemons.iter().filter(|d| alive(d.pid)).collect();
        if !running.is_empty() {
            bail!(
                "the cluster in {} is already running ({} daemons); `hstack local status` shows them, `hstack local down` stops them",
                dir.display(),
                running.len()
            );
        }
        let count = |role: &str| prev.daemons.iter().filter(|d| d.role == role).count() as u64;
        if count("coord") != coord || (count("datanode") != datanodes && count("namenode") > 0) {
            bail!(
                "{} holds a cluster of a different shape; remove the directory to start afresh",
                dir.display()
            );
        }
    }
    // A daemon binds its own ports: ephemeral ones the first time, then
    // the ones it announced, kept in cluster.json (the Raft membership
    // remembers the members' addresses).
    let addr = |role: &str, id: &str, key: &str, host: &str| -> String {
        previous
            .as_ref()
            .and_then(|p| p.daemons.iter().find(|d| d.role == role && d.id == id))
            .and_then(|d| d.addrs.get(key).cloned())
            .unwrap_or_else(|| format!("{host}:0"))
    };
    eprintln!(
        "starting {coord} coordination members, a namenode, {datanodes} datanodes, a resource manager and {datanodes} node managers in {}",
        dir.display()
    );
    let mut s = Starting {
        procs: vec![],
        done: false,
    };
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    for id in 1..=coord {
        let id = id.to_string();
        let a = |k| addr("coord", &id, k, "127.0.0.1");
        let data_dir = dir.join(format!("coord-{id}"));
        let f = flags(&[
            ("--id", &id),
            ("--data-dir", &data_dir.display().to_string()),
            ("--client-addr", &a("client")),
            ("--zk-addr", &zk_addr(&id, a("zk"))),
            ("--raft-addr", &a("raft")),
            ("--http-addr", &a("http")),
            // Members sharing this machine's cores: one runtime thread
            // each (fewer context switches; see docs/benchmarks.md).
            ("--worker-threads", "1"),
        ]);
        s.start(&dir, "coord", &id, &data_dir, f, left()).await?;
    }
    form_ensemble(&s.procs).await?;
    // The file system: a namenode, and datanodes on 127.0.1.N over two racks.
    let nn_dir = dir.join("namenode");
    let f = flags(&[
        ("--name-dir", &nn_dir.display().to_string()),
        ("--rpc-addr", &addr("namenode", "nn", "rpc", "127.0.0.1")),
        ("--http-addr", &addr("namenode", "nn", "http", "127.0.0.1")),
        ("--heartbeat-ms", "1000"),
        ("--replication-interval-ms", "1000"),
        ("--dead-node-timeout-ms", "30000"),
        ("--safemode-extension-ms", "0"),
        ("--worker-threads", "2"),
    ]);
    let nn_rpc = s
        .start(&dir, "namenode", "nn", &nn_dir, f, left())
        .await?
        .addr("rpc");
    for i in 0..datanodes {
        let id = format!("dn{}", i + 1);
        let host = format!("127.0.1.{}", i + 1);
        let a = |k| addr("datanode", &id, k, &host);
        let rack = format!("/rack{}", i * 2 / datanodes + 1);
        let data_dir = dir.join(&id).join("data");
        let f = flags(&[
            ("--id", &id),
            ("--data-dirs", &data_dir.display().to_string()),
            ("--namenode", &nn_rpc),
            ("--transfer-addr", &a("transfer")),
            ("--rpc-addr", &a("rpc")),
            ("--http-addr", &a("http")),
            ("--rack", &rack),
            ("--worker-threads", "1"),
        ]);
        s.start(&dir, "datanode", &id, &data_dir, f, left()).await?;
    }
    // The scheduler: a resource manager, and a node manager beside each
    // datanode (the same host address, the same rack).
    let rm_dir = dir.join("resourcemanager");
    let f = flags(&[
        ("--data-dir", &rm_dir.display().to_string()),
        (
            "--rpc-addr",
            &addr("resourcemanager", "rm", "rpc", "127.0.0.1"),
        ),
        (
            "--http-addr",
            &addr("resourcemanager", "rm", "http", "127.0.0.1"),
        ),
        ("--min-allocation-mb", "128"),
        ("--nm-heartbeat-ms", "500"),
        // Several applications at once on a small machine.
        ("--max-am-resource-percent", "50"),
        ("--worker-threads", "1"),
    ]);
    let rm_rpc = s
        .start(&dir, "resourcemanager", "rm", &rm_dir, f, left())
        .await?
        .addr("rpc");
    for i in 0..datanodes {
        let id = format!("nm{}", i + 1);
        let host = format!("127.0.1.{}", i + 1);
        let a = |k| addr("nodemanager", &id, k, &host);
        let rack = format!("/rack{}", i * 2 / datanodes + 1);
        let data_dir = dir.join(&id);
        let f = flags(&[
            ("--id", &id),
            ("--data-dir", &data_dir.display().to_string()),
            ("--resource-manager", &rm_rpc),
            ("--rpc-addr", &a("rpc")),
            ("--http-addr", &a("http")),
            ("--rack", &rack),
            ("--memory-mb", "4096"),
            ("--vcores", "4"),
            ("--worker-threads", "1"),
            ("--aux-services", "mapreduce_shuffle"),
        ]);
        s.start(&dir, "nodemanager", &id, &data_dir, f, left())
            .await?;
    }
    let cluster = ClusterFile {
        daemons: s
            .procs
            .iter()
            .map(|p| DaemonEntry {
                role: p.role.clone(),
                id: p.id.clone(),
                pid: p.pid().unwrap_or(0),
                addrs: p
                    .addrs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
                data_dir: p.data_dir.clone(),
                log: p.log.clone(),
            })
            .collect(),
    };
    cluster.save(&dir)?;

    // Ready: the members agree on a leader, and the namenode is out of
    // safe mode with every datanode live.
    let addrs = cluster.addrs("coord", "client");
    loop {
        for p in &mut s.procs {
            if !p.is_running() {
                bail!(
                    "{} {} exited during start-up; last lines of {}:\n{}",
                    p.role,
                    p.id,
                    p.log.display(),
                    hstack_daemon::process::tail(&p.log, 15)
                );
            }
        }
        let mut leaders = Vec::new();
        for a in &addrs {
            if let Ok(r) = hstack_coord_client::members_of(a).await {
                leaders.push(r.leader_id);
            }
        }
        let fs_ready = fs_live(&nn_rpc).await == Some(datanodes as usize);
        let nodes_ready = nodes_running(&rm_rpc).await == Some(datanodes as usize);
        if leaders.len() == addrs.len()
            && leaders[0] != 0
            && leaders.iter().all(|l| *l == leaders[0])
            && fs_ready
            && nodes_ready
        {
            eprintln!(
                "ready: coordination leader is member {}; {datanodes} datanodes live; {datanodes} node managers running",
                leaders[0]
            );
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the cluster did not become ready within {timeout:?}; see the logs in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.done = true;
    print_daemons(&cluster, false).await
}

/// Member N's ZooKeeper port: the one it had, else ZooKeeper's 2181 + N - 1
/// when free (so `zkCli.sh` and kazoo find member 1 where they look),
/// else any.
fn zk_addr(id: &str, previous: String) -> String {
    if !previous.ends_with(":0") {
        return previous;
    }
    let n: u16 = id.parse().unwrap_or(1);
    let wanted = format!("127.0.0.1:{}", 2180 + n);
    match std::net::TcpListener::bind(&wanted) {
        Ok(l) => {
            drop(l);
            wanted
        }
        Err(_) => previous,
    }
}

/// Forms the ensemble from members that announced their addresses, unless
/// it was formed before (a restart).
async fn form_ensemble(members: &[DaemonProcess]) -> anyhow::Result<()> {
    let first = members[0].addr("client");
    let known = hstack_coord_client::members_of(&first).await?;
    if !known.members.is_empty() {
        return Ok(());
    }
    let infos = members
        .iter()
        .map(|p| hstack_coord_client::proto::MemberInfo {
            id: p.id.parse().unwrap_or(0),
            raft_addr: p.addr("raft"),
            client_addr: p.addr("client"),
            http_addr: p.addr("http"),
            ..Default::default()
        })
        .collect();
    hstack_coord_client::bootstrap(&first, infos).await?;
    Ok(())
}

/// Live datanodes once the namenode is out of safe mode.
async fn fs_live(namenode: &str) -> Option<usize> {
    let c = hstack_dfs::client::DfsClient::connect(namenode, Default::default())
        .await
        .ok()?;
    let r = c
        .admin()
        .get_datanode_report(hstack_proto::dfs::DatanodeReportRequest { caller: c.caller() })
        .await
        .ok()?
        .into_inner();
    if r.safe_mode {
        return None;
    }
    Some(
        r.datanodes
            .iter()
            .filter(|d| d.state() == hstack_proto::dfs::DatanodeState::Live)
            .count(),
    )
}

/// Node managers running at the resource manager.
async fn nodes_running(rm: &str) -> Option<usize> {
    let c = hstack_scheduler::client::RmClient::new(rm).ok()?;
    let n = c.nodes().await.ok()?;
    Some(n.nodes.iter().filter(|n| n.state == "RUNNING").count())
}

async fn readyz(http: &str) -> bool {
    hstack_daemon::process::is_ready(http).await
}

async fn print_daemons(cluster: &ClusterFile, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for d in &cluster.daemons {
        let up = alive(d.pid);
        let ready = up && readyz(d.addrs.get("http").map(String::as_str).unwrap_or("")).await;
        let state = if !up {
            "stopped"
        } else if ready {
            "ready"
        } else {
            "not ready"
        };
        rows.push(vec![
            d.role.clone(),
            d.id.clone(),
            d.pid.to_string(),
            state.to_string(),
            ["client", "rpc", "transfer"]
                .iter()
                .find_map(|k| d.addrs.get(*k).cloned())
                .unwrap_or_default(),
            d.addrs.get("zk").cloned().unwrap_or_else(|| "-".into()),
            d.addrs.get("http").cloned().unwrap_or_default(),
            d.log.display().to_string(),
        ]);
        items.push(serde_json::json!({"daemon": d, "alive": up, "ready": ready}));
    }
    if json {
        return output::json(&serde_json::json!({ "daemons": items }));
    }
    output::table(
        &[
            "role",
            "id",
            "pid",
            "state",
            "address",
            "zookeeper",
            "http",
            "log",
        ],
        &rows,
    );
    Ok(())
}

async fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = ClusterFile::load(dir)?;
    print_daemons(&cluster, json).await?;
    if !json {
        if let Ok(r) = hstack_coord_client::members(&cluster.addrs("coord", "client")).await {
            println!(
                "coordination leader: member {} (term {})",
                r.leader_id, r.term
            );
        }
    }
    Ok(())
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let cluster = ClusterFile::load(dir)?;
    let running: Vec<&DaemonEntry> = cluster.daemons.iter().filter(|d| alive(d.pid)).collect();
    for d in &running {
        let _ = kill(Pid::from_raw(d.pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.iter().any(|d| alive(d.pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut killed = 0;
    for d in running.iter().filter(|d| alive(d.pid)) {
        let _ = kill(Pid::from_raw(d.pid as i32), Signal::SIGKILL);
        killed += 1;
    }
    println!(
        "stopped {} daemons{}; data kept in {}",
        running.len(),
        if killed > 0 {
            format!(" ({killed} had to be killed)")
        } else {
            String::new()
        },
        dir.display()
    );
    Ok(())
}
