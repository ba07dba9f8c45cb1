//! The SQLite `Store` and `SchedulerStore` of standalone mode: one database file in WAL mode,
//! one writer connection that every write transaction queues for, a few reader connections,
//! migrations from `migrations/sqlite/`, and the trait impls that delegate to one module per
//! aggregate; it must never hold SQL of its own beyond wiring.
//!
//! Same semantics as [`crate::PgStore`], checked by the same conformance suites. What differs
//! is how they are reached:
//! - *One writer.* SQLite lets one transaction write at a time. All writes go through a pool of
//!   exactly one connection and open with `BEGIN IMMEDIATE`, so they queue in the pool (fairly,
//!   in arrival order) instead of failing with `SQLITE_BUSY`; readers in WAL mode never block
//!   the writer nor wait for it. A claim therefore waits for the fenced writes in flight, and
//!   a fenced write that starts after a claim sees the new token, like Postgres' row locks.
//! - *Change hints in process.* There is no LISTEN: a committed write hands its hints to a
//!   broadcast channel that [`SchedulerStore::follow_changes`] subscribes to (the scheduler
//!   runs in the same process in standalone mode).
//! - *No partitions.* Retention deletes the runs of the months past it (see `retention.rs`).

mod changes;
mod credentials;
mod dispatch;
mod events;
mod fencing;
mod firing;
mod jobs;
mod offers;
mod overlap;
mod planning;
mod retention;
mod retries;
mod runs;
mod schedules;
mod tenants;
mod time;
mod tx;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kairos_domain::{
    JobId, JobSpec, PageRequest, RunId, ScheduleId, ShardId, SkipReason, TenantId, TenantName,
};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::broadcast;

use crate::{
    AckedRuns, Assignment, Backfill, DueRetry, DueRun, DueSchedule, EndedRuns, FinishedRun,
    FinishedRuns, FiredRuns, Job, LeasedRun, LiveLog, Materialize, MaterializedAcross,
    MaterializedRun, NewApiKey, NewRun, NewSchedule, Offer, Page, PartitionReport, PendingRun,
    RegistryCredential, Result, Run, RunAck, RunEvent, RunFilter, RunLogs, RunOutcome, RunReport,
    Schedule, ScheduleChange, SchedulerStore, SecretKey, ShardChange, ShardLease, Store, Tenant,
};

/// The row types and conversions shared with the other SQL backend.
use crate::rows;

/// Reader connections kept open (WAL readers run concurrently with the writer).
const READERS: u32 = 4;
/// How long a call waits for the writer (or a reader) before it fails as `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long SQLite itself waits on a lock held by another connection (another process on the
/// same file, or a WAL checkpoint) before answering `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Change hints buffered for a follower that is behind; older ones are dropped (hints only).
const HINT_BUFFER: usize = 4096;

/// SQLite-backed storage in one file. Cheap to clone: clones share the connections and the
/// change hints.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    changes: broadcast::Sender<ShardChange>,
    /// Seals and opens registry passwords; `None`: credentials cannot be stored or used.
    secret_key: Option<std::sync::Arc<SecretKey>>,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database file at `path` in WAL mode with
    /// `synchronous = NORMAL`: a committed write survives a crash (or kill -9) of the process;
    /// after a power loss the last transactions before it may be gone (the file stays
    /// consistent). Call [`migrate`](Self::migrate) before use.
    pub async fn open(path: &Path) -> Result<Self> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Waiting for the one writer is how writes queue, not a sign of trouble.
            .acquire_slow_threshold(ACQUIRE_TIMEOUT)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal),
            )
            .await?;
        // The journal mode is a property of the file, set by the writer above; readers only
        // read, which `query_only` enforces.
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(base.pragma("query_only", "ON"))
            .await?;
        let (changes, _) = broadcast::channel(HINT_BUFFER);
        Ok(Self {
            writer,
            reader,
            changes,
            secret_key: None,
        })
    }

    /// Seals registry passwords under `key`; without one, credentials cannot be stored or
    /// opened.
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secret_key = Some(std::sync::Arc::new(key));
        self
    }

    pub(crate) fn secret_key(&self) -> Option<&SecretKey> {
        self.secret_key.as_deref()
    }

    /// Applies `migrations/sqlite/` (idempotent).
    #[tracing::instrument(skip_all)]
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../migrations/sqlite")
            .run(&self.writer)
            .await?;
        tracing::info!("schema migrated");
        Ok(())
    }

    /// Closes every connection (checkpointing the WAL into the file).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.reader
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn create_tenant(&self, name: &TenantName, key: &NewApiKey) -> Result<Tenant> {
        tenants::create(self, name, key).await
    }

    async fn tenant_for_key(&self, key_hash: &[u8; 32]) -> Result<Option<TenantId>> {
        tenants::for_key(self, key_hash).await
    }

    async fn create_job(&self, tenant: TenantId, id: JobId, spec: &JobSpec) -> Result<Job> {
        jobs::create(self, tenant, id, spec).await
    }

    async fn get_job(&self, tenant: TenantId, id: JobId) -> Result<Job> {
        jobs::get(self, tenant, id).await
    }

    async fn list_jobs(&self, tenant: TenantId, page: PageRequest) -> Result<Page<Job>> {
        jobs::list(self, tenant, page).await
    }

    async fn update_job(
        &self,
        tenant: TenantId,
        id: JobId,
        spec: &JobSpec,
        expected_version: i64,
    ) -> Result<Job> {
        jobs::update(self, tenant, id, spec, expected_version).await
    }

    async fn delete_job(&self, tenant: TenantId, id: JobId) -> Result<()> {
        jobs::delete(self, tenant, id).await
    }

    async fn create_registry_credential(
        &self,
        tenant: TenantId,
        spec: &kairos_domain::CredentialSpec,
    ) -> Result<RegistryCredential> {
        credentials::create(self, tenant, spec).await
    }

    async fn list_registry_credentials(&self, tenant: TenantId) -> Result<Vec<RegistryCredential>> {
        credentials::list(self, tenant).await
    }

    async fn delete_registry_credential(
        &self,
        tenant: TenantId,
        name: &kairos_domain::CredentialName,
    ) -> Result<()> {
        credentials::delete(self, tenant, name).await
    }

    async fn create_schedule(&self, tenant: TenantId, new: &NewSchedule) -> Result<Schedule> {
        schedules::create(self, tenant, new).await
    }

    async fn get_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Schedule> {
        schedules::get(self, tenant, id).await
    }

    async fn list_schedules(
        &self,
        tenant: TenantId,
        job: Option<JobId>,
        page: PageRequest,
    ) -> Result<Page<Schedule>> {
        schedules::list(self, tenant, job, page).await
    }

    async fn update_schedule(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        change: &ScheduleChange,
        expected_version: i64,
    ) -> Result<Schedule> {
        schedules::update(self, tenant, id, change, expected_version).await
    }

    async fn delete_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<()> {
        schedules::delete(self, tenant, id).await
    }

    async fn create_run(
        &self,
        tenant: TenantId,
        new: &NewRun,
        idempotency_key: Option<&str>,
    ) -> Result<(Run, bool)> {
        runs::create(self, tenant, new, idempotency_key).await
    }

    async fn create_backfill_runs(
        &self,
        tenant: TenantId,
        schedule: &Schedule,
        fire_times: &[DateTime<Utc>],
        dry_run: bool,
    ) -> Result<Backfill> {
        runs::create_backfill(self, tenant, schedule, fire_times, dry_run).await
    }

    async fn get_run(&self, tenant: TenantId, id: RunId) -> Result<Run> {
        runs::get(self, tenant, id).await
    }

    async fn list_runs(
        &self,
        tenant: TenantId,
        filter: &RunFilter,
        page: PageRequest,
    ) -> Result<Page<Run>> {
        runs::list(self, tenant, filter, page).await
    }

    async fn cancel_run(&self, tenant: TenantId, id: RunId) -> Result<Run> {
        runs::cancel(self, tenant, id).await
    }

    async fn run_logs(&self, tenant: TenantId, id: RunId) -> Result<RunLogs> {
        runs::logs(self, tenant, id).await
    }

    async fn run_events(&self, tenant: TenantId, id: RunId) -> Result<Vec<RunEvent>> {
        events::list(self, tenant, id).await
    }

    async fn maintain_partitions(
        &self,
        now: DateTime<Utc>,
        retention_days: u32,
    ) -> Result<PartitionReport> {
        retention::maintain(self, now, retention_days).await
    }
}

#[async_trait]
impl SchedulerStore for SqliteStore {
    async fn claim_shard(&self, shard: ShardId, token: i64, owner: &str) -> Result<ShardLease> {
        fencing::claim(self, shard, token, owner).await
    }

    async fn highest_fence_token(&self) -> Result<i64> {
        fencing::highest_token(self).await
    }

    async fn due_schedules(
        &self,
        lease: &ShardLease,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueSchedule>> {
        planning::due_schedules(self, lease, until, limit).await
    }

    async fn materialize(
        &self,
        lease: &ShardLease,
        fires: &[Materialize],
    ) -> Result<Vec<MaterializedRun>> {
        planning::materialize(self, lease, fires).await
    }

    async fn materialize_across(
        &self,
        batches: &[(ShardLease, Vec<Materialize>)],
    ) -> Result<MaterializedAcross> {
        planning::materialize_across(self, batches).await
    }

    async fn shard_pending_runs(&self, lease: &ShardLease) -> Result<Vec<PendingRun>> {
        dispatch::shard_pending_runs(self, lease).await
    }

    async fn queue_runs(&self, lease: &ShardLease, run_ids: &[RunId]) -> Result<Vec<RunId>> {
        dispatch::queue_runs(self, lease, run_ids).await
    }

    async fn skip_runs(
        &self,
        lease: &ShardLease,
        run_ids: &[RunId],
        reason: SkipReason,
    ) -> Result<EndedRuns> {
        dispatch::skip_runs(self, lease, run_ids, reason).await
    }

    async fn ack_run(
        &self,
        lease: &ShardLease,
        run_id: RunId,
        worker_id: &str,
    ) -> Result<Option<Assignment>> {
        dispatch::ack_run(self, lease, run_id, worker_id).await
    }

    async fn finish_run(
        &self,
        lease: &ShardLease,
        run_id: RunId,
        outcome: &RunOutcome,
    ) -> Result<FinishedRun> {
        dispatch::finish_run(self, lease, run_id, outcome).await
    }

    async fn fail_lost_runs(&self, lease: &ShardLease, run_ids: &[RunId]) -> Result<EndedRuns> {
        dispatch::fail_lost_runs(self, lease, run_ids).await
    }

    async fn queued_runs(&self, lease: &ShardLease, limit: u32) -> Result<Vec<PendingRun>> {
        dispatch::queued_runs(self, lease, limit).await
    }

    async fn due_schedules_across(
        &self,
        shards: &[ShardId],
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(ShardId, DueSchedule)>> {
        planning::due_schedules_across(self, shards, until, limit).await
    }

    async fn queued_runs_across(
        &self,
        shards: &[ShardId],
        limit: u32,
    ) -> Result<Vec<(ShardId, RunId, DateTime<Utc>)>> {
        planning::queued_runs_across(self, shards, limit).await
    }

    async fn cancel_requested_across(
        &self,
        shards: &[ShardId],
        limit: u32,
    ) -> Result<Vec<(ShardId, RunId, DateTime<Utc>)>> {
        planning::cancel_requested_across(self, shards, limit).await
    }

    async fn record_live_logs(&self, logs: &[LiveLog]) -> Result<Vec<ShardId>> {
        firing::record_live_logs(self, logs).await
    }

    async fn run_offers(&self, lease: &ShardLease, run_ids: &[RunId]) -> Result<Vec<Offer>> {
        offers::run_offers(self, lease, run_ids).await
    }

    async fn fire_runs(&self, due: &[DueRun]) -> Result<FiredRuns> {
        firing::fire_runs(self, due).await
    }

    async fn ack_runs(&self, acks: &[RunAck]) -> Result<AckedRuns> {
        firing::ack_runs(self, acks).await
    }

    async fn finish_runs(&self, reports: &[RunReport]) -> Result<FinishedRuns> {
        firing::finish_runs(self, reports).await
    }

    async fn due_retries_across(
        &self,
        shards: &[ShardId],
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueRetry>> {
        planning::due_retries_across(self, shards, until, limit).await
    }

    async fn schedules_of_shard(
        &self,
        lease: &ShardLease,
        ids: &[ScheduleId],
    ) -> Result<Vec<Schedule>> {
        planning::schedules_of_shard(self, lease, ids).await
    }

    async fn offers_across(&self, runs: &[LeasedRun], upcoming: bool) -> Result<Vec<Offer>> {
        offers::offers_across(self, runs, upcoming).await
    }

    async fn follow_changes(
        &self,
        changes: tokio::sync::mpsc::Sender<ShardChange>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        changes::follow(self, changes, stop).await
    }
}
