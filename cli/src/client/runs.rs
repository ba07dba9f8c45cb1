//! `kairos runs list|get|cancel|logs|events|watch|wait`: reads runs and follows them to their
//! end; it must never change a run except through `CancelRun`.

use std::{process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use futures::StreamExt;
use kairos_domain::{JobId, RunId, RunState, ScheduleId};
use kairos_proto::v1::{Run, RunEvent};
use kairos_sdk::{Client, RunFilter};
use serde_json::Value;

use super::{
    GlobalOpts, OutputFormat, PageArgs,
    connect::job_client,
    error::CliError,
    output::{Column, Printer, Record, emit, note, opt_time},
    page_or_all,
};

/// Exit code of `runs wait` (and `jobs run --wait`) when the run failed.
pub const EXIT_RUN_FAILED: u8 = 3;
/// … when the run was cancelled.
pub const EXIT_RUN_CANCELLED: u8 = 4;
/// … when the run was skipped (overlap or missed).
pub const EXIT_RUN_SKIPPED: u8 = 5;
/// … when the wait gave up (`--timeout-seconds`) before the run ended.
pub const EXIT_WAIT_TIMEOUT: u8 = 6;

/// The exit codes of a wait, for `--help`.
pub const WAIT_EXIT_CODES: &str = "\
Exit codes:
  0  the run succeeded
  1  the wait itself failed (server unreachable, run not found, ...)
  2  bad input
  3  the run failed
  4  the run was cancelled
  5  the run was skipped
  6  --timeout-seconds passed before the run ended (it goes on)";

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List(ListArgs),
    /// Show a run.
    Get { run_id: RunId },
    /// Cancel a run that has not ended.
    Cancel { run_id: RunId },
    /// Print a run's output (the stored, size-capped tail); --follow prints it as it grows.
    Logs(LogsArgs),
    /// List a run's state transitions.
    Events { run_id: RunId },
    /// Stream a run's transitions until it ends.
    Watch { run_id: RunId },
    /// Follow a run's transitions as they happen until it ends; exit 0 only if it succeeded.
    #[command(after_help = WAIT_EXIT_CODES)]
    Wait(WaitArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs of this job.
    #[arg(long = "job")]
    pub job_id: Option<JobId>,
    /// Only runs of this schedule.
    #[arg(long = "schedule")]
    pub schedule_id: Option<ScheduleId>,
    /// Only runs in this state (scheduled, queued, running, succeeded, failed, cancelled,
    /// skipped).
    #[arg(long, value_parser = parse_state)]
    pub state: Option<RunState>,
    #[command(flatten)]
    pub page: PageArgs,
}

impl ListArgs {
    fn filter(&self) -> RunFilter {
        RunFilter {
            job_id: self.job_id.map(|id| id.to_string()),
            schedule_id: self.schedule_id.map(|id| id.to_string()),
            state: self.state,
        }
    }
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    pub run_id: RunId,
    /// Give up after this long (exit 6; the run goes on).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub run_id: RunId,
    /// Keep printing new output until the run ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// With --follow: time between polls, in milliseconds.
    #[arg(long, default_value_t = 1000, requires = "follow",
          value_parser = clap::value_parser!(u64).range(100..))]
    pub interval_ms: u64,
}

fn parse_state(raw: &str) -> Result<RunState, String> {
    RunState::parse(raw).ok_or_else(|| {
        let names: Vec<_> = RunState::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "unknown state '{raw}'; expected one of {}",
            names.join(", ")
        )
    })
}

pub const COLUMNS: [Column; 8] = [
    Column::Field("ID", "id"),
    Column::Field("JOB_ID", "job_id"),
    Column::Field("STATE", "state"),
    Column::Field("TRIGGER", "trigger"),
    Column::Field("ATTEMPT", "attempt"),
    Column::Field("FIRE_TIME", "fire_time"),
    Column::Field("REASON", "reason"),
    Column::Field("EXIT_CODE", "exit_code"),
];

const EVENT_COLUMNS: [Column; 4] = [
    Column::Field("AT", "at"),
    Column::Field("FROM", "from_state"),
    Column::Field("TO", "to_state"),
    Column::Field("REASON", "reason"),
];

/// A run with the REST API's field names.
pub fn record(run: &Run) -> Record {
    Record::new()
        .with("id", run.id.as_str())
        .with("job_id", run.job_id.as_str())
        .with_opt("schedule_id", run.schedule_id.as_deref())
        .with("trigger", run.trigger.as_str())
        .with("attempt", run.attempt)
        .with("fire_time", opt_time(run.fire_time.as_ref()))
        .with("state", run.state.as_str())
        .with_opt("reason", run.reason.as_deref())
        .with_opt("exit_code", run.exit_code)
        .with_opt("worker_id", run.worker_id.as_deref())
        .with("created_at", opt_time(run.created_at.as_ref()))
        .with_opt("started_at", opt_time(run.started_at.as_ref()))
        .with_opt("finished_at", opt_time(run.finished_at.as_ref()))
        .with_opt("retry_of", run.retry_of.as_deref())
}

/// A run event with the REST API's field names.
pub fn event_record(event: &RunEvent) -> Record {
    Record::new()
        .with("id", event.id)
        .with("run_id", event.run_id.as_str())
        .with_opt("from_state", event.from_state.as_deref())
        .with("to_state", event.to_state.as_str())
        .with_opt("reason", event.reason.as_deref())
        .with("at", opt_time(event.at.as_ref()))
}

/// One line per transition: `<at>  <run>  <from> -> <to>  (<reason>)`.
pub fn event_line(event: &RunEvent) -> String {
    let at = opt_time(event.at.as_ref()).unwrap_or_else(|| "-".to_owned());
    let from = event.from_state.as_deref().unwrap_or("-");
    let mut line = format!("{at}  {}  {from} -> {}", event.run_id, event.to_state);
    if let Some(reason) = &event.reason {
        line.push_str(&format!("  ({reason})"));
    }
    line
}

/// One line per observed state: `<run>  <state>  reason=… exit_code=…`.
pub fn state_line(run: &Run) -> String {
    let mut line = format!("{}  {}", run.id, run.state);
    if let Some(reason) = &run.reason {
        line.push_str(&format!("  reason={reason}"));
    }
    if let Some(code) = run.exit_code {
        line.push_str(&format!("  exit_code={code}"));
    }
    line
}

/// The exit code of a wait that saw the run end in `state`.
pub fn exit_code_of(state: &str) -> u8 {
    match RunState::parse(state) {
        Some(RunState::Succeeded) => 0,
        Some(RunState::Cancelled) => EXIT_RUN_CANCELLED,
        Some(RunState::Skipped) => EXIT_RUN_SKIPPED,
        _ => EXIT_RUN_FAILED,
    }
}

/// Follows the run's transitions (WatchRun) until it ends, printing each as it happens (to
/// stdout in a table, to stderr with `--output json`, whose stdout is the ended run), then the
/// run as it ended. The exit code says how it ended (see [`WAIT_EXIT_CODES`]).
pub async fn wait_for(
    client: &Client,
    run_id: &str,
    timeout_seconds: Option<u64>,
    out: Printer,
) -> anyhow::Result<ExitCode> {
    // No timeout: as long as the longest run may last (24 h) and then some.
    let timeout = Duration::from_secs(timeout_seconds.unwrap_or(2 * 24 * 3600));
    let mut shown: anyhow::Result<()> = Ok(());
    let ended = client
        .wait_for_run_with(run_id, timeout, |event| {
            let line = event_line(event);
            let printed = match out.format {
                OutputFormat::Table => emit(&format!("{line}\n")),
                OutputFormat::Json => {
                    eprintln!("{line}");
                    Ok(())
                }
            };
            if shown.is_ok() {
                shown = printed;
            }
        })
        .await;
    shown?;
    let run = match ended {
        Ok(run) => run,
        Err(e @ kairos_sdk::Error::Timeout { .. }) => {
            return Err(CliError::from_sdk(&e).with_exit(EXIT_WAIT_TIMEOUT).into());
        }
        Err(e) => return Err(e.into()),
    };
    match out.format {
        OutputFormat::Table => emit(&format!("{}\n", state_line(&run)))?,
        OutputFormat::Json => out.record(&record(&run))?,
    }
    Ok(ExitCode::from(exit_code_of(&run.state)))
}

/// Prints the run's output: the stored tail, or with `--follow` each new part as it appears
/// until the run ends.
async fn logs(client: &Client, args: LogsArgs, out: Printer) -> anyhow::Result<()> {
    if !args.follow {
        let logs = client.run_logs(args.run_id).await?;
        return match out.format {
            OutputFormat::Table => {
                if logs.truncated {
                    note("the output was longer than the cap: only its tail is kept");
                }
                emit(&logs.content)
            }
            OutputFormat::Json => out.json(
                &Record::new()
                    .with("run_id", logs.run_id)
                    .with("content", logs.content)
                    .with("truncated", Value::Bool(logs.truncated))
                    .to_json(),
            ),
        };
    }
    let mut chunks = client.follow_logs(args.run_id, Duration::from_millis(args.interval_ms));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        match out.format {
            OutputFormat::Table => {
                if chunk.gap {
                    note(
                        "output was skipped: more was written between two polls than the stored tail keeps",
                    );
                }
                emit(&chunk.text)?;
            }
            OutputFormat::Json => {
                let line = Record::new()
                    .with("run_id", args.run_id.to_string())
                    .with("text", chunk.text)
                    .with("gap", Value::Bool(chunk.gap));
                out.stream_item(&line, "")?;
            }
        }
    }
    Ok(())
}

pub async fn run(cmd: RunsCommand, opts: &GlobalOpts, out: Printer) -> anyhow::Result<ExitCode> {
    let client = job_client(opts)?;
    match cmd {
        RunsCommand::List(args) => {
            let filter = args.filter();
            let (runs, next) = page_or_all(
                &args.page,
                client.list_runs(&filter, args.page.size(), args.page.token()),
                client.runs(filter.clone(), args.page.size()),
            )
            .await?;
            let rows: Vec<_> = runs.iter().map(record).collect();
            out.list("runs", &rows, &COLUMNS, &next)?;
        }
        RunsCommand::Get { run_id } => out.record(&record(&client.get_run(run_id).await?))?,
        RunsCommand::Cancel { run_id } => {
            out.record(&record(&client.cancel_run(run_id).await?))?;
        }
        RunsCommand::Logs(args) => logs(&client, args, out).await?,
        RunsCommand::Events { run_id } => {
            let events = client.run_events(run_id).await?;
            let rows: Vec<_> = events.iter().map(event_record).collect();
            out.list("events", &rows, &EVENT_COLUMNS, "")?;
        }
        RunsCommand::Watch { run_id } => {
            let mut events = client.watch_run(run_id);
            while let Some(event) = events.next().await {
                let event = event?;
                out.stream_item(&event_record(&event), &event_line(&event))?;
            }
        }
        RunsCommand::Wait(args) => {
            return wait_for(&client, &args.run_id.to_string(), args.timeout_seconds, out).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use prost_types::Timestamp;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: RunsCommand,
    }

    fn parse(args: &[&str]) -> Result<RunsCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("runs").chain(args.iter().copied())).map(|c| c.cmd)
    }

    const RUN: &str = "run_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f";

    fn ts(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn list_filters_parse_into_checked_types() {
        let RunsCommand::List(args) = parse(&[
            "list",
            "--job",
            "job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f",
            "--state",
            "failed",
            "--page-size",
            "50",
        ])
        .unwrap() else {
            panic!("not list");
        };
        assert_eq!(args.state, Some(RunState::Failed));
        assert_eq!(args.page.size(), 50);
        assert!(args.schedule_id.is_none());
    }

    #[test]
    fn an_unknown_state_or_page_size_is_a_usage_error() {
        let e = parse(&["list", "--state", "done"]).unwrap_err();
        assert!(e.to_string().contains("expected one of scheduled"), "{e}");
        assert!(parse(&["list", "--page-size", "5000"]).is_err());
    }

    #[test]
    fn wait_takes_a_timeout_and_logs_a_poll_interval_only_when_following() {
        let RunsCommand::Wait(w) = parse(&["wait", RUN, "--timeout-seconds", "30"]).unwrap() else {
            panic!("not wait");
        };
        assert_eq!(w.timeout_seconds, Some(30));
        assert!(parse(&["wait", RUN, "--timeout-seconds", "0"]).is_err());
        let RunsCommand::Logs(l) = parse(&["logs", RUN, "-f", "--interval-ms", "250"]).unwrap()
        else {
            panic!("not logs");
        };
        assert!(l.follow && l.interval_ms == 250);
        assert!(parse(&["logs", RUN, "--interval-ms", "250"]).is_err());
        assert!(parse(&["logs", RUN, "-f", "--interval-ms", "5"]).is_err());
    }

    #[test]
    fn each_end_of_a_run_has_its_exit_code() {
        assert_eq!(exit_code_of("succeeded"), 0);
        assert_eq!(exit_code_of("failed"), EXIT_RUN_FAILED);
        assert_eq!(exit_code_of("cancelled"), EXIT_RUN_CANCELLED);
        assert_eq!(exit_code_of("skipped"), EXIT_RUN_SKIPPED);
        assert!(WAIT_EXIT_CODES.contains("6  --timeout-seconds"));
    }

    #[test]
    fn a_run_prints_with_rest_field_names_and_without_absent_fields() {
        let run = Run {
            id: RUN.into(),
            job_id: "job_1".into(),
            trigger: "manual".into(),
            attempt: 1,
            fire_time: ts(1_769_850_000),
            state: "failed".into(),
            reason: Some("exit_code".into()),
            exit_code: Some(3),
            created_at: ts(1_769_850_000),
            ..Run::default()
        };
        assert_eq!(
            record(&run).to_json(),
            json!({
                "id": RUN, "job_id": "job_1", "trigger": "manual", "attempt": 1,
                "fire_time": "2026-01-31T09:00:00Z", "state": "failed", "reason": "exit_code",
                "exit_code": 3, "created_at": "2026-01-31T09:00:00Z"
            })
        );
        assert_eq!(
            state_line(&run),
            format!("{RUN}  failed  reason=exit_code  exit_code=3")
        );
    }

    #[test]
    fn an_event_line_shows_the_transition() {
        let event = RunEvent {
            id: 7,
            run_id: RUN.into(),
            from_state: Some("running".into()),
            to_state: "succeeded".into(),
            reason: None,
            at: ts(1_769_850_000),
        };
        assert_eq!(
            event_line(&event),
            format!("2026-01-31T09:00:00Z  {RUN}  running -> succeeded")
        );
        let first = RunEvent {
            from_state: None,
            to_state: "scheduled".into(),
            ..event
        };
        assert!(event_line(&first).ends_with("  - -> scheduled"));
    }
}
