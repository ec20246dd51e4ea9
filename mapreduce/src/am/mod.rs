//! A MapReduce job's application master (`hstack mr am`, Hadoop's
//! MRAppMaster), run by the resource manager in the job's first
//! container. It reads the job from its staging directory, serves its
//! tasks and clients (`service`), asks the scheduler for a container per
//! task attempt — maps where their blocks are — starts them, follows them
//! (`state` decides), commits the job, writes its history and tells the
//! resource manager how it ended. A job small enough (one map and at most
//! one reduce, by default) runs inside the master itself ("uber" mode),
//! which saves two rounds of container allocation. A restarted master
//! (the scheduler's next attempt) recovers what the last one finished: the
//! maps whose outputs it recorded, and every committed task.

pub mod service;
pub mod state;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hstack_dfs::client::{ClientOptions, DfsClient};
use hstack_proto::scheduler as spb;
use hstack_scheduler::am::{AmClient, NodeClients};
use hstack_scheduler::client::RmClient;

use self::state::{JobState, Phase};
use crate::child::TaskRecord;
use crate::committer::Committer;
use crate::conf;
use crate::fs::{self, DfsFs, Fs};
use crate::history::{self, JobInfo};
use crate::local::JobProgress;
use crate::shuffle;
use crate::spec::{self, JobSpec};

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn env(k: &str) -> anyhow::Result<String> {
    std::env::var(k).map_err(|_| anyhow::anyhow!("{k} is not set: `hstack mr am` runs in the container the resource manager started for a MapReduce job"))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Where a job's files are staged: `/user/<user>/.staging/<job>`.
pub fn staging_dir(user: &str, job_id: &str) -> String {
    format!("/user/{user}/.staging/{job_id}")
}

/// A map's recovery record, in the staging directory.
fn map_record_path(staging: &str, task: &str) -> String {
    fs::join(&fs::join(staging, "done"), &format!("{task}.json"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

fn read_all(fs: &dyn Fs, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut b = Vec::new();
    fs.open(path, 0)?.read_to_end(&mut b)?;
    Ok(b)
}

/// Runs the master; true when the job succeeded.
pub async fn run() -> anyhow::Result<bool> {
    let staging = env("HSTACK_MR_STAGING")?;
    let nn = env("HSTACK_NAMENODE")?;
    let rm_addr = env("HSTACK_RM_ADDRESS")?;
    let host = std::env::var("NM_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let mut am = AmClient::from_env()?;
    let dfs = DfsClient::connect(
        &nn,
        ClientOptions {
            host: host.clone(),
            ..Default::default()
        },
    )
    .await?;
    let fs: Arc<dyn Fs> = Arc::new(DfsFs::new(dfs));
    let job_path = fs::join(&staging, "job.json");
    let spec = {
        let fs = fs.clone();
        blocking(move || JobSpec::decode(&read_all(fs.as_ref(), &job_path)?)).await?
    };
    let listener = tokio::net::TcpListener::bind((host.as_str(), 0)).await?;
    let addr = format!("{host}:{}", listener.local_addr()?.port());
    let reg = am.register(&host, &addr).await?;
    let job_id = history::job_id_of(&am.app_id);
    let now = now_ms();
    let mut st = JobState::new(spec.clone(), &job_id, &am.app_id, reg.attempt.max(1), now);
    if let Ok(ms) = std::env::var("HSTACK_MR_SUBMIT_MS") {
        st.submit_ms = ms.parse().unwrap_or(now);
    }
    println!(
        "MapReduce job {job_id} ({}): {} maps, {} reduces; master attempt {} at {addr}",
        spec.name(),
        spec.maps(),
        spec.reduces(),
        reg.attempt
    );
    let state = Arc::new(Mutex::new(st));
    let wake = Arc::new(tokio::sync::Notify::new());
    let svc = service::Service {
        state: state.clone(),
        spec: Arc::new(spec.encode()),
        wake: wake.clone(),
    };
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(
                hstack_proto::mapreduce::mr_app_master_server::MrAppMasterServer::new(svc)
                    .max_decoding_message_size(256 << 20),
            )
            .serve_with_incoming(incoming)
            .await
        {
            eprintln!("the master's RPC server stopped: {e}");
        }
    });
    let committer = Committer::new(fs.clone(), &spec.output);
    // A master that died between committing the job and saying so: the
    // job is done; its output must not be touched again.
    let committed = {
        let (fs, p) = (
            fs.clone(),
            fs::join(&spec.output, crate::committer::SUCCESS),
        );
        reg.attempt > 1 && blocking(move || Ok(fs.status(&p)?.is_some())).await?
    };
    if committed {
        {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.phase = Phase::Succeeded;
            s.already_committed = true;
        }
        return finish(&mut am, &state, &committer, &fs, &spec, &staging).await;
    }
    {
        let c = committer.clone();
        blocking(move || c.setup_job()).await?;
    }
    if reg.attempt > 1 {
        recover(&fs, &staging, &state).await?;
    }
    let uber = spec.conf.bool(conf::UBER)
        && u64::from(spec.maps()) <= spec.conf.u64(conf::UBER_MAX_MAPS)
        && spec.reduces() <= 1
        && reg.attempt <= 1;
    if uber {
        run_uber(&spec, &job_id, fs.clone(), &state).await;
    } else {
        let rm = RmClient::new(&rm_addr)?;
        drive(&mut am, &rm, &state, &wake, &fs, &staging, &addr, &nn).await?;
    }
    finish(&mut am, &state, &committer, &fs, &spec, &staging).await
}

/// Recovery: what an earlier master finished stays finished.
async fn recover(
    fs: &Arc<dyn Fs>,
    staging: &str,
    state: &Arc<Mutex<JobState>>,
) -> anyhow::Result<()> {
    let (job_id, maps, reduces, output) = {
        let s = state.lock().unwrap_or_else(|p| p.into_inner());
        (
            s.job_id.clone(),
            s.maps.len() as u32,
            s.reduces.len() as u32,
            s.spec.output.clone(),
        )
    };
    let fs2 = fs.clone();
    let staging = staging.to_string();
    let found: Vec<(bool, u32, TaskRecord)> = blocking(move || {
        let committer = Committer::new(fs2.clone(), &output);
        let mut found = Vec::new();
        for i in 0..maps {
            let task = spec::task_id(&job_id, true, i);
            let rec = if reduces == 0 {
                committer.committed(&task)?
            } else {
                let p = map_record_path(&staging, &task);
                match fs2.status(&p)? {
                    Some(_) => Some(read_all(fs2.as_ref(), &p)?),
                    None => None,
                }
            };
            // A record cut short (its master died writing it) is no
            // record: the map runs again.
            match rec.map(|b| serde_json::from_slice::<TaskRecord>(&b)) {
                Some(Ok(r)) => found.push((true, i, r)),
                Some(Err(e)) => {
                    eprintln!("map {i}: its record does not parse ({e}): it runs again")
                }
                None => {}
            }
        }
        for i in 0..reduces {
            if let Some(b) = committer.committed(&spec::task_id(&job_id, false, i))? {
                // Committed output stands even if its record is damaged
                // (its counters are then lost).
                let r = serde_json::from_slice(&b).unwrap_or_else(|e| {
                    eprintln!("reduce {i}: its record does not parse ({e}); its counters are lost");
                    TaskRecord::default()
                });
                found.push((false, i, r));
            }
        }
        Ok(found)
    })
    .await?;
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    for (is_map, i, r) in &found {
        s.recover(*is_map, *i, r);
    }
    println!(
        "recovered {} finished tasks of the earlier attempt",
        found.len()
    );
    Ok(())
}

struct UberProgress(Arc<Mutex<JobState>>);

impl JobProgress for UberProgress {
    fn update(&self, maps: f32, reduces: f32) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for t in &mut s.maps {
            t.attempts[0].progress = maps;
        }
        for t in &mut s.reduces {
            t.attempts[0].progress = reduces;
        }
    }
}

/// Runs every task inside the master.
async fn run_uber(spec: &JobSpec, job_id: &str, fs: Arc<dyn Fs>, state: &Arc<Mutex<JobState>>) {
    {
        let mut g = state.lock().unwrap_or_else(|p| p.into_inner());
        let s: &mut JobState = &mut g;
        s.uber = true;
        let now = now_ms();
        let host = std::env::var("HSTACK_NM_ADDRESS").unwrap_or_default();
        for t in s.maps.iter_mut().chain(s.reduces.iter_mut()) {
            let a = &mut t.attempts[0];
            a.state = state::AState::Running;
            a.start_ms = now;
            a.node_id = host.clone();
            a.container = std::env::var("CONTAINER_ID").unwrap_or_default();
        }
    }
    let scratch =
        std::path::PathBuf::from(std::env::var("LOCAL_DIRS").unwrap_or_else(|_| ".".into()))
            .join("uber");
    let (spec2, job2, st2) = (spec.clone(), job_id.to_string(), state.clone());
    let committer = Committer::new(fs.clone(), &spec.output);
    let r = blocking(move || {
        let p = UberProgress(st2);
        crate::local::run_tasks(&spec2, &job2, fs, &scratch, 1, &p, &committer)
    })
    .await;
    let mut g = state.lock().unwrap_or_else(|p| p.into_inner());
    let s: &mut JobState = &mut g;
    let now = now_ms();
    match r {
        Ok(counters) => {
            for t in s.maps.iter_mut().chain(s.reduces.iter_mut()) {
                t.attempts[0].state = state::AState::Succeeded;
                t.attempts[0].progress = 1.0;
                t.attempts[0].finish_ms = now;
                t.done = Some(0);
            }
            s.job_counters.merge(&counters);
        }
        Err(e) => {
            for t in s.maps.iter_mut().chain(s.reduces.iter_mut()) {
                if t.done.is_none() {
                    t.attempts[0].state = state::AState::Failed;
                    t.attempts[0].finish_ms = now;
                }
            }
            s.phase = Phase::Failed(format!("{e:#}"));
        }
    }
}

/// The master's loop: asks, launches, follows, until the job is over.
#[allow(clippy::too_many_arguments)]
async fn drive(
    am: &mut AmClient,
    rm: &RmClient,
    state: &Arc<Mutex<JobState>>,
    wake: &Arc<tokio::sync::Notify>,
    fs: &Arc<dyn Fs>,
    staging: &str,
    am_addr: &str,
    nn: &str,
) -> anyhow::Result<()> {
    let nms = Arc::new(NodeClients::default());
    let exe = std::env::current_exe()?.display().to_string();
    let user = std::env::var("USER").unwrap_or_default();
    let mut last_nodes = Instant::now() - Duration::from_secs(60);
    loop {
        let now = now_ms();
        let (asks, releases, stops, progress, running) = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.time_out(now);
            s.speculate(now);
            let running = s.phase == Phase::Running && !s.complete();
            (
                if running { s.asks() } else { Vec::new() },
                std::mem::take(&mut s.releases),
                std::mem::take(&mut s.to_stop),
                s.progress(),
                running,
            )
        };
        for (node, c) in stops {
            let nms = nms.clone();
            tokio::spawn(async move {
                let _ = nms.stop(&node, &c).await;
            });
        }
        if !running {
            return Ok(());
        }
        let reply = am.allocate(asks, releases, progress).await?;
        if reply.command == spb::AmCommand::AmShutdown as i32 {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.phase = Phase::Killed("the resource manager ended the application".into());
            return Ok(());
        }
        let now = now_ms();
        let mut launches = Vec::new();
        {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            for c in &reply.allocated {
                if let Some(l) = s.allocated(c, now) {
                    launches.push(l);
                }
            }
            for c in &reply.completed {
                s.completed(c, now);
            }
        }
        for l in launches {
            let env: std::collections::HashMap<String, String> = [
                ("HSTACK_MR_AM", am_addr.to_string()),
                ("HSTACK_MR_ATTEMPT", l.attempt_id.clone()),
                ("HSTACK_NAMENODE", nn.to_string()),
                ("HSTACK_MR_STAGING", staging.to_string()),
                ("HSTACK_MR_LOCALITY", l.container.locality.clone()),
                ("HSTACK_USER", user.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let launch = spb::LaunchContext {
                command: format!("exec {} mr task", quote(&exe)),
                env,
            };
            let (nms, state, wake) = (nms.clone(), state.clone(), wake.clone());
            tokio::spawn(async move {
                let r = nms.start(&l.container, launch).await;
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(meta) => s.started(&l.attempt_id, shuffle::port_of(&meta), now_ms()),
                    Err(e) => {
                        s.start_failed(&l.attempt_id, &e.to_string(), now_ms());
                        s.releases.push(l.container.id.clone());
                    }
                }
                wake.notify_one();
            });
        }
        if last_nodes.elapsed() > Duration::from_secs(2) {
            last_nodes = Instant::now();
            if let Ok(nodes) = rm.nodes().await {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                for n in &nodes.nodes {
                    if n.state == "LOST" {
                        s.node_lost(&n.node_id, now_ms());
                    } else if n.state == "RUNNING" {
                        // Back (re-registered): asked for again.
                        s.lost_nodes.remove(&n.node_id);
                    }
                }
            }
        }
        record_done_maps(state, fs, staging).await;
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Writes the recovery record of every map finished since the last call.
async fn record_done_maps(state: &Arc<Mutex<JobState>>, fs: &Arc<dyn Fs>, staging: &str) {
    let recs: Vec<(String, TaskRecord)> = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let done = std::mem::take(&mut s.newly_done_maps);
        done.into_iter()
            .filter_map(|i| {
                let t = &s.maps[i as usize];
                let a = &t.attempts[t.done?];
                Some((
                    t.id.clone(),
                    TaskRecord {
                        attempt_id: a.id.clone(),
                        node_id: a.node_id.clone(),
                        locality: a.locality.clone(),
                        shuffle_addr: a.shuffle_addr.clone(),
                        counters: a.counters.clone(),
                    },
                ))
            })
            .collect()
    };
    if recs.is_empty() {
        return;
    }
    let fs = fs.clone();
    let staging = staging.to_string();
    let r = blocking(move || {
        for (task, rec) in recs {
            let p = map_record_path(&staging, &task);
            // Written aside, then renamed: a master killed mid-write
            // leaves no half record.
            let tmp = format!("{p}.tmp");
            fs.delete(&tmp, false)?;
            let mut w = fs.create(&tmp, 0)?;
            std::io::Write::write_all(&mut w, &serde_json::to_vec(&rec)?)?;
            w.close()?;
            fs.delete(&p, false)?;
            fs.rename(&tmp, &p)?;
        }
        Ok(())
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(
            "cannot record finished maps (a restarted master would run them again): {e:#}"
        );
    }
}

/// Commits (or aborts) the job, writes its history, stops what still runs
/// and tells the resource manager.
async fn finish(
    am: &mut AmClient,
    state: &Arc<Mutex<JobState>>,
    committer: &Committer,
    fs: &Arc<dyn Fs>,
    spec: &JobSpec,
    staging: &str,
) -> anyhow::Result<bool> {
    let (complete, phase, live) = {
        let s = state.lock().unwrap_or_else(|p| p.into_inner());
        (s.complete(), s.phase.clone(), s.live_containers())
    };
    let nms = NodeClients::default();
    for (node, c) in live {
        let _ = nms.stop(&node, &c).await;
    }
    let c = committer.clone();
    let outcome = if phase == Phase::Succeeded {
        // Committed by an earlier master.
        Phase::Succeeded
    } else if phase == Phase::Running && complete {
        match blocking(move || c.commit_job()).await {
            Ok(()) => Phase::Succeeded,
            Err(e) => Phase::Failed(format!("committing the job failed: {e:#}")),
        }
    } else {
        blocking(move || {
            c.abort_job();
            Ok(())
        })
        .await?;
        if phase == Phase::Running {
            Phase::Failed("the job ended before its tasks did".into())
        } else {
            phase
        }
    };
    let info: JobInfo = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.phase = outcome.clone();
        s.finish_ms = now_ms();
        s.info()
    };
    let done_dir = spec
        .conf
        .get(history::DONE_DIR)
        .unwrap_or(history::DEFAULT_DONE_DIR)
        .to_string();
    let path = history::history_file(&done_dir, &info.job_id);
    let body = serde_json::to_vec_pretty(&info)?;
    let fs2 = fs.clone();
    let staging = staging.to_string();
    if let Err(e) = blocking(move || {
        fs2.delete(&path, false)?;
        let mut w = fs2.create(&path, 0)?;
        std::io::Write::write_all(&mut w, &body)?;
        w.close()
    })
    .await
    {
        eprintln!("cannot write the job history: {e:#}");
    }
    // The job is over: no later master needs its files.
    let fs2 = fs.clone();
    if let Err(e) = blocking(move || fs2.delete(&staging, true)).await {
        eprintln!("cannot remove the staging directory: {e:#}");
    }
    let (status, diag) = match &outcome {
        Phase::Succeeded => (spb::FinalStatus::Succeeded, String::new()),
        Phase::Failed(d) => (spb::FinalStatus::FinalFailed, d.clone()),
        Phase::Killed(d) => (spb::FinalStatus::FinalKilled, d.clone()),
        Phase::Running => (spb::FinalStatus::FinalFailed, "unfinished".into()),
    };
    println!("job {} {}: {diag}", info.job_id, info.state);
    am.finish(status, &diag).await?;
    Ok(outcome == Phase::Succeeded)
}
