//! MapReduce end to end on a running cluster (`hstack bench mr`): the
//! input made once in the file system (randomtext for wordcount, teragen
//! for terasort, a one-block text for the fixed cost), then the job run
//! `runs` times, each timed from submission to the end of the job (the
//! client's view: checks, staging, the master, every task, the commit).
//! With `reference`, the same work by the tools one would use instead,
//! measured in the same run on the same data: one thread counting words
//! in a hash map; GNU sort on the same bytes as 100-byte lines.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use hstack_dfs::client::{ClientOptions, DfsClient};
use hstack_mapreduce::conf;
use hstack_mapreduce::history::JobInfo;
use hstack_mapreduce::io::tera as io_tera;
use hstack_mapreduce::jobs::{randomtext, tera, words, WordCounts};
use hstack_mapreduce::local::JobProgress;
use hstack_mapreduce::{client, JobSpec};
use hstack_scheduler::client::RmClient;
use serde::Serialize;

#[derive(Clone, Copy, Debug, clap::ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MrWorkload {
    Wordcount,
    Terasort,
    /// The fixed cost: a job over a one-block input, end to end.
    Fixed,
}

#[derive(Clone, Debug)]
pub struct MrBench {
    pub workload: MrWorkload,
    pub size: u64,
    pub reduces: u32,
    pub runs: u32,
    pub reference: bool,
    pub namenode: String,
    pub rm: String,
    pub exe: String,
    /// Where inputs and outputs go.
    pub dir: String,
    pub user: String,
    /// Job settings of every measured job (`-D`).
    pub conf: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Reference {
    pub tool: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MrResult {
    pub workload: MrWorkload,
    pub bytes: u64,
    pub runs: Vec<f64>,
    pub median_secs: f64,
    pub min_secs: f64,
    pub max_secs: f64,
    pub mb_per_sec: f64,
    pub maps: u32,
    pub reduces: u32,
    pub data_local_maps: i64,
    pub uber: bool,
    pub reference: Option<Reference>,
}

struct Quiet;
impl JobProgress for Quiet {
    fn update(&self, _m: f32, _r: f32) {}
}

async fn job(
    b: &MrBench,
    dfs: &DfsClient,
    rm: &RmClient,
    name: &str,
    inputs: Vec<String>,
    output: &str,
    set: &[(&str, String)],
) -> anyhow::Result<JobInfo> {
    let mut spec = JobSpec {
        job: name.into(),
        user: b.user.clone(),
        inputs,
        output: output.into(),
        ..Default::default()
    };
    for (k, v) in set {
        spec.conf.set(k, v.clone());
    }
    let info = client::run(dfs, rm, spec, &b.namenode, &b.exe, &Quiet, &|_| {}).await?;
    anyhow::ensure!(
        info.state == "SUCCEEDED",
        "{name} {}: {}",
        info.state,
        info.diagnostics
    );
    Ok(info)
}

/// Makes the input once; its path.
async fn input(b: &MrBench, dfs: &DfsClient, rm: &RmClient) -> anyhow::Result<String> {
    let path = match b.workload {
        MrWorkload::Wordcount => format!("{}/text-{}", b.dir, b.size),
        MrWorkload::Terasort => format!("{}/tera-{}", b.dir, b.size),
        MrWorkload::Fixed => format!("{}/one-block", b.dir),
    };
    if dfs.stat(&format!("{path}/_SUCCESS")).await?.is_some() {
        return Ok(path);
    }
    let _ = dfs.delete(&path, true).await;
    let maps = b.size.div_ceil(128 << 20).max(2).to_string();
    match b.workload {
        MrWorkload::Wordcount => {
            job(
                b,
                dfs,
                rm,
                "randomtext",
                vec![],
                &path,
                &[
                    (randomtext::SIZE, b.size.to_string()),
                    (randomtext::MAPS, maps),
                ],
            )
            .await?;
        }
        MrWorkload::Terasort => {
            job(
                b,
                dfs,
                rm,
                "teragen",
                vec![],
                &path,
                &[(tera::ROWS, (b.size / 100).to_string()), (tera::MAPS, maps)],
            )
            .await?;
        }
        MrWorkload::Fixed => {
            job(
                b,
                dfs,
                rm,
                "randomtext",
                vec![],
                &path,
                &[
                    (randomtext::SIZE, (1u64 << 20).to_string()),
                    (randomtext::MAPS, "1".into()),
                ],
            )
            .await?;
        }
    }
    Ok(path)
}

/// Copies every `part-*` of `dir` into one local file.
async fn download(dfs: &DfsClient, dir: &str, to: &std::path::Path) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(to)?);
    let mut n = 0;
    let mut files: Vec<String> = dfs
        .list(dir)
        .await?
        .into_iter()
        .map(|s| s.path)
        .filter(|p| p.rsplit('/').next().is_some_and(|b| b.starts_with("part-")))
        .collect();
    files.sort();
    for f in files {
        let p = if f.starts_with('/') {
            f
        } else {
            format!("{dir}/{f}")
        };
        let mut r = dfs.open(&p).await?;
        while let Some(c) = r.read_chunk().await? {
            out.write_all(&c)?;
            n += c.len() as u64;
        }
    }
    out.flush()?;
    Ok(n)
}

/// One thread counting words in a hash map (the same map the wordcount
/// mapper uses): the per-core limit.
pub fn hash_count(path: &std::path::Path) -> anyhow::Result<usize> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut counts = WordCounts::default();
    let mut buf = vec![0u8; 4 << 20];
    let mut carry = Vec::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let cut = memchr_last_newline(chunk).map_or(0, |i| i + 1);
        carry.extend_from_slice(&chunk[..cut]);
        for line in carry.split(|&b| b == b'\n') {
            for w in words(line) {
                counts.add(w, 1);
            }
        }
        carry.clear();
        carry.extend_from_slice(&chunk[cut..]);
    }
    for w in words(&carry) {
        counts.add(w, 1);
    }
    Ok(counts.len())
}

fn memchr_last_newline(b: &[u8]) -> Option<usize> {
    b.iter().rposition(|&x| x == b'\n')
}

/// TeraSort's records as text lines (a printable key), for GNU sort.
fn write_sort_input(path: &std::path::Path, bytes: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(path)?);
    let mut rec = [0u8; io_tera::RECORD];
    for i in 0..bytes / io_tera::RECORD as u64 {
        tera::record(i, &mut rec);
        for b in &mut rec[..io_tera::KEY] {
            *b = b' ' + 1 + *b % 94;
        }
        rec[io_tera::RECORD - 1] = b'\n';
        for b in &mut rec[io_tera::KEY..io_tera::RECORD - 1] {
            if *b == b'\n' || *b < b' ' || *b > b'~' {
                *b = b'.';
            }
        }
        out.write_all(&rec)?;
    }
    out.flush()?;
    Ok(())
}

async fn reference(b: &MrBench, dfs: &DfsClient, input: &str) -> anyhow::Result<Option<Reference>> {
    if !b.reference {
        return Ok(None);
    }
    let tmp = tempfile::Builder::new()
        .prefix("hstack-bench-mr-")
        .tempdir()?;
    match b.workload {
        MrWorkload::Wordcount => {
            let f = tmp.path().join("corpus.txt");
            download(dfs, input, &f).await?;
            let f2 = f.clone();
            let secs = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
                let t = Instant::now();
                hash_count(&f2)?;
                Ok(t.elapsed().as_secs_f64())
            })
            .await??;
            Ok(Some(Reference {
                tool: "one thread, hash count (Rust)".into(),
                seconds: secs,
            }))
        }
        MrWorkload::Terasort => {
            let f = tmp.path().join("records.txt");
            let (f2, size) = (f.clone(), b.size);
            tokio::task::spawn_blocking(move || write_sort_input(&f2, size)).await??;
            let t = Instant::now();
            let st = tokio::process::Command::new("sort")
                .env("LC_ALL", "C")
                .args(["-S6G", "--parallel=2", "-o", "/dev/null"])
                .arg(&f)
                .status()
                .await
                .context("cannot run GNU sort")?;
            anyhow::ensure!(st.success(), "sort failed: {st}");
            Ok(Some(Reference {
                tool: "LC_ALL=C sort -S6G --parallel=2".into(),
                seconds: t.elapsed().as_secs_f64(),
            }))
        }
        MrWorkload::Fixed => Ok(None),
    }
}

/// Runs the benchmark; `on_run` hears of each finished run.
pub async fn run_mr(b: &MrBench, on_run: impl Fn(u32)) -> anyhow::Result<MrResult> {
    anyhow::ensure!(b.runs > 0, "--runs must be at least 1");
    let dfs = DfsClient::connect(
        &b.namenode,
        ClientOptions {
            user: b.user.clone(),
            ..Default::default()
        },
    )
    .await?;
    let rm = RmClient::new(&b.rm)?;
    let input = input(b, &dfs, &rm).await?;
    let bytes = dfs.content_summary(&input).await?.length;
    let mut set: Vec<(&str, String)> = vec![(conf::REDUCES, b.reduces.to_string())];
    set.extend(b.conf.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let mut runs = Vec::new();
    let mut last = None;
    for i in 0..b.runs {
        let out = format!("{}/out-{}-{}", b.dir, std::process::id(), i);
        let _ = dfs.delete(&out, true).await;
        let t = Instant::now();
        let info = match b.workload {
            MrWorkload::Wordcount | MrWorkload::Fixed => {
                job(b, &dfs, &rm, "wordcount", vec![input.clone()], &out, &set).await?
            }
            MrWorkload::Terasort => {
                job(b, &dfs, &rm, "terasort", vec![input.clone()], &out, &set).await?
            }
        };
        runs.push(t.elapsed().as_secs_f64());
        let _ = dfs.delete(&out, true).await;
        last = Some(info);
        on_run(i + 1);
    }
    let reference = reference(b, &dfs, &input).await?;
    let info = last.expect("at least one run");
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    Ok(MrResult {
        workload: b.workload,
        bytes,
        median_secs: median,
        min_secs: sorted[0],
        max_secs: *sorted.last().expect("one"),
        mb_per_sec: bytes as f64 / 1e6 / median,
        maps: info.maps,
        reduces: info.reduces,
        data_local_maps: info.counters.get("JobCounter", "DATA_LOCAL_MAPS"),
        uber: info.uber,
        runs,
        reference,
    })
}
