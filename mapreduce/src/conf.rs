//! A job's configuration: string keys and values, under Hadoop's names
//! (`mapreduce.job.reduces`, `mapreduce.task.io.sort.mb`, …) so that `-D`
//! flags and habits carry over. Unknown keys are kept (a streaming script
//! may read its own from the environment); the keys the engine reads are
//! checked when a job is submitted, so a malformed value fails the
//! submission with the key named, before anything runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const JOB_NAME: &str = "mapreduce.job.name";
pub const QUEUE: &str = "mapreduce.job.queuename";
pub const REDUCES: &str = "mapreduce.job.reduces";
pub const SORT_MB: &str = "mapreduce.task.io.sort.mb";
pub const SORT_FACTOR: &str = "mapreduce.task.io.sort.factor";
pub const MAP_OUTPUT_COMPRESS: &str = "mapreduce.map.output.compress";
pub const MAP_OUTPUT_CODEC: &str = "mapreduce.map.output.compress.codec";
pub const OUTPUT_COMPRESS: &str = "mapreduce.output.fileoutputformat.compress";
pub const TASK_TIMEOUT: &str = "mapreduce.task.timeout";
pub const MAP_ATTEMPTS: &str = "mapreduce.map.maxattempts";
pub const REDUCE_ATTEMPTS: &str = "mapreduce.reduce.maxattempts";
pub const MAP_SPECULATIVE: &str = "mapreduce.map.speculative";
pub const REDUCE_SPECULATIVE: &str = "mapreduce.reduce.speculative";
pub const MAP_MEMORY_MB: &str = "mapreduce.map.memory.mb";
pub const REDUCE_MEMORY_MB: &str = "mapreduce.reduce.memory.mb";
pub const AM_MEMORY_MB: &str = "yarn.app.mapreduce.am.resource.mb";
pub const AM_ATTEMPTS: &str = "mapreduce.am.max-attempts";
pub const PARALLEL_COPIES: &str = "mapreduce.reduce.shuffle.parallelcopies";
pub const SHUFFLE_BUFFER_MB: &str = "mapreduce.reduce.shuffle.buffer.mb";
pub const SLOWSTART: &str = "mapreduce.job.reduce.slowstart.completedmaps";
pub const SPLIT_MIN: &str = "mapreduce.input.fileinputformat.split.minsize";
pub const SPLIT_MAX: &str = "mapreduce.input.fileinputformat.split.maxsize";
pub const SKIP_START_ATTEMPTS: &str = "mapreduce.task.skip.start.attempts";
pub const SKIP_MAX_RECORDS: &str = "mapreduce.map.skip.maxrecords";
/// Set by the framework (not by users) in a map attempt whose failure
/// would skip a record: "true" there.
pub const SKIP_MODE: &str = "mapreduce.task.skip.mode";
pub const KV_SEPARATOR: &str = "mapreduce.input.keyvaluelinerecordreader.key.value.separator";
pub const TEXT_OUT_SEPARATOR: &str = "mapreduce.output.textoutputformat.separator";
pub const OUTPUT_REPLICATION: &str = "mapreduce.output.replication";
pub const INPUT_FORMAT: &str = "mapreduce.job.inputformat";
pub const OUTPUT_FORMAT: &str = "mapreduce.job.outputformat";
pub const UBER: &str = "mapreduce.job.ubertask.enable";
pub const RUNNING_MAP_LIMIT: &str = "mapreduce.job.running.map.limit";
pub const RUNNING_REDUCE_LIMIT: &str = "mapreduce.job.running.reduce.limit";
pub const UBER_MAX_MAPS: &str = "mapreduce.job.ubertask.maxmaps";

/// What a key holds, for checking a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Uint,
    Positive,
    Bool,
    Fraction,
    Text,
    OneOf(&'static [&'static str]),
}

/// The keys the engine reads: their kind, default and meaning (the
/// reference in docs/ is generated from the same list by `describe`).
const KEYS: &[(&str, Kind, &str, &str)] = &[
    (
        JOB_NAME,
        Kind::Text,
        "",
        "the job's name (default: the job and its output)",
    ),
    (QUEUE, Kind::Text, "default", "the scheduler queue"),
    (
        REDUCES,
        Kind::Uint,
        "1",
        "reduce tasks; 0 makes a map-only job",
    ),
    (
        SORT_MB,
        Kind::Positive,
        "256",
        "a map's in-memory sort buffer, MiB (Hadoop's default is 100, in a JVM heap; ours is half the 512 MiB map container)",
    ),
    (SORT_FACTOR, Kind::Positive, "64", "streams merged at once"),
    (
        MAP_OUTPUT_COMPRESS,
        Kind::Bool,
        "false",
        "compress map output (lz4)",
    ),
    (
        MAP_OUTPUT_CODEC,
        Kind::OneOf(&["lz4", "org.apache.hadoop.io.compress.Lz4Codec"]),
        "lz4",
        "the map-output codec",
    ),
    (
        OUTPUT_COMPRESS,
        Kind::Bool,
        "false",
        "block-compress sequence-file output (lz4)",
    ),
    (
        TASK_TIMEOUT,
        Kind::Uint,
        "600000",
        "ms without progress before an attempt is killed; 0 never",
    ),
    (MAP_ATTEMPTS, Kind::Positive, "4", "attempts of a map task"),
    (
        REDUCE_ATTEMPTS,
        Kind::Positive,
        "4",
        "attempts of a reduce task",
    ),
    (
        MAP_SPECULATIVE,
        Kind::Bool,
        "true",
        "backup attempts for straggling maps",
    ),
    (
        REDUCE_SPECULATIVE,
        Kind::Bool,
        "true",
        "backup attempts for straggling reduces",
    ),
    (
        MAP_MEMORY_MB,
        Kind::Positive,
        "512",
        "a map container's memory",
    ),
    (
        REDUCE_MEMORY_MB,
        Kind::Positive,
        "512",
        "a reduce container's memory",
    ),
    (
        AM_MEMORY_MB,
        Kind::Positive,
        "512",
        "the application master's memory",
    ),
    (
        AM_ATTEMPTS,
        Kind::Positive,
        "2",
        "attempts of the application master",
    ),
    (
        PARALLEL_COPIES,
        Kind::Positive,
        "5",
        "map outputs a reduce fetches at once",
    ),
    (
        SHUFFLE_BUFFER_MB,
        Kind::Positive,
        "128",
        "a reduce's in-memory shuffle buffer, MiB",
    ),
    (
        SLOWSTART,
        Kind::Fraction,
        "0.05",
        "share of maps done before reduces are asked for",
    ),
    (SPLIT_MIN, Kind::Uint, "0", "smallest split, bytes"),
    (
        SPLIT_MAX,
        Kind::Uint,
        "0",
        "largest split, bytes (0: the block size)",
    ),
    (
        SKIP_START_ATTEMPTS,
        Kind::Positive,
        "2",
        "failed attempts before bad records are skipped",
    ),
    (
        SKIP_MAX_RECORDS,
        Kind::Uint,
        "0",
        "1 or more: a map record that crashed attempts is skipped (once the task failed skip.start.attempts times); 0 (Hadoop's default) never skips",
    ),
    (
        KV_SEPARATOR,
        Kind::Text,
        "\t",
        "key/value separator of key-value text input",
    ),
    (
        TEXT_OUT_SEPARATOR,
        Kind::Text,
        "\t",
        "key/value separator of text output",
    ),
    (
        OUTPUT_REPLICATION,
        Kind::Uint,
        "0",
        "replication of output files (0: the file system's)",
    ),
    (
        INPUT_FORMAT,
        Kind::OneOf(&["text", "kv", "seq", "tera"]),
        "text",
        "input format",
    ),
    (
        OUTPUT_FORMAT,
        Kind::OneOf(&["text", "seq", "tera"]),
        "text",
        "output format",
    ),
    (
        UBER,
        Kind::Bool,
        "true",
        "run a small job's tasks inside its application master",
    ),
    (
        UBER_MAX_MAPS,
        Kind::Uint,
        "1",
        "most maps of a job run inside its master",
    ),
    (
        RUNNING_MAP_LIMIT,
        Kind::Uint,
        "0",
        "map attempts running (or asked for) at once; 0 no limit",
    ),
    (
        RUNNING_REDUCE_LIMIT,
        Kind::Uint,
        "0",
        "reduce attempts running (or asked for) at once; 0 no limit",
    ),
];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobConf(pub BTreeMap<String, String>);

fn spec(key: &str) -> Option<&'static (&'static str, Kind, &'static str, &'static str)> {
    KEYS.iter().find(|k| k.0 == key)
}

fn check(kind: Kind, v: &str) -> Result<(), String> {
    match kind {
        Kind::Uint => v
            .parse::<u64>()
            .map(|_| ())
            .map_err(|_| "a whole number at least 0".into()),
        Kind::Positive => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(()),
            _ => Err("a whole number above 0".into()),
        },
        Kind::Bool => match v {
            "true" | "false" => Ok(()),
            _ => Err("true or false".into()),
        },
        Kind::Fraction => match v.parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Ok(()),
            _ => Err("a number from 0 to 1".into()),
        },
        Kind::Text => Ok(()),
        Kind::OneOf(vs) => {
            if vs.contains(&v) {
                Ok(())
            } else {
                Err(format!("one of {}", vs.join(", ")))
            }
        }
    }
}

impl JobConf {
    pub fn set(&mut self, k: &str, v: impl Into<String>) {
        self.0.insert(k.to_string(), v.into());
    }

    /// Takes `k=v` (a `-D` flag's argument).
    pub fn set_pair(&mut self, pair: &str) -> anyhow::Result<()> {
        let Some((k, v)) = pair.split_once('=') else {
            anyhow::bail!("-D {pair:?}: expected KEY=VALUE");
        };
        let k = k.trim();
        if k.is_empty() {
            anyhow::bail!("-D {pair:?}: the key is empty");
        }
        if let Some(s) = spec(k) {
            check(s.1, v).map_err(|want| anyhow::anyhow!("-D {k}={v}: {k} must be {want}"))?;
        }
        self.set(k, v);
        Ok(())
    }

    /// Checks every key the engine reads.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (k, v) in &self.0 {
            if let Some(s) = spec(k) {
                check(s.1, v).map_err(|want| anyhow::anyhow!("{k}={v}: {k} must be {want}"))?;
            }
        }
        Ok(())
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// The value, or the built-in default of a known key.
    pub fn str(&self, k: &str) -> &str {
        self.get(k)
            .or_else(|| spec(k).map(|s| s.2))
            .unwrap_or_default()
    }

    pub fn u64(&self, k: &str) -> u64 {
        self.str(k)
            .parse()
            .unwrap_or_else(|_| spec(k).and_then(|s| s.2.parse().ok()).unwrap_or_default())
    }

    pub fn f64(&self, k: &str) -> f64 {
        self.str(k)
            .parse()
            .unwrap_or_else(|_| spec(k).and_then(|s| s.2.parse().ok()).unwrap_or_default())
    }

    pub fn bool(&self, k: &str) -> bool {
        self.str(k) == "true"
    }

    pub fn reduces(&self) -> u32 {
        self.u64(REDUCES).min(u64::from(u32::MAX)) as u32
    }

    /// Every key the engine reads: (key, default, meaning).
    pub fn describe() -> Vec<(&'static str, &'static str, &'static str)> {
        KEYS.iter().map(|k| (k.0, k.2, k.3)).collect()
    }

    /// The settings as a process environment sees them (Hadoop
    /// Streaming's rule: every character not a letter, digit or `_`
    /// becomes `_`).
    pub fn env_name(k: &str) -> String {
        k.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_values_and_bad_values() {
        let mut c = JobConf::default();
        assert_eq!(c.reduces(), 1);
        assert_eq!(c.u64(SORT_MB), 256);
        c.set_pair("mapreduce.job.reduces=3").unwrap();
        assert_eq!(c.reduces(), 3);
        c.set_pair("my.own.key=anything goes").unwrap();
        assert_eq!(c.get("my.own.key"), Some("anything goes"));
        let e = c.set_pair("mapreduce.job.reduces=many").unwrap_err();
        assert!(e.to_string().contains("whole number"), "{e}");
        assert_eq!(c.reduces(), 3, "a refused value changes nothing");
        assert!(c.set_pair("novalue").is_err());
        assert!(c.set_pair("=x").is_err());
        assert!(c.set_pair("mapreduce.task.io.sort.mb=0").is_err());
        assert!(c.set_pair("mapreduce.map.output.compress=yes").is_err());
        c.0.insert(SLOWSTART.into(), "2".into());
        assert!(c.validate().is_err());
        assert_eq!(
            JobConf::env_name("mapreduce.task.partition"),
            "mapreduce_task_partition"
        );
    }
}
