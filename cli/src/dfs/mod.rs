//! `hstack dfs …`: the file system shell, with the verbs of `hdfs dfs` in
//! its spelling (`-ls`, `-copyFromLocal`, `-rm -r -skipTrash`: see
//! [`hadoop`]) or ours (`ls`, `put`, `rm -r`).
//!
//! Paths are HDFS's: relative ones resolve against the home directory
//! `/user/<name>`, `hdfs://host:port/path` names the namenode (it must be
//! the one the command talks to), and globs expand per component against
//! the namenode's listings ([`glob`]). Every argument is checked, and every
//! glob expanded, before anything is changed.

pub mod glob;
pub mod hadoop;
mod listing;
pub mod mode;
mod transfer;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{ArgAction, Args, Subcommand};
use hstack_dfs::client::{ClientOptions, CreateOptions, DfsClient};
use hstack_dfs::namespace::mode_string;
use hstack_dfs::{Code, FsError};
use hstack_proto::dfs as pb;
use serde_json::json;

use crate::output;

pub use hadoop::rewrite as hadoop_argv;

#[derive(Args, Clone, Debug)]
pub struct NnEndpoint {
    /// A local cluster directory (`hstack local up --dir`) to find the namenode in.
    #[arg(long, global = true, env = "HSTACK_CLUSTER")]
    pub cluster: Option<PathBuf>,
    /// The namenode's RPC address HOST:PORT (overrides --cluster). Without
    /// either, an hdfs://HOST:PORT/ path names it.
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

    /// Whether a flag or the environment names the namenode.
    pub fn explicit(&self) -> bool {
        self.namenode.is_some() || self.cluster.is_some()
    }

    pub fn options(&self) -> ClientOptions {
        let mut opts = ClientOptions::default();
        if let Some(u) = &self.user {
            opts.user = u.clone();
        }
        opts
    }

    pub async fn connect(&self) -> anyhow::Result<DfsClient> {
        Ok(DfsClient::connect(&self.address()?, self.options()).await?)
    }

    /// The namenode for a command whose file system paths are `args`:
    /// the flags' (or the environment's), else the first hdfs:// URI's,
    /// else the local cluster's. Every URI must name that namenode (host
    /// names resolved); one that names another is an error before
    /// anything is done.
    pub async fn address_for(&self, args: &[&str]) -> anyhow::Result<String> {
        let parsed = args
            .iter()
            .map(|a| glob::parse_arg(a))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let first_uri = parsed.iter().find_map(|p| p.authority.clone());
        let addr = match (self.explicit(), first_uri) {
            (false, Some(a)) => a,
            _ => self.address()?,
        };
        if parsed.iter().all(|p| p.authority.is_none()) {
            return Ok(addr);
        }
        let nn = resolve(&addr).await?;
        for (arg, p) in args.iter().zip(&parsed) {
            let Some(auth) = &p.authority else { continue };
            if auth == &addr {
                continue;
            }
            let theirs = resolve(auth).await?;
            if theirs.is_disjoint(&nn) {
                bail!(
                    "{arg}: names the namenode {auth}, not {addr} that this command uses \
                     (one command works on one file system; nothing was done)"
                );
            }
        }
        Ok(addr)
    }
}

async fn resolve(hostport: &str) -> anyhow::Result<HashSet<SocketAddr>> {
    let addrs = tokio::net::lookup_host(hostport)
        .await
        .with_context(|| format!("cannot resolve the namenode address {hostport}"))?;
    Ok(addrs.collect())
}

#[derive(Args)]
pub struct DfsArgs {
    #[command(flatten)]
    endpoint: NnEndpoint,
    /// Print JSON instead of human output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: DfsCmd,
}

#[derive(Subcommand)]
enum DfsCmd {
    /// List directories (or show files); `-ls` in Hadoop's spelling.
    #[command(disable_help_flag = true)]
    Ls {
        /// Recursively.
        #[arg(short = 'R')]
        recursive: bool,
        /// Directories as plain entries, not their contents.
        #[arg(short = 'd')]
        dirs: bool,
        /// Sizes for people (1.5 K, 128 M).
        #[arg(short = 'h')]
        human: bool,
        /// Newest first (by modification time).
        #[arg(short = 't', conflicts_with = "by_size")]
        by_time: bool,
        /// Largest first.
        #[arg(short = 'S')]
        by_size: bool,
        /// Reverse the order.
        #[arg(short = 'r')]
        reverse: bool,
        /// Access times instead of modification times (shown and sorted by).
        #[arg(short = 'u')]
        atime: bool,
        /// Paths only.
        #[arg(short = 'C')]
        paths_only: bool,
        #[arg(long, action = ArgAction::Help, help = "Print help")]
        help: Option<bool>,
        /// Default: the home directory.
        #[arg(default_value = ".")]
        paths: Vec<String>,
    },
    /// Create directories.
    Mkdir {
        /// Create missing parents; an existing directory is fine.
        #[arg(short = 'p')]
        parents: bool,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Copy local files (or `-` for stdin) into the file system: LOCAL… DST;
    /// `-copyFromLocal` too. With several sources DST must be a directory;
    /// with one and no DST, into the home directory.
    Put {
        /// Overwrite the destination if it exists.
        #[arg(short = 'f')]
        force: bool,
        /// Accepted for Hadoop's sake: files are written in place, never
        /// through a temporary name.
        #[arg(short = 'd')]
        direct: bool,
        /// Replicas per block (default: the namenode's).
        #[arg(long)]
        replication: Option<u32>,
        /// Block size, like 128m or 1g (default: the namenode's).
        #[arg(long, value_parser = parse_block_size)]
        block_size: Option<u64>,
        /// Never show the progress bar.
        #[arg(long)]
        quiet: bool,
        #[arg(required = true, value_name = "LOCAL… DST")]
        args: Vec<String>,
    },
    /// Copy files out to the local file system (or `-` for stdout): SRC…
    /// LOCAL; `-copyToLocal` too. With several sources LOCAL must be a
    /// directory; with one and no LOCAL, into the current directory.
    Get {
        /// Overwrite local files.
        #[arg(short = 'f')]
        force: bool,
        /// Accepted for Hadoop's sake (-ignoreCrc); checksums are always verified.
        #[arg(long)]
        ignore_crc: bool,
        #[arg(required = true, value_name = "SRC… LOCAL")]
        args: Vec<String>,
    },
    /// Concatenate files (directories: the files in them, by name) into one
    /// local file: SRC… LOCAL.
    Getmerge {
        /// A newline after each file.
        #[arg(long)]
        nl: bool,
        /// Leave out empty files (and their newline).
        #[arg(long)]
        skip_empty_file: bool,
        #[arg(required = true, num_args = 2.., value_name = "SRC… LOCAL")]
        args: Vec<String>,
    },
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
        /// Accepted for Hadoop's sake (-ignoreCrc); checksums are always verified.
        #[arg(long)]
        ignore_crc: bool,
    },
    /// Print the first kilobyte of files.
    Head {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Print the last kilobyte of a file (with -f, then what is appended,
    /// until interrupted).
    Tail {
        #[arg(short = 'f')]
        follow: bool,
        path: String,
    },
    /// Delete files or directories.
    Rm {
        /// Directories and everything in them.
        #[arg(short = 'r', short_alias = 'R')]
        recursive: bool,
        /// No error if the path does not exist.
        #[arg(short = 'f')]
        force: bool,
        /// Accepted for Hadoop's sake (-skipTrash): there is no trash,
        /// deletes are always immediate.
        #[arg(long)]
        skip_trash: bool,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Delete empty directories.
    Rmdir {
        /// Leave non-empty directories alone instead of failing.
        #[arg(long)]
        ignore_fail_on_non_empty: bool,
        #[arg(required = true)]
        dirs: Vec<String>,
    },
    /// Rename or move: SRC… DST (with several sources DST must be a directory).
    Mv {
        #[arg(required = true, num_args = 2.., value_name = "SRC… DST")]
        args: Vec<String>,
    },
    /// Copy files within the file system: SRC… DST (with several sources
    /// DST must be a directory).
    Cp {
        #[arg(short = 'f')]
        force: bool,
        #[arg(required = true, num_args = 2.., value_name = "SRC… DST")]
        args: Vec<String>,
    },
    /// Status of paths: a table, or `stat FORMAT PATH…` with Hadoop's
    /// %b %F %g %n %o %r %u %a %A %y %Y %x %X.
    Stat {
        #[arg(required = true, value_name = "[FORMAT] PATH…")]
        args: Vec<String>,
    },
    /// Space used.
    #[command(disable_help_flag = true)]
    Du {
        /// One total for each path instead of one line per entry.
        #[arg(short = 's')]
        summary: bool,
        /// Sizes for people (1.5 K, 128 M).
        #[arg(short = 'h')]
        human: bool,
        #[arg(long, action = ArgAction::Help, help = "Print help")]
        help: Option<bool>,
        /// Default: the home directory.
        #[arg(default_value = ".")]
        paths: Vec<String>,
    },
    /// DIR_COUNT FILE_COUNT CONTENT_SIZE PATHNAME of each path.
    #[command(disable_help_flag = true)]
    Count {
        /// Sizes for people.
        #[arg(short = 'h')]
        human: bool,
        /// A header line.
        #[arg(short = 'v')]
        header: bool,
        #[arg(long, action = ArgAction::Help, help = "Print help")]
        help: Option<bool>,
        #[arg(default_value = ".")]
        paths: Vec<String>,
    },
    /// Capacity, used and available space of the file system (from the
    /// datanode report, which only the superuser may read).
    #[command(disable_help_flag = true)]
    Df {
        /// Sizes for people.
        #[arg(short = 'h')]
        human: bool,
        #[arg(long, action = ArgAction::Help, help = "Print help")]
        help: Option<bool>,
        /// Accepted as Hadoop does (the whole file system is shown).
        paths: Vec<String>,
    },
    /// Change files' replication (a directory: every file below it).
    Setrep {
        /// Wait until every block has that many live replicas.
        #[arg(short = 'w')]
        wait: bool,
        /// Accepted for Hadoop's sake: directories are always recursive.
        #[arg(short = 'R')]
        recursive: bool,
        /// With -w, fail (TimedOut) after this many seconds.
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        timeout: u64,
        replication: u32,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Change permission bits: octal (644, 1777) or symbolic (u+x,go-w,
    /// a=r, +t, o-rwx, a+X).
    Chmod {
        /// Everything below directories too.
        #[arg(short = 'R')]
        recursive: bool,
        #[arg(allow_hyphen_values = true)]
        mode: String,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Change owner and/or group: OWNER, OWNER:GROUP or :GROUP.
    Chown {
        #[arg(short = 'R')]
        recursive: bool,
        owner: String,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Change the group.
    Chgrp {
        #[arg(short = 'R')]
        recursive: bool,
        group: String,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Create empty files (an existing empty file gets a new time).
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
        /// It is a file of more than zero bytes.
        #[arg(short = 's', group = "what")]
        non_empty: bool,
        /// It is a file of zero bytes.
        #[arg(short = 'z', group = "what")]
        zero: bool,
        path: String,
    },
    /// Find paths below PATH… whose name matches (`-name`, `-iname`).
    Find {
        /// Default: the home directory.
        #[arg(default_value = ".")]
        paths: Vec<String>,
        /// A glob the last component must match.
        #[arg(long, conflicts_with = "iname")]
        name: Option<String>,
        /// The same, ignoring case.
        #[arg(long)]
        iname: Option<String>,
        /// One path a line (the default).
        #[arg(long)]
        print: bool,
        /// Each path followed by a NUL instead of a newline.
        #[arg(long, conflicts_with = "print")]
        print0: bool,
    },
}

fn parse_block_size(s: &str) -> Result<u64, String> {
    output::parse_size(s)
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

/// The connected shell: the client, the home directory, the output mode.
pub(crate) struct Shell {
    c: DfsClient,
    nn: String,
    home: String,
    json: bool,
}

impl Shell {
    /// A path the command creates or names exactly (no globbing):
    /// absolute, normalized, escapes removed.
    fn target(&self, arg: &str) -> anyhow::Result<String> {
        let p = glob::parse_arg(arg)?;
        let abs = glob::absolute(&p.path, &self.home);
        Ok(abs
            .split('/')
            .map(glob::unescape)
            .collect::<Vec<_>>()
            .join("/"))
    }

    /// The paths that arguments name, globs expanded; every pattern is
    /// checked before the namenode is asked, and a glob that matches
    /// nothing is an error (`lenient`: left out).
    async fn sources(&self, args: &[String], lenient: bool) -> anyhow::Result<Vec<String>> {
        let mut abs = Vec::new();
        for a in args {
            let p = glob::parse_arg(a)?;
            let path = glob::absolute(&p.path, &self.home);
            glob::check(&path)?;
            abs.push((a, path));
        }
        let mut out = Vec::new();
        for (arg, path) in abs {
            let found = glob::expand(&self.c, &path).await?;
            if found.is_empty() && !lenient {
                return Err(glob::no_match(arg).into());
            }
            out.extend(found);
        }
        Ok(out)
    }

    /// The status of a path that must exist.
    async fn stat(&self, path: &str) -> anyhow::Result<pb::FileStatus> {
        match self.c.stat(path).await? {
            Some(s) => Ok(s),
            None => Err(not_found(path).into()),
        }
    }

    fn print_json(&self, v: &serde_json::Value) -> anyhow::Result<()> {
        output::json(v)
    }
}

/// HDFS's words for a path that is not there, as the file system's error.
fn not_found(path: &str) -> FsError {
    FsError::new(
        Code::FileNotFound,
        format!("`{path}': No such file or directory"),
    )
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Every entry below a directory (not itself), depth first, each
/// directory's entries in name order.
async fn walk(c: &DfsClient, dir: &str) -> anyhow::Result<Vec<pb::FileStatus>> {
    walk_sorted(c, dir, &|_| {}).await
}

/// The same, each directory's entries in the order `sort` puts them.
async fn walk_sorted(
    c: &DfsClient,
    dir: &str,
    sort: &dyn Fn(&mut [pb::FileStatus]),
) -> anyhow::Result<Vec<pb::FileStatus>> {
    let level = |mut v: Vec<pb::FileStatus>| {
        sort(&mut v);
        v.reverse();
        v
    };
    let mut out = Vec::new();
    let mut stack = vec![level(c.list(dir).await?)];
    while let Some(top) = stack.last_mut() {
        let Some(e) = top.pop() else {
            stack.pop();
            continue;
        };
        if e.is_dir {
            stack.push(level(c.list(&e.path).await?));
        }
        out.push(e);
    }
    Ok(out)
}

impl DfsCmd {
    /// Every file system path argument (for the choice of the namenode).
    fn fs_args(&self) -> Vec<&str> {
        fn v(x: &[String]) -> Vec<&str> {
            x.iter().map(String::as_str).collect()
        }
        match self {
            DfsCmd::Ls { paths, .. }
            | DfsCmd::Mkdir { paths, .. }
            | DfsCmd::Cat { paths, .. }
            | DfsCmd::Head { paths }
            | DfsCmd::Rm { paths, .. }
            | DfsCmd::Du { paths, .. }
            | DfsCmd::Count { paths, .. }
            | DfsCmd::Df { paths, .. }
            | DfsCmd::Setrep { paths, .. }
            | DfsCmd::Chmod { paths, .. }
            | DfsCmd::Chown { paths, .. }
            | DfsCmd::Chgrp { paths, .. }
            | DfsCmd::Touchz { paths }
            | DfsCmd::Find { paths, .. } => v(paths),
            DfsCmd::Rmdir { dirs, .. } => v(dirs),
            DfsCmd::Tail { path, .. } | DfsCmd::Test { path, .. } => vec![path.as_str()],
            DfsCmd::Mv { args } | DfsCmd::Cp { args, .. } => v(args),
            DfsCmd::Stat { args } => {
                let (_, paths) = stat_format(args);
                v(paths)
            }
            // The last argument is local.
            DfsCmd::Get { args, .. } | DfsCmd::Getmerge { args, .. } => {
                let n = if args.len() > 1 { args.len() - 1 } else { 1 };
                v(&args[..n])
            }
            // Only the last is the file system's.
            DfsCmd::Put { args, .. } => {
                if args.len() > 1 {
                    vec![args[args.len() - 1].as_str()]
                } else {
                    vec![]
                }
            }
        }
    }
}

/// `stat FORMAT PATH…` or `stat PATH…`.
fn stat_format(args: &[String]) -> (Option<&str>, &[String]) {
    if args.len() > 1 && args[0].contains('%') {
        (Some(&args[0]), &args[1..])
    } else {
        (None, args)
    }
}

pub async fn run(args: DfsArgs) -> anyhow::Result<()> {
    // Input that needs no namenode is checked first.
    let mode = match &args.cmd {
        DfsCmd::Chmod { mode, .. } => Some(mode::Mode::parse(mode)?),
        _ => None,
    };
    match &args.cmd {
        DfsCmd::Put { replication, .. } if *replication == Some(0) => {
            bail!("replication must be at least 1")
        }
        DfsCmd::Setrep { replication, .. } if *replication == 0 => {
            bail!("replication must be at least 1")
        }
        DfsCmd::Chown { owner, .. } if owner.is_empty() || owner == ":" => {
            bail!("chown: give OWNER, OWNER:GROUP or :GROUP")
        }
        DfsCmd::Chgrp { group, .. } if group.is_empty() => bail!("chgrp: give a GROUP"),
        DfsCmd::Test {
            exists,
            dir,
            file,
            non_empty,
            zero,
            ..
        } if !(*exists || *dir || *file || *non_empty || *zero) => {
            bail!("give one of -e, -d, -f, -s, -z")
        }
        _ => {}
    }
    let addr = args.endpoint.address_for(&args.cmd.fs_args()).await?;
    let c = DfsClient::connect(&addr, args.endpoint.options()).await?;
    let sh = Shell {
        home: format!("/user/{}", c.user()),
        c,
        nn: addr,
        json: args.json,
    };
    let json = sh.json;
    match args.cmd {
        DfsCmd::Ls {
            recursive,
            dirs,
            human,
            by_time,
            by_size,
            reverse,
            atime,
            paths_only,
            help: _,
            paths,
        } => {
            let o = listing::LsOptions {
                recursive,
                dirs,
                human,
                by_time,
                by_size,
                reverse,
                atime,
                paths_only,
            };
            listing::ls(&sh, &paths, &o).await
        }
        DfsCmd::Mkdir { parents, paths } => {
            let targets = paths
                .iter()
                .map(|p| sh.target(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for p in &targets {
                sh.c.mkdirs(p, 0, parents).await?;
            }
            if json {
                sh.print_json(&json!({ "created": targets }))?;
            }
            Ok(())
        }
        DfsCmd::Put {
            force,
            direct: _,
            replication,
            block_size,
            quiet,
            args,
        } => {
            let opts = CreateOptions {
                overwrite: force,
                replication: replication.unwrap_or(0),
                block_size: block_size.unwrap_or(0),
                ..Default::default()
            };
            transfer::put(&sh, &args, &opts, quiet).await
        }
        DfsCmd::Get { force, args, .. } => transfer::get(&sh, &args, force).await,
        DfsCmd::Getmerge {
            nl,
            skip_empty_file,
            args,
        } => transfer::getmerge(&sh, &args, nl, skip_empty_file).await,
        DfsCmd::Cat {
            paths,
            offset,
            length,
            ..
        } => transfer::cat(&sh, &paths, offset, length).await,
        DfsCmd::Head { paths } => transfer::head(&sh, &paths).await,
        DfsCmd::Tail { follow, path } => transfer::tail(&sh, &path, follow).await,
        DfsCmd::Rm {
            recursive,
            force,
            paths,
            ..
        } => {
            let found = sh.sources(&paths, force).await?;
            let mut deleted = Vec::new();
            for p in found {
                match sh.c.delete(&p, recursive).await {
                    Ok(()) => {
                        if !json {
                            println!("Deleted {p}");
                        }
                        deleted.push(p);
                    }
                    Err(e) if force && e.code == Code::FileNotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if json {
                sh.print_json(&json!({ "deleted": deleted }))?;
            }
            Ok(())
        }
        DfsCmd::Rmdir {
            ignore_fail_on_non_empty,
            dirs,
        } => {
            let found = sh.sources(&dirs, false).await?;
            let mut empty = Vec::new();
            let mut skipped = Vec::new();
            for d in found {
                let s = sh.stat(&d).await?;
                if !s.is_dir {
                    bail!("`{d}': Is not a directory (nothing was deleted)");
                }
                if !sh.c.list(&d).await?.is_empty() {
                    if ignore_fail_on_non_empty {
                        skipped.push(d);
                        continue;
                    }
                    bail!("`{d}': Directory is not empty (nothing was deleted)");
                }
                empty.push(d);
            }
            for d in &empty {
                sh.c.delete(d, false).await?;
            }
            if json {
                sh.print_json(&json!({ "deleted": empty, "not_empty": skipped }))?;
            }
            Ok(())
        }
        DfsCmd::Mv { args } => {
            let (srcs, dst) = args.split_at(args.len() - 1);
            let found = sh.sources(srcs, false).await?;
            let dst = sh.target(&dst[0])?;
            if found.len() > 1 {
                must_be_dir(&sh, &dst).await?;
            }
            let into_dir = matches!(sh.c.stat(&dst).await?, Some(s) if s.is_dir);
            let mut moved = Vec::new();
            for s in found {
                sh.c.rename(&s, &dst).await?;
                let to = if into_dir {
                    join(&dst, base_name(&s))
                } else {
                    dst.clone()
                };
                moved.push(json!({ "src": s, "dst": to }));
            }
            if json {
                sh.print_json(&json!(moved))?;
            }
            Ok(())
        }
        DfsCmd::Cp { force, args } => transfer::cp(&sh, &args, force).await,
        DfsCmd::Stat { args } => listing::stat(&sh, &args).await,
        DfsCmd::Du {
            summary,
            human,
            paths,
            ..
        } => listing::du(&sh, &paths, summary, human).await,
        DfsCmd::Count {
            human,
            header,
            paths,
            ..
        } => listing::count(&sh, &paths, human, header).await,
        DfsCmd::Df { human, .. } => listing::df(&sh, human).await,
        DfsCmd::Setrep {
            wait,
            timeout,
            replication,
            paths,
            ..
        } => setrep(&sh, &paths, replication, wait, timeout).await,
        DfsCmd::Chmod {
            recursive, paths, ..
        } => {
            let mode = mode.expect("parsed above");
            change(&sh, &paths, recursive, |s| {
                let to = mode.apply(s.permission, s.is_dir);
                Change::Mode(to)
            })
            .await
        }
        DfsCmd::Chown {
            recursive,
            owner,
            paths,
        } => {
            let (o, g) = owner.split_once(':').unwrap_or((&owner, ""));
            let (o, g) = (o.to_string(), g.to_string());
            change(&sh, &paths, recursive, |_| {
                Change::Owner(o.clone(), g.clone())
            })
            .await
        }
        DfsCmd::Chgrp {
            recursive,
            group,
            paths,
        } => {
            change(&sh, &paths, recursive, |_| {
                Change::Owner(String::new(), group.clone())
            })
            .await
        }
        DfsCmd::Touchz { paths } => {
            let targets = paths
                .iter()
                .map(|p| sh.target(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for p in &targets {
                match sh.c.stat(p).await? {
                    Some(s) if s.is_dir => bail!("`{p}': Is a directory (nothing was done)"),
                    Some(s) if s.len > 0 => {
                        bail!("`{p}': Not a zero-length file (nothing was done)")
                    }
                    _ => {}
                }
            }
            for p in &targets {
                match sh.c.stat(p).await? {
                    Some(_) => {
                        let now = hstack_dfs::namenode::now_ms();
                        sh.c.set_times(p, now, -1).await?;
                    }
                    None => {
                        sh.c.create(p, &CreateOptions::default())
                            .await?
                            .close()
                            .await?
                    }
                }
            }
            if json {
                sh.print_json(&json!({ "touched": targets }))?;
            }
            Ok(())
        }
        DfsCmd::Test {
            exists,
            dir,
            file,
            non_empty,
            zero,
            path,
        } => {
            let p = sh.target(&path)?;
            let s = sh.c.stat(&p).await?;
            let holds = match &s {
                None => false,
                Some(s) => {
                    exists
                        || (dir && s.is_dir)
                        || (file && !s.is_dir)
                        || (non_empty && !s.is_dir && s.len > 0)
                        || (zero && !s.is_dir && s.len == 0)
                }
            };
            if json {
                sh.print_json(&json!({ "path": p, "holds": holds }))?;
            }
            if holds {
                Ok(())
            } else {
                Err(ExitStatus(1).into())
            }
        }
        DfsCmd::Find {
            paths,
            name,
            iname,
            print0,
            ..
        } => listing::find(&sh, &paths, name.as_deref(), iname.as_deref(), print0).await,
    }
}

/// A directory that must be there (several sources go into it).
async fn must_be_dir(sh: &Shell, dst: &str) -> anyhow::Result<()> {
    match sh.c.stat(dst).await? {
        Some(s) if s.is_dir => Ok(()),
        Some(_) => bail!("`{dst}': Is not a directory (several sources need a directory; nothing was done)"),
        None => bail!("`{dst}': No such file or directory (several sources need a directory; nothing was done)"),
    }
}

enum Change {
    Mode(u32),
    /// Owner and group; an empty one stays as it is.
    Owner(String, String),
}

/// chmod, chown, chgrp: every path (and with `recursive` everything below
/// each directory) is found first, then changed.
async fn change(
    sh: &Shell,
    paths: &[String],
    recursive: bool,
    what: impl Fn(&pb::FileStatus) -> Change,
) -> anyhow::Result<()> {
    let found = sh.sources(paths, false).await?;
    let mut all = Vec::new();
    for p in &found {
        let s = sh.stat(p).await?;
        let dir = s.is_dir;
        all.push(s);
        if recursive && dir {
            all.extend(walk(&sh.c, p).await?);
        }
    }
    let mut changed = Vec::new();
    for s in &all {
        match what(s) {
            Change::Mode(m) => {
                sh.c.set_permission(&s.path, m).await?;
                changed.push(json!({ "path": s.path, "permission": format!("{m:o}") }));
            }
            Change::Owner(o, g) => {
                sh.c.set_owner(&s.path, &o, &g).await?;
                changed.push(json!({
                    "path": s.path,
                    "owner": if o.is_empty() { &s.owner } else { &o },
                    "group": if g.is_empty() { &s.group } else { &g },
                }));
            }
        }
    }
    if sh.json {
        sh.print_json(&json!({ "changed": changed }))?;
    }
    Ok(())
}

async fn setrep(
    sh: &Shell,
    paths: &[String],
    replication: u32,
    wait: bool,
    timeout: u64,
) -> anyhow::Result<()> {
    let found = sh.sources(paths, false).await?;
    let mut files = Vec::new();
    for p in &found {
        let s = sh.stat(p).await?;
        if s.is_dir {
            files.extend(
                walk(&sh.c, p)
                    .await?
                    .into_iter()
                    .filter(|e| !e.is_dir)
                    .map(|e| e.path),
            );
        } else {
            files.push(s.path);
        }
    }
    for f in &files {
        sh.c.set_replication(f, replication).await?;
        if !sh.json {
            println!("Replication {replication} set: {f}");
        }
    }
    let started = Instant::now();
    if wait {
        let limit = Duration::from_secs(timeout);
        match tokio::time::timeout(limit, wait_replication(&sh.c, &files, replication)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(FsError::new(
                    Code::TimedOut,
                    format!(
                        "setrep -w: not every block of {} reached {replication} replicas within \
                         {timeout}s (the new replication stays set; --timeout SECS waits longer)",
                        files.join(", ")
                    ),
                )
                .into())
            }
        }
    }
    if sh.json {
        sh.print_json(&json!({
            "replication": replication,
            "paths": files,
            "waited": wait,
            "seconds": started.elapsed().as_secs_f64(),
        }))?;
    }
    Ok(())
}

async fn wait_replication(c: &DfsClient, files: &[String], want: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    for path in files {
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
                break;
            }
            if std::io::stderr().is_terminal() {
                eprint!("\rwaiting for {path}: {short} block(s) not at {want} replicas\x1b[K");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!(
        "replication reached {want} for every block in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn ls_row(s: &pb::FileStatus, human: bool, atime: bool) -> Vec<String> {
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
        if human {
            output::human_short(s.len)
        } else {
            s.len.to_string()
        },
        output::date_minutes(if atime { s.atime_ms } else { s.mtime_ms }),
        s.path.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: DfsArgs,
    }

    fn parse(args: &[&str]) -> Result<DfsCmd, clap::Error> {
        let mut argv = vec!["hstack", "dfs"];
        argv.extend(args);
        let argv = hadoop::rewrite(argv.iter().map(Into::into).collect());
        T::try_parse_from(argv.into_iter().skip(1)).map(|t| t.a.cmd)
    }

    #[test]
    fn the_shell_parses_hadoop_spellings() {
        T::command().debug_assert();
        assert!(matches!(
            parse(&["-ls", "-h", "-d", "/x"]).unwrap(),
            DfsCmd::Ls {
                human: true,
                dirs: true,
                ..
            }
        ));
        assert!(matches!(
            parse(&["du", "-s", "-h"]).unwrap(),
            DfsCmd::Du {
                summary: true,
                human: true,
                ..
            }
        ));
        match parse(&["-chmod", "-R", "-w", "/a"]).unwrap() {
            DfsCmd::Chmod {
                recursive, mode, ..
            } => assert!(recursive && mode == "-w"),
            _ => panic!("chmod"),
        }
        assert!(matches!(
            parse(&["-rm", "-r", "-skipTrash", "/a"]).unwrap(),
            DfsCmd::Rm {
                recursive: true,
                skip_trash: true,
                ..
            }
        ));
        let e = parse(&["put", "--block-size", "9EB", "a", "/b"])
            .err()
            .expect("9EB is too large");
        assert!(e.to_string().contains("larger than"), "{e}");
        assert!(matches!(
            parse(&["put", "--block-size", "128m", "a", "/b"]).unwrap(),
            DfsCmd::Put { block_size: Some(n), .. } if n == 128 << 20
        ));
        assert!(parse(&["-ls", "--help"]).is_err(), "--help shows help");
    }
}
