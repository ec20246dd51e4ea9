//! Configuration layering: built-in defaults < TOML file (`--config`) <
//! `HSTACK_<ROLE>_<KEY>` environment < command-line flags.
//!
//! A role describes its configuration as one flat serde struct with a
//! `Default` (and `#[serde(deny_unknown_fields)]`) that also derives
//! `clap::Args`: its fields are its flags, with its doc comments as their
//! help. [`DaemonArgs`] wraps it so that no flag is required, each shows
//! the key's default, and only the flags actually given override the
//! layers below. Config structs have no `Option` fields: every key has a
//! default, so the environment layer knows every key and its type.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use toml::{Table, Value};

use crate::role::RoleConfig;

/// Flags every daemon takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CommonArgs {
    /// TOML configuration file (keys as in --print-default-config).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the built-in default configuration as TOML and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// Load and validate the configuration, print the result, and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// A daemon's command line: the common flags, and the role's
/// configuration keys as flags (only those given are kept).
#[derive(Clone, Debug)]
pub struct DaemonArgs<C> {
    pub common: CommonArgs,
    /// The keys given on the command line, with their parsed values.
    pub flags: Table,
    _config: PhantomData<fn() -> C>,
}

impl<C> DaemonArgs<C> {
    pub fn new(common: CommonArgs, flags: Table) -> Self {
        Self {
            common,
            flags,
            _config: PhantomData,
        }
    }
}

/// A key's default as clap's default value(s), so `--help` shows it and
/// the role's derive finds every key present.
fn with_default(arg: clap::Arg, default: &Value) -> clap::Arg {
    // A flag given twice: the last wins (scripts that append flags).
    let id = arg.get_id().clone();
    let arg = arg.required(false).overrides_with(id);
    match default {
        Value::Array(items) if items.is_empty() => arg,
        Value::Array(items) => arg.default_values(items.iter().map(scalar).collect::<Vec<_>>()),
        v => arg.default_value(scalar(v)),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl<C: RoleConfig> clap::Args for DaemonArgs<C> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = CommonArgs::augment_args(cmd);
        let mut cmd = C::augment_args(cmd);
        let defaults = to_table(&C::default()).expect("a role's defaults serialize as a table");
        for (key, default) in &defaults {
            cmd = cmd.mut_arg(key.as_str(), |a| with_default(a, default));
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl<C: RoleConfig> clap::FromArgMatches for DaemonArgs<C> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let common = CommonArgs::from_arg_matches(m)?;
        let all = C::from_arg_matches(m)?;
        let all = to_table(&all).map_err(|e| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, e.to_string())
        })?;
        let flags = all
            .into_iter()
            .filter(|(k, _)| m.value_source(k) == Some(ValueSource::CommandLine))
            .collect();
        Ok(Self::new(common, flags))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// For a role's own tests: every key's default, given as its flag, parses
/// back to the default (this catches a `bool` field without `action =
/// Set`, a list without a delimiter, a type clap cannot parse), and no flag
/// is required. Panics naming the key that does not.
pub fn assert_flags_round_trip<C: RoleConfig>() {
    #[derive(clap::Parser)]
    struct Cli<C: RoleConfig> {
        #[command(flatten)]
        args: DaemonArgs<C>,
    }
    use clap::Parser;
    let none = Cli::<C>::try_parse_from(["role"]).expect("no flag is required");
    assert!(none.args.flags.is_empty(), "{:?}", none.args.flags);
    let defaults = to_table(&C::default()).expect("defaults serialize");
    for (key, v) in &defaults {
        let value = match v {
            Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(","),
            v => scalar(v),
        };
        if value.is_empty() {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let parsed = Cli::<C>::try_parse_from(["role", flag.as_str(), value.as_str()])
            .unwrap_or_else(|e| panic!("{flag} {value:?}: {e}"));
        assert_eq!(parsed.args.flags.get(key), Some(v), "{flag} {value:?}");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: unknown key {key:?} (known keys: {known})")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// What the caller should do with the layered configuration.
#[derive(Debug)]
pub enum ConfigOutcome<T> {
    /// Start the daemon with this configuration.
    Run(T),
    /// Print this text and exit successfully (`--print-default-config`, `--check-config`).
    Exit(String),
}

/// The environment prefix of a role's keys: `HSTACK_NAMENODE_`.
pub fn env_prefix(role: &str) -> String {
    format!("HSTACK_{}_", role.to_uppercase().replace('-', "_"))
}

/// Layers the configuration of role `role` and runs the role's own
/// `validate` on the result (ranges, addresses: what serde cannot check),
/// for `--check-config` as for a start.
pub fn layer_config<T: RoleConfig>(
    args: &DaemonArgs<T>,
    role: &str,
) -> Result<ConfigOutcome<T>, ConfigError> {
    layer(
        &args.common,
        &env_prefix(role),
        args.flags.clone(),
        |k| std::env::var(k).ok(),
        T::validate,
    )
}

fn layer<T, V>(
    common: &CommonArgs,
    env_prefix: &str,
    flags: Table,
    env: impl Fn(&str) -> Option<String>,
    validate: V,
) -> Result<ConfigOutcome<T>, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
    V: Fn(&T) -> Result<(), String>,
{
    let defaults = to_table(&T::default())?;
    if common.print_default_config {
        let text = toml::to_string_pretty(&T::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        return Ok(ConfigOutcome::Exit(text));
    }
    let mut merged = defaults.clone();
    if let Some(path) = &common.config {
        let file = read_file_layer(path, &defaults)?;
        merged.extend(file);
    }
    merged.extend(env_layer(env_prefix, &defaults, env)?);
    merged.extend(flags);
    let cfg: T = Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
    validate(&cfg).map_err(ConfigError::Invalid)?;
    if common.check_config {
        let text = toml::to_string_pretty(&cfg).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        return Ok(ConfigOutcome::Exit(format!(
            "# configuration is valid\n{text}"
        )));
    }
    Ok(ConfigOutcome::Run(cfg))
}

fn to_table<S: Serialize>(value: &S) -> Result<Table, ConfigError> {
    match Value::try_from(value) {
        Ok(Value::Table(t)) => Ok(t),
        Ok(_) => Err(ConfigError::Invalid("configuration is not a table".into())),
        Err(e) => Err(ConfigError::Invalid(e.to_string())),
    }
}

fn read_file_layer(path: &Path, defaults: &Table) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    if let Some(key) = table.keys().find(|k| !defaults.contains_key(*k)) {
        return Err(ConfigError::UnknownKey {
            path: path.to_path_buf(),
            key: key.clone(),
            known: defaults.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    }
    Ok(table)
}

/// `HSTACK_<KEY>` for every known key, parsed as the default's type.
fn env_layer(
    prefix: &str,
    defaults: &Table,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Table, ConfigError> {
    let mut out = Table::new();
    for (key, default) in defaults {
        let var = format!("{prefix}{}", key.to_uppercase().replace('-', "_"));
        let Some(raw) = lookup(&var) else { continue };
        let parsed = parse_like(default, &raw).map_err(|message| ConfigError::Env {
            var: var.clone(),
            value: raw.clone(),
            message,
        })?;
        out.insert(key.clone(), parsed);
    }
    Ok(out)
}

fn parse_like(default: &Value, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    Ok(match default {
        Value::String(_) => Value::String(raw.to_string()),
        Value::Integer(_) => {
            Value::Integer(raw.parse().map_err(|_| "expected an integer".to_string())?)
        }
        Value::Float(_) => Value::Float(raw.parse().map_err(|_| "expected a number".to_string())?),
        Value::Boolean(_) => Value::Boolean(match raw {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err("expected true or false".into()),
        }),
        Value::Array(items) => {
            let elem = items
                .first()
                .cloned()
                .unwrap_or(Value::String(String::new()));
            let parts = raw.split(',').map(str::trim).filter(|s| !s.is_empty());
            Value::Array(
                parts
                    .map(|p| parse_like(&elem, p))
                    .collect::<Result<_, _>>()?,
            )
        }
        other => {
            return Err(format!(
                "keys of type {} cannot be set from the environment",
                other.type_str()
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::{FromArgMatches, Parser};
    use serde::Deserialize;

    use super::*;

    /// A role's configuration as roles write it: serde, Default, clap.
    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, clap::Args)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        /// The port.
        #[arg(long)]
        port: i64,
        #[arg(long)]
        name: String,
        #[arg(long, action = clap::ArgAction::Set)]
        fsync: bool,
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        dirs: Vec<String>,
        #[arg(long)]
        ratio: f64,
        #[arg(long, value_enum)]
        log_format: crate::LogFormat,
    }

    impl Default for Cfg {
        fn default() -> Self {
            Self {
                port: 1,
                name: "a".into(),
                fsync: true,
                peers: vec![],
                dirs: vec!["d1".into(), "d2".into()],
                ratio: 0.5,
                log_format: crate::LogFormat::Human,
            }
        }
    }

    impl RoleConfig for Cfg {
        fn validate(&self) -> Result<(), String> {
            if self.port > 0 {
                Ok(())
            } else {
                Err("port must be > 0".to_string())
            }
        }
        fn log_format(&self) -> crate::LogFormat {
            self.log_format
        }
        fn log_level(&self) -> &str {
            "info"
        }
        fn worker_threads(&self) -> usize {
            0
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DaemonArgs<Cfg>,
    }

    fn parse(argv: &[&str]) -> DaemonArgs<Cfg> {
        let mut all = vec!["test"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all).expect("parses").args
    }

    fn run(
        common: &CommonArgs,
        flags: Table,
        env: &[(&str, &str)],
    ) -> Result<ConfigOutcome<Cfg>, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        layer(
            common,
            "HSTACK_TEST_",
            flags,
            |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            Cfg::validate,
        )
    }

    fn cfg(o: Result<ConfigOutcome<Cfg>, ConfigError>) -> Cfg {
        match o.expect("valid") {
            ConfigOutcome::Run(c) => c,
            ConfigOutcome::Exit(t) => panic!("expected a configuration, got {t}"),
        }
    }

    #[test]
    fn only_the_flags_given_are_kept_and_none_is_required() {
        let a = parse(&[]);
        assert!(a.flags.is_empty(), "{:?}", a.flags);
        let a = parse(&["--port", "7", "--fsync", "false", "--peers", "x,y"]);
        assert_eq!(a.flags.len(), 3, "{:?}", a.flags);
        assert_eq!(a.flags["port"].as_integer(), Some(7));
        assert_eq!(a.flags["fsync"].as_bool(), Some(false));
        let c = cfg(run(&a.common, a.flags, &[]));
        assert_eq!((c.port, c.fsync, c.name.as_str()), (7, false, "a"));
        assert_eq!(c.peers, ["x", "y"]);
        assert_eq!(c.dirs, ["d1", "d2"], "a list default stays");
        // a flag set to its default value still counts as given
        let a = parse(&["--ratio", "0.5"]);
        assert_eq!(a.flags.len(), 1);
        // a flag given twice: the last wins
        let a = parse(&[
            "--port", "7", "--port", "8", "--peers", "a", "--peers", "b,c",
        ]);
        assert_eq!(a.flags["port"].as_integer(), Some(8));
        assert_eq!(a.flags["peers"].as_array().map(Vec::len), Some(2));
        // bad values are clap's clear errors
        let mut argv = vec!["test", "--port", "x"];
        assert!(Cli::try_parse_from(&argv).is_err());
        argv = vec!["test", "--log-format", "xml"];
        let e = Cli::try_parse_from(&argv)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("human") && e.contains("json"), "{e}");
    }

    #[test]
    fn every_key_has_a_flag_that_takes_its_default() {
        assert_flags_round_trip::<Cfg>();
        let m = <Cli as clap::CommandFactory>::command();
        let help = m.clone().render_long_help().to_string();
        assert!(
            help.contains("The port") && help.contains("[default: 1]"),
            "{help}"
        );
        let _ = Cli::from_arg_matches(&m.get_matches_from(["test"])).unwrap();
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "port = 2\nname = \"file\"\nratio = 0.25\n").unwrap();
        let common = CommonArgs {
            config: Some(f),
            ..Default::default()
        };
        let env = [("HSTACK_TEST_PORT", "3"), ("HSTACK_TEST_PEERS", "x, y")];
        // file over defaults, env over file
        let c = cfg(run(&common, Table::new(), &env));
        assert_eq!((c.port, c.name.as_str(), c.ratio), (3, "file", 0.25));
        assert_eq!(c.peers, ["x", "y"]);
        // flags over env
        let a = parse(&["--port", "4"]);
        let c = cfg(run(&common, a.flags, &env));
        assert_eq!(c.port, 4);
        // another prefix's keys are not ours
        let c = cfg(run(&common, Table::new(), &[("HSTACK_OTHER_PORT", "9")]));
        assert_eq!(c.port, 2);
    }

    #[test]
    fn the_env_prefix_is_the_role() {
        assert_eq!(env_prefix("namenode"), "HSTACK_NAMENODE_");
        assert_eq!(env_prefix("resource-manager"), "HSTACK_RESOURCE_MANAGER_");
    }

    #[test]
    fn unknown_file_key_is_rejected_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "prot = 2\n").unwrap();
        let common = CommonArgs {
            config: Some(f),
            ..Default::default()
        };
        let msg = run(&common, Table::new(), &[]).unwrap_err().to_string();
        assert!(msg.contains("unknown key \"prot\""), "{msg}");
    }

    #[test]
    fn bad_env_value_is_a_clear_error() {
        let err = run(
            &CommonArgs::default(),
            Table::new(),
            &[("HSTACK_TEST_FSYNC", "maybe")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("HSTACK_TEST_FSYNC"), "{err}");
    }

    #[test]
    fn print_default_and_check() {
        let c = CommonArgs {
            print_default_config: true,
            ..Default::default()
        };
        match run(&c, Table::new(), &[]).unwrap() {
            ConfigOutcome::Exit(t) => assert!(t.contains("port = 1")),
            ConfigOutcome::Run(_) => panic!("expected exit"),
        }
        let c = CommonArgs {
            check_config: true,
            ..Default::default()
        };
        match run(&c, parse(&["--port", "9"]).flags, &[]).unwrap() {
            ConfigOutcome::Exit(t) => assert!(t.contains("port = 9") && t.contains("valid")),
            ConfigOutcome::Run(_) => panic!("expected exit"),
        }
        // the role's own checks run for --check-config too
        let err = run(&c, parse(&["--port", "0"]).flags, &[]).unwrap_err();
        assert!(err.to_string().contains("port must be > 0"), "{err}");
    }

    #[test]
    fn malformed_toml_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "port = = 2\n").unwrap();
        let common = CommonArgs {
            config: Some(f),
            ..Default::default()
        };
        let err = run(&common, Table::new(), &[]).unwrap_err();
        assert!(err.to_string().contains("not valid TOML"), "{err}");
    }
}
