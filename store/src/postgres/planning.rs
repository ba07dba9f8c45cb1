//! The scheduler's planning writes: reading a shard's due schedules and materializing their
//! fires as runs while advancing `next_fire_at`, in fenced, batched transactions; it must never
//! create a second run for a fire (I1) or a run from a schedule version that is gone (I4).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use kairos_domain::{RunId, ScheduleId, ShardId, TenantId, Trigger};
use uuid::Uuid;

use super::events::{self, Transition};
use super::fencing;
use super::rows::{ScheduleRow, convert, schedule_columns, shard_value};
use super::{PgStore, rows::parse_state};
use crate::{
    DueRetry, DueSchedule, Materialize, MaterializedAcross, MaterializedRun, Result, Schedule,
    ShardLease, StoreError,
};

/// Unpaused schedules of the lease's shard due by `until`, earliest first.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), limit))]
pub(super) async fn due_schedules(
    store: &PgStore,
    lease: &ShardLease,
    until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<DueSchedule>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut tx = fencing::begin(store, lease).await?;
    // The planning index (shard, next_fire_at) WHERE NOT paused AND next_fire_at IS NOT NULL
    // answers this in order.
    let rows: Vec<ScheduleRow> = sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules
         WHERE shard = $1 AND NOT paused AND next_fire_at IS NOT NULL AND next_fire_at <= $2
         ORDER BY next_fire_at, id
         LIMIT $3"
    ))
    .bind(shard_value(lease.shard())?)
    .bind(until)
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    let schedules: Vec<Schedule> = convert(rows)?;
    schedules
        .into_iter()
        .map(|s| {
            let next_fire_at = s.next_fire_at.ok_or_else(|| {
                StoreError::Corrupt(format!("schedule {}: due without a next fire", s.id))
            })?;
            Ok(DueSchedule {
                id: s.id,
                tenant_id: s.tenant_id,
                job_id: s.job_id,
                version: s.version,
                spec: s.spec,
                next_fire_at,
                fire_count: s.fire_count,
            })
        })
        .collect()
}

/// A schedule as locked by `materialize`.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct LockedSchedule {
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
    store: &PgStore,
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
    store: &PgStore,
    batches: &[(ShardLease, Vec<Materialize>)],
) -> Result<MaterializedAcross> {
    let mut batch = fencing::begin_many(store, batches.iter().map(|(lease, _)| lease)).await?;
    // Each fire with the shard whose lease it came with; fires of superseded leases are left.
    let fires: Vec<(i16, &Materialize)> = batches
        .iter()
        .filter(|(lease, _)| batch.holds(lease))
        .map(|(lease, fires)| shard_value(lease.shard()).map(|shard| (shard, fires)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flat_map(|(shard, fires)| fires.iter().map(move |f| (shard, f)))
        .collect();
    if fires.is_empty() {
        return Ok(MaterializedAcross {
            runs: Vec::new(),
            fenced: batch.commit().await?,
        });
    }

    // Lock the schedules (in id order, against deadlocks) so that an edit, pause or delete
    // either committed before (its version shows and the fires are dropped) or waits until
    // this commits (and then cancels the runs written here, I4).
    let mut schedule_ids: Vec<Uuid> = fires.iter().map(|(_, f)| f.schedule_id.as_uuid()).collect();
    schedule_ids.sort_unstable();
    schedule_ids.dedup();
    let locked: Vec<LockedSchedule> = sqlx::query_as(
        "SELECT id, tenant_id, job_id, shard, version, paused FROM schedules
         WHERE id = ANY($1)
         ORDER BY id
         FOR NO KEY UPDATE",
    )
    .bind(&schedule_ids)
    .fetch_all(batch.tx.conn())
    .await?;
    let locked: HashMap<Uuid, LockedSchedule> = locked.into_iter().map(|s| (s.id, s)).collect();

    let mut seen = HashSet::new();
    let mut kept: Vec<(&Materialize, LockedSchedule)> = fires
        .iter()
        .filter_map(|(shard, f)| {
            let s = locked.get(&f.schedule_id.as_uuid())?;
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

    let n = kept.len();
    let mut ids = Vec::with_capacity(n);
    let mut tenants = Vec::with_capacity(n);
    let mut jobs = Vec::with_capacity(n);
    let mut schedules = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut shards = Vec::with_capacity(n);
    let mut fire_times = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    for (f, s) in &kept {
        ids.push(RunId::generate().as_uuid());
        tenants.push(s.tenant_id);
        jobs.push(s.job_id);
        schedules.push(s.id);
        versions.push(s.version);
        shards.push(s.shard);
        fire_times.push(f.fire_time);
        states.push(f.state.run_state().as_str());
        reasons.push(f.state.reason());
    }
    // I1: the unique (schedule_id, fire_time, schedule_version) key of scheduled fires makes a
    // repeated call (after a timeout, a crash, or by a node that lost the shard in between)
    // create nothing.
    let inserted: Vec<(Uuid, Uuid, Uuid, i16, DateTime<Utc>, String)> = sqlx::query_as(
        "INSERT INTO runs (id, tenant_id, job_id, schedule_id, schedule_version, shard, trigger,
             attempt, fire_time, state, reason, finished_at)
         SELECT f.id, f.tenant_id, f.job_id, f.schedule_id, f.version, f.shard, $10, 1,
                f.fire_time, f.state, f.reason, CASE WHEN f.state = 'skipped' THEN now() END
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[],
                     $6::smallint[], $7::timestamptz[], $8::text[], $9::text[])
              WITH ORDINALITY AS f(id, tenant_id, job_id, schedule_id, version, shard,
                                   fire_time, state, reason, n)
         ORDER BY f.n
         ON CONFLICT (schedule_id, fire_time, schedule_version) WHERE trigger = 'schedule'
         DO NOTHING
         RETURNING id, tenant_id, schedule_id, shard, fire_time, state",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&jobs)
    .bind(&schedules)
    .bind(&versions)
    .bind(&shards)
    .bind(&fire_times)
    .bind(&states)
    .bind(&reasons)
    .bind(Trigger::Schedule.as_str())
    .fetch_all(batch.tx.conn())
    .await?;

    let mut runs = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(inserted.len());
    let mut reason_of: HashMap<(Uuid, DateTime<Utc>), Option<&'static str>> = kept
        .iter()
        .map(|(f, _)| ((f.schedule_id.as_uuid(), f.fire_time), f.state.reason()))
        .collect();
    for (id, tenant, schedule, shard, fire_time, state) in inserted {
        let state = parse_state(id, &state)?;
        created.push((
            TenantId::from_uuid(tenant),
            Transition {
                run_id: id,
                fire_time,
                from: None,
                to: state,
                reason: reason_of
                    .remove(&(schedule, fire_time))
                    .flatten()
                    .map(str::to_owned),
            },
        ));
        runs.push((
            shard_id(shard)?,
            MaterializedRun {
                id: RunId::from_uuid(id),
                schedule_id: ScheduleId::from_uuid(schedule),
                fire_time,
                state,
                created: true,
            },
        ));
    }
    created.sort_by_key(|(_, t)| (t.fire_time, t.run_id));
    events::record_across_tenants(batch.tx.tx(), &created).await?;

    if runs.len() < n {
        // Fires that had their run already: answer it, so a retried call loses nothing.
        let version_of: HashMap<Uuid, i64> = kept.iter().map(|(_, s)| (s.id, s.version)).collect();
        let (schedules, fire_times): (Vec<Uuid>, Vec<DateTime<Utc>>) =
            reason_of.keys().copied().unzip();
        let versions: Vec<i64> = schedules
            .iter()
            .map(|s| version_of.get(s).copied().unwrap_or_default())
            .collect();
        let existing: Vec<(Uuid, Uuid, i16, DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT r.id, r.schedule_id, r.shard, r.fire_time, r.state
             FROM runs r
             JOIN UNNEST($1::uuid[], $2::timestamptz[], $3::bigint[])
                  AS f(schedule_id, fire_time, version)
               ON r.schedule_id = f.schedule_id AND r.fire_time = f.fire_time
                  AND r.schedule_version = f.version
             WHERE r.trigger = 'schedule'",
        )
        .bind(&schedules)
        .bind(&fire_times)
        .bind(&versions)
        .fetch_all(batch.tx.conn())
        .await?;
        for (id, schedule, shard, fire_time, state) in existing {
            runs.push((
                shard_id(shard)?,
                MaterializedRun {
                    id: RunId::from_uuid(id),
                    schedule_id: ScheduleId::from_uuid(schedule),
                    fire_time,
                    state: parse_state(id, &state)?,
                    created: false,
                },
            ));
        }
    }
    runs.sort_by_key(|(_, r)| (r.fire_time, r.schedule_id.as_uuid()));

    let created_per_schedule = {
        let mut n: HashMap<Uuid, i64> = HashMap::new();
        for (_, r) in &runs {
            if r.created {
                *n.entry(r.schedule_id.as_uuid()).or_default() += 1;
            }
        }
        n
    };
    advance_next_fires(&mut batch.tx, &kept, &created_per_schedule).await?;
    let fenced = batch.commit().await?;
    let new = created.len();
    tracing::debug!(
        created = new,
        existing = runs.len() - new,
        "fires materialized"
    );
    Ok(MaterializedAcross { runs, fenced })
}

fn shard_id(value: i16) -> Result<ShardId> {
    u16::try_from(value)
        .ok()
        .and_then(ShardId::new)
        .ok_or_else(|| StoreError::Corrupt(format!("shard {value} out of range")))
}

/// Moves each schedule's `next_fire_at` to the value carried by its latest kept fire, only
/// forward, and only while the schedule is at the fires' version; adds the fires this call
/// created to its fire count and moves `last_fire_at` to the latest of them. Once the count
/// reaches `max_runs`, `next_fire_at` is `None` whatever the planner computed.
async fn advance_next_fires(
    tx: &mut fencing::FencedTx,
    kept: &[(&Materialize, LockedSchedule)],
    created: &HashMap<Uuid, i64>,
) -> Result<()> {
    /// A schedule's version, next fire after its latest kept fire, and that fire.
    type Latest = (i64, Option<DateTime<Utc>>, DateTime<Utc>);
    // `kept` is in fire order: the last fire of a schedule wins.
    let mut latest: HashMap<Uuid, Latest> = HashMap::new();
    for (f, s) in kept {
        latest.insert(s.id, (s.version, f.next_fire_at, f.fire_time));
    }
    let n = latest.len();
    let mut ids = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut nexts = Vec::with_capacity(n);
    let mut lasts = Vec::with_capacity(n);
    let mut counts = Vec::with_capacity(n);
    let mut entries: Vec<_> = latest.into_iter().collect();
    entries.sort_unstable_by_key(|(id, _)| *id);
    for (id, (version, next, last)) in entries {
        ids.push(id);
        versions.push(version);
        nexts.push(next);
        lasts.push(last);
        counts.push(created.get(&id).copied().unwrap_or(0));
    }
    sqlx::query(
        "UPDATE schedules s
         SET fire_count = s.fire_count + u.created,
             last_fire_at = CASE WHEN u.created > 0
                                 THEN GREATEST(s.last_fire_at, u.last_fire_at)
                                 ELSE s.last_fire_at END,
             next_fire_at = CASE
                 WHEN s.max_runs IS NOT NULL AND s.fire_count + u.created >= s.max_runs THEN NULL
                 WHEN s.next_fire_at IS NOT NULL
                      AND (u.next_fire_at IS NULL OR u.next_fire_at > s.next_fire_at)
                     THEN u.next_fire_at
                 ELSE s.next_fire_at END
         FROM UNNEST($1::uuid[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::bigint[])
              AS u(id, version, next_fire_at, last_fire_at, created)
         WHERE s.id = u.id AND s.version = u.version",
    )
    .bind(&ids)
    .bind(&versions)
    .bind(&nexts)
    .bind(&lasts)
    .bind(&counts)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Retries of many owned shards waiting for their backoff, due by `until` (a read).
#[tracing::instrument(skip_all, fields(shards = shards.len()))]
pub(super) async fn due_retries_across(
    store: &PgStore,
    shards: &[ShardId],
    until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<DueRetry>> {
    if limit == 0 || shards.is_empty() {
        return Ok(Vec::new());
    }
    let shard_values: Vec<i16> = shards
        .iter()
        .map(|s| shard_value(*s))
        .collect::<Result<_>>()?;
    // The partial index runs_retry_due_idx (shard, due_at) answers this.
    let rows: Vec<(i16, Uuid, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT shard, id, fire_time, due_at FROM runs
         WHERE shard = ANY($1) AND state = 'scheduled' AND trigger = 'retry' AND due_at <= $2
         ORDER BY due_at, id
         LIMIT $3",
    )
    .bind(&shard_values)
    .bind(until)
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.into_iter()
        .map(|(shard, id, fire_time, due_at)| {
            Ok(DueRetry {
                shard: shard_id(shard)?,
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
    store: &PgStore,
    lease: &ShardLease,
    ids: &[ScheduleId],
) -> Result<Vec<Schedule>> {
    let mut tx = fencing::begin(store, lease).await?;
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
    let rows: Vec<ScheduleRow> = sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE id = ANY($1) AND shard = $2 ORDER BY id"
    ))
    .bind(&ids)
    .bind(shard_value(lease.shard())?)
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    convert(rows)
}

/// Due schedules of many owned shards in one round trip (the node-level planning scan). A
/// read: nothing is written, so no fence is taken; the writes that follow are fenced.
#[tracing::instrument(skip_all, fields(shards = shards.len()))]
pub(super) async fn due_schedules_across(
    store: &PgStore,
    shards: &[ShardId],
    until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<(ShardId, DueSchedule)>> {
    if limit == 0 || shards.is_empty() {
        return Ok(Vec::new());
    }
    let shard_values: Vec<i16> = shards
        .iter()
        .map(|s| shard_value(*s))
        .collect::<Result<_>>()?;
    let rows: Vec<ScheduleRow> = sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules
         WHERE shard = ANY($1) AND NOT paused AND next_fire_at IS NOT NULL AND next_fire_at <= $2
         ORDER BY next_fire_at, id
         LIMIT $3"
    ))
    .bind(&shard_values)
    .bind(until)
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    let schedules: Vec<Schedule> = convert(rows)?;
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

/// Queued runs of many owned shards, oldest first, in one round trip (a read).
#[tracing::instrument(skip_all, fields(shards = shards.len()))]
pub(super) async fn queued_runs_across(
    store: &PgStore,
    shards: &[ShardId],
    limit: u32,
) -> Result<Vec<(ShardId, RunId, DateTime<Utc>)>> {
    runs_across(
        store,
        shards,
        limit,
        "SELECT shard, id, fire_time FROM runs
         WHERE shard = ANY($1) AND state = 'queued' AND NOT cancel_requested
           AND blocked_by IS NULL
         ORDER BY fire_time, id
         LIMIT $2",
    )
    .await
}

/// Running runs of many owned shards whose cancel was asked (a read).
#[tracing::instrument(skip_all, fields(shards = shards.len()))]
pub(super) async fn cancel_requested_across(
    store: &PgStore,
    shards: &[ShardId],
    limit: u32,
) -> Result<Vec<(ShardId, RunId, DateTime<Utc>)>> {
    runs_across(
        store,
        shards,
        limit,
        "SELECT shard, id, fire_time FROM runs
         WHERE shard = ANY($1) AND state = 'running' AND cancel_requested
         ORDER BY fire_time, id
         LIMIT $2",
    )
    .await
}

/// Runs of the shards picked by `sql` (`$1` shards, `$2` limit; selects shard, id, fire time).
async fn runs_across(
    store: &PgStore,
    shards: &[ShardId],
    limit: u32,
    sql: &'static str,
) -> Result<Vec<(ShardId, RunId, DateTime<Utc>)>> {
    if limit == 0 || shards.is_empty() {
        return Ok(Vec::new());
    }
    let shard_values: Vec<i16> = shards
        .iter()
        .map(|s| shard_value(*s))
        .collect::<Result<_>>()?;
    let rows: Vec<(i16, Uuid, DateTime<Utc>)> = sqlx::query_as(sql)
        .bind(&shard_values)
        .bind(i64::from(limit))
        .fetch_all(store.pool())
        .await?;
    rows.into_iter()
        .map(|(shard, id, fire_time)| Ok((shard_id(shard)?, RunId::from_uuid(id), fire_time)))
        .collect()
}
