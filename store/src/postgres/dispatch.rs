//! The firing and worker path of a shard's runs: recovery reads, queueing, skipping, the
//! worker's ack and finish, and failing lost runs, each a fenced transaction of conditional
//! moves with one event per move (I3); it must never move a run its lease's shard does not own,
//! nor move a run along a transition the domain's state machine refuses.

use chrono::{DateTime, Utc};
use kairos_domain::{FailureReason, RunId, RunState, SkipReason, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::events::{self, Transition};
use super::fencing::{self, FencedTx};
use super::firing;
use super::overlap;
use super::retries;
use super::rows::{
    JobRow, PendingRow, RunRow, assignment, job_columns, parse_state, run_columns, shard_value,
};
use crate::{
    Assignment, DueRun, EndedRuns, FinishedRun, Job, LeasedRun, PendingRun, Result, Run, RunAck,
    RunOutcome, RunReport, ShardLease, StoreError,
};

/// Runs of one shard in the given states with their job's timeout (`$1` shard, `$2` states,
/// `$3` limit, `$4` whether to leave out fires the overlap policy holds), oldest fire first.
const PENDING_SQL: &str = concat!(
    "SELECT ",
    run_columns!(),
    ", (SELECT j.timeout_seconds FROM jobs j WHERE j.id = runs.job_id) AS timeout_seconds
     FROM runs
     WHERE shard = $1 AND state = ANY($2) AND (NOT $4 OR blocked_by IS NULL)
     ORDER BY fire_time, id
     LIMIT $3"
);

async fn pending(
    tx: &mut FencedTx,
    lease: &ShardLease,
    states: &[RunState],
    limit: Option<u32>,
    unheld: bool,
) -> Result<Vec<PendingRun>> {
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let rows: Vec<PendingRow> = sqlx::query_as(PENDING_SQL)
        .bind(shard_value(lease.shard())?)
        .bind(&states)
        .bind(limit.map(i64::from))
        .bind(unheld)
        .fetch_all(tx.conn())
        .await?;
    rows.into_iter().map(PendingRun::try_from).collect()
}

/// Every non-terminal run of the lease's shard (recovery, I2).
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token()))]
pub(super) async fn shard_pending_runs(
    store: &PgStore,
    lease: &ShardLease,
) -> Result<Vec<PendingRun>> {
    let mut tx = fencing::begin(store, lease).await?;
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
    store: &PgStore,
    lease: &ShardLease,
    limit: u32,
) -> Result<Vec<PendingRun>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut tx = fencing::begin(store, lease).await?;
    let runs = pending(&mut tx, lease, &[RunState::Queued], Some(limit), true).await?;
    tx.commit().await?;
    Ok(runs)
}

/// Moves those of `run_ids` (of the lease's shard) that are in a state the domain lets move
/// to `to`, recording `reason`; a terminal `to` stamps `finished_at`. One event per run moved.
/// A move to `failed` creates the retries owed; any move releases the held fires of the
/// schedules whose runs it ended (under their overlap locks, taken first).
async fn move_runs(
    store: &PgStore,
    lease: &ShardLease,
    run_ids: &[RunId],
    to: RunState,
    reason: Option<&str>,
) -> Result<EndedRuns> {
    let mut tx = fencing::begin(store, lease).await?;
    if run_ids.is_empty() {
        return Ok(EndedRuns::default());
    }
    let ids: Vec<Uuid> = run_ids.iter().map(|id| id.as_uuid()).collect();
    let shard = shard_value(lease.shard())?;
    let everywhere = firing::fire_range(std::iter::empty());
    let schedules = firing::schedules_of_running(tx.conn(), &ids, &[shard], everywhere).await?;
    overlap::lock(tx.conn(), schedules.iter().copied()).await?;
    let from: Vec<&str> = RunState::predecessors(to)
        .into_iter()
        .map(RunState::as_str)
        .collect();
    // Rows are locked first, so a run moved concurrently (a cancel, an ack) is re-checked
    // against `from` and left alone.
    let moved: Vec<MovedRow> = sqlx::query_as(
        "WITH target AS (
             SELECT id, fire_time, state FROM runs
             WHERE id = ANY($1) AND shard = $2 AND state = ANY($3)
             ORDER BY id
             FOR UPDATE
         )
         UPDATE runs r
         SET state = $4, reason = $5, updated_at = now(), blocked_by = NULL,
             finished_at = CASE WHEN $6 THEN now() ELSE r.finished_at END
         FROM target t
         WHERE r.id = t.id AND r.fire_time = t.fire_time
         RETURNING r.id, r.tenant_id, r.fire_time, t.state AS from_state, r.job_id,
                   r.schedule_id, r.schedule_version, r.attempt, r.cancel_requested",
    )
    .bind(&ids)
    .bind(shard)
    .bind(&from)
    .bind(to.as_str())
    .bind(reason)
    .bind(to.is_terminal())
    .fetch_all(tx.conn())
    .await?;
    let mut transitions = Vec::with_capacity(moved.len());
    let mut failed = Vec::new();
    for m in &moved {
        transitions.push((
            TenantId::from_uuid(m.tenant_id),
            Transition {
                run_id: m.id,
                fire_time: m.fire_time,
                from: Some(parse_state(m.id, &m.from_state)?),
                to,
                reason: reason.map(str::to_owned),
            },
        ));
        if to == RunState::Failed {
            failed.push(super::rows::FailedRun {
                id: m.id,
                job_id: m.job_id,
                schedule_id: m.schedule_id,
                schedule_version: m.schedule_version,
                attempt: m.attempt,
                fire_time: m.fire_time,
                cancel_requested: m.cancel_requested,
            });
        }
    }
    transitions.sort_by_key(|(_, t)| (t.fire_time, t.run_id));
    events::record_across_tenants(tx.tx(), &transitions).await?;
    let (retries, retry_events) = retries::create(tx.conn(), &failed).await?;
    events::record_across_tenants(tx.tx(), &retry_events).await?;
    let released = overlap::release(tx.conn(), &schedules).await?;
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

/// A run `move_runs` moved, with what its retry needs.
#[derive(Debug, sqlx::FromRow)]
struct MovedRow {
    id: Uuid,
    tenant_id: Uuid,
    fire_time: DateTime<Utc>,
    from_state: String,
    job_id: Uuid,
    schedule_id: Option<Uuid>,
    schedule_version: Option<i64>,
    attempt: i32,
    cancel_requested: bool,
}

/// `scheduled` → `queued` (the single-shard form of `firing::fire_runs`).
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), runs = run_ids.len()))]
pub(super) async fn queue_runs(
    store: &PgStore,
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
        fencing::begin(store, lease).await?.commit().await?;
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
fn fenced_or(lease: &ShardLease, fenced: &[kairos_domain::ShardId]) -> Result<()> {
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
    store: &PgStore,
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
    store: &PgStore,
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
    store: &PgStore,
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
    let shard = shard_value(lease.shard())?;
    let mut conn = store.pool().acquire().await?;
    let row: Option<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = $1 AND shard = $2"
    ))
    .bind(run_id.as_uuid())
    .bind(shard)
    .fetch_optional(&mut *conn)
    .await?;
    let run = Run::try_from(row.ok_or(StoreError::NotFound("run"))?)?;
    if !acked.started.contains(&run_id) {
        tracing::debug!(state = %run.state, "ack refused");
        return Ok(None);
    }
    let job: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(run.tenant_id.as_uuid())
    .bind(run.job_id.as_uuid())
    .fetch_optional(&mut *conn)
    .await?;
    let job = job.ok_or_else(|| StoreError::Corrupt(format!("run {run_id}: its job is gone")))?;
    Ok(Some(assignment(run, Job::try_from(job)?, worker_id)?))
}

/// `running` → the outcome's state, storing the exit code and the capped log tail. A run
/// already terminal is left as it is (I3). The single-run form of `firing::finish_runs`.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), run_id = %run_id, state = %outcome.state.run_state()))]
pub(super) async fn finish_run(
    store: &PgStore,
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
