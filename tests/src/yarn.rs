//! A scheduler cluster of real processes: one resource manager and node
//! managers spread over racks, each node manager on its own loopback
//! address (127.0.2.N). Their containers are real processes too; when the
//! cluster is dropped the node managers are stopped cleanly (which stops
//! their containers), and anything of theirs still running is killed.

use std::path::Path;
use std::time::Duration;

use hstack_proto::scheduler as pb;
use hstack_scheduler::client::RmClient;

use crate::{check_log, wait_for, Proc};

pub struct YarnCluster {
    pub rm: Proc,
    pub nms: Vec<Proc>,
    pub dir: tempfile::TempDir,
    /// ERROR lines matching any of these are expected in this test.
    pub allowed_errors: Vec<String>,
    /// Where the node managers' cgroups go (unique per cluster).
    pub cgroup_hierarchy: String,
}

/// The host node manager `i` (0-based) runs on.
pub fn nm_host(i: usize) -> String {
    format!("127.0.2.{}", i + 1)
}

impl YarnCluster {
    /// Memory of each test node manager (MiB), and its vcores.
    pub const NM_MEMORY_MB: u64 = 2048;
    pub const NM_VCORES: u32 = 8;

    /// A resource manager (with extra flags) and `nms` node managers over
    /// `racks` racks (the first half on /rack1, …); returns once every node
    /// manager has registered.
    pub async fn start(nms: usize, racks: usize, rm_extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(nms, racks, rm_extra, &[]).await
    }

    pub async fn start_with(
        nms: usize,
        racks: usize,
        rm_extra: &[&str],
        nm_extra: &[&str],
    ) -> anyhow::Result<Self> {
        let hosts: Vec<String> = (0..nms).map(nm_host).collect();
        Self::start_on(&hosts, racks, rm_extra, nm_extra).await
    }

    /// Node managers on the given hosts (beside datanodes, for locality).
    pub async fn start_on(
        hosts: &[String],
        racks: usize,
        rm_extra: &[&str],
        nm_extra: &[&str],
    ) -> anyhow::Result<Self> {
        let nms = hosts.len();
        let dir = tempfile::Builder::new()
            .prefix("hstack-yarn-test-")
            .tempdir()?;
        let name = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut rm = spawn_rm(dir.path(), rm_extra)?;
        rm.wait_announced(Duration::from_secs(30)).await?;
        let cgroup_hierarchy = format!("hstack-test/{name}");
        let mut procs = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let rack = format!("/rack{}", i * racks / nms.max(1) + 1);
            procs.push(spawn_nm(
                dir.path(),
                i,
                host,
                &rack,
                &rm.addr("rpc"),
                &cgroup_hierarchy,
                nm_extra,
            )?);
        }
        for p in &mut procs {
            p.wait_announced(Duration::from_secs(30)).await?;
        }
        let me = Self {
            rm,
            nms: procs,
            dir,
            allowed_errors: vec![],
            cgroup_hierarchy,
        };
        me.wait_nodes(nms).await?;
        Ok(me)
    }

    pub fn rm_addr(&self) -> String {
        self.rm.addr("rpc")
    }

    pub fn client(&self) -> anyhow::Result<RmClient> {
        Ok(RmClient::new(&self.rm_addr())?)
    }

    /// The node id (host:port) of node manager `i`.
    pub fn node_id(&self, i: usize) -> String {
        self.nms[i].addr("rpc")
    }

    /// Waits until `n` node managers are RUNNING at the resource manager.
    pub async fn wait_nodes(&self, n: usize) -> anyhow::Result<()> {
        let c = self.client()?;
        wait_for(
            &format!("{n} running node managers"),
            Duration::from_secs(30),
            || {
                let c = c.clone();
                async move {
                    let nodes = c.nodes().await.ok()?;
                    (nodes.nodes.iter().filter(|x| x.state == "RUNNING").count() == n).then_some(())
                }
            },
        )
        .await
    }

    /// Waits until `app` is over; its report.
    pub async fn wait_over(
        &self,
        app: &str,
        timeout: Duration,
    ) -> anyhow::Result<pb::ApplicationReport> {
        let c = self.client()?;
        let app = app.to_string();
        wait_for(&format!("{app} to end"), timeout, || {
            let (c, app) = (c.clone(), app.clone());
            async move {
                let r = c.report(&app).await.ok()?;
                hstack_scheduler::client::is_over(&r).then_some(r)
            }
        })
        .await
    }

    /// Fails on panics or unexpected ERROR lines in any daemon's log.
    pub fn check_logs(&self) -> anyhow::Result<()> {
        check_log(&self.rm.log, &self.allowed_errors)?;
        for n in &self.nms {
            check_log(&n.log, &self.allowed_errors)?;
        }
        Ok(())
    }
}

impl Drop for YarnCluster {
    fn drop(&mut self) {
        // Cleanly: a node manager stops its containers when it stops.
        for n in &mut self.nms {
            n.resume();
            n.terminate(Duration::from_secs(5));
        }
        // Whatever a killed node manager left running goes too.
        let ids: Vec<String> = self.nms.iter().map(|n| n.addr("rpc")).collect();
        for pid in crate::procs_with_env("HSTACK_NM_ADDRESS", &ids) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for ctl in ["memory", "cpu", ""] {
            let p = Path::new("/sys/fs/cgroup")
                .join(ctl)
                .join(&self.cgroup_hierarchy);
            remove_cgroup_dirs(&p);
        }
    }
}

/// Removes a cgroup directory and the (empty) groups under it, deepest
/// first: a killed node manager leaves its own group behind. A cgroup's
/// files cannot be removed, only its directories.
fn remove_cgroup_dirs(p: &Path) {
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

fn spawn_rm(dir: &Path, extra: &[&str]) -> anyhow::Result<Proc> {
    let data_dir = dir.join("rm");
    std::fs::create_dir_all(&data_dir)?;
    let mut args: Vec<String> = [
        "--rpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--min-allocation-mb",
        "128",
        "--nm-heartbeat-ms",
        "200",
        "--nm-expiry-ms",
        "3000",
        "--preemption-interval-ms",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--data-dir".into());
    args.push(data_dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = Proc::new("resourcemanager", 0, &data_dir, &dir.join("rm.log"), args);
    p.spawn()?;
    Ok(p)
}

fn spawn_nm(
    dir: &Path,
    i: usize,
    host: &str,
    rack: &str,
    rm: &str,
    cgroups: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let data_dir = dir.join(format!("nm{}", i + 1));
    std::fs::create_dir_all(&data_dir)?;
    let mut args: Vec<String> = vec!["--id".into(), format!("nm{}", i + 1)];
    for (flag, v) in [
        ("--data-dir", data_dir.display().to_string()),
        ("--resource-manager", rm.to_string()),
        ("--rpc-addr", format!("{host}:0")),
        ("--http-addr", format!("{host}:0")),
        ("--rack", rack.to_string()),
        ("--memory-mb", YarnCluster::NM_MEMORY_MB.to_string()),
        ("--vcores", YarnCluster::NM_VCORES.to_string()),
        ("--monitor-interval-ms", "200".to_string()),
        ("--cgroup-hierarchy", cgroups.to_string()),
        ("--aux-services", "mapreduce_shuffle".to_string()),
    ] {
        args.push(flag.into());
        args.push(v);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let log = dir.join(format!("nm{}.log", i + 1));
    let mut p = Proc::new("nodemanager", i as u64 + 1, &data_dir, &log, args);
    p.spawn()?;
    Ok(p)
}
