//! The operator contract's config file: `--config FILE` (or `KAIROS_CONFIG`) names a TOML file
//! whose keys are the role's `KAIROS_*` variables without the prefix, in lower case
//! (`database_url`, `grpc_addr`, `lease_ttl_seconds`, …), at the top level for every role and
//! in a `[api]`, `[scheduler]`, `[worker]`, `[standalone]` or `[migrate]` table for one role
//! (the table wins over the top level). Flags win over the environment, the environment over
//! the file, the file over the defaults. It must never print a value it reads: the file holds
//! secrets (`database_url`, `worker_token`, `secret_key`).
//!
//! It works by making each value the file sets the default of the argument whose variable it
//! names (hidden from `--help`, since it may be a secret), so clap applies every precedence
//! rule and every check of the value in one place.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::Command;

/// The environment variable that names the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "KAIROS_CONFIG";

/// Role subcommands that read the file, each also a table name in it.
const ROLES: [&str; 5] = ["migrate", "api", "scheduler", "worker", "standalone"];

/// Why a config file could not be applied; every message names the file, and a bad key names
/// the key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("config file {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "config file {path}: unknown key `{key}`{scope} (keys are the KAIROS_* variables without the prefix, in lower case: {known})"
    )]
    UnknownKey {
        path: PathBuf,
        key: String,
        scope: String,
        known: String,
    },
    #[error("config file {path}: key `{key}` must be a string, number, boolean or array of those")]
    BadValue { path: PathBuf, key: String },
}

/// The variables the file sets: `KAIROS_*` name → value, for the role the command line runs.
pub type Settings = BTreeMap<String, String>;

/// Finds the config file named by `args` (`--config FILE` or `--config=FILE`, before or after
/// the subcommand) or by `KAIROS_CONFIG`, reads it, and answers the variables it sets for the
/// role in `args` (nothing for client commands, or when no file is named).
pub fn load(
    command: &Command,
    args: &[OsString],
    config_env: Option<OsString>,
) -> Result<Settings, ConfigFileError> {
    let Some(path) = config_path(args).or(config_env.map(PathBuf::from)) else {
        return Ok(Settings::new());
    };
    let Some(role) = role_of(command, args) else {
        return Ok(Settings::new());
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    settings_for(command, &path, &text, role)
}

/// The variables `text` sets for `role`, checked against the variables each role knows.
pub fn settings_for(
    command: &Command,
    path: &Path,
    text: &str,
    role: &str,
) -> Result<Settings, ConfigFileError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
    let known_by_role: BTreeMap<&str, BTreeSet<String>> = ROLES
        .iter()
        .map(|r| (*r, role_env_keys(command, r)))
        .collect();
    let known_anywhere: BTreeSet<String> = known_by_role.values().flatten().cloned().collect();
    let unknown =
        |key: &str, scope: String, known: &BTreeSet<String>| ConfigFileError::UnknownKey {
            path: path.to_owned(),
            key: key.to_owned(),
            scope,
            known: known.iter().cloned().collect::<Vec<_>>().join(", "),
        };

    let mut settings = Settings::new();
    let own = &known_by_role[role];
    // The top level first, so the role's table overrides it.
    for (key, value) in &table {
        if ROLES.contains(&key.as_str()) {
            continue;
        }
        if !known_anywhere.contains(key) {
            return Err(unknown(key, String::new(), &known_anywhere));
        }
        if own.contains(key) {
            settings.insert(env_name(key), scalar(path, key, value)?);
        }
    }
    for r in ROLES {
        let Some(section) = table.get(r) else {
            continue;
        };
        let Some(section) = section.as_table() else {
            return Err(ConfigFileError::BadValue {
                path: path.to_owned(),
                key: r.to_owned(),
            });
        };
        let known = &known_by_role[r];
        for (key, value) in section {
            if !known.contains(key) {
                return Err(unknown(key, format!(" in [{r}]"), known));
            }
            let value = scalar(path, key, value)?;
            if r == role {
                settings.insert(env_name(key), value);
            }
        }
    }
    Ok(settings)
}

/// `command` with each value of `settings` as the default of the argument (of the top level
/// or of the role in `args`) whose variable it names: below a flag and the environment, above
/// the built-in default. Such an argument is no longer required, its default never shown.
pub fn apply(mut command: Command, args: &[OsString], settings: &Settings) -> Command {
    if settings.is_empty() {
        return command;
    }
    command = with_defaults(command, settings);
    if let Some(role) = role_of(&command, args) {
        command = command.mut_subcommand(role, |sub| with_defaults(sub, settings));
    }
    command
}

/// `cmd` with the file's values as the defaults of its own arguments.
fn with_defaults(mut cmd: Command, settings: &Settings) -> Command {
    let ids: Vec<(clap::Id, String)> = cmd
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?;
            Some((arg.get_id().clone(), settings.get(env)?.clone()))
        })
        .collect();
    for (id, value) in ids {
        cmd = cmd.mut_arg(id, |arg| {
            // A flag (`no_migrate = true`) shows no default; a value may be a secret.
            let hide = arg.get_action().takes_values();
            arg.default_value(value)
                .required(false)
                .hide_default_value(hide)
        });
    }
    cmd
}

/// The path after `--config`, wherever it is on the command line.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(value) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(value));
        }
    }
    None
}

/// The role subcommand on the command line, if the first argument that names a subcommand
/// names a role (client commands read no server config).
fn role_of(command: &Command, args: &[OsString]) -> Option<&'static str> {
    let subcommand = args.iter().skip(1).find_map(|a| {
        let a = a.to_str()?;
        command
            .get_subcommands()
            .find(|sub| sub.get_name() == a)
            .map(|sub| sub.get_name().to_owned())
    })?;
    ROLES.iter().find(|r| **r == subcommand).copied()
}

/// The file keys a role knows: its arguments' `KAIROS_*` variables, prefix dropped, lower case.
fn role_env_keys(command: &Command, role: &str) -> BTreeSet<String> {
    let own = command
        .find_subcommand(role)
        .into_iter()
        .flat_map(|sub| sub.get_arguments());
    command
        .get_arguments()
        .chain(own)
        .filter_map(|arg| arg.get_env())
        .filter_map(|env| env.to_str())
        .filter_map(|env| env.strip_prefix("KAIROS_"))
        .map(str::to_ascii_lowercase)
        .filter(|key| key != "config")
        .collect()
}

fn env_name(key: &str) -> String {
    format!("KAIROS_{}", key.to_ascii_uppercase())
}

/// A TOML value as the variable's text: strings as they are, numbers and booleans printed,
/// arrays joined with commas (`etcd_endpoints = ["http://a:2379", "http://b:2379"]`).
fn scalar(path: &Path, key: &str, value: &toml::Value) -> Result<String, ConfigFileError> {
    let bad = || ConfigFileError::BadValue {
        path: path.to_owned(),
        key: key.to_owned(),
    };
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::Array(_) | toml::Value::Table(_) => Err(bad()),
                other => scalar(path, key, other),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|parts| parts.join(",")),
        toml::Value::Datetime(_) | toml::Value::Table(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::Cli;

    fn settings(text: &str, role: &str) -> Result<Settings, ConfigFileError> {
        settings_for(&Cli::command(), Path::new("kairos.toml"), text, role)
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn top_level_keys_apply_to_the_roles_that_know_them_and_a_table_overrides_them() {
        let text = r#"
            database_url = "postgres://kairos@db/kairos"
            etcd_endpoints = ["http://e1:2379", "http://e2:2379"]
            worker_token = "s3cret"
            [api]
            grpc_addr = "0.0.0.0:50051"
            [scheduler]
            grpc_addr = "0.0.0.0:50052"
            lease_ttl_seconds = 6
        "#;
        let api = settings(text, "api").unwrap();
        assert_eq!(api["KAIROS_DATABASE_URL"], "postgres://kairos@db/kairos");
        assert_eq!(api["KAIROS_GRPC_ADDR"], "0.0.0.0:50051");
        assert!(
            !api.contains_key("KAIROS_ETCD_ENDPOINTS"),
            "the API has no etcd"
        );
        let scheduler = settings(text, "scheduler").unwrap();
        assert_eq!(scheduler["KAIROS_GRPC_ADDR"], "0.0.0.0:50052");
        assert_eq!(scheduler["KAIROS_LEASE_TTL_SECONDS"], "6");
        assert_eq!(
            scheduler["KAIROS_ETCD_ENDPOINTS"],
            "http://e1:2379,http://e2:2379"
        );
        assert_eq!(scheduler["KAIROS_WORKER_TOKEN"], "s3cret");
        let worker = settings(text, "worker").unwrap();
        assert!(!worker.contains_key("KAIROS_DATABASE_URL"));
        assert_eq!(worker["KAIROS_WORKER_TOKEN"], "s3cret");
    }

    #[test]
    fn a_misspelt_key_is_refused_by_name_without_its_value() {
        let err = settings("databse_url = \"postgres://u:pw@db/k\"", "api").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`databse_url`"), "{text}");
        assert!(
            text.contains("database_url"),
            "lists the known keys: {text}"
        );
        assert!(!text.contains("pw@db"), "never echoes a value: {text}");

        let err = settings("[worker]\nlease_ttl_seconds = 5", "api").unwrap_err();
        assert!(
            err.to_string().contains("`lease_ttl_seconds` in [worker]"),
            "{err}"
        );
    }

    #[test]
    fn bad_toml_and_bad_values_name_the_file() {
        let err = settings("database_url = ", "api").unwrap_err();
        assert!(matches!(err, ConfigFileError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("kairos.toml"));
        let err = settings("[api]\nhttp_addr = { host = \"x\" }", "api").unwrap_err();
        assert!(err.to_string().contains("`http_addr`"), "{err}");
        let err = settings("api = 3", "api").unwrap_err();
        assert!(err.to_string().contains("`api`"), "{err}");
    }

    #[test]
    fn the_file_is_found_by_flag_or_variable_and_client_commands_ignore_it() {
        let args = os(&["kairos", "api", "--config", "/etc/kairos.toml"]);
        assert_eq!(config_path(&args), Some(PathBuf::from("/etc/kairos.toml")));
        let args = os(&["kairos", "--config=/k.toml", "worker"]);
        assert_eq!(config_path(&args), Some(PathBuf::from("/k.toml")));
        assert_eq!(role_of(&Cli::command(), &args), Some("worker"));
        let client = os(&["kairos", "jobs", "create", "--name", "api"]);
        assert_eq!(role_of(&Cli::command(), &client), None);
        let loaded = load(
            &Cli::command(),
            &os(&["kairos", "jobs", "list"]),
            Some("/nonexistent/kairos.toml".into()),
        )
        .unwrap();
        assert!(loaded.is_empty(), "client commands read no server config");
        let err = load(
            &Cli::command(),
            &os(&["kairos", "api"]),
            Some("/nonexistent/kairos.toml".into()),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigFileError::Read { .. }), "{err}");
    }

    fn parse_with(text: &str, args: &[&str]) -> Result<Cli, clap::Error> {
        let args = os(args);
        let role = role_of(&Cli::command(), &args).unwrap();
        let settings = settings(text, role).unwrap();
        apply(Cli::command(), &args, &settings)
            .try_get_matches_from(&args)
            .and_then(|mut m| <Cli as clap::FromArgMatches>::from_arg_matches_mut(&mut m))
    }

    const FILE: &str = r#"
        database_url = "postgres://kairos:pw@db/kairos"
        etcd_endpoints = ["http://e1:2379", "http://e2:2379"]
        worker_token = "s3cret"
        [api]
        grpc_addr = "0.0.0.0:50051"
        no_migrate = true
        [scheduler]
        grpc_addr = "10.0.0.7:50052"
        lease_ttl_seconds = 6
    "#;

    #[test]
    fn the_file_fills_what_the_command_line_leaves_out_and_flags_win() {
        let cli = parse_with(FILE, &["kairos", "api", "--config", "k.toml"]).unwrap();
        let crate::Command::Api(api) = cli.command else {
            panic!("not the api: {:?}", cli.command);
        };
        assert_eq!(api.db.database_url, "postgres://kairos:pw@db/kairos");
        assert_eq!(api.grpc_addr.to_string(), "0.0.0.0:50051");
        assert!(api.no_migrate);
        assert_eq!(
            api.http_addr.to_string(),
            "127.0.0.1:8080",
            "built-in default"
        );

        let args = [
            "kairos",
            "scheduler",
            "--lease-ttl-seconds",
            "4",
            "--config=k.toml",
        ];
        let cli = parse_with(FILE, &args).unwrap();
        let crate::Command::Scheduler(scheduler) = cli.command else {
            panic!("not the scheduler: {:?}", cli.command);
        };
        assert_eq!(scheduler.lease_ttl_seconds, 4, "the flag wins");
        assert_eq!(scheduler.grpc_addr.to_string(), "10.0.0.7:50052");
        assert_eq!(
            scheduler.etcd_endpoints,
            ["http://e1:2379", "http://e2:2379"]
        );
        assert_eq!(scheduler.worker_token, "s3cret");
    }

    #[test]
    fn a_value_from_the_file_is_checked_like_a_flag_and_never_shown_in_help() {
        let err = parse_with(
            "[scheduler]\nlease_ttl_seconds = 1",
            &["kairos", "scheduler"],
        )
        .unwrap_err();
        assert!(err.to_string().contains("lease-ttl-seconds"), "{err}");

        let args = os(&["kairos", "api"]);
        let settings = settings(FILE, "api").unwrap();
        let mut command = apply(Cli::command(), &args, &settings);
        let help = command
            .find_subcommand_mut("api")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("--database-url"), "{help}");
        assert!(
            !help.contains("pw@db") && !help.contains("s3cret"),
            "{help}"
        );
    }
}
