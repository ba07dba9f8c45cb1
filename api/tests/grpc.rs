//! The gRPC adapter over a real socket and a real Postgres: the same service layer answers
//! with the same codes as REST, names the bad field in metadata, isolates tenants, and
//! `WatchRun` streams a run's transitions until it ends.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use kairos_api::{Service, clock::SystemClock, config::Secret, grpc, metrics::Metrics};
use kairos_proto::v1::{
    self as pb, job_service_client::JobServiceClient, tenant_service_client::TenantServiceClient,
};
use kairos_store::PgStore;
use kairos_testkit::TestDatabase;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, transport::Channel};

const ADMIN: &str = "grpc-admin";

struct Server {
    channel: Channel,
    stop: CancellationToken,
    _db: TestDatabase,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn server() -> Server {
    let db = kairos_testkit::database().await.unwrap();
    let store = PgStore::connect(db.url()).await.unwrap();
    store.migrate().await.unwrap();
    let service = Service::new(
        Arc::new(store),
        Arc::new(SystemClock),
        Some(Secret::new(ADMIN)),
        Metrics::new(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(grpc::serve(service, listener, stop.clone()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Server {
        channel,
        stop,
        _db: db,
    }
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn tenant(server: &Server, name: &str) -> String {
    let mut client = TenantServiceClient::new(server.channel.clone());
    let response = client
        .create_tenant(authed(pb::CreateTenantRequest { name: name.into() }, ADMIN))
        .await
        .unwrap()
        .into_inner();
    response.api_key
}

fn not_found<T>(result: Result<T, tonic::Status>) {
    assert_eq!(result.map(|_| ()).unwrap_err().code(), Code::NotFound);
}

fn job_request(memory_mb: Option<i32>) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        name: "etl".into(),
        image: "busybox:1.36".into(),
        command: vec!["true".into()],
        memory_mb,
        ..Default::default()
    }
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field_and_writes_nothing() {
    let server = server().await;
    let key = tenant(&server, "acme").await;
    let mut jobs = JobServiceClient::new(server.channel.clone());
    let status = jobs
        .create_job(authed(job_request(Some(4096)), &key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.metadata().get(grpc::ERROR_FIELD_METADATA).unwrap(),
        "memory_mb"
    );
    assert!(status.message().contains("1024"), "{}", status.message());

    let job = jobs
        .create_job(authed(job_request(None), &key))
        .await
        .unwrap()
        .into_inner();
    let status = jobs
        .create_schedule(authed(
            pb::CreateScheduleRequest {
                job_id: job.id.clone(),
                cron: Some("0 0 * * *".into()),
                timezone: Some("Atlantis/Capital".into()),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.metadata().get(grpc::ERROR_FIELD_METADATA).unwrap(),
        "timezone"
    );
    let listed = jobs
        .list_jobs(authed(pb::ListJobsRequest::default(), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.jobs.len(), 1);
    let schedules = jobs
        .list_schedules(authed(pb::ListSchedulesRequest::default(), &key))
        .await
        .unwrap()
        .into_inner();
    assert!(schedules.schedules.is_empty());
}

#[tokio::test]
async fn calls_need_a_key_and_other_tenants_resources_are_not_found() {
    let server = server().await;
    let alice = tenant(&server, "alice").await;
    let mallory = tenant(&server, "mallory").await;
    let mut jobs = JobServiceClient::new(server.channel.clone());
    let status = jobs
        .list_jobs(Request::new(pb::ListJobsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let job = jobs
        .create_job(authed(job_request(None), &alice))
        .await
        .unwrap()
        .into_inner();
    let run = jobs
        .execute_job(authed(
            pb::ExecuteJobRequest {
                job_id: job.id.clone(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    not_found(
        jobs.get_job(authed(
            pb::GetJobRequest {
                job_id: job.id.clone(),
            },
            &mallory,
        ))
        .await,
    );
    not_found(
        jobs.delete_job(authed(
            pb::DeleteJobRequest {
                job_id: job.id.clone(),
            },
            &mallory,
        ))
        .await,
    );
    not_found(
        jobs.execute_job(authed(
            pb::ExecuteJobRequest {
                job_id: job.id.clone(),
                ..Default::default()
            },
            &mallory,
        ))
        .await,
    );
    not_found(
        jobs.get_run(authed(
            pb::GetRunRequest {
                run_id: run.id.clone(),
            },
            &mallory,
        ))
        .await,
    );
    not_found(
        jobs.cancel_run(authed(
            pb::CancelRunRequest {
                run_id: run.id.clone(),
            },
            &mallory,
        ))
        .await,
    );
    not_found(
        jobs.watch_run(authed(
            pb::WatchRunRequest {
                run_id: run.id.clone(),
            },
            &mallory,
        ))
        .await,
    );
    // Alice's run is untouched.
    let mine = jobs
        .get_run(authed(
            pb::GetRunRequest {
                run_id: run.id.clone(),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.state, "queued");
}

#[tokio::test]
async fn execute_is_idempotent_and_watch_streams_until_the_run_ends() {
    let server = server().await;
    let key = tenant(&server, "acme").await;
    let mut jobs = JobServiceClient::new(server.channel.clone());
    let job = jobs
        .create_job(authed(job_request(None), &key))
        .await
        .unwrap()
        .into_inner();
    let execute = |jobs: &mut JobServiceClient<Channel>| {
        let request = authed(
            pb::ExecuteJobRequest {
                job_id: job.id.clone(),
                idempotency_key: Some("once".into()),
                ..Default::default()
            },
            &key,
        );
        let mut jobs = jobs.clone();
        async move { jobs.execute_job(request).await.unwrap().into_inner() }
    };
    let first = execute(&mut jobs).await;
    let second = execute(&mut jobs).await;
    assert!(first.created && !second.created);
    let run = first.run.unwrap();
    assert_eq!(second.run.unwrap().id, run.id);

    let mut stream = jobs
        .watch_run(authed(
            pb::WatchRunRequest {
                run_id: run.id.clone(),
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    let created = stream.message().await.unwrap().unwrap();
    assert_eq!(created.to_state, "queued");
    jobs.cancel_run(authed(
        pb::CancelRunRequest {
            run_id: run.id.clone(),
        },
        &key,
    ))
    .await
    .unwrap();
    let cancelled = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.to_state, "cancelled");
    assert_eq!(cancelled.from_state.as_deref(), Some("queued"));
    // The stream ends after the terminal event.
    assert!(
        tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn schedules_carry_their_state_limits_and_jitter_and_triggers_take_an_overlap_override() {
    let server = server().await;
    let key = tenant(&server, "acme").await;
    let mut jobs = JobServiceClient::new(server.channel.clone());
    let job = jobs
        .create_job(authed(job_request(None), &key))
        .await
        .unwrap()
        .into_inner();
    let schedule = jobs
        .create_schedule(authed(
            pb::CreateScheduleRequest {
                job_id: job.id.clone(),
                cron: Some("0 * * * *".into()),
                jitter_seconds: Some(120),
                max_runs: Some(2),
                catchup_max_runs: Some(4),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(schedule.state, "active");
    assert_eq!(schedule.max_runs, Some(2));
    assert_eq!(schedule.catchup_max_runs, 4);
    assert_eq!(schedule.fire_count, 0);
    assert!((0..120_000).contains(&schedule.jitter_offset_ms));
    assert_eq!(schedule.next_fire_times.len(), 2, "two fires left of two");
    assert_eq!(
        schedule.next_fire_at, schedule.next_fire_times[0].utc,
        "the preview starts at the next fire"
    );
    let bad = jobs
        .create_schedule(authed(
            pb::CreateScheduleRequest {
                job_id: job.id.clone(),
                cron: Some("@daily".into()),
                max_runs: Some(0),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        bad.metadata().get("kairos-error-field").unwrap(),
        "max_runs"
    );

    let first = jobs
        .trigger_schedule(authed(
            pb::TriggerScheduleRequest {
                schedule_id: schedule.id.clone(),
                overlap_policy: None,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.state, "queued");
    assert_eq!(first.due_at, first.fire_time);
    let skipped = jobs
        .trigger_schedule(authed(
            pb::TriggerScheduleRequest {
                schedule_id: schedule.id.clone(),
                overlap_policy: None,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (skipped.state.as_str(), skipped.reason.as_deref()),
        ("skipped", Some("overlap"))
    );
    let held = jobs
        .trigger_schedule(authed(
            pb::TriggerScheduleRequest {
                schedule_id: schedule.id.clone(),
                overlap_policy: Some("buffer_one".into()),
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.blocked_by.as_deref(), Some(first.id.as_str()));
    let bad = jobs
        .trigger_schedule(authed(
            pb::TriggerScheduleRequest {
                schedule_id: schedule.id.clone(),
                overlap_policy: Some("sometimes".into()),
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        bad.metadata().get("kairos-error-field").unwrap(),
        "overlap_policy"
    );

    let paused = jobs
        .pause_schedule(authed(
            pb::PauseScheduleRequest {
                schedule_id: schedule.id.clone(),
                note: Some("deploy".into()),
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.state, "paused");
    assert!(paused.paused_at.is_some());
    let resumed = jobs
        .resume_schedule(authed(
            pb::ResumeScheduleRequest {
                schedule_id: schedule.id.clone(),
                catch_up: true,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.state, "active");
    assert!(resumed.paused_at.is_none());
}
