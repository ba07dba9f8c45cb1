//! Conformance checks of the schedule semantics (issue 5) every `Store + SchedulerStore`
//! implementation must pass: the overlap rule at fire and trigger time, held fires and their
//! release, retries created with the failure, fire counts and `max_runs`, what a change gives
//! back, pause times, and backfill. They run inside `scheduler_store_conformance_suite!`; they
//! must never rely on one implementation's internals.

use chrono::{DateTime, Duration, Utc};
use kairos_domain::{
    Env, FailureReason, JobId, OverlapPolicy, RetryDraft, RunId, RunState, ScheduleDraft,
    ScheduleId, ScheduleSpec, ShardId, SkipReason, TenantId, Trigger,
    run::{cancel_reason, event_reason},
};

use crate::conformance::{events_of, job_spec, manual_run, now, page, tenant};
use crate::{
    DueRun, FireState, FiredRuns, Job, LeasedRun, Materialize, NewRun, NewSchedule, NextFire,
    ReleasedRun, Run, RunAck, RunFilter, RunOutcome, RunReport, Schedule, ScheduleChange,
    SchedulerStore, ShardLease, Store, TerminalState,
};

/// A tenant, a job (with `attempts` attempts, 1 s backoffs), an every-minute schedule under
/// `policy`, and a lease on the schedule's shard.
struct Scene {
    tenant: TenantId,
    job: Job,
    schedule: Schedule,
    lease: ShardLease,
}

fn spec(policy: &str, max_runs: Option<i64>) -> ScheduleSpec {
    ScheduleDraft {
        cron: Some("0 * * * * *".into()),
        overlap_policy: Some(policy.into()),
        max_runs,
        ..ScheduleDraft::default()
    }
    .parse(now())
    .expect("schedule spec")
}

async fn scene_with<S: Store + SchedulerStore>(
    store: &S,
    spec: ScheduleSpec,
    attempts: i64,
) -> Scene {
    let tenant = tenant(store).await;
    let mut job_spec = job_spec("semantics");
    job_spec.retry = RetryDraft {
        max_attempts: Some(attempts),
        initial_backoff_seconds: Some(1),
        max_backoff_seconds: Some(1),
    }
    .parse()
    .expect("retry policy");
    let job = store
        .create_job(tenant, JobId::generate(), &job_spec)
        .await
        .expect("create job");
    // Each scene owns its shard: a schedule whose shard another scene of the check claimed
    // already is replaced by one elsewhere.
    let (schedule, lease) = loop {
        let id = ScheduleId::generate();
        let new = NewSchedule {
            id,
            job_id: job.id,
            next_fire_at: spec.timeline(id, 0).next_after(now()),
            live_limit: None,
            spec: spec.clone(),
            paused: false,
            pause_note: None,
        };
        let schedule = store
            .create_schedule(tenant, &new)
            .await
            .expect("create schedule");
        match store.claim_shard(schedule.shard, 1, "node-a").await {
            Ok(lease) => break (schedule, lease),
            Err(crate::StoreError::Fenced { .. }) => store
                .delete_schedule(tenant, schedule.id)
                .await
                .expect("drop the schedule of a taken shard"),
            Err(e) => panic!("claim the schedule's shard: {e}"),
        }
    };
    Scene {
        tenant,
        job,
        schedule,
        lease,
    }
}

async fn scene<S: Store + SchedulerStore>(store: &S, policy: &str, attempts: i64) -> Scene {
    scene_with(store, spec(policy, None), attempts).await
}

/// The schedule's next `n` fires from its `next_fire_at`, each naming the one after it (the
/// run limit aside: the store must enforce it whatever the planner passes).
fn fires(s: &Schedule, n: usize) -> Vec<Materialize> {
    let timeline = s.timeline().unlimited();
    let times: Vec<DateTime<Utc>> = s
        .next_fire_at
        .into_iter()
        .chain(
            timeline
                .after_fire()
                .fires_after(s.next_fire_at.expect("a next fire")),
        )
        .take(n + 1)
        .collect();
    times
        .windows(2)
        .map(|w| Materialize {
            schedule_id: s.id,
            schedule_version: s.version,
            fire_time: w[0],
            state: FireState::Scheduled,
            next_fire_at: Some(w[1]),
        })
        .collect()
}

/// Materializes the scene's next `n` fires; their run ids in fire order.
async fn planned<S: SchedulerStore>(store: &S, w: &Scene, n: usize) -> Vec<RunId> {
    let runs = store
        .materialize(&w.lease, &fires(&w.schedule, n))
        .await
        .expect("materialize");
    assert_eq!(runs.len(), n);
    runs.into_iter().map(|r| r.id).collect()
}

fn leased(lease: &ShardLease, id: RunId) -> LeasedRun {
    LeasedRun {
        lease: lease.clone(),
        id,
        fire_time: None,
    }
}

async fn fire<S: SchedulerStore>(store: &S, lease: &ShardLease, ids: &[RunId]) -> FiredRuns {
    let due: Vec<DueRun> = ids
        .iter()
        .map(|id| DueRun {
            run: leased(lease, *id),
            worker_id: None,
        })
        .collect();
    store.fire_runs(&due).await.expect("fire runs")
}

async fn ack<S: SchedulerStore>(store: &S, lease: &ShardLease, id: RunId) -> bool {
    let acked = store
        .ack_runs(&[RunAck {
            run: leased(lease, id),
            worker_id: "worker-1".into(),
        }])
        .await
        .expect("ack");
    acked.started.contains(&id)
}

async fn finish<S: SchedulerStore>(
    store: &S,
    lease: &ShardLease,
    id: RunId,
    state: TerminalState,
) -> crate::FinishedRuns {
    let finished = store
        .finish_runs(&[RunReport {
            run: leased(lease, id),
            outcome: RunOutcome {
                state,
                exit_code: matches!(state, TerminalState::Failed(FailureReason::ExitCode))
                    .then_some(1),
                log_tail: String::new(),
                log_truncated: false,
                total_bytes: None,
            },
        }])
        .await
        .expect("finish");
    assert!(
        finished.results.iter().all(|(_, r)| r.is_ok()),
        "{finished:?}"
    );
    finished
}

async fn get<S: Store>(store: &S, tenant: TenantId, id: RunId) -> Run {
    store.get_run(tenant, id).await.expect("get run")
}

async fn queued_ids<S: SchedulerStore>(store: &S, shard: ShardId) -> Vec<RunId> {
    store
        .queued_runs_across(&[shard], 100)
        .await
        .expect("queued runs")
        .into_iter()
        .map(|(_, id, _)| id)
        .collect()
}

/// A manual trigger of the scene's schedule under `policy`.
fn trigger(w: &Scene, policy: OverlapPolicy) -> NewRun {
    NewRun {
        id: RunId::generate(),
        job_id: w.job.id,
        schedule: Some((w.schedule.id, w.schedule.version)),
        shard: w.schedule.shard,
        trigger: Trigger::Manual,
        attempt: 1,
        retry_of: None,
        fire_time: Utc::now(),
        state: RunState::Queued,
        env: Env::default(),
        overlap: Some(policy),
    }
}

async fn triggered<S: Store>(store: &S, w: &Scene, policy: OverlapPolicy) -> Run {
    store
        .create_run(w.tenant, &trigger(w, policy), None)
        .await
        .expect("trigger")
        .0
}

fn released(w: &Scene, run: &Run) -> ReleasedRun {
    ReleasedRun {
        shard: w.schedule.shard,
        id: run.id,
        fire_time: run.fire_time,
    }
}

/// How many runs the schedule has.
async fn runs_of<S: Store>(store: &S, tenant: TenantId, schedule: ScheduleId) -> usize {
    let filter = RunFilter {
        schedule_id: Some(schedule),
        ..RunFilter::default()
    };
    store
        .list_runs(tenant, &filter, page(1000, None))
        .await
        .expect("list runs")
        .items
        .len()
}

// --- checks -----------------------------------------------------------------------------------

pub async fn a_fire_is_skipped_for_overlap_while_its_schedule_has_a_run_in_progress<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = scene(store, "skip", 1).await;
    let ids = planned(store, &w, 3).await;
    assert_eq!(fire(store, &w.lease, &ids[..1]).await.queued, [ids[0]]);

    // A queued run is in progress: the next fire does not start.
    let fired = fire(store, &w.lease, &ids[1..2]).await;
    assert_eq!(fired.skipped, [ids[1]]);
    assert!(fired.queued.is_empty() && fired.held.is_empty());
    let skipped = get(store, w.tenant, ids[1]).await;
    assert_eq!(skipped.state, RunState::Skipped);
    assert_eq!(skipped.reason.as_deref(), Some("overlap"));
    assert!(skipped.finished_at.is_some());
    assert_eq!(
        events_of(store, w.tenant, ids[1]).await,
        [
            (None, RunState::Scheduled, None),
            (
                Some(RunState::Scheduled),
                RunState::Skipped,
                Some("overlap".to_owned())
            )
        ]
    );

    // Once the run ended, the schedule is idle again.
    assert!(ack(store, &w.lease, ids[0]).await);
    finish(store, &w.lease, ids[0], TerminalState::Succeeded).await;
    assert_eq!(fire(store, &w.lease, &ids[2..]).await.queued, [ids[2]]);
}

pub async fn fires_of_one_schedule_in_one_batch_are_decided_in_fire_order<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = scene(store, "skip", 1).await;
    let ids = planned(store, &w, 2).await;
    let fired = fire(store, &w.lease, &[ids[1], ids[0]]).await;
    assert_eq!(fired.queued, [ids[0]], "the earlier fire starts");
    assert_eq!(fired.skipped, [ids[1]], "the later one overlaps it");

    // `replace`: the later fire of the batch supersedes the earlier one before it ever ran.
    let w = scene(store, "replace", 1).await;
    let ids = planned(store, &w, 2).await;
    let fired = fire(store, &w.lease, &ids).await;
    assert_eq!(fired.queued, [ids[1]]);
    assert_eq!(fired.skipped, [ids[0]]);
    assert!(fired.stop.is_empty());

    // `allow` fires them all.
    let w = scene(store, "allow", 1).await;
    let ids = planned(store, &w, 3).await;
    assert_eq!(fire(store, &w.lease, &ids).await.queued, ids);
}

pub async fn buffer_one_holds_one_fire_until_the_running_one_ends<S: Store + SchedulerStore>(
    store: &S,
) {
    let w = scene(store, "buffer_one", 1).await;
    let shard = w.schedule.shard;
    let ids = planned(store, &w, 4).await;
    fire(store, &w.lease, &ids[..1]).await;
    assert!(ack(store, &w.lease, ids[0]).await);

    let fired = fire(store, &w.lease, &ids[1..2]).await;
    assert_eq!(fired.held, [ids[1]]);
    assert!(fired.queued.is_empty());
    let held = get(store, w.tenant, ids[1]).await;
    assert_eq!(held.state, RunState::Queued);
    assert_eq!(held.blocked_by, Some(ids[0]));
    assert_eq!(
        events_of(store, w.tenant, ids[1]).await.last().cloned(),
        Some((
            Some(RunState::Scheduled),
            RunState::Queued,
            Some(event_reason::OVERLAP_HELD.to_owned())
        ))
    );
    // At most one fire waits.
    assert_eq!(fire(store, &w.lease, &ids[2..3]).await.skipped, [ids[2]]);

    // A held fire is not dispatched: not listed, not offered, not startable.
    assert!(!queued_ids(store, shard).await.contains(&ids[1]));
    assert!(
        store
            .offers_across(&[leased(&w.lease, ids[1])], false)
            .await
            .expect("offers")
            .is_empty()
    );
    assert!(
        store
            .queued_runs(&w.lease, 100)
            .await
            .expect("queued")
            .is_empty()
    );
    assert!(
        !ack(store, &w.lease, ids[1]).await,
        "a held fire never starts"
    );

    // The running one ends: the held fire is released, in the same transaction.
    let finished = finish(store, &w.lease, ids[0], TerminalState::Succeeded).await;
    assert_eq!(finished.released, [released(&w, &held)]);
    assert_eq!(get(store, w.tenant, ids[1]).await.blocked_by, None);
    assert_eq!(queued_ids(store, shard).await, [ids[1]]);
    assert!(ack(store, &w.lease, ids[1]).await);

    // Held again behind it; a cancel of the running one releases it once its worker stops it.
    assert_eq!(fire(store, &w.lease, &ids[3..]).await.held, [ids[3]]);
    let requested = store
        .cancel_run(w.tenant, ids[1])
        .await
        .expect("cancel running");
    assert!(requested.cancel_requested);
    let finished = finish(store, &w.lease, ids[1], TerminalState::Cancelled).await;
    let last = get(store, w.tenant, ids[3]).await;
    assert_eq!(finished.released, [released(&w, &last)]);
}

pub async fn replace_cancels_what_waits_stops_what_runs_and_then_starts<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = scene(store, "replace", 1).await;
    let ids = planned(store, &w, 3).await;
    fire(store, &w.lease, &ids[..1]).await;
    assert!(ack(store, &w.lease, ids[0]).await);

    let fired = fire(store, &w.lease, &ids[1..2]).await;
    assert_eq!(
        fired.held,
        [ids[1]],
        "it waits for the replaced run to stop"
    );
    assert_eq!(fired.stop, [(w.schedule.shard, ids[0])]);
    assert!(get(store, w.tenant, ids[0]).await.cancel_requested);
    let asked = store
        .cancel_requested_across(&[w.schedule.shard], 10)
        .await
        .expect("cancel requests");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].1, ids[0]);

    // A newer fire replaces the waiting one too.
    let fired = fire(store, &w.lease, &ids[2..]).await;
    assert_eq!(fired.held, [ids[2]]);
    let replaced = get(store, w.tenant, ids[1]).await;
    assert_eq!(replaced.state, RunState::Cancelled);
    assert_eq!(replaced.reason.as_deref(), Some(cancel_reason::REPLACED));
    assert_eq!(
        events_of(store, w.tenant, ids[1]).await.last().cloned(),
        Some((
            Some(RunState::Queued),
            RunState::Cancelled,
            Some(cancel_reason::REPLACED.to_owned())
        ))
    );

    // The stopped run's end records why, and lets the newest fire start.
    let finished = finish(store, &w.lease, ids[0], TerminalState::Cancelled).await;
    let stopped = get(store, w.tenant, ids[0]).await;
    assert_eq!(stopped.state, RunState::Cancelled);
    assert_eq!(stopped.reason.as_deref(), Some(cancel_reason::REPLACED));
    let newest = get(store, w.tenant, ids[2]).await;
    assert_eq!(finished.released, [released(&w, &newest)]);
    assert!(ack(store, &w.lease, ids[2]).await);
}

pub async fn a_trigger_is_decided_by_the_overlap_policy_unless_it_overrides_it<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = scene(store, "skip", 1).await;
    let ids = planned(store, &w, 1).await;
    fire(store, &w.lease, &ids).await;
    assert!(ack(store, &w.lease, ids[0]).await);

    let skipped = triggered(store, &w, OverlapPolicy::Skip).await;
    assert_eq!(skipped.state, RunState::Skipped);
    assert_eq!(skipped.reason.as_deref(), Some("overlap"));
    assert!(skipped.finished_at.is_some());
    assert_eq!(
        events_of(store, w.tenant, skipped.id).await,
        [(None, RunState::Skipped, Some("overlap".to_owned()))]
    );

    let allowed = triggered(store, &w, OverlapPolicy::Allow).await;
    assert_eq!(allowed.state, RunState::Queued);
    assert_eq!(allowed.blocked_by, None);

    let held = triggered(store, &w, OverlapPolicy::BufferOne).await;
    assert_eq!(held.state, RunState::Queued);
    assert_eq!(
        held.blocked_by,
        Some(ids[0]),
        "it waits for the running run"
    );
    assert_eq!(
        events_of(store, w.tenant, held.id).await,
        [(
            None,
            RunState::Queued,
            Some(event_reason::OVERLAP_HELD.to_owned())
        )]
    );
    assert_eq!(
        triggered(store, &w, OverlapPolicy::BufferOne).await.state,
        RunState::Skipped,
        "one fire waits already"
    );

    // Cancelling the queued trigger leaves the running fire: nothing is released yet.
    store
        .cancel_run(w.tenant, allowed.id)
        .await
        .expect("cancel queued");
    assert_eq!(get(store, w.tenant, held.id).await.blocked_by, Some(ids[0]));

    // `replace` stops the running fire and cancels the waiting one.
    let replacing = triggered(store, &w, OverlapPolicy::Replace).await;
    assert_eq!(replacing.state, RunState::Queued);
    assert_eq!(replacing.blocked_by, Some(ids[0]));
    assert!(get(store, w.tenant, ids[0]).await.cancel_requested);
    let old = get(store, w.tenant, held.id).await;
    assert_eq!(
        (old.state, old.reason.as_deref()),
        (RunState::Cancelled, Some(cancel_reason::REPLACED))
    );
    let finished = finish(store, &w.lease, ids[0], TerminalState::Cancelled).await;
    assert_eq!(finished.released, [released(&w, &replacing)]);

    // A not-started run's cancel releases the fire held behind it.
    let w = scene(store, "buffer_one", 1).await;
    let first = triggered(store, &w, OverlapPolicy::BufferOne).await;
    assert_eq!(first.state, RunState::Queued);
    let second = triggered(store, &w, OverlapPolicy::BufferOne).await;
    assert_eq!(second.blocked_by, Some(first.id));
    store
        .cancel_run(w.tenant, first.id)
        .await
        .expect("cancel the blocker");
    assert_eq!(get(store, w.tenant, second.id).await.blocked_by, None);
    assert_eq!(queued_ids(store, w.schedule.shard).await, [second.id]);
}

pub async fn a_failed_run_is_retried_with_backoff_until_its_attempts_run_out<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = scene(store, "skip", 3).await;
    let shard = w.schedule.shard;
    let ids = planned(store, &w, 1).await;
    let original = get(store, w.tenant, ids[0]).await;
    fire(store, &w.lease, &ids).await;
    assert!(ack(store, &w.lease, ids[0]).await);
    let before = Utc::now();
    let finished = finish(
        store,
        &w.lease,
        ids[0],
        TerminalState::Failed(FailureReason::ExitCode),
    )
    .await;
    assert_eq!(finished.retries.len(), 1);
    let due = finished.retries[0];
    assert_eq!((due.shard, due.fire_time), (shard, original.fire_time));
    let backoff = due.due_at - before;
    assert!(
        backoff > Duration::milliseconds(500) && backoff < Duration::seconds(5),
        "due about 1 s after the failure: {backoff}"
    );
    let retry = get(store, w.tenant, due.id).await;
    assert_eq!(retry.state, RunState::Scheduled);
    assert_eq!(retry.trigger, Trigger::Retry);
    assert_eq!(retry.attempt, 2);
    assert_eq!(retry.retry_of, Some(ids[0]));
    assert_eq!(
        retry.fire_time, original.fire_time,
        "another run of the same fire"
    );
    assert_eq!(retry.due_at, due.due_at);
    assert_eq!(retry.schedule_id, Some(w.schedule.id));
    assert_eq!(retry.schedule_version, original.schedule_version);
    assert_eq!(
        events_of(store, w.tenant, due.id).await,
        [(None, RunState::Scheduled, None)]
    );

    // The planner finds it by its due time, recovery sees when it is due.
    let soon = store
        .due_retries_across(&[shard], due.due_at, 10)
        .await
        .expect("due retries");
    assert_eq!(soon, [due]);
    assert!(
        store
            .due_retries_across(&[shard], due.due_at - Duration::milliseconds(1), 10)
            .await
            .expect("due retries")
            .is_empty()
    );
    let pending = store.shard_pending_runs(&w.lease).await.expect("pending");
    let p = pending.iter().find(|p| p.id == due.id).expect("listed");
    assert_eq!((p.due_at, p.fire_time), (due.due_at, original.fire_time));

    // A retry is part of its fire: the overlap rule does not skip it, even with a run of the
    // schedule queued meanwhile.
    let other = triggered(store, &w, OverlapPolicy::Allow).await;
    assert_eq!(other.state, RunState::Queued);
    assert_eq!(fire(store, &w.lease, &[due.id]).await.queued, [due.id]);
    assert!(ack(store, &w.lease, due.id).await);

    // A lost worker is a failure too.
    let lost = store
        .fail_lost_runs(&w.lease, &[due.id])
        .await
        .expect("fail lost");
    assert_eq!(lost.moved, [due.id]);
    assert_eq!(lost.retries.len(), 1);
    let third = get(store, w.tenant, lost.retries[0].id).await;
    assert_eq!((third.attempt, third.retry_of), (3, Some(due.id)));

    // The last attempt fails for good.
    fire(store, &w.lease, &[third.id]).await;
    assert!(ack(store, &w.lease, third.id).await);
    let finished = finish(
        store,
        &w.lease,
        third.id,
        TerminalState::Failed(FailureReason::TimedOut),
    )
    .await;
    assert!(finished.retries.is_empty(), "3 attempts in all");
}

pub async fn cancels_successes_stale_versions_and_deleted_jobs_are_never_retried<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = scene(store, "allow", 5).await;
    let ids = planned(store, &w, 3).await;
    fire(store, &w.lease, &ids).await;
    for id in &ids {
        assert!(ack(store, &w.lease, *id).await);
    }
    let ok = finish(store, &w.lease, ids[0], TerminalState::Succeeded).await;
    assert!(ok.retries.is_empty());
    let cancelled = finish(store, &w.lease, ids[1], TerminalState::Cancelled).await;
    assert!(cancelled.retries.is_empty());
    // A run whose cancel was asked is not retried, however it ends.
    store
        .cancel_run(w.tenant, ids[2])
        .await
        .expect("cancel running");
    let failed = finish(
        store,
        &w.lease,
        ids[2],
        TerminalState::Failed(FailureReason::TimedOut),
    )
    .await;
    assert!(failed.retries.is_empty());

    // A failure after the schedule changed: the old version's fire is over (I4).
    let ids = planned(store, &w, 4).await;
    fire(store, &w.lease, &ids[3..]).await;
    assert!(ack(store, &w.lease, ids[3]).await);
    store
        .update_schedule(
            w.tenant,
            w.schedule.id,
            &ScheduleChange {
                spec: spec("skip", None),
                paused: false,
                pause_note: None,
                next_fire: NextFire::After(now()),
                cancel_reason: cancel_reason::SCHEDULE_UPDATED,
                at: Utc::now(),
                live_limit: None,
            },
            w.schedule.version,
        )
        .await
        .expect("edit");
    let stale = finish(
        store,
        &w.lease,
        ids[3],
        TerminalState::Failed(FailureReason::OomKilled),
    )
    .await;
    assert!(stale.retries.is_empty());

    // An execute-now run is retried with its env; not once its job is deleted.
    let w = scene(store, "allow", 5).await;
    // Above any scene's token: the job's shard may be one a scene claimed.
    let lease = store
        .claim_shard(ShardId::of(w.job.id.as_uuid()), 1_000, "node-a")
        .await
        .expect("claim the job's shard");
    let (first, _) = store
        .create_run(w.tenant, &manual_run(w.job.id, Utc::now()), None)
        .await
        .expect("execute now");
    let (second, _) = store
        .create_run(w.tenant, &manual_run(w.job.id, Utc::now()), None)
        .await
        .expect("execute now");
    assert!(ack(store, &lease, first.id).await && ack(store, &lease, second.id).await);
    let retried = finish(
        store,
        &lease,
        first.id,
        TerminalState::Failed(FailureReason::StartFailed),
    )
    .await;
    let retry = get(store, w.tenant, retried.retries[0].id).await;
    assert_eq!(retry.env, first.env, "the run's env overrides carry over");
    assert_eq!(retry.schedule_id, None);
    store
        .delete_job(w.tenant, w.job.id)
        .await
        .expect("delete job");
    let cancelled_retry = get(store, w.tenant, retry.id).await;
    assert_eq!(
        (cancelled_retry.state, cancelled_retry.reason.as_deref()),
        (RunState::Cancelled, Some(cancel_reason::JOB_DELETED)),
        "a pending retry of a deleted job is cancelled with it"
    );
    let gone = finish(
        store,
        &lease,
        second.id,
        TerminalState::Failed(FailureReason::ExitCode),
    )
    .await;
    assert!(gone.retries.is_empty());
}

pub async fn materializing_counts_fires_and_ends_the_schedule_at_max_runs<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = scene_with(store, spec("allow", Some(2)), 1).await;
    let planned = fires(&w.schedule, 2);
    store
        .materialize(&w.lease, &planned)
        .await
        .expect("materialize");
    let s = store
        .get_schedule(w.tenant, w.schedule.id)
        .await
        .expect("get");
    assert_eq!(s.fire_count, 2);
    assert_eq!(s.last_fire_at, Some(planned[1].fire_time));
    assert_eq!(
        s.next_fire_at, None,
        "the count reached max_runs, whatever the planner passed"
    );
    // A repeated call counts nothing twice.
    store
        .materialize(&w.lease, &planned)
        .await
        .expect("materialize again");
    let again = store
        .get_schedule(w.tenant, w.schedule.id)
        .await
        .expect("get");
    assert_eq!(again.fire_count, 2);

    // Skipped fires count too.
    let w = scene(store, "allow", 1).await;
    let mut missed = fires(&w.schedule, 1);
    missed[0].state = FireState::Skipped(SkipReason::Missed);
    store
        .materialize(&w.lease, &missed)
        .await
        .expect("materialize");
    let s = store
        .get_schedule(w.tenant, w.schedule.id)
        .await
        .expect("get");
    assert_eq!((s.fire_count, s.next_fire_at), (1, missed[0].next_fire_at));
}

pub async fn a_change_gives_back_unfired_fires_and_its_version_may_fire_the_same_instants<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = scene_with(store, spec("allow", Some(10)), 1).await;
    let ids = planned(store, &w, 3).await;
    // One fired already (it counts), two wait for their time.
    fire(store, &w.lease, &ids[..1]).await;
    let before = store
        .get_schedule(w.tenant, w.schedule.id)
        .await
        .expect("get");
    assert_eq!(before.fire_count, 3);
    let edited = store
        .update_schedule(
            w.tenant,
            w.schedule.id,
            &ScheduleChange {
                spec: spec("skip", Some(10)),
                paused: false,
                pause_note: None,
                next_fire: NextFire::After(now()),
                cancel_reason: cancel_reason::SCHEDULE_UPDATED,
                at: Utc::now(),
                live_limit: None,
            },
            before.version,
        )
        .await
        .expect("edit");
    assert_eq!(
        edited.fire_count, 1,
        "the two cancelled before their time are given back"
    );
    for id in &ids {
        assert_eq!(get(store, w.tenant, *id).await.state, RunState::Cancelled);
    }
    // The new version plans the same instants again: they are its fires, not repeats (I1 is
    // per version), and the old version's cancelled runs stay as they were.
    let again: Vec<Materialize> = fires(&w.schedule, 3)[1..]
        .iter()
        .map(|f| Materialize {
            schedule_version: edited.version,
            ..f.clone()
        })
        .collect();
    let runs = store
        .materialize(&w.lease, &again)
        .await
        .expect("materialize the new version");
    assert!(
        runs.iter()
            .all(|r| r.created && r.state == RunState::Scheduled)
    );
    assert!(runs.iter().all(|r| !ids.contains(&r.id)));
    let repeat = store
        .materialize(&w.lease, &again)
        .await
        .expect("materialize again");
    assert!(repeat.iter().all(|r| !r.created));
}

pub async fn pauses_record_when_and_a_resume_may_plan_from_the_pause<S: Store + SchedulerStore>(
    store: &S,
) {
    let w = scene(store, "skip", 1).await;
    let s = w.schedule.clone();
    let pause = |version: i64, note: &str| {
        let change = ScheduleChange {
            spec: s.spec.clone(),
            paused: true,
            pause_note: Some(note.to_owned()),
            next_fire: NextFire::Keep,
            cancel_reason: cancel_reason::SCHEDULE_PAUSED,
            at: Utc::now(),
            live_limit: None,
        };
        async move {
            store
                .update_schedule(w.tenant, s.id, &change, version)
                .await
                .expect("pause")
        }
    };
    let paused = pause(s.version, "maintenance").await;
    let at = paused.paused_at.expect("a pause records when");
    assert!(at > Utc::now() - Duration::minutes(1) && at <= Utc::now());
    assert_eq!(paused.next_fire_at, s.next_fire_at);
    let repaused = pause(paused.version, "longer").await;
    assert_eq!(repaused.paused_at, Some(at), "still paused since then");

    let resume = |next_fire: NextFire, version: i64| {
        let change = ScheduleChange {
            spec: s.spec.clone(),
            paused: false,
            pause_note: None,
            next_fire,
            cancel_reason: cancel_reason::SCHEDULE_UPDATED,
            at: Utc::now(),
            live_limit: None,
        };
        async move {
            store
                .update_schedule(w.tenant, s.id, &change, version)
                .await
                .expect("resume")
        }
    };
    let later = Utc::now() + Duration::hours(3);
    let caught_up = resume(NextFire::SincePause { otherwise: later }, repaused.version).await;
    assert_eq!(caught_up.paused_at, None);
    assert_eq!(
        caught_up.next_fire_at,
        s.spec.timeline(s.id, 0).next_after(at),
        "the first fire after the pause"
    );
    // Not paused any more: catch-up has no pause to start from.
    let plain = resume(NextFire::SincePause { otherwise: later }, caught_up.version).await;
    assert_eq!(
        plain.next_fire_at,
        s.spec.timeline(s.id, 0).next_after(later)
    );

    // Created paused: paused since its creation.
    let new = NewSchedule {
        id: ScheduleId::generate(),
        job_id: w.job.id,
        spec: s.spec.clone(),
        paused: true,
        pause_note: None,
        next_fire_at: s.next_fire_at,
        live_limit: None,
    };
    let created = store
        .create_schedule(w.tenant, &new)
        .await
        .expect("create paused");
    assert!(created.paused_at.is_some());
    let active = store.get_schedule(w.tenant, s.id).await.expect("get");
    assert_eq!(active.paused_at, None);
}

pub async fn a_backfill_reruns_fires_that_did_not_succeed_and_a_dry_run_writes_nothing<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = scene(store, "allow", 1).await;
    let t = w.tenant;
    let base = now() - Duration::hours(2);
    let times: Vec<DateTime<Utc>> = (0..4).map(|i| base + Duration::minutes(i)).collect();
    // Fire 0 succeeded, 1 failed, 2 was missed, 3 never had a run.
    let past: Vec<Materialize> = times[..3]
        .iter()
        .map(|at| Materialize {
            schedule_id: w.schedule.id,
            schedule_version: w.schedule.version,
            fire_time: *at,
            state: FireState::Scheduled,
            next_fire_at: w.schedule.next_fire_at,
        })
        .collect();
    let mut past = past;
    past[2].state = FireState::Skipped(SkipReason::Missed);
    let runs = store
        .materialize(&w.lease, &past)
        .await
        .expect("materialize");
    fire(store, &w.lease, &[runs[0].id, runs[1].id]).await;
    assert!(ack(store, &w.lease, runs[0].id).await && ack(store, &w.lease, runs[1].id).await);
    finish(store, &w.lease, runs[0].id, TerminalState::Succeeded).await;
    finish(
        store,
        &w.lease,
        runs[1].id,
        TerminalState::Failed(FailureReason::ExitCode),
    )
    .await;

    let schedule = store.get_schedule(t, w.schedule.id).await.expect("get");
    let before = runs_of(store, t, schedule.id).await;
    let dry = store
        .create_backfill_runs(t, &schedule, &times, true)
        .await
        .expect("dry run");
    assert!(dry.created.is_empty());
    assert_eq!(dry.left_alone, [times[0]], "only the fire that succeeded");
    assert_eq!(
        runs_of(store, t, schedule.id).await,
        before,
        "a dry run writes nothing"
    );

    let done = store
        .create_backfill_runs(t, &schedule, &times, false)
        .await
        .expect("backfill");
    assert_eq!(done.left_alone, [times[0]]);
    assert_eq!(
        done.created.iter().map(|r| r.fire_time).collect::<Vec<_>>(),
        times[1..],
        "failed, missed and never-run fires run again"
    );
    assert!(
        done.created
            .iter()
            .all(|r| r.trigger == Trigger::Backfill && r.state == RunState::Queued)
    );
    // While they are in progress, a repeat creates nothing.
    let repeat = store
        .create_backfill_runs(t, &schedule, &times, false)
        .await
        .expect("repeat");
    assert!(repeat.created.is_empty());
    assert_eq!(repeat.left_alone, times);
}

pub async fn schedules_and_retries_are_read_for_the_named_shards_only<S: Store + SchedulerStore>(
    store: &S,
) {
    let a = scene(store, "allow", 2).await;
    let b = scene(store, "allow", 2).await;
    let mine = store
        .schedules_of_shard(&a.lease, &[a.schedule.id, b.schedule.id])
        .await
        .expect("schedules of the shard");
    if a.schedule.shard == b.schedule.shard {
        assert_eq!(mine.len(), 2);
    } else {
        assert_eq!(
            mine.iter().map(|s| s.id).collect::<Vec<_>>(),
            [a.schedule.id]
        );
        assert_eq!(mine[0].version, a.schedule.version);
        assert_eq!(mine[0].spec, a.schedule.spec);
    }
    assert!(
        store
            .schedules_of_shard(&a.lease, &[])
            .await
            .expect("none asked")
            .is_empty()
    );

    let mut retries = Vec::new();
    for w in [&a, &b] {
        let ids = planned(store, w, 1).await;
        fire(store, &w.lease, &ids).await;
        assert!(ack(store, &w.lease, ids[0]).await);
        let done = finish(
            store,
            &w.lease,
            ids[0],
            TerminalState::Failed(FailureReason::ExitCode),
        )
        .await;
        retries.push(done.retries[0]);
    }
    let later = Utc::now() + Duration::minutes(1);
    let only_a = store
        .due_retries_across(&[a.schedule.shard], later, 10)
        .await
        .expect("due retries");
    if a.schedule.shard == b.schedule.shard {
        assert_eq!(only_a.len(), 2);
    } else {
        assert_eq!(only_a, [retries[0]]);
    }
    assert!(
        store
            .due_retries_across(&[], later, 10)
            .await
            .expect("no shards")
            .is_empty()
    );
}

/// How many times each race is run: enough interleavings to catch a missing lock on a real
/// database, few enough for a busy machine.
const RACES: usize = 12;

pub async fn a_change_racing_a_fire_never_leaves_a_run_of_the_old_version_startable<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    for round in 0..RACES {
        let w = scene(store, "allow", 1).await;
        let ids = planned(store, &w, 2).await;
        // Half the fires start on a worker that holds them prepared, half only queue.
        let worker = (round % 2 == 0).then(|| "worker-1".to_owned());
        let due: Vec<DueRun> = ids
            .iter()
            .map(|id| DueRun {
                run: leased(&w.lease, *id),
                worker_id: worker.clone(),
            })
            .collect();
        let (reason, paused) = match round % 3 {
            0 => (cancel_reason::SCHEDULE_UPDATED, false),
            1 => (cancel_reason::SCHEDULE_PAUSED, true),
            _ => (cancel_reason::SCHEDULE_DELETED, false),
        };
        let change = async {
            if reason == cancel_reason::SCHEDULE_DELETED {
                store
                    .delete_schedule(w.tenant, w.schedule.id)
                    .await
                    .expect("delete");
            } else {
                store
                    .update_schedule(
                        w.tenant,
                        w.schedule.id,
                        &ScheduleChange {
                            spec: spec("allow", None),
                            paused,
                            pause_note: None,
                            next_fire: NextFire::After(now()),
                            cancel_reason: reason,
                            at: Utc::now(),
                            live_limit: None,
                        },
                        w.schedule.version,
                    )
                    .await
                    .expect("change");
            }
        };
        let (fired, ()) = tokio::join!(store.fire_runs(&due), change);
        fired.expect("fire");
        for id in &ids {
            let r = get(store, w.tenant, *id).await;
            match r.state {
                // The start committed first: the change found it running and left it.
                RunState::Running => assert!(worker.is_some()),
                RunState::Cancelled => assert_eq!(r.reason.as_deref(), Some(reason)),
                other => panic!("round {round}: a run of the old version is {other} (I4)"),
            }
            assert!(!ack(store, &w.lease, *id).await, "round {round}: I4");
        }
    }
}

pub async fn a_change_racing_a_failure_never_leaves_a_retry_of_the_old_version<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    for round in 0..RACES {
        let w = scene(store, "allow", 3).await;
        let ids = planned(store, &w, 1).await;
        fire(store, &w.lease, &ids).await;
        assert!(ack(store, &w.lease, ids[0]).await);
        let report = [RunReport {
            run: leased(&w.lease, ids[0]),
            outcome: RunOutcome {
                state: TerminalState::Failed(FailureReason::ExitCode),
                exit_code: Some(1),
                log_tail: String::new(),
                log_truncated: false,
                total_bytes: None,
            },
        }];
        let change = ScheduleChange {
            spec: spec("allow", None),
            paused: round % 2 == 1,
            pause_note: None,
            next_fire: NextFire::After(now()),
            cancel_reason: cancel_reason::SCHEDULE_UPDATED,
            at: Utc::now(),
            live_limit: None,
        };
        let (finished, changed) = tokio::join!(
            store.finish_runs(&report),
            store.update_schedule(w.tenant, w.schedule.id, &change, w.schedule.version)
        );
        let finished = finished.expect("finish");
        changed.expect("change");
        for retry in finished.retries {
            let r = get(store, w.tenant, retry.id).await;
            assert_eq!(
                (r.state, r.reason.as_deref()),
                (RunState::Cancelled, Some(cancel_reason::SCHEDULE_UPDATED)),
                "round {round}: a retry of the old version was created before the change, \
                 which cancelled it"
            );
        }
        assert!(
            store
                .due_retries_across(&[w.schedule.shard], Utc::now() + Duration::hours(1), 10)
                .await
                .expect("due retries")
                .is_empty(),
            "round {round}: no retry of the old version is left to fire"
        );
    }
}

pub async fn a_fire_racing_the_end_of_the_run_it_waits_for_is_never_stranded<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    for round in 0..RACES {
        let w = scene(store, "buffer_one", 1).await;
        let ids = planned(store, &w, 2).await;
        fire(store, &w.lease, &ids[..1]).await;
        assert!(ack(store, &w.lease, ids[0]).await);
        let report = [RunReport {
            run: leased(&w.lease, ids[0]),
            outcome: RunOutcome {
                state: TerminalState::Succeeded,
                exit_code: Some(0),
                log_tail: String::new(),
                log_truncated: false,
                total_bytes: None,
            },
        }];
        let due = [DueRun {
            run: leased(&w.lease, ids[1]),
            worker_id: None,
        }];
        let (fired, finished) = tokio::join!(store.fire_runs(&due), store.finish_runs(&report));
        let (fired, finished) = (fired.expect("fire"), finished.expect("finish"));
        let second = get(store, w.tenant, ids[1]).await;
        assert_eq!(second.state, RunState::Queued);
        assert_eq!(
            second.blocked_by, None,
            "round {round}: started at once or released by the end ({fired:?}, {:?})",
            finished.released
        );
        assert_eq!(queued_ids(store, w.schedule.shard).await, [ids[1]]);
    }
}
