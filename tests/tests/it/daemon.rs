//! The one shape every daemon has: configuration layers with keys per
//! role, start errors that name what is wrong, shutdown that stops cleanly,
//! and a command line whose failures name their error code.

use std::time::Duration;

use hstack_tests::{hstack_env, Proc};

/// `KEY = VALUE` of `--check-config`'s TOML output.
fn key(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
        .trim()
        .to_string()
}

#[test]
fn a_role_scoped_environment_key_reaches_only_its_role() {
    let env = [
        ("HSTACK_NAMENODE_HEARTBEAT_MS", "1234"),
        ("HSTACK_COORD_HEARTBEAT_MS", "150"),
        // The old, unscoped spelling reaches no role any more.
        ("HSTACK_HEARTBEAT_MS", "999"),
        ("HSTACK_DATANODE_RACK", "/env-rack"),
    ];
    let nn = hstack_env(&["namenode", "--check-config"], &env).unwrap();
    assert_eq!(nn.code, Some(0), "{nn:?}");
    assert_eq!(key(&nn.stdout, "heartbeat_ms"), "1234");
    let coord = hstack_env(&["coord", "--check-config"], &env).unwrap();
    assert_eq!(coord.code, Some(0), "{coord:?}");
    assert_eq!(key(&coord.stdout, "heartbeat_ms"), "150");
    let dn = hstack_env(&["datanode", "--check-config"], &env).unwrap();
    assert_eq!(key(&dn.stdout, "rack"), "\"/env-rack\"");
    // Without the scoped keys, every role has its own default.
    let nn = hstack_env(&["namenode", "--check-config"], &env[2..3]).unwrap();
    assert_eq!(key(&nn.stdout, "heartbeat_ms"), "3000");
    let coord = hstack_env(&["coord", "--check-config"], &env[2..3]).unwrap();
    assert_eq!(key(&coord.stdout, "heartbeat_ms"), "100");
    // A flag beats the environment; a bad value names its variable.
    let nn = hstack_env(
        &["namenode", "--check-config", "--heartbeat-ms", "777"],
        &env,
    )
    .unwrap();
    assert_eq!(key(&nn.stdout, "heartbeat_ms"), "777");
    let bad = hstack_env(
        &["namenode", "--check-config"],
        &[("HSTACK_NAMENODE_HEARTBEAT_MS", "soon")],
    )
    .unwrap();
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("HSTACK_NAMENODE_HEARTBEAT_MS"),
        "{bad:?}"
    );
}

#[test]
fn start_errors_name_the_key_the_value_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // A key whose value is not an address.
    let r = hstack_env(
        &["namenode", "--name-dir", &d, "--rpc-addr", "nowhere:x"],
        &[],
    )
    .unwrap();
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("rpc_addr") && r.stderr.contains("nowhere:x"),
        "{}",
        r.stderr
    );
    // A port that is taken: the key and the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = hstack_env(
        &[
            "coord",
            "--data-dir",
            &d,
            "--client-addr",
            &addr,
            "--raft-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("cannot bind client_addr") && r.stderr.contains(&addr),
        "{}",
        r.stderr
    );
    // A path that cannot be a directory.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let r = hstack_env(
        &[
            "datanode",
            "--data-dirs",
            &file.join("sub").display().to_string(),
            "--transfer-addr",
            "127.0.0.1:0",
            "--rpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("a-file/sub"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_joins_every_task_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coord-1");
    let log = dir.path().join("coord-1.log");
    let args: Vec<String> = [
        "--id",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
        "--client-addr",
        "127.0.0.1:0",
        "--zk-addr",
        "127.0.0.1:0",
        "--raft-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::new("coord", 1, &data, &log, args);
    p.spawn().unwrap();
    p.wait_announced(Duration::from_secs(30)).await.unwrap();
    // It serves what every daemon serves, the process collector included.
    let (status, metrics) = hstack_tests::http_get(&p.addr("http"), "/metrics")
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    for m in [
        "hstack_build_info{role=\"coord\"",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(metrics.contains(m), "{m} missing");
    }
    // A client holds a session (a stream that never ends by itself): the
    // member still stops promptly, cutting it off after the drain period.
    let me = hstack_coord_client::proto::MemberInfo {
        id: 1,
        raft_addr: p.addr("raft"),
        client_addr: p.addr("client"),
        http_addr: p.addr("http"),
        ..Default::default()
    };
    hstack_coord_client::bootstrap(&p.addr("client"), vec![me])
        .await
        .unwrap();
    let mut opts = hstack_coord_client::ClientOptions::new(vec![p.addr("client")]);
    opts.shuffle = false;
    let session = hstack_coord_client::Client::connect(opts).await.unwrap();
    session
        .create("/held", b"", hstack_coord_client::CreateMode::Ephemeral)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let status = p
        .terminate(Duration::from_secs(20))
        .expect("exited by itself within the grace period");
    assert!(
        started.elapsed() < hstack_daemon::SHUTDOWN_GRACE,
        "shutdown took {:?}: a task waited for the session",
        started.elapsed()
    );
    drop(session);
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stopped"), "{text}");
    assert!(
        !text.contains("still running"),
        "a task was not joined:\n{text}"
    );
    // Every line hstack logs is in the node's span (openraft's own tasks
    // keep their own spans).
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" hstack_") && (l.contains(" INFO ") || l.contains(" WARN ")))
        .collect();
    assert!(ours.len() >= 3, "{text}");
    for l in ours {
        assert!(l.contains("node{role=\"coord\" id=1}"), "{l}");
    }
}

#[test]
fn a_failed_command_names_its_code_and_exits_with_its_status() {
    // No coordination service to reach: ConnectionLoss, by name and status.
    let r = hstack_env(&["zk", "--members", "127.0.0.1:1", "get", "/x"], &[]).unwrap();
    let code = hstack_proto::Code::ConnectionLoss;
    assert_eq!(r.code, Some(code.exit_status() as i32), "{r:?}");
    assert!(r.stderr.contains("error[ConnectionLoss]"), "{}", r.stderr);
    // A usage error is clap's 2.
    let r = hstack_env(&["dfs", "--no-such-flag"], &[]).unwrap();
    assert_eq!(r.code, Some(2), "{r:?}");
}
