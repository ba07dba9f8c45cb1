//! Tenants and their API keys: creation with the first key, and key-hash lookup; it must never
//! see or store a key's secret, only its SHA-256.

use kairos_domain::{TenantId, TenantName};
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{TenantRow, tenant_columns};
use crate::{NewApiKey, Result, Tenant};

/// Inserts the tenant and its first key in one transaction.
#[tracing::instrument(skip_all, fields(tenant_id))]
pub(super) async fn create(
    store: &SqliteStore,
    name: &TenantName,
    key: &NewApiKey,
) -> Result<Tenant> {
    let id = TenantId::generate();
    tracing::Span::current().record("tenant_id", tracing::field::display(id));
    let mut tx = store.begin_write().await?;
    let now = tx.now.clone();
    let row: TenantRow = sqlx::query_as(concat!(
        "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3) RETURNING ",
        tenant_columns!()
    ))
    .bind(id.as_uuid())
    .bind(name.as_str())
    .bind(&now)
    .fetch_one(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(key.id.as_uuid())
    .bind(id.as_uuid())
    .bind(key.hash.as_slice())
    .bind(key.prefix.as_str())
    .bind(&now)
    .execute(tx.conn())
    .await?;
    let tenant = Tenant::try_from(row)?;
    tx.commit().await?;
    Ok(tenant)
}

/// The tenant owning the unrevoked key with this hash.
pub(super) async fn for_key(store: &SqliteStore, key_hash: &[u8; 32]) -> Result<Option<TenantId>> {
    let tenant: Option<Uuid> = sqlx::query_scalar(
        "SELECT tenant_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
    )
    .bind(key_hash.as_slice())
    .fetch_optional(store.reader())
    .await?;
    Ok(tenant.map(TenantId::from_uuid))
}
