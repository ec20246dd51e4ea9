//! Every `.proto` file of hstack and the tonic/prost code generated from
//! it, and the one error model they share (`error`).

pub mod error;

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
