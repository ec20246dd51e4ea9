//! The scheduler under load, in one process, as Hadoop's Scheduler Load
//! Simulator measures YARN's: simulated node managers heartbeat (one round
//! of every node per simulated second), simulated application masters keep
//! asks outstanding (part of them node-local to three random nodes, as map
//! tasks are), containers run for a random simulated time and end on their
//! node's next heartbeat after that. What runs is the real scheduler code
//! (`hstack_scheduler::Scheduler`); what is measured is wall time.

use std::time::Instant;

use anyhow::bail;
use hdrhistogram::Histogram;
use hstack_scheduler::sched::{QueueDefaults, QueueTree};
use hstack_scheduler::{
    AppId, Ask, AttemptId, ContainerId, Locality, Resource, Scheduler, SchedulerConfig,
    SchedulerKind,
};
use serde::Serialize;

#[derive(Clone, Debug)]
pub struct SchedBench {
    pub kind: SchedulerKind,
    pub nodes: usize,
    pub nodes_per_rack: usize,
    pub apps: usize,
    pub node_memory_mb: u64,
    pub node_vcores: u32,
    pub container: Resource,
    /// Simulated seconds measured, after `warmup_rounds`.
    pub rounds: u64,
    pub warmup_rounds: u64,
    /// A container runs this many simulated seconds, uniformly.
    pub runtime_secs: (u64, u64),
    /// Asks each application keeps outstanding.
    pub outstanding: u32,
    /// The fraction of asks that are node-local (to 3 random nodes).
    pub local_fraction: f64,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SchedResult {
    pub scheduler: &'static str,
    pub nodes: usize,
    pub apps: usize,
    pub allocations: u64,
    pub wall_secs: f64,
    pub allocations_per_sec: f64,
    /// Wall time the scheduler spent on one node heartbeat (ending the
    /// node's finished containers and placing new ones).
    pub heartbeat_p50_us: u64,
    pub heartbeat_p99_us: u64,
    /// Wall time per allocation: heartbeat time divided by what it placed,
    /// over heartbeats that placed something.
    pub per_allocation_p50_us: f64,
    pub per_allocation_p99_us: f64,
    /// Simulated time from an ask to its container.
    pub wait_p50_ms: u64,
    pub wait_p99_ms: u64,
    pub node_local: f64,
    pub rack_local: f64,
    pub utilization: f64,
}

/// xorshift64*: reproducible, and cheap enough not to be measured.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn queues(kind: SchedulerKind) -> anyhow::Result<QueueTree> {
    let d = QueueDefaults {
        maximum_am_resource_percent: 100.0,
        min_share_preemption_timeout_ms: 15_000,
        fair_share_preemption_timeout_ms: 30_000,
    };
    let text = match kind {
        SchedulerKind::Fifo => return Ok(QueueTree::single(&d)),
        SchedulerKind::Capacity => {
            let mut t = String::new();
            for (q, cap) in [("a", 40), ("b", 30), ("c", 20), ("d", 10)] {
                t += &format!("[queue.\"root.{q}\"]\ncapacity = {cap}\nuser_limit_factor = 10\n");
            }
            t
        }
        SchedulerKind::Fair => {
            let mut t = String::new();
            for (q, w) in [("a", 4), ("b", 3), ("c", 2), ("d", 1)] {
                t += &format!("[queue.\"root.{q}\"]\nweight = {w}\n");
            }
            t
        }
    };
    Ok(QueueTree::parse(&text, kind, &d)?)
}

fn node_name(i: usize) -> (String, String) {
    (format!("n{i}:8041"), format!("n{i}"))
}

struct SimApp {
    id: AppId,
    next_ask: u64,
    /// Ask id → simulated ms it was made.
    asked: std::collections::HashMap<u64, u64>,
}

/// Runs the simulation; `progress(round)` is called once per round.
pub fn run_scheduler(b: &SchedBench, mut progress: impl FnMut(u64)) -> anyhow::Result<SchedResult> {
    if b.nodes == 0 || b.apps == 0 || b.rounds == 0 {
        bail!("--nodes, --apps and --rounds must be at least 1");
    }
    let cfg = SchedulerConfig {
        kind: b.kind,
        queues: queues(b.kind)?,
        min_allocation: Resource::new(b.container.memory_mb.min(1024), 1),
        max_allocation: Resource::new(b.node_memory_mb, b.node_vcores),
        node_locality_delay: 40,
        rack_locality_delay: 40,
        preemption: false,
        fair_share_preemption_threshold: 0.5,
    };
    let mut s = Scheduler::new(cfg);
    let mut rng = Rng(b.seed | 1);
    let per_rack = b.nodes_per_rack.max(1);
    for i in 0..b.nodes {
        let (id, host) = node_name(i);
        let rack = format!("/rack{}", i / per_rack);
        s.add_node(
            &id,
            &host,
            &rack,
            Resource::new(b.node_memory_mb, b.node_vcores),
        );
    }
    let leaves = ["a", "b", "c", "d"];
    let mut apps = Vec::with_capacity(b.apps);
    for i in 0..b.apps {
        let id = AppId {
            cluster_ts: 1,
            seq: i as u32 + 1,
        };
        let queue = match b.kind {
            SchedulerKind::Fifo => "default",
            _ => leaves[i % leaves.len()],
        };
        s.add_app(
            AttemptId {
                app: id,
                attempt: 1,
            },
            queue,
            "bench",
            0,
        )?;
        apps.push(SimApp {
            id,
            next_ask: 1,
            asked: Default::default(),
        });
    }
    let new_ask = |rng: &mut Rng, app: &mut SimApp, now: u64| -> Ask {
        let id = app.next_ask;
        app.next_ask += 1;
        app.asked.insert(id, now);
        let local = rng.unit() < b.local_fraction;
        let nodes = if local {
            (0..3)
                .map(|_| node_name(rng.below(b.nodes as u64) as usize).1)
                .collect()
        } else {
            vec![]
        };
        Ask {
            id,
            priority: 1,
            resource: b.container,
            count: 1,
            nodes,
            racks: vec![],
            relax_locality: true,
        }
    };
    // Every application starts with its asks outstanding.
    for app in &mut apps {
        let asks: Vec<Ask> = (0..b.outstanding)
            .map(|_| new_ask(&mut rng, app, 0))
            .collect();
        s.update_asks(app.id, &asks)?;
    }
    let node_ids: Vec<String> = (0..b.nodes).map(|i| node_name(i).0).collect();
    // Per node, its containers and when they end (simulated ms).
    let mut running: Vec<Vec<(u64, ContainerId)>> = vec![Vec::new(); b.nodes];
    let mut hb = Histogram::<u64>::new(3)?;
    let mut per_alloc = Histogram::<u64>::new(3)?;
    let mut wait = Histogram::<u64>::new(3)?;
    let (mut allocations, mut local, mut rack) = (0u64, 0u64, 0u64);
    let mut wall = 0.0f64;
    let mut refill: Vec<Vec<Ask>> = (0..b.apps).map(|_| Vec::new()).collect();
    let mut busy = 0.0;
    for round in 0..(b.warmup_rounds + b.rounds) {
        let measuring = round >= b.warmup_rounds;
        let started = Instant::now();
        for (i, id) in node_ids.iter().enumerate() {
            // Spread the round's heartbeats over its simulated second.
            let now = round * 1000 + (i as u64 * 1000) / b.nodes as u64;
            s.set_now(now);
            let t = Instant::now();
            let ended: Vec<ContainerId> = {
                let r = &mut running[i];
                let mut out = Vec::new();
                r.retain(|(end, c)| {
                    if *end <= now {
                        out.push(*c);
                        false
                    } else {
                        true
                    }
                });
                out
            };
            for c in ended {
                s.finish_container(c);
            }
            let placed = s.node_update(id);
            let took = t.elapsed();
            if measuring {
                hb.record(took.as_micros() as u64)?;
                if !placed.is_empty() {
                    per_alloc.record((took.as_nanos() as u64 / placed.len() as u64).max(1))?;
                }
            }
            for c in placed {
                let app_idx = (c.id.app().seq - 1) as usize;
                let app = &mut apps[app_idx];
                let asked = app.asked.remove(&c.ask_id).unwrap_or(now);
                let (lo, hi) = b.runtime_secs;
                let end = now + 1000 * (lo + rng.below(hi.saturating_sub(lo) + 1));
                running[i].push((end, c.id));
                if measuring {
                    allocations += 1;
                    wait.record(now.saturating_sub(asked).max(1))?;
                    match c.locality {
                        Locality::NodeLocal => local += 1,
                        Locality::RackLocal => rack += 1,
                        Locality::OffSwitch => {}
                    }
                }
                refill[app_idx].push(new_ask(&mut rng, app, now));
            }
        }
        // The application masters' allocate calls: each replaces what it got.
        for (i, asks) in refill.iter_mut().enumerate() {
            if !asks.is_empty() {
                s.update_asks(apps[i].id, asks)?;
                asks.clear();
            }
        }
        if measuring {
            wall += started.elapsed().as_secs_f64();
            busy += s.core().used.dominant_share(s.core().total);
        }
        progress(round + 1);
    }
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
    Ok(SchedResult {
        scheduler: b.kind.name(),
        nodes: b.nodes,
        apps: b.apps,
        allocations,
        wall_secs: wall,
        allocations_per_sec: allocations as f64 / wall.max(1e-9),
        heartbeat_p50_us: q(&hb, 0.5),
        heartbeat_p99_us: q(&hb, 0.99),
        per_allocation_p50_us: q(&per_alloc, 0.5) as f64 / 1000.0,
        per_allocation_p99_us: q(&per_alloc, 0.99) as f64 / 1000.0,
        wait_p50_ms: q(&wait, 0.5),
        wait_p99_ms: q(&wait, 0.99),
        node_local: local as f64 / allocations.max(1) as f64,
        rack_local: rack as f64 / allocations.max(1) as f64,
        utilization: busy / b.rounds as f64,
    })
}

/// End to end on a running cluster: from submitting a distributed shell
/// of `containers` containers to every one of them running (as the
/// resource manager sees them), `runs` times; each application is killed
/// once measured.
#[derive(Clone, Debug)]
pub struct ShellBench {
    pub rm: String,
    pub containers: u32,
    pub memory_mb: u64,
    pub runs: u32,
    /// The hstack binary the master runs.
    pub exe: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShellResult {
    pub containers: u32,
    pub runs: u32,
    pub seconds: Vec<f64>,
    pub median_secs: f64,
    pub min_secs: f64,
    pub max_secs: f64,
}

pub async fn run_shell(
    b: &ShellBench,
    mut progress: impl FnMut(u32),
) -> anyhow::Result<ShellResult> {
    use hstack_proto::scheduler as pb;
    use hstack_scheduler::client::{is_over, RmClient};
    if b.runs == 0 || b.containers == 0 {
        bail!("--runs and --containers must be at least 1");
    }
    let rm = RmClient::new(&b.rm)?;
    let mut seconds = Vec::new();
    for run in 0..b.runs {
        let o = hstack_scheduler::shell::ShellOpts {
            containers: b.containers,
            command: "sleep 600".into(),
            memory_mb: b.memory_mb,
            vcores: 1,
            queue: "default".into(),
            user: "bench".into(),
            name: "bench shell".into(),
            nodes: vec![],
            racks: vec![],
            relax_locality: true,
            priority: 1,
            max_attempts: 1,
            am_memory_mb: 256,
        };
        let t = Instant::now();
        let app = hstack_scheduler::shell::submit(&rm, &o, &b.exe).await?;
        loop {
            let cs = rm.containers(&app).await?.containers;
            let running = cs
                .iter()
                .filter(|c| !c.is_am && c.state == pb::ContainerState::ContainerRunning as i32)
                .count();
            if running as u32 >= b.containers {
                break;
            }
            let r = rm.report(&app).await?;
            if is_over(&r) {
                bail!("{app} ended before its containers ran: {}", r.diagnostics);
            }
            if t.elapsed() > std::time::Duration::from_secs(120) {
                rm.kill(&app, "bench").await?;
                bail!(
                    "{app}: {running} of {} containers running after 120 s",
                    b.containers
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        seconds.push(t.elapsed().as_secs_f64());
        rm.kill(&app, "bench").await?;
        // The next run starts on an idle cluster.
        loop {
            let m = rm.metrics().await?;
            if m.containers_running == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        progress(run + 1);
    }
    let mut sorted = seconds.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Ok(ShellResult {
        containers: b.containers,
        runs: b.runs,
        median_secs: sorted[sorted.len() / 2],
        min_secs: sorted[0],
        max_secs: sorted[sorted.len() - 1],
        seconds,
    })
}
