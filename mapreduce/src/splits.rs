//! From input paths to map tasks: patterns expanded (globs, one path
//! component at a time, as HDFS's globber), directories read one level
//! deep, hidden files (`_…`, `.…`) skipped, then one split per block of
//! each file (within `split.minsize`/`split.maxsize`), carrying the
//! block's hosts and racks so the map can be asked for where its data is.
//! A missing input fails here, before anything runs.

use globset::GlobBuilder;

use crate::conf::{self, JobConf};
use crate::fs::{self, FileInfo, Fs};
use crate::io::Split;

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

fn matches(pattern: &str, name: &str) -> anyhow::Result<bool> {
    let g = GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| anyhow::anyhow!("bad glob pattern `{pattern}': {}", e.kind()))?;
    Ok(g.compile_matcher().is_match(name))
}

/// The paths one pattern names, sorted.
fn expand(fs: &dyn Fs, pattern: &str) -> anyhow::Result<Vec<FileInfo>> {
    if !is_glob(pattern) {
        return Ok(fs.status(pattern)?.into_iter().collect());
    }
    let absolute = pattern.starts_with('/');
    let mut dirs: Vec<String> = vec![if absolute { "/".into() } else { ".".into() }];
    let parts: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let mut found = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let mut next = Vec::new();
        for d in &dirs {
            if is_glob(part) {
                let Some(st) = fs.status(d)? else { continue };
                if !st.is_dir {
                    continue;
                }
                for e in fs.list(d)? {
                    if matches(part, fs::base_name(&e.path))? {
                        if last {
                            found.push(e);
                        } else if e.is_dir {
                            next.push(e.path);
                        }
                    }
                }
            } else {
                let p = if d == "." && !absolute {
                    part.to_string()
                } else {
                    fs::join(d, part)
                };
                if last {
                    if let Some(st) = fs.status(&p)? {
                        found.push(FileInfo { path: p, ..st });
                    }
                } else {
                    next.push(p);
                }
            }
        }
        dirs = next;
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Every input file, in order: each pattern's matches, a directory's
/// visible files.
pub fn input_files(fs: &dyn Fs, inputs: &[String]) -> anyhow::Result<Vec<FileInfo>> {
    if inputs.is_empty() {
        anyhow::bail!("no input: name at least one input path");
    }
    let mut files = Vec::new();
    for pat in inputs {
        let found = expand(fs, pat)?;
        if found.is_empty() {
            if is_glob(pat) {
                anyhow::bail!("input pattern {pat} matches nothing");
            }
            anyhow::bail!("input path does not exist: {pat}");
        }
        for f in found {
            if f.is_dir {
                for e in fs.list(&f.path)? {
                    if !e.is_dir && !fs::is_hidden(&e.path) {
                        files.push(e);
                    }
                }
            } else {
                files.push(f);
            }
        }
    }
    Ok(files)
}

/// One split per block (or per `split.maxsize` piece) of every file; a
/// file that is not splittable is one split.
pub fn file_splits(
    fs: &dyn Fs,
    files: &[FileInfo],
    splittable: bool,
    conf: &JobConf,
) -> anyhow::Result<Vec<Split>> {
    let min = conf.u64(conf::SPLIT_MIN);
    let max = conf.u64(conf::SPLIT_MAX);
    let mut out = Vec::new();
    for f in files {
        if f.len == 0 {
            // An empty file still gets a (trivial) map, as in Hadoop.
            out.push(Split {
                path: f.path.clone(),
                file_len: 0,
                ..Default::default()
            });
            continue;
        }
        let blocks = fs.blocks(f)?;
        if !splittable {
            let b = blocks.first().cloned().unwrap_or_default();
            out.push(Split {
                path: f.path.clone(),
                start: 0,
                len: f.len,
                file_len: f.len,
                hosts: b.hosts,
                racks: b.racks,
            });
            continue;
        }
        let size = {
            let bs = if max > 0 {
                f.block_size.min(max)
            } else {
                f.block_size
            };
            bs.max(min).max(1)
        };
        let mut off = 0;
        while off < f.len {
            let mut len = size.min(f.len - off);
            // Hadoop's slop: a last piece under a tenth goes with this one.
            if f.len - off - len < size / 10 {
                len = f.len - off;
            }
            let b = blocks
                .iter()
                .find(|b| b.offset <= off && off < b.offset + b.len.max(1))
                .cloned()
                .unwrap_or_default();
            out.push(Split {
                path: f.path.clone(),
                start: off,
                len,
                file_len: f.len,
                hosts: b.hosts,
                racks: b.racks,
            });
            off += len;
        }
    }
    Ok(out)
}

/// `reduces − 1` boundaries from sampled keys (sorted, duplicates kept):
/// key `i·n/reduces` for each `i`.
pub fn boundaries(mut samples: Vec<Vec<u8>>, reduces: u32) -> Vec<Vec<u8>> {
    samples.sort();
    if reduces <= 1 || samples.is_empty() {
        return Vec::new();
    }
    let n = samples.len();
    (1..reduces as usize)
        .map(|i| samples[(i * n / reduces as usize).min(n - 1)].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::LocalFs;

    #[test]
    fn globs_directories_and_missing_inputs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap();
        for p in [
            "a/x.txt",
            "a/y.log",
            "b/x.txt",
            "a/_SUCCESS",
            "a/.hidden",
            "c/sub/z.txt",
        ] {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"data\n").unwrap();
        }
        let fs = LocalFs::new();
        let names = |v: Vec<FileInfo>| -> Vec<String> {
            v.into_iter()
                .map(|f| f.path.strip_prefix(root).unwrap().to_string())
                .collect()
        };
        assert_eq!(
            names(input_files(&fs, &[format!("{root}/*/x.txt")]).unwrap()),
            ["/a/x.txt", "/b/x.txt"]
        );
        assert_eq!(
            names(input_files(&fs, &[format!("{root}/a")]).unwrap()),
            ["/a/x.txt", "/a/y.log"]
        );
        assert_eq!(
            names(input_files(&fs, &[format!("{root}/{{a,b}}/*.txt")]).unwrap()),
            ["/a/x.txt", "/b/x.txt"]
        );
        let e = input_files(&fs, &[format!("{root}/nope")]).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = input_files(&fs, &[format!("{root}/*/none*")]).unwrap_err();
        assert!(e.to_string().contains("matches nothing"), "{e}");
    }

    #[test]
    fn one_split_per_block_with_slop_and_boundaries() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, vec![b'x'; 1005]).unwrap();
        let fs = LocalFs::new();
        let mut f = fs.status(p.to_str().unwrap()).unwrap().unwrap();
        f.block_size = 100;
        let s = file_splits(&fs, &[f.clone()], true, &JobConf::default()).unwrap();
        assert_eq!(s.len(), 10);
        assert_eq!(s[9].len, 105, "the last 5 bytes join the last split");
        assert_eq!(s.iter().map(|s| s.len).sum::<u64>(), 1005);
        let s = file_splits(&fs, &[f], false, &JobConf::default()).unwrap();
        assert_eq!(s.len(), 1);
        let b = boundaries((0..100u8).rev().map(|i| vec![i]).collect(), 4);
        assert_eq!(b, vec![vec![25], vec![50], vec![75]]);
    }
}
