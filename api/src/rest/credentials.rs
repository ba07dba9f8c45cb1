//! Registry credential routes: `/v1/registry-credentials` (create, list) and
//! `/v1/registry-credentials/{name}` (delete). Passwords go in, never out.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};

use super::{
    dto::{CredentialBody, CredentialList, CredentialView, EmptyBody, ErrorBody},
    extract::{Body, Caller, OptionalBody},
};
use crate::{ApiError, Service};

/// Stores a credential for a private registry; jobs name it in `registry_credential`.
#[utoipa::path(post, path = "/v1/registry-credentials", tag = "registry credentials",
    request_body = CredentialBody, security(("api_key" = [])),
    responses((status = 201, body = CredentialView), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn create_registry_credential(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Body(body): Body<CredentialBody>,
) -> Result<(StatusCode, Json<CredentialView>), ApiError> {
    let created = service
        .create_registry_credential(tenant, body.into())
        .await?;
    Ok((StatusCode::CREATED, Json(CredentialView::from(&created))))
}

#[utoipa::path(get, path = "/v1/registry-credentials", tag = "registry credentials",
    security(("api_key" = [])), responses((status = 200, body = CredentialList)))]
pub async fn list_registry_credentials(
    State(service): State<Service>,
    Caller(tenant): Caller,
) -> Result<Json<CredentialList>, ApiError> {
    let all = service.list_registry_credentials(tenant).await?;
    Ok(Json(CredentialList {
        registry_credentials: all.iter().map(CredentialView::from).collect(),
    }))
}

/// Deletes a credential no job names any more.
#[utoipa::path(delete, path = "/v1/registry-credentials/{name}", tag = "registry credentials",
    security(("api_key" = [])), params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_registry_credential(
    State(service): State<Service>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
    OptionalBody(_): OptionalBody<EmptyBody>,
) -> Result<StatusCode, ApiError> {
    service.delete_registry_credential(tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
