//! `kairos runs list|get|cancel|logs|events|watch|wait`: reads runs and follows them to their
//! end; it must never change a run except through `CancelRun`.

use std::{process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use kairos_domain::{JobId, RunId, RunState, ScheduleId};
use kairos_proto::v1::{
    CancelRunRequest, GetRunLogsRequest, GetRunRequest, ListRunEventsRequest, ListRunsRequest, Run,
    RunEvent, WatchRunRequest,
};
use serde_json::Value;

use super::{
    GlobalOpts, PageArgs,
    connect::{JobClient, job_client},
    error::{CliError, EXIT_FAILURE},
    output::{Column, Printer, Record, emit, note, opt_time},
};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List(ListArgs),
    /// Show a run.
    Get { run_id: RunId },
    /// Cancel a run that has not ended.
    Cancel { run_id: RunId },
    /// Print a run's log tail.
    Logs { run_id: RunId },
    /// List a run's state transitions.
    Events { run_id: RunId },
    /// Stream a run's transitions until it ends.
    Watch { run_id: RunId },
    /// Poll a run until it ends; exit 0 only if it succeeded.
    Wait(WaitCommand),
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

#[derive(Debug, Args)]
pub struct WaitCommand {
    pub run_id: RunId,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// How `wait` polls.
#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArgs {
    /// Time between polls, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    pub interval_ms: u64,
    /// Give up (exit 1) when the run has not ended after this long.
    #[arg(long)]
    pub timeout_seconds: Option<u64>,
}

impl WaitArgs {
    pub const DEFAULT: WaitArgs = WaitArgs {
        interval_ms: 1000,
        timeout_seconds: None,
    };
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

fn is_terminal(state: &str) -> bool {
    RunState::parse(state).is_some_and(RunState::is_terminal)
}

/// Polls the run, printing each state it is seen in, until it ends. Exit 0 if it succeeded,
/// 1 if it ended otherwise; a timeout is an error (`deadline_exceeded`).
pub async fn wait_for(
    client: &mut JobClient,
    run_id: &str,
    args: WaitArgs,
    out: Printer,
) -> anyhow::Result<ExitCode> {
    let mut last_state = String::new();
    let poll = async {
        loop {
            let run = client
                .get_run(GetRunRequest {
                    run_id: run_id.to_owned(),
                })
                .await?
                .into_inner();
            if run.state != last_state {
                out.stream_item(&record(&run), &state_line(&run))?;
                last_state.clone_from(&run.state);
            }
            if is_terminal(&run.state) {
                let succeeded = run.state == RunState::Succeeded.as_str();
                return anyhow::Ok(if succeeded {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_FAILURE)
                });
            }
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    };
    match args.timeout_seconds {
        None => poll.await,
        Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), poll).await {
            Ok(result) => result,
            Err(_) => Err(CliError::new(
                "deadline_exceeded",
                format!("run {run_id} had not ended after {secs}s"),
            )
            .into()),
        },
    }
}

pub async fn run(cmd: RunsCommand, opts: &GlobalOpts, out: Printer) -> anyhow::Result<ExitCode> {
    let mut client = job_client(opts).await?;
    match cmd {
        RunsCommand::List(args) => {
            let list = client
                .list_runs(ListRunsRequest {
                    job_id: args.job_id.map(|id| id.to_string()),
                    schedule_id: args.schedule_id.map(|id| id.to_string()),
                    state: args.state.map(|s| s.as_str().to_owned()),
                    page_size: args.page.size(),
                    page_token: args.page.token(),
                })
                .await?
                .into_inner();
            let rows: Vec<_> = list.runs.iter().map(record).collect();
            out.list("runs", &rows, &COLUMNS, &list.next_page_token)?;
        }
        RunsCommand::Get { run_id } => {
            let run = client
                .get_run(GetRunRequest {
                    run_id: run_id.to_string(),
                })
                .await?
                .into_inner();
            out.record(&record(&run))?;
        }
        RunsCommand::Cancel { run_id } => {
            let run = client
                .cancel_run(CancelRunRequest {
                    run_id: run_id.to_string(),
                })
                .await?
                .into_inner();
            out.record(&record(&run))?;
        }
        RunsCommand::Logs { run_id } => {
            let logs = client
                .get_run_logs(GetRunLogsRequest {
                    run_id: run_id.to_string(),
                })
                .await?
                .into_inner();
            match out.format {
                super::OutputFormat::Table => {
                    if logs.truncated {
                        note("the log was longer than the cap: only its tail is kept");
                    }
                    emit(&logs.content)?;
                }
                super::OutputFormat::Json => out.json(
                    &Record::new()
                        .with("run_id", logs.run_id)
                        .with("content", logs.content)
                        .with("truncated", Value::Bool(logs.truncated))
                        .to_json(),
                )?,
            }
        }
        RunsCommand::Events { run_id } => {
            let events = client
                .list_run_events(ListRunEventsRequest {
                    run_id: run_id.to_string(),
                })
                .await?
                .into_inner()
                .events;
            let rows: Vec<_> = events.iter().map(event_record).collect();
            out.list("events", &rows, &EVENT_COLUMNS, "")?;
        }
        RunsCommand::Watch { run_id } => {
            let mut stream = client
                .watch_run(WatchRunRequest {
                    run_id: run_id.to_string(),
                })
                .await?
                .into_inner();
            while let Some(event) = stream.message().await? {
                out.stream_item(&event_record(&event), &event_line(&event))?;
            }
        }
        RunsCommand::Wait(args) => {
            return wait_for(&mut client, &args.run_id.to_string(), args.wait, out).await;
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
    fn wait_takes_a_poll_interval_and_a_timeout() {
        let RunsCommand::Wait(w) = parse(&[
            "wait",
            RUN,
            "--interval-ms",
            "250",
            "--timeout-seconds",
            "30",
        ])
        .unwrap() else {
            panic!("not wait");
        };
        assert_eq!(w.wait.interval_ms, 250);
        assert_eq!(w.wait.timeout_seconds, Some(30));
        assert!(parse(&["wait", RUN, "--interval-ms", "5"]).is_err());
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

    #[test]
    fn only_the_final_states_end_a_wait() {
        assert!(is_terminal("succeeded") && is_terminal("skipped"));
        assert!(!is_terminal("running") && !is_terminal("a_future_state"));
    }
}
