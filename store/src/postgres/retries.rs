//! Retries: the next attempt of a failed run, created in the transaction that records the
//! failure (so a crash cannot lose it, I2) and due after the job's backoff. It must never
//! retry a run whose cancel was requested, of a deleted job, or of a schedule version that is
//! gone (I4), and never create two retries of one run (I1, `runs_retry_key`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kairos_domain::{RetryPolicy, RunId, RunState, TenantId, Trigger};
use sqlx::PgConnection;
use uuid::Uuid;

use super::events::Transition;
use super::rows::{FailedRun, owed_retry, retry_policy, stored_shard};
use crate::{DueRetry, Result};

/// A job's retry policy as stored.
type PolicyRow = (Uuid, i32, i32, i32);

/// A retry as inserted: id, tenant, shard, fire time, due time.
type CreatedRow = (Uuid, Uuid, i16, DateTime<Utc>, DateTime<Utc>);

/// Creates the retries the failed runs are owed (see `SchedulerStore::finish_runs`) with
/// their creation events; answers them with the events to record.
pub(super) async fn create(
    conn: &mut PgConnection,
    failed: &[FailedRun],
) -> Result<(Vec<DueRetry>, Vec<(TenantId, Transition)>)> {
    let candidates: Vec<&FailedRun> = failed.iter().filter(|f| !f.cancel_requested).collect();
    if candidates.is_empty() {
        return Ok(Default::default());
    }
    let mut job_ids: Vec<Uuid> = candidates.iter().map(|f| f.job_id).collect();
    job_ids.sort_unstable();
    job_ids.dedup();
    // FOR SHARE: a job delete or a schedule change either committed before (no retry) or waits
    // for this transaction and then cancels the retry with the rest of the pending runs.
    let policies: Vec<PolicyRow> = sqlx::query_as(
        "SELECT id, retry_max_attempts, retry_initial_backoff_seconds, retry_max_backoff_seconds
         FROM jobs WHERE id = ANY($1) AND deleted_at IS NULL
         ORDER BY id
         FOR SHARE",
    )
    .bind(&job_ids)
    .fetch_all(&mut *conn)
    .await?;
    let policies: HashMap<Uuid, RetryPolicy> = policies
        .into_iter()
        .map(|(id, max_attempts, initial, max)| {
            retry_policy(id, max_attempts, initial, max).map(|p| (id, p))
        })
        .collect::<Result<_>>()?;
    let mut schedule_ids: Vec<Uuid> = candidates.iter().filter_map(|f| f.schedule_id).collect();
    schedule_ids.sort_unstable();
    schedule_ids.dedup();
    let versions: HashMap<Uuid, i64> = if schedule_ids.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT id, version FROM schedules WHERE id = ANY($1) ORDER BY id FOR SHARE",
        )
        .bind(&schedule_ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    let mut new_ids = Vec::new();
    let mut failed_ids = Vec::new();
    let mut fire_times = Vec::new();
    let mut delays = Vec::new();
    for f in candidates {
        let current = f.schedule_id.and_then(|s| versions.get(&s).copied());
        let Some(delay) = owed_retry(f, policies.get(&f.job_id), current) else {
            continue;
        };
        new_ids.push(RunId::generate().as_uuid());
        failed_ids.push(f.id);
        fire_times.push(f.fire_time);
        delays.push(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    }
    if new_ids.is_empty() {
        return Ok(Default::default());
    }
    let created: Vec<CreatedRow> = sqlx::query_as(
        "INSERT INTO runs (id, tenant_id, job_id, schedule_id, schedule_version, shard, trigger,
             attempt, retry_of, fire_time, due_at, state, env)
         SELECT u.new_id, r.tenant_id, r.job_id, r.schedule_id, r.schedule_version, r.shard, $5,
                r.attempt + 1, r.id, r.fire_time,
                now() + u.delay_ms * interval '1 millisecond', 'scheduled', r.env
         FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::bigint[])
              WITH ORDINALITY AS u(new_id, failed_id, fire_time, delay_ms, n)
         JOIN runs r ON r.id = u.failed_id AND r.fire_time = u.fire_time
         ORDER BY u.n
         ON CONFLICT (retry_of, fire_time) WHERE retry_of IS NOT NULL DO NOTHING
         RETURNING id, tenant_id, shard, fire_time, due_at",
    )
    .bind(&new_ids)
    .bind(&failed_ids)
    .bind(&fire_times)
    .bind(&delays)
    .bind(Trigger::Retry.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let mut retries = Vec::with_capacity(created.len());
    let mut events = Vec::with_capacity(created.len());
    for (id, tenant, shard, fire_time, due_at) in created {
        retries.push(DueRetry {
            shard: stored_shard(shard)?,
            id: RunId::from_uuid(id),
            fire_time,
            due_at,
        });
        events.push((
            TenantId::from_uuid(tenant),
            Transition {
                run_id: id,
                fire_time,
                from: None,
                to: RunState::Scheduled,
                reason: None,
            },
        ));
    }
    if !retries.is_empty() {
        tracing::debug!(retries = retries.len(), "retries created for failed runs");
    }
    Ok((retries, events))
}
