//! Tenant isolation (I6): on every endpoint, another tenant's resource answers exactly as a
//! missing one (404), and the owner's resources are untouched afterwards.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{App, app, assert_not_found};
use serde_json::{Value, json};

struct Owned {
    job: String,
    schedule: String,
    run: String,
}

async fn setup(app: &App, key: &str) -> Owned {
    let job = app.job(key).await;
    let schedule = app.schedule(key, &job).await;
    let (status, run) = app
        .post(&format!("/v1/jobs/{job}/runs"), key, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    Owned {
        job,
        schedule,
        run: run["id"].as_str().expect("run id").to_owned(),
    }
}

#[tokio::test]
async fn another_tenants_resources_answer_404_on_every_endpoint() {
    let app = app().await;
    let alice = app.tenant("alice").await;
    let mallory = app.tenant("mallory").await;
    let a = setup(&app, &alice).await;
    let (job, sch, run) = (&a.job, &a.schedule, &a.run);
    let body = Some(json!({}));
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/jobs/{job}"), None),
        (
            Method::PATCH,
            format!("/v1/jobs/{job}"),
            Some(json!({ "name": "pwned" })),
        ),
        (Method::DELETE, format!("/v1/jobs/{job}"), None),
        (
            Method::POST,
            format!("/v1/jobs/{job}/schedules"),
            Some(json!({ "cron": "* * * * *" })),
        ),
        (Method::POST, format!("/v1/jobs/{job}/runs"), body.clone()),
        (Method::GET, format!("/v1/schedules?job_id={job}"), None),
        (Method::GET, format!("/v1/schedules/{sch}"), None),
        (
            Method::PATCH,
            format!("/v1/schedules/{sch}"),
            Some(json!({ "cron": "* * * * *" })),
        ),
        (Method::DELETE, format!("/v1/schedules/{sch}"), None),
        (
            Method::POST,
            format!("/v1/schedules/{sch}/pause"),
            body.clone(),
        ),
        (
            Method::POST,
            format!("/v1/schedules/{sch}/resume"),
            body.clone(),
        ),
        (
            Method::POST,
            format!("/v1/schedules/{sch}/trigger"),
            body.clone(),
        ),
        (
            Method::POST,
            format!("/v1/schedules/{sch}/backfill"),
            Some(json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T03:00:00Z" })),
        ),
        (Method::GET, format!("/v1/runs?job_id={job}"), None),
        (Method::GET, format!("/v1/runs?schedule_id={sch}"), None),
        (Method::GET, format!("/v1/runs/{run}"), None),
        (Method::POST, format!("/v1/runs/{run}/cancel"), body.clone()),
        (Method::GET, format!("/v1/runs/{run}/logs"), None),
        (Method::GET, format!("/v1/runs/{run}/events"), None),
    ];
    for (method, path, body) in calls {
        let (status, theirs) = app
            .call(method.clone(), &path, Some(&mallory), body.clone())
            .await;
        assert_not_found(status, &theirs);
        // Exactly as a missing resource: same status and code as for an id nobody has.
        let missing = path
            .replace(job, "job_00000000000000000000000000000000")
            .replace(sch, "sch_00000000000000000000000000000000")
            .replace(run, "run_00000000000000000000000000000000");
        let (status2, none) = app
            .call(method.clone(), &missing, Some(&mallory), body)
            .await;
        assert_eq!(
            (status, &theirs["error"]["code"]),
            (status2, &none["error"]["code"]),
            "{method} {path}"
        );
    }

    // Mallory's own lists show nothing of Alice's.
    for (path, key) in [
        ("/v1/jobs", "jobs"),
        ("/v1/schedules", "schedules"),
        ("/v1/runs", "runs"),
    ] {
        let (_, list) = app.get(path, &mallory).await;
        assert_eq!(list[key], json!([]), "{path}");
    }
    // Alice's resources are untouched.
    let (_, j) = app.get(&format!("/v1/jobs/{job}"), &alice).await;
    assert_eq!(j["name"], "job");
    let (_, s) = app.get(&format!("/v1/schedules/{sch}"), &alice).await;
    assert_eq!(
        (s["paused"].clone(), s["version"].clone()),
        (json!(false), json!(1))
    );
    let (_, r) = app.get(&format!("/v1/runs/{run}"), &alice).await;
    assert_eq!(r["state"], "queued");
    let (_, runs) = app.get("/v1/runs", &alice).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_ids_answer_as_missing_resources() {
    let app = app().await;
    let key = app.tenant("acme").await;
    for path in [
        "/v1/jobs/nope",
        "/v1/jobs/run_00000000000000000000000000000000",
        "/v1/schedules/x",
        "/v1/runs/123",
        "/v1/runs?job_id=zzz",
    ] {
        let (status, body) = app.get(path, &key).await;
        assert_not_found(status, &body);
    }
}
