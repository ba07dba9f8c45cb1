//! The JSON shapes of the public REST contract (v1): request bodies (strict: unknown fields
//! are refused) and responses, with their OpenAPI schemas.
//!
//! Field names here are the contract; they must never drift from DESIGN.md. These types do not
//! validate: they hand unchecked values to the domain drafts, which do.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kairos_domain::{Cadence, JobDraft, RetryDraft, ScheduleDraft};
use kairos_store::{Job, Page, Run, RunEvent, Tenant};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::{BackfillOutcome, LogsView, ScheduleView};

// --- requests ----------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Attempts in all, including the first (1-100; default 1).
    pub max_attempts: Option<i64>,
    /// Backoff before the second attempt (default 10).
    pub initial_backoff_seconds: Option<i64>,
    /// Cap of the exponential backoff (default 300).
    pub max_backoff_seconds: Option<i64>,
}

/// `POST /v1/jobs` and `PATCH /v1/jobs/{job_id}` (on PATCH every field is optional and only
/// the fields present change).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobBody {
    pub name: Option<String>,
    /// Image reference, e.g. `registry.example.com/team/app:1.2`.
    pub image: Option<String>,
    /// Argv; empty or absent runs the image's default command.
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    /// Memory cap in MiB, 16-1024 (default 256). Swap is never allowed.
    pub memory_mb: Option<i64>,
    /// Wall-clock limit, 1-86400 (default 3600).
    pub timeout_seconds: Option<i64>,
    pub retry: Option<RetryBody>,
    pub labels: Option<BTreeMap<String, String>>,
    /// Name of the tenant's registry credential for a private image (`""` on PATCH removes it).
    pub registry_credential: Option<String>,
}

impl From<JobBody> for JobDraft {
    fn from(b: JobBody) -> Self {
        JobDraft {
            name: b.name,
            image: b.image,
            command: b.command,
            env: b.env,
            memory_mb: b.memory_mb,
            timeout_seconds: b.timeout_seconds,
            retry: b.retry.map(|r| RetryDraft {
                max_attempts: r.max_attempts,
                initial_backoff_seconds: r.initial_backoff_seconds,
                max_backoff_seconds: r.max_backoff_seconds,
            }),
            labels: b.labels,
            registry_credential: b.registry_credential,
        }
    }
}

/// `POST /v1/registry-credentials`.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    /// How jobs refer to it: 1-63 of a-z, 0-9, '-', '_', '.'.
    pub name: Option<String>,
    /// Registry host[:port], as image references name it (e.g. `ghcr.io`, `127.0.0.1:5000`).
    pub server: Option<String>,
    pub username: Option<String>,
    /// Stored sealed; never returned.
    pub password: Option<String>,
}

impl std::fmt::Debug for CredentialBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialBody")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl From<CredentialBody> for kairos_domain::CredentialDraft {
    fn from(b: CredentialBody) -> Self {
        Self {
            name: b.name,
            server: b.server,
            username: b.username,
            password: b.password,
        }
    }
}

/// `POST /v1/jobs/{job_id}/schedules` and `PATCH /v1/schedules/{schedule_id}`: exactly one of
/// `cron`, `interval_seconds`, `at` on create.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// 5 fields, 6 fields (leading seconds) or a macro such as `@hourly`.
    pub cron: Option<String>,
    pub interval_seconds: Option<i64>,
    /// One-off fire time (RFC 3339).
    pub at: Option<String>,
    /// IANA time zone (default `UTC`).
    pub timezone: Option<String>,
    pub start_at: Option<String>,
    pub end_at: Option<String>,
    /// `allow`, `skip` (default), `buffer_one` or `replace`.
    pub overlap_policy: Option<String>,
    pub catchup_window_seconds: Option<i64>,
    pub jitter_seconds: Option<i64>,
    pub paused: Option<bool>,
}

impl ScheduleBody {
    pub fn into_parts(self) -> (ScheduleDraft, Option<bool>) {
        let draft = ScheduleDraft {
            cron: self.cron,
            interval_seconds: self.interval_seconds,
            at: self.at,
            timezone: self.timezone,
            start_at: self.start_at,
            end_at: self.end_at,
            overlap_policy: self.overlap_policy,
            catchup_window_seconds: self.catchup_window_seconds,
            jitter_seconds: self.jitter_seconds,
        };
        (draft, self.paused)
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Why it is paused, shown on the schedule.
    pub note: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    pub from: Option<String>,
    pub to: Option<String>,
    /// List the fire times without creating runs.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/jobs/{job_id}/runs` (execute now).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    /// A repeat with the same key returns the first run (200) instead of a new one.
    pub idempotency_key: Option<String>,
    /// Env overrides for this run only.
    pub env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleListQuery {
    pub job_id: Option<String>,
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunListQuery {
    pub job_id: Option<String>,
    pub schedule_id: Option<String>,
    pub state: Option<String>,
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
}

// --- responses ---------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.as_str().to_owned(),
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreateTenantResponse {
    pub tenant: TenantView,
    /// Shown only here: store it now.
    pub api_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetryView {
    pub max_attempts: u32,
    pub initial_backoff_seconds: u32,
    pub max_backoff_seconds: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub memory_mb: u32,
    pub timeout_seconds: u32,
    pub retry: RetryView,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_credential: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A registry credential as shown: never its password.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    pub name: String,
    pub server: String,
    pub username: String,
    pub created_at: DateTime<Utc>,
}

impl From<&kairos_store::RegistryCredential> for CredentialView {
    fn from(c: &kairos_store::RegistryCredential) -> Self {
        Self {
            name: c.name.as_str().to_owned(),
            server: c.server.as_str().to_owned(),
            username: c.username.clone(),
            created_at: c.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialList {
    pub registry_credentials: Vec<CredentialView>,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        let s = &j.spec;
        Self {
            id: j.id.to_string(),
            name: s.name.as_str().to_owned(),
            image: s.image.as_str().to_owned(),
            command: s.command.args().to_vec(),
            env: s.env.vars().clone(),
            memory_mb: s.memory.mb(),
            timeout_seconds: s.timeout.seconds(),
            retry: RetryView {
                max_attempts: s.retry.max_attempts(),
                initial_backoff_seconds: s.retry.initial_backoff_seconds(),
                max_backoff_seconds: s.retry.max_backoff_seconds(),
            },
            labels: s.labels.as_map().clone(),
            registry_credential: s
                .registry_credential
                .as_ref()
                .map(|c| c.as_str().to_owned()),
            version: j.version,
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleResponse {
    pub id: String,
    pub job_id: String,
    pub cron: Option<String>,
    pub interval_seconds: Option<u32>,
    pub at: Option<DateTime<Utc>>,
    pub timezone: String,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub overlap_policy: String,
    pub catchup_window_seconds: u32,
    pub jitter_seconds: u32,
    pub paused: bool,
    pub pause_note: Option<String>,
    pub version: i64,
    pub shard: u16,
    /// The next fire the scheduler will plan (absent once a schedule has no fire left).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The next 5 fires in UTC (empty while paused).
    pub next_fire_times: Vec<DateTime<Utc>>,
    /// The same fires in the schedule's local time, with their UTC offsets.
    pub next_fire_times_local: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&ScheduleView> for ScheduleResponse {
    fn from(v: &ScheduleView) -> Self {
        let s = &v.schedule;
        let (cron, interval_seconds, at) = match &s.spec.cadence {
            Cadence::Cron(c) => (Some(c.pattern().to_owned()), None, None),
            Cadence::Interval { seconds, .. } => (None, Some(*seconds), None),
            Cadence::At(t) => (None, None, Some(*t)),
        };
        Self {
            id: s.id.to_string(),
            job_id: s.job_id.to_string(),
            cron,
            interval_seconds,
            at,
            timezone: s.spec.timezone.name().to_owned(),
            start_at: s.spec.start_at,
            end_at: s.spec.end_at,
            overlap_policy: s.spec.overlap_policy.as_str().to_owned(),
            catchup_window_seconds: s.spec.catchup_window_seconds,
            jitter_seconds: s.spec.jitter_seconds,
            paused: s.paused,
            pause_note: s.pause_note.clone(),
            version: s.version,
            shard: s.shard.get(),
            next_fire_at: s.next_fire_at,
            next_fire_times: v.next_fire_times.iter().map(|p| p.utc).collect(),
            next_fire_times_local: v.next_fire_times.iter().map(|p| p.local.clone()).collect(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub job_id: String,
    pub schedule_id: Option<String>,
    pub schedule_version: Option<i64>,
    /// `schedule`, `manual`, `retry` or `backfill`.
    pub trigger: String,
    pub attempt: u32,
    pub retry_of: Option<String>,
    pub fire_time: DateTime<Utc>,
    /// `scheduled`, `queued`, `running`, `succeeded`, `failed`, `cancelled` or `skipped`.
    pub state: String,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&Run> for RunView {
    fn from(r: &Run) -> Self {
        Self {
            id: r.id.to_string(),
            job_id: r.job_id.to_string(),
            schedule_id: r.schedule_id.map(|s| s.to_string()),
            schedule_version: r.schedule_version,
            trigger: r.trigger.as_str().to_owned(),
            attempt: r.attempt,
            retry_of: r.retry_of.map(|s| s.to_string()),
            fire_time: r.fire_time,
            state: r.state.as_str().to_owned(),
            reason: r.reason.clone(),
            exit_code: r.exit_code,
            worker_id: r.worker_id.clone(),
            cancel_requested: r.cancel_requested,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunEventView {
    pub id: i64,
    pub run_id: String,
    pub from_state: Option<String>,
    pub to_state: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<&RunEvent> for RunEventView {
    fn from(e: &RunEvent) -> Self {
        Self {
            id: e.id,
            run_id: e.run_id.to_string(),
            from_state: e.from.map(|s| s.as_str().to_owned()),
            to_state: e.to.as_str().to_owned(),
            reason: e.reason.clone(),
            at: e.at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunEventsResponse {
    pub events: Vec<RunEventView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunLogsResponse {
    pub run_id: String,
    /// The run's output (stdout and stderr) from `offset` on, within the size-capped tail.
    pub content: String,
    /// True when older output was dropped to respect the cap.
    pub truncated: bool,
    /// Byte offset, in the run's whole output, of the first byte of `content`.
    pub offset: u64,
    /// Bytes written in all so far: pass it as `?offset=` to read only what comes next.
    pub next_offset: u64,
    /// True when the asked offset is older than what is kept (the bytes between are lost).
    pub gap: bool,
    /// The run's state: output stops growing once it is terminal.
    pub state: String,
}

impl From<&LogsView> for RunLogsResponse {
    fn from(l: &LogsView) -> Self {
        Self {
            run_id: l.run_id.to_string(),
            content: l.content.clone(),
            truncated: l.truncated,
            offset: l.offset,
            next_offset: l.next_offset,
            gap: l.gap,
            state: l.state.as_str().to_owned(),
        }
    }
}

/// `GET /v1/runs/{run_id}/logs?offset=` — follow a run's output by byte offset.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunLogsQuery {
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleResponse>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
    pub next_page_token: Option<String>,
}

impl From<Page<Job>> for JobList {
    fn from(p: Page<Job>) -> Self {
        Self {
            jobs: p.items.iter().map(JobView::from).collect(),
            next_page_token: p.next_page_token,
        }
    }
}

impl From<Page<ScheduleView>> for ScheduleList {
    fn from(p: Page<ScheduleView>) -> Self {
        Self {
            schedules: p.items.iter().map(ScheduleResponse::from).collect(),
            next_page_token: p.next_page_token,
        }
    }
}

impl From<Page<Run>> for RunList {
    fn from(p: Page<Run>) -> Self {
        Self {
            runs: p.items.iter().map(RunView::from).collect(),
            next_page_token: p.next_page_token,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackfillResponse {
    pub dry_run: bool,
    pub fire_times: Vec<DateTime<Utc>>,
    /// The runs created (empty on a dry run; fires that already had a run are not repeated).
    pub runs: Vec<RunView>,
    /// Dry run only: more fires lie in the range than listed.
    pub truncated: bool,
}

impl From<&BackfillOutcome> for BackfillResponse {
    fn from(o: &BackfillOutcome) -> Self {
        Self {
            dry_run: o.dry_run,
            fire_times: o.fire_times.clone(),
            runs: o.runs.iter().map(RunView::from).collect(),
            truncated: o.truncated,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of the gRPC-style codes, e.g. `invalid_argument`, `not_found`.
    pub code: String,
    pub message: String,
    /// The request field at fault, for `invalid_argument`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}
