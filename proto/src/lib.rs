//! Every `.proto` file of hstack and the tonic/prost code generated from
//! it, the one error model they share (`error`), and how a retryable
//! call waits between tries (`retry`).

pub mod error;
pub mod retry;

pub use error::{Code, Error};

/// The coordination service's client and peer APIs.
#[allow(clippy::all, clippy::pedantic)]
pub mod coord {
    tonic::include_proto!("hstack.coord.v1");
}

/// The file system's namenode and datanode APIs.
#[allow(clippy::all, clippy::pedantic)]
pub mod dfs {
    tonic::include_proto!("hstack.dfs.v1");
}

/// A MapReduce job's application master: its tasks' umbilical and its
/// clients' API.
#[allow(clippy::all, clippy::pedantic)]
pub mod mapreduce {
    tonic::include_proto!("hstack.mapreduce.v1");
}

/// The resource scheduler's APIs: clients, application masters and node
/// managers to the resource manager, and the node managers' container API.
#[allow(clippy::all, clippy::pedantic)]
pub mod scheduler {
    tonic::include_proto!("hstack.scheduler.v1");
}
