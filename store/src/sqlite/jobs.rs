//! The jobs table: create, read, list, versioned update and soft delete (which also removes the
//! job's schedules and cancels its not-yet-started runs); every query is scoped by tenant and
//! must never return or touch another tenant's or a deleted job.

use chrono::{DateTime, Utc};
use kairos_domain::{JobId, JobSpec, PageRequest, TenantId, run::cancel_reason};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::rows::{JobRow, JobValues, convert, job_columns, page_of, push_keyset, stored_shard};
use super::runs::{self, Pending};
use super::{SqliteStore, credentials};
use crate::{ChangeKind, Job, Page, Result, StoreError};

/// A `jobs` row as SQLite holds it: the command is a JSON array.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SqliteJobRow {
    id: Uuid,
    tenant_id: Uuid,
    name: String,
    image: String,
    command: Json<Vec<String>>,
    env: Json<Value>,
    memory_mb: i32,
    timeout_seconds: i32,
    retry_max_attempts: i32,
    retry_initial_backoff_seconds: i32,
    retry_max_backoff_seconds: i32,
    labels: Json<Value>,
    registry_credential: Option<String>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<SqliteJobRow> for Job {
    type Error = StoreError;

    fn try_from(row: SqliteJobRow) -> Result<Self> {
        Job::try_from(JobRow {
            id: row.id,
            tenant_id: row.tenant_id,
            name: row.name,
            image: row.image,
            command: row.command.0,
            env: row.env,
            memory_mb: row.memory_mb,
            timeout_seconds: row.timeout_seconds,
            retry_max_attempts: row.retry_max_attempts,
            retry_initial_backoff_seconds: row.retry_initial_backoff_seconds,
            retry_max_backoff_seconds: row.retry_max_backoff_seconds,
            labels: row.labels,
            registry_credential: row.registry_credential,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %id))]
pub(super) async fn create(
    store: &SqliteStore,
    tenant: TenantId,
    id: JobId,
    spec: &JobSpec,
) -> Result<Job> {
    let v = JobValues::of(spec)?;
    let mut tx = store.begin_write().await?;
    let now = tx.now.clone();
    credentials::check_for_job(tx.conn(), tenant, spec).await?;
    let row: SqliteJobRow = sqlx::query_as(concat!(
        "INSERT INTO jobs (id, tenant_id, name, image, command, env, memory_mb, timeout_seconds,
             retry_max_attempts, retry_initial_backoff_seconds, retry_max_backoff_seconds, labels,
             created_at, updated_at, registry_credential)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14)
         RETURNING ",
        job_columns!()
    ))
    .bind(id.as_uuid())
    .bind(tenant.as_uuid())
    .bind(v.name)
    .bind(v.image)
    .bind(Json(v.command))
    .bind(v.env)
    .bind(v.memory_mb)
    .bind(v.timeout_seconds)
    .bind(v.retry_max_attempts)
    .bind(v.retry_initial_backoff_seconds)
    .bind(v.retry_max_backoff_seconds)
    .bind(v.labels)
    .bind(now)
    .bind(v.registry_credential)
    .fetch_one(tx.conn())
    .await?;
    let job = Job::try_from(row)?;
    tx.commit().await?;
    Ok(job)
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %id))]
pub(super) async fn get(store: &SqliteStore, tenant: TenantId, id: JobId) -> Result<Job> {
    let row: Option<SqliteJobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = ?1 AND id = ?2 AND deleted_at IS NULL"
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(store.reader())
    .await?;
    row.ok_or(StoreError::NotFound("job"))?.try_into()
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
pub(super) async fn list(
    store: &SqliteStore,
    tenant: TenantId,
    page: PageRequest,
) -> Result<Page<Job>> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = "
    ));
    q.push_bind(tenant.as_uuid())
        .push(" AND deleted_at IS NULL");
    push_keyset(&mut q, &page);
    let rows: Vec<SqliteJobRow> = q.build_query_as().fetch_all(store.reader()).await?;
    Ok(page_of(convert(rows)?, &page, |j: &Job| j.id.as_uuid()))
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %id, expected_version))]
pub(super) async fn update(
    store: &SqliteStore,
    tenant: TenantId,
    id: JobId,
    spec: &JobSpec,
    expected_version: i64,
) -> Result<Job> {
    let v = JobValues::of(spec)?;
    let mut tx = store.begin_write().await?;
    let now = tx.now.clone();
    credentials::check_for_job(tx.conn(), tenant, spec).await?;
    let row: Option<SqliteJobRow> = sqlx::query_as(concat!(
        "UPDATE jobs SET name = ?4, image = ?5, command = ?6, env = ?7, memory_mb = ?8,
             timeout_seconds = ?9, retry_max_attempts = ?10, retry_initial_backoff_seconds = ?11,
             retry_max_backoff_seconds = ?12, labels = ?13, registry_credential = ?15,
             version = version + 1, updated_at = ?14
         WHERE tenant_id = ?1 AND id = ?2 AND deleted_at IS NULL AND version = ?3
         RETURNING ",
        job_columns!()
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .bind(expected_version)
    .bind(v.name)
    .bind(v.image)
    .bind(Json(v.command))
    .bind(v.env)
    .bind(v.memory_mb)
    .bind(v.timeout_seconds)
    .bind(v.retry_max_attempts)
    .bind(v.retry_initial_backoff_seconds)
    .bind(v.retry_max_backoff_seconds)
    .bind(v.labels)
    .bind(now)
    .bind(v.registry_credential)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM jobs WHERE tenant_id = ?1 AND id = ?2 AND deleted_at IS NULL",
        )
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(tx.conn())
        .await?;
        return Err(match current {
            Some(current) => version_conflict("job", expected_version, current),
            None => StoreError::NotFound("job"),
        });
    };
    let job = Job::try_from(row)?;
    tx.commit().await?;
    Ok(job)
}

/// Soft-deletes the job, deletes its schedules and cancels its not-yet-started runs, in one
/// transaction; schedulers owning the schedules' shards get a hint on commit.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, job_id = %id))]
pub(super) async fn delete(store: &SqliteStore, tenant: TenantId, id: JobId) -> Result<()> {
    let mut tx = store.begin_write().await?;
    let now = tx.now.clone();
    let deleted: Option<Uuid> = sqlx::query_scalar(
        "UPDATE jobs SET deleted_at = ?3, updated_at = ?3, version = version + 1
         WHERE tenant_id = ?1 AND id = ?2 AND deleted_at IS NULL
         RETURNING id",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    if deleted.is_none() {
        return Err(StoreError::NotFound("job"));
    }
    let mut shards: Vec<i16> = sqlx::query_scalar(
        "DELETE FROM schedules WHERE tenant_id = ?1 AND job_id = ?2 RETURNING shard",
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
        tx.hint(ChangeKind::Schedule, stored_shard(shard)?);
    }
    tx.commit().await?;
    tracing::info!(cancelled = cancelled.runs, "job deleted");
    Ok(())
}

/// `NotFound` unless the tenant's job is live. Inside a write transaction nothing can delete
/// it before the transaction ends (writes are serialized).
pub(super) async fn check_live(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: JobId,
) -> Result<()> {
    sqlx::query_scalar::<_, i32>(
        "SELECT 1 FROM jobs WHERE tenant_id = ?1 AND id = ?2 AND deleted_at IS NULL",
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
    store: &SqliteStore,
    tenant: TenantId,
    id: JobId,
    include_deleted: bool,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs
                        WHERE tenant_id = ?1 AND id = ?2 AND (?3 OR deleted_at IS NULL))",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .bind(include_deleted)
    .fetch_one(store.reader())
    .await?)
}

/// The error of an optimistic update that lost to a concurrent writer.
pub(super) fn version_conflict(what: &str, expected: i64, current: i64) -> StoreError {
    StoreError::Conflict(format!(
        "{what} was changed concurrently: version is {current}, expected {expected}; \
         read it again and retry"
    ))
}
