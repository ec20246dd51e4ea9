//! Hadoop's spellings on the command line: `hstack dfs -ls -h /user/me`,
//! `hstack admin -report -live`, `hstack admin fsck / -files -blocks`.
//!
//! The command line is rewritten before clap reads it, so the clap
//! definitions stay ours: a verb spelled `-ls` becomes `ls`, Hadoop's
//! aliases (`-copyFromLocal`, `-lsr`, …) become our verbs, and the
//! single-dash long options we support (`-skipTrash`, `-ignoreCrc`, `-nl`,
//! `-name`, …) become their double-dash forms. Only `hstack dfs …` and
//! `hstack admin …` are touched, and nothing after a `--`.

use std::ffi::OsString;

/// Hadoop's `hdfs dfs` verbs and what each is here (a verb, then flags).
const DFS_VERBS: &[(&str, &[&str])] = &[
    ("ls", &["ls"]),
    ("lsr", &["ls", "-R"]),
    ("mkdir", &["mkdir"]),
    ("put", &["put"]),
    ("copyFromLocal", &["put"]),
    ("get", &["get"]),
    ("copyToLocal", &["get"]),
    ("getmerge", &["getmerge"]),
    ("cat", &["cat"]),
    ("head", &["head"]),
    ("tail", &["tail"]),
    ("rm", &["rm"]),
    ("rmr", &["rm", "-r"]),
    ("rmdir", &["rmdir"]),
    ("mv", &["mv"]),
    ("cp", &["cp"]),
    ("stat", &["stat"]),
    ("du", &["du"]),
    ("dus", &["du", "-s"]),
    ("count", &["count"]),
    ("df", &["df"]),
    ("setrep", &["setrep"]),
    ("chmod", &["chmod"]),
    ("chown", &["chown"]),
    ("chgrp", &["chgrp"]),
    ("touchz", &["touchz"]),
    ("test", &["test"]),
    ("find", &["find"]),
    ("help", &["--help"]),
    ("usage", &["--help"]),
];

/// `hdfs dfsadmin`'s (and `hdfs fsck`'s) verbs that exist here.
const ADMIN_VERBS: &[(&str, &[&str])] = &[
    ("report", &["report"]),
    ("safemode", &["safemode"]),
    ("fsck", &["fsck"]),
    ("decommission", &["decommission"]),
    ("recommission", &["decommission", "--recommission"]),
    ("removeDead", &["remove-dead"]),
    ("help", &["--help"]),
];

/// Single-dash long options (Hadoop's spelling) → ours, per verb.
fn long_option(cmd: &str, verb: &str, arg: &str) -> Option<&'static str> {
    let table: &[(&str, &str)] = match (cmd, verb) {
        ("dfs", "rm") => &[("-skipTrash", "--skip-trash")],
        ("dfs", "get") => &[("-ignoreCrc", "--ignore-crc")],
        ("dfs", "cat") => &[("-ignoreCrc", "--ignore-crc")],
        ("dfs", "getmerge") => &[("-nl", "--nl"), ("-skip-empty-file", "--skip-empty-file")],
        ("dfs", "rmdir") => &[("-ignore-fail-on-non-empty", "--ignore-fail-on-non-empty")],
        ("dfs", "find") => &[
            ("-name", "--name"),
            ("-iname", "--iname"),
            ("-print", "--print"),
            ("-print0", "--print0"),
        ],
        ("admin", "report") => &[
            ("-live", "--live"),
            ("-dead", "--dead"),
            ("-decommissioning", "--decommissioning"),
        ],
        ("admin", "fsck") => &[
            ("-files", "--files"),
            ("-blocks", "--blocks"),
            ("-locations", "--locations"),
            ("-racks", "--locations"),
            ("-openforwrite", "--openforwrite"),
            ("-list-corruptfileblocks", "--list-corruptfileblocks"),
        ],
        _ => &[],
    };
    table.iter().find(|(h, _)| *h == arg).map(|(_, o)| *o)
}

/// Options of `hstack dfs`/`hstack admin` themselves that take a value.
const GLOBAL_WITH_VALUE: &[&str] = &["--cluster", "--namenode", "--user"];

/// Rewrites Hadoop's spellings in the arguments of `hstack dfs …` and
/// `hstack admin …` (module doc); every other command line is returned as
/// it is.
pub fn rewrite(args: Vec<OsString>) -> Vec<OsString> {
    let Some(cmd) = args.get(1).and_then(|a| a.to_str()).map(str::to_string) else {
        return args;
    };
    let verbs = match cmd.as_str() {
        "dfs" => DFS_VERBS,
        "admin" => ADMIN_VERBS,
        _ => return args,
    };
    let mut out: Vec<OsString> = args[..2].to_vec();
    let mut rest = args.into_iter().skip(2).peekable();
    // The command's own options, up to the verb.
    let mut verb = None;
    while let Some(a) = rest.next() {
        let Some(s) = a.to_str().map(str::to_string) else {
            out.push(a);
            break;
        };
        let s = s.as_str();
        if s == "-fs" {
            // Hadoop's generic option naming the file system.
            out.push("--namenode".into());
            if let Some(v) = rest.next() {
                out.push(fs_authority(&v.to_string_lossy()).into());
            }
            continue;
        }
        if GLOBAL_WITH_VALUE.contains(&s) {
            out.push(a);
            if let Some(v) = rest.next() {
                out.push(v);
            }
            continue;
        }
        if s.starts_with("--") || s == "-h" {
            out.push(a);
            if s == "--" {
                break;
            }
            continue;
        }
        if let Some(name) = s.strip_prefix('-') {
            if let Some((_, ours)) = verbs.iter().find(|(h, _)| *h == name) {
                out.extend(ours.iter().map(OsString::from));
                verb = ours.first().map(|v| v.to_string());
                break;
            }
            out.push(a);
            continue;
        }
        verb = Some(s.to_string());
        out.push(a);
        break;
    }
    let Some(verb) = verb else {
        out.extend(rest);
        return out;
    };
    // The verb's arguments: single-dash long options we support.
    while let Some(a) = rest.next() {
        match a.to_str() {
            Some("--") => {
                out.push(a);
                out.extend(rest);
                break;
            }
            Some(s) => match long_option(&cmd, &verb, s) {
                Some(ours) => out.push(ours.into()),
                None => out.push(a),
            },
            None => out.push(a),
        }
    }
    out
}

/// `hdfs://host:port/` (or `host:port`) → `host:port`.
fn fs_authority(v: &str) -> String {
    let v = v.strip_prefix("hdfs://").unwrap_or(v);
    v.split('/').next().unwrap_or(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(args: &[&str]) -> Vec<String> {
        rewrite(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn hadoop_verbs_and_options_become_ours() {
        assert_eq!(
            rw(&["hstack", "dfs", "-ls", "-h", "/user/me"]),
            ["hstack", "dfs", "ls", "-h", "/user/me"]
        );
        assert_eq!(
            rw(&[
                "hstack",
                "dfs",
                "--namenode",
                "nn:1",
                "-rm",
                "-r",
                "-skipTrash",
                "/a"
            ]),
            [
                "hstack",
                "dfs",
                "--namenode",
                "nn:1",
                "rm",
                "-r",
                "--skip-trash",
                "/a"
            ]
        );
        assert_eq!(
            rw(&["hstack", "dfs", "-copyFromLocal", "a", "b", "/d"]),
            ["hstack", "dfs", "put", "a", "b", "/d"]
        );
        assert_eq!(
            rw(&["hstack", "dfs", "-lsr", "/"]),
            ["hstack", "dfs", "ls", "-R", "/"]
        );
        assert_eq!(
            rw(&["hstack", "dfs", "-fs", "hdfs://nn:8020/", "-ls", "/"]),
            ["hstack", "dfs", "--namenode", "nn:8020", "ls", "/"]
        );
        assert_eq!(
            rw(&["hstack", "dfs", "find", "/", "-name", "*.txt", "-print"]),
            ["hstack", "dfs", "find", "/", "--name", "*.txt", "--print"]
        );
        // Ours stay ours; a `-name` of another verb, and anything after
        // `--`, is left alone.
        assert_eq!(
            rw(&["hstack", "dfs", "ls", "-R", "/"]),
            ["hstack", "dfs", "ls", "-R", "/"]
        );
        assert_eq!(
            rw(&["hstack", "dfs", "cat", "-name", "--", "-skipTrash"]),
            ["hstack", "dfs", "cat", "-name", "--", "-skipTrash"]
        );
        assert_eq!(
            rw(&["hstack", "dfs", "rm", "--", "-skipTrash"]),
            ["hstack", "dfs", "rm", "--", "-skipTrash"]
        );
    }

    #[test]
    fn admin_spellings_and_other_commands() {
        assert_eq!(
            rw(&["hstack", "admin", "-report", "-live"]),
            ["hstack", "admin", "report", "--live"]
        );
        assert_eq!(
            rw(&[
                "hstack",
                "admin",
                "fsck",
                "/",
                "-files",
                "-blocks",
                "-openforwrite"
            ]),
            [
                "hstack",
                "admin",
                "fsck",
                "/",
                "--files",
                "--blocks",
                "--openforwrite"
            ]
        );
        assert_eq!(
            rw(&["hstack", "zk", "set", "-v", "-1", "/a", "-ls"]),
            ["hstack", "zk", "set", "-v", "-1", "/a", "-ls"]
        );
        assert_eq!(rw(&["hstack"]), ["hstack"]);
    }
}
