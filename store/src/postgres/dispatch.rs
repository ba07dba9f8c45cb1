//! The firing and worker path of a shard's runs: recovery reads, queueing, skipping, the
//! worker's ack and finish, and failing lost runs, each a fenced transaction of conditional
//! moves with one event per move (I3); it must never move a run its lease's shard does not own,
//! nor move a run along a transition the domain's state machine refuses.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kairos_domain::{
    Env, FailureReason, FieldError, RunId, RunState, RunTimeout, SkipReason, TenantId,
};
use uuid::Uuid;

use super::PgStore;
use super::events::{self, Transition};
use super::fencing::{self, FencedTx};
use super::rows::{JobRow, RunRow, job_columns, run_columns, shard_value};
use crate::{
    Assignment, FinishedRun, Job, PendingRun, Result, Run, RunOutcome, ShardLease, StoreError,
    cap_log_tail,
};

/// Longest worker id recorded with a run.
const MAX_WORKER_ID_LEN: usize = 256;

/// A run plus its job's timeout, as recovery and dispatch read it.
#[derive(Debug, sqlx::FromRow)]
struct PendingRow {
    #[sqlx(flatten)]
    run: RunRow,
    timeout_seconds: Option<i32>,
}

impl TryFrom<PendingRow> for PendingRun {
    type Error = StoreError;

    fn try_from(row: PendingRow) -> Result<Self> {
        let run = Run::try_from(row.run)?;
        let timeout = row
            .timeout_seconds
            .ok_or_else(|| StoreError::Corrupt(format!("run {}: its job is missing", run.id)))?;
        let timeout = RunTimeout::from_seconds(i64::from(timeout)).map_err(|e| {
            StoreError::Corrupt(format!("job {} of run {}: {e}", run.job_id, run.id))
        })?;
        Ok(PendingRun {
            id: run.id,
            tenant_id: run.tenant_id,
            job_id: run.job_id,
            schedule_id: run.schedule_id,
            schedule_version: run.schedule_version,
            trigger: run.trigger,
            attempt: run.attempt,
            fire_time: run.fire_time,
            state: run.state,
            worker_id: run.worker_id,
            cancel_requested: run.cancel_requested,
            started_at: run.started_at,
            timeout,
        })
    }
}

/// Runs of one shard in the given states with their job's timeout (`$1` shard, `$2` states,
/// `$3` limit), oldest fire first.
const PENDING_SQL: &str = concat!(
    "SELECT ",
    run_columns!(),
    ", (SELECT j.timeout_seconds FROM jobs j WHERE j.id = runs.job_id) AS timeout_seconds
     FROM runs
     WHERE shard = $1 AND state = ANY($2)
     ORDER BY fire_time, id
     LIMIT $3"
);

async fn pending(
    tx: &mut FencedTx,
    lease: &ShardLease,
    states: &[RunState],
    limit: Option<u32>,
) -> Result<Vec<PendingRun>> {
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let rows: Vec<PendingRow> = sqlx::query_as(PENDING_SQL)
        .bind(shard_value(lease.shard())?)
        .bind(&states)
        .bind(limit.map(i64::from))
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
    let runs = pending(&mut tx, lease, &non_terminal, None).await?;
    tx.commit().await?;
    tracing::debug!(runs = runs.len(), "pending runs loaded");
    Ok(runs)
}

/// The shard's queued runs, oldest fire first.
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
    let runs = pending(&mut tx, lease, &[RunState::Queued], Some(limit)).await?;
    tx.commit().await?;
    Ok(runs)
}

/// Moves those of `run_ids` (of the lease's shard) that are in a state the domain lets move
/// to `to`, recording `reason`; a terminal `to` stamps `finished_at`. One event per run moved.
async fn move_runs(
    store: &PgStore,
    lease: &ShardLease,
    run_ids: &[RunId],
    to: RunState,
    reason: Option<&str>,
) -> Result<Vec<RunId>> {
    let mut tx = fencing::begin(store, lease).await?;
    if run_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = run_ids.iter().map(|id| id.as_uuid()).collect();
    let from: Vec<&str> = RunState::predecessors(to)
        .into_iter()
        .map(RunState::as_str)
        .collect();
    // Rows are locked first, so a run moved concurrently (a cancel, an ack) is re-checked
    // against `from` and left alone.
    let moved: Vec<(Uuid, Uuid, DateTime<Utc>, String)> = sqlx::query_as(
        "WITH target AS (
             SELECT id, fire_time, state FROM runs
             WHERE id = ANY($1) AND shard = $2 AND state = ANY($3)
             ORDER BY id
             FOR UPDATE
         )
         UPDATE runs r
         SET state = $4, reason = $5, updated_at = now(),
             finished_at = CASE WHEN $6 THEN now() ELSE r.finished_at END
         FROM target t
         WHERE r.id = t.id AND r.fire_time = t.fire_time
         RETURNING r.id, r.tenant_id, r.fire_time, t.state",
    )
    .bind(&ids)
    .bind(shard_value(lease.shard())?)
    .bind(&from)
    .bind(to.as_str())
    .bind(reason)
    .bind(to.is_terminal())
    .fetch_all(tx.conn())
    .await?;
    let mut transitions = moved
        .into_iter()
        .map(|(run_id, tenant, fire_time, from)| {
            Ok((
                TenantId::from_uuid(tenant),
                Transition {
                    run_id,
                    fire_time,
                    from: Some(parse_state(run_id, &from)?),
                    to,
                    reason: reason.map(str::to_owned),
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    transitions.sort_by_key(|(_, t)| (t.fire_time, t.run_id));
    events::record_across_tenants(tx.tx(), &transitions).await?;
    tx.commit().await?;
    tracing::debug!(asked = run_ids.len(), moved = transitions.len(), to = %to, "runs moved");
    Ok(transitions
        .into_iter()
        .map(|(_, t)| RunId::from_uuid(t.run_id))
        .collect())
}

/// `scheduled` → `queued`.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), runs = run_ids.len()))]
pub(super) async fn queue_runs(
    store: &PgStore,
    lease: &ShardLease,
    run_ids: &[RunId],
) -> Result<Vec<RunId>> {
    move_runs(store, lease, run_ids, RunState::Queued, None).await
}

/// `scheduled` | `queued` → `skipped` with `reason`.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), runs = run_ids.len(), reason = reason.as_str()))]
pub(super) async fn skip_runs(
    store: &PgStore,
    lease: &ShardLease,
    run_ids: &[RunId],
    reason: SkipReason,
) -> Result<Vec<RunId>> {
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
) -> Result<Vec<RunId>> {
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
/// still at the run's version (I4); answers what the worker needs, or `None`.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), run_id = %run_id, worker_id))]
pub(super) async fn ack_run(
    store: &PgStore,
    lease: &ShardLease,
    run_id: RunId,
    worker_id: &str,
) -> Result<Option<Assignment>> {
    if worker_id.is_empty() || worker_id.len() > MAX_WORKER_ID_LEN {
        return Err(FieldError::new(
            "worker_id",
            format!("must be 1 to {MAX_WORKER_ID_LEN} bytes"),
        )
        .into());
    }
    tracing::Span::current().record("worker_id", worker_id);
    let mut tx = fencing::begin(store, lease).await?;
    let found: Option<(DateTime<Utc>, Option<Uuid>, Option<i64>)> = sqlx::query_as(
        "SELECT fire_time, schedule_id, schedule_version FROM runs WHERE id = $1 AND shard = $2",
    )
    .bind(run_id.as_uuid())
    .bind(shard_value(lease.shard())?)
    .fetch_optional(tx.conn())
    .await?;
    let (fire_time, schedule, version) = found.ok_or(StoreError::NotFound("run"))?;
    if let Some(schedule) = schedule {
        // FOR SHARE: an edit in flight either committed first (and the version moved) or waits
        // for this ack, after which it sees the run running and leaves it.
        let current: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schedules WHERE id = $1 FOR SHARE")
                .bind(schedule)
                .fetch_optional(tx.conn())
                .await?;
        if current.is_none() || current != version {
            tracing::debug!(
                ?version,
                ?current,
                "ack refused: the schedule changed or is gone"
            );
            return Ok(None);
        }
    }
    let row: Option<RunRow> = sqlx::query_as(concat!(
        "UPDATE runs SET state = 'running', worker_id = $3, started_at = now(), updated_at = now()
         WHERE id = $1 AND fire_time = $2 AND state = 'queued' AND NOT cancel_requested
         RETURNING ",
        run_columns!()
    ))
    .bind(run_id.as_uuid())
    .bind(fire_time)
    .bind(worker_id)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        tracing::debug!("ack refused: the run is no longer queued");
        return Ok(None);
    };
    let run = Run::try_from(row)?;
    debug_assert!(RunState::Queued.can_move_to(run.state));
    let job: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
    ))
    .bind(run.tenant_id.as_uuid())
    .bind(run.job_id.as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    let Some(job) = job else {
        // Rolled back: a deleted job's runs are cancelled by the delete itself.
        tracing::debug!("ack refused: the job is deleted");
        return Ok(None);
    };
    let assignment = assignment(run, Job::try_from(job)?, worker_id)?;
    events::record(
        tx.tx(),
        assignment.tenant_id,
        &[Transition {
            run_id: run_id.as_uuid(),
            fire_time,
            from: Some(RunState::Queued),
            to: RunState::Running,
            reason: None,
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(assignment))
}

/// The job's env overridden by the run's own (execute-now overrides).
pub(super) fn merged_env(run: &Run, job: &Job) -> Result<Env> {
    let mut env: BTreeMap<String, String> = job.spec.env.vars().clone();
    env.extend(run.env.vars().iter().map(|(k, v)| (k.clone(), v.clone())));
    Env::parse(env).map_err(|e| {
        StoreError::Corrupt(format!(
            "run {}: the job's env with the run's overrides is out of bounds: {e}",
            run.id
        ))
    })
}

fn assignment(run: Run, job: Job, worker_id: &str) -> Result<Assignment> {
    let env = merged_env(&run, &job)?;
    let started_at = run
        .started_at
        .ok_or_else(|| StoreError::Corrupt(format!("run {}: running without a start", run.id)))?;
    Ok(Assignment {
        run_id: run.id,
        tenant_id: run.tenant_id,
        job_id: run.job_id,
        schedule_id: run.schedule_id,
        image: job.spec.image,
        command: job.spec.command,
        env,
        memory: job.spec.memory,
        timeout: job.spec.timeout,
        fire_time: run.fire_time,
        attempt: run.attempt,
        worker_id: worker_id.to_owned(),
        started_at,
    })
}

/// `running` → the outcome's state, storing the exit code and the capped log tail. A run
/// already terminal is left as it is (I3).
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), token = lease.token(), run_id = %run_id, state = %outcome.state.run_state()))]
pub(super) async fn finish_run(
    store: &PgStore,
    lease: &ShardLease,
    run_id: RunId,
    outcome: &RunOutcome,
) -> Result<FinishedRun> {
    let to = outcome.state.run_state();
    debug_assert!(RunState::Running.can_move_to(to));
    let (log_tail, cut) = cap_log_tail(&outcome.log_tail);
    let shard = shard_value(lease.shard())?;
    let mut tx = fencing::begin(store, lease).await?;
    let finished: Option<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE runs SET state = $3, reason = $4, exit_code = $5, log_tail = $6,
             log_truncated = $7, finished_at = now(), updated_at = now()
         WHERE id = $1 AND shard = $2 AND state = 'running'
         RETURNING tenant_id, fire_time",
    )
    .bind(run_id.as_uuid())
    .bind(shard)
    .bind(to.as_str())
    .bind(outcome.state.reason())
    .bind(outcome.exit_code)
    .bind(&log_tail)
    .bind(cut || outcome.log_truncated)
    .fetch_optional(tx.conn())
    .await?;
    if let Some((tenant, fire_time)) = finished {
        events::record(
            tx.tx(),
            TenantId::from_uuid(tenant),
            &[Transition {
                run_id: run_id.as_uuid(),
                fire_time,
                from: Some(RunState::Running),
                to,
                reason: outcome.state.reason().map(str::to_owned),
            }],
        )
        .await?;
        tx.commit().await?;
        return Ok(FinishedRun {
            state: to,
            applied: true,
        });
    }
    let stored: Option<String> =
        sqlx::query_scalar("SELECT state FROM runs WHERE id = $1 AND shard = $2")
            .bind(run_id.as_uuid())
            .bind(shard)
            .fetch_optional(tx.conn())
            .await?;
    let stored = parse_state(
        run_id.as_uuid(),
        &stored.ok_or(StoreError::NotFound("run"))?,
    )?;
    if stored.is_terminal() {
        if stored != to {
            tracing::debug!(stored = %stored, "late report ignored: the run already ended");
        }
        return Ok(FinishedRun {
            state: stored,
            applied: false,
        });
    }
    Err(StoreError::FailedPrecondition(format!(
        "run is {stored}, not running"
    )))
}

/// A state read back from `runs`.
pub(super) fn parse_state(run_id: Uuid, raw: &str) -> Result<RunState> {
    RunState::parse(raw)
        .ok_or_else(|| StoreError::Corrupt(format!("run {run_id}: unknown state '{raw}'")))
}
