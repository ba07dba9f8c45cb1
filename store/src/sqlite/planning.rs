//! The scheduler's planning writes: reading a shard's due schedules and materializing their
//! fires as runs while advancing `next_fire_at`, in fenced, batched transactions; it must never
//! create a second run for a fire (I1) or a run from a schedule version that is gone (I4).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use kairos_domain::{RunId, ScheduleId, ShardId, TenantId, Trigger};
use uuid::Uuid;

use super::SqliteStore;
use super::events::{self, Transition};
use super::fencing::{self, shards_json};
use super::rows::{ScheduleRow, convert, parse_state, schedule_columns, shard_value, stored_shard};
use super::time::{ts, ts_opt};
use super::tx::WriteTx;
use crate::{
    DueRetry, DueSchedule, Materialize, MaterializedAcross, MaterializedRun, Result, Schedule,
    ShardLease, StoreError,
};

/// Unpaused schedules of the lease's shard due by `until`, earliest first.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), limit))]
pub(super) async fn due_schedules(
    store: &SqliteStore,
    lease: &ShardLease,
    until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<DueSchedule>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut tx = store.begin_read().await?;
    fencing::check(&mut tx, lease).await?;
    let rows: Vec<ScheduleRow> = sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules
         WHERE shard = ?1 AND NOT paused AND next_fire_at IS NOT NULL AND next_fire_at <= ?2
         ORDER BY next_fire_at, id
         LIMIT ?3"
    ))
    .bind(shard_value(lease.shard())?)
    .bind(ts(until))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    due(convert(rows)?).map(|due| due.into_iter().map(|(_, d)| d).collect())
}

/// Due schedules of many owned shards in one read (the node-level planning scan); the writes
/// that follow are fenced.
#[tracing::instrument(skip_all, fields(shards = shards.len()))]
pub(super) async fn due_schedules_across(
    store: &SqliteStore,
    shards: &[ShardId],
    until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<(ShardId, DueSchedule)>> {
    if limit == 0 || shards.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<ScheduleRow> = sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules
         WHERE shard IN (SELECT value FROM json_each(?1))
           AND NOT paused AND next_fire_at IS NOT NULL AND next_fire_at <= ?2
         ORDER BY next_fire_at, id
         LIMIT ?3"
    ))
    .bind(shards_json(shards.iter().copied()))
    .bind(ts(until))
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    due(convert(rows)?)
}

fn due(schedules: Vec<Schedule>) -> Result<Vec<(ShardId, DueSchedule)>> {
    schedules
        .into_iter()
        .map(|s| {
            let next_fire_at = s.next_fire_at.ok_or_else(|| {
                StoreError::Corrupt(format!("schedule {}: due without a next fire", s.id))
            })?;
            Ok((
                s.shard,
                DueSchedule {
                    id: s.id,
                    tenant_id: s.tenant_id,
                    job_id: s.job_id,
                    version: s.version,
                    spec: s.spec,
                    next_fire_at,
                    fire_count: s.fire_count,
                },
            ))
        })
        .collect()
}

/// Queued runs of many owned shards, oldest first, in one read.
#[tracing::instrument(skip_all, fields(shards = shards.len()))]
pub(super) async fn queued_runs_across(
    store: &SqliteStore,
    shards: &[ShardId],
    limit: u32,
) -> Result<Vec<(ShardId, RunId, DateTime<Utc>)>> {
    runs_across(
        store,
        shards,
        limit,
        "SELECT shard, id, fire_time FROM runs
         WHERE shard IN (SELECT value FROM json_each(?1))
           AND state = 'queued' AND NOT cancel_requested AND blocked_by IS NULL
         ORDER BY fire_time, id
         LIMIT ?2",
    )
    .await
}

/// Running runs of many owned shards whose cancel was asked (a read).
#[tracing::instrument(skip_all, fields(shards = shards.len()))]
pub(super) async fn cancel_requested_across(
    store: &SqliteStore,
    shards: &[ShardId],
    limit: u32,
) -> Result<Vec<(ShardId, RunId, DateTime<Utc>)>> {
    runs_across(
        store,
        shards,
        limit,
        "SELECT shard, id, fire_time FROM runs
         WHERE shard IN (SELECT value FROM json_each(?1))
           AND state = 'running' AND cancel_requested
         ORDER BY fire_time, id
         LIMIT ?2",
    )
    .await
}

/// Runs of the shards picked by `sql` (`?1` shards as JSON, `?2` limit; selects shard, id,
/// fire time).
async fn runs_across(
    store: &SqliteStore,
    shards: &[ShardId],
    limit: u32,
    sql: &'static str,
) -> Result<Vec<(ShardId, RunId, DateTime<Utc>)>> {
    if limit == 0 || shards.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(i16, Uuid, DateTime<Utc>)> = sqlx::query_as(sql)
        .bind(shards_json(shards.iter().copied()))
        .bind(i64::from(limit))
        .fetch_all(store.reader())
        .await?;
    rows.into_iter()
        .map(|(shard, id, fire_time)| Ok((stored_shard(shard)?, RunId::from_uuid(id), fire_time)))
        .collect()
}

/// A schedule as `materialize` reads it.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct Current {
    id: Uuid,
    tenant_id: Uuid,
    job_id: Uuid,
    shard: i16,
    version: i64,
    paused: bool,
}

/// Records the fires of one shard (the single-shard form of [`materialize_across`]).
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), fires = fires.len()))]
pub(super) async fn materialize(
    store: &SqliteStore,
    lease: &ShardLease,
    fires: &[Materialize],
) -> Result<Vec<MaterializedRun>> {
    let done = materialize_across(store, &[(lease.clone(), fires.to_vec())]).await?;
    if done.fenced.contains(&lease.shard()) {
        return Err(StoreError::Fenced {
            shard: lease.shard(),
            token: lease.token(),
        });
    }
    Ok(done.runs.into_iter().map(|(_, run)| run).collect())
}

/// Records the fires of many shards whose schedule is still at their version, in one fenced
/// transaction: the runs (attempt 1, trigger `schedule`) with their creation events, and each
/// schedule's `next_fire_at` moved forward. Answers the run of every fire kept, existing or
/// new, and the shards whose lease was superseded (nothing of theirs is written).
#[tracing::instrument(skip_all, fields(shards = batches.len()))]
pub(super) async fn materialize_across(
    store: &SqliteStore,
    batches: &[(ShardLease, Vec<Materialize>)],
) -> Result<MaterializedAcross> {
    let mut tx = store.begin_write().await?;
    let leases = fencing::sort(tx.conn(), batches.iter().map(|(lease, _)| lease)).await?;
    let fires: Vec<(i16, &Materialize)> = batches
        .iter()
        .filter(|(lease, _)| leases.holds(lease))
        .map(|(lease, fires)| shard_value(lease.shard()).map(|shard| (shard, fires)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flat_map(|(shard, fires)| fires.iter().map(move |f| (shard, f)))
        .collect();
    if fires.is_empty() {
        tx.commit().await?;
        return Ok(MaterializedAcross {
            runs: Vec::new(),
            fenced: leases.fenced,
        });
    }

    // The transaction holds the write lock, so an edit, pause or delete either committed before
    // (its version shows and the fires are dropped) or runs after this commits (and then
    // cancels the runs written here, I4).
    let mut current: HashMap<Uuid, Current> = HashMap::new();
    for (_, f) in &fires {
        let id = f.schedule_id.as_uuid();
        if current.contains_key(&id) {
            continue;
        }
        let row: Option<Current> = sqlx::query_as(
            "SELECT id, tenant_id, job_id, shard, version, paused FROM schedules WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        if let Some(row) = row {
            current.insert(id, row);
        }
    }
    let mut seen = HashSet::new();
    let mut kept: Vec<(&Materialize, Current)> = fires
        .iter()
        .filter_map(|(shard, f)| {
            let s = current.get(&f.schedule_id.as_uuid())?;
            (s.shard == *shard && s.version == f.schedule_version && !s.paused).then_some((*f, *s))
        })
        .filter(|(f, _)| seen.insert((f.schedule_id, f.fire_time)))
        .collect();
    let dropped = fires.len() - kept.len();
    if dropped > 0 {
        tracing::debug!(
            dropped,
            "fires dropped: schedule changed, paused, deleted, not of this shard, or repeated"
        );
    }
    kept.sort_by_key(|(f, _)| (f.fire_time, f.schedule_id.as_uuid()));

    let now = tx.now.clone();
    let mut runs = Vec::with_capacity(kept.len());
    let mut created = Vec::new();
    for (f, s) in &kept {
        // I1: the unique (schedule_id, fire_time, schedule_version) key of scheduled fires makes
        // a repeated call (after a timeout, a crash, or by a node that lost the shard in
        // between) create nothing.
        let inserted: Option<(Uuid, DateTime<Utc>, String)> = sqlx::query_as(
            "INSERT INTO runs (id, tenant_id, job_id, schedule_id, schedule_version, shard,
                 trigger, attempt, fire_time, state, reason, created_at, updated_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11, ?11,
                     CASE WHEN ?9 = 'skipped' THEN ?11 END)
             ON CONFLICT (schedule_id, fire_time, schedule_version) WHERE trigger = 'schedule'
             DO NOTHING
             RETURNING id, fire_time, state",
        )
        .bind(RunId::generate().as_uuid())
        .bind(s.tenant_id)
        .bind(s.job_id)
        .bind(s.id)
        .bind(s.version)
        .bind(s.shard)
        .bind(Trigger::Schedule.as_str())
        .bind(ts(f.fire_time))
        .bind(f.state.run_state().as_str())
        .bind(f.state.reason())
        .bind(&now)
        .fetch_optional(tx.conn())
        .await?;
        let (id, fire_time, state, is_new) = match inserted {
            Some((id, fire_time, state)) => (id, fire_time, state, true),
            None => {
                // The fire had its run already: answer it, so a retried call loses nothing.
                let (id, fire_time, state): (Uuid, DateTime<Utc>, String) = sqlx::query_as(
                    "SELECT id, fire_time, state FROM runs
                     WHERE schedule_id = ?1 AND fire_time = ?2 AND schedule_version = ?3
                       AND trigger = 'schedule'",
                )
                .bind(s.id)
                .bind(ts(f.fire_time))
                .bind(s.version)
                .fetch_one(tx.conn())
                .await?;
                (id, fire_time, state, false)
            }
        };
        let state = parse_state(id, &state)?;
        if is_new {
            created.push((
                TenantId::from_uuid(s.tenant_id),
                Transition {
                    run_id: id,
                    fire_time,
                    from: None,
                    to: state,
                    reason: f.state.reason().map(str::to_owned),
                },
            ));
        }
        runs.push((
            stored_shard(s.shard)?,
            MaterializedRun {
                id: RunId::from_uuid(id),
                schedule_id: ScheduleId::from_uuid(s.id),
                fire_time,
                state,
                created: is_new,
            },
        ));
    }
    created.sort_by_key(|(_, t)| (t.fire_time, t.run_id));
    events::record_across_tenants(&mut tx, &created).await?;
    runs.sort_by_key(|(_, r)| (r.fire_time, r.schedule_id.as_uuid()));

    let mut created_per_schedule: HashMap<Uuid, i64> = HashMap::new();
    for (_, r) in runs.iter().filter(|(_, r)| r.created) {
        *created_per_schedule
            .entry(r.schedule_id.as_uuid())
            .or_default() += 1;
    }
    advance_next_fires(&mut tx, &kept, &created_per_schedule).await?;
    tx.commit().await?;
    tracing::debug!(
        created = created.len(),
        existing = runs.len() - created.len(),
        "fires materialized"
    );
    Ok(MaterializedAcross {
        runs,
        fenced: leases.fenced,
    })
}

/// Moves each schedule's `next_fire_at` to the value carried by its latest kept fire, only
/// forward, and only while the schedule is at the fires' version; adds the fires this call
/// created to its fire count and moves `last_fire_at` to the latest of them. Once the count
/// reaches `max_runs`, `next_fire_at` is `None` whatever the planner computed.
async fn advance_next_fires(
    tx: &mut WriteTx,
    kept: &[(&Materialize, Current)],
    created: &HashMap<Uuid, i64>,
) -> Result<()> {
    /// A schedule's version, next fire after its latest kept fire, and that fire.
    type Latest = (i64, Option<DateTime<Utc>>, DateTime<Utc>);
    // `kept` is in fire order: the last fire of a schedule wins.
    let mut latest: HashMap<Uuid, Latest> = HashMap::new();
    for (f, s) in kept {
        latest.insert(s.id, (s.version, f.next_fire_at, f.fire_time));
    }
    let mut entries: Vec<_> = latest.into_iter().collect();
    entries.sort_unstable_by_key(|(id, _)| *id);
    for (id, (version, next, last)) in entries {
        let n = created.get(&id).copied().unwrap_or(0);
        sqlx::query(
            "UPDATE schedules
             SET fire_count = fire_count + ?4,
                 last_fire_at = CASE WHEN ?4 > 0 AND (last_fire_at IS NULL OR ?5 > last_fire_at)
                                     THEN ?5 ELSE last_fire_at END,
                 next_fire_at = CASE
                     WHEN max_runs IS NOT NULL AND fire_count + ?4 >= max_runs THEN NULL
                     WHEN next_fire_at IS NOT NULL AND (?3 IS NULL OR ?3 > next_fire_at) THEN ?3
                     ELSE next_fire_at END
             WHERE id = ?1 AND version = ?2",
        )
        .bind(id)
        .bind(version)
        .bind(ts_opt(next))
        .bind(n)
        .bind(ts(last))
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Retries of many owned shards waiting for their backoff, due by `until` (a read).
#[tracing::instrument(skip_all, fields(shards = shards.len()))]
pub(super) async fn due_retries_across(
    store: &SqliteStore,
    shards: &[ShardId],
    until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<DueRetry>> {
    if limit == 0 || shards.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(i16, Uuid, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT shard, id, fire_time, due_at FROM runs
         WHERE shard IN (SELECT value FROM json_each(?1))
           AND state = 'scheduled' AND trigger = 'retry' AND due_at <= ?2
         ORDER BY due_at, id
         LIMIT ?3",
    )
    .bind(shards_json(shards.iter().copied()))
    .bind(ts(until))
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    rows.into_iter()
        .map(|(shard, id, fire_time, due_at)| {
            Ok(DueRetry {
                shard: stored_shard(shard)?,
                id: RunId::from_uuid(id),
                fire_time,
                due_at,
            })
        })
        .collect()
}

/// The schedules among `ids` of the lease's shard (a fenced read).
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), schedules = ids.len()))]
pub(super) async fn schedules_of_shard(
    store: &SqliteStore,
    lease: &ShardLease,
    ids: &[ScheduleId],
) -> Result<Vec<Schedule>> {
    let mut tx = store.begin_read().await?;
    fencing::check(&mut tx, lease).await?;
    let mut schedules = Vec::with_capacity(ids.len());
    for id in ids {
        let row: Option<ScheduleRow> = sqlx::query_as(concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM schedules WHERE id = ?1 AND shard = ?2"
        ))
        .bind(id.as_uuid())
        .bind(shard_value(lease.shard())?)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            schedules.push(Schedule::try_from(row)?);
        }
    }
    tx.commit().await?;
    schedules.sort_by_key(|s| s.id.as_uuid());
    Ok(schedules)
}
