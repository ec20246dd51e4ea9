//! `hstack bench coord`: a closed-loop load generator against a running
//! ensemble, shaped like the reference ZooKeeper/etcd measurements
//! (256-byte values over 1,000 keys, N outstanding requests spread over up
//! to 16 sessions spread over the members, warm-up then measurement).
//!
//! The same loop drives hstack's own gRPC (`hstack bench coord`) or
//! ZooKeeper's protocol through a lean client of our own (`zkwire`,
//! `hstack bench zk`), against hstack's ZooKeeper port or a real
//! ZooKeeper: one load generator for every side of a comparison.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use hstack_coord_client::error::Result;
use hstack_coord_client::{Client, ClientOptions, Code, CoordError, CreateMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Write,
    Read,
    CreateDelete,
}

/// Which protocol the load speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// hstack's own gRPC session stream.
    Grpc,
    /// ZooKeeper's jute protocol (`zkwire`, a lean pipelined client).
    Zookeeper,
}

#[derive(Clone, Debug)]
pub struct BenchOpts {
    pub protocol: Protocol,
    pub members: Vec<String>,
    pub workload: Workload,
    pub concurrency: usize,
    pub sessions: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub value_size: usize,
    pub keys: usize,
    pub linearizable: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub protocol: Protocol,
    pub workload: Workload,
    pub concurrency: usize,
    pub sessions: usize,
    pub members: usize,
    pub seconds: f64,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

/// One session of either protocol.
#[derive(Clone)]
enum Session {
    Grpc(Client),
    Zk(crate::zkwire::ZkSession),
}

impl Session {
    async fn connect(opts: &BenchOpts, members: Vec<String>) -> Result<Self> {
        Ok(match opts.protocol {
            Protocol::Grpc => {
                let mut co = ClientOptions::new(members);
                co.shuffle = false;
                let c = Client::connect(co).await?;
                Session::Grpc(if opts.linearizable {
                    c.linearizable()
                } else {
                    c
                })
            }
            // One member per session, as the gRPC sessions: both protocols
            // spread the sessions evenly over the members, ZooKeeper too.
            Protocol::Zookeeper => Session::Zk(
                crate::zkwire::ZkSession::connect(&members[0], Duration::from_secs(10)).await?,
            ),
        })
    }

    async fn set(&self, p: &str, v: &[u8]) -> Result<()> {
        match self {
            Session::Grpc(c) => c.set_data(p, v, None).await.map(|_| ()),
            Session::Zk(c) => c.set_data(p, v).await,
        }
    }

    async fn get(&self, p: &str) -> Result<()> {
        match self {
            Session::Grpc(c) => c.get_data(p, false).await.map(|_| ()),
            Session::Zk(c) => c.get_data(p).await,
        }
    }

    async fn create(&self, p: &str, v: &[u8], ephemeral: bool) -> Result<()> {
        match self {
            Session::Grpc(c) => {
                let mode = if ephemeral {
                    CreateMode::Ephemeral
                } else {
                    CreateMode::Persistent
                };
                c.create(p, v, mode).await.map(|_| ())
            }
            Session::Zk(c) => c.create(p, v, ephemeral).await,
        }
    }

    /// Creates a persistent `p` unless it is there already.
    async fn ensure(&self, p: &str, v: &[u8]) -> Result<()> {
        match self.create(p, v, false).await {
            Err(e) if e.code == Code::NodeExists => Ok(()),
            r => r,
        }
    }

    async fn delete(&self, p: &str) -> Result<()> {
        match self {
            Session::Grpc(c) => c.delete(p, None).await,
            Session::Zk(c) => c.delete(p).await,
        }
    }

    async fn close(self) {
        match self {
            Session::Grpc(c) => {
                let _ = c.close().await;
            }
            Session::Zk(c) => c.close().await,
        }
    }
}

pub async fn run_bench(opts: BenchOpts) -> Result<BenchReport> {
    if opts.concurrency == 0 || opts.sessions == 0 || opts.keys == 0 {
        return Err(CoordError::new(
            Code::InvalidArgument,
            "concurrency, sessions and keys must be > 0",
        ));
    }
    if opts.members.is_empty() {
        return Err(CoordError::new(
            Code::InvalidArgument,
            "no servers to benchmark",
        ));
    }
    let sessions = opts.sessions.min(opts.concurrency);
    let mut clients = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let mut members = opts.members.clone();
        let n = members.len().max(1);
        members.rotate_left(i % n);
        clients.push(Session::connect(&opts, members).await?);
    }
    let value = vec![b'v'; opts.value_size];
    let setup = &clients[0];
    setup.ensure("/bench", b"").await?;
    for k in 0..opts.keys {
        setup.ensure(&format!("/bench/k{k:06}"), &value).await?;
    }

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..opts.concurrency {
        let client = clients[t % sessions].clone();
        let (measuring, stop, ops, errors) =
            (measuring.clone(), stop.clone(), ops.clone(), errors.clone());
        let value = value.clone();
        let (workload, keys) = (opts.workload, opts.keys);
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("/bench/k{:06}", (n as usize * 7919 + t * 104_729) % keys);
                let started = Instant::now();
                let res = match workload {
                    Workload::Write => client.set(&key, &value).await.map(|_| 1),
                    Workload::Read => client.get(&key).await.map(|_| 1),
                    Workload::CreateDelete => {
                        let p = format!("/bench/e-{t}-{n}");
                        let first = client.create(&p, &value, true).await;
                        let first_us = started.elapsed().as_micros() as u64;
                        if measuring.load(Ordering::Relaxed) && first.is_ok() {
                            let _ = hist.record(first_us.max(1));
                        }
                        let again = Instant::now();
                        let r = match first {
                            Ok(_) => client.delete(&p).await.map(|_| 2),
                            Err(e) => Err(e),
                        };
                        if measuring.load(Ordering::Relaxed) && r.is_ok() {
                            let _ = hist.record((again.elapsed().as_micros() as u64).max(1));
                            ops.fetch_add(2, Ordering::Relaxed);
                        } else if measuring.load(Ordering::Relaxed) {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                };
                if measuring.load(Ordering::Relaxed) {
                    match res {
                        Ok(k) => {
                            let _ = hist.record((started.elapsed().as_micros() as u64).max(1));
                            ops.fetch_add(k, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            hist
        }));
    }
    tokio::time::sleep(opts.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut last = 0;
    while started.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_secs(1).min(opts.duration)).await;
        let now = ops.load(Ordering::Relaxed);
        eprintln!(
            "[{:>5.1}s] {:>9} ops/s",
            started.elapsed().as_secs_f64(),
            now - last
        );
        last = now;
    }
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let total = ops.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = hist.add(h);
        }
    }
    for c in clients {
        c.close().await;
    }
    Ok(BenchReport {
        protocol: opts.protocol,
        workload: opts.workload,
        concurrency: opts.concurrency,
        sessions,
        members: opts.members.len(),
        seconds,
        ops: total,
        errors: errors.load(Ordering::Relaxed),
        ops_per_sec: total as f64 / seconds,
        p50_us: hist.value_at_quantile(0.50),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
    })
}
