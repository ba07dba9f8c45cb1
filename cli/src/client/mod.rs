//! The client half of `kairos`: commands that talk to a Kairos API through the SDK
//! (`kairos-sdk`) with an API key (or the admin token). It must never depend on `kairos-store`
//! or `kairos-api`: it knows the server only through the SDK and `kairos-proto`, and checks
//! input with `kairos-domain` types.

mod connect;
mod error;
mod jobs;
mod output;
mod runs;
mod schedules;
mod tenants;

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

pub use error::{CliError, report};
pub use output::OutputFormat;

/// Where the API is and who is calling; accepted anywhere on the command line.
///
/// The endpoint and the API key each come from the flag, else the variable, else the
/// credentials file (which `kairos standalone` writes), else (endpoint only) the default.
#[derive(Clone, Args)]
#[command(next_help_heading = "Client options")]
pub struct GlobalOpts {
    /// gRPC endpoint of the Kairos API [default: the credentials file's, else
    /// http://127.0.0.1:50051].
    #[arg(long, global = true, env = "KAIROS_ENDPOINT")]
    pub endpoint: Option<String>,

    /// API key of the tenant (jobs, schedules, runs) [default: the credentials file's].
    #[arg(long, global = true, env = "KAIROS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Admin token (tenants).
    #[arg(
        long,
        global = true,
        env = "KAIROS_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// The credentials file [default: $XDG_CONFIG_HOME/kairos/credentials, else
    /// ~/.config/kairos/credentials].
    #[arg(
        long,
        global = true,
        env = "KAIROS_CREDENTIALS_FILE",
        value_name = "PATH"
    )]
    pub credentials_file: Option<PathBuf>,

    /// How to print results.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

impl std::fmt::Debug for GlobalOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials: say whether they are set, never what they are.
        f.debug_struct("GlobalOpts")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("credentials_file", &self.credentials_file)
            .field("output", &self.output)
            .finish()
    }
}

/// The client commands, flattened into the top-level `kairos` command.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Jobs: what to run.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Schedules: when to run a job.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Runs: executions of a job, their state, logs and events.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Tenants (admin token).
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
}

/// Runs one client command. `Ok` carries the exit code (e.g. `runs wait` on a failed run);
/// an `Err` goes to [`report`] for its one-line message and exit code.
pub async fn run_client(cmd: ClientCommand, opts: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let printer = output::Printer::new(opts.output);
    match cmd {
        ClientCommand::Jobs(cmd) => jobs::run(cmd, opts, printer).await,
        ClientCommand::Schedules(cmd) => schedules::run(cmd, opts, printer).await,
        ClientCommand::Runs(cmd) => runs::run(cmd, opts, printer).await,
        ClientCommand::Tenants(cmd) => tenants::run(cmd, opts, printer).await,
    }
}

/// Paging flags of list commands.
#[derive(Debug, Clone, Default, Args)]
pub struct PageArgs {
    /// Items per page (server default 100, at most 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: Option<u32>,
    /// The `next_page_token` of the previous page.
    #[arg(long, conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Every page, one after the other, as one list.
    #[arg(long)]
    pub all: bool,
}

impl PageArgs {
    pub fn size(&self) -> u32 {
        self.page_size.unwrap_or(0)
    }

    pub fn token(&self) -> String {
        self.page_token.clone().unwrap_or_default()
    }
}

/// The items a list command prints and the token of the page after them: one page as the
/// flags ask, or with `--all` every page through the SDK's stream (no token after).
pub async fn page_or_all<T>(
    page: &PageArgs,
    one: impl std::future::Future<Output = Result<kairos_sdk::Page<T>, kairos_sdk::Error>>,
    every: kairos_sdk::ResultStream<T>,
) -> Result<(Vec<T>, String), kairos_sdk::Error> {
    use futures::TryStreamExt;
    if page.all {
        return Ok((every.try_collect().await?, String::new()));
    }
    let page = one.await?;
    Ok((page.items, page.next_page_token.unwrap_or_default()))
}

/// Parses `KEY=VALUE` (the value may contain `=` and be empty).
pub fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{raw}'")),
    }
}

/// Parses an RFC 3339 time such as `2026-01-31T09:00:00Z` (any offset; kept as UTC).
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    kairos_domain::schedule::parse_instant("time", raw).map_err(|e| e.reason)
}

/// A map from repeated `KEY=VALUE` flags; a repeated key keeps its last value.
pub fn to_map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use kairos_sdk::time::timestamp;
    use prost_types::Timestamp;

    use super::*;

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("URL=a=b"),
            Ok(("URL".to_owned(), "a=b".to_owned()))
        );
        assert_eq!(parse_key_value("EMPTY="), Ok(("EMPTY".into(), "".into())));
        assert!(parse_key_value("NOVALUE").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn times_parse_with_any_offset_into_utc() {
        let t = parse_time("2026-01-31T10:00:00+01:00").unwrap();
        assert_eq!(
            timestamp(t),
            Timestamp {
                seconds: 1_769_850_000,
                nanos: 0
            }
        );
        assert!(parse_time("tomorrow").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let opts = GlobalOpts {
            endpoint: Some("http://x".into()),
            api_key: Some("k_secret".into()),
            admin_token: Some("adm_secret".into()),
            credentials_file: None,
            output: OutputFormat::Json,
        };
        let shown = format!("{opts:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
