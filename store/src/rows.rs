//! Conversions between table rows and domain types, and the page cutting shared by lists, for
//! every SQL backend (Postgres and SQLite decode into the same rows); a row that does not parse
//! becomes `StoreError::Corrupt`, never a panic, and no message here may carry an env value.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kairos_domain::{
    Cadence, Command, CredentialName, CronSpec, Env, FieldError, ImageRef, JobId, JobName, JobSpec,
    Labels, MemoryLimit, OverlapPolicy, PageRequest, PageToken, RetryDraft, RunId, RunState,
    RunTimeout, ScheduleId, ScheduleSpec, ShardId, TenantId, TenantName, TimeZone, Trigger,
};
use serde_json::Value;
use sqlx::QueryBuilder;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{
    Assignment, Job, Offer, Page, PendingRun, RegistryAuth, Result, Run, RunEvent, Schedule,
    StoreError, Tenant,
};

// --- tenants ----------------------------------------------------------------------------------

/// The columns of a `TenantRow`, for `concat!` into static SQL.
macro_rules! tenant_columns {
    () => {
        "id, name, created_at"
    };
}
pub(crate) use tenant_columns;

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TenantRow {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) created_at: DateTime<Utc>,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;

    fn try_from(row: TenantRow) -> Result<Self> {
        let corrupt = |e: FieldError| corrupt("tenant", row.id, e);
        Ok(Tenant {
            id: TenantId::from_uuid(row.id),
            name: TenantName::parse(&row.name).map_err(corrupt)?,
            created_at: row.created_at,
        })
    }
}

// --- jobs -------------------------------------------------------------------------------------

/// The columns of a `JobRow`, for `concat!` into static SQL.
macro_rules! job_columns {
    () => {
        "id, tenant_id, name, image, command, env, memory_mb, \
     timeout_seconds, retry_max_attempts, retry_initial_backoff_seconds, \
     retry_max_backoff_seconds, labels, registry_credential, version, created_at, updated_at"
    };
}
pub(crate) use job_columns;

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct JobRow {
    pub(crate) id: Uuid,
    pub(crate) tenant_id: Uuid,
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) command: Vec<String>,
    pub(crate) env: Json<Value>,
    pub(crate) memory_mb: i32,
    pub(crate) timeout_seconds: i32,
    pub(crate) retry_max_attempts: i32,
    pub(crate) retry_initial_backoff_seconds: i32,
    pub(crate) retry_max_backoff_seconds: i32,
    pub(crate) labels: Json<Value>,
    pub(crate) registry_credential: Option<String>,
    pub(crate) version: i64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self> {
        let id = row.id;
        let corrupt = |e: FieldError| corrupt("job", id, e);
        let retry = RetryDraft {
            max_attempts: Some(i64::from(row.retry_max_attempts)),
            initial_backoff_seconds: Some(i64::from(row.retry_initial_backoff_seconds)),
            max_backoff_seconds: Some(i64::from(row.retry_max_backoff_seconds)),
        }
        .parse()
        .map_err(|e| corrupt(e.within("retry")))?;
        let spec = JobSpec {
            name: JobName::parse(&row.name).map_err(corrupt)?,
            image: ImageRef::parse(&row.image).map_err(corrupt)?,
            command: Command::parse(row.command).map_err(corrupt)?,
            env: Env::parse(string_map("env", row.env.0).map_err(corrupt)?).map_err(corrupt)?,
            memory: MemoryLimit::from_mb(i64::from(row.memory_mb)).map_err(corrupt)?,
            timeout: RunTimeout::from_seconds(i64::from(row.timeout_seconds)).map_err(corrupt)?,
            retry,
            labels: Labels::parse(string_map("labels", row.labels.0).map_err(corrupt)?)
                .map_err(corrupt)?,
            registry_credential: row
                .registry_credential
                .as_deref()
                .map(|n| CredentialName::parse_as("registry_credential", n))
                .transpose()
                .map_err(corrupt)?,
        };
        Ok(Job {
            id: JobId::from_uuid(row.id),
            tenant_id: TenantId::from_uuid(row.tenant_id),
            spec,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A job spec as column values, in `JOB_COLUMNS` order after `tenant_id`.
#[derive(Debug)]
pub(crate) struct JobValues<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub command: &'a [String],
    pub env: Json<&'a BTreeMap<String, String>>,
    pub memory_mb: i32,
    pub timeout_seconds: i32,
    pub retry_max_attempts: i32,
    pub retry_initial_backoff_seconds: i32,
    pub retry_max_backoff_seconds: i32,
    pub labels: Json<&'a BTreeMap<String, String>>,
    pub registry_credential: Option<&'a str>,
}

impl<'a> JobValues<'a> {
    pub(crate) fn of(spec: &'a JobSpec) -> Result<Self> {
        Ok(Self {
            name: spec.name.as_str(),
            image: spec.image.as_str(),
            command: spec.command.args(),
            env: Json(spec.env.vars()),
            memory_mb: int("memory_mb", spec.memory.mb())?,
            timeout_seconds: int("timeout_seconds", spec.timeout.seconds())?,
            retry_max_attempts: int("retry.max_attempts", spec.retry.max_attempts())?,
            retry_initial_backoff_seconds: int(
                "retry.initial_backoff_seconds",
                spec.retry.initial_backoff_seconds(),
            )?,
            retry_max_backoff_seconds: int(
                "retry.max_backoff_seconds",
                spec.retry.max_backoff_seconds(),
            )?,
            labels: Json(spec.labels.as_map()),
            registry_credential: spec.registry_credential.as_ref().map(|c| c.as_str()),
        })
    }
}

// --- schedules --------------------------------------------------------------------------------

/// The columns of a `ScheduleRow`, for `concat!` into static SQL.
macro_rules! schedule_columns {
    () => {
        "id, tenant_id, job_id, shard, kind, cron, \
     interval_seconds, interval_anchor, at, timezone, start_at, end_at, overlap_policy, \
     catchup_window_seconds, catchup_max_runs, jitter_seconds, max_runs, paused, pause_note, \
     paused_at, version, next_fire_at, fire_count, last_fire_at, created_at, updated_at"
    };
}
pub(crate) use schedule_columns;

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ScheduleRow {
    pub(crate) id: Uuid,
    pub(crate) tenant_id: Uuid,
    pub(crate) job_id: Uuid,
    pub(crate) shard: i16,
    pub(crate) kind: String,
    pub(crate) cron: Option<String>,
    pub(crate) interval_seconds: Option<i32>,
    pub(crate) interval_anchor: Option<DateTime<Utc>>,
    pub(crate) at: Option<DateTime<Utc>>,
    pub(crate) timezone: String,
    pub(crate) start_at: Option<DateTime<Utc>>,
    pub(crate) end_at: Option<DateTime<Utc>>,
    pub(crate) overlap_policy: String,
    pub(crate) catchup_window_seconds: i32,
    pub(crate) catchup_max_runs: i32,
    pub(crate) jitter_seconds: i32,
    pub(crate) max_runs: Option<i32>,
    pub(crate) paused: bool,
    pub(crate) pause_note: Option<String>,
    pub(crate) paused_at: Option<DateTime<Utc>>,
    pub(crate) version: i64,
    pub(crate) next_fire_at: Option<DateTime<Utc>>,
    pub(crate) fire_count: i64,
    pub(crate) last_fire_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl TryFrom<ScheduleRow> for Schedule {
    type Error = StoreError;

    fn try_from(row: ScheduleRow) -> Result<Self> {
        let id = row.id;
        let corrupt = |e: FieldError| corrupt("schedule", id, e);
        let missing = |field: &str| corrupt(FieldError::new(field, "is missing"));
        let cadence = match row.kind.as_str() {
            "cron" => Cadence::Cron(
                CronSpec::parse(row.cron.as_deref().ok_or_else(|| missing("cron"))?)
                    .map_err(corrupt)?,
            ),
            "interval" => Cadence::Interval {
                seconds: uint(
                    "interval_seconds",
                    row.interval_seconds
                        .ok_or_else(|| missing("interval_seconds"))?,
                )
                .map_err(corrupt)?,
                anchor: row
                    .interval_anchor
                    .ok_or_else(|| missing("interval_anchor"))?,
            },
            "at" => Cadence::At(row.at.ok_or_else(|| missing("at"))?),
            other => {
                return Err(corrupt(FieldError::new(
                    "kind",
                    format!("unknown kind '{other}'"),
                )));
            }
        };
        let spec = ScheduleSpec {
            cadence,
            timezone: TimeZone::parse(&row.timezone).map_err(corrupt)?,
            start_at: row.start_at,
            end_at: row.end_at,
            overlap_policy: OverlapPolicy::parse(&row.overlap_policy).map_err(corrupt)?,
            catchup_window_seconds: uint("catchup_window_seconds", row.catchup_window_seconds)
                .map_err(corrupt)?,
            catchup_max_runs: uint("catchup_max_runs", row.catchup_max_runs).map_err(corrupt)?,
            jitter_seconds: uint("jitter_seconds", row.jitter_seconds).map_err(corrupt)?,
            max_runs: row
                .max_runs
                .map(|m| uint("max_runs", m))
                .transpose()
                .map_err(corrupt)?,
        };
        Ok(Schedule {
            id: ScheduleId::from_uuid(row.id),
            tenant_id: TenantId::from_uuid(row.tenant_id),
            job_id: JobId::from_uuid(row.job_id),
            shard: shard(row.shard).map_err(corrupt)?,
            spec,
            paused: row.paused,
            pause_note: row.pause_note,
            paused_at: row.paused_at,
            version: row.version,
            next_fire_at: row.next_fire_at,
            fire_count: u64::try_from(row.fire_count)
                .map_err(|_| corrupt(FieldError::new("fire_count", "is negative")))?,
            last_fire_at: row.last_fire_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A schedule spec as column values (`kind` through `max_runs`).
#[derive(Debug)]
pub(crate) struct ScheduleValues<'a> {
    pub kind: &'static str,
    pub cron: Option<&'a str>,
    pub interval_seconds: Option<i32>,
    pub interval_anchor: Option<DateTime<Utc>>,
    pub at: Option<DateTime<Utc>>,
    pub timezone: &'static str,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub overlap_policy: &'static str,
    pub catchup_window_seconds: i32,
    pub catchup_max_runs: i32,
    pub jitter_seconds: i32,
    pub max_runs: Option<i32>,
}

impl<'a> ScheduleValues<'a> {
    pub(crate) fn of(spec: &'a ScheduleSpec) -> Result<Self> {
        let (kind, cron, interval_seconds, interval_anchor, at) = match &spec.cadence {
            Cadence::Cron(c) => ("cron", Some(c.pattern()), None, None, None),
            Cadence::Interval { seconds, anchor } => (
                "interval",
                None,
                Some(int("interval_seconds", *seconds)?),
                Some(*anchor),
                None,
            ),
            Cadence::At(at) => ("at", None, None, None, Some(*at)),
        };
        Ok(Self {
            kind,
            cron,
            interval_seconds,
            interval_anchor,
            at,
            timezone: spec.timezone.name(),
            start_at: spec.start_at,
            end_at: spec.end_at,
            overlap_policy: spec.overlap_policy.as_str(),
            catchup_window_seconds: int("catchup_window_seconds", spec.catchup_window_seconds)?,
            catchup_max_runs: int("catchup_max_runs", spec.catchup_max_runs)?,
            jitter_seconds: int("jitter_seconds", spec.jitter_seconds)?,
            max_runs: spec.max_runs.map(|m| int("max_runs", m)).transpose()?,
        })
    }
}

// --- runs -------------------------------------------------------------------------------------

/// The columns of a `RunRow`, for `concat!` into static SQL.
macro_rules! run_columns {
    () => {
        "id, tenant_id, job_id, schedule_id, schedule_version, \
     shard, trigger, attempt, retry_of, fire_time, due_at, state, reason, exit_code, worker_id, \
     cancel_requested, blocked_by, env, created_at, started_at, finished_at"
    };
}
pub(crate) use run_columns;

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RunRow {
    pub(crate) id: Uuid,
    pub(crate) tenant_id: Uuid,
    pub(crate) job_id: Uuid,
    pub(crate) schedule_id: Option<Uuid>,
    pub(crate) schedule_version: Option<i64>,
    pub(crate) shard: i16,
    pub(crate) trigger: String,
    pub(crate) attempt: i32,
    pub(crate) retry_of: Option<Uuid>,
    pub(crate) fire_time: DateTime<Utc>,
    pub(crate) due_at: Option<DateTime<Utc>>,
    pub(crate) state: String,
    pub(crate) reason: Option<String>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) worker_id: Option<String>,
    pub(crate) cancel_requested: bool,
    pub(crate) blocked_by: Option<Uuid>,
    pub(crate) env: Json<Value>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;

    fn try_from(row: RunRow) -> Result<Self> {
        let id = row.id;
        let corrupt = |e: FieldError| corrupt("run", id, e);
        Ok(Run {
            id: RunId::from_uuid(row.id),
            tenant_id: TenantId::from_uuid(row.tenant_id),
            job_id: JobId::from_uuid(row.job_id),
            schedule_id: row.schedule_id.map(ScheduleId::from_uuid),
            schedule_version: row.schedule_version,
            shard: shard(row.shard).map_err(corrupt)?,
            trigger: Trigger::parse(&row.trigger)
                .ok_or_else(|| corrupt(FieldError::new("trigger", "unknown trigger")))?,
            attempt: uint("attempt", row.attempt).map_err(corrupt)?,
            retry_of: row.retry_of.map(RunId::from_uuid),
            fire_time: row.fire_time,
            due_at: row.due_at.unwrap_or(row.fire_time),
            state: state("state", &row.state).map_err(corrupt)?,
            reason: row.reason,
            exit_code: row.exit_code,
            worker_id: row.worker_id,
            cancel_requested: row.cancel_requested,
            blocked_by: row.blocked_by.map(RunId::from_uuid),
            env: Env::parse_as("env", string_map("env", row.env.0).map_err(corrupt)?)
                .map_err(corrupt)?,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
        })
    }
}

// --- run events -------------------------------------------------------------------------------

/// The columns of an `EventRow`, for `concat!` into static SQL.
macro_rules! event_columns {
    () => {
        "id, run_id, from_state, to_state, reason, at"
    };
}
pub(crate) use event_columns;

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub(crate) id: i64,
    pub(crate) run_id: Uuid,
    pub(crate) from_state: Option<String>,
    pub(crate) to_state: String,
    pub(crate) reason: Option<String>,
    pub(crate) at: DateTime<Utc>,
}

impl TryFrom<EventRow> for RunEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self> {
        let corrupt = |e: FieldError| {
            StoreError::Corrupt(format!("run event {} of run {}: {e}", row.id, row.run_id))
        };
        Ok(RunEvent {
            id: row.id,
            run_id: RunId::from_uuid(row.run_id),
            from: row
                .from_state
                .as_deref()
                .map(|s| state("from_state", s))
                .transpose()
                .map_err(corrupt)?,
            to: state("to_state", &row.to_state).map_err(corrupt)?,
            reason: row.reason,
            at: row.at,
        })
    }
}

// --- starting runs ----------------------------------------------------------------------------

/// Whether a run may start now: no cancel requested, its schedule (if any) still at the run's
/// version, its job not deleted. Shared by the fire and the ack, so both refuse alike.
///
/// The schedule and job are read, not locked: the run's row lock orders a start against an
/// edit. Every schedule edit, pause or delete (and every job delete) cancels the runs it
/// obsoletes in its own transaction, so it either cancelled the run before the start locked it
/// (the start sees `cancelled` and leaves it), or it waits for the start's commit and then
/// finds the run running, which it leaves: the start committed first, so I4 holds. Locking the
/// schedules here would instead make every start wait behind the planner, which holds them
/// while it records their fires.
macro_rules! startable {
    () => {
        "(NOT r.cancel_requested
          AND (r.schedule_id IS NULL OR EXISTS (
                SELECT 1 FROM schedules s
                WHERE s.id = r.schedule_id AND s.version = r.schedule_version))
          AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = r.job_id AND j.deleted_at IS NULL))"
    };
}
pub(crate) use startable;

// --- pending runs, assignments and offers ------------------------------------------------

/// A run plus its job's timeout, as recovery and dispatch read it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PendingRow {
    #[sqlx(flatten)]
    pub(crate) run: RunRow,
    pub(crate) timeout_seconds: Option<i32>,
}

impl TryFrom<PendingRow> for PendingRun {
    type Error = StoreError;

    fn try_from(row: PendingRow) -> Result<Self> {
        let run = Run::try_from(row.run)?;
        let timeout = row
            .timeout_seconds
            .ok_or_else(|| StoreError::Corrupt(format!("run {}: its job is missing", run.id)))?;
        let timeout = RunTimeout::from_seconds(i64::from(timeout)).map_err(|e| {
            StoreError::Corrupt(format!("job {} of run {}: {e}", run.job_id, run.id))
        })?;
        Ok(PendingRun {
            id: run.id,
            tenant_id: run.tenant_id,
            job_id: run.job_id,
            schedule_id: run.schedule_id,
            schedule_version: run.schedule_version,
            trigger: run.trigger,
            attempt: run.attempt,
            fire_time: run.fire_time,
            due_at: run.due_at,
            state: run.state,
            worker_id: run.worker_id,
            cancel_requested: run.cancel_requested,
            started_at: run.started_at,
            timeout,
        })
    }
}

/// The job's env overridden by the run's own (execute-now overrides).
pub(crate) fn merged_env(run: &Run, job: &Job) -> Result<Env> {
    let mut env: BTreeMap<String, String> = job.spec.env.vars().clone();
    env.extend(run.env.vars().iter().map(|(k, v)| (k.clone(), v.clone())));
    Env::parse(env).map_err(|e| {
        StoreError::Corrupt(format!(
            "run {}: the job's env with the run's overrides is out of bounds: {e}",
            run.id
        ))
    })
}

pub(crate) fn assignment(run: Run, job: Job, worker_id: &str) -> Result<Assignment> {
    let env = merged_env(&run, &job)?;
    let started_at = run
        .started_at
        .ok_or_else(|| StoreError::Corrupt(format!("run {}: running without a start", run.id)))?;
    Ok(Assignment {
        run_id: run.id,
        tenant_id: run.tenant_id,
        job_id: run.job_id,
        schedule_id: run.schedule_id,
        image: job.spec.image,
        command: job.spec.command,
        env,
        memory: job.spec.memory,
        timeout: job.spec.timeout,
        fire_time: run.fire_time,
        attempt: run.attempt,
        worker_id: worker_id.to_owned(),
        started_at,
    })
}

/// What a worker needs to start `run` of `job`, with the job's registry credential opened
/// when it names one.
pub(crate) fn offer(run: Run, job: &Job, registry_auth: Option<RegistryAuth>) -> Result<Offer> {
    let env = merged_env(&run, job)?;
    Ok(Offer {
        run_id: run.id,
        job_id: run.job_id,
        image: job.spec.image.clone(),
        command: job.spec.command.clone(),
        env,
        memory: job.spec.memory,
        timeout: job.spec.timeout,
        fire_time: run.fire_time,
        attempt: run.attempt,
        tenant_id: run.tenant_id,
        shard: run.shard,
        registry_auth,
    })
}

/// A state read back from `runs`.
pub(crate) fn parse_state(run_id: Uuid, raw: &str) -> Result<RunState> {
    RunState::parse(raw)
        .ok_or_else(|| StoreError::Corrupt(format!("run {run_id}: unknown state '{raw}'")))
}

// --- shared -----------------------------------------------------------------------------------

/// Converts every row, failing on the first corrupt one.
pub(crate) fn convert<R, T>(rows: Vec<R>) -> Result<Vec<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

/// The page size a request asks for (0 means the default; never above the maximum).
fn page_size(page: &PageRequest) -> u32 {
    match page.size {
        0 => PageRequest::DEFAULT_SIZE,
        n => n.min(PageRequest::MAX_SIZE),
    }
}

/// Ends a list query with the keyset condition, the order and the limit of `page`: one row
/// more than the page, to learn whether another follows.
pub(crate) fn push_keyset<DB>(q: &mut QueryBuilder<DB>, page: &PageRequest)
where
    DB: sqlx::Database,
    Uuid: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    if let Some(after) = page.after {
        q.push(" AND id > ").push_bind(after);
    }
    q.push(" ORDER BY id LIMIT ")
        .push_bind(i64::from(page_size(page)) + 1);
}

/// Cuts the rows of a `LIMIT page_limit` query into a page and the token of the next one.
pub(crate) fn page_of<T>(
    mut items: Vec<T>,
    page: &PageRequest,
    id: impl Fn(&T) -> Uuid,
) -> Page<T> {
    let size = page_size(page) as usize;
    let next_page_token = if items.len() > size {
        items.truncate(size);
        items.last().map(|last| PageToken::encode(id(last)))
    } else {
        None
    };
    Page {
        items,
        next_page_token,
    }
}

fn corrupt(what: &str, id: Uuid, e: FieldError) -> StoreError {
    StoreError::Corrupt(format!("{what} {id}: {e}"))
}

/// A JSON object of strings (env, labels); the message never repeats a value.
fn string_map(field: &str, value: Value) -> Result<BTreeMap<String, String>, FieldError> {
    let Value::Object(object) = value else {
        return Err(FieldError::new(field, "is not a JSON object"));
    };
    object
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(FieldError::new(
                format!("{field}.{k}"),
                "is not a JSON string",
            )),
        })
        .collect()
}

fn state(field: &str, raw: &str) -> Result<RunState, FieldError> {
    RunState::parse(raw).ok_or_else(|| FieldError::new(field, format!("unknown state '{raw}'")))
}

/// A shard as its `smallint` column value.
pub(crate) fn shard_value(shard: ShardId) -> Result<i16> {
    i16::try_from(shard.get()).map_err(|_| {
        StoreError::Invalid(FieldError::new(
            "shard",
            format!("{} is out of range", shard.get()),
        ))
    })
}

/// A shard number read back from a table.
pub(crate) fn stored_shard(raw: i16) -> Result<ShardId> {
    shard(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn shard(raw: i16) -> Result<ShardId, FieldError> {
    u16::try_from(raw)
        .ok()
        .and_then(ShardId::new)
        .ok_or_else(|| FieldError::new("shard", format!("{raw} is out of range")))
}

fn uint(field: &str, raw: i32) -> Result<u32, FieldError> {
    u32::try_from(raw).map_err(|_| FieldError::new(field, format!("{raw} is negative")))
}

/// A checked domain number as an SQL `int`; domain limits keep every one far below `i32::MAX`.
pub(crate) fn int(field: &str, value: u32) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        StoreError::Invalid(FieldError::new(
            field,
            format!("{value} is too large to store"),
        ))
    })
}

// --- schedule semantics shared by both stores -----------------------------------------------

/// The in-progress condition of a run of a schedule, as SQL over the `runs` columns of the
/// table aliased `$r`; the partial index `runs_schedule_active_idx` has the same predicate.
macro_rules! in_progress {
    ($r:literal) => {
        concat!(
            "(",
            $r,
            ".state IN ('queued', 'running') OR (",
            $r,
            ".state = 'scheduled' AND ",
            $r,
            ".trigger = 'retry'))"
        )
    };
}
pub(crate) use in_progress;

/// How the overlap rule sees a run in progress, from its stored state.
pub(crate) fn active_run(
    id: Uuid,
    raw_state: &str,
    blocked_by: Option<Uuid>,
) -> Result<kairos_domain::overlap::ActiveRun> {
    use kairos_domain::overlap::{ActiveKind, ActiveRun};
    let kind = match parse_state(id, raw_state)? {
        RunState::Running => ActiveKind::Running,
        RunState::Queued if blocked_by.is_some() => ActiveKind::Held,
        RunState::Queued => ActiveKind::Queued,
        _ => ActiveKind::PendingRetry,
    };
    Ok(ActiveRun {
        id: RunId::from_uuid(id),
        kind,
    })
}

/// A run the calling transaction just moved to `failed`, with what its retry needs.
#[derive(Debug, Clone)]
pub(crate) struct FailedRun {
    pub(crate) id: Uuid,
    pub(crate) job_id: Uuid,
    pub(crate) schedule_id: Option<Uuid>,
    pub(crate) schedule_version: Option<i64>,
    pub(crate) attempt: i32,
    pub(crate) fire_time: DateTime<Utc>,
    pub(crate) cancel_requested: bool,
}

/// A job's stored retry columns as its policy.
pub(crate) fn retry_policy(
    job: Uuid,
    max_attempts: i32,
    initial: i32,
    max: i32,
) -> Result<kairos_domain::RetryPolicy> {
    RetryDraft {
        max_attempts: Some(i64::from(max_attempts)),
        initial_backoff_seconds: Some(i64::from(initial)),
        max_backoff_seconds: Some(i64::from(max)),
    }
    .parse()
    .map_err(|e| StoreError::Corrupt(format!("job {job}: {e}")))
}

/// The backoff of the retry `failed` is owed, if it is owed one (see
/// `SchedulerStore::finish_runs`): its cancel was not asked, its job is live (`policy`), its
/// attempts are not used up, and its schedule, if it has one, is still at the run's version
/// (`current_version`: the schedule's version now, `None` once it is deleted).
pub(crate) fn owed_retry(
    failed: &FailedRun,
    policy: Option<&kairos_domain::RetryPolicy>,
    current_version: Option<i64>,
) -> Option<std::time::Duration> {
    if failed.cancel_requested {
        return None;
    }
    let policy = policy?;
    let attempt = u32::try_from(failed.attempt).ok()?;
    if !policy.retries_after(attempt) {
        return None;
    }
    if failed.schedule_id.is_some() && current_version != failed.schedule_version {
        return None;
    }
    let seed = kairos_domain::stable_hash::fnv1a(&[b"kairos-retry", failed.id.as_bytes()]);
    Some(policy.backoff(attempt, seed))
}

/// What a fire of a batch comes to under the overlap rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Start,
    Skip,
    Hold { blocked_by: RunId },
}

/// The overlap decisions of one firing batch: each fire's fate, and the stored runs a
/// `replace` cancels or stops.
#[derive(Debug)]
pub(crate) struct BatchDecisions<C, R> {
    pub(crate) fates: Vec<(C, RunId, Fate)>,
    pub(crate) cancel: Vec<R>,
    pub(crate) stop: Vec<(RunId, R)>,
}

/// Decides a firing batch's fires of schedules, in the order given (fire order), each against
/// its schedule's stored runs in progress (`active`, with the stored row of each) and the
/// fires of the batch decided before it. A fire of the batch that a later one replaces before
/// it was ever queued is skipped (it never ran); stored runs a `replace` ends are answered to
/// be cancelled or stopped. Pure: both stores apply what it says.
pub(crate) fn decide_batch<C, R: Clone>(
    fires: Vec<(C, RunId, Uuid, OverlapPolicy)>,
    mut active: std::collections::HashMap<
        Uuid,
        Vec<(kairos_domain::overlap::ActiveRun, Option<R>)>,
    >,
) -> BatchDecisions<C, R> {
    use kairos_domain::overlap::{ActiveKind, ActiveRun, FireDecision, decide};
    let mut out = BatchDecisions {
        fates: Vec::with_capacity(fires.len()),
        cancel: Vec::new(),
        stop: Vec::new(),
    };
    for (candidate, id, schedule, policy) in fires {
        let in_progress = active.entry(schedule).or_default();
        let view: Vec<ActiveRun> = in_progress.iter().map(|(a, _)| *a).collect();
        let outcome = decide(policy, &view);
        for ended in &outcome.cancel {
            let Some(pos) = in_progress.iter().position(|(a, _)| a.id == *ended) else {
                continue;
            };
            match in_progress.remove(pos) {
                (_, Some(row)) => out.cancel.push(row),
                (_, None) => {
                    if let Some(fate) = out.fates.iter_mut().find(|(_, f, _)| f == ended) {
                        fate.2 = Fate::Skip;
                    }
                }
            }
        }
        for running in &outcome.stop {
            if let Some((_, Some(row))) = in_progress.iter().find(|(a, _)| a.id == *running)
                && !out.stop.iter().any(|(s, _)| s == running)
            {
                out.stop.push((*running, row.clone()));
            }
        }
        let fate = match outcome.fire {
            FireDecision::Start => {
                in_progress.push((
                    ActiveRun {
                        id,
                        kind: ActiveKind::Queued,
                    },
                    None,
                ));
                Fate::Start
            }
            FireDecision::Skip => Fate::Skip,
            FireDecision::Hold { blocked_by } => {
                in_progress.push((
                    ActiveRun {
                        id,
                        kind: ActiveKind::Held,
                    },
                    None,
                ));
                Fate::Hold { blocked_by }
            }
        };
        out.fates.push((candidate, id, fate));
    }
    out
}

/// The stored state a schedule change starts from (read under the change's lock).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChangeBase {
    pub(crate) version: i64,
    pub(crate) fire_count: i64,
    pub(crate) paused_at: Option<DateTime<Utc>>,
    pub(crate) next_fire_at: Option<DateTime<Utc>>,
}

impl ChangeBase {
    /// The fire count and next fire `change` leaves, once the `unfired` fires it cancelled
    /// are given back (see `Store::update_schedule`).
    pub(crate) fn after(
        &self,
        change: &crate::ScheduleChange,
        id: ScheduleId,
        unfired: u64,
    ) -> (u64, Option<DateTime<Utc>>) {
        let fire_count = u64::try_from(self.fire_count)
            .unwrap_or(0)
            .saturating_sub(unfired);
        let timeline = change.spec.timeline(id, fire_count);
        let next = match change.next_fire {
            crate::NextFire::Keep if timeline.remaining() == Some(0) => None,
            crate::NextFire::Keep => self.next_fire_at,
            crate::NextFire::After(t) => timeline.next_after(t),
            crate::NextFire::SincePause { otherwise } => {
                timeline.next_after(self.paused_at.unwrap_or(otherwise))
            }
        };
        (fire_count, next)
    }
}

/// A job's `registry_credential` named `name` must exist (`server`: the stored credential's
/// registry, `None` when the tenant has none of that name) and be for the registry `image` is
/// pulled from.
pub(crate) fn check_credential_for_image(
    name: &str,
    server: Option<&str>,
    image: &ImageRef,
) -> Result<()> {
    let Some(server) = server else {
        return Err(FieldError::new(
            "registry_credential",
            format!("no registry credential named '{name}'; create it with POST /v1/registry-credentials"),
        )
        .into());
    };
    let registry = kairos_domain::RegistryHost::of_image(image);
    if registry.as_str() != server {
        return Err(FieldError::new(
            "registry_credential",
            format!("'{name}' is for {server}, but the image is pulled from {registry}"),
        )
        .into());
    }
    Ok(())
}
