//! `/v1/jobs/{job_id}/schedules` and `/v1/schedules` routes.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use kairos_domain::PageRequest;

use super::{
    dto::{
        ErrorBody, PauseBody, ResumeBody, ScheduleBody, ScheduleList, ScheduleListQuery,
        ScheduleResponse,
    },
    extract::{Body, Caller, OptionalBody, Query},
};
use crate::{ApiError, Service};

#[utoipa::path(post, path = "/v1/jobs/{job_id}/schedules", tag = "schedules", request_body = ScheduleBody,
    security(("api_key" = [])), params(("job_id" = String, Path)),
    responses((status = 201, body = ScheduleResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_schedule(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(job_id): Path<String>,
    Body(body): Body<ScheduleBody>,
) -> Result<(StatusCode, Json<ScheduleResponse>), ApiError> {
    let (draft, paused) = body.into_parts();
    let view = service
        .create_schedule(tenant, &job_id, draft, paused.unwrap_or(false))
        .await?;
    Ok((StatusCode::CREATED, Json(ScheduleResponse::from(&view))))
}

#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", security(("api_key" = [])),
    params(("job_id" = Option<String>, Query), ("page_size" = Option<i64>, Query), ("page_token" = Option<String>, Query)),
    responses((status = 200, body = ScheduleList), (status = 404, body = ErrorBody)))]
pub async fn list_schedules(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Query(q): Query<ScheduleListQuery>,
) -> Result<Json<ScheduleList>, ApiError> {
    let page = PageRequest::parse(q.page_size, q.page_token.as_deref())?;
    Ok(Json(
        service
            .list_schedules(tenant, q.job_id.as_deref(), page)
            .await?
            .into(),
    ))
}

#[utoipa::path(get, path = "/v1/schedules/{schedule_id}", tag = "schedules", security(("api_key" = [])),
    params(("schedule_id" = String, Path)),
    responses((status = 200, body = ScheduleResponse), (status = 404, body = ErrorBody)))]
pub async fn get_schedule(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    Ok(Json(ScheduleResponse::from(
        &service.get_schedule(tenant, &id).await?,
    )))
}

#[utoipa::path(patch, path = "/v1/schedules/{schedule_id}", tag = "schedules", request_body = ScheduleBody,
    security(("api_key" = [])), params(("schedule_id" = String, Path)),
    responses((status = 200, body = ScheduleResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_schedule(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    Body(body): Body<ScheduleBody>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    let (draft, paused) = body.into_parts();
    Ok(Json(ScheduleResponse::from(
        &service.update_schedule(tenant, &id, draft, paused).await?,
    )))
}

#[utoipa::path(delete, path = "/v1/schedules/{schedule_id}", tag = "schedules", security(("api_key" = [])),
    params(("schedule_id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_schedule(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.delete_schedule(tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/schedules/{schedule_id}/pause", tag = "schedules", request_body = Option<PauseBody>,
    security(("api_key" = [])), params(("schedule_id" = String, Path)),
    responses((status = 200, body = ScheduleResponse), (status = 404, body = ErrorBody)))]
pub async fn pause_schedule(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<PauseBody>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    Ok(Json(ScheduleResponse::from(
        &service.pause_schedule(tenant, &id, body.note).await?,
    )))
}

/// Resumes a paused schedule from now; `catch_up` plans the fires missed while paused.
#[utoipa::path(post, path = "/v1/schedules/{schedule_id}/resume", tag = "schedules", request_body = Option<ResumeBody>,
    security(("api_key" = [])), params(("schedule_id" = String, Path)),
    responses((status = 200, body = ScheduleResponse), (status = 404, body = ErrorBody)))]
pub async fn resume_schedule(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<ResumeBody>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    Ok(Json(ScheduleResponse::from(
        &service.resume_schedule(tenant, &id, body.catch_up).await?,
    )))
}
