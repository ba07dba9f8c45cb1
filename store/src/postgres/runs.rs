//! The runs table: execute-now and backfill inserts, reads, lists, cancellation, and the bulk
//! cancel of not-yet-started runs that schedule changes and deletes need; every write records
//! its events in the same transaction (I3) and no move here skips the domain's state machine.

use chrono::{DateTime, Utc};
use kairos_domain::{
    FieldError, JobId, PageRequest, RunId, RunState, ScheduleId, TenantId, Trigger,
    run::cancel_reason,
};
use sqlx::{PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

use super::events::{self, Transition};
use super::rows::{RunRow, convert, page_of, push_keyset, run_columns, shard_value};
use super::tx::Tx;
use super::{PgStore, jobs, schedules};
use crate::{
    NewRun, Page, RUNS_CANCEL_CHANNEL, RUNS_QUEUED_CHANNEL, Result, Run, RunFilter, RunLogs,
    Schedule, StoreError,
};

/// Longest idempotency key accepted (it is part of a btree primary key).
const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// Inserts one run and its creation event; with an idempotency key already used for this job,
/// returns the first run and `false` instead.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %new.job_id, run_id = %new.id))]
pub(super) async fn create(
    store: &PgStore,
    tenant: TenantId,
    new: &NewRun,
    idempotency_key: Option<&str>,
) -> Result<(Run, bool)> {
    if !matches!(new.state, RunState::Scheduled | RunState::Queued) {
        return Err(FieldError::new(
            "state",
            format!("a new run is scheduled or queued, not {}", new.state),
        )
        .into());
    }
    if new.attempt == 0 {
        return Err(FieldError::new("attempt", "must be at least 1").into());
    }
    if let Some(key) = idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN)
    {
        return Err(FieldError::new(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
        )
        .into());
    }
    let attempt = i32::try_from(new.attempt)
        .map_err(|_| FieldError::new("attempt", format!("{} is too large", new.attempt)))?;
    let shard = shard_value(new.shard)?;

    let mut tx = store.begin().await?;
    jobs::lock_live(tx.conn(), tenant, new.job_id).await?;
    if let Some(key) = idempotency_key {
        let claimed: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO idempotency_keys (tenant_id, job_id, key, run_id, fire_time)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING
             RETURNING run_id",
        )
        .bind(tenant.as_uuid())
        .bind(new.job_id.as_uuid())
        .bind(key)
        .bind(new.id.as_uuid())
        .bind(new.fire_time)
        .fetch_optional(tx.conn())
        .await?;
        if claimed.is_none() {
            // The key's first call committed (ON CONFLICT waited for it): answer with its run.
            let first = first_run_of_key(tx.conn(), tenant, new.job_id, key).await?;
            tracing::debug!(run_id = %first.id, "idempotency key already used");
            return Ok((first, false));
        }
    }
    if let Some((schedule, version)) = new.schedule {
        let locked = schedules::lock(tx.conn(), tenant, schedule).await?;
        if locked.job_id != new.job_id.as_uuid() {
            return Err(StoreError::NotFound("schedule"));
        }
        if locked.version != version {
            return Err(jobs::version_conflict("schedule", version, locked.version));
        }
    }
    let row: RunRow = sqlx::query_as(concat!(
        "INSERT INTO runs (id, tenant_id, job_id, schedule_id, schedule_version, shard, trigger,
             attempt, retry_of, fire_time, state, env)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         RETURNING ",
        run_columns!()
    ))
    .bind(new.id.as_uuid())
    .bind(tenant.as_uuid())
    .bind(new.job_id.as_uuid())
    .bind(new.schedule.map(|(id, _)| id.as_uuid()))
    .bind(new.schedule.map(|(_, version)| version))
    .bind(shard)
    .bind(new.trigger.as_str())
    .bind(attempt)
    .bind(new.retry_of.map(|r| r.as_uuid()))
    .bind(new.fire_time)
    .bind(new.state.as_str())
    .bind(sqlx::types::Json(new.env.vars()))
    .fetch_one(tx.conn())
    .await?;
    let run = Run::try_from(row)?;
    events::record(
        &mut tx,
        tenant,
        &[Transition {
            run_id: run.id.as_uuid(),
            fire_time: run.fire_time,
            from: None,
            to: run.state,
            reason: None,
        }],
    )
    .await?;
    if run.state == RunState::Queued {
        tx.notify_run(RUNS_QUEUED_CHANNEL, run.shard, run.id, run.fire_time)
            .await?;
    }
    tx.commit().await?;
    Ok((run, true))
}

/// The run an idempotency key was first used for.
async fn first_run_of_key(
    conn: &mut PgConnection,
    tenant: TenantId,
    job: JobId,
    key: &str,
) -> Result<Run> {
    let row: Option<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs
         WHERE tenant_id = $1
           AND (id, fire_time) = (SELECT run_id, fire_time FROM idempotency_keys
                                  WHERE tenant_id = $1 AND job_id = $2 AND key = $3)"
    ))
    .bind(tenant.as_uuid())
    .bind(job.as_uuid())
    .bind(key)
    .fetch_optional(conn)
    .await?;
    row.ok_or_else(|| {
        StoreError::Conflict(
            "this idempotency key was used for a run that is no longer kept; use a new key".into(),
        )
    })?
    .try_into()
}

/// Inserts one `queued` backfill run (attempt 1) per fire time that has no attempt-1 run yet
/// (I1), with their creation events, in one transaction. Returns the new runs by fire time.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, schedule_id = %schedule.id, fires = fire_times.len()))]
pub(super) async fn create_backfill(
    store: &PgStore,
    tenant: TenantId,
    schedule: &Schedule,
    fire_times: &[DateTime<Utc>],
) -> Result<Vec<Run>> {
    if fire_times.is_empty() {
        return Ok(Vec::new());
    }
    let mut times = fire_times.to_vec();
    times.sort_unstable();
    times.dedup();
    let ids: Vec<Uuid> = times.iter().map(|_| RunId::generate().as_uuid()).collect();

    let mut tx = store.begin().await?;
    let locked = schedules::lock(tx.conn(), tenant, schedule.id).await?;
    if locked.version != schedule.version {
        return Err(jobs::version_conflict(
            "schedule",
            schedule.version,
            locked.version,
        ));
    }
    let rows: Vec<RunRow> = sqlx::query_as(concat!(
        "INSERT INTO runs (id, tenant_id, job_id, schedule_id, schedule_version, shard, trigger,
             attempt, fire_time, state)
         SELECT f.id, $3, $4, $5, $6, $7, $8, 1, f.fire_time, $9
         FROM UNNEST($1::uuid[], $2::timestamptz[]) AS f(id, fire_time)
         ON CONFLICT (schedule_id, fire_time, attempt) DO NOTHING
         RETURNING ",
        run_columns!()
    ))
    .bind(&ids)
    .bind(&times)
    .bind(tenant.as_uuid())
    .bind(locked.job_id)
    .bind(schedule.id.as_uuid())
    .bind(locked.version)
    .bind(shard_value(locked.shard)?)
    .bind(Trigger::Backfill.as_str())
    .bind(RunState::Queued.as_str())
    .fetch_all(tx.conn())
    .await?;
    let mut runs: Vec<Run> = convert(rows)?;
    runs.sort_by_key(|r| r.fire_time);
    let created: Vec<Transition> = runs
        .iter()
        .map(|r| Transition {
            run_id: r.id.as_uuid(),
            fire_time: r.fire_time,
            from: None,
            to: r.state,
            reason: None,
        })
        .collect();
    events::record(&mut tx, tenant, &created).await?;
    if !runs.is_empty() {
        tx.notify(RUNS_QUEUED_CHANNEL, locked.shard).await?;
    }
    tx.commit().await?;
    tracing::info!(created = runs.len(), "backfill runs created");
    Ok(runs)
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, run_id = %id))]
pub(super) async fn get(pool: &PgPool, tenant: TenantId, id: RunId) -> Result<Run> {
    let row: Option<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    row.ok_or(StoreError::NotFound("run"))?.try_into()
}

/// The tenant's runs matching `filter`, by id. A job or schedule filter that is not (and never
/// was) the tenant's is `NotFound`, exactly like a missing one (I6).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
pub(super) async fn list(
    pool: &PgPool,
    tenant: TenantId,
    filter: &RunFilter,
    page: PageRequest,
) -> Result<Page<Run>> {
    let mut q = QueryBuilder::new(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE tenant_id = "
    ));
    q.push_bind(tenant.as_uuid());
    if let Some(job) = filter.job_id {
        if !jobs::exists(pool, tenant, job, true).await? {
            return Err(StoreError::NotFound("job"));
        }
        q.push(" AND job_id = ").push_bind(job.as_uuid());
    }
    if let Some(schedule) = filter.schedule_id {
        if !schedules::known(pool, tenant, schedule).await? {
            return Err(StoreError::NotFound("schedule"));
        }
        q.push(" AND schedule_id = ").push_bind(schedule.as_uuid());
    }
    if let Some(state) = filter.state {
        q.push(" AND state = ").push_bind(state.as_str());
    }
    push_keyset(&mut q, &page);
    let rows: Vec<RunRow> = q.build_query_as().fetch_all(pool).await?;
    Ok(page_of(convert(rows)?, &page, |r: &Run| r.id.as_uuid()))
}

/// `scheduled`/`queued` → `cancelled` with an event; `running` → `cancel_requested` (the
/// worker stops it and reports the transition); terminal → `FailedPrecondition`.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, run_id = %id))]
pub(super) async fn cancel(store: &PgStore, tenant: TenantId, id: RunId) -> Result<Run> {
    let mut tx = store.begin().await?;
    let current: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT state, fire_time FROM runs WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    let (state, fire_time) = current.ok_or(StoreError::NotFound("run"))?;
    let state = RunState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("run {id}: unknown state '{state}'")))?;
    let run = match state {
        RunState::Running => {
            let row: RunRow = sqlx::query_as(concat!(
                "UPDATE runs SET cancel_requested = true, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND fire_time = $3
                 RETURNING ",
                run_columns!()
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(fire_time)
            .fetch_one(tx.conn())
            .await?;
            let run = Run::try_from(row)?;
            // The shard's scheduler tells the run's worker to stop it (it reports `cancelled`).
            tx.notify_run(RUNS_CANCEL_CHANNEL, run.shard, run.id, run.fire_time)
                .await?;
            run
        }
        from if from.can_move_to(RunState::Cancelled) => {
            let row: RunRow = sqlx::query_as(concat!(
                "UPDATE runs SET state = $5, reason = $6, finished_at = now(), updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND fire_time = $3 AND state = $4
                 RETURNING ",
                run_columns!()
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(fire_time)
            .bind(from.as_str())
            .bind(RunState::Cancelled.as_str())
            .bind(cancel_reason::REQUESTED)
            .fetch_one(tx.conn())
            .await?;
            let run = Run::try_from(row)?;
            events::record(
                &mut tx,
                tenant,
                &[Transition {
                    run_id: run.id.as_uuid(),
                    fire_time: run.fire_time,
                    from: Some(from),
                    to: RunState::Cancelled,
                    reason: Some(cancel_reason::REQUESTED.to_owned()),
                }],
            )
            .await?;
            run
        }
        terminal => {
            return Err(StoreError::FailedPrecondition(format!(
                "run is already {terminal}"
            )));
        }
    };
    tx.commit().await?;
    Ok(run)
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, run_id = %id))]
pub(super) async fn logs(pool: &PgPool, tenant: TenantId, id: RunId) -> Result<RunLogs> {
    let row: Option<(Option<String>, bool, i64, String)> = sqlx::query_as(
        "SELECT log_tail, log_truncated, log_bytes, state FROM runs
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    let (content, truncated, total, state) = row.ok_or(StoreError::NotFound("run"))?;
    let content = content.unwrap_or_default();
    let state = RunState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("run {id}: unknown state '{state}'")))?;
    Ok(RunLogs {
        run_id: id,
        // Never less than what is kept (rows written before the count existed).
        total_bytes: u64::try_from(total).unwrap_or(0).max(content.len() as u64),
        content,
        truncated,
        state,
    })
}

/// Whose not-yet-started runs a change cancels.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
    /// Every `scheduled`/`queued` run of the job (manual and scheduled alike).
    OfJob(JobId),
    /// The schedule's `scheduled`/`queued` runs; with `below_version`, only those computed from
    /// an older version.
    OfSchedule {
        id: ScheduleId,
        below_version: Option<i64>,
    },
}

/// The bulk cancel of not-yet-started runs, for one scope condition (`$2` is the reason, the
/// scope's parameters start at `$3`). Rows are locked first, so a run a worker moved on
/// concurrently is re-checked and left alone.
macro_rules! cancel_pending_sql {
    ($scope:literal) => {
        concat!(
            "WITH target AS (
                 SELECT id, fire_time, state FROM runs
                 WHERE tenant_id = $1 AND state IN ('scheduled', 'queued') AND ",
            $scope,
            "    FOR UPDATE
             )
             UPDATE runs r
             SET state = 'cancelled', reason = $2, finished_at = now(), updated_at = now()
             FROM target t
             WHERE r.id = t.id AND r.fire_time = t.fire_time
             RETURNING r.id, r.fire_time, t.state"
        )
    };
}

/// Cancels the matching `scheduled`/`queued` runs with `reason` inside `tx`, one event each;
/// returns how many.
pub(super) async fn cancel_pending(
    tx: &mut Tx,
    tenant: TenantId,
    pending: Pending,
    reason: &str,
) -> Result<usize> {
    let sql = match pending {
        Pending::OfJob(_) => cancel_pending_sql!("job_id = $3"),
        Pending::OfSchedule {
            below_version: None,
            ..
        } => cancel_pending_sql!("schedule_id = $3"),
        Pending::OfSchedule {
            below_version: Some(_),
            ..
        } => cancel_pending_sql!("schedule_id = $3 AND schedule_version < $4"),
    };
    let query = sqlx::query_as(sql).bind(tenant.as_uuid()).bind(reason);
    let query = match pending {
        Pending::OfJob(job) => query.bind(job.as_uuid()),
        Pending::OfSchedule { id, below_version } => {
            let query = query.bind(id.as_uuid());
            match below_version {
                Some(version) => query.bind(version),
                None => query,
            }
        }
    };
    let cancelled: Vec<(Uuid, DateTime<Utc>, String)> = query.fetch_all(tx.conn()).await?;
    let transitions = cancelled
        .into_iter()
        .map(|(run_id, fire_time, from)| {
            let from = RunState::parse(&from).ok_or_else(|| {
                StoreError::Corrupt(format!("run {run_id}: unknown state '{from}'"))
            })?;
            Ok(Transition {
                run_id,
                fire_time,
                from: Some(from),
                to: RunState::Cancelled,
                reason: Some(reason.to_owned()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    events::record(tx, tenant, &transitions).await?;
    Ok(transitions.len())
}
