//! Inverted index (the MapReduce paper's example): for each word, the
//! input files it appears in. Output: `word <TAB> file1,file2,…`, file
//! names (the last path component) sorted and each listed once.

use std::collections::BTreeSet;

use super::{words, ByteMap, Job};
use crate::api::{Emit, Mapper, Reducer, TaskContext, Values};
use crate::fs;
use crate::spec::JobSpec;

pub struct InvertedIndex;

/// Emits each word once per split, with the split's file.
struct IndexMap {
    seen: ByteMap<()>,
    file: Vec<u8>,
}

impl Mapper for IndexMap {
    fn setup(&mut self, ctx: &mut TaskContext) -> anyhow::Result<()> {
        self.file = fs::base_name(&ctx.info.input_file).as_bytes().to_vec();
        anyhow::ensure!(
            !self.file.contains(&b','),
            "file name {:?} holds a comma, the list separator",
            ctx.info.input_file
        );
        Ok(())
    }

    fn map(
        &mut self,
        _key: &[u8],
        line: &[u8],
        out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        for w in words(line) {
            if !self.seen.contains_key(w) {
                self.seen.insert(w.to_vec(), ());
                out.emit(w, &self.file)?;
            }
        }
        Ok(())
    }
}

/// Every distinct file of a word's values (each a file or a list of
/// them), sorted, comma-separated: the combiner and the reducer.
struct Files;

impl Reducer for Files {
    fn reduce(
        &mut self,
        key: &[u8],
        values: &mut dyn Values,
        out: &mut dyn Emit,
        _ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        let mut files: BTreeSet<Vec<u8>> = BTreeSet::new();
        while let Some(v) = values.next_value()? {
            for f in v.split(|&b| b == b',') {
                if !files.contains(f) {
                    files.insert(f.to_vec());
                }
            }
        }
        let list: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        out.emit(key, &list.join(&b','))
    }
}

impl Job for InvertedIndex {
    fn mapper(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Mapper>> {
        Ok(Box::new(IndexMap {
            seen: ByteMap::default(),
            file: Vec::new(),
        }))
    }
    fn combiner(&self, _spec: &JobSpec) -> anyhow::Result<Option<Box<dyn Reducer>>> {
        Ok(Some(Box::new(Files)))
    }
    fn reducer(&self, _spec: &JobSpec) -> anyhow::Result<Box<dyn Reducer>> {
        Ok(Box::new(Files))
    }
}
