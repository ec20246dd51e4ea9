//! hstack's MapReduce engine (Dean & Ghemawat; Hadoop MapReduce's shape).
//!
//! A job is a mapper, an optional combiner and reducer, a partitioner and
//! input and output formats (`api`, `io`), described by a serializable
//! [`JobSpec`] so that every task process can rebuild it. A map task reads
//! its split, maps, and sorts its output into one partitioned file
//! (`mapside`, in the `ifile` format); a reduce task merges the partition
//! it owns from every map (`merge`, `reduceside`) and writes through the
//! output committer (`committer`). The same task code runs in one process
//! against local files (`local`) or in containers on the cluster.

pub mod am;
pub mod api;
pub mod child;
pub mod client;
pub mod committer;
pub mod conf;
pub mod counters;
pub mod fs;
pub mod history;
pub mod ifile;
pub mod io;
pub mod jobs;
pub mod local;
pub mod mapside;
pub mod merge;
pub mod reduceside;
pub mod shuffle;
pub mod spec;
pub mod splits;
pub mod task;
pub mod varint;

pub use api::{Emit, Mapper, Partitioner, Reducer, TaskContext, Values};
pub use conf::JobConf;
pub use counters::Counters;
pub use spec::JobSpec;
