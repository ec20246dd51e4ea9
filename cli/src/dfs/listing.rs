//! The verbs that look: ls, stat, du, count, df, find.

use hstack_dfs::client::Repeat;
use hstack_dfs::namespace::mode_string;
use hstack_proto::dfs as pb;
use serde_json::json;

use super::{base_name, glob, ls_row, status_json, walk, walk_sorted, Shell};
use crate::output;

pub(super) struct LsOptions {
    pub recursive: bool,
    pub dirs: bool,
    pub human: bool,
    pub by_time: bool,
    pub by_size: bool,
    pub reverse: bool,
    pub atime: bool,
    pub paths_only: bool,
}

impl LsOptions {
    fn sort(&self, entries: &mut [pb::FileStatus]) {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        if self.by_time {
            let t = |s: &pb::FileStatus| if self.atime { s.atime_ms } else { s.mtime_ms };
            entries.sort_by_key(|s| std::cmp::Reverse(t(s)));
        } else if self.by_size {
            entries.sort_by_key(|s| std::cmp::Reverse(s.len));
        }
        if self.reverse {
            entries.reverse();
        }
    }
}

/// One block of output: an optional "Found N items" and its entries.
struct Block {
    found: Option<usize>,
    entries: Vec<pb::FileStatus>,
}

pub(super) async fn ls(sh: &Shell, paths: &[String], o: &LsOptions) -> anyhow::Result<()> {
    let found = sh.sources(paths, false).await?;
    let mut blocks = Vec::new();
    let mut plain = Vec::new();
    for p in &found {
        let s = sh.stat(p).await?;
        if !s.is_dir || o.dirs {
            plain.push(s);
            continue;
        }
        if o.recursive {
            blocks.push(Block {
                found: None,
                entries: walk_sorted(&sh.c, p, &|v| o.sort(v)).await?,
            });
        } else {
            let mut entries = sh.c.list(p).await?;
            o.sort(&mut entries);
            blocks.push(Block {
                found: Some(entries.len()),
                entries,
            });
        }
    }
    if !plain.is_empty() {
        o.sort(&mut plain);
        blocks.insert(
            0,
            Block {
                found: None,
                entries: plain,
            },
        );
    }
    if sh.json {
        let all: Vec<_> = blocks
            .iter()
            .flat_map(|b| b.entries.iter().map(status_json))
            .collect();
        return sh.print_json(&json!(all));
    }
    let rows: Vec<Vec<Vec<String>>> = blocks
        .iter()
        .map(|b| {
            b.entries
                .iter()
                .map(|s| ls_row(s, o.human, o.atime))
                .collect()
        })
        .collect();
    // One layout for every group, so columns line up across them.
    let counts: Vec<usize> = rows.iter().map(Vec::len).collect();
    let all: Vec<Vec<String>> = rows.into_iter().flatten().collect();
    let mut lines = output::columns(&all, &[1, 4]).into_iter();
    let mut paths = all.iter().map(|r| r[6].clone());
    for (b, n) in blocks.iter().zip(counts) {
        if let (Some(found), false) = (b.found, o.paths_only) {
            println!("Found {found} items");
        }
        for _ in 0..n {
            let (line, path) = (lines.next(), paths.next());
            if o.paths_only {
                println!("{}", path.unwrap_or_default());
            } else {
                println!("{}", line.unwrap_or_default());
            }
        }
    }
    Ok(())
}

pub(super) async fn stat(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    let (format, paths) = super::stat_format(args);
    let found = sh.sources(paths, false).await?;
    let mut all = Vec::new();
    for p in &found {
        all.push(sh.stat(p).await?);
    }
    if sh.json {
        if all.len() == 1 {
            return sh.print_json(&status_json(&all[0]));
        }
        return sh.print_json(&json!(all.iter().map(status_json).collect::<Vec<_>>()));
    }
    for s in &all {
        match format {
            Some(f) => println!("{}", format_stat(f, s)),
            None => print_stat_table(s),
        }
    }
    Ok(())
}

fn print_stat_table(s: &pb::FileStatus) {
    output::table(
        &["key", "value"],
        &[
            vec!["path".into(), s.path.clone()],
            vec![
                "type".into(),
                if s.is_dir { "directory" } else { "file" }.into(),
            ],
            vec!["length".into(), s.len.to_string()],
            vec!["replication".into(), s.replication.to_string()],
            vec!["block size".into(), s.block_size.to_string()],
            vec![
                "permission".into(),
                format!("{:o} ({})", s.permission, mode_string(s.permission as u16)),
            ],
            vec!["owner".into(), s.owner.clone()],
            vec!["group".into(), s.group.clone()],
            vec!["modified".into(), output::date_minutes(s.mtime_ms)],
            vec!["accessed".into(), output::date_minutes(s.atime_ms)],
            vec!["being written".into(), s.under_construction.to_string()],
        ],
    );
}

fn date_seconds(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

/// Hadoop's `-stat` format: %b length, %F type, %g group, %n name, %o
/// block size, %r replication, %u owner, %a octal permission, %A
/// rwx permission, %y/%Y modification time (UTC date / ms), %x/%X access
/// time; %% is a percent sign.
fn format_stat(f: &str, s: &pb::FileStatus) -> String {
    let mut out = String::new();
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push_str(&s.len.to_string()),
            Some('F') => out.push_str(if s.is_dir {
                "directory"
            } else {
                "regular file"
            }),
            Some('g') => out.push_str(&s.group),
            Some('n') => out.push_str(base_name(&s.path)),
            Some('o') => out.push_str(&s.block_size.to_string()),
            Some('r') => out.push_str(&s.replication.to_string()),
            Some('u') => out.push_str(&s.owner),
            Some('a') => out.push_str(&format!("{:o}", s.permission)),
            Some('A') => out.push_str(&mode_string(s.permission as u16)),
            Some('y') => out.push_str(&date_seconds(s.mtime_ms)),
            Some('Y') => out.push_str(&s.mtime_ms.to_string()),
            Some('x') => out.push_str(&date_seconds(s.atime_ms)),
            Some('X') => out.push_str(&s.atime_ms.to_string()),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

fn size(n: u64, human: bool) -> String {
    if human {
        output::human_short(n)
    } else {
        n.to_string()
    }
}

pub(super) async fn du(
    sh: &Shell,
    paths: &[String],
    summary: bool,
    human: bool,
) -> anyhow::Result<()> {
    let found = sh.sources(paths, false).await?;
    let mut targets = Vec::new();
    for p in &found {
        let s = sh.stat(p).await?;
        if summary || !s.is_dir {
            targets.push(p.clone());
        } else {
            targets.extend(sh.c.list(p).await?.into_iter().map(|s| s.path));
        }
    }
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for t in targets {
        let s = sh.c.content_summary(&t).await?;
        rows.push(vec![
            size(s.length, human),
            size(s.space_consumed, human),
            t.clone(),
        ]);
        items.push(json!({
            "path": t,
            "length": s.length,
            "space_consumed": s.space_consumed,
            "files": s.files,
            "directories": s.directories,
        }));
    }
    if sh.json {
        return sh.print_json(&json!(items));
    }
    output::table(&["size", "disk space consumed", "path"], &rows);
    Ok(())
}

pub(super) async fn count(
    sh: &Shell,
    paths: &[String],
    human: bool,
    header: bool,
) -> anyhow::Result<()> {
    let found = sh.sources(paths, false).await?;
    let mut items = Vec::new();
    let mut lines = Vec::new();
    for p in &found {
        let s = sh.c.content_summary(p).await?;
        lines.push(format!(
            "{:>12} {:>12} {:>18} {p}",
            s.directories,
            s.files,
            size(s.length, human)
        ));
        items.push(json!({
            "path": p,
            "directories": s.directories,
            "files": s.files,
            "length": s.length,
            "space_consumed": s.space_consumed,
        }));
    }
    if sh.json {
        return sh.print_json(&json!(items));
    }
    if header {
        println!(
            "{:>12} {:>12} {:>18} PATHNAME",
            "DIR_COUNT", "FILE_COUNT", "CONTENT_SIZE"
        );
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

pub(super) async fn df(sh: &Shell, human: bool) -> anyhow::Result<()> {
    let req = pb::FsStatsRequest {
        caller: sh.c.caller(),
    };
    let r =
        sh.c.call("fs stats", Repeat::Idempotent, |mut nn| {
            let req = req.clone();
            async move { nn.get_fs_stats(req).await }
        })
        .await?;
    let fs = format!("hdfs://{}", sh.nn);
    let pct = if r.capacity == 0 {
        0.0
    } else {
        r.used as f64 * 100.0 / r.capacity as f64
    };
    if sh.json {
        return sh.print_json(&json!({
            "filesystem": fs,
            "capacity": r.capacity,
            "used": r.used,
            "available": r.remaining,
            "use_percent": pct,
        }));
    }
    output::table(
        &["Filesystem", "Size", "Used", "Available", "Use%"],
        &[vec![
            fs,
            size(r.capacity, human),
            size(r.used, human),
            size(r.remaining, human),
            format!("{pct:.0}%"),
        ]],
    );
    Ok(())
}

pub(super) async fn find(
    sh: &Shell,
    paths: &[String],
    name: Option<&str>,
    iname: Option<&str>,
    print0: bool,
) -> anyhow::Result<()> {
    let m = match (name, iname) {
        (Some(p), _) => Some(glob::matcher(p, false)?),
        (_, Some(p)) => Some(glob::matcher(p, true)?),
        _ => None,
    };
    let found = sh.sources(paths, false).await?;
    let mut hits = Vec::new();
    for p in &found {
        let s = sh.stat(p).await?;
        let mut all = vec![s.path.clone()];
        if s.is_dir {
            all.extend(walk(&sh.c, p).await?.into_iter().map(|e| e.path));
        }
        for e in all {
            if m.as_ref().is_none_or(|m| m.is_match(base_name(&e))) {
                hits.push(e);
            }
        }
    }
    if sh.json {
        return sh.print_json(&json!(hits));
    }
    for h in hits {
        if print0 {
            print!("{h}\0");
        } else {
            println!("{h}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_formats_as_hadoop() {
        let s = pb::FileStatus {
            path: "/a/f".into(),
            len: 5,
            replication: 3,
            block_size: 128,
            permission: 0o644,
            owner: "me".into(),
            group: "g".into(),
            mtime_ms: 0,
            ..Default::default()
        };
        assert_eq!(
            format_stat("%n %b %r %o %u:%g %a %A %F %y %%", &s),
            "f 5 3 128 me:g 644 rw-r--r-- regular file 1970-01-01 00:00:00 %"
        );
    }
}
