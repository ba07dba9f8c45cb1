//! Rows as the rest of Kairos sees them: checked domain types plus storage bookkeeping
//! (versions, timestamps). Nothing here knows SQL.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kairos_domain::{
    ApiKeyId, Env, JobId, JobSpec, OverlapPolicy, RunId, RunState, ScheduleId, ScheduleSpec,
    ShardId, TenantId, TenantName, Trigger,
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
    /// The tenant's quota of live schedules (those not completed: a fire left, or the last
    /// one still ahead; paused ones count), checked in the create's transaction and
    /// serialized per tenant: at the quota the create fails with
    /// [`StoreError::LimitReached`](crate::StoreError::LimitReached) and writes nothing.
    /// `None`: no quota.
    pub live_limit: Option<u32>,
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
    /// When it was paused (`None` while it is not).
    pub paused_at: Option<DateTime<Utc>>,
    pub version: i64,
    /// The next fire the scheduler will plan; `None` once no fire is left.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Fires the planner recorded (run or skipped), which `max_runs` counts.
    pub fire_count: u64,
    /// The latest fire the planner recorded.
    pub last_fire_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Schedule {
    /// The schedule's fires from now on (jitter offset, bounds, and the run limit left).
    pub fn timeline(&self) -> kairos_domain::Timeline<'_> {
        self.spec.timeline(self.id, self.fire_count)
    }
}

/// The new state of a schedule after an edit, pause or resume.
#[derive(Debug, Clone)]
pub struct ScheduleChange {
    pub spec: ScheduleSpec,
    pub paused: bool,
    pub pause_note: Option<String>,
    /// Where the schedule's next fire is computed from (by the store, under the row lock, with
    /// the fire count this change leaves).
    pub next_fire: NextFire,
    /// Reason recorded on the old version's not-yet-started runs that this change cancels.
    pub cancel_reason: &'static str,
    /// When the change is made (the API's clock): a pause records it as `paused_at`.
    pub at: DateTime<Utc>,
    /// The tenant's quota of live schedules (see [`NewSchedule::live_limit`]): a change that
    /// gives a schedule with no fire left a next fire (an edit reviving a completed one-off)
    /// fails with [`StoreError::LimitReached`](crate::StoreError::LimitReached) when the
    /// tenant's other live schedules fill the quota, and writes nothing. `None`: no quota.
    pub live_limit: Option<u32>,
}

/// Where a change puts a schedule's `next_fire_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextFire {
    /// Its first fire strictly after this instant (an edit, a plain resume: now). Fires
    /// before it are never planned: a change does not fire a run for a time that passed.
    After(DateTime<Utc>),
    /// Its first fire strictly after it was paused (a resume asking for catch-up: the fires
    /// missed while paused are planned, and the catch-up rule decides which run late); the
    /// same as `After(otherwise)` if it was not paused.
    SincePause { otherwise: DateTime<Utc> },
    /// Unchanged (a pause).
    Keep,
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
    /// For a run of a schedule (a manual trigger): the overlap policy to apply against the
    /// schedule's runs in progress, under the same rule as a scheduled fire
    /// (`kairos_domain::overlap::decide`). `None`: no overlap check (execute now).
    pub overlap: Option<OverlapPolicy>,
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
    /// When the run is due to start: its fire time, or a retry's backoff time.
    pub due_at: DateTime<Utc>,
    pub state: RunState,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    /// A queued fire held by the overlap policy: the run it waited for when it was held. It
    /// starts once the schedule's other runs have ended.
    pub blocked_by: Option<RunId>,
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

/// What a backfill did (or, for a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct Backfill {
    /// The runs created (none on a dry run), by fire time.
    pub created: Vec<Run>,
    /// Fire times left alone: the fire already has a run that succeeded or is in progress.
    pub left_alone: Vec<DateTime<Utc>>,
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
