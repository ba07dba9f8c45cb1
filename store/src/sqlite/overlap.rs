//! What the overlap rule reads and writes on SQLite: a schedule's runs in progress, the
//! cancels of a `replace`, and the release of held fires. The decision itself is the domain's
//! (`kairos_domain::overlap`); nothing here decides.
//!
//! No lock of its own: every caller runs in a write transaction, which holds SQLite's one
//! write lock, so what is read here is what the decision is made on (Postgres takes a
//! per-schedule advisory lock for the same guarantee).

use chrono::{DateTime, Utc};
use kairos_domain::{RunId, RunState, TenantId, overlap::ActiveRun, run::cancel_reason};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::events::Transition;
use super::rows::{active_run, in_progress, parse_state, stored_shard};
use crate::{ReleasedRun, Result};

/// A run of a schedule still in progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct ActiveRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
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

/// The runs in progress of `schedule`, oldest fire first.
pub(super) async fn active_runs(
    conn: &mut SqliteConnection,
    schedule: Uuid,
) -> Result<Vec<ActiveRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT r.id, r.tenant_id, r.shard, r.fire_time, r.state, r.blocked_by
         FROM runs r
         WHERE r.schedule_id = ?1 AND ",
        in_progress!("r"),
        " ORDER BY r.fire_time, r.id"
    ))
    .bind(schedule)
    .fetch_all(conn)
    .await?)
}

/// Cancels the not-started runs (reason `replaced`) and requests the cancel of the running
/// ones (recorded `replaced` when their worker stops them). Answers the transitions of the
/// cancelled and the running runs whose cancel it requested.
pub(super) async fn replace(
    conn: &mut SqliteConnection,
    now: &str,
    cancel: &[&ActiveRow],
    stop: &[&ActiveRow],
) -> Result<(Vec<(TenantId, Transition)>, Vec<ActiveRow>)> {
    let mut cancelled = Vec::new();
    for row in cancel {
        let done = sqlx::query(
            "UPDATE runs SET state = 'cancelled', reason = ?2, blocked_by = NULL,
                 finished_at = ?3, updated_at = ?3
             WHERE id = ?1 AND state IN ('scheduled', 'queued')",
        )
        .bind(row.id)
        .bind(cancel_reason::REPLACED)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            cancelled.push((
                TenantId::from_uuid(row.tenant_id),
                Transition {
                    run_id: row.id,
                    fire_time: row.fire_time,
                    from: Some(parse_state(row.id, &row.state)?),
                    to: RunState::Cancelled,
                    reason: Some(cancel_reason::REPLACED.to_owned()),
                },
            ));
        }
    }
    let mut stopped = Vec::new();
    for row in stop {
        let done = sqlx::query(
            "UPDATE runs SET cancel_requested = 1, cancel_reason = coalesce(cancel_reason, ?2),
                 updated_at = ?3
             WHERE id = ?1 AND state = 'running'",
        )
        .bind(row.id)
        .bind(cancel_reason::REPLACED)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            stopped.push((*row).clone());
        }
    }
    Ok((cancelled, stopped))
}

/// For each of `schedules` with nothing in progress but held fires, releases its oldest held
/// fire (by fire time, then id): clears `blocked_by`, so dispatch may offer it. Call after the
/// ends and retries of the transaction were written.
pub(super) async fn release(
    conn: &mut SqliteConnection,
    now: &str,
    schedules: &[Uuid],
) -> Result<Vec<ReleasedRun>> {
    let mut released = Vec::new();
    for schedule in schedules {
        let row: Option<(Uuid, DateTime<Utc>, i16)> = sqlx::query_as(concat!(
            "UPDATE runs SET blocked_by = NULL, updated_at = ?2
             WHERE id = (
                 SELECT h.id FROM runs h
                 WHERE h.schedule_id = ?1 AND h.state = 'queued' AND h.blocked_by IS NOT NULL
                   AND NOT EXISTS (
                       SELECT 1 FROM runs o
                       WHERE o.schedule_id = h.schedule_id AND o.blocked_by IS NULL AND ",
            in_progress!("o"),
            "      )
                 ORDER BY h.fire_time, h.id
                 LIMIT 1)
             RETURNING id, fire_time, shard"
        ))
        .bind(schedule)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((id, fire_time, shard)) = row {
            released.push(ReleasedRun {
                shard: stored_shard(shard)?,
                id: RunId::from_uuid(id),
                fire_time,
            });
        }
    }
    if !released.is_empty() {
        tracing::debug!(
            released = released.len(),
            "held fires released: their schedules have nothing else in progress"
        );
    }
    Ok(released)
}
