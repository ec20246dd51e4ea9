//! Ensemble administration over the client port: who is who, bootstrap,
//! adding and removing members. Used by `hstack zk members|add-member|
//! remove-member`, `hstack local` and the test harness.

use std::time::Duration;

use hstack_proto::coord as pb;
use hstack_proto::coord::coord_client::CoordClient;
use tonic::transport::Endpoint;

use crate::error::{Code, CoordError, Result};

async fn connect(addr: &str) -> Result<CoordClient<tonic::transport::Channel>> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| CoordError::new(Code::InvalidArgument, format!("bad address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30));
    let ch = ep
        .connect()
        .await
        .map_err(|e| CoordError::new(Code::ConnectionLoss, format!("cannot reach {addr}: {e}")))?;
    Ok(CoordClient::new(ch))
}

/// The member's error, by its code, with the member named.
fn status_err(addr: &str, s: tonic::Status) -> CoordError {
    CoordError::from_status(&s).context(addr)
}

/// Asks one member for its view of the ensemble.
pub async fn members_of(addr: &str) -> Result<pb::MembersReply> {
    let mut c = connect(addr).await?;
    c.members(pb::MembersRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| status_err(addr, s))
}

/// The first answer from any of `addrs`, preferring one that knows a leader.
pub async fn members(addrs: &[String]) -> Result<pb::MembersReply> {
    let mut fallback = None;
    let mut last_err = CoordError::new(Code::InvalidArgument, "no member addresses given");
    for a in addrs {
        match members_of(a).await {
            Ok(r) if r.leader_id != 0 => return Ok(r),
            Ok(r) => fallback = fallback.or(Some(r)),
            Err(e) => last_err = e,
        }
    }
    fallback.ok_or(last_err)
}

async fn leader_addr(addrs: &[String]) -> Result<String> {
    let r = members(addrs).await?;
    r.members
        .iter()
        .find(|m| m.id == r.leader_id)
        .map(|m| m.client_addr.clone())
        .ok_or_else(|| CoordError::unavailable("no leader elected"))
}

pub async fn bootstrap(addr: &str, members: Vec<pb::MemberInfo>) -> Result<pb::MembersReply> {
    let mut c = connect(addr).await?;
    c.bootstrap(pb::BootstrapRequest { members })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| status_err(addr, s))
}

pub async fn add_member(
    addrs: &[String],
    member: pb::MemberInfo,
    voter: bool,
) -> Result<pb::MembersReply> {
    let leader = leader_addr(addrs).await?;
    let mut c = connect(&leader).await?;
    c.add_member(pb::AddMemberRequest {
        member: Some(member),
        voter,
    })
    .await
    .map(|r| r.into_inner())
    .map_err(|s| status_err(&leader, s))
}

pub async fn remove_member(addrs: &[String], id: u64) -> Result<pb::MembersReply> {
    let leader = leader_addr(addrs).await?;
    let mut c = connect(&leader).await?;
    c.remove_member(pb::RemoveMemberRequest { id })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| status_err(&leader, s))
}
