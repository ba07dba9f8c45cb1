//! Job operations: create, read, list, patch, delete.

use kairos_domain::{JobDraft, JobId, PageRequest, TenantId};
use kairos_store::{Job, Page, StoreError};

use super::{Service, parse_id};
use crate::ApiError;

/// How often a patch is re-applied when a concurrent writer bumped the version meanwhile.
const PATCH_ATTEMPTS: usize = 3;

impl Service {
    pub async fn create_job(&self, tenant: TenantId, draft: JobDraft) -> Result<Job, ApiError> {
        let spec = draft.parse()?;
        let job = self
            .store()
            .create_job(tenant, JobId::generate(), &spec)
            .await?;
        self.metrics().jobs_created.inc();
        tracing::info!(tenant_id = %tenant, job_id = %job.id, "job created");
        Ok(job)
    }

    pub async fn get_job(&self, tenant: TenantId, id: &str) -> Result<Job, ApiError> {
        let id: JobId = parse_id(id, "job")?;
        Ok(self.store().get_job(tenant, id).await?)
    }

    pub async fn list_jobs(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Job>, ApiError> {
        Ok(self.store().list_jobs(tenant, page).await?)
    }

    /// Applies a partial update; the merged job is checked as a whole before anything is written.
    pub async fn update_job(
        &self,
        tenant: TenantId,
        id: &str,
        draft: JobDraft,
    ) -> Result<Job, ApiError> {
        let id: JobId = parse_id(id, "job")?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.store().get_job(tenant, id).await?;
            let spec = draft.clone().patch(&current.spec)?;
            match self
                .store()
                .update_job(tenant, id, &spec, current.version)
                .await
            {
                Err(StoreError::Conflict(_)) if attempt < PATCH_ATTEMPTS => continue,
                other => return Ok(other?),
            }
        }
    }

    pub async fn delete_job(&self, tenant: TenantId, id: &str) -> Result<(), ApiError> {
        let id: JobId = parse_id(id, "job")?;
        self.store().delete_job(tenant, id).await?;
        tracing::info!(tenant_id = %tenant, job_id = %id, "job deleted");
        Ok(())
    }
}
