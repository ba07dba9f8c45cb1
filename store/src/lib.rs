//! Storage of tenants, jobs, schedules, runs and their events behind the `Store` trait (the API)
//! and the `SchedulerStore` trait (the scheduler), each implemented for Postgres (`PgStore`, the
//! cluster) and SQLite (`SqliteStore`, standalone mode), both held to one conformance suite.
//!
//! This is the one crate that speaks SQL. It depends on `kairos-domain` only, takes and returns
//! checked domain types, scopes every tenant-owned read and write by `TenantId` (another
//! tenant's row is indistinguishable from a missing one, I6), and writes each operation in
//! one transaction, so a failed call leaves nothing behind (I7).

pub mod error;
pub mod model;
pub mod postgres;
mod rows;
pub mod scheduling;
pub mod seal;
pub mod sqlite;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod conformance_scheduling;
#[cfg(feature = "conformance")]
pub mod conformance_semantics;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kairos_domain::{JobId, JobSpec, PageRequest, RunId, ScheduleId, TenantId, TenantName};

pub use error::StoreError;
pub use model::*;
pub use postgres::PgStore;
pub use scheduling::*;
pub use seal::{BadSecretKey, SecretKey};
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Channel on which a committed change to a schedule is announced; the payload is the shard.
/// Postgres delivers NOTIFY only on commit and folds identical ones within a transaction.
pub const SCHEDULE_CHANGES_CHANNEL: &str = "kairos_schedule_changes";
/// Channel on which a committed `queued` run is announced; payload: the shard, then (execute
/// now, trigger) the run id and its fire time in microseconds.
pub const RUNS_QUEUED_CHANNEL: &str = "kairos_runs_queued";
/// Channel on which a cancel request for a running run is announced; payload: the shard, the
/// run id and its fire time in microseconds. The shard's owner tells the run's worker to stop.
pub const RUNS_CANCEL_CHANNEL: &str = "kairos_runs_cancel";

/// Everything the API needs from storage. Implementations: [`PgStore`] and [`SqliteStore`]
/// (standalone mode). The conformance suite in [`conformance`] runs against each of them.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Cheap round trip for readiness probes.
    async fn ping(&self) -> Result<()>;

    // --- tenants and API keys -------------------------------------------------------------

    /// Creates a tenant and its first API key (only the key's hash is stored).
    async fn create_tenant(&self, name: &TenantName, key: &NewApiKey) -> Result<Tenant>;
    /// The tenant owning the (unrevoked) key with this SHA-256 hash.
    async fn tenant_for_key(&self, key_hash: &[u8; 32]) -> Result<Option<TenantId>>;

    // --- jobs -----------------------------------------------------------------------------

    async fn create_job(&self, tenant: TenantId, id: JobId, spec: &JobSpec) -> Result<Job>;
    /// `NotFound` for a missing, deleted or other tenant's job.
    async fn get_job(&self, tenant: TenantId, id: JobId) -> Result<Job>;
    /// Newest-last order (by id, which is time-ordered).
    async fn list_jobs(&self, tenant: TenantId, page: PageRequest) -> Result<Page<Job>>;
    /// Replaces the spec if the stored version is still `expected_version` (else `Conflict`);
    /// bumps the version.
    async fn update_job(
        &self,
        tenant: TenantId,
        id: JobId,
        spec: &JobSpec,
        expected_version: i64,
    ) -> Result<Job>;
    /// Deletes the job and its schedules and cancels their not-yet-started runs (reason
    /// `job_deleted`), in one transaction. Run history stays readable.
    async fn delete_job(&self, tenant: TenantId, id: JobId) -> Result<()>;

    // --- registry credentials -------------------------------------------------------------

    /// Stores a registry credential, its password sealed; `Conflict` if the tenant has one of
    /// that name, `FailedPrecondition` if this store has no key to seal with.
    async fn create_registry_credential(
        &self,
        tenant: TenantId,
        spec: &kairos_domain::CredentialSpec,
    ) -> Result<RegistryCredential>;
    /// The tenant's registry credentials by name, without passwords.
    async fn list_registry_credentials(&self, tenant: TenantId) -> Result<Vec<RegistryCredential>>;
    /// Deletes one; `FailedPrecondition` while a job still names it.
    async fn delete_registry_credential(
        &self,
        tenant: TenantId,
        name: &kairos_domain::CredentialName,
    ) -> Result<()>;

    // --- schedules ------------------------------------------------------------------------

    /// `NotFound` if the job is missing or another tenant's. A schedule created paused has
    /// `paused_at` set to its creation; its fire count starts at 0.
    async fn create_schedule(&self, tenant: TenantId, new: &NewSchedule) -> Result<Schedule>;
    async fn get_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Schedule>;
    /// All of the tenant's schedules, or those of one job (`NotFound` if that job is not theirs).
    async fn list_schedules(
        &self,
        tenant: TenantId,
        job: Option<JobId>,
        page: PageRequest,
    ) -> Result<Page<Schedule>>;
    /// Applies an edit, pause or resume: if the stored version is `expected_version`, writes
    /// the change with version + 1 and, in the same transaction, cancels the schedule's
    /// `scheduled`/`queued` runs of older versions with `change.cancel_reason` (I4).
    ///
    /// In the same transaction: the fires it cancelled while still `scheduled` (planned, not
    /// yet fired) are taken off the fire count; `paused_at` becomes `change.at` when the
    /// schedule goes from running to paused, stays while it stays paused, and is cleared when
    /// it resumes; `next_fire_at` is computed from `change.next_fire` with the new spec's
    /// timeline (`ScheduleSpec::timeline(id, fire count)`, so jitter and `max_runs` apply), or
    /// kept for `NextFire::Keep`, and is `None` when the count has reached `max_runs`;
    /// `last_fire_at` becomes the latest fire (trigger `schedule`) not cancelled.
    /// `Conflict` if the version moved, `NotFound` if the schedule is not the tenant's.
    async fn update_schedule(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        change: &ScheduleChange,
        expected_version: i64,
    ) -> Result<Schedule>;
    /// Deletes the schedule and cancels its not-yet-started runs (reason `schedule_deleted`).
    async fn delete_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<()>;

    // --- runs -----------------------------------------------------------------------------

    /// Inserts one run with its first event. With an idempotency key, a second call with the
    /// same key for the same job returns the first run and `false`.
    ///
    /// A run of a schedule with `new.overlap` set (a manual trigger, `queued`) is decided by
    /// `kairos_domain::overlap::decide` against the schedule's runs in progress (running,
    /// queued, held, and retries waiting for their backoff), read under a lock that every
    /// other overlap decision, release and end of a run of the schedule also takes, so two
    /// decisions never both see the schedule idle. By the decision the run is inserted
    /// `queued`, `skipped` (reason `overlap`, finished), or `queued` held (`blocked_by` set,
    /// creation event reason `overlap_held`); for `replace`, in the same transaction, the
    /// schedule's not-started runs are cancelled (reason `replaced`) and its running runs get
    /// `cancel_requested` (their end is recorded `cancelled`, reason `replaced`) and are
    /// announced on [`RUNS_CANCEL_CHANNEL`].
    async fn create_run(
        &self,
        tenant: TenantId,
        new: &NewRun,
        idempotency_key: Option<&str>,
    ) -> Result<(Run, bool)>;
    /// Inserts one `queued` run (trigger `backfill`, attempt 1, the schedule's current version)
    /// per fire time of a schedule, in one transaction, under the schedule's overlap lock (so
    /// concurrent backfills of a schedule never create a fire twice). A fire time that already
    /// has a run that succeeded or is in progress (`scheduled`, `queued`, `running`), of any
    /// trigger or version, is left alone and listed; one whose runs all failed, were skipped or
    /// cancelled gets a new run. Backfill runs are not subject to the overlap policy. With
    /// `dry_run`, nothing is written and `created` is empty. `Conflict` if the schedule's
    /// version is no longer `schedule.version`.
    async fn create_backfill_runs(
        &self,
        tenant: TenantId,
        schedule: &Schedule,
        fire_times: &[DateTime<Utc>],
        dry_run: bool,
    ) -> Result<Backfill>;
    async fn get_run(&self, tenant: TenantId, id: RunId) -> Result<Run>;
    async fn list_runs(
        &self,
        tenant: TenantId,
        filter: &RunFilter,
        page: PageRequest,
    ) -> Result<Page<Run>>;
    /// `scheduled`/`queued` → `cancelled` at once; `running` → `cancel_requested` (the worker
    /// kills it and reports `cancelled`); terminal → `FailedPrecondition`. Cancelling a
    /// schedule's not-started run releases the schedule's oldest held fire if nothing else of
    /// the schedule is in progress (as the end of a run does; see
    /// `SchedulerStore::finish_runs`), announcing it on [`RUNS_QUEUED_CHANNEL`].
    async fn cancel_run(&self, tenant: TenantId, id: RunId) -> Result<Run>;
    async fn run_logs(&self, tenant: TenantId, id: RunId) -> Result<RunLogs>;
    /// Every transition of the run, oldest first.
    async fn run_events(&self, tenant: TenantId, id: RunId) -> Result<Vec<RunEvent>>;

    // --- maintenance ----------------------------------------------------------------------

    /// Keeps run history from the first day (UTC) of the month holding `now - retention_days`:
    /// the runs fired before it go, with their events and idempotency keys, and runs fired
    /// from then on stay (and can be written). Postgres does this with monthly partitions of
    /// `runs` and `run_events`: it creates them from that month to 13 months after `now` and
    /// drops those wholly older, naming both in the report; SQLite deletes the rows and reports
    /// nothing.
    async fn maintain_partitions(
        &self,
        now: DateTime<Utc>,
        retention_days: u32,
    ) -> Result<PartitionReport>;
}
