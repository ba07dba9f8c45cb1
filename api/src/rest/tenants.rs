//! `POST /v1/tenants` (admin token only).

use axum::{Json, extract::State, http::StatusCode};

use super::{
    dto::{CreateTenantRequest, CreateTenantResponse, ErrorBody, TenantView},
    extract::{Admin, Body},
};
use crate::{ApiError, Service};

/// Creates a tenant and its first API key, shown only in this response.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenantRequest,
    security(("admin_token" = [])),
    responses((status = 201, body = CreateTenantResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_tenant(
    State(service): State<Service>,
    _: Admin,
    Body(body): Body<CreateTenantRequest>,
) -> Result<(StatusCode, Json<CreateTenantResponse>), ApiError> {
    let name = body
        .name
        .ok_or_else(|| ApiError::invalid("name", "is required"))?;
    let (tenant, key) = service.create_tenant(&name).await?;
    let response = CreateTenantResponse {
        tenant: TenantView::from(&tenant),
        api_key: key.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(response)))
}
