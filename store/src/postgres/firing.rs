//! The scheduler's hot path in batches across shards: firing due runs (`scheduled` →
//! `queued`, or straight on to `running` on the worker that holds them prepared), workers'
//! acks (`queued` → `running`) and reports (`running` → terminal). Each call is one fenced
//! transaction over all the shards it touches, of conditional moves with one event per move
//! (I3); it must never write a run whose lease was superseded, nor start a run that a cancel,
//! a schedule change (I4) or a job delete has overtaken.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use kairos_domain::{
    FieldError, OverlapPolicy, RunId, RunState, SkipReason, TenantId, overlap::ActiveRun,
    run::event_reason,
};
use uuid::Uuid;

use super::PgStore;
use super::events::{self, Transition};
use super::fencing;
use super::overlap;
use super::retries;
use super::rows::{Fate, decide_batch, parse_state, startable, stored_shard};
use crate::{
    AckedRuns, DueRun, FinishedRun, FinishedRuns, FiredRuns, LeasedRun, Result, RunAck, RunReport,
    StoreError, cap_log_tail,
};

/// Longest worker id recorded with a run.
pub(super) const MAX_WORKER_ID_LEN: usize = 256;

/// The fire-time bounds of a batch, so Postgres prunes the partitions none of its runs is in;
/// every partition when any fire time is unknown.
pub(super) fn fire_range<'a>(
    runs: impl Iterator<Item = &'a LeasedRun>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    // Wider than any partition, and within what Postgres timestamps can hold.
    let all = (
        DateTime::<Utc>::UNIX_EPOCH,
        DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
    );
    let mut range: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for run in runs {
        let Some(t) = run.fire_time else {
            return all;
        };
        range = Some(match range {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
    }
    range.unwrap_or(all)
}

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

/// A due run as the firing batch reads it before deciding: its schedule's overlap policy when
/// it is a fire of a schedule (trigger `schedule`).
#[derive(Debug, Clone, sqlx::FromRow)]
struct Candidate {
    id: Uuid,
    fire_time: DateTime<Utc>,
    schedule_id: Option<Uuid>,
    overlap_policy: Option<String>,
}

/// What the overlap rule made of the batch's fires of schedules.
#[derive(Debug, Default)]
struct Decided {
    /// Fires to start as usual.
    start: HashSet<Uuid>,
    skip: Vec<Candidate>,
    /// Fires to queue held, with the run each waits for.
    hold: Vec<(Candidate, Uuid)>,
    /// Not-started runs a `replace` cancels, and running ones it stops.
    cancel: Vec<overlap::ActiveRow>,
    stop: Vec<overlap::ActiveRow>,
}

/// Fires due runs; see [`crate::SchedulerStore::fire_runs`].
#[tracing::instrument(skip_all, fields(runs = due.len()))]
pub(super) async fn fire_runs(store: &PgStore, due: &[DueRun]) -> Result<FiredRuns> {
    if due.is_empty() {
        return Ok(FiredRuns::default());
    }
    for d in due {
        if let Some(worker) = &d.worker_id {
            check_worker_id(worker)?;
        }
    }
    let mut batch = fencing::begin_many(store, due.iter().map(|d| &d.run.lease)).await?;
    let mut seen = HashSet::new();
    let live: Vec<&DueRun> = due
        .iter()
        .filter(|d| batch.holds(&d.run.lease) && seen.insert(d.run.id))
        .collect();
    if live.is_empty() {
        return Ok(FiredRuns {
            fenced: batch.commit().await?,
            ..FiredRuns::default()
        });
    }
    let range = fire_range(live.iter().map(|d| &d.run));
    let shards = batch.shard_values()?;
    let decided = decide_overlaps(&mut batch, &live, &shards, range).await?;
    let mut fired = FiredRuns::default();
    let mut transitions = Vec::new();

    // Everything not held back by the overlap rule fires as usual.
    let starting: Vec<&DueRun> = live
        .iter()
        .copied()
        .filter(|d| {
            let id = d.run.id.as_uuid();
            decided.start.contains(&id)
                || !(decided.skip.iter().any(|c| c.id == id)
                    || decided.hold.iter().any(|(c, _)| c.id == id))
        })
        .collect();
    let ids: Vec<Uuid> = starting.iter().map(|d| d.run.id.as_uuid()).collect();
    let workers: Vec<Option<&str>> = starting.iter().map(|d| d.worker_id.as_deref()).collect();
    // Rows are locked first (in id order), so a run moved concurrently (a cancel) is
    // re-checked against `scheduled` and left alone.
    let moved: Vec<(Uuid, Uuid, DateTime<Utc>, bool)> = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(concat!(
            "WITH input AS (
                 SELECT * FROM UNNEST($1::uuid[], $2::text[]) AS i(id, worker_id)
             ),
             target AS (
                 SELECT r.id, r.fire_time, i.worker_id,
                        (i.worker_id IS NOT NULL AND ",
            startable!(),
            ") AS start
                 FROM runs r JOIN input i ON i.id = r.id
                 WHERE r.shard = ANY($3) AND r.state = 'scheduled'
                   AND r.fire_time >= $4 AND r.fire_time <= $5
                 ORDER BY r.id
                 FOR UPDATE OF r
             )
             UPDATE runs r
             SET state = CASE WHEN t.start THEN 'running' ELSE 'queued' END,
                 worker_id = CASE WHEN t.start THEN t.worker_id ELSE r.worker_id END,
                 started_at = CASE WHEN t.start THEN now() ELSE r.started_at END,
                 updated_at = now()
             FROM target t
             WHERE r.id = t.id AND r.fire_time = t.fire_time
             RETURNING r.id, r.tenant_id, r.fire_time, t.start"
        ))
        .bind(&ids)
        .bind(&workers)
        .bind(&shards)
        .bind(range.0)
        .bind(range.1)
        .fetch_all(batch.tx.conn())
        .await?
    };
    let mut moved = moved;
    moved.sort_by_key(|(id, _, fire_time, _)| (*fire_time, *id));
    for (id, tenant, fire_time, start) in moved {
        let tenant = TenantId::from_uuid(tenant);
        transitions.push((
            tenant,
            transition(id, fire_time, RunState::Scheduled, RunState::Queued),
        ));
        if start {
            transitions.push((
                tenant,
                transition(id, fire_time, RunState::Queued, RunState::Running),
            ));
            fired.started.push(RunId::from_uuid(id));
        } else {
            fired.queued.push(RunId::from_uuid(id));
        }
    }
    apply_overlaps(&mut batch, decided, &mut fired, &mut transitions).await?;
    events::record_across_tenants(batch.tx.tx(), &transitions).await?;
    fired.fenced = batch.commit().await?;
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

/// Reads the batch's fires of schedules whose policy is not `allow`, takes those schedules'
/// overlap locks, and decides each fire (in fire order) against the schedule's runs in
/// progress and the batch's fires decided before it. Everything else starts.
async fn decide_overlaps(
    batch: &mut fencing::FencedBatch,
    live: &[&DueRun],
    shards: &[i16],
    range: (DateTime<Utc>, DateTime<Utc>),
) -> Result<Decided> {
    let ids: Vec<Uuid> = live.iter().map(|d| d.run.id.as_uuid()).collect();
    macro_rules! candidates_sql {
        ($tail:literal) => {
            concat!(
                "SELECT r.id, r.fire_time, r.schedule_id, s.overlap_policy
                 FROM runs r
                 LEFT JOIN schedules s ON s.id = r.schedule_id
                 WHERE r.id = ANY($1) AND r.shard = ANY($2) AND r.state = 'scheduled'
                   AND r.trigger = 'schedule' AND r.fire_time >= $3 AND r.fire_time <= $4",
                $tail
            )
        };
    }
    // A first, unlocking read finds the schedules whose locks to take: overlap locks come
    // before any run's row lock.
    let first: Vec<Candidate> = sqlx::query_as(candidates_sql!(""))
        .bind(&ids)
        .bind(shards)
        .bind(range.0)
        .bind(range.1)
        .fetch_all(batch.tx.conn())
        .await?;
    let needs = |c: &Candidate| {
        c.schedule_id.is_some() && c.overlap_policy.as_deref().is_some_and(|p| p != "allow")
    };
    let schedules: Vec<Uuid> = first
        .iter()
        .filter(|c| needs(c))
        .filter_map(|c| c.schedule_id)
        .collect();
    if schedules.is_empty() {
        return Ok(Decided::default());
    }
    overlap::lock(batch.tx.conn(), schedules.iter().copied()).await?;
    let mut candidates: Vec<Candidate> =
        sqlx::query_as(candidates_sql!(" ORDER BY r.id FOR UPDATE OF r"))
            .bind(&ids)
            .bind(shards)
            .bind(range.0)
            .bind(range.1)
            .fetch_all(batch.tx.conn())
            .await?;
    candidates.retain(|c| c.schedule_id.is_some_and(|s| schedules.contains(&s)));
    candidates.sort_by_key(|c| (c.fire_time, c.id));
    let mut schedule_ids: Vec<Uuid> = schedules;
    schedule_ids.sort_unstable();
    schedule_ids.dedup();
    let active = overlap::active_runs(batch.tx.conn(), &schedule_ids).await?;
    let mut by_schedule: HashMap<Uuid, Vec<(ActiveRun, Option<overlap::ActiveRow>)>> =
        HashMap::new();
    for row in active {
        by_schedule
            .entry(row.schedule_id)
            .or_default()
            .push((row.active()?, Some(row)));
    }
    let mut fires = Vec::with_capacity(candidates.len());
    for c in candidates {
        let (Some(schedule), Some(raw)) = (c.schedule_id, c.overlap_policy.as_deref()) else {
            continue;
        };
        let policy = OverlapPolicy::parse(raw)
            .map_err(|e| StoreError::Corrupt(format!("schedule {schedule}: {e}")))?;
        let id = RunId::from_uuid(c.id);
        fires.push((c, id, schedule, policy));
    }
    let batch = decide_batch(fires, by_schedule);
    let mut decided = Decided {
        cancel: batch.cancel,
        stop: batch.stop.into_iter().map(|(_, row)| row).collect(),
        ..Decided::default()
    };
    for (c, _, fate) in batch.fates {
        match fate {
            Fate::Start => {
                decided.start.insert(c.id);
            }
            Fate::Skip => decided.skip.push(c),
            Fate::Hold { blocked_by } => decided.hold.push((c, blocked_by.as_uuid())),
        }
    }
    Ok(decided)
}

/// Writes what the overlap rule decided besides the starts: skipped and held fires, and the
/// cancels and stops of `replace`.
async fn apply_overlaps(
    batch: &mut fencing::FencedBatch,
    decided: Decided,
    fired: &mut FiredRuns,
    transitions: &mut Vec<(TenantId, Transition)>,
) -> Result<()> {
    if !decided.skip.is_empty() {
        let ids: Vec<Uuid> = decided.skip.iter().map(|c| c.id).collect();
        let times: Vec<DateTime<Utc>> = decided.skip.iter().map(|c| c.fire_time).collect();
        let skipped: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE runs r
             SET state = 'skipped', reason = $3, finished_at = now(), updated_at = now()
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, fire_time)
             WHERE r.id = u.id AND r.fire_time = u.fire_time AND r.state = 'scheduled'
             RETURNING r.id, r.tenant_id, r.fire_time",
        )
        .bind(&ids)
        .bind(&times)
        .bind(SkipReason::Overlap.as_str())
        .fetch_all(batch.tx.conn())
        .await?;
        for (id, tenant, fire_time) in skipped {
            transitions.push((
                TenantId::from_uuid(tenant),
                Transition {
                    reason: Some(SkipReason::Overlap.as_str().to_owned()),
                    ..transition(id, fire_time, RunState::Scheduled, RunState::Skipped)
                },
            ));
            fired.skipped.push(RunId::from_uuid(id));
        }
    }
    if !decided.hold.is_empty() {
        let ids: Vec<Uuid> = decided.hold.iter().map(|(c, _)| c.id).collect();
        let times: Vec<DateTime<Utc>> = decided.hold.iter().map(|(c, _)| c.fire_time).collect();
        let blockers: Vec<Uuid> = decided.hold.iter().map(|(_, b)| *b).collect();
        let held: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE runs r
             SET state = 'queued', blocked_by = u.blocked_by, updated_at = now()
             FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[]) AS u(id, fire_time, blocked_by)
             WHERE r.id = u.id AND r.fire_time = u.fire_time AND r.state = 'scheduled'
             RETURNING r.id, r.tenant_id, r.fire_time",
        )
        .bind(&ids)
        .bind(&times)
        .bind(&blockers)
        .fetch_all(batch.tx.conn())
        .await?;
        for (id, tenant, fire_time) in held {
            transitions.push((
                TenantId::from_uuid(tenant),
                Transition {
                    reason: Some(event_reason::OVERLAP_HELD.to_owned()),
                    ..transition(id, fire_time, RunState::Scheduled, RunState::Queued)
                },
            ));
            fired.held.push(RunId::from_uuid(id));
        }
    }
    let cancel: Vec<&overlap::ActiveRow> = decided.cancel.iter().collect();
    let stop: Vec<&overlap::ActiveRow> = decided.stop.iter().collect();
    let replaced = overlap::replace(batch.tx.conn(), &cancel, &stop).await?;
    transitions.extend(replaced.cancelled);
    for row in replaced.stopped {
        fired
            .stop
            .push((stored_shard(row.shard)?, RunId::from_uuid(row.id)));
    }
    Ok(())
}

/// Workers' acks; see [`crate::SchedulerStore::ack_runs`].
#[tracing::instrument(skip_all, fields(runs = acks.len()))]
pub(super) async fn ack_runs(store: &PgStore, acks: &[RunAck]) -> Result<AckedRuns> {
    if acks.is_empty() {
        return Ok(AckedRuns::default());
    }
    for ack in acks {
        check_worker_id(&ack.worker_id)?;
    }
    let mut batch = fencing::begin_many(store, acks.iter().map(|a| &a.run.lease)).await?;
    let mut seen = HashSet::new();
    let live: Vec<&RunAck> = acks
        .iter()
        .filter(|a| batch.holds(&a.run.lease) && seen.insert(a.run.id))
        .collect();
    let ids: Vec<Uuid> = live.iter().map(|a| a.run.id.as_uuid()).collect();
    let workers: Vec<&str> = live.iter().map(|a| a.worker_id.as_str()).collect();
    let range = fire_range(live.iter().map(|a| &a.run));
    let shards = batch.shard_values()?;
    let mut started = Vec::new();
    if !live.is_empty() {
        let moved: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(concat!(
            "WITH input AS (
                 SELECT * FROM UNNEST($1::uuid[], $2::text[]) AS i(id, worker_id)
             ),
             target AS (
                 SELECT r.id, r.fire_time, i.worker_id
                 FROM runs r JOIN input i ON i.id = r.id
                 WHERE r.shard = ANY($3) AND r.state = 'queued' AND r.blocked_by IS NULL
                   AND r.fire_time >= $4 AND r.fire_time <= $5 AND ",
            startable!(),
            "
                 ORDER BY r.id
                 FOR UPDATE OF r
             )
             UPDATE runs r
             SET state = 'running', worker_id = t.worker_id, started_at = now(),
                 updated_at = now()
             FROM target t
             WHERE r.id = t.id AND r.fire_time = t.fire_time
             RETURNING r.id, r.tenant_id, r.fire_time"
        ))
        .bind(&ids)
        .bind(&workers)
        .bind(&shards)
        .bind(range.0)
        .bind(range.1)
        .fetch_all(batch.tx.conn())
        .await?;
        let mut moved = moved;
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
        events::record_across_tenants(batch.tx.tx(), &transitions).await?;
        started = moved
            .into_iter()
            .map(|(id, _, _)| RunId::from_uuid(id))
            .collect();
    }
    let fenced = batch.commit().await?;
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
pub(super) async fn finish_runs(store: &PgStore, reports: &[RunReport]) -> Result<FinishedRuns> {
    if reports.is_empty() {
        return Ok(FinishedRuns::default());
    }
    let mut batch = fencing::begin_many(store, reports.iter().map(|r| &r.run.lease)).await?;
    // The first report of a run wins; a repeat in the same batch answers as a late report.
    let mut seen = HashSet::new();
    let live: Vec<&RunReport> = reports
        .iter()
        .filter(|r| batch.holds(&r.run.lease) && seen.insert(r.run.id))
        .collect();
    let range = fire_range(live.iter().map(|r| &r.run));
    let shards = batch.shard_values()?;
    let n = live.len();
    let mut ids = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    let mut exit_codes = Vec::with_capacity(n);
    let mut tails = Vec::with_capacity(n);
    let mut truncated = Vec::with_capacity(n);
    let mut totals = Vec::with_capacity(n);
    for r in &live {
        let (tail, cut) = cap_log_tail(&r.outcome.log_tail);
        ids.push(r.run.id.as_uuid());
        states.push(r.outcome.state.run_state().as_str());
        reasons.push(r.outcome.state.reason());
        exit_codes.push(r.outcome.exit_code);
        totals.push(
            r.outcome
                .total_bytes
                .map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        );
        tails.push(tail);
        truncated.push(cut || r.outcome.log_truncated);
    }
    let mut applied: HashMap<Uuid, RunState> = HashMap::new();
    let mut retries_owed = Vec::new();
    let mut ended_schedules = Vec::new();
    if n > 0 {
        // Their schedules' overlap locks come first: an end may release a held fire.
        ended_schedules = schedules_of_running(batch.tx.conn(), &ids, &shards, range).await?;
        overlap::lock(batch.tx.conn(), ended_schedules.iter().copied()).await?;
        let finished: Vec<FinishedRow> = sqlx::query_as(
            "WITH input AS (
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[],
                                      $6::bool[], $10::bigint[])
                     AS i(id, state, reason, exit_code, log_tail, log_truncated, log_bytes)
             ),
             target AS (
                 SELECT r.id, r.fire_time FROM runs r JOIN input i ON i.id = r.id
                 WHERE r.shard = ANY($7) AND r.state = 'running'
                   AND r.fire_time >= $8 AND r.fire_time <= $9
                 ORDER BY r.id
                 FOR UPDATE OF r
             )
             UPDATE runs r
             SET state = i.state,
                 reason = CASE WHEN i.state = 'cancelled'
                               THEN COALESCE(r.cancel_reason, i.reason) ELSE i.reason END,
                 exit_code = i.exit_code,
                 log_tail = i.log_tail, log_truncated = i.log_truncated,
                 -- The worker's count if it sent one; else at least what the tail holds.
                 log_bytes = COALESCE(i.log_bytes,
                                      GREATEST(r.log_bytes, octet_length(i.log_tail))),
                 finished_at = now(), updated_at = now()
             FROM target t JOIN input i ON i.id = t.id
             WHERE r.id = t.id AND r.fire_time = t.fire_time
             RETURNING r.id, r.tenant_id, r.fire_time, r.state, r.reason, r.job_id,
                       r.schedule_id, r.schedule_version, r.attempt, r.cancel_requested",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&reasons)
        .bind(&exit_codes)
        .bind(&tails)
        .bind(&truncated)
        .bind(&shards)
        .bind(range.0)
        .bind(range.1)
        .bind(&totals)
        .fetch_all(batch.tx.conn())
        .await?;
        let mut transitions = Vec::with_capacity(finished.len());
        let mut finished = finished;
        finished.sort_by_key(|f| (f.fire_time, f.id));
        for f in finished {
            let to = parse_state(f.id, &f.state)?;
            applied.insert(f.id, to);
            transitions.push((
                TenantId::from_uuid(f.tenant_id),
                Transition {
                    run_id: f.id,
                    fire_time: f.fire_time,
                    from: Some(RunState::Running),
                    to,
                    reason: f.reason,
                },
            ));
            if to == RunState::Failed {
                retries_owed.push(super::rows::FailedRun {
                    id: f.id,
                    job_id: f.job_id,
                    schedule_id: f.schedule_id,
                    schedule_version: f.schedule_version,
                    attempt: f.attempt,
                    fire_time: f.fire_time,
                    cancel_requested: f.cancel_requested,
                });
            }
        }
        events::record_across_tenants(batch.tx.tx(), &transitions).await?;
    }
    let (retries, retry_events) = retries::create(batch.tx.conn(), &retries_owed).await?;
    events::record_across_tenants(batch.tx.tx(), &retry_events).await?;
    let released = overlap::release(batch.tx.conn(), &ended_schedules).await?;
    // The rest: already terminal (a late or repeated report), not started, or not the shard's.
    let rest: Vec<Uuid> = ids
        .iter()
        .filter(|id| !applied.contains_key(id))
        .copied()
        .collect();
    let stored: HashMap<Uuid, String> = if rest.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (Uuid, String)>(
            "SELECT id, state FROM runs
             WHERE id = ANY($1) AND shard = ANY($2) AND fire_time >= $3 AND fire_time <= $4",
        )
        .bind(&rest)
        .bind(&shards)
        .bind(range.0)
        .bind(range.1)
        .fetch_all(batch.tx.conn())
        .await?
        .into_iter()
        .collect()
    };
    let fenced = batch.commit().await?;
    let mut first = HashSet::new();
    let mut results = Vec::with_capacity(reports.len());
    for report in reports {
        let id = report.run.id;
        if fenced.contains(&report.run.lease.shard()) {
            continue;
        }
        let repeat = !first.insert(id);
        let result = match (applied.get(&id.as_uuid()), stored.get(&id.as_uuid())) {
            (Some(state), _) if !repeat => Ok(FinishedRun {
                state: *state,
                applied: true,
            }),
            (Some(state), _) => Ok(FinishedRun {
                state: *state,
                applied: false,
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

/// A run `finish_runs` moved.
#[derive(Debug, sqlx::FromRow)]
struct FinishedRow {
    id: Uuid,
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

/// The schedules of those of `ids` (of `shards`) that are in progress: whose overlap locks an
/// end of them must take before it locks the runs.
pub(super) async fn schedules_of_running(
    conn: &mut sqlx::PgConnection,
    ids: &[Uuid],
    shards: &[i16],
    range: (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT schedule_id FROM runs
         WHERE id = ANY($1) AND shard = ANY($2) AND fire_time >= $3 AND fire_time <= $4
           AND schedule_id IS NOT NULL AND state IN ('scheduled', 'queued', 'running')",
    )
    .bind(ids)
    .bind(shards)
    .bind(range.0)
    .bind(range.1)
    .fetch_all(conn)
    .await?)
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
