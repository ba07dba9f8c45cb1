//! The REST adapter (axum): routes of the public v1 contract, mapped one-to-one onto the
//! service layer. Handlers translate JSON to service calls and back, and nothing else.
//!
//! `router()` builds the whole HTTP surface without binding a socket, so tests drive it
//! in-process.

mod credentials;
pub mod dto;
pub mod extract;
mod jobs;
mod runs;
mod schedules;
mod tenants;

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use kairos_domain::ErrorCode;

use crate::{ApiError, Service, health, metrics, openapi};

pub use credentials::*;
pub use jobs::*;
pub use runs::*;
pub use schedules::*;
pub use tenants::*;

/// Largest accepted request body: env is capped at 32 KiB, commands at 64 KiB.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// The complete HTTP surface: the v1 API, OpenAPI document, health, readiness and metrics.
pub fn router(service: Service) -> Router {
    let v1 = Router::new()
        .route("/tenants", post(tenants::create_tenant))
        .route("/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route(
            "/jobs/{job_id}",
            get(jobs::get_job)
                .patch(jobs::update_job)
                .delete(jobs::delete_job),
        )
        .route("/jobs/{job_id}/schedules", post(schedules::create_schedule))
        .route("/jobs/{job_id}/runs", post(runs::execute_now))
        .route("/schedules", get(schedules::list_schedules))
        .route(
            "/schedules/{schedule_id}",
            get(schedules::get_schedule)
                .patch(schedules::update_schedule)
                .delete(schedules::delete_schedule),
        )
        .route(
            "/schedules/{schedule_id}/pause",
            post(schedules::pause_schedule),
        )
        .route(
            "/schedules/{schedule_id}/resume",
            post(schedules::resume_schedule),
        )
        .route(
            "/schedules/{schedule_id}/trigger",
            post(runs::trigger_schedule),
        )
        .route(
            "/schedules/{schedule_id}/backfill",
            post(runs::backfill_schedule),
        )
        .route("/runs", get(runs::list_runs))
        .route("/runs/{run_id}", get(runs::get_run))
        .route("/runs/{run_id}/cancel", post(runs::cancel_run))
        .route("/runs/{run_id}/logs", get(runs::run_logs))
        .route("/runs/{run_id}/events", get(runs::run_events))
        .route(
            "/registry-credentials",
            post(credentials::create_registry_credential)
                .get(credentials::list_registry_credentials),
        )
        .route(
            "/registry-credentials/{name}",
            axum::routing::delete(credentials::delete_registry_credential),
        )
        .route("/openapi.json", get(openapi::serve_document));

    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::serve_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            service.clone(),
            metrics::track_http,
        ))
        .with_state(service)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> Response {
    let body = dto::ErrorBody {
        error: dto::ErrorDetail {
            code: "method_not_allowed".into(),
            message: "this route does not take that method".into(),
            field: None,
        },
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = dto::ErrorBody {
            error: dto::ErrorDetail {
                code: self.code.as_str().into(),
                message: self.message,
                field: self.field,
            },
        };
        (status, Json(body)).into_response()
    }
}
