//! The gRPC adapter (tonic): `TenantService` and `JobService` of package `kairos.v1`, mapped
//! one-to-one onto the service layer, with errors rendered through the shared code table.
//!
//! Like the REST adapter it only translates; it must never reach the store itself.

mod convert;
mod jobs;
mod tenants;

use kairos_proto::v1::{
    job_service_server::JobServiceServer, tenant_service_server::TenantServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Status, metadata::MetadataValue};

use crate::{ApiError, Service};

/// Metadata key carrying the field at fault of an `INVALID_ARGUMENT` status.
pub const ERROR_FIELD_METADATA: &str = "kairos-error-field";

/// Serves gRPC on `listener` until `shutdown` is cancelled.
pub async fn serve(
    service: Service,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    // Nagle off: small answers must not wait for the client's delayed ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(TenantServiceServer::new(tenants::Tenants(service.clone())))
        .add_service(JobServiceServer::new(jobs::Jobs(service)))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let mut status = Status::new(tonic::Code::from(e.code.grpc_code()), e.message);
        if let Some(field) = e.field
            && let Ok(value) = MetadataValue::try_from(field.as_str())
        {
            status.metadata_mut().insert(ERROR_FIELD_METADATA, value);
        }
        status
    }
}

/// The `authorization` metadata of a request, if printable.
fn authorization<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Records the call in the metrics and turns the service error into a status.
fn finish<T>(
    service: &Service,
    method: &'static str,
    result: Result<T, ApiError>,
) -> Result<tonic::Response<T>, Status> {
    let result = result.map(tonic::Response::new).map_err(Status::from);
    let code = result
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    service.metrics().grpc_call(method, code);
    result
}
