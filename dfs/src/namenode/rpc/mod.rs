//! The namenode's three RPC services, as HDFS splits them: what clients
//! ask (`client`), what administrators ask (`admin`) and what datanodes
//! tell (`datanode`). Each handler only decodes the request, calls one
//! operation (`super::ops`) and encodes its answer; errors travel as the
//! one error model's codes.

mod admin;
mod client;
mod datanode;

use std::net::SocketAddr;
use std::sync::Arc;

use hstack_proto::dfs as pb;
use tonic::{Response, Status};

use super::ops::{Located, NodeView, Who};
use super::Namenode;
use crate::error::{FsError, FsResult};
use crate::namespace::{self, Caller};

pub(crate) use admin::AdminService;
pub(crate) use client::ClientService;
pub(crate) use datanode::DatanodeProtocolService;

/// The largest message the namenode takes or sends (a full block report,
/// a listing of a big directory).
pub(crate) const MAX_MESSAGE: usize = 256 << 20;

/// The caller of a request: its user as named, its groups as this
/// namenode looks them up (never as the client says), its client name,
/// and its host (as given, else the address the call came from).
fn who(nn: &Namenode, c: Option<pb::Caller>, remote: Option<SocketAddr>) -> FsResult<Who> {
    let c = c.unwrap_or_default();
    if c.user.is_empty() {
        return Err(FsError::invalid("the request names no user"));
    }
    let host = if c.host.is_empty() {
        remote.map(|a| a.ip().to_string()).unwrap_or_default()
    } else {
        c.host
    };
    let groups = nn.groups.of(&c.user);
    Ok(Who {
        caller: Caller {
            user: c.user,
            groups,
        },
        client: c.client_name,
        host,
    })
}

/// Counts the call and encodes its answer.
fn answer<T>(nn: &Arc<Namenode>, op: &'static str, r: FsResult<T>) -> Result<Response<T>, Status> {
    let m = &nn.metrics;
    m.ops.with_label_values(&[op]).inc();
    match r {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            m.op_errors.with_label_values(&[op, e.code.name()]).inc();
            Err(e.into())
        }
    }
}

fn node_pb(n: NodeView) -> pb::DatanodeInfo {
    pb::DatanodeInfo {
        id: n.id,
        host: n.host,
        transfer_addr: n.transfer_addr,
        rpc_addr: n.rpc_addr,
        http_addr: n.http_addr,
        rack: n.rack,
        capacity: n.capacity,
        used: n.used,
        remaining: n.remaining,
        xceivers: n.xceivers,
        failed_volumes: n.failed_volumes,
        state: crate::wire::node_state(n.state) as i32,
        last_contact_ms: n.last_contact_ms,
        blocks: n.blocks,
        domain_socket_path: n.domain_socket,
    }
}

fn nodes_pb(v: Vec<NodeView>) -> Vec<pb::DatanodeInfo> {
    v.into_iter().map(node_pb).collect()
}

fn located_pb(l: Located) -> pb::LocatedBlock {
    pb::LocatedBlock {
        block: Some(l.block.into()),
        offset: l.offset,
        locs: nodes_pb(l.locs),
        corrupt: l.corrupt,
    }
}

fn status_pb(s: namespace::Status) -> pb::FileStatus {
    pb::FileStatus {
        path: s.path,
        is_dir: s.is_dir,
        len: s.len,
        replication: s.replication as u32,
        block_size: s.block_size,
        mtime_ms: s.mtime,
        atime_ms: s.atime,
        permission: s.perm as u32,
        owner: s.owner,
        group: s.group,
        inode_id: s.inode,
        children: s.children,
        under_construction: s.under_construction,
    }
}

fn bad_replicas(blocks: Vec<pb::BadBlock>) -> FsResult<Vec<super::ops::BadReplica>> {
    blocks
        .into_iter()
        .map(|b| {
            Ok(super::ops::BadReplica {
                block: crate::wire::block(b.block)?,
                datanode: b.datanode,
                reason: b.reason,
            })
        })
        .collect()
}
