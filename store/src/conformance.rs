//! The conformance suite every `Store` implementation runs (`store_conformance_suite!`): one
//! async check per behaviour of the trait's contract; it must never rely on one
//! implementation's internals or on state left by another check.
//!
//! ```text
//! async fn pg() -> (PgStore, kairos_testkit::TestDatabase) { /* fresh, migrated, empty */ }
//! kairos_store::store_conformance_suite!(pg());
//! ```
//!
//! `store/tests/postgres.rs` and `store/tests/sqlite.rs` generate it for each implementation.
//!
//! The expression passed to the macro is awaited once per test and yields either the store or
//! a `(store, guard)` pair, where the guard (e.g. the test database) lives as long as the test.

use std::any::Any;
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use kairos_domain::{
    ApiKeyId, Env, JobDraft, JobId, JobSpec, PageRequest, PageToken, RunId, RunState,
    ScheduleDraft, ScheduleId, ScheduleSpec, ShardId, TenantId, TenantName, Trigger,
    run::cancel_reason,
};
use uuid::Uuid;

use crate::{
    Job, NewApiKey, NewRun, NewSchedule, NextFire, Page, Run, RunFilter, Schedule, ScheduleChange,
    Store, StoreError,
};

/// What the suite's `$make` expression may yield: a store, or a store plus a guard that must
/// outlive it (dropped after the test).
pub trait StoreFixture {
    type Store: Store;
    fn into_parts(self) -> (Self::Store, Box<dyn Any + Send>);
}

impl<S: Store> StoreFixture for S {
    type Store = S;
    fn into_parts(self) -> (S, Box<dyn Any + Send>) {
        (self, Box::new(()))
    }
}

impl<S: Store, G: Send + 'static> StoreFixture for (S, G) {
    type Store = S;
    fn into_parts(self) -> (S, Box<dyn Any + Send>) {
        (self.0, Box::new(self.1))
    }
}

/// Generates one `#[tokio::test]` per conformance check, each on a fresh store from `$make`
/// (an async expression yielding a migrated, empty store, or a `(store, guard)` pair).
#[macro_export]
macro_rules! store_conformance_suite {
    ($make:expr) => {
        $crate::store_conformance_suite!(@tests $make;
            ping_answers,
            a_tenant_is_found_by_its_key_hash_and_an_unknown_hash_finds_nothing,
            a_created_job_reads_back_as_written_with_version_one,
            jobs_are_listed_oldest_first_across_pages,
            updating_a_job_bumps_its_version_and_a_stale_version_conflicts,
            a_deleted_job_is_not_found_but_its_runs_stay_readable,
            another_tenants_job_answers_exactly_as_a_missing_one,
            another_tenants_schedule_answers_exactly_as_a_missing_one,
            another_tenants_run_answers_exactly_as_a_missing_one,
            a_schedule_for_a_missing_or_foreign_job_is_not_found_and_writes_nothing,
            the_live_schedule_quota_counts_paused_but_not_completed_schedules_and_writes_nothing_past_it,
            concurrent_creates_at_the_quota_leave_exactly_one_through,
            schedules_are_listed_per_job_across_pages,
            updating_a_schedule_bumps_its_version_and_cancels_runs_of_older_versions,
            pausing_a_schedule_cancels_its_pending_runs_with_the_pause_reason,
            deleting_a_schedule_cancels_its_pending_runs_and_keeps_their_history,
            deleting_a_job_removes_its_schedules_and_cancels_its_pending_runs,
            the_same_idempotency_key_returns_the_first_run,
            a_different_idempotency_key_creates_a_new_run,
            concurrent_calls_with_one_idempotency_key_create_exactly_one_run,
            a_failed_run_insert_writes_nothing,
            a_second_run_for_the_same_fire_and_attempt_conflicts,
            a_run_from_an_outdated_schedule_version_conflicts,
            backfill_creates_queued_runs_and_skips_fires_that_already_have_one,
            a_backfill_from_an_outdated_schedule_conflicts,
            cancelling_a_pending_run_cancels_it_at_once,
            cancelling_a_finished_run_fails_its_precondition,
            run_events_record_each_transition_once_in_order,
            runs_are_filtered_by_job_schedule_and_state_across_pages,
            retention_drops_the_runs_of_months_past_it_keeps_the_rest_and_is_idempotent,
            registry_credentials_are_kept_per_tenant_and_never_shown_with_their_password,
            a_job_names_only_its_tenants_credential_for_its_images_registry,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, guard) = $crate::conformance::StoreFixture::into_parts($make.await);
                $crate::conformance::$name(&store).await;
                drop(store);
                drop(guard);
            }
        )*
    };
}

// --- fixtures ---------------------------------------------------------------------------------

/// Now, to the whole second (storage keeps microseconds; whole seconds compare exactly).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(Duration::seconds(1))
        .expect("truncating now to seconds")
}

fn random_hash() -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    hash[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    hash
}

pub(crate) async fn tenant<S: Store>(store: &S) -> TenantId {
    let key = NewApiKey {
        id: ApiKeyId::generate(),
        hash: random_hash(),
        prefix: "kai_test".into(),
    };
    let name = TenantName::parse("acme").expect("tenant name");
    store
        .create_tenant(&name, &key)
        .await
        .expect("create tenant")
        .id
}

pub(crate) fn job_spec(name: &str) -> JobSpec {
    JobDraft {
        name: Some(name.into()),
        image: Some("registry.example.com/team/app:1.2".into()),
        command: Some(vec!["sh".into(), "-c".into(), "echo hi".into()]),
        env: Some(BTreeMap::from([("TOKEN".into(), "s3cret".into())])),
        memory_mb: Some(128),
        timeout_seconds: Some(60),
        labels: Some(BTreeMap::from([("team".into(), "data".into())])),
        ..JobDraft::default()
    }
    .parse()
    .expect("job spec")
}

pub(crate) async fn job<S: Store>(store: &S, tenant: TenantId) -> Job {
    store
        .create_job(tenant, JobId::generate(), &job_spec("nightly"))
        .await
        .expect("create job")
}

/// A cron schedule in Paris whose fires may overlap (`allow`: checks that fire several runs
/// of one schedule are not about the overlap rule, which has checks of its own).
pub(crate) fn cron_spec(pattern: &str) -> ScheduleSpec {
    ScheduleDraft {
        cron: Some(pattern.into()),
        timezone: Some("Europe/Paris".into()),
        catchup_window_seconds: Some(120),
        overlap_policy: Some("allow".into()),
        ..ScheduleDraft::default()
    }
    .parse(now())
    .expect("schedule spec")
}

fn new_schedule(job: JobId) -> NewSchedule {
    let spec = cron_spec("0 * * * * *");
    NewSchedule {
        id: ScheduleId::generate(),
        job_id: job,
        next_fire_at: spec.next_fire_after(now()),
        live_limit: None,
        spec,
        paused: false,
        pause_note: None,
    }
}

async fn schedule<S: Store>(store: &S, tenant: TenantId, job: JobId) -> Schedule {
    store
        .create_schedule(tenant, &new_schedule(job))
        .await
        .expect("create schedule")
}

/// An execute-now run of `job`, queued at `fire_time`.
pub(crate) fn manual_run(job: JobId, fire_time: DateTime<Utc>) -> NewRun {
    NewRun {
        id: RunId::generate(),
        job_id: job,
        schedule: None,
        shard: ShardId::of(job.as_uuid()),
        trigger: Trigger::Manual,
        attempt: 1,
        retry_of: None,
        fire_time,
        state: RunState::Queued,
        env: Env::parse(BTreeMap::from([("OVERRIDE".into(), "1".into())])).expect("env"),
        overlap: None,
    }
}

/// A run materialized from `schedule`'s current version, `scheduled` at `fire_time`.
pub(crate) fn scheduled_run(schedule: &Schedule, fire_time: DateTime<Utc>) -> NewRun {
    NewRun {
        id: RunId::generate(),
        job_id: schedule.job_id,
        schedule: Some((schedule.id, schedule.version)),
        shard: schedule.shard,
        trigger: Trigger::Schedule,
        attempt: 1,
        retry_of: None,
        fire_time,
        state: RunState::Scheduled,
        env: Env::default(),
        overlap: None,
    }
}

async fn create_run<S: Store>(store: &S, tenant: TenantId, new: &NewRun) -> Run {
    let (run, created) = store
        .create_run(tenant, new, None)
        .await
        .expect("create run");
    assert!(created);
    run
}

/// An edit (next fire from now) or, `paused`, a pause (next fire kept).
pub(crate) fn change(spec: ScheduleSpec, paused: bool, reason: &'static str) -> ScheduleChange {
    ScheduleChange {
        next_fire: if paused {
            NextFire::Keep
        } else {
            NextFire::After(now())
        },
        spec,
        paused,
        pause_note: paused.then(|| "maintenance window".to_owned()),
        cancel_reason: reason,
        at: Utc::now(),
        live_limit: None,
    }
}

pub(crate) fn page(size: u32, after: Option<&str>) -> PageRequest {
    PageRequest {
        size,
        after: after.map(|t| PageToken::decode(t).expect("a valid page token")),
    }
}

/// Every item of a list, walking pages of `size`; also returns how many pages it took.
async fn all_pages<T, F, Fut>(size: u32, mut list: F) -> (Vec<T>, usize)
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = crate::Result<Page<T>>>,
{
    let mut items = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let p = list(page(size, token.as_deref())).await.expect("list page");
        pages += 1;
        assert!(
            p.items.len() <= size as usize,
            "a page holds at most its size"
        );
        items.extend(p.items);
        match p.next_page_token {
            Some(next) => token = Some(next),
            None => return (items, pages),
        }
        assert!(pages < 1000, "pagination does not end");
    }
}

#[track_caller]
pub(crate) fn assert_not_found<T: std::fmt::Debug>(result: crate::Result<T>, what: &str) {
    match result {
        Err(StoreError::NotFound(w)) => assert_eq!(w, what),
        other => panic!("expected {what} not found, got {other:?}"),
    }
}

pub(crate) async fn events_of<S: Store>(
    store: &S,
    tenant: TenantId,
    run: RunId,
) -> Vec<(Option<RunState>, RunState, Option<String>)> {
    store
        .run_events(tenant, run)
        .await
        .expect("run events")
        .into_iter()
        .map(|e| {
            assert_eq!(e.run_id, run);
            (e.from, e.to, e.reason)
        })
        .collect()
}

// --- checks -----------------------------------------------------------------------------------

pub async fn ping_answers<S: Store>(store: &S) {
    store.ping().await.expect("ping");
}

pub async fn a_tenant_is_found_by_its_key_hash_and_an_unknown_hash_finds_nothing<S: Store>(
    store: &S,
) {
    let hash = random_hash();
    let key = NewApiKey {
        id: ApiKeyId::generate(),
        hash,
        prefix: "kai_abcd".into(),
    };
    let name = TenantName::parse("  Acme Corp ").expect("name");
    let tenant = store
        .create_tenant(&name, &key)
        .await
        .expect("create tenant");
    assert_eq!(tenant.name.as_str(), "Acme Corp");
    assert_eq!(
        store.tenant_for_key(&hash).await.expect("lookup"),
        Some(tenant.id)
    );
    assert_eq!(
        store.tenant_for_key(&random_hash()).await.expect("lookup"),
        None
    );

    let other = tenant_with_key(store, random_hash()).await;
    assert_ne!(other, tenant.id);
    assert_eq!(
        store.tenant_for_key(&hash).await.expect("lookup"),
        Some(tenant.id)
    );

    // A key hash belongs to one tenant only.
    let duplicate = NewApiKey {
        id: ApiKeyId::generate(),
        hash,
        prefix: "kai_dupe".into(),
    };
    let result = store.create_tenant(&name, &duplicate).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(
        store.tenant_for_key(&hash).await.expect("lookup"),
        Some(tenant.id)
    );
}

async fn tenant_with_key<S: Store>(store: &S, hash: [u8; 32]) -> TenantId {
    let key = NewApiKey {
        id: ApiKeyId::generate(),
        hash,
        prefix: "kai_x".into(),
    };
    let name = TenantName::parse("other").expect("name");
    store
        .create_tenant(&name, &key)
        .await
        .expect("create tenant")
        .id
}

pub async fn a_created_job_reads_back_as_written_with_version_one<S: Store>(store: &S) {
    let t = tenant(store).await;
    let id = JobId::generate();
    let spec = job_spec("nightly export");
    let created = store.create_job(t, id, &spec).await.expect("create job");
    assert_eq!(created.id, id);
    assert_eq!(created.tenant_id, t);
    assert_eq!(created.spec, spec);
    assert_eq!(created.version, 1);
    let read = store.get_job(t, id).await.expect("get job");
    assert_eq!(read.spec, spec);
    assert_eq!(read.version, 1);
    assert_eq!(read.created_at, created.created_at);

    let again = store.create_job(t, id, &spec).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_not_found(store.get_job(t, JobId::generate()).await, "job");
}

pub async fn jobs_are_listed_oldest_first_across_pages<S: Store>(store: &S) {
    let t = tenant(store).await;
    let other = tenant(store).await;
    job(store, other).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(job(store, t).await.id);
    }
    let (jobs, pages) = all_pages(2, |p| store.list_jobs(t, p)).await;
    assert_eq!(pages, 3);
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), ids);

    let exact = store.list_jobs(t, page(5, None)).await.expect("list");
    assert_eq!(exact.items.len(), 5);
    assert_eq!(exact.next_page_token, None, "no token when nothing follows");

    store.delete_job(t, ids[2]).await.expect("delete");
    let (jobs, _) = all_pages(100, |p| store.list_jobs(t, p)).await;
    assert_eq!(jobs.len(), 4, "deleted jobs are not listed");
}

pub async fn updating_a_job_bumps_its_version_and_a_stale_version_conflicts<S: Store>(store: &S) {
    let t = tenant(store).await;
    let created = job(store, t).await;
    let spec = job_spec("renamed");
    let updated = store
        .update_job(t, created.id, &spec, 1)
        .await
        .expect("update");
    assert_eq!(updated.version, 2);
    assert_eq!(updated.spec, spec);
    assert_eq!(store.get_job(t, created.id).await.expect("get").spec, spec);

    let stale = store.update_job(t, created.id, &job_spec("lost"), 1).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let read = store.get_job(t, created.id).await.expect("get");
    assert_eq!(read.version, 2);
    assert_eq!(read.spec.name.as_str(), "renamed");

    assert_not_found(
        store.update_job(t, JobId::generate(), &spec, 1).await,
        "job",
    );
}

pub async fn a_deleted_job_is_not_found_but_its_runs_stay_readable<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let run = create_run(store, t, &manual_run(j.id, now())).await;
    store.delete_job(t, j.id).await.expect("delete job");

    assert_not_found(store.get_job(t, j.id).await, "job");
    assert_not_found(store.update_job(t, j.id, &j.spec, j.version).await, "job");
    assert_not_found(store.delete_job(t, j.id).await, "job");
    assert_not_found(store.create_schedule(t, &new_schedule(j.id)).await, "job");
    assert_not_found(
        store.create_run(t, &manual_run(j.id, now()), None).await,
        "job",
    );

    let read = store.get_run(t, run.id).await.expect("run stays readable");
    assert_eq!(read.state, RunState::Cancelled);
    assert_eq!(read.reason.as_deref(), Some(cancel_reason::JOB_DELETED));
    let filter = RunFilter {
        job_id: Some(j.id),
        ..RunFilter::default()
    };
    let listed = store
        .list_runs(t, &filter, page(10, None))
        .await
        .expect("list runs");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(events_of(store, t, run.id).await.len(), 2);
}

pub async fn another_tenants_job_answers_exactly_as_a_missing_one<S: Store>(store: &S) {
    let owner = tenant(store).await;
    let stranger = tenant(store).await;
    let j = job(store, owner).await;

    assert_not_found(store.get_job(stranger, j.id).await, "job");
    assert_not_found(
        store.update_job(stranger, j.id, &job_spec("x"), 1).await,
        "job",
    );
    assert_not_found(store.delete_job(stranger, j.id).await, "job");
    assert_not_found(
        store.create_schedule(stranger, &new_schedule(j.id)).await,
        "job",
    );
    assert_not_found(
        store
            .list_schedules(stranger, Some(j.id), page(10, None))
            .await,
        "job",
    );
    assert_not_found(
        store
            .create_run(stranger, &manual_run(j.id, now()), Some("k"))
            .await,
        "job",
    );
    let filter = RunFilter {
        job_id: Some(j.id),
        ..RunFilter::default()
    };
    assert_not_found(
        store.list_runs(stranger, &filter, page(10, None)).await,
        "job",
    );
    let jobs = store
        .list_jobs(stranger, page(10, None))
        .await
        .expect("list");
    assert!(jobs.items.is_empty());

    // Nothing the stranger tried touched the owner's job.
    let read = store
        .get_job(owner, j.id)
        .await
        .expect("owner still sees it");
    assert_eq!(read.version, 1);
    assert!(
        store
            .list_schedules(owner, Some(j.id), page(10, None))
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        store
            .list_runs(owner, &filter, page(10, None))
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

pub async fn another_tenants_schedule_answers_exactly_as_a_missing_one<S: Store>(store: &S) {
    let owner = tenant(store).await;
    let stranger = tenant(store).await;
    let j = job(store, owner).await;
    let s = schedule(store, owner, j.id).await;
    let pending = create_run(
        store,
        owner,
        &scheduled_run(&s, now() + Duration::minutes(5)),
    )
    .await;

    assert_not_found(store.get_schedule(stranger, s.id).await, "schedule");
    let c = change(
        cron_spec("0 0 * * * *"),
        false,
        cancel_reason::SCHEDULE_UPDATED,
    );
    assert_not_found(
        store.update_schedule(stranger, s.id, &c, s.version).await,
        "schedule",
    );
    assert_not_found(store.delete_schedule(stranger, s.id).await, "schedule");
    assert_not_found(
        store
            .create_backfill_runs(stranger, &s, &[now() - Duration::hours(1)], false)
            .await,
        "schedule",
    );
    let filter = RunFilter {
        schedule_id: Some(s.id),
        ..RunFilter::default()
    };
    assert_not_found(
        store.list_runs(stranger, &filter, page(10, None)).await,
        "schedule",
    );
    assert!(
        store
            .list_schedules(stranger, None, page(10, None))
            .await
            .expect("list")
            .items
            .is_empty()
    );

    let read = store
        .get_schedule(owner, s.id)
        .await
        .expect("owner still sees it");
    assert_eq!(read.version, s.version);
    let run = store.get_run(owner, pending.id).await.expect("get run");
    assert_eq!(
        run.state,
        RunState::Scheduled,
        "the stranger's calls cancelled nothing"
    );
    assert_eq!(
        store
            .list_runs(owner, &filter, page(10, None))
            .await
            .expect("list")
            .items
            .len(),
        1
    );
}

pub async fn another_tenants_run_answers_exactly_as_a_missing_one<S: Store>(store: &S) {
    let owner = tenant(store).await;
    let stranger = tenant(store).await;
    let j = job(store, owner).await;
    let run = create_run(store, owner, &manual_run(j.id, now())).await;

    assert_not_found(store.get_run(stranger, run.id).await, "run");
    assert_not_found(store.cancel_run(stranger, run.id).await, "run");
    assert_not_found(store.run_logs(stranger, run.id).await, "run");
    assert_not_found(store.run_events(stranger, run.id).await, "run");
    let all = store
        .list_runs(stranger, &RunFilter::default(), page(10, None))
        .await
        .expect("list");
    assert!(all.items.is_empty());

    assert_not_found(store.get_run(owner, RunId::generate()).await, "run");
    let read = store
        .get_run(owner, run.id)
        .await
        .expect("owner still sees it");
    assert_eq!(read.state, RunState::Queued);
    let logs = store.run_logs(owner, run.id).await.expect("logs");
    assert_eq!(logs.run_id, run.id);
    assert_eq!(logs.content, "");
    assert!(!logs.truncated);
}

/// A schedule of `job` under a quota of `limit` live schedules; `live: false` is one with no
/// fire left (a one-off that fired), `paused` one that is paused.
fn limited_schedule(job: JobId, limit: u32, live: bool, paused: bool) -> NewSchedule {
    NewSchedule {
        live_limit: Some(limit),
        paused,
        next_fire_at: if live {
            new_schedule(job).next_fire_at
        } else {
            None
        },
        ..new_schedule(job)
    }
}

fn assert_limit_reached<T: std::fmt::Debug>(result: Result<T, StoreError>, limit: u32) {
    match result {
        Err(StoreError::LimitReached { what, limit: l }) => {
            assert_eq!((what, l), ("live schedules", limit));
        }
        other => panic!("expected the quota of {limit} to be reached, got {other:?}"),
    }
}

pub async fn the_live_schedule_quota_counts_paused_but_not_completed_schedules_and_writes_nothing_past_it<
    S: Store,
>(
    store: &S,
) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    // Two completed schedules (no fire left) do not count against a quota of two ...
    for _ in 0..2 {
        store
            .create_schedule(t, &limited_schedule(j.id, 2, false, false))
            .await
            .expect("a completed schedule");
    }
    // ... so two live ones fit, one of them paused,
    store
        .create_schedule(t, &limited_schedule(j.id, 2, true, false))
        .await
        .expect("the first live schedule");
    store
        .create_schedule(t, &limited_schedule(j.id, 2, true, true))
        .await
        .expect("a paused one counts but fits");
    // and a third is refused, live or completed, and writes nothing.
    let refused = limited_schedule(j.id, 2, true, false);
    assert_limit_reached(store.create_schedule(t, &refused).await, 2);
    assert_not_found(store.get_schedule(t, refused.id).await, "schedule");
    let listed = store
        .list_schedules(t, None, page(10, None))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 4, "nothing written past the quota");
    // An edit giving a completed schedule a fire again must fit the quota too.
    let completed = listed
        .items
        .iter()
        .find(|s| s.next_fire_at.is_none())
        .expect("a completed schedule");
    let revive = |limit| ScheduleChange {
        live_limit: Some(limit),
        ..change(
            cron_spec("0 * * * * *"),
            false,
            cancel_reason::SCHEDULE_UPDATED,
        )
    };
    assert_limit_reached(
        store
            .update_schedule(t, completed.id, &revive(2), completed.version)
            .await,
        2,
    );
    let unchanged = store.get_schedule(t, completed.id).await.expect("get");
    assert_eq!(unchanged.version, completed.version, "nothing written");
    assert_eq!(unchanged.next_fire_at, None);
    let revived = store
        .update_schedule(t, completed.id, &revive(3), completed.version)
        .await
        .expect("revived under a quota of three");
    assert!(revived.next_fire_at.is_some());
    // An edit of a live schedule at the quota is no revival and goes through.
    store
        .update_schedule(t, revived.id, &revive(3), revived.version)
        .await
        .expect("an edit of a live schedule");
    // A higher quota, or none, lets a create through; another tenant has its own.
    store
        .create_schedule(t, &limited_schedule(j.id, 4, true, false))
        .await
        .expect("under a quota of four");
    let other = tenant(store).await;
    let other_job = job(store, other).await;
    store
        .create_schedule(other, &limited_schedule(other_job.id, 1, true, false))
        .await
        .expect("another tenant's quota is its own");
}

pub async fn concurrent_creates_at_the_quota_leave_exactly_one_through<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let (a, b) = (
        limited_schedule(j.id, 1, true, false),
        limited_schedule(j.id, 1, true, false),
    );
    let (ra, rb) = futures::join!(store.create_schedule(t, &a), store.create_schedule(t, &b));
    let oks = [ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count();
    assert_eq!(
        oks, 1,
        "exactly one of two racing creates fits a quota of one: {ra:?} {rb:?}"
    );
    for r in [ra, rb] {
        if r.is_err() {
            assert_limit_reached(r, 1);
        }
    }
}

pub async fn a_schedule_for_a_missing_or_foreign_job_is_not_found_and_writes_nothing<S: Store>(
    store: &S,
) {
    let t = tenant(store).await;
    let other = tenant(store).await;
    let foreign = job(store, other).await;
    let missing = new_schedule(JobId::generate());
    assert_not_found(store.create_schedule(t, &missing).await, "job");
    assert_not_found(
        store.create_schedule(t, &new_schedule(foreign.id)).await,
        "job",
    );
    assert_not_found(store.get_schedule(t, missing.id).await, "schedule");
    assert!(
        store
            .list_schedules(t, None, page(10, None))
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        store
            .list_schedules(other, None, page(10, None))
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

pub async fn schedules_are_listed_per_job_across_pages<S: Store>(store: &S) {
    let t = tenant(store).await;
    let a = job(store, t).await;
    let b = job(store, t).await;
    let mut of_a = Vec::new();
    for _ in 0..5 {
        of_a.push(schedule(store, t, a.id).await);
        schedule(store, t, b.id).await;
    }
    let created = &of_a[0];
    assert_eq!(created.version, 1);
    assert_eq!(created.job_id, a.id);
    assert_eq!(created.tenant_id, t);
    assert_eq!(created.shard, ShardId::of(created.id.as_uuid()));
    assert!(!created.paused);
    let read = store.get_schedule(t, created.id).await.expect("get");
    assert_eq!(read.spec, created.spec);
    assert_eq!(read.next_fire_at, created.next_fire_at);

    let (listed, pages) = all_pages(2, |p| store.list_schedules(t, Some(a.id), p)).await;
    assert_eq!(pages, 3);
    assert_eq!(
        listed.iter().map(|s| s.id).collect::<Vec<_>>(),
        of_a.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    let (everything, _) = all_pages(3, |p| store.list_schedules(t, None, p)).await;
    assert_eq!(everything.len(), 10);
    assert_not_found(
        store
            .list_schedules(t, Some(JobId::generate()), page(10, None))
            .await,
        "job",
    );
}

pub async fn updating_a_schedule_bumps_its_version_and_cancels_runs_of_older_versions<S: Store>(
    store: &S,
) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    let soon = now() + Duration::minutes(1);
    let scheduled = create_run(store, t, &scheduled_run(&s, soon)).await;
    let queued = create_run(
        store,
        t,
        &NewRun {
            state: RunState::Queued,
            ..scheduled_run(&s, soon + Duration::minutes(1))
        },
    )
    .await;
    let manual = create_run(store, t, &manual_run(j.id, soon)).await;

    let spec = cron_spec("30 * * * * *");
    let c = change(spec.clone(), false, cancel_reason::SCHEDULE_UPDATED);
    let updated = store
        .update_schedule(t, s.id, &c, s.version)
        .await
        .expect("update schedule");
    assert_eq!(updated.version, s.version + 1);
    assert_eq!(updated.spec, spec);
    let NextFire::After(from) = c.next_fire else {
        panic!("an edit computes its next fire from a time")
    };
    assert_eq!(
        updated.next_fire_at,
        spec.timeline(s.id, updated.fire_count).next_after(from)
    );
    assert_eq!(
        store.get_schedule(t, s.id).await.expect("get").version,
        updated.version
    );

    for (run, from) in [
        (&scheduled, RunState::Scheduled),
        (&queued, RunState::Queued),
    ] {
        let read = store.get_run(t, run.id).await.expect("get run");
        assert_eq!(read.state, RunState::Cancelled);
        assert_eq!(
            read.reason.as_deref(),
            Some(cancel_reason::SCHEDULE_UPDATED)
        );
        assert!(read.finished_at.is_some());
        assert_eq!(
            events_of(store, t, run.id).await,
            [
                (None, from, None),
                (
                    Some(from),
                    RunState::Cancelled,
                    Some(cancel_reason::SCHEDULE_UPDATED.to_owned())
                ),
            ]
        );
    }
    let manual = store.get_run(t, manual.id).await.expect("get run");
    assert_eq!(
        manual.state,
        RunState::Queued,
        "runs not of the schedule are left alone"
    );

    // A stale update is refused and cancels nothing, not even runs it would obsolete.
    let current = create_run(
        store,
        t,
        &scheduled_run(&updated, soon + Duration::minutes(5)),
    )
    .await;
    assert_eq!(current.schedule_version, Some(updated.version));
    let stale = store.update_schedule(t, s.id, &c, s.version).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let read = store.get_run(t, current.id).await.expect("get run");
    assert_eq!(
        read.state,
        RunState::Scheduled,
        "a refused update cancels nothing"
    );
    assert_not_found(
        store
            .update_schedule(t, ScheduleId::generate(), &c, 1)
            .await,
        "schedule",
    );
}

pub async fn pausing_a_schedule_cancels_its_pending_runs_with_the_pause_reason<S: Store>(
    store: &S,
) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    let run = create_run(store, t, &scheduled_run(&s, now() + Duration::minutes(3))).await;
    let paused = store
        .update_schedule(
            t,
            s.id,
            &change(s.spec.clone(), true, cancel_reason::SCHEDULE_PAUSED),
            s.version,
        )
        .await
        .expect("pause");
    assert!(paused.paused);
    assert_eq!(paused.pause_note.as_deref(), Some("maintenance window"));
    assert_eq!(
        paused.next_fire_at, s.next_fire_at,
        "a pause keeps the next fire"
    );
    assert!(paused.paused_at.is_some(), "a pause records when");
    let read = store.get_run(t, run.id).await.expect("get run");
    assert_eq!(read.state, RunState::Cancelled);
    assert_eq!(read.reason.as_deref(), Some(cancel_reason::SCHEDULE_PAUSED));

    let resumed = store
        .update_schedule(
            t,
            s.id,
            &change(s.spec.clone(), false, cancel_reason::SCHEDULE_UPDATED),
            paused.version,
        )
        .await
        .expect("resume");
    assert!(!resumed.paused);
    assert_eq!(resumed.pause_note, None);
    assert_eq!(resumed.version, s.version + 2);
}

pub async fn deleting_a_schedule_cancels_its_pending_runs_and_keeps_their_history<S: Store>(
    store: &S,
) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    let keep = schedule(store, t, j.id).await;
    let done = create_run(store, t, &scheduled_run(&s, now() - Duration::minutes(10))).await;
    store.cancel_run(t, done.id).await.expect("cancel");
    let pending = create_run(store, t, &scheduled_run(&s, now() + Duration::minutes(10))).await;
    let other = create_run(
        store,
        t,
        &scheduled_run(&keep, now() + Duration::minutes(10)),
    )
    .await;

    store
        .delete_schedule(t, s.id)
        .await
        .expect("delete schedule");
    assert_not_found(store.get_schedule(t, s.id).await, "schedule");
    assert_not_found(store.delete_schedule(t, s.id).await, "schedule");

    let read = store
        .get_run(t, pending.id)
        .await
        .expect("history stays readable");
    assert_eq!(read.state, RunState::Cancelled);
    assert_eq!(
        read.reason.as_deref(),
        Some(cancel_reason::SCHEDULE_DELETED)
    );
    let done = store.get_run(t, done.id).await.expect("get");
    assert_eq!(
        done.reason.as_deref(),
        Some(cancel_reason::REQUESTED),
        "finished runs keep their end"
    );
    assert_eq!(
        store.get_run(t, other.id).await.expect("get").state,
        RunState::Scheduled
    );

    let filter = RunFilter {
        schedule_id: Some(s.id),
        ..RunFilter::default()
    };
    let listed = store
        .list_runs(t, &filter, page(10, None))
        .await
        .expect("runs of a deleted schedule");
    assert_eq!(listed.items.len(), 2);
}

pub async fn deleting_a_job_removes_its_schedules_and_cancels_its_pending_runs<S: Store>(
    store: &S,
) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let other_job = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    let other_schedule = schedule(store, t, other_job.id).await;
    let scheduled = create_run(store, t, &scheduled_run(&s, now() + Duration::minutes(2))).await;
    let manual = create_run(store, t, &manual_run(j.id, now())).await;
    let untouched = create_run(
        store,
        t,
        &scheduled_run(&other_schedule, now() + Duration::minutes(2)),
    )
    .await;

    store.delete_job(t, j.id).await.expect("delete job");
    assert_not_found(store.get_schedule(t, s.id).await, "schedule");
    assert!(store.get_schedule(t, other_schedule.id).await.is_ok());
    for run in [&scheduled, &manual] {
        let read = store.get_run(t, run.id).await.expect("get run");
        assert_eq!(read.state, RunState::Cancelled);
        assert_eq!(read.reason.as_deref(), Some(cancel_reason::JOB_DELETED));
        let events = events_of(store, t, run.id).await;
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            (
                Some(run.state),
                RunState::Cancelled,
                Some(cancel_reason::JOB_DELETED.to_owned())
            )
        );
    }
    assert_eq!(
        store.get_run(t, untouched.id).await.expect("get").state,
        RunState::Scheduled
    );
}

pub async fn the_same_idempotency_key_returns_the_first_run<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let first = manual_run(j.id, now());
    let (run, created) = store
        .create_run(t, &first, Some("deploy-42"))
        .await
        .expect("first");
    assert!(created);
    assert_eq!(run.id, first.id);
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.trigger, Trigger::Manual);
    assert_eq!(run.attempt, 1);
    assert_eq!(run.fire_time, first.fire_time);
    assert_eq!(run.env, first.env);
    assert_eq!(run.shard, first.shard);
    assert!(!run.cancel_requested);

    let second = manual_run(j.id, now() + Duration::seconds(3));
    let (again, created) = store
        .create_run(t, &second, Some("deploy-42"))
        .await
        .expect("second");
    assert!(!created);
    assert_eq!(again.id, run.id);
    assert_eq!(again.fire_time, run.fire_time);
    assert_not_found(store.get_run(t, second.id).await, "run");

    // The key is scoped to the job: another job may use it too.
    let other = job(store, t).await;
    let (elsewhere, created) = store
        .create_run(t, &manual_run(other.id, now()), Some("deploy-42"))
        .await
        .expect("other job");
    assert!(created);
    assert_ne!(elsewhere.id, run.id);
}

pub async fn a_different_idempotency_key_creates_a_new_run<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let (a, _) = store
        .create_run(t, &manual_run(j.id, now()), Some("a"))
        .await
        .expect("a");
    let (b, created) = store
        .create_run(t, &manual_run(j.id, now()), Some("b"))
        .await
        .expect("b");
    assert!(created);
    assert_ne!(a.id, b.id);
    let (c, created) = store
        .create_run(t, &manual_run(j.id, now()), None)
        .await
        .expect("no key");
    assert!(created);
    let (d, created) = store
        .create_run(t, &manual_run(j.id, now()), None)
        .await
        .expect("no key");
    assert!(created);
    assert_ne!(c.id, d.id);
    let filter = RunFilter {
        job_id: Some(j.id),
        ..RunFilter::default()
    };
    assert_eq!(
        store
            .list_runs(t, &filter, page(10, None))
            .await
            .expect("list")
            .items
            .len(),
        4
    );
}

pub async fn concurrent_calls_with_one_idempotency_key_create_exactly_one_run<S: Store>(store: &S) {
    const CALLS: usize = 6;
    const ROUNDS: usize = 10;
    let t = tenant(store).await;
    let j = job(store, t).await;
    // Open connections first, so the calls below race each other rather than the pool.
    for ping in futures::future::join_all((0..CALLS).map(|_| store.ping())).await {
        ping.expect("ping");
    }
    for round in 0..ROUNDS {
        let key = format!("once-{round}");
        let news: Vec<NewRun> = (0..CALLS).map(|_| manual_run(j.id, now())).collect();
        let calls = news.iter().map(|n| store.create_run(t, n, Some(&key)));
        let mut created = 0;
        let mut ids = Vec::new();
        for result in futures::future::join_all(calls).await {
            let (run, was_created) = result.expect("every call succeeds");
            created += usize::from(was_created);
            ids.push(run.id);
        }
        assert_eq!(created, 1, "exactly one call creates the run");
        ids.dedup();
        assert_eq!(ids.len(), 1, "every call answers with the same run");
    }
    let filter = RunFilter {
        job_id: Some(j.id),
        ..RunFilter::default()
    };
    let (runs, _) = all_pages(100, |p| store.list_runs(t, &filter, p)).await;
    assert_eq!(runs.len(), ROUNDS, "one run per key");
}

pub async fn a_failed_run_insert_writes_nothing<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    let fire = now() + Duration::minutes(1);
    create_run(store, t, &scheduled_run(&s, fire)).await;
    // Same fire and attempt: refused, and its idempotency key is not kept.
    let duplicate = scheduled_run(&s, fire);
    let result = store.create_run(t, &duplicate, Some("dup")).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_not_found(store.get_run(t, duplicate.id).await, "run");
    let retry = manual_run(j.id, now());
    let (run, created) = store
        .create_run(t, &retry, Some("dup"))
        .await
        .expect("key is free");
    assert!(created);
    assert_eq!(run.id, retry.id);
    let all = store
        .list_runs(t, &RunFilter::default(), page(10, None))
        .await
        .expect("list");
    assert_eq!(all.items.len(), 2);
}

pub async fn a_second_run_for_the_same_fire_and_attempt_conflicts<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    let fire = now() + Duration::minutes(1);
    let first = create_run(store, t, &scheduled_run(&s, fire)).await;
    let result = store.create_run(t, &scheduled_run(&s, fire), None).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    // A retry is another attempt of the same fire.
    let retry = NewRun {
        attempt: 2,
        retry_of: Some(first.id),
        trigger: Trigger::Retry,
        state: RunState::Queued,
        ..scheduled_run(&s, fire)
    };
    let retried = create_run(store, t, &retry).await;
    assert_eq!(retried.attempt, 2);
    assert_eq!(retried.retry_of, Some(first.id));
    assert_eq!(retried.trigger, Trigger::Retry);
}

pub async fn a_run_from_an_outdated_schedule_version_conflicts<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    store
        .update_schedule(
            t,
            s.id,
            &change(s.spec.clone(), false, cancel_reason::SCHEDULE_UPDATED),
            s.version,
        )
        .await
        .expect("update");
    let stale = scheduled_run(&s, now() + Duration::minutes(1));
    let result = store.create_run(t, &stale, None).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_not_found(store.get_run(t, stale.id).await, "run");
    let gone = NewRun {
        schedule: Some((ScheduleId::generate(), 1)),
        ..scheduled_run(&s, now())
    };
    assert_not_found(store.create_run(t, &gone, None).await, "schedule");
}

pub async fn backfill_creates_queued_runs_and_skips_fires_that_already_have_one<S: Store>(
    store: &S,
) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    let base = now() - Duration::hours(3);
    let fires: Vec<_> = (0..4).map(|i| base + Duration::minutes(i)).collect();
    let existing = create_run(store, t, &scheduled_run(&s, fires[1])).await;

    let mut asked = fires.clone();
    asked.push(fires[2]);
    asked.reverse();
    let done = store
        .create_backfill_runs(t, &s, &asked, false)
        .await
        .expect("backfill");
    assert_eq!(
        done.left_alone,
        [fires[1]],
        "a fire in progress is left alone"
    );
    let runs = done.created;
    assert_eq!(
        runs.iter().map(|r| r.fire_time).collect::<Vec<_>>(),
        [fires[0], fires[2], fires[3]],
        "one run per new fire, by fire time"
    );
    for run in &runs {
        assert_eq!(run.state, RunState::Queued);
        assert_eq!(run.trigger, Trigger::Backfill);
        assert_eq!(run.attempt, 1);
        assert_eq!(run.schedule_id, Some(s.id));
        assert_eq!(run.schedule_version, Some(s.version));
        assert_eq!(run.job_id, j.id);
        assert_eq!(run.shard, s.shard);
        assert_eq!(
            events_of(store, t, run.id).await,
            [(None, RunState::Queued, None)]
        );
    }
    assert_eq!(
        store.get_run(t, existing.id).await.expect("get").trigger,
        Trigger::Schedule
    );

    let again = store
        .create_backfill_runs(t, &s, &fires, false)
        .await
        .expect("backfill again");
    assert!(
        again.created.is_empty(),
        "a repeated backfill creates nothing: its fires are in progress"
    );
    assert_eq!(again.left_alone, fires);
    let empty = store
        .create_backfill_runs(t, &s, &[], false)
        .await
        .expect("empty");
    assert!(empty.created.is_empty() && empty.left_alone.is_empty());
    let filter = RunFilter {
        schedule_id: Some(s.id),
        ..RunFilter::default()
    };
    assert_eq!(
        store
            .list_runs(t, &filter, page(100, None))
            .await
            .expect("list")
            .items
            .len(),
        4
    );
}

pub async fn a_backfill_from_an_outdated_schedule_conflicts<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    store
        .update_schedule(
            t,
            s.id,
            &change(
                cron_spec("0 0 * * * *"),
                false,
                cancel_reason::SCHEDULE_UPDATED,
            ),
            s.version,
        )
        .await
        .expect("update");
    let result = store
        .create_backfill_runs(t, &s, &[now() - Duration::hours(1)], false)
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    let all = store
        .list_runs(t, &RunFilter::default(), page(10, None))
        .await
        .expect("list");
    assert!(all.items.is_empty());
}

pub async fn cancelling_a_pending_run_cancels_it_at_once<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    let queued = create_run(store, t, &manual_run(j.id, now())).await;
    let scheduled = create_run(store, t, &scheduled_run(&s, now() + Duration::minutes(1))).await;
    for run in [queued, scheduled] {
        let cancelled = store.cancel_run(t, run.id).await.expect("cancel");
        assert_eq!(cancelled.id, run.id);
        assert_eq!(cancelled.state, RunState::Cancelled);
        assert_eq!(cancelled.reason.as_deref(), Some(cancel_reason::REQUESTED));
        assert!(cancelled.finished_at.is_some());
        assert!(!cancelled.cancel_requested);
        let read = store.get_run(t, run.id).await.expect("get");
        assert_eq!(read.state, RunState::Cancelled);
    }
    assert_not_found(store.cancel_run(t, RunId::generate()).await, "run");
}

pub async fn cancelling_a_finished_run_fails_its_precondition<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let run = create_run(store, t, &manual_run(j.id, now())).await;
    store.cancel_run(t, run.id).await.expect("first cancel");
    match store.cancel_run(t, run.id).await {
        Err(StoreError::FailedPrecondition(message)) => {
            assert_eq!(message, "run is already cancelled");
        }
        other => panic!("expected a failed precondition, got {other:?}"),
    }
    assert_eq!(
        events_of(store, t, run.id).await.len(),
        2,
        "a refused cancel writes no event"
    );
}

pub async fn run_events_record_each_transition_once_in_order<S: Store>(store: &S) {
    let t = tenant(store).await;
    let j = job(store, t).await;
    let s = schedule(store, t, j.id).await;
    let run = create_run(store, t, &scheduled_run(&s, now() + Duration::minutes(1))).await;
    assert_eq!(
        events_of(store, t, run.id).await,
        [(None, RunState::Scheduled, None)]
    );
    store.cancel_run(t, run.id).await.expect("cancel");
    let events = store.run_events(t, run.id).await.expect("events");
    assert_eq!(events.len(), 2);
    assert!(events[0].id < events[1].id);
    assert!(events[0].at <= events[1].at);
    assert_eq!(events[0].from, None);
    assert_eq!(events[0].to, RunState::Scheduled);
    assert_eq!(events[1].from, Some(RunState::Scheduled));
    assert_eq!(events[1].to, RunState::Cancelled);
    assert_eq!(events[1].reason.as_deref(), Some(cancel_reason::REQUESTED));
    for e in &events {
        assert!(
            e.from.is_none_or(|from| from.can_move_to(e.to)),
            "I3: states only move forward"
        );
    }
    // Another run's events are its own.
    let other = create_run(store, t, &manual_run(j.id, now())).await;
    assert_eq!(
        events_of(store, t, other.id).await,
        [(None, RunState::Queued, None)]
    );
}

pub async fn runs_are_filtered_by_job_schedule_and_state_across_pages<S: Store>(store: &S) {
    let t = tenant(store).await;
    let a = job(store, t).await;
    let b = job(store, t).await;
    let s = schedule(store, t, a.id).await;
    let mut of_a = Vec::new();
    for i in 0..5 {
        of_a.push(
            create_run(store, t, &manual_run(a.id, now() - Duration::minutes(i)))
                .await
                .id,
        );
    }
    let mut of_s = Vec::new();
    for i in 0..3 {
        of_s.push(
            create_run(
                store,
                t,
                &scheduled_run(&s, now() + Duration::minutes(i + 1)),
            )
            .await
            .id,
        );
    }
    of_a.extend(&of_s);
    create_run(store, t, &manual_run(b.id, now())).await;
    store.cancel_run(t, of_s[0]).await.expect("cancel");

    let by_job = RunFilter {
        job_id: Some(a.id),
        ..RunFilter::default()
    };
    let (runs, pages) = all_pages(3, |p| store.list_runs(t, &by_job, p)).await;
    assert_eq!(pages, 3);
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        of_a,
        "by id, oldest first"
    );

    let by_schedule = RunFilter {
        schedule_id: Some(s.id),
        ..RunFilter::default()
    };
    let (runs, _) = all_pages(2, |p| store.list_runs(t, &by_schedule, p)).await;
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), of_s);

    let cancelled = RunFilter {
        state: Some(RunState::Cancelled),
        ..RunFilter::default()
    };
    let (runs, _) = all_pages(10, |p| store.list_runs(t, &cancelled, p)).await;
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [of_s[0]]);

    let combined = RunFilter {
        job_id: Some(a.id),
        schedule_id: Some(s.id),
        state: Some(RunState::Scheduled),
    };
    let (runs, _) = all_pages(10, |p| store.list_runs(t, &combined, p)).await;
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), of_s[1..]);

    let no_filter = RunFilter::default();
    let (everything, _) = all_pages(4, |p| store.list_runs(t, &no_filter, p)).await;
    assert_eq!(everything.len(), 9);
    let unknown = RunFilter {
        schedule_id: Some(ScheduleId::generate()),
        ..RunFilter::default()
    };
    assert_not_found(
        store.list_runs(t, &unknown, page(10, None)).await,
        "schedule",
    );
}

/// The trait's contract for retention, whatever the mechanism (Postgres drops monthly
/// partitions, SQLite deletes rows; the partition names Postgres reports are checked in
/// `store/tests/postgres.rs`): history is kept from the first day of the month holding
/// `now - retention`, older runs go with their events and idempotency keys, and a second pass
/// changes nothing.
pub async fn retention_drops_the_runs_of_months_past_it_keeps_the_rest_and_is_idempotent<
    S: Store,
>(
    store: &S,
) {
    let at = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    };
    // Prepares the history from May 2040 (31 days before mid-June) on.
    store
        .maintain_partitions(at("2040-06-15T12:00:00Z"), 31)
        .await
        .expect("first pass");

    let t = tenant(store).await;
    let j = job(store, t).await;
    let old = manual_run(j.id, at("2040-05-20T08:00:00Z"));
    store
        .create_run(t, &old, Some("key"))
        .await
        .expect("old run");
    // Inside the retention once the cut moves to June 1st, though older than `now - 31 days`.
    let kept = create_run(store, t, &manual_run(j.id, at("2040-06-10T08:00:00Z"))).await;
    let recent = create_run(store, t, &manual_run(j.id, at("2040-07-19T08:00:00Z"))).await;

    for pass in ["a month later", "the same pass again"] {
        store
            .maintain_partitions(at("2040-07-20T00:00:00Z"), 31)
            .await
            .expect(pass);
        assert_not_found(store.get_run(t, old.id).await, "run");
        assert_not_found(store.run_events(t, old.id).await, "run");
        for run in [&kept, &recent] {
            assert_eq!(store.get_run(t, run.id).await.expect(pass).id, run.id);
            assert_eq!(events_of(store, t, run.id).await.len(), 1, "{pass}");
        }
    }
    let filter = RunFilter {
        job_id: Some(j.id),
        ..RunFilter::default()
    };
    let listed = store
        .list_runs(t, &filter, page(10, None))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 2);
    // The dropped run's idempotency key went with it.
    let (fresh, created) = store
        .create_run(
            t,
            &manual_run(j.id, at("2040-07-01T00:00:00Z")),
            Some("key"),
        )
        .await
        .expect("reuse key");
    assert!(created);
    assert_ne!(fresh.id, old.id);
}

// --- registry credentials ---------------------------------------------------------------------

/// A registry credential for `server` named `name` (password `pa55-w0rd`).
pub fn credential(name: &str, server: &str) -> kairos_domain::CredentialSpec {
    kairos_domain::CredentialDraft {
        name: Some(name.into()),
        server: Some(server.into()),
        username: Some("bot".into()),
        password: Some("pa55-w0rd".into()),
    }
    .parse()
    .expect("credential")
}

pub async fn registry_credentials_are_kept_per_tenant_and_never_shown_with_their_password<
    S: Store,
>(
    store: &S,
) {
    let t = tenant(store).await;
    let other = tenant(store).await;
    let c = store
        .create_registry_credential(t, &credential("example", "registry.example.com"))
        .await
        .expect("create");
    assert_eq!(
        (c.name.as_str(), c.server.as_str(), c.username.as_str()),
        ("example", "registry.example.com", "bot")
    );
    assert!(
        !format!("{c:?}").contains("pa55"),
        "no password in what is shown"
    );
    assert!(matches!(
        store
            .create_registry_credential(t, &credential("example", "ghcr.io"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .create_registry_credential(t, &credential("ghcr", "ghcr.io"))
        .await
        .expect("create");
    let names: Vec<String> = store
        .list_registry_credentials(t)
        .await
        .expect("list")
        .iter()
        .map(|c| c.name.as_str().to_owned())
        .collect();
    assert_eq!(names, ["example", "ghcr"]);
    assert!(
        store
            .list_registry_credentials(other)
            .await
            .expect("list")
            .is_empty()
    );
    let name = kairos_domain::CredentialName::parse_as("name", "ghcr").expect("name");
    assert_not_found(
        store.delete_registry_credential(other, &name).await,
        "registry credential",
    );
    store
        .delete_registry_credential(t, &name)
        .await
        .expect("delete");
    assert_eq!(
        store
            .list_registry_credentials(t)
            .await
            .expect("list")
            .len(),
        1
    );
    assert_not_found(
        store.delete_registry_credential(t, &name).await,
        "registry credential",
    );
}

pub async fn a_job_names_only_its_tenants_credential_for_its_images_registry<S: Store>(store: &S) {
    let t = tenant(store).await;
    let other = tenant(store).await;
    store
        .create_registry_credential(t, &credential("example", "registry.example.com"))
        .await
        .expect("create");
    store
        .create_registry_credential(t, &credential("ghcr", "ghcr.io"))
        .await
        .expect("create");
    store
        .create_registry_credential(other, &credential("theirs", "registry.example.com"))
        .await
        .expect("create");
    let named = |name: &str| {
        let mut spec = job_spec("private");
        spec.registry_credential = Some(
            kairos_domain::CredentialName::parse_as("registry_credential", name).expect("name"),
        );
        spec
    };
    for (name, why) in [
        ("missing", "no such credential"),
        ("theirs", "another tenant's"),
        ("ghcr", "for another registry than the image's"),
    ] {
        match store.create_job(t, JobId::generate(), &named(name)).await {
            Err(StoreError::Invalid(e)) => assert_eq!(e.field, "registry_credential", "{why}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    assert!(
        store
            .list_jobs(t, page(10, None))
            .await
            .expect("list")
            .items
            .is_empty(),
        "nothing written"
    );
    let job = store
        .create_job(t, JobId::generate(), &named("example"))
        .await
        .expect("a credential for the image's registry");
    assert_eq!(
        job.spec.registry_credential.as_ref().map(|c| c.as_str()),
        Some("example")
    );
    let example = kairos_domain::CredentialName::parse_as("name", "example").expect("name");
    assert!(
        matches!(
            store.delete_registry_credential(t, &example).await,
            Err(StoreError::FailedPrecondition(_))
        ),
        "a credential a job names stays"
    );
    let mut plain = job.spec.clone();
    plain.registry_credential = None;
    store
        .update_job(t, job.id, &plain, job.version)
        .await
        .expect("drop the credential");
    store
        .delete_registry_credential(t, &example)
        .await
        .expect("no job names it any more");
}
