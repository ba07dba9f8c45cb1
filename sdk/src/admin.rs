//! The operator's client of `kairos.v1.TenantService`: creating a tenant with the admin token,
//! which answers the tenant's first API key (shown only then). It must never keep or log the
//! token or the key.

use std::fmt;

use kairos_proto::v1::{CreateTenantRequest, Tenant, tenant_service_client::TenantServiceClient};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::{ApiKey, BearerAuth, ClientOptions, Error, client::Transport, retry::CallKind};

/// A tenant just created and its API key (stored hashed by the server: this is the only time
/// it is shown).
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// Its first API key.
    pub api_key: ApiKey,
}

/// A client of `TenantService`, authenticated with the operator's admin token.
#[derive(Clone)]
pub struct AdminClient {
    transport: Transport,
    raw: TenantServiceClient<InterceptedService<Channel, BearerAuth>>,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient")
            .field("endpoint", &self.transport.endpoint)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client of `endpoint` with `admin_token` (the API's `KAIROS_ADMIN_TOKEN`); connects on
    /// the first call.
    pub fn new(
        endpoint: impl Into<String>,
        admin_token: impl Into<ApiKey>,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        let auth = BearerAuth::new(&admin_token.into(), "admin_token")?;
        let transport = Transport::lazy(&endpoint.into(), options)?;
        let raw = TenantServiceClient::with_interceptor(transport.channel.clone(), auth);
        Ok(Self { transport, raw })
    }

    /// Creates a tenant named `name` and answers its first API key. Not retried once sent: a
    /// retry could create a second tenant.
    pub async fn create_tenant(&self, name: impl Into<String>) -> Result<NewTenant, Error> {
        let request = CreateTenantRequest { name: name.into() };
        let answer = self
            .transport
            .unary(
                &self.raw,
                CallKind::Create,
                "CreateTenant",
                request,
                |mut c, r| async move { c.create_tenant(r).await },
            )
            .await?;
        let tenant = answer
            .tenant
            .ok_or_else(|| Error::Protocol("CreateTenant answered no tenant".to_owned()))?;
        Ok(NewTenant {
            tenant,
            api_key: ApiKey::new(answer.api_key),
        })
    }
}
