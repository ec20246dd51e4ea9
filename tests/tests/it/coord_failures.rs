//! Killing real coordination members and clients.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hstack_coord_client::{Client, ClientOptions, Code, CreateMode, EventKind};
use hstack_tests::{hstack_spawn, http_get, wait_for, CoordEnsemble};

/// Every key in `keys` exists on member `id` (read from it alone, after a sync).
async fn assert_all_on(ens: &CoordEnsemble, id: u64, keys: &BTreeSet<String>) {
    let c = ens.client_only(id).await.unwrap();
    c.sync("/load").await.unwrap();
    let children: BTreeSet<String> = c
        .get_children("/load", false)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !children.contains(k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "member {id} lacks {} acknowledged writes, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader_under_load_loses_no_acknowledged_write() {
    let mut ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let setup = ens.client().await.unwrap();
    setup
        .create("/load", b"", CreateMode::Persistent)
        .await
        .unwrap();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let first_ok_after_kill: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = vec![];
    for w in 0..4 {
        let c = ens
            .client_on(1 + w % 3, Duration::from_secs(10))
            .await
            .unwrap();
        let (acked, first, killed, stop) = (
            acked.clone(),
            first_ok_after_kill.clone(),
            killed_at.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("w{w}-{n:06}");
                n += 1;
                let issued_after_kill = killed.lock().unwrap().is_some();
                if c.create(&format!("/load/{name}"), b"x", CreateMode::Persistent)
                    .await
                    .is_ok()
                {
                    acked.lock().unwrap().insert(name);
                    if issued_after_kill {
                        let mut f = first.lock().unwrap();
                        if f.is_none() {
                            *f = Some(Instant::now());
                        }
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    wait_for("some load", Duration::from_secs(20), || {
        let acked = acked.clone();
        async move { (acked.lock().unwrap().len() >= 300).then_some(()) }
    })
    .await
    .unwrap();
    let leader = ens.wait_leader(Duration::from_secs(5)).await.unwrap();
    let before_kill = acked.lock().unwrap().len();
    // A write issued after this instant can only be served by a new leader.
    ens.node(leader).kill9();
    let t0 = Instant::now();
    *killed_at.lock().unwrap() = Some(t0);
    ens.expect_member_failures();
    // wait for writes acknowledged after the kill
    let recovered = wait_for(
        "writes after the leader was killed",
        Duration::from_secs(10),
        || {
            let first = first_ok_after_kill.clone();
            async move { *first.lock().unwrap() }
        },
    )
    .await
    .unwrap();
    let took = recovered.duration_since(t0);
    eprintln!("MEASURED: a new leader served writes {took:?} after SIGKILL of leader {leader}");
    assert!(
        took < Duration::from_secs(3),
        "writes resumed only after {took:?}"
    );
    let target = acked.lock().unwrap().len() + 200;
    wait_for(
        "more load on the new leader",
        Duration::from_secs(20),
        || {
            let acked = acked.clone();
            async move { (acked.lock().unwrap().len() >= target).then_some(()) }
        },
    )
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let keys = acked.lock().unwrap().clone();
    assert!(keys.len() > before_kill);
    for id in (1..=3).filter(|i| *i != leader) {
        assert_all_on(&ens, id, &keys).await;
    }
    ens.node(leader).restart().await.unwrap();
    ens.wait_leader(Duration::from_secs(10)).await.unwrap();
    assert_all_on(&ens, leader, &keys).await;
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_kept_down_catches_up_from_a_snapshot() {
    let mut ens = CoordEnsemble::start(3, &["--snapshot-logs", "50", "--keep-logs", "5"])
        .await
        .unwrap();
    ens.expect_member_failures();
    let leader = ens.wait_leader(Duration::from_secs(5)).await.unwrap();
    let down = (1..=3).find(|i| *i != leader).unwrap();
    ens.node(down).kill9();
    let c = ens.client_only(leader).await.unwrap();
    c.create("/load", b"", CreateMode::Persistent)
        .await
        .unwrap();
    let mut keys = BTreeSet::new();
    for i in 0..400 {
        let k = format!("k{i:04}");
        c.create(&format!("/load/{k}"), b"v", CreateMode::Persistent)
            .await
            .unwrap();
        keys.insert(k);
    }
    // the log behind the snapshot was purged on the leader
    let metrics = ens.nodes[leader as usize - 1].addr("http");
    let snapshot_taken = wait_for("a snapshot on the leader", Duration::from_secs(10), || {
        let m = metrics.clone();
        async move {
            let (_, body) = http_get(&m, "/metrics").await?;
            body.lines()
                .find(|l| l.starts_with("hstack_coord_snapshots_total "))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .filter(|v| *v >= 1.0)
        }
    })
    .await;
    assert!(snapshot_taken.is_ok(), "the leader never built a snapshot");
    ens.node(down).restart().await.unwrap();
    let log = ens.node(down).log.clone();
    wait_for(
        "the restarted member to install a snapshot",
        Duration::from_secs(20),
        || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .ok()?
                    .contains("installed snapshot")
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    assert_all_on(&ens, down, &keys).await;
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keeps_session_and_ephemerals_when_its_member_dies() {
    let mut ens = CoordEnsemble::start(3, &[]).await.unwrap();
    ens.expect_member_failures();
    let c = ens.client_on(1, Duration::from_secs(4)).await.unwrap();
    assert_eq!(c.member_id(), 1);
    let sid = c.session_id();
    c.create("/mine", b"", CreateMode::Ephemeral).await.unwrap();
    let mut events = c.events();
    ens.node(1).kill9();
    // the client notices and moves on by itself
    let moved = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.kind == EventKind::Connected {
                return;
            }
        }
    })
    .await;
    assert!(
        moved.is_ok(),
        "client did not reconnect within the session timeout"
    );
    assert_ne!(c.member_id(), 1);
    assert_eq!(c.session_id(), sid);
    let st = c
        .exists("/mine", false)
        .await
        .unwrap()
        .expect("ephemeral survived");
    assert_eq!(st.ephemeral_owner, sid);
    c.create("/mine2", b"", CreateMode::Ephemeral)
        .await
        .unwrap();
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_process_loses_ephemerals_after_its_timeout_not_before() {
    let ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let members = ens.client_addrs().join(",");
    let timeout = Duration::from_millis(3000);
    let mut holder = hstack_spawn(&[
        "zk",
        "--members",
        &members,
        "--session-timeout-ms",
        &timeout.as_millis().to_string(),
        "create",
        "-e",
        "--wait",
        "/held",
    ])
    .unwrap();
    let c = ens.client().await.unwrap();
    wait_for("the holder's ephemeral", Duration::from_secs(10), || {
        let c = c.clone();
        async move { c.exists("/held", false).await.ok().flatten() }
    })
    .await
    .unwrap();
    // A watch tells when the node goes: no sampling at chosen moments.
    let mut events = c.events();
    let held = c
        .exists("/held", true)
        .await
        .unwrap()
        .expect("the ephemeral");
    // While the holder lives, its pings keep the session past its timeout:
    // wait, by the ensemble's own clock (the mtime of a znode it just
    // wrote), until the session is older than its timeout by a second, and
    // see that the node is still there and no deletion was delivered.
    c.create("/clock", b"", CreateMode::Persistent)
        .await
        .unwrap();
    let margin = timeout.as_millis() as i64 + 1000;
    wait_for(
        "the session to outlive its timeout",
        3 * timeout + Duration::from_secs(5),
        || {
            let c = c.clone();
            async move {
                let now = c.set_data("/clock", b"", None).await.ok()?.mtime;
                (now - held.ctime > margin).then_some(())
            }
        },
    )
    .await
    .unwrap();
    while let Ok(ev) = events.try_recv() {
        assert!(
            !(ev.path == "/held" && ev.kind == EventKind::NodeDeleted),
            "a live, pinging session expired"
        );
    }
    assert!(c.exists("/held", false).await.unwrap().is_some());
    // Now kill it without a chance to close, and time the deletion event.
    holder.kill().unwrap();
    let _ = holder.wait();
    let t0 = Instant::now();
    let deleted = tokio::time::timeout(timeout + Duration::from_secs(10), async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.path == "/held" && ev.kind == EventKind::NodeDeleted {
                return t0.elapsed();
            }
        }
    })
    .await
    .expect("the ephemeral goes once the session expires");
    // The holder pinged at a third of its timeout: the server last heard
    // from it at most that long before the kill, and expires the session a
    // whole timeout after that, never sooner.
    assert!(
        deleted >= timeout - timeout / 3,
        "ephemeral deleted {deleted:?} after the kill, before the session timeout {timeout:?}"
    );
    assert!(c.exists("/held", false).await.unwrap().is_none());
    eprintln!(
        "MEASURED: ephemeral deleted {:?} after its client was killed (timeout {timeout:?})",
        t0.elapsed()
    );
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_moves_once_the_killed_leaders_session_expires() {
    let ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let members = ens.client_addrs().join(",");
    let timeout = Duration::from_millis(2000);
    let args = |data: &'static str| {
        vec![
            "zk".to_string(),
            "--members".into(),
            members.clone(),
            "--session-timeout-ms".into(),
            timeout.as_millis().to_string(),
            "elect".into(),
            "/election".into(),
            "--data".into(),
            data.into(),
        ]
    };
    let spawn = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        hstack_spawn(&refs).unwrap()
    };
    // Each contender's stdout lines, on a thread.
    let watch_lines = |child: &mut std::process::Child| {
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        rx
    };
    let mut a = spawn(args("a"));
    let a_lines = watch_lines(&mut a);
    let (_, line) = a_lines
        .recv_timeout(Duration::from_secs(15))
        .expect("a was elected");
    let token_a: u64 = line
        .rsplit("token=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut b = spawn(args("b"));
    let b_lines = watch_lines(&mut b);
    // b waits behind a
    let c = ens.client().await.unwrap();
    wait_for("b to queue", Duration::from_secs(10), || {
        let c = c.clone();
        async move { (c.get_children("/election", false).await.ok()?.len() == 2).then_some(()) }
    })
    .await
    .unwrap();
    // b has queued (its candidate node is the second): it can only be
    // waiting. The election's own state says a leads, and b said nothing.
    let view = hstack_coord_client::LeaderElection::new(c.clone(), "/election");
    assert_eq!(view.leader().await.unwrap().as_deref(), Some(&b"a"[..]));
    assert!(b_lines.try_recv().is_err(), "b led while a held");
    // a's candidate node goes when a's session expires: watch for it.
    let mut events = c.events();
    let mut candidates = c.get_children("/election", false).await.unwrap();
    candidates.sort();
    let a_node = format!("/election/{}", candidates[0]);
    assert!(c.exists(&a_node, true).await.unwrap().is_some());
    a.kill().unwrap();
    let _ = a.wait();
    let t0 = Instant::now();
    let gone = tokio::time::timeout(timeout + Duration::from_secs(10), async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.path == a_node && ev.kind == EventKind::NodeDeleted {
                return t0.elapsed();
            }
        }
    })
    .await
    .expect("a's candidacy ends with its session");
    // a pinged at a third of its timeout: its session cannot have expired
    // sooner than two thirds of a timeout after the kill.
    assert!(
        gone >= timeout - timeout / 3,
        "a's candidacy ended {gone:?} after the kill, before its session timeout {timeout:?}"
    );
    let (at, line) = b_lines
        .recv_timeout(timeout + Duration::from_secs(10))
        .expect("b was elected");
    let took = at.duration_since(t0);
    eprintln!("MEASURED: leadership moved {took:?} after the leader was killed, its session ended after {gone:?} (session timeout {timeout:?})");
    let token_b: u64 = line
        .rsplit("token=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(token_b > token_a);
    let _ = b.kill();
    let _ = b.wait();
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_change_adds_and_removes_a_member() {
    let mut ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let c = ens.client().await.unwrap();
    c.create("/before", b"x", CreateMode::Persistent)
        .await
        .unwrap();
    // a fourth, uninitialized member joins as learner then voter
    let extra = CoordEnsemble::start_unjoined(&mut ens, 4).await.unwrap();
    let info = hstack_coord_client::proto::MemberInfo {
        id: 4,
        raft_addr: extra.0,
        client_addr: extra.1.clone(),
        http_addr: extra.2,
        ..Default::default()
    };
    let r = hstack_coord_client::add_member(&ens.client_addrs(), info, true)
        .await
        .unwrap();
    assert!(r.members.iter().any(|m| m.id == 4 && m.voter), "{r:?}");
    let mut o = ClientOptions::new(vec![extra.1]);
    o.shuffle = false;
    let on4 = Client::connect(o).await.unwrap();
    on4.sync("/").await.unwrap();
    assert_eq!(on4.get_data("/before", false).await.unwrap().0, b"x");
    let r = hstack_coord_client::remove_member(&ens.client_addrs(), 4)
        .await
        .unwrap();
    assert!(!r.members.iter().any(|m| m.id == 4), "{r:?}");
    // sent to a follower, a membership change is refused with NotLeader,
    // whose hint is the leader's client address (what a client acts on)
    let leader = ens.wait_leader(Duration::from_secs(10)).await.unwrap();
    let follower = ens.nodes.iter().find(|p| p.id != leader).unwrap();
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", follower.addr("client")))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let e = hstack_coord_client::proto::coord_client::CoordClient::new(ch)
        .remove_member(hstack_coord_client::proto::RemoveMemberRequest { id: 9 })
        .await
        .unwrap_err();
    let e = hstack_tests::hstack_proto::Error::from_status(&e);
    assert_eq!(e.code, Code::NotLeader, "{e}");
    let leader_client = ens.nodes[leader as usize - 1].addr("client");
    assert_eq!(e.hint.as_deref(), Some(leader_client.as_str()), "{e:?}");
    // removing the unknown is a clear error
    let e = hstack_coord_client::remove_member(&ens.client_addrs(), 9)
        .await
        .unwrap_err();
    assert!(e.message.contains("not in the ensemble"), "{e}");
    ens.check_logs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_is_replaced_and_writes_through_a_follower_go_on() {
    let mut ens = CoordEnsemble::start(3, &[]).await.unwrap();
    ens.expect_member_failures();
    let leader = ens.wait_leader(Duration::from_secs(5)).await.unwrap();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let c = ens.client_only(follower).await.unwrap();
    c.create("/p", b"0", CreateMode::Persistent).await.unwrap();
    ens.node(leader).pause();
    let t0 = Instant::now();
    // Writes forwarded to the frozen leader fail (fate unknown) or wait;
    // once another member leads, writes through the follower go on.
    wait_for(
        "a write after the leader froze",
        Duration::from_secs(20),
        || {
            let c = c.clone();
            async move { c.set_data("/p", b"1", None).await.ok() }
        },
    )
    .await
    .unwrap();
    eprintln!(
        "MEASURED: writes through a follower resumed {:?} after the leader was paused",
        t0.elapsed()
    );
    let new_leader =
        hstack_coord_client::members_of(&ens.nodes[follower as usize - 1].addr("client"))
            .await
            .unwrap()
            .leader_id;
    assert_ne!(new_leader, leader);
    ens.node(leader).resume();
    // The old leader steps down, catches up, and serves the new value.
    let old = ens.client_only(leader).await.unwrap();
    wait_for(
        "the old leader to catch up",
        Duration::from_secs(10),
        || {
            let old = old.clone();
            async move {
                old.sync("/p").await.ok()?;
                (old.get_data("/p", false).await.ok()?.0 == b"1").then_some(())
            }
        },
    )
    .await
    .unwrap();
    ens.check_logs().unwrap();
}

/// A gRPC channel to `to` whose connection comes from `src` (a loopback
/// address that is not a member's).
pub(crate) fn channel_from(src: &str, to: &str) -> tonic::transport::Channel {
    hstack_tests::hstack_daemon::net::channel_from(Some(src.parse().unwrap()), to).unwrap()
}

/// Until authentication exists, members take peer traffic (Raft, forwarded
/// transactions, liveness) only from members' hosts, and membership changes
/// only from this host or a member's: a forwarded CloseSession or an
/// AddMember from anywhere else is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_traffic_and_membership_changes_come_only_from_members() {
    use hstack_coord_client::proto as pb;
    let ens = CoordEnsemble::start(3, &[]).await.unwrap();
    let c = ens.client().await.unwrap();
    c.create("/e", b"", CreateMode::Ephemeral).await.unwrap();
    let not_a_member = hstack_tests::hstack_proto::Code::NotAMember;
    let leader = ens.wait_leader(Duration::from_secs(10)).await.unwrap();
    let raft = ens.nodes[leader as usize - 1].addr("raft");
    // A forwarded batch from 127.0.0.9: the stream is refused.
    let mut peer = pb::coord_peer_client::CoordPeerClient::new(channel_from("127.0.0.9", &raft));
    let batch = futures::stream::iter(vec![pb::PeerMessage {
        kind: 0,
        payload: vec![0, 1],
    }]);
    let e = peer.forward(batch).await.unwrap_err();
    let e = hstack_tests::hstack_proto::Error::from_status(&e);
    assert_eq!(e.code, not_a_member, "{e}");
    // So is a single call (a vote, a liveness touch).
    let e = peer
        .call(pb::PeerMessage {
            kind: 1,
            payload: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(
        hstack_tests::hstack_proto::Error::from_status(&e).code,
        not_a_member
    );
    // A membership change from there: refused, nothing changed.
    let client = ens.nodes[leader as usize - 1].addr("client");
    let mut admin = pb::coord_client::CoordClient::new(channel_from("127.0.0.9", &client));
    let e = admin
        .add_member(pb::AddMemberRequest {
            member: Some(pb::MemberInfo {
                id: 9,
                raft_addr: "127.0.0.9:1".into(),
                client_addr: "127.0.0.9:2".into(),
                ..Default::default()
            }),
            voter: true,
        })
        .await
        .unwrap_err();
    assert_eq!(
        hstack_tests::hstack_proto::Error::from_status(&e).code,
        not_a_member
    );
    let e = admin
        .remove_member(pb::RemoveMemberRequest { id: 2 })
        .await
        .unwrap_err();
    assert_eq!(
        hstack_tests::hstack_proto::Error::from_status(&e).code,
        not_a_member
    );
    // Nor may a bootstrap from there name itself into an ensemble: being
    // named in the request admits no one.
    let e = admin
        .bootstrap(pb::BootstrapRequest {
            members: vec![pb::MemberInfo {
                id: 9,
                raft_addr: "127.0.0.9:1".into(),
                client_addr: "127.0.0.9:2".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(
        hstack_tests::hstack_proto::Error::from_status(&e).code,
        not_a_member
    );
    let r = hstack_coord_client::members(&ens.client_addrs())
        .await
        .unwrap();
    assert_eq!(r.members.len(), 3);
    // The session and its ephemeral are untouched; clients still work from
    // anywhere (the client API is not peer traffic).
    assert!(c.exists("/e", false).await.unwrap().is_some());
    let mut far = pb::coord_client::CoordClient::new(channel_from("127.0.0.9", &client));
    assert_eq!(
        far.members(pb::MembersRequest {})
            .await
            .unwrap()
            .into_inner()
            .members
            .len(),
        3
    );
    ens.check_logs().unwrap();
}
