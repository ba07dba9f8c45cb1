//! Tenant creation (admin only): a tenant and its first API key, shown once.

use kairos_domain::{ApiKeyId, TenantName};
use kairos_store::{NewApiKey, Tenant};

use super::Service;
use crate::{ApiError, auth::mint_key, config::Secret};

impl Service {
    /// Creates a tenant and returns it with its API key (the only time the key is visible).
    pub async fn create_tenant(&self, name: &str) -> Result<(Tenant, Secret), ApiError> {
        let name = TenantName::parse(name)?;
        let key = mint_key();
        let stored = NewApiKey {
            id: ApiKeyId::generate(),
            hash: key.hash,
            prefix: key.display_prefix,
        };
        let tenant = self.store().create_tenant(&name, &stored).await?;
        tracing::info!(tenant_id = %tenant.id, "tenant created");
        Ok((tenant, key.secret))
    }
}
