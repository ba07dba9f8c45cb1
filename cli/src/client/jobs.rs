//! `kairos jobs create|list|get|update|delete|run`: builds `JobService` job requests from flags
//! and prints the answers; it must never judge limits itself (the server's checks are the
//! truth), only the syntax it needs to build a request.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use kairos_domain::JobId;
use kairos_proto::v1::{
    CreateJobRequest, ExecuteJobRequest, Job, RetryPolicy, StringList, StringMap, UpdateJobRequest,
};
use serde_json::{Value, json};

use super::{
    GlobalOpts, PageArgs,
    connect::job_client,
    error::CliError,
    output::{Column, Printer, Record, note, opt_time},
    page_or_all, parse_key_value, runs, to_map,
};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Create a job: `kairos jobs create --name N --image I [flags] -- <command...>`.
    Create(CreateArgs),
    /// List jobs, oldest first.
    List(PageArgs),
    /// Show a job.
    Get { job_id: JobId },
    /// Change a job: named fields replace, the rest stay.
    Update(UpdateArgs),
    /// Delete a job, its schedules, and cancel its pending runs.
    Delete { job_id: JobId },
    /// Run a job now (with --wait, until it ends).
    #[command(after_help = runs::WAIT_EXIT_CODES)]
    Run(RunArgs),
}

/// Retry flags; any of them given means "this is the retry policy" (others take defaults).
#[derive(Debug, Clone, Default, Args)]
pub struct RetryArgs {
    /// Attempts in all, including the first (default 1: no retry).
    #[arg(long)]
    pub max_attempts: Option<i32>,
    /// Wait before the first retry (default 10).
    #[arg(long)]
    pub initial_backoff_seconds: Option<i32>,
    /// Cap of the doubling backoff (default 300).
    #[arg(long)]
    pub max_backoff_seconds: Option<i32>,
}

impl RetryArgs {
    fn policy(&self) -> Option<RetryPolicy> {
        let given = self.max_attempts.is_some()
            || self.initial_backoff_seconds.is_some()
            || self.max_backoff_seconds.is_some();
        given.then_some(RetryPolicy {
            max_attempts: self.max_attempts,
            initial_backoff_seconds: self.initial_backoff_seconds,
            max_backoff_seconds: self.max_backoff_seconds,
        })
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// Container image, e.g. `alpine:3.20`.
    #[arg(long)]
    pub image: String,
    /// Memory limit in MiB (default 256, at most 1024).
    #[arg(long)]
    pub memory_mb: Option<i32>,
    /// Wall-clock limit of one run (default 3600, at most 86400).
    #[arg(long)]
    pub timeout_seconds: Option<i32>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Label key=value (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Name of your registry credential for a private image (`POST /v1/registry-credentials`).
    #[arg(long)]
    pub registry_credential: Option<String>,
    /// The command and its arguments, after `--` (default: the image's own command).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl CreateArgs {
    pub fn request(&self) -> CreateJobRequest {
        CreateJobRequest {
            name: self.name.clone(),
            image: self.image.clone(),
            command: self.command.clone(),
            env: to_map(&self.env),
            memory_mb: self.memory_mb,
            timeout_seconds: self.timeout_seconds,
            retry: self.retry.policy(),
            labels: to_map(&self.labels),
            registry_credential: self.registry_credential.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub job_id: JobId,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long)]
    pub memory_mb: Option<i32>,
    #[arg(long)]
    pub timeout_seconds: Option<i32>,
    /// Replaces the whole env with these KEY=VALUE pairs (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Removes every env variable.
    #[arg(long, conflicts_with = "env")]
    pub clear_env: bool,
    /// Replaces all labels with these key=value pairs (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Removes every label.
    #[arg(long, conflicts_with = "labels")]
    pub clear_labels: bool,
    /// Replaces the retry policy (flags not given take their defaults).
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Pulls the image with this registry credential; `""` pulls without one.
    #[arg(long)]
    pub registry_credential: Option<String>,
    /// Goes back to the image's own command.
    #[arg(long, conflicts_with = "command")]
    pub clear_command: bool,
    /// Replaces the command, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl UpdateArgs {
    /// The patch, or an error when it would change nothing.
    pub fn request(&self) -> Result<UpdateJobRequest, CliError> {
        let map = |pairs: &[(String, String)], clear: bool| {
            (clear || !pairs.is_empty()).then(|| StringMap {
                entries: super::to_map(pairs),
            })
        };
        let request = UpdateJobRequest {
            job_id: self.job_id.to_string(),
            name: self.name.clone(),
            image: self.image.clone(),
            command: (self.clear_command || !self.command.is_empty()).then(|| StringList {
                values: self.command.clone(),
            }),
            env: map(&self.env, self.clear_env),
            memory_mb: self.memory_mb,
            timeout_seconds: self.timeout_seconds,
            retry: self.retry.policy(),
            labels: map(&self.labels, self.clear_labels),
            registry_credential: self.registry_credential.clone(),
        };
        let unchanged = UpdateJobRequest {
            job_id: request.job_id.clone(),
            ..UpdateJobRequest::default()
        };
        if request == unchanged {
            return Err(CliError::invalid(
                "nothing to update: name at least one field to change (see --help)",
            ));
        }
        Ok(request)
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    pub job_id: JobId,
    /// The same key again answers the same run instead of starting another.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Env override KEY=VALUE for this run only (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Then wait for the run to end, as `kairos runs wait` does (same exit codes).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit 6; the run goes on).
    #[arg(long, requires = "wait", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_seconds: Option<u64>,
}

pub const COLUMNS: [Column; 7] = [
    Column::Field("ID", "id"),
    Column::Field("NAME", "name"),
    Column::Field("IMAGE", "image"),
    Column::Field("MEMORY_MB", "memory_mb"),
    Column::Field("TIMEOUT_S", "timeout_seconds"),
    Column::Field("VERSION", "version"),
    Column::Field("CREATED_AT", "created_at"),
];

/// A job with the REST API's field names.
pub fn record(job: &Job) -> Record {
    let retry = job.retry.unwrap_or_default();
    Record::new()
        .with("id", job.id.as_str())
        .with("name", job.name.as_str())
        .with("image", job.image.as_str())
        .with("command", json!(job.command))
        .with("env", json!(job.env))
        .with("memory_mb", job.memory_mb)
        .with("timeout_seconds", job.timeout_seconds)
        .with(
            "retry",
            json!({
                "max_attempts": retry.max_attempts,
                "initial_backoff_seconds": retry.initial_backoff_seconds,
                "max_backoff_seconds": retry.max_backoff_seconds,
            }),
        )
        .with("labels", json!(job.labels))
        .with("version", job.version)
        .with("created_at", opt_time(job.created_at.as_ref()))
        .with("updated_at", opt_time(job.updated_at.as_ref()))
}

pub async fn run(cmd: JobsCommand, opts: &GlobalOpts, out: Printer) -> anyhow::Result<ExitCode> {
    let client = job_client(opts)?;
    match cmd {
        JobsCommand::Create(args) => {
            let job = client.create_job(args.request()).await?;
            out.record(&record(&job))?;
        }
        JobsCommand::List(page) => {
            let (jobs, next) = page_or_all(
                &page,
                client.list_jobs(page.size(), page.token()),
                client.jobs(page.size()),
            )
            .await?;
            let rows: Vec<_> = jobs.iter().map(record).collect();
            out.list("jobs", &rows, &COLUMNS, &next)?;
        }
        JobsCommand::Get { job_id } => {
            out.record(&record(&client.get_job(job_id).await?))?;
        }
        JobsCommand::Update(args) => {
            let job = client.update_job(args.request()?).await?;
            out.record(&record(&job))?;
        }
        JobsCommand::Delete { job_id } => {
            client.delete_job(job_id).await?;
            out.record(&deleted(&job_id.to_string()))?;
        }
        JobsCommand::Run(args) => {
            let execution = client
                .execute(ExecuteJobRequest {
                    job_id: args.job_id.to_string(),
                    idempotency_key: args.idempotency_key.clone(),
                    env: to_map(&args.env),
                })
                .await?;
            if !execution.created {
                note("the idempotency key matched an earlier run; no new run was started");
            }
            if args.wait {
                return runs::wait_for(&client, &execution.run.id, args.timeout_seconds, out).await;
            }
            out.record(&runs::record(&execution.run))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a delete prints: the id and that it is gone.
pub fn deleted(id: &str) -> Record {
    Record::new()
        .with("id", id)
        .with("deleted", Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: JobsCommand,
    }

    fn parse(args: &[&str]) -> Result<JobsCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("jobs").chain(args.iter().copied())).map(|c| c.cmd)
    }

    const JOB: &str = "job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f";

    #[test]
    fn create_takes_the_command_after_the_double_dash() {
        let JobsCommand::Create(args) = parse(&[
            "create",
            "--name",
            "n",
            "--image",
            "alpine",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--label",
            "team=data",
            "--max-attempts",
            "3",
            "--",
            "sh",
            "-c",
            "echo --name",
        ])
        .unwrap() else {
            panic!("not create");
        };
        let req = args.request();
        assert_eq!(req.command, ["sh", "-c", "echo --name"]);
        assert_eq!(req.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(req.labels.len(), 1);
        assert_eq!(req.memory_mb, None);
        let retry = req.retry.unwrap();
        assert_eq!(retry.max_attempts, Some(3));
        assert_eq!(retry.initial_backoff_seconds, None);
    }

    #[test]
    fn create_without_retry_flags_sends_no_policy() {
        let JobsCommand::Create(args) =
            parse(&["create", "--name", "n", "--image", "alpine"]).unwrap()
        else {
            panic!("not create");
        };
        assert_eq!(args.request().retry, None);
        assert!(args.request().command.is_empty());
    }

    #[test]
    fn create_needs_a_name_and_an_image() {
        assert!(parse(&["create", "--image", "alpine"]).is_err());
        assert!(parse(&["create", "--name", "n"]).is_err());
    }

    #[test]
    fn a_malformed_env_pair_or_job_id_is_a_usage_error() {
        let e = parse(&["create", "--name", "n", "--image", "i", "--env", "NOVALUE"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["get", "run_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f"]).unwrap_err();
        assert!(e.to_string().contains("not a valid job id"), "{e}");
    }

    #[test]
    fn update_sends_only_what_was_named() {
        let JobsCommand::Update(args) = parse(&["update", JOB, "--memory-mb", "512"]).unwrap()
        else {
            panic!("not update");
        };
        let req = args.request().unwrap();
        assert_eq!(req.job_id, JOB);
        assert_eq!(req.memory_mb, Some(512));
        assert_eq!(
            (req.name, req.command, req.env, req.retry),
            (None, None, None, None)
        );
    }

    #[test]
    fn update_can_clear_lists_and_maps() {
        let JobsCommand::Update(args) =
            parse(&["update", JOB, "--clear-env", "--clear-command"]).unwrap()
        else {
            panic!("not update");
        };
        let req = args.request().unwrap();
        assert_eq!(req.env, Some(StringMap::default()));
        assert_eq!(req.command, Some(StringList::default()));
        assert_eq!(req.labels, None);
        assert!(parse(&["update", JOB, "--clear-env", "--env", "A=1"]).is_err());
    }

    #[test]
    fn an_update_that_changes_nothing_is_refused() {
        let JobsCommand::Update(args) = parse(&["update", JOB]).unwrap() else {
            panic!("not update");
        };
        assert_eq!(args.request().unwrap_err().exit_code(), 2);
    }

    #[test]
    fn a_job_prints_with_rest_field_names() {
        let job = Job {
            id: JOB.into(),
            name: "n".into(),
            image: "alpine".into(),
            command: vec!["true".into()],
            memory_mb: 256,
            timeout_seconds: 60,
            retry: Some(RetryPolicy {
                max_attempts: Some(1),
                initial_backoff_seconds: Some(10),
                max_backoff_seconds: Some(300),
            }),
            version: 1,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_769_850_000,
                nanos: 0,
            }),
            ..Job::default()
        };
        let v = record(&job).to_json();
        assert_eq!(v["retry"]["max_backoff_seconds"], 300);
        assert_eq!(v["created_at"], "2026-01-31T09:00:00Z");
        assert_eq!(v["env"], json!({}));
        assert_eq!(v["updated_at"], Value::Null);
        let keys: Vec<_> = record(&job).fields().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "id",
                "name",
                "image",
                "command",
                "env",
                "memory_mb",
                "timeout_seconds",
                "retry",
                "labels",
                "version",
                "created_at",
                "updated_at"
            ]
        );
    }
}
