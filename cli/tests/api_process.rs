//! The `kairos migrate` and `kairos api` roles as an operator runs them: real processes
//! configured only by the operator contract's `KAIROS_*` variables, a real Postgres, REST over
//! a socket and the `kairos` CLI over gRPC; then kill -9 and a restart lose nothing accepted.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

use std::{path::Path, process::Output, time::Duration};

use kairos_testkit::{KairosProcess, database, free_port};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kairos");
const ADMIN: &str = "e2e-admin-token";

struct Api {
    process: KairosProcess,
    http: String,
    grpc: String,
}

async fn start_api(db_url: &str) -> Api {
    let (http_port, grpc_port) = (free_port(), free_port());
    let envs = vec![
        ("KAIROS_DATABASE_URL".to_owned(), db_url.to_owned()),
        (
            "KAIROS_HTTP_ADDR".to_owned(),
            format!("127.0.0.1:{http_port}"),
        ),
        (
            "KAIROS_GRPC_ADDR".to_owned(),
            format!("127.0.0.1:{grpc_port}"),
        ),
        ("KAIROS_ADMIN_TOKEN".to_owned(), ADMIN.to_owned()),
        ("KAIROS_LOG_FORMAT".to_owned(), "json".to_owned()),
    ];
    let process = KairosProcess::spawn(Path::new(BIN), &["api"], &envs).expect("spawn kairos api");
    let http = format!("http://127.0.0.1:{http_port}");
    process
        .wait_http_ready(&format!("{http}/readyz"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("api not ready: {e}\n{}", process.output()));
    Api {
        process,
        http,
        grpc: format!("http://127.0.0.1:{grpc_port}"),
    }
}

/// Runs the CLI against the API's gRPC port with `--output json`.
fn cli(api: &Api, key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(BIN);
    // Global flags first: a trailing `-- <command…>` would swallow them.
    cmd.args(["--output", "json", "--endpoint", &api.grpc])
        .args(args)
        .env_remove("KAIROS_API_KEY");
    match key {
        Some(k) => cmd.env("KAIROS_API_KEY", k),
        None => cmd.env("KAIROS_ADMIN_TOKEN", ADMIN),
    };
    cmd.output().expect("run kairos")
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn concurrent_migrations_both_succeed() {
    let db = database().await.unwrap();
    let run = || {
        std::process::Command::new(BIN)
            .arg("migrate")
            .env("KAIROS_DATABASE_URL", db.url())
            .spawn()
            .expect("spawn migrate")
    };
    let (mut a, mut b) = (run(), run());
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let again = std::process::Command::new(BIN)
        .arg("migrate")
        .env("KAIROS_DATABASE_URL", db.url())
        .status()
        .unwrap();
    assert!(again.success());
}

#[tokio::test]
async fn the_api_process_serves_rest_and_the_cli_and_keeps_accepted_work_across_kill_9() {
    let db = database().await.unwrap();
    let mut api = start_api(db.url()).await;
    let http = reqwest::Client::new();

    // Tenant through the CLI (admin token), job through the CLI, run through REST.
    let tenant = json_out(&cli(&api, None, &["tenants", "create", "--name", "acme"]));
    let key = tenant["api_key"].as_str().expect("api_key").to_owned();
    let job = json_out(&cli(
        &api,
        Some(&key),
        &[
            "jobs",
            "create",
            "--name",
            "hello",
            "--image",
            "busybox:1.36",
            "--memory-mb",
            "128",
            "--",
            "echo",
            "hi",
        ],
    ));
    let job_id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["memory_mb"], 128);

    // Bad input over gRPC: exit 2, the field named, nothing written.
    let bad = cli(
        &api,
        Some(&key),
        &[
            "jobs",
            "create",
            "--name",
            "big",
            "--image",
            "busybox",
            "--memory-mb",
            "2048",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("invalid_argument") && stderr.contains("memory_mb"),
        "{stderr}"
    );
    let listed = json_out(&cli(&api, Some(&key), &["jobs", "list"]));
    let count = listed
        .get("jobs")
        .and_then(Value::as_array)
        .map_or_else(|| listed.as_array().map_or(0, Vec::len), Vec::len);
    assert_eq!(count, 1, "{listed}");

    let run = |body: Value| {
        let (http, url, key) = (
            http.clone(),
            format!("{}/v1/jobs/{job_id}/runs", api.http),
            key.clone(),
        );
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = run(json!({ "idempotency_key": "k1" })).await;
    assert_eq!(status, 201, "{first}");
    let schedule = http
        .post(format!("{}/v1/jobs/{job_id}/schedules", api.http))
        .bearer_auth(&key)
        .json(&json!({ "cron": "*/10 * * * * *", "timezone": "Asia/Tokyo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(schedule.status().as_u16(), 201);
    let schedule: Value = schedule.json().await.unwrap();
    assert_eq!(schedule["next_fire_times"].as_array().unwrap().len(), 5);

    // kill -9, restart: everything accepted is still there, and idempotency still holds.
    api.process.kill();
    api.process.restart().await.unwrap();
    api.process
        .wait_http_ready(&format!("{}/readyz", api.http), Duration::from_secs(60))
        .await
        .unwrap();
    let (status, again) = run(json!({ "idempotency_key": "k1" })).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    let got = json_out(&cli(&api, Some(&key), &["jobs", "get", &job_id]));
    assert_eq!(got["name"], "hello");
    let run_id = first["id"].as_str().unwrap();
    let read = json_out(&cli(&api, Some(&key), &["runs", "get", run_id]));
    assert_eq!(read["state"], "queued");
    let sch = http
        .get(format!(
            "{}/v1/schedules/{}",
            api.http,
            schedule["id"].as_str().unwrap()
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(sch.status().as_u16(), 200);

    let metrics = http
        .get(format!("{}/metrics", api.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kairos_api_grpc_requests_total"),
        "{metrics}"
    );

    // SIGTERM drains and exits cleanly.
    let status = api
        .process
        .terminate(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        status.success(),
        "exit {status:?}\n{}",
        api.process.output()
    );
    let logs = api.process.output();
    assert!(!logs.contains("\"level\":\"ERROR\""), "{logs}");
    assert!(
        !logs.contains(&key) && !logs.contains(ADMIN),
        "a secret reached the logs"
    );
}

#[tokio::test]
async fn the_api_takes_its_settings_from_a_config_file_and_the_environment_wins() {
    let db = database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (http_port, grpc_port) = (free_port(), free_port());
    let config = dir.path().join("kairos.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\nadmin_token = \"{ADMIN}\"\n\
             [api]\nhttp_addr = \"127.0.0.1:1\"\ngrpc_addr = \"127.0.0.1:{grpc_port}\"\n\
             [scheduler]\nlease_ttl_seconds = 5\n",
            db.url()
        ),
    )
    .unwrap();
    // The file names a port the test cannot bind; the environment overrides it.
    let envs = vec![
        (
            "KAIROS_HTTP_ADDR".to_owned(),
            format!("127.0.0.1:{http_port}"),
        ),
        ("KAIROS_LOG_FORMAT".to_owned(), "json".to_owned()),
    ];
    let config_arg = config.to_str().unwrap();
    let process = KairosProcess::spawn(Path::new(BIN), &["api", "--config", config_arg], &envs)
        .expect("spawn kairos api");
    let http = format!("http://127.0.0.1:{http_port}");
    process
        .wait_http_ready(&format!("{http}/readyz"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("api not ready: {e}\n{}", process.output()));
    let api = Api {
        process,
        http,
        grpc: format!("http://127.0.0.1:{grpc_port}"),
    };
    // The database, the admin token and the gRPC address all came from the file.
    let tenant = json_out(&cli(&api, None, &["tenants", "create", "--name", "acme"]));
    assert_eq!(tenant["tenant"]["name"], "acme", "{tenant}");
    let created = reqwest::Client::new()
        .post(format!("{}/v1/tenants", api.http))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "globex"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(
        !api.process.output().contains(db.url()),
        "the file's database URL is never logged"
    );

    // A misspelt key stops the role at once, naming the key and the file, not the value.
    std::fs::write(&config, "databse_url = \"postgres://u:pw@db/k\"\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["api", "--config", config_arg])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`databse_url`") && stderr.contains("kairos.toml"),
        "{stderr}"
    );
    assert!(!stderr.contains("pw@db"), "{stderr}");
}
