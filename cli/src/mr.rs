//! `hstack mr …`: MapReduce jobs — built-in ones (`run`), Hadoop
//! Streaming (`streaming`), and following jobs (`list`, `status`,
//! `counters`, `kill`). Jobs run on the cluster (through the resource
//! manager) or, with `--local`, in this process against local files. The
//! master and task processes (`am`, `task`) are started by node managers.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use hstack_mapreduce::counters::Counters;
use hstack_mapreduce::history::JobInfo;
use hstack_mapreduce::jobs::{self, grep, tera};
use hstack_mapreduce::local::{self, JobProgress};
use hstack_mapreduce::{client, conf, JobSpec};
use hstack_scheduler::client::RmClient;

use crate::dfs::NnEndpoint;
use crate::output;
use crate::yarn::RmEndpoint;

/// Where the cluster is.
#[derive(Args, Clone)]
pub struct MrEndpoint {
    /// A local cluster directory (`hstack local up --dir`).
    #[arg(long, global = true, env = "HSTACK_CLUSTER")]
    cluster: Option<PathBuf>,
    /// The namenode's RPC address HOST:PORT (overrides --cluster).
    #[arg(long, global = true, env = "HSTACK_NAMENODE")]
    namenode: Option<String>,
    /// The resource manager's RPC address HOST:PORT (overrides --cluster).
    #[arg(long = "rm", global = true, env = "HSTACK_RM")]
    rm: Option<String>,
    /// Run as this user (default: $HSTACK_USER, else $USER).
    #[arg(long, global = true)]
    user: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

impl MrEndpoint {
    fn nn(&self) -> NnEndpoint {
        NnEndpoint {
            cluster: self.cluster.clone(),
            namenode: self.namenode.clone(),
            user: self.user.clone(),
        }
    }
    fn rm(&self) -> anyhow::Result<RmClient> {
        Ok(RmClient::new(&self.rm_address()?)?)
    }
    pub fn namenode_address(&self) -> anyhow::Result<String> {
        self.nn().address()
    }
    pub fn rm_address(&self) -> anyhow::Result<String> {
        RmEndpoint::new(self.cluster.clone(), self.rm.clone(), self.json).address()
    }
    pub fn json(&self) -> bool {
        self.json
    }
    pub fn user(&self) -> String {
        self.user
            .clone()
            .or_else(|| std::env::var("HSTACK_USER").ok())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "hstack".into())
    }
}

#[derive(Args)]
pub struct MrArgs {
    #[command(flatten)]
    at: MrEndpoint,
    #[command(subcommand)]
    cmd: MrCmd,
}

#[derive(Args)]
struct RunArgs {
    /// The built-in job (`hstack mr jobs` lists them).
    job: String,
    /// INPUT… OUTPUT (teragen: OUTPUT only).
    #[arg(required = true)]
    paths: Vec<String>,
    /// Run in this process against local files (for debugging).
    #[arg(long)]
    local: bool,
    /// A job setting, Hadoop's names (`-D mapreduce.job.reduces=4`).
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    define: Vec<String>,
    /// Reduce tasks (mapreduce.job.reduces).
    #[arg(long)]
    reduces: Option<u32>,
    /// grep: the regular expression.
    #[arg(long)]
    pattern: Option<String>,
    /// grep: the capture group to count (0: the whole match).
    #[arg(long)]
    group: Option<u32>,
    /// teragen: rows (100-byte records) to write.
    #[arg(long)]
    rows: Option<u64>,
    /// teragen, randomtext: map tasks (each writes one file).
    #[arg(long)]
    maps: Option<u32>,
    /// randomtext: bytes of text to write (`100m`, `1g`).
    #[arg(long, value_parser = output::parse_size)]
    size: Option<u64>,
    /// teravalidate: TeraGen's output, whose checksum the sorted data must
    /// have.
    #[arg(long)]
    expect: Option<String>,
    /// --local: tasks run at once (default: the CPUs).
    #[arg(long)]
    parallel: Option<usize>,
    /// The scheduler queue.
    #[arg(long)]
    queue: Option<String>,
    /// The job's name.
    #[arg(long)]
    name: Option<String>,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
    /// Submit and return (cluster only).
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand)]
enum MrCmd {
    /// Run a built-in job: `hstack mr run wordcount IN… OUT`.
    Run(Box<RunArgs>),
    /// A Hadoop Streaming job: `-input -output -mapper -reducer …` (and
    /// `--local`, `--quiet`, `--no-wait`).
    Streaming {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The built-in jobs.
    Jobs,
    /// MapReduce jobs the resource manager knows.
    List,
    /// A job's state, progress and tasks.
    Status { job: String },
    /// A job's counters.
    Counters { job: String },
    /// Kill a running job (its output is discarded).
    Kill { job: String },
    /// (started by the resource manager) a job's application master.
    #[command(hide = true)]
    Am,
    /// (started by an application master) one task attempt.
    #[command(hide = true)]
    Task,
}

pub async fn run(args: MrArgs) -> anyhow::Result<()> {
    let at = args.at;
    match args.cmd {
        MrCmd::Run(r) => run_job(&at, *r).await,
        MrCmd::Streaming { args } => streaming(&at, args).await,
        MrCmd::Jobs => {
            let rows: Vec<Vec<String>> = jobs::BUILT_IN
                .iter()
                .map(|(n, w)| vec![n.to_string(), w.to_string()])
                .collect();
            if at.json {
                return output::json(
                    &jobs::BUILT_IN
                        .iter()
                        .map(|(n, w)| serde_json::json!({"job": n, "about": w}))
                        .collect::<Vec<_>>(),
                );
            }
            output::table(&["job", "what it does"], &rows);
            Ok(())
        }
        MrCmd::List => list(&at).await,
        MrCmd::Status { job } => {
            let dfs = at.nn().connect().await?;
            let info = client::status(&dfs, &at.rm()?, &job).await?;
            print_status(&info, at.json)
        }
        MrCmd::Counters { job } => {
            let dfs = at.nn().connect().await?;
            let info = client::status(&dfs, &at.rm()?, &job).await?;
            if at.json {
                return output::json(&info.counters);
            }
            print_counters(&info.counters);
            Ok(())
        }
        MrCmd::Kill { job } => {
            let dfs = at.nn().connect().await?;
            let info = client::kill(&dfs, &at.rm()?, &job, &at.user()).await?;
            if at.json {
                return output::json(&info);
            }
            println!(
                "{} {}{}",
                info.job_id,
                info.state,
                if info.diagnostics.is_empty() {
                    String::new()
                } else {
                    format!(": {}", info.diagnostics)
                }
            );
            Ok(())
        }
        MrCmd::Am => {
            if hstack_mapreduce::am::run().await? {
                Ok(())
            } else {
                anyhow::bail!("the job did not succeed")
            }
        }
        MrCmd::Task => hstack_mapreduce::child::run().await,
    }
}

/// Paths on the cluster's file system: relative ones are under
/// /user/USER, as in HDFS.
fn absolute(p: &str, user: &str) -> String {
    let p = p
        .strip_prefix("hdfs://")
        .map_or(p, |r| r.find('/').map_or("/", |i| &r[i..]));
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/user/{user}/{p}")
    }
}

async fn run_job(at: &MrEndpoint, r: RunArgs) -> anyhow::Result<()> {
    let mut spec = JobSpec {
        job: r.job.clone(),
        user: at.user(),
        ..Default::default()
    };
    jobs::lookup(&r.job)?;
    let mut paths = r.paths.clone();
    spec.output = paths.pop().expect("required");
    spec.inputs = paths;
    for d in &r.define {
        spec.conf.set_pair(d)?;
    }
    let mut set = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            spec.conf.set(k, v);
        }
    };
    set(conf::REDUCES, r.reduces.map(|n| n.to_string()));
    set(grep::REGEX, r.pattern.clone());
    set(grep::GROUP, r.group.map(|n| n.to_string()));
    set(tera::ROWS, r.rows.map(|n| n.to_string()));
    set(tera::MAPS, r.maps.map(|n| n.to_string()));
    set(jobs::randomtext::SIZE, r.size.map(|n| n.to_string()));
    set(tera::EXPECT_DIR, r.expect.clone());
    set(conf::QUEUE, r.queue.clone());
    set(conf::JOB_NAME, r.name.clone());
    spec.args = std::env::args().skip(1).collect();
    if !r.local {
        let u = spec.user.clone();
        spec.inputs = spec.inputs.iter().map(|p| absolute(p, &u)).collect();
        spec.output = absolute(&spec.output, &u);
        if let Some(d) = spec.conf.get(tera::EXPECT_DIR).map(|d| absolute(d, &u)) {
            spec.conf.set(tera::EXPECT_DIR, d);
        }
    }
    let info = execute(at, spec, r.local, r.parallel, r.quiet || at.json, r.no_wait).await?;
    report(at, &info, &r.job).await
}

async fn streaming(at: &MrEndpoint, mut args: Vec<String>) -> anyhow::Result<()> {
    let local = args.iter().any(|a| a == "--local" || a == "-local");
    args.retain(|a| a != "--local" && a != "-local");
    let quiet = args.iter().any(|a| a == "--quiet" || a == "-quiet");
    args.retain(|a| a != "--quiet" && a != "-quiet");
    let no_wait = args.iter().any(|a| a == "--no-wait");
    args.retain(|a| a != "--no-wait");
    let job = jobs::streaming::parse_args(&args)?;
    let mut spec = job.to_spec(&at.user());
    spec.args = std::env::args().skip(1).collect();
    if !local {
        let u = spec.user.clone();
        spec.inputs = spec.inputs.iter().map(|p| absolute(p, &u)).collect();
        spec.output = absolute(&spec.output, &u);
    }
    let info = execute(at, spec, local, None, quiet || at.json, no_wait).await?;
    report(at, &info, "streaming").await
}

/// Shows a job's progress: a bar on a terminal, a line per step of ten
/// percent elsewhere (as Hadoop's `map 30% reduce 0%`).
struct Shown {
    bar: indicatif::ProgressBar,
    tty: bool,
    quiet: bool,
    last: std::sync::Mutex<(u32, u32)>,
}

impl Shown {
    fn new(quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = output::counter("map 0% reduce 0%", 200, quiet || !tty);
        Self {
            bar,
            tty,
            quiet,
            last: std::sync::Mutex::new((u32::MAX, u32::MAX)),
        }
    }
}

impl JobProgress for Shown {
    fn update(&self, maps: f32, reduces: f32) {
        let (m, r) = (
            (maps * 100.0).round() as u32,
            (reduces * 100.0).round() as u32,
        );
        if self.quiet {
            return;
        }
        if self.tty {
            self.bar.set_position(u64::from(m + r));
            self.bar.set_message(format!("map {m:>3}% reduce {r:>3}%"));
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if (m / 10, r / 10) != (last.0 / 10, last.1 / 10)
            || ((m, r) == (100, 100) && *last != (100, 100))
        {
            eprintln!("map {m}% reduce {r}%");
            *last = (m, r);
        }
    }
}

/// Runs a job (locally or on the cluster) to its end; its record.
async fn execute(
    at: &MrEndpoint,
    mut spec: JobSpec,
    local: bool,
    parallel: Option<usize>,
    quiet: bool,
    no_wait: bool,
) -> anyhow::Result<JobInfo> {
    let started = Instant::now();
    let shown = Arc::new(Shown::new(quiet));
    if local {
        let fs: Arc<dyn hstack_mapreduce::fs::Fs> = Arc::new(hstack_mapreduce::fs::LocalFs::new());
        let parallel =
            parallel.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let scratch = std::env::temp_dir().join(format!("hstack-mr-{}", std::process::id()));
        let sh = shown.clone();
        let (spec, report) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<(JobSpec, local::JobReport)> {
                local::prepare(&mut spec, fs.as_ref())?;
                let r = local::run(&spec, fs, scratch, parallel, sh.as_ref())?;
                Ok((spec, r))
            })
            .await??;
        shown.bar.finish_and_clear();
        return Ok(JobInfo {
            job_id: "local".into(),
            name: spec.name(),
            user: spec.user.clone(),
            job: spec.job.clone(),
            output: spec.output.clone(),
            state: "SUCCEEDED".into(),
            maps: report.maps,
            reduces: report.reduces,
            maps_done: report.maps,
            reduces_done: report.reduces,
            map_progress: 1.0,
            reduce_progress: 1.0,
            finish_ms: report.elapsed.as_millis() as u64,
            counters: report.counters,
            ..Default::default()
        });
    }
    let nn = at.nn();
    let nn_addr = nn.address()?;
    let dfs = nn.connect().await?;
    let rm = at.rm()?;
    let exe = std::env::current_exe()?.display().to_string();
    if no_wait {
        let spec = client::prepare(&dfs, spec).await?;
        let sub = client::submit(&dfs, &rm, spec, &nn_addr, &exe).await?;
        if !quiet {
            eprintln!("submitted {} ({})", sub.job_id, sub.app_id);
        }
        return client::status(&dfs, &rm, &sub.job_id).await;
    }
    let said = |s: &client::Submitted| {
        if !quiet {
            eprintln!("submitted {} ({})", s.job_id, s.app_id);
        }
    };
    let info = client::run(&dfs, &rm, spec, &nn_addr, &exe, shown.as_ref(), &said).await?;
    shown.bar.finish_and_clear();
    let _ = started;
    Ok(info)
}

fn print_counters(c: &Counters) {
    let rows: Vec<Vec<String>> = c
        .iter()
        .map(|(g, n, v)| vec![g.to_string(), n.to_string(), v.to_string()])
        .collect();
    output::table(&["group", "counter", "value"], &rows);
}

fn seconds(info: &JobInfo) -> f64 {
    if info.job_id == "local" {
        return info.finish_ms as f64 / 1000.0;
    }
    info.finish_ms.saturating_sub(info.submit_ms) as f64 / 1000.0
}

/// The end of a job: its state, time and counters; failure is an error.
async fn report(at: &MrEndpoint, info: &JobInfo, job: &str) -> anyhow::Result<()> {
    if at.json {
        output::json(info)?;
    } else if info.is_over() {
        println!(
            "job {} {} in {:.2} s: {} maps, {} reduces{}",
            info.job_id,
            info.state,
            seconds(info),
            info.maps,
            info.reduces,
            if info.uber {
                " (run inside its application master)"
            } else {
                ""
            }
        );
        if !info.diagnostics.is_empty() {
            println!("  {}", info.diagnostics);
        }
        if !info.counters.is_empty() {
            print_counters(&info.counters);
        }
        println!("output: {}", info.output);
    } else {
        println!("job {} {}", info.job_id, info.state);
    }
    if info.is_over() && info.state != "SUCCEEDED" {
        anyhow::bail!("job {} {}: {}", info.job_id, info.state, info.diagnostics);
    }
    if job == "teravalidate" && info.state == "SUCCEEDED" {
        let text = read_output(at, info).await?;
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error\t")).collect();
        if !errors.is_empty() {
            for e in &errors {
                eprintln!("{}", &e[6..]);
            }
            anyhow::bail!("teravalidate found {} problems", errors.len());
        }
        if !at.json {
            println!(
                "teravalidate: sorted, in order, checksum matches ({})",
                text.lines()
                    .find(|l| l.starts_with("checksum"))
                    .unwrap_or("")
            );
        }
    }
    Ok(())
}

/// TeraValidate's report.
async fn read_output(at: &MrEndpoint, info: &JobInfo) -> anyhow::Result<String> {
    let path = tera::report_file(&info.output);
    if info.job_id == "local" {
        return std::fs::read_to_string(&path).with_context(|| path.clone());
    }
    let dfs = at.nn().connect().await?;
    let mut r = dfs.open(&path).await?;
    let mut b = Vec::new();
    r.read_to_end(&mut b).await?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

async fn list(at: &MrEndpoint) -> anyhow::Result<()> {
    let apps = client::list(&at.rm()?, "").await?;
    if at.json {
        let v: Vec<serde_json::Value> = apps
            .iter()
            .map(|a| {
                serde_json::json!({
                    "job_id": hstack_mapreduce::history::job_id_of(&a.app_id),
                    "app_id": a.app_id, "name": a.name, "user": a.user, "queue": a.queue,
                    "state": client::state_of(a),
                    "progress": a.progress, "submit_ms": a.submit_ms, "finish_ms": a.finish_ms,
                })
            })
            .collect();
        return output::json(&v);
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            vec![
                hstack_mapreduce::history::job_id_of(&a.app_id),
                a.name.clone(),
                a.user.clone(),
                client::state_of(a).to_string(),
                format!("{:.0}%", a.progress * 100.0),
                output::date_millis(a.submit_ms as i64),
            ]
        })
        .collect();
    output::table(
        &["job", "name", "user", "state", "progress", "submitted"],
        &rows,
    );
    Ok(())
}

fn print_status(info: &JobInfo, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(info);
    }
    println!("job:        {} ({})", info.job_id, info.app_id);
    println!("name:       {}", info.name);
    println!("user:       {}  queue: {}", info.user, info.queue);
    println!(
        "state:      {}{}",
        info.state,
        if info.diagnostics.is_empty() {
            String::new()
        } else {
            format!(": {}", info.diagnostics)
        }
    );
    println!(
        "maps:       {}/{} done ({:.0}%)",
        info.maps_done,
        info.maps,
        info.map_progress * 100.0
    );
    println!(
        "reduces:    {}/{} done ({:.0}%)",
        info.reduces_done,
        info.reduces,
        info.reduce_progress * 100.0
    );
    if info.finish_ms > 0 {
        println!("time:       {:.2} s", seconds(info));
    }
    println!("output:     {}", info.output);
    let rows: Vec<Vec<String>> = info
        .tasks
        .iter()
        .flat_map(|t| {
            t.attempts.iter().map(move |a| {
                vec![
                    a.attempt_id.clone(),
                    a.state.clone(),
                    a.node.clone(),
                    a.locality.clone(),
                    format!("{:.0}%", a.progress * 100.0),
                    if a.finish_ms > a.start_ms {
                        format!("{:.2} s", (a.finish_ms - a.start_ms) as f64 / 1000.0)
                    } else {
                        String::new()
                    },
                    if a.speculative {
                        "backup".into()
                    } else {
                        String::new()
                    },
                    a.diagnostics.clone(),
                ]
            })
        })
        .collect();
    if !rows.is_empty() {
        println!();
        output::table(
            &[
                "attempt",
                "state",
                "node",
                "locality",
                "progress",
                "took",
                "",
                "diagnostics",
            ],
            &rows,
        );
    }
    Ok(())
}
