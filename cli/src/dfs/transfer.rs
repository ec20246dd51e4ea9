//! The verbs that move bytes: put, get, getmerge, cat, head, tail, cp.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use hstack_dfs::client::{CreateOptions, FileReader};
use serde_json::json;

use super::{base_name, join, must_be_dir, Shell};
use crate::output;

/// `put LOCAL… DST`: every source and the destination are checked, then
/// the files are written.
pub(super) async fn put(
    sh: &Shell,
    args: &[String],
    opts: &CreateOptions,
    quiet: bool,
) -> anyhow::Result<()> {
    let (srcs, dst) = if args.len() == 1 {
        (args, ".")
    } else {
        (&args[..args.len() - 1], args[args.len() - 1].as_str())
    };
    let dst = sh.target(dst)?;
    let stdin = srcs.iter().any(|s| s == "-");
    if stdin && srcs.len() > 1 {
        bail!("- (standard input) must be the only source");
    }
    let mut lens = Vec::new();
    for s in srcs.iter().filter(|s| *s != "-") {
        let m =
            std::fs::metadata(s).with_context(|| format!("`{s}': No such file or directory"))?;
        if m.is_dir() {
            bail!("`{s}': Is a directory (put copies files; nothing was done)");
        }
        lens.push(m.len());
    }
    let dst_dir = match sh.c.stat(&dst).await? {
        Some(s) => s.is_dir,
        None => false,
    };
    if srcs.len() > 1 {
        must_be_dir(sh, &dst).await?;
    }
    let mut targets = Vec::new();
    for s in srcs {
        let t = if dst_dir {
            if s == "-" {
                bail!("`{dst}': Is a directory; name the destination file");
            }
            let name = Path::new(s)
                .file_name()
                .with_context(|| format!("`{s}': names no file"))?;
            join(&dst, &name.to_string_lossy())
        } else {
            dst.clone()
        };
        if !opts.overwrite {
            if let Some(e) = sh.c.stat(&t).await? {
                if e.is_dir {
                    bail!("`{t}': Is a directory (nothing was done)");
                }
                bail!("`{t}': File exists (-f overwrites; nothing was done)");
            }
        }
        targets.push((s.as_str(), t));
    }
    let mut done = Vec::new();
    for (src, t) in targets {
        let n = put_one(sh, src, &t, opts, quiet).await?;
        done.push(json!({ "local": src, "path": t, "length": n }));
    }
    if sh.json {
        sh.print_json(&json!(done))?;
    }
    Ok(())
}

async fn put_one(
    sh: &Shell,
    local: &str,
    dst: &str,
    opts: &CreateOptions,
    quiet: bool,
) -> anyhow::Result<u64> {
    let (mut input, total): (Box<dyn Read>, Option<u64>) = if local == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(local).with_context(|| format!("cannot open {local}"))?;
        let len = f.metadata()?.len();
        (Box::new(f), Some(len))
    };
    let mut w = sh.c.create(dst, opts).await?;
    let progress = output::progress(&format!("put {dst}"), total, quiet || sh.json);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n]).await?;
        progress.set_position(w.written());
    }
    let n = w.written();
    w.close().await?;
    progress.finish_and_clear();
    Ok(n)
}

/// `get SRC… LOCAL`.
pub(super) async fn get(sh: &Shell, args: &[String], force: bool) -> anyhow::Result<()> {
    let (srcs, local) = if args.len() == 1 {
        (args, ".")
    } else {
        (&args[..args.len() - 1], args[args.len() - 1].as_str())
    };
    let found = sh.sources(srcs, false).await?;
    for s in &found {
        if sh.stat(s).await?.is_dir {
            bail!("`{s}': Is a directory (get copies files; nothing was done)");
        }
    }
    if local == "-" {
        let mut out = std::io::stdout().lock();
        for s in &found {
            let mut r = sh.c.open(s).await?;
            while let Some(b) = r.read_chunk().await? {
                out.write_all(&b)?;
            }
        }
        out.flush()?;
        return Ok(());
    }
    let local = Path::new(local);
    if found.len() > 1 && !local.is_dir() {
        bail!(
            "`{}': Is not a directory (several sources need a directory; nothing was done)",
            local.display()
        );
    }
    let mut targets = Vec::new();
    for s in &found {
        let t: PathBuf = if local.is_dir() {
            local.join(base_name(s))
        } else {
            local.to_path_buf()
        };
        if t.exists() && !force {
            bail!(
                "`{}': File exists (-f overwrites; nothing was done)",
                t.display()
            );
        }
        targets.push((s, t));
    }
    let mut done = Vec::new();
    for (s, t) in targets {
        let mut r = sh.c.open(s).await?;
        // Written beside the target and renamed: no half file on failure.
        let tmp = t.with_extension("hstack-get.tmp");
        let f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let progress = output::progress(&format!("get {s}"), Some(r.len()), sh.json);
        while let Some(b) = r.read_chunk().await? {
            w.write_all(&b)?;
            progress.set_position(r.pos());
        }
        w.flush()?;
        drop(w);
        progress.finish_and_clear();
        std::fs::rename(&tmp, &t)?;
        done.push(json!({ "path": s, "local": t, "length": r.len() }));
    }
    if sh.json {
        sh.print_json(&json!(done))?;
    }
    Ok(())
}

/// `getmerge SRC… LOCAL`.
pub(super) async fn getmerge(
    sh: &Shell,
    args: &[String],
    nl: bool,
    skip_empty: bool,
) -> anyhow::Result<()> {
    let (srcs, local) = args.split_at(args.len() - 1);
    let local = PathBuf::from(&local[0]);
    let found = sh.sources(srcs, false).await?;
    let mut files = Vec::new();
    for s in &found {
        let st = sh.stat(s).await?;
        if st.is_dir {
            let mut entries: Vec<_> =
                sh.c.list(s)
                    .await?
                    .into_iter()
                    .filter(|e| !e.is_dir)
                    .collect();
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            files.extend(entries);
        } else {
            files.push(st);
        }
    }
    if local.is_dir() {
        bail!("`{}': Is a directory", local.display());
    }
    let tmp = local.with_extension("hstack-getmerge.tmp");
    let f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut total = 0u64;
    let mut merged = Vec::new();
    let result: anyhow::Result<()> = async {
        for st in &files {
            if skip_empty && st.len == 0 {
                continue;
            }
            let mut r = sh.c.open(&st.path).await?;
            while let Some(b) = r.read_chunk().await? {
                w.write_all(&b)?;
                total += b.len() as u64;
            }
            if nl {
                w.write_all(b"\n")?;
                total += 1;
            }
            merged.push(st.path.clone());
        }
        w.flush()?;
        Ok(())
    }
    .await;
    drop(w);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &local)?;
    if sh.json {
        sh.print_json(&json!({ "local": local, "files": merged, "length": total }))?;
    }
    Ok(())
}

/// At most `left` bytes from the reader's position: to stdout, or
/// gathered for `--json`.
async fn copy_out(r: &mut FileReader, mut left: u64, keep: bool) -> anyhow::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut out = std::io::stdout().lock();
    while left > 0 {
        let Some(b) = r.read_chunk().await? else {
            break;
        };
        let n = (b.len() as u64).min(left) as usize;
        if keep {
            kept.extend_from_slice(&b[..n]);
        } else {
            out.write_all(&b[..n])?;
        }
        left -= n as u64;
    }
    out.flush()?;
    Ok(kept)
}

fn piece_json(path: &str, offset: u64, data: &[u8]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("path".into(), path.into());
    m.insert("offset".into(), offset.into());
    m.insert("length".into(), (data.len() as u64).into());
    output::put_data(&mut m, data);
    serde_json::Value::Object(m)
}

pub(super) async fn cat(
    sh: &Shell,
    paths: &[String],
    offset: u64,
    length: Option<u64>,
) -> anyhow::Result<()> {
    let found = sh.sources(paths, false).await?;
    let mut pieces = Vec::new();
    for p in &found {
        let mut r = sh.c.open(p).await?;
        r.seek(offset)?;
        let data = copy_out(&mut r, length.unwrap_or(u64::MAX), sh.json).await?;
        if sh.json {
            pieces.push(piece_json(p, offset, &data));
        }
    }
    if sh.json {
        sh.print_json(&json!(pieces))?;
    }
    Ok(())
}

/// The first kilobyte, as `hdfs dfs -head`.
pub(super) async fn head(sh: &Shell, paths: &[String]) -> anyhow::Result<()> {
    let found = sh.sources(paths, false).await?;
    let mut pieces = Vec::new();
    for p in &found {
        let mut r = sh.c.open(p).await?;
        let data = copy_out(&mut r, 1024, sh.json).await?;
        if sh.json {
            pieces.push(piece_json(p, 0, &data));
        }
    }
    if sh.json {
        if pieces.len() == 1 {
            sh.print_json(&pieces[0])?;
        } else {
            sh.print_json(&json!(pieces))?;
        }
    }
    Ok(())
}

/// The last kilobyte; with `follow`, then what is appended, checked every
/// second until interrupted.
pub(super) async fn tail(sh: &Shell, path: &str, follow: bool) -> anyhow::Result<()> {
    let found = sh.sources(&[path.to_string()], false).await?;
    if found.len() != 1 {
        bail!("`{path}': tail takes one file, this names {}", found.len());
    }
    let p = &found[0];
    let mut r = sh.c.open(p).await?;
    let start = r.len().saturating_sub(1024);
    r.seek(start)?;
    let data = copy_out(&mut r, u64::MAX, sh.json).await?;
    if sh.json {
        let v = piece_json(p, start, &data);
        if follow {
            println!("{v}");
        } else {
            sh.print_json(&v)?;
        }
    }
    if !follow {
        return Ok(());
    }
    let mut pos = r.len();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let len = sh.stat(p).await?.len;
        if len <= pos {
            continue;
        }
        let mut r = sh.c.open(p).await?;
        if r.len() <= pos {
            continue;
        }
        r.seek(pos)?;
        let data = copy_out(&mut r, u64::MAX, sh.json).await?;
        if sh.json {
            println!("{}", piece_json(p, pos, &data));
        }
        pos = r.len();
    }
}

/// `cp SRC… DST`: files only; every source and target is checked first.
pub(super) async fn cp(sh: &Shell, args: &[String], force: bool) -> anyhow::Result<()> {
    let (srcs, dst) = args.split_at(args.len() - 1);
    let found = sh.sources(srcs, false).await?;
    let dst = sh.target(&dst[0])?;
    if found.len() > 1 {
        must_be_dir(sh, &dst).await?;
    }
    let dst_dir = matches!(sh.c.stat(&dst).await?, Some(s) if s.is_dir);
    let mut plan = Vec::new();
    for s in &found {
        let st = sh.stat(s).await?;
        if st.is_dir {
            bail!("`{s}': Is a directory (cp copies files; nothing was done)");
        }
        let t = if dst_dir {
            join(&dst, base_name(s))
        } else {
            dst.clone()
        };
        if !force && sh.c.stat(&t).await?.is_some() {
            bail!("`{t}': File exists (-f overwrites; nothing was done)");
        }
        plan.push((st, t));
    }
    let mut done = Vec::new();
    for (st, t) in plan {
        let mut r = sh.c.open(&st.path).await?;
        let mut w =
            sh.c.create(
                &t,
                &CreateOptions {
                    overwrite: force,
                    replication: st.replication,
                    block_size: st.block_size,
                    ..Default::default()
                },
            )
            .await?;
        while let Some(b) = r.read_chunk().await? {
            w.write(&b).await?;
        }
        w.close().await?;
        done.push(json!({ "src": st.path, "dst": t, "length": st.len }));
    }
    if sh.json {
        sh.print_json(&json!(done))?;
    }
    Ok(())
}
