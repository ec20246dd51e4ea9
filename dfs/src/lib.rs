//! hstack's distributed file system, in HDFS's shape: a namenode that owns
//! the namespace and the block map, datanodes that store checksummed
//! blocks, rack-aware placement, and the client.

pub mod blockmap;
pub mod blockstore;
pub mod editlog;
pub mod error;
pub mod namespace;
pub mod path;
pub mod placement;

pub use error::{FsError, FsResult, Kind};
