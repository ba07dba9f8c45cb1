//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: it can reach the
//! store). Neither requires authentication, and neither may do expensive work.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::Service;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(service): State<Service>) -> (StatusCode, Json<Value>) {
    match service.ready().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": e.message })),
        ),
    }
}
