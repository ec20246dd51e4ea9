//! The file system shell as operators type it: Hadoop's spellings, globs,
//! relative paths, hdfs:// URIs, the verbs `hdfs dfs` has, --json, and the
//! coordination shell's additions; real processes throughout.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hstack_proto::Code;
use hstack_tests::{hstack_bin, hstack_spawn, CoordEnsemble, DfsCluster};

/// What a finished `hstack` run gave: exit code, stdout, stderr.
struct Out {
    code: i32,
    out: String,
    err: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == 0
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.out, self.err
        )
    }
}

/// Runs `hstack ARGS…` with `env` set, none of the HSTACK_* variables
/// that name a namenode, a cluster or a user inherited.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(hstack_bin());
    cmd.args(args).stdin(Stdio::null());
    for k in [
        "HSTACK_NAMENODE",
        "HSTACK_CLUSTER",
        "HSTACK_USER",
        "HSTACK_COORD",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run hstack");
    Out {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into(),
        err: String::from_utf8_lossy(&o.stderr).into(),
    }
}

/// The user the namenode takes for its superuser (who runs it), which a
/// client is by default too.
fn superuser() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "hstack".into())
}

/// `hstack dfs --namenode NN --user SUPERUSER ARGS…`.
fn dfs(nn: &str, args: &[&str]) -> Out {
    let su = superuser();
    let mut all = vec!["dfs", "--namenode", nn, "--user", su.as_str()];
    all.extend(args);
    run_env(&all, &[])
}

fn json(o: &Out) -> serde_json::Value {
    assert!(o.ok(), "{o:?}");
    serde_json::from_str(&o.out).unwrap_or_else(|e| panic!("not JSON ({e}): {o:?}"))
}

fn exists(nn: &str, path: &str) -> bool {
    dfs(nn, &["-test", "-e", path]).ok()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hadoop_spellings_globs_relative_paths_and_uris() -> anyhow::Result<()> {
    let cluster = DfsCluster::start(3, 1, &[]).await?;
    let nn = cluster.nn.addr("rpc");
    let local = cluster.dir.path().join("local");
    std::fs::create_dir_all(&local)?;
    let f1 = write(&local, "f1", &[b'1'; 2048]);
    let f2 = write(&local, "f2", b"two\n");
    let f3 = write(&local, "f3", b"three\n");

    // -mkdir -p, -put and -copyFromLocal with several sources, -ls -h.
    assert!(dfs(&nn, &["-mkdir", "-p", "/h/a/b"]).ok());
    let o = dfs(&nn, &["-put", &f1, &f2, "/h/a"]);
    assert!(o.ok(), "{o:?}");
    let o = dfs(&nn, &["-copyFromLocal", &f3, "/h/a/b"]);
    assert!(o.ok(), "{o:?}");
    let o = dfs(&nn, &["-ls", "-h", "/h/a"]);
    assert!(o.ok(), "{o:?}");
    assert!(o.out.contains("Found 3 items"), "{o:?}");
    assert!(
        o.out.contains("2.0 K") && o.out.contains("/h/a/f1"),
        "{o:?}"
    );
    // Several sources into something that is not a directory: refused
    // before anything is written.
    let o = dfs(&nn, &["-put", &f1, &f2, "/h/none"]);
    assert!(
        !o.ok() && o.err.contains("No such file or directory"),
        "{o:?}"
    );
    assert!(!exists(&nn, "/h/none"));
    let o = dfs(&nn, &["-put", &f2, &f3, "/h/a/f1"]);
    assert!(!o.ok() && o.err.contains("Is not a directory"), "{o:?}");

    // -cat with a glob; -get and -copyToLocal.
    let o = dfs(&nn, &["-cat", "/h/a/f*"]);
    assert!(o.ok(), "{o:?}");
    assert_eq!(o.out, format!("{}two\n", "1".repeat(2048)));
    let got = cluster.dir.path().join("got");
    std::fs::create_dir_all(&got)?;
    let o = dfs(&nn, &["-get", "/h/a/f2", got.to_str().unwrap()]);
    assert!(o.ok(), "{o:?}");
    assert_eq!(std::fs::read(got.join("f2"))?, b"two\n");
    let got2 = cluster.dir.path().join("got2");
    std::fs::create_dir_all(&got2)?;
    let o = dfs(&nn, &["-copyToLocal", "/h/a/f?", got2.to_str().unwrap()]);
    assert!(o.ok(), "{o:?}");
    assert_eq!(std::fs::read(got2.join("f1"))?.len(), 2048);
    assert_eq!(std::fs::read(got2.join("f2"))?, b"two\n");
    // A file that is there already is not overwritten without -f.
    let o = dfs(&nn, &["-get", "/h/a/f2", got.to_str().unwrap()]);
    assert!(!o.ok() && o.err.contains("File exists"), "{o:?}");

    // Globs: ?, [..], {..}, across components; no match; a bad pattern.
    let names = |o: &Out| -> Vec<String> {
        json(o)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&dfs(&nn, &["--json", "-ls", "-d", "/h/a/f[12]"])),
        ["/h/a/f1", "/h/a/f2"]
    );
    assert_eq!(
        names(&dfs(&nn, &["--json", "-ls", "-d", "/h/a/{f2,b}"])),
        ["/h/a/b", "/h/a/f2"]
    );
    assert_eq!(
        names(&dfs(&nn, &["--json", "-ls", "/h/*/b"])),
        ["/h/a/b/f3"]
    );
    assert_eq!(
        names(&dfs(&nn, &["--json", "-ls", "-d", "/h/{a/b,a/f1}"])),
        ["/h/a/b", "/h/a/f1"]
    );
    let o = dfs(&nn, &["-ls", "/h/a/zz*"]);
    assert!(
        o.err.contains("`/h/a/zz*': No such file or directory"),
        "{o:?}"
    );
    assert_eq!(o.code, i32::from(Code::FileNotFound.exit_status()), "{o:?}");
    let o = dfs(&nn, &["-rm", "-r", "/h/a/f1", "/h/a/[f"]);
    assert!(!o.ok() && o.err.contains("bad glob pattern"), "{o:?}");
    assert!(exists(&nn, "/h/a/f1"), "a bad glob changes nothing");
    // rm -f of a glob that matches nothing is quiet.
    assert!(dfs(&nn, &["-rm", "-f", "/h/a/nothing*"]).ok());

    // -rm -r -skipTrash.
    let o = dfs(&nn, &["-rm", "-r", "-skipTrash", "/h/a/b"]);
    assert!(o.ok() && o.out.contains("Deleted /h/a/b"), "{o:?}");
    assert!(!exists(&nn, "/h/a/b"));

    // Relative paths: the home directory /user/<name>, from --user or
    // $HSTACK_USER.
    assert!(dfs(&nn, &["-mkdir", "-p", "/user/alice"]).ok());
    assert!(dfs(&nn, &["-chown", "alice", "/user/alice"]).ok());
    let as_alice = |args: &[&str]| {
        let mut all = vec!["dfs", "--namenode", nn.as_str(), "--user", "alice"];
        all.extend(args);
        run_env(&all, &[])
    };
    let o = as_alice(&["-put", &f2, "rel.txt"]);
    assert!(o.ok(), "{o:?}");
    let o = as_alice(&["-mkdir", "-p", "sub/dir"]);
    assert!(o.ok(), "{o:?}");
    assert!(exists(&nn, "/user/alice/rel.txt") && exists(&nn, "/user/alice/sub/dir"));
    let o = as_alice(&["-ls"]);
    assert!(o.out.contains("/user/alice/rel.txt"), "{o:?}");
    let o = run_env(
        &["dfs", "--namenode", &nn, "-cat", "sub/../rel.txt"],
        &[("HSTACK_USER", "alice")],
    );
    assert_eq!(o.out, "two\n", "{o:?}");

    // hdfs:// URIs: the namenode the command uses, by address or by name;
    // without --namenode the URI names it.
    let uri = format!("hdfs://{nn}/h/a/f2");
    let o = dfs(&nn, &["-cat", &uri]);
    assert_eq!(o.out, "two\n", "{o:?}");
    let port = nn.rsplit(':').next().unwrap();
    let by_name = format!("hdfs://localhost:{port}/h/a/f2");
    let su = superuser();
    let o = run_env(&["dfs", "--user", &su, "-cat", &by_name], &[]);
    assert_eq!(o.out, "two\n", "{o:?}");
    // Another namenode: an error, and nothing changed (every path is
    // checked before anything is done).
    let other = "hdfs://127.0.0.1:1/h/a/f2";
    let o = dfs(&nn, &["-rm", "/h/a/f1", other]);
    assert!(!o.ok() && o.err.contains("names the namenode"), "{o:?}");
    assert!(exists(&nn, "/h/a/f1"));
    let o = run_env(&["dfs", "-rm", &uri, other], &[]);
    assert!(!o.ok() && o.err.contains("names the namenode"), "{o:?}");
    assert!(exists(&nn, "/h/a/f2"));

    // The admin spellings, and a safe-mode wait that times out.
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--namenode", nn.as_str(), "--user", su.as_str()];
        all.extend(args);
        run_env(&all, &[])
    };
    let v = json(&admin(&["--json", "-report", "-live"]));
    assert_eq!(v["datanodes"].as_array().unwrap().len(), 3, "{v}");
    let v = json(&admin(&["--json", "-report", "-dead"]));
    assert_eq!(v["datanodes"].as_array().unwrap().len(), 0, "{v}");
    let o = admin(&[
        "fsck",
        "/h",
        "-files",
        "-blocks",
        "-locations",
        "-openforwrite",
    ]);
    assert!(
        o.ok() && o.out.contains("/h/a/f1") && o.out.contains("Open files"),
        "{o:?}"
    );
    let o = admin(&["fsck", "/h", "-list-corruptfileblocks"]);
    assert!(o.ok() && o.out.contains("has 0 CORRUPT files"), "{o:?}");
    assert!(admin(&["safemode", "enter"]).ok());
    let o = admin(&["safemode", "wait", "--timeout", "1"]);
    assert!(admin(&["safemode", "leave"]).ok());
    assert_eq!(o.code, i32::from(Code::TimedOut.exit_status()), "{o:?}");
    cluster.check_logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_verbs_modes_json_and_timeouts() -> anyhow::Result<()> {
    let cluster = DfsCluster::start(3, 1, &[]).await?;
    let nn = cluster.nn.addr("rpc");
    let local = cluster.dir.path().join("local");
    std::fs::create_dir_all(&local)?;
    let small = write(&local, "small", b"abc");
    let big = write(&local, "big", &vec![b'x'; 3000]);
    let bin = write(&local, "bin", &[0xff, 0xfe, 0, 1]);
    assert!(dfs(&nn, &["-mkdir", "-p", "/n/d/e", "/n/empty"]).ok());
    let o = dfs(&nn, &["-put", &small, &big, &bin, "/n/d"]);
    assert!(o.ok(), "{o:?}");
    let o = dfs(&nn, &["-put", &small, "/n/d/e/inner"]);
    assert!(o.ok(), "{o:?}");

    // A size no block can have is refused by the parser.
    let o = dfs(&nn, &["-put", "--block-size", "9EB", &small, "/n/huge"]);
    assert!(!o.ok() && o.err.contains("larger than"), "{o:?}");
    assert!(!exists(&nn, "/n/huge"));

    // -count: DIR_COUNT FILE_COUNT CONTENT_SIZE PATHNAME.
    let o = dfs(&nn, &["-count", "/n/d"]);
    let fields: Vec<&str> = o.out.split_whitespace().collect();
    assert_eq!(fields, ["2", "4", "3010", "/n/d"], "{o:?}");
    let o = dfs(&nn, &["-count", "-h", "-v", "/n/d"]);
    assert!(
        o.out.contains("DIR_COUNT") && o.out.contains("2.9 K"),
        "{o:?}"
    );
    let v = json(&dfs(&nn, &["--json", "-count", "/n/d"]));
    assert_eq!(v[0]["files"], 4);

    // -getmerge with -nl; -head; -find -name / -iname.
    let merged = cluster.dir.path().join("merged");
    let o = dfs(
        &nn,
        &[
            "-getmerge",
            "-nl",
            "/n/d/small",
            "/n/d/e",
            merged.to_str().unwrap(),
        ],
    );
    assert!(o.ok(), "{o:?}");
    assert_eq!(std::fs::read(&merged)?, b"abc\nabc\n");
    let o = dfs(&nn, &["-head", "/n/d/big"]);
    assert_eq!(o.out.len(), 1024, "{o:?}");
    let o = dfs(&nn, &["-find", "/n", "-name", "*mal*", "-print"]);
    assert_eq!(o.out, "/n/d/small\n", "{o:?}");
    let o = dfs(&nn, &["-find", "/n", "-iname", "INNER"]);
    assert_eq!(o.out, "/n/d/e/inner\n", "{o:?}");

    // -chgrp -R; -chmod symbolic (and a bad mode that changes nothing).
    assert!(dfs(&nn, &["-chgrp", "-R", "staff", "/n/d"]).ok());
    let v = json(&dfs(&nn, &["--json", "-stat", "/n/d/e/inner"]));
    assert_eq!(v["group"], "staff");
    let v = json(&dfs(&nn, &["--json", "-stat", "/n/d"]));
    assert_eq!(v["group"], "staff");
    assert!(dfs(&nn, &["-chmod", "644", "/n/d/small"]).ok());
    assert!(dfs(&nn, &["-chmod", "u+x,go-r", "/n/d/small"]).ok());
    let o = dfs(&nn, &["-stat", "%a %A", "/n/d/small"]);
    assert_eq!(o.out.trim(), "700 rwx------", "{o:?}");
    assert!(dfs(&nn, &["-chmod", "a=r", "/n/d/small"]).ok());
    assert!(dfs(&nn, &["-chmod", "+t", "/n/empty"]).ok());
    assert!(dfs(&nn, &["-chmod", "-R", "a+X", "/n/d/e"]).ok());
    let v = json(&dfs(
        &nn,
        &["--json", "-stat", "/n/d/small", "/n/empty", "/n/d/e/inner"],
    ));
    assert_eq!(v[0]["permission"], "444");
    assert_eq!(v[1]["permission"], "1755");
    assert_eq!(v[2]["permission"], "644", "X: no execute for a plain file");
    for bad in ["q+z", "u+y"] {
        let o = dfs(&nn, &["-chmod", "-R", bad, "/n/d"]);
        assert!(!o.ok() && o.err.contains("mode"), "{o:?}");
    }
    let v = json(&dfs(&nn, &["--json", "-stat", "/n/d/small"]));
    assert_eq!(v["permission"], "444", "a bad mode changes nothing");

    // -rmdir: empty ones go; a non-empty one is an error unless ignored.
    assert!(dfs(&nn, &["-mkdir", "/n/gone"]).ok());
    let o = dfs(&nn, &["-rmdir", "/n/gone", "/n/d"]);
    assert!(!o.ok() && o.err.contains("not empty"), "{o:?}");
    assert!(exists(&nn, "/n/gone"), "checked before anything is deleted");
    let o = dfs(
        &nn,
        &["-rmdir", "--ignore-fail-on-non-empty", "/n/gone", "/n/d"],
    );
    assert!(o.ok(), "{o:?}");
    assert!(!exists(&nn, "/n/gone") && exists(&nn, "/n/d"));

    // -ls -d -t -S -r; -du -h and -s.
    let names = |o: &Out| -> Vec<String> {
        json(o)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&dfs(&nn, &["--json", "-ls", "-S", "/n/d"]))[0],
        "/n/d/big"
    );
    let by_size_rev = names(&dfs(&nn, &["--json", "-ls", "-S", "-r", "/n/d"]));
    assert_eq!(by_size_rev.last().unwrap(), "/n/d/big");
    let o = dfs(&nn, &["-touchz", "/n/d/newest"]);
    assert!(o.ok(), "{o:?}");
    assert_eq!(
        names(&dfs(&nn, &["--json", "-ls", "-t", "/n/d"]))[0],
        "/n/d/newest"
    );
    let o = dfs(&nn, &["-ls", "-d", "/n/d"]);
    assert!(
        o.ok() && !o.out.contains("Found") && o.out.trim_end().ends_with("/n/d"),
        "{o:?}"
    );
    let o = dfs(&nn, &["-du", "-h", "/n/d"]);
    assert!(
        o.ok() && o.out.contains("2.9 K") && o.out.contains("/n/d/big"),
        "{o:?}"
    );
    let o = dfs(&nn, &["-du", "-s", "-h", "/n/d"]);
    assert!(
        o.ok() && o.out.lines().count() == 2,
        "header and one line: {o:?}"
    );

    // --json of several verbs: cat (text and base64), head, tail, mkdir, rm, df.
    let v = json(&dfs(&nn, &["--json", "-cat", "/n/d/small", "/n/d/bin"]));
    assert_eq!(v[0]["data"], "abc");
    assert_eq!(v[0]["length"], 3);
    assert_eq!(v[1]["data_base64"], "//4AAQ==");
    let v = json(&dfs(&nn, &["--json", "-tail", "/n/d/big"]));
    assert_eq!(
        (v["offset"].as_u64(), v["length"].as_u64()),
        (Some(3000 - 1024), Some(1024))
    );
    let v = json(&dfs(&nn, &["--json", "-head", "/n/d/small"]));
    assert_eq!(v["data"], "abc");
    let v = json(&dfs(&nn, &["--json", "-mkdir", "/n/j"]));
    assert_eq!(v["created"][0], "/n/j");
    let v = json(&dfs(&nn, &["--json", "-rm", "-r", "/n/j"]));
    assert_eq!(v["deleted"][0], "/n/j");
    let v = json(&dfs(&nn, &["--json", "-df", "-h"]));
    assert!(v["capacity"].as_u64().unwrap() > 0, "{v}");
    let o = dfs(&nn, &["-df", "-h"]);
    assert!(o.ok() && o.out.contains(&format!("hdfs://{nn}")), "{o:?}");
    // df is anyone's (the file system's totals, as HDFS's getStats); the
    // per-datanode report stays the superuser's (tests/it/dfs.rs).
    let o = run_env(&["dfs", "--namenode", &nn, "--user", "nobody", "-df"], &[]);
    assert!(o.ok() && o.out.contains(&format!("hdfs://{nn}")), "{o:?}");

    // setrep -w with a timeout that passes: 3 replicas on 3 datanodes
    // while one of them is stopped cannot be reached.
    let o = dfs(&nn, &["-put", "--replication", "1", &small, "/n/r1"]);
    assert!(o.ok(), "{o:?}");
    cluster.check_logs()?;
    cluster.dns[2].pause();
    let o = dfs(&nn, &["-setrep", "-w", "--timeout", "1", "3", "/n/r1"]);
    cluster.dns[2].resume();
    assert_eq!(o.code, i32::from(Code::TimedOut.exit_status()), "{o:?}");
    assert!(
        o.err.contains("TimedOut") && o.err.contains("within 1s"),
        "{o:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zk_sync_ephemerals_watches_and_binary_data() -> anyhow::Result<()> {
    let ens = CoordEnsemble::start(1, &[]).await?;
    let members = ens.client_addrs().join(",");
    let zk = |args: &[&str]| {
        let mut all = vec!["zk", "--members", members.as_str()];
        all.extend(args);
        run_env(&all, &[])
    };
    assert!(zk(&["create", "/app", "v1"]).ok());
    let o = zk(&["sync", "/app"]);
    assert!(o.ok() && o.out.contains("Synced /app"), "{o:?}");

    // An ephemeral node held by another session shows with its owner.
    let mut holder = hstack_spawn(&[
        "zk",
        "--members",
        &members,
        "create",
        "-e",
        "--wait",
        "/app/worker",
        "x",
    ])?;
    let mut found = None;
    for _ in 0..100 {
        let v = json(&zk(&["--json", "getEphemerals", "/app"]));
        if let Some(e) = v.as_array().and_then(|a| a.first()) {
            found = Some(e.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = found.expect("the ephemeral node shows");
    assert_eq!(e["path"], "/app/worker");
    assert!(e["ephemeral_owner"].as_u64().unwrap() != 0);
    let o = zk(&["getEphemerals"]);
    assert!(o.ok() && o.out.contains("/app/worker\t0x"), "{o:?}");
    let _ = holder.kill();
    let _ = holder.wait();

    // ls -s: the children and the parent's stat.
    let o = zk(&["ls", "-s", "/"]);
    assert!(
        o.ok() && o.out.contains("app") && o.out.contains("numChildren"),
        "{o:?}"
    );
    let v = json(&zk(&["--json", "ls", "-s", "/app"]));
    assert!(v["stat"]["version"].is_number(), "{v}");

    // stat -w: the stat, then the next change.
    let mut watcher = hstack_spawn(&["zk", "--members", &members, "stat", "-w", "/app"])?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut changed = false;
    for _ in 0..50 {
        assert!(zk(&["set", "/app", "v2"]).ok());
        if watcher.try_wait()?.is_some() {
            changed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(changed, "stat -w returns after a change");
    let out = watcher.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("NodeDataChanged"),
        "{text}"
    );
    // A wait that times out fails with TimedOut's status.
    let o = zk(&["get", "-w", "--timeout", "1", "/app"]);
    assert_eq!(o.code, i32::from(Code::TimedOut.exit_status()), "{o:?}");

    // Binary data: in through --data-file, out through --json base64.
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("bin");
    std::fs::write(&f, [0u8, 0xff, 0x80, b'a'])?;
    let fp = f.to_str().unwrap();
    assert!(zk(&["create", "/bin", "--data-file", fp]).ok());
    let v = json(&zk(&["--json", "get", "/bin"]));
    assert_eq!(v["data_base64"], "AP+AYQ==", "{v}");
    assert!(v.get("data").is_none());
    assert!(zk(&["set", "/bin", "--data-file", fp]).ok());
    let v = json(&zk(&["--json", "get", "/app"]));
    assert_eq!(v["data"], "v2");
    ens.check_logs()
}
