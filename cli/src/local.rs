//! `hstack local up|status|down`: a pseudo-distributed cluster on this
//! machine as child processes of the same binary, described by
//! `DIR/cluster.json` so client commands (`--cluster DIR`) can find it.
//!
//! Ports are chosen free on 127.0.0.1 the first time and kept in
//! `cluster.json`, so `down` then `up` restarts the same cluster on the same
//! addresses (the Raft membership remembers them).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
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
        let tmp = dir.join(format!("{CLUSTER_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        std::fs::rename(&tmp, dir.join(CLUSTER_FILE))?;
        Ok(())
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
    pid != 0 && kill(Pid::from_raw(pid as i32), None).is_ok()
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

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free ports on 127.0.0.1")?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
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
    // Ports: the previous run's, or fresh ones.
    let mut ports: BTreeMap<u64, (u16, u16, u16)> = BTreeMap::new();
    match &previous {
        Some(prev) => {
            for d in prev.daemons.iter().filter(|d| d.role == "coord") {
                let port = |k: &str| -> anyhow::Result<u16> {
                    let a = d
                        .addrs
                        .get(k)
                        .with_context(|| format!("cluster file lacks {k} of coord {}", d.id))?;
                    Ok(a.rsplit(':').next().unwrap_or("").parse()?)
                };
                ports.insert(
                    d.id.parse()?,
                    (port("raft")?, port("client")?, port("http")?),
                );
            }
        }
        None => {
            let p = free_ports(3 * coord as usize)?;
            for i in 0..coord {
                let j = 3 * i as usize;
                ports.insert(i + 1, (p[j], p[j + 1], p[j + 2]));
            }
        }
    }
    let initial: Vec<String> = ports
        .iter()
        .map(|(id, (r, c, h))| format!("{id}=127.0.0.1:{r}:{c}:{h}"))
        .collect();
    let exe = std::env::current_exe().context("cannot find the hstack binary")?;
    let mut daemons = Vec::new();
    let mut children = Vec::new();
    for (id, (raft, client, http)) in &ports {
        let client = format!("127.0.0.1:{client}");
        let raft = format!("127.0.0.1:{raft}");
        let http = format!("127.0.0.1:{http}");
        let (entry, child) = spawn_daemon(
            &exe,
            &dir,
            "coord",
            &id.to_string(),
            ("--data-dir", &dir.join(format!("coord-{id}"))),
            &[
                ("--id", &id.to_string()),
                ("--client-addr", &client),
                ("--raft-addr", &raft),
                ("--http-addr", &http),
                ("--initial-members", &initial.join(",")),
                // Members sharing this machine's cores: one runtime thread
                // each (fewer context switches; see docs/benchmarks.md).
                ("--worker-threads", "1"),
            ],
            &[("client", &client), ("raft", &raft), ("http", &http)],
        )?;
        daemons.push(entry);
        children.push(child);
    }
    // The file system: a namenode, and datanodes on 127.0.1.N over two racks.
    let keep = |role: &str, id: &str, key: &str, host: &str| -> anyhow::Result<String> {
        let old = previous.as_ref().and_then(|p| {
            p.daemons
                .iter()
                .find(|d| d.role == role && d.id == id)
                .and_then(|d| d.addrs.get(key).cloned())
        });
        match old {
            Some(a) => Ok(a),
            None => {
                let l = std::net::TcpListener::bind((host, 0))
                    .with_context(|| format!("cannot bind a port on {host}"))?;
                Ok(l.local_addr()?.to_string())
            }
        }
    };
    let nn_rpc = keep("namenode", "nn", "rpc", "127.0.0.1")?;
    let nn_http = keep("namenode", "nn", "http", "127.0.0.1")?;
    let nn_dir = dir.join("namenode");
    let (entry, child) = spawn_daemon(
        &exe,
        &dir,
        "namenode",
        "nn",
        ("--name-dir", &nn_dir),
        &[
            ("--rpc-addr", nn_rpc.as_str()),
            ("--http-addr", nn_http.as_str()),
            ("--heartbeat-ms", "1000"),
            ("--replication-interval-ms", "1000"),
            ("--dead-node-timeout-ms", "30000"),
            ("--safemode-extension-ms", "0"),
            ("--worker-threads", "2"),
        ],
        &[("rpc", &nn_rpc), ("http", &nn_http)],
    )?;
    daemons.push(entry);
    children.push(child);
    for i in 0..datanodes {
        let id = format!("dn{}", i + 1);
        let host = format!("127.0.1.{}", i + 1);
        let transfer = keep("datanode", &id, "transfer", &host)?;
        let rpc = keep("datanode", &id, "rpc", &host)?;
        let http = keep("datanode", &id, "http", &host)?;
        let rack = format!("/rack{}", i * 2 / datanodes + 1);
        let data_dir = dir.join(&id).join("data");
        let (entry, child) = spawn_daemon(
            &exe,
            &dir,
            "datanode",
            &id,
            ("--data-dirs", &data_dir),
            &[
                ("--id", id.as_str()),
                ("--namenode", nn_rpc.as_str()),
                ("--transfer-addr", transfer.as_str()),
                ("--rpc-addr", rpc.as_str()),
                ("--http-addr", http.as_str()),
                ("--rack", rack.as_str()),
                ("--worker-threads", "1"),
            ],
            &[("transfer", &transfer), ("rpc", &rpc), ("http", &http)],
        )?;
        daemons.push(entry);
        children.push(child);
    }
    let cluster = ClusterFile { daemons };
    cluster.save(&dir)?;
    eprintln!(
        "starting {coord} coordination members, a namenode and {datanodes} datanodes in {}",
        dir.display()
    );

    // Ready: every member announced itself and agrees on a leader.
    let deadline = Instant::now() + timeout;
    let addrs = cluster.addrs("coord", "client");
    loop {
        for (d, child) in cluster.daemons.iter().zip(children.iter_mut()) {
            if !matches!(child.try_wait(), Ok(None)) {
                let tail = std::fs::read_to_string(&d.log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(15).collect();
                bail!(
                    "{} {} exited during start-up; last lines of {}:\n{}",
                    d.role,
                    d.id,
                    d.log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        let announced = cluster
            .daemons
            .iter()
            .all(|d| hstack_daemon::read_announcement(&d.data_dir).is_some());
        if announced {
            let mut leaders = Vec::new();
            for a in &addrs {
                if let Ok(r) = hstack_coord::members_of(a).await {
                    leaders.push(r.leader_id);
                }
            }
            let fs_ready = fs_live(&nn_rpc).await == Some(datanodes as usize);
            if leaders.len() == addrs.len()
                && leaders[0] != 0
                && leaders.iter().all(|l| *l == leaders[0])
                && fs_ready
            {
                eprintln!(
                    "ready: coordination leader is member {}; {datanodes} datanodes live",
                    leaders[0]
                );
                break;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the cluster did not become ready within {timeout:?}; see the logs in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    print_daemons(&cluster, false).await
}

/// Live datanodes once the namenode is out of safe mode.
async fn fs_live(namenode: &str) -> Option<usize> {
    let c = hstack_dfs::client::DfsClient::connect(namenode, Default::default())
        .await
        .ok()?;
    let r = c
        .namenode()
        .get_datanode_report(hstack_proto::dfs::Empty {})
        .await
        .ok()?
        .into_inner();
    if r.safe_mode {
        return None;
    }
    Some(r.datanodes.iter().filter(|d| d.state == "live").count())
}

/// Starts one daemon (`hstack ROLE DATA_DIR_FLAG DATA_DIR FLAGS…`) in its
/// own process group, its output appended to `DIR/ROLE-ID.log`; it
/// announces its addresses in its data directory.
fn spawn_daemon(
    exe: &Path,
    dir: &Path,
    role: &str,
    id: &str,
    (dir_flag, data_dir): (&str, &Path),
    flags: &[(&str, &str)],
    addrs: &[(&str, &String)],
) -> anyhow::Result<(DaemonEntry, std::process::Child)> {
    std::fs::create_dir_all(data_dir)?;
    let _ = std::fs::remove_file(data_dir.join("addresses.json"));
    let log = dir.join(format!("{role}-{id}.log"));
    let out = OpenOptions::new().create(true).append(true).open(&log)?;
    let mut cmd = Command::new(exe);
    cmd.arg(role).arg(dir_flag).arg(data_dir);
    for (f, v) in flags {
        cmd.args([f, v]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let entry = DaemonEntry {
        role: role.into(),
        id: id.into(),
        pid: child.id(),
        addrs: addrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        data_dir: data_dir.to_path_buf(),
        log,
    };
    Ok((entry, child))
}

async fn readyz(http: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(http)).await
    else {
        return false;
    };
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: local\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).contains(" 200 "),
        _ => false,
    }
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
            d.addrs.get("http").cloned().unwrap_or_default(),
            d.log.display().to_string(),
        ]);
        items.push(serde_json::json!({"daemon": d, "alive": up, "ready": ready}));
    }
    if json {
        return output::json(&serde_json::json!({ "daemons": items }));
    }
    output::table(
        &["role", "id", "pid", "state", "address", "http", "log"],
        &rows,
    );
    Ok(())
}

async fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = ClusterFile::load(dir)?;
    print_daemons(&cluster, json).await?;
    if !json {
        if let Ok(r) = hstack_coord::members(&cluster.addrs("coord", "client")).await {
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
