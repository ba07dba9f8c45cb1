//! The overlap lock of a schedule and what is read and written under it: the schedule's runs
//! in progress, the cancels of a `replace`, and the release of held fires. The decision
//! itself is the domain's (`kairos_domain::overlap`); nothing here decides.
//!
//! Lock order, which every caller must keep: overlap locks first (in ascending key order, in
//! one statement), then job and schedule rows, then run rows. A transaction must never ask
//! for an overlap lock while it holds a lock on a run of that schedule.

use chrono::{DateTime, Utc};
use kairos_domain::{
    RunId, RunState, TenantId, overlap::ActiveRun, run::cancel_reason, stable_hash,
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::events::Transition;
use super::rows::{active_run, in_progress, parse_state, stored_shard};
use crate::{ReleasedRun, Result};

/// Advisory lock class of the overlap lock (the two-key form, whose key space does not meet
/// the one-key form sqlx's migrations use).
const OVERLAP_LOCK_CLASS: i32 = 0x4b53;

fn lock_key(schedule: Uuid) -> i32 {
    // Truncating the stable hash: two schedules sharing a key only wait for each other.
    stable_hash::fnv1a(&[schedule.as_bytes()]) as i32
}

/// Takes the overlap locks of `schedules` until the transaction ends, in ascending key order.
pub(super) async fn lock(
    conn: &mut PgConnection,
    schedules: impl IntoIterator<Item = Uuid>,
) -> Result<()> {
    let mut keys: Vec<i32> = schedules.into_iter().map(lock_key).collect();
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    // A function scan yields the array in order, so the locks are taken in key order.
    sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM UNNEST($2::int4[]) AS k")
        .bind(OVERLAP_LOCK_CLASS)
        .bind(&keys)
        .execute(conn)
        .await?;
    Ok(())
}

/// A run of a schedule still in progress, locked.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct ActiveRow {
    pub schedule_id: Uuid,
    pub id: Uuid,
    pub shard: i16,
    pub fire_time: DateTime<Utc>,
    pub state: String,
    pub blocked_by: Option<Uuid>,
}

impl ActiveRow {
    /// How the overlap rule sees it.
    pub(super) fn active(&self) -> Result<ActiveRun> {
        active_run(self.id, &self.state, self.blocked_by)
    }
}

/// The runs in progress of `schedules`, oldest fire first, locked `FOR UPDATE` (a `replace`
/// writes them). Call under the schedules' overlap locks.
pub(super) async fn active_runs(
    conn: &mut PgConnection,
    schedules: &[Uuid],
) -> Result<Vec<ActiveRow>> {
    if schedules.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(concat!(
        "SELECT r.schedule_id, r.id, r.shard, r.fire_time, r.state, r.blocked_by
         FROM runs r
         WHERE r.schedule_id = ANY($1) AND ",
        in_progress!("r"),
        " ORDER BY r.fire_time, r.id
         FOR UPDATE"
    ))
    .bind(schedules)
    .fetch_all(conn)
    .await?)
}

/// What a `replace` did to the runs it ended: the transitions of the cancelled ones, and the
/// running ones whose cancel it requested.
#[derive(Debug, Default)]
pub(super) struct Replaced {
    pub cancelled: Vec<(TenantId, Transition)>,
    pub stopped: Vec<ActiveRow>,
}

/// Cancels the not-started runs (reason `replaced`) and requests the cancel of the running
/// ones (recorded `replaced` when their worker stops them), of runs locked by
/// [`active_runs`].
pub(super) async fn replace(
    conn: &mut PgConnection,
    cancel: &[&ActiveRow],
    stop: &[&ActiveRow],
) -> Result<Replaced> {
    let mut done = Replaced::default();
    if !cancel.is_empty() {
        let ids: Vec<Uuid> = cancel.iter().map(|r| r.id).collect();
        let times: Vec<DateTime<Utc>> = cancel.iter().map(|r| r.fire_time).collect();
        let rows: Vec<(Uuid, Uuid, DateTime<Utc>, String)> = sqlx::query_as(
            "WITH target AS (
                 SELECT r.id, r.fire_time, r.state FROM runs r
                 JOIN UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, fire_time)
                   ON r.id = u.id AND r.fire_time = u.fire_time
                 WHERE r.state IN ('scheduled', 'queued')
             )
             UPDATE runs r
             SET state = 'cancelled', reason = $3, blocked_by = NULL, finished_at = now(),
                 updated_at = now()
             FROM target t
             WHERE r.id = t.id AND r.fire_time = t.fire_time
             RETURNING r.id, r.tenant_id, r.fire_time, t.state",
        )
        .bind(&ids)
        .bind(&times)
        .bind(cancel_reason::REPLACED)
        .fetch_all(&mut *conn)
        .await?;
        for (id, tenant, fire_time, from) in rows {
            done.cancelled.push((
                TenantId::from_uuid(tenant),
                Transition {
                    run_id: id,
                    fire_time,
                    from: Some(parse_state(id, &from)?),
                    to: RunState::Cancelled,
                    reason: Some(cancel_reason::REPLACED.to_owned()),
                },
            ));
        }
    }
    if !stop.is_empty() {
        let ids: Vec<Uuid> = stop.iter().map(|r| r.id).collect();
        let times: Vec<DateTime<Utc>> = stop.iter().map(|r| r.fire_time).collect();
        let stopped: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE runs r
             SET cancel_requested = true, cancel_reason = COALESCE(r.cancel_reason, $3),
                 updated_at = now()
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, fire_time)
             WHERE r.id = u.id AND r.fire_time = u.fire_time AND r.state = 'running'
             RETURNING r.id",
        )
        .bind(&ids)
        .bind(&times)
        .bind(cancel_reason::REPLACED)
        .fetch_all(&mut *conn)
        .await?;
        done.stopped = stop
            .iter()
            .filter(|r| stopped.contains(&r.id))
            .map(|r| (*r).clone())
            .collect();
    }
    Ok(done)
}

/// For each of `schedules` with nothing in progress but held fires, releases its oldest held
/// fire (by fire time, then id): clears `blocked_by`, so dispatch may offer it. Call under the
/// schedules' overlap locks, after the ends and retries of the transaction were written.
pub(super) async fn release(
    conn: &mut PgConnection,
    schedules: &[Uuid],
) -> Result<Vec<ReleasedRun>> {
    if schedules.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Uuid, DateTime<Utc>, i16)> = sqlx::query_as(concat!(
        "WITH held AS (
             SELECT DISTINCT ON (h.schedule_id) h.id, h.fire_time
             FROM runs h
             WHERE h.schedule_id = ANY($1) AND h.state = 'queued' AND h.blocked_by IS NOT NULL
               AND NOT EXISTS (
                   SELECT 1 FROM runs o
                   WHERE o.schedule_id = h.schedule_id AND o.blocked_by IS NULL AND ",
        in_progress!("o"),
        "      )
             ORDER BY h.schedule_id, h.fire_time, h.id
         )
         UPDATE runs r SET blocked_by = NULL, updated_at = now()
         FROM held
         WHERE r.id = held.id AND r.fire_time = held.fire_time
         RETURNING r.id, r.fire_time, r.shard"
    ))
    .bind(schedules)
    .fetch_all(conn)
    .await?;
    let released = rows
        .into_iter()
        .map(|(id, fire_time, shard)| {
            Ok(ReleasedRun {
                shard: stored_shard(shard)?,
                id: RunId::from_uuid(id),
                fire_time,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if !released.is_empty() {
        tracing::debug!(
            released = released.len(),
            "held fires released: their schedules have nothing else in progress"
        );
    }
    Ok(released)
}
