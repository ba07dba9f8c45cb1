//! The registry_credentials table: a tenant's credentials for private registries, by name, the
//! password sealed under the servers' key (`seal.rs`); the check that a job names a credential
//! of its tenant for its image's registry; and opening them for the offers that hand them to
//! workers. Every query is scoped by tenant; no password is ever returned to the API.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kairos_domain::{
    CredentialName, CredentialSpec, FieldError, JobSpec, RegistryHost, Secret, TenantId,
};
use sqlx::PgPool;
use uuid::Uuid;

use super::PgStore;
use super::tx::Tx;
use crate::{RegistryAuth, RegistryCredential, Result, StoreError, seal::SecretKey};

/// What a sealed password is bound to: its tenant and name (moving it to another row fails).
fn context(tenant: Uuid, name: &str) -> Vec<u8> {
    let mut c = tenant.as_bytes().to_vec();
    c.push(b'/');
    c.extend_from_slice(name.as_bytes());
    c
}

fn key(store: &PgStore) -> Result<&SecretKey> {
    store.secret_key().ok_or_else(|| {
        StoreError::FailedPrecondition(
            "registry credentials need KAIROS_SECRET_KEY on the API and scheduler servers \
             (64 hex digits, e.g. `openssl rand -hex 32`)"
                .to_owned(),
        )
    })
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, name = %spec.name))]
pub(super) async fn create(
    store: &PgStore,
    tenant: TenantId,
    spec: &CredentialSpec,
) -> Result<RegistryCredential> {
    let sealed = key(store)?
        .seal(
            spec.password.expose(),
            &context(tenant.as_uuid(), spec.name.as_str()),
        )
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let created: Option<DateTime<Utc>> = sqlx::query_scalar(
        "INSERT INTO registry_credentials (tenant_id, name, server, username, password_sealed)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, name) DO NOTHING
         RETURNING created_at",
    )
    .bind(tenant.as_uuid())
    .bind(spec.name.as_str())
    .bind(spec.server.as_str())
    .bind(&spec.username)
    .bind(&sealed)
    .fetch_optional(store.pool())
    .await?;
    let created_at = created.ok_or_else(|| {
        StoreError::Conflict(format!(
            "name: a registry credential named '{}' exists already",
            spec.name
        ))
    })?;
    tracing::info!(server = %spec.server, "registry credential created");
    Ok(RegistryCredential {
        name: spec.name.clone(),
        server: spec.server.clone(),
        username: spec.username.clone(),
        created_at,
    })
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
pub(super) async fn list(pool: &PgPool, tenant: TenantId) -> Result<Vec<RegistryCredential>> {
    let rows: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT name, server, username, created_at FROM registry_credentials
         WHERE tenant_id = $1 ORDER BY name",
    )
    .bind(tenant.as_uuid())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(name, server, username, created_at)| {
            let corrupt =
                |e: FieldError| StoreError::Corrupt(format!("registry credential {name}: {e}"));
            Ok(RegistryCredential {
                name: CredentialName::parse_as("name", &name).map_err(corrupt)?,
                server: RegistryHost::parse(&server).map_err(corrupt)?,
                username,
                created_at,
            })
        })
        .collect()
}

/// Deletes the credential unless a job still names it (`FailedPrecondition` then).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, name = %name))]
pub(super) async fn delete(pool: &PgPool, tenant: TenantId, name: &CredentialName) -> Result<()> {
    let mut tx = Tx::begin(pool).await?;
    // Locked first: a job naming it concurrently either committed (and is counted) or waits
    // and then finds it gone.
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM registry_credentials WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
    )
    .bind(tenant.as_uuid())
    .bind(name.as_str())
    .fetch_optional(tx.conn())
    .await?;
    found.ok_or(StoreError::NotFound("registry credential"))?;
    let users: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs
         WHERE tenant_id = $1 AND registry_credential = $2 AND deleted_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(name.as_str())
    .fetch_one(tx.conn())
    .await?;
    if users > 0 {
        return Err(StoreError::FailedPrecondition(format!(
            "registry credential '{name}' is used by {users} job(s); change or delete them first"
        )));
    }
    sqlx::query("DELETE FROM registry_credentials WHERE tenant_id = $1 AND name = $2")
        .bind(tenant.as_uuid())
        .bind(name.as_str())
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    tracing::info!("registry credential deleted");
    Ok(())
}

/// A job naming a credential must name one of its tenant's, for its image's registry. Locks the
/// credential `FOR SHARE` until the job's transaction ends, so it cannot be deleted under it.
pub(super) async fn check_for_job(tx: &mut Tx, tenant: TenantId, spec: &JobSpec) -> Result<()> {
    let Some(name) = &spec.registry_credential else {
        return Ok(());
    };
    let server: Option<String> = sqlx::query_scalar(
        "SELECT server FROM registry_credentials WHERE tenant_id = $1 AND name = $2 FOR SHARE",
    )
    .bind(tenant.as_uuid())
    .bind(name.as_str())
    .fetch_optional(tx.conn())
    .await?;
    crate::rows::check_credential_for_image(name.as_str(), server.as_deref(), &spec.image)
}

/// Opens the credentials the offered jobs name, by (tenant, name). A credential that cannot be
/// opened (no key, another key) is left out and logged: the pull then fails with its reason.
pub(super) async fn auth_for(
    store: &PgStore,
    conn: &mut sqlx::PgConnection,
    wanted: &[(Uuid, String)],
) -> Result<HashMap<(Uuid, String), RegistryAuth>> {
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let Some(key) = store.secret_key() else {
        tracing::warn!(
            credentials = wanted.len(),
            "jobs name registry credentials but this server has no KAIROS_SECRET_KEY; their pulls will fail"
        );
        return Ok(HashMap::new());
    };
    let (tenants, names): (Vec<Uuid>, Vec<String>) = wanted.iter().cloned().unzip();
    let rows: Vec<(Uuid, String, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT c.tenant_id, c.name, c.server, c.username, c.password_sealed
         FROM registry_credentials c
         JOIN UNNEST($1::uuid[], $2::text[]) AS w(tenant_id, name)
           ON c.tenant_id = w.tenant_id AND c.name = w.name",
    )
    .bind(&tenants)
    .bind(&names)
    .fetch_all(conn)
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for (tenant, name, server, username, sealed) in rows {
        match key.open(&sealed, &context(tenant, &name)) {
            Ok(password) => {
                out.insert(
                    (tenant, name),
                    RegistryAuth {
                        server,
                        username,
                        password: Secret::new(password),
                    },
                );
            }
            Err(e) => {
                tracing::warn!(tenant_id = %TenantId::from_uuid(tenant), name = %name, error = %e, "cannot open a registry credential");
            }
        }
    }
    Ok(out)
}
