//! The distributed shell (YARN's DistributedShell): an application whose
//! master asks for N containers, runs one command in each, asks again for
//! any that was lost with its node or preempted, and finishes SUCCEEDED
//! when every container exited 0. `hstack app shell` submits it; the
//! master is `hstack app shell-am`, started by the resource manager, with
//! its settings in the environment.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hstack_proto::scheduler as pb;
use hstack_proto::{Code, Error};

use crate::am::{AmClient, NodeClients};
use crate::client::RmClient;
use crate::exit;

/// What to run, and where.
#[derive(Clone, Debug)]
pub struct ShellOpts {
    pub containers: u32,
    pub command: String,
    pub memory_mb: u64,
    pub vcores: u32,
    pub queue: String,
    pub user: String,
    pub name: String,
    pub nodes: Vec<String>,
    pub racks: Vec<String>,
    /// May containers go elsewhere once they waited (delay scheduling)?
    pub relax_locality: bool,
    pub priority: i32,
    pub max_attempts: u32,
    /// The application master's memory.
    pub am_memory_mb: u64,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Submits a distributed shell whose master runs `exe app shell-am`.
pub async fn submit(rm: &RmClient, o: &ShellOpts, exe: &str) -> Result<String, Error> {
    if o.containers == 0 {
        return Err(Error::new(
            Code::InvalidArgument,
            "--containers must be at least 1",
        ));
    }
    if o.command.trim().is_empty() {
        return Err(Error::new(
            Code::InvalidArgument,
            "--command is empty: nothing to run",
        ));
    }
    // Checked before anything is submitted: a bad ask changes nothing.
    let fresh = rm.new_application().await?;
    let max = fresh.max_allocation.unwrap_or_default();
    if o.memory_mb == 0 || o.vcores == 0 {
        return Err(Error::new(
            Code::InvalidResourceRequest,
            format!(
                "containers of {} MiB and {} vcores: both must be above 0",
                o.memory_mb, o.vcores
            ),
        ));
    }
    if o.memory_mb > max.memory_mb as u64 || i64::from(o.vcores) > i64::from(max.vcores) {
        return Err(Error::new(
            Code::InvalidResourceRequest,
            format!(
                "containers of {} MiB and {} vcores are above the maximum allocation of {} MiB and {} vcores",
                o.memory_mb, o.vcores, max.memory_mb, max.vcores
            ),
        ));
    }
    let env: HashMap<String, String> = [
        ("HSTACK_SHELL_COMMAND", o.command.clone()),
        ("HSTACK_SHELL_CONTAINERS", o.containers.to_string()),
        ("HSTACK_SHELL_MEMORY_MB", o.memory_mb.to_string()),
        ("HSTACK_SHELL_VCORES", o.vcores.to_string()),
        ("HSTACK_SHELL_NODES", o.nodes.join(",")),
        ("HSTACK_SHELL_RACKS", o.racks.join(",")),
        ("HSTACK_SHELL_RELAX", o.relax_locality.to_string()),
        ("HSTACK_SHELL_PRIORITY", o.priority.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    rm.submit(pb::SubmitRequest {
        app_id: fresh.app_id,
        name: o.name.clone(),
        queue: o.queue.clone(),
        user: o.user.clone(),
        app_type: "SHELL".into(),
        priority: 0,
        am_resource: Some(pb::Resource {
            memory_mb: o.am_memory_mb as i64,
            vcores: 1,
        }),
        am_launch: Some(pb::LaunchContext {
            command: format!("exec {} app shell-am", quote(exe)),
            env,
        }),
        max_attempts: o.max_attempts,
    })
    .await
}

fn setting(k: &str) -> Result<String, Error> {
    std::env::var(k).map_err(|_| {
        Error::new(
            Code::InvalidArgument,
            format!("{k} is not set (this runs as a distributed shell's master)"),
        )
    })
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

/// Where one of the N commands ran and how it ended.
struct Ended {
    container: String,
    node: String,
    exit_status: i32,
    diagnostics: String,
}

/// The master: returns whether every container exited 0.
pub async fn run_am() -> Result<bool, Error> {
    let n: u32 = setting("HSTACK_SHELL_CONTAINERS")?.parse().map_err(|_| {
        Error::new(
            Code::InvalidArgument,
            "HSTACK_SHELL_CONTAINERS is not a number",
        )
    })?;
    let command = setting("HSTACK_SHELL_COMMAND")?;
    let memory_mb: i64 = setting("HSTACK_SHELL_MEMORY_MB")?.parse().unwrap_or(1024);
    let vcores: i32 = setting("HSTACK_SHELL_VCORES")?.parse().unwrap_or(1);
    let nodes = list(&std::env::var("HSTACK_SHELL_NODES").unwrap_or_default());
    let racks = list(&std::env::var("HSTACK_SHELL_RACKS").unwrap_or_default());
    let relax = std::env::var("HSTACK_SHELL_RELAX").map_or(true, |v| v != "false");
    let priority: i32 = std::env::var("HSTACK_SHELL_PRIORITY")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let mut am = AmClient::from_env()?;
    let host = std::env::var("NM_HOST").unwrap_or_default();
    am.register(&host, "").await?;
    println!(
        "distributed shell {}: {n} containers of `{command}`",
        am.app_id
    );
    let ask = |i: u32| pb::ResourceAsk {
        id: u64::from(i) + 1,
        priority,
        resource: Some(pb::Resource { memory_mb, vcores }),
        count: 1,
        nodes: nodes.clone(),
        racks: racks.clone(),
        relax_locality: relax,
    };
    let mut to_ask: Vec<pb::ResourceAsk> = (0..n).map(ask).collect();
    let mut releases = Vec::new();
    let nms = NodeClients::default();
    let mut running: HashMap<String, (u32, String)> = HashMap::new();
    let mut ended: BTreeMap<u32, Ended> = BTreeMap::new();
    let mut start_failures: HashMap<u32, u32> = HashMap::new();
    loop {
        let progress = ended.len() as f32 / n as f32;
        let reply = am
            .allocate(
                std::mem::take(&mut to_ask),
                std::mem::take(&mut releases),
                progress,
            )
            .await?;
        if reply.command == pb::AmCommand::AmShutdown as i32 {
            println!("the resource manager says this application is over: stopping");
            return Ok(false);
        }
        for c in reply.allocated {
            let i = (c.ask_id.saturating_sub(1)) as u32;
            let taken = running.values().any(|(j, _)| *j == i) || ended.contains_key(&i);
            if i >= n || taken {
                releases.push(c.id.clone());
                continue;
            }
            let mut env = HashMap::new();
            env.insert("HSTACK_SHELL_INDEX".to_string(), i.to_string());
            let launch = pb::LaunchContext {
                command: command.clone(),
                env,
            };
            match nms.start(&c, launch).await {
                Ok(_) => {
                    println!("container {} for command {i} started on {} ({}, after {} missed opportunities)", c.id, c.node_id, c.locality, c.opportunities);
                    running.insert(c.id.clone(), (i, c.node_id.clone()));
                }
                Err(e) => {
                    println!("container {} on {} did not start: {e}", c.id, c.node_id);
                    releases.push(c.id.clone());
                    let f = start_failures.entry(i).or_default();
                    *f += 1;
                    if *f < 3 {
                        to_ask.push(ask(i));
                    } else {
                        ended.insert(
                            i,
                            Ended {
                                container: c.id.clone(),
                                node: c.node_id.clone(),
                                exit_status: exit::ABORTED,
                                diagnostics: format!("it did not start: {e}"),
                            },
                        );
                    }
                }
            }
        }
        for s in reply.completed {
            let Some((i, node)) = running.remove(&s.container_id) else {
                continue;
            };
            println!(
                "container {} (command {i}) on {node} ended: exit status {}{}",
                s.container_id,
                exit::name(s.exit_status),
                if s.diagnostics.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.diagnostics)
                }
            );
            if exit::is_not_its_fault(s.exit_status) {
                // Lost with its node, or preempted: run it again elsewhere.
                to_ask.push(ask(i));
                continue;
            }
            ended.insert(
                i,
                Ended {
                    container: s.container_id,
                    node,
                    exit_status: s.exit_status,
                    diagnostics: s.diagnostics,
                },
            );
        }
        if ended.len() as u32 == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed: Vec<&Ended> = ended.values().filter(|e| e.exit_status != 0).collect();
    for (i, e) in &ended {
        println!(
            "command {i}: {} on {} exited {}",
            e.container,
            e.node,
            exit::name(e.exit_status)
        );
    }
    let (status, diag) = if failed.is_empty() {
        (
            pb::FinalStatus::Succeeded,
            format!("all {n} containers exited 0"),
        )
    } else {
        let first = failed[0];
        (
            pb::FinalStatus::FinalFailed,
            format!(
                "{} of {n} containers failed; {} on {}: exit status {}{}",
                failed.len(),
                first.container,
                first.node,
                exit::name(first.exit_status),
                if first.diagnostics.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", first.diagnostics)
                }
            ),
        )
    };
    am.finish(status, &diag).await?;
    println!("{diag}");
    Ok(failed.is_empty())
}
