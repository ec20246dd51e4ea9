//! The resource scheduler with real processes: a resource manager, three
//! node managers on two racks, containers that are real processes. The
//! distributed shell is the application; node managers and application
//! masters are SIGKILLed; a container that outgrows its memory is killed.

use std::time::Duration;

use hstack_tests::hstack_proto::scheduler as pb;
use hstack_tests::hstack_proto::Code;
use hstack_tests::hstack_scheduler::client::RmClient;
use hstack_tests::hstack_scheduler::exit;
use hstack_tests::hstack_scheduler::shell::{self, ShellOpts};
use hstack_tests::yarn::nm_host;
use hstack_tests::{hstack_bin, hstack_env, wait_for, YarnCluster};
use serde_json::Value;

fn opts(containers: u32, command: &str) -> ShellOpts {
    ShellOpts {
        containers,
        command: command.into(),
        memory_mb: 256,
        vcores: 1,
        queue: "default".into(),
        user: "tester".into(),
        name: "test shell".into(),
        nodes: vec![],
        racks: vec![],
        relax_locality: true,
        priority: 1,
        max_attempts: 0,
        am_memory_mb: 256,
    }
}

async fn submit(rm: &RmClient, o: &ShellOpts) -> anyhow::Result<String> {
    Ok(shell::submit(rm, o, &hstack_bin().display().to_string()).await?)
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The task (not master) containers of an application.
async fn tasks(rm: &RmClient, app: &str) -> Vec<pb::ContainerReport> {
    rm.containers(app)
        .await
        .map(|l| l.containers.into_iter().filter(|c| !c.is_am).collect())
        .unwrap_or_default()
}

fn is_running(c: &pb::ContainerReport) -> bool {
    c.state == pb::ContainerState::ContainerRunning as i32
}

/// A distributed shell runs N containers through the command line, every
/// container's output is found in its log, and the client commands
/// (list, status, node list, queue list, the REST view) describe it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_shell_runs_n_containers_whose_outputs_are_found() -> anyhow::Result<()> {
    let y = YarnCluster::start(3, 2, &[]).await?;
    let rm = y.rm_addr();
    let r = hstack_env(
        &[
            "app",
            "shell",
            "--rm",
            &rm,
            "--json",
            "--containers",
            "6",
            "--command",
            "echo out-$HSTACK_SHELL_INDEX-$CONTAINER_ID",
        ],
        &[],
    )?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let v = json(&r.stdout);
    assert_eq!(v["final_status"], "SUCCEEDED", "{v}");
    let app = v["id"].as_str().unwrap().to_string();
    let done: Vec<&Value> = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["am"] == false)
        .collect();
    assert_eq!(done.len(), 6, "{v}");
    assert!(done.iter().all(|c| c["exit_status"] == 0), "{v}");
    // Every container's stdout holds its own line.
    let r = hstack_env(
        &[
            "app", "logs", &app, "--rm", &rm, "--file", "stdout", "--json",
        ],
        &[],
    )?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let logs = json(&r.stdout);
    let mut seen = vec![false; 6];
    for l in logs.as_array().unwrap() {
        let (c, content) = (
            l["container"].as_str().unwrap(),
            l["content"].as_str().unwrap(),
        );
        if let Some(rest) = content.trim().strip_prefix("out-") {
            let (i, id) = rest.split_once('-').unwrap();
            assert_eq!(id, c, "{content}");
            seen[i.parse::<usize>().unwrap()] = true;
        }
    }
    assert!(seen.iter().all(|s| *s), "{seen:?}: {logs}");
    // The client commands, as tables and as JSON.
    let r = hstack_env(&["app", "list", "--rm", &rm], &[])?;
    assert!(
        r.stdout.contains(&app) && r.stdout.contains("SUCCEEDED"),
        "{r:?}"
    );
    let r = hstack_env(&["app", "status", &app, "--rm", &rm, "--json"], &[])?;
    assert_eq!(json(&r.stdout)["state"], "FINISHED", "{r:?}");
    let r = hstack_env(&["node", "list", "--rm", &rm, "--json"], &[])?;
    let nodes = json(&r.stdout);
    assert_eq!(nodes.as_array().unwrap().len(), 3, "{nodes}");
    let racks: std::collections::HashSet<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["rack"].as_str().unwrap())
        .collect();
    assert_eq!(racks.len(), 2, "{nodes}");
    let r = hstack_env(&["queue", "list", "--rm", &rm], &[])?;
    assert!(r.stdout.contains("root.default"), "{r:?}");
    let http = y.rm.addr("http");
    let (status, body) = hstack_tests::hstack_daemon::process::http_get(
        &http,
        &format!("/ws/v1/cluster/apps/{app}"),
    )
    .await
    .expect("the REST view answers");
    assert_eq!(status, 200, "{body}");
    let rest = json(&body);
    assert_eq!(rest["app"]["finalStatus"], "SUCCEEDED", "{rest}");
    let (status, body) =
        hstack_tests::hstack_daemon::process::http_get(&http, "/ws/v1/cluster/nodes")
            .await
            .expect("answers");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["nodes"]["node"].as_array().unwrap().len(), 3);
    let (status, _) = hstack_tests::hstack_daemon::process::http_get(
        &http,
        "/ws/v1/cluster/apps/application_1_9999",
    )
    .await
    .expect("answers");
    assert_eq!(status, 404);
    y.check_logs()
}

/// Locality: a request for node X goes on X when X has room; with delay
/// scheduling, a node-local request whose node is full goes rack-local
/// only after `node_locality_delay` missed opportunities, and off its rack
/// only after the rack delay as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_node_first_then_rack_then_anywhere_after_the_delays() -> anyhow::Result<()> {
    let y = YarnCluster::start(
        3,
        2,
        &[
            "--node-locality-delay",
            "3",
            "--rack-locality-delay",
            "3",
            // Three masters at once (two blockers and a probe).
            "--max-am-resource-percent",
            "50",
        ],
    )
    .await?;
    // nm1 and nm2 are on /rack1, nm3 on /rack2.
    let rm = y.client()?;
    let wait_done = |app: String| {
        let y = &y;
        async move { y.wait_over(&app, Duration::from_secs(60)).await }
    };
    // Node X with room: on X, node-local, at once.
    let mut o = opts(2, "true");
    o.nodes = vec![nm_host(2)];
    let app = submit(&rm, &o).await?;
    let r = wait_done(app.clone()).await?;
    assert_eq!(r.final_status, pb::FinalStatus::Succeeded as i32, "{r:?}");
    for c in tasks(&rm, &app).await {
        assert_eq!(c.node_id, y.node_id(2), "{c:?}");
        assert_eq!(c.locality, "node-local", "{c:?}");
        // Offers from other nodes before nm3's came were declined; it never
        // waited long enough to go elsewhere.
        assert!(c.opportunities < 3, "{c:?}");
    }
    // Fill nm1 (2 GiB) with containers held strictly there.
    let mut fill = opts(4, "sleep 600");
    fill.memory_mb = 512;
    fill.nodes = vec![nm_host(0)];
    fill.relax_locality = false;
    let blocker = submit(&rm, &fill).await?;
    wait_for("nm1 full", Duration::from_secs(30), || {
        let (rm, blocker) = (rm.clone(), blocker.clone());
        async move {
            let ts = tasks(&rm, &blocker).await;
            let on = ts.iter().filter(|c| is_running(c)).count();
            // 4 of 512 MiB, or 3 when its master landed on nm1 too.
            let node = rm.nodes().await.ok()?;
            let nm1 = node.nodes.iter().find(|n| n.host == nm_host(0))?;
            let free = nm1.capability?.memory_mb - nm1.used?.memory_mb;
            (on >= 3 && free < 512).then_some(())
        }
    })
    .await?;
    // Asked on nm1: it goes to nm2 (the same rack) after 3 missed offers.
    let mut o = opts(1, "true");
    o.memory_mb = 512;
    o.nodes = vec![nm_host(0)];
    let app = submit(&rm, &o).await?;
    wait_done(app.clone()).await?;
    let c = &tasks(&rm, &app).await[0];
    assert_eq!(c.locality, "rack-local", "{c:?}");
    assert_eq!(c.node_id, y.node_id(1), "{c:?}");
    assert!(c.opportunities >= 3, "it waited the node delay: {c:?}");
    // Fill nm2 as well: the whole rack is full; asked on nm1, it goes off
    // the rack only after 3 + 3.
    let mut fill2 = fill.clone();
    fill2.nodes = vec![nm_host(1)];
    let blocker2 = submit(&rm, &fill2).await?;
    wait_for("nm2 full", Duration::from_secs(30), || {
        let rm = rm.clone();
        async move {
            let node = rm.nodes().await.ok()?;
            let nm2 = node.nodes.iter().find(|n| n.host == nm_host(1))?;
            (nm2.capability?.memory_mb - nm2.used?.memory_mb < 512).then_some(())
        }
    })
    .await?;
    let app = submit(&rm, &o).await?;
    wait_done(app.clone()).await?;
    let c = &tasks(&rm, &app).await[0];
    assert_eq!(c.locality, "off-switch", "{c:?}");
    assert_eq!(c.node_id, y.node_id(2), "{c:?}");
    assert!(
        c.opportunities >= 6,
        "it waited the node and rack delays: {c:?}"
    );
    for b in [blocker, blocker2] {
        rm.kill(&b, "tester").await?;
    }
    y.check_logs()
}

/// SIGKILL a node manager while its containers run: they are reported
/// lost, the application gets replacements elsewhere and finishes. When
/// the node manager starts again, nothing it left keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_managers_containers_are_replaced_and_none_is_orphaned() -> anyhow::Result<()>
{
    let mut y = YarnCluster::start(3, 2, &[]).await?;
    let rm = y.client()?;
    // Two of 768 MiB fit a node beside a master: they spread over all three.
    let mut o = opts(6, "sleep 12");
    o.memory_mb = 768;
    let app = submit(&rm, &o).await?;
    // A node with running tasks and not the master.
    let (victim, killed) = wait_for("tasks running", Duration::from_secs(30), || {
        let (rm, app) = (rm.clone(), app.clone());
        async move {
            let r = rm.report(&app).await.ok()?;
            let ts = tasks(&rm, &app).await;
            if ts.iter().filter(|c| is_running(c)).count() < 6 {
                return None;
            }
            let node = ts
                .iter()
                .map(|c| c.node_id.clone())
                .find(|n| *n != r.am_node)?;
            let on: Vec<String> = ts
                .iter()
                .filter(|c| c.node_id == node)
                .map(|c| c.container_id.clone())
                .collect();
            Some((node, on))
        }
    })
    .await?;
    let i = (0..3).find(|i| y.node_id(*i) == victim).unwrap();
    y.nms[i].kill9();
    // Its containers go on as orphans for now.
    assert!(!hstack_tests::procs_with_env("CONTAINER_ID", &killed).is_empty());
    // Once the resource manager has declared the node lost, the node
    // manager comes back: it kills what it left (still sleeping), and
    // registers again.
    wait_for("the node lost", Duration::from_secs(15), || {
        let (rm, victim) = (rm.clone(), victim.clone());
        async move {
            let n = rm.nodes().await.ok()?;
            n.nodes
                .iter()
                .any(|n| n.node_id == victim && n.state == "LOST")
                .then_some(())
        }
    })
    .await?;
    assert!(!hstack_tests::procs_with_env("CONTAINER_ID", &killed).is_empty());
    y.nms[i].restart().await?;
    wait_for("no orphan left", Duration::from_secs(15), || {
        let killed = killed.clone();
        async move {
            hstack_tests::procs_with_env("CONTAINER_ID", &killed)
                .is_empty()
                .then_some(())
        }
    })
    .await?;
    let log = std::fs::read_to_string(&y.nms[i].log)?;
    assert!(log.contains("an earlier run left"), "{log}");
    let r = y.wait_over(&app, Duration::from_secs(60)).await?;
    assert_eq!(r.final_status, pb::FinalStatus::Succeeded as i32, "{r:?}");
    let ts = tasks(&rm, &app).await;
    let lost: Vec<&pb::ContainerReport> = ts
        .iter()
        .filter(|c| killed.contains(&c.container_id))
        .collect();
    assert!(!lost.is_empty());
    for c in &lost {
        assert_eq!(c.exit_status, exit::ABORTED, "{c:?}");
        assert!(c.diagnostics.contains("was lost"), "{c:?}");
    }
    let ok = ts.iter().filter(|c| c.exit_status == 0).count();
    assert_eq!(
        ok, 6,
        "six commands succeeded, the lost ones again elsewhere: {ts:?}"
    );
    assert!(ts
        .iter()
        .filter(|c| c.exit_status == 0)
        .all(|c| !killed.contains(&c.container_id)));
    y.wait_nodes(3).await?;
    y.check_logs()
}

/// SIGKILL an application master: a new attempt starts and the
/// application finishes; with no attempt left, it fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_restarted_until_no_attempt_is_left() -> anyhow::Result<()> {
    let y = YarnCluster::start(3, 2, &[]).await?;
    let rm = y.client()?;
    let mut o = opts(2, "sleep 3");
    o.max_attempts = 2;
    let app = submit(&rm, &o).await?;
    kill_master(&rm, &app, 1).await?;
    let r = y.wait_over(&app, Duration::from_secs(60)).await?;
    assert_eq!(r.final_status, pb::FinalStatus::Succeeded as i32, "{r:?}");
    assert_eq!(r.attempt, 2, "{r:?}");
    // One attempt only: killing its master fails the application.
    o.max_attempts = 1;
    let app = submit(&rm, &o).await?;
    kill_master(&rm, &app, 1).await?;
    let r = y.wait_over(&app, Duration::from_secs(60)).await?;
    assert_eq!(r.state, pb::AppState::Failed as i32, "{r:?}");
    assert!(
        r.diagnostics.contains("failed 1 time") && r.diagnostics.contains("exit status 137"),
        "{}",
        r.diagnostics
    );
    // Its tasks were stopped with it.
    wait_for("no task left running", Duration::from_secs(15), || {
        let (rm, app) = (rm.clone(), app.clone());
        async move { (!tasks(&rm, &app).await.iter().any(is_running)).then_some(()) }
    })
    .await?;
    y.check_logs()
}

/// SIGKILLs `app`'s master once its attempt `attempt` runs.
async fn kill_master(rm: &RmClient, app: &str, attempt: u32) -> anyhow::Result<()> {
    let am = wait_for("the master running", Duration::from_secs(30), || {
        let (rm, app) = (rm.clone(), app.to_string());
        async move {
            let r = rm.report(&app).await.ok()?;
            let running = tasks(&rm, &app).await.iter().any(is_running);
            (r.attempt == attempt && r.state == pb::AppState::Running as i32 && running)
                .then_some(r.am_container_id)
        }
    })
    .await?;
    let pids = hstack_tests::procs_with_env("CONTAINER_ID", std::slice::from_ref(&am));
    assert!(!pids.is_empty(), "the master {am} runs");
    for p in pids {
        nix_kill(p);
    }
    Ok(())
}

fn nix_kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// A container that allocates past its memory limit is killed and
/// reported as killed for memory; its node manager runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_past_its_memory_limit_is_killed_and_the_node_survives() -> anyhow::Result<()> {
    let y = YarnCluster::start(1, 1, &[]).await?;
    let rm = y.client()?;
    // A string that doubles until something stops it.
    let mut o = opts(
        1,
        "awk 'BEGIN { s = \"x\"; for (i = 0; i < 32; i++) s = s s }'",
    );
    o.memory_mb = 128;
    let app = submit(&rm, &o).await?;
    let r = y.wait_over(&app, Duration::from_secs(60)).await?;
    assert_eq!(r.final_status, pb::FinalStatus::FinalFailed as i32, "{r:?}");
    let c = &tasks(&rm, &app).await[0];
    assert_eq!(c.exit_status, exit::KILLED_EXCEEDED_MEMORY, "{c:?}");
    assert!(c.diagnostics.contains("memory limit of 128 MiB"), "{c:?}");
    assert!(r.diagnostics.contains("KILLED_EXCEEDED_MEMORY"), "{r:?}");
    // The node runs on, and runs the next application.
    let app = submit(&rm, &opts(1, "true")).await?;
    let r = y.wait_over(&app, Duration::from_secs(60)).await?;
    assert_eq!(r.final_status, pb::FinalStatus::Succeeded as i32, "{r:?}");
    y.wait_nodes(1).await?;
    y.check_logs()
}

/// Bad input gets a clear error and changes nothing: a container above the
/// maximum allocation, zero resources, an unknown queue, a command that
/// does not exist, a malformed queue file, a forged token or master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() -> anyhow::Result<()> {
    let y = YarnCluster::start(1, 1, &[]).await?;
    let rm_addr = y.rm_addr();
    let rm = y.client()?;
    let shell = |extra: &[&str]| {
        let mut args = vec![
            "app",
            "shell",
            "--rm",
            rm_addr.as_str(),
            "--command",
            "true",
        ];
        args.extend_from_slice(extra);
        hstack_env(&args, &[])
    };
    let invalid = Some(i32::from(Code::InvalidResourceRequest.exit_status()));
    let r = shell(&["--memory", "100g"])?;
    assert_eq!(r.code, invalid, "{r:?}");
    assert!(r.stderr.contains("above the maximum allocation"), "{r:?}");
    let r = shell(&["--vcores", "0"])?;
    assert_eq!(r.code, invalid, "{r:?}");
    assert!(r.stderr.contains("must be above 0"), "{r:?}");
    let r = shell(&["--queue", "nope"])?;
    assert_eq!(
        r.code,
        Some(i32::from(Code::UnknownQueue.exit_status())),
        "{r:?}"
    );
    assert!(r.stderr.contains("no queue \"nope\""), "{r:?}");
    assert!(
        rm.list(Default::default()).await?.apps.is_empty(),
        "nothing was submitted"
    );
    // Directly: zero memory for the master, an empty command, an id the
    // resource manager never gave.
    let fresh = rm.new_application().await?;
    let base = pb::SubmitRequest {
        app_id: fresh.app_id.clone(),
        am_resource: Some(pb::Resource {
            memory_mb: 256,
            vcores: 1,
        }),
        am_launch: Some(pb::LaunchContext {
            command: "true".into(),
            env: Default::default(),
        }),
        ..Default::default()
    };
    for (req, code, words) in [
        (
            pb::SubmitRequest {
                am_resource: Some(pb::Resource {
                    memory_mb: -5,
                    vcores: 1,
                }),
                ..base.clone()
            },
            Code::InvalidResourceRequest,
            "negative",
        ),
        (
            pb::SubmitRequest {
                am_launch: None,
                ..base.clone()
            },
            Code::InvalidArgument,
            "command is empty",
        ),
        (
            pb::SubmitRequest {
                app_id: "application_1_0042".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "not given out",
        ),
    ] {
        let e = rm.submit(req).await.unwrap_err();
        assert_eq!(e.code, code, "{e}");
        assert!(e.message.contains(words), "{e}");
    }
    assert!(rm.list(Default::default()).await?.apps.is_empty());
    // A command that does not exist: its container fails with a clear
    // diagnostic; the node manager runs on.
    let app = submit(&rm, &opts(1, "no-such-command-hstack --flag")).await?;
    let r = y.wait_over(&app, Duration::from_secs(60)).await?;
    assert_eq!(r.final_status, pb::FinalStatus::FinalFailed as i32, "{r:?}");
    let c = &tasks(&rm, &app).await[0];
    assert_eq!(c.exit_status, 127, "{c:?}");
    assert!(
        c.diagnostics.contains("command not found")
            && c.diagnostics.contains("no-such-command-hstack"),
        "{c:?}"
    );
    y.wait_nodes(1).await?;
    // A forged token: the node manager starts nothing.
    let mut nm = pb::container_manager_client::ContainerManagerClient::connect(format!(
        "http://{}",
        y.node_id(0)
    ))
    .await?;
    let forged = pb::StartContainerRequest {
        token: Some(pb::ContainerToken {
            container_id: "container_1_0001_01_000009".into(),
            node_id: y.node_id(0),
            resource: Some(pb::Resource {
                memory_mb: 128,
                vcores: 1,
            }),
            user: "mallory".into(),
            expires_ms: u64::MAX,
            mac: vec![0; 32],
        }),
        launch: Some(pb::LaunchContext {
            command: "touch /tmp/hstack-forged".into(),
            env: Default::default(),
        }),
    };
    let reply = nm
        .start_containers(pb::StartContainersRequest {
            containers: vec![forged],
        })
        .await?
        .into_inner();
    assert!(reply.started.is_empty());
    assert_eq!(
        reply.failed[0].code,
        Code::InvalidContainerToken as i32,
        "{reply:?}"
    );
    // A master with a wrong token: refused.
    let mut am = pb::application_master_client::ApplicationMasterClient::connect(format!(
        "http://{rm_addr}"
    ))
    .await?;
    let e = am
        .register_application_master(pb::RegisterAmRequest {
            am: Some(pb::AmIdentity {
                attempt_id: format!("appattempt_{}_000001", &app["application_".len()..]),
                token: "guess".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let e = hstack_tests::hstack_proto::Error::from_status(&e);
    assert!(
        matches!(
            e.code,
            Code::PermissionDenied | Code::ApplicationAttemptNotCurrent
        ),
        "{e}"
    );
    // A malformed queue file: the resource manager does not start, and
    // says which queue and key.
    let q = y.dir.path().join("bad-queues.toml");
    std::fs::write(
        &q,
        "[queue.\"root.a\"]\ncapacity = 60\n[queue.\"root.b\"]\ncapacity = 30\n",
    )?;
    let r = hstack_env(
        &[
            "resourcemanager",
            "--data-dir",
            &y.dir.path().join("rm2").display().to_string(),
            "--rpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--queues-file",
            &q.display().to_string(),
        ],
        &[],
    )?;
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(
        r.stderr.contains("queues_file") && r.stderr.contains("sum to 90"),
        "{r:?}"
    );
    y.check_logs()
}

/// With `store = "file"`, a resource manager that restarts keeps its
/// applications: a finished one is still listed as it ended, an unfinished
/// one starts a new attempt (its old containers are killed as the node
/// managers register again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_resource_manager_recovers_its_applications() -> anyhow::Result<()> {
    let mut y = YarnCluster::start(2, 1, &["--store", "file"]).await?;
    let rm = y.client()?;
    let done = submit(&rm, &opts(1, "true")).await?;
    let r = y.wait_over(&done, Duration::from_secs(60)).await?;
    assert_eq!(r.final_status, pb::FinalStatus::Succeeded as i32);
    let app = submit(&rm, &opts(2, "sleep 600")).await?;
    let first: Vec<String> = wait_for("both tasks running", Duration::from_secs(30), || {
        let (rm, app) = (rm.clone(), app.clone());
        async move {
            let ts: Vec<String> = tasks(&rm, &app)
                .await
                .iter()
                .filter(|c| is_running(c))
                .map(|c| c.container_id.clone())
                .collect();
            (ts.len() == 2).then_some(ts)
        }
    })
    .await?;
    y.rm.terminate(Duration::from_secs(10));
    y.rm.restart().await?;
    let rm = y.client()?;
    y.wait_nodes(2).await?;
    let r = rm.report(&done).await?;
    assert_eq!(
        (r.state, r.final_status),
        (
            pb::AppState::Finished as i32,
            pb::FinalStatus::Succeeded as i32
        ),
        "{r:?}"
    );
    // The unfinished one runs again as attempt 2, with new containers.
    wait_for(
        "attempt 2 running its tasks",
        Duration::from_secs(30),
        || {
            let (rm, app) = (rm.clone(), app.clone());
            async move {
                let r = rm.report(&app).await.ok()?;
                let running = tasks(&rm, &app)
                    .await
                    .iter()
                    .filter(|c| is_running(c))
                    .count();
                (r.attempt == 2 && r.state == pb::AppState::Running as i32 && running == 2)
                    .then_some(())
            }
        },
    )
    .await?;
    // Attempt 1's containers do not run on.
    wait_for(
        "attempt 1's containers gone",
        Duration::from_secs(15),
        || {
            let first = first.clone();
            async move {
                hstack_tests::procs_with_env("CONTAINER_ID", &first)
                    .is_empty()
                    .then_some(())
            }
        },
    )
    .await?;
    // The restart did not use up an attempt: with the default two, a
    // master killed now still gets a third.
    kill_master(&rm, &app, 2).await?;
    wait_for("attempt 3 running", Duration::from_secs(30), || {
        let (rm, app) = (rm.clone(), app.clone());
        async move {
            let r = rm.report(&app).await.ok()?;
            (r.attempt == 3 && r.state == pb::AppState::Running as i32).then_some(())
        }
    })
    .await?;
    rm.kill(&app, "tester").await?;
    let r = y.wait_over(&app, Duration::from_secs(30)).await?;
    assert_eq!(r.state, pb::AppState::Killed as i32, "{r:?}");
    y.check_logs()
}
