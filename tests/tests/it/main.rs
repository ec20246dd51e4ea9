//! Scenario tests against real `hstack` processes (one test binary).

mod coord;
mod coord_failures;
mod daemon;
mod dfs;
mod dfs_failures;
mod dfs_shell;
mod local_cluster;
mod mapreduce;
mod scheduler;
mod short_circuit;
mod zk_compat;
