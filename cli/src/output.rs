//! What every client and admin command shares for its output: tables for
//! people and `--json` for programs, byte sizes both ways, dates, and
//! progress bars for long operations.

use std::time::Duration;

use serde::Serialize;

/// Prints rows as a table with a header, columns aligned, no borders
/// (as `kubectl get` and `hdfs dfsadmin -report` read).
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(header, rows));
}

fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    use comfy_table::{presets, ContentArrangement, Table};
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| h.to_uppercase()));
    for r in rows {
        t.add_row(r);
    }
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Rows laid out in aligned columns (one space apart), without a header
/// or borders, as `hdfs dfs -ls` prints them: one line per row; the
/// columns in `right` are right-aligned (sizes, counts).
pub fn columns(rows: &[Vec<String>], right: &[usize]) -> Vec<String> {
    use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
    if rows.is_empty() {
        return vec![];
    }
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    for r in rows {
        t.add_row(r);
    }
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, 1));
        if right.contains(&i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines().map(|l| l.trim_end().to_string()).collect()
}

pub fn json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `n` bytes for a person: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// `n` bytes in a column, as Hadoop's `-h` prints them: `512`, `1.5 K`,
/// `128 M`, `2.0 G` (powers of 1024).
pub fn human_short(n: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if n < 1024 {
        return n.to_string();
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// Bytes in a JSON object: `data` as a string when they are UTF-8, else
/// `data_base64` (standard alphabet, padded).
pub fn put_data(obj: &mut serde_json::Map<String, serde_json::Value>, bytes: &[u8]) {
    use base64::Engine as _;
    match std::str::from_utf8(bytes) {
        Ok(s) => obj.insert("data".into(), s.into()),
        Err(_) => obj.insert(
            "data_base64".into(),
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        ),
    };
}

/// The largest size a command takes: HDFS's lengths are Java longs.
const MAX_SIZE: u64 = i64::MAX as u64;

/// A byte size as operators write it for Hadoop (`-D dfs.blocksize=128m`):
/// a number, optionally with a suffix k, m, g, t, p or e, alone or
/// followed by `b` or `ib` in any case (`128m`, `128MB`, `128MiB`). Every
/// suffix is a power of 1024, as in Hadoop. Refused, never wrapped:
/// anything above 2^63 − 1 bytes (HDFS's lengths are Java longs),
/// fractions of a byte, negative numbers.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a size like 512, 64k, 128m, 1g or 1GiB");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    if num.is_empty() {
        return Err(bad());
    }
    let lower = unit.to_ascii_lowercase();
    let unit = match lower.as_str() {
        "" | "b" => "B".to_string(),
        u => {
            let letter = u.chars().next().expect("not empty");
            let rest = &u[1..];
            if !"kmgtpe".contains(letter) || !["", "b", "ib"].contains(&rest) {
                return Err(bad());
            }
            format!("{}iB", letter.to_ascii_uppercase())
        }
    };
    let parsed: bytesize::ByteSize = format!("{num} {unit}").parse().map_err(|_| bad())?;
    // The library computes in floating point: check the product exactly
    // enough to refuse what does not fit instead of saturating.
    let value: f64 = num.parse().map_err(|_| bad())?;
    let per: f64 = format!("1 {unit}")
        .parse::<bytesize::ByteSize>()
        .map_err(|_| bad())?
        .as_u64() as f64;
    if value * per > MAX_SIZE as f64 || parsed.as_u64() > MAX_SIZE {
        return Err(format!(
            "{s:?} is larger than the largest size, {MAX_SIZE} bytes (8 EiB)"
        ));
    }
    if (value * per).fract() != 0.0 {
        return Err(format!("{s:?} is not a whole number of bytes"));
    }
    Ok(parsed.as_u64())
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM` (UTC), as `hdfs dfs
/// -ls` shows times.
pub fn date_minutes(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm UTC`, as
/// zkCli shows a stat's times.
pub fn date_millis(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

/// A progress bar on stderr for a long transfer, or nothing when stderr is
/// not a terminal, `quiet` is set, or the transfer is small.
/// A progress bar counting `total` steps, on a terminal only.
pub fn counter(what: &str, total: u64, quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("a valid template")
            .progress_chars("#> "),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub fn progress(what: &str, total: Option<u64>, quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let big = total.is_none_or(|t| t >= 4 << 20);
    if quiet || !big || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {percent:>3}% {bytes} / {total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("a valid template")
            .progress_chars("#> "),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{msg} {bytes} {bytes_per_sec}")
                .expect("a valid template"),
        ),
    };
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_hadoop_writes_them_and_overflow_is_refused() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("128m"), Ok(128 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("7e"), Ok(7 << 60));
        for bad in ["9EB", "9e", "16e", "99999999999999999999", "99999999999t"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("larger than"), "{bad}: {e}");
        }
        for bad in ["", "k", "-1", "1x", "1.5", "ten"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_and_bytes_read_well() {
        assert_eq!(date_minutes(0), "1970-01-01 00:00");
        assert_eq!(
            date_millis(1_700_000_000_123),
            "2023-11-14 22:13:20.123 UTC"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_short(512), "512");
        assert_eq!(human_short(1536), "1.5 K");
        assert_eq!(human_short(128 << 20), "128.0 M");
    }

    #[test]
    fn bytes_in_json_are_text_or_base64() {
        let mut m = serde_json::Map::new();
        put_data(&mut m, b"hi");
        assert_eq!(m["data"], "hi");
        let mut m = serde_json::Map::new();
        put_data(&mut m, &[0xff, 0]);
        assert_eq!(m["data_base64"], "/wA=");
        assert!(!m.contains_key("data"));
    }

    #[test]
    fn columns_align_like_ls() {
        let rows = vec![
            vec![
                "-rw-r--r--".into(),
                "3".into(),
                "me".into(),
                "7".into(),
                "/a".into(),
            ],
            vec![
                "drwxr-xr-x".into(),
                "-".into(),
                "hdfs".into(),
                "1024".into(),
                "/bb".into(),
            ],
        ];
        assert_eq!(
            columns(&rows, &[1, 3]),
            ["-rw-r--r-- 3 me      7 /a", "drwxr-xr-x - hdfs 1024 /bb"]
        );
    }

    #[test]
    fn tables_align_without_borders() {
        let t = render_table(
            &["role", "id"],
            &[
                vec!["coord".into(), "1".into()],
                vec!["namenode".into(), "nn".into()],
            ],
        );
        assert_eq!(t, "ROLE      ID\ncoord     1\nnamenode  nn\n");
    }
}
