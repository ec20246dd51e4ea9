//! ZooKeeper's own clients against real members, unchanged: kazoo (PyPI),
//! Debian's `zkCli.sh`, and raw jute frames for the bad input (the scripts
//! are in `tests/zk/`; `scripts/setup.sh` installs what they need).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hstack_tests::CoordEnsemble;

/// The digest of `super:test` (ZooKeeper's documented example).
const SUPER_DIGEST: &str = "super:D/InIHSb7yEEbrWz8b9l71RjZJU=";

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("zk")
        .join(name)
}

/// Runs a script to completion; panics with its output unless it exits 0.
fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_runs_unchanged_against_three_members() {
    let mut ens = CoordEnsemble::start(3, &["--superuser-digest", SUPER_DIGEST])
        .await
        .unwrap();
    // The last test SIGKILLs member 1.
    ens.expect_member_failures();
    let pids: Vec<String> = ens
        .nodes
        .iter()
        .map(|p| p.pid().expect("running").to_string())
        .collect();
    let mut cmd = Command::new("python3");
    cmd.arg(script("kazoo_compat.py"))
        .env("HSTACK_ZK_HOSTS", ens.zk_addrs().join(","))
        .env("HSTACK_ZK_PIDS", pids.join(","))
        .env("HSTACK_ZK_SUPER", "super:test");
    let out = tokio::task::spawn_blocking(move || run(cmd, "kazoo_compat.py"))
        .await
        .unwrap();
    // Every test ran (a script that skipped some would still exit 0).
    assert_eq!(out.matches("PASS ").count(), 9, "{out}");
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zkcli_drives_hstack() {
    let ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(script("zkcli.sh")).arg(ens.zk_addrs().join(","));
    let out = tokio::task::spawn_blocking(move || run(cmd, "zkcli.sh"))
        .await
        .unwrap();
    assert!(out.contains("zkcli: all checks passed"), "{out}");
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_zookeepers_answer_and_changes_nothing() {
    let ens = CoordEnsemble::start(1, &["--jute-max-buffer", "65536"])
        .await
        .unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(script("bad_input.py"))
        .arg(&ens.zk_addrs()[0])
        .arg("65536");
    let out = tokio::task::spawn_blocking(move || run(cmd, "bad_input.py"))
        .await
        .unwrap();
    assert!(out.contains("bad input: all checks passed"), "{out}");
    // The member is still healthy and its tree has only what the checks
    // created on purpose.
    let c = ens.client().await.unwrap();
    let mut kids = c.get_children("/", false).await.unwrap();
    kids.sort();
    assert_eq!(kids, vec!["ok".to_string()], "the tree changed: {kids:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    ens.check_logs().unwrap();
}
