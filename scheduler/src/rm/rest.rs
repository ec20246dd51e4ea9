//! The REST view, in the shape of YARN's ResourceManager REST API
//! (`/ws/v1/cluster/…`), so dashboards and scripts written for YARN read
//! it: info, metrics, nodes, apps, apps/{id}, scheduler. Read-only.

use std::sync::Arc;

use hstack_daemon::axum::extract::{Path, State};
use hstack_daemon::axum::http::StatusCode;
use hstack_daemon::axum::response::{IntoResponse, Response};
use hstack_daemon::axum::routing::get;
use hstack_daemon::axum::{Json, Router};
use hstack_proto::scheduler as pb;
use serde_json::{json, Value};

use super::ResourceManager;
use crate::wire;

pub(crate) fn routes(rm: Arc<ResourceManager>) -> Router {
    Router::new()
        .route("/ws/v1/cluster", get(info))
        .route("/ws/v1/cluster/info", get(info))
        .route("/ws/v1/cluster/metrics", get(metrics))
        .route("/ws/v1/cluster/nodes", get(nodes))
        .route("/ws/v1/cluster/apps", get(apps))
        .route("/ws/v1/cluster/apps/:id", get(app))
        .route("/ws/v1/cluster/scheduler", get(scheduler))
        .with_state(rm)
}

type Rm = State<Arc<ResourceManager>>;

fn res(r: &Option<pb::Resource>) -> (i64, i32) {
    let r = r.unwrap_or_default();
    (r.memory_mb, r.vcores)
}

async fn info(State(rm): Rm) -> Json<Value> {
    Json(json!({
        "clusterInfo": {
            "id": rm.cluster_ts,
            "startedOn": rm.cluster_ts,
            "state": "STARTED",
            "haState": "ACTIVE",
            "resourceManagerVersion": hstack_daemon::VERSION,
            "hadoopVersion": hstack_daemon::VERSION,
            "scheduler": rm.cfg.scheduler.name(),
        }
    }))
}

async fn metrics(State(rm): Rm) -> Json<Value> {
    let m = rm.with(|st, cx| st.cluster_metrics(cx));
    let (tm, tc) = res(&m.total);
    let (um, uc) = res(&m.used);
    Json(json!({
        "clusterMetrics": {
            "appsSubmitted": m.apps_submitted,
            "appsCompleted": m.apps_completed,
            "appsPending": m.apps_pending,
            "appsRunning": m.apps_running,
            "appsFailed": m.apps_failed,
            "appsKilled": m.apps_killed,
            "totalMB": tm,
            "allocatedMB": um,
            "availableMB": tm - um,
            "totalVirtualCores": tc,
            "allocatedVirtualCores": uc,
            "availableVirtualCores": tc - uc,
            "containersAllocated": m.containers_running,
            "activeNodes": m.nodes_active,
            "lostNodes": m.nodes_lost,
            "totalNodes": m.nodes_active + m.nodes_lost,
        }
    }))
}

async fn nodes(State(rm): Rm) -> Json<Value> {
    let list = rm.with(|st, cx| st.nodes(cx));
    let node: Vec<Value> = list
        .nodes
        .iter()
        .map(|n| {
            let (cm, cc) = res(&n.capability);
            let (um, uc) = res(&n.used);
            json!({
                "id": n.node_id,
                "rack": n.rack,
                "state": n.state,
                "nodeHostName": n.host,
                "nodeHTTPAddress": n.http_addr,
                "healthReport": n.health_report,
                "lastHeartbeatMsAgo": n.last_heartbeat_ms_ago,
                "numContainers": n.containers,
                "usedMemoryMB": um,
                "availMemoryMB": cm - um,
                "usedVirtualCores": uc,
                "availableVirtualCores": cc - uc,
            })
        })
        .collect();
    Json(json!({ "nodes": { "node": node } }))
}

fn app_json(a: &pb::ApplicationReport) -> Value {
    let (m, c) = res(&a.used);
    let state = pb::AppState::try_from(a.state).unwrap_or_default();
    let fin = pb::FinalStatus::try_from(a.final_status).unwrap_or_default();
    let elapsed = match (a.start_ms, a.finish_ms) {
        (0, _) => 0,
        (s, 0) => crate::rm::wall_ms().saturating_sub(s),
        (s, f) => f.saturating_sub(s),
    };
    json!({
        "id": a.app_id,
        "user": a.user,
        "name": a.name,
        "queue": a.queue,
        "state": wire::app_state_name(state),
        "finalStatus": wire::final_status_name(fin),
        "progress": a.progress * 100.0,
        "trackingUrl": a.tracking_url,
        "diagnostics": a.diagnostics,
        "applicationType": a.app_type,
        "priority": a.priority,
        "startedTime": a.start_ms,
        "launchTime": a.start_ms,
        "submittedTime": a.submit_ms,
        "finishedTime": a.finish_ms,
        "elapsedTime": elapsed,
        "amContainerId": a.am_container_id,
        "amHostHttpAddress": a.am_node,
        "runningContainers": a.running_containers,
        "allocatedMB": m,
        "allocatedVCores": c,
        "currentAttempt": a.attempt,
        "maxAttempts": a.max_attempts,
    })
}

async fn apps(State(rm): Rm) -> Json<Value> {
    let list = rm.with(|st, _| st.list(&pb::ListApplicationsRequest::default()));
    let app: Vec<Value> = list.apps.iter().map(app_json).collect();
    Json(json!({ "apps": { "app": app } }))
}

async fn app(State(rm): Rm, Path(id): Path<String>) -> Response {
    let found = wire::app_id(&id).and_then(|id| rm.with(|st, _| st.report(id)));
    match found {
        Ok(a) => Json(json!({ "app": app_json(&a) })).into_response(),
        Err(e) => (
            if e.code == hstack_proto::Code::InvalidArgument {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::NOT_FOUND
            },
            Json(json!({
                "RemoteException": {
                    "exception": e.code.name(),
                    "message": e.message,
                }
            })),
        )
            .into_response(),
    }
}

async fn scheduler(State(rm): Rm) -> Json<Value> {
    let q = rm.with(|st, _| st.queues());
    let queues: Vec<Value> = q
        .queues
        .iter()
        .map(|q| {
            let (um, uc) = res(&q.used);
            let (pm, pc) = res(&q.pending);
            json!({
                "queuePath": q.path,
                "queueName": q.path.rsplit('.').next().unwrap_or(&q.path),
                "leaf": q.leaf,
                "capacity": q.capacity * 100.0,
                "maxCapacity": q.max_capacity * 100.0,
                "usedCapacity": q.used_share * 100.0,
                "numApplications": q.apps,
                "weight": q.weight,
                "fairShare": q.fair_share * 100.0,
                "starvedMs": q.starved_ms,
                "resourcesUsed": { "memory": um, "vCores": uc },
                "pendingResources": { "memory": pm, "vCores": pc },
            })
        })
        .collect();
    let kind = match q.scheduler.as_str() {
        "fifo" => "fifoScheduler",
        "capacity" => "capacityScheduler",
        _ => "fairScheduler",
    };
    Json(json!({
        "scheduler": {
            "schedulerInfo": {
                "type": kind,
                "queueName": "root",
                "queues": { "queue": queues },
            }
        }
    }))
}
