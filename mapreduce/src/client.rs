//! The job client: submit a job to the cluster (checks first, then the
//! job's files into its staging directory and an application to the
//! resource manager), follow it, and find any job — running (its master
//! answers) or finished (its history file does).

use std::sync::Arc;
use std::time::Duration;

use hstack_dfs::client::DfsClient;
use hstack_proto::mapreduce as mpb;
use hstack_proto::scheduler as pb;
use hstack_scheduler::client::RmClient;

use crate::am;
use crate::conf;
use crate::fs::{self, DfsFs, Fs};
use crate::history::{self, JobInfo};
use crate::spec::JobSpec;

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A job on its way: ids and where its files went.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub app_id: String,
    pub job_id: String,
    pub staging: String,
}

/// Checks the job against the file system (see `local::prepare`): run on
/// a blocking thread inside the runtime.
pub async fn prepare(dfs: &DfsClient, mut spec: JobSpec) -> anyhow::Result<JobSpec> {
    let fs: Arc<dyn Fs> = Arc::new(DfsFs::new(dfs.clone()));
    tokio::task::spawn_blocking(move || {
        crate::local::prepare(&mut spec, fs.as_ref())?;
        Ok(spec)
    })
    .await?
}

/// Submits a prepared job. `exe` is the hstack binary the node managers
/// run for its master and tasks; `namenode` is the address they reach
/// the file system at.
pub async fn submit(
    dfs: &DfsClient,
    rm: &RmClient,
    mut spec: JobSpec,
    namenode: &str,
    exe: &str,
) -> anyhow::Result<Submitted> {
    let fresh = rm.new_application().await?;
    let app_id = fresh.app_id.clone();
    let job_id = history::job_id_of(&app_id);
    let staging = am::staging_dir(&spec.user, &job_id);
    let fs: Arc<dyn Fs> = Arc::new(DfsFs::new(dfs.clone()));
    {
        let (fs, staging) = (fs.clone(), staging.clone());
        let files = std::mem::take(&mut spec.files);
        spec = tokio::task::spawn_blocking(move || -> anyhow::Result<JobSpec> {
            fs.mkdirs(&staging)?;
            // Shipped files (streaming's -file) go into the staging
            // directory; tasks copy them from there.
            for f in files {
                let name = fs::base_name(&f).to_string();
                let to = fs::join(&fs::join(&staging, "files"), &name);
                let mut r =
                    std::fs::File::open(&f).map_err(|e| anyhow::anyhow!("-file {f}: {e}"))?;
                let mut w = fs.create(&to, 0)?;
                std::io::copy(&mut r, &mut w)?;
                w.close()?;
                spec.files.push(to);
            }
            let mut w = fs.create(&fs::join(&staging, "job.json"), 0)?;
            w.write_all(&spec.encode())?;
            w.close()?;
            Ok(spec)
        })
        .await??;
    }
    let env = [
        ("HSTACK_MR_STAGING", staging.clone()),
        ("HSTACK_NAMENODE", namenode.to_string()),
        ("HSTACK_USER", spec.user.clone()),
        ("HSTACK_MR_SUBMIT_MS", am::now_ms().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    rm.submit(pb::SubmitRequest {
        app_id: app_id.clone(),
        name: spec.name(),
        queue: spec.conf.str(conf::QUEUE).to_string(),
        user: spec.user.clone(),
        app_type: "MAPREDUCE".into(),
        priority: 0,
        am_resource: Some(pb::Resource {
            memory_mb: spec.conf.u64(conf::AM_MEMORY_MB) as i64,
            vcores: 1,
        }),
        am_launch: Some(pb::LaunchContext {
            command: format!("exec {} mr am", quote(exe)),
            env,
        }),
        max_attempts: spec.conf.u64(conf::AM_ATTEMPTS) as u32,
    })
    .await?;
    Ok(Submitted {
        app_id,
        job_id,
        staging,
    })
}

/// `job_…` or `application_…` → (application, job).
pub fn ids(id: &str) -> anyhow::Result<(String, String)> {
    if id.starts_with("job_") {
        Ok((history::app_id_of(id), id.to_string()))
    } else if id.starts_with("application_") {
        Ok((id.to_string(), history::job_id_of(id)))
    } else {
        anyhow::bail!("{id:?} is not a job id (job_…) or an application id (application_…)")
    }
}

async fn from_master(addr: &str) -> anyhow::Result<JobInfo> {
    let mut c = crate::child::connect(addr)?;
    let r = tokio::time::timeout(Duration::from_secs(5), c.get_job(mpb::Empty {})).await??;
    Ok(serde_json::from_slice(&r.into_inner().json)?)
}

/// The history record of a finished job, if it was written.
pub async fn from_history(
    dfs: &DfsClient,
    job_id: &str,
    done_dir: &str,
) -> anyhow::Result<Option<JobInfo>> {
    let path = history::history_file(done_dir, job_id);
    if dfs.stat(&path).await?.is_none() {
        return Ok(None);
    }
    let mut r = dfs.open(&path).await?;
    let mut b = Vec::new();
    r.read_to_end(&mut b).await?;
    Ok(Some(serde_json::from_slice(&b)?))
}

/// A job as it is now: from its master while it runs, else from its
/// history, else from what the resource manager knows of it.
pub async fn status(dfs: &DfsClient, rm: &RmClient, id: &str) -> anyhow::Result<JobInfo> {
    let (app_id, job_id) = ids(id)?;
    let report = rm.report(&app_id).await;
    if let Ok(r) = &report {
        if !hstack_scheduler::client::is_over(r) && !r.tracking_url.is_empty() {
            if let Ok(i) = from_master(&r.tracking_url).await {
                return Ok(i);
            }
        }
    }
    if let Some(i) = from_history(dfs, &job_id, history::DEFAULT_DONE_DIR).await? {
        return Ok(i);
    }
    match report {
        Ok(r) => Ok(JobInfo {
            job_id,
            app_id,
            name: r.name.clone(),
            user: r.user.clone(),
            queue: r.queue.clone(),
            state: state_of(&r).to_string(),
            diagnostics: r.diagnostics.clone(),
            submit_ms: r.submit_ms,
            start_ms: r.start_ms,
            finish_ms: r.finish_ms,
            am_attempt: r.attempt,
            ..Default::default()
        }),
        Err(e) => Err(anyhow::anyhow!("no job {id}: {e}")),
    }
}

/// Kills a job: through its master (which aborts its output and writes
/// its history), else through the resource manager.
pub async fn kill(dfs: &DfsClient, rm: &RmClient, id: &str, user: &str) -> anyhow::Result<JobInfo> {
    let (app_id, _) = ids(id)?;
    let r = rm.report(&app_id).await?;
    if !hstack_scheduler::client::is_over(&r) && !r.tracking_url.is_empty() {
        if let Ok(mut c) = crate::child::connect(&r.tracking_url) {
            if c.kill_job(mpb::KillRequest {
                reason: format!("killed by {user}"),
            })
            .await
            .is_ok()
            {
                // The master finishes on its own; wait for it a little.
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok(r) = rm.report(&app_id).await {
                        if hstack_scheduler::client::is_over(&r) {
                            break;
                        }
                    }
                }
                return status(dfs, rm, id).await;
            }
        }
    }
    rm.kill(&app_id, user).await?;
    status(dfs, rm, id).await
}

/// MapReduce applications the resource manager knows.
pub async fn list(rm: &RmClient, user: &str) -> anyhow::Result<Vec<pb::ApplicationReport>> {
    let apps = rm
        .list(pb::ListApplicationsRequest {
            states: vec![],
            queue: String::new(),
            user: user.to_string(),
        })
        .await?;
    Ok(apps
        .apps
        .into_iter()
        .filter(|a| a.app_type == "MAPREDUCE")
        .collect())
}

/// Runs a job on the cluster to its end: checks, submits, then follows it
/// (`progress` told the map and reduce fractions), returning its record.
pub async fn run(
    dfs: &DfsClient,
    rm: &RmClient,
    spec: JobSpec,
    namenode: &str,
    exe: &str,
    progress: &dyn crate::local::JobProgress,
    submitted: &dyn Fn(&Submitted),
) -> anyhow::Result<JobInfo> {
    let spec = prepare(dfs, spec).await?;
    let sub = submit(dfs, rm, spec, namenode, exe).await?;
    submitted(&sub);
    let mut last_err = None;
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match status(dfs, rm, &sub.job_id).await {
            Ok(info) if info.is_over() => return Ok(info),
            Ok(info) => progress.update(info.map_progress, info.reduce_progress),
            // A master starting, or its history being written.
            Err(e) => last_err = Some(e),
        }
        if started.elapsed() > Duration::from_secs(24 * 3600) {
            return Err(last_err.unwrap_or_else(|| anyhow::anyhow!("the job ran for a day")));
        }
    }
}

/// A MapReduce application's state as a job's: the final status once the
/// application has finished.
pub fn state_of(r: &pb::ApplicationReport) -> &'static str {
    let state = pb::AppState::try_from(r.state).unwrap_or(pb::AppState::Unspecified);
    if state != pb::AppState::Finished {
        return hstack_scheduler::wire::app_state_name(state);
    }
    match pb::FinalStatus::try_from(r.final_status) {
        Ok(pb::FinalStatus::Succeeded) => "SUCCEEDED",
        Ok(pb::FinalStatus::FinalKilled) => "KILLED",
        _ => "FAILED",
    }
}
