//! A cluster for MapReduce tests: a namenode with datanodes and a
//! resource manager with node managers, each node manager on its
//! datanode's host (so maps can be data-local), and a way to run `hstack
//! mr …` against it.

use std::time::Duration;

use hstack_dfs::client::DfsClient;

use crate::dfs::{dn_host, DfsCluster};
use crate::yarn::YarnCluster;
use crate::{hstack_env, Ran};

/// The user jobs run as, and its home (where relative paths are).
pub const USER: &str = "tester";
pub const USER_HOME: &str = "/user/tester";

pub struct MrCluster {
    pub dfs: DfsCluster,
    pub yarn: YarnCluster,
}

impl MrCluster {
    /// `n` datanode + node manager pairs over `racks` racks.
    pub async fn start(n: usize, racks: usize) -> anyhow::Result<Self> {
        Self::start_with(n, racks, &[]).await
    }

    pub async fn start_with(n: usize, racks: usize, rm_extra: &[&str]) -> anyhow::Result<Self> {
        let dfs = DfsCluster::start(n, racks, &[]).await?;
        let hosts: Vec<String> = (0..n).map(dn_host).collect();
        let yarn = YarnCluster::start_on(&hosts, racks, rm_extra, &[]).await?;
        // As an administrator would: the job user's home, and a history
        // directory every job may write its record into.
        let c = dfs.client().await?;
        c.mkdirs(USER_HOME, 0o755, true).await?;
        c.set_owner(USER_HOME, USER, "").await?;
        c.mkdirs("/mr-history/done", 0o777, true).await?;
        c.set_permission("/mr-history/done", 0o777).await?;
        Ok(Self { dfs, yarn })
    }

    pub fn namenode(&self) -> String {
        self.dfs.nn.addr("rpc")
    }

    /// A file system client acting as the jobs' user.
    pub async fn client(&self) -> anyhow::Result<DfsClient> {
        self.dfs.client_as(Some(USER), None).await
    }

    /// `hstack ARGS…` against this cluster, as user `tester`.
    pub fn hstack(&self, args: &[&str]) -> anyhow::Result<Ran> {
        let nn = self.namenode();
        let rm = self.yarn.rm_addr();
        hstack_env(
            args,
            &[
                ("HSTACK_NAMENODE", &nn),
                ("HSTACK_RM", &rm),
                ("HSTACK_USER", "tester"),
            ],
        )
    }

    /// SIGKILLs node manager `i` and the datanode beside it.
    pub fn kill_pair(&mut self, i: usize) {
        self.yarn.nms[i].kill9();
        self.dfs.dns[i].kill9();
    }

    /// Waits until the resource manager has `n` running node managers.
    pub async fn wait_nodes(&self, n: usize) -> anyhow::Result<()> {
        self.yarn.wait_nodes(n).await
    }

    pub fn check_logs(&self) -> anyhow::Result<()> {
        self.dfs.check_logs()?;
        self.yarn.check_logs()
    }
}

/// How long a test job may take.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(180);
