//! Runs the `Store` conformance suite against `PgStore`, plus checks only Postgres can answer
//! (concurrent migrations, NOTIFY, partitions, raw row states); never shares a database
//! between tests.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kairos_domain::{
    ApiKeyId, Env, JobDraft, JobId, RunId, RunState, ScheduleDraft, ScheduleId, ShardId, TenantId,
    TenantName, Trigger,
};
use kairos_store::{
    FireState, Materialize, NewApiKey, NewRun, NewSchedule, PgStore, RUNS_CANCEL_CHANNEL,
    RUNS_QUEUED_CHANNEL, SCHEDULE_CHANGES_CHANNEL, Schedule, ScheduleChange, SchedulerStore, Store,
    StoreError,
};
use kairos_testkit::TestDatabase;
use sqlx::postgres::PgListener;

/// A fresh, migrated, empty store, and the database it lives in (dropped after the test).
async fn pg() -> (PgStore, TestDatabase) {
    let db = kairos_testkit::database().await.expect("a test database");
    let key =
        kairos_store::SecretKey::from_hex(&kairos_store::SecretKey::generate_hex()).expect("key");
    let store = PgStore::connect_with_pool_size(db.url(), 8)
        .await
        .expect("connect")
        .with_secret_key(key);
    store.migrate().await.expect("migrate");
    (store, db)
}

/// The shared suite (the `conformance` feature is on for this crate's tests, see Cargo.toml).
mod conformance {
    kairos_store::store_conformance_suite!(super::pg());
}

/// The `SchedulerStore` suite, on the same fixture.
mod scheduler_conformance {
    kairos_store::scheduler_store_conformance_suite!(super::pg());
}

async fn tenant(store: &PgStore) -> TenantId {
    let key = NewApiKey {
        id: ApiKeyId::generate(),
        hash: *uuid::Uuid::new_v4()
            .as_bytes()
            .repeat(2)
            .first_chunk::<32>()
            .expect("32 bytes"),
        prefix: "kai_t".into(),
    };
    store
        .create_tenant(&TenantName::parse("t").expect("name"), &key)
        .await
        .expect("tenant")
        .id
}

async fn job(store: &PgStore, tenant: TenantId) -> JobId {
    let spec = JobDraft {
        name: Some("j".into()),
        image: Some("busybox".into()),
        ..JobDraft::default()
    }
    .parse()
    .expect("spec");
    store
        .create_job(tenant, JobId::generate(), &spec)
        .await
        .expect("job")
        .id
}

fn manual(job: JobId, fire_time: DateTime<Utc>) -> NewRun {
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
        env: Env::default(),
        overlap: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_migrations_both_succeed() {
    let db = kairos_testkit::database().await.expect("a test database");
    let a = PgStore::connect(db.url()).await.expect("connect a");
    let b = PgStore::connect(db.url()).await.expect("connect b");
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("first migration");
    rb.expect("second migration");
    a.migrate().await.expect("migrating again is a no-op");

    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(a.pool())
        .await
        .expect("count migrations");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .expect("the migrations folder")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert_eq!(applied, files as i64, "each migration applied once");
    let month = Utc::now().format("%Y%m").to_string();
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent IN ('runs'::regclass, 'run_events'::regclass)",
    )
    .fetch_all(a.pool())
    .await
    .expect("partitions");
    assert!(
        partitions.contains(&format!("runs_p{month}")),
        "{partitions:?}"
    );
    assert!(
        partitions.contains(&format!("run_events_p{month}")),
        "{partitions:?}"
    );
    // A year back, 13 months ahead, for both tables.
    assert!(partitions.len() >= 2 * 26, "{}", partitions.len());
    a.ping().await.expect("ping");
}

/// What Postgres' retention does beyond the trait's contract (checked by the conformance
/// suite): monthly partitions from the retention's month to 13 months ahead, dropped whole.
#[tokio::test]
async fn partition_maintenance_creates_monthly_partitions_ahead_and_drops_those_past_retention() {
    let (store, _db) = pg().await;
    let at = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    };
    let first = store
        .maintain_partitions(at("2040-06-15T12:00:00Z"), 31)
        .await
        .expect("first pass");
    for name in [
        "runs_p204005",
        "run_events_p204005",
        "runs_p204107",
        "run_events_p204107",
    ] {
        assert!(
            first.created.iter().any(|c| c == name),
            "{name} created: {first:?}"
        );
    }
    for name in ["runs_p204004", "runs_p204108", "run_events_p204108"] {
        assert!(
            !first.created.iter().any(|c| c == name),
            "{name} not created: {first:?}"
        );
    }
    assert_eq!(
        first.created.len(),
        2 * 15,
        "May 2040 through July 2041, for both tables"
    );
    let second = store
        .maintain_partitions(at("2040-06-15T12:00:00Z"), 31)
        .await
        .expect("second pass");
    assert!(
        second.created.is_empty() && second.dropped.is_empty(),
        "idempotent: {second:?}"
    );
    let later = store
        .maintain_partitions(at("2040-07-20T00:00:00Z"), 31)
        .await
        .expect("a month later");
    let mut dropped = later.dropped.clone();
    dropped.sort();
    assert_eq!(dropped, ["run_events_p204005", "runs_p204005"]);
    let mut created = later.created.clone();
    created.sort();
    assert_eq!(created, ["run_events_p204108", "runs_p204108"]);
}

#[tokio::test]
async fn every_shard_has_a_fence_row() {
    let (store, _db) = pg().await;
    let (count, min, max): (i64, i16, i16) =
        sqlx::query_as("SELECT count(*), min(shard), max(shard) FROM shard_fences WHERE token = 0")
            .fetch_one(store.pool())
            .await
            .expect("fences");
    assert_eq!((count, min, max), (1024, 0, 1023));
}

#[tokio::test]
async fn cancelling_a_running_run_only_requests_it() {
    let (store, _db) = pg().await;
    let t = tenant(&store).await;
    let j = job(&store, t).await;
    let (run, _) = store
        .create_run(t, &manual(j, Utc::now()), None)
        .await
        .expect("run");
    sqlx::query("UPDATE runs SET state = 'running', started_at = now() WHERE id = $1")
        .bind(run.id.as_uuid())
        .execute(store.pool())
        .await
        .expect("start the run");

    let requested = store.cancel_run(t, run.id).await.expect("cancel");
    assert_eq!(requested.state, RunState::Running);
    assert!(requested.cancel_requested);
    assert!(requested.finished_at.is_none());
    let again = store.cancel_run(t, run.id).await.expect("cancel again");
    assert!(again.cancel_requested);
    assert_eq!(store.run_events(t, run.id).await.expect("events").len(), 1);

    sqlx::query("UPDATE runs SET state = 'succeeded' WHERE id = $1")
        .bind(run.id.as_uuid())
        .execute(store.pool())
        .await
        .expect("finish the run");
    match store.cancel_run(t, run.id).await {
        Err(StoreError::FailedPrecondition(m)) => assert_eq!(m, "run is already succeeded"),
        other => panic!("expected a failed precondition, got {other:?}"),
    }
}

#[tokio::test]
async fn a_row_that_does_not_parse_is_reported_as_corrupt() {
    let (store, _db) = pg().await;
    let t = tenant(&store).await;
    let j = job(&store, t).await;
    sqlx::query("UPDATE jobs SET image = 'Not An Image!', env = '{\"TOKEN\": 7}' WHERE id = $1")
        .bind(j.as_uuid())
        .execute(store.pool())
        .await
        .expect("corrupt the row");
    match store.get_job(t, j).await {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("image"), "{message}"),
        other => panic!("expected a corrupt row, got {other:?}"),
    }
}

#[tokio::test]
async fn a_run_outside_the_kept_history_is_refused_naming_the_fire_time() {
    let (store, _db) = pg().await;
    let t = tenant(&store).await;
    let j = job(&store, t).await;
    let ancient = DateTime::parse_from_rfc3339("1999-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    match store.create_run(t, &manual(j, ancient), Some("k")).await {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, "fire_time"),
        other => panic!("expected invalid fire_time, got {other:?}"),
    }
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(store.pool())
        .await
        .expect("count keys");
    assert_eq!(keys, 0, "the failed call left nothing behind");
}

#[tokio::test]
async fn committed_changes_are_announced_on_their_channels_with_the_shard() {
    let (store, db) = pg().await;
    let mut listener = PgListener::connect(db.url()).await.expect("listener");
    listener
        .listen_all([
            SCHEDULE_CHANGES_CHANNEL,
            RUNS_QUEUED_CHANNEL,
            RUNS_CANCEL_CHANNEL,
        ])
        .await
        .expect("listen");
    let mut next = async || {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification within 10 s")
            .expect("receive");
        (n.channel().to_owned(), n.payload().to_owned())
    };

    let t = tenant(&store).await;
    let j = job(&store, t).await;
    let spec = ScheduleDraft {
        cron: Some("@hourly".into()),
        ..ScheduleDraft::default()
    }
    .parse(Utc::now())
    .expect("schedule spec");
    let new = NewSchedule {
        id: ScheduleId::generate(),
        job_id: j,
        spec: spec.clone(),
        paused: false,
        pause_note: None,
        next_fire_at: spec.next_fire_after(Utc::now()),
        live_limit: None,
    };
    let shard = ShardId::of(new.id.as_uuid()).get().to_string();
    let s = store.create_schedule(t, &new).await.expect("schedule");
    assert_eq!(
        next().await,
        (SCHEDULE_CHANGES_CHANNEL.to_owned(), shard.clone())
    );

    let run = manual(j, Utc::now());
    let (created, _) = store.create_run(t, &run, None).await.expect("run");
    // A queued run is named with its fire time, so its shard's owner offers it without a scan.
    let expected = format!(
        "{} {} {}",
        run.shard.get(),
        created.id,
        created.fire_time.timestamp_micros()
    );
    assert_eq!(
        next().await,
        (RUNS_QUEUED_CHANNEL.to_owned(), expected.clone())
    );

    // A cancel asked for the run once it runs names it to its shard's owner.
    let lease = store
        .claim_shard(run.shard, 1, "node-a")
        .await
        .expect("claim");
    store
        .ack_run(&lease, created.id, "worker-1")
        .await
        .expect("ack")
        .expect("started");
    store.cancel_run(t, created.id).await.expect("cancel");
    assert_eq!(next().await, (RUNS_CANCEL_CHANNEL.to_owned(), expected));

    let change = ScheduleChange {
        spec,
        paused: true,
        pause_note: None,
        next_fire: kairos_store::NextFire::Keep,
        cancel_reason: kairos_domain::run::cancel_reason::SCHEDULE_PAUSED,
        at: Utc::now(),
        live_limit: None,
    };
    store
        .update_schedule(t, s.id, &change, s.version)
        .await
        .expect("pause");
    assert_eq!(
        next().await,
        (SCHEDULE_CHANGES_CHANNEL.to_owned(), shard.clone())
    );
    store.delete_schedule(t, s.id).await.expect("delete");
    assert_eq!(next().await, (SCHEDULE_CHANGES_CHANNEL.to_owned(), shard));

    // A refused change announces nothing.
    assert!(store.delete_schedule(t, s.id).await.is_err());
    let quiet = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(
        quiet.is_err(),
        "no notification for a failed write: {quiet:?}"
    );
}

/// An hourly schedule of `job`, due at its next hour.
async fn hourly(store: &PgStore, tenant: TenantId, job: JobId) -> Schedule {
    let spec = ScheduleDraft {
        cron: Some("@hourly".into()),
        ..ScheduleDraft::default()
    }
    .parse(Utc::now())
    .expect("schedule spec");
    let new = NewSchedule {
        id: ScheduleId::generate(),
        job_id: job,
        next_fire_at: spec.next_fire_after(Utc::now()),
        live_limit: None,
        spec,
        paused: false,
        pause_note: None,
    };
    store.create_schedule(tenant, &new).await.expect("schedule")
}

fn next_fire(s: &Schedule) -> Materialize {
    let at = s.next_fire_at.expect("a next fire");
    Materialize {
        schedule_id: s.id,
        schedule_version: s.version,
        fire_time: at,
        state: FireState::Scheduled,
        next_fire_at: s.spec.next_fire_after(at),
    }
}

fn shard_column(s: &Schedule) -> i16 {
    i16::try_from(s.shard.get()).expect("shards fit a smallint")
}

async fn count_runs(store: &PgStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(store.pool())
        .await
        .expect("count runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_on_a_claim_in_flight_fails_once_the_claim_commits() {
    let (store, _db) = pg().await;
    let t = tenant(&store).await;
    let j = job(&store, t).await;
    let s = hourly(&store, t, j).await;
    let lease = store
        .claim_shard(s.shard, 1, "node-a")
        .await
        .expect("claim");

    // Another node's claim, caught between locking the fence row and committing.
    let mut claim = store.pool().begin().await.expect("begin");
    sqlx::query("SELECT token FROM shard_fences WHERE shard = $1 FOR UPDATE")
        .bind(shard_column(&s))
        .execute(&mut *claim)
        .await
        .expect("lock the fence");
    let write = tokio::spawn({
        let (store, lease, fire) = (store.clone(), lease.clone(), next_fire(&s));
        async move { store.materialize(&lease, &[fire]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!write.is_finished(), "the write waits for the claim");
    sqlx::query("UPDATE shard_fences SET token = 2, owner = 'node-b' WHERE shard = $1")
        .bind(shard_column(&s))
        .execute(&mut *claim)
        .await
        .expect("take the shard");
    claim.commit().await.expect("commit the claim");

    let result = write.await.expect("join");
    assert!(
        matches!(result, Err(StoreError::Fenced { token: 1, .. })),
        "{result:?}"
    );
    assert_eq!(
        count_runs(&store).await,
        0,
        "the fenced write wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_waits_for_the_fenced_writes_in_flight() {
    let (store, _db) = pg().await;
    let t = tenant(&store).await;
    let j = job(&store, t).await;
    let s = hourly(&store, t, j).await;
    store
        .claim_shard(s.shard, 1, "node-a")
        .await
        .expect("claim");

    // A fenced write of the current holder, caught after its fence check.
    let mut write = store.pool().begin().await.expect("begin");
    sqlx::query("SELECT token FROM shard_fences WHERE shard = $1 FOR SHARE")
        .bind(shard_column(&s))
        .execute(&mut *write)
        .await
        .expect("check the fence");
    let claim = tokio::spawn({
        let (store, shard) = (store.clone(), s.shard);
        async move { store.claim_shard(shard, 2, "node-b").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!claim.is_finished(), "the claim waits for the write");
    write.commit().await.expect("commit the write");
    let lease = claim
        .await
        .expect("join")
        .expect("the claim succeeds after");
    assert_eq!(lease.token(), 2);
    let owner: Option<String> =
        sqlx::query_scalar("SELECT owner FROM shard_fences WHERE shard = $1")
            .bind(shard_column(&s))
            .fetch_one(store.pool())
            .await
            .expect("owner");
    assert_eq!(owner.as_deref(), Some("node-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_refuses_a_run_whose_schedule_moved_on_even_if_nothing_cancelled_it() {
    let (store, _db) = pg().await;
    let t = tenant(&store).await;
    let j = job(&store, t).await;
    let s = hourly(&store, t, j).await;
    let lease = store
        .claim_shard(s.shard, 1, "node-a")
        .await
        .expect("claim");
    let runs = store
        .materialize(&lease, &[next_fire(&s)])
        .await
        .expect("materialize");
    store
        .queue_runs(&lease, &[runs[0].id])
        .await
        .expect("queue");
    // A version bump that (unlike the API's) cancelled nothing: the ack itself guards I4.
    sqlx::query("UPDATE schedules SET version = version + 1 WHERE id = $1")
        .bind(s.id.as_uuid())
        .execute(store.pool())
        .await
        .expect("bump the version");

    let ack = store
        .ack_run(&lease, runs[0].id, "worker-1")
        .await
        .expect("ack");
    assert!(ack.is_none(), "{ack:?}");
    let run = store.get_run(t, runs[0].id).await.expect("run");
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(store.run_events(t, run.id).await.expect("events").len(), 2);
}

#[tokio::test]
async fn nul_bytes_in_a_log_tail_are_stored_replaced() {
    let (store, _db) = pg().await;
    let t = tenant(&store).await;
    let j = job(&store, t).await;
    let s = hourly(&store, t, j).await;
    let lease = store
        .claim_shard(s.shard, 1, "node-a")
        .await
        .expect("claim");
    let id = store
        .materialize(&lease, &[next_fire(&s)])
        .await
        .expect("materialize")[0]
        .id;
    store.queue_runs(&lease, &[id]).await.expect("queue");
    store
        .ack_run(&lease, id, "worker-1")
        .await
        .expect("ack")
        .expect("queued");
    let outcome = kairos_store::RunOutcome {
        state: kairos_store::TerminalState::Succeeded,
        exit_code: Some(0),
        log_tail: "binary\0output".into(),
        log_truncated: false,
        total_bytes: None,
    };
    store
        .finish_run(&lease, id, &outcome)
        .await
        .expect("finish");
    let logs = store.run_logs(t, id).await.expect("logs");
    assert_eq!(logs.content, "binary\u{fffd}output");
}

#[tokio::test]
async fn registry_passwords_are_sealed_at_rest_and_need_the_key() {
    let (store, db) = pg().await;
    let t = tenant(&store).await;
    store
        .create_registry_credential(
            t,
            &kairos_store::conformance::credential("example", "registry.example.com"),
        )
        .await
        .expect("create");
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT password_sealed FROM registry_credentials")
        .fetch_one(store.pool())
        .await
        .expect("read");
    assert!(
        !sealed.windows(9).any(|w| w == b"pa55-w0rd"),
        "the password is not stored in clear"
    );
    let keyless = PgStore::connect(db.url()).await.expect("connect");
    assert!(
        matches!(
            keyless
                .create_registry_credential(
                    t,
                    &kairos_store::conformance::credential("other", "ghcr.io")
                )
                .await,
            Err(StoreError::FailedPrecondition(_))
        ),
        "a server without KAIROS_SECRET_KEY refuses to keep credentials"
    );
}
