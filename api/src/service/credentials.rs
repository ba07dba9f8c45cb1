//! Registry credentials: a tenant's credentials for private registries, created, listed (never
//! with their password) and deleted by name; jobs name the one their image needs.

use kairos_domain::{CredentialDraft, CredentialName, TenantId};
use kairos_store::RegistryCredential;

use super::Service;
use crate::ApiError;

impl Service {
    pub async fn create_registry_credential(
        &self,
        tenant: TenantId,
        draft: CredentialDraft,
    ) -> Result<RegistryCredential, ApiError> {
        let spec = draft.parse()?;
        let created = self
            .store()
            .create_registry_credential(tenant, &spec)
            .await?;
        tracing::info!(tenant_id = %tenant, name = %created.name, server = %created.server, "registry credential created");
        Ok(created)
    }

    pub async fn list_registry_credentials(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<RegistryCredential>, ApiError> {
        Ok(self.store().list_registry_credentials(tenant).await?)
    }

    pub async fn delete_registry_credential(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> Result<(), ApiError> {
        // A name that cannot exist answers as a missing one (I6).
        let name = CredentialName::parse_as("name", name).map_err(|_| {
            ApiError::from(kairos_store::StoreError::NotFound("registry credential"))
        })?;
        self.store()
            .delete_registry_credential(tenant, &name)
            .await?;
        Ok(())
    }
}
