//! Schedule operations: create (with a preview of the next fires), read, list, patch, pause,
//! resume and delete. Trigger and backfill live with the runs they create (`runs.rs`).
//!
//! Every change recomputes `next_fire_at` from now, so an edit or a resume never fires a
//! surprise run for a time that passed while it was paused or different (I4); only a resume
//! that asks for catch-up plans the fires missed while paused, under the catch-up rule.

use kairos_domain::{
    FirePreview, JobId, PageRequest, ScheduleDraft, ScheduleId, TenantId, run::cancel_reason,
};
use kairos_store::{NewSchedule, NextFire, Page, Schedule, ScheduleChange, StoreError};

use super::{Service, parse_id};
use crate::ApiError;

/// How many upcoming fires a schedule response previews.
pub const PREVIEW_FIRES: usize = 5;
const CHANGE_ATTEMPTS: usize = 3;
const MAX_NOTE_CHARS: usize = 500;

/// Where a schedule stands, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleState {
    /// It will fire.
    Active,
    /// Paused: it fires nothing until resumed.
    Paused,
    /// No fire is left (a one-off that fired, `end_at` passed, `max_runs` reached) and the
    /// last one has passed. It counts against no limit; an edit can give it new fires.
    Completed,
}

impl ScheduleState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Completed => "completed",
        }
    }
}

/// A schedule with its state and the preview of its next fires (empty while paused or
/// completed).
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub schedule: Schedule,
    pub state: ScheduleState,
    pub next_fire_times: Vec<FirePreview>,
}

impl Service {
    fn view(&self, schedule: Schedule) -> ScheduleView {
        let now = self.now();
        let state = if schedule.next_fire_at.is_none()
            && schedule.last_fire_at.is_none_or(|last| last <= now)
        {
            ScheduleState::Completed
        } else if schedule.paused {
            ScheduleState::Paused
        } else {
            ScheduleState::Active
        };
        let next_fire_times = if state == ScheduleState::Active {
            // The schedule's timeline from now: the fires planned already and still ahead
            // (up to `last_fire_at`), then those from `next_fire_at` on, as many as
            // `max_runs` leaves.
            let timeline = schedule.timeline();
            let mut left = timeline.remaining();
            timeline
                .unlimited()
                .upcoming(now, PREVIEW_FIRES)
                .into_iter()
                .filter(|p| match schedule.next_fire_at {
                    Some(next) if p.utc >= next => match left {
                        Some(0) => false,
                        Some(n) => {
                            left = Some(n - 1);
                            true
                        }
                        None => true,
                    },
                    _ => schedule.last_fire_at.is_some_and(|last| p.utc <= last),
                })
                .collect()
        } else {
            Vec::new()
        };
        ScheduleView {
            schedule,
            state,
            next_fire_times,
        }
    }

    pub async fn create_schedule(
        &self,
        tenant: TenantId,
        job_id: &str,
        draft: ScheduleDraft,
        paused: bool,
    ) -> Result<ScheduleView, ApiError> {
        let job_id: JobId = parse_id(job_id, "job")?;
        let now = self.now();
        let spec = draft.parse(now)?;
        let id = ScheduleId::generate();
        let new = NewSchedule {
            id,
            job_id,
            next_fire_at: spec.timeline(id, 0).next_after(now),
            live_limit: Some(self.inner.limits.max_live_schedules),
            spec,
            paused,
            pause_note: None,
        };
        let schedule = self.store().create_schedule(tenant, &new).await?;
        self.metrics().schedules_created.inc();
        tracing::info!(tenant_id = %tenant, job_id = %job_id, schedule_id = %schedule.id, shard = schedule.shard.get(), "schedule created");
        Ok(self.view(schedule))
    }

    pub async fn get_schedule(&self, tenant: TenantId, id: &str) -> Result<ScheduleView, ApiError> {
        let id: ScheduleId = parse_id(id, "schedule")?;
        Ok(self.view(self.store().get_schedule(tenant, id).await?))
    }

    pub async fn list_schedules(
        &self,
        tenant: TenantId,
        job_id: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<ScheduleView>, ApiError> {
        let job: Option<JobId> = job_id.map(|j| parse_id(j, "job")).transpose()?;
        let page = self.store().list_schedules(tenant, job, page).await?;
        Ok(Page {
            items: page.items.into_iter().map(|s| self.view(s)).collect(),
            next_page_token: page.next_page_token,
        })
    }

    /// Patches the spec and/or the paused flag; the old version's pending runs are cancelled
    /// in the same transaction.
    pub async fn update_schedule(
        &self,
        tenant: TenantId,
        id: &str,
        draft: ScheduleDraft,
        paused: Option<bool>,
    ) -> Result<ScheduleView, ApiError> {
        self.change_schedule(tenant, id, |current, now| {
            let spec = draft.clone().patch(&current.spec, now)?;
            let paused = paused.unwrap_or(current.paused);
            Ok(ScheduleChange {
                next_fire: NextFire::After(now),
                spec,
                paused,
                pause_note: if paused {
                    current.pause_note.clone()
                } else {
                    None
                },
                cancel_reason: cancel_reason::SCHEDULE_UPDATED,
                at: now,
                live_limit: Some(self.inner.limits.max_live_schedules),
            })
        })
        .await
    }

    pub async fn pause_schedule(
        &self,
        tenant: TenantId,
        id: &str,
        note: Option<String>,
    ) -> Result<ScheduleView, ApiError> {
        if let Some(n) = &note
            && n.chars().count() > MAX_NOTE_CHARS
        {
            return Err(ApiError::invalid(
                "note",
                format!("must be at most {MAX_NOTE_CHARS} characters"),
            ));
        }
        self.change_schedule(tenant, id, |current, now| {
            Ok(ScheduleChange {
                spec: current.spec.clone(),
                paused: true,
                pause_note: note.clone(),
                next_fire: NextFire::Keep,
                cancel_reason: cancel_reason::SCHEDULE_PAUSED,
                at: now,
                live_limit: Some(self.inner.limits.max_live_schedules),
            })
        })
        .await
    }

    /// Resumes from now: fires that fell while paused are not run, unless `catch_up` asks
    /// for them, in which case they are planned from the pause on and the catch-up rule
    /// (window and cap) decides which run late.
    pub async fn resume_schedule(
        &self,
        tenant: TenantId,
        id: &str,
        catch_up: bool,
    ) -> Result<ScheduleView, ApiError> {
        self.change_schedule(tenant, id, |current, now| {
            Ok(ScheduleChange {
                spec: current.spec.clone(),
                paused: false,
                pause_note: None,
                next_fire: if catch_up {
                    NextFire::SincePause { otherwise: now }
                } else {
                    NextFire::After(now)
                },
                cancel_reason: cancel_reason::SCHEDULE_UPDATED,
                at: now,
                live_limit: Some(self.inner.limits.max_live_schedules),
            })
        })
        .await
    }

    async fn change_schedule(
        &self,
        tenant: TenantId,
        id: &str,
        change: impl Fn(&Schedule, chrono::DateTime<chrono::Utc>) -> Result<ScheduleChange, ApiError>,
    ) -> Result<ScheduleView, ApiError> {
        let id: ScheduleId = parse_id(id, "schedule")?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.store().get_schedule(tenant, id).await?;
            let next = change(&current, self.now())?;
            match self
                .store()
                .update_schedule(tenant, id, &next, current.version)
                .await
            {
                Err(StoreError::Conflict(_)) if attempt < CHANGE_ATTEMPTS => continue,
                Err(e) => return Err(e.into()),
                Ok(schedule) => {
                    tracing::info!(tenant_id = %tenant, schedule_id = %id, version = schedule.version, paused = schedule.paused, "schedule changed");
                    return Ok(self.view(schedule));
                }
            }
        }
    }

    pub async fn delete_schedule(&self, tenant: TenantId, id: &str) -> Result<(), ApiError> {
        let id: ScheduleId = parse_id(id, "schedule")?;
        self.store().delete_schedule(tenant, id).await?;
        tracing::info!(tenant_id = %tenant, schedule_id = %id, "schedule deleted");
        Ok(())
    }
}
