//! hstack's distributed file system, in HDFS's shape: a namenode that owns
//! the namespace and the block map, datanodes that store checksummed
//! blocks, rack-aware placement, and the client.

pub mod blockmap;
pub mod blockstore;
pub mod client;
pub mod datanode;
pub mod editlog;
pub mod error;
pub mod namenode;
pub mod namespace;
pub mod path;
pub mod placement;
pub mod short_circuit;
pub mod transfer;
pub mod wire;

#[cfg(test)]
mod fixtures;

pub use error::{Code, FsError, FsResult};
