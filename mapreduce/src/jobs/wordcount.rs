//! Word count: each word of the input and how often it appears. The
//! mapper counts in a hash map and emits each word once per split (or
//! when the map grows past a bound) — "in-mapper combining", the
//! map-side aggregation Spark's reduceByKey does — rather than a record
//! per word; the combiner and reducer sum.

use super::{words, Job, Sum, WordCounts};
use crate::api::{Emit, Mapper, Reducer, TaskContext};
use crate::spec::JobSpec;

pub struct WordCount;

/// Distinct words held before the mapper emits what it has.
const MAX_WORDS: usize = 1 << 20;

pub struct CountWords {
    counts: WordCounts,
}

impl CountWords {
    pub fn new() -> Self {
        Self {
            counts: WordCounts::default(),
        }
    }

    #[inline]
    pub fn add(&mut self, w: &[u8]) {
        self.counts.add(w, 1);
    }
}

impl Default for CountWords {
    fn default() -> Self {
        Self::new()
    }
}

impl Mapper for CountWords {
    fn map(
        &mut self,
        _key: &[u8],
        line: &[u8],
        out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        for w in words(line) {
            self.add(w);
        }
        if self.counts.len() > MAX_WORDS {
            self.counts.flush(out)?;
        }
        Ok(())
    }

    fn cleanup(&mut self, out: &mut dyn Emit, _ctx: &mut TaskContext) -> anyhow::Result<()> {
        self.counts.flush(out)
    }
}

impl Job for WordCount {
    fn mapper(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Mapper>> {
        Ok(Box::new(CountWords::new()))
    }
    fn combiner(&self, _spec: &JobSpec) -> anyhow::Result<Option<Box<dyn Reducer>>> {
        Ok(Some(Box::new(Sum)))
    }
    fn reducer(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Reducer>> {
        Ok(Box::new(Sum))
    }
}
