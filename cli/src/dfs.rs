//! `hstack dfs …`: the file system shell, with the verbs of `hdfs dfs`.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hstack_dfs::client::{ClientOptions, CreateOptions, DfsClient};
use hstack_dfs::namespace::mode_string;
use hstack_dfs::Code;
use hstack_proto::dfs as pb;
use serde_json::json;

use crate::output;

#[derive(Args, Clone, Debug)]
pub struct NnEndpoint {
    /// A local cluster directory (`hstack local up --dir`) to find the namenode in.
    #[arg(long, global = true, env = "HSTACK_CLUSTER")]
    pub cluster: Option<PathBuf>,
    /// The namenode's RPC address HOST:PORT (overrides --cluster).
    #[arg(long, global = true, env = "HSTACK_NAMENODE")]
    pub namenode: Option<String>,
    /// Run as this user (default: $HSTACK_USER, else $USER).
    #[arg(long, global = true)]
    pub user: Option<String>,
}

impl NnEndpoint {
    pub fn address(&self) -> anyhow::Result<String> {
        if let Some(a) = &self.namenode {
            return Ok(a.clone());
        }
        let dir = self
            .cluster
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::local::DEFAULT_DIR));
        let cluster = crate::local::ClusterFile::load(&dir).with_context(|| {
            format!(
                "no namenode: pass --namenode HOST:PORT or --cluster DIR (tried {})",
                dir.display()
            )
        })?;
        cluster
            .addrs("namenode", "rpc")
            .into_iter()
            .next()
            .with_context(|| format!("{} lists no namenode", dir.display()))
    }

    pub async fn connect(&self) -> anyhow::Result<DfsClient> {
        let mut opts = ClientOptions::default();
        if let Some(u) = &self.user {
            opts.user = u.clone();
        }
        Ok(DfsClient::connect(&self.address()?, opts).await?)
    }
}

#[derive(Args)]
pub struct DfsArgs {
    #[command(flatten)]
    endpoint: NnEndpoint,
    /// Print JSON instead of human output (where the output is data).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: DfsCmd,
}

#[derive(Subcommand)]
enum DfsCmd {
    /// List a directory (or show a file).
    Ls {
        /// Recursively.
        #[arg(short = 'R')]
        recursive: bool,
        #[arg(default_value = "/")]
        path: String,
    },
    /// Create directories.
    Mkdir {
        /// Create missing parents; an existing directory is fine.
        #[arg(short = 'p')]
        parents: bool,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Copy a local file (or `-` for stdin) into the file system.
    Put {
        /// Overwrite the destination if it exists.
        #[arg(short = 'f')]
        force: bool,
        /// Replicas per block (default: the namenode's).
        #[arg(long)]
        replication: Option<u32>,
        /// Block size in bytes (default: the namenode's).
        #[arg(long)]
        block_size: Option<u64>,
        /// Never show the progress bar.
        #[arg(long)]
        quiet: bool,
        local: PathBuf,
        dst: String,
    },
    /// Copy a file out to the local file system (or `-` for stdout).
    Get { src: String, local: PathBuf },
    /// Print files.
    Cat {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Start at this byte offset (past the end is an error).
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Print at most this many bytes.
        #[arg(long)]
        length: Option<u64>,
    },
    /// Print the last kilobyte of a file.
    Tail { path: String },
    /// Delete files or directories.
    Rm {
        /// Directories and everything in them.
        #[arg(short = 'r', short_alias = 'R')]
        recursive: bool,
        /// No error if the path does not exist.
        #[arg(short = 'f')]
        force: bool,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Rename or move.
    Mv { src: String, dst: String },
    /// Copy a file within the file system.
    Cp {
        #[arg(short = 'f')]
        force: bool,
        src: String,
        dst: String,
    },
    /// Status of a path.
    Stat { path: String },
    /// Space used.
    Du {
        /// One total for each path instead of one line per entry.
        #[arg(short = 's')]
        summary: bool,
        #[arg(default_value = "/")]
        path: String,
    },
    /// Change a file's replication.
    Setrep {
        /// Wait until every block has that many live replicas.
        #[arg(short = 'w')]
        wait: bool,
        replication: u32,
        path: String,
    },
    /// Change permission bits (octal, like 644 or 1777).
    Chmod { mode: String, path: String },
    /// Change owner and/or group: OWNER, OWNER:GROUP or :GROUP.
    Chown { owner: String, path: String },
    /// Create empty files.
    Touchz {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Exit 0 if the test holds, 1 if not.
    Test {
        /// The path exists.
        #[arg(short = 'e', group = "what")]
        exists: bool,
        /// It is a directory.
        #[arg(short = 'd', group = "what")]
        dir: bool,
        /// It is a file.
        #[arg(short = 'f', group = "what")]
        file: bool,
        path: String,
    },
}

/// Ends the command with this exit code and no message (`dfs test`).
#[derive(Debug)]
pub struct ExitStatus(pub u8);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

pub fn status_json(s: &pb::FileStatus) -> serde_json::Value {
    json!({
        "path": s.path,
        "type": if s.is_dir { "directory" } else { "file" },
        "length": s.len,
        "replication": s.replication,
        "block_size": s.block_size,
        "modification_time_ms": s.mtime_ms,
        "access_time_ms": s.atime_ms,
        "permission": format!("{:o}", s.permission),
        "owner": s.owner,
        "group": s.group,
        "inode": s.inode_id,
        "children": s.children,
        "under_construction": s.under_construction,
    })
}

fn ls_row(s: &pb::FileStatus) -> Vec<String> {
    vec![
        format!(
            "{}{}",
            if s.is_dir { 'd' } else { '-' },
            mode_string(s.permission as u16)
        ),
        if s.is_dir {
            "-".into()
        } else {
            s.replication.to_string()
        },
        s.owner.clone(),
        s.group.clone(),
        s.len.to_string(),
        crate::output::date_minutes(s.mtime_ms),
        s.path.clone(),
    ]
}

pub async fn run(args: DfsArgs) -> anyhow::Result<()> {
    let c = args.endpoint.connect().await?;
    let json = args.json;
    match args.cmd {
        DfsCmd::Ls { recursive, path } => ls(&c, &path, recursive, json).await,
        DfsCmd::Mkdir { parents, paths } => {
            for p in paths {
                c.mkdirs(&p, 0, parents).await?;
            }
            Ok(())
        }
        DfsCmd::Put {
            force,
            replication,
            block_size,
            quiet,
            local,
            dst,
        } => {
            if replication == Some(0) {
                bail!("replication must be at least 1");
            }
            let opts = CreateOptions {
                overwrite: force,
                replication: replication.unwrap_or(0),
                block_size: block_size.unwrap_or(0),
                ..Default::default()
            };
            put(&c, &local, &dst, &opts, quiet).await
        }
        DfsCmd::Get { src, local } => get(&c, &src, &local).await,
        DfsCmd::Cat {
            paths,
            offset,
            length,
        } => {
            for p in paths {
                cat(&c, &p, offset, length).await?;
            }
            Ok(())
        }
        DfsCmd::Tail { path } => {
            let mut r = c.open(&path).await?;
            r.seek(r.len().saturating_sub(1024))?;
            copy_out(&mut r, u64::MAX).await
        }
        DfsCmd::Rm {
            recursive,
            force,
            paths,
        } => {
            for p in paths {
                match c.delete(&p, recursive).await {
                    Ok(()) => {
                        if !json {
                            println!("Deleted {p}");
                        }
                    }
                    Err(e) if force && e.code == Code::FileNotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        }
        DfsCmd::Mv { src, dst } => Ok(c.rename(&src, &dst).await?),
        DfsCmd::Cp { force, src, dst } => cp(&c, &src, &dst, force).await,
        DfsCmd::Stat { path } => {
            let s = c
                .stat(&path)
                .await?
                .with_context(|| format!("{path}: No such file or directory"))?;
            if json {
                return output::json(&status_json(&s));
            }
            output::table(
                &["key", "value"],
                &[
                    vec!["path".into(), s.path.clone()],
                    vec![
                        "type".into(),
                        if s.is_dir { "directory" } else { "file" }.into(),
                    ],
                    vec!["length".into(), s.len.to_string()],
                    vec!["replication".into(), s.replication.to_string()],
                    vec!["block size".into(), s.block_size.to_string()],
                    vec![
                        "permission".into(),
                        format!("{:o} ({})", s.permission, mode_string(s.permission as u16)),
                    ],
                    vec!["owner".into(), s.owner.clone()],
                    vec!["group".into(), s.group.clone()],
                    vec!["modified".into(), crate::output::date_minutes(s.mtime_ms)],
                    vec!["accessed".into(), crate::output::date_minutes(s.atime_ms)],
                    vec!["being written".into(), s.under_construction.to_string()],
                ],
            );
            Ok(())
        }
        DfsCmd::Du { summary, path } => du(&c, &path, summary, json).await,
        DfsCmd::Setrep {
            wait,
            replication,
            path,
        } => {
            c.set_replication(&path, replication).await?;
            if !json {
                println!("Replication {replication} set: {path}");
            }
            if wait {
                wait_replication(&c, &path, replication).await?;
            }
            Ok(())
        }
        DfsCmd::Chmod { mode, path } => {
            let m = u32::from_str_radix(&mode, 8)
                .ok()
                .filter(|m| *m <= 0o1777)
                .with_context(|| format!("mode {mode:?}: expected octal bits like 644 or 1777"))?;
            Ok(c.set_permission(&path, m).await?)
        }
        DfsCmd::Chown { owner, path } => {
            let (o, g) = owner.split_once(':').unwrap_or((&owner, ""));
            Ok(c.set_owner(&path, o, g).await?)
        }
        DfsCmd::Touchz { paths } => {
            for p in paths {
                match c.stat(&p).await? {
                    Some(s) if s.len > 0 => bail!("{p}: not a zero-length file"),
                    Some(_) => {
                        let now = hstack_dfs::namenode::now_ms();
                        c.set_times(&p, now, -1).await?;
                    }
                    None => {
                        c.create(&p, &CreateOptions::default())
                            .await?
                            .close()
                            .await?
                    }
                }
            }
            Ok(())
        }
        DfsCmd::Test {
            exists,
            dir,
            file,
            path,
        } => {
            if !(exists || dir || file) {
                bail!("give one of -e, -d, -f");
            }
            let s = c.stat(&path).await?;
            let holds = match s {
                None => false,
                Some(s) => exists || (dir && s.is_dir) || (file && !s.is_dir),
            };
            if holds {
                Ok(())
            } else {
                Err(ExitStatus(1).into())
            }
        }
    }
}

async fn ls(c: &DfsClient, path: &str, recursive: bool, json: bool) -> anyhow::Result<()> {
    let mut all = Vec::new();
    let mut stack = vec![path.to_string()];
    while let Some(p) = stack.pop() {
        let entries = c.list(&p).await?;
        if recursive {
            for e in entries.iter().rev() {
                if e.is_dir {
                    stack.push(e.path.clone());
                }
            }
        }
        all.extend(entries);
        if recursive {
            // Directories first-seen order: keep a tree-like listing.
            all.sort_by(|a, b| a.path.cmp(&b.path));
        }
    }
    if json {
        return output::json(&all.iter().map(status_json).collect::<Vec<_>>());
    }
    if !recursive {
        println!("Found {} items", all.len());
    }
    let rows: Vec<Vec<String>> = all.iter().map(ls_row).collect();
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        println!(
            "{:<w0$} {:>w1$} {:<w2$} {:<w3$} {:>w4$} {} {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    }
    Ok(())
}

async fn put(
    c: &DfsClient,
    local: &std::path::Path,
    dst: &str,
    opts: &CreateOptions,
    quiet: bool,
) -> anyhow::Result<()> {
    // `put FILE DIR` puts FILE inside DIR, as hdfs dfs does.
    let mut dst = dst.to_string();
    if let Some(s) = c.stat(&dst).await? {
        if s.is_dir {
            let name = local
                .file_name()
                .filter(|_| local.as_os_str() != "-")
                .with_context(|| format!("{dst} is a directory; name the destination file"))?;
            dst = format!("{}/{}", dst.trim_end_matches('/'), name.to_string_lossy());
        }
    }
    let (mut input, total): (Box<dyn Read>, Option<u64>) = if local.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(local)
            .with_context(|| format!("cannot open {}", local.display()))?;
        let len = f.metadata()?.len();
        (Box::new(f), Some(len))
    };
    let mut w = c.create(&dst, opts).await?;
    let progress = crate::output::progress(&format!("put {dst}"), total, quiet);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n]).await?;
        progress.set_position(w.written());
    }
    w.close().await?;
    progress.finish_and_clear();
    Ok(())
}

async fn get(c: &DfsClient, src: &str, local: &std::path::Path) -> anyhow::Result<()> {
    let mut r = c.open(src).await?;
    let mut out: Box<dyn Write> = if local.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        let target = if local.is_dir() {
            local.join(src.rsplit('/').next().unwrap_or("file"))
        } else {
            local.to_path_buf()
        };
        if target.exists() {
            bail!("{}: file exists", target.display());
        }
        // Written beside the target and renamed: no half file on failure.
        let tmp = target.with_extension("hstack-get.tmp");
        let f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let progress = crate::output::progress(&format!("get {src}"), Some(r.len()), false);
        while let Some(b) = r.read_chunk().await? {
            w.write_all(&b)?;
            progress.set_position(r.pos());
        }
        w.flush()?;
        drop(w);
        progress.finish_and_clear();
        std::fs::rename(&tmp, &target)?;
        return Ok(());
    };
    while let Some(b) = r.read_chunk().await? {
        out.write_all(&b)?;
    }
    out.flush()?;
    Ok(())
}

async fn cat(c: &DfsClient, path: &str, offset: u64, length: Option<u64>) -> anyhow::Result<()> {
    let mut r = c.open(path).await?;
    r.seek(offset)?;
    copy_out(&mut r, length.unwrap_or(u64::MAX)).await
}

/// Copies at most `left` bytes from the reader's position to stdout.
async fn copy_out(r: &mut hstack_dfs::client::FileReader, mut left: u64) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    while left > 0 {
        let Some(b) = r.read_chunk().await? else {
            break;
        };
        let n = (b.len() as u64).min(left) as usize;
        out.write_all(&b[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

async fn cp(c: &DfsClient, src: &str, dst: &str, force: bool) -> anyhow::Result<()> {
    let s = c
        .stat(src)
        .await?
        .with_context(|| format!("{src}: No such file or directory"))?;
    if s.is_dir {
        bail!("{src}: is a directory (cp copies files)");
    }
    let mut r = c.open(src).await?;
    let mut w = c
        .create(
            dst,
            &CreateOptions {
                overwrite: force,
                replication: s.replication,
                block_size: s.block_size,
                ..Default::default()
            },
        )
        .await?;
    while let Some(b) = r.read_chunk().await? {
        w.write(&b).await?;
    }
    w.close().await?;
    Ok(())
}

async fn du(c: &DfsClient, path: &str, summary: bool, json: bool) -> anyhow::Result<()> {
    let targets: Vec<String> = if summary {
        vec![path.to_string()]
    } else {
        c.list(path).await?.into_iter().map(|s| s.path).collect()
    };
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for t in targets {
        let s = c.content_summary(&t).await?;
        rows.push(vec![
            s.length.to_string(),
            s.space_consumed.to_string(),
            t.clone(),
        ]);
        items.push(json!({
            "path": t,
            "length": s.length,
            "space_consumed": s.space_consumed,
            "files": s.files,
            "directories": s.directories,
        }));
    }
    if json {
        return output::json(&items);
    }
    output::table(&["size", "disk space consumed", "path"], &rows);
    Ok(())
}

async fn wait_replication(c: &DfsClient, path: &str, want: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let lbs = c.block_locations(path, 0, 0).await?;
        // Exactly `want`, as `hdfs dfs -setrep -w`: lowering the
        // replication waits until the excess replicas are gone too.
        let short = lbs
            .blocks
            .iter()
            .filter(|b| b.locs.len() as u32 != want)
            .count();
        if short == 0 {
            eprintln!(
                "replication reached {want} for every block of {path} in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if std::io::stderr().is_terminal() {
            eprint!("\rwaiting for {path}: {short} block(s) not at {want} replicas\x1b[K");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
