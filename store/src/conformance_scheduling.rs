//! The conformance suite every `SchedulerStore` implementation runs
//! (`scheduler_store_conformance_suite!`): fencing, materializing, queueing, acking, finishing
//! and recovery reads as the trait promises; it must never rely on one implementation's
//! internals or on state left by another check.
//!
//! ```text
//! async fn pg() -> (PgStore, kairos_testkit::TestDatabase) { /* fresh, migrated, empty */ }
//! kairos_store::scheduler_store_conformance_suite!(pg());
//! ```
//!
//! `store/tests/postgres.rs` and `store/tests/sqlite.rs` generate it for each implementation.
//!
//! The store must implement both [`Store`] (to set the scene as the API would) and
//! [`SchedulerStore`]; the macro's expression is awaited once per test, like
//! `store_conformance_suite!`'s.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use kairos_domain::{
    Env, ErrorCode, FailureReason, JobId, RunId, RunState, ScheduleId, ShardId, SkipReason,
    TenantId, Trigger, run::cancel_reason,
};

use crate::conformance::{
    assert_not_found, change, cron_spec, events_of, job, job_spec, manual_run, now, page, tenant,
};
pub use crate::conformance_semantics::*;
use crate::{
    DueRun, FinishedRun, FireState, Job, LOG_TAIL_MAX_BYTES, LeasedRun, LiveLog, Materialize,
    NewSchedule, Result, Run, RunAck, RunFilter, RunOutcome, RunReport, Schedule, SchedulerStore,
    ShardLease, Store, StoreError, TerminalState,
};

/// Generates one `#[tokio::test]` per scheduler conformance check, each on a fresh store from
/// `$make` (an async expression yielding a migrated, empty store, or a `(store, guard)` pair).
#[macro_export]
macro_rules! scheduler_store_conformance_suite {
    ($make:expr) => {
        $crate::scheduler_store_conformance_suite!(@tests $make;
            a_claim_refuses_an_older_or_equal_token,
            concurrent_claims_leave_the_highest_token,
            a_write_with_a_superseded_lease_fails_and_writes_nothing,
            due_schedules_are_the_shards_unpaused_due_schedules_in_fire_order,
            materializing_the_same_fires_twice_creates_one_run_per_fire_and_advances_next_fire_at,
            concurrent_materializations_of_the_same_fires_create_one_run_each,
            a_schedule_change_between_planning_and_materializing_drops_the_stale_fires,
            skipped_fires_are_recorded_with_their_reason,
            an_ack_succeeds_once_then_answers_none,
            an_ack_after_a_cancel_or_a_schedule_change_answers_none,
            an_assignment_carries_the_job_and_the_merged_env,
            finishing_a_run_is_idempotent_and_never_moves_backwards,
            every_transition_has_exactly_one_event,
            lost_runs_fail_with_worker_lost_only_if_running,
            queueing_moves_only_scheduled_runs_of_the_shard,
            skipping_moves_only_scheduled_or_queued_runs,
            the_log_tail_is_capped_keeping_its_end,
            the_pending_runs_of_a_shard_are_all_its_non_terminal_runs,
            offers_are_only_queued_uncancelled_runs_of_the_shard_with_the_merged_env,
            cross_shard_reads_return_only_the_named_shards,
            committed_changes_are_followed_as_shard_hints,
            a_batch_across_shards_writes_the_current_leases_and_reports_the_superseded,
            a_fire_starts_the_runs_a_worker_holds_unless_cancelled_or_changed,
            batched_acks_and_reports_span_shards_and_record_a_repeated_report_once,
            upcoming_offers_include_scheduled_runs,
            materializing_across_shards_writes_the_current_leases_only,
            cancel_requests_of_running_runs_are_read_across_shards,
            live_logs_are_stored_for_running_runs_only_and_never_move_back,
            offers_carry_the_opened_registry_credential_of_the_job,
            // The schedule semantics (`conformance_semantics`).
            a_fire_is_skipped_for_overlap_while_its_schedule_has_a_run_in_progress,
            fires_of_one_schedule_in_one_batch_are_decided_in_fire_order,
            buffer_one_holds_one_fire_until_the_running_one_ends,
            replace_cancels_what_waits_stops_what_runs_and_then_starts,
            a_trigger_is_decided_by_the_overlap_policy_unless_it_overrides_it,
            a_failed_run_is_retried_with_backoff_until_its_attempts_run_out,
            cancels_successes_stale_versions_and_deleted_jobs_are_never_retried,
            materializing_counts_fires_and_ends_the_schedule_at_max_runs,
            a_change_gives_back_unfired_fires_and_its_version_may_fire_the_same_instants,
            pauses_record_when_and_a_resume_may_plan_from_the_pause,
            a_backfill_reruns_fires_that_did_not_succeed_and_a_dry_run_writes_nothing,
            schedules_and_retries_are_read_for_the_named_shards_only,
            a_change_racing_a_fire_never_leaves_a_run_of_the_old_version_startable,
            a_change_racing_a_failure_never_leaves_a_retry_of_the_old_version,
            a_fire_racing_the_end_of_the_run_it_waits_for_is_never_stranded,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, guard) = $crate::conformance::StoreFixture::into_parts($make.await);
                $crate::conformance_scheduling::$name(&store).await;
                drop(store);
                drop(guard);
            }
        )*
    };
}

// --- fixtures ---------------------------------------------------------------------------------

/// A tenant, a job, a schedule (cron, every minute) and a lease on the schedule's shard.
struct World {
    tenant: TenantId,
    job: Job,
    schedule: Schedule,
    lease: ShardLease,
}

async fn world<S: Store + SchedulerStore>(store: &S) -> World {
    let tenant = tenant(store).await;
    let job = job(store, tenant).await;
    let first = now() + Duration::minutes(1);
    let schedule = schedule_in(store, tenant, job.id, None, first, false).await;
    let lease = store
        .claim_shard(schedule.shard, 1, "node-a")
        .await
        .expect("claim the schedule's shard");
    World {
        tenant,
        job,
        schedule,
        lease,
    }
}

/// A new schedule (every minute) of `job` whose next fire is `next_fire_at`, in `shard` if
/// given (ids are drawn until one hashes there).
async fn schedule_in<S: Store>(
    store: &S,
    tenant: TenantId,
    job: JobId,
    shard: Option<ShardId>,
    next_fire_at: DateTime<Utc>,
    paused: bool,
) -> Schedule {
    let id = loop {
        let id = ScheduleId::generate();
        if shard.is_none_or(|s| ShardId::of(id.as_uuid()) == s) {
            break id;
        }
    };
    let new = NewSchedule {
        id,
        job_id: job,
        spec: cron_spec("0 * * * * *"),
        paused,
        pause_note: None,
        next_fire_at: Some(next_fire_at),
        live_limit: None,
    };
    store
        .create_schedule(tenant, &new)
        .await
        .expect("create schedule")
}

/// A shard other than `shard`.
fn other_shard(shard: ShardId) -> ShardId {
    ShardId::new((shard.get() + 1) % kairos_domain::SHARD_COUNT).expect("a shard in range")
}

/// The schedule's next `n` fires from its stored `next_fire_at`.
fn fire_times(s: &Schedule, n: usize) -> Vec<DateTime<Utc>> {
    std::iter::successors(s.next_fire_at, |t| s.spec.next_fire_after(*t))
        .take(n)
        .collect()
}

/// The fire of `s` at `at`, computed from its current version.
fn fire(s: &Schedule, at: DateTime<Utc>, state: FireState) -> Materialize {
    Materialize {
        schedule_id: s.id,
        schedule_version: s.version,
        fire_time: at,
        state,
        next_fire_at: s.spec.next_fire_after(at),
    }
}

/// Materializes the schedule's next `n` fires as `scheduled` runs; their ids in fire order.
async fn scheduled_runs<S: SchedulerStore>(store: &S, w: &World, n: usize) -> Vec<RunId> {
    let fires: Vec<Materialize> = fire_times(&w.schedule, n)
        .into_iter()
        .map(|t| fire(&w.schedule, t, FireState::Scheduled))
        .collect();
    let runs = store
        .materialize(&w.lease, &fires)
        .await
        .expect("materialize");
    assert_eq!(runs.len(), n);
    runs.into_iter().map(|r| r.id).collect()
}

async fn queue<S: SchedulerStore>(store: &S, lease: &ShardLease, ids: &[RunId]) {
    let moved = store.queue_runs(lease, ids).await.expect("queue runs");
    assert_eq!(moved.len(), ids.len(), "every run was scheduled");
}

async fn start<S: SchedulerStore>(store: &S, lease: &ShardLease, id: RunId) {
    store
        .ack_run(lease, id, "worker-1")
        .await
        .expect("ack")
        .expect("the run was queued");
}

fn outcome(state: TerminalState, exit_code: Option<i32>, log: &str) -> RunOutcome {
    RunOutcome {
        state,
        exit_code,
        log_tail: log.to_owned(),
        log_truncated: false,
        total_bytes: None,
    }
}

async fn run<S: Store>(store: &S, tenant: TenantId, id: RunId) -> Run {
    store.get_run(tenant, id).await.expect("get run")
}

async fn runs_of<S: Store>(store: &S, tenant: TenantId, schedule: ScheduleId) -> Vec<Run> {
    let filter = RunFilter {
        schedule_id: Some(schedule),
        ..RunFilter::default()
    };
    store
        .list_runs(tenant, &filter, page(1000, None))
        .await
        .expect("list runs")
        .items
}

#[track_caller]
fn assert_fenced<T: std::fmt::Debug>(result: Result<T>, shard: ShardId, token: i64) {
    match result {
        Err(StoreError::Fenced { shard: s, token: t }) => assert_eq!((s, t), (shard, token)),
        other => panic!(
            "expected shard {} fenced at {token}, got {other:?}",
            shard.get()
        ),
    }
}

// --- checks -----------------------------------------------------------------------------------

pub async fn a_claim_refuses_an_older_or_equal_token<S: Store + SchedulerStore>(store: &S) {
    let shard = ShardId::new(7).expect("shard");
    let refused = StoreError::Fenced { shard, token: 1 };
    assert_eq!(refused.code(), ErrorCode::FailedPrecondition);
    assert_eq!(
        store.highest_fence_token().await.expect("highest token"),
        0,
        "no shard was ever claimed"
    );
    let lease = store.claim_shard(shard, 5, "node-a").await.expect("claim");
    assert_eq!((lease.shard(), lease.token()), (shard, 5));
    for token in [5, 4, 0, -1] {
        assert_fenced(
            store.claim_shard(shard, token, "node-b").await,
            shard,
            token,
        );
    }
    // Shards are fenced independently.
    let other = ShardId::new(8).expect("shard");
    store
        .claim_shard(other, 1, "node-b")
        .await
        .expect("claim another shard");

    let newer = store
        .claim_shard(shard, 6, "node-b")
        .await
        .expect("a newer token wins");
    assert_eq!(newer.token(), 6);
    assert_fenced(store.claim_shard(shard, 6, "node-a").await, shard, 6);
    assert_eq!(
        store.highest_fence_token().await.expect("highest token"),
        6,
        "the highest claim of any shard; refused claims leave it"
    );
    // The superseded lease no longer reads or writes the shard.
    assert_fenced(store.queued_runs(&lease, 10).await, shard, 5);
    store
        .queued_runs(&newer, 10)
        .await
        .expect("the current lease reads");
}

pub async fn concurrent_claims_leave_the_highest_token<S: Store + SchedulerStore>(store: &S) {
    let shard = ShardId::new(3).expect("shard");
    let (low, high) = tokio::join!(
        store.claim_shard(shard, 2, "node-a"),
        store.claim_shard(shard, 3, "node-b"),
    );
    high.expect("the highest token always wins");
    if let Err(e) = low {
        assert!(matches!(e, StoreError::Fenced { token: 2, .. }), "{e:?}");
    }
    assert_fenced(store.claim_shard(shard, 3, "node-c").await, shard, 3);
    store
        .claim_shard(shard, 4, "node-c")
        .await
        .expect("a newer token");
}

pub async fn a_write_with_a_superseded_lease_fails_and_writes_nothing<S: Store + SchedulerStore>(
    store: &S,
) {
    let w = world(store).await;
    let shard = w.schedule.shard;
    let times = fire_times(&w.schedule, 3);
    let first = store
        .materialize(
            &w.lease,
            &[fire(&w.schedule, times[0], FireState::Scheduled)],
        )
        .await
        .expect("materialize");
    let id = first[0].id;
    queue(store, &w.lease, &[id]).await;

    let newer = store.claim_shard(shard, 2, "node-b").await.expect("claim");
    let stale = &w.lease;
    let later = fire(&w.schedule, times[1], FireState::Scheduled);
    assert_fenced(store.materialize(stale, &[later]).await, shard, 1);
    assert_fenced(
        store
            .due_schedules(stale, now() + Duration::days(1), 10)
            .await,
        shard,
        1,
    );
    assert_fenced(store.queue_runs(stale, &[id]).await, shard, 1);
    assert_fenced(
        store.skip_runs(stale, &[id], SkipReason::Overlap).await,
        shard,
        1,
    );
    assert_fenced(store.ack_run(stale, id, "worker-1").await, shard, 1);
    let ok = outcome(TerminalState::Succeeded, Some(0), "");
    assert_fenced(store.finish_run(stale, id, &ok).await, shard, 1);
    assert_fenced(store.fail_lost_runs(stale, &[id]).await, shard, 1);
    assert_fenced(store.shard_pending_runs(stale).await, shard, 1);
    assert_fenced(store.queued_runs(stale, 10).await, shard, 1);

    // Nothing the stale holder tried was written.
    let runs = runs_of(store, w.tenant, w.schedule.id).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, RunState::Queued);
    assert_eq!(events_of(store, w.tenant, id).await.len(), 2);
    let s = store
        .get_schedule(w.tenant, w.schedule.id)
        .await
        .expect("get schedule");
    assert_eq!(
        s.next_fire_at,
        Some(times[1]),
        "advanced by the first call only"
    );

    // The new holder carries on.
    assert!(
        store
            .ack_run(&newer, id, "worker-1")
            .await
            .expect("ack")
            .is_some()
    );
}

pub async fn due_schedules_are_the_shards_unpaused_due_schedules_in_fire_order<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = world(store).await; // due in one minute
    let shard = Some(w.schedule.shard);
    let base = now();
    let (t, j) = (w.tenant, w.job.id);
    let third = schedule_in(store, t, j, shard, base + Duration::minutes(3), false).await;
    let second = schedule_in(store, t, j, shard, base + Duration::seconds(90), false).await;
    schedule_in(store, t, j, shard, base, true).await; // paused
    schedule_in(store, t, j, shard, base + Duration::hours(2), false).await; // beyond `until`
    let elsewhere = Some(other_shard(w.schedule.shard));
    schedule_in(store, t, j, elsewhere, base, false).await; // another shard

    let until = base + Duration::minutes(5);
    let due = store
        .due_schedules(&w.lease, until, 10)
        .await
        .expect("due schedules");
    let ids: Vec<ScheduleId> = due.iter().map(|d| d.id).collect();
    assert_eq!(ids, [w.schedule.id, second.id, third.id]);
    let d = &due[1];
    assert_eq!((d.tenant_id, d.job_id, d.version), (t, j, 1));
    assert_eq!(d.spec, second.spec);
    assert_eq!(Some(d.next_fire_at), second.next_fire_at);

    let first_two = store
        .due_schedules(&w.lease, until, 2)
        .await
        .expect("due schedules");
    assert_eq!(
        first_two.iter().map(|d| d.id).collect::<Vec<_>>(),
        [w.schedule.id, second.id]
    );
    assert!(
        store
            .due_schedules(&w.lease, base - Duration::minutes(1), 10)
            .await
            .expect("due schedules")
            .is_empty()
    );
}

pub async fn materializing_the_same_fires_twice_creates_one_run_per_fire_and_advances_next_fire_at<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = world(store).await;
    let s = &w.schedule;
    let times = fire_times(s, 4);
    let fires = [
        fire(s, times[0], FireState::Scheduled),
        fire(s, times[1], FireState::Scheduled),
    ];
    let first = store
        .materialize(&w.lease, &fires)
        .await
        .expect("materialize");
    assert_eq!(
        first
            .iter()
            .map(|r| (r.schedule_id, r.fire_time, r.state, r.created))
            .collect::<Vec<_>>(),
        [
            (s.id, times[0], RunState::Scheduled, true),
            (s.id, times[1], RunState::Scheduled, true)
        ]
    );
    let read = store.get_schedule(w.tenant, s.id).await.expect("get");
    assert_eq!(read.next_fire_at, Some(times[2]));
    assert_eq!(read.version, s.version, "planning is not an edit");

    // A crash after the commit and a retry of the same batch: nothing new (I1).
    let again = store
        .materialize(&w.lease, &fires)
        .await
        .expect("materialize again");
    assert_eq!(
        again.iter().map(|r| (r.id, r.created)).collect::<Vec<_>>(),
        first.iter().map(|r| (r.id, false)).collect::<Vec<_>>()
    );
    let runs = runs_of(store, w.tenant, s.id).await;
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert_eq!(r.trigger, Trigger::Schedule);
        assert_eq!(r.attempt, 1);
        assert_eq!(r.schedule_version, Some(s.version));
        assert_eq!((r.job_id, r.shard), (w.job.id, s.shard));
        assert_eq!(events_of(store, w.tenant, r.id).await.len(), 1);
    }

    // An older fire never moves next_fire_at back.
    store
        .materialize(&w.lease, &fires[..1])
        .await
        .expect("materialize an older fire");
    let read = store.get_schedule(w.tenant, s.id).await.expect("get");
    assert_eq!(read.next_fire_at, Some(times[2]));

    // A fire repeated within one batch counts once.
    let dup = fire(s, times[2], FireState::Scheduled);
    let once = store
        .materialize(&w.lease, &[dup.clone(), dup])
        .await
        .expect("materialize a repeated fire");
    assert_eq!(once.len(), 1);
    let read = store.get_schedule(w.tenant, s.id).await.expect("get");
    assert_eq!(read.next_fire_at, Some(times[3]));
    assert_eq!(runs_of(store, w.tenant, s.id).await.len(), 3);
}

pub async fn concurrent_materializations_of_the_same_fires_create_one_run_each<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = world(store).await;
    let fires: Vec<Materialize> = fire_times(&w.schedule, 5)
        .into_iter()
        .map(|t| fire(&w.schedule, t, FireState::Scheduled))
        .collect();
    let (a, b) = tokio::join!(
        store.materialize(&w.lease, &fires),
        store.materialize(&w.lease, &fires)
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a.len(), 5);
    assert_eq!(b.len(), 5);
    assert_eq!(
        a.iter().map(|r| r.id).collect::<Vec<_>>(),
        b.iter().map(|r| r.id).collect::<Vec<_>>(),
        "both calls answer the same runs"
    );
    let created = a.iter().chain(&b).filter(|r| r.created).count();
    assert_eq!(created, 5);
    assert_eq!(runs_of(store, w.tenant, w.schedule.id).await.len(), 5);
}

pub async fn a_schedule_change_between_planning_and_materializing_drops_the_stale_fires<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = world(store).await;
    let s = &w.schedule;
    let due = store
        .due_schedules(&w.lease, now() + Duration::minutes(5), 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].version, 1);
    let times = fire_times(s, 2);
    let planned = fire(s, times[0], FireState::Scheduled);

    let edited = store
        .update_schedule(
            w.tenant,
            s.id,
            &change(
                cron_spec("30 * * * * *"),
                false,
                cancel_reason::SCHEDULE_UPDATED,
            ),
            1,
        )
        .await
        .expect("edit");
    let runs = store
        .materialize(&w.lease, &[planned])
        .await
        .expect("materialize");
    assert!(runs.is_empty(), "the edit won: {runs:?}");
    assert!(runs_of(store, w.tenant, s.id).await.is_empty());
    let read = store.get_schedule(w.tenant, s.id).await.expect("get");
    assert_eq!(
        read.next_fire_at, edited.next_fire_at,
        "left as the edit set it"
    );

    // A pause moves the version too, and fires of a paused version are never recorded.
    let paused = store
        .update_schedule(
            w.tenant,
            s.id,
            &change(edited.spec.clone(), true, cancel_reason::SCHEDULE_PAUSED),
            edited.version,
        )
        .await
        .expect("pause");
    let from_edit = fire(&edited, times[1], FireState::Scheduled);
    let from_paused = fire(&paused, times[1], FireState::Skipped(SkipReason::Missed));
    assert!(
        store
            .materialize(&w.lease, &[from_edit, from_paused.clone()])
            .await
            .expect("materialize")
            .is_empty()
    );

    // A deleted schedule, and one of another shard, get nothing either.
    store.delete_schedule(w.tenant, s.id).await.expect("delete");
    assert!(
        store
            .materialize(&w.lease, &[from_paused])
            .await
            .expect("materialize")
            .is_empty()
    );
    let elsewhere = schedule_in(
        store,
        w.tenant,
        w.job.id,
        Some(other_shard(s.shard)),
        times[0],
        false,
    )
    .await;
    let foreign = fire(&elsewhere, times[0], FireState::Scheduled);
    assert!(
        store
            .materialize(&w.lease, &[foreign])
            .await
            .expect("materialize")
            .is_empty()
    );
    let all = store
        .list_runs(w.tenant, &RunFilter::default(), page(100, None))
        .await
        .expect("list runs");
    assert!(all.items.is_empty(), "{:?}", all.items);
}

pub async fn skipped_fires_are_recorded_with_their_reason<S: Store + SchedulerStore>(store: &S) {
    let w = world(store).await;
    let s = &w.schedule;
    let times = fire_times(s, 3);
    let runs = store
        .materialize(
            &w.lease,
            &[
                fire(s, times[0], FireState::Skipped(SkipReason::Missed)),
                fire(s, times[1], FireState::Scheduled),
            ],
        )
        .await
        .expect("materialize");
    assert_eq!(
        runs.iter().map(|r| r.state).collect::<Vec<_>>(),
        [RunState::Skipped, RunState::Scheduled]
    );
    let skipped = run(store, w.tenant, runs[0].id).await;
    assert_eq!(skipped.state, RunState::Skipped);
    assert_eq!(skipped.reason.as_deref(), Some("missed"));
    assert!(skipped.finished_at.is_some());
    assert_eq!(
        events_of(store, w.tenant, skipped.id).await,
        [(None, RunState::Skipped, Some("missed".to_owned()))]
    );
    let pending = store
        .shard_pending_runs(&w.lease)
        .await
        .expect("pending runs");
    assert_eq!(
        pending.iter().map(|r| r.id).collect::<Vec<_>>(),
        [runs[1].id]
    );
    let read = store.get_schedule(w.tenant, s.id).await.expect("get");
    assert_eq!(read.next_fire_at, Some(times[2]));
}

pub async fn an_ack_succeeds_once_then_answers_none<S: Store + SchedulerStore>(store: &S) {
    let w = world(store).await;
    let ids = scheduled_runs(store, &w, 1).await;
    let id = ids[0];
    assert!(
        store
            .ack_run(&w.lease, id, "worker-1")
            .await
            .expect("ack")
            .is_none(),
        "a scheduled run is not handed out before it is queued"
    );
    queue(store, &w.lease, &ids).await;

    let a = store
        .ack_run(&w.lease, id, "worker-1")
        .await
        .expect("ack")
        .expect("the first ack wins");
    assert_eq!(a.run_id, id);
    assert_eq!(a.worker_id, "worker-1");
    assert_eq!(a.schedule_id, Some(w.schedule.id));
    assert_eq!(a.attempt, 1);
    assert_eq!(Some(a.fire_time), w.schedule.next_fire_at);
    for worker in ["worker-1", "worker-2"] {
        assert!(
            store
                .ack_run(&w.lease, id, worker)
                .await
                .expect("ack")
                .is_none(),
            "a second ack ({worker}) must not start the run again"
        );
    }
    let r = run(store, w.tenant, id).await;
    assert_eq!(r.state, RunState::Running);
    assert_eq!(r.worker_id.as_deref(), Some("worker-1"));
    assert_eq!(r.started_at, Some(a.started_at));
    assert_eq!(events_of(store, w.tenant, id).await.len(), 3);

    assert_not_found(
        store.ack_run(&w.lease, RunId::generate(), "worker-1").await,
        "run",
    );
}

pub async fn an_ack_after_a_cancel_or_a_schedule_change_answers_none<S: Store + SchedulerStore>(
    store: &S,
) {
    let w = world(store).await;
    let ids = scheduled_runs(store, &w, 2).await;
    queue(store, &w.lease, &ids).await;

    store.cancel_run(w.tenant, ids[0]).await.expect("cancel");
    assert!(
        store
            .ack_run(&w.lease, ids[0], "worker-1")
            .await
            .expect("ack")
            .is_none(),
        "the cancel won the race"
    );
    assert_eq!(
        run(store, w.tenant, ids[0]).await.state,
        RunState::Cancelled
    );

    let edited = store
        .update_schedule(
            w.tenant,
            w.schedule.id,
            &change(
                cron_spec("15 * * * * *"),
                false,
                cancel_reason::SCHEDULE_UPDATED,
            ),
            w.schedule.version,
        )
        .await
        .expect("edit");
    assert!(
        store
            .ack_run(&w.lease, ids[1], "worker-1")
            .await
            .expect("ack")
            .is_none(),
        "the edit won the race (I4)"
    );
    let r = run(store, w.tenant, ids[1]).await;
    assert_eq!(r.state, RunState::Cancelled);
    assert_eq!(r.reason.as_deref(), Some(cancel_reason::SCHEDULE_UPDATED));

    // A trigger of the current version is acked as usual.
    let mut trigger = manual_run(w.job.id, now());
    trigger.schedule = Some((edited.id, edited.version));
    trigger.shard = edited.shard;
    let (triggered, _) = store
        .create_run(w.tenant, &trigger, None)
        .await
        .expect("trigger");
    assert!(
        store
            .ack_run(&w.lease, triggered.id, "worker-1")
            .await
            .expect("ack")
            .is_some()
    );
}

pub async fn an_assignment_carries_the_job_and_the_merged_env<S: Store + SchedulerStore>(
    store: &S,
) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let mut new = manual_run(j.id, now());
    new.env = Env::parse(BTreeMap::from([
        ("TOKEN".to_owned(), "from-the-run".to_owned()),
        ("EXTRA".to_owned(), "1".to_owned()),
    ]))
    .expect("env");
    let (queued, _) = store.create_run(t, &new, None).await.expect("run");
    let lease = store
        .claim_shard(queued.shard, 1, "node-a")
        .await
        .expect("claim");

    let a = store
        .ack_run(&lease, queued.id, "worker-7")
        .await
        .expect("ack")
        .expect("queued");
    assert_eq!((a.tenant_id, a.job_id, a.schedule_id), (t, j.id, None));
    assert_eq!(a.image, j.spec.image);
    assert_eq!(a.command, j.spec.command);
    assert_eq!(a.memory, j.spec.memory);
    assert_eq!(a.timeout, j.spec.timeout);
    assert_eq!((a.fire_time, a.attempt), (queued.fire_time, 1));
    assert_eq!(
        a.env.vars(),
        &BTreeMap::from([
            ("EXTRA".to_owned(), "1".to_owned()),
            ("TOKEN".to_owned(), "from-the-run".to_owned()),
        ]),
        "the run's env overrides the job's"
    );
    let shown = format!("{a:?}");
    assert!(
        !shown.contains("from-the-run"),
        "env values stay out of logs: {shown}"
    );
}

pub async fn finishing_a_run_is_idempotent_and_never_moves_backwards<S: Store + SchedulerStore>(
    store: &S,
) {
    let w = world(store).await;
    let ids = scheduled_runs(store, &w, 3).await;
    queue(store, &w.lease, &ids).await;
    start(store, &w.lease, ids[0]).await;
    start(store, &w.lease, ids[1]).await;

    let ok = outcome(TerminalState::Succeeded, Some(0), "all good\n");
    let result = store.finish_run(&w.lease, ids[2], &ok).await;
    assert!(
        matches!(result, Err(StoreError::FailedPrecondition(_))),
        "a queued run cannot finish: {result:?}"
    );
    assert_eq!(run(store, w.tenant, ids[2]).await.state, RunState::Queued);

    let applied = FinishedRun {
        state: RunState::Succeeded,
        applied: true,
    };
    let kept = FinishedRun {
        state: RunState::Succeeded,
        applied: false,
    };
    assert_eq!(
        store
            .finish_run(&w.lease, ids[0], &ok)
            .await
            .expect("finish"),
        applied
    );
    assert_eq!(
        store
            .finish_run(&w.lease, ids[0], &ok)
            .await
            .expect("repeat"),
        kept,
        "a repeated report is accepted and changes nothing"
    );
    let failed = outcome(
        TerminalState::Failed(FailureReason::ExitCode),
        Some(1),
        "boom",
    );
    let cancelled = outcome(TerminalState::Cancelled, None, "");
    for late in [&failed, &cancelled] {
        assert_eq!(
            store
                .finish_run(&w.lease, ids[0], late)
                .await
                .expect("late report"),
            kept,
            "a terminal run never moves"
        );
    }
    let r = run(store, w.tenant, ids[0]).await;
    assert_eq!(r.state, RunState::Succeeded);
    assert_eq!((r.exit_code, r.reason.as_deref()), (Some(0), None));
    assert!(r.finished_at.is_some());
    assert_eq!(events_of(store, w.tenant, ids[0]).await.len(), 4);
    let logs = store.run_logs(w.tenant, ids[0]).await.expect("logs");
    assert_eq!(
        (logs.content.as_str(), logs.truncated),
        ("all good\n", false)
    );

    // A worker declared lost that reports later does not resurrect its run.
    store
        .fail_lost_runs(&w.lease, &[ids[1]])
        .await
        .expect("fail lost");
    assert_eq!(
        store
            .finish_run(&w.lease, ids[1], &ok)
            .await
            .expect("late success"),
        FinishedRun {
            state: RunState::Failed,
            applied: false
        }
    );
    let r = run(store, w.tenant, ids[1]).await;
    assert_eq!(r.reason.as_deref(), Some("worker_lost"));
    assert_eq!(r.exit_code, None);

    assert_not_found(
        store.finish_run(&w.lease, RunId::generate(), &ok).await,
        "run",
    );
}

pub async fn every_transition_has_exactly_one_event<S: Store + SchedulerStore>(store: &S) {
    let w = world(store).await;
    let times = fire_times(&w.schedule, 2);
    let fires = [
        fire(&w.schedule, times[0], FireState::Scheduled),
        fire(&w.schedule, times[1], FireState::Scheduled),
    ];
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids = store
            .materialize(&w.lease, &fires)
            .await
            .expect("materialize")
            .into_iter()
            .map(|r| r.id)
            .collect();
    }
    let oom = outcome(
        TerminalState::Failed(FailureReason::OomKilled),
        Some(137),
        "Killed",
    );
    for _ in 0..2 {
        store.queue_runs(&w.lease, &ids).await.expect("queue");
        store
            .ack_run(&w.lease, ids[0], "worker-1")
            .await
            .expect("ack");
        store
            .finish_run(&w.lease, ids[0], &oom)
            .await
            .expect("finish");
    }
    assert_eq!(
        events_of(store, w.tenant, ids[0]).await,
        [
            (None, RunState::Scheduled, None),
            (Some(RunState::Scheduled), RunState::Queued, None),
            (Some(RunState::Queued), RunState::Running, None),
            (
                Some(RunState::Running),
                RunState::Failed,
                Some("oom_killed".to_owned())
            ),
        ]
    );
    let r = run(store, w.tenant, ids[0]).await;
    assert_eq!(
        (r.reason.as_deref(), r.exit_code),
        (Some("oom_killed"), Some(137))
    );

    // A cancel of a running run is only a request; the worker's report is the transition.
    start(store, &w.lease, ids[1]).await;
    let requested = store.cancel_run(w.tenant, ids[1]).await.expect("cancel");
    assert!(requested.cancel_requested);
    assert_eq!(events_of(store, w.tenant, ids[1]).await.len(), 3);
    let stopped = outcome(TerminalState::Cancelled, Some(143), "");
    for _ in 0..2 {
        store
            .finish_run(&w.lease, ids[1], &stopped)
            .await
            .expect("finish");
    }
    let events = events_of(store, w.tenant, ids[1]).await;
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[3],
        (
            Some(RunState::Running),
            RunState::Cancelled,
            Some(cancel_reason::REQUESTED.to_owned())
        )
    );
}

pub async fn lost_runs_fail_with_worker_lost_only_if_running<S: Store + SchedulerStore>(store: &S) {
    let w = world(store).await;
    let ids = scheduled_runs(store, &w, 3).await;
    queue(store, &w.lease, &ids[1..]).await;
    start(store, &w.lease, ids[2]).await;

    let mut asked = ids.clone();
    asked.push(RunId::generate());
    let moved = store
        .fail_lost_runs(&w.lease, &asked)
        .await
        .expect("fail lost");
    assert_eq!(moved.moved, [ids[2]]);
    assert!(moved.retries.is_empty(), "one attempt by default: no retry");
    let r = run(store, w.tenant, ids[2]).await;
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(r.reason.as_deref(), Some("worker_lost"));
    assert!(r.finished_at.is_some());
    assert_eq!(
        events_of(store, w.tenant, ids[2]).await.last().cloned(),
        Some((
            Some(RunState::Running),
            RunState::Failed,
            Some("worker_lost".to_owned())
        ))
    );
    assert_eq!(
        run(store, w.tenant, ids[0]).await.state,
        RunState::Scheduled
    );
    assert_eq!(run(store, w.tenant, ids[1]).await.state, RunState::Queued);
    assert!(
        store
            .fail_lost_runs(&w.lease, &asked)
            .await
            .expect("again")
            .moved
            .is_empty()
    );
    assert_eq!(events_of(store, w.tenant, ids[2]).await.len(), 4);
}

pub async fn queueing_moves_only_scheduled_runs_of_the_shard<S: Store + SchedulerStore>(store: &S) {
    let w = world(store).await;
    let s = &w.schedule;
    let times = fire_times(s, 4);
    let runs = store
        .materialize(
            &w.lease,
            &[
                fire(s, times[0], FireState::Scheduled),
                fire(s, times[1], FireState::Scheduled),
                fire(s, times[2], FireState::Scheduled),
                fire(s, times[3], FireState::Skipped(SkipReason::Overlap)),
            ],
        )
        .await
        .expect("materialize");
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    queue(store, &w.lease, &ids[1..2]).await;

    let elsewhere = schedule_in(
        store,
        w.tenant,
        w.job.id,
        Some(other_shard(s.shard)),
        times[0],
        false,
    )
    .await;
    let other_lease = store
        .claim_shard(elsewhere.shard, 1, "node-b")
        .await
        .expect("claim");
    let foreign = store
        .materialize(
            &other_lease,
            &[fire(&elsewhere, times[0], FireState::Scheduled)],
        )
        .await
        .expect("materialize")[0]
        .id;

    let moved = store
        .queue_runs(
            &w.lease,
            &[ids[0], ids[1], ids[3], foreign, RunId::generate()],
        )
        .await
        .expect("queue");
    assert_eq!(moved, [ids[0]]);
    assert_eq!(run(store, w.tenant, ids[0]).await.state, RunState::Queued);
    assert_eq!(
        run(store, w.tenant, ids[2]).await.state,
        RunState::Scheduled,
        "not asked"
    );
    assert_eq!(events_of(store, w.tenant, ids[1]).await.len(), 2);
    assert_eq!(run(store, w.tenant, ids[3]).await.state, RunState::Skipped);
    assert_eq!(
        run(store, w.tenant, foreign).await.state,
        RunState::Scheduled,
        "another shard's run is not this lease's to move"
    );
    assert!(
        store
            .queue_runs(&w.lease, &[])
            .await
            .expect("nothing to queue")
            .is_empty()
    );
}

pub async fn skipping_moves_only_scheduled_or_queued_runs<S: Store + SchedulerStore>(store: &S) {
    let w = world(store).await;
    let ids = scheduled_runs(store, &w, 3).await;
    queue(store, &w.lease, &ids[1..]).await;
    start(store, &w.lease, ids[2]).await;

    let moved = store
        .skip_runs(&w.lease, &ids, SkipReason::Overlap)
        .await
        .expect("skip");
    assert_eq!(moved.moved, ids[..2]);
    for (id, from) in [(ids[0], RunState::Scheduled), (ids[1], RunState::Queued)] {
        let r = run(store, w.tenant, id).await;
        assert_eq!(r.state, RunState::Skipped);
        assert_eq!(r.reason.as_deref(), Some("overlap"));
        assert!(r.finished_at.is_some());
        assert_eq!(
            events_of(store, w.tenant, id).await.last().cloned(),
            Some((Some(from), RunState::Skipped, Some("overlap".to_owned())))
        );
    }
    assert_eq!(run(store, w.tenant, ids[2]).await.state, RunState::Running);
    assert!(
        store
            .skip_runs(&w.lease, &ids, SkipReason::Missed)
            .await
            .expect("again")
            .moved
            .is_empty()
    );
}

pub async fn the_log_tail_is_capped_keeping_its_end<S: Store + SchedulerStore>(store: &S) {
    let w = world(store).await;
    let ids = scheduled_runs(store, &w, 3).await;
    queue(store, &w.lease, &ids).await;
    for id in &ids {
        start(store, &w.lease, *id).await;
    }

    let long = format!("{}THE END\n", "x".repeat(LOG_TAIL_MAX_BYTES + 1000));
    let cases = [
        (ids[0], long.as_str(), false),
        (ids[1], "short\n", true),
        (ids[2], "short\n", false),
    ];
    for (id, log, worker_cut) in cases {
        let mut o = outcome(TerminalState::Succeeded, Some(0), log);
        o.log_truncated = worker_cut;
        store.finish_run(&w.lease, id, &o).await.expect("finish");
    }
    let logs = store.run_logs(w.tenant, ids[0]).await.expect("logs");
    assert_eq!(logs.content.len(), LOG_TAIL_MAX_BYTES);
    assert!(logs.content.ends_with("xTHE END\n"));
    assert!(logs.truncated);
    let logs = store.run_logs(w.tenant, ids[1]).await.expect("logs");
    assert_eq!(
        (logs.content.as_str(), logs.truncated),
        ("short\n", true),
        "the worker's own cut is kept"
    );
    let logs = store.run_logs(w.tenant, ids[2]).await.expect("logs");
    assert_eq!((logs.content.as_str(), logs.truncated), ("short\n", false));
}

pub async fn the_pending_runs_of_a_shard_are_all_its_non_terminal_runs<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = world(store).await;
    let s = &w.schedule;
    let times = fire_times(s, 5);
    let runs = store
        .materialize(
            &w.lease,
            &[
                fire(s, times[0], FireState::Scheduled),
                fire(s, times[1], FireState::Scheduled),
                fire(s, times[2], FireState::Scheduled),
                fire(s, times[3], FireState::Scheduled),
                fire(s, times[4], FireState::Skipped(SkipReason::Missed)),
            ],
        )
        .await
        .expect("materialize");
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    // ids[0] scheduled, ids[1] queued, ids[2] running, ids[3] succeeded, ids[4] skipped.
    queue(store, &w.lease, &ids[1..4]).await;
    start(store, &w.lease, ids[2]).await;
    start(store, &w.lease, ids[3]).await;
    store
        .finish_run(
            &w.lease,
            ids[3],
            &outcome(TerminalState::Succeeded, Some(0), ""),
        )
        .await
        .expect("finish");

    // Execute-now runs live in the shard of their job: one here, one elsewhere.
    let here = loop {
        let id = JobId::generate();
        if ShardId::of(id.as_uuid()) == s.shard {
            break id;
        }
    };
    store
        .create_job(w.tenant, here, &job_spec("here"))
        .await
        .expect("job");
    let (manual, _) = store
        .create_run(w.tenant, &manual_run(here, now()), None)
        .await
        .expect("manual run");
    let there = loop {
        let id = JobId::generate();
        if ShardId::of(id.as_uuid()) != s.shard {
            break id;
        }
    };
    store
        .create_job(w.tenant, there, &job_spec("there"))
        .await
        .expect("job");
    store
        .create_run(w.tenant, &manual_run(there, now()), None)
        .await
        .expect("manual run elsewhere");

    let pending = store
        .shard_pending_runs(&w.lease)
        .await
        .expect("pending runs");
    assert_eq!(
        pending
            .iter()
            .map(|r| (r.id, r.state, r.trigger))
            .collect::<Vec<_>>(),
        [
            (manual.id, RunState::Queued, Trigger::Manual),
            (ids[0], RunState::Scheduled, Trigger::Schedule),
            (ids[1], RunState::Queued, Trigger::Schedule),
            (ids[2], RunState::Running, Trigger::Schedule),
        ],
        "by fire time; the manual run fires now, the scheduled ones in the coming minutes"
    );
    let running = &pending[3];
    assert_eq!(running.worker_id.as_deref(), Some("worker-1"));
    assert!(running.started_at.is_some());
    assert_eq!(running.timeout, w.job.spec.timeout);
    assert_eq!(
        (running.schedule_id, running.schedule_version),
        (Some(s.id), Some(s.version))
    );
    assert_eq!(running.fire_time, times[2]);
    assert_eq!(pending[0].schedule_id, None);

    let queued = store.queued_runs(&w.lease, 10).await.expect("queued runs");
    assert_eq!(
        queued.iter().map(|r| r.id).collect::<Vec<_>>(),
        [manual.id, ids[1]]
    );
    let oldest = store.queued_runs(&w.lease, 1).await.expect("queued runs");
    assert_eq!(oldest.iter().map(|r| r.id).collect::<Vec<_>>(), [manual.id]);
}

pub async fn offers_are_only_queued_uncancelled_runs_of_the_shard_with_the_merged_env<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let mut new = manual_run(j.id, now());
    new.env = Env::parse(BTreeMap::from([(
        "TOKEN".to_owned(),
        "from-the-run".to_owned(),
    )]))
    .expect("env");
    let (offered, _) = store.create_run(t, &new, None).await.expect("run");
    let (cancelled, _) = store
        .create_run(t, &manual_run(j.id, now()), None)
        .await
        .expect("run");
    store.cancel_run(t, cancelled.id).await.expect("cancel");
    let (acked, _) = store
        .create_run(t, &manual_run(j.id, now()), None)
        .await
        .expect("run");
    let lease = store
        .claim_shard(offered.shard, 1, "node-a")
        .await
        .expect("claim");
    store
        .ack_run(&lease, acked.id, "worker-1")
        .await
        .expect("ack")
        .expect("queued");

    let offers = store
        .run_offers(
            &lease,
            &[offered.id, cancelled.id, acked.id, RunId::generate()],
        )
        .await
        .expect("offers");
    let ids: Vec<RunId> = offers.iter().map(|o| o.run_id).collect();
    assert_eq!(
        ids,
        [offered.id],
        "only the queued, uncancelled run is offered"
    );
    let offer = &offers[0];
    assert_eq!(
        (offer.job_id, offer.attempt, offer.fire_time),
        (j.id, 1, offered.fire_time)
    );
    assert_eq!(
        (&offer.image, &offer.command),
        (&j.spec.image, &j.spec.command)
    );
    assert_eq!(
        offer.env.vars().get("TOKEN").map(String::as_str),
        Some("from-the-run")
    );
    assert!(
        !format!("{offer:?}").contains("from-the-run"),
        "env values stay out of logs"
    );

    // Another shard's lease sees none of it; a superseded lease is refused.
    let other = store
        .claim_shard(other_shard(offered.shard), 1, "node-a")
        .await
        .expect("claim");
    assert!(
        store
            .run_offers(&other, &[offered.id])
            .await
            .expect("offers")
            .is_empty()
    );
    store
        .claim_shard(offered.shard, 2, "node-b")
        .await
        .expect("newer claim");
    assert_fenced(
        store.run_offers(&lease, &[offered.id]).await,
        offered.shard,
        1,
    );
}

pub async fn cross_shard_reads_return_only_the_named_shards<S: Store + SchedulerStore>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let due_at = now() + Duration::seconds(30);
    let a = schedule_in(store, t, j.id, None, due_at, false).await;
    let b = schedule_in(store, t, j.id, None, due_at, false).await;
    let later = schedule_in(store, t, j.id, None, now() + Duration::days(2), false).await;
    let until = now() + Duration::minutes(5);

    let due = store
        .due_schedules_across(&[a.shard], until, 100)
        .await
        .expect("due");
    assert!(due.iter().all(|(shard, _)| *shard == a.shard));
    assert!(due.iter().any(|(_, d)| d.id == a.id));
    assert!(
        due.iter().all(|(_, d)| d.id != later.id),
        "not due within the horizon"
    );
    let both = store
        .due_schedules_across(&[a.shard, b.shard], until, 100)
        .await
        .expect("due");
    let ids: Vec<ScheduleId> = both.iter().map(|(_, d)| d.id).collect();
    assert!(ids.contains(&a.id) && ids.contains(&b.id), "{ids:?}");
    assert!(
        store
            .due_schedules_across(&[], until, 100)
            .await
            .expect("due")
            .is_empty()
    );

    let (queued, _) = store
        .create_run(t, &manual_run(j.id, now()), None)
        .await
        .expect("run");
    let found = store
        .queued_runs_across(&[queued.shard], 100)
        .await
        .expect("queued");
    assert_eq!(found, [(queued.shard, queued.id, queued.fire_time)]);
    let elsewhere = store
        .queued_runs_across(&[other_shard(queued.shard)], 100)
        .await
        .expect("queued");
    assert!(elsewhere.iter().all(|(_, id, _)| *id != queued.id));
}

pub async fn committed_changes_are_followed_as_shard_hints<S: Store + SchedulerStore>(store: &S) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let stop = tokio_util::sync::CancellationToken::new();
    let follow = store.follow_changes(tx, stop.clone());
    let check = async {
        // Give LISTEN a moment to be in place before the change commits.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let t = tenant(store).await;
        let j = job(store, t).await;
        let s = schedule_in(store, t, j.id, None, now() + Duration::minutes(1), false).await;
        let hint = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("a hint within 10 s")
            .expect("open");
        assert_eq!(
            (hint.kind, hint.shard),
            (crate::ChangeKind::Schedule, s.shard)
        );
        let (run, _) = store
            .create_run(t, &manual_run(j.id, now()), None)
            .await
            .expect("run");
        let hint = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("a hint within 10 s")
            .expect("open");
        assert_eq!(
            (hint.kind, hint.shard),
            (crate::ChangeKind::RunQueued, run.shard)
        );
        stop.cancel();
    };
    let (followed, ()) = tokio::join!(follow, check);
    followed.expect("following ends cleanly on stop");
}

// --- batches across shards ----------------------------------------------------------------------

/// A second schedule of `w`'s tenant and job in another shard, with its own lease (token 1).
async fn second_shard<S: Store + SchedulerStore>(store: &S, w: &World) -> (Schedule, ShardLease) {
    let first = now() + Duration::minutes(1);
    let shard = other_shard(w.schedule.shard);
    let schedule = schedule_in(store, w.tenant, w.job.id, Some(shard), first, false).await;
    let lease = store
        .claim_shard(shard, 1, "node-a")
        .await
        .expect("claim the second shard");
    (schedule, lease)
}

fn leased(lease: &ShardLease, id: RunId, fire_time: Option<DateTime<Utc>>) -> LeasedRun {
    LeasedRun {
        lease: lease.clone(),
        id,
        fire_time,
    }
}

fn due(lease: &ShardLease, id: RunId, worker: Option<&str>) -> DueRun {
    DueRun {
        run: leased(lease, id, None),
        worker_id: worker.map(str::to_owned),
    }
}

pub async fn a_batch_across_shards_writes_the_current_leases_and_reports_the_superseded<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = world(store).await;
    let (s2, lease2) = second_shard(store, &w).await;
    let a = scheduled_runs(store, &w, 2).await;
    let w2 = World {
        tenant: w.tenant,
        job: w.job.clone(),
        schedule: s2,
        lease: lease2.clone(),
    };
    let b = scheduled_runs(store, &w2, 2).await;

    // The second shard moves to another node before the batch is written.
    store
        .claim_shard(lease2.shard(), 2, "node-b")
        .await
        .expect("newer claim");
    let batch: Vec<DueRun> = a
        .iter()
        .chain(&b)
        .map(|id| {
            let lease = if a.contains(id) { &w.lease } else { &lease2 };
            due(lease, *id, None)
        })
        .collect();
    let fired = store.fire_runs(&batch).await.expect("fire");
    assert_eq!(fired.fenced, [lease2.shard()]);
    let mut queued = fired.queued.clone();
    queued.sort();
    let mut expected = a.clone();
    expected.sort();
    assert_eq!(queued, expected, "the current lease's runs are queued");
    assert!(fired.started.is_empty());
    for id in &b {
        assert_eq!(
            run(store, w.tenant, *id).await.state,
            RunState::Scheduled,
            "nothing of the superseded shard is written"
        );
    }
    // Firing again changes nothing: the runs are no longer scheduled.
    let again = store.fire_runs(&batch[..2]).await.expect("fire again");
    assert!(again.queued.is_empty() && again.started.is_empty());
    for id in &a {
        assert_eq!(events_of(store, w.tenant, *id).await.len(), 2);
    }
}

pub async fn a_fire_starts_the_runs_a_worker_holds_unless_cancelled_or_changed<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = world(store).await;
    let ids = scheduled_runs(store, &w, 3).await;
    store.cancel_run(w.tenant, ids[1]).await.expect("cancel");
    let times = fire_times(&w.schedule, 3);
    let batch = vec![
        DueRun {
            run: leased(&w.lease, ids[0], Some(times[0])),
            worker_id: Some("worker-1".to_owned()),
        },
        DueRun {
            run: leased(&w.lease, ids[1], Some(times[1])),
            worker_id: Some("worker-1".to_owned()),
        },
        DueRun {
            run: leased(&w.lease, ids[2], Some(times[2])),
            worker_id: None,
        },
    ];
    let fired = store.fire_runs(&batch).await.expect("fire");
    assert_eq!(fired.started, [ids[0]]);
    assert_eq!(fired.queued, [ids[2]]);
    let started = run(store, w.tenant, ids[0]).await;
    assert_eq!(started.state, RunState::Running);
    assert_eq!(started.worker_id.as_deref(), Some("worker-1"));
    assert!(started.started_at.is_some());
    let steps: Vec<(Option<RunState>, RunState)> = events_of(store, w.tenant, ids[0])
        .await
        .iter()
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(
        steps,
        [
            (None, RunState::Scheduled),
            (Some(RunState::Scheduled), RunState::Queued),
            (Some(RunState::Queued), RunState::Running),
        ],
        "one event per transition, queued included (I3)"
    );
    assert_eq!(
        run(store, w.tenant, ids[1]).await.state,
        RunState::Cancelled,
        "the cancel won: the worker must not start it"
    );

    // A run whose schedule moved on since it was computed is queued, not started (I4).
    let more = scheduled_runs_after(store, &w, times[2], 1).await;
    edit_schedule(store, &w).await;
    let fired = store
        .fire_runs(&[due(&w.lease, more[0], Some("worker-1"))])
        .await
        .expect("fire");
    assert!(
        fired.started.is_empty() && fired.queued.is_empty(),
        "a stale fire never starts"
    );
    let stale = run(store, w.tenant, more[0]).await;
    assert_eq!(
        (stale.state, stale.reason.as_deref()),
        (RunState::Cancelled, Some(cancel_reason::SCHEDULE_UPDATED))
    );

    // A worker id out of bounds is refused before anything is written.
    let long = "w".repeat(300);
    assert!(matches!(
        store.fire_runs(&[due(&w.lease, ids[2], Some(&long))]).await,
        Err(StoreError::Invalid(_))
    ));
}

/// Materializes `n` fires of `w`'s schedule after `after`.
async fn scheduled_runs_after<S: SchedulerStore>(
    store: &S,
    w: &World,
    after: DateTime<Utc>,
    n: usize,
) -> Vec<RunId> {
    let fires: Vec<Materialize> =
        std::iter::successors(w.schedule.spec.next_fire_after(after), |t| {
            w.schedule.spec.next_fire_after(*t)
        })
        .take(n)
        .map(|t| fire(&w.schedule, t, FireState::Scheduled))
        .collect();
    store
        .materialize(&w.lease, &fires)
        .await
        .expect("materialize")
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// Edits `w`'s schedule through the API's path, which bumps its version.
async fn edit_schedule<S: Store>(store: &S, w: &World) {
    store
        .update_schedule(
            w.tenant,
            w.schedule.id,
            &change(
                cron_spec("30 * * * * *"),
                false,
                cancel_reason::SCHEDULE_UPDATED,
            ),
            w.schedule.version,
        )
        .await
        .expect("edit");
}

pub async fn batched_acks_and_reports_span_shards_and_record_a_repeated_report_once<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = world(store).await;
    let (s2, lease2) = second_shard(store, &w).await;
    let a = scheduled_runs(store, &w, 1).await;
    let w2 = World {
        tenant: w.tenant,
        job: w.job.clone(),
        schedule: s2,
        lease: lease2.clone(),
    };
    let b = scheduled_runs(store, &w2, 1).await;
    queue(store, &w.lease, &a).await;
    queue(store, &lease2, &b).await;

    let acks = vec![
        RunAck {
            run: leased(&w.lease, a[0], None),
            worker_id: "worker-1".to_owned(),
        },
        RunAck {
            run: leased(&lease2, b[0], None),
            worker_id: "worker-2".to_owned(),
        },
        RunAck {
            run: leased(&w.lease, RunId::generate(), None),
            worker_id: "worker-1".to_owned(),
        },
    ];
    let acked = store.ack_runs(&acks).await.expect("ack");
    let mut started = acked.started.clone();
    started.sort();
    let mut expected = vec![a[0], b[0]];
    expected.sort();
    assert_eq!(started, expected);
    assert_eq!(acked.refused, [acks[2].run.id], "an unknown run is refused");
    assert_eq!(
        run(store, w.tenant, b[0]).await.worker_id.as_deref(),
        Some("worker-2")
    );
    let again = store.ack_runs(&acks[..2]).await.expect("ack again");
    assert!(
        again.started.is_empty(),
        "a second ack never starts a run twice"
    );

    let ok = RunOutcome {
        state: TerminalState::Succeeded,
        exit_code: Some(0),
        log_tail: "done\n".to_owned(),
        log_truncated: false,
        total_bytes: None,
    };
    let failed = RunOutcome {
        state: TerminalState::Failed(FailureReason::ExitCode),
        exit_code: Some(3),
        log_tail: String::new(),
        log_truncated: false,
        total_bytes: Some(0),
    };
    let reports = vec![
        RunReport {
            run: leased(&w.lease, a[0], None),
            outcome: ok.clone(),
        },
        RunReport {
            run: leased(&lease2, b[0], None),
            outcome: failed,
        },
        RunReport {
            run: leased(&w.lease, a[0], None),
            outcome: ok,
        },
    ];
    let finished = store.finish_runs(&reports).await.expect("finish");
    assert!(finished.fenced.is_empty());
    let results: Vec<(RunId, FinishedRun)> = finished
        .results
        .into_iter()
        .map(|(id, r)| (id, r.expect("recorded")))
        .collect();
    assert_eq!(
        results,
        [
            (
                a[0],
                FinishedRun {
                    state: RunState::Succeeded,
                    applied: true
                }
            ),
            (
                b[0],
                FinishedRun {
                    state: RunState::Failed,
                    applied: true
                }
            ),
            (
                a[0],
                FinishedRun {
                    state: RunState::Succeeded,
                    applied: false
                }
            ),
        ]
    );
    let b_run = run(store, w.tenant, b[0]).await;
    assert_eq!(
        (b_run.state, b_run.exit_code, b_run.reason.as_deref()),
        (RunState::Failed, Some(3), Some("exit_code"))
    );
    assert_eq!(
        events_of(store, w.tenant, a[0]).await.len(),
        4,
        "scheduled, queued, running, succeeded: the repeat added nothing"
    );
}

pub async fn upcoming_offers_include_scheduled_runs<S: Store + SchedulerStore>(store: &S) {
    let w = world(store).await;
    let ids = scheduled_runs(store, &w, 2).await;
    store.cancel_run(w.tenant, ids[1]).await.expect("cancel");
    let runs: Vec<LeasedRun> = ids.iter().map(|id| leased(&w.lease, *id, None)).collect();
    assert!(
        store
            .offers_across(&runs, false)
            .await
            .expect("offers")
            .is_empty(),
        "scheduled runs are not offered for an ack"
    );
    let offers = store.offers_across(&runs, true).await.expect("offers");
    assert_eq!(offers.len(), 1, "a cancelled run is never offered");
    let offer = &offers[0];
    assert_eq!(
        (offer.run_id, offer.tenant_id, offer.shard),
        (ids[0], w.tenant, w.schedule.shard)
    );
}

pub async fn materializing_across_shards_writes_the_current_leases_only<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = world(store).await;
    let (s2, lease2) = second_shard(store, &w).await;
    let (s3, lease3) = {
        let shard = other_shard(lease2.shard());
        let first = now() + Duration::minutes(1);
        let schedule = schedule_in(store, w.tenant, w.job.id, Some(shard), first, false).await;
        let lease = store.claim_shard(shard, 1, "node-a").await.expect("claim");
        (schedule, lease)
    };
    let fires_of = |s: &Schedule| -> Vec<Materialize> {
        fire_times(s, 2)
            .into_iter()
            .map(|t| fire(s, t, FireState::Scheduled))
            .collect()
    };
    // The third shard moves on; a fire filed under the wrong lease is not this lease's.
    store
        .claim_shard(lease3.shard(), 2, "node-b")
        .await
        .expect("newer claim");
    let mut misfiled = fires_of(&s2);
    misfiled.truncate(1);
    let batches = vec![
        (w.lease.clone(), fires_of(&w.schedule)),
        (lease2.clone(), fires_of(&s2)),
        (lease3.clone(), fires_of(&s3)),
        (w.lease.clone(), misfiled),
    ];
    let done = store
        .materialize_across(&batches)
        .await
        .expect("materialize");
    assert_eq!(done.fenced, [lease3.shard()]);
    let mut by_shard: BTreeMap<u16, usize> = BTreeMap::new();
    for (shard, run) in &done.runs {
        assert!(run.created);
        *by_shard.entry(shard.get()).or_default() += 1;
    }
    assert_eq!(
        by_shard,
        BTreeMap::from([(w.lease.shard().get(), 2), (lease2.shard().get(), 2)]),
        "two fires for each current lease; none for the superseded one"
    );
    let third = store.get_schedule(w.tenant, s3.id).await.expect("get");
    assert_eq!(
        third.next_fire_at, s3.next_fire_at,
        "nothing of the third shard moved"
    );
    let second = store.get_schedule(w.tenant, s2.id).await.expect("get");
    assert_eq!(second.next_fire_at, Some(fire_times(&s2, 3)[2]));
}

pub async fn cancel_requests_of_running_runs_are_read_across_shards<S: Store + SchedulerStore>(
    store: &S,
) {
    let w = world(store).await;
    let ids = scheduled_runs(store, &w, 3).await;
    queue(store, &w.lease, &ids).await;
    for id in &ids[..2] {
        store
            .ack_run(&w.lease, *id, "worker-1")
            .await
            .expect("ack")
            .expect("started");
    }
    assert!(
        store
            .cancel_requested_across(&[w.lease.shard()], 100)
            .await
            .expect("read")
            .is_empty()
    );
    let asked = store.cancel_run(w.tenant, ids[0]).await.expect("cancel");
    assert_eq!(
        asked.state,
        RunState::Running,
        "a running run is asked, not moved"
    );
    assert!(asked.cancel_requested);
    // A queued run's cancel is immediate: nothing for a worker to stop.
    store.cancel_run(w.tenant, ids[2]).await.expect("cancel");
    let found = store
        .cancel_requested_across(&[w.lease.shard(), other_shard(w.lease.shard())], 100)
        .await
        .expect("read");
    assert_eq!(found, [(w.lease.shard(), ids[0], asked.fire_time)]);
    assert!(
        store
            .cancel_requested_across(&[other_shard(w.lease.shard())], 100)
            .await
            .expect("read")
            .is_empty()
    );
}

pub async fn live_logs_are_stored_for_running_runs_only_and_never_move_back<
    S: Store + SchedulerStore,
>(
    store: &S,
) {
    let w = world(store).await;
    let ids = scheduled_runs(store, &w, 2).await;
    queue(store, &w.lease, &ids).await;
    store
        .ack_run(&w.lease, ids[0], "worker-1")
        .await
        .expect("ack")
        .expect("started");
    let live = |id: RunId, tail: &str, total: u64| LiveLog {
        run: leased(&w.lease, id, None),
        tail: tail.to_owned(),
        total_bytes: total,
    };
    let fenced = store
        .record_live_logs(&[live(ids[0], "hello\n", 6), live(ids[1], "not running", 11)])
        .await
        .expect("record");
    assert!(fenced.is_empty());
    let logs = store.run_logs(w.tenant, ids[0]).await.expect("logs");
    assert_eq!(
        (
            logs.content.as_str(),
            logs.total_bytes,
            logs.truncated,
            logs.state
        ),
        ("hello\n", 6, false, RunState::Running)
    );
    let queued = store.run_logs(w.tenant, ids[1]).await.expect("logs");
    assert_eq!(
        (queued.content.as_str(), queued.total_bytes),
        ("", 0),
        "a queued run has no live output"
    );

    // More output, with its head dropped by the worker's cap: the count says where it starts.
    store
        .record_live_logs(&[live(ids[0], "world\n", 1_000_000)])
        .await
        .expect("record");
    let logs = store.run_logs(w.tenant, ids[0]).await.expect("logs");
    assert_eq!(
        (logs.content.as_str(), logs.total_bytes, logs.truncated),
        ("world\n", 1_000_000, true)
    );
    // A late, older tail does not move it back.
    store
        .record_live_logs(&[live(ids[0], "hello\n", 6)])
        .await
        .expect("record");
    assert_eq!(
        store
            .run_logs(w.tenant, ids[0])
            .await
            .expect("logs")
            .total_bytes,
        1_000_000
    );

    // The report's count is the final one.
    let mut ended = outcome(TerminalState::Succeeded, Some(0), "bye\n");
    ended.total_bytes = Some(1_000_004);
    store
        .finish_run(&w.lease, ids[0], &ended)
        .await
        .expect("finish");
    let logs = store.run_logs(w.tenant, ids[0]).await.expect("logs");
    assert_eq!(
        (logs.content.as_str(), logs.total_bytes, logs.state),
        ("bye\n", 1_000_004, RunState::Succeeded)
    );
    // And a tail arriving after the end changes nothing.
    store
        .record_live_logs(&[live(ids[0], "late\n", 2_000_000)])
        .await
        .expect("record");
    assert_eq!(
        store
            .run_logs(w.tenant, ids[0])
            .await
            .expect("logs")
            .content,
        "bye\n"
    );

    // A superseded lease writes nothing.
    let stale = w.lease.clone();
    store
        .claim_shard(w.lease.shard(), 2, "node-b")
        .await
        .expect("newer claim");
    let fenced = store
        .record_live_logs(&[live(ids[1], "x", 1)])
        .await
        .expect("record");
    assert_eq!(fenced, [stale.shard()]);
}

pub async fn offers_carry_the_opened_registry_credential_of_the_job<S: Store + SchedulerStore>(
    store: &S,
) {
    let t = tenant(store).await;
    store
        .create_registry_credential(
            t,
            &crate::conformance::credential("example", "registry.example.com"),
        )
        .await
        .expect("credential");
    let mut spec = job_spec("private");
    spec.registry_credential = Some(
        kairos_domain::CredentialName::parse_as("registry_credential", "example").expect("name"),
    );
    let private = store
        .create_job(t, JobId::generate(), &spec)
        .await
        .expect("job");
    let public = job(store, t).await;
    let (a, _) = store
        .create_run(t, &manual_run(private.id, now()), None)
        .await
        .expect("run");
    let (b, _) = store
        .create_run(t, &manual_run(public.id, now()), None)
        .await
        .expect("run");
    let lease_a = store
        .claim_shard(a.shard, 1, "node-a")
        .await
        .expect("claim");
    let lease_b = if b.shard == a.shard {
        lease_a.clone()
    } else {
        store
            .claim_shard(b.shard, 1, "node-a")
            .await
            .expect("claim")
    };
    let offers = store
        .offers_across(
            &[leased(&lease_a, a.id, None), leased(&lease_b, b.id, None)],
            false,
        )
        .await
        .expect("offers");
    let auth_of = |id: RunId| {
        offers
            .iter()
            .find(|o| o.run_id == id)
            .expect("offered")
            .registry_auth
            .clone()
    };
    let auth = auth_of(a.id).expect("the private job's offer carries its credential");
    assert_eq!(
        (
            auth.server.as_str(),
            auth.username.as_str(),
            auth.password.expose()
        ),
        ("registry.example.com", "bot", "pa55-w0rd")
    );
    assert!(!format!("{auth:?}").contains("pa55"), "hidden in Debug");
    assert_eq!(auth_of(b.id), None);
}
