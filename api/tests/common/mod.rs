//! Shared harness of the API's integration tests: a real, migrated Postgres database per test
//! and the REST router driven in-process (no socket).

#![allow(dead_code)]

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use chrono::{DateTime, Utc};
use kairos_api::{
    Service,
    clock::{Clock, ManualClock, SystemClock},
    config::Secret,
    metrics::Metrics,
    rest,
};
use kairos_store::PgStore;
use kairos_testkit::TestDatabase;
use serde_json::Value;
use tower::ServiceExt;

pub const ADMIN: &str = "test-admin-token";

pub struct App {
    pub router: Router,
    pub store: Arc<PgStore>,
    pub clock: Option<ManualClock>,
    _db: TestDatabase,
}

pub async fn app() -> App {
    build(None).await
}

/// An app whose tenants get `limits` instead of the default quotas.
pub async fn app_with_limits(limits: kairos_api::TenantLimits) -> App {
    let mut app = build(None).await;
    let service = Service::new(
        app.store.clone(),
        Arc::new(SystemClock),
        Some(Secret::new(ADMIN)),
        Metrics::new(),
    )
    .with_limits(limits);
    app.router = rest::router(service);
    app
}

/// An app whose clock stands still at `now` until moved.
pub async fn app_at(now: DateTime<Utc>) -> App {
    build(Some(ManualClock::new(now))).await
}

async fn build(clock: Option<ManualClock>) -> App {
    let db = kairos_testkit::database().await.expect("test database");
    let key =
        kairos_store::SecretKey::from_hex(&kairos_store::SecretKey::generate_hex()).expect("key");
    let store = PgStore::connect(db.url())
        .await
        .expect("connect")
        .with_secret_key(key);
    store.migrate().await.expect("migrate");
    let store = Arc::new(store);
    let clock_dyn: Arc<dyn Clock> = match &clock {
        Some(c) => Arc::new(c.clone()),
        None => Arc::new(SystemClock),
    };
    let service = Service::new(
        store.clone(),
        clock_dyn,
        Some(Secret::new(ADMIN)),
        Metrics::new(),
    );
    App {
        router: rest::router(service),
        store,
        clock,
        _db: db,
    }
}

impl App {
    /// Sends one request; returns the status and the JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_raw(method, path, bearer, body.map(|b| b.to_string()))
            .await
    }

    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(token) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let response = self.router.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .expect("body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(key), Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Creates a tenant through the admin API; returns its API key.
    pub async fn tenant(&self, name: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/tenants",
                Some(ADMIN),
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["api_key"].as_str().expect("api_key").to_owned()
    }

    /// Creates a minimal job; returns its id.
    pub async fn job(&self, key: &str) -> String {
        let (status, body) = self.post("/v1/jobs", key, serde_json::json!({ "name": "job", "image": "busybox:1.36", "command": ["echo", "hi"] })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Creates an hourly schedule on the job; returns its id.
    pub async fn schedule(&self, key: &str, job: &str) -> String {
        let (status, body) = self
            .post(
                &format!("/v1/jobs/{job}/schedules"),
                key,
                serde_json::json!({ "cron": "0 * * * *" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }
}

/// Asserts a 400 naming `field`.
pub fn assert_invalid(status: StatusCode, body: &Value, field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_argument", "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

pub fn assert_not_found(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}
