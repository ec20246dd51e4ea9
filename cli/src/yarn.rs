//! `hstack app …`, `hstack node …`, `hstack queue …`: the resource
//! scheduler's client commands, as `yarn application`, `yarn logs`,
//! `yarn node` and `yarn queue` read. Tables for people, `--json` for
//! programs.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hstack_proto::scheduler as pb;
use hstack_proto::{Code, Error};
use hstack_scheduler::client::{is_over, RmClient};
use hstack_scheduler::shell::ShellOpts;
use hstack_scheduler::{exit, wire};
use serde_json::{json, Value};

use crate::output::{self, parse_size};

/// Where the resource manager is.
#[derive(Args, Clone)]
pub struct RmEndpoint {
    /// A local cluster directory (`hstack local up --dir`) to find the
    /// resource manager in.
    #[arg(long, global = true, env = "HSTACK_CLUSTER")]
    cluster: Option<std::path::PathBuf>,
    /// host:port of the resource manager (overrides --cluster; without
    /// either, ./local-cluster, else 127.0.0.1:8032).
    #[arg(long = "rm", env = "HSTACK_RM", global = true)]
    rm: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

impl RmEndpoint {
    pub fn new(cluster: Option<std::path::PathBuf>, rm: Option<String>, json: bool) -> Self {
        Self { cluster, rm, json }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    pub fn address(&self) -> anyhow::Result<String> {
        if let Some(a) = &self.rm {
            return Ok(a.clone());
        }
        let dir = self
            .cluster
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from(crate::local::DEFAULT_DIR));
        match crate::local::ClusterFile::load(&dir) {
            Ok(c) => c
                .addrs("resourcemanager", "rpc")
                .into_iter()
                .next()
                .with_context(|| format!("{} lists no resource manager", dir.display())),
            Err(e) if self.cluster.is_some() => Err(e),
            Err(_) => Ok("127.0.0.1:8032".into()),
        }
    }

    fn client(&self) -> anyhow::Result<RmClient> {
        Ok(RmClient::new(&self.address()?)?)
    }
}

fn user_default() -> String {
    std::env::var("HSTACK_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "hstack".into())
}

#[derive(Args)]
pub struct AppArgs {
    #[command(flatten)]
    rm: RmEndpoint,
    #[command(subcommand)]
    cmd: AppCmd,
}

#[derive(Subcommand)]
enum AppCmd {
    /// Run a command in N containers (YARN's distributed shell) and report
    /// each container's exit and where it ran.
    Shell(ShellArgs),
    /// The distributed shell's application master (started by the
    /// resource manager, not by hand).
    #[command(hide = true)]
    ShellAm,
    /// Applications, newest first.
    List(ListArgs),
    /// One application and its containers.
    Status { app: String },
    /// Kill an application: its containers stop, it ends KILLED.
    Kill { app: String },
    /// Print containers' logs (from the nodes that ran them).
    Logs(LogsArgs),
}

#[derive(Args)]
struct ShellArgs {
    /// How many containers.
    #[arg(long, default_value_t = 1)]
    containers: u32,
    /// The command line each container runs (`sh -c`).
    #[arg(long)]
    command: String,
    /// Each container's memory (suffixes as `dfs -put --block-size`).
    #[arg(long, default_value = "256m", value_parser = parse_size)]
    memory: u64,
    #[arg(long, default_value_t = 1)]
    vcores: u32,
    #[arg(long, default_value = "default")]
    queue: String,
    /// Prefer these nodes (host or host:port; repeat the flag).
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// Prefer these racks.
    #[arg(long = "rack")]
    racks: Vec<String>,
    /// Never leave the nodes and racks named (no delay-scheduling relax).
    #[arg(long)]
    strict: bool,
    #[arg(long, default_value_t = 1)]
    priority: i32,
    /// Attempts of its master (0: the resource manager's).
    #[arg(long, default_value_t = 0)]
    max_attempts: u32,
    #[arg(long, default_value = "distributed shell")]
    name: String,
    /// The master's memory.
    #[arg(long, default_value = "256m", value_parser = parse_size)]
    am_memory: u64,
    /// Give up waiting after this many seconds (the application goes on).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Run as this user (default: $HSTACK_USER, else $USER).
    #[arg(long)]
    user: Option<String>,
}

#[derive(Args)]
struct ListArgs {
    /// Only these states (ACCEPTED, RUNNING, FINISHED, FAILED, KILLED).
    #[arg(long = "state")]
    states: Vec<String>,
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    user: Option<String>,
}

#[derive(Args)]
struct LogsArgs {
    app: String,
    /// Only this container.
    #[arg(long)]
    container: Option<String>,
    /// stdout, stderr, or both.
    #[arg(long, default_value = "both")]
    file: String,
}

fn mb(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

fn res(r: &Option<pb::Resource>) -> String {
    let r = r.unwrap_or_default();
    format!("{} MiB, {} vcores", r.memory_mb, r.vcores)
}

fn state(r: &pb::ApplicationReport) -> &'static str {
    wire::app_state_name(pb::AppState::try_from(r.state).unwrap_or_default())
}

fn final_status(r: &pb::ApplicationReport) -> &'static str {
    wire::final_status_name(pb::FinalStatus::try_from(r.final_status).unwrap_or_default())
}

fn app_json(r: &pb::ApplicationReport) -> Value {
    let u = r.used.unwrap_or_default();
    json!({
        "id": r.app_id,
        "name": r.name,
        "type": r.app_type,
        "user": r.user,
        "queue": r.queue,
        "state": state(r),
        "final_status": final_status(r),
        "progress": r.progress,
        "diagnostics": r.diagnostics,
        "attempt": r.attempt,
        "max_attempts": r.max_attempts,
        "am_container": r.am_container_id,
        "am_node": r.am_node,
        "submit_ms": r.submit_ms,
        "start_ms": r.start_ms,
        "finish_ms": r.finish_ms,
        "running_containers": r.running_containers,
        "memory_mb": u.memory_mb,
        "vcores": u.vcores,
    })
}

fn container_json(c: &pb::ContainerReport) -> Value {
    let st = pb::ContainerState::try_from(c.state).unwrap_or_default();
    json!({
        "id": c.container_id,
        "node": c.node_id,
        "state": wire::container_state_name(st),
        "exit_status": c.exit_status,
        "exit": exit::name(c.exit_status),
        "diagnostics": c.diagnostics,
        "locality": c.locality,
        "am": c.is_am,
        "memory_mb": c.resource.unwrap_or_default().memory_mb,
    })
}

fn container_rows(cs: &[pb::ContainerReport]) -> Vec<Vec<String>> {
    cs.iter()
        .map(|c| {
            let st = pb::ContainerState::try_from(c.state).unwrap_or_default();
            vec![
                c.container_id.clone(),
                if c.is_am {
                    "master".into()
                } else {
                    "task".into()
                },
                c.node_id.clone(),
                wire::container_state_name(st).into(),
                exit::name(c.exit_status),
                c.locality.clone(),
                c.diagnostics.clone(),
            ]
        })
        .collect()
}

const CONTAINER_COLUMNS: &[&str] = &[
    "container",
    "role",
    "node",
    "state",
    "exit",
    "locality",
    "diagnostics",
];

pub async fn app(a: AppArgs) -> anyhow::Result<()> {
    if matches!(a.cmd, AppCmd::ShellAm) {
        let ok = hstack_scheduler::shell::run_am().await?;
        if !ok {
            bail!("some containers failed");
        }
        return Ok(());
    }
    let rm = a.rm.client()?;
    match a.cmd {
        AppCmd::Shell(s) => shell(&rm, &a.rm, s).await,
        AppCmd::ShellAm => unreachable!("handled above"),
        AppCmd::List(l) => {
            let mut states = Vec::new();
            for s in &l.states {
                let st = wire::app_state_of(s).with_context(|| {
                    format!("--state {s:?}: expected ACCEPTED, RUNNING, FINISHED, FAILED or KILLED")
                })?;
                states.push(st as i32);
            }
            let mut list = rm
                .list(pb::ListApplicationsRequest {
                    states,
                    queue: l.queue.unwrap_or_default(),
                    user: l.user.unwrap_or_default(),
                })
                .await?
                .apps;
            list.reverse();
            if a.rm.json {
                return output::json(&list.iter().map(app_json).collect::<Vec<_>>());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|r| {
                    vec![
                        r.app_id.clone(),
                        r.name.clone(),
                        r.app_type.clone(),
                        r.user.clone(),
                        r.queue.clone(),
                        state(r).into(),
                        final_status(r).into(),
                        format!("{:.0}%", r.progress * 100.0),
                        r.running_containers.to_string(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "application",
                    "name",
                    "type",
                    "user",
                    "queue",
                    "state",
                    "final status",
                    "progress",
                    "containers",
                ],
                &rows,
            );
            Ok(())
        }
        AppCmd::Status { app } => {
            let r = rm.report(&app).await?;
            let cs = rm.containers(&app).await?.containers;
            if a.rm.json {
                let mut v = app_json(&r);
                v["containers"] = cs.iter().map(container_json).collect::<Vec<_>>().into();
                return output::json(&v);
            }
            output::table(
                &["key", "value"],
                &[
                    vec!["application".into(), r.app_id.clone()],
                    vec!["name".into(), r.name.clone()],
                    vec!["type".into(), r.app_type.clone()],
                    vec!["user".into(), r.user.clone()],
                    vec!["queue".into(), r.queue.clone()],
                    vec!["state".into(), state(&r).into()],
                    vec!["final status".into(), final_status(&r).into()],
                    vec!["progress".into(), format!("{:.0}%", r.progress * 100.0)],
                    vec![
                        "attempt".into(),
                        format!("{} of {}", r.attempt, r.max_attempts),
                    ],
                    vec![
                        "master".into(),
                        format!("{} on {}", r.am_container_id, r.am_node),
                    ],
                    vec!["in use".into(), res(&r.used)],
                    vec!["diagnostics".into(), r.diagnostics.clone()],
                ],
            );
            println!();
            output::table(CONTAINER_COLUMNS, &container_rows(&cs));
            Ok(())
        }
        AppCmd::Kill { app } => {
            let r = rm.kill(&app, &user_default()).await?;
            if a.rm.json {
                return output::json(&app_json(&r));
            }
            println!("{}: {} ({})", r.app_id, state(&r), r.diagnostics);
            Ok(())
        }
        AppCmd::Logs(l) => logs(&rm, &a.rm, l).await,
    }
}

async fn shell(rm: &RmClient, ep: &RmEndpoint, s: ShellArgs) -> anyhow::Result<()> {
    let exe =
        std::env::current_exe().context("finding this hstack binary for the master to run")?;
    let opts = ShellOpts {
        containers: s.containers,
        command: s.command,
        memory_mb: mb(s.memory),
        vcores: s.vcores,
        queue: s.queue,
        user: s.user.unwrap_or_else(user_default),
        name: s.name,
        nodes: s.nodes,
        racks: s.racks,
        relax_locality: !s.strict,
        priority: s.priority,
        max_attempts: s.max_attempts,
        am_memory_mb: mb(s.am_memory),
    };
    let started = Instant::now();
    let app = hstack_scheduler::shell::submit(rm, &opts, &exe.display().to_string()).await?;
    if !ep.json {
        eprintln!("submitted {app}");
    }
    let bar = output::counter(&app, u64::from(opts.containers), ep.json);
    let deadline = started + Duration::from_secs(s.timeout);
    let report = loop {
        let r = rm.report(&app).await?;
        let cs = rm.containers(&app).await?.containers;
        let done = cs
            .iter()
            .filter(|c| {
                !c.is_am && c.state == pb::ContainerState::Complete as i32 && c.exit_status == 0
            })
            .count();
        bar.set_position(done as u64);
        bar.set_message(format!(
            "{app} {} ({} running)",
            state(&r),
            r.running_containers
        ));
        if is_over(&r) {
            break r;
        }
        if Instant::now() > deadline {
            bar.finish_and_clear();
            return Err(Error::new(
                Code::TimedOut,
                format!(
                    "{app} did not finish within {} s (it is {}; `hstack app kill {app}` stops it)",
                    s.timeout,
                    state(&r)
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    let cs: Vec<pb::ContainerReport> = rm.containers(&app).await?.containers.into_iter().collect();
    if ep.json {
        let mut v = app_json(&report);
        v["containers"] = cs.iter().map(container_json).collect::<Vec<_>>().into();
        v["seconds"] = started.elapsed().as_secs_f64().into();
        output::json(&v)?;
    } else {
        output::table(CONTAINER_COLUMNS, &container_rows(&cs));
        println!(
            "{app} {} {} in {:.1} s: {}",
            state(&report),
            final_status(&report),
            started.elapsed().as_secs_f64(),
            report.diagnostics
        );
    }
    if final_status(&report) != "SUCCEEDED" {
        bail!(
            "{app} {} ({}): {}",
            state(&report),
            final_status(&report),
            report.diagnostics
        );
    }
    Ok(())
}

async fn logs(rm: &RmClient, ep: &RmEndpoint, l: LogsArgs) -> anyhow::Result<()> {
    let cs = rm.containers(&l.app).await?.containers;
    let files: Vec<&str> = match l.file.as_str() {
        "both" => vec!["stdout", "stderr"],
        "stdout" => vec!["stdout"],
        "stderr" => vec!["stderr"],
        other => bail!("--file {other:?}: expected stdout, stderr or both"),
    };
    let mut out = Vec::new();
    let mut found = false;
    for c in &cs {
        if l.container.as_ref().is_some_and(|x| *x != c.container_id) {
            continue;
        }
        found = true;
        for f in &files {
            let path = format!("/logs/{}/{f}", c.container_id);
            let body = match hstack_daemon::process::http_get(&c.node_http, &path).await {
                Some((200, b)) => b,
                Some((status, b)) => format!("(not available: HTTP {status}: {})", b.trim()),
                None => format!("(not available: node {} does not answer)", c.node_http),
            };
            out.push((
                c.container_id.clone(),
                c.node_id.clone(),
                f.to_string(),
                body,
            ));
        }
    }
    if !found {
        bail!(
            "{}: {}",
            l.app,
            match &l.container {
                Some(c) => format!("no container {c}"),
                None => "no containers".into(),
            }
        );
    }
    if ep.json {
        let v: Vec<Value> = out
            .iter()
            .map(|(c, n, f, b)| json!({"container": c, "node": n, "file": f, "content": b}))
            .collect();
        return output::json(&v);
    }
    for (c, n, f, b) in out {
        println!("==> {c} on {n}: {f} <==");
        print!("{b}");
        if !b.ends_with('\n') && !b.is_empty() {
            println!();
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct NodeArgs {
    #[command(flatten)]
    rm: RmEndpoint,
    #[command(subcommand)]
    cmd: NodeCmd,
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Node managers, their state, containers and resources.
    List {
        /// Lost nodes too.
        #[arg(long)]
        all: bool,
    },
}

pub async fn node(a: NodeArgs) -> anyhow::Result<()> {
    let rm = a.rm.client()?;
    let NodeCmd::List { all } = a.cmd;
    let nodes: Vec<pb::NodeReport> = rm
        .nodes()
        .await?
        .nodes
        .into_iter()
        .filter(|n| all || n.state != "LOST")
        .collect();
    if a.rm.json {
        let v: Vec<Value> = nodes
            .iter()
            .map(|n| {
                let (c, u) = (n.capability.unwrap_or_default(), n.used.unwrap_or_default());
                json!({
                    "id": n.node_id, "host": n.host, "rack": n.rack, "state": n.state,
                    "http": n.http_addr, "containers": n.containers,
                    "memory_mb": c.memory_mb, "vcores": c.vcores,
                    "used_memory_mb": u.memory_mb, "used_vcores": u.vcores,
                    "last_heartbeat_ms_ago": n.last_heartbeat_ms_ago,
                })
            })
            .collect();
        return output::json(&v);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.clone(),
                n.rack.clone(),
                n.state.clone(),
                n.containers.to_string(),
                res(&n.used),
                res(&n.capability),
                n.http_addr.clone(),
                format!("{} ms", n.last_heartbeat_ms_ago),
            ]
        })
        .collect();
    output::table(
        &[
            "node",
            "rack",
            "state",
            "containers",
            "used",
            "capability",
            "http",
            "last heartbeat",
        ],
        &rows,
    );
    Ok(())
}

#[derive(Args)]
pub struct QueueArgs {
    #[command(flatten)]
    rm: RmEndpoint,
    #[command(subcommand)]
    cmd: QueueCmd,
}

#[derive(Subcommand)]
enum QueueCmd {
    /// Every queue: capacity, use, applications.
    List,
    /// One queue.
    Status { queue: String },
}

fn queue_json(q: &pb::QueueReport) -> Value {
    let (u, p, m) = (
        q.used.unwrap_or_default(),
        q.pending.unwrap_or_default(),
        q.min_share.unwrap_or_default(),
    );
    json!({
        "queue": q.path, "leaf": q.leaf, "capacity": q.capacity, "max_capacity": q.max_capacity,
        "used_share": q.used_share, "used_memory_mb": u.memory_mb, "used_vcores": u.vcores,
        "pending_memory_mb": p.memory_mb, "pending_vcores": p.vcores, "apps": q.apps,
        "weight": q.weight, "min_memory_mb": m.memory_mb, "min_vcores": m.vcores,
        "fair_share": q.fair_share, "starved_ms": q.starved_ms,
    })
}

pub async fn queue(a: QueueArgs) -> anyhow::Result<()> {
    let rm = a.rm.client()?;
    let list = rm.queues().await?;
    let queues: Vec<&pb::QueueReport> = match &a.cmd {
        QueueCmd::List => list.queues.iter().collect(),
        QueueCmd::Status { queue } => {
            let q: Vec<&pb::QueueReport> = list
                .queues
                .iter()
                .filter(|q| q.path == *queue || q.path.rsplit('.').next() == Some(queue.as_str()))
                .collect();
            if q.is_empty() {
                return Err(Error::new(
                    Code::UnknownQueue,
                    format!(
                        "no queue {queue:?} (queues: {})",
                        list.queues
                            .iter()
                            .map(|q| q.path.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .into());
            }
            q
        }
    };
    if a.rm.json {
        return output::json(&json!({
            "scheduler": list.scheduler,
            "queues": queues.iter().map(|q| queue_json(q)).collect::<Vec<_>>(),
        }));
    }
    let fair = list.scheduler == "fair";
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let mut r = vec![
                q.path.clone(),
                pct(q.capacity),
                pct(q.max_capacity),
                pct(q.used_share),
                res(&q.used),
                res(&q.pending),
                q.apps.to_string(),
            ];
            if fair {
                r.push(format!("{}", q.weight));
                r.push(pct(q.fair_share));
                r.push(if q.starved_ms > 0 {
                    format!("{} ms", q.starved_ms)
                } else {
                    "-".into()
                });
            }
            r
        })
        .collect();
    let mut header = vec![
        "queue",
        if fair { "steady share" } else { "capacity" },
        "max",
        "used",
        "in use",
        "pending",
        "apps",
    ];
    if fair {
        header.extend(["weight", "fair share", "starved"]);
    }
    println!("scheduler: {}", list.scheduler);
    output::table(&header, &rows);
    Ok(())
}
