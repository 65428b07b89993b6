//! `weir.toml`: the settings, the flags that also have an environment
//! variable (the cluster's, the storage dir's, the supervisor's), read
//! from the file that `--config-file` or `WEIR_CONFIG` names. Keys are the
//! flags' long names (`zookeeper`, `storage-dir`, `session-timeout`, ...),
//! each applying to every command that takes that flag. What one command
//! is told (a deploy's `--config`, `--env`, a switch such as
//! `--allow-network`) has no env var and no place in the file: as a
//! default for every such command it would change jobs nobody named. The file's values become clap's
//! defaults, and clap reads a flag before its env var and the env var
//! before a default: flag > env > file > built-in default.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, Command};

/// The flag naming the file, and its env var.
const FLAG: &str = "config-file";
const ENV: &str = "WEIR_CONFIG";

/// Why the config file cannot be used, each naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// It cannot be read.
    #[error("cannot read the config file {path}: {source} (check --config-file or {ENV})")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// It is not TOML.
    #[error("the config file {path} is not TOML: {reason}")]
    NotToml {
        /// The file.
        path: PathBuf,
        /// Where and why, on one line.
        reason: String,
    },
    /// A key names no flag of any command, or its value is not one a flag takes.
    #[error("the config file {path}: {reason}")]
    BadSetting {
        /// The file.
        path: PathBuf,
        /// Which key, and what it should be.
        reason: String,
    },
}

/// The flag `--config-file` itself, on every command.
pub fn flag() -> Arg {
    Arg::new(FLAG)
        .long(FLAG)
        .env(ENV)
        .global(true)
        .value_name("PATH")
        .value_parser(clap::value_parser!(PathBuf))
        .help("A TOML file of settings, keyed by flag name (zookeeper = \"zk1:2181\"): flags and env vars beat it")
}

/// The file named on the command line (`--config-file PATH` or
/// `--config-file=PATH`) or else by `WEIR_CONFIG`, found before clap parses,
/// since what is in it changes how clap parses.
pub fn named(args: &[OsString]) -> Option<PathBuf> {
    let long = format!("--{FLAG}");
    let prefix = format!("--{FLAG}=");
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == long {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix(&prefix) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `command` with the file at `path` as its flags' defaults.
pub fn apply(command: Command, path: PathBuf) -> Result<Command, ConfigFileError> {
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Unreadable {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigFileError::NotToml {
        path: path.clone(),
        reason: e.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
    })?;
    let bad = |reason: String| ConfigFileError::BadSetting {
        path: path.clone(),
        reason,
    };
    let mut command = command;
    for (key, value) in table {
        let values = match &value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
            other => scalar(other).map(|v| vec![v]),
        }
        .ok_or_else(|| bad(format!("`{key}` must be a string, number, boolean or a list of them")))?;
        let takers: Vec<String> = command
            .get_subcommands()
            .filter(|sub| takes(sub, &key))
            .map(|sub| sub.get_name().to_string())
            .collect();
        if takers.is_empty() {
            return Err(bad(format!(
                "`{key}` is not a setting: keys are the long names of the flags that have an env var, such as \
                 zookeeper, cluster-id, storage-dir (see --help)"
            )));
        }
        for name in takers {
            let values = values.clone();
            command = command.mut_subcommand(name, |sub| {
                let id = sub
                    .get_arguments()
                    .find(|a| a.get_long() == Some(key.as_str()) && a.get_env().is_some())
                    .map(|a| a.get_id().clone())
                    .expect("found above");
                sub.mut_arg(id, |arg| arg.default_values(values))
            });
        }
    }
    Ok(command)
}

/// Whether `command` has the setting `--key`: a flag with an env var.
fn takes(command: &Command, key: &str) -> bool {
    command
        .get_arguments()
        .any(|a| a.get_long() == Some(key) && a.get_env().is_some())
}

/// A TOML value as a flag would be given it.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::cli::Cli;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    /// What `weir ARGS` parses to with the file (no env var is read: the
    /// flags these tests use have none set in the test's environment).
    fn parsed(text: &str, args: &[&str]) -> Result<String, String> {
        let file = file(text);
        let command = apply(Cli::command().arg(flag()), file.path().to_path_buf()).map_err(|e| e.to_string())?;
        let matches = command
            .try_get_matches_from(std::iter::once("weir").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Ok(format!("{:?}", Cli::from_arg_matches(&matches).unwrap()))
    }

    #[test]
    fn the_file_gives_defaults_that_a_flag_overrides() {
        let text = "group-commit = \"25ms\"\nid = \"from-file\"\n";
        let from_file = parsed(text, &["supervisor"]).unwrap();
        assert!(
            from_file.contains("group_commit: 25ms") && from_file.contains("\"from-file\""),
            "{from_file}"
        );
        let flagged = parsed(text, &["supervisor", "--id", "from-flag"]).unwrap();
        assert!(
            flagged.contains("\"from-flag\"") && !flagged.contains("from-file"),
            "{flagged}"
        );
        let builtin = parsed("", &["supervisor"]).unwrap();
        assert!(builtin.contains("group_commit: 10ms"), "{builtin}");
    }

    #[test]
    fn a_key_applies_to_every_command_with_that_flag() {
        let text = "zk-root = \"/elsewhere\"\nstorage-dir = \"file:///srv/weir\"\n";
        assert!(parsed(text, &["jobs"]).unwrap().contains("\"/elsewhere\""));
        let deploy = parsed(text, &["deploy", "m.wasm"]).unwrap();
        assert!(
            deploy.contains("\"/elsewhere\"") && deploy.contains("file:///srv/weir"),
            "{deploy}"
        );
    }

    #[test]
    fn what_one_command_is_told_has_no_place_in_the_file() {
        for key in [
            "config = [\"window=5\"]",
            "env = [\"A=1\"]",
            "allow-network = true",
            "savepoint = true",
        ] {
            let err = parsed(&format!("{key}\n"), &["jobs"]).unwrap_err();
            assert!(err.contains("is not a setting"), "{key}: {err}");
        }
    }

    #[test]
    fn a_bad_file_is_one_line_naming_the_key() {
        let err = parsed("zookeper = \"x\"\n", &["jobs"]).unwrap_err();
        assert!(err.contains("`zookeper` is not a setting"), "{err}");
        let err = parsed("zookeeper = { a = 1 }\n", &["jobs"]).unwrap_err();
        assert!(err.contains("`zookeeper` must be a string"), "{err}");
        let err = parsed("zookeeper = \n", &["jobs"]).unwrap_err();
        assert!(err.contains("is not TOML") && !err.contains('\n'), "{err}");
        let err = parsed("session-timeout = \"soon\"\n", &["jobs"]).unwrap_err();
        assert!(err.contains("soon"), "{err}");
        let missing = apply(Cli::command(), PathBuf::from("/nonexistent/weir.toml")).unwrap_err();
        assert!(missing
            .to_string()
            .contains("cannot read the config file /nonexistent/weir.toml"));
    }

    #[test]
    fn the_file_is_found_from_the_flag_before_parsing() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            named(&args(&["weir", "jobs", "--config-file", "a.toml"])),
            Some("a.toml".into())
        );
        assert_eq!(
            named(&args(&["weir", "--config-file=b.toml", "jobs"])),
            Some("b.toml".into())
        );
        assert_eq!(
            named(&args(&["weir", "deploy", "--", "--config-file", "c"])),
            std::env::var_os(ENV).map(PathBuf::from)
        );
    }
}
