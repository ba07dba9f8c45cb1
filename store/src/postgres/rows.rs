//! Conversions between table rows and domain types, and the page cutting shared by lists; a
//! row that does not parse becomes `StoreError::Corrupt`, never a panic, and no message here
//! may carry an env value.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kairos_domain::{
    Cadence, Command, CredentialName, CronSpec, Env, FieldError, ImageRef, JobId, JobName, JobSpec,
    Labels, MemoryLimit, OverlapPolicy, PageRequest, PageToken, RetryDraft, RunId, RunState,
    RunTimeout, ScheduleId, ScheduleSpec, ShardId, TenantId, TenantName, TimeZone, Trigger,
};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{Job, Page, Result, Run, RunEvent, Schedule, StoreError, Tenant};

// --- tenants ----------------------------------------------------------------------------------

/// The columns of a `TenantRow`, for `concat!` into static SQL.
macro_rules! tenant_columns {
    () => {
        "id, name, created_at"
    };
}
pub(super) use tenant_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct TenantRow {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
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
pub(super) use job_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct JobRow {
    id: Uuid,
    tenant_id: Uuid,
    name: String,
    image: String,
    command: Vec<String>,
    env: Json<Value>,
    memory_mb: i32,
    timeout_seconds: i32,
    retry_max_attempts: i32,
    retry_initial_backoff_seconds: i32,
    retry_max_backoff_seconds: i32,
    labels: Json<Value>,
    registry_credential: Option<String>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
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
pub(super) struct JobValues<'a> {
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
    pub(super) fn of(spec: &'a JobSpec) -> Result<Self> {
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
pub(super) use schedule_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct ScheduleRow {
    id: Uuid,
    tenant_id: Uuid,
    job_id: Uuid,
    shard: i16,
    kind: String,
    cron: Option<String>,
    interval_seconds: Option<i32>,
    interval_anchor: Option<DateTime<Utc>>,
    at: Option<DateTime<Utc>>,
    timezone: String,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    overlap_policy: String,
    catchup_window_seconds: i32,
    catchup_max_runs: i32,
    jitter_seconds: i32,
    max_runs: Option<i32>,
    paused: bool,
    pause_note: Option<String>,
    paused_at: Option<DateTime<Utc>>,
    version: i64,
    next_fire_at: Option<DateTime<Utc>>,
    fire_count: i64,
    last_fire_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
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
pub(super) struct ScheduleValues<'a> {
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
    pub(super) fn of(spec: &'a ScheduleSpec) -> Result<Self> {
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
pub(super) use run_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct RunRow {
    id: Uuid,
    tenant_id: Uuid,
    job_id: Uuid,
    schedule_id: Option<Uuid>,
    schedule_version: Option<i64>,
    shard: i16,
    trigger: String,
    attempt: i32,
    retry_of: Option<Uuid>,
    fire_time: DateTime<Utc>,
    due_at: Option<DateTime<Utc>>,
    state: String,
    reason: Option<String>,
    exit_code: Option<i32>,
    worker_id: Option<String>,
    cancel_requested: bool,
    blocked_by: Option<Uuid>,
    env: Json<Value>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
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
pub(super) use event_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct EventRow {
    id: i64,
    run_id: Uuid,
    from_state: Option<String>,
    to_state: String,
    reason: Option<String>,
    at: DateTime<Utc>,
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

// --- shared -----------------------------------------------------------------------------------

/// Converts every row, failing on the first corrupt one.
pub(super) fn convert<R, T>(rows: Vec<R>) -> Result<Vec<T>>
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
pub(super) fn push_keyset(q: &mut QueryBuilder<Postgres>, page: &PageRequest) {
    if let Some(after) = page.after {
        q.push(" AND id > ").push_bind(after);
    }
    q.push(" ORDER BY id LIMIT ")
        .push_bind(i64::from(page_size(page)) + 1);
}

/// Cuts the rows of a `LIMIT page_limit` query into a page and the token of the next one.
pub(super) fn page_of<T>(
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
pub(super) fn shard_value(shard: ShardId) -> Result<i16> {
    i16::try_from(shard.get()).map_err(|_| {
        StoreError::Invalid(FieldError::new(
            "shard",
            format!("{} is out of range", shard.get()),
        ))
    })
}

/// A shard number read back from a table.
pub(super) fn stored_shard(raw: i16) -> Result<ShardId> {
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
pub(super) fn int(field: &str, value: u32) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        StoreError::Invalid(FieldError::new(
            field,
            format!("{value} is too large to store"),
        ))
    })
}
