//! The coordination service's semantics over real processes: replication,
//! watches, recipes, bad input.

use std::collections::BTreeSet;
use std::time::Duration;

use hstack_coord_client::{Client, Code, CreateMode, EventKind, LeaderElection, Lock, MultiOp};
use hstack_tests::{wait_for, CoordEnsemble};

async fn expect_code<T: std::fmt::Debug>(
    r: Result<T, hstack_coord_client::CoordError>,
    code: Code,
) {
    match r {
        Err(e) => assert_eq!(e.code, code, "{e}"),
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
    }
}

/// Everything below `root`, with data and version, for before/after checks.
async fn dump(c: &Client, root: &str) -> Vec<(String, Vec<u8>, i32, i32)> {
    let mut out = vec![];
    let mut stack = vec![root.to_string()];
    while let Some(p) = stack.pop() {
        let (data, st) = c.get_data(&p, false).await.unwrap();
        out.push((p.clone(), data, st.version, st.cversion));
        for ch in c.get_children(&p, false).await.unwrap() {
            stack.push(if p == "/" {
                format!("/{ch}")
            } else {
                format!("{p}/{ch}")
            });
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_spread_over_members_reach_every_member() {
    let ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let mut clients = vec![];
    for id in 1..=3 {
        clients.push(ens.client_only(id).await.unwrap());
    }
    clients[0]
        .create("/w", b"", CreateMode::Persistent)
        .await
        .unwrap();
    let mut tasks = vec![];
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..334 {
                let n = i * 334 + k;
                if n >= 1000 {
                    break;
                }
                c.create(
                    &format!("/w/k{n:04}"),
                    format!("v{n}").as_bytes(),
                    CreateMode::Persistent,
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for c in &clients {
        c.sync("/w").await.unwrap();
        let children = c.get_children("/w", false).await.unwrap();
        assert_eq!(
            children.len(),
            1000,
            "member {} has {} children",
            c.member_id(),
            children.len()
        );
        let (d, _) = c.get_data("/w/k0999", false).await.unwrap();
        assert_eq!(d, b"v999");
    }
    // a session's own writes are visible to its next read, on any member
    for c in &clients {
        c.set_data("/w/k0000", format!("{}", c.member_id()).as_bytes(), None)
            .await
            .unwrap();
        let (d, _) = c.get_data("/w/k0000", false).await.unwrap();
        assert_eq!(d, format!("{}", c.member_id()).as_bytes());
    }
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_sequential_multi_and_linearizable_reads() {
    let ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let c = ens.client().await.unwrap();
    let (p, st) = c
        .create_with_stat("/s", b"abc", CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(p, "/s");
    assert_eq!(
        (st.version, st.data_length, st.num_children, st.czxid),
        (0, 3, 0, st.mzxid)
    );
    let a = c
        .create("/s/n-", b"", CreateMode::PersistentSequential)
        .await
        .unwrap();
    let b = c
        .create("/s/n-", b"", CreateMode::PersistentSequential)
        .await
        .unwrap();
    assert_eq!(
        (a.as_str(), b.as_str()),
        ("/s/n-0000000000", "/s/n-0000000001")
    );
    let st2 = c.set_data("/s", b"x", Some(0)).await.unwrap();
    assert_eq!(st2.version, 1);
    assert!(st2.mzxid > st.mzxid);
    let (_, parent) = c.get_children_with_stat("/s", false).await.unwrap();
    assert_eq!((parent.cversion, parent.num_children), (2, 2));

    // multi: all or nothing, the failing op named
    let err = c
        .multi(vec![
            MultiOp::Create {
                path: "/s/m1".into(),
                data: vec![],
                mode: CreateMode::Persistent,
            },
            MultiOp::Check {
                path: "/s".into(),
                version: 7,
            },
        ])
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::BadVersion);
    assert!(err.message.contains("op 1"), "{err}");
    assert!(c.exists("/s/m1", false).await.unwrap().is_none());
    let ok = c
        .multi(vec![
            MultiOp::Create {
                path: "/s/m1".into(),
                data: vec![],
                mode: CreateMode::Persistent,
            },
            MultiOp::SetData {
                path: "/s".into(),
                data: b"y".to_vec(),
                version: Some(1),
            },
            MultiOp::Delete {
                path: "/s/n-0000000000".into(),
                version: None,
            },
        ])
        .await
        .unwrap();
    assert_eq!(ok.len(), 3);

    // a linearizable read on a follower sees a write made through another member
    let leader = ens.wait_leader(Duration::from_secs(5)).await.unwrap();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let writer = ens.client_only(leader).await.unwrap();
    let reader = ens.client_only(follower).await.unwrap().linearizable();
    for i in 0..20 {
        writer
            .set_data("/s", format!("{i}").as_bytes(), None)
            .await
            .unwrap();
        let (d, _) = reader.get_data("/s", false).await.unwrap();
        assert_eq!(d, format!("{i}").as_bytes());
    }

    // As with ZooKeeper's servers, a member answers a write once it has
    // applied it itself: another session on that member, reading without a
    // sync, sees the write as soon as the writer has its reply.
    let writer = ens.client_only(follower).await.unwrap();
    let neighbour = ens.client_only(follower).await.unwrap();
    for i in 0..50 {
        let path = format!("/s/same-member-{i}");
        writer
            .create(&path, b"", CreateMode::Persistent)
            .await
            .unwrap();
        assert!(
            neighbour.exists(&path, false).await.unwrap().is_some(),
            "{path} was answered but is not visible on the same member"
        );
    }
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_watches_fire_exactly_once() {
    let ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let watcher = ens.client_only(2).await.unwrap();
    let writer = ens.client_only(3).await.unwrap();
    writer
        .create("/w", b"0", CreateMode::Persistent)
        .await
        .unwrap();
    watcher.sync("/w").await.unwrap();

    let mut events = watcher.events();
    watcher.get_data("/w", true).await.unwrap();
    watcher.get_children("/w", true).await.unwrap();
    assert!(watcher.exists("/w/new", true).await.unwrap().is_none());
    writer.set_data("/w", b"1", None).await.unwrap();
    writer.set_data("/w", b"2", None).await.unwrap();
    writer
        .create("/w/new", b"", CreateMode::Persistent)
        .await
        .unwrap();
    writer
        .create("/w/new2", b"", CreateMode::Persistent)
        .await
        .unwrap();
    // A read after the changes: every event it implies arrives before its reply.
    watcher.sync("/w").await.unwrap();
    let (d, _) = watcher.get_data("/w", false).await.unwrap();
    assert_eq!(d, b"2");
    let mut got = vec![];
    while let Ok(ev) = events.try_recv() {
        if ev.path.starts_with("/w") {
            got.push((ev.kind, ev.path));
        }
    }
    assert_eq!(
        got,
        vec![
            (EventKind::NodeDataChanged, "/w".to_string()),
            (EventKind::NodeCreated, "/w/new".to_string()),
            (EventKind::NodeChildrenChanged, "/w".to_string()),
        ]
    );
    // persistent recursive watch keeps firing
    watcher.add_watch("/w", true).await.unwrap();
    writer.set_data("/w/new", b"a", None).await.unwrap();
    writer.set_data("/w/new", b"b", None).await.unwrap();
    let mut n = 0;
    while n < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        if ev.path == "/w/new" && ev.kind == EventKind::NodeDataChanged {
            n += 1;
        }
    }
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_excludes_and_tokens_increase() {
    let ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let setup = ens.client().await.unwrap();
    setup
        .create("/counter", b"0", CreateMode::Persistent)
        .await
        .unwrap();
    let mut tasks = vec![];
    for w in 0..4u64 {
        let c = ens
            .client_on(1 + w % 3, Duration::from_secs(10))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let lock = Lock::new(c.clone(), "/locks/counter");
            let mut tokens = vec![];
            for _ in 0..10 {
                let g = lock.acquire().await.unwrap();
                tokens.push(g.token);
                // read-modify-write without versions: only the lock keeps it right
                let (d, _) = c.get_data("/counter", false).await.unwrap();
                let v: u64 = String::from_utf8(d).unwrap().parse().unwrap();
                tokio::task::yield_now().await;
                c.set_data("/counter", (v + 1).to_string().as_bytes(), None)
                    .await
                    .unwrap();
                g.release().await.unwrap();
            }
            tokens
        }));
    }
    let mut all_tokens = BTreeSet::new();
    for t in tasks {
        for tok in t.await.unwrap() {
            assert!(
                all_tokens.insert(tok),
                "fencing token {tok} handed out twice"
            );
        }
    }
    setup.sync("/").await.unwrap();
    let (d, _) = setup.get_data("/counter", false).await.unwrap();
    assert_eq!(d, b"40");
    assert!(setup
        .get_children("/locks/counter", false)
        .await
        .unwrap()
        .is_empty());

    // election: a second contender waits, and leads with a larger token once the first resigns
    let c1 = ens.client().await.unwrap();
    let c2 = ens.client().await.unwrap();
    let e1 = LeaderElection::new(c1.clone(), "/election");
    let l1 = e1.campaign(b"one").await.unwrap();
    let e2 = LeaderElection::new(c2.clone(), "/election");
    let waiting = tokio::spawn(async move { e2.campaign(b"two").await });
    // The second contender has joined (its candidate node is there, behind
    // the first's): from now on it can only be waiting.
    wait_for("the second candidate", Duration::from_secs(10), || {
        let c1 = c1.clone();
        async move { (c1.get_children("/election", false).await.ok()?.len() == 2).then_some(()) }
    })
    .await
    .unwrap();
    assert!(!waiting.is_finished(), "two leaders at once");
    assert_eq!(e1.leader().await.unwrap().unwrap(), b"one");
    let t1 = l1.token;
    l1.resign().await.unwrap();
    let l2 = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(l2.token > t1);
    assert_eq!(e1.leader().await.unwrap().unwrap(), b"two");
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let mut ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let c = ens.client().await.unwrap();
    c.create("/ok", b"d", CreateMode::Persistent).await.unwrap();
    c.create("/ok/child", b"", CreateMode::Persistent)
        .await
        .unwrap();
    c.create("/eph", b"", CreateMode::Ephemeral).await.unwrap();
    let before = dump(&c, "/").await;

    for p in ["a", "/a/", "//", "/a/./b", "/a/../b", "/a\0b", ""] {
        let e = c.create(p, b"", CreateMode::Persistent).await.unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument, "{p:?}: {e}");
        assert!(e.message.contains("invalid path"), "{e}");
        expect_code(c.get_data(p, false).await, Code::InvalidArgument).await;
        expect_code(c.set_data(p, b"", None).await, Code::InvalidArgument).await;
    }
    let big = vec![0u8; hstack_coord_client::MAX_DATA + 1];
    let e = c
        .create("/big", &big, CreateMode::Persistent)
        .await
        .unwrap_err();
    assert!(
        e.code == Code::InvalidArgument && e.message.contains("limit"),
        "{e}"
    );
    expect_code(c.set_data("/ok", &big, None).await, Code::InvalidArgument).await;
    expect_code(c.set_data("/ok", b"x", Some(5)).await, Code::BadVersion).await;
    expect_code(c.delete("/ok/child", Some(3)).await, Code::BadVersion).await;
    expect_code(
        c.create("/eph/kid", b"", CreateMode::Persistent).await,
        Code::NoChildrenForEphemerals,
    )
    .await;
    expect_code(c.delete("/ok", None).await, Code::NotEmpty).await;
    expect_code(
        c.create("/ok", b"", CreateMode::Persistent).await,
        Code::NodeExists,
    )
    .await;
    expect_code(
        c.create("/missing/x", b"", CreateMode::Persistent).await,
        Code::NoNode,
    )
    .await;
    expect_code(
        c.create("/ttl", b"", CreateMode::Ttl(Duration::ZERO)).await,
        Code::InvalidArgument,
    )
    .await;

    // garbage bytes on the client port: the connection is dropped, the member serves on
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(&ens.nodes[0].addr("client"))
            .await
            .unwrap();
        let _ = s
            .write_all(b"\x00\x01garbage\xff\xfe not http/2 at all\r\n\r\n")
            .await;
        let _ = s.write_all(&[0xAB; 4096]).await;
    }
    let after = dump(&c, "/").await;
    assert_eq!(before, after);
    let fresh = ens.client_only(1).await.unwrap();
    fresh.sync("/").await.unwrap();
    assert_eq!(dump(&fresh, "/").await, before);

    // an expired session: its requests fail, its ephemerals are gone, it creates nothing
    let leader = ens.wait_leader(Duration::from_secs(5)).await.unwrap();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let c = ens.client_only(leader).await.unwrap();
    let mut o = hstack_coord_client::ClientOptions::new(vec![
        ens.nodes[follower as usize - 1].addr("client")
    ]);
    o.session_timeout = Duration::from_millis(1000);
    o.request_timeout = Duration::from_secs(5);
    let short = Client::connect(o).await.unwrap();
    short
        .create("/short", b"", CreateMode::Ephemeral)
        .await
        .unwrap();
    ens.expect_member_failures();
    ens.node(follower).pause();
    wait_for(
        "the silent session to expire",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            async move {
                c.exists("/short", false)
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    ens.node(follower).resume();
    // The client learns of the expiry from its member (a request racing that
    // may see ConnectionLoss first, as with ZooKeeper); from then on every
    // request fails with SessionExpired.
    wait_for(
        "the client to learn its session expired",
        Duration::from_secs(10),
        || {
            let short = short.clone();
            async move { (short.state() == hstack_coord_client::SessionState::Expired).then_some(()) }
        },
    )
    .await
    .unwrap();
    let e = short
        .create("/short2", b"", CreateMode::Ephemeral)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::SessionExpired, "{e}");
    assert!(c.exists("/short2", false).await.unwrap().is_none());
    ens.check_logs().unwrap();
}
