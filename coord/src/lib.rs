//! hstack's coordination service: ZooKeeper's data model and guarantees on
//! top of Raft (openraft, log in RocksDB). Its client library and recipes
//! are the crate `hstack-coord-client`, which links none of this.
//!
//! The modules form layers; each imports only from the layers below it:
//!
//! 1. `error`, `path`, `types` (transactions, the Raft type config);
//! 2. `tree` (the znode tree), `watch` (watch registrations), `liveness`;
//! 3. `logstore` (the Raft log in RocksDB), `sm` (the state machine),
//!    `metrics`, `config`;
//! 4. `network` (Raft between members), `forward` (proposals a follower
//!    sends its leader);
//! 5. `node` (the member's core: Raft, the proposer, expiry and reaping);
//! 6. `session` (one client connection), `service` (the gRPC services),
//!    `zk` (ZooKeeper's own protocol, translated into sessions);
//! 7. `member` (the role: how `hstack coord` starts).

mod acl;
mod admission;
mod config;
mod error;
mod forward;
mod liveness;
mod logstore;
mod member;
mod metrics;
mod network;
mod node;
mod path;
mod service;
mod session;
mod sm;
mod tree;
mod types;
mod watch;
mod zk;

#[cfg(test)]
mod testing;

pub use config::{parse_member, CoordConfig};
pub use member::CoordRole;
