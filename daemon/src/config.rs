//! Configuration layering: built-in defaults < TOML file (`--config`) <
//! `HSTACK_*` environment < command-line flags.
//!
//! A role describes its configuration as one flat serde struct with a
//! `Default` (and `#[serde(deny_unknown_fields)]`), and its flags as a clap
//! struct of `Option`s with the same field names that serializes only the
//! flags given. Config structs have no `Option` fields: every key has a
//! default, so the environment layer knows every key and its type.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use toml::{Table, Value};

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

/// Layers the configuration and runs the role's own `validate` on the
/// result (ranges, addresses: what serde cannot check), for `--check-config`
/// as for a start.
pub fn layer_config<T, F, V>(
    common: &CommonArgs,
    env_prefix: &str,
    flags: &F,
    validate: V,
) -> Result<ConfigOutcome<T>, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
    F: Serialize,
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
    merged.extend(env_layer(env_prefix, &defaults, |k| std::env::var(k).ok())?);
    merged.extend(to_table(flags)?);
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
    use serde::Deserialize;

    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        port: i64,
        name: String,
        fsync: bool,
        peers: Vec<String>,
    }

    impl Default for Cfg {
        fn default() -> Self {
            Self {
                port: 1,
                name: "a".into(),
                fsync: true,
                peers: vec![],
            }
        }
    }

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<i64>,
    }

    fn ok(_: &Cfg) -> Result<(), String> {
        Ok(())
    }

    fn common(file: Option<PathBuf>) -> CommonArgs {
        CommonArgs {
            config: file,
            ..Default::default()
        }
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "port = 2\nname = \"file\"\n").unwrap();
        let defaults = to_table(&Cfg::default()).unwrap();
        // file over defaults
        let file = read_file_layer(&f, &defaults).unwrap();
        assert_eq!(file["port"].as_integer(), Some(2));
        // env over file
        let env = env_layer("HSTACK_", &defaults, |k| match k {
            "HSTACK_PORT" => Some("3".into()),
            "HSTACK_PEERS" => Some("x, y".into()),
            _ => None,
        })
        .unwrap();
        let mut merged = defaults.clone();
        merged.extend(file);
        merged.extend(env);
        // flags over env
        merged.extend(to_table(&Flags { port: Some(4) }).unwrap());
        let cfg: Cfg = Value::Table(merged).try_into().unwrap();
        assert_eq!(
            cfg,
            Cfg {
                port: 4,
                name: "file".into(),
                fsync: true,
                peers: vec!["x".into(), "y".into()]
            }
        );
        // absent flags do not override
        let no_flags = to_table(&Flags::default()).unwrap();
        assert!(no_flags.is_empty());
    }

    #[test]
    fn unknown_file_key_is_rejected_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "prot = 2\n").unwrap();
        let err = layer_config::<Cfg, Flags, _>(
            &common(Some(f)),
            "HSTACK_TEST_UNUSED_",
            &Flags::default(),
            ok,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown key \"prot\""), "{msg}");
    }

    #[test]
    fn bad_env_value_is_a_clear_error() {
        let defaults = to_table(&Cfg::default()).unwrap();
        let err = env_layer("HSTACK_", &defaults, |k| {
            (k == "HSTACK_FSYNC").then(|| "maybe".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("HSTACK_FSYNC"), "{err}");
    }

    #[test]
    fn print_default_and_check() {
        let c = CommonArgs {
            print_default_config: true,
            ..Default::default()
        };
        match layer_config::<Cfg, Flags, _>(&c, "HSTACK_TEST_UNUSED_", &Flags::default(), ok)
            .unwrap()
        {
            ConfigOutcome::Exit(t) => assert!(t.contains("port = 1")),
            ConfigOutcome::Run(_) => panic!("expected exit"),
        }
        let c = CommonArgs {
            check_config: true,
            ..Default::default()
        };
        match layer_config::<Cfg, Flags, _>(&c, "HSTACK_TEST_UNUSED_", &Flags { port: Some(9) }, ok)
            .unwrap()
        {
            ConfigOutcome::Exit(t) => assert!(t.contains("port = 9") && t.contains("valid")),
            ConfigOutcome::Run(_) => panic!("expected exit"),
        }
        // the role's own checks run for --check-config too
        let positive = |c: &Cfg| {
            if c.port > 0 {
                Ok(())
            } else {
                Err("port must be > 0".to_string())
            }
        };
        let err = layer_config::<Cfg, Flags, _>(
            &c,
            "HSTACK_TEST_UNUSED_",
            &Flags { port: Some(0) },
            positive,
        )
        .unwrap_err();
        assert!(err.to_string().contains("port must be > 0"), "{err}");
    }

    #[test]
    fn malformed_toml_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "port = = 2\n").unwrap();
        let err = layer_config::<Cfg, Flags, _>(
            &common(Some(f)),
            "HSTACK_TEST_UNUSED_",
            &Flags::default(),
            ok,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not valid TOML"), "{err}");
    }
}
