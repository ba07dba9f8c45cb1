//! The `kairos` binary: parses the command line and hands each subcommand to its role or to
//! the client; it must never hold business logic of its own.
//!
//! Server roles (`migrate`, `api`, …) are variants of [`Command`] next to the flattened client
//! commands (`jobs`, `schedules`, `runs`, `tenants`).

mod client;
mod config_file;
mod roles;

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, error::ErrorKind};

/// Kairos: a multi-tenant cron-style job scheduler.
#[derive(Debug, Parser)]
#[command(name = "kairos", version, propagate_version = true)]
struct Cli {
    /// A TOML file of settings for the server roles: the KAIROS_* variables without the prefix,
    /// in lower case, at the top level or in a [api] / [scheduler] / [worker] / [standalone] /
    /// [migrate] table. Flags and the environment win over it.
    #[arg(long, global = true, env = config_file::CONFIG_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    client: client::GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations (safe to run concurrently) and exit.
    Migrate(roles::migrate::MigrateArgs),
    /// Run the REST and gRPC API (migrates first unless --no-migrate).
    Api(roles::api::ApiArgs),
    /// Run a scheduler node: claim shards in etcd, fire their schedules, dispatch to workers.
    Scheduler(roles::scheduler::SchedulerArgs),
    /// Run a worker agent: pull due runs from the schedulers and run them.
    Worker(roles::worker::WorkerArgs),
    /// Run everything in one process on one SQLite file (API, scheduler, worker; no Postgres,
    /// no etcd): prints the URLs and the default tenant's API key.
    Standalone(roles::standalone::StandaloneArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Print a shell completion script: `source <(kairos completions bash)`, or save it where
    /// your shell loads completions (zsh: a file `_kairos` on $fpath; fish:
    /// ~/.config/fish/completions/kairos.fish).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Parses the command line, with the config file's values (if one is named) as defaults.
/// Help and version print as clap prints them; a usage mistake or a bad config file prints as
/// one line and exits 2.
fn parse() -> Result<Cli, ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let settings = config_file::load(
        &Cli::command(),
        &args,
        std::env::var_os(config_file::CONFIG_ENV),
    )
    .map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    let command = config_file::apply(Cli::command(), &args, &settings);
    command
        .try_get_matches_from(args)
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches))
        .map_err(|e| match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                eprintln!("{}", one_line_usage_error(&e.render().to_string()));
                ExitCode::from(2)
            }
        })
}

/// clap's error text on one line: its `error:` line and any hint lines, without the usage
/// and the pointer to `--help` (which is said once, at the end).
fn one_line_usage_error(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect();
    format!("{} (see --help)", parts.join("; "))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let result = match cli.command {
        Command::Migrate(args) => {
            roles::telemetry::init();
            roles::migrate::run(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Api(args) => {
            roles::telemetry::init();
            roles::api::run(args, cli.client.admin_token.clone())
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Scheduler(args) => {
            roles::telemetry::init();
            roles::scheduler::run(args)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Worker(args) => {
            roles::telemetry::init();
            roles::worker::run(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Standalone(args) => {
            roles::telemetry::init_with(roles::telemetry::STANDALONE_FILTER);
            roles::standalone::run(args, cli.client.admin_token.clone())
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Client(cmd) => client::run_client(cmd, &cli.client).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kairos", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| client::report(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kairos").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let cli = parse(&[
            "runs",
            "get",
            "run_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f",
            "--output",
            "json",
            "--endpoint",
            "http://10.0.0.1:50051",
            "--api-key",
            "k",
        ])
        .unwrap();
        assert_eq!(cli.client.output, client::OutputFormat::Json);
        assert_eq!(
            cli.client.endpoint.as_deref(),
            Some("http://10.0.0.1:50051")
        );
        assert_eq!(cli.client.api_key.as_deref(), Some("k"));
    }

    #[test]
    fn the_default_output_is_a_table_and_the_endpoint_is_left_to_the_client() {
        let cli = parse(&["jobs", "list"]).unwrap();
        assert_eq!(cli.client.output, client::OutputFormat::Table);
        // No declared default: an unset endpoint falls back to the credentials file, then
        // the SDK's default (KAIROS_ENDPOINT may be set in the environment, so only check the
        // declaration).
        let endpoint = Cli::command()
            .get_arguments()
            .find(|a| a.get_id() == "endpoint")
            .map(|a| a.get_default_values().is_empty());
        assert_eq!(endpoint, Some(true));
    }

    #[test]
    fn a_usage_error_is_one_line_naming_the_flag() {
        let e = parse(&[
            "jobs",
            "create",
            "--name",
            "n",
            "--image",
            "i",
            "--memory-mb",
            "lots",
        ])
        .unwrap_err();
        let line = one_line_usage_error(&e.render().to_string());
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            line.starts_with("error: invalid value 'lots' for '--memory-mb"),
            "{line}"
        );
        assert!(line.ends_with("(see --help)"), "{line}");
        let e = parse(&["jobs", "list", "--output", "yaml"]).unwrap_err();
        let line = one_line_usage_error(&e.render().to_string());
        assert!(line.contains("[possible values: table, json]"), "{line}");
    }

    #[test]
    fn completions_are_generated_for_each_shell() {
        for shell in ["bash", "zsh", "fish"] {
            let cli = parse(&["completions", shell]).unwrap();
            let Command::Completions { shell } = cli.command else {
                panic!("not completions");
            };
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kairos", &mut script);
            let script = String::from_utf8(script).unwrap();
            assert!(
                script.contains("schedules") && script.contains("backfill"),
                "{shell}"
            );
        }
        assert!(parse(&["completions", "tcsh"]).is_err());
    }

    #[test]
    fn usage_errors_exit_with_two() {
        for args in [
            &["jobs"][..],
            &["nope"],
            &["runs", "get"],
            &["jobs", "list", "--output", "yaml"],
        ] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn every_client_command_group_is_reachable() {
        for args in [
            &["jobs", "get", "job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f"][..],
            &[
                "schedules",
                "resume",
                "sch_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f",
            ],
            &["runs", "events", "run_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f"],
            &["tenants", "create", "--name", "acme"],
        ] {
            assert!(parse(args).is_ok(), "{args:?}");
        }
    }
}
