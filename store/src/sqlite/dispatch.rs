//! The firing and worker path of one shard's runs: recovery reads, queueing, skipping, the
//! worker's ack and finish, and failing lost runs, each a fenced transaction of conditional
//! moves with one event per move (I3); it must never move a run its lease's shard does not own,
//! nor move a run along a transition the domain's state machine refuses.

use chrono::{DateTime, Utc};
use kairos_domain::{FailureReason, RunId, RunState, ShardId, SkipReason, TenantId};
use uuid::Uuid;

use super::SqliteStore;
use super::events::{self, Transition};
use super::fencing;
use super::firing;
use super::jobs::SqliteJobRow;
use super::overlap;
use super::retries;
use super::rows::{
    FailedRun, PendingRow, RunRow, assignment, job_columns, parse_state, run_columns, shard_value,
};
use super::tx::ReadTx;
use crate::{
    Assignment, DueRun, EndedRuns, FinishedRun, Job, LeasedRun, PendingRun, Result, Run, RunAck,
    RunOutcome, RunReport, ShardLease, StoreError,
};

/// Runs of one shard in the given states (a JSON array) with their job's timeout, oldest fire
/// first (`?1` shard, `?2` states, `?3` limit, -1 for none, `?4` whether to leave out fires
/// the overlap policy holds).
const PENDING_SQL: &str = concat!(
    "SELECT ",
    run_columns!(),
    ", (SELECT j.timeout_seconds FROM jobs j WHERE j.id = runs.job_id) AS timeout_seconds
     FROM runs
     WHERE shard = ?1 AND state IN (SELECT value FROM json_each(?2))
       AND (NOT ?4 OR blocked_by IS NULL)
     ORDER BY fire_time, id
     LIMIT ?3"
);

async fn pending(
    tx: &mut ReadTx,
    lease: &ShardLease,
    states: &[RunState],
    limit: Option<u32>,
    unheld: bool,
) -> Result<Vec<PendingRun>> {
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let rows: Vec<PendingRow> = sqlx::query_as(PENDING_SQL)
        .bind(shard_value(lease.shard())?)
        .bind(sqlx::types::Json(states))
        .bind(limit.map_or(-1, i64::from))
        .bind(unheld)
        .fetch_all(&mut **tx)
        .await?;
    rows.into_iter().map(PendingRun::try_from).collect()
}

/// Every non-terminal run of the lease's shard (recovery, I2).
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token()))]
pub(super) async fn shard_pending_runs(
    store: &SqliteStore,
    lease: &ShardLease,
) -> Result<Vec<PendingRun>> {
    let mut tx = store.begin_read().await?;
    fencing::check(&mut tx, lease).await?;
    let non_terminal: Vec<RunState> = RunState::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .collect();
    let runs = pending(&mut tx, lease, &non_terminal, None, false).await?;
    tx.commit().await?;
    tracing::debug!(runs = runs.len(), "pending runs loaded");
    Ok(runs)
}

/// The shard's queued runs that the overlap policy does not hold, oldest fire first.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), limit))]
pub(super) async fn queued_runs(
    store: &SqliteStore,
    lease: &ShardLease,
    limit: u32,
) -> Result<Vec<PendingRun>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut tx = store.begin_read().await?;
    fencing::check(&mut tx, lease).await?;
    let runs = pending(&mut tx, lease, &[RunState::Queued], Some(limit), true).await?;
    tx.commit().await?;
    Ok(runs)
}

/// Moves those of `run_ids` (of the lease's shard) that are in a state the domain lets move
/// to `to`, recording `reason`; a terminal `to` stamps `finished_at`. One event per run moved.
/// A move to `failed` creates the retries owed; any move releases the held fires of the
/// schedules whose runs it ended.
async fn move_runs(
    store: &SqliteStore,
    lease: &ShardLease,
    run_ids: &[RunId],
    to: RunState,
    reason: Option<&str>,
) -> Result<EndedRuns> {
    let mut tx = store.begin_write().await?;
    fencing::check(tx.conn(), lease).await?;
    let from: Vec<&str> = RunState::predecessors(to)
        .into_iter()
        .map(RunState::as_str)
        .collect();
    let from = sqlx::types::Json(from);
    let now = tx.now.clone();
    let mut transitions = Vec::new();
    let mut failed = Vec::new();
    let mut schedules: Vec<Uuid> = Vec::new();
    for id in run_ids {
        // The transaction holds the write lock: the state read is the state moved from.
        let current: Option<MovedRow> = sqlx::query_as(
            "SELECT tenant_id, fire_time, state, job_id, schedule_id, schedule_version, attempt,
                    cancel_requested
             FROM runs
             WHERE id = ?1 AND shard = ?2 AND state IN (SELECT value FROM json_each(?3))",
        )
        .bind(id.as_uuid())
        .bind(shard_value(lease.shard())?)
        .bind(&from)
        .fetch_optional(tx.conn())
        .await?;
        let Some(m) = current else {
            continue;
        };
        sqlx::query(
            "UPDATE runs SET state = ?2, reason = ?3, updated_at = ?4, blocked_by = NULL,
                 finished_at = CASE WHEN ?5 THEN ?4 ELSE finished_at END
             WHERE id = ?1",
        )
        .bind(id.as_uuid())
        .bind(to.as_str())
        .bind(reason)
        .bind(&now)
        .bind(to.is_terminal())
        .execute(tx.conn())
        .await?;
        if let Some(schedule) = m.schedule_id
            && !schedules.contains(&schedule)
        {
            schedules.push(schedule);
        }
        if to == RunState::Failed {
            failed.push(FailedRun {
                id: id.as_uuid(),
                job_id: m.job_id,
                schedule_id: m.schedule_id,
                schedule_version: m.schedule_version,
                attempt: m.attempt,
                fire_time: m.fire_time,
                cancel_requested: m.cancel_requested,
            });
        }
        transitions.push((
            TenantId::from_uuid(m.tenant_id),
            Transition {
                run_id: id.as_uuid(),
                fire_time: m.fire_time,
                from: Some(parse_state(id.as_uuid(), &m.state)?),
                to,
                reason: reason.map(str::to_owned),
            },
        ));
    }
    transitions.sort_by_key(|(_, t)| (t.fire_time, t.run_id));
    events::record_across_tenants(&mut tx, &transitions).await?;
    let (retries, retry_events) =
        retries::create(tx.conn(), firing::stored_now(&now)?, &failed).await?;
    events::record_across_tenants(&mut tx, &retry_events).await?;
    let released = overlap::release(tx.conn(), &now, &schedules).await?;
    tx.commit().await?;
    tracing::debug!(asked = run_ids.len(), moved = transitions.len(), to = %to, "runs moved");
    Ok(EndedRuns {
        moved: transitions
            .into_iter()
            .map(|(_, t)| RunId::from_uuid(t.run_id))
            .collect(),
        retries,
        released,
    })
}

/// A run `move_runs` moves, with what its retry needs.
#[derive(Debug, sqlx::FromRow)]
struct MovedRow {
    tenant_id: Uuid,
    fire_time: DateTime<Utc>,
    state: String,
    job_id: Uuid,
    schedule_id: Option<Uuid>,
    schedule_version: Option<i64>,
    attempt: i32,
    cancel_requested: bool,
}

/// `scheduled` → `queued` (the single-shard form of `firing::fire_runs`).
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), runs = run_ids.len()))]
pub(super) async fn queue_runs(
    store: &SqliteStore,
    lease: &ShardLease,
    run_ids: &[RunId],
) -> Result<Vec<RunId>> {
    let due: Vec<DueRun> = run_ids
        .iter()
        .map(|id| DueRun {
            run: leased(lease, *id),
            worker_id: None,
        })
        .collect();
    if due.is_empty() {
        let mut tx = store.begin_read().await?;
        fencing::check(&mut tx, lease).await?;
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let fired = firing::fire_runs(store, &due).await?;
    fenced_or(lease, &fired.fenced)?;
    Ok(fired.queued)
}

fn leased(lease: &ShardLease, id: RunId) -> LeasedRun {
    LeasedRun {
        lease: lease.clone(),
        id,
        fire_time: None,
    }
}

/// `Fenced` if a batch of one lease came back fenced.
fn fenced_or(lease: &ShardLease, fenced: &[ShardId]) -> Result<()> {
    if fenced.contains(&lease.shard()) {
        return Err(StoreError::Fenced {
            shard: lease.shard(),
            token: lease.token(),
        });
    }
    Ok(())
}

/// `scheduled` | `queued` → `skipped` with `reason`.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), runs = run_ids.len(), reason = reason.as_str()))]
pub(super) async fn skip_runs(
    store: &SqliteStore,
    lease: &ShardLease,
    run_ids: &[RunId],
    reason: SkipReason,
) -> Result<EndedRuns> {
    move_runs(
        store,
        lease,
        run_ids,
        RunState::Skipped,
        Some(reason.as_str()),
    )
    .await
}

/// `running` → `failed` with reason `worker_lost`.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), runs = run_ids.len()))]
pub(super) async fn fail_lost_runs(
    store: &SqliteStore,
    lease: &ShardLease,
    run_ids: &[RunId],
) -> Result<EndedRuns> {
    move_runs(
        store,
        lease,
        run_ids,
        RunState::Failed,
        Some(FailureReason::WorkerLost.as_str()),
    )
    .await
}

/// `queued` → `running` on `worker_id` if no cancel won the race and the run's schedule is
/// still at the run's version (I4); answers what the worker needs, or `None`. The single-run
/// form of `firing::ack_runs`, plus the read of the assignment.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), run_id = %run_id, worker_id))]
pub(super) async fn ack_run(
    store: &SqliteStore,
    lease: &ShardLease,
    run_id: RunId,
    worker_id: &str,
) -> Result<Option<Assignment>> {
    let acked = firing::ack_runs(
        store,
        &[RunAck {
            run: leased(lease, run_id),
            worker_id: worker_id.to_owned(),
        }],
    )
    .await?;
    fenced_or(lease, &acked.fenced)?;
    tracing::Span::current().record("worker_id", worker_id);
    let mut tx = store.begin_read().await?;
    let row: Option<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = ?1 AND shard = ?2"
    ))
    .bind(run_id.as_uuid())
    .bind(shard_value(lease.shard())?)
    .fetch_optional(&mut *tx)
    .await?;
    let run = Run::try_from(row.ok_or(StoreError::NotFound("run"))?)?;
    if !acked.started.contains(&run_id) {
        tracing::debug!(state = %run.state, "ack refused");
        return Ok(None);
    }
    let job: Option<SqliteJobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = ?1 AND id = ?2"
    ))
    .bind(run.tenant_id.as_uuid())
    .bind(run.job_id.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let job = job.ok_or_else(|| StoreError::Corrupt(format!("run {run_id}: its job is gone")))?;
    Ok(Some(assignment(run, Job::try_from(job)?, worker_id)?))
}

/// `running` → the outcome's state, storing the exit code and the capped log tail. A run
/// already terminal is left as it is (I3). The single-run form of `firing::finish_runs`.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), run_id = %run_id, state = %outcome.state.run_state()))]
pub(super) async fn finish_run(
    store: &SqliteStore,
    lease: &ShardLease,
    run_id: RunId,
    outcome: &RunOutcome,
) -> Result<FinishedRun> {
    let finished = firing::finish_runs(
        store,
        &[RunReport {
            run: leased(lease, run_id),
            outcome: outcome.clone(),
        }],
    )
    .await?;
    fenced_or(lease, &finished.fenced)?;
    finished
        .results
        .into_iter()
        .next()
        .map(|(_, result)| result)
        .unwrap_or(Err(StoreError::NotFound("run")))
}
