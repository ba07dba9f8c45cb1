//! The SDK against the real API: the gRPC server of `kairos-api` in this process, on a
//! loopback port, over a real, migrated Postgres. Covers auth, field errors, pagination,
//! idempotent execute-now, retries across a server that is not up yet or restarts, and
//! watching and waiting until a run ends (ended here by a cancel: no scheduler runs).

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use kairos_api::{
    Service,
    clock::{Clock, SystemClock},
    config::Secret,
    metrics::Metrics,
};
use kairos_domain::RunState;
use kairos_sdk::{
    AdminClient, Client, ClientOptions, Code, Error, JobUpdate, NewJob, NewSchedule, RetryPolicy,
    RunFilter, ScheduleUpdate,
};
use kairos_store::{PgStore, Store};
use kairos_testkit::{TestDatabase, database, free_port};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "sdk-test-admin";

/// The API's gRPC server on a fixed port, which can be stopped and started again.
struct Api {
    addr: SocketAddr,
    store: Arc<dyn Store>,
    running: Option<(CancellationToken, JoinHandle<()>)>,
    _db: TestDatabase,
}

impl Api {
    async fn new() -> Api {
        let db = database().await.unwrap();
        let store = PgStore::connect(db.url()).await.unwrap();
        store.migrate().await.unwrap();
        Api {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            store: Arc::new(store),
            running: None,
            _db: db,
        }
    }

    async fn started() -> Api {
        let mut api = Api::new().await;
        api.start().await;
        api
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn start(&mut self) {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let service = Service::new(
            self.store.clone(),
            clock,
            Some(Secret::new(ADMIN)),
            Metrics::new(),
        );
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                kairos_api::grpc::serve(service, listener, stop)
                    .await
                    .unwrap()
            }
        });
        self.running = Some((stop, task));
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            task.await.unwrap();
        }
    }

    /// A tenant made through the SDK's admin client, and a client with its key.
    async fn tenant(&self) -> Client {
        let admin = AdminClient::new(self.url(), ADMIN, ClientOptions::default()).unwrap();
        let tenant = admin.create_tenant("acme").await.unwrap();
        assert!(tenant.tenant.id.starts_with("ten_"));
        Client::builder(self.url())
            .api_key(tenant.api_key)
            .build()
            .unwrap()
    }
}

fn busybox(name: &str) -> NewJob {
    NewJob::new(name, "busybox:1.36").command(["echo", "hi"])
}

/// A retry policy patient enough for a server that comes up within a few seconds.
fn patient() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 30,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(300),
    }
}

#[tokio::test]
async fn a_wrong_api_key_or_admin_token_is_refused_as_an_auth_error() {
    let api = Api::started().await;
    let stranger = Client::builder(api.url())
        .api_key("kairos_not_a_key")
        .build()
        .unwrap();
    let e = stranger.list_jobs(0, "").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.is_auth());
    assert_eq!(e.code_name(), "unauthenticated");

    let admin = AdminClient::new(api.url(), "wrong", ClientOptions::default()).unwrap();
    let e = admin.create_tenant("x").await.unwrap_err();
    assert!(e.is_auth(), "{e:?}");
}

#[tokio::test]
async fn an_invalid_field_carries_its_code_and_field_and_writes_nothing() {
    let api = Api::started().await;
    let client = api.tenant().await;
    let e = client
        .create_job(busybox("big").memory_mb(4096))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.field(), Some("memory_mb"));
    match &e {
        Error::Api { message, .. } => assert!(message.contains("1024"), "{message}"),
        other => panic!("not an API error: {other:?}"),
    }
    assert!(e.to_string().ends_with("(field: memory_mb)"), "{e}");
    let jobs = client.list_jobs(0, "").await.unwrap();
    assert!(jobs.items.is_empty() && jobs.is_last());

    // A schedule with a bad zone names it too.
    let job = client.create_job(busybox("ok")).await.unwrap();
    let e = client
        .create_schedule(NewSchedule::cron(&job.id, "@hourly").timezone("Mars/Olympus"))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("timezone"), "{e:?}");
}

#[tokio::test]
async fn pagination_streams_every_item_across_pages() {
    let api = Api::started().await;
    let client = api.tenant().await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            client
                .create_job(busybox(&format!("job-{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let first = client.list_jobs(3, "").await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert!(!first.is_last());
    let all: Vec<String> = client.jobs(3).map_ok(|j| j.id).try_collect().await.unwrap();
    assert_eq!(all, created, "every job once, oldest first");

    for _ in 0..5 {
        client.execute_now(&created[0], None).await.unwrap();
    }
    client.execute_now(&created[1], None).await.unwrap();
    let runs: Vec<_> = client
        .runs(RunFilter::new().job(&created[0]), 2)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(runs.len(), 5);
    assert!(runs.iter().all(|r| r.job_id == created[0]));
    let queued: Vec<_> = client
        .runs(RunFilter::new().state(RunState::Queued), 4)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(queued.len(), 6);
}

#[tokio::test]
async fn execute_now_with_the_same_key_answers_the_same_run() {
    let api = Api::started().await;
    let client = api.tenant().await;
    let job = client.create_job(busybox("once")).await.unwrap();
    let first = client.execute_now(&job.id, Some("order-42")).await.unwrap();
    assert!(first.created);
    assert_eq!(first.run.state, "queued");
    let again = client.execute_now(&job.id, Some("order-42")).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.run.id, first.run.id);
    let other = client.execute_now(&job.id, Some("order-43")).await.unwrap();
    assert!(other.created);
    assert_ne!(other.run.id, first.run.id);
    let e = client
        .execute_now(&job.id, Some("has spaces"))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("idempotency_key"));
    let runs = client
        .list_runs(&RunFilter::new().job(&job.id), 0, "")
        .await
        .unwrap();
    assert_eq!(runs.items.len(), 2);
}

#[tokio::test]
async fn calls_are_retried_until_a_server_that_is_not_up_yet_answers() {
    let mut api = Api::new().await;
    let client = Client::builder(api.url())
        .api_key("kairos_unknown")
        .retry(patient())
        .build()
        .unwrap();
    let late = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        api.start().await;
    };
    // A read and the server's first answer: unauthenticated, proving the call got through.
    let (answer, ()) = tokio::join!(client.list_jobs(0, ""), late);
    assert_eq!(answer.unwrap_err().code(), Code::Unauthenticated);

    // Without retries, a server that is down is reported as unreachable, naming the URL.
    api.stop().await;
    let impatient = Client::builder(api.url())
        .api_key("k")
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let e = impatient.list_jobs(0, "").await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.to_string().contains(&api.url()), "{e}");
}

#[tokio::test]
async fn a_create_is_retried_only_while_nothing_was_sent_and_survives_a_restart() {
    let mut api = Api::started().await;
    let client = Client::builder(api.url())
        .api_key(tenant_key(&api).await)
        .retry(patient())
        .build()
        .unwrap();
    let job = client.create_job(busybox("before")).await.unwrap();

    // The server goes away and comes back: the open connection breaks, the client reconnects.
    api.stop().await;
    let back = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        api.start().await;
    };
    let (read, ()) = tokio::join!(client.get_job(&job.id), back);
    assert_eq!(read.unwrap().id, job.id);

    // A create while the server is down was never sent, so it is retried and lands once.
    api.stop().await;
    let back = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        api.start().await;
    };
    let (created, ()) = tokio::join!(client.create_job(busybox("after")), back);
    created.unwrap();
    let names: Vec<String> = client
        .jobs(0)
        .map_ok(|j| j.name)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(names, ["before", "after"]);
}

/// A fresh tenant's key (for clients built with their own options).
async fn tenant_key(api: &Api) -> String {
    let admin = AdminClient::new(api.url(), ADMIN, ClientOptions::default()).unwrap();
    admin
        .create_tenant("acme")
        .await
        .unwrap()
        .api_key
        .expose()
        .to_owned()
}

#[tokio::test]
async fn watch_and_wait_follow_a_run_to_its_end() {
    let api = Api::started().await;
    let client = api.tenant().await;
    let job = client.create_job(busybox("watched")).await.unwrap();
    let run = client.execute_now(&job.id, None).await.unwrap().run;

    // Nothing runs it here: a wait times out, and the run is left as it was.
    let e = client
        .wait_for_run(&run.id, Duration::from_millis(600))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_eq!(e.code_name(), "deadline_exceeded");

    // A watcher sees the recorded transition, then the cancel as it happens, then the end.
    let watcher = tokio::spawn({
        let (client, id) = (client.clone(), run.id.clone());
        async move {
            client
                .watch_run(id)
                .map_ok(|e| (e.from_state, e.to_state))
                .try_collect::<Vec<_>>()
                .await
        }
    });
    let waiter = tokio::spawn({
        let (client, id) = (client.clone(), run.id.clone());
        async move {
            let mut seen = Vec::new();
            let run = client
                .wait_for_run_with(id, Duration::from_secs(30), |e| {
                    seen.push(e.to_state.clone())
                })
                .await;
            (run, seen)
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let cancelled = client.cancel_run(&run.id).await.unwrap();
    assert_eq!(cancelled.state, "cancelled");

    let events = watcher.await.unwrap().unwrap();
    assert_eq!(
        events,
        [
            (None, "queued".to_owned()),
            (Some("queued".to_owned()), "cancelled".to_owned())
        ]
    );
    let (ended, seen) = waiter.await.unwrap();
    let ended = ended.unwrap();
    assert_eq!(ended.state, "cancelled");
    assert!(ended.finished_at.is_some());
    assert_eq!(seen, ["queued", "cancelled"]);

    // Watching an ended run replays its transitions and ends.
    let replay: Vec<_> = client.watch_run(&run.id).try_collect().await.unwrap();
    assert_eq!(replay.len(), 2);
    // Following the logs of an ended run ends too (it has no output).
    let chunks: Vec<_> = client
        .follow_logs(&run.id, Duration::from_millis(100))
        .try_collect()
        .await
        .unwrap();
    assert!(chunks.is_empty());
    // A second cancel of an ended run is refused.
    let e = client.cancel_run(&run.id).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // Watching a run that does not exist is NOT_FOUND at once.
    let e = client
        .watch_run("run_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f")
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn jobs_and_schedules_go_through_their_whole_life() {
    let api = Api::started().await;
    let client = api.tenant().await;
    let job = client.create_job(busybox("life")).await.unwrap();
    let job = client
        .update_job(JobUpdate::new(&job.id).memory_mb(512).name("renamed"))
        .await
        .unwrap();
    assert_eq!((job.memory_mb, job.name.as_str()), (512, "renamed"));
    assert_eq!(client.get_job(&job.id).await.unwrap().version, job.version);

    let schedule = client
        .create_schedule(NewSchedule::every(&job.id, Duration::from_secs(3600)).paused(true))
        .await
        .unwrap();
    assert!(schedule.paused && schedule.next_fire_times.is_empty());
    let resumed = client.resume_schedule(&schedule.id).await.unwrap();
    assert_eq!(resumed.next_fire_times.len(), 5);
    let paused = client
        .pause_schedule(&schedule.id, Some("maintenance"))
        .await
        .unwrap();
    assert_eq!(paused.pause_note.as_deref(), Some("maintenance"));
    let updated = client
        .update_schedule(
            ScheduleUpdate::new(&schedule.id)
                .cron("0 0 9 * * *")
                .timezone("Asia/Tokyo"),
        )
        .await
        .unwrap();
    assert_eq!(updated.cron.as_deref(), Some("0 0 9 * * *"));
    let listed: Vec<_> = client
        .schedules(Some(job.id.clone()), 0)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    let fired = client.trigger_schedule(&schedule.id).await.unwrap();
    assert_eq!(fired.schedule_id.as_deref(), Some(schedule.id.as_str()));
    assert_eq!(fired.trigger, "manual");
    let now = chrono::Utc::now();
    let preview = client
        .backfill_schedule(&schedule.id, now - chrono::Duration::days(3), now, true)
        .await
        .unwrap();
    assert!(preview.runs.is_empty());
    assert!((2..=3).contains(&preview.fire_times.len()), "{preview:?}");
    let e = client
        .backfill_schedule(&schedule.id, now, now - chrono::Duration::days(1), true)
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("to"));
    let events = client.run_events(&fired.id).await.unwrap();
    assert_eq!(events[0].to_state, "queued");
    assert_eq!(client.run_logs(&fired.id).await.unwrap().content, "");

    client.delete_schedule(&schedule.id).await.unwrap();
    assert!(
        client
            .get_schedule(&schedule.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    client.delete_job(&job.id).await.unwrap();
    assert!(client.get_job(&job.id).await.unwrap_err().is_not_found());
    // The delete cancelled the pending run.
    assert_eq!(client.get_run(&fired.id).await.unwrap().state, "cancelled");
}
