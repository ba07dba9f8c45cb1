//! Runs the real `kairos` binary against an in-process fake `JobService`/`TenantService` on
//! loopback, to check what only the wire shows: the bearer header, the error line built from
//! status metadata, exit codes and streaming. It must never reach anything but 127.0.0.1.

use std::{
    net::SocketAddr,
    process::Output,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use kairos_proto::v1::{self as pb, job_service_server::JobServiceServer};
use tonic::{
    Request, Response, Status, codegen::tokio_stream, metadata::MetadataValue,
    transport::server::TcpIncoming,
};

const RUN: &str = "run_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f";

/// The fake's memory, shared between the server task and the test.
#[derive(Default, Clone)]
struct Fake {
    authorization: Arc<Mutex<Vec<String>>>,
    polls: Arc<AtomicUsize>,
    /// Calls of `CreateSchedule` (which always answers UNAVAILABLE).
    creates: Arc<AtomicUsize>,
    /// Calls of `ListJobs` (UNAVAILABLE twice, then an answer).
    lists: Arc<AtomicUsize>,
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn run_in(state: &str) -> pb::Run {
    pb::Run {
        id: RUN.into(),
        job_id: "job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f".into(),
        trigger: "manual".into(),
        attempt: 1,
        fire_time: ts(1_769_850_000),
        state: state.into(),
        created_at: ts(1_769_850_000),
        ..pb::Run::default()
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl pb::job_service_server::JobService for Fake {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        if let Some(auth) = request.metadata().get("authorization") {
            let auth = auth.to_str().unwrap_or("<not ascii>").to_owned();
            self.authorization
                .lock()
                .expect("no test panicked holding the lock")
                .push(auth);
        }
        let req = request.into_inner();
        if req.memory_mb.is_some_and(|mb| mb > 1024) {
            let mut status = Status::invalid_argument(format!(
                "memory_mb: must be at most 1024 (1 GiB), got {}",
                req.memory_mb.unwrap_or_default()
            ));
            status.metadata_mut().insert(
                "kairos-error-field",
                MetadataValue::from_static("memory_mb"),
            );
            return Err(status);
        }
        Ok(Response::new(pb::Job {
            id: "job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f".into(),
            name: req.name,
            image: req.image,
            command: req.command,
            env: req.env,
            memory_mb: req.memory_mb.unwrap_or(256),
            timeout_seconds: req.timeout_seconds.unwrap_or(3600),
            retry: Some(pb::RetryPolicy {
                max_attempts: Some(1),
                initial_backoff_seconds: Some(10),
                max_backoff_seconds: Some(300),
            }),
            labels: req.labels,
            version: 1,
            created_at: ts(1_769_850_000),
            updated_at: ts(1_769_850_000),
            registry_credential: req.registry_credential,
        }))
    }
    async fn get_job(&self, _: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        Err(Status::not_found("job not found"))
    }
    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        if self.lists.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(Status::unavailable("warming up"));
        }
        Ok(Response::new(pb::ListJobsResponse::default()))
    }
    async fn update_job(
        &self,
        _: Request<pb::UpdateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        unimplemented()
    }
    async fn delete_job(
        &self,
        _: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        unimplemented()
    }
    async fn create_registry_credential(
        &self,
        _: Request<pb::CreateRegistryCredentialRequest>,
    ) -> Result<Response<pb::RegistryCredential>, Status> {
        unimplemented()
    }
    async fn list_registry_credentials(
        &self,
        _: Request<pb::ListRegistryCredentialsRequest>,
    ) -> Result<Response<pb::ListRegistryCredentialsResponse>, Status> {
        unimplemented()
    }
    async fn delete_registry_credential(
        &self,
        _: Request<pb::DeleteRegistryCredentialRequest>,
    ) -> Result<Response<pb::DeleteRegistryCredentialResponse>, Status> {
        unimplemented()
    }
    async fn create_schedule(
        &self,
        _: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        // As if the server went away after it might have committed.
        self.creates.fetch_add(1, Ordering::SeqCst);
        Err(Status::unavailable("connection lost"))
    }
    async fn get_schedule(
        &self,
        _: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        unimplemented()
    }
    async fn list_schedules(
        &self,
        _: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        unimplemented()
    }
    async fn update_schedule(
        &self,
        _: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        unimplemented()
    }
    async fn delete_schedule(
        &self,
        _: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        unimplemented()
    }
    async fn pause_schedule(
        &self,
        _: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        unimplemented()
    }
    async fn resume_schedule(
        &self,
        _: Request<pb::ResumeScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        unimplemented()
    }
    async fn trigger_schedule(
        &self,
        _: Request<pb::TriggerScheduleRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        unimplemented()
    }
    async fn backfill_schedule(
        &self,
        _: Request<pb::BackfillScheduleRequest>,
    ) -> Result<Response<pb::BackfillScheduleResponse>, Status> {
        unimplemented()
    }
    async fn execute_job(
        &self,
        _: Request<pb::ExecuteJobRequest>,
    ) -> Result<Response<pb::ExecuteJobResponse>, Status> {
        unimplemented()
    }
    /// Answers the run as it ended: failed with exit code 3.
    async fn get_run(&self, _: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let mut run = run_in("failed");
        run.reason = Some("exit_code".into());
        run.exit_code = Some(3);
        Ok(Response::new(run))
    }
    async fn list_runs(
        &self,
        _: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        Ok(Response::new(pb::ListRunsResponse {
            runs: vec![run_in("succeeded")],
            next_page_token: "p1_next".into(),
        }))
    }
    async fn cancel_run(
        &self,
        _: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        unimplemented()
    }
    async fn get_run_logs(
        &self,
        _: Request<pb::GetRunLogsRequest>,
    ) -> Result<Response<pb::GetRunLogsResponse>, Status> {
        unimplemented()
    }
    async fn list_run_events(
        &self,
        _: Request<pb::ListRunEventsRequest>,
    ) -> Result<Response<pb::ListRunEventsResponse>, Status> {
        unimplemented()
    }
    type WatchRunStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::RunEvent, Status>>>;
    async fn watch_run(
        &self,
        _: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let event = |id, from: Option<&str>, to: &str| pb::RunEvent {
            id,
            run_id: RUN.into(),
            from_state: from.map(str::to_owned),
            to_state: to.into(),
            reason: None,
            at: ts(1_769_850_000 + id),
        };
        Ok(Response::new(tokio_stream::iter(vec![
            Ok(event(1, None, "queued")),
            Ok(event(2, Some("queued"), "running")),
            Ok(event(3, Some("running"), "failed")),
        ])))
    }
}

async fn serve() -> (SocketAddr, Fake) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback port");
    let addr = listener.local_addr().expect("bound address");
    let fake = Fake::default();
    let service = JobServiceServer::new(fake.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
    });
    (addr, fake)
}

/// Runs `kairos` with a clean environment for its own variables.
async fn kairos(addr: SocketAddr, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .env_remove("KAIROS_API_KEY")
        .env_remove("KAIROS_ADMIN_TOKEN")
        // Never the credentials file of whoever runs the tests.
        .env(
            "KAIROS_CREDENTIALS_FILE",
            "/nonexistent/kairos-test/credentials",
        )
        .env("KAIROS_ENDPOINT", format!("http://{addr}"))
        .args(args)
        .output()
        .await
        .expect("the kairos binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn create_sends_the_api_key_and_prints_the_job_as_rest_json() {
    let (addr, fake) = serve().await;
    let out = kairos(
        addr,
        &[
            "--api-key",
            "k_test",
            "--output",
            "json",
            "jobs",
            "create",
            "--name",
            "hello",
            "--image",
            "alpine:3.20",
            "--env",
            "GREETING=hi",
            "--",
            "echo",
            "hi",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["name"], "hello");
    assert_eq!(job["command"], serde_json::json!(["echo", "hi"]));
    assert_eq!(job["env"]["GREETING"], "hi");
    assert_eq!(job["memory_mb"], 256);
    assert_eq!(job["created_at"], "2026-01-31T09:00:00Z");
    assert_eq!(*fake.authorization.lock().unwrap(), ["Bearer k_test"]);
}

#[tokio::test]
async fn a_field_error_prints_one_line_naming_the_field_and_exits_two() {
    let (addr, _) = serve().await;
    let out = kairos(
        addr,
        &[
            "--api-key",
            "k",
            "jobs",
            "create",
            "--name",
            "n",
            "--image",
            "alpine",
            "--memory-mb",
            "2048",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: invalid_argument: must be at most 1024 (1 GiB), got 2048 (field: memory_mb)\n"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn not_found_exits_one() {
    let (addr, _) = serve().await;
    let out = kairos(
        addr,
        &[
            "--api-key",
            "k",
            "jobs",
            "get",
            "job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: not_found: job not found\n");
}

#[tokio::test]
async fn wait_prints_each_transition_as_it_streams_and_exits_with_the_runs_end() {
    let (addr, fake) = serve().await;
    let out = kairos(addr, &["--api-key", "k", "runs", "wait", RUN]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "2026-01-31T09:00:01Z  {RUN}  - -> queued\n\
             2026-01-31T09:00:02Z  {RUN}  queued -> running\n\
             2026-01-31T09:00:03Z  {RUN}  running -> failed\n\
             {RUN}  failed  reason=exit_code  exit_code=3\n"
        )
    );
    // The transitions came from the stream; the run was read once, at its end.
    assert_eq!(fake.polls.load(Ordering::SeqCst), 1);

    // With JSON, stdout is the ended run alone and the progress goes to stderr.
    let out = kairos(
        addr,
        &["--api-key", "k", "--output", "json", "runs", "wait", RUN],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["state"], "failed");
    assert_eq!(
        text(&out.stderr).lines().count(),
        3,
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn reads_are_retried_while_the_server_is_unavailable_but_creates_are_sent_once() {
    let (addr, fake) = serve().await;
    let out = kairos(
        addr,
        &["--api-key", "k", "--output", "json", "jobs", "list"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fake.lists.load(Ordering::SeqCst), 3);

    let out = kairos(
        addr,
        &[
            "--api-key",
            "k",
            "schedules",
            "create",
            "job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f",
            "--cron",
            "@hourly",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: unavailable: connection lost\n");
    assert_eq!(
        fake.creates.load(Ordering::SeqCst),
        1,
        "a create was resent"
    );
}

#[tokio::test]
async fn watch_streams_every_transition() {
    let (addr, _) = serve().await;
    let out = kairos(
        addr,
        &["--api-key", "k", "--output", "json", "runs", "watch", RUN],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let states: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["to_state"].to_string())
        .collect();
    assert_eq!(states, ["\"queued\"", "\"running\"", "\"failed\""]);
}

#[tokio::test]
async fn a_list_shows_a_table_and_the_next_page_token_on_stderr() {
    let (addr, _) = serve().await;
    let out = kairos(addr, &["--api-key", "k", "runs", "list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ID "), "{stdout}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(text(&out.stderr).contains("--page-token p1_next"));
}

#[tokio::test]
async fn no_api_key_and_no_server_are_reported_plainly() {
    let (addr, _) = serve().await;
    let out = kairos(addr, &["jobs", "list"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: invalid_argument: no API key"));
    assert!(text(&out.stderr).contains("(field: api_key)"));

    // A port nothing listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = kairos(closed, &["--api-key", "k", "jobs", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: unavailable: cannot connect to http://{closed}"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn bad_env_values_never_reach_the_server() {
    let (addr, fake) = serve().await;
    let out = kairos(
        addr,
        &[
            "--api-key",
            "k",
            "jobs",
            "create",
            "--name",
            "n",
            "--image",
            "i",
            "--env",
            "NOPE",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(fake.authorization.lock().unwrap().is_empty());
}
