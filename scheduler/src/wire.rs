//! Between the protobuf messages and the scheduler's records. Everything
//! that comes in is checked here, once: a negative resource, a malformed
//! id, is refused by name.

use hstack_proto::scheduler as pb;
use hstack_proto::{Code, Error};

use crate::records::{AppId, Ask, AttemptId, ContainerId, Resource};

pub fn resource(r: Option<&pb::Resource>, what: &str) -> Result<Resource, Error> {
    let r = r.cloned().unwrap_or_default();
    if r.memory_mb < 0 || r.vcores < 0 {
        return Err(Error::new(
            Code::InvalidResourceRequest,
            format!(
                "{what}: <memory:{} MiB, vcores:{}> is negative",
                r.memory_mb, r.vcores
            ),
        ));
    }
    Ok(Resource::new(r.memory_mb as u64, r.vcores as u32))
}

pub fn resource_pb(r: Resource) -> pb::Resource {
    pb::Resource {
        memory_mb: i64::try_from(r.memory_mb).unwrap_or(i64::MAX),
        vcores: i32::try_from(r.vcores).unwrap_or(i32::MAX),
    }
}

pub fn ask(a: &pb::ResourceAsk) -> Result<Ask, Error> {
    Ok(Ask {
        id: a.id,
        priority: a.priority,
        resource: resource(a.resource.as_ref(), &format!("ask {}", a.id))?,
        count: a.count,
        nodes: a.nodes.clone(),
        racks: a.racks.clone(),
        relax_locality: a.relax_locality,
    })
}

fn bad_id(e: impl std::fmt::Display) -> Error {
    Error::new(Code::InvalidArgument, e.to_string())
}

pub fn app_id(s: &str) -> Result<AppId, Error> {
    s.trim().parse().map_err(bad_id)
}

pub fn attempt_id(s: &str) -> Result<AttemptId, Error> {
    s.trim().parse().map_err(bad_id)
}

pub fn container_id(s: &str) -> Result<ContainerId, Error> {
    s.trim().parse().map_err(bad_id)
}

pub fn app_state_name(s: pb::AppState) -> &'static str {
    match s {
        pb::AppState::Unspecified => "NEW",
        pb::AppState::Accepted => "ACCEPTED",
        pb::AppState::Running => "RUNNING",
        pb::AppState::Finished => "FINISHED",
        pb::AppState::Failed => "FAILED",
        pb::AppState::Killed => "KILLED",
    }
}

pub fn app_state_of(name: &str) -> Option<pb::AppState> {
    [
        pb::AppState::Accepted,
        pb::AppState::Running,
        pb::AppState::Finished,
        pb::AppState::Failed,
        pb::AppState::Killed,
    ]
    .into_iter()
    .find(|s| app_state_name(*s).eq_ignore_ascii_case(name))
}

pub fn final_status_name(s: pb::FinalStatus) -> &'static str {
    match s {
        pb::FinalStatus::Unspecified => "UNDEFINED",
        pb::FinalStatus::Succeeded => "SUCCEEDED",
        pb::FinalStatus::FinalFailed => "FAILED",
        pb::FinalStatus::FinalKilled => "KILLED",
    }
}

pub fn container_state_name(s: pb::ContainerState) -> &'static str {
    match s {
        pb::ContainerState::Unspecified => "NEW",
        pb::ContainerState::Allocated => "ALLOCATED",
        pb::ContainerState::ContainerRunning => "RUNNING",
        pb::ContainerState::Complete => "COMPLETE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_resources_and_bad_ids_are_refused_by_name() {
        let e = resource(
            Some(&pb::Resource {
                memory_mb: -1,
                vcores: 1,
            }),
            "ask 3",
        )
        .unwrap_err();
        assert_eq!(e.code, Code::InvalidResourceRequest);
        assert!(
            e.message.contains("ask 3") && e.message.contains("negative"),
            "{e}"
        );
        let e = app_id("app_1").unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(e.message.contains("application_<"), "{e}");
        assert_eq!(app_state_of("running"), Some(pb::AppState::Running));
    }
}
