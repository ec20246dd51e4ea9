//! `hstack zk …` and `hstack bench coord`: wiring from flags to the
//! coordination client, and human or `--json` output.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hstack_coord_client::{Acl, Client, ClientOptions, Code, CreateMode, EventKind, Stat};
use serde_json::json;

use crate::output;

#[derive(Args, Clone, Debug)]
pub struct Endpoints {
    /// A local cluster directory (`hstack local up --dir`) to find members in.
    #[arg(long, global = true, env = "HSTACK_CLUSTER")]
    pub cluster: Option<PathBuf>,
    /// Comma-separated member client addresses (overrides --cluster).
    #[arg(long, global = true, env = "HSTACK_COORD", value_delimiter = ',')]
    pub members: Option<Vec<String>>,
}

impl Endpoints {
    pub fn coord_members(&self) -> anyhow::Result<Vec<String>> {
        if let Some(m) = &self.members {
            if !m.is_empty() {
                return Ok(m.clone());
            }
        }
        let dir = self
            .cluster
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::local::DEFAULT_DIR));
        let cluster = crate::local::ClusterFile::load(&dir).with_context(|| {
            format!(
                "no coordination members: pass --members HOST:PORT,… or --cluster DIR (tried {})",
                dir.display()
            )
        })?;
        let members = cluster.addrs("coord", "client");
        if members.is_empty() {
            bail!("{} lists no coordination members", dir.display());
        }
        Ok(members)
    }
}

#[derive(Args)]
pub struct ZkArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Print JSON instead of human output.
    #[arg(long, global = true)]
    json: bool,
    /// Session timeout in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    session_timeout_ms: u64,
    /// Credentials for this command's session, `SCHEME:AUTH` (repeatable):
    /// `digest:user:password` is ZooKeeper's addauth, sent before the
    /// command runs (and on every reconnect).
    #[arg(long, global = true, env = "HSTACK_ZK_AUTH", value_delimiter = ',')]
    auth: Vec<String>,
    #[command(subcommand)]
    cmd: ZkCmd,
}

#[derive(Subcommand)]
enum ZkCmd {
    /// Create a znode.
    Create {
        /// Ephemeral: deleted when this command's session ends.
        #[arg(short = 'e')]
        ephemeral: bool,
        /// Sequential: a 10-digit counter is appended to the name.
        #[arg(short = 's')]
        sequential: bool,
        /// Container: deleted once its last child is.
        #[arg(short = 'c')]
        container: bool,
        /// TTL in milliseconds: deleted when childless and unmodified that long.
        #[arg(short = 't', value_name = "TTL_MS")]
        ttl: Option<u64>,
        /// Keep the session (and so an ephemeral node) until interrupted.
        #[arg(long)]
        wait: bool,
        path: String,
        /// The data as text; `-` reads it from standard input.
        #[arg(conflicts_with = "data_file")]
        data: Option<String>,
        /// The data from a file (binary safe).
        #[arg(long, value_name = "FILE")]
        data_file: Option<PathBuf>,
        /// The node's ACL, `scheme:id:perms` entries separated by commas
        /// (`digest:bob:HASH=:cdrwa,world:anyone:r`); default world:anyone:cdrwa.
        #[arg(long, value_delimiter = ',')]
        acl: Vec<String>,
    },
    /// Print a znode's ACL (table of scheme, id, permissions).
    #[command(name = "getAcl", alias = "get-acl")]
    GetAcl {
        /// Also print the stat.
        #[arg(short = 's')]
        stat: bool,
        path: String,
    },
    /// Replace a znode's ACL: `scheme:id:perms` entries separated by commas.
    #[command(name = "setAcl", alias = "set-acl")]
    SetAcl {
        /// Only if the ACL version (aclVersion) is this.
        #[arg(short = 'v', allow_hyphen_values = true)]
        version: Option<i32>,
        path: String,
        acl: String,
    },
    /// Prove an identity (`digest user:password`) and print the identities
    /// the session then holds. A session lasts one command: to act as that
    /// identity, give every command `--auth digest:user:password`.
    #[command(name = "addauth", alias = "add-auth")]
    Addauth { scheme: String, credentials: String },
    /// Print a znode's data (with -w, then wait for it to change). With
    /// --json, `data` is a string when the bytes are UTF-8, else
    /// `data_base64`.
    Get {
        #[arg(short = 'w')]
        watch: bool,
        /// Also print the stat.
        #[arg(short = 's')]
        stat: bool,
        /// With -w, fail (TimedOut) after this many seconds.
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        timeout: u64,
        path: String,
    },
    /// Set a znode's data.
    Set {
        #[arg(short = 'v', allow_hyphen_values = true)]
        version: Option<i32>,
        path: String,
        /// The data as text; `-` reads it from standard input.
        #[arg(required_unless_present = "data_file", conflicts_with = "data_file")]
        data: Option<String>,
        /// The data from a file (binary safe).
        #[arg(long, value_name = "FILE")]
        data_file: Option<PathBuf>,
    },
    /// Print a znode's stat (with -w, then wait for it to change).
    Stat {
        #[arg(short = 'w')]
        watch: bool,
        /// With -w, fail (TimedOut) after this many seconds.
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        timeout: u64,
        path: String,
    },
    /// List children (with -R, the whole subtree; with -s, the parent's
    /// stat too; with -w, then wait for a change).
    Ls {
        #[arg(short = 'R')]
        recursive: bool,
        #[arg(short = 'w')]
        watch: bool,
        /// Also print the stat of PATH.
        #[arg(short = 's')]
        stat: bool,
        /// With -w, fail (TimedOut) after this many seconds.
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        timeout: u64,
        path: String,
    },
    /// Wait until the member this command talks to has applied every
    /// change committed before (ZooKeeper's sync).
    Sync { path: String },
    /// Ephemeral znodes under PATH (default /) and the session that owns
    /// each. ZooKeeper's getEphemerals lists only its own session's
    /// (always none for a one-shot command); this lists every session's,
    /// by walking the tree.
    #[command(name = "getEphemerals", alias = "get-ephemerals")]
    GetEphemerals {
        #[arg(default_value = "/")]
        path: String,
    },
    /// Delete a znode (it must have no children).
    Delete {
        #[arg(short = 'v', allow_hyphen_values = true)]
        version: Option<i32>,
        path: String,
    },
    /// Delete a znode and everything below it.
    Deleteall { path: String },
    /// Stream every event on a path until interrupted.
    Watch {
        /// Also the events of every descendant.
        #[arg(short = 'R', long)]
        recursive: bool,
        path: String,
    },
    /// Join a leader election under DIR; print when elected, then hold
    /// leadership until interrupted.
    Elect {
        dir: String,
        /// What the leader publishes (for example its address).
        #[arg(long, default_value = "")]
        data: String,
    },
    /// The ensemble: leader, each member's role and last index.
    Members,
    /// Add a member (as a learner, then a voter unless --learner).
    AddMember {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        client_addr: String,
        #[arg(long, default_value = "")]
        http_addr: String,
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member from the ensemble.
    RemoveMember { id: u64 },
}

async fn connect(args: &ZkArgs) -> anyhow::Result<Client> {
    let mut opts = ClientOptions::new(args.endpoints.coord_members()?);
    opts.session_timeout = Duration::from_millis(args.session_timeout_ms);
    for a in &args.auth {
        let Some((scheme, auth)) = a.split_once(':') else {
            bail!("--auth {a:?}: expected SCHEME:AUTH, e.g. digest:user:password");
        };
        opts.auth.push((scheme.into(), auth.as_bytes().to_vec()));
    }
    Ok(Client::connect(opts).await?)
}

fn stat_rows(s: &Stat) -> Vec<(&'static str, String)> {
    vec![
        ("cZxid", format!("{:#x}", s.czxid)),
        ("ctime", crate::output::date_millis(s.ctime)),
        ("mZxid", format!("{:#x}", s.mzxid)),
        ("mtime", crate::output::date_millis(s.mtime)),
        ("pZxid", format!("{:#x}", s.pzxid)),
        ("cversion", s.cversion.to_string()),
        ("dataVersion", s.version.to_string()),
        ("aclVersion", s.aversion.to_string()),
        ("ephemeralOwner", format!("{:#x}", s.ephemeral_owner)),
        ("dataLength", s.data_length.to_string()),
        ("numChildren", s.num_children.to_string()),
    ]
}

fn stat_json(s: &Stat) -> serde_json::Value {
    json!({
        "czxid": s.czxid, "mzxid": s.mzxid, "pzxid": s.pzxid, "ctime": s.ctime, "mtime": s.mtime,
        "version": s.version, "cversion": s.cversion, "aversion": s.aversion,
        "ephemeral_owner": s.ephemeral_owner, "data_length": s.data_length, "num_children": s.num_children,
    })
}

fn print_stat(s: &Stat) {
    for (k, v) in stat_rows(s) {
        println!("{k} = {v}");
    }
}

pub async fn run(args: ZkArgs) -> anyhow::Result<()> {
    match &args.cmd {
        ZkCmd::Members => return members(&args).await,
        ZkCmd::AddMember {
            id,
            raft_addr,
            client_addr,
            http_addr,
            learner,
        } => {
            let m = hstack_coord_client::proto::MemberInfo {
                id: *id,
                raft_addr: raft_addr.clone(),
                client_addr: client_addr.clone(),
                http_addr: http_addr.clone(),
                ..Default::default()
            };
            let r = hstack_coord_client::add_member(&args.endpoints.coord_members()?, m, !learner)
                .await?;
            return print_members(&args, &r);
        }
        ZkCmd::RemoveMember { id } => {
            let r =
                hstack_coord_client::remove_member(&args.endpoints.coord_members()?, *id).await?;
            return print_members(&args, &r);
        }
        _ => {}
    }
    let client = connect(&args).await?;
    let res = run_with(&args, &client).await;
    let _ = client.close().await;
    res
}

async fn run_with(args: &ZkArgs, client: &Client) -> anyhow::Result<()> {
    let js = args.json;
    match &args.cmd {
        ZkCmd::Create {
            ephemeral,
            sequential,
            container,
            ttl,
            wait,
            path,
            data,
            data_file,
            acl,
        } => {
            let data = read_data(data.as_deref(), data_file.as_deref())?;
            let acl = acl
                .iter()
                .map(|a| Acl::parse(a))
                .collect::<Result<Vec<_>, _>>()?;
            let mode = match (ephemeral, sequential, container, ttl) {
                (true, _, true, _) | (true, _, _, Some(_)) | (_, _, true, Some(_)) => {
                    bail!("-e, -c and -t cannot be combined")
                }
                (_, true, true, _) => bail!("containers cannot be sequential"),
                (true, true, _, _) => CreateMode::EphemeralSequential,
                (true, false, _, _) => CreateMode::Ephemeral,
                (_, _, true, _) => CreateMode::Container,
                (_, true, _, Some(t)) => CreateMode::TtlSequential(Duration::from_millis(*t)),
                (_, false, _, Some(t)) => CreateMode::Ttl(Duration::from_millis(*t)),
                (_, true, _, None) => CreateMode::PersistentSequential,
                _ => CreateMode::Persistent,
            };
            let (created, stat) = if acl.is_empty() {
                client.create_with_stat(path, &data, mode).await?
            } else {
                client.create_with_acl(path, &data, mode, &acl).await?
            };
            if js {
                output::json(&json!({"path": created, "stat": stat_json(&stat)}))?;
            } else {
                println!("Created {created}");
            }
            if *wait {
                eprintln!(
                    "holding session {:#x}; Ctrl-C to end it",
                    client.session_id()
                );
                hold(client).await;
            } else if *ephemeral {
                eprintln!("note: the node is deleted when this command's session ends");
            }
        }
        ZkCmd::Elect { dir, data } => {
            let election = hstack_coord_client::LeaderElection::new(client.clone(), dir);
            eprintln!("campaigning in {dir} as session {:#x}", client.session_id());
            let lead = election.campaign(data.as_bytes()).await?;
            if js {
                output::json(&json!({"leader": true, "path": lead.path, "token": lead.token}))?;
            } else {
                println!("elected leader: {} token={}", lead.path, lead.token);
            }
            hold(client).await;
        }
        ZkCmd::Get {
            watch,
            stat,
            timeout,
            path,
        } => {
            let mut events = client.events();
            let (data, st) = client.get_data(path, *watch).await?;
            if js {
                let mut m = serde_json::Map::new();
                m.insert("path".into(), path.clone().into());
                output::put_data(&mut m, &data);
                m.insert("stat".into(), stat_json(&st));
                output::json(&m)?;
            } else {
                println!("{}", String::from_utf8_lossy(&data));
                if *stat {
                    print_stat(&st);
                }
            }
            if *watch {
                wait_event(&mut events, path, js, *timeout).await?;
            }
        }
        ZkCmd::Set {
            version,
            path,
            data,
            data_file,
        } => {
            let data = read_data(data.as_deref(), data_file.as_deref())?;
            let st = client.set_data(path, &data, *version).await?;
            if js {
                output::json(&json!({"path": path, "stat": stat_json(&st)}))?;
            } else {
                println!("Set {path} (version {})", st.version);
            }
        }
        ZkCmd::Stat {
            watch,
            timeout,
            path,
        } => {
            let mut events = client.events();
            match client.exists(path, *watch).await? {
                Some(st) if js => output::json(&json!({"path": path, "stat": stat_json(&st)}))?,
                Some(st) => print_stat(&st),
                None => bail!("{path} does not exist"),
            }
            if *watch {
                wait_event(&mut events, path, js, *timeout).await?;
            }
        }
        ZkCmd::Ls {
            recursive,
            watch,
            stat,
            timeout,
            path,
        } => {
            let mut events = client.events();
            let (names, st) = if *recursive {
                let st = if *stat {
                    client.exists(path, false).await?
                } else {
                    None
                };
                (walk(client, path).await?, st)
            } else {
                let (mut c, st) = client.get_children_with_stat(path, *watch).await?;
                c.sort();
                (c, Some(st))
            };
            let st = st.filter(|_| *stat);
            if js {
                let mut v = json!({"path": path, "children": names});
                if let Some(st) = &st {
                    v["stat"] = stat_json(st);
                }
                output::json(&v)?;
            } else {
                for n in &names {
                    println!("{n}");
                }
                if let Some(st) = &st {
                    print_stat(st);
                }
            }
            if *watch && !*recursive {
                wait_event(&mut events, path, js, *timeout).await?;
            }
        }
        ZkCmd::Sync { path } => {
            client.sync(path).await?;
            if js {
                output::json(&json!({"synced": path}))?;
            } else {
                println!("Synced {path}");
            }
        }
        ZkCmd::GetEphemerals { path } => {
            let mut found = Vec::new();
            let mut stack = vec![path.clone()];
            while let Some(p) = stack.pop() {
                let (mut children, st) = match client.get_children_with_stat(&p, false).await {
                    Ok(r) => r,
                    // Deleted while the walk went on.
                    Err(e) if e.code == Code::NoNode && p != *path => continue,
                    Err(e) => return Err(e.into()),
                };
                if st.ephemeral_owner != 0 {
                    found.push((p.clone(), st.ephemeral_owner));
                }
                children.sort();
                for c in children.into_iter().rev() {
                    stack.push(if p == "/" {
                        format!("/{c}")
                    } else {
                        format!("{p}/{c}")
                    });
                }
            }
            found.sort();
            if js {
                output::json(&json!(found
                    .iter()
                    .map(|(p, o)| json!({"path": p, "ephemeral_owner": o}))
                    .collect::<Vec<_>>()))?;
            } else {
                for (p, o) in &found {
                    println!("{p}\t{o:#x}");
                }
            }
        }
        ZkCmd::GetAcl { stat, path } => {
            let (acl, st) = client.get_acl(path).await?;
            if js {
                let entries: Vec<_> = acl
                    .iter()
                    .map(|a| json!({"scheme": a.scheme, "id": a.id, "perms": a.perm_letters(), "perms_bits": a.perms}))
                    .collect();
                output::json(&json!({"path": path, "acl": entries, "stat": stat_json(&st)}))?;
            } else {
                let rows: Vec<Vec<String>> = acl
                    .iter()
                    .map(|a| vec![a.scheme.clone(), a.id.clone(), a.perm_letters()])
                    .collect();
                output::table(&["scheme", "id", "perms"], &rows);
                if *stat {
                    print_stat(&st);
                }
            }
        }
        ZkCmd::SetAcl { version, path, acl } => {
            let acl = acl
                .split(',')
                .map(Acl::parse)
                .collect::<Result<Vec<_>, _>>()?;
            let st = client.set_acl(path, &acl, *version).await?;
            if js {
                output::json(&json!({"path": path, "stat": stat_json(&st)}))?;
            } else {
                println!("Set the ACL of {path} (aclVersion {})", st.aversion);
            }
        }
        ZkCmd::Addauth {
            scheme,
            credentials,
        } => {
            client.add_auth(scheme, credentials.as_bytes()).await?;
            let ids = client.who_am_i().await?;
            if js {
                let ids: Vec<_> = ids
                    .iter()
                    .map(|(s, i)| json!({"scheme": s, "id": i}))
                    .collect();
                output::json(&json!({"authenticated": true, "identities": ids}))?;
            } else {
                let rows: Vec<Vec<String>> = ids
                    .iter()
                    .map(|(s, i)| vec![s.clone(), i.clone()])
                    .collect();
                output::table(&["scheme", "id"], &rows);
            }
        }
        ZkCmd::Delete { version, path } => {
            client.delete(path, *version).await?;
            if js {
                output::json(&json!({"deleted": path}))?;
            } else {
                println!("Deleted {path}");
            }
        }
        ZkCmd::Deleteall { path } => {
            let mut all = walk(client, path).await?;
            all.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
            for p in all.iter().chain(std::iter::once(path)) {
                match client.delete(p, None).await {
                    Ok(()) => {}
                    Err(e) if e.code == Code::NoNode => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if js {
                output::json(&json!({"deleted": all.len() + 1}))?;
            } else {
                println!("Deleted {path} and {} descendants", all.len());
            }
        }
        ZkCmd::Watch { recursive, path } => {
            let mut events = client.events();
            client.add_watch(path, *recursive).await?;
            if !js {
                eprintln!(
                    "watching {path}{}; Ctrl-C to stop",
                    if *recursive { " and below" } else { "" }
                );
            }
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(ev) => print_event(&ev, js)?,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => eprintln!("warning: missed {n} events"),
                        Err(_) => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        ZkCmd::Members | ZkCmd::AddMember { .. } | ZkCmd::RemoveMember { .. } => {
            bail!("internal: membership commands are handled before connecting")
        }
    }
    Ok(())
}

/// Keeps the session open until Ctrl-C, SIGTERM or the session ends.
async fn hold(client: &Client) {
    let mut events = client.events();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) if ev.kind == EventKind::Expired => {
                    eprintln!("session expired");
                    return;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                _ => {}
            },
            _ = tokio::signal::ctrl_c() => return,
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => return,
        }
    }
}

fn print_event(ev: &hstack_coord_client::WatchedEvent, js: bool) -> anyhow::Result<()> {
    if js {
        println!("{}", serde_json::to_string(ev)?);
    } else {
        println!("{:?} {} zxid={:#x}", ev.kind, ev.path, ev.zxid);
    }
    Ok(())
}

async fn wait_event(
    events: &mut tokio::sync::broadcast::Receiver<hstack_coord_client::WatchedEvent>,
    path: &str,
    js: bool,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    if !js {
        eprintln!("waiting for a change to {path}…");
    }
    let wait = async {
        loop {
            let ev = events.recv().await?;
            if ev.path == path || ev.kind == EventKind::Expired {
                return print_event(&ev, js);
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(timeout_secs), wait).await {
        Ok(r) => r,
        Err(_) => Err(hstack_proto::Error::new(
            hstack_proto::Code::TimedOut,
            format!("{path} did not change within {timeout_secs}s (--timeout SECS waits longer)"),
        )
        .into()),
    }
}

/// A znode's data: text, `-` for standard input, or a file's bytes.
fn read_data(text: Option<&str>, file: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    if let Some(f) = file {
        return std::fs::read(f).with_context(|| format!("cannot read {}", f.display()));
    }
    match text {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("cannot read the data from standard input")?;
            Ok(buf)
        }
        Some(t) => Ok(t.as_bytes().to_vec()),
        None => Ok(Vec::new()),
    }
}

/// Every path below `root` (not `root` itself), parents before children.
async fn walk(client: &Client, root: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_string()];
    while let Some(p) = stack.pop() {
        let mut children = client.get_children(&p, false).await?;
        children.sort();
        for c in children.into_iter().rev() {
            let full = if p == "/" {
                format!("/{c}")
            } else {
                format!("{p}/{c}")
            };
            stack.push(full.clone());
            out.push(full);
        }
    }
    out.sort();
    Ok(out)
}

async fn members(args: &ZkArgs) -> anyhow::Result<()> {
    let mut r = hstack_coord_client::members(&args.endpoints.coord_members()?).await?;
    // Ask every member for its own state: role and last applied index.
    for m in &mut r.members {
        let own = tokio::time::timeout(
            Duration::from_secs(2),
            hstack_coord_client::members_of(&m.client_addr),
        )
        .await;
        match own {
            Ok(Ok(o)) => {
                m.last_index = o.last_applied;
                if let Some(me) = o.members.iter().find(|x| x.id == m.id) {
                    m.role = me.role.clone();
                }
            }
            _ => {
                m.role = "unreachable".into();
                m.last_index = 0;
            }
        }
    }
    print_members(args, &r)
}

fn print_members(
    args: &ZkArgs,
    r: &hstack_coord_client::proto::MembersReply,
) -> anyhow::Result<()> {
    if args.json {
        let members: Vec<_> = r
            .members
            .iter()
            .map(|m| {
                json!({"id": m.id, "role": m.role, "voter": m.voter, "last_applied": m.last_index,
                       "client_addr": m.client_addr, "raft_addr": m.raft_addr, "http_addr": m.http_addr})
            })
            .collect();
        return output::json(
            &json!({"leader": r.leader_id, "term": r.term, "responder": r.responder_id,
                                    "last_applied": r.last_applied, "last_zxid": r.last_zxid, "members": members}),
        );
    }
    println!(
        "leader {} · term {} · answered by member {} (applied {}, zxid {:#x})",
        if r.leader_id == 0 {
            "none".to_string()
        } else {
            r.leader_id.to_string()
        },
        r.term,
        r.responder_id,
        r.last_applied,
        r.last_zxid
    );
    let rows: Vec<Vec<String>> = r
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.role.clone(),
                if m.voter { "yes" } else { "no" }.into(),
                m.last_index.to_string(),
                m.client_addr.clone(),
                m.raft_addr.clone(),
                m.http_addr.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "id",
            "role",
            "voter",
            "last applied",
            "client",
            "raft",
            "http",
        ],
        &rows,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: super::ZkArgs,
    }

    fn parse(args: &[&str]) -> Result<super::ZkCmd, clap::Error> {
        T::try_parse_from(std::iter::once("zk").chain(args.iter().copied())).map(|t| t.a.cmd)
    }

    #[test]
    fn new_commands_parse() {
        T::command().debug_assert();
        assert!(matches!(
            parse(&["getEphemerals"]).unwrap(),
            super::ZkCmd::GetEphemerals { path } if path == "/"
        ));
        assert!(matches!(
            parse(&["ls", "-s", "/a"]).unwrap(),
            super::ZkCmd::Ls { stat: true, .. }
        ));
        assert!(matches!(
            parse(&["stat", "-w", "/a"]).unwrap(),
            super::ZkCmd::Stat {
                watch: true,
                timeout: 600,
                ..
            }
        ));
        assert!(parse(&["set", "/a", "--data-file", "f"]).is_ok());
        assert!(parse(&["set", "/a", "-"]).is_ok());
        assert!(parse(&["set", "/a"]).is_err(), "data or --data-file");
        assert!(parse(&["set", "/a", "x", "--data-file", "f"]).is_err());
    }
}
