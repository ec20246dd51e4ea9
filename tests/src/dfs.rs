//! A file system cluster of real processes: one namenode and datanodes
//! spread over racks, each datanode on its own loopback address
//! (127.0.1.N) so the namenode tells them apart by host, as it would on a
//! real network. Clients run on 127.0.0.1, off the cluster, unless a test
//! says otherwise.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hstack_dfs::client::{ClientOptions, CreateOptions, DfsClient};
use hstack_proto::dfs as pb;

use crate::{check_log, wait_for, Proc};

pub struct DfsCluster {
    pub nn: Proc,
    pub dns: Vec<Proc>,
    pub dir: tempfile::TempDir,
    /// ERROR lines matching any of these are expected in this test.
    pub allowed_errors: Vec<String>,
    pub racks: usize,
}

/// `len` pseudo-random bytes, the same for the same `seed`.
pub fn pattern(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `bytes` to a new file (parents created) in odd-sized pieces, so
/// packets and blocks cannot depend on how the caller cuts its writes.
pub async fn put_file(c: &DfsClient, path: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let o = CreateOptions {
        create_parent: true,
        ..Default::default()
    };
    let mut w = c.create(path, &o).await?;
    for piece in bytes.chunks(70_001) {
        w.write(piece).await?;
    }
    w.close().await?;
    Ok(())
}

pub async fn read_file(c: &DfsClient, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut r = c.open(path).await?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).await?;
    Ok(out)
}

/// Every file below `dir`.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The host datanode `i` (0-based) runs on.
pub fn dn_host(i: usize) -> String {
    format!("127.0.1.{}", i + 1)
}

impl DfsCluster {
    /// The block size tests use: small, so files span many blocks.
    pub const BLOCK: u64 = 128 * 1024;

    /// Starts a namenode (with extra flags) and `datanodes` datanodes over
    /// `racks` racks (the first half on /rack1, …), and waits until every
    /// datanode has registered and the namenode has left safe mode.
    pub async fn start(datanodes: usize, racks: usize, nn_extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(datanodes, racks, nn_extra, &[]).await
    }

    /// `start`, with flags for every datanode too.
    pub async fn start_with(
        datanodes: usize,
        racks: usize,
        nn_extra: &[&str],
        dn_extra: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hstack-dfs-test-")
            .tempdir()?;
        let mut nn = spawn_namenode(dir.path(), nn_extra)?;
        nn.wait_announced(Duration::from_secs(30)).await?;
        let mut dns = Vec::new();
        for i in 0..datanodes {
            let rack = format!("/rack{}", i * racks / datanodes.max(1) + 1);
            dns.push(spawn_datanode(
                dir.path(),
                i,
                &rack,
                &nn.addr("rpc"),
                dn_extra,
            )?);
        }
        for d in &mut dns {
            d.wait_announced(Duration::from_secs(30)).await?;
        }
        let me = Self {
            nn,
            dns,
            dir,
            allowed_errors: vec![],
            racks,
        };
        me.wait_live(datanodes).await?;
        Ok(me)
    }

    /// A client running as `user` (the namenode's superuser is the user
    /// running the tests).
    pub async fn client_as(
        &self,
        user: Option<&str>,
        host: Option<&str>,
    ) -> anyhow::Result<DfsClient> {
        let mut o = ClientOptions::default();
        if let Some(u) = user {
            o.user = u.to_string();
        }
        if let Some(h) = host {
            o.host = h.to_string();
        }
        o.lease_renew = Duration::from_millis(300);
        Ok(DfsClient::connect(&self.nn.addr("rpc"), o).await?)
    }

    pub async fn client(&self) -> anyhow::Result<DfsClient> {
        self.client_as(None, None).await
    }

    pub async fn report(&self) -> anyhow::Result<pb::DatanodeReport> {
        let c = self.client().await?;
        Ok(report_of(&c).await?)
    }

    /// Waits until `n` datanodes are live and safe mode is off.
    pub async fn wait_live(&self, n: usize) -> anyhow::Result<()> {
        let addr = self.nn.addr("rpc");
        wait_for(
            &format!("{n} live datanodes and safe mode off"),
            Duration::from_secs(30),
            || {
                let addr = addr.clone();
                async move {
                    let c = DfsClient::connect(&addr, ClientOptions::default())
                        .await
                        .ok()?;
                    let r = report_of(&c).await.ok()?;
                    let live = r
                        .datanodes
                        .iter()
                        .filter(|d| d.state() == pb::DatanodeState::Live)
                        .count();
                    (live == n && !r.safe_mode).then_some(())
                }
            },
        )
        .await
    }

    /// The datanode with this id.
    pub fn dn_by_id(&mut self, id: &str) -> &mut Proc {
        self.dns
            .iter_mut()
            .find(|p| format!("dn{}", p.id) == id)
            .expect("no such datanode")
    }

    /// Fails on panics or unexpected ERROR lines in any daemon's log.
    pub fn check_logs(&self) -> anyhow::Result<()> {
        check_log(&self.nn.log, &self.allowed_errors)?;
        for d in &self.dns {
            check_log(&d.log, &self.allowed_errors)?;
        }
        Ok(())
    }
}

/// The namenode's datanode report, asked as `c`'s user (the superuser's,
/// unless the client says otherwise).
pub async fn report_of(c: &DfsClient) -> Result<pb::DatanodeReport, tonic::Status> {
    let req = pb::DatanodeReportRequest { caller: c.caller() };
    Ok(c.admin().get_datanode_report(req).await?.into_inner())
}

fn spawn_namenode(dir: &Path, extra: &[&str]) -> anyhow::Result<Proc> {
    let data_dir = dir.join("namenode");
    std::fs::create_dir_all(&data_dir)?;
    let mut args: Vec<String> = [
        "--rpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--heartbeat-ms",
        "300",
        "--dead-node-timeout-ms",
        "3000",
        "--replication-interval-ms",
        "300",
        "--pending-replication-timeout-ms",
        "5000",
        "--safemode-extension-ms",
        "0",
        "--min-block-size",
        "512",
        "--default-block-size",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(DfsCluster::BLOCK.to_string());
    args.push("--name-dir".into());
    args.push(data_dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = Proc::new("namenode", 0, &data_dir, &dir.join("namenode.log"), args);
    p.spawn()?;
    Ok(p)
}

fn spawn_datanode(
    dir: &Path,
    i: usize,
    rack: &str,
    namenode: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let base = dir.join(format!("dn{}", i + 1));
    let dirs = [base.join("data1"), base.join("data2")];
    for d in &dirs {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let host = dn_host(i);
    let mut args: Vec<String> = vec!["--id".into(), format!("dn{}", i + 1)];
    args.push("--data-dirs".into());
    args.push(
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    for (flag, v) in [
        ("--namenode", namenode.to_string()),
        ("--transfer-addr", format!("{host}:0")),
        ("--rpc-addr", format!("{host}:0")),
        ("--http-addr", format!("{host}:0")),
        ("--rack", rack.to_string()),
        ("--scan-period-ms", "2000".to_string()),
    ] {
        args.push(flag.into());
        args.push(v);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let log = dir.join(format!("dn{}.log", i + 1));
    let mut p = Proc::new("datanode", i as u64 + 1, &dirs[0], &log, args);
    p.spawn()?;
    Ok(p)
}
