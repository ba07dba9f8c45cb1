//! The OpenAPI 3.1 document of the REST contract, generated from the handlers' annotations
//! and the DTO types (utoipa), served at `/v1/openapi.json`. Never hand-written.

use axum::Json;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::rest::{self, dto};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Kairos API", version = "v1",
         description = "Run Docker jobs now, at a time, or on a schedule. Authenticate with `Authorization: Bearer <api key>`."),
    paths(
        rest::create_tenant,
        rest::create_job, rest::list_jobs, rest::get_job, rest::update_job, rest::delete_job,
        rest::create_schedule, rest::list_schedules, rest::get_schedule, rest::update_schedule,
        rest::delete_schedule, rest::pause_schedule, rest::resume_schedule,
        rest::trigger_schedule, rest::backfill_schedule,
        rest::execute_now, rest::list_runs, rest::get_run, rest::cancel_run, rest::run_logs, rest::run_events,
        rest::create_registry_credential, rest::list_registry_credentials, rest::delete_registry_credential,
    ),
    components(schemas(dto::ErrorBody, dto::ErrorDetail)),
    modifiers(&BearerAuth),
    tags((name = "tenants"), (name = "jobs"), (name = "schedules"), (name = "runs"), (name = "registry credentials")),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["api_key", "admin_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// `GET /v1/openapi.json` (no authentication: the contract is public).
pub async fn serve_document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
