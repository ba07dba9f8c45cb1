//! Conversions between the generated proto messages and the service layer's inputs and
//! outputs. Proto values are unchecked: they become domain drafts, which the service checks.

use chrono::{DateTime, SecondsFormat, Utc};
use kairos_domain::{Cadence, JobDraft, RetryDraft, ScheduleDraft};
use kairos_proto::v1 as pb;
use kairos_store::{Job, Run, RunEvent, Tenant};
use prost_types::Timestamp;

use crate::{ApiError, service::ScheduleView};

pub fn ts(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A proto timestamp as the RFC 3339 text the domain drafts take.
pub fn instant(field: &str, t: &Timestamp) -> Result<String, ApiError> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::<Utc>::from_timestamp(t.seconds, nanos))
        .map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .ok_or_else(|| ApiError::invalid(field, "is not a valid timestamp"))
}

fn opt_instant(field: &str, t: Option<&Timestamp>) -> Result<Option<String>, ApiError> {
    t.map(|t| instant(field, t)).transpose()
}

fn retry(r: Option<pb::RetryPolicy>) -> Option<RetryDraft> {
    r.map(|r| RetryDraft {
        max_attempts: r.max_attempts.map(i64::from),
        initial_backoff_seconds: r.initial_backoff_seconds.map(i64::from),
        max_backoff_seconds: r.max_backoff_seconds.map(i64::from),
    })
}

pub fn create_job_draft(r: pb::CreateJobRequest) -> JobDraft {
    JobDraft {
        name: Some(r.name),
        image: Some(r.image),
        command: Some(r.command),
        env: Some(r.env),
        memory_mb: r.memory_mb.map(i64::from),
        timeout_seconds: r.timeout_seconds.map(i64::from),
        retry: retry(r.retry),
        labels: Some(r.labels),
        registry_credential: r.registry_credential,
    }
}

pub fn update_job_draft(r: pb::UpdateJobRequest) -> JobDraft {
    JobDraft {
        name: r.name,
        image: r.image,
        command: r.command.map(|c| c.values),
        env: r.env.map(|e| e.entries),
        memory_mb: r.memory_mb.map(i64::from),
        timeout_seconds: r.timeout_seconds.map(i64::from),
        retry: retry(r.retry),
        labels: r.labels.map(|l| l.entries),
        registry_credential: r.registry_credential,
    }
}

/// Builds [`ScheduleFields`] from a create or update request (both carry the same fields).
macro_rules! schedule_fields {
    ($r:expr) => {
        $crate::grpc::convert::ScheduleFields {
            cron: $r.cron,
            interval_seconds: $r.interval_seconds,
            at: $r.at,
            timezone: $r.timezone,
            start_at: $r.start_at,
            end_at: $r.end_at,
            overlap_policy: $r.overlap_policy,
            catchup_window_seconds: $r.catchup_window_seconds,
            jitter_seconds: $r.jitter_seconds,
        }
    };
}
pub(crate) use schedule_fields;

/// The schedule fields shared by create and update requests.
pub struct ScheduleFields {
    pub cron: Option<String>,
    pub interval_seconds: Option<i64>,
    pub at: Option<Timestamp>,
    pub timezone: Option<String>,
    pub start_at: Option<Timestamp>,
    pub end_at: Option<Timestamp>,
    pub overlap_policy: Option<String>,
    pub catchup_window_seconds: Option<i64>,
    pub jitter_seconds: Option<i64>,
}

impl ScheduleFields {
    pub fn into_draft(self) -> Result<ScheduleDraft, ApiError> {
        Ok(ScheduleDraft {
            cron: self.cron,
            interval_seconds: self.interval_seconds,
            at: opt_instant("at", self.at.as_ref())?,
            timezone: self.timezone,
            start_at: opt_instant("start_at", self.start_at.as_ref())?,
            end_at: opt_instant("end_at", self.end_at.as_ref())?,
            overlap_policy: self.overlap_policy,
            catchup_window_seconds: self.catchup_window_seconds,
            jitter_seconds: self.jitter_seconds,
        })
    }
}

pub fn tenant(t: &Tenant) -> pb::Tenant {
    pb::Tenant {
        id: t.id.to_string(),
        name: t.name.as_str().to_owned(),
        created_at: Some(ts(t.created_at)),
    }
}

pub fn job(j: &Job) -> pb::Job {
    let s = &j.spec;
    pb::Job {
        id: j.id.to_string(),
        name: s.name.as_str().to_owned(),
        image: s.image.as_str().to_owned(),
        command: s.command.args().to_vec(),
        env: s.env.vars().clone(),
        memory_mb: s.memory.mb() as i32,
        timeout_seconds: s.timeout.seconds() as i32,
        retry: Some(pb::RetryPolicy {
            max_attempts: Some(s.retry.max_attempts() as i32),
            initial_backoff_seconds: Some(s.retry.initial_backoff_seconds() as i32),
            max_backoff_seconds: Some(s.retry.max_backoff_seconds() as i32),
        }),
        labels: s.labels.as_map().clone(),
        version: j.version,
        created_at: Some(ts(j.created_at)),
        updated_at: Some(ts(j.updated_at)),
        registry_credential: s
            .registry_credential
            .as_ref()
            .map(|c| c.as_str().to_owned()),
    }
}

pub fn registry_credential(c: &kairos_store::RegistryCredential) -> pb::RegistryCredential {
    pb::RegistryCredential {
        name: c.name.as_str().to_owned(),
        server: c.server.as_str().to_owned(),
        username: c.username.clone(),
        created_at: Some(ts(c.created_at)),
    }
}

pub fn schedule(v: &ScheduleView) -> pb::Schedule {
    let s = &v.schedule;
    let (cron, interval_seconds, at) = match &s.spec.cadence {
        Cadence::Cron(c) => (Some(c.pattern().to_owned()), None, None),
        Cadence::Interval { seconds, .. } => (None, Some(i64::from(*seconds)), None),
        Cadence::At(t) => (None, None, Some(ts(*t))),
    };
    pb::Schedule {
        id: s.id.to_string(),
        job_id: s.job_id.to_string(),
        cron,
        interval_seconds,
        at,
        timezone: s.spec.timezone.name().to_owned(),
        start_at: s.spec.start_at.map(ts),
        end_at: s.spec.end_at.map(ts),
        overlap_policy: s.spec.overlap_policy.as_str().to_owned(),
        catchup_window_seconds: i64::from(s.spec.catchup_window_seconds),
        jitter_seconds: i64::from(s.spec.jitter_seconds),
        paused: s.paused,
        pause_note: s.pause_note.clone(),
        version: s.version,
        next_fire_times: v
            .next_fire_times
            .iter()
            .map(|p| pb::FireTime {
                utc: Some(ts(p.utc)),
                local: p.local.clone(),
            })
            .collect(),
        created_at: Some(ts(s.created_at)),
        updated_at: Some(ts(s.updated_at)),
    }
}

pub fn run(r: &Run) -> pb::Run {
    pb::Run {
        id: r.id.to_string(),
        job_id: r.job_id.to_string(),
        schedule_id: r.schedule_id.map(|s| s.to_string()),
        trigger: r.trigger.as_str().to_owned(),
        attempt: r.attempt as i32,
        fire_time: Some(ts(r.fire_time)),
        state: r.state.as_str().to_owned(),
        reason: r.reason.clone(),
        exit_code: r.exit_code,
        worker_id: r.worker_id.clone(),
        created_at: Some(ts(r.created_at)),
        started_at: r.started_at.map(ts),
        finished_at: r.finished_at.map(ts),
        retry_of: r.retry_of.map(|s| s.to_string()),
    }
}

pub fn event(e: &RunEvent) -> pb::RunEvent {
    pb::RunEvent {
        id: e.id,
        run_id: e.run_id.to_string(),
        from_state: e.from.map(|s| s.as_str().to_owned()),
        to_state: e.to.as_str().to_owned(),
        reason: e.reason.clone(),
        at: Some(ts(e.at)),
    }
}

/// An empty proto string is an absent page token.
pub fn token(raw: &str) -> Option<&str> {
    (!raw.is_empty()).then_some(raw)
}
