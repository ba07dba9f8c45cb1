//! Retries on SQLite: the next attempt of a failed run, created in the write transaction that
//! records the failure (so a crash cannot lose it, I2) and due after the job's backoff. It must
//! never retry a run whose cancel was requested, of a deleted job, or of a schedule version
//! that is gone (I4), and never create two retries of one run (I1, `runs_retry_key`).

use chrono::{DateTime, Duration, Utc};
use kairos_domain::{RunId, RunState, TenantId, Trigger};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::events::Transition;
use super::rows::{FailedRun, owed_retry, retry_policy, stored_shard};
use super::time::ts;
use crate::{DueRetry, Result};

/// A retry as inserted: id, tenant, shard, fire time, due time.
type CreatedRow = (Uuid, Uuid, i16, DateTime<Utc>, DateTime<Utc>);

/// Creates the retries the failed runs are owed (see `SchedulerStore::finish_runs`); answers
/// them with their creation events to record. The write lock the transaction holds orders it
/// against job deletes and schedule changes.
pub(super) async fn create(
    conn: &mut SqliteConnection,
    now: DateTime<Utc>,
    failed: &[FailedRun],
) -> Result<(Vec<DueRetry>, Vec<(TenantId, Transition)>)> {
    let mut retries = Vec::new();
    let mut events = Vec::new();
    for f in failed.iter().filter(|f| !f.cancel_requested) {
        let policy: Option<(i32, i32, i32)> = sqlx::query_as(
            "SELECT retry_max_attempts, retry_initial_backoff_seconds, retry_max_backoff_seconds
             FROM jobs WHERE id = ?1 AND deleted_at IS NULL",
        )
        .bind(f.job_id)
        .fetch_optional(&mut *conn)
        .await?;
        let policy = policy
            .map(|(max_attempts, initial, max)| retry_policy(f.job_id, max_attempts, initial, max))
            .transpose()?;
        let current: Option<i64> = match f.schedule_id {
            Some(schedule) => {
                sqlx::query_scalar("SELECT version FROM schedules WHERE id = ?1")
                    .bind(schedule)
                    .fetch_optional(&mut *conn)
                    .await?
            }
            None => None,
        };
        let Some(delay) = owed_retry(f, policy.as_ref(), current) else {
            continue;
        };
        let due_at = now + Duration::from_std(delay).unwrap_or_else(|_| Duration::days(1));
        let created: Option<CreatedRow> = sqlx::query_as(
            "INSERT INTO runs (id, tenant_id, job_id, schedule_id, schedule_version, shard,
                 trigger, attempt, retry_of, fire_time, due_at, state, env, created_at,
                 updated_at)
             SELECT ?1, tenant_id, job_id, schedule_id, schedule_version, shard, ?3,
                    attempt + 1, id, fire_time, ?4, 'scheduled', env, ?5, ?5
             FROM runs WHERE id = ?2
             ON CONFLICT (retry_of) WHERE retry_of IS NOT NULL DO NOTHING
             RETURNING id, tenant_id, shard, fire_time, due_at",
        )
        .bind(RunId::generate().as_uuid())
        .bind(f.id)
        .bind(Trigger::Retry.as_str())
        .bind(ts(due_at))
        .bind(ts(now))
        .fetch_optional(&mut *conn)
        .await?;
        let Some((id, tenant, shard, fire_time, due_at)) = created else {
            continue;
        };
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
