//! The schedules table: create, read, list, versioned update (edit, pause, resume) and delete,
//! each change cancelling the runs it obsoletes and notifying the shard's scheduler in the same
//! transaction (I4); it must never touch another tenant's schedule or a deleted job's.

use kairos_domain::{JobId, PageRequest, ScheduleId, ShardId, TenantId, run::cancel_reason};
use sqlx::{PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

use super::PgStore;
use super::jobs;
use super::rows::{
    ChangeBase, ScheduleRow, ScheduleValues, convert, page_of, push_keyset, schedule_columns,
    shard_value, stored_shard,
};
use super::runs::{self, Pending};
use crate::{
    NewSchedule, Page, Result, SCHEDULE_CHANGES_CHANNEL, Schedule, ScheduleChange, StoreError,
};

/// Inserts the schedule of a live job of the tenant and notifies its shard's scheduler.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %new.job_id, schedule_id = %new.id))]
pub(super) async fn create(
    store: &PgStore,
    tenant: TenantId,
    new: &NewSchedule,
) -> Result<Schedule> {
    let v = ScheduleValues::of(&new.spec)?;
    let shard = ShardId::of(new.id.as_uuid());
    let mut tx = store.begin().await?;
    jobs::lock_live(tx.conn(), tenant, new.job_id).await?;
    if let Some(limit) = new.live_limit {
        check_live_limit(tx.conn(), tenant, limit, None).await?;
    }
    let row: ScheduleRow = sqlx::query_as(concat!(
        "INSERT INTO schedules (id, tenant_id, job_id, shard, kind, cron, interval_seconds,
             interval_anchor, at, timezone, start_at, end_at, overlap_policy,
             catchup_window_seconds, jitter_seconds, paused, pause_note, next_fire_at,
             catchup_max_runs, max_runs, paused_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, CASE WHEN $16 THEN now() END)
         RETURNING ",
        schedule_columns!()
    ))
    .bind(new.id.as_uuid())
    .bind(tenant.as_uuid())
    .bind(new.job_id.as_uuid())
    .bind(shard_value(shard)?)
    .bind(v.kind)
    .bind(v.cron)
    .bind(v.interval_seconds)
    .bind(v.interval_anchor)
    .bind(v.at)
    .bind(v.timezone)
    .bind(v.start_at)
    .bind(v.end_at)
    .bind(v.overlap_policy)
    .bind(v.catchup_window_seconds)
    .bind(v.jitter_seconds)
    .bind(new.paused)
    .bind(new.pause_note.as_deref())
    .bind(new.next_fire_at)
    .bind(v.catchup_max_runs)
    .bind(v.max_runs)
    .fetch_one(tx.conn())
    .await?;
    let schedule = Schedule::try_from(row)?;
    tx.notify(SCHEDULE_CHANGES_CHANNEL, shard).await?;
    tx.commit().await?;
    Ok(schedule)
}

/// Fails with [`StoreError::LimitReached`] when the tenant has `limit` live schedules (not
/// completed: a fire left, or the last one still ahead), not counting `except`. The tenant
/// row's lock (`FOR NO KEY UPDATE`, which leaves foreign-key checks of other inserts alone)
/// serializes the tenant's creates and revivals, so two concurrent ones cannot both see room
/// for one.
async fn check_live_limit(
    conn: &mut PgConnection,
    tenant: TenantId,
    limit: u32,
    except: Option<ScheduleId>,
) -> Result<()> {
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
        .bind(tenant.as_uuid())
        .execute(&mut *conn)
        .await?;
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM schedules
         WHERE tenant_id = $1 AND (next_fire_at IS NOT NULL OR last_fire_at > now())
           AND id IS DISTINCT FROM $2",
    )
    .bind(tenant.as_uuid())
    .bind(except.map(|id| id.as_uuid()))
    .fetch_one(conn)
    .await?;
    StoreError::check_live_schedules(live, limit)
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, schedule_id = %id))]
pub(super) async fn get(pool: &PgPool, tenant: TenantId, id: ScheduleId) -> Result<Schedule> {
    let row: Option<ScheduleRow> = sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    row.ok_or(StoreError::NotFound("schedule"))?.try_into()
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id))]
pub(super) async fn list(
    pool: &PgPool,
    tenant: TenantId,
    job: Option<JobId>,
    page: PageRequest,
) -> Result<Page<Schedule>> {
    let mut q = QueryBuilder::new(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE tenant_id = "
    ));
    q.push_bind(tenant.as_uuid());
    if let Some(job) = job {
        tracing::Span::current().record("job_id", tracing::field::display(job));
        if !jobs::exists(pool, tenant, job, false).await? {
            return Err(StoreError::NotFound("job"));
        }
        q.push(" AND job_id = ").push_bind(job.as_uuid());
    }
    push_keyset(&mut q, &page);
    let rows: Vec<ScheduleRow> = q.build_query_as().fetch_all(pool).await?;
    Ok(page_of(convert(rows)?, &page, |s: &Schedule| {
        s.id.as_uuid()
    }))
}

/// Writes the change as version `expected_version + 1`, cancels the older versions' runs that
/// have not started yet (giving the unfired ones back to the fire count), computes the next
/// fire from the change with the count that leaves, and notifies the shard's scheduler, in one
/// transaction.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, schedule_id = %id, expected_version))]
pub(super) async fn update(
    store: &PgStore,
    tenant: TenantId,
    id: ScheduleId,
    change: &ScheduleChange,
    expected_version: i64,
) -> Result<Schedule> {
    let v = ScheduleValues::of(&change.spec)?;
    let mut tx = store.begin().await?;
    let current: Option<ChangeBase> = sqlx::query_as(
        "SELECT version, fire_count, paused_at, next_fire_at FROM schedules
         WHERE tenant_id = $1 AND id = $2
         FOR UPDATE",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    let current = current.ok_or(StoreError::NotFound("schedule"))?;
    if current.version != expected_version {
        return Err(jobs::version_conflict(
            "schedule",
            expected_version,
            current.version,
        ));
    }
    let cancelled = runs::cancel_pending(
        &mut tx,
        tenant,
        Pending::OfSchedule {
            id,
            below_version: Some(expected_version + 1),
        },
        change.cancel_reason,
    )
    .await?;
    let (fire_count, next_fire_at) = current.after(change, id, cancelled.unfired);
    if let Some(limit) = change.live_limit
        && current.next_fire_at.is_none()
        && next_fire_at.is_some()
    {
        // A revival (a completed one-off given a new `at`): it must fit the quota again.
        check_live_limit(tx.conn(), tenant, limit, Some(id)).await?;
    }
    let row: ScheduleRow = sqlx::query_as(concat!(
        "UPDATE schedules SET kind = $4, cron = $5, interval_seconds = $6, interval_anchor = $7,
             at = $8, timezone = $9, start_at = $10, end_at = $11, overlap_policy = $12,
             catchup_window_seconds = $13, jitter_seconds = $14, paused = $15, pause_note = $16,
             next_fire_at = $17, catchup_max_runs = $18, max_runs = $19, fire_count = $20,
             paused_at = CASE WHEN $15 THEN COALESCE(paused_at, $21) END,
             -- The fires still ahead were cancelled above: the latest fire is one that stays.
             last_fire_at = CASE WHEN last_fire_at > $21 THEN (
                     SELECT max(r.fire_time) FROM runs r
                     WHERE r.schedule_id = $2 AND r.trigger = 'schedule'
                       AND r.state <> 'cancelled' AND r.fire_time <= schedules.last_fire_at)
                 ELSE last_fire_at END,
             version = version + 1, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND version = $3
         RETURNING ",
        schedule_columns!()
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .bind(expected_version)
    .bind(v.kind)
    .bind(v.cron)
    .bind(v.interval_seconds)
    .bind(v.interval_anchor)
    .bind(v.at)
    .bind(v.timezone)
    .bind(v.start_at)
    .bind(v.end_at)
    .bind(v.overlap_policy)
    .bind(v.catchup_window_seconds)
    .bind(v.jitter_seconds)
    .bind(change.paused)
    .bind(change.pause_note.as_deref())
    .bind(next_fire_at)
    .bind(v.catchup_max_runs)
    .bind(v.max_runs)
    .bind(i64::try_from(fire_count).unwrap_or(i64::MAX))
    .bind(change.at)
    .fetch_one(tx.conn())
    .await?;
    let schedule = Schedule::try_from(row)?;
    tx.notify(SCHEDULE_CHANGES_CHANNEL, schedule.shard).await?;
    tx.commit().await?;
    tracing::info!(
        version = schedule.version,
        cancelled = cancelled.runs,
        given_back = cancelled.unfired,
        "schedule updated"
    );
    Ok(schedule)
}

/// Deletes the schedule, cancels its not-yet-started runs and notifies the shard's scheduler,
/// in one transaction. Its runs keep their history.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, schedule_id = %id))]
pub(super) async fn delete(store: &PgStore, tenant: TenantId, id: ScheduleId) -> Result<()> {
    let mut tx = store.begin().await?;
    let shard: Option<i16> = sqlx::query_scalar(
        "DELETE FROM schedules WHERE tenant_id = $1 AND id = $2 RETURNING shard",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    let shard = stored_shard(shard.ok_or(StoreError::NotFound("schedule"))?)?;
    let cancelled = runs::cancel_pending(
        &mut tx,
        tenant,
        Pending::OfSchedule {
            id,
            below_version: None,
        },
        cancel_reason::SCHEDULE_DELETED,
    )
    .await?;
    tx.notify(SCHEDULE_CHANGES_CHANNEL, shard).await?;
    tx.commit().await?;
    tracing::info!(cancelled = cancelled.runs, "schedule deleted");
    Ok(())
}

/// A schedule as locked by a run insert: the stored version, job and shard.
#[derive(Debug, Clone, Copy)]
pub(super) struct Locked {
    pub version: i64,
    pub job_id: Uuid,
    pub shard: ShardId,
}

/// Locks the tenant's schedule against a concurrent change or delete until the transaction
/// ends; `NotFound` if it is not theirs.
pub(super) async fn lock(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ScheduleId,
) -> Result<Locked> {
    let row: Option<(i64, Uuid, i16)> = sqlx::query_as(
        "SELECT version, job_id, shard FROM schedules WHERE tenant_id = $1 AND id = $2 FOR SHARE",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(conn)
    .await?;
    let (version, job_id, shard) = row.ok_or(StoreError::NotFound("schedule"))?;
    Ok(Locked {
        version,
        job_id,
        shard: stored_shard(shard)?,
    })
}

/// Whether the schedule is the tenant's, or was (a deleted schedule's runs stay readable).
pub(super) async fn known(pool: &PgPool, tenant: TenantId, id: ScheduleId) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM schedules WHERE tenant_id = $1 AND id = $2)
             OR EXISTS (SELECT 1 FROM runs WHERE tenant_id = $1 AND schedule_id = $2)",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_one(pool)
    .await?)
}
