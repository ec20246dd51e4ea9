//! `hstack admin …`: the file system's administration (`hdfs dfsadmin`
//! and `hdfs fsck` in HDFS).

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use hstack_dfs::client::Repeat;
use hstack_dfs::wire::node_state_name;
use hstack_proto::dfs as pb;
use serde_json::json;

use crate::dfs::{ExitStatus, NnEndpoint};
use crate::output::{self, human_bytes};

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    endpoint: NnEndpoint,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: AdminCmd,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Capacity, datanodes by rack, and block health (`-report` too).
    Report {
        /// Only live datanodes (Hadoop's -live).
        #[arg(long, conflicts_with_all = ["dead", "decommissioning"])]
        live: bool,
        /// Only dead datanodes (-dead).
        #[arg(long, conflicts_with = "decommissioning")]
        dead: bool,
        /// Only datanodes being decommissioned (-decommissioning).
        #[arg(long)]
        decommissioning: bool,
    },
    /// Check the files under a path: blocks, replicas, racks, problems.
    /// Exits 1 when a block is missing or corrupt.
    /// HDFS's spellings work too: -files -blocks -locations -racks
    /// -openforwrite -list-corruptfileblocks.
    Fsck {
        /// A path (relative: to the home directory) or hdfs:// URI.
        #[arg(default_value = "/")]
        path: String,
        /// List each file.
        #[arg(long)]
        files: bool,
        /// List the files open for write (left out otherwise, unless a
        /// block of theirs has a problem).
        #[arg(long)]
        openforwrite: bool,
        /// Only list the missing and corrupt blocks and their files.
        #[arg(long)]
        list_corruptfileblocks: bool,
        /// List each block of each file (implies --files).
        #[arg(long)]
        blocks: bool,
        /// Show each block's replicas and racks (implies --blocks).
        #[arg(long)]
        locations: bool,
    },
    /// Safe mode: `get`, `enter`, `leave`, or `wait` (until it is off).
    Safemode {
        #[arg(value_enum)]
        action: SafeModeCmd,
        /// With `wait`, fail (TimedOut) after this many seconds.
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        timeout: u64,
    },
    /// Drop dead datanodes (by id or transfer address), retired for good,
    /// from the lists and the dead count; live ones are refused.
    RemoveDead {
        #[arg(required = true)]
        datanodes: Vec<String>,
    },
    /// Drain datanodes (by id or transfer address) before they leave.
    Decommission {
        /// Put them back in service instead.
        #[arg(long)]
        recommission: bool,
        #[arg(required = true)]
        datanodes: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SafeModeCmd {
    Get,
    Enter,
    Leave,
    Wait,
}

fn dn_json(d: &pb::DatanodeInfo) -> serde_json::Value {
    json!({
        "id": d.id, "host": d.host, "rack": d.rack, "state": node_state_name(d.state()),
        "transfer_addr": d.transfer_addr, "rpc_addr": d.rpc_addr, "http_addr": d.http_addr,
        "capacity": d.capacity, "used": d.used, "remaining": d.remaining,
        "blocks": d.blocks, "xceivers": d.xceivers, "last_contact_ms": d.last_contact_ms,
        "failed_volumes": d.failed_volumes,
    })
}

fn report_json(r: &pb::DatanodeReport) -> serde_json::Value {
    json!({
        "safe_mode": r.safe_mode,
        "capacity": r.capacity, "used": r.used, "remaining": r.remaining,
        "files": r.files, "blocks": r.blocks,
        "under_replicated": r.under_replicated, "missing": r.missing,
        "corrupt": r.corrupt, "excess": r.excess,
        "pending_replication": r.pending_replication,
        "datanodes": r.datanodes.iter().map(dn_json).collect::<Vec<_>>(),
    })
}

/// The report as a table, or as JSON.
fn show_report(r: &pb::DatanodeReport, json: bool) -> anyhow::Result<()> {
    show_report_of(r, json, |_| true)
}

/// The report, the datanodes listed only those `listed` keeps (the
/// totals stay the cluster's).
fn show_report_of(
    r: &pb::DatanodeReport,
    json: bool,
    listed: impl Fn(&pb::DatanodeInfo) -> bool,
) -> anyhow::Result<()> {
    if json {
        let mut some = r.clone();
        some.datanodes.retain(|d| listed(d));
        return output::json(&report_json(&some));
    }
    print_report(r, listed);
    Ok(())
}

fn print_report(r: &pb::DatanodeReport, listed: impl Fn(&pb::DatanodeInfo) -> bool) {
    let live = r
        .datanodes
        .iter()
        .filter(|d| d.state() != hstack_proto::dfs::DatanodeState::Dead)
        .count();
    println!(
        "Configured capacity: {}  used: {}  remaining: {}",
        human_bytes(r.capacity),
        human_bytes(r.used),
        human_bytes(r.remaining)
    );
    println!(
        "Files: {}  blocks: {}  under-replicated: {}  missing: {}  corrupt: {}  pending replication: {}",
        r.files, r.blocks, r.under_replicated, r.missing, r.corrupt, r.pending_replication
    );
    println!(
        "Safe mode: {}   Datanodes: {} live, {} dead",
        if r.safe_mode { "ON" } else { "off" },
        live,
        r.datanodes.len() - live
    );
    let mut by_rack: BTreeMap<&str, Vec<&pb::DatanodeInfo>> = BTreeMap::new();
    for d in r.datanodes.iter().filter(|d| listed(d)) {
        by_rack.entry(d.rack.as_str()).or_default().push(d);
    }
    for (rack, nodes) in by_rack {
        println!("\nRack {rack}:");
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|d| {
                vec![
                    d.id.clone(),
                    d.transfer_addr.clone(),
                    node_state_name(d.state()).to_string(),
                    human_bytes(d.capacity),
                    human_bytes(d.used),
                    human_bytes(d.remaining),
                    d.blocks.to_string(),
                    d.failed_volumes.to_string(),
                    format!("{:.1}s ago", d.last_contact_ms as f64 / 1000.0),
                ]
            })
            .collect();
        output::table(
            &[
                "datanode",
                "address",
                "state",
                "capacity",
                "used",
                "remaining",
                "blocks",
                "failed volumes",
                "last contact",
            ],
            &rows,
        );
    }
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    // Every call waits out a namenode that is restarting, like the file
    // system commands (see hstack_dfs::client::Repeat).
    let fs_args: Vec<&str> = match &args.cmd {
        AdminCmd::Fsck { path, .. } => vec![path.as_str()],
        _ => vec![],
    };
    let addr = args.endpoint.address_for(&fs_args).await?;
    let c = hstack_dfs::client::DfsClient::connect(&addr, args.endpoint.options()).await?;
    let json = args.json;
    match args.cmd {
        AdminCmd::Report {
            live,
            dead,
            decommissioning,
        } => {
            let req = pb::DatanodeReportRequest { caller: c.caller() };
            let r = c
                .admin_call("report", Repeat::Idempotent, |mut nn| {
                    let req = req.clone();
                    async move { nn.get_datanode_report(req).await }
                })
                .await?;
            show_report_of(&r, json, |d| {
                if live {
                    d.state() != hstack_proto::dfs::DatanodeState::Dead
                } else if dead {
                    d.state() == hstack_proto::dfs::DatanodeState::Dead
                } else if decommissioning {
                    d.state() == hstack_proto::dfs::DatanodeState::Decommissioning
                } else {
                    true
                }
            })
        }
        AdminCmd::Fsck {
            path,
            files,
            openforwrite,
            list_corruptfileblocks,
            blocks,
            locations,
        } => {
            let home = format!("/user/{}", c.user());
            let path = crate::dfs::glob::absolute(&crate::dfs::glob::parse_arg(&path)?.path, &home);
            let req = pb::FsckRequest {
                path: path.clone(),
                caller: c.caller(),
            };
            let r = c
                .admin_call("fsck", Repeat::Idempotent, |mut nn| {
                    let req = req.clone();
                    async move { nn.fsck(req).await }
                })
                .await?;
            if list_corruptfileblocks {
                let bad = corrupt_blocks(&r);
                if json {
                    output::json(&json!({
                        "path": path,
                        "corrupt_file_blocks": bad.iter().map(|(b, f)| json!({"block": b, "path": f})).collect::<Vec<_>>(),
                    }))?;
                } else {
                    print_corrupt_blocks(&path, &bad);
                }
            } else if json {
                output::json(&fsck_json(&r))?;
            } else {
                print_fsck(
                    &path,
                    &r,
                    FsckShow {
                        files: files || blocks || locations,
                        blocks: blocks || locations,
                        locations,
                        open: openforwrite,
                    },
                );
            }
            if r.healthy {
                Ok(())
            } else {
                Err(ExitStatus(1).into())
            }
        }
        AdminCmd::Safemode { action, timeout } => {
            let wait = action == SafeModeCmd::Wait;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            let act = match action {
                SafeModeCmd::Get | SafeModeCmd::Wait => pb::SafeModeAction::SafeModeGet,
                SafeModeCmd::Enter => pb::SafeModeAction::SafeModeEnter,
                SafeModeCmd::Leave => pb::SafeModeAction::SafeModeLeave,
            };
            loop {
                let req = pb::SafeModeRequest {
                    action: act as i32,
                    caller: c.caller(),
                };
                // get, enter and leave are each the same done twice.
                let call = c.admin_call("safemode", Repeat::Idempotent, |mut nn| {
                    let req = req.clone();
                    async move { nn.set_safe_mode(req).await }
                });
                let r = if wait {
                    match tokio::time::timeout_at(deadline, call).await {
                        Ok(r) => r?,
                        Err(_) => return Err(safemode_timeout(timeout)),
                    }
                } else {
                    call.await?
                };
                if wait && r.on {
                    if tokio::time::Instant::now() + Duration::from_millis(500) > deadline {
                        return Err(safemode_timeout(timeout));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                if json {
                    return output::json(&json!({
                        "on": r.on, "reason": r.reason,
                        "blocks_total": r.blocks_total, "blocks_reported": r.blocks_safe,
                    }));
                }
                println!(
                    "Safe mode is {}{}",
                    if r.on { "ON" } else { "OFF" },
                    if r.reason.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({}; {} of {} blocks reported)",
                            r.reason, r.blocks_safe, r.blocks_total
                        )
                    }
                );
                return Ok(());
            }
        }
        AdminCmd::RemoveDead { datanodes } => {
            let req = pb::RemoveDeadDatanodesRequest {
                datanodes,
                caller: c.caller(),
            };
            // Not twice: a second try would not find the node it removed.
            let r = c
                .admin_call("remove-dead", Repeat::AtMostOnce, |mut nn| {
                    let req = req.clone();
                    async move { nn.remove_dead_datanodes(req).await }
                })
                .await?;
            show_report(&r, json)
        }
        AdminCmd::Decommission {
            recommission,
            datanodes,
        } => {
            let req = pb::DecommissionRequest {
                datanodes,
                recommission,
                caller: c.caller(),
            };
            let r = c
                .admin_call("decommission", Repeat::Idempotent, |mut nn| {
                    let req = req.clone();
                    async move { nn.decommission(req).await }
                })
                .await?;
            show_report(&r, json)
        }
    }
}

fn safemode_timeout(secs: u64) -> anyhow::Error {
    hstack_proto::Error::new(
        hstack_proto::Code::TimedOut,
        format!("safe mode is still on after {secs}s (--timeout SECS waits longer)"),
    )
    .into()
}

/// The missing and corrupt blocks: (blk_ID_GS, file).
fn corrupt_blocks(r: &pb::FsckReply) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in &r.files {
        for b in &f.blocks {
            let bad =
                !b.corrupt_on.is_empty() || b.problems.iter().any(|p| p.starts_with("MISSING"));
            if bad {
                let blk = b.block.unwrap_or_default();
                out.push((format!("blk_{}_{}", blk.id, blk.gen_stamp), f.path.clone()));
            }
        }
    }
    out
}

fn print_corrupt_blocks(path: &str, bad: &[(String, String)]) {
    if bad.is_empty() {
        println!("The filesystem under path '{path}' has 0 CORRUPT files");
        return;
    }
    println!("The list of corrupt files under path '{path}' are:");
    for (b, f) in bad {
        println!("{b}\t{f}");
    }
    let files: std::collections::BTreeSet<&str> = bad.iter().map(|(_, f)| f.as_str()).collect();
    println!(
        "The filesystem under path '{path}' has {} CORRUPT files",
        files.len()
    );
}

/// What fsck lists beside the files with problems.
struct FsckShow {
    files: bool,
    blocks: bool,
    locations: bool,
    /// The files open for write.
    open: bool,
}

fn fsck_json(r: &pb::FsckReply) -> serde_json::Value {
    json!({
        "healthy": r.healthy,
        "directories": r.directories,
        "files": r.files.len(),
        "total_blocks": r.total_blocks,
        "under_replicated": r.under_replicated,
        "mis_replicated": r.mis_replicated,
        "missing": r.missing,
        "corrupt": r.corrupt,
        "file_list": r.files.iter().map(|f| json!({
            "path": f.path, "length": f.len, "replication": f.replication,
            "under_construction": f.under_construction,
            "blocks": f.blocks.iter().map(|b| {
                let blk = b.block.unwrap_or_default();
                json!({
                    "id": blk.id, "gen_stamp": blk.gen_stamp, "length": blk.len,
                    "replicas": b.replicas.iter().map(|d| json!({
                        "id": d.id, "rack": d.rack, "addr": d.transfer_addr, "state": node_state_name(d.state()),
                    })).collect::<Vec<_>>(),
                    "corrupt_on": b.corrupt_on,
                    "problems": b.problems,
                })
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn print_fsck(path: &str, r: &pb::FsckReply, show: FsckShow) {
    let FsckShow {
        files,
        blocks,
        locations,
        open,
    } = show;
    for f in &r.files {
        let problems: usize = f.blocks.iter().map(|b| b.problems.len()).sum();
        if files || problems > 0 || (open && f.under_construction) {
            println!(
                "{} {} bytes, replication {}, {} block(s){}{}",
                f.path,
                f.len,
                f.replication,
                f.blocks.len(),
                if f.under_construction {
                    ", OPEN FOR WRITE"
                } else {
                    ""
                },
                if problems > 0 { ":" } else { "" }
            );
        }
        for (i, b) in f.blocks.iter().enumerate() {
            if !blocks && b.problems.is_empty() {
                continue;
            }
            let blk = b.block.unwrap_or_default();
            let mut line = format!(
                "  {i}. blk_{}_{} len={} live_repl={}",
                blk.id,
                blk.gen_stamp,
                blk.len,
                b.replicas.len()
            );
            if locations {
                let locs: Vec<String> = b
                    .replicas
                    .iter()
                    .map(|d| {
                        format!(
                            "{} ({}{})",
                            d.transfer_addr,
                            d.rack,
                            if d.state() == hstack_proto::dfs::DatanodeState::Live {
                                String::new()
                            } else {
                                format!(", {}", node_state_name(d.state()))
                            }
                        )
                    })
                    .collect();
                line.push_str(&format!(" [{}]", locs.join(", ")));
            }
            println!("{line}");
            for p in &b.problems {
                println!("     {p}");
            }
        }
    }
    println!();
    println!("Status: {}", if r.healthy { "HEALTHY" } else { "CORRUPT" });
    output::table(
        &["", "count"],
        &[
            vec!["Total dirs".into(), r.directories.to_string()],
            vec!["Total files".into(), r.files.len().to_string()],
            vec!["Total blocks".into(), r.total_blocks.to_string()],
            vec![
                "Under-replicated blocks".into(),
                r.under_replicated.to_string(),
            ],
            vec!["Mis-replicated blocks".into(), r.mis_replicated.to_string()],
            vec!["Missing blocks".into(), r.missing.to_string()],
            vec!["Corrupt blocks".into(), r.corrupt.to_string()],
        ]
        .into_iter()
        .chain(open.then(|| {
            vec![
                "Open files".into(),
                r.files
                    .iter()
                    .filter(|f| f.under_construction)
                    .count()
                    .to_string(),
            ]
        }))
        .collect::<Vec<_>>(),
    );
    println!(
        "The filesystem under path '{path}' is {}",
        if r.healthy { "HEALTHY" } else { "CORRUPT" }
    );
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: super::AdminArgs,
    }

    fn parse(args: &[&str]) -> Result<super::AdminCmd, clap::Error> {
        let mut argv = vec!["hstack", "admin"];
        argv.extend(args);
        let argv = crate::dfs::hadoop_argv(argv.iter().map(Into::into).collect());
        T::try_parse_from(argv.into_iter().skip(1)).map(|t| t.a.cmd)
    }

    #[test]
    fn hdfs_spellings_parse() {
        T::command().debug_assert();
        assert!(matches!(
            parse(&["-report", "-live"]).unwrap(),
            super::AdminCmd::Report { live: true, .. }
        ));
        assert!(parse(&["report", "--live", "--dead"]).is_err());
        assert!(matches!(
            parse(&[
                "fsck",
                "/",
                "-files",
                "-blocks",
                "-locations",
                "-openforwrite"
            ])
            .unwrap(),
            super::AdminCmd::Fsck {
                files: true,
                blocks: true,
                locations: true,
                openforwrite: true,
                list_corruptfileblocks: false,
                ..
            }
        ));
        assert!(matches!(
            parse(&["-safemode", "wait"]).unwrap(),
            super::AdminCmd::Safemode { timeout: 300, .. }
        ));
    }
}
