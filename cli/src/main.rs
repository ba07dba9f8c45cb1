//! The `kairos` binary: parses the command line and hands each subcommand to its role or to
//! the client; it must never hold business logic of its own.
//!
//! Server roles (`migrate`, `api`, …) are variants of [`Command`] next to the flattened client
//! commands (`jobs`, `schedules`, `runs`, `tenants`).

mod client;
mod roles;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kairos: a multi-tenant cron-style job scheduler.
#[derive(Debug, Parser)]
#[command(name = "kairos", version, propagate_version = true)]
struct Cli {
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
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors print clap's message and exit 2 here.
    let cli = Cli::parse();
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
        Command::Client(cmd) => client::run_client(cmd, &cli.client).await,
    };
    result.unwrap_or_else(|e| client::report(&e))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

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
        assert_eq!(cli.client.endpoint, "http://10.0.0.1:50051");
        assert_eq!(cli.client.api_key.as_deref(), Some("k"));
    }

    #[test]
    fn the_defaults_are_the_local_api_and_tables() {
        let cli = parse(&["jobs", "list"]).unwrap();
        assert_eq!(cli.client.output, client::OutputFormat::Table);
        // The environment may set KAIROS_ENDPOINT; only check the flag's declared default.
        let endpoint = Cli::command()
            .get_arguments()
            .find(|a| a.get_id() == "endpoint")
            .and_then(|a| a.get_default_values().first().cloned());
        assert_eq!(
            endpoint.and_then(|v| v.to_str().map(str::to_owned)),
            Some("http://127.0.0.1:50051".to_owned())
        );
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
