//! Hadoop Streaming: the mapper, combiner and reducer are programs that
//! read records as lines on stdin and write `key<TAB>value` lines on
//! stdout, as `hadoop jar hadoop-streaming.jar` runs them, so existing
//! streaming scripts (Python, shell, awk) run unchanged.
//!
//! [`parse_args`] takes Hadoop's options (`-input`, `-mapper`, `-D k=v`,
//! …) into a [`StreamingJob`]; everything it learns goes into the job's
//! configuration under Hadoop's keys (`stream.map.streamprocessor`, …),
//! so a task rebuilds the job from the [`JobSpec`] alone. Each task runs
//! its command with `/bin/sh -c` in the attempt's working directory (the
//! `-file`s copied there), with the job's settings and the task's in its
//! environment (`mapreduce_task_partition`, …). One [`Stream`] wraps the
//! process for all three sides: it writes records to its stdin from the
//! calling thread, a thread reads stdout into an unbounded channel (so a
//! process blocked writing never blocks our writes), another reads
//! stderr for `reporter:` lines; a non-zero exit fails the attempt.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context};

use super::{file_splits, Identity, Job};
use crate::api::{fnv1a, Emit, HashPartitioner, Mapper, Partitioner, Reducer, TaskContext, Values};
use crate::conf::{self, JobConf};
use crate::counters::Counters;
use crate::fs::{self, Fs};
use crate::spec::JobSpec;

/// The mapper's command (`-mapper`).
pub const MAP_COMMAND: &str = "stream.map.streamprocessor";
/// The reducer's command (`-reducer`; absent: identity).
pub const REDUCE_COMMAND: &str = "stream.reduce.streamprocessor";
/// The combiner's command (`-combiner`; absent: none).
pub const COMBINE_COMMAND: &str = "stream.combine.streamprocessor";
/// `-cmdenv` pairs: `NAME=value` lines, one per pair, joined by `\n`
/// (Hadoop joins them with spaces, which cannot carry a value with a
/// space; a `-cmdenv` value may not hold a newline).
pub const ENVIRONMENT: &str = "stream.addenvironment";
pub const MAP_KEY_FIELDS: &str = "stream.num.map.output.key.fields";
pub const MAP_SEPARATOR: &str = "stream.map.output.field.separator";
pub const REDUCE_KEY_FIELDS: &str = "stream.num.reduce.output.key.fields";
pub const REDUCE_SEPARATOR: &str = "stream.reduce.output.field.separator";
/// Between key and value on a mapper's stdin (when the key is sent).
pub const MAP_INPUT_SEPARATOR: &str = "stream.map.input.field.separator";
/// Between key and value on a reducer's or combiner's stdin.
pub const REDUCE_INPUT_SEPARATOR: &str = "stream.reduce.input.field.separator";
/// `true`: a mapper gets the value alone; default: true for text input
/// (the key is the line's offset), false for any other.
pub const IGNORE_KEY: &str = "stream.map.input.ignoreKey";
/// What starts a `counter:` or `status:` line on stderr.
pub const REPORTER_PREFIX: &str = "stream.stderr.reporter.prefix";
/// `false`: a command's non-zero exit does not fail the attempt.
pub const NON_ZERO_EXIT_IS_FAILURE: &str = "stream.non.zero.exit.is.failure";
/// The partitioner (`-partitioner`): Hadoop's class names.
pub const PARTITIONER: &str = "mapreduce.job.partitioner.class";
/// `KeyFieldBasedPartitioner`'s fields: `-k2,2`, `-k1,3`, …
pub const KEY_PARTITIONER_OPTIONS: &str = "mapreduce.partition.keypartitioner.options";
/// The separator of a key's fields for `KeyFieldBasedPartitioner`.
pub const KEY_FIELD_SEPARATOR: &str = "mapreduce.map.output.key.field.separator";

const IDENTITY_MAPPER: &str = "org.apache.hadoop.mapred.lib.IdentityMapper";
const IDENTITY_REDUCER: &str = "org.apache.hadoop.mapred.lib.IdentityReducer";

/// The options `hstack mr streaming` takes: (name, takes a value, help).
pub const OPTIONS: &[(&str, bool, &str)] = &[
    ("input", true, "input path or glob; repeatable"),
    ("output", true, "output directory, must not exist"),
    ("mapper", true, "the mapper command"),
    ("combiner", true, "the combiner command"),
    ("reducer", true, "the reducer command, or NONE"),
    ("numReduceTasks", true, "mapreduce.job.reduces"),
    ("file", true, "ship a file to each task; repeatable"),
    ("files", true, "comma-separated -file list"),
    ("cmdenv", true, "NAME=VALUE for the commands"),
    ("D", true, "KEY=VALUE job setting; or -DKEY=VALUE"),
    ("jobconf", true, "KEY=VALUE, as -D"),
    ("inputformat", true, "Text, KeyValueText, SequenceFile"),
    ("outputformat", true, "Text, SequenceFile"),
    ("partitioner", true, "Hash, KeyFieldBased"),
    ("verbose", false, "accepted and ignored"),
    ("background", false, "refused with a message"),
];

/// A streaming job as its options describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamingJob {
    pub inputs: Vec<String>,
    pub output: String,
    pub conf: JobConf,
    /// `-file`s, as given.
    pub files: Vec<String>,
    /// The arguments as given (for the job's record).
    pub args: Vec<String>,
}

impl StreamingJob {
    pub fn to_spec(self, user: &str) -> JobSpec {
        JobSpec {
            job: "streaming".into(),
            args: self.args,
            user: user.into(),
            inputs: self.inputs,
            output: self.output,
            conf: self.conf,
            files: self.files,
            ..Default::default()
        }
    }
}

fn known_options() -> String {
    OPTIONS
        .iter()
        .map(|o| format!("-{}", o.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The last component of a Java class name (`org.apache…TextInputFormat`
/// and `TextInputFormat` name the same format).
fn class_base(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn input_format_of(name: &str) -> anyhow::Result<&'static str> {
    Ok(match class_base(name) {
        "TextInputFormat" | "text" => "text",
        "KeyValueTextInputFormat" | "kv" => "kv",
        "SequenceFileInputFormat" | "SequenceFileAsTextInputFormat" | "seq" => "seq",
        _ => bail!(
            "-inputformat {name}: not one of TextInputFormat, KeyValueTextInputFormat, \
             SequenceFileInputFormat (or text, kv, seq)"
        ),
    })
}

fn output_format_of(name: &str) -> anyhow::Result<&'static str> {
    Ok(match class_base(name) {
        "TextOutputFormat" | "text" => "text",
        "SequenceFileOutputFormat" | "seq" => "seq",
        _ => bail!(
            "-outputformat {name}: not one of TextOutputFormat, SequenceFileOutputFormat \
             (or text, seq)"
        ),
    })
}

/// Takes Hadoop Streaming's command line (without the `streaming` word).
/// Options are spelled `-name value` as Hadoop's, or `--name value` /
/// `--name=value`; `-D k=v` and `-Dk=v` both set a job setting (checked
/// when the key is one the engine reads). The settings of the options
/// are applied after every `-D`, so `-numReduceTasks` and `-reducer NONE`
/// win over `-D mapreduce.job.reduces`.
pub fn parse_args(args: &[String]) -> anyhow::Result<StreamingJob> {
    let mut job = StreamingJob {
        args: args.to_vec(),
        ..Default::default()
    };
    let (mut mapper, mut reducer, mut combiner) = (None, None, None);
    let (mut reduces, mut output) = (None, None);
    let mut env: Vec<String> = Vec::new();
    let once = |slot: &mut Option<String>, name: &str, v: String| {
        if slot.is_some() {
            bail!("-{name} given twice");
        }
        *slot = Some(v);
        Ok(())
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if let Some(pair) = arg.strip_prefix("-D").filter(|p| !p.is_empty()) {
            job.conf.set_pair(pair)?;
            continue;
        }
        let Some(opt) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            bail!(
                "unexpected argument {arg:?}: options start with - (the options are {})",
                known_options()
            );
        };
        let (name, inline) = match opt.split_once('=') {
            Some((n, v)) if arg.starts_with("--") => (n, Some(v.to_string())),
            _ => (opt, None),
        };
        let Some(&(name, takes, _)) = OPTIONS.iter().find(|o| o.0 == name) else {
            bail!("unknown option {arg} (the options are {})", known_options());
        };
        let value = if takes {
            match inline {
                Some(v) => v,
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| anyhow!("-{name} needs a value"))?;
                    i += 1;
                    v.clone()
                }
            }
        } else {
            if inline.is_some() {
                bail!("-{name} takes no value");
            }
            String::new()
        };
        match name {
            "input" => job.inputs.push(value),
            "output" => once(&mut output, name, value)?,
            "mapper" => once(&mut mapper, name, value)?,
            "combiner" => once(&mut combiner, name, value)?,
            "reducer" => once(&mut reducer, name, value)?,
            "numReduceTasks" => {
                JobConf::default().set_pair(&format!("{}={value}", conf::REDUCES))?;
                reduces = Some(value);
            }
            "file" => job.files.push(value),
            "files" => job
                .files
                .extend(value.split(',').filter(|f| !f.is_empty()).map(String::from)),
            "cmdenv" => {
                match value.split_once('=') {
                    Some((k, _)) if !k.is_empty() && !value.contains(['\n', '\0']) => {}
                    _ => bail!("-cmdenv {value:?}: expected NAME=VALUE on one line"),
                }
                env.push(value);
            }
            "D" | "jobconf" => job.conf.set_pair(&value)?,
            "inputformat" => job.conf.set(conf::INPUT_FORMAT, input_format_of(&value)?),
            "outputformat" => job.conf.set(conf::OUTPUT_FORMAT, output_format_of(&value)?),
            "partitioner" => {
                check_partitioner(&value)?;
                job.conf.set(PARTITIONER, value);
            }
            "verbose" => {}
            "background" => bail!(
                "-background is not supported: run the command in the background from the \
                 shell (a job on the cluster goes on if the client stops)"
            ),
            _ => unreachable!("every option has an arm"),
        }
    }
    if job.inputs.is_empty() {
        bail!("missing -input (the input paths)");
    }
    job.output = output.ok_or_else(|| anyhow!("missing -output (the output directory)"))?;
    let mapper = mapper.ok_or_else(|| anyhow!("missing -mapper (the mapper command)"))?;
    job.conf.set(MAP_COMMAND, mapper);
    if let Some(c) = combiner {
        job.conf.set(COMBINE_COMMAND, c);
    }
    if let Some(n) = reduces {
        job.conf.set(conf::REDUCES, n);
    }
    match reducer.as_deref() {
        Some("NONE") => job.conf.set(conf::REDUCES, "0"),
        Some(r) => job.conf.set(REDUCE_COMMAND, r),
        None => {}
    }
    if !env.is_empty() {
        job.conf.set(ENVIRONMENT, env.join("\n"));
    }
    Ok(job)
}

fn check_partitioner(name: &str) -> anyhow::Result<()> {
    match class_base(name) {
        "HashPartitioner" | "KeyFieldBasedPartitioner" => Ok(()),
        _ => bail!(
            "partitioner {name}: only HashPartitioner and KeyFieldBasedPartitioner are supported"
        ),
    }
}

// ---- the job ----

/// The streaming job (`lookup("streaming")`).
pub struct Streaming;

/// Words the shell runs without a program of that name on PATH.
const SHELL_WORDS: &[&str] = &[
    "exec", "while", "for", "if", "until", "case", "exit", "echo", "printf", "read", "set", "cd",
    "export", "eval", "test", "[", "(", "{", "true", "false", ":", ".",
];

/// The program a shell command line starts with: its first word, after
/// any `NAME=value` assignments, up to an operator (`cat;`), without
/// quotes. Empty when the line starts with a redirection.
fn first_word(cmd: &str) -> Option<&str> {
    cmd.split_whitespace()
        .find(|w| {
            let assignment = w.split_once('=').is_some_and(|(n, _)| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            !assignment
        })
        .map(|w| {
            let w = w.split([';', '|', '&', '<', '>']).next().unwrap_or(w);
            w.trim_matches(|c| c == '\'' || c == '"')
        })
}

fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(name))))
}

/// Fails unless `cmd` starts with something that will run: a program on
/// PATH, an existing path, a `-file`, or a shell word.
fn check_command(side: Side, cmd: &str, files: &[String]) -> anyhow::Result<()> {
    let Some(first) = first_word(cmd) else {
        bail!("the {} command is empty", side.name());
    };
    let shipped = |n: &str| files.iter().any(|f| fs::base_name(f) == n);
    let ok = first.is_empty()
        || SHELL_WORDS.contains(&first)
        || first.starts_with(['(', '{'])
        || if first.contains('/') {
            Path::new(first).exists() || shipped(fs::base_name(first))
        } else {
            shipped(first) || on_path(first)
        };
    if !ok {
        bail!(
            "the {} command `{first}` is not a program on PATH or a -file",
            side.name()
        );
    }
    Ok(())
}

impl Job for Streaming {
    fn prepare(&self, spec: &mut JobSpec, fs: &dyn Fs) -> anyhow::Result<()> {
        for f in &spec.files {
            // A file is in the job's file system once the client staged
            // it, on local disk before.
            let found = match fs.status(f)? {
                Some(st) => !st.is_dir,
                None => Path::new(f).is_file(),
            };
            if !found {
                bail!("-file {f}: no such file");
            }
        }
        let mut sides = vec![Side::Map];
        if spec.reduces() > 0 {
            sides.extend([Side::Combine, Side::Reduce]);
        }
        for side in sides {
            if let Some(s) = Settings::of(spec, side)? {
                check_command(side, &s.command, &spec.files)?;
            }
        }
        partitioner_of(spec)?;
        file_splits(self, spec, fs)
    }

    fn mapper(&self, spec: &JobSpec) -> anyhow::Result<Box<dyn Mapper>> {
        match Settings::of(spec, Side::Map)? {
            Some(s) => Ok(Box::new(Stream::new(s))),
            None if spec.conf.get(MAP_COMMAND) == Some(IDENTITY_MAPPER) => Ok(Box::new(Identity)),
            None => bail!("a streaming job without a mapper command ({MAP_COMMAND})"),
        }
    }

    fn combiner(&self, spec: &JobSpec) -> anyhow::Result<Option<Box<dyn Reducer>>> {
        Ok(
            Settings::of(spec, Side::Combine)?
                .map(|s| Box::new(Stream::new(s)) as Box<dyn Reducer>),
        )
    }

    fn reducer(&self, spec: &JobSpec) -> anyhow::Result<Box<dyn Reducer>> {
        Ok(match Settings::of(spec, Side::Reduce)? {
            Some(s) => Box::new(Stream::new(s)),
            None => Box::new(Identity),
        })
    }

    fn partitioner(&self, spec: &JobSpec) -> Box<dyn Partitioner> {
        // Checked by `prepare`.
        partitioner_of(spec).unwrap_or_else(|_| Box::new(HashPartitioner))
    }
}

// ---- KeyFieldBasedPartitioner ----

/// Hashes some fields of the key (Hadoop's `KeyFieldBasedPartitioner`
/// with `-kM,N` options; character positions and ordering flags are
/// read and ignored: they matter to comparators, not to which reduce a
/// key goes to beyond the fields).
struct KeyFields {
    sep: Vec<u8>,
    /// 1-based first and last field; 0 as last: to the key's end.
    ranges: Vec<(usize, usize)>,
}

fn partitioner_of(spec: &JobSpec) -> anyhow::Result<Box<dyn Partitioner>> {
    let Some(class) = spec.conf.get(PARTITIONER) else {
        return Ok(Box::new(HashPartitioner));
    };
    check_partitioner(class)?;
    if class_base(class) == "HashPartitioner" {
        return Ok(Box::new(HashPartitioner));
    }
    let sep = spec.conf.get(KEY_FIELD_SEPARATOR).unwrap_or("\t");
    if sep.is_empty() {
        bail!("{KEY_FIELD_SEPARATOR} is empty");
    }
    let options = spec.conf.get(KEY_PARTITIONER_OPTIONS).unwrap_or("");
    let mut ranges = Vec::new();
    for o in options.split_whitespace() {
        let Some(k) = o.strip_prefix("-k") else {
            continue;
        };
        let field = |s: &str| -> Option<usize> {
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        let bad = || anyhow!("{KEY_PARTITIONER_OPTIONS}: {o:?} is not -kM[,N] with fields from 1");
        let (m, n) = match k.split_once(',') {
            Some((m, n)) => (field(m).ok_or_else(bad)?, field(n).ok_or_else(bad)?),
            None => (field(k).ok_or_else(bad)?, 0),
        };
        if m == 0 || (n != 0 && n < m) {
            return Err(bad());
        }
        ranges.push((m, n));
    }
    Ok(Box::new(KeyFields {
        sep: sep.as_bytes().to_vec(),
        ranges,
    }))
}

impl KeyFields {
    /// The bytes of fields `m..=n` of `key` (empty when it has fewer).
    fn fields<'k>(&self, key: &'k [u8], (m, n): (usize, usize)) -> &'k [u8] {
        let finder = memchr::memmem::Finder::new(&self.sep);
        // Field i (from 1) starts at starts[i - 1]; fields past `n` are
        // not looked for.
        let wanted = if n == 0 { m - 1 } else { n };
        let mut starts = vec![0];
        starts.extend(
            finder
                .find_iter(key)
                .take(wanted)
                .map(|i| i + self.sep.len()),
        );
        let Some(&s) = starts.get(m - 1) else {
            return &[];
        };
        let e = match starts.get(n) {
            Some(&next) if n != 0 => next - self.sep.len(),
            _ => key.len(),
        };
        &key[s..e]
    }
}

impl Partitioner for KeyFields {
    fn partition(&self, key: &[u8], _value: &[u8], reduces: u32) -> u32 {
        let h = match self.ranges.as_slice() {
            [] => fnv1a(key),
            [r] => fnv1a(self.fields(key, *r)),
            rs => {
                let mut b = Vec::new();
                for r in rs {
                    b.extend_from_slice(self.fields(key, *r));
                    b.push(0);
                }
                fnv1a(&b)
            }
        };
        (h % u64::from(reduces.max(1))) as u32
    }
}

// ---- the process ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Map,
    Combine,
    Reduce,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Map => "mapper",
            Side::Combine => "combiner",
            Side::Reduce => "reducer",
        }
    }
}

/// What a side's process is and how its records are written and read.
#[derive(Clone, Debug)]
struct Settings {
    side: Side,
    command: String,
    files: Vec<String>,
    /// Between key and value on stdin; `None`: the value alone.
    in_sep: Option<Vec<u8>>,
    out_sep: Vec<u8>,
    key_fields: usize,
    prefix: String,
    exit_fails: bool,
    /// `-cmdenv` pairs.
    env: Vec<(String, String)>,
}

fn separator(c: &JobConf, key: &str) -> anyhow::Result<Vec<u8>> {
    let s = c.get(key).unwrap_or("\t");
    if s.is_empty() {
        bail!("{key} is empty");
    }
    Ok(s.as_bytes().to_vec())
}

impl Settings {
    /// `None` when the side has no command (or Hadoop's identity class).
    fn of(spec: &JobSpec, side: Side) -> anyhow::Result<Option<Self>> {
        let c = &spec.conf;
        let key = match side {
            Side::Map => MAP_COMMAND,
            Side::Combine => COMBINE_COMMAND,
            Side::Reduce => REDUCE_COMMAND,
        };
        let command = match c.get(key) {
            None | Some(IDENTITY_MAPPER | IDENTITY_REDUCER) => return Ok(None),
            Some("aggregate") => {
                bail!(
                    "the `aggregate` {} (Hadoop's Java aggregation) is not supported",
                    side.name()
                )
            }
            Some(cmd) => cmd.to_string(),
        };
        if command.trim().is_empty() {
            bail!("the {} command is empty", side.name());
        }
        let (sep_key, fields_key) = match side {
            Side::Map => (MAP_SEPARATOR, MAP_KEY_FIELDS),
            // A combiner is fed what a reducer is, and answers in kind.
            Side::Combine | Side::Reduce => (REDUCE_SEPARATOR, REDUCE_KEY_FIELDS),
        };
        let key_fields = match c.get(fields_key).map(str::parse::<usize>) {
            None => 1,
            Some(Ok(n)) if n > 0 => n,
            Some(_) => bail!(
                "{fields_key}={}: must be a whole number above 0",
                c.str(fields_key)
            ),
        };
        let in_sep = match side {
            Side::Map => {
                let ignore = match c.get(IGNORE_KEY) {
                    None => c.str(conf::INPUT_FORMAT) == "text",
                    Some("true") => true,
                    Some("false") => false,
                    Some(v) => bail!("{IGNORE_KEY}={v}: must be true or false"),
                };
                (!ignore)
                    .then(|| separator(c, MAP_INPUT_SEPARATOR))
                    .transpose()?
            }
            Side::Combine | Side::Reduce => Some(separator(c, REDUCE_INPUT_SEPARATOR)?),
        };
        let env = c
            .get(ENVIRONMENT)
            .unwrap_or("")
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow!("{ENVIRONMENT}: {l:?} is not NAME=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(Self {
            side,
            command,
            files: spec.files.clone(),
            in_sep,
            out_sep: separator(c, sep_key)?,
            key_fields,
            prefix: c.get(REPORTER_PREFIX).unwrap_or("reporter:").to_string(),
            exit_fails: match c.get(NON_ZERO_EXIT_IS_FAILURE) {
                None | Some("true") => true,
                Some("false") => false,
                Some(v) => bail!("{NON_ZERO_EXIT_IS_FAILURE}={v}: must be true or false"),
            },
            env,
        }))
    }
}

/// Splits an output line into key and value: the key is the first
/// `fields` fields; a line with fewer is all key, its value empty.
fn split_fields<'l>(line: &'l [u8], sep: &[u8], fields: usize) -> (&'l [u8], &'l [u8]) {
    let at = if sep.len() == 1 {
        memchr::memchr_iter(sep[0], line).nth(fields - 1)
    } else {
        memchr::memmem::find_iter(line, sep).nth(fields - 1)
    };
    match at {
        Some(i) => (&line[..i], &line[i + sep.len()..]),
        None => (line, &[]),
    }
}

/// What the stderr thread learns.
#[derive(Default)]
struct Heard {
    counters: Counters,
    status: Option<String>,
    /// The last lines that were not `reporter:` lines.
    tail: VecDeque<String>,
}

const TAIL: usize = 20;

impl Heard {
    fn line(&mut self, prefix: &str, line: &str) {
        if let Some(r) = line.strip_prefix(prefix) {
            if let Some(c) = r.strip_prefix("counter:") {
                let mut parts = c.rsplitn(3, ',');
                if let (Some(n), Some(name), Some(group)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    if let Ok(n) = n.trim().parse::<i64>() {
                        self.counters.add(group, name, n);
                        return;
                    }
                }
            } else if let Some(s) = r.strip_prefix("status:") {
                self.status = Some(s.to_string());
                return;
            }
        }
        eprintln!("{line}");
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }

    /// Hands what was heard so far to the task.
    fn apply(&mut self, ctx: &mut TaskContext) {
        if !self.counters.is_empty() {
            ctx.counters.merge(&self.counters);
            self.counters = Counters::default();
        }
        if let Some(s) = self.status.take() {
            ctx.set_status(s);
        }
    }
}

/// Blocks SIGPIPE on the calling thread, once: a write into a process
/// that exited then fails with `EPIPE` (which [`Stream`] handles) even
/// where the process's disposition is the default (`hstack`'s client
/// commands restore it), instead of killing us. Children get a clean
/// mask (std resets it when it spawns).
fn block_sigpipe() {
    use nix::sys::signal::{SigSet, Signal};
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    DONE.with(|d| {
        if !d.get() {
            let mut s = SigSet::empty();
            s.add(Signal::SIGPIPE);
            let _ = s.thread_block();
            d.set(true);
        }
    });
}

/// A running command.
struct Proc {
    child: Child,
    stdin: Option<BufWriter<ChildStdin>>,
    /// Whole lines of stdout, in chunks.
    chunks: Receiver<std::io::Result<Vec<u8>>>,
    threads: Vec<JoinHandle<()>>,
    heard: Arc<Mutex<Heard>>,
    reaped: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only when the task failed: a process left running is killed.
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads stdout into chunks of whole lines.
fn read_stdout(mut r: impl Read, tx: mpsc::Sender<std::io::Result<Vec<u8>>>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let got = &buf[..n];
        let Some(last) = memchr::memrchr(b'\n', got) else {
            partial.extend_from_slice(got);
            continue;
        };
        let mut chunk = std::mem::take(&mut partial);
        chunk.extend_from_slice(&got[..=last]);
        partial.extend_from_slice(&got[last + 1..]);
        if tx.send(Ok(chunk)).is_err() {
            return;
        }
    }
    if !partial.is_empty() {
        partial.push(b'\n');
        let _ = tx.send(Ok(partial));
    }
}

/// The environment of a task's command: the job's settings (every key
/// the engine reads, with its default when not set, dots and the like
/// as `_`), the task's, then the `-cmdenv` pairs.
fn environment(ctx: &TaskContext, s: &Settings) -> Vec<(String, String)> {
    let c = &ctx.conf;
    let mut env: Vec<(String, String)> = JobConf::describe()
        .into_iter()
        .filter(|(k, d, _)| !d.is_empty() && c.get(k).is_none())
        .map(|(k, d, _)| (JobConf::env_name(k), d.to_string()))
        .collect();
    env.extend(c.0.iter().map(|(k, v)| (JobConf::env_name(k), v.clone())));
    let i = &ctx.info;
    let mut task = vec![
        ("mapreduce_job_id", i.job_id.clone()),
        ("mapreduce_task_id", i.task_id.clone()),
        ("mapreduce_task_attempt_id", i.attempt_id.clone()),
        ("mapreduce_task_partition", i.partition.to_string()),
        ("mapreduce_task_ismap", i.is_map.to_string()),
        // Hadoop 1's names, which older scripts read.
        ("mapred_job_id", i.job_id.clone()),
        ("mapred_tip_id", i.task_id.clone()),
        ("mapred_task_id", i.attempt_id.clone()),
        ("mapred_task_partition", i.partition.to_string()),
        ("mapred_task_is_map", i.is_map.to_string()),
    ];
    if i.is_map {
        let (file, start, len) = (
            i.input_file.clone(),
            i.input_start.to_string(),
            i.input_length.to_string(),
        );
        task.extend([
            ("mapreduce_map_input_file", file.clone()),
            ("mapreduce_map_input_start", start.clone()),
            ("mapreduce_map_input_length", len.clone()),
            ("map_input_file", file),
            ("map_input_start", start),
            ("map_input_length", len),
        ]);
    }
    env.extend(task.into_iter().map(|(k, v)| (k.to_string(), v)));
    env.extend(s.env.iter().cloned());
    env.retain(|(k, v)| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0'));
    env
}

/// Copies each shipped file into the working directory (mode 0755),
/// unless it is there already (another side of the same attempt, or a
/// runner that put it there).
fn ship_files(ctx: &TaskContext, files: &[String]) -> anyhow::Result<()> {
    let dir = &ctx.info.work_dir;
    for f in files {
        let dest = dir.join(fs::base_name(f));
        if dest.exists() {
            continue;
        }
        let Some(jfs) = ctx.fs() else {
            bail!("-file {f}: not in the task's directory and no file system to copy it from");
        };
        let tmp = dir.join(format!(".{}.part", fs::base_name(f)));
        let mut r = jfs.open(f, 0).with_context(|| format!("-file {f}"))?;
        let mut w = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        std::io::copy(&mut r, &mut w).with_context(|| format!("cannot copy -file {f}"))?;
        w.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        drop(w);
        std::fs::rename(&tmp, &dest)?;
    }
    Ok(())
}

/// One side's command as a mapper, combiner or reducer. A run is
/// `start`, records fed one by one (`Mapper::map`), and `finish`: the map task's, the reduce task's, or
/// one partition of one spill for the combiner.
pub struct Stream {
    s: Settings,
    p: Option<Proc>,
    /// A combiner's output, emitted sorted when it ends (a combiner's
    /// output goes into a sorted segment, whatever order it writes in).
    held: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Skipping mode (a failure will skip the record that caused it):
    /// records go to the mapper one at a time, each once the one before
    /// has been read from the pipe, so a crash is pinned on the right one.
    exact: bool,
}

/// Bytes written to a pipe and not yet read from it.
#[allow(unsafe_code)]
fn unread(fd: std::os::fd::RawFd) -> std::io::Result<usize> {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD on a pipe writes one `int` through the pointer,
    // which points at a live, writable `c_int`; `fd` is an open
    // descriptor owned by the caller for the call's duration.
    let r = unsafe { nix::libc::ioctl(fd, nix::libc::FIONREAD, &mut n) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

impl Stream {
    fn new(s: Settings) -> Self {
        let held = (s.side == Side::Combine).then(Vec::new);
        Self {
            s,
            p: None,
            held,
            exact: false,
        }
    }

    /// Skipping mode: waits until the process has read the record just
    /// written, emitting its output meanwhile. `Ok(false)`: it ended
    /// without reading it.
    fn wait_read(&mut self, out: &mut dyn Emit, ctx: &mut TaskContext) -> anyhow::Result<bool> {
        use std::os::fd::AsRawFd;
        let mut pause = std::time::Duration::from_micros(20);
        loop {
            self.drain(out, ctx)?;
            let Some(p) = self.p.as_mut() else {
                return Ok(false);
            };
            let Some(w) = p.stdin.as_ref() else {
                return Ok(false);
            };
            if unread(w.get_ref().as_raw_fd())? == 0 {
                return Ok(true);
            }
            if p.child.try_wait()?.is_some() {
                return Ok(false);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(2));
        }
    }

    /// The process ended before it read the record it was given: its
    /// exit, blamed on the record before (when it failed).
    fn ended_before_reading(
        &mut self,
        out: &mut dyn Emit,
        ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        self.finish(out, ctx)
            .map_err(|e| crate::task::PreviousRecordFailed(format!("{e:#}")).into())
    }

    fn start(&mut self, ctx: &mut TaskContext) -> anyhow::Result<()> {
        let dir = ctx.info.work_dir.clone();
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
        ship_files(ctx, &self.s.files)?;
        let env = environment(ctx, &self.s);
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default();
        let path = format!("{}:{path}", dir.display());
        block_sigpipe();
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.s.command)
            .current_dir(&dir)
            .envs(env)
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start the {} `{}`",
                    self.s.side.name(),
                    self.s.command
                )
            })?;
        let stdin = child
            .stdin
            .take()
            .map(|w| BufWriter::with_capacity(64 << 10, w));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, chunks) = mpsc::channel();
        let heard = Arc::new(Mutex::new(Heard::default()));
        let h = heard.clone();
        let prefix = self.s.prefix.clone();
        let threads = vec![
            std::thread::spawn(move || read_stdout(stdout, tx)),
            std::thread::spawn(move || {
                let mut r = BufReader::new(stderr);
                let mut line = Vec::new();
                while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    let l = String::from_utf8_lossy(&line);
                    let l = l.trim_end_matches(['\n', '\r']);
                    h.lock().expect("lock").line(&prefix, l);
                    line.clear();
                }
            }),
        ];
        self.p = Some(Proc {
            child,
            stdin,
            chunks,
            threads,
            heard,
            reaped: false,
        });
        Ok(())
    }

    fn emit_lines(&mut self, chunk: &[u8], out: &mut dyn Emit) -> anyhow::Result<()> {
        for line in chunk
            .strip_suffix(b"\n")
            .unwrap_or(chunk)
            .split(|&b| b == b'\n')
        {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (k, v) = split_fields(line, &self.s.out_sep, self.s.key_fields);
            match &mut self.held {
                Some(h) => h.push((k.to_vec(), v.to_vec())),
                None => out.emit(k, v)?,
            }
        }
        Ok(())
    }

    /// Emits what the process has written so far.
    fn drain(&mut self, out: &mut dyn Emit, ctx: &mut TaskContext) -> anyhow::Result<()> {
        loop {
            let Some(p) = &self.p else { return Ok(()) };
            match p.chunks.try_recv() {
                Ok(chunk) => {
                    let chunk = chunk
                        .with_context(|| format!("reading the {}'s output", self.s.side.name()))?;
                    self.emit_lines(&chunk, out)?;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if let Some(p) = &self.p {
            p.heard.lock().expect("lock").apply(ctx);
        }
        Ok(())
    }

    /// Closes stdin, emits the rest of the output, waits for the exit.
    fn finish(&mut self, out: &mut dyn Emit, ctx: &mut TaskContext) -> anyhow::Result<()> {
        let Some(mut p) = self.p.take() else {
            return self.emit_held(out);
        };
        if let Some(mut w) = p.stdin.take() {
            match w.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => bail!("writing to the {}: {e}", self.s.side.name()),
            }
            // Dropping the writer closes the pipe: end of input.
            let _ = w.into_parts();
        }
        while let Ok(chunk) = p.chunks.recv() {
            let chunk =
                chunk.with_context(|| format!("reading the {}'s output", self.s.side.name()))?;
            self.emit_lines(&chunk, out)?;
        }
        for t in p.threads.drain(..) {
            let _ = t.join();
        }
        let status = p
            .child
            .wait()
            .with_context(|| format!("waiting for the {}", self.s.side.name()))?;
        p.reaped = true;
        let mut heard = p.heard.lock().expect("lock");
        heard.apply(ctx);
        if !status.success() && (self.s.exit_fails || status.code().is_none()) {
            bail!(self.exit_error(status, &heard.tail));
        }
        drop(heard);
        self.emit_held(out)
    }

    fn exit_error(&self, status: ExitStatus, tail: &VecDeque<String>) -> String {
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            (None, None) => format!("ended with {status}"),
        };
        let last = if tail.is_empty() {
            "(it wrote nothing to stderr)".to_string()
        } else {
            format!(
                "its last stderr lines:\n{}",
                Vec::from(tail.clone()).join("\n")
            )
        };
        format!(
            "the {} `{}` {how}; {last}",
            self.s.side.name(),
            self.s.command
        )
    }

    fn emit_held(&mut self, out: &mut dyn Emit) -> anyhow::Result<()> {
        if let Some(h) = &mut self.held {
            // Stable: a key's values keep the order they were written in.
            h.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in h.drain(..) {
                out.emit(&k, &v)?;
            }
        }
        Ok(())
    }
}

impl Mapper for Stream {
    fn setup(&mut self, ctx: &mut TaskContext) -> anyhow::Result<()> {
        self.exact = self.s.side == Side::Map && ctx.conf.bool(conf::SKIP_MODE);
        self.start(ctx)
    }

    fn map(
        &mut self,
        key: &[u8],
        value: &[u8],
        out: &mut dyn Emit,
        ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        // One record to the process's stdin.
        let Some(w) = self.p.as_mut().and_then(|p| p.stdin.as_mut()) else {
            // It ended early, successfully: the rest is not read.
            return Ok(());
        };
        let r = (|| -> std::io::Result<()> {
            if let Some(sep) = &self.s.in_sep {
                w.write_all(key)?;
                w.write_all(sep)?;
            }
            w.write_all(value)?;
            w.write_all(b"\n")?;
            if self.exact {
                w.flush()?;
            }
            Ok(())
        })();
        match r {
            Ok(()) if self.exact => {
                if self.wait_read(out, ctx)? {
                    Ok(())
                } else {
                    self.ended_before_reading(out, ctx)
                }
            }
            Ok(()) => self.drain(out, ctx),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && self.exact => {
                self.ended_before_reading(out, ctx)
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.finish(out, ctx),
            Err(e) => Err(anyhow!("writing to the {}: {e}", self.s.side.name())),
        }
    }

    fn cleanup(&mut self, out: &mut dyn Emit, ctx: &mut TaskContext) -> anyhow::Result<()> {
        self.finish(out, ctx)
    }
}

impl Reducer for Stream {
    fn setup(&mut self, ctx: &mut TaskContext) -> anyhow::Result<()> {
        self.start(ctx)
    }

    fn reduce(
        &mut self,
        key: &[u8],
        values: &mut dyn Values,
        out: &mut dyn Emit,
        ctx: &mut TaskContext,
    ) -> anyhow::Result<()> {
        while let Some(v) = values.next_value()? {
            Mapper::map(self, key, v, out, ctx)?;
        }
        Ok(())
    }

    fn cleanup(&mut self, out: &mut dyn Emit, ctx: &mut TaskContext) -> anyhow::Result<()> {
        self.finish(out, ctx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::api::{TaskInfo, VecEmit};
    use crate::counters as c;
    use crate::fs::LocalFs;
    use crate::local::{self, JobProgress, JobReport};

    struct Quiet;
    impl JobProgress for Quiet {
        fn update(&self, _m: f32, _r: f32) {}
    }

    /// A command line's words, as a shell splits them: '…' and "…" quote
    /// (no expansion; `\"` and `\\` inside "…"), `\` escapes outside.
    fn words(s: &str) -> Vec<String> {
        let (mut out, mut w, mut any) = (Vec::new(), String::new(), false);
        let mut cs = s.chars();
        while let Some(ch) = cs.next() {
            match ch {
                '\'' => {
                    any = true;
                    w.extend(cs.by_ref().take_while(|&c| c != '\''));
                }
                '"' => {
                    any = true;
                    while let Some(c) = cs.next() {
                        match c {
                            '"' => break,
                            '\\' => match cs.next() {
                                Some(e @ ('"' | '\\')) => w.push(e),
                                Some(e) => w.extend(['\\', e]),
                                None => w.push('\\'),
                            },
                            c => w.push(c),
                        }
                    }
                }
                '\\' => w.extend(cs.next()),
                c if c.is_whitespace() => {
                    if any || !w.is_empty() {
                        out.push(std::mem::take(&mut w));
                    }
                    any = false;
                }
                c => w.push(c),
            }
        }
        if any || !w.is_empty() {
            out.push(w);
        }
        out
    }

    fn parse(line: &str) -> anyhow::Result<StreamingJob> {
        parse_args(&words(line))
    }

    /// Parses, prepares and runs a streaming job on the local file system.
    fn run(line: &str) -> anyhow::Result<JobReport> {
        let mut spec = parse(line)?.to_spec("tester");
        let fs: Arc<dyn Fs> = Arc::new(LocalFs::new());
        local::prepare(&mut spec, fs.as_ref())?;
        let scratch = PathBuf::from(format!("{}.scratch", spec.output));
        local::run(&spec, fs, scratch, 2, &Quiet)
    }

    /// The `part-*` files of a finished job's output: (name, text).
    fn parts(out: &Path) -> Vec<(String, String)> {
        assert!(
            out.join("_SUCCESS").exists(),
            "no _SUCCESS in {}",
            out.display()
        );
        let mut v: Vec<(String, String)> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (fs::base_name(p.to_str().unwrap()).to_string(), p))
            .filter(|(n, _)| n.starts_with("part-"))
            .map(|(n, p)| (n, std::fs::read_to_string(p).unwrap()))
            .collect();
        v.sort();
        v
    }

    /// Every output line, sorted.
    fn lines(out: &Path) -> Vec<String> {
        let mut l: Vec<String> = parts(out)
            .iter()
            .flat_map(|(_, t)| t.lines().map(String::from).collect::<Vec<_>>())
            .collect();
        l.sort();
        l
    }

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }

    /// Text files of pseudo-random words, tabs and spaces between them,
    /// and their word counts as `word<TAB>n` lines.
    fn corpus(dir: &Path, files: usize, lines: usize) -> (Vec<String>, Vec<String>) {
        let words = [
            "the", "fox", "jumps", "over", "lazy", "dog", "a1", "Éclair", "zeta",
        ];
        let mut x = 99u64;
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        let paths = (0..files)
            .map(|f| {
                let mut s = String::new();
                for _ in 0..lines {
                    for i in 0..1 + (x % 7) as usize {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        if i > 0 {
                            s.push(if x % 5 == 0 { '\t' } else { ' ' });
                        }
                        let w = words[((x >> 33) % words.len() as u64) as usize];
                        *counts.entry(w).or_default() += 1;
                        s.push_str(w);
                    }
                    s.push('\n');
                }
                write(dir, &format!("in{f}.txt"), &s)
            })
            .collect();
        let want = counts.iter().map(|(w, n)| format!("{w}\t{n}")).collect();
        (paths, want)
    }

    /// A streaming reducer (and combiner) that sums each key's counts.
    const SUM_PY: &str = "#!/usr/bin/env python3
import sys
cur, n = None, 0
for line in sys.stdin:
    k, v = line.rstrip('\\n').split('\\t', 1)
    if k != cur:
        if cur is not None:
            print(f'{cur}\\t{n}')
        cur, n = k, 0
    n += int(v)
if cur is not None:
    print(f'{cur}\\t{n}')
";

    const AWK_WORDS: &str = r#""awk '{for (i = 1; i <= NF; i++) print $i \"\t1\"}'""#;

    #[test]
    fn parse_args_takes_every_option() {
        let j = parse(
            "-input a --input b* --output=out -mapper cat -combiner uniq -reducer 'wc -l' \
             -numReduceTasks 3 -file m.py -files x.py,y.sh -cmdenv 'A=1 2' -cmdenv B= \
             -D my.key=v=w -Dstream.map.output.field.separator=. -jobconf mapreduce.job.name=wc \
             -inputformat org.apache.hadoop.mapred.KeyValueTextInputFormat \
             -outputformat org.apache.hadoop.mapred.SequenceFileOutputFormat \
             -partitioner org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner -verbose",
        )
        .unwrap();
        assert_eq!(j.inputs, ["a", "b*"]);
        assert_eq!(j.output, "out");
        assert_eq!(j.files, ["m.py", "x.py", "y.sh"]);
        let c = &j.conf;
        assert_eq!(c.get(MAP_COMMAND), Some("cat"));
        assert_eq!(c.get(COMBINE_COMMAND), Some("uniq"));
        assert_eq!(c.get(REDUCE_COMMAND), Some("wc -l"));
        assert_eq!(c.reduces(), 3);
        assert_eq!(c.get(ENVIRONMENT), Some("A=1 2\nB="));
        assert_eq!(c.get("my.key"), Some("v=w"));
        assert_eq!(c.get(MAP_SEPARATOR), Some("."));
        assert_eq!(c.get(conf::JOB_NAME), Some("wc"));
        assert_eq!(c.get(conf::INPUT_FORMAT), Some("kv"));
        assert_eq!(c.get(conf::OUTPUT_FORMAT), Some("seq"));
        assert!(c
            .get(PARTITIONER)
            .unwrap()
            .ends_with(".KeyFieldBasedPartitioner"));
        let spec = j.clone().to_spec("ann");
        assert_eq!(
            (spec.job.as_str(), spec.user.as_str()),
            ("streaming", "ann")
        );
        assert_eq!(
            (spec.inputs, spec.files, spec.args),
            (j.inputs, j.files, j.args)
        );

        // -reducer NONE and -numReduceTasks win over -D.
        let j = parse("-D mapreduce.job.reduces=5 -input a -output o -mapper cat -reducer NONE");
        let j = j.unwrap();
        assert_eq!((j.conf.reduces(), j.conf.get(REDUCE_COMMAND)), (0, None));
        let j = parse("-input a -output o -mapper cat -numReduceTasks 2 -Dmapreduce.job.reduces=5");
        assert_eq!(j.unwrap().conf.reduces(), 2);

        let ok = "-input a -output o -mapper cat";
        for (args, want) in [
            (format!("{ok} -bogus"), "unknown option -bogus"),
            (format!("{ok} -bogus"), "-numReduceTasks, -file"),
            (format!("{ok} -reducer"), "-reducer needs a value"),
            (format!("{ok} -D novalue"), "expected KEY=VALUE"),
            (
                format!("{ok} -Dmapreduce.job.reduces=x"),
                "mapreduce.job.reduces must be",
            ),
            (format!("{ok} -numReduceTasks -1"), "whole number"),
            (format!("{ok} -cmdenv NOEQUALS"), "NAME=VALUE"),
            (format!("{ok} -inputformat Foo"), "-inputformat Foo"),
            (format!("{ok} -partitioner my.Part"), "only HashPartitioner"),
            (format!("{ok} -background"), "-background is not supported"),
            (format!("{ok} stray"), "unexpected argument"),
            (format!("{ok} --verbose=1"), "takes no value"),
            (format!("{ok} -output p"), "-output given twice"),
            ("-output o -mapper cat".into(), "missing -input"),
            ("-input a -mapper cat".into(), "missing -output"),
            ("-input a -output o".into(), "missing -mapper"),
        ] {
            let e = parse(&args).unwrap_err();
            assert!(e.to_string().contains(want), "{args}: {e}");
        }
    }

    #[test]
    fn fields_split_at_the_nth_separator() {
        for (line, sep, n, key, value) in [
            ("a\tb\tc", "\t", 1, "a", "b\tc"),
            ("a.b.c.d", ".", 2, "a.b", "c.d"),
            ("a.b", ".", 2, "a.b", ""),
            ("no tab", "\t", 1, "no tab", ""),
            ("k::v::w", "::", 1, "k", "v::w"),
        ] {
            let got = split_fields(line.as_bytes(), sep.as_bytes(), n);
            assert_eq!(got, (key.as_bytes(), value.as_bytes()), "{line:?}");
        }
        let p = KeyFields {
            sep: b".".to_vec(),
            ranges: vec![(2, 2)],
        };
        assert_eq!(p.fields(b"a.b.c", (2, 2)), b"b");
        assert_eq!(p.fields(b"a.b.c", (2, 0)), b"b.c");
        assert_eq!(p.fields(b"a", (2, 3)), b"");
        assert_eq!(p.partition(b"x.k.1", b"", 7), p.partition(b"y.k.2", b"", 7));
        assert_eq!(first_word("LC_ALL=C sort -k1"), Some("sort"));
        assert_eq!(first_word("  'python3' x.py"), Some("python3"));
        assert_eq!(first_word("cat; echo x"), Some("cat"));
        assert_eq!(first_word("sort|uniq"), Some("sort"));
    }

    #[test]
    fn wordcount_with_awk_and_a_python_reducer_equals_a_reference() {
        let d = tempfile::tempdir().unwrap();
        let (inputs, want) = corpus(d.path(), 3, 2000);
        let sum = write(d.path(), "sum.py", SUM_PY);
        let out = d.path().join("out");
        let glob = format!("{}/in[12].txt", d.path().display());
        let r = run(&format!(
            "-input {} -input {glob} -output {} -mapper {AWK_WORDS} -reducer sum.py -file {sum} \
             -numReduceTasks 3 -D mapreduce.input.fileinputformat.split.maxsize=7000",
            inputs[0],
            out.display()
        ))
        .unwrap();
        assert!(r.maps > 3, "{} maps", r.maps);
        let names: Vec<String> = parts(&out).into_iter().map(|p| p.0).collect();
        assert_eq!(names, ["part-r-00000", "part-r-00001", "part-r-00002"]);
        assert_eq!(lines(&out), want);

        // `tr` and `sed` in a pipeline as the mapper.
        let out = d.path().join("out2");
        run(&format!(
            "-input {glob} -input {} -output {} -numReduceTasks 3 -file {sum} \
             -mapper \"tr -s ' \\t' '\\n\\n' | grep -v '^$' | sed 's/$/\t1/'\" \
             -reducer 'python3 sum.py'",
            inputs[0],
            out.display()
        ))
        .unwrap();
        assert_eq!(lines(&out), want);
    }

    #[test]
    fn the_environment_carries_the_task_the_job_and_cmdenv() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.txt", "1\n2\n");
        let b = write(d.path(), "b.txt", "3\n");
        let env = write(
            d.path(),
            "env.sh",
            "#!/bin/sh\ncat >/dev/null\nprintf '%s\\t%s|%s|%s|%s|%s\\n' \
             \"$mapreduce_task_partition\" \"$mapreduce_map_input_file\" \"$MYVAR\" \
             \"$mapreduce_task_ismap\" \"$my_own_key\" \"$(ls env.sh)\"\n",
        );
        let out = d.path().join("out");
        run(&format!(
            "-input {a} -input {b} -output {} -mapper env.sh -file {env} -reducer NONE \
             -cmdenv 'MYVAR=hello world' -D my.own.key=mine",
            out.display()
        ))
        .unwrap();
        let ps = parts(&out);
        assert_eq!(ps.len(), 2, "{ps:?}");
        let line = |p: u32, f: &str| format!("{p}\t{f}|hello world|true|mine|env.sh\n");
        assert_eq!(ps[0], ("part-m-00000".into(), line(0, &a)));
        assert_eq!(ps[1], ("part-m-00001".into(), line(1, &b)));

        // A reducer sees its partition, ismap=false and the defaults.
        let out = d.path().join("out2");
        let r = "cat >/dev/null; echo r$mapreduce_task_partition $mapreduce_task_ismap \
                 $mapreduce_job_reduces $mapreduce_task_io_sort_mb";
        run(&format!(
            "-input {a} -output {} -mapper cat -reducer '{r}' -numReduceTasks 2",
            out.display()
        ))
        .unwrap();
        assert_eq!(lines(&out), ["r0 false 2 256", "r1 false 2 256"]);
    }

    #[test]
    fn reporter_lines_on_stderr_update_counters_and_status() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.txt", "x\ny\nz\n");
        let out = d.path().join("out");
        let counting = r#""awk '{print \"reporter:counter:Mine,lines,1\" > \"/dev/stderr\"; print}
            END {print \"reporter:counter:Mine,big,40\" > \"/dev/stderr\";
                 print \"reporter:status:all done\" > \"/dev/stderr\";
                 print \"just noise\" > \"/dev/stderr\"}'""#;
        let r = run(&format!(
            "-input {a} -output {} -mapper {counting} \
             -reducer 'cat; echo reporter:counter:Mine,reduced,2 >&2'",
            out.display()
        ))
        .unwrap();
        assert_eq!(r.counters.get("Mine", "lines"), 3);
        assert_eq!(r.counters.get("Mine", "big"), 40);
        assert_eq!(r.counters.get("Mine", "reduced"), 2);
        assert_eq!(lines(&out), ["x", "y", "z"]);

        // The status and the counters as a task's context sees them.
        let spec = parse(&format!("-input {a} -output o -mapper {counting}"))
            .unwrap()
            .to_spec("t");
        let mut m = Streaming.mapper(&spec).unwrap();
        let info = TaskInfo {
            is_map: true,
            work_dir: d.path().join("work"),
            ..Default::default()
        };
        let mut ctx = TaskContext::new(Arc::new(spec.conf.clone()), info);
        let mut out = VecEmit::default();
        m.setup(&mut ctx).unwrap();
        for l in ["p", "q"] {
            m.map(b"0", l.as_bytes(), &mut out, &mut ctx).unwrap();
        }
        m.cleanup(&mut out, &mut ctx).unwrap();
        assert_eq!(ctx.status(), "all done");
        assert_eq!(ctx.counters.get("Mine", "lines"), 2);
        assert_eq!(out.0, [(b"p".to_vec(), vec![]), (b"q".to_vec(), vec![])]);
    }

    /// The record an attempt blames, as the child reports it.
    #[derive(Default)]
    struct Blamed(std::sync::atomic::AtomicU64);
    impl crate::task::Progress for Blamed {
        fn progress(&self, _f: f32, _s: &str) {}
        fn record(&self, n: u64) {
            self.0.store(n + 1, std::sync::atomic::Ordering::Relaxed);
        }
        fn no_record(&self) {
            self.0.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn in_skipping_mode_a_crash_is_pinned_on_the_record_that_caused_it() {
        let d = tempfile::tempdir().unwrap();
        let bad = 1234u64;
        let text: String = (0..3000u64)
            .map(|i| {
                if i == bad {
                    "bad\n".to_string()
                } else {
                    format!("line{i}\n")
                }
            })
            .collect();
        let a = write(d.path(), "in.txt", &text);
        // A mapper that handles each line as it reads it (Python's
        // `for line in sys.stdin`; mawk, which reads ahead before it
        // handles anything, is blamed late: docs/architecture/mapreduce.md).
        let py = write(
            d.path(),
            "m.py",
            "import sys\nfor l in sys.stdin:\n    if l == 'bad\\n':\n        sys.exit(3)\n    print(l, end='')\n",
        );
        let out = d.path().join("out");
        let mut spec = parse(&format!(
            "-input {a} -output {} -reducer NONE -mapper 'python3 {py}'",
            out.display()
        ))
        .unwrap()
        .to_spec("t");
        let fs: Arc<dyn Fs> = Arc::new(LocalFs::new());
        local::prepare(&mut spec, fs.as_ref()).unwrap();
        assert_eq!(spec.splits.len(), 1);
        let attempt =
            |n: u32, skip: &'static [u64], progress: &'static Blamed| crate::task::Attempt {
                spec: &spec,
                job_id: "job_1_0001",
                index: 0,
                attempt: n,
                fs: fs.clone(),
                work: d.path().join(format!("work{n}")),
                progress,
                skip,
                skip_mode: true,
            };
        // Three times: the record reported is the bad one, every time
        // (the process is a step behind the writer only in normal mode).
        for n in 0..3 {
            let blamed: &'static Blamed = Box::leak(Box::default());
            let e = crate::task::run_map(&attempt(n, &[], blamed)).unwrap_err();
            assert!(format!("{e:#}").contains("exited with status 3"), "{e:#}");
            assert_eq!(
                blamed.0.load(std::sync::atomic::Ordering::Relaxed),
                bad + 1,
                "attempt {n}"
            );
        }
        // Skipping it, the attempt succeeds and counts it.
        let blamed: &'static Blamed = Box::leak(Box::default());
        let skip: &'static [u64] = Box::leak(vec![bad].into_boxed_slice());
        let done = crate::task::run_map(&attempt(3, skip, blamed)).unwrap();
        assert_eq!(done.counters.get(c::TASK, c::MAP_SKIPPED_RECORDS), 1);
        assert_eq!(done.counters.get(c::TASK, c::MAP_INPUT_RECORDS), 3000);
    }

    #[test]
    fn two_key_fields_with_a_dot_change_keys_and_partitions() {
        let d = tempfile::tempdir().unwrap();
        let text: String = (0..300)
            .map(|i| format!("h{}.k{}.{i}\n", i % 7, i % 3))
            .collect();
        let a = write(d.path(), "a.txt", &text);
        let job = format!(
            "-input {a} -mapper cat -reducer cat -numReduceTasks 3 \
             -D stream.num.map.output.key.fields=2 -D stream.map.output.field.separator=."
        );
        let out = d.path().join("out");
        run(&format!("{job} -output {}", out.display())).unwrap();
        let mut n = 0;
        for (p, (name, t)) in parts(&out).iter().enumerate() {
            assert_eq!(name, &format!("part-r-{p:05}"));
            for l in t.lines() {
                n += 1;
                // The reducer got `h1.k2<TAB>17`: the key is two fields.
                let (k, v) = l.split_once('\t').unwrap();
                assert_eq!(k.matches('.').count(), 1, "{l}");
                assert!(v.parse::<u32>().is_ok(), "{l}");
                assert_eq!(
                    HashPartitioner.partition(k.as_bytes(), b"", 3) as usize,
                    p,
                    "{l}"
                );
            }
        }
        assert_eq!(n, 300);

        // KeyFieldBasedPartitioner on the first field: a host's keys
        // all go to one reduce.
        let out = d.path().join("out2");
        run(&format!(
            "{job} -output {} -D mapreduce.map.output.key.field.separator=. \
             -D mapreduce.partition.keypartitioner.options=-k1,1 \
             -partitioner org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner",
            out.display()
        ))
        .unwrap();
        for (p, (_, t)) in parts(&out).iter().enumerate() {
            for l in t.lines() {
                let host = l.split('.').next().unwrap();
                assert_eq!(
                    HashPartitioner.partition(host.as_bytes(), b"", 3) as usize,
                    p,
                    "{l}"
                );
            }
        }
    }

    #[test]
    fn a_combiner_command_runs_and_shrinks_the_map_output() {
        let d = tempfile::tempdir().unwrap();
        let (inputs, want) = corpus(d.path(), 2, 1500);
        let sum = write(d.path(), "sum.py", SUM_PY);
        let out = d.path().join("out");
        let r = run(&format!(
            "-input {} -input {} -output {} -mapper {AWK_WORDS} -combiner ./sum.py \
             -reducer ./sum.py -file {sum} -numReduceTasks 2",
            inputs[0],
            inputs[1],
            out.display()
        ))
        .unwrap();
        let ci = r.counters.get(c::TASK, c::COMBINE_INPUT_RECORDS);
        let co = r.counters.get(c::TASK, c::COMBINE_OUTPUT_RECORDS);
        assert!(ci > co && co > 0, "combine in {ci}, out {co}");
        assert_eq!(lines(&out), want);
    }

    #[test]
    fn bad_commands_fail_clearly_and_leave_no_success() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.txt", &"some line\n".repeat(5000));
        let o1 = d.path().join("o1");
        let job = format!("-input {a} -output {}", o1.display());
        for (args, want) in [
            (
                format!("{job} -mapper 'nosuch -x'"),
                "the mapper command `nosuch` is not a program on PATH or a -file",
            ),
            (
                format!("{job} -mapper cat -reducer /no/such/reducer"),
                "the reducer command `/no/such/reducer` is not",
            ),
            (
                format!("{job} -mapper cat -combiner ./c.py -file /x/b.py"),
                "-file /x/b.py: no such file",
            ),
            (
                format!("{job} -mapper cat -combiner ./c.py"),
                "the combiner command `./c.py` is not",
            ),
        ] {
            let e = run(&args).unwrap_err();
            assert!(e.to_string().contains(want), "{args}: {e}");
            assert!(!o1.exists());
        }

        // A reducer that fails every time fails the job, with its status
        // and its last words.
        let out = d.path().join("o2");
        let e = run(&format!(
            "-input {a} -output {} -mapper cat -reducer 'echo cannot go on >&2; exit 3'",
            out.display()
        ))
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("the reducer `echo cannot go on >&2; exit 3` exited with status 3"),
            "{msg}"
        );
        assert!(
            msg.contains("its last stderr lines:\ncannot go on"),
            "{msg}"
        );
        assert!(!out.join("_SUCCESS").exists());
        let out = d.path().join("o2b");
        run(&format!(
            "-input {a} -output {} -mapper cat -reducer 'cat; exit 3' \
             -D stream.non.zero.exit.is.failure=false",
            out.display()
        ))
        .unwrap();
        assert_eq!(lines(&out), ["some line"; 5000]);

        // A mapper killed by a signal.
        let out = d.path().join("o3");
        let e = run(&format!(
            "-input {a} -output {} -mapper 'kill -9 $$'",
            out.display()
        ));
        let msg = format!("{:#}", e.unwrap_err());
        assert!(msg.contains("was killed by signal 9"), "{msg}");
        assert!(!out.join("_SUCCESS").exists());
    }

    #[test]
    fn map_only_and_a_mapper_that_stops_reading_early() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.txt", &"a line\tof text\n".repeat(50_000));
        let b = write(d.path(), "b.txt", "k\tv\n");
        let out = d.path().join("out");
        let r = run(&format!(
            "-input {a} -input {b} -output {} -mapper 'head -n 2' -reducer NONE",
            out.display()
        ))
        .unwrap();
        assert_eq!(r.reduces, 0);
        let ps = parts(&out);
        let two = "a line\tof text\n".repeat(2);
        assert_eq!(
            ps,
            [
                ("part-m-00000".into(), two),
                ("part-m-00001".into(), "k\tv\n".into())
            ]
        );

        // Key-value input: the mapper gets key<TAB>value.
        let out = d.path().join("out2");
        run(&format!(
            "-input {b} -output {} -mapper \"sed 's/\t/=/'\" -reducer NONE \
             -inputformat KeyValueTextInputFormat",
            out.display()
        ))
        .unwrap();
        assert_eq!(lines(&out), ["k=v"]);
    }
}
