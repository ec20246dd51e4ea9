//! Grep: how often each match of a regular expression
//! (`mapreduce.mapper.regex`) occurs in the input, as Hadoop's Grep
//! example counts them (`mapreduce.mapper.regexmapper..group` picks a
//! capture group; 0, the default, is the whole match). Output: `match
//! <TAB> count`, sorted by match.

use regex::bytes::Regex;

use super::{file_splits, Job, Sum, WordCounts};
use crate::api::{Emit, Mapper, Reducer, TaskContext};
use crate::fs::Fs;
use crate::spec::JobSpec;

pub const REGEX: &str = "mapreduce.mapper.regex";
pub const GROUP: &str = "mapreduce.mapper.regexmapper..group";

pub struct Grep;

fn compile(spec: &JobSpec) -> anyhow::Result<(Regex, usize)> {
    let Some(p) = spec.conf.get(REGEX).filter(|p| !p.is_empty()) else {
        anyhow::bail!("grep needs a pattern: --pattern REGEX (or -D {REGEX}=REGEX)");
    };
    let re = Regex::new(p)
        .map_err(|e| anyhow::anyhow!("the pattern {p:?} is not a regular expression: {e}"))?;
    let group: usize = spec
        .conf
        .get(GROUP)
        .unwrap_or("0")
        .parse()
        .map_err(|_| anyhow::anyhow!("{GROUP} must be a group number"))?;
    anyhow::ensure!(
        group < re.captures_len(),
        "{GROUP}={group}, but the pattern has {} groups",
        re.captures_len() - 1
    );
    Ok((re, group))
}

struct GrepMap {
    re: Regex,
    group: usize,
    counts: WordCounts,
}

impl Mapper for GrepMap {
    fn map(
        &mut self,
        _key: &[u8],
        line: &[u8],
        out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        if self.group == 0 {
            for m in self.re.find_iter(line) {
                self.counts.add(m.as_bytes(), 1);
            }
        } else {
            for c in self.re.captures_iter(line) {
                if let Some(m) = c.get(self.group) {
                    self.counts.add(m.as_bytes(), 1);
                }
            }
        }
        if self.counts.len() > 1 << 20 {
            self.counts.flush(out)?;
        }
        Ok(())
    }

    fn cleanup(&mut self, out: &mut dyn Emit, _ctx: &mut TaskContext) -> anyhow::Result<()> {
        self.counts.flush(out)
    }
}

impl Job for Grep {
    fn prepare(&self, spec: &mut JobSpec, fs: &dyn Fs) -> anyhow::Result<()> {
        compile(spec)?;
        file_splits(self, spec, fs)
    }
    fn mapper(&self, spec: &JobSpec) -> anyhow::Result<Box<dyn Mapper>> {
        let (re, group) = compile(spec)?;
        Ok(Box::new(GrepMap {
            re,
            group,
            counts: WordCounts::default(),
        }))
    }
    fn combiner(&self, _spec: &JobSpec) -> anyhow::Result<Option<Box<dyn Reducer>>> {
        Ok(Some(Box::new(Sum)))
    }
    fn reducer(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Reducer>> {
        Ok(Box::new(Sum))
    }
}
