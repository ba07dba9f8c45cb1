//! The `kairos` client commands as a customer runs them: the real binary against a real
//! cluster (API, scheduler, worker with the process runtime, Postgres, etcd). Every command
//! group, `--output json` parseable, the credentials file, `runs wait` exit codes for each way
//! a run ends, `runs logs --follow`, completions, and one-line errors.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::{path::Path, process::Output};

use common::{ADMIN, BIN, Cluster, cluster};
use kairos_sdk::Credentials;
use serde_json::Value;

/// Where no credentials file is, so the tests never read the one of whoever runs them.
const NO_FILE: &str = "/nonexistent/kairos-test/credentials";

/// Runs `kairos` with the cluster's endpoint and key as flags (global flags first: a trailing
/// `-- <command…>` would swallow them).
async fn kairos(c: &Cluster, args: &[&str]) -> Output {
    kairos_with(&["--endpoint", &c.grpc, "--api-key", &c.key], args, &[]).await
}

/// `kairos --output json …`.
async fn kairos_json(c: &Cluster, args: &[&str]) -> Output {
    kairos_with(
        &[
            "--endpoint",
            &c.grpc,
            "--api-key",
            &c.key,
            "--output",
            "json",
        ],
        args,
        &[],
    )
    .await
}

async fn kairos_with(globals: &[&str], args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(globals)
        .args(args)
        .env_remove("KAIROS_API_KEY")
        .env_remove("KAIROS_ENDPOINT")
        .env_remove("KAIROS_ADMIN_TOKEN")
        .env("KAIROS_CREDENTIALS_FILE", NO_FILE);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON a successful command printed.
fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status.code(),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn new_job(c: &Cluster, name: &str, script: &str) -> String {
    let job = json(
        &kairos_json(
            c,
            &[
                "jobs",
                "create",
                "--name",
                name,
                "--image",
                "busybox:1.36",
                "--",
                "sh",
                "-c",
                script,
            ],
        )
        .await,
    );
    id(&job)
}

#[tokio::test]
async fn every_client_command_works_against_a_real_cluster() {
    let c = cluster(1).await;

    // tenants (admin token)
    let tenant = json(
        &kairos_with(
            &[
                "--endpoint",
                &c.grpc,
                "--output",
                "json",
                "--admin-token",
                ADMIN,
            ],
            &["tenants", "create", "--name", "beta"],
            &[],
        )
        .await,
    );
    assert!(tenant["api_key"].as_str().unwrap().starts_with("kairos_"));
    assert!(tenant["tenant"]["id"].as_str().unwrap().starts_with("ten_"));

    // jobs create / list / get / update
    let job = new_job(&c, "hello", "echo hello; echo oops >&2").await;
    let listed = json(&kairos_json(&c, &["jobs", "list"]).await);
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");
    let all = json(&kairos_json(&c, &["jobs", "list", "--all", "--page-size", "1"]).await);
    assert_eq!(all["jobs"][0]["id"], job.as_str());
    let table = kairos(&c, &["jobs", "list"]).await;
    assert!(
        text(&table.stdout).starts_with("ID "),
        "{}",
        text(&table.stdout)
    );
    let got = json(&kairos_json(&c, &["jobs", "get", &job]).await);
    assert_eq!(
        got["command"],
        serde_json::json!(["sh", "-c", "echo hello; echo oops >&2"])
    );
    let updated = json(&kairos_json(&c, &["jobs", "update", &job, "--memory-mb", "512"]).await);
    assert_eq!(updated["memory_mb"], 512);

    // jobs run (idempotent), runs wait / get / logs / events / list
    let run = json(&kairos_json(&c, &["jobs", "run", &job, "--idempotency-key", "k1"]).await);
    let again = kairos_json(&c, &["jobs", "run", &job, "--idempotency-key", "k1"]).await;
    assert_eq!(json(&again)["id"], run["id"]);
    assert!(text(&again.stderr).contains("matched an earlier run"));
    let run = id(&run);
    let waited = kairos(&c, &["runs", "wait", &run, "--timeout-seconds", "60"]).await;
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited.stderr));
    let got = json(&kairos_json(&c, &["runs", "get", &run]).await);
    assert_eq!(
        (got["state"].as_str(), got["exit_code"].as_i64()),
        (Some("succeeded"), Some(0))
    );
    let logs = kairos(&c, &["runs", "logs", &run]).await;
    assert!(logs.status.success());
    assert!(text(&logs.stdout).contains("hello") && text(&logs.stdout).contains("oops"));
    let logs = json(&kairos_json(&c, &["runs", "logs", &run]).await);
    assert_eq!(logs["truncated"], false);
    let events = json(&kairos_json(&c, &["runs", "events", &run]).await);
    let states: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to_state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "running", "succeeded"]);
    let runs =
        json(&kairos_json(&c, &["runs", "list", "--job", &job, "--state", "succeeded"]).await);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);

    // schedules create / list / get / update / pause / resume / trigger / backfill / delete
    let schedule = json(
        &kairos_json(
            &c,
            &[
                "schedules",
                "create",
                &job,
                "--cron",
                "0 0 9 * * *",
                "--timezone",
                "Asia/Tokyo",
            ],
        )
        .await,
    );
    assert_eq!(schedule["next_fire_times"].as_array().unwrap().len(), 5);
    let schedule = id(&schedule);
    let listed = json(&kairos_json(&c, &["schedules", "list", "--job", &job]).await);
    assert_eq!(listed["schedules"][0]["id"], schedule.as_str());
    let got = json(&kairos_json(&c, &["schedules", "get", &schedule]).await);
    assert_eq!(got["timezone"], "Asia/Tokyo");
    let updated = json(
        &kairos_json(
            &c,
            &["schedules", "update", &schedule, "--jitter-seconds", "5"],
        )
        .await,
    );
    assert_eq!(updated["jitter_seconds"], 5);
    let paused = json(
        &kairos_json(
            &c,
            &["schedules", "pause", &schedule, "--note", "maintenance"],
        )
        .await,
    );
    assert_eq!(
        (paused["paused"].as_bool(), paused["pause_note"].as_str()),
        (Some(true), Some("maintenance"))
    );
    let resumed = json(&kairos_json(&c, &["schedules", "resume", &schedule]).await);
    assert_eq!(resumed["paused"], false);
    let fired = json(&kairos_json(&c, &["schedules", "trigger", &schedule]).await);
    assert_eq!(fired["schedule_id"], schedule.as_str());
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::days(3)).to_rfc3339();
    let to = now.to_rfc3339();
    let preview = json(
        &kairos_json(
            &c,
            &[
                "schedules",
                "backfill",
                &schedule,
                "--from",
                &from,
                "--to",
                &to,
                "--dry-run",
            ],
        )
        .await,
    );
    let fires = preview["fire_times"].as_array().unwrap().len();
    assert!((2..=3).contains(&fires), "{preview}");
    assert!(preview["runs"].as_array().unwrap().is_empty());
    let backfill = json(
        &kairos_json(
            &c,
            &[
                "schedules",
                "backfill",
                &schedule,
                "--from",
                &from,
                "--to",
                &to,
            ],
        )
        .await,
    );
    assert_eq!(backfill["runs"].as_array().unwrap().len(), fires);
    let deleted = json(&kairos_json(&c, &["schedules", "delete", &schedule]).await);
    assert_eq!(deleted["deleted"], true);

    // runs cancel, on a run no worker has taken: with the worker stopped it stays queued.
    // (Cancelling a running run needs the scheduler to tell its worker, which it does not yet.)
    let mut c = c;
    c.worker.kill();
    let slow = new_job(&c, "slow", "sleep 30").await;
    let run = id(&json(&kairos_json(&c, &["jobs", "run", &slow]).await));
    let cancelled = json(&kairos_json(&c, &["runs", "cancel", &run]).await);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let waited = kairos(&c, &["runs", "wait", &run, "--timeout-seconds", "60"]).await;
    assert_eq!(waited.status.code(), Some(4), "{}", text(&waited.stdout));
    let again = kairos(&c, &["runs", "cancel", &run]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).starts_with("error: failed_precondition:"),
        "{}",
        text(&again.stderr)
    );

    // jobs delete
    let deleted = json(&kairos_json(&c, &["jobs", "delete", &slow]).await);
    assert_eq!(deleted["deleted"], true);
    let gone = kairos(&c, &["jobs", "get", &slow]).await;
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(text(&gone.stderr).lines().count(), 1);
    assert!(text(&gone.stderr).starts_with("error: not_found:"));

    // Errors: one line, the field (or flag) named, exit 2: from the server, then from clap.
    for (value, needle) in [
        ("4096", "must be at most 1024"),
        ("lots", "invalid value 'lots'"),
    ] {
        let args = [
            "jobs",
            "create",
            "--name",
            "x",
            "--image",
            "busybox",
            "--memory-mb",
            value,
        ];
        let bad = kairos(&c, &args).await;
        assert_eq!(bad.status.code(), Some(2));
        let line = text(&bad.stderr);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains(needle) && line.contains("memory"), "{line}");
    }
    let denied = kairos_with(
        &["--endpoint", &c.grpc, "--api-key", "kairos_wrong"],
        &["jobs", "list"],
        &[],
    )
    .await;
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        text(&denied.stderr).contains("error: unauthenticated")
            && text(&denied.stderr).contains("KAIROS_API_KEY")
    );
}

#[tokio::test]
async fn the_credentials_file_supplies_endpoint_and_key_after_flags_and_env() {
    let c = cluster(1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kairos/credentials");
    Credentials::new(c.grpc.clone(), c.key.clone())
        .save(&file)
        .unwrap();
    let file = file.to_str().unwrap();

    // Nothing but the file.
    let out = kairos_with(
        &["--output", "json"],
        &["jobs", "list"],
        &[("KAIROS_CREDENTIALS_FILE", file)],
    )
    .await;
    assert!(json(&out)["jobs"].is_array());
    // The flag beats the file: a wrong key given explicitly is refused.
    let out = kairos_with(
        &["--api-key", "kairos_wrong", "--credentials-file", file],
        &["jobs", "list"],
        &[],
    )
    .await;
    assert!(
        text(&out.stderr).contains("unauthenticated"),
        "{}",
        text(&out.stderr)
    );
    // So does the variable.
    let out = kairos_with(
        &[],
        &["jobs", "list"],
        &[
            ("KAIROS_CREDENTIALS_FILE", file),
            ("KAIROS_API_KEY", "kairos_wrong"),
        ],
    )
    .await;
    assert!(
        text(&out.stderr).contains("unauthenticated"),
        "{}",
        text(&out.stderr)
    );
    // A file others can read is refused, naming the fix.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = kairos_with(&[], &["jobs", "list"], &[("KAIROS_CREDENTIALS_FILE", file)]).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("chmod 600"),
            "{}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).contains(&c.key));
    }
    assert!(Path::new(file).exists());

    // Completions need no server.
    for shell in ["bash", "zsh", "fish"] {
        let out = kairos_with(&[], &["completions", shell], &[]).await;
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        assert!(
            script.contains("kairos") && script.contains("schedules"),
            "{shell}"
        );
    }
}

#[tokio::test]
async fn runs_wait_exits_by_how_the_run_ended_and_logs_follow_prints_the_output() {
    let c = cluster(1).await;

    // Succeeds: `jobs run --wait` shows each transition and exits 0.
    let ok = new_job(&c, "ok", "echo start; sleep 1; echo end").await;
    let out = kairos(
        &c,
        &["jobs", "run", &ok, "--wait", "--timeout-seconds", "60"],
    )
    .await;
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    assert!(
        shown.contains("queued -> running") && shown.contains("running -> succeeded"),
        "{shown}"
    );
    assert!(
        shown.trim_end().ends_with("succeeded  exit_code=0"),
        "{shown}"
    );

    // Fails: exit 3, and with --output json the ended run is the whole stdout.
    let bad = new_job(&c, "bad", "echo broken; exit 7").await;
    let run = id(&json(&kairos_json(&c, &["jobs", "run", &bad]).await));
    let out = kairos_json(&c, &["runs", "wait", &run, "--timeout-seconds", "60"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let ended: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (ended["state"].as_str(), ended["exit_code"].as_i64()),
        (Some("failed"), Some(7))
    );
    assert!(text(&out.stderr).contains("running -> failed"));

    // Follow: the output is printed as it is found, and the command ends with the run.
    let run = id(&json(&kairos_json(&c, &["jobs", "run", &ok]).await));
    let out = kairos(
        &c,
        &["runs", "logs", &run, "--follow", "--interval-ms", "200"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "start\nend\n");
    let out = kairos_json(&c, &["runs", "logs", &run, "-f"]).await;
    let chunks: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let joined: String = chunks.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(joined, "start\nend\n");

    // Times out: exit 6 with one line, the run goes on.
    let slow = new_job(&c, "slow", "sleep 30").await;
    let run = id(&json(&kairos_json(&c, &["jobs", "run", &slow]).await));
    let out = kairos(&c, &["runs", "wait", &run, "--timeout-seconds", "1"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: deadline_exceeded: run"), "{err}");
    let still = json(&kairos_json(&c, &["runs", "get", &run]).await);
    assert!(
        matches!(still["state"].as_str(), Some("queued" | "running")),
        "{still}"
    );

    // Cancelled: exit 4. With the worker stopped the run stays queued until cancelled (a
    // running run cannot be cancelled yet: the scheduler does not tell its worker).
    let mut c = c;
    c.worker.kill();
    let run = id(&json(&kairos_json(&c, &["jobs", "run", &slow]).await));
    json(&kairos_json(&c, &["runs", "cancel", &run]).await);
    let out = kairos(&c, &["runs", "wait", &run, "--timeout-seconds", "60"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("cancelled"));

    // Help documents the codes.
    let help = kairos_with(&[], &["runs", "wait", "--help"], &[]).await;
    let help = text(&help.stdout);
    assert!(
        help.contains("3  the run failed") && help.contains("6  --timeout-seconds"),
        "{help}"
    );
}
