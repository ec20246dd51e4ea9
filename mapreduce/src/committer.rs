//! The output committer (Hadoop's FileOutputCommitter, its v1 algorithm,
//! with task commit by one rename). Every attempt writes under its own
//! directory, `OUTPUT/_temporary/attempts/<attempt>/`; a task commits by
//! renaming that directory to `OUTPUT/_temporary/tasks/<task>/` — the
//! rename succeeds for exactly one attempt of a task, and a committed
//! task's directory also holds its `_task.json` (its counters), so a
//! restarted application master sees what is done without re-running it.
//! The job commits by moving every committed task's files into `OUTPUT/`,
//! removing `_temporary` and writing `_SUCCESS` last: output without
//! `_SUCCESS` is never complete, and a failed or killed job leaves none.

use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::Context;

use crate::fs::{self, Fs};

pub const SUCCESS: &str = "_SUCCESS";
pub const TASK_RECORD: &str = "_task.json";

#[derive(Clone)]
pub struct Committer {
    pub fs: Arc<dyn Fs>,
    pub output: String,
}

impl Committer {
    pub fn new(fs: Arc<dyn Fs>, output: &str) -> Self {
        Self {
            fs,
            output: output.trim_end_matches('/').to_string(),
        }
    }

    fn temp(&self) -> String {
        fs::join(&self.output, "_temporary")
    }

    pub fn setup_job(&self) -> anyhow::Result<()> {
        self.fs.mkdirs(&fs::join(&self.temp(), "attempts"))?;
        self.fs.mkdirs(&fs::join(&self.temp(), "tasks"))
    }

    pub fn attempt_dir(&self, attempt: &str) -> String {
        fs::join(&fs::join(&self.temp(), "attempts"), attempt)
    }

    pub fn task_dir(&self, task: &str) -> String {
        fs::join(&fs::join(&self.temp(), "tasks"), task)
    }

    /// Commits `attempt` as `task`'s output; false when another attempt
    /// already did (this one's output is then thrown away).
    pub fn commit_task(&self, task: &str, attempt: &str, record: &[u8]) -> anyhow::Result<bool> {
        let dir = self.attempt_dir(attempt);
        self.fs.mkdirs(&dir)?;
        let rec = fs::join(&dir, TASK_RECORD);
        self.fs.delete(&rec, false)?;
        let mut w = self.fs.create(&rec, 0)?;
        w.write_all(record)?;
        w.close()?;
        let to = self.task_dir(task);
        if self.fs.status(&to)?.is_some() {
            self.abort_task(attempt);
            return Ok(false);
        }
        self.fs
            .rename(&dir, &to)
            .with_context(|| format!("cannot commit {attempt}"))?;
        Ok(true)
    }

    /// What a committed task recorded; `None` if it is not committed.
    pub fn committed(&self, task: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let rec = fs::join(&self.task_dir(task), TASK_RECORD);
        if self.fs.status(&rec)?.is_none() {
            return Ok(None);
        }
        let mut r = self.fs.open(&rec, 0)?;
        let mut b = Vec::new();
        r.read_to_end(&mut b)?;
        Ok(Some(b))
    }

    pub fn abort_task(&self, attempt: &str) {
        let _ = self.fs.delete(&self.attempt_dir(attempt), true);
    }

    /// Moves every committed task's files into the output, then writes
    /// `_SUCCESS`.
    pub fn commit_job(&self) -> anyhow::Result<()> {
        let tasks = self.fs.list(&fs::join(&self.temp(), "tasks"))?;
        for t in tasks {
            for f in self.fs.list(&t.path)? {
                let name = fs::base_name(&f.path);
                if name == TASK_RECORD {
                    continue;
                }
                self.fs
                    .rename(&f.path, &fs::join(&self.output, name))
                    .with_context(|| format!("committing the job: {name}"))?;
            }
        }
        self.fs.delete(&self.temp(), true)?;
        let w = self.fs.create(&fs::join(&self.output, SUCCESS), 0)?;
        w.close()
    }

    /// Removes every attempt's and task's output.
    pub fn abort_job(&self) {
        let _ = self.fs.delete(&self.temp(), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::LocalFs;

    #[test]
    fn one_attempt_commits_and_the_job_writes_success_last() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let c = Committer::new(Arc::new(LocalFs::new()), out.to_str().unwrap());
        c.setup_job().unwrap();
        for a in ["attempt_j_r_000000_0", "attempt_j_r_000000_1"] {
            let p = fs::join(&c.attempt_dir(a), "part-r-00000");
            let mut w = c.fs.create(&p, 0).unwrap();
            w.write_all(a.as_bytes()).unwrap();
            w.close().unwrap();
        }
        assert!(c
            .commit_task("task_j_r_000000", "attempt_j_r_000000_1", b"{}")
            .unwrap());
        assert!(!c
            .commit_task("task_j_r_000000", "attempt_j_r_000000_0", b"{}")
            .unwrap());
        assert_eq!(
            c.committed("task_j_r_000000").unwrap().as_deref(),
            Some(&b"{}"[..])
        );
        assert!(c.committed("task_j_r_000001").unwrap().is_none());
        assert!(!out.join(SUCCESS).exists());
        c.commit_job().unwrap();
        assert_eq!(
            std::fs::read(out.join("part-r-00000")).unwrap(),
            b"attempt_j_r_000000_1"
        );
        assert!(out.join(SUCCESS).exists());
        assert!(!out.join("_temporary").exists());
        assert!(!out.join(TASK_RECORD).exists());
    }

    #[test]
    fn an_aborted_job_leaves_nothing_that_looks_complete() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let c = Committer::new(Arc::new(LocalFs::new()), out.to_str().unwrap());
        c.setup_job().unwrap();
        let mut w =
            c.fs.create(&fs::join(&c.attempt_dir("a"), "part-r-00000"), 0)
                .unwrap();
        w.write_all(b"x").unwrap();
        w.close().unwrap();
        c.commit_task("t", "a", b"{}").unwrap();
        c.abort_job();
        assert!(!out.join("_temporary").exists());
        assert!(!out.join(SUCCESS).exists());
        assert!(!out.join("part-r-00000").exists());
    }
}
