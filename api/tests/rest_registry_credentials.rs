//! Registry credentials over REST: a tenant stores one (the password goes in and never comes
//! out), jobs name it for their private image's registry, bad input names the field and writes
//! nothing (I7), another tenant's answers as missing (I6), and one in use cannot be deleted.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::{app, assert_invalid, assert_not_found};
use serde_json::{Value, json};

const PASSWORD: &str = "very-s3cret-token";

fn credential(name: &str, server: &str) -> Value {
    json!({ "name": name, "server": server, "username": "bot", "password": PASSWORD })
}

#[tokio::test]
async fn a_credential_is_stored_listed_and_named_by_jobs_without_its_password_ever_shown() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let (status, created) = app
        .post(
            "/v1/registry-credentials",
            &key,
            credential("private", "127.0.0.1:5000"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "private");
    assert_eq!(created["server"], "127.0.0.1:5000");
    assert!(created.get("password").is_none());
    let (status, listed) = app.get("/v1/registry-credentials", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["registry_credentials"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(PASSWORD));

    let (status, again) = app
        .post(
            "/v1/registry-credentials",
            &key,
            credential("private", "ghcr.io"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert!(!again.to_string().contains(PASSWORD));

    let (status, job) = app
        .post(
            "/v1/jobs",
            &key,
            json!({ "name": "etl", "image": "127.0.0.1:5000/team/etl:1", "registry_credential": "private" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["registry_credential"], "private");
    let job_id = job["id"].as_str().unwrap();

    let (status, body) = app.delete("/v1/registry-credentials/private", &key).await;
    assert_eq!(status, StatusCode::CONFLICT, "in use: {body}");
    assert_eq!(body["error"]["code"], "failed_precondition");

    let (status, job) = app
        .patch(
            &format!("/v1/jobs/{job_id}"),
            &key,
            json!({ "registry_credential": "" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert!(job.get("registry_credential").is_none(), "{job}");
    let (status, _) = app.delete("/v1/registry-credentials/private", &key).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_credentials_and_bad_references_name_the_field_and_write_nothing() {
    let app = app().await;
    let key = app.tenant("acme").await;
    let mut cases = vec![
        (
            json!({ "server": "ghcr.io", "username": "u", "password": "p" }),
            "name",
        ),
        (credential("Not Valid", "ghcr.io"), "name"),
        (credential("ok", "https://ghcr.io"), "server"),
        (credential("ok", "ghcr.io/acme"), "server"),
        (
            json!({ "name": "ok", "server": "ghcr.io", "password": "p" }),
            "username",
        ),
        (
            json!({ "name": "ok", "server": "ghcr.io", "username": "u", "password": "" }),
            "password",
        ),
    ];
    let mut extra = credential("ok", "ghcr.io");
    extra["token"] = json!("x");
    cases.push((extra, "token"));
    for (body, field) in cases {
        let (status, answer) = app.post("/v1/registry-credentials", &key, body).await;
        assert_invalid(status, &answer, field);
        assert!(!answer.to_string().contains(PASSWORD), "{answer}");
    }
    let (_, listed) = app.get("/v1/registry-credentials", &key).await;
    assert!(
        listed["registry_credentials"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    app.post(
        "/v1/registry-credentials",
        &key,
        credential("ghcr", "ghcr.io"),
    )
    .await;
    for (image, name) in [
        ("ghcr.io/acme/etl:1", "missing"),
        ("ghcr.io/acme/etl:1", "Bad Name"),
        ("registry.example.com/etl:1", "ghcr"),
        ("busybox:1.36", "ghcr"),
    ] {
        let (status, answer) = app
            .post(
                "/v1/jobs",
                &key,
                json!({ "name": "etl", "image": image, "registry_credential": name }),
            )
            .await;
        assert_invalid(status, &answer, "registry_credential");
    }
    let (_, jobs) = app.get("/v1/jobs", &key).await;
    assert!(jobs["jobs"].as_array().unwrap().is_empty(), "{jobs}");
}

#[tokio::test]
async fn another_tenants_credential_answers_as_a_missing_one() {
    let app = app().await;
    let mine = app.tenant("acme").await;
    let theirs = app.tenant("globex").await;
    app.post(
        "/v1/registry-credentials",
        &theirs,
        credential("shared-name", "ghcr.io"),
    )
    .await;
    let (_, listed) = app.get("/v1/registry-credentials", &mine).await;
    assert!(
        listed["registry_credentials"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, body) = app
        .delete("/v1/registry-credentials/shared-name", &mine)
        .await;
    assert_not_found(status, &body);
    let (status, body) = app
        .delete("/v1/registry-credentials/never-made", &mine)
        .await;
    assert_not_found(status, &body);
    let (status, answer) = app
        .post(
            "/v1/jobs",
            &mine,
            json!({ "name": "etl", "image": "ghcr.io/x/y:1", "registry_credential": "shared-name" }),
        )
        .await;
    assert_invalid(status, &answer, "registry_credential");
    // Theirs is untouched.
    let (_, listed) = app.get("/v1/registry-credentials", &theirs).await;
    assert_eq!(listed["registry_credentials"].as_array().unwrap().len(), 1);
}
