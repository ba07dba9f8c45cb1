//! `/v1/jobs` routes.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use kairos_domain::PageRequest;

use super::{
    dto::{ErrorBody, JobBody, JobList, JobView},
    extract::{Body, Caller, Query},
};
use crate::{ApiError, Service, rest::dto::PageQuery};

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobBody, security(("api_key" = [])),
    responses((status = 201, body = JobView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn create_job(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Body(body): Body<JobBody>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let job = service.create_job(tenant, body.into()).await?;
    Ok((StatusCode::CREATED, Json(JobView::from(&job))))
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", security(("api_key" = [])),
    params(("page_size" = Option<i64>, Query, description = "1-1000, default 100"), ("page_token" = Option<String>, Query)),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody)))]
pub async fn list_jobs(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<JobList>, ApiError> {
    let page = PageRequest::parse(q.page_size, q.page_token.as_deref())?;
    Ok(Json(service.list_jobs(tenant, page).await?.into()))
}

#[utoipa::path(get, path = "/v1/jobs/{job_id}", tag = "jobs", security(("api_key" = [])),
    params(("job_id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(JobView::from(
        &service.get_job(tenant, &job_id).await?,
    )))
}

#[utoipa::path(patch, path = "/v1/jobs/{job_id}", tag = "jobs", request_body = JobBody, security(("api_key" = [])),
    params(("job_id" = String, Path)),
    responses((status = 200, body = JobView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_job(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(job_id): Path<String>,
    Body(body): Body<JobBody>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(JobView::from(
        &service.update_job(tenant, &job_id, body.into()).await?,
    )))
}

#[utoipa::path(delete, path = "/v1/jobs/{job_id}", tag = "jobs", security(("api_key" = [])),
    params(("job_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_job(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(job_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.delete_job(tenant, &job_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
