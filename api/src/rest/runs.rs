//! Run routes: execute now, trigger, backfill, and `/v1/runs`.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use kairos_domain::PageRequest;

use super::{
    dto::{
        BackfillBody, BackfillResponse, EmptyBody, ErrorBody, ExecuteBody, RunEventView,
        RunEventsResponse, RunList, RunListQuery, RunLogsQuery, RunLogsResponse, RunView,
    },
    extract::{Body, Caller, OptionalBody, Query},
};
use crate::{ApiError, Service};

/// Queues a run now: 201 with a new run, 200 with the first run on an idempotent repeat.
#[utoipa::path(post, path = "/v1/jobs/{job_id}/runs", tag = "runs", request_body = Option<ExecuteBody>,
    security(("api_key" = [])), params(("job_id" = String, Path)),
    responses((status = 201, body = RunView), (status = 200, body = RunView, description = "repeat of an idempotency key"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn execute_now(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(job_id): Path<String>,
    OptionalBody(body): OptionalBody<ExecuteBody>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let (run, created) = service
        .execute_now(
            tenant,
            &job_id,
            body.idempotency_key.as_deref(),
            body.env.unwrap_or_default(),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(RunView::from(&run))))
}

#[utoipa::path(post, path = "/v1/schedules/{schedule_id}/trigger", tag = "schedules",
    security(("api_key" = [])), params(("schedule_id" = String, Path)),
    responses((status = 201, body = RunView), (status = 404, body = ErrorBody)))]
pub async fn trigger_schedule(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    OptionalBody(_): OptionalBody<EmptyBody>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let run = service.trigger_schedule(tenant, &id).await?;
    Ok((StatusCode::CREATED, Json(RunView::from(&run))))
}

/// One run per fire time in `[from, to)` (at most 1000); `dry_run` lists them only.
#[utoipa::path(post, path = "/v1/schedules/{schedule_id}/backfill", tag = "schedules", request_body = BackfillBody,
    security(("api_key" = [])), params(("schedule_id" = String, Path)),
    responses((status = 201, body = BackfillResponse), (status = 200, body = BackfillResponse, description = "dry run"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn backfill_schedule(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    Body(body): Body<BackfillBody>,
) -> Result<(StatusCode, Json<BackfillResponse>), ApiError> {
    let from = body
        .from
        .ok_or_else(|| ApiError::invalid("from", "is required"))?;
    let to = body
        .to
        .ok_or_else(|| ApiError::invalid("to", "is required"))?;
    let outcome = service
        .backfill(tenant, &id, &from, &to, body.dry_run)
        .await?;
    let status = if outcome.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(BackfillResponse::from(&outcome))))
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", security(("api_key" = [])),
    params(("job_id" = Option<String>, Query), ("schedule_id" = Option<String>, Query), ("state" = Option<String>, Query),
           ("page_size" = Option<i64>, Query), ("page_token" = Option<String>, Query)),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_runs(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Query(q): Query<RunListQuery>,
) -> Result<Json<RunList>, ApiError> {
    let page = PageRequest::parse(q.page_size, q.page_token.as_deref())?;
    let runs = service
        .list_runs(
            tenant,
            q.job_id.as_deref(),
            q.schedule_id.as_deref(),
            q.state.as_deref(),
            page,
        )
        .await?;
    Ok(Json(runs.into()))
}

#[utoipa::path(get, path = "/v1/runs/{run_id}", tag = "runs", security(("api_key" = [])),
    params(("run_id" = String, Path)), responses((status = 200, body = RunView), (status = 404, body = ErrorBody)))]
pub async fn get_run(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    Ok(Json(RunView::from(&service.get_run(tenant, &id).await?)))
}

/// Cancels a run that has not finished; a running one is killed by its worker.
#[utoipa::path(post, path = "/v1/runs/{run_id}/cancel", tag = "runs", security(("api_key" = [])),
    params(("run_id" = String, Path)),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_run(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    OptionalBody(_): OptionalBody<EmptyBody>,
) -> Result<Json<RunView>, ApiError> {
    Ok(Json(RunView::from(&service.cancel_run(tenant, &id).await?)))
}

/// The run's output; with `offset`, only what it wrote from that byte on (follow a running
/// run by passing each answer's `next_offset` back).
#[utoipa::path(get, path = "/v1/runs/{run_id}/logs", tag = "runs", security(("api_key" = [])),
    params(("run_id" = String, Path), ("offset" = Option<i64>, Query, description = "byte offset to read from")),
    responses((status = 200, body = RunLogsResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn run_logs(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    Query(q): Query<RunLogsQuery>,
) -> Result<Json<RunLogsResponse>, ApiError> {
    Ok(Json(RunLogsResponse::from(
        &service.run_logs(tenant, &id, q.offset).await?,
    )))
}

#[utoipa::path(get, path = "/v1/runs/{run_id}/events", tag = "runs", security(("api_key" = [])),
    params(("run_id" = String, Path)), responses((status = 200, body = RunEventsResponse), (status = 404, body = ErrorBody)))]
pub async fn run_events(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Json<RunEventsResponse>, ApiError> {
    let events = service.run_events(tenant, &id).await?;
    Ok(Json(RunEventsResponse {
        events: events.iter().map(RunEventView::from).collect(),
    }))
}
