//! `kairos.v1.TenantService` (admin token in the `authorization` metadata).

use kairos_proto::v1::{
    CreateTenantRequest, CreateTenantResponse, tenant_service_server::TenantService,
};
use tonic::{Request, Response, Status};

use super::{authorization, convert, finish};
use crate::Service;

#[derive(Debug, Clone)]
pub struct Tenants(pub Service);

#[tonic::async_trait]
impl TenantService for Tenants {
    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<CreateTenantResponse>, Status> {
        let service = &self.0;
        let result = async {
            service.authorize_admin(authorization(&request).as_deref())?;
            let (tenant, key) = service.create_tenant(&request.into_inner().name).await?;
            Ok(CreateTenantResponse {
                tenant: Some(convert::tenant(&tenant)),
                api_key: key.expose().to_owned(),
            })
        }
        .await;
        finish(service, "CreateTenant", result)
    }
}
