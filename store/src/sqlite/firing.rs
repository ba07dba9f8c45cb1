//! The batched firing path across shards: fires (`scheduled` → `queued`, and on to `running`
//! on a worker holding the run), workers' acks, reports and live output, each batch one fenced write
//! transaction of conditional moves with one event per move (I3); it must never move a run of
//! a superseded lease, nor start a run a cancel, a schedule change or a job delete obsoleted.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use kairos_domain::{
    FieldError, OverlapPolicy, RunId, RunState, SkipReason, TenantId, overlap::ActiveRun,
    run::event_reason,
};
use uuid::Uuid;

use super::SqliteStore;
use super::events::{self, Transition};
use super::fencing;
use super::overlap;
use super::retries;
use super::rows::{FailedRun, Fate, decide_batch, parse_state, startable, stored_shard};
use crate::{
    AckedRuns, DueRun, FinishedRun, FinishedRuns, FiredRuns, LiveLog, Result, RunAck, RunReport,
    StoreError, cap_log_tail,
};

/// Longest worker id recorded with a run.
const MAX_WORKER_ID_LEN: usize = 256;

fn check_worker_id(worker_id: &str) -> Result<()> {
    if worker_id.is_empty() || worker_id.len() > MAX_WORKER_ID_LEN {
        return Err(FieldError::new(
            "worker_id",
            format!("must be 1 to {MAX_WORKER_ID_LEN} bytes"),
        )
        .into());
    }
    Ok(())
}

fn transition(run_id: Uuid, fire_time: DateTime<Utc>, from: RunState, to: RunState) -> Transition {
    Transition {
        run_id,
        fire_time,
        from: Some(from),
        to,
        reason: None,
    }
}

/// Fires due runs; see [`crate::SchedulerStore::fire_runs`].
#[tracing::instrument(skip_all, fields(runs = due.len()))]
pub(super) async fn fire_runs(store: &SqliteStore, due: &[DueRun]) -> Result<FiredRuns> {
    if due.is_empty() {
        return Ok(FiredRuns::default());
    }
    for d in due {
        if let Some(worker) = &d.worker_id {
            check_worker_id(worker)?;
        }
    }
    let mut tx = store.begin_write().await?;
    let leases = fencing::sort(tx.conn(), due.iter().map(|d| &d.run.lease)).await?;
    let mut seen = HashSet::new();
    let live: Vec<&DueRun> = due
        .iter()
        .filter(|d| leases.holds(&d.run.lease) && seen.insert(d.run.id))
        .collect();
    let now = tx.now.clone();
    // Read every due run first, then decide in fire order: fires of one schedule in one batch
    // are decided one after the other, each seeing those before it.
    let mut targets = Vec::with_capacity(live.len());
    for d in live {
        // The transaction holds the write lock: what is read here is what is moved.
        let target: Option<Target> = sqlx::query_as(concat!(
            "SELECT r.tenant_id, r.fire_time, r.trigger, r.schedule_id,
                    (SELECT s.overlap_policy FROM schedules s WHERE s.id = r.schedule_id)
                        AS overlap_policy, ",
            startable!(),
            " AS may_start FROM runs r
             WHERE r.id = ?1 AND r.state = 'scheduled'
               AND r.shard IN (SELECT value FROM json_each(?2))"
        ))
        .bind(d.run.id.as_uuid())
        .bind(leases.shards_json())
        .fetch_optional(tx.conn())
        .await?;
        if let Some(target) = target {
            targets.push((d, target));
        }
    }
    targets.sort_by_key(|(d, t)| (t.fire_time, d.run.id.as_uuid()));
    // The overlap rule for the fires of schedules whose policy is not `allow`, against each
    // schedule's runs in progress as stored before this batch wrote anything.
    let mut by_schedule: HashMap<Uuid, Vec<(ActiveRun, Option<overlap::ActiveRow>)>> =
        HashMap::new();
    let mut fires = Vec::new();
    for (i, (d, t)) in targets.iter().enumerate() {
        let (true, Some(schedule), Some(raw)) = (
            t.trigger == "schedule",
            t.schedule_id,
            t.overlap_policy.as_deref(),
        ) else {
            continue;
        };
        if raw == "allow" {
            continue;
        }
        let policy = OverlapPolicy::parse(raw)
            .map_err(|e| StoreError::Corrupt(format!("schedule {schedule}: {e}")))?;
        if let std::collections::hash_map::Entry::Vacant(entry) = by_schedule.entry(schedule) {
            let mut stored = Vec::new();
            for row in overlap::active_runs(tx.conn(), schedule).await? {
                stored.push((row.active()?, Some(row)));
            }
            entry.insert(stored);
        }
        fires.push((i, d.run.id, schedule, policy));
    }
    let batch = decide_batch(fires, by_schedule);
    let mut fates: HashMap<usize, Fate> = HashMap::new();
    for (i, _, fate) in batch.fates {
        fates.insert(i, fate);
    }
    let cancel: Vec<&overlap::ActiveRow> = batch.cancel.iter().collect();
    let stop: Vec<&overlap::ActiveRow> = batch.stop.iter().map(|(_, row)| row).collect();
    let mut transitions = Vec::with_capacity(targets.len() * 2);
    let mut fired = FiredRuns::default();
    let (cancelled, stopped) = overlap::replace(tx.conn(), &now, &cancel, &stop).await?;
    transitions.extend(cancelled);
    for row in stopped {
        fired
            .stop
            .push((stored_shard(row.shard)?, RunId::from_uuid(row.id)));
    }
    for (i, (d, t)) in targets.into_iter().enumerate() {
        let id = d.run.id.as_uuid();
        let tenant = TenantId::from_uuid(t.tenant_id);
        let decision = fates.get(&i).copied().unwrap_or(Fate::Start);
        match decision {
            Fate::Start => {
                let start = d.worker_id.is_some() && t.may_start;
                if start {
                    sqlx::query(
                        "UPDATE runs SET state = 'running', worker_id = ?2, started_at = ?3,
                             updated_at = ?3
                         WHERE id = ?1",
                    )
                    .bind(id)
                    .bind(d.worker_id.as_deref())
                    .bind(&now)
                    .execute(tx.conn())
                    .await?;
                } else {
                    sqlx::query("UPDATE runs SET state = 'queued', updated_at = ?2 WHERE id = ?1")
                        .bind(id)
                        .bind(&now)
                        .execute(tx.conn())
                        .await?;
                }
                transitions.push((
                    tenant,
                    transition(id, t.fire_time, RunState::Scheduled, RunState::Queued),
                ));
                if start {
                    transitions.push((
                        tenant,
                        transition(id, t.fire_time, RunState::Queued, RunState::Running),
                    ));
                    fired.started.push(d.run.id);
                } else {
                    fired.queued.push(d.run.id);
                }
            }
            Fate::Skip => {
                sqlx::query(
                    "UPDATE runs SET state = 'skipped', reason = ?2, finished_at = ?3,
                         updated_at = ?3
                     WHERE id = ?1",
                )
                .bind(id)
                .bind(SkipReason::Overlap.as_str())
                .bind(&now)
                .execute(tx.conn())
                .await?;
                transitions.push((
                    tenant,
                    Transition {
                        reason: Some(SkipReason::Overlap.as_str().to_owned()),
                        ..transition(id, t.fire_time, RunState::Scheduled, RunState::Skipped)
                    },
                ));
                fired.skipped.push(d.run.id);
            }
            Fate::Hold { blocked_by } => {
                sqlx::query(
                    "UPDATE runs SET state = 'queued', blocked_by = ?2, updated_at = ?3
                     WHERE id = ?1",
                )
                .bind(id)
                .bind(blocked_by.as_uuid())
                .bind(&now)
                .execute(tx.conn())
                .await?;
                transitions.push((
                    tenant,
                    Transition {
                        reason: Some(event_reason::OVERLAP_HELD.to_owned()),
                        ..transition(id, t.fire_time, RunState::Scheduled, RunState::Queued)
                    },
                ));
                fired.held.push(d.run.id);
            }
        }
    }
    events::record_across_tenants(&mut tx, &transitions).await?;
    tx.commit().await?;
    fired.fenced = leases.fenced;
    tracing::debug!(
        asked = due.len(),
        queued = fired.queued.len(),
        started = fired.started.len(),
        skipped = fired.skipped.len(),
        held = fired.held.len(),
        "due runs fired"
    );
    Ok(fired)
}

/// A due run as the firing batch reads it: who and when, whether it may start on the worker
/// holding it, and its schedule's overlap policy.
#[derive(Debug, sqlx::FromRow)]
struct Target {
    tenant_id: Uuid,
    fire_time: DateTime<Utc>,
    trigger: String,
    schedule_id: Option<Uuid>,
    overlap_policy: Option<String>,
    may_start: bool,
}

/// Workers' acks; see [`crate::SchedulerStore::ack_runs`].
#[tracing::instrument(skip_all, fields(runs = acks.len()))]
pub(super) async fn ack_runs(store: &SqliteStore, acks: &[RunAck]) -> Result<AckedRuns> {
    if acks.is_empty() {
        return Ok(AckedRuns::default());
    }
    for ack in acks {
        check_worker_id(&ack.worker_id)?;
    }
    let mut tx = store.begin_write().await?;
    let leases = fencing::sort(tx.conn(), acks.iter().map(|a| &a.run.lease)).await?;
    let mut seen = HashSet::new();
    let live: Vec<&RunAck> = acks
        .iter()
        .filter(|a| leases.holds(&a.run.lease) && seen.insert(a.run.id))
        .collect();
    let now = tx.now.clone();
    let mut moved = Vec::with_capacity(live.len());
    for a in live {
        let started: Option<(Uuid, DateTime<Utc>)> = sqlx::query_as(concat!(
            "UPDATE runs AS r SET state = 'running', worker_id = ?2, started_at = ?3,
                 updated_at = ?3
             WHERE r.id = ?1 AND r.state = 'queued' AND r.blocked_by IS NULL
               AND r.shard IN (SELECT value FROM json_each(?4)) AND ",
            startable!(),
            " RETURNING tenant_id, fire_time"
        ))
        .bind(a.run.id.as_uuid())
        .bind(a.worker_id.as_str())
        .bind(&now)
        .bind(leases.shards_json())
        .fetch_optional(tx.conn())
        .await?;
        if let Some((tenant, fire_time)) = started {
            moved.push((a.run.id.as_uuid(), tenant, fire_time));
        }
    }
    moved.sort_by_key(|(id, _, fire_time)| (*fire_time, *id));
    let transitions: Vec<(TenantId, Transition)> = moved
        .iter()
        .map(|(id, tenant, fire_time)| {
            (
                TenantId::from_uuid(*tenant),
                transition(*id, *fire_time, RunState::Queued, RunState::Running),
            )
        })
        .collect();
    events::record_across_tenants(&mut tx, &transitions).await?;
    tx.commit().await?;
    let started: Vec<RunId> = moved
        .into_iter()
        .map(|(id, _, _)| RunId::from_uuid(id))
        .collect();
    let fenced = leases.fenced;
    let started_set: HashSet<RunId> = started.iter().copied().collect();
    let refused = acks
        .iter()
        .filter(|a| !fenced.contains(&a.run.lease.shard()) && !started_set.contains(&a.run.id))
        .map(|a| a.run.id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    Ok(AckedRuns {
        started,
        refused,
        fenced,
    })
}

/// Workers' reports; see [`crate::SchedulerStore::finish_runs`].
#[tracing::instrument(skip_all, fields(runs = reports.len()))]
pub(super) async fn finish_runs(
    store: &SqliteStore,
    reports: &[RunReport],
) -> Result<FinishedRuns> {
    if reports.is_empty() {
        return Ok(FinishedRuns::default());
    }
    let mut tx = store.begin_write().await?;
    let leases = fencing::sort(tx.conn(), reports.iter().map(|r| &r.run.lease)).await?;
    // The first report of a run wins; a repeat in the same batch answers as a late report.
    let mut seen = HashSet::new();
    let live: Vec<&RunReport> = reports
        .iter()
        .filter(|r| leases.holds(&r.run.lease) && seen.insert(r.run.id))
        .collect();
    let now = tx.now.clone();
    let mut applied: HashMap<Uuid, RunState> = HashMap::new();
    let mut stored: HashMap<Uuid, String> = HashMap::new();
    let mut finished = Vec::new();
    let mut failed = Vec::new();
    let mut ended_schedules: Vec<Uuid> = Vec::new();
    for r in &live {
        let id = r.run.id.as_uuid();
        let (tail, cut) = cap_log_tail(&r.outcome.log_tail);
        let tail_bytes = tail.len() as i64;
        let moved: Option<EndedRow> = sqlx::query_as(
            // The worker's byte count if it sent one; else at least what the tail holds. A
            // cancel asked with a reason (`replaced`) records that reason.
            "UPDATE runs SET state = ?2,
                 reason = CASE WHEN ?2 = 'cancelled' THEN coalesce(cancel_reason, ?3) ELSE ?3 END,
                 exit_code = ?4, log_tail = ?5,
                 log_truncated = ?6, finished_at = ?7, updated_at = ?7,
                 log_bytes = coalesce(?9, max(log_bytes, ?10))
             WHERE id = ?1 AND state = 'running' AND shard IN (SELECT value FROM json_each(?8))
             RETURNING tenant_id, fire_time, state, reason, job_id, schedule_id,
                       schedule_version, attempt, cancel_requested",
        )
        .bind(id)
        .bind(r.outcome.state.run_state().as_str())
        .bind(r.outcome.state.reason())
        .bind(r.outcome.exit_code)
        .bind(tail)
        .bind(cut || r.outcome.log_truncated)
        .bind(&now)
        .bind(leases.shards_json())
        .bind(
            r.outcome
                .total_bytes
                .map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        )
        .bind(tail_bytes)
        .fetch_optional(tx.conn())
        .await?;
        match moved {
            Some(row) => {
                let to = parse_state(id, &row.state)?;
                applied.insert(id, to);
                if let Some(schedule) = row.schedule_id
                    && !ended_schedules.contains(&schedule)
                {
                    ended_schedules.push(schedule);
                }
                if to == RunState::Failed {
                    failed.push(FailedRun {
                        id,
                        job_id: row.job_id,
                        schedule_id: row.schedule_id,
                        schedule_version: row.schedule_version,
                        attempt: row.attempt,
                        fire_time: row.fire_time,
                        cancel_requested: row.cancel_requested,
                    });
                }
                finished.push((
                    TenantId::from_uuid(row.tenant_id),
                    Transition {
                        run_id: id,
                        fire_time: row.fire_time,
                        from: Some(RunState::Running),
                        to,
                        reason: row.reason,
                    },
                ));
            }
            None => {
                // Already terminal (a late or repeated report), not started, or not the shard's.
                let state: Option<String> = sqlx::query_scalar(
                    "SELECT state FROM runs
                     WHERE id = ?1 AND shard IN (SELECT value FROM json_each(?2))",
                )
                .bind(id)
                .bind(leases.shards_json())
                .fetch_optional(tx.conn())
                .await?;
                if let Some(state) = state {
                    stored.insert(id, state);
                }
            }
        }
    }
    finished.sort_by_key(|(_, t)| (t.fire_time, t.run_id));
    events::record_across_tenants(&mut tx, &finished).await?;
    let (retries, retry_events) = retries::create(tx.conn(), stored_now(&now)?, &failed).await?;
    events::record_across_tenants(&mut tx, &retry_events).await?;
    let released = overlap::release(tx.conn(), &now, &ended_schedules).await?;
    tx.commit().await?;
    let fenced = leases.fenced;
    let mut first = HashSet::new();
    let mut results = Vec::with_capacity(reports.len());
    for report in reports {
        let id = report.run.id;
        if fenced.contains(&report.run.lease.shard()) {
            continue;
        }
        let repeat = !first.insert(id);
        let result = match (applied.get(&id.as_uuid()), stored.get(&id.as_uuid())) {
            (Some(state), _) => Ok(FinishedRun {
                state: *state,
                applied: !repeat,
            }),
            (None, Some(raw)) => {
                let state = parse_state(id.as_uuid(), raw)?;
                if state.is_terminal() {
                    Ok(FinishedRun {
                        state,
                        applied: false,
                    })
                } else {
                    Err(StoreError::FailedPrecondition(format!(
                        "run is {state}, not running"
                    )))
                }
            }
            (None, None) => Err(StoreError::NotFound("run")),
        };
        results.push((id, result));
    }
    Ok(FinishedRuns {
        results,
        retries,
        released,
        fenced,
    })
}

/// A run `finish_runs` moved, with what its retry needs.
#[derive(Debug, sqlx::FromRow)]
struct EndedRow {
    tenant_id: Uuid,
    fire_time: DateTime<Utc>,
    state: String,
    reason: Option<String>,
    job_id: Uuid,
    schedule_id: Option<Uuid>,
    schedule_version: Option<i64>,
    attempt: i32,
    cancel_requested: bool,
}

/// The transaction's time back from its stored form.
pub(super) fn stored_now(now: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(now)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("transaction time '{now}': {e}")))
}

/// Stores the latest live tail of each running run (the last one given wins), only forward;
/// see [`crate::SchedulerStore::record_live_logs`].
#[tracing::instrument(skip_all, fields(runs = logs.len()))]
pub(super) async fn record_live_logs(
    store: &SqliteStore,
    logs: &[LiveLog],
) -> Result<Vec<kairos_domain::ShardId>> {
    if logs.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.begin_write().await?;
    let leases = fencing::sort(tx.conn(), logs.iter().map(|l| &l.run.lease)).await?;
    let mut latest: HashMap<Uuid, &LiveLog> = HashMap::new();
    for log in logs.iter().filter(|l| leases.holds(&l.run.lease)) {
        latest.insert(log.run.id.as_uuid(), log);
    }
    let mut entries: Vec<(Uuid, &LiveLog)> = latest.into_iter().collect();
    entries.sort_unstable_by_key(|(id, _)| *id);
    for (id, log) in entries {
        let (tail, cut) = cap_log_tail(&log.tail);
        let total = i64::try_from(log.total_bytes)
            .unwrap_or(i64::MAX)
            .max(tail.len() as i64);
        let truncated = cut || log.total_bytes > tail.len() as u64;
        // Only forward: a late tail never replaces a longer count already stored.
        sqlx::query(
            "UPDATE runs SET log_tail = ?2, log_truncated = ?3, log_bytes = ?4
             WHERE id = ?1 AND state = 'running' AND ?4 >= log_bytes
               AND shard IN (SELECT value FROM json_each(?5))",
        )
        .bind(id)
        .bind(tail)
        .bind(truncated)
        .bind(total)
        .bind(leases.shards_json())
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await?;
    Ok(leases.fenced)
}
