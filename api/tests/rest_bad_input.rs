//! Bad input (I7): every invalid field answers 400 with `error.field` naming it, and nothing
//! is written — checked by reading the lists back after each refusal.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{app, assert_invalid};
use serde_json::{Value, json};

fn job_with(field: &str, value: Value) -> Value {
    let mut body = json!({ "name": "report", "image": "busybox:1.36" });
    body[field] = value;
    body
}

#[tokio::test]
async fn invalid_jobs_name_the_field_and_write_nothing() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let big_env: serde_json::Map<String, Value> =
        [("BLOB".to_owned(), json!("x".repeat(40 * 1024)))]
            .into_iter()
            .collect();
    let cases = [
        (job_with("name", json!("")), "name"),
        (job_with("name", json!("   ")), "name"),
        (json!({ "image": "busybox" }), "name"),
        (job_with("image", json!("Not An Image!")), "image"),
        (job_with("image", json!("busybox:")), "image"),
        (json!({ "name": "report" }), "image"),
        (job_with("memory_mb", json!(1025)), "memory_mb"),
        (job_with("memory_mb", json!(4096)), "memory_mb"),
        (job_with("memory_mb", json!("lots")), "memory_mb"),
        (
            job_with("timeout_seconds", json!(86_401)),
            "timeout_seconds",
        ),
        (job_with("timeout_seconds", json!(0)), "timeout_seconds"),
        (job_with("env", Value::Object(big_env)), "env"),
        (job_with("env", json!({ "1BAD": "x" })), "env"),
        (
            job_with("env", json!({ "KAIROS_RUN_ID": "x" })),
            "env.KAIROS_RUN_ID",
        ),
        (
            job_with("retry", json!({ "max_attempts": 0 })),
            "retry.max_attempts",
        ),
        (
            job_with("retry", json!({ "max_attempts": 2, "tries": 3 })),
            "retry.tries",
        ),
        (job_with("colour", json!("red")), "colour"),
        (job_with("labels", json!({ "Bad Key": "x" })), "labels"),
        (job_with("command", json!("echo hi")), "command"),
    ];
    for (body, field) in cases {
        let (status, err) = app.post("/v1/jobs", &key, body.clone()).await;
        assert_invalid(status, &err, field);
    }
    let (status, err) = app
        .call_raw(
            Method::POST,
            "/v1/jobs",
            Some(&key),
            Some("{\"name\": ".into()),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "invalid_argument");
    let (_, jobs) = app.get("/v1/jobs", &key).await;
    assert_eq!(jobs["jobs"], json!([]), "a refused job was written");
}

#[tokio::test]
async fn an_invalid_patch_changes_nothing() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let (_, before) = app.get(&format!("/v1/jobs/{job}"), &key).await;
    for (body, field) in [
        (json!({ "memory_mb": 2048 }), "memory_mb"),
        (json!({ "timeout_seconds": 100_000 }), "timeout_seconds"),
        (json!({ "name": "ok", "image": "bad image" }), "image"),
        (json!({ "surprise": true }), "surprise"),
    ] {
        let (status, err) = app.patch(&format!("/v1/jobs/{job}"), &key, body).await;
        assert_invalid(status, &err, field);
    }
    let (_, after) = app.get(&format!("/v1/jobs/{job}"), &key).await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn invalid_schedules_name_the_field_and_write_nothing() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let path = format!("/v1/jobs/{job}/schedules");
    let cases = [
        (json!({ "cron": "61 * * * *" }), "cron"),
        (json!({ "cron": "every day" }), "cron"),
        (json!({ "cron": "0 0 30 2 *" }), "cron"),
        (json!({}), "cron"),
        (json!({ "cron": "@daily", "interval_seconds": 60 }), "cron"),
        (
            json!({ "cron": "@daily", "timezone": "Mars/Olympus_Mons" }),
            "timezone",
        ),
        (json!({ "interval_seconds": 0 }), "interval_seconds"),
        (json!({ "at": "next tuesday" }), "at"),
        (json!({ "at": "2001-01-01T00:00:00Z" }), "at"),
        (
            json!({ "cron": "@daily", "overlap_policy": "queue" }),
            "overlap_policy",
        ),
        (
            json!({ "cron": "@daily", "start_at": "2030-01-01T00:00:00Z", "end_at": "2029-01-01T00:00:00Z" }),
            "start_at",
        ),
        (
            json!({ "cron": "@daily", "catchup_window_seconds": -1 }),
            "catchup_window_seconds",
        ),
        (
            json!({ "cron": "@daily", "jitter_seconds": 99_999 }),
            "jitter_seconds",
        ),
        (json!({ "cron": "@daily", "cadence": "daily" }), "cadence"),
    ];
    for (body, field) in cases {
        let (status, err) = app.post(&path, &key, body.clone()).await;
        assert_invalid(status, &err, field);
    }
    let (_, schedules) = app.get("/v1/schedules", &key).await;
    assert_eq!(
        schedules["schedules"],
        json!([]),
        "a refused schedule was written"
    );
}

#[tokio::test]
async fn invalid_run_requests_name_the_field_and_write_nothing() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let path = format!("/v1/jobs/{job}/runs");
    for (body, field) in [
        (json!({ "idempotency_key": "" }), "idempotency_key"),
        (json!({ "idempotency_key": "has space" }), "idempotency_key"),
        (
            json!({ "idempotency_key": "k".repeat(200) }),
            "idempotency_key",
        ),
        (json!({ "env": { "KAIROS_X": "1" } }), "env.KAIROS_X"),
        (json!({ "priority": 1 }), "priority"),
    ] {
        let (status, err) = app.post(&path, &key, body).await;
        assert_invalid(status, &err, field);
    }
    let (_, runs) = app.get("/v1/runs", &key).await;
    assert_eq!(runs["runs"], json!([]), "a refused run was written");
    let (status, err) = app.get("/v1/runs?colour=red", &key).await;
    assert_invalid(status, &err, "colour");
}
