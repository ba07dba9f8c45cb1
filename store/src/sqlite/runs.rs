//! The runs table: execute-now and backfill inserts, reads, lists, cancellation, and the bulk
//! cancel of not-yet-started runs that schedule changes and deletes need; every write records
//! its events in the same transaction (I3) and no move here skips the domain's state machine.

use chrono::{DateTime, Utc};
use kairos_domain::{
    FieldError, JobId, PageRequest, RunId, RunState, ScheduleId, SkipReason, TenantId, Trigger,
    overlap::{self as overlap_rule, FireDecision},
    run::{cancel_reason, event_reason},
};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::SqliteStore;
use super::events::{self, Transition};
use super::jobs::{self, version_conflict};
use super::overlap;
use super::rows::{
    RunRow, convert, page_of, parse_state, push_keyset, run_columns, shard_value, stored_shard,
};
use super::schedules;
use super::time::ts;
use super::tx::WriteTx;
use crate::{
    Backfill, ChangeKind, NewRun, Page, Result, Run, RunFilter, RunLogs, Schedule, StoreError,
};

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// Inserts one run and its creation event; with an idempotency key already used for this job,
/// returns the first run and `false` instead.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %new.job_id, run_id = %new.id))]
pub(super) async fn create(
    store: &SqliteStore,
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

    let mut tx = store.begin_write().await?;
    let now = tx.now.clone();
    jobs::check_live(tx.conn(), tenant, new.job_id).await?;
    if let Some(key) = idempotency_key {
        let claimed: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO idempotency_keys (tenant_id, job_id, key, run_id, fire_time, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO NOTHING
             RETURNING run_id",
        )
        .bind(tenant.as_uuid())
        .bind(new.job_id.as_uuid())
        .bind(key)
        .bind(new.id.as_uuid())
        .bind(ts(new.fire_time))
        .bind(&now)
        .fetch_optional(tx.conn())
        .await?;
        if claimed.is_none() {
            // The key's first call committed before this one began (writes are serialized).
            let first = first_run_of_key(tx.conn(), tenant, new.job_id, key).await?;
            tracing::debug!(run_id = %first.id, "idempotency key already used");
            return Ok((first, false));
        }
    }
    if let Some((schedule, version)) = new.schedule {
        let current = schedules::current(tx.conn(), tenant, schedule).await?;
        if current.job_id != new.job_id.as_uuid() {
            return Err(StoreError::NotFound("schedule"));
        }
        if current.version != version {
            return Err(version_conflict("schedule", version, current.version));
        }
    }
    // The overlap rule, against the schedule's runs in progress (the write lock this
    // transaction holds keeps them as read).
    let (active, outcome) = match (new.schedule, new.overlap) {
        (Some((schedule, _)), Some(policy)) => {
            let active = overlap::active_runs(tx.conn(), schedule.as_uuid()).await?;
            let view = active
                .iter()
                .map(overlap::ActiveRow::active)
                .collect::<Result<Vec<_>>>()?;
            let outcome = overlap_rule::decide(policy, &view);
            (active, Some(outcome))
        }
        _ => (Vec::new(), None),
    };
    let (state, reason, blocked_by, event_reason) = match outcome.as_ref().map(|o| o.fire) {
        None | Some(FireDecision::Start) => (new.state, None, None, None),
        Some(FireDecision::Skip) => (
            RunState::Skipped,
            Some(SkipReason::Overlap.as_str()),
            None,
            Some(SkipReason::Overlap.as_str()),
        ),
        Some(FireDecision::Hold { blocked_by }) => (
            new.state,
            None,
            Some(blocked_by.as_uuid()),
            Some(event_reason::OVERLAP_HELD),
        ),
    };
    let row: RunRow = sqlx::query_as(concat!(
        "INSERT INTO runs (id, tenant_id, job_id, schedule_id, schedule_version, shard, trigger,
             attempt, retry_of, fire_time, state, env, created_at, updated_at, reason,
             blocked_by, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14, ?15,
                 CASE WHEN ?11 = 'skipped' THEN ?13 END)
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
    .bind(ts(new.fire_time))
    .bind(state.as_str())
    .bind(sqlx::types::Json(new.env.vars()))
    .bind(&now)
    .bind(reason)
    .bind(blocked_by)
    .fetch_one(tx.conn())
    .await?;
    let run = Run::try_from(row)?;
    let mut transitions = vec![Transition {
        run_id: run.id.as_uuid(),
        fire_time: run.fire_time,
        from: None,
        to: run.state,
        reason: event_reason.map(str::to_owned),
    }];
    if let Some(outcome) = &outcome {
        let pick = |ids: &[RunId]| -> Vec<&overlap::ActiveRow> {
            active
                .iter()
                .filter(|a| ids.iter().any(|id| id.as_uuid() == a.id))
                .collect()
        };
        let (cancelled, stopped) = overlap::replace(
            tx.conn(),
            &now,
            &pick(&outcome.cancel),
            &pick(&outcome.stop),
        )
        .await?;
        transitions.extend(cancelled.into_iter().map(|(_, t)| t));
        for row in stopped {
            // The shard's scheduler tells the run's worker to stop it.
            tx.hint_run(
                ChangeKind::CancelRequested,
                stored_shard(row.shard)?,
                RunId::from_uuid(row.id),
                row.fire_time,
            );
        }
    }
    events::record(&mut tx, tenant, &transitions).await?;
    if run.state == RunState::Queued && run.blocked_by.is_none() {
        tx.hint_run(ChangeKind::RunQueued, run.shard, run.id, run.fire_time);
    }
    tx.commit().await?;
    Ok((run, true))
}

/// The run an idempotency key was first used for.
async fn first_run_of_key(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    job: JobId,
    key: &str,
) -> Result<Run> {
    let row: Option<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs
         WHERE tenant_id = ?1
           AND id = (SELECT run_id FROM idempotency_keys
                     WHERE tenant_id = ?1 AND job_id = ?2 AND key = ?3)"
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

/// Inserts one `queued` backfill run (attempt 1) per fire time whose fire has no run that
/// succeeded or is in progress, with their creation events, in one transaction; a dry run
/// writes nothing. Answers the new runs by fire time and the fire times left alone.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, schedule_id = %schedule.id, fires = fire_times.len(), dry_run))]
pub(super) async fn create_backfill(
    store: &SqliteStore,
    tenant: TenantId,
    schedule: &Schedule,
    fire_times: &[DateTime<Utc>],
    dry_run: bool,
) -> Result<Backfill> {
    let mut times = fire_times.to_vec();
    times.sort_unstable();
    times.dedup();

    // A write transaction also for a dry run: it sees what a real one would, and rolls back.
    let mut tx = store.begin_write().await?;
    let now = tx.now.clone();
    let current = schedules::current(tx.conn(), tenant, schedule.id).await?;
    if current.version != schedule.version {
        return Err(version_conflict(
            "schedule",
            schedule.version,
            current.version,
        ));
    }
    let mut left_alone = Vec::new();
    let mut todo = Vec::with_capacity(times.len());
    for fire_time in times {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM runs
                 WHERE schedule_id = ?1 AND fire_time = ?2
                   AND state IN ('succeeded', 'scheduled', 'queued', 'running'))",
        )
        .bind(schedule.id.as_uuid())
        .bind(ts(fire_time))
        .fetch_one(tx.conn())
        .await?;
        if done {
            left_alone.push(fire_time);
        } else {
            todo.push(fire_time);
        }
    }
    if dry_run || todo.is_empty() {
        return Ok(Backfill {
            created: Vec::new(),
            left_alone,
        });
    }
    let mut runs = Vec::with_capacity(todo.len());
    for fire_time in todo {
        let row: RunRow = sqlx::query_as(concat!(
            "INSERT INTO runs (id, tenant_id, job_id, schedule_id, schedule_version, shard,
                 trigger, attempt, fire_time, state, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?10)
             RETURNING ",
            run_columns!()
        ))
        .bind(RunId::generate().as_uuid())
        .bind(tenant.as_uuid())
        .bind(current.job_id)
        .bind(schedule.id.as_uuid())
        .bind(current.version)
        .bind(shard_value(current.shard)?)
        .bind(Trigger::Backfill.as_str())
        .bind(ts(fire_time))
        .bind(RunState::Queued.as_str())
        .bind(&now)
        .fetch_one(tx.conn())
        .await?;
        runs.push(Run::try_from(row)?);
    }
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
    tx.hint(ChangeKind::RunQueued, current.shard);
    tx.commit().await?;
    tracing::info!(
        created = runs.len(),
        left_alone = left_alone.len(),
        "backfill runs created"
    );
    Ok(Backfill {
        created: runs,
        left_alone,
    })
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, run_id = %id))]
pub(super) async fn get(store: &SqliteStore, tenant: TenantId, id: RunId) -> Result<Run> {
    let row: Option<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE tenant_id = ?1 AND id = ?2"
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(store.reader())
    .await?;
    row.ok_or(StoreError::NotFound("run"))?.try_into()
}

/// The tenant's runs matching `filter`, by id. A job or schedule filter that is not (and never
/// was) the tenant's is `NotFound`, exactly like a missing one (I6).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
pub(super) async fn list(
    store: &SqliteStore,
    tenant: TenantId,
    filter: &RunFilter,
    page: PageRequest,
) -> Result<Page<Run>> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE tenant_id = "
    ));
    q.push_bind(tenant.as_uuid());
    if let Some(job) = filter.job_id {
        if !jobs::exists(store, tenant, job, true).await? {
            return Err(StoreError::NotFound("job"));
        }
        q.push(" AND job_id = ").push_bind(job.as_uuid());
    }
    if let Some(schedule) = filter.schedule_id {
        if !schedules::known(store, tenant, schedule).await? {
            return Err(StoreError::NotFound("schedule"));
        }
        q.push(" AND schedule_id = ").push_bind(schedule.as_uuid());
    }
    if let Some(state) = filter.state {
        q.push(" AND state = ").push_bind(state.as_str());
    }
    push_keyset(&mut q, &page);
    let rows: Vec<RunRow> = q.build_query_as().fetch_all(store.reader()).await?;
    Ok(page_of(convert(rows)?, &page, |r: &Run| r.id.as_uuid()))
}

/// `scheduled`/`queued` → `cancelled` with an event; `running` → `cancel_requested` (the
/// worker stops it and reports the transition); terminal → `FailedPrecondition`.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, run_id = %id))]
pub(super) async fn cancel(store: &SqliteStore, tenant: TenantId, id: RunId) -> Result<Run> {
    let mut tx = store.begin_write().await?;
    let now = tx.now.clone();
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM runs WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(tx.conn())
            .await?;
    let state = parse_state(id.as_uuid(), &state.ok_or(StoreError::NotFound("run"))?)?;
    let run = match state {
        RunState::Running => {
            let row: RunRow = sqlx::query_as(concat!(
                "UPDATE runs SET cancel_requested = 1, updated_at = ?3
                 WHERE tenant_id = ?1 AND id = ?2
                 RETURNING ",
                run_columns!()
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(&now)
            .fetch_one(tx.conn())
            .await?;
            let run = Run::try_from(row)?;
            // The shard's scheduler tells the run's worker to stop it (it reports `cancelled`).
            tx.hint_run(
                ChangeKind::CancelRequested,
                run.shard,
                run.id,
                run.fire_time,
            );
            run
        }
        from if from.can_move_to(RunState::Cancelled) => {
            let row: RunRow = sqlx::query_as(concat!(
                "UPDATE runs SET state = ?4, reason = ?5, blocked_by = NULL, finished_at = ?6,
                     updated_at = ?6
                 WHERE tenant_id = ?1 AND id = ?2 AND state = ?3
                 RETURNING ",
                run_columns!()
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(from.as_str())
            .bind(RunState::Cancelled.as_str())
            .bind(cancel_reason::REQUESTED)
            .bind(&now)
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
            // The end of a not-started run of a schedule may release the fire held behind it.
            if let Some(schedule) = run.schedule_id {
                for held in overlap::release(tx.conn(), &now, &[schedule.as_uuid()]).await? {
                    tx.hint_run(ChangeKind::RunQueued, held.shard, held.id, held.fire_time);
                }
            }
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
pub(super) async fn logs(store: &SqliteStore, tenant: TenantId, id: RunId) -> Result<RunLogs> {
    let row: Option<(Option<String>, bool, i64, String)> = sqlx::query_as(
        "SELECT log_tail, log_truncated, log_bytes, state FROM runs
         WHERE tenant_id = ?1 AND id = ?2",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(store.reader())
    .await?;
    let (content, truncated, total, state) = row.ok_or(StoreError::NotFound("run"))?;
    let content = content.unwrap_or_default();
    Ok(RunLogs {
        run_id: id,
        // Never less than what is kept.
        total_bytes: u64::try_from(total).unwrap_or(0).max(content.len() as u64),
        content,
        truncated,
        state: parse_state(id.as_uuid(), &state)?,
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

/// Cancels the matching `scheduled`/`queued` runs with `reason` inside `tx`, one event each;
/// returns how many.
/// What [`cancel_pending`] cancelled.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cancelled {
    pub runs: usize,
    /// Of them, planned fires that had not fired yet (`scheduled`, trigger `schedule`): a
    /// schedule's fire count gives them back.
    pub unfired: u64,
}

pub(super) async fn cancel_pending(
    tx: &mut WriteTx,
    tenant: TenantId,
    pending: Pending,
    reason: &str,
) -> Result<Cancelled> {
    let now = tx.now.clone();
    let scope = match pending {
        Pending::OfJob(_) => "job_id = ?2",
        Pending::OfSchedule {
            below_version: None,
            ..
        } => "schedule_id = ?2",
        Pending::OfSchedule {
            below_version: Some(_),
            ..
        } => "schedule_id = ?2 AND schedule_version < ?3",
    };
    let (scope_id, below) = match pending {
        Pending::OfJob(job) => (job.as_uuid(), None),
        Pending::OfSchedule { id, below_version } => (id.as_uuid(), below_version),
    };
    // The transaction holds the write lock: the runs read here are exactly the runs moved.
    let select = format!(
        "SELECT id, fire_time, state, trigger FROM runs
         WHERE tenant_id = ?1 AND state IN ('scheduled', 'queued') AND {scope}
         ORDER BY fire_time, id"
    );
    let mut query =
        sqlx::query_as::<_, (Uuid, DateTime<Utc>, String, String)>(sqlx::AssertSqlSafe(select))
            .bind(tenant.as_uuid())
            .bind(scope_id);
    if let Some(version) = below {
        query = query.bind(version);
    }
    let targets = query.fetch_all(tx.conn()).await?;
    let mut transitions = Vec::with_capacity(targets.len());
    let mut unfired = 0;
    for (run_id, fire_time, from, trigger) in targets {
        let from = parse_state(run_id, &from)?;
        if from == RunState::Scheduled && trigger == "schedule" {
            unfired += 1;
        }
        sqlx::query(
            "UPDATE runs SET state = 'cancelled', reason = ?2, blocked_by = NULL, finished_at = ?3,
                 updated_at = ?3
             WHERE id = ?1",
        )
        .bind(run_id)
        .bind(reason)
        .bind(&now)
        .execute(tx.conn())
        .await?;
        transitions.push(Transition {
            run_id,
            fire_time,
            from: Some(from),
            to: RunState::Cancelled,
            reason: Some(reason.to_owned()),
        });
    }
    events::record(tx, tenant, &transitions).await?;
    Ok(Cancelled {
        runs: transitions.len(),
        unfired,
    })
}
