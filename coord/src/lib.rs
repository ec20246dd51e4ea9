//! hstack's coordination service: ZooKeeper's data model and guarantees on
//! top of Raft (openraft, log in RocksDB), its client library and recipes.

mod config;
mod error;
mod forward;
mod liveness;
mod logstore;
mod metrics;
mod network;
mod path;
mod server;
mod session;
mod sm;
mod tree;
mod types;
mod watch;

pub use config::{parse_member, CoordConfig, CoordFlags};
pub use error::{Code, CoordError};
pub use server::{run, Handle};
pub use tree::{Stat, MAX_DATA};

mod admin;
mod bench;
mod client;
mod recipes;

pub use admin::{add_member, bootstrap, members, members_of, remove_member};
pub use bench::{run_bench, BenchOpts, BenchReport, Workload};
pub use client::{
    Client, ClientOptions, CreateMode, EventKind, MultiOp, MultiResult, SessionState, WatchedEvent,
};
pub use recipes::{ensure_path, LeaderElection, Leadership, Lock, LockGuard};

/// Generated wire types, for callers that speak the API directly.
pub use hstack_proto::coord as proto;
