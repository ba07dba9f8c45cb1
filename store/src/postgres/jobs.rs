//! The jobs table: create, read, list, versioned update and soft delete (which also removes the
//! job's schedules and cancels its not-yet-started runs); every query is scoped by tenant and
//! must never return or touch another tenant's or a deleted job.

use kairos_domain::{JobId, JobSpec, PageRequest, TenantId, run::cancel_reason};
use sqlx::{PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

use super::rows::{JobRow, JobValues, convert, job_columns, page_of, push_keyset, stored_shard};
use super::runs::{self, Pending};
use super::tx::Tx;
use super::{PgStore, credentials};
use crate::{Job, Page, Result, SCHEDULE_CHANGES_CHANNEL, StoreError};

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %id))]
pub(super) async fn create(
    pool: &PgPool,
    tenant: TenantId,
    id: JobId,
    spec: &JobSpec,
) -> Result<Job> {
    let v = JobValues::of(spec)?;
    let mut tx = Tx::begin(pool).await?;
    credentials::check_for_job(&mut tx, tenant, spec).await?;
    let row: JobRow = sqlx::query_as(concat!(
        "INSERT INTO jobs (id, tenant_id, name, image, command, env, memory_mb, timeout_seconds,
             retry_max_attempts, retry_initial_backoff_seconds, retry_max_backoff_seconds, labels,
             registry_credential)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         RETURNING ",
        job_columns!()
    ))
    .bind(id.as_uuid())
    .bind(tenant.as_uuid())
    .bind(v.name)
    .bind(v.image)
    .bind(v.command)
    .bind(v.env)
    .bind(v.memory_mb)
    .bind(v.timeout_seconds)
    .bind(v.retry_max_attempts)
    .bind(v.retry_initial_backoff_seconds)
    .bind(v.retry_max_backoff_seconds)
    .bind(v.labels)
    .bind(v.registry_credential)
    .fetch_one(tx.conn())
    .await?;
    tx.commit().await?;
    Job::try_from(row)
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %id))]
pub(super) async fn get(pool: &PgPool, tenant: TenantId, id: JobId) -> Result<Job> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    row.ok_or(StoreError::NotFound("job"))?.try_into()
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
pub(super) async fn list(pool: &PgPool, tenant: TenantId, page: PageRequest) -> Result<Page<Job>> {
    let mut q = QueryBuilder::new(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = "
    ));
    q.push_bind(tenant.as_uuid())
        .push(" AND deleted_at IS NULL");
    push_keyset(&mut q, &page);
    let rows: Vec<JobRow> = q.build_query_as().fetch_all(pool).await?;
    Ok(page_of(convert(rows)?, &page, |j: &Job| j.id.as_uuid()))
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %id, expected_version))]
pub(super) async fn update(
    pool: &PgPool,
    tenant: TenantId,
    id: JobId,
    spec: &JobSpec,
    expected_version: i64,
) -> Result<Job> {
    let v = JobValues::of(spec)?;
    let mut tx = Tx::begin(pool).await?;
    credentials::check_for_job(&mut tx, tenant, spec).await?;
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "UPDATE jobs SET name = $4, image = $5, command = $6, env = $7, memory_mb = $8,
             timeout_seconds = $9, retry_max_attempts = $10, retry_initial_backoff_seconds = $11,
             retry_max_backoff_seconds = $12, labels = $13, registry_credential = $14,
             version = version + 1, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL AND version = $3
         RETURNING ",
        job_columns!()
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .bind(expected_version)
    .bind(v.name)
    .bind(v.image)
    .bind(v.command)
    .bind(v.env)
    .bind(v.memory_mb)
    .bind(v.timeout_seconds)
    .bind(v.retry_max_attempts)
    .bind(v.retry_initial_backoff_seconds)
    .bind(v.retry_max_backoff_seconds)
    .bind(v.labels)
    .bind(v.registry_credential)
    .fetch_optional(tx.conn())
    .await?;
    tx.commit().await?;
    match row {
        Some(row) => row.try_into(),
        None => {
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM jobs WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(pool)
            .await?;
            Err(match current {
                Some(current) => version_conflict("job", expected_version, current),
                None => StoreError::NotFound("job"),
            })
        }
    }
}

/// Soft-deletes the job, deletes its schedules and cancels its not-yet-started runs, in one
/// transaction; schedulers owning the schedules' shards are notified on commit.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %id))]
pub(super) async fn delete(store: &PgStore, tenant: TenantId, id: JobId) -> Result<()> {
    let mut tx = store.begin().await?;
    let deleted: Option<Uuid> = sqlx::query_scalar(
        "UPDATE jobs SET deleted_at = now(), updated_at = now(), version = version + 1
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
         RETURNING id",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    if deleted.is_none() {
        return Err(StoreError::NotFound("job"));
    }
    let mut shards: Vec<i16> = sqlx::query_scalar(
        "DELETE FROM schedules WHERE tenant_id = $1 AND job_id = $2 RETURNING shard",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_all(tx.conn())
    .await?;
    let cancelled = runs::cancel_pending(
        &mut tx,
        tenant,
        Pending::OfJob(id),
        cancel_reason::JOB_DELETED,
    )
    .await?;
    shards.sort_unstable();
    shards.dedup();
    for shard in shards {
        tx.notify(SCHEDULE_CHANGES_CHANNEL, stored_shard(shard)?)
            .await?;
    }
    tx.commit().await?;
    tracing::info!(cancelled, "job deleted");
    Ok(())
}

/// Locks the tenant's live job against a concurrent delete until the transaction ends;
/// `NotFound` if it is missing, deleted or another tenant's.
pub(super) async fn lock_live(conn: &mut PgConnection, tenant: TenantId, id: JobId) -> Result<()> {
    sqlx::query_scalar::<_, i32>(
        "SELECT 1 FROM jobs WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL FOR SHARE",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(conn)
    .await?
    .map(|_| ())
    .ok_or(StoreError::NotFound("job"))
}

/// Whether the job is the tenant's; with `include_deleted`, also if it was (deleted jobs keep
/// their runs readable).
pub(super) async fn exists(
    pool: &PgPool,
    tenant: TenantId,
    id: JobId,
    include_deleted: bool,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs
                        WHERE tenant_id = $1 AND id = $2 AND ($3 OR deleted_at IS NULL))",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .bind(include_deleted)
    .fetch_one(pool)
    .await?)
}

/// The error of an optimistic update that lost to a concurrent writer.
pub(super) fn version_conflict(what: &str, expected: i64, current: i64) -> StoreError {
    StoreError::Conflict(format!(
        "{what} was changed concurrently: version is {current}, expected {expected}; \
         read it again and retry"
    ))
}
