//! Rows as the rest of Kairos sees them: checked domain types plus storage bookkeeping
//! (versions, timestamps). Nothing here knows SQL.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kairos_domain::{
    ApiKeyId, Env, JobId, JobSpec, RunId, RunState, ScheduleId, ScheduleSpec, ShardId, TenantId,
    TenantName, Trigger,
};

/// One page of a list plus the token of the next one (`None` on the last page).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    pub created_at: DateTime<Utc>,
}

/// A new API key as stored: its id, the SHA-256 of the secret, and a short display prefix.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub hash: [u8; 32],
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub spec: JobSpec,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub id: ScheduleId,
    pub job_id: JobId,
    pub spec: ScheduleSpec,
    pub paused: bool,
    pub pause_note: Option<String>,
    /// The first fire the scheduler should plan (`None`: nothing left to fire).
    pub next_fire_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: ScheduleId,
    pub tenant_id: TenantId,
    pub job_id: JobId,
    pub shard: ShardId,
    pub spec: ScheduleSpec,
    pub paused: bool,
    pub pause_note: Option<String>,
    pub version: i64,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The new state of a schedule after an edit, pause or resume.
#[derive(Debug, Clone)]
pub struct ScheduleChange {
    pub spec: ScheduleSpec,
    pub paused: bool,
    pub pause_note: Option<String>,
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Reason recorded on the old version's not-yet-started runs that this change cancels.
    pub cancel_reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: RunId,
    pub job_id: JobId,
    /// The schedule and the version it was computed from, for scheduled, triggered and
    /// backfilled runs.
    pub schedule: Option<(ScheduleId, i64)>,
    pub shard: ShardId,
    pub trigger: Trigger,
    pub attempt: u32,
    pub retry_of: Option<RunId>,
    pub fire_time: DateTime<Utc>,
    /// `queued` (execute now, trigger) or `scheduled` (materialized ahead of its fire).
    pub state: RunState,
    /// Per-run env overrides on top of the job's env (values may be secrets).
    pub env: Env,
}

#[derive(Debug, Clone)]
pub struct Run {
    pub id: RunId,
    pub tenant_id: TenantId,
    pub job_id: JobId,
    pub schedule_id: Option<ScheduleId>,
    pub schedule_version: Option<i64>,
    pub shard: ShardId,
    pub trigger: Trigger,
    pub attempt: u32,
    pub retry_of: Option<RunId>,
    pub fire_time: DateTime<Utc>,
    pub state: RunState,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    pub env: Env,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Filters of `GET /v1/runs`; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub job_id: Option<JobId>,
    pub schedule_id: Option<ScheduleId>,
    pub state: Option<RunState>,
}

/// One state transition (I3). `from` is `None` for the run's creation.
#[derive(Debug, Clone)]
pub struct RunEvent {
    pub id: i64,
    pub run_id: RunId,
    pub from: Option<RunState>,
    pub to: RunState,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// The stored, size-capped tail of a run's output.
#[derive(Debug, Clone)]
pub struct RunLogs {
    pub run_id: RunId,
    /// The end of the output, at most [`crate::LOG_TAIL_MAX_BYTES`].
    pub content: String,
    /// True when older output was dropped (the content does not start at byte 0).
    pub truncated: bool,
    /// Bytes of output written in all so far (while the run runs, as of its last live tail).
    /// The content is the last `content.len()` of them.
    pub total_bytes: u64,
    /// The run's state: a follower stops once it is terminal.
    pub state: RunState,
}

/// What a partition maintenance pass did (partition table names).
#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
}

/// Labels and env maps travel as JSON objects in storage.
pub type StringMap = BTreeMap<String, String>;

/// A tenant's registry credential as the API shows it: never its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    pub name: kairos_domain::CredentialName,
    pub server: kairos_domain::RegistryHost,
    pub username: String,
    pub created_at: DateTime<Utc>,
}
