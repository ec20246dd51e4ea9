//! Merging sorted runs: a k-way merge over sorted record sources (a
//! binary heap of source indices, ties going to the earlier source so a
//! merge is deterministic), and grouping a sorted stream by key for a
//! reducer or combiner.

use std::io::Read;

use crate::api::{Emit, Reducer, TaskContext, Values};
use crate::ifile::SegmentReader;

/// A sorted run of records, read one at a time.
pub trait RecordSource {
    /// Moves to the next record; false at the end.
    fn advance(&mut self) -> anyhow::Result<bool>;
    fn key(&self) -> &[u8];
    fn value(&self) -> &[u8];
}

impl<R: Read> RecordSource for SegmentReader<R> {
    #[inline]
    fn advance(&mut self) -> anyhow::Result<bool> {
        Ok(self.next_record()?)
    }
    #[inline]
    fn key(&self) -> &[u8] {
        SegmentReader::key(self)
    }
    #[inline]
    fn value(&self) -> &[u8] {
        SegmentReader::value(self)
    }
}

/// The k-way merge: itself a sorted source.
pub struct Merger<'a> {
    sources: Vec<Box<dyn RecordSource + 'a>>,
    heap: Vec<usize>,
    started: bool,
}

impl<'a> Merger<'a> {
    pub fn new(sources: Vec<Box<dyn RecordSource + 'a>>) -> Self {
        Self {
            sources,
            heap: Vec::new(),
            started: false,
        }
    }

    #[inline]
    fn less(&self, a: usize, b: usize) -> bool {
        match self.sources[a].key().cmp(self.sources[b].key()) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => a < b,
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                return;
            }
            let r = l + 1;
            let c = if r < n && self.less(self.heap[r], self.heap[l]) {
                r
            } else {
                l
            };
            if self.less(self.heap[c], self.heap[i]) {
                self.heap.swap(c, i);
                i = c;
            } else {
                return;
            }
        }
    }
}

impl RecordSource for Merger<'_> {
    fn advance(&mut self) -> anyhow::Result<bool> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                if self.sources[i].advance()? {
                    self.heap.push(i);
                }
            }
            for i in (0..self.heap.len() / 2).rev() {
                self.sift_down(i);
            }
            return Ok(!self.heap.is_empty());
        }
        let Some(&top) = self.heap.first() else {
            return Ok(false);
        };
        if !self.sources[top].advance()? {
            let last = self.heap.pop().expect("non-empty");
            if self.heap.is_empty() {
                return Ok(false);
            }
            self.heap[0] = last;
        }
        self.sift_down(0);
        Ok(true)
    }

    #[inline]
    fn key(&self) -> &[u8] {
        self.sources[self.heap[0]].key()
    }

    #[inline]
    fn value(&self) -> &[u8] {
        self.sources[self.heap[0]].value()
    }
}

/// The values of the current key, pulled from the merge.
struct GroupValues<'s, 'k> {
    src: &'s mut dyn RecordSource,
    key: &'k [u8],
    first: bool,
    /// The group ended: `more` says whether the source stands at the next
    /// group's first record.
    done: bool,
    more: bool,
    count: u64,
}

impl Values for GroupValues<'_, '_> {
    fn next_value(&mut self) -> anyhow::Result<Option<&[u8]>> {
        if self.done {
            return Ok(None);
        }
        if self.first {
            self.first = false;
        } else if !self.src.advance()? {
            self.done = true;
            self.more = false;
            return Ok(None);
        } else if self.src.key() != self.key {
            self.done = true;
            self.more = true;
            return Ok(None);
        }
        self.count += 1;
        Ok(Some(self.src.value()))
    }
}

/// What grouping saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Grouped {
    pub groups: u64,
    pub records: u64,
}

/// Calls `f` once per key of a sorted source, with an iterator over its
/// values. `src` must not have been advanced yet.
pub fn for_each_group(
    src: &mut dyn RecordSource,
    mut f: impl FnMut(&[u8], &mut dyn Values) -> anyhow::Result<()>,
) -> anyhow::Result<Grouped> {
    let mut g = Grouped::default();
    let mut more = src.advance()?;
    let mut key = Vec::new();
    while more {
        key.clear();
        key.extend_from_slice(src.key());
        let mut vals = GroupValues {
            src: &mut *src,
            key: &key,
            first: true,
            done: false,
            more: false,
            count: 0,
        };
        f(&key, &mut vals)?;
        // Whatever the reducer left unread.
        while vals.next_value()?.is_some() {}
        g.groups += 1;
        g.records += vals.count;
        more = vals.more;
    }
    Ok(g)
}

/// Runs a reducer (or combiner) over a sorted source, emitting into `out`.
pub fn reduce_all(
    src: &mut dyn RecordSource,
    r: &mut dyn Reducer,
    out: &mut dyn Emit,
    ctx: &mut TaskContext,
) -> anyhow::Result<Grouped> {
    for_each_group(src, |k, vals| r.reduce(k, vals, out, ctx))
}

/// A sorted source over records in memory (tests, small runs).
pub struct VecSource {
    recs: Vec<(Vec<u8>, Vec<u8>)>,
    i: usize,
}

impl VecSource {
    /// `recs` must be sorted by key.
    pub fn new(recs: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        Self {
            recs,
            i: usize::MAX,
        }
    }
}

impl RecordSource for VecSource {
    fn advance(&mut self) -> anyhow::Result<bool> {
        self.i = self.i.wrapping_add(1);
        Ok(self.i < self.recs.len())
    }
    fn key(&self) -> &[u8] {
        &self.recs[self.i].0
    }
    fn value(&self) -> &[u8] {
        &self.recs[self.i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(keys: &[&str], tag: &str) -> Box<dyn RecordSource> {
        Box::new(VecSource::new(
            keys.iter()
                .map(|k| (k.as_bytes().to_vec(), tag.as_bytes().to_vec()))
                .collect(),
        ))
    }

    #[test]
    fn merges_in_key_order_ties_to_the_earlier_source() {
        let mut m = Merger::new(vec![
            src(&["a", "c", "c", "e"], "0"),
            src(&[], "1"),
            src(&["b", "c", "f"], "2"),
            src(&["a"], "3"),
        ]);
        let mut got = Vec::new();
        while m.advance().unwrap() {
            got.push(format!(
                "{}{}",
                String::from_utf8_lossy(m.key()),
                String::from_utf8_lossy(m.value())
            ));
        }
        assert_eq!(got, ["a0", "a3", "b2", "c0", "c0", "c2", "e0", "f2"]);
        assert!(!m.advance().unwrap());
    }

    #[test]
    fn groups_by_key_even_when_values_are_left_unread() {
        let mut m = Merger::new(vec![src(&["a", "b", "b", "b", "c"], "x"), src(&["b"], "y")]);
        let mut seen = Vec::new();
        let g = for_each_group(&mut m, |k, vals| {
            // Read only the first value of "b".
            let mut n = 0;
            while let Some(v) = vals.next_value()? {
                n += 1;
                seen.push(format!(
                    "{}{}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                ));
                if k == b"b" {
                    break;
                }
            }
            assert!(n > 0);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["ax", "bx", "cx"]);
        assert_eq!(g.groups, 3);
        assert_eq!(g.records, 6);
    }
}
