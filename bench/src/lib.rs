//! hstack's benchmark engines, apart from the command line that runs them
//! (`hstack bench …`) and from the production libraries they measure: the
//! coordination service's closed-loop load (`coord`), the file system's
//! throughput, namenode operations and memory (`dfs`), and the scheduler
//! under simulated load (`scheduler`), and MapReduce jobs end to end
//! (`mr`).

pub mod coord;
pub mod dfs;
pub mod mr;
pub mod scheduler;
pub mod zkwire;
