//! A task attempt's process on the cluster (`hstack mr task`, Hadoop's
//! YarnChild): it asks its application master what to run, runs it (a
//! map writing its output where the node's shuffle serves it; a reduce
//! fetching every map's partition first), reports progress and counters
//! every second, asks before it commits, and says how it ended. Told to
//! stop, or cut off from its master for a minute, it exits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hstack_dfs::client::{ClientOptions, DfsClient};
use hstack_proto::mapreduce as pb;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::committer::Committer;
use crate::counters::Counters;
use crate::fs::{DfsFs, Fs};
use crate::reduceside::ShuffleStore;
use crate::spec::{self, JobSpec};
use crate::task::{self, Attempt, Progress};
use crate::{conf, shuffle};

pub type AmClient = pb::mr_app_master_client::MrAppMasterClient<Channel>;

/// What a committed task leaves in its `_task.json` (read back by a
/// restarted master).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TaskRecord {
    pub attempt_id: String,
    pub node_id: String,
    pub locality: String,
    #[serde(default)]
    pub shuffle_addr: String,
    pub counters: Counters,
}

fn env(k: &str) -> anyhow::Result<String> {
    std::env::var(k).map_err(|_| anyhow::anyhow!("{k} is not set: `hstack mr task` runs in a container a MapReduce application master started"))
}

pub fn connect(addr: &str) -> anyhow::Result<AmClient> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(AmClient::new(ch).max_decoding_message_size(256 << 20))
}

/// What the attempt reports; shared with the reporting task.
#[derive(Default)]
struct Reported {
    fraction: AtomicU32,
    record: AtomicU64,
    status: Mutex<String>,
}

impl Progress for Reported {
    fn progress(&self, fraction: f32, status: &str) {
        self.fraction.store(fraction.to_bits(), Ordering::Relaxed);
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if s.as_str() != status {
            *s = status.to_string();
        }
    }
    fn record(&self, n: u64) {
        self.record.store(n + 1, Ordering::Relaxed);
    }
    fn no_record(&self) {
        self.record.store(0, Ordering::Relaxed);
    }
}

/// Reports every second; exits the process when told to stop or when the
/// master is unreachable for a minute.
async fn report_loop(mut am: AmClient, attempt: String, r: Arc<Reported>) {
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let req = pb::StatusUpdate {
            attempt_id: attempt.clone(),
            progress: f32::from_bits(r.fraction.load(Ordering::Relaxed)),
            status: r.status.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            counters: Vec::new(),
            record: r.record.load(Ordering::Relaxed),
        };
        match am.status(req).await {
            Ok(rep) => {
                unreachable_since = None;
                let rep = rep.into_inner();
                if rep.stop {
                    eprintln!("{attempt}: told to stop: {}", rep.reason);
                    std::process::exit(143);
                }
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    eprintln!("{attempt}: the application master has been unreachable for a minute ({}): exiting", e.message());
                    std::process::exit(1);
                }
            }
        }
    }
}

/// Runs the attempt this container is for.
pub async fn run() -> anyhow::Result<()> {
    let am_addr = env("HSTACK_MR_AM")?;
    let attempt_id = env("HSTACK_MR_ATTEMPT")?;
    let nn = env("HSTACK_NAMENODE")?;
    let host = std::env::var("NM_HOST").unwrap_or_default();
    let work = PathBuf::from(env("LOCAL_DIRS")?);
    let mut am = connect(&am_addr)?;
    let asg = am
        .get_task(pb::AttemptRef {
            attempt_id: attempt_id.clone(),
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "the application master at {am_addr} gave no task: {}",
                s.message()
            )
        })?
        .into_inner();
    let spec = JobSpec::decode(&asg.spec)?;
    let dfs = DfsClient::connect(
        &nn,
        ClientOptions {
            host: host.clone(),
            ..Default::default()
        },
    )
    .await?;
    let fs: Arc<dyn Fs> = Arc::new(DfsFs::new(dfs));
    let reported = Arc::new(Reported::default());
    tokio::spawn(report_loop(
        am.clone(),
        attempt_id.clone(),
        reported.clone(),
    ));
    let rt = tokio::runtime::Handle::current();
    let am2 = am.clone();
    let rep2 = reported.clone();
    let id2 = attempt_id.clone();
    let result = match tokio::task::spawn_blocking(move || {
        run_attempt(&asg, &spec, fs, &work, &rep2, &am2, &id2, &rt)
    })
    .await
    {
        Ok(r) => r,
        // A panic in the task's code is its failure, like an error.
        Err(e) => Err(anyhow::anyhow!("the task's code panicked: {e}")),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let msg = format!("{e:#}");
            let bad = if asg_is_map(&attempt_id) {
                reported.record.load(Ordering::Relaxed)
            } else {
                0
            };
            let _ = am
                .failed(pb::AttemptFailed {
                    attempt_id: attempt_id.clone(),
                    diagnostics: msg.clone(),
                    bad_record: bad,
                })
                .await;
            anyhow::bail!("{attempt_id} failed: {msg}")
        }
    }
}

fn asg_is_map(attempt_id: &str) -> bool {
    attempt_id.contains("_m_")
}

#[allow(clippy::too_many_arguments)]
fn run_attempt(
    asg: &pb::TaskAssignment,
    spec: &JobSpec,
    fs: Arc<dyn Fs>,
    work: &std::path::Path,
    reported: &Reported,
    am: &AmClient,
    attempt_id: &str,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<()> {
    // The application's directory: the container's directory's parent.
    let app_dir = work.parent().unwrap_or(work).to_path_buf();
    let a = Attempt {
        spec,
        job_id: &asg.job_id,
        index: asg.index,
        attempt: asg.attempt,
        fs: fs.clone(),
        work: if asg.is_map {
            app_dir.join("output").join(attempt_id)
        } else {
            work.join("reduce")
        },
        progress: reported,
        skip: &asg.skip,
        skip_mode: asg.skip_mode,
    };
    let committer = Committer::new(fs.clone(), &spec.output);
    let node_id = std::env::var("HSTACK_NM_ADDRESS").unwrap_or_default();
    let locality = std::env::var("HSTACK_MR_LOCALITY").unwrap_or_default();
    let mut am = am.clone();
    let counters = if asg.is_map {
        let d = task::run_map(&a)?;
        if spec.reduces() == 0 || fs.status(&committer.attempt_dir(attempt_id))?.is_some() {
            commit(
                &committer,
                &mut am,
                rt,
                spec,
                &asg.job_id,
                true,
                asg.index,
                attempt_id,
                &node_id,
                &locality,
                &d.counters,
            )?;
        }
        d.counters
    } else {
        let (mut merged, stats) = fetch_all(spec, &a, &mut am, rt, attempt_id)?;
        let counters = task::run_reduce(&a, &mut merged, &stats)?;
        commit(
            &committer,
            &mut am,
            rt,
            spec,
            &asg.job_id,
            false,
            asg.index,
            attempt_id,
            &node_id,
            &locality,
            &counters,
        )?;
        counters
    };
    rt.block_on(am.done(pb::AttemptDone {
        attempt_id: attempt_id.to_string(),
        counters: serde_json::to_vec(&counters)?,
        shuffle_addr: String::new(),
    }))
    .map_err(|s| anyhow::anyhow!("the master did not take the result: {}", s.message()))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn commit(
    committer: &Committer,
    am: &mut AmClient,
    rt: &tokio::runtime::Handle,
    _spec: &JobSpec,
    job_id: &str,
    is_map: bool,
    index: u32,
    attempt_id: &str,
    node_id: &str,
    locality: &str,
    counters: &Counters,
) -> anyhow::Result<()> {
    // Ask until granted: a refusal means another attempt has it.
    let granted = rt
        .block_on(am.can_commit(pb::AttemptRef {
            attempt_id: attempt_id.to_string(),
        }))
        .map_err(|s| anyhow::anyhow!("asking to commit: {}", s.message()))?
        .into_inner()
        .granted;
    if !granted {
        committer.abort_task(attempt_id);
        anyhow::bail!("not granted the commit: another attempt of the task has it");
    }
    let rec = TaskRecord {
        attempt_id: attempt_id.to_string(),
        node_id: node_id.to_string(),
        locality: locality.to_string(),
        shuffle_addr: String::new(),
        counters: counters.clone(),
    };
    let task = spec::task_id(job_id, is_map, index);
    if !committer.commit_task(&task, attempt_id, &serde_json::to_vec(&rec)?)? {
        // An earlier attempt granted the commit renamed its (complete)
        // output into place and died before it said so: that output
        // stands, and this attempt's (the same records) is dropped.
        eprintln!("{task} was committed by an earlier attempt; its output stands");
    }
    Ok(())
}

/// The reduce's shuffle: follows the master's map-completion events and
/// fetches this partition of every map's output, several at once, into
/// the shuffle store; a map whose output cannot be fetched is reported
/// (the master runs it again and a new event comes).
fn fetch_all(
    spec: &JobSpec,
    a: &Attempt<'_>,
    am: &mut AmClient,
    rt: &tokio::runtime::Handle,
    attempt_id: &str,
) -> anyhow::Result<(
    crate::merge::Merger<'static>,
    crate::reduceside::ShuffleStats,
)> {
    std::fs::create_dir_all(&a.work)?;
    let maps = spec.maps() as usize;
    let budget = (spec.conf.u64(conf::SHUFFLE_BUFFER_MB) << 20) as usize;
    let store = Mutex::new(ShuffleStore::new(
        a.work.clone(),
        budget,
        spec.conf.u64(conf::SORT_FACTOR) as usize,
    ));
    let parallel = spec.conf.u64(conf::PARALLEL_COPIES).max(1) as usize;
    let app = crate::history::app_id_of(a.job_id);
    let partition = a.index;
    let mut got = vec![false; maps];
    let mut in_flight: HashMap<usize, String> = HashMap::new();
    let mut latest: HashMap<usize, (String, String)> = HashMap::new();
    let mut from = 0u32;
    let (work_tx, work_rx) = std::sync::mpsc::channel::<(usize, String, String)>();
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, String, anyhow::Result<()>)>();
    std::thread::scope(|s| -> anyhow::Result<()> {
        for _ in 0..parallel {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            let store = &store;
            let app = app.clone();
            s.spawn(move || loop {
                let next = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((m, attempt, addr)) = next else { return };
                let r = fetch_one(&addr, &app, &attempt, partition, store);
                if done_tx.send((m, attempt, r)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let mut fetched = 0usize;
        let mut last_poll = std::time::Instant::now() - Duration::from_secs(10);
        while fetched < maps {
            if last_poll.elapsed() >= Duration::from_millis(300) {
                last_poll = std::time::Instant::now();
                let rep = rt
                    .block_on(am.map_events(pb::MapEventsRequest {
                        attempt_id: attempt_id.to_string(),
                        from,
                    }))
                    .map_err(|s| anyhow::anyhow!("map events: {}", s.message()))?
                    .into_inner();
                from = rep.next;
                for e in rep.events {
                    let m = e.map as usize;
                    if m >= maps {
                        continue;
                    }
                    if e.obsolete {
                        if latest.get(&m).is_some_and(|(att, _)| *att == e.attempt_id) {
                            latest.remove(&m);
                        }
                    } else {
                        latest.insert(m, (e.attempt_id, e.shuffle_addr));
                    }
                }
                for (m, (att, addr)) in &latest {
                    if !got[*m] && !in_flight.contains_key(m) {
                        in_flight.insert(*m, att.clone());
                        work_tx.send((*m, att.clone(), addr.clone()))?;
                    }
                }
                let p = 0.33 * fetched as f32 / maps.max(1) as f32;
                a.progress
                    .progress(p, &format!("shuffle: {fetched} of {maps} maps"));
            }
            match done_rx.recv_timeout(Duration::from_millis(100)) {
                Ok((m, att, Ok(()))) => {
                    in_flight.remove(&m);
                    if !got[m] {
                        got[m] = true;
                        fetched += 1;
                    }
                    let _ = att;
                }
                Ok((m, att, Err(e))) => {
                    in_flight.remove(&m);
                    eprintln!("{attempt_id}: cannot fetch {att}: {e:#}");
                    if latest.get(&m).is_some_and(|(x, _)| *x == att) {
                        latest.remove(&m);
                    }
                    let _ = rt.block_on(am.report_fetch_failure(pb::FetchFailure {
                        reduce_attempt: attempt_id.to_string(),
                        map_attempt: att,
                        reason: format!("{e:#}"),
                    }));
                    // The next events poll brings the map again (or its
                    // re-run).
                    from = 0;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => anyhow::bail!("the fetchers stopped: {e}"),
            }
        }
        drop(work_tx);
        Ok(())
    })?;
    a.progress.progress(0.33, "merging");
    store
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_merger()
}

/// Fetches one map's partition, three tries over a few seconds.
fn fetch_one(
    addr: &str,
    app: &str,
    attempt: &str,
    partition: u32,
    store: &Mutex<ShuffleStore>,
) -> anyhow::Result<()> {
    let mut last = None;
    for wait in [0u64, 500, 1500] {
        std::thread::sleep(Duration::from_millis(wait));
        match try_fetch(addr, app, attempt, partition, store) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried"))
}

fn try_fetch(
    addr: &str,
    app: &str,
    attempt: &str,
    partition: u32,
    store: &Mutex<ShuffleStore>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!addr.is_empty(), "no shuffle address for {attempt}");
    let mut f = shuffle::open(addr, app, attempt, partition, Duration::from_secs(30))?;
    let to_disk = store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .wants_disk(f.info.part_len);
    if to_disk {
        let path = store.lock().unwrap_or_else(|p| p.into_inner()).disk_path();
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        shuffle::receive(&mut f, &mut file)?;
        std::io::Write::flush(&mut file)?;
        store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_file(path, f.info)
    } else {
        let mut b = Vec::with_capacity(f.info.part_len as usize);
        shuffle::receive(&mut f, &mut b)?;
        store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_memory(b, f.info)
    }
}
