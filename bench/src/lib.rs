//! hstack's benchmark engines, apart from the command line that runs them
//! (`hstack bench …`) and from the production libraries they measure: the
//! coordination service's closed-loop load (`coord`) and the file
//! system's throughput, namenode operations and memory (`dfs`).

pub mod coord;
pub mod dfs;
