//! The scheduler's policies, in process and deterministic: a simulated
//! cluster heartbeats its nodes in turn; time is what the test says.

use super::*;
use crate::records::{AppId, Ask, AttemptId, Resource};

const GB: u64 = 1024;

fn defaults() -> QueueDefaults {
    QueueDefaults {
        maximum_am_resource_percent: 100.0,
        min_share_preemption_timeout_ms: 10_000,
        fair_share_preemption_timeout_ms: 20_000,
    }
}

fn config(kind: SchedulerKind, queues: &str) -> SchedulerConfig {
    let tree = if queues.is_empty() {
        QueueTree::single(&defaults())
    } else {
        QueueTree::parse(queues, kind, &defaults()).unwrap()
    };
    SchedulerConfig {
        kind,
        queues: tree,
        min_allocation: Resource::new(GB, 1),
        max_allocation: Resource::new(8 * GB, 8),
        node_locality_delay: 3,
        rack_locality_delay: 3,
        preemption: true,
        fair_share_preemption_threshold: 0.5,
    }
}

/// `nodes` nodes of `mem` GiB and `cores` vcores, on two racks (the first
/// half on /r1).
fn cluster(cfg: SchedulerConfig, nodes: usize, mem: u64, cores: u32) -> Scheduler {
    let mut s = Scheduler::new(cfg);
    for i in 0..nodes {
        let rack = if i < nodes.div_ceil(2) { "/r1" } else { "/r2" };
        s.add_node(&node(i), &host(i), rack, Resource::new(mem * GB, cores));
    }
    s
}

fn host(i: usize) -> String {
    format!("h{i}")
}

fn node(i: usize) -> String {
    format!("h{i}:8041")
}

fn app_id(seq: u32) -> AppId {
    AppId { cluster_ts: 1, seq }
}

fn attempt(seq: u32) -> AttemptId {
    AttemptId {
        app: app_id(seq),
        attempt: 1,
    }
}

fn ask(id: u64, mem_gb: u64, cores: u32, count: u32) -> Ask {
    Ask {
        id,
        priority: 1,
        resource: Resource::new(mem_gb * GB, cores),
        count,
        nodes: vec![],
        racks: vec![],
        relax_locality: true,
    }
}

fn submit(s: &mut Scheduler, seq: u32, queue: &str, user: &str) -> AppId {
    s.add_app(attempt(seq), queue, user, 0).unwrap();
    app_id(seq)
}

/// One heartbeat of every node, in order; the containers placed.
fn round(s: &mut Scheduler) -> Vec<Container> {
    let ids: Vec<String> = s.core().nodes.iter().map(|n| n.id.clone()).collect();
    ids.iter().flat_map(|n| s.node_update(n)).collect()
}

fn used(s: &Scheduler, app: AppId) -> Resource {
    s.core().app(app).unwrap().used
}

fn share_of(s: &Scheduler, queue: &str) -> f64 {
    s.queue_infos()
        .into_iter()
        .find(|q| q.path == queue)
        .unwrap()
        .used_share
}

/// Finishes the oldest `n` containers of `app` (they end, as tasks do).
fn finish_some(s: &mut Scheduler, app: AppId, n: usize) {
    let ids: Vec<ContainerId> = s
        .core()
        .app(app)
        .unwrap()
        .containers
        .iter()
        .take(n)
        .copied()
        .collect();
    for c in ids {
        s.finish_container(c).unwrap();
    }
}

#[test]
fn fifo_serves_in_submission_order() {
    // 4 nodes × 4 GiB: 16 one-GiB containers. Three apps want 10 each.
    let mut s = cluster(config(SchedulerKind::Fifo, ""), 4, 4, 8);
    let apps: Vec<AppId> = (1..=3).map(|i| submit(&mut s, i, "default", "u")).collect();
    for a in &apps {
        s.update_asks(*a, &[ask(1, 1, 1, 10)]).unwrap();
    }
    round(&mut s);
    assert_eq!(used(&s, apps[0]).memory_mb, 10 * GB);
    assert_eq!(used(&s, apps[1]).memory_mb, 6 * GB);
    assert_eq!(used(&s, apps[2]).memory_mb, 0);
    // The first finishes some: the freed room goes to the second, not the third.
    finish_some(&mut s, apps[0], 4);
    round(&mut s);
    assert_eq!(used(&s, apps[1]).memory_mb, 10 * GB);
    assert_eq!(used(&s, apps[2]).memory_mb, 0);
    // A higher application priority goes first.
    let hi = app_id(9);
    s.add_app(attempt(9), "default", "u", 5).unwrap();
    s.update_asks(hi, &[ask(1, 1, 1, 2)]).unwrap();
    s.update_asks(apps[2], &[ask(1, 1, 1, 10)]).unwrap();
    finish_some(&mut s, apps[0], 2);
    round(&mut s);
    assert_eq!(used(&s, hi).memory_mb, 2 * GB);
    assert_eq!(used(&s, apps[2]).memory_mb, 0);
}

const SEVENTY_THIRTY: &str = r#"
[queue."root.a"]
capacity = 70
[queue."root.b"]
capacity = 30
"#;

#[test]
fn capacity_queues_saturated_share_seventy_thirty() {
    let mut s = cluster(config(SchedulerKind::Capacity, SEVENTY_THIRTY), 10, 10, 10);
    let a = submit(&mut s, 1, "a", "ua");
    let b = submit(&mut s, 2, "b", "ub");
    // Both want far more than the cluster (100 containers).
    s.update_asks(a, &[ask(1, 1, 1, 500)]).unwrap();
    s.update_asks(b, &[ask(1, 1, 1, 500)]).unwrap();
    for _ in 0..3 {
        round(&mut s);
        // Containers come and go: each finishes a tenth of its own.
        for app in [a, b] {
            let n = s.core().app(app).unwrap().containers.len() / 10;
            finish_some(&mut s, app, n);
        }
        round(&mut s);
    }
    let (sa, sb) = (share_of(&s, "root.a"), share_of(&s, "root.b"));
    assert!(
        (sa - 0.7).abs() <= 0.05 && (sb - 0.3).abs() <= 0.05,
        "{sa} {sb}"
    );
    assert!(sa + sb > 0.95, "the cluster is full: {sa} {sb}");
}

#[test]
fn capacity_lends_an_idle_queues_share_and_takes_it_back() {
    let queues = r#"
[queue."root.a"]
capacity = 70
user_limit_factor = 10
[queue."root.b"]
capacity = 30
user_limit_factor = 10
"#;
    let mut s = cluster(config(SchedulerKind::Capacity, queues), 10, 10, 10);
    let a = submit(&mut s, 1, "a", "ua");
    let b = submit(&mut s, 2, "b", "ub");
    // Only b has demand: it takes the whole cluster (elasticity).
    s.update_asks(b, &[ask(1, 1, 1, 500)]).unwrap();
    round(&mut s);
    assert!(share_of(&s, "root.b") > 0.99, "{}", share_of(&s, "root.b"));
    // a's demand returns; as b's containers finish, a gets them back up to
    // its 70 %.
    s.update_asks(a, &[ask(1, 1, 1, 500)]).unwrap();
    round(&mut s);
    assert_eq!(
        used(&s, a),
        Resource::ZERO,
        "nothing is free until b's containers end"
    );
    for _ in 0..10 {
        finish_some(&mut s, b, 10);
        round(&mut s);
    }
    let (sa, sb) = (share_of(&s, "root.a"), share_of(&s, "root.b"));
    assert!(
        (sa - 0.7).abs() <= 0.05 && (sb - 0.3).abs() <= 0.05,
        "{sa} {sb}"
    );
}

#[test]
fn capacity_maximum_user_limit_and_am_share_hold() {
    let queues = r#"
[queue."root.a"]
capacity = 50
maximum_capacity = 60
user_limit_factor = 10
maximum_am_resource_percent = 10
[queue."root.b"]
capacity = 50
"#;
    let mut s = cluster(config(SchedulerKind::Capacity, queues), 10, 10, 10);
    let a = submit(&mut s, 1, "a", "u1");
    s.update_asks(a, &[ask(1, 1, 1, 500)]).unwrap();
    round(&mut s);
    // b is idle, but a stops at its maximum.
    assert!(
        (share_of(&s, "root.a") - 0.6).abs() < 0.011,
        "{}",
        share_of(&s, "root.a")
    );
    // user_limit_factor 1 (b's default): one user stays within the guarantee.
    let b = submit(&mut s, 2, "b", "u2");
    s.update_asks(b, &[ask(1, 1, 1, 500)]).unwrap();
    round(&mut s);
    assert!(
        (share_of(&s, "root.b") - 0.4).abs() < 0.011,
        "all that is left"
    );
    // Application masters of a: 10 % of its 60 % maximum = 6 containers of
    // 1 GiB; the first always starts.
    let mut s = cluster(config(SchedulerKind::Capacity, queues), 10, 10, 10);
    for i in 1..=10 {
        let app = submit(&mut s, i, "a", "u1");
        s.ask_for_am(app, Resource::new(GB, 1)).unwrap();
    }
    round(&mut s);
    let ams = s.core().containers.values().filter(|c| c.is_am).count();
    assert_eq!(ams, 6);
}

const FAIR_TWO: &str = r#"
[queue."root.a"]
weight = 1
[queue."root.b"]
weight = 3
"#;

#[test]
fn fair_shares_are_equal_between_apps_and_follow_weights() {
    // Equal shares inside one queue.
    let mut s = cluster(config(SchedulerKind::Fair, ""), 10, 10, 10);
    let apps: Vec<AppId> = (1..=4).map(|i| submit(&mut s, i, "default", "u")).collect();
    for a in &apps {
        s.update_asks(*a, &[ask(1, 1, 1, 500)]).unwrap();
    }
    round(&mut s);
    for a in &apps {
        assert_eq!(used(&s, *a).memory_mb, 25 * GB, "{a}");
    }
    // Weights 1:3 between queues.
    let mut s = cluster(config(SchedulerKind::Fair, FAIR_TWO), 10, 10, 10);
    let a = submit(&mut s, 1, "a", "u");
    let b = submit(&mut s, 2, "b", "u");
    s.update_asks(a, &[ask(1, 1, 1, 500)]).unwrap();
    s.update_asks(b, &[ask(1, 1, 1, 500)]).unwrap();
    round(&mut s);
    let (sa, sb) = (share_of(&s, "root.a"), share_of(&s, "root.b"));
    assert!(
        (sa - 0.25).abs() <= 0.02 && (sb - 0.75).abs() <= 0.02,
        "{sa} {sb}"
    );
}

#[test]
fn drf_gives_a_memory_heavy_and_a_cpu_heavy_app_equal_dominant_shares() {
    // 10 nodes × 10 GiB × 10 vcores = 100 GiB, 100 vcores.
    let mut s = cluster(config(SchedulerKind::Fair, ""), 10, 10, 10);
    let mem = submit(&mut s, 1, "default", "u");
    let cpu = submit(&mut s, 2, "default", "u");
    s.update_asks(mem, &[ask(1, 4, 1, 100)]).unwrap(); // <4 GiB, 1 vcore>
    s.update_asks(cpu, &[ask(1, 1, 4, 100)]).unwrap(); // <1 GiB, 4 vcores>
    round(&mut s);
    let total = s.core().total;
    let (dm, dc) = (
        used(&s, mem).dominant_share(total),
        used(&s, cpu).dominant_share(total),
    );
    assert!(dm > 0.3 && dc > 0.3, "both got plenty: {dm} {dc}");
    assert!((dm - dc).abs() <= 0.05, "dominant shares {dm} and {dc}");
    assert_eq!(
        used(&s, mem).memory_mb / (4 * GB),
        u64::from(used(&s, cpu).vcores / 4)
    );
}

#[test]
fn fair_preemption_waits_for_the_timeout_then_frees_the_starved_queue() {
    let queues = r#"
[queue."root.a"]
min_memory_mb = 40960
min_vcores = 40
min_share_preemption_timeout_ms = 5000
[queue."root.b"]
"#;
    let mut s = cluster(config(SchedulerKind::Fair, queues), 10, 10, 10);
    let a = submit(&mut s, 1, "a", "u");
    let b = submit(&mut s, 2, "b", "u");
    s.update_asks(b, &[ask(1, 1, 1, 500)]).unwrap();
    s.set_now(0);
    round(&mut s);
    assert_eq!(used(&s, b).memory_mb, 100 * GB, "b takes the idle cluster");
    // a arrives wanting 50; nothing is free.
    s.update_asks(a, &[ask(1, 1, 1, 50)]).unwrap();
    s.set_now(1000);
    assert!(s.preempt().is_empty(), "starved from now on");
    s.set_now(5999);
    assert!(s.preempt().is_empty(), "not before the timeout");
    s.set_now(6000);
    let taken = s.preempt();
    // a's minimum share (40 %) is owed; b keeps at least its fair share.
    assert_eq!(taken.len(), 40, "{taken:?}");
    assert!(taken.iter().all(|c| c.app() == b));
    // Asked again while those are still ending: nothing more.
    s.set_now(7000);
    assert!(s.preempt().is_empty());
    for c in taken {
        s.finish_container(c).unwrap();
    }
    round(&mut s);
    assert_eq!(used(&s, a).memory_mb, 40 * GB);
    assert!(s.preempt().is_empty(), "a has its minimum");
}

/// A node-local ask: on its node when the node has room; otherwise on its
/// rack only after `node_locality_delay` missed opportunities, and off the
/// rack only after the rack delay as well.
#[test]
fn delay_scheduling_waits_for_the_node_then_the_rack() {
    // 4 nodes: h0, h1 on /r1; h2, h3 on /r2. Each 2 GiB.
    let mut s = cluster(config(SchedulerKind::Fifo, ""), 4, 2, 4);
    let blocker = submit(&mut s, 1, "default", "u");
    let app = submit(&mut s, 2, "default", "u");
    // Node-local to h1, with room: placed there at the first offer.
    let mut want = ask(1, 1, 1, 1);
    want.nodes = vec![host(1)];
    s.update_asks(app, &[want.clone()]).unwrap();
    let got = s.node_update(&node(1));
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].locality, got[0].opportunities),
        (Locality::NodeLocal, 0)
    );
    // Fill h1; ask for h1 again.
    let mut fill = ask(1, 1, 1, 2);
    fill.nodes = vec![host(1)];
    fill.relax_locality = false;
    s.update_asks(blocker, &[fill]).unwrap();
    s.node_update(&node(1));
    assert!(s.core().node(&node(1)).unwrap().free().memory_mb < GB);
    want.id = 2;
    s.update_asks(app, &[want]).unwrap();
    // Offers from h0 (same rack) before the delay: declined.
    for i in 0..3 {
        assert!(s.node_update(&node(0)).is_empty(), "offer {i}");
    }
    let got = s.node_update(&node(0));
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].locality, got[0].opportunities),
        (Locality::RackLocal, 3)
    );
    // Off the rack: only after 3 + 3.
    let mut want = ask(3, 1, 1, 1);
    want.nodes = vec![host(1)];
    s.update_asks(app, &[want]).unwrap();
    for i in 0..6 {
        assert!(s.node_update(&node(2)).is_empty(), "offer {i}");
    }
    let got = s.node_update(&node(2));
    assert_eq!(
        (got[0].locality, got[0].opportunities),
        (Locality::OffSwitch, 6)
    );
    // Without relax_locality it never leaves its node.
    let mut strict = ask(4, 1, 1, 1);
    strict.nodes = vec![host(1)];
    strict.relax_locality = false;
    s.update_asks(app, &[strict]).unwrap();
    for _ in 0..20 {
        assert!(s.node_update(&node(0)).is_empty());
        assert!(s.node_update(&node(3)).is_empty());
    }
}

#[test]
fn bad_asks_are_refused_and_file_nothing() {
    let mut s = cluster(config(SchedulerKind::Capacity, SEVENTY_THIRTY), 2, 8, 8);
    let e = s.add_app(attempt(1), "nope", "u", 0).unwrap_err();
    assert_eq!(e.code, Code::UnknownQueue);
    let e = s.add_app(attempt(1), "root", "u", 0).unwrap_err();
    assert_eq!(e.code, Code::UnknownQueue);
    assert!(e.message.contains("has children"), "{e}");
    assert!(s.core().apps.is_empty());
    let app = submit(&mut s, 1, "a", "u");
    for (bad, why) in [
        (ask(1, 9, 1, 1), "above the maximum allocation"),
        (ask(1, 0, 1, 1), "no memory or no vcores"),
        (ask(1, 1, 0, 1), "no memory or no vcores"),
        (ask(1, 1, 9, 1), "above the maximum allocation"),
    ] {
        // Sent with a good ask: neither is filed.
        let e = s.update_asks(app, &[ask(7, 1, 1, 3), bad]).unwrap_err();
        assert_eq!(e.code, Code::InvalidResourceRequest, "{e}");
        assert!(e.message.contains(why), "{e}");
        assert!(!s.core().app(app).unwrap().has_demand());
    }
    // Rounded up to the minimum allocation.
    let mut small = ask(1, 1, 1, 1);
    small.resource = Resource::new(100, 1);
    s.update_asks(app, &[small]).unwrap();
    let got = round(&mut s);
    assert_eq!(got[0].resource, Resource::new(GB, 1));
}

#[test]
fn asks_replace_by_id_and_a_lost_node_returns_its_containers() {
    let mut s = cluster(config(SchedulerKind::Fifo, ""), 2, 4, 4);
    let app = submit(&mut s, 1, "default", "u");
    s.update_asks(app, &[ask(1, 1, 1, 3)]).unwrap();
    // Sent again (a retried call): still 3, not 6.
    s.update_asks(app, &[ask(1, 1, 1, 3)]).unwrap();
    assert_eq!(s.core().app(app).unwrap().outstanding(), 3);
    let got = s.node_update(&node(0));
    assert_eq!(got.len(), 3);
    // Cancelled: nothing more.
    s.update_asks(app, &[ask(2, 1, 1, 5)]).unwrap();
    s.update_asks(app, &[ask(2, 1, 1, 0)]).unwrap();
    assert!(round(&mut s).is_empty());
    // h0 is lost: its three containers come back as lost, resources free.
    let lost = s.remove_node(&node(0));
    assert_eq!(lost.len(), 3);
    assert_eq!(used(&s, app), Resource::ZERO);
    assert_eq!(s.core().total, Resource::new(4 * GB, 4));
    // It comes back: empty.
    s.add_node(&node(0), &host(0), "/r1", Resource::new(4 * GB, 4));
    assert_eq!(s.core().total, Resource::new(8 * GB, 8));
    assert_eq!(s.core().node(&node(0)).unwrap().used, Resource::ZERO);
}
