//! The local runner (`--local`): a whole job in this process against the
//! local file system, for debugging. It runs the very map and reduce
//! attempts the cluster runs (maps on a pool of threads, then reduces),
//! through the same sort buffer, shuffle store and committer, so its
//! output is byte for byte the cluster's. There are no retries: a failed
//! task fails the job at once, with its error.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::committer::Committer;
use crate::conf;
use crate::counters::{self as c, Counters};
use crate::fs::Fs;
use crate::mapside::MapOutput;
use crate::reduceside::ShuffleStore;
use crate::spec::{self, JobSpec};
use crate::task::{self, Attempt, Progress};

/// Checks made before any job runs, locally or on the cluster: the
/// configuration, the job's own settings, the output (which must not
/// exist), the inputs (which must); then the splits.
pub fn prepare(spec: &mut JobSpec, fs: &dyn Fs) -> anyhow::Result<()> {
    spec.conf.validate()?;
    let job = task::job_of(spec)?;
    anyhow::ensure!(!spec.output.is_empty(), "no output directory given");
    if fs.status(&spec.output)?.is_some() {
        anyhow::bail!(
            "output directory {} already exists (remove it, or name another)",
            spec.output
        );
    }
    job.prepare(spec, fs)?;
    // Everything a task will build must build.
    job.mapper(spec)?;
    if spec.reduces() > 0 {
        job.reducer(spec)?;
        job.combiner(spec)?;
    }
    job.input_format(spec)?;
    job.output_format(spec)?;
    Ok(())
}

/// How far a job is: maps and reduces, each 0 to 1.
pub trait JobProgress: Send + Sync {
    fn update(&self, maps: f32, reduces: f32);
}

/// What a finished job came to.
#[derive(Clone, Debug)]
pub struct JobReport {
    pub counters: Counters,
    pub maps: u32,
    pub reduces: u32,
    pub elapsed: Duration,
}

/// Fractions of a set of tasks, for the job's progress.
struct Fractions {
    parts: Vec<AtomicU32>,
}

impl Fractions {
    fn new(n: usize) -> Self {
        Self {
            parts: (0..n).map(|_| AtomicU32::new(0)).collect(),
        }
    }
    fn mean(&self) -> f32 {
        if self.parts.is_empty() {
            return 1.0;
        }
        self.parts
            .iter()
            .map(|p| f32::from_bits(p.load(Ordering::Relaxed)))
            .sum::<f32>()
            / self.parts.len() as f32
    }
}

struct One<'a> {
    f: &'a Fractions,
    i: usize,
    job: &'a dyn JobProgress,
    other: f32,
    is_map: bool,
}

impl Progress for One<'_> {
    fn progress(&self, fraction: f32, _status: &str) {
        self.f.parts[self.i].store(fraction.to_bits(), Ordering::Relaxed);
        let m = self.f.mean();
        if self.is_map {
            self.job.update(m, self.other);
        } else {
            self.job.update(self.other, m);
        }
    }
}

/// Runs `n` tasks on up to `parallel` threads; the first error stops the
/// rest.
fn pool<T: Send>(
    n: usize,
    parallel: usize,
    f: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n || failed.lock().expect("lock").is_some() {
                    return;
                }
                match f(i) {
                    Ok(v) => results.lock().expect("lock")[i] = Some(v),
                    Err(e) => {
                        failed.lock().expect("lock").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().expect("lock") {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .expect("lock")
        .into_iter()
        .map(|r| r.expect("every task ran"))
        .collect())
}

/// Feeds partition `p` of every map's output into a shuffle store.
fn gather(store: &mut ShuffleStore, outputs: &[MapOutput], p: usize) -> anyhow::Result<()> {
    for o in outputs {
        let seg = o.segments[p];
        let mut f = File::open(&o.file)?;
        f.seek(SeekFrom::Start(seg.offset))?;
        let mut bytes = vec![0; seg.part_len as usize];
        f.read_exact(&mut bytes)?;
        if store.wants_disk(seg.part_len) {
            let path = store.disk_path();
            std::fs::write(&path, &bytes)?;
            store.add_file(path, seg)?;
        } else {
            store.add_memory(bytes, seg)?;
        }
    }
    Ok(())
}

/// Runs a prepared job (see [`prepare`]) in this process.
pub fn run(
    spec: &JobSpec,
    fs: Arc<dyn Fs>,
    scratch: PathBuf,
    parallel: usize,
    progress: &dyn JobProgress,
) -> anyhow::Result<JobReport> {
    let started = Instant::now();
    let job_id = format!("job_local{}_0001", std::process::id());
    let committer = Committer::new(fs.clone(), &spec.output);
    committer.setup_job()?;
    let r = run_tasks(spec, &job_id, fs, &scratch, parallel, progress, &committer);
    let _ = std::fs::remove_dir_all(&scratch);
    match r {
        Ok(counters) => {
            committer.commit_job()?;
            progress.update(1.0, 1.0);
            Ok(JobReport {
                counters,
                maps: spec.maps(),
                reduces: spec.reduces(),
                elapsed: started.elapsed(),
            })
        }
        Err(e) => {
            committer.abort_job();
            Err(e)
        }
    }
}

/// Runs every task of a job, maps then reduces, in this process, each
/// committed as it finishes (the job is committed by the caller).
pub fn run_tasks(
    spec: &JobSpec,
    job_id: &str,
    fs: Arc<dyn Fs>,
    scratch: &std::path::Path,
    parallel: usize,
    progress: &dyn JobProgress,
    committer: &Committer,
) -> anyhow::Result<Counters> {
    let maps = spec.maps() as usize;
    let reduces = spec.reduces() as usize;
    let mut total = Counters::default();
    let mf = Fractions::new(maps);
    let done = pool(maps, parallel, |i| {
        let a = Attempt {
            spec,
            job_id,
            index: i as u32,
            attempt: 0,
            fs: fs.clone(),
            work: scratch.join(spec::attempt_id(job_id, true, i as u32, 0)),
            progress: &One {
                f: &mf,
                i,
                job: progress,
                other: 0.0,
                is_map: true,
            },
            skip: &[],
            skip_mode: false,
        };
        let d = task::run_map(&a).map_err(|e| e.context(format!("map {i} failed")))?;
        let attempt = a.attempt_id(true);
        if fs.status(&committer.attempt_dir(&attempt))?.is_some() {
            let record = serde_json::to_vec(&d.counters)?;
            committer.commit_task(&spec::task_id(job_id, true, i as u32), &attempt, &record)?;
        }
        Ok(d)
    })?;
    let mut outputs = Vec::new();
    for d in done {
        total.merge(&d.counters);
        if let Some(o) = d.output {
            outputs.push(o);
        }
    }
    total.add(c::JOB, c::TOTAL_LAUNCHED_MAPS, maps as i64);
    if reduces > 0 {
        let rf = Fractions::new(reduces);
        let budget = (spec.conf.u64(conf::SHUFFLE_BUFFER_MB) << 20) as usize;
        let factor = spec.conf.u64(conf::SORT_FACTOR) as usize;
        let counters = pool(reduces, parallel, |p| {
            let attempt = spec::attempt_id(job_id, false, p as u32, 0);
            let work = scratch.join(&attempt);
            std::fs::create_dir_all(&work)?;
            let mut store = ShuffleStore::new(work.clone(), budget, factor);
            gather(&mut store, &outputs, p)?;
            let (mut merged, stats) = store.into_merger()?;
            let a = Attempt {
                spec,
                job_id,
                index: p as u32,
                attempt: 0,
                fs: fs.clone(),
                work,
                progress: &One {
                    f: &rf,
                    i: p,
                    job: progress,
                    other: 1.0,
                    is_map: false,
                },
                skip: &[],
                skip_mode: false,
            };
            let counters = task::run_reduce(&a, &mut merged, &stats)
                .map_err(|e| e.context(format!("reduce {p} failed")))?;
            let record = serde_json::to_vec(&counters)?;
            committer.commit_task(&spec::task_id(job_id, false, p as u32), &attempt, &record)?;
            Ok(counters)
        })?;
        for cs in counters {
            total.merge(&cs);
        }
        total.add(c::JOB, c::TOTAL_LAUNCHED_REDUCES, reduces as i64);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::fs::LocalFs;

    struct Quiet;
    impl JobProgress for Quiet {
        fn update(&self, _m: f32, _r: f32) {}
    }

    /// Writes `files` text files of pseudo-random words; returns the dir.
    fn corpus(dir: &std::path::Path, files: usize, lines: usize) -> Vec<String> {
        let words = [
            "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "a1", "zeta", "Éclair",
        ];
        let mut paths = Vec::new();
        let mut x = 12345u64;
        for f in 0..files {
            let mut s = String::new();
            for _ in 0..lines {
                let n = 1 + (x % 9) as usize;
                for i in 0..n {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let w = words[((x >> 33) % words.len() as u64) as usize];
                    if i > 0 {
                        s.push(if x % 5 == 0 { '\t' } else { ' ' });
                    }
                    s.push_str(w);
                    if x % 7 == 0 {
                        s.push_str(&format!("{}", f));
                    }
                }
                s.push('\n');
            }
            let p = dir.join(format!("in{f}.txt"));
            std::fs::write(&p, s).unwrap();
            paths.push(p.to_str().unwrap().to_string());
        }
        paths
    }

    fn run_job(
        job: &str,
        inputs: Vec<String>,
        out: &std::path::Path,
        set: &[(&str, &str)],
    ) -> anyhow::Result<JobReport> {
        let mut spec = JobSpec {
            job: job.into(),
            inputs,
            output: out.to_str().unwrap().into(),
            ..Default::default()
        };
        for (k, v) in set {
            spec.conf.set(k, *v);
        }
        let fs: Arc<dyn Fs> = Arc::new(LocalFs::new());
        prepare(&mut spec, fs.as_ref())?;
        run(&spec, fs, out.with_extension("scratch"), 2, &Quiet)
    }

    /// The output files in order, concatenated.
    fn output(out: &std::path::Path) -> String {
        assert!(out.join("_SUCCESS").exists());
        let mut names: Vec<_> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
            .iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("part-")
            })
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    #[test]
    fn wordcount_index_and_grep_equal_a_sequential_reference() {
        let d = tempfile::tempdir().unwrap();
        let inputs = corpus(d.path(), 4, 3000);
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut greps: BTreeMap<String, u64> = BTreeMap::new();
        let re = regex::Regex::new("[a-z]*o[a-z]").unwrap();
        for p in &inputs {
            let text = std::fs::read_to_string(p).unwrap();
            let name = p.rsplit('/').next().unwrap().to_string();
            for w in text.split_ascii_whitespace() {
                *counts.entry(w.into()).or_default() += 1;
                index.entry(w.into()).or_default().insert(name.clone());
            }
            for m in re.find_iter(&text) {
                *greps.entry(m.as_str().into()).or_default() += 1;
            }
        }
        // Small splits and a small sort buffer: many maps, many spills.
        let small = [
            (conf::REDUCES, "3"),
            (conf::SPLIT_MAX, "9000"),
            (conf::SORT_MB, "1"),
        ];
        let r = run_job("wordcount", inputs.clone(), &d.path().join("wc"), &small).unwrap();
        assert!(r.maps > 8, "{} maps", r.maps);
        let mut got: Vec<(String, u64)> = output(&d.path().join("wc"))
            .lines()
            .map(|l| {
                let (w, n) = l.split_once('\t').unwrap();
                (w.to_string(), n.parse().unwrap())
            })
            .collect();
        got.sort();
        assert_eq!(got, counts.clone().into_iter().collect::<Vec<_>>());
        assert_eq!(
            r.counters.get(c::TASK, c::REDUCE_OUTPUT_RECORDS),
            counts.len() as i64
        );
        assert_eq!(r.counters.get(c::TASK, c::MAP_INPUT_RECORDS), 4 * 3000);

        run_job(
            "invertedindex",
            inputs.clone(),
            &d.path().join("ii"),
            &small,
        )
        .unwrap();
        let mut got: Vec<String> = output(&d.path().join("ii"))
            .lines()
            .map(String::from)
            .collect();
        got.sort();
        let want: Vec<String> = index
            .iter()
            .map(|(w, fs)| format!("{w}\t{}", fs.iter().cloned().collect::<Vec<_>>().join(",")))
            .collect();
        assert_eq!(got, want);

        let mut g = small.to_vec();
        g.push((crate::jobs::grep::REGEX, "[a-z]*o[a-z]"));
        run_job("grep", inputs.clone(), &d.path().join("grep"), &g).unwrap();
        let mut got: Vec<String> = output(&d.path().join("grep"))
            .lines()
            .map(String::from)
            .collect();
        got.sort();
        let want: Vec<String> = greps.iter().map(|(m, n)| format!("{m}\t{n}")).collect();
        assert_eq!(got, want);

        // The same job again gives the same bytes, file for file.
        run_job("wordcount", inputs, &d.path().join("wc2"), &small).unwrap();
        for p in 0..3 {
            let f = format!("part-r-{p:05}");
            assert_eq!(
                std::fs::read(d.path().join("wc").join(&f)).unwrap(),
                std::fs::read(d.path().join("wc2").join(&f)).unwrap()
            );
        }
    }

    #[test]
    fn sort_orders_lines_across_output_files() {
        let d = tempfile::tempdir().unwrap();
        let inputs = corpus(d.path(), 3, 2000);
        let mut want: Vec<String> = inputs
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        want.sort();
        run_job(
            "sort",
            inputs,
            &d.path().join("out"),
            &[(conf::REDUCES, "4"), (conf::SPLIT_MAX, "20000")],
        )
        .unwrap();
        let got: Vec<String> = output(&d.path().join("out"))
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(got, want);
        let sizes: Vec<u64> = (0..4)
            .map(|p| {
                std::fs::metadata(d.path().join("out").join(format!("part-r-{p:05}")))
                    .unwrap()
                    .len()
            })
            .collect();
        assert!(
            sizes.iter().filter(|s| **s > 0).count() >= 3,
            "the sample spread the keys: {sizes:?}"
        );
    }

    #[test]
    fn teragen_terasort_teravalidate_with_reduces_that_merge_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let gen = d.path().join("gen");
        run_job(
            "teragen",
            vec![],
            &gen,
            &[
                (crate::jobs::tera::ROWS, "50000"),
                (crate::jobs::tera::MAPS, "3"),
            ],
        )
        .unwrap();
        assert!(gen.join("_checksum-m-00002").exists());
        let sorted = d.path().join("sorted");
        let set = [
            (conf::REDUCES, "3"),
            (conf::SPLIT_MAX, "1000000"),
            (conf::SORT_MB, "1"),
            // Each reduce gets ~1.7 MB against a 1 MiB buffer.
            (conf::SHUFFLE_BUFFER_MB, "1"),
            (conf::SORT_FACTOR, "3"),
        ];
        let r = run_job(
            "terasort",
            vec![gen.to_str().unwrap().into()],
            &sorted,
            &set,
        )
        .unwrap();
        assert_eq!(r.counters.get(c::TASK, c::REDUCE_OUTPUT_RECORDS), 50_000);
        let report = d.path().join("report");
        let expect = gen.to_str().unwrap();
        run_job(
            "teravalidate",
            vec![sorted.to_str().unwrap().into()],
            &report,
            &[(crate::jobs::tera::EXPECT_DIR, expect)],
        )
        .unwrap();
        let text = output(&report);
        assert!(!text.contains("error"), "{text}");
        assert!(text.contains("records\t50000"), "{text}");

        // A damaged sort is caught: swap two records of one file.
        let f = sorted.join("part-r-00001");
        let mut b = std::fs::read(&f).unwrap();
        let (x, y) = b.split_at_mut(100);
        x.swap_with_slice(&mut y[..100]);
        std::fs::write(&f, &b).unwrap();
        let report2 = d.path().join("report2");
        run_job(
            "teravalidate",
            vec![sorted.to_str().unwrap().into()],
            &report2,
            &[(crate::jobs::tera::EXPECT_DIR, expect)],
        )
        .unwrap();
        assert!(
            output(&report2).contains("error\tpart-r-00001: 1 records out of order"),
            "{}",
            output(&report2)
        );
    }

    #[test]
    fn bad_input_fails_before_anything_runs_and_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let inputs = corpus(d.path(), 1, 10);
        let e = run_job(
            "wordcount",
            vec![d.path().join("missing").to_str().unwrap().into()],
            &d.path().join("o1"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!d.path().join("o1").exists());
        std::fs::create_dir(d.path().join("exists")).unwrap();
        let e = run_job("wordcount", inputs.clone(), &d.path().join("exists"), &[]).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        let e = run_job(
            "grep",
            inputs.clone(),
            &d.path().join("o2"),
            &[(crate::jobs::grep::REGEX, "(")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a regular expression"), "{e}");
        let e = run_job(
            "wordcount",
            inputs.clone(),
            &d.path().join("o3"),
            &[(conf::REDUCES, "x")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("mapreduce.job.reduces"), "{e}");
        let e = run_job("nosuchjob", inputs, &d.path().join("o4"), &[]).unwrap_err();
        assert!(e.to_string().contains("no built-in job"), "{e}");
        for o in ["o2", "o3", "o4"] {
            assert!(!d.path().join(o).exists());
        }
    }
}
