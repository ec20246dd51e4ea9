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

/// ACLs through hstack's own gRPC: `hstack zk` creates with an ACL, reads
/// and replaces it, and every command is checked against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hstack_zk_checks_acls_over_grpc() {
    use hstack_tests::hstack;
    let ens = CoordEnsemble::start(1, &[]).await.unwrap();
    let m = ens.client_addrs().join(",");
    let zk = |extra: &[&str]| {
        let mut args = vec!["zk", "--members", &m];
        args.extend_from_slice(extra);
        hstack(&args).unwrap()
    };
    let alice = "digest:alice:pw";
    let (ok, out, err) = zk(&[
        "--auth",
        alice,
        "create",
        "/s",
        "secret",
        "--acl",
        "auth::cdrwa",
    ]);
    assert!(ok, "{out}{err}");
    // Anyone else: NoAuth, for reads and writes alike.
    for cmd in [
        vec!["get", "/s"],
        vec!["set", "/s", "x"],
        vec!["getAcl", "/s"],
    ] {
        let (ok, _, err) = zk(&cmd);
        assert!(!ok && err.contains("NoAuth"), "{cmd:?}: {err}");
    }
    let (ok, _, err) = zk(&["--auth", "digest:bob:pw", "get", "/s"]);
    assert!(!ok && err.contains("NoAuth"), "{err}");
    // The owner reads it, and its ACL names the owner's digest.
    let (ok, out, _) = zk(&["--auth", alice, "get", "/s"]);
    assert!(ok && out.trim() == "secret", "{out}");
    let (ok, out, err) = zk(&["--auth", alice, "--json", "getAcl", "/s"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["acl"][0]["scheme"], "digest", "{v}");
    assert!(
        v["acl"][0]["id"].as_str().unwrap().starts_with("alice:"),
        "{v}"
    );
    assert_eq!(v["acl"][0]["perms"], "cdrwa", "{v}");
    // A bad ACL is refused and changes nothing.
    let (ok, _, err) = zk(&["--auth", alice, "setAcl", "/s", "world:anyone:xyz"]);
    assert!(!ok && err.contains("unknown permission"), "{err}");
    let (ok, _, err) = zk(&["--auth", alice, "setAcl", "/s", "world:someone:r"]);
    assert!(!ok && err.contains("InvalidAcl"), "{err}");
    let (ok, _, err) = zk(&["--auth", alice, "setAcl", "-v", "7", "/s", "world:anyone:r"]);
    assert!(!ok && err.contains("BadVersion"), "{err}");
    let (ok, _, _) = zk(&["get", "/s"]);
    assert!(!ok, "the failed setAcl must not have opened the node");
    // World may read once the owner says so, but still not write.
    let (ok, out, err) = zk(&[
        "--auth",
        alice,
        "setAcl",
        "-v",
        "0",
        "/s",
        "world:anyone:r,auth::cdrwa",
    ]);
    assert!(ok && out.contains("aclVersion 1"), "{out}{err}");
    let (ok, out, _) = zk(&["get", "/s"]);
    assert!(ok && out.trim() == "secret", "{out}");
    let (ok, _, err) = zk(&["set", "/s", "x"]);
    assert!(!ok && err.contains("NoAuth"), "{err}");
    // addauth shows the identities a session holds; bad credentials fail.
    let (ok, out, err) = zk(&["addauth", "digest", "alice:pw"]);
    assert!(
        ok && out.contains("alice:") && out.contains("127.0.0.1"),
        "{out}{err}"
    );
    let (ok, _, err) = zk(&["addauth", "digest", "nocolon"]);
    assert!(!ok && err.contains("AuthFailed"), "{err}");
    ens.check_logs().unwrap();
}
