//! The Postgres `Store` and `SchedulerStore`: a connection pool, migrations, and the trait
//! impls that delegate to one module per aggregate; it must never hold SQL of its own beyond
//! wiring.

mod credentials;
mod dispatch;
mod events;
mod fencing;
mod firing;
mod jobs;
mod listen;
mod logs;
mod offers;
mod overlap;
mod partitions;
mod planning;
mod retries;
mod runs;
mod schedules;
mod tenants;
mod tx;

/// The row types and conversions shared with the other SQL backend.
use crate::rows;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kairos_domain::{
    JobId, JobSpec, PageRequest, RunId, ScheduleId, ShardId, SkipReason, TenantId, TenantName,
};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::{
    AckedRuns, Assignment, Backfill, DueRetry, DueRun, DueSchedule, EndedRuns, FinishedRun,
    FinishedRuns, FiredRuns, Job, LeasedRun, LiveLog, Materialize, MaterializedAcross,
    MaterializedRun, NewApiKey, NewRun, NewSchedule, Offer, Page, PartitionReport, PendingRun,
    RegistryCredential, Result, Run, RunAck, RunEvent, RunFilter, RunLogs, RunOutcome, RunReport,
    Schedule, ScheduleChange, SchedulerStore, SecretKey, ShardChange, ShardLease, Store, Tenant,
};

pub use partitions::DEFAULT_RETENTION_DAYS;

/// Connections a pool opens at most unless told otherwise.
pub const DEFAULT_POOL_SIZE: u32 = 16;
/// How long a caller waits for a free connection before the call fails as `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Postgres-backed storage. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Seals and opens registry passwords; `None`: the server keeps no credentials.
    secret_key: Option<std::sync::Arc<SecretKey>>,
}

impl PgStore {
    /// Opens a pool of at most [`DEFAULT_POOL_SIZE`] connections to `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_pool_size(url, DEFAULT_POOL_SIZE).await
    }

    /// Opens a pool of at most `max_connections` connections to `url`.
    pub async fn connect_with_pool_size(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            secret_key: None,
        }
    }

    /// Seals registry passwords under `key` (`KAIROS_SECRET_KEY`); without one, credentials
    /// cannot be stored or opened.
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secret_key = Some(std::sync::Arc::new(key));
        self
    }

    pub(crate) fn secret_key(&self) -> Option<&SecretKey> {
        self.secret_key.as_deref()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies `migrations/` (under sqlx's advisory lock, so concurrent starts are safe), then
    /// creates the run partitions around now with the default retention.
    #[tracing::instrument(skip_all)]
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../migrations").run(&self.pool).await?;
        let report = partitions::maintain(self, Utc::now(), DEFAULT_RETENTION_DAYS).await?;
        tracing::info!(
            created = report.created.len(),
            dropped = report.dropped.len(),
            "schema migrated"
        );
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_tenant(&self, name: &TenantName, key: &NewApiKey) -> Result<Tenant> {
        tenants::create(self, name, key).await
    }

    async fn tenant_for_key(&self, key_hash: &[u8; 32]) -> Result<Option<TenantId>> {
        tenants::for_key(&self.pool, key_hash).await
    }

    async fn create_job(&self, tenant: TenantId, id: JobId, spec: &JobSpec) -> Result<Job> {
        jobs::create(&self.pool, tenant, id, spec).await
    }

    async fn get_job(&self, tenant: TenantId, id: JobId) -> Result<Job> {
        jobs::get(&self.pool, tenant, id).await
    }

    async fn list_jobs(&self, tenant: TenantId, page: PageRequest) -> Result<Page<Job>> {
        jobs::list(&self.pool, tenant, page).await
    }

    async fn update_job(
        &self,
        tenant: TenantId,
        id: JobId,
        spec: &JobSpec,
        expected_version: i64,
    ) -> Result<Job> {
        jobs::update(&self.pool, tenant, id, spec, expected_version).await
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
        credentials::list(&self.pool, tenant).await
    }

    async fn delete_registry_credential(
        &self,
        tenant: TenantId,
        name: &kairos_domain::CredentialName,
    ) -> Result<()> {
        credentials::delete(&self.pool, tenant, name).await
    }

    async fn create_schedule(&self, tenant: TenantId, new: &NewSchedule) -> Result<Schedule> {
        schedules::create(self, tenant, new).await
    }

    async fn get_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Schedule> {
        schedules::get(&self.pool, tenant, id).await
    }

    async fn list_schedules(
        &self,
        tenant: TenantId,
        job: Option<JobId>,
        page: PageRequest,
    ) -> Result<Page<Schedule>> {
        schedules::list(&self.pool, tenant, job, page).await
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
        runs::get(&self.pool, tenant, id).await
    }

    async fn list_runs(
        &self,
        tenant: TenantId,
        filter: &RunFilter,
        page: PageRequest,
    ) -> Result<Page<Run>> {
        runs::list(&self.pool, tenant, filter, page).await
    }

    async fn cancel_run(&self, tenant: TenantId, id: RunId) -> Result<Run> {
        runs::cancel(self, tenant, id).await
    }

    async fn run_logs(&self, tenant: TenantId, id: RunId) -> Result<RunLogs> {
        runs::logs(&self.pool, tenant, id).await
    }

    async fn run_events(&self, tenant: TenantId, id: RunId) -> Result<Vec<RunEvent>> {
        events::list(&self.pool, tenant, id).await
    }

    async fn maintain_partitions(
        &self,
        now: DateTime<Utc>,
        retention_days: u32,
    ) -> Result<PartitionReport> {
        partitions::maintain(self, now, retention_days).await
    }
}

#[async_trait]
impl SchedulerStore for PgStore {
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

    async fn run_offers(&self, lease: &ShardLease, run_ids: &[RunId]) -> Result<Vec<Offer>> {
        offers::run_offers(self, lease, run_ids).await
    }

    async fn record_live_logs(&self, logs: &[LiveLog]) -> Result<Vec<ShardId>> {
        logs::record_live_logs(self, logs).await
    }

    async fn offers_across(&self, runs: &[LeasedRun], upcoming: bool) -> Result<Vec<Offer>> {
        offers::offers_across(self, runs, upcoming).await
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

    async fn follow_changes(
        &self,
        changes: tokio::sync::mpsc::Sender<ShardChange>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        listen::follow_changes(self, changes, stop).await
    }

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
}
