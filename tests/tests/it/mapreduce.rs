//! MapReduce on real processes: a namenode and datanodes, a resource
//! manager and node managers beside them, jobs submitted with `hstack mr`
//! whose application masters and tasks run in containers. Outputs are
//! compared with sequential references computed here; nodes and masters
//! are SIGKILLed mid-job.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hstack_tests::dfs::{put_file, read_file};
use hstack_tests::hstack_dfs::client::DfsClient;
use hstack_tests::mr::{MrCluster, USER_HOME as HOME};
use hstack_tests::{procs_with_env, wait_for, Ran};
use serde_json::Value;

/// Text of `lines` lines of words from a small skewed vocabulary.
fn text(seed: u64, lines: usize) -> String {
    let words = [
        "the", "of", "and", "map", "reduce", "shuffle", "sort", "merge", "spill", "key", "value",
        "node", "rack", "block", "Zürich",
    ];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut s = String::new();
    for _ in 0..lines {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = 3 + (x % 10) as usize;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Skewed: low indices far more often.
            let r = (x % 1000) as usize;
            let w = words[(r * r / 1000 * words.len() / 1000).min(words.len() - 1)];
            if i > 0 {
                s.push(' ');
            }
            s.push_str(w);
            if x % 11 == 0 {
                s.push_str(&(x % 50).to_string());
            }
        }
        s.push('\n');
    }
    s
}

fn ok(r: &Ran, what: &str) {
    assert_eq!(
        r.code,
        Some(0),
        "{what} failed:\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout,
        r.stderr
    );
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Every `part-*` file of an output directory, in order, concatenated;
/// fails unless `_SUCCESS` is there.
async fn output(c: &DfsClient, dir: &str) -> anyhow::Result<String> {
    let entries = c.list(dir).await?;
    let names: BTreeSet<String> = entries
        .iter()
        .map(|e| e.path.rsplit('/').next().unwrap().to_string())
        .collect();
    anyhow::ensure!(
        names.contains("_SUCCESS"),
        "{dir} has no _SUCCESS: {names:?}"
    );
    let mut out = String::new();
    for n in names.iter().filter(|n| n.starts_with("part-")) {
        out.push_str(&String::from_utf8(
            read_file(c, &format!("{dir}/{n}")).await?,
        )?);
    }
    Ok(out)
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(String::from).collect();
    v.sort();
    v
}

fn counter(info: &Value, group: &str, name: &str) -> i64 {
    info["counters"][group][name].as_i64().unwrap_or(0)
}

/// The tasks of a job's record: (task id, attempts).
fn attempts(info: &Value) -> Vec<(String, Vec<Value>)> {
    info["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["task_id"].as_str().unwrap().to_string(),
                t["attempts"].as_array().unwrap().clone(),
            )
        })
        .collect()
}

/// wordcount, inverted index and grep on several files with several
/// reduces equal sequential references; maps really run side by side,
/// each task once; `--local` on the same files gives the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordcount_index_and_grep_equal_sequential_references() -> anyhow::Result<()> {
    let mr = MrCluster::start(3, 2).await?;
    let c = mr.client().await?;
    let local = tempfile::tempdir()?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut greps: BTreeMap<String, u64> = BTreeMap::new();
    let re = regex_lite(r"(\w*e\w*)");
    let mut lines = 0;
    for f in 0..3u64 {
        let t = text(f + 1, 4000 + 1000 * f as usize);
        lines += t.lines().count();
        let name = format!("doc{f}.txt");
        for w in t.split_ascii_whitespace() {
            *counts.entry(w.into()).or_default() += 1;
            index.entry(w.into()).or_default().insert(name.clone());
            for m in re(w) {
                *greps.entry(m).or_default() += 1;
            }
        }
        put_file(&c, &format!("{HOME}/in/{name}"), t.as_bytes()).await?;
        std::fs::write(local.path().join(&name), &t)?;
    }
    let r = mr.hstack(&[
        "mr",
        "run",
        "wordcount",
        "--reduces",
        "3",
        "--json",
        "in",
        "out/wc",
    ])?;
    ok(&r, "wordcount");
    let info = json(&r.stdout);
    let got = output(&c, &format!("{HOME}/out/wc")).await?;
    let want: Vec<String> = counts.iter().map(|(w, n)| format!("{w}\t{n}")).collect();
    assert_eq!(sorted_lines(&got), want);
    assert_eq!(
        counter(&info, "TaskCounter", "MAP_INPUT_RECORDS"),
        lines as i64
    );
    assert_eq!(
        counter(&info, "TaskCounter", "REDUCE_OUTPUT_RECORDS"),
        counts.len() as i64
    );
    let maps = info["maps"].as_u64().unwrap();
    assert!(maps >= 6, "a multi-block input: {maps} maps");
    // Each task ran exactly once; maps overlapped in time.
    let tasks = attempts(&info);
    for (t, a) in &tasks {
        assert_eq!(a.len(), 1, "{t} ran {} attempts: {a:?}", a.len());
        assert_eq!(a[0]["state"], "SUCCEEDED", "{t}: {a:?}");
    }
    assert_eq!(
        counter(&info, "JobCounter", "TOTAL_LAUNCHED_MAPS"),
        maps as i64
    );
    let spans: Vec<(u64, u64)> = tasks
        .iter()
        .filter(|(t, _)| t.contains("_m_"))
        .map(|(_, a)| {
            (
                a[0]["start_ms"].as_u64().unwrap(),
                a[0]["finish_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    let overlapping = spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlapping, "no two maps ran at once: {spans:?}");

    // The same job in one process: the same bytes in every file.
    let lout = local.path().join("wc");
    let r = mr.hstack(&[
        "mr",
        "run",
        "wordcount",
        "--local",
        "--reduces",
        "3",
        local.path().to_str().unwrap(),
        lout.to_str().unwrap(),
    ])?;
    ok(&r, "wordcount --local");
    for p in 0..3 {
        let f = format!("part-r-{p:05}");
        assert_eq!(
            std::fs::read(lout.join(&f))?,
            read_file(&c, &format!("{HOME}/out/wc/{f}")).await?,
            "{f}"
        );
    }

    let r = mr.hstack(&[
        "mr",
        "run",
        "invertedindex",
        "--reduces",
        "2",
        "in",
        "out/ii",
    ])?;
    ok(&r, "invertedindex");
    let want: Vec<String> = index
        .iter()
        .map(|(w, fs)| format!("{w}\t{}", fs.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect();
    assert_eq!(
        sorted_lines(&output(&c, &format!("{HOME}/out/ii")).await?),
        want
    );

    let r = mr.hstack(&[
        "mr",
        "run",
        "grep",
        "--pattern",
        r"\w*e\w*",
        "--reduces",
        "2",
        "in/doc*.txt",
        "out/grep",
    ])?;
    ok(&r, "grep");
    let want: Vec<String> = greps.iter().map(|(m, n)| format!("{m}\t{n}")).collect();
    assert_eq!(
        sorted_lines(&output(&c, &format!("{HOME}/out/grep")).await?),
        want
    );

    // Finished jobs stay queryable from their history.
    let job = info["job_id"].as_str().unwrap();
    let r = mr.hstack(&["mr", "status", "--json", job])?;
    ok(&r, "mr status");
    let st = json(&r.stdout);
    assert_eq!(st["state"], "SUCCEEDED");
    assert_eq!(st["counters"], info["counters"]);
    let r = mr.hstack(&["mr", "counters", job])?;
    ok(&r, "mr counters");
    assert!(r.stdout.contains("DATA_LOCAL_MAPS"), "{}", r.stdout);
    mr.check_logs()
}

/// The words of `w` with an `e` in them (what the grep job's pattern
/// `\w*e\w*` finds in one whitespace-separated word).
fn regex_lite(_: &str) -> impl Fn(&str) -> Vec<String> {
    |w: &str| {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut has_e = false;
        let flush = |cur: &mut String, has_e: &mut bool, out: &mut Vec<String>| {
            if *has_e && !cur.is_empty() {
                out.push(cur.clone());
            }
            cur.clear();
            *has_e = false;
        };
        for ch in w.chars() {
            if ch.is_alphanumeric() || ch == '_' {
                cur.push(ch);
                has_e |= ch == 'e';
            } else {
                flush(&mut cur, &mut has_e, &mut out);
            }
        }
        flush(&mut cur, &mut has_e, &mut out);
        out
    }
}

/// A 24-block input on 6 datanode/node-manager pairs in 2 racks: at
/// least 90% of the maps run where their block is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_run_where_their_blocks_are() -> anyhow::Result<()> {
    let mr = MrCluster::start(6, 2).await?;
    let c = mr.client().await?;
    let block = hstack_tests::DfsCluster::BLOCK as usize;
    let mut t = text(7, 100_000).into_bytes();
    t.truncate(24 * block);
    assert!(t.len() > 23 * block, "24 blocks: {} bytes", t.len());
    put_file(&c, &format!("{HOME}/big/input.txt"), &t).await?;
    // Room for every map beside its block at once (8 per node): with the
    // harness's 200 ms heartbeats a map that has to wait for a local slot
    // takes its rack within a fraction of a second (delay scheduling
    // waits as many missed opportunities as there are nodes, as YARN's).
    let r = mr.hstack(&[
        "mr",
        "run",
        "wordcount",
        "--json",
        "-D",
        "mapreduce.map.memory.mb=256",
        "big",
        "big-out",
    ])?;
    ok(&r, "wordcount");
    let info = json(&r.stdout);
    let maps = info["maps"].as_i64().unwrap();
    assert_eq!(maps, 24);
    let local = counter(&info, "JobCounter", "DATA_LOCAL_MAPS");
    let rack = counter(&info, "JobCounter", "RACK_LOCAL_MAPS");
    let other = counter(&info, "JobCounter", "OTHER_LOCAL_MAPS");
    assert_eq!(local + rack + other, maps, "{}", info["counters"]);
    eprintln!("MEASURED: {local} of {maps} maps data-local ({rack} rack-local, {other} elsewhere)");
    assert!(
        local * 10 >= maps * 9,
        "{local} of {maps} maps data-local ({rack} rack-local, {other} elsewhere)"
    );
    mr.check_logs()
}

/// teragen → terasort → teravalidate over a multi-block input with
/// several reduces, each reduce's input several times its shuffle buffer
/// (so it merges on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teragen_terasort_teravalidate() -> anyhow::Result<()> {
    let mr = MrCluster::start(3, 2).await?;
    let r = mr.hstack(&[
        "mr", "run", "teragen", "--rows", "60000", "--maps", "3", "tera/gen",
    ])?;
    ok(&r, "teragen");
    let r = mr.hstack(&[
        "mr",
        "run",
        "terasort",
        "--reduces",
        "2",
        "--json",
        "-D",
        "mapreduce.reduce.shuffle.buffer.mb=1",
        "-D",
        "mapreduce.task.io.sort.factor=3",
        "-D",
        "mapreduce.task.io.sort.mb=1",
        "tera/gen",
        "tera/sorted",
    ])?;
    ok(&r, "terasort");
    let info = json(&r.stdout);
    assert_eq!(
        counter(&info, "TaskCounter", "REDUCE_OUTPUT_RECORDS"),
        60_000
    );
    assert!(
        info["maps"].as_i64().unwrap() > 10,
        "multi-block: {}",
        info["maps"]
    );
    // Each reduce got ~3 MB against a 1 MiB buffer: merged on local disk.
    assert!(
        counter(&info, "FileSystemCounter", "FILE_BYTES_WRITTEN") > 6_000_000,
        "{}",
        info["counters"]
    );
    let r = mr.hstack(&[
        "mr",
        "run",
        "teravalidate",
        "--expect",
        "tera/gen",
        "tera/sorted",
        "tera/report",
    ])?;
    ok(&r, "teravalidate");
    assert!(r.stdout.contains("checksum matches"), "{}", r.stdout);
    mr.check_logs()
}

/// Bad input fails before anything runs, with a clear message, and
/// changes nothing; a reducer that always fails fails the job without a
/// `_SUCCESS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_fail_clearly_and_change_nothing() -> anyhow::Result<()> {
    let mr = MrCluster::start(2, 1).await?;
    let c = mr.client().await?;
    put_file(&c, &format!("{HOME}/in/a.txt"), b"one two\nthree\n").await?;
    put_file(&c, &format!("{HOME}/exists/x"), b"x").await?;
    let cases: &[(&[&str], &str)] = &[
        (
            &["mr", "run", "wordcount", "nope", "o1"],
            "input path does not exist: /user/tester/nope",
        ),
        (
            &["mr", "run", "wordcount", "in", "exists"],
            "output directory /user/tester/exists already exists",
        ),
        (
            &[
                "mr",
                "run",
                "wordcount",
                "-D",
                "mapreduce.job.reduces=lots",
                "in",
                "o2",
            ],
            "mapreduce.job.reduces must be",
        ),
        (
            &["mr", "run", "wordcount", "-D", "novalue", "in", "o3"],
            "expected KEY=VALUE",
        ),
        (&["mr", "run", "nosuchjob", "in", "o4"], "no built-in job"),
        (
            &["mr", "run", "grep", "--pattern", "(", "in", "o5"],
            "not a regular expression",
        ),
    ];
    for (args, want) in cases {
        let r = mr.hstack(args)?;
        assert_ne!(r.code, Some(0), "{args:?} succeeded");
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    // Nothing was submitted, nothing was made.
    let apps = mr.yarn.client()?.list(Default::default()).await?;
    assert!(apps.apps.is_empty(), "{:?}", apps.apps);
    for o in ["o1", "o2", "o3", "o4", "o5"] {
        assert!(
            c.stat(&format!("{HOME}/{o}")).await?.is_none(),
            "{o} was made"
        );
    }
    assert_eq!(
        read_file(&c, &format!("{HOME}/in/a.txt")).await?,
        b"one two\nthree\n"
    );
    assert_eq!(read_file(&c, &format!("{HOME}/exists/x")).await?, b"x");
    mr.check_logs()
}

/// A streaming wordcount (a shell mapper, a python reducer shipped with
/// -file) whose tasks sleep first: slow enough to be caught mid-job.
fn slow_wordcount(
    dir: &std::path::Path,
    map_sleep: &str,
    reduce_sleep: &str,
) -> anyhow::Result<(String, String)> {
    let reducer = dir.join("count.py");
    std::fs::write(
        &reducer,
        format!(
            r#"import sys, time
time.sleep({reduce_sleep})
cur, n = None, 0
for line in sys.stdin:
    w, _, c = line.rstrip("\n").partition("\t")
    if w != cur:
        if cur is not None:
            print(f"{{cur}}\t{{n}}")
        cur, n = w, 0
    n += int(c or 1)
if cur is not None:
    print(f"{{cur}}\t{{n}}")
"#
        ),
    )?;
    let mapper = format!("sleep {map_sleep}; tr -s ' ' '\\n' | sed 's/$/\\t1/'");
    Ok((mapper, reducer.display().to_string()))
}

/// SIGKILL the application master mid-job: the scheduler starts another,
/// which recovers what the first finished and completes the job with the
/// right output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_the_job_completes() -> anyhow::Result<()> {
    let mr = MrCluster::start(3, 2).await?;
    let c = mr.client().await?;
    let tmp = tempfile::tempdir()?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for f in 0..4u64 {
        let t = text(f + 10, 2000);
        for w in t.split_ascii_whitespace() {
            *counts.entry(w.into()).or_default() += 1;
        }
        put_file(&c, &format!("{HOME}/am/in/f{f}"), t.as_bytes()).await?;
    }
    let (mapper, reducer) = slow_wordcount(tmp.path(), "1", "3")?;
    let r = mr.hstack(&[
        "mr",
        "streaming",
        "--json",
        "--no-wait",
        "-D",
        "mapreduce.job.reduce.slowstart.completedmaps=1",
        "-D",
        "mapreduce.job.reduces=2",
        "-input",
        "am/in",
        "-output",
        "am/out",
        "-mapper",
        &mapper,
        "-reducer",
        "python3 count.py",
        "-file",
        &reducer,
    ])?;
    ok(&r, "submit");
    let job = json(&r.stdout)["job_id"].as_str().unwrap().to_string();
    let staging = format!("{HOME}/.staging/{job}");
    // Kill the first master as soon as it has recorded a finished map.
    let done_dir = format!("{staging}/done");
    wait_for(
        "the master to record a finished map",
        Duration::from_secs(60),
        || {
            let (c, d) = (c.clone(), done_dir.clone());
            async move {
                let l = c.list(&d).await.ok()?;
                l.iter().any(|f| f.path.ends_with(".json")).then_some(())
            }
        },
    )
    .await?;
    let pid = master_pid(&staging).expect("the master's process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let info = wait_over(&mr, &job).await?;
    assert_eq!(info["state"], "SUCCEEDED", "{info}");
    assert_eq!(info["am_attempt"], 2, "{info}");
    let want: Vec<String> = counts.iter().map(|(w, n)| format!("{w}\t{n}")).collect();
    assert_eq!(
        sorted_lines(&output(&c, &format!("{HOME}/am/out")).await?),
        want
    );
    // Counted once each; the maps the first master finished were kept,
    // not run again.
    assert_eq!(counter(&info, "TaskCounter", "MAP_INPUT_RECORDS"), 4 * 2000);
    let kept = attempts(&info)
        .iter()
        .filter(|(t, a)| {
            t.contains("_m_")
                && a.len() == 1
                && a[0]["attempt_id"].as_str().unwrap().ends_with("_0")
        })
        .count();
    assert!(
        kept >= 1,
        "no map of the first master was kept: {}",
        info["tasks"]
    );
    mr.check_logs()
}

/// Waits for a job to end; its record.
async fn wait_over(mr: &MrCluster, job: &str) -> anyhow::Result<Value> {
    wait_for("the job to end", Duration::from_secs(150), || {
        let job = job.to_string();
        async move {
            let st = json(&mr.hstack(&["mr", "status", "--json", &job]).ok()?.stdout);
            matches!(
                st["state"].as_str(),
                Some("SUCCEEDED" | "FAILED" | "KILLED")
            )
            .then_some(st)
        }
    })
    .await
}

/// SIGKILL a node manager and its datanode mid-job (not the master's):
/// the job succeeds with the right output, the maps it had finished run
/// again elsewhere, and no counter counts twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_mid_job_has_its_maps_run_again() -> anyhow::Result<()> {
    let mut mr = MrCluster::start_with(4, 2, &["--nm-expiry-ms", "3000"]).await?;
    mr.yarn.allowed_errors.push("lost".into());
    mr.dfs.allowed_errors.push("127.0.1.".into());
    let c = mr.client().await?;
    let tmp = tempfile::tempdir()?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = 0;
    for f in 0..4u64 {
        let t = text(f + 20, 4000);
        lines += t.lines().count();
        for w in t.split_ascii_whitespace() {
            *counts.entry(w.into()).or_default() += 1;
        }
        put_file(&c, &format!("{HOME}/lost/in/f{f}"), t.as_bytes()).await?;
    }
    // The reduces sleep after fetching: the loss lands while they run.
    let (mapper, reducer) = slow_wordcount(tmp.path(), "0", "8")?;
    let r = mr.hstack(&[
        "mr",
        "streaming",
        "--json",
        "--no-wait",
        "-D",
        "mapreduce.job.reduce.slowstart.completedmaps=1",
        "-D",
        "mapreduce.job.reduces=2",
        "-input",
        "lost/in",
        "-output",
        "lost/out",
        "-mapper",
        &mapper,
        "-reducer",
        "python3 count.py",
        "-file",
        &reducer,
    ])?;
    ok(&r, "submit");
    let job = json(&r.stdout)["job_id"].as_str().unwrap().to_string();
    let app = job.replacen("job_", "application_", 1);
    let st = wait_for("every map done", Duration::from_secs(90), || {
        let job = job.clone();
        let mr = &mr;
        async move {
            let st = json(&mr.hstack(&["mr", "status", "--json", &job]).ok()?.stdout);
            (st["maps_done"] == st["maps"] && st["state"] == "RUNNING").then_some(st)
        }
    })
    .await?;
    let am_node = mr.yarn.client()?.report(&app).await?.am_node;
    // A node that ran a map and not the master.
    let victim_node = attempts(&st)
        .iter()
        .filter(|(t, _)| t.contains("_m_"))
        .map(|(_, a)| a[0]["node"].as_str().unwrap().to_string())
        .find(|n| *n != am_node)
        .expect("a map ran off the master's node");
    let i = (0..4)
        .find(|&i| mr.yarn.node_id(i) == victim_node)
        .expect("the victim's index");
    mr.kill_pair(i);
    let info = wait_over(&mr, &job).await?;
    assert_eq!(info["state"], "SUCCEEDED", "{info}");
    let want: Vec<String> = counts.iter().map(|(w, n)| format!("{w}\t{n}")).collect();
    assert_eq!(
        sorted_lines(&output(&c, &format!("{HOME}/lost/out")).await?),
        want
    );
    // The victim's finished maps ran again; counted once.
    let tasks = attempts(&info);
    let rerun: Vec<&(String, Vec<Value>)> = tasks
        .iter()
        .filter(|(t, a)| t.contains("_m_") && a.len() > 1)
        .collect();
    assert!(!rerun.is_empty(), "no map ran again: {}", info["tasks"]);
    for (t, a) in &rerun {
        assert_eq!(a[0]["node"].as_str(), Some(victim_node.as_str()), "{t}");
        // Killed with its node, or failed when reduces could not fetch
        // its output first.
        let why = a[0]["diagnostics"].as_str().unwrap_or("");
        assert!(
            matches!(a[0]["state"].as_str(), Some("KILLED" | "FAILED"))
                && (why.contains("was lost") || why.contains("could not be fetched")),
            "{t}: {a:?}"
        );
    }
    assert_eq!(
        counter(&info, "TaskCounter", "MAP_INPUT_RECORDS"),
        lines as i64
    );
    assert_eq!(
        counter(&info, "TaskCounter", "REDUCE_OUTPUT_RECORDS"),
        counts.len() as i64
    );
    Ok(())
}

/// A streaming job whose first attempts fail or hang (mappers and
/// reducers alike) still produces the exact reference output: failed
/// attempts are retried, hung ones timed out or beaten by backups, and
/// the counters count each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_tasks_that_fail_or_hang_still_give_the_exact_output() -> anyhow::Result<()> {
    let mr = MrCluster::start(3, 2).await?;
    let c = mr.client().await?;
    let tmp = tempfile::tempdir()?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = 0;
    for f in 0..3u64 {
        let t = text(f + 30, 3000);
        lines += t.lines().count();
        for w in t.split_ascii_whitespace() {
            *counts.entry(w.into()).or_default() += 1;
        }
        put_file(&c, &format!("{HOME}/faulty/in/f{f}"), t.as_bytes()).await?;
    }
    // First attempts (numbered _0) of some tasks misbehave: which ones
    // depends on the task's number.
    let mapper = tmp.path().join("mapper.py");
    std::fs::write(
        &mapper,
        r#"import os, sys, time
a = os.environ["mapreduce_task_attempt_id"].split("_")
task, first = int(a[-2]), a[-1] == "0"
for i, line in enumerate(sys.stdin):
    if first and i == 50 and task % 3 == 0:
        sys.exit(3)
    if first and i == 50 and task % 3 == 1:
        time.sleep(3600)
    for w in line.split():
        print(w + "	1")
"#,
    )?;
    let reducer = tmp.path().join("reducer.py");
    std::fs::write(
        &reducer,
        r#"import os, sys, time
a = os.environ["mapreduce_task_attempt_id"].split("_")
task, first = int(a[-2]), a[-1] == "0"
cur, n = None, 0
for k, line in enumerate(sys.stdin):
    if first and k == 20 and task == 0:
        sys.exit(1)
    if first and k == 20 and task == 1:
        time.sleep(3600)
    w, _, c = line.rstrip("\n").partition("\t")
    if w != cur:
        if cur is not None:
            print(f"{cur}	{n}")
        cur, n = w, 0
    n += int(c)
if cur is not None:
    print(f"{cur}	{n}")
"#,
    )?;
    let r = mr.hstack(&[
        "mr",
        "streaming",
        "--json",
        "-D",
        "mapreduce.task.timeout=4000",
        "-D",
        "mapreduce.job.name=faulty wordcount",
        "-numReduceTasks",
        "3",
        "-input",
        "faulty/in",
        "-output",
        "faulty/out",
        "-mapper",
        "python3 mapper.py",
        "-reducer",
        "python3 reducer.py",
        "-file",
        mapper.to_str().unwrap(),
        "-file",
        reducer.to_str().unwrap(),
    ])?;
    ok(&r, "faulty streaming job");
    let info = json(&r.stdout);
    let want: Vec<String> = counts.iter().map(|(w, n)| format!("{w}\t{n}")).collect();
    assert_eq!(
        sorted_lines(&output(&c, &format!("{HOME}/faulty/out")).await?),
        want
    );
    assert_eq!(
        counter(&info, "TaskCounter", "MAP_INPUT_RECORDS"),
        lines as i64
    );
    assert_eq!(
        counter(&info, "TaskCounter", "REDUCE_OUTPUT_RECORDS"),
        counts.len() as i64
    );
    assert!(
        counter(&info, "JobCounter", "NUM_FAILED_MAPS") >= 2,
        "{}",
        info["counters"]
    );
    assert!(
        counter(&info, "JobCounter", "NUM_FAILED_REDUCES")
            + counter(&info, "JobCounter", "NUM_KILLED_REDUCES")
            >= 2,
        "{}",
        info["counters"]
    );
    let diags: Vec<String> = attempts(&info)
        .iter()
        .flat_map(|(_, a)| {
            a.iter()
                .map(|x| x["diagnostics"].as_str().unwrap_or("").to_string())
        })
        .collect();
    assert!(
        diags.iter().any(|d| d.contains("exited with status 3")),
        "{diags:?}"
    );
    assert!(
        diags
            .iter()
            .any(|d| d.contains("timed out") || d.contains("another attempt")),
        "{diags:?}"
    );
    // A mapper that does not exist, a reducer that always fails: the job
    // fails with a clear message and leaves no _SUCCESS.
    let r = mr.hstack(&[
        "mr",
        "streaming",
        "-input",
        "faulty/in",
        "-output",
        "faulty/o2",
        "-mapper",
        "no-such-program-here",
        "-reducer",
        "cat",
    ])?;
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("no-such-program-here"), "{}", r.stderr);
    assert!(c.stat(&format!("{HOME}/faulty/o2")).await?.is_none());
    let r = mr.hstack(&[
        "mr",
        "streaming",
        "-D",
        "mapreduce.reduce.maxattempts=2",
        "-input",
        "faulty/in",
        "-output",
        "faulty/o3",
        "-mapper",
        "cat",
        "-reducer",
        "sh -c 'cat > /dev/null; exit 1'",
    ])?;
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr.contains("FAILED") && r.stderr.contains("status 1"),
        "{}",
        r.stderr
    );
    assert!(c
        .stat(&format!("{HOME}/faulty/o3/_SUCCESS"))
        .await?
        .is_none());

    // Skipping bad records: a line that crashes every attempt of its map
    // is skipped (once the task failed twice), counted, and the rest of
    // the input comes out.
    let mut input = String::new();
    for i in 0..2000 {
        input.push_str(if i == 777 { "poison\n" } else { "fine\n" });
        input.push_str(&format!("line {i}\n"));
    }
    put_file(&c, &format!("{HOME}/skip/in"), input.as_bytes()).await?;
    let picky = tmp.path().join("picky.py");
    std::fs::write(
        &picky,
        "import sys\nfor l in sys.stdin:\n    if l.startswith('poison'):\n        sys.exit(7)\n    print(l, end='')\n",
    )?;
    let r = mr.hstack(&[
        "mr",
        "streaming",
        "--json",
        "-D",
        "mapreduce.map.skip.maxrecords=1",
        // (a one-map job would run inside the master, once, as Hadoop's
        // uber tasks do: no retries, so nothing to skip)
        "-D",
        "mapreduce.job.ubertask.enable=false",
        "-input",
        "skip/in",
        "-output",
        "skip/out",
        "-mapper",
        "python3 picky.py",
        "-reducer",
        "NONE",
        "-file",
        picky.to_str().unwrap(),
    ])?;
    ok(&r, "a job with a poison record, skipping on");
    let info = json(&r.stdout);
    let want: Vec<String> = input
        .lines()
        .filter(|l| !l.starts_with("poison"))
        .map(String::from)
        .collect();
    let mut want = want;
    want.sort();
    assert_eq!(
        sorted_lines(&output(&c, &format!("{HOME}/skip/out")).await?),
        want
    );
    assert_eq!(
        counter(&info, "TaskCounter", "MAP_SKIPPED_RECORDS"),
        1,
        "{}",
        info["counters"]
    );
    assert_eq!(counter(&info, "JobCounter", "NUM_FAILED_MAPS"), 2);
    mr.check_logs()
}

/// The application master's process of the job staged at `staging` (its
/// tasks have the same staging variable, and an attempt id too).
fn master_pid(staging: &str) -> Option<i32> {
    procs_with_env("HSTACK_MR_STAGING", &[staging.to_string()])
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|e| {
                    !e.split(|b| *b == 0)
                        .any(|kv| kv.starts_with(b"HSTACK_MR_ATTEMPT="))
                })
                .unwrap_or(false)
        })
}
