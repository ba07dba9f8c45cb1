//! `kairos standalone` end to end, as a new user runs it: the real binary with no Postgres and
//! no etcd (the process runtime), configured only by the operator contract's variables; the
//! printed key over REST and the CLI (through the credentials file it writes), execute-now,
//! a schedule firing, SIGTERM and kill -9 restarts that keep jobs, runs and the key, fires due
//! while it was down run or recorded per the catch-up rule, and bad input refused with the
//! field. Every test has its own data directory and ports.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use chrono::{DateTime, Utc};
use kairos_testkit::{ContainerCleanup, KairosProcess, TestImage, free_port, require_docker};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kairos");
/// Long enough for a loaded 2-core machine; nothing here measures speed.
const READY: Duration = Duration::from_secs(120);
const EVENTUALLY: Duration = Duration::from_secs(120);

/// A `kairos standalone` process with its own data directory, ports and credentials file.
struct Standalone {
    process: KairosProcess,
    http: String,
    grpc: String,
    credentials: PathBuf,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Standalone {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (http_port, grpc_port) = (free_port(), free_port());
        let data_dir = dir.path().join("data");
        let credentials = dir.path().join("cli").join("credentials");
        let mut envs = vec![
            ("KAIROS_DATA_DIR".to_owned(), data_dir.display().to_string()),
            (
                "KAIROS_HTTP_ADDR".to_owned(),
                format!("127.0.0.1:{http_port}"),
            ),
            (
                "KAIROS_GRPC_ADDR".to_owned(),
                format!("127.0.0.1:{grpc_port}"),
            ),
            ("KAIROS_RUNTIME".to_owned(), "process".to_owned()),
            (
                "KAIROS_CREDENTIALS_FILE".to_owned(),
                credentials.display().to_string(),
            ),
            ("KAIROS_LOG_FORMAT".to_owned(), "json".to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
            // Fires are kept in memory one second ahead and re-planned every second, so a
            // fire due while the process was down was never materialized before it went.
            ("KAIROS_HORIZON_SECONDS".to_owned(), "1".to_owned()),
            ("KAIROS_RESCAN_SECONDS".to_owned(), "1".to_owned()),
        ];
        envs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let process = KairosProcess::spawn(Path::new(BIN), &["standalone"], &envs).unwrap();
        let this = Self {
            process,
            http: format!("http://127.0.0.1:{http_port}"),
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            credentials,
            data_dir,
            _dir: dir,
        };
        this.ready().await;
        this
    }

    /// Waits until the REST API answers and the key line is printed.
    async fn ready(&self) {
        self.process
            .wait_http_ready(&format!("{}/readyz", self.http), READY)
            .await
            .unwrap();
        self.process
            .wait_for_output("api key: ", READY)
            .await
            .unwrap();
    }

    /// The key printed by the latest start, from its `api key: <KEY>` line.
    fn printed_key(&self) -> String {
        let output = self.process.output();
        let latest = output
            .rsplit("--- kairos-testkit: process restarted ---")
            .next()
            .unwrap();
        latest
            .lines()
            .find_map(|line| line.strip_prefix("api key: "))
            .unwrap_or_else(|| panic!("no key line in:\n{latest}"))
            .trim()
            .to_owned()
    }

    /// Runs the CLI with only the credentials file (no endpoint, no key given).
    fn cli(&self, args: &[&str]) -> Output {
        std::process::Command::new(BIN)
            .args(["--output", "json"])
            .args(args)
            .env("KAIROS_CREDENTIALS_FILE", &self.credentials)
            .env_remove("KAIROS_API_KEY")
            .env_remove("KAIROS_ENDPOINT")
            .output()
            .unwrap()
    }

    async fn restart(&mut self) {
        self.process.restart().await.unwrap();
        self.ready().await;
    }
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A REST client bound to one key.
struct Rest {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Rest {
    fn new(standalone: &Standalone, key: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: standalone.http.clone(),
            key: key.to_owned(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Every run of a schedule.
    async fn runs_of(&self, schedule: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/v1/runs?schedule_id={schedule}&page_size=1000"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["runs"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `check` on the runs of `schedule` until it holds.
    async fn wait_runs(&self, schedule: &str, what: &str, check: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        loop {
            let runs = self.runs_of(schedule).await;
            if check(&runs) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}; runs: {runs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits for a run to end and returns it.
    async fn wait_terminal(&self, run: &str) -> Value {
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        loop {
            let (status, body) = self.get(&format!("/v1/runs/{run}")).await;
            assert_eq!(status, 200, "{body}");
            if matches!(
                body["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled" | "skipped")
            ) {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "run still {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn fire_time(run: &Value) -> DateTime<Utc> {
    run["fire_time"].as_str().unwrap().parse().unwrap()
}

/// Bad input is refused with the field, over REST and the CLI, and nothing is written.
async fn bad_input_is_refused_naming_the_field(s: &Standalone, rest: &Rest, jobs_before: usize) {
    let (status, body) = rest
        .post(
            "/v1/jobs",
            json!({ "name": "big", "image": "busybox", "memory_mb": 4096 }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "memory_mb", "{body}");
    let bad = s.cli(&[
        "jobs",
        "create",
        "--name",
        "big",
        "--image",
        "busybox",
        "--memory-mb",
        "2048",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("memory_mb"), "{stderr}");
    let (_, jobs) = rest.get("/v1/jobs").await;
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        jobs_before,
        "{jobs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_runs_jobs_now_and_on_schedule_and_keeps_everything_across_restarts() {
    let mut s = Standalone::start(&[]).await;
    let key = s.printed_key();
    assert!(key.starts_with("kairos_"), "{key}");

    // The CLI's credentials file: written, private, with the API's gRPC URL and the key.
    let mode = std::fs::metadata(&s.credentials)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let credentials = std::fs::read_to_string(&s.credentials).unwrap();
    assert!(
        credentials.contains(&format!("endpoint = {}", s.grpc)),
        "{credentials}"
    );
    assert!(credentials.contains(&format!("api_key = {key}")));

    // A job through the CLI with nothing but the credentials file.
    let job = json_out(&s.cli(&[
        "jobs",
        "create",
        "--name",
        "hello",
        "--image",
        "busybox:1.36",
        "--",
        "sh",
        "-c",
        "echo hello from standalone",
    ]));
    let job_id = job["id"].as_str().unwrap().to_owned();

    // Execute now over REST with the printed key; the CLI waits for it to succeed.
    let rest = Rest::new(&s, &key);
    let (status, run) = rest
        .post(
            &format!("/v1/jobs/{job_id}/runs"),
            json!({ "idempotency_key": "first" }),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let waited = s.cli(&["runs", "wait", &run_id, "--timeout-seconds", "120"]);
    assert!(
        waited.status.success(),
        "runs wait: {:?} {}",
        waited.status,
        String::from_utf8_lossy(&waited.stderr)
    );
    let done = rest.wait_terminal(&run_id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["exit_code"], 0);
    let (_, logs) = rest.get(&format!("/v1/runs/{run_id}/logs")).await;
    assert!(
        logs["content"]
            .as_str()
            .unwrap()
            .contains("hello from standalone"),
        "{logs}"
    );
    let cli_logs = s.cli(&["runs", "logs", &run_id]);
    assert!(
        String::from_utf8_lossy(&cli_logs.stdout).contains("hello from standalone"),
        "{cli_logs:?}"
    );

    // A schedule fires (every two seconds) and its runs succeed.
    let (status, every) = rest
        .post(
            &format!("/v1/jobs/{job_id}/schedules"),
            json!({ "interval_seconds": 2 }),
        )
        .await;
    assert_eq!(status, 201, "{every}");
    let every_id = every["id"].as_str().unwrap().to_owned();
    rest.wait_runs(&every_id, "a scheduled run succeeded", |runs| {
        runs.iter()
            .any(|r| r["trigger"] == "schedule" && r["state"] == "succeeded")
    })
    .await;
    bad_input_is_refused_naming_the_field(&s, &rest, 1).await;

    // Registry credentials work (sealed under the key kept in the data directory).
    let (status, created) = rest
        .post(
            "/v1/registry-credentials",
            json!({ "name": "private", "server": "registry.example.com", "username": "bot",
                    "password": "hunter2-secret" }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let mode = std::fs::metadata(s.data_dir.join("secret-key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // SIGTERM drains and exits 0, without an error logged.
    let status = s.process.terminate(Duration::from_secs(90)).await.unwrap();
    assert!(status.success(), "exit {status:?}\n{}", s.process.output());
    let logs = s.process.output();
    assert!(!logs.contains("\"level\":\"ERROR\""), "{logs}");
    assert_eq!(
        logs.matches(&key).count(),
        1,
        "the key is printed once, on its line, and never logged"
    );

    // Back up: the same key, the job, the run and the schedule, which fires again.
    let stopped_at = Utc::now();
    s.restart().await;
    assert_eq!(s.printed_key(), key, "the same key on every start");
    let (status, got) = rest.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!((status, got["name"].as_str()), (200, Some("hello")));
    let (_, again) = rest.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(again["state"], "succeeded");
    let (status, replay) = rest
        .post(
            &format!("/v1/jobs/{job_id}/runs"),
            json!({ "idempotency_key": "first" }),
        )
        .await;
    assert_eq!(
        (status, &replay["id"]),
        (200, &run["id"]),
        "idempotent across a restart"
    );
    // The credential is still there, and a job can name it (its seal opens with the kept key).
    let (status, listed) = rest.get("/v1/registry-credentials").await;
    assert_eq!(status, 200, "{listed}");
    assert!(!listed.to_string().contains("hunter2-secret"), "{listed}");
    let (status, private) = rest
        .post(
            "/v1/jobs",
            json!({ "name": "private", "image": "registry.example.com/team/app:1",
                    "registry_credential": "private" }),
        )
        .await;
    assert_eq!(status, 201, "{private}");
    rest.wait_runs(&every_id, "the schedule fired after the restart", |runs| {
        runs.iter().any(|r| {
            r["trigger"] == "schedule" && r["state"] == "succeeded" && fire_time(r) > stopped_at
        })
    })
    .await;

    // Two more schedules: one that records missed fires (no catch-up window), one that runs
    // them late (an hour's window). Then kill -9 and stay down for a while. Their late fires
    // come due together: `allow`, so that the overlap policy does not skip all but one.
    let (_, strict) = rest
        .post(
            &format!("/v1/jobs/{job_id}/schedules"),
            json!({ "interval_seconds": 2, "catchup_window_seconds": 0, "overlap_policy": "allow" }),
        )
        .await;
    let (_, lenient) = rest
        .post(
            &format!("/v1/jobs/{job_id}/schedules"),
            json!({ "interval_seconds": 2, "catchup_window_seconds": 3600, "overlap_policy": "allow" }),
        )
        .await;
    let (strict, lenient) = (
        strict["id"].as_str().unwrap().to_owned(),
        lenient["id"].as_str().unwrap().to_owned(),
    );
    for schedule in [&strict, &lenient] {
        rest.wait_runs(schedule, "the new schedule fired", |runs| {
            runs.iter().any(|r| r["state"] == "succeeded")
        })
        .await;
    }
    s.process.kill();
    let killed_at = Utc::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let restarted_at = Utc::now();
    s.restart().await;
    assert_eq!(s.printed_key(), key, "the same key after kill -9");
    let (status, got) = rest.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(status, 200, "{got}");
    let (_, first) = rest.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(first["state"], "succeeded");

    // Fires well inside the downtime (never materialized before the kill, one second ahead):
    // recorded skipped/missed without a window, run late within one.
    let down = |r: &Value| {
        let t = fire_time(r);
        t > killed_at + chrono::Duration::seconds(3)
            && t < restarted_at - chrono::Duration::seconds(1)
    };
    for schedule in [&strict, &lenient] {
        rest.wait_runs(schedule, "the downtime's fires were handled", |runs| {
            runs.iter()
                .filter(|r| down(r))
                .any(|r| r["state"] != "scheduled" && r["state"] != "queued")
                && runs.iter().any(|r| fire_time(r) > restarted_at)
        })
        .await;
    }
    let strict_down: Vec<Value> = rest
        .runs_of(&strict)
        .await
        .into_iter()
        .filter(down)
        .collect();
    assert!(!strict_down.is_empty());
    for r in &strict_down {
        assert_eq!(
            (r["state"].as_str(), r["reason"].as_str()),
            (Some("skipped"), Some("missed")),
            "{r}"
        );
    }
    rest.wait_runs(&lenient, "the downtime's fires ran late", |runs| {
        let late: Vec<&Value> = runs.iter().filter(|r| down(r)).collect();
        !late.is_empty() && late.iter().all(|r| r["state"] == "succeeded")
    })
    .await;

    bad_input_is_refused_naming_the_field(&s, &rest, 2).await;
    let status = s.process.terminate(Duration::from_secs(90)).await.unwrap();
    assert!(status.success(), "exit {status:?}\n{}", s.process.output());
    assert!(s.data_dir.join("kairos.db").is_file());
}

#[tokio::test]
async fn standalone_with_the_docker_runtime_and_no_engine_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("standalone")
        .env("KAIROS_DATA_DIR", dir.path().join("data"))
        .env("KAIROS_CREDENTIALS_FILE", dir.path().join("credentials"))
        .env("KAIROS_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("KAIROS_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env_remove("KAIROS_RUNTIME")
        // The default runtime, and no engine where it looks for one.
        .env(
            "DOCKER_HOST",
            format!("unix://{}", dir.path().join("no-docker.sock").display()),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("docker") && stderr.contains("KAIROS_RUNTIME=process"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("Start Docker"), "the fix: {stderr}");
    // Nothing was started: no key printed.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("api key:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_standalone_on_the_same_data_dir_is_refused() {
    let s = Standalone::start(&[]).await;
    let out = std::process::Command::new(BIN)
        .arg("standalone")
        .env("KAIROS_DATA_DIR", &s.data_dir)
        .env("KAIROS_RUNTIME", "process")
        .env(
            "KAIROS_CREDENTIALS_FILE",
            s.credentials.with_extension("other"),
        )
        .env("KAIROS_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("KAIROS_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another kairos standalone") && stderr.contains("KAIROS_DATA_DIR"),
        "{stderr}"
    );
    // The first one is unharmed.
    let rest = Rest::new(&s, &s.printed_key());
    let (status, _) = rest.get("/v1/jobs").await;
    assert_eq!(status, 200);
}

/// The default runtime: a job runs in a container of a local image on the real engine, its
/// output and end recorded, and the process drains on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_runs_jobs_in_docker_containers_by_default() {
    require_docker().await.unwrap();
    let image = TestImage::busybox().await.unwrap();
    let mut s = Standalone::start(&[
        ("KAIROS_RUNTIME", "docker"),
        ("KAIROS_STOP_GRACE_SECONDS", "1"),
    ])
    .await;
    let key = s.printed_key();
    let rest = Rest::new(&s, &key);
    let (status, job) = rest
        .post(
            "/v1/jobs",
            json!({ "name": "in a container", "image": image.reference(), "memory_mb": 64,
                    "command": ["sh", "-c", "echo hello from a container; exit 3"] }),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let _containers = ContainerCleanup::labelled("kairos.job_id", &job_id).unwrap();
    let (status, run) = rest
        .post(&format!("/v1/jobs/{job_id}/runs"), json!({}))
        .await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let done = rest.wait_terminal(&run_id).await;
    assert_eq!(
        (&done["state"], &done["reason"], &done["exit_code"]),
        (&json!("failed"), &json!("exit_code"), &json!(3)),
        "{done}\n{}",
        s.process.output()
    );
    let (_, logs) = rest.get(&format!("/v1/runs/{run_id}/logs")).await;
    assert!(
        logs["content"]
            .as_str()
            .unwrap()
            .contains("hello from a container"),
        "{logs}"
    );
    let status = s.process.terminate(Duration::from_secs(90)).await.unwrap();
    assert!(status.success(), "exit {status:?}\n{}", s.process.output());
}
