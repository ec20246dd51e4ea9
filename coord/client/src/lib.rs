//! The coordination service's client library: sessions with watches and
//! reconnection (`Client`), the recipes the rest of the stack stands on
//! (leader election, lock), and ensemble administration. It links no
//! server code: a role that only talks to the coordination service
//! depends on this crate alone.

mod admin;
mod client;
pub mod error;
pub mod jute;
mod recipes;
mod stat;

pub use admin::{add_member, bootstrap, members, members_of, remove_member};
pub use client::{
    Acl, Client, ClientOptions, CreateMode, EventKind, MultiOp, MultiResult, SessionState,
    WatchedEvent,
};
pub use error::{Code, CoordError};
pub use recipes::{ensure_path, LeaderElection, Leadership, Lock, LockGuard};
pub use stat::{Stat, MAX_DATA};

/// Generated wire types, for callers that speak the API directly.
pub use hstack_proto::coord as proto;
