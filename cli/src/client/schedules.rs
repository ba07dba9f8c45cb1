//! `kairos schedules create|list|get|update|delete|pause|resume|trigger|backfill`: builds
//! `JobService` schedule requests from flags and prints the answers; it must never compute fire
//! times itself (the server's preview is the truth).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Subcommand};
use kairos_domain::{JobId, OverlapPolicy, ScheduleId};
use kairos_proto::v1::{CreateScheduleRequest, Schedule, UpdateScheduleRequest};
use kairos_sdk::time::timestamp;
use serde_json::{Value, json};

use super::{
    GlobalOpts, OutputFormat, PageArgs,
    connect::job_client,
    error::CliError,
    jobs::deleted,
    output::{Column, Printer, Record, note, opt_time, time},
    page_or_all, parse_time, runs,
};

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Attach a schedule to a job: exactly one of --cron, --interval-seconds, --at.
    Create(CreateArgs),
    /// List schedules, oldest first.
    List(ListArgs),
    /// Show a schedule and its next fire times.
    Get { schedule_id: ScheduleId },
    /// Change a schedule: named fields replace, the rest stay.
    Update(UpdateArgs),
    /// Delete a schedule and cancel its pending runs.
    Delete { schedule_id: ScheduleId },
    /// Stop firing until resumed.
    Pause {
        schedule_id: ScheduleId,
        /// Why, for whoever looks later.
        #[arg(long)]
        note: Option<String>,
    },
    /// Fire again from now on.
    Resume { schedule_id: ScheduleId },
    /// Fire once now.
    Trigger { schedule_id: ScheduleId },
    /// Run (or with --dry-run only list) the fires in [--from, --to).
    Backfill(BackfillArgs),
}

/// When and how a schedule fires; every flag optional (create requires a cadence).
#[derive(Debug, Clone, Default, Args)]
pub struct SpecArgs {
    /// Cron pattern: 5 fields, 6 with leading seconds, or a macro such as @hourly.
    #[arg(long)]
    pub cron: Option<String>,
    /// Fire every N seconds.
    #[arg(long)]
    pub interval_seconds: Option<i64>,
    /// Fire once at this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub at: Option<DateTime<Utc>>,
    /// IANA time zone of the cron pattern (default UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// No fire before this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub start_at: Option<DateTime<Utc>>,
    /// No fire after this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub end_at: Option<DateTime<Utc>>,
    /// allow, skip (default), buffer_one or replace.
    #[arg(long, value_parser = parse_overlap)]
    pub overlap_policy: Option<OverlapPolicy>,
    /// How late a missed fire may still run (default 900).
    #[arg(long)]
    pub catchup_window_seconds: Option<i64>,
    /// Random delay of up to this many seconds per fire (default 0).
    #[arg(long)]
    pub jitter_seconds: Option<i64>,
}

fn parse_overlap(raw: &str) -> Result<OverlapPolicy, String> {
    OverlapPolicy::parse(raw).map_err(|e| e.reason)
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("cadence").required(true).args(["cron", "interval_seconds", "at"])))]
pub struct CreateArgs {
    pub job_id: JobId,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
}

impl CreateArgs {
    pub fn request(&self) -> CreateScheduleRequest {
        let s = &self.spec;
        CreateScheduleRequest {
            job_id: self.job_id.to_string(),
            cron: s.cron.clone(),
            interval_seconds: s.interval_seconds,
            at: s.at.map(timestamp),
            timezone: s.timezone.clone(),
            start_at: s.start_at.map(timestamp),
            end_at: s.end_at.map(timestamp),
            overlap_policy: s.overlap_policy.map(|p| p.as_str().to_owned()),
            catchup_window_seconds: s.catchup_window_seconds,
            jitter_seconds: s.jitter_seconds,
            paused: self.paused.then_some(true),
        }
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("cadence").args(["cron", "interval_seconds", "at"])))]
pub struct UpdateArgs {
    pub schedule_id: ScheduleId,
    #[command(flatten)]
    pub spec: SpecArgs,
}

impl UpdateArgs {
    /// The patch, or an error when it would change nothing.
    pub fn request(&self) -> Result<UpdateScheduleRequest, CliError> {
        let s = &self.spec;
        let request = UpdateScheduleRequest {
            schedule_id: self.schedule_id.to_string(),
            cron: s.cron.clone(),
            interval_seconds: s.interval_seconds,
            at: s.at.map(timestamp),
            timezone: s.timezone.clone(),
            start_at: s.start_at.map(timestamp),
            end_at: s.end_at.map(timestamp),
            overlap_policy: s.overlap_policy.map(|p| p.as_str().to_owned()),
            catchup_window_seconds: s.catchup_window_seconds,
            jitter_seconds: s.jitter_seconds,
            // Pausing has its own commands (with a note).
            paused: None,
        };
        let unchanged = UpdateScheduleRequest {
            schedule_id: request.schedule_id.clone(),
            ..UpdateScheduleRequest::default()
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
pub struct ListArgs {
    /// Only the schedules of this job.
    #[arg(long = "job")]
    pub job_id: Option<JobId>,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    pub schedule_id: ScheduleId,
    /// First instant (inclusive), RFC 3339.
    #[arg(long, value_parser = parse_time)]
    pub from: DateTime<Utc>,
    /// Last instant (exclusive), RFC 3339.
    #[arg(long, value_parser = parse_time)]
    pub to: DateTime<Utc>,
    /// Only list the fire times; create no run.
    #[arg(long)]
    pub dry_run: bool,
}

/// How the schedule fires, in a few words: `cron 0 * * * *`, `every 300s`, `at <time>`.
fn cadence(record: &Record) -> String {
    if let Some(Value::String(cron)) = record.get("cron") {
        format!("cron {cron}")
    } else if let Some(Value::Number(n)) = record.get("interval_seconds") {
        format!("every {n}s")
    } else if let Some(Value::String(at)) = record.get("at") {
        format!("at {at}")
    } else {
        "-".to_owned()
    }
}

fn next_fire(record: &Record) -> String {
    match record.get("next_fire_times") {
        Some(Value::Array(fires)) => fires
            .first()
            .and_then(|f| f.get("utc"))
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned(),
        _ => "-".to_owned(),
    }
}

pub const COLUMNS: [Column; 6] = [
    Column::Field("ID", "id"),
    Column::Field("JOB_ID", "job_id"),
    Column::Computed("CADENCE", cadence),
    Column::Field("TIMEZONE", "timezone"),
    Column::Field("PAUSED", "paused"),
    Column::Computed("NEXT_FIRE", next_fire),
];

/// A schedule with the REST API's field names.
pub fn record(s: &Schedule) -> Record {
    let fires: Vec<Value> = s
        .next_fire_times
        .iter()
        .map(|f| json!({"utc": opt_time(f.utc.as_ref()), "local": f.local}))
        .collect();
    Record::new()
        .with("id", s.id.as_str())
        .with("job_id", s.job_id.as_str())
        .with_opt("cron", s.cron.as_deref())
        .with_opt("interval_seconds", s.interval_seconds)
        .with_opt("at", opt_time(s.at.as_ref()))
        .with("timezone", s.timezone.as_str())
        .with_opt("start_at", opt_time(s.start_at.as_ref()))
        .with_opt("end_at", opt_time(s.end_at.as_ref()))
        .with("overlap_policy", s.overlap_policy.as_str())
        .with("catchup_window_seconds", s.catchup_window_seconds)
        .with("jitter_seconds", s.jitter_seconds)
        .with("paused", s.paused)
        .with_opt("pause_note", s.pause_note.as_deref())
        .with("version", s.version)
        .with("next_fire_times", fires)
        .with("created_at", opt_time(s.created_at.as_ref()))
        .with("updated_at", opt_time(s.updated_at.as_ref()))
}

pub async fn run(
    cmd: SchedulesCommand,
    opts: &GlobalOpts,
    out: Printer,
) -> anyhow::Result<ExitCode> {
    let client = job_client(opts)?;
    let schedule = match cmd {
        SchedulesCommand::Create(args) => client.create_schedule(args.request()).await?,
        SchedulesCommand::List(args) => {
            let job_id = args.job_id.map(|id| id.to_string());
            let (schedules, next) = page_or_all(
                &args.page,
                client.list_schedules(job_id.as_deref(), args.page.size(), args.page.token()),
                client.schedules(job_id.clone(), args.page.size()),
            )
            .await?;
            let rows: Vec<_> = schedules.iter().map(record).collect();
            out.list("schedules", &rows, &COLUMNS, &next)?;
            return Ok(ExitCode::SUCCESS);
        }
        SchedulesCommand::Get { schedule_id } => client.get_schedule(schedule_id).await?,
        SchedulesCommand::Update(args) => client.update_schedule(args.request()?).await?,
        SchedulesCommand::Delete { schedule_id } => {
            client.delete_schedule(schedule_id).await?;
            out.record(&deleted(&schedule_id.to_string()))?;
            return Ok(ExitCode::SUCCESS);
        }
        SchedulesCommand::Pause { schedule_id, note } => {
            client.pause_schedule(schedule_id, note.as_deref()).await?
        }
        SchedulesCommand::Resume { schedule_id } => client.resume_schedule(schedule_id).await?,
        SchedulesCommand::Trigger { schedule_id } => {
            let run = client.trigger_schedule(schedule_id).await?;
            out.record(&runs::record(&run))?;
            return Ok(ExitCode::SUCCESS);
        }
        SchedulesCommand::Backfill(args) => {
            let answer = client
                .backfill_schedule(args.schedule_id, args.from, args.to, args.dry_run)
                .await?;
            let fire_times: Vec<String> = answer.fire_times.iter().map(time).collect();
            let runs: Vec<_> = answer.runs.iter().map(runs::record).collect();
            match out.format {
                OutputFormat::Json => out.json(&json!({
                    "runs": runs.iter().map(Record::to_json).collect::<Vec<_>>(),
                    "fire_times": fire_times,
                    "truncated": answer.truncated,
                }))?,
                OutputFormat::Table if args.dry_run => {
                    let rows: Vec<_> = fire_times
                        .into_iter()
                        .map(|t| Record::new().with("fire_time", t))
                        .collect();
                    out.list(
                        "fire_times",
                        &rows,
                        &[Column::Field("FIRE_TIME", "fire_time")],
                        "",
                    )?;
                }
                OutputFormat::Table => out.list("runs", &runs, &runs::COLUMNS, "")?,
            }
            if answer.truncated {
                note(
                    "more fires remained past the server's limit: backfill again from the last fire time",
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    out.record(&record(&schedule))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use kairos_proto::v1::FireTime;
    use prost_types::Timestamp;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: SchedulesCommand,
    }

    fn parse(args: &[&str]) -> Result<SchedulesCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("schedules").chain(args.iter().copied())).map(|c| c.cmd)
    }

    const JOB: &str = "job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f";
    const SCH: &str = "sch_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f";

    #[test]
    fn create_sends_the_cadence_and_only_the_named_fields() {
        let SchedulesCommand::Create(args) = parse(&[
            "create",
            JOB,
            "--cron",
            "0 30 9 * * mon-fri",
            "--timezone",
            "Europe/Paris",
            "--overlap-policy",
            "buffer_one",
            "--end-at",
            "2026-12-31T00:00:00+01:00",
        ])
        .unwrap() else {
            panic!("not create");
        };
        let req = args.request();
        assert_eq!(req.job_id, JOB);
        assert_eq!(req.cron.as_deref(), Some("0 30 9 * * mon-fri"));
        assert_eq!(req.overlap_policy.as_deref(), Some("buffer_one"));
        assert_eq!(req.end_at.map(|t| t.seconds), Some(1_798_671_600));
        assert_eq!(
            (req.interval_seconds, req.at, req.paused),
            (None, None, None)
        );
    }

    #[test]
    fn create_needs_exactly_one_cadence() {
        assert!(parse(&["create", JOB]).is_err());
        assert!(
            parse(&[
                "create",
                JOB,
                "--cron",
                "@hourly",
                "--interval-seconds",
                "60"
            ])
            .is_err()
        );
        assert!(parse(&["create", JOB, "--at", "2026-01-31T09:00:00Z"]).is_ok());
    }

    #[test]
    fn bad_policies_and_times_are_usage_errors() {
        let e = parse(&[
            "create",
            JOB,
            "--cron",
            "@hourly",
            "--overlap-policy",
            "queue",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("expected one of allow"), "{e}");
        let e = parse(&[
            "backfill",
            SCH,
            "--from",
            "yesterday",
            "--to",
            "2026-01-31T00:00:00Z",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn update_refuses_an_empty_patch_and_never_sets_paused() {
        let SchedulesCommand::Update(args) = parse(&["update", SCH]).unwrap() else {
            panic!("not update");
        };
        assert!(args.request().is_err());
        let SchedulesCommand::Update(args) =
            parse(&["update", SCH, "--jitter-seconds", "5"]).unwrap()
        else {
            panic!("not update");
        };
        let req = args.request().unwrap();
        assert_eq!(req.jitter_seconds, Some(5));
        assert_eq!(req.paused, None);
    }

    #[test]
    fn pause_takes_a_note_and_backfill_a_range() {
        let SchedulesCommand::Pause { note, .. } =
            parse(&["pause", SCH, "--note", "maintenance"]).unwrap()
        else {
            panic!("not pause");
        };
        assert_eq!(note.as_deref(), Some("maintenance"));
        let SchedulesCommand::Backfill(b) = parse(&[
            "backfill",
            SCH,
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-01-02T00:00:00Z",
            "--dry-run",
        ])
        .unwrap() else {
            panic!("not backfill");
        };
        assert!(b.dry_run && b.from < b.to);
    }

    #[test]
    fn a_schedule_prints_its_cadence_and_next_fire() {
        let s = Schedule {
            id: SCH.into(),
            job_id: JOB.into(),
            interval_seconds: Some(300),
            timezone: "UTC".into(),
            overlap_policy: "skip".into(),
            catchup_window_seconds: 900,
            next_fire_times: vec![FireTime {
                utc: Some(Timestamp {
                    seconds: 1_769_850_000,
                    nanos: 0,
                }),
                local: "2026-01-31T09:00:00+00:00".into(),
            }],
            ..Schedule::default()
        };
        let r = record(&s);
        assert_eq!(cadence(&r), "every 300s");
        assert_eq!(next_fire(&r), "2026-01-31T09:00:00Z");
        let v = r.to_json();
        assert_eq!(v["interval_seconds"], 300);
        assert!(v.get("cron").is_none() && v.get("pause_note").is_none());
        assert_eq!(
            v["next_fire_times"][0]["local"],
            "2026-01-31T09:00:00+00:00"
        );
    }
}
