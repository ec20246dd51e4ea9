//! The master's RPC service: its tasks' umbilical and its clients' API,
//! each call one event into the job's state.

use std::sync::{Arc, Mutex};

use hstack_proto::mapreduce as pb;
use tonic::{Request, Response, Status};

use super::now_ms;
use super::state::JobState;
use crate::counters::Counters;

pub struct Service {
    pub state: Arc<Mutex<JobState>>,
    /// The job description, encoded once.
    pub spec: Arc<Vec<u8>>,
    pub wake: Arc<tokio::sync::Notify>,
}

impl Service {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn counters(b: &[u8]) -> Result<Counters, Status> {
    if b.is_empty() {
        return Ok(Counters::default());
    }
    serde_json::from_slice(b)
        .map_err(|e| Status::invalid_argument(format!("counters that do not parse: {e}")))
}

fn info(s: &JobState) -> Result<Response<pb::JobInfo>, Status> {
    let json = serde_json::to_vec(&s.info()).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::JobInfo { json }))
}

#[tonic::async_trait]
impl pb::mr_app_master_server::MrAppMaster for Service {
    async fn get_task(
        &self,
        r: Request<pb::AttemptRef>,
    ) -> Result<Response<pb::TaskAssignment>, Status> {
        let id = r.into_inner().attempt_id;
        let s = self.lock();
        let Some((is_map, index, _)) = s.find(&id) else {
            return Err(Status::not_found(format!(
                "{id} is not an attempt of {}",
                s.job_id
            )));
        };
        let a = s.attempt(&id).expect("found");
        Ok(Response::new(pb::TaskAssignment {
            job_id: s.job_id.clone(),
            spec: self.spec.as_ref().clone(),
            is_map,
            index,
            attempt: a.n,
            skip: s.skips(is_map, index),
            skip_mode: s.skip_mode(is_map, index),
        }))
    }

    async fn status(
        &self,
        r: Request<pb::StatusUpdate>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let u = r.into_inner();
        let c = counters(&u.counters)?;
        let stop = self
            .lock()
            .status(&u.attempt_id, u.progress, &u.status, c, u.record, now_ms());
        Ok(Response::new(pb::StatusReply {
            stop: stop.is_some(),
            reason: stop.unwrap_or_default(),
        }))
    }

    async fn can_commit(
        &self,
        r: Request<pb::AttemptRef>,
    ) -> Result<Response<pb::CommitReply>, Status> {
        let id = r.into_inner().attempt_id;
        let granted = self.lock().can_commit(&id);
        Ok(Response::new(pb::CommitReply { granted }))
    }

    async fn done(&self, r: Request<pb::AttemptDone>) -> Result<Response<pb::Empty>, Status> {
        let d = r.into_inner();
        let c = counters(&d.counters)?;
        let res = self.lock().done(&d.attempt_id, c, now_ms());
        self.wake.notify_one();
        res.map_err(Status::failed_precondition)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn failed(&self, r: Request<pb::AttemptFailed>) -> Result<Response<pb::Empty>, Status> {
        let f = r.into_inner();
        self.lock()
            .failed(&f.attempt_id, &f.diagnostics, f.bad_record, now_ms());
        self.wake.notify_one();
        Ok(Response::new(pb::Empty {}))
    }

    async fn map_events(
        &self,
        r: Request<pb::MapEventsRequest>,
    ) -> Result<Response<pb::MapEventsReply>, Status> {
        let q = r.into_inner();
        let s = self.lock();
        let evs = s.map_events(q.from as usize);
        Ok(Response::new(pb::MapEventsReply {
            next: q.from.min(s.events.len() as u32) + evs.len() as u32,
            events: evs
                .iter()
                .map(|e| pb::MapEvent {
                    map: e.map,
                    attempt_id: e.attempt_id.clone(),
                    shuffle_addr: e.shuffle_addr.clone(),
                    obsolete: e.obsolete,
                })
                .collect(),
            maps: s.maps.len() as u32,
        }))
    }

    async fn report_fetch_failure(
        &self,
        r: Request<pb::FetchFailure>,
    ) -> Result<Response<pb::Empty>, Status> {
        let f = r.into_inner();
        tracing::warn!(
            "{} cannot fetch the output of {}: {}",
            f.reduce_attempt,
            f.map_attempt,
            f.reason
        );
        self.lock().fetch_failure(&f.map_attempt, now_ms());
        self.wake.notify_one();
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_job(&self, _r: Request<pb::Empty>) -> Result<Response<pb::JobInfo>, Status> {
        info(&self.lock())
    }

    async fn kill_job(&self, r: Request<pb::KillRequest>) -> Result<Response<pb::JobInfo>, Status> {
        let why = r.into_inner().reason;
        let mut s = self.lock();
        if s.phase == super::state::Phase::Running {
            s.phase = super::state::Phase::Killed(if why.is_empty() {
                "killed by its user".into()
            } else {
                why
            });
        }
        self.wake.notify_one();
        info(&s)
    }
}
