//! The public REST contract end to end through the real router and a real Postgres: tenants,
//! jobs, schedules with time zones, execute-now idempotency, runs, pagination, OpenAPI,
//! health and metrics.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{ADMIN, app, app_at, assert_invalid, assert_not_found};
use serde_json::{Value, json};

#[tokio::test]
async fn tenant_creation_requires_the_admin_token_and_shows_the_key_once() {
    let app = app().await;
    let body = Some(json!({ "name": "acme" }));
    let (status, err) = app
        .call(Method::POST, "/v1/tenants", None, body.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(err["error"]["code"], "unauthenticated");
    let (status, _) = app
        .call(Method::POST, "/v1/tenants", Some("wrong"), body.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, created) = app
        .call(Method::POST, "/v1/tenants", Some(ADMIN), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(
        created["tenant"]["id"]
            .as_str()
            .unwrap()
            .starts_with("ten_")
    );
    assert_eq!(created["tenant"]["name"], "acme");
    let key = created["api_key"].as_str().unwrap();
    assert!(key.starts_with("kairos_"));
    // The key works, and a tenant key is not an admin token.
    assert_eq!(app.get("/v1/jobs", key).await.0, StatusCode::OK);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/tenants",
            Some(key),
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/tenants",
            Some(ADMIN),
            Some(json!({ "name": "" })),
        )
        .await;
    assert_invalid(status, &body, "name");
}

#[tokio::test]
async fn every_call_needs_a_valid_api_key() {
    let app = app().await;
    for (method, path) in [
        (Method::GET, "/v1/jobs"),
        (Method::POST, "/v1/jobs"),
        (Method::GET, "/v1/runs"),
    ] {
        let (status, body) = app.call(method.clone(), path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated");
        let (status, _) = app.call(method, path, Some("kairos_0000"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_job_is_created_with_defaults_read_patched_and_deleted() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let (status, job) = app
        .post("/v1/jobs", &key, json!({ "name": "report", "image": "busybox:1.36", "command": ["sh", "-c", "echo hi"], "env": { "MODE": "full" }, "labels": { "team": "data" } }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap();
    assert!(id.starts_with("job_"));
    assert_eq!(job["memory_mb"], 256);
    assert_eq!(job["timeout_seconds"], 3600);
    assert_eq!(
        job["retry"],
        json!({ "max_attempts": 1, "initial_backoff_seconds": 10, "max_backoff_seconds": 300 })
    );
    assert_eq!(job["command"], json!(["sh", "-c", "echo hi"]));
    assert_eq!(job["env"], json!({ "MODE": "full" }));
    assert_eq!(job["version"], 1);

    let (status, read) = app.get(&format!("/v1/jobs/{id}"), &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, job);

    let (status, patched) = app
        .patch(
            &format!("/v1/jobs/{id}"),
            &key,
            json!({ "memory_mb": 1024, "retry": { "max_attempts": 3 } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["memory_mb"], 1024);
    assert_eq!(patched["retry"]["max_attempts"], 3);
    assert_eq!(patched["name"], "report");
    assert_eq!(patched["version"], 2);

    let (status, _) = app.delete(&format!("/v1/jobs/{id}"), &key).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get(&format!("/v1/jobs/{id}"), &key).await;
    assert_not_found(status, &body);
    let (status, body) = app.delete(&format!("/v1/jobs/{id}"), &key).await;
    assert_not_found(status, &body);
}

#[tokio::test]
async fn lists_page_through_everything_exactly_once() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(app.job(&key).await);
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/jobs?page_size=2&page_token={t}"),
            None => "/v1/jobs?page_size=2".to_owned(),
        };
        let (status, page) = app.get(&path, &key).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 2);
        seen.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match page["next_page_token"].as_str().filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);
    let (status, body) = app.get("/v1/jobs?page_token=garbage", &key).await;
    assert_invalid(status, &body, "page_token");
    let (status, body) = app.get("/v1/jobs?page_size=-3", &key).await;
    assert_invalid(status, &body, "page_size");
    let (status, body) = app.get("/v1/jobs?page_size=5000", &key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_schedule_previews_its_next_fires_in_its_time_zone() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let (status, schedule) = app
        .post(
            &format!("/v1/jobs/{job}/schedules"),
            &key,
            json!({ "cron": "0 0 9 * * *", "timezone": "Europe/Paris" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    assert!(schedule["id"].as_str().unwrap().starts_with("sch_"));
    assert_eq!(schedule["timezone"], "Europe/Paris");
    assert_eq!(schedule["overlap_policy"], "skip");
    assert_eq!(schedule["version"], 1);
    let utc = schedule["next_fire_times"].as_array().unwrap();
    let local = schedule["next_fire_times_local"].as_array().unwrap();
    assert_eq!(utc.len(), 5);
    assert_eq!(local.len(), 5);
    for t in local {
        let t = t.as_str().unwrap();
        assert!(
            t.contains("T09:00:00+01:00") || t.contains("T09:00:00+02:00"),
            "{t}"
        );
    }
    assert_eq!(schedule["next_fire_at"], utc[0]);
}

#[tokio::test]
async fn schedule_previews_follow_the_documented_dst_rules() {
    let now = "2027-03-13T12:00:00Z".parse().unwrap();
    let app = app_at(now).await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    // 02:30 does not exist in New York on 2027-03-14: it fires at 03:00 EDT, the first instant after the gap.
    let (status, gap) = app
        .post(
            &format!("/v1/jobs/{job}/schedules"),
            &key,
            json!({ "cron": "30 2 * * *", "timezone": "America/New_York" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{gap}");
    assert_eq!(gap["next_fire_times_local"][0], "2027-03-14T03:00:00-04:00");
    assert_eq!(gap["next_fire_times"][0], "2027-03-14T07:00:00Z");
    assert_eq!(gap["next_fire_times_local"][1], "2027-03-15T02:30:00-04:00");

    // 01:30 happens twice in New York on 2027-11-07: it fires once, at the first.
    app.clock
        .as_ref()
        .unwrap()
        .set("2027-11-06T12:00:00Z".parse().unwrap());
    let (status, overlap) = app
        .post(
            &format!("/v1/jobs/{job}/schedules"),
            &key,
            json!({ "cron": "30 1 * * *", "timezone": "America/New_York" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{overlap}");
    assert_eq!(
        overlap["next_fire_times_local"][0],
        "2027-11-07T01:30:00-04:00"
    );
    assert_eq!(
        overlap["next_fire_times_local"][1],
        "2027-11-08T01:30:00-05:00"
    );
}

#[tokio::test]
async fn schedules_are_listed_patched_paused_resumed_and_deleted() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let other_job = app.job(&key).await;
    let id = app.schedule(&key, &job).await;
    app.schedule(&key, &other_job).await;

    let (_, all) = app.get("/v1/schedules", &key).await;
    assert_eq!(all["schedules"].as_array().unwrap().len(), 2);
    let (_, of_job) = app.get(&format!("/v1/schedules?job_id={job}"), &key).await;
    assert_eq!(of_job["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(of_job["schedules"][0]["id"], id.as_str());

    let (status, patched) = app
        .patch(
            &format!("/v1/schedules/{id}"),
            &key,
            json!({ "interval_seconds": 30, "overlap_policy": "allow" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["interval_seconds"], 30);
    assert_eq!(patched["cron"], Value::Null);
    assert_eq!(patched["overlap_policy"], "allow");
    assert_eq!(patched["version"], 2);

    let (status, paused) = app
        .post(
            &format!("/v1/schedules/{id}/pause"),
            &key,
            json!({ "note": "maintenance" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["pause_note"], "maintenance");
    assert_eq!(paused["next_fire_times"], json!([]));
    let (status, resumed) = app
        .call(
            Method::POST,
            &format!("/v1/schedules/{id}/resume"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["paused"], false);
    assert_eq!(resumed["next_fire_times"].as_array().unwrap().len(), 5);

    let (status, _) = app.delete(&format!("/v1/schedules/{id}"), &key).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get(&format!("/v1/schedules/{id}"), &key).await;
    assert_not_found(status, &body);
}

#[tokio::test]
async fn execute_now_queues_a_run_and_an_idempotency_key_returns_the_same_run() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let path = format!("/v1/jobs/{job}/runs");
    let (status, first) = app
        .post(&path, &key, json!({ "idempotency_key": "order-42" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(first["id"].as_str().unwrap().starts_with("run_"));
    assert_eq!(first["state"], "queued");
    assert_eq!(first["trigger"], "manual");
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["job_id"], job.as_str());
    assert_eq!(first["schedule_id"], Value::Null);
    for field in ["fire_time", "created_at"] {
        assert!(
            first[field].as_str().unwrap().ends_with('Z'),
            "{field}: {first}"
        );
    }

    let (status, again) = app
        .post(&path, &key, json!({ "idempotency_key": "order-42" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);

    let (status, other) = app
        .post(&path, &key, json!({ "idempotency_key": "order-43" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(other["id"], first["id"]);
    let (status, no_body) = app.call(Method::POST, &path, Some(&key), None).await;
    assert_eq!(status, StatusCode::CREATED, "{no_body}");

    let (_, runs) = app.get(&format!("/v1/runs?job_id={job}"), &key).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 3);
    let run = first["id"].as_str().unwrap();
    let (status, read) = app.get(&format!("/v1/runs/{run}"), &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["id"], first["id"]);
    let (_, events) = app.get(&format!("/v1/runs/{run}/events"), &key).await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1);
    assert_eq!(events["events"][0]["to_state"], "queued");
    let (status, logs) = app.get(&format!("/v1/runs/{run}/logs"), &key).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    assert_eq!(logs["content"], "");
}

#[tokio::test]
async fn a_queued_run_is_cancelled_once_and_the_transition_is_recorded() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let (_, run) = app
        .post(&format!("/v1/jobs/{job}/runs"), &key, json!({}))
        .await;
    let id = run["id"].as_str().unwrap();
    let (status, cancelled) = app
        .call(
            Method::POST,
            &format!("/v1/runs/{id}/cancel"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert!(cancelled["finished_at"].is_string());
    let (status, again) = app
        .call(
            Method::POST,
            &format!("/v1/runs/{id}/cancel"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["error"]["code"], "failed_precondition");
    let (_, events) = app.get(&format!("/v1/runs/{id}/events"), &key).await;
    let states: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to_state"].clone())
        .collect();
    assert_eq!(states, [json!("queued"), json!("cancelled")]);
    let (_, by_state) = app.get("/v1/runs?state=cancelled", &key).await;
    assert_eq!(by_state["runs"].as_array().unwrap().len(), 1);
    let (status, body) = app.get("/v1/runs?state=finished", &key).await;
    assert_invalid(status, &body, "state");
}

#[tokio::test]
async fn trigger_and_backfill_create_runs_of_the_schedule() {
    let now = "2026-06-10T12:00:00Z".parse().unwrap();
    let app = app_at(now).await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let schedule = app.schedule(&key, &job).await; // hourly

    let (status, run) = app
        .call(
            Method::POST,
            &format!("/v1/schedules/{schedule}/trigger"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["schedule_id"], schedule.as_str());
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["state"], "queued");

    let range = json!({ "from": "2026-06-10T06:00:00Z", "to": "2026-06-10T09:00:00Z" });
    let path = format!("/v1/schedules/{schedule}/backfill");
    let mut dry = range.clone();
    dry["dry_run"] = json!(true);
    let (status, preview) = app.post(&path, &key, dry).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(
        preview["fire_times"],
        json!([
            "2026-06-10T06:00:00Z",
            "2026-06-10T07:00:00Z",
            "2026-06-10T08:00:00Z"
        ])
    );
    assert_eq!(preview["runs"], json!([]));

    let (status, done) = app.post(&path, &key, range.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["runs"].as_array().unwrap().len(), 3);
    assert!(
        done["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["trigger"] == "backfill")
    );
    // The same range again creates nothing new: one run per fire (I1).
    let (status, repeat) = app.post(&path, &key, range).await;
    assert_eq!(status, StatusCode::CREATED, "{repeat}");
    assert_eq!(repeat["runs"], json!([]));
    let (_, runs) = app
        .get(&format!("/v1/runs?schedule_id={schedule}"), &key)
        .await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 4);

    let (status, body) = app
        .post(
            &path,
            &key,
            json!({ "from": "2026-06-10T09:00:00Z", "to": "2026-06-10T06:00:00Z" }),
        )
        .await;
    assert_invalid(status, &body, "to");
    let (status, body) = app
        .post(
            &path,
            &key,
            json!({ "from": "2026-06-10T06:00:00Z", "to": "2026-06-11T06:00:00Z" }),
        )
        .await;
    assert_invalid(status, &body, "to");
    let (status, body) = app
        .post(
            &path,
            &key,
            json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-06-10T00:00:00Z" }),
        )
        .await;
    assert_invalid(status, &body, "to");
}

#[tokio::test]
async fn the_openapi_document_describes_the_contract() {
    let app = app().await;
    let (status, doc) = app.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/tenants",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/schedules",
        "/v1/jobs/{job_id}/runs",
        "/v1/schedules",
        "/v1/schedules/{schedule_id}",
        "/v1/schedules/{schedule_id}/pause",
        "/v1/schedules/{schedule_id}/resume",
        "/v1/schedules/{schedule_id}/trigger",
        "/v1/schedules/{schedule_id}/backfill",
        "/v1/runs",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/cancel",
        "/v1/runs/{run_id}/logs",
        "/v1/runs/{run_id}/events",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    let job = &doc["components"]["schemas"]["JobBody"]["properties"];
    for field in [
        "name",
        "image",
        "command",
        "env",
        "memory_mb",
        "timeout_seconds",
        "retry",
        "labels",
    ] {
        assert!(job.get(field).is_some(), "JobBody lacks {field}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = app().await;
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK
    );
    let (status, ready) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let key = app.tenant("acme").await;
    app.job(&key).await;
    let (status, text) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(
        text.contains(
            "kairos_api_http_requests_total{method=\"POST\",route=\"/v1/jobs\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("kairos_api_jobs_created_total 1"), "{text}");
    assert!(!text.contains("job_0"), "metrics must not carry ids");
    let (status, body) = app.call(Method::GET, "/v1/nope", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
