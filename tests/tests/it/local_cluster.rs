//! `hstack local up|status|down` and the zk CLI against it, as a user runs them.

use hstack_tests::hstack;

#[test]
fn local_cluster_up_use_down_and_up_again() {
    let dir = tempfile::Builder::new()
        .prefix("hstack-local-")
        .tempdir()
        .unwrap();
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let (ok, out, err) = hstack(args).unwrap();
        assert!(ok, "hstack {args:?} failed:\n{out}\n{err}");
        out
    };
    let out = run(&["local", "up", "--dir", d]);
    assert!(out.contains("ready"), "{out}");
    // a second up while running is refused, and changes nothing
    let (ok, _, err) = hstack(&["local", "up", "--dir", d]).unwrap();
    assert!(!ok && err.contains("already running"), "{err}");

    run(&["zk", "--cluster", d, "create", "/hello", "world"]);
    assert_eq!(
        run(&["zk", "--cluster", d, "get", "/hello"]).trim(),
        "world"
    );
    let js: serde_json::Value =
        serde_json::from_str(&run(&["zk", "--cluster", d, "--json", "stat", "/hello"])).unwrap();
    assert_eq!(js["stat"]["data_length"], 5);
    let members = run(&["zk", "--cluster", d, "members"]);
    assert!(
        members.contains("leader") && members.lines().count() >= 5,
        "{members}"
    );
    let js: serde_json::Value =
        serde_json::from_str(&run(&["local", "status", "--dir", d, "--json"])).unwrap();
    // 3 coordination members, a namenode, 6 datanodes, a resource manager
    // and 6 node managers.
    assert_eq!(js["daemons"].as_array().unwrap().len(), 17);
    assert!(
        js["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["ready"] == true),
        "{js}"
    );

    // the file system: put, ls, cat, and the admin report
    let src = dir.path().join("hello.txt");
    std::fs::write(&src, "hello, file system\n").unwrap();
    run(&["dfs", "--cluster", d, "mkdir", "-p", "/user/demo"]);
    run(&[
        "dfs",
        "--cluster",
        d,
        "put",
        src.to_str().unwrap(),
        "/user/demo/",
    ]);
    let ls = run(&["dfs", "--cluster", d, "ls", "/user/demo"]);
    assert!(ls.contains("/user/demo/hello.txt"), "{ls}");
    assert_eq!(
        run(&["dfs", "--cluster", d, "cat", "/user/demo/hello.txt"]),
        "hello, file system\n"
    );
    let js: serde_json::Value =
        serde_json::from_str(&run(&["admin", "--cluster", d, "report", "--json"])).unwrap();
    assert_eq!(js["datanodes"].as_array().unwrap().len(), 6, "{js}");
    let racks: std::collections::HashSet<&str> = js["datanodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rack"].as_str().unwrap())
        .collect();
    assert_eq!(racks.len(), 2, "{js}");

    // the scheduler: a node manager beside each datanode, on its host and
    // rack, and a distributed shell through them
    let js: serde_json::Value =
        serde_json::from_str(&run(&["node", "list", "--cluster", d, "--json"])).unwrap();
    let nodes = js.as_array().unwrap();
    assert_eq!(nodes.len(), 6, "{js}");
    assert!(
        nodes
            .iter()
            .all(|n| n["host"].as_str().unwrap().starts_with("127.0.1.")),
        "{js}"
    );
    let js: serde_json::Value = serde_json::from_str(&run(&[
        "app",
        "shell",
        "--cluster",
        d,
        "--json",
        "--containers",
        "3",
        "--command",
        "echo hi",
    ]))
    .unwrap();
    assert_eq!(js["final_status"], "SUCCEEDED", "{js}");

    // bad input through the CLI: clear error, non-zero exit
    let (ok, _, err) = hstack(&["zk", "--cluster", d, "create", "no-slash"]).unwrap();
    assert!(!ok && err.contains("invalid path"), "{err}");
    let (ok, _, err) = hstack(&["zk", "--cluster", d, "delete", "/"]).unwrap();
    assert!(!ok && err.contains("cannot delete /"), "{err}");

    run(&["local", "down", "--dir", d]);
    let js: serde_json::Value =
        serde_json::from_str(&run(&["local", "status", "--dir", d, "--json"])).unwrap();
    assert!(
        js["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["alive"] == false),
        "{js}"
    );

    // the same cluster comes back with its data
    run(&["local", "up", "--dir", d]);
    assert_eq!(
        run(&["zk", "--cluster", d, "get", "/hello"]).trim(),
        "world"
    );
    assert_eq!(
        run(&["dfs", "--cluster", d, "cat", "/user/demo/hello.txt"]),
        "hello, file system\n"
    );
    run(&["local", "down", "--dir", d]);
    let mut logs: Vec<String> = (1..=3).map(|id| format!("coord-{id}.log")).collect();
    logs.push("namenode-nn.log".into());
    logs.extend((1..=6).map(|i| format!("datanode-dn{i}.log")));
    logs.push("resourcemanager-rm.log".into());
    logs.extend((1..=6).map(|i| format!("nodemanager-nm{i}.log")));
    for l in logs {
        hstack_tests::check_log(&dir.path().join(l), &[]).unwrap();
    }
}
