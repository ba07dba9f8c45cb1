//! Schedules: when a job runs. The builders [`NewSchedule`] and [`ScheduleUpdate`] make the
//! requests and the [`Client`] methods here send them; nothing here computes fire times (the
//! server's preview, `next_fire_times`, is the truth).

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use kairos_domain::OverlapPolicy;
use kairos_proto::v1::{
    BackfillScheduleRequest, BackfillScheduleResponse, CreateScheduleRequest,
    DeleteScheduleRequest, GetScheduleRequest, ListSchedulesRequest, PauseScheduleRequest,
    ResumeScheduleRequest, Run, Schedule, TriggerScheduleRequest, UpdateScheduleRequest,
};

use crate::{Client, Error, Page, ResultStream, pages::paginate, retry::CallKind, time::timestamp};

fn whole_seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The setters a new schedule and a schedule update share: the create and update requests
/// name these fields alike.
macro_rules! spec_setters {
    () => {
        /// The IANA time zone the cron pattern is read in (default `UTC`).
        pub fn timezone(mut self, zone: impl Into<String>) -> Self {
            self.0.timezone = Some(zone.into());
            self
        }

        /// No fire before this time.
        pub fn start_at(mut self, t: DateTime<Utc>) -> Self {
            self.0.start_at = Some(timestamp(t));
            self
        }

        /// No fire after this time.
        pub fn end_at(mut self, t: DateTime<Utc>) -> Self {
            self.0.end_at = Some(timestamp(t));
            self
        }

        /// What a fire does while the previous run is still going (default `skip`).
        pub fn overlap_policy(mut self, policy: OverlapPolicy) -> Self {
            self.0.overlap_policy = Some(policy.as_str().to_owned());
            self
        }

        /// How late a missed fire may still run (default 900 s).
        pub fn catchup_window(mut self, window: Duration) -> Self {
            self.0.catchup_window_seconds = Some(whole_seconds(window));
            self
        }

        /// A random delay of up to this much per fire (default none).
        pub fn jitter(mut self, jitter: Duration) -> Self {
            self.0.jitter_seconds = Some(whole_seconds(jitter));
            self
        }
    };
}

/// A schedule to attach to a job: one cadence constructor, then what differs from the defaults
/// (UTC, no bounds, overlap `skip`, 900 s catch-up window, no jitter, not paused).
///
/// ```
/// use std::time::Duration;
/// use kairos_domain::OverlapPolicy;
/// use kairos_sdk::NewSchedule;
///
/// let job = "job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f";
/// let weekdays = NewSchedule::cron(job, "0 30 9 * * mon-fri").timezone("Europe/Paris");
/// let often = NewSchedule::every(job, Duration::from_secs(300))
///     .overlap_policy(OverlapPolicy::BufferOne)
///     .jitter(Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewSchedule(CreateScheduleRequest);

impl NewSchedule {
    fn for_job(job_id: impl fmt::Display) -> CreateScheduleRequest {
        CreateScheduleRequest {
            job_id: job_id.to_string(),
            ..CreateScheduleRequest::default()
        }
    }

    /// Fires on a cron pattern: 5 fields, 6 with leading seconds, or a macro such as `@hourly`.
    pub fn cron(job_id: impl fmt::Display, pattern: impl Into<String>) -> Self {
        Self(CreateScheduleRequest {
            cron: Some(pattern.into()),
            ..Self::for_job(job_id)
        })
    }

    /// Fires every `interval` (whole seconds).
    pub fn every(job_id: impl fmt::Display, interval: Duration) -> Self {
        Self(CreateScheduleRequest {
            interval_seconds: Some(whole_seconds(interval)),
            ..Self::for_job(job_id)
        })
    }

    /// Fires once, at `at`.
    pub fn at(job_id: impl fmt::Display, at: DateTime<Utc>) -> Self {
        Self(CreateScheduleRequest {
            at: Some(timestamp(at)),
            ..Self::for_job(job_id)
        })
    }

    spec_setters!();

    /// Create it paused (it fires only once resumed).
    pub fn paused(mut self, paused: bool) -> Self {
        self.0.paused = Some(paused);
        self
    }
}

impl From<NewSchedule> for CreateScheduleRequest {
    fn from(schedule: NewSchedule) -> Self {
        schedule.0
    }
}

/// A change to a schedule: named fields replace, the rest stay; naming a cadence replaces the
/// cadence.
///
/// ```
/// use kairos_sdk::ScheduleUpdate;
///
/// let update = ScheduleUpdate::new("sch_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f")
///     .cron("0 0 8 * * *")
///     .timezone("Asia/Tokyo");
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScheduleUpdate(UpdateScheduleRequest);

impl ScheduleUpdate {
    /// A change to the schedule `schedule_id` that, so far, changes nothing.
    pub fn new(schedule_id: impl fmt::Display) -> Self {
        Self(UpdateScheduleRequest {
            schedule_id: schedule_id.to_string(),
            ..UpdateScheduleRequest::default()
        })
    }

    /// A new cron cadence.
    pub fn cron(mut self, pattern: impl Into<String>) -> Self {
        self.0.cron = Some(pattern.into());
        self
    }

    /// A new interval cadence.
    pub fn every(mut self, interval: Duration) -> Self {
        self.0.interval_seconds = Some(whole_seconds(interval));
        self
    }

    /// A new one-off cadence.
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.0.at = Some(timestamp(at));
        self
    }

    spec_setters!();
}

impl From<ScheduleUpdate> for UpdateScheduleRequest {
    fn from(update: ScheduleUpdate) -> Self {
        update.0
    }
}

impl Client {
    /// Attaches a schedule to a job ([`NewSchedule`] or a raw request); the answer previews
    /// the next five fires. Not retried once sent.
    pub async fn create_schedule(
        &self,
        schedule: impl Into<CreateScheduleRequest>,
    ) -> Result<Schedule, Error> {
        Ok(self
            .call(
                CallKind::Create,
                "CreateSchedule",
                schedule.into(),
                |mut c, r| async move { c.create_schedule(r).await },
            )
            .await?)
    }

    /// Reads a schedule and its next fire times.
    pub async fn get_schedule(&self, schedule_id: impl fmt::Display) -> Result<Schedule, Error> {
        let request = GetScheduleRequest {
            schedule_id: schedule_id.to_string(),
        };
        Ok(self
            .call(
                CallKind::Read,
                "GetSchedule",
                request,
                |mut c, r| async move { c.get_schedule(r).await },
            )
            .await?)
    }

    /// One page of schedules, oldest first; `job_id` limits them to one job.
    pub async fn list_schedules(
        &self,
        job_id: Option<&str>,
        page_size: u32,
        page_token: impl Into<String>,
    ) -> Result<Page<Schedule>, Error> {
        let request = ListSchedulesRequest {
            job_id: job_id.map(str::to_owned),
            page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
            page_token: page_token.into(),
        };
        let answer = self
            .call(
                CallKind::Read,
                "ListSchedules",
                request,
                |mut c, r| async move { c.list_schedules(r).await },
            )
            .await?;
        Ok(Page::new(answer.schedules, answer.next_page_token))
    }

    /// Every schedule (of `job_id`, if given), fetching pages as the stream is read.
    pub fn schedules(&self, job_id: Option<String>, page_size: u32) -> ResultStream<Schedule> {
        let client = self.clone();
        paginate(move |token| {
            let (client, job_id) = (client.clone(), job_id.clone());
            async move {
                client
                    .list_schedules(job_id.as_deref(), page_size, token)
                    .await
            }
        })
    }

    /// Changes a schedule ([`ScheduleUpdate`] or a raw request); retried on `UNAVAILABLE`.
    pub async fn update_schedule(
        &self,
        update: impl Into<UpdateScheduleRequest>,
    ) -> Result<Schedule, Error> {
        Ok(self
            .call(
                CallKind::IdempotentWrite,
                "UpdateSchedule",
                update.into(),
                |mut c, r| async move { c.update_schedule(r).await },
            )
            .await?)
    }

    /// Deletes a schedule and cancels its pending runs. A retried delete whose earlier
    /// attempt already deleted it succeeds.
    pub async fn delete_schedule(&self, schedule_id: impl fmt::Display) -> Result<(), Error> {
        let request = DeleteScheduleRequest {
            schedule_id: schedule_id.to_string(),
        };
        let result = self
            .call(
                CallKind::IdempotentWrite,
                "DeleteSchedule",
                request,
                |mut c, r| async move { c.delete_schedule(r).await },
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(f) if f.was_retried() && f.status.code() == tonic::Code::NotFound => Ok(()),
            Err(f) => Err(f.into()),
        }
    }

    /// Stops a schedule firing until resumed; `note` says why, for whoever looks later.
    pub async fn pause_schedule(
        &self,
        schedule_id: impl fmt::Display,
        note: Option<&str>,
    ) -> Result<Schedule, Error> {
        let request = PauseScheduleRequest {
            schedule_id: schedule_id.to_string(),
            note: note.map(str::to_owned),
        };
        Ok(self
            .call(
                CallKind::IdempotentWrite,
                "PauseSchedule",
                request,
                |mut c, r| async move { c.pause_schedule(r).await },
            )
            .await?)
    }

    /// Lets a paused schedule fire again from now on.
    pub async fn resume_schedule(&self, schedule_id: impl fmt::Display) -> Result<Schedule, Error> {
        let request = ResumeScheduleRequest {
            schedule_id: schedule_id.to_string(),
        };
        Ok(self
            .call(
                CallKind::IdempotentWrite,
                "ResumeSchedule",
                request,
                |mut c, r| async move { c.resume_schedule(r).await },
            )
            .await?)
    }

    /// Fires the schedule once now: a run with trigger `manual`. Not retried once sent (a
    /// retry could start a second run).
    pub async fn trigger_schedule(&self, schedule_id: impl fmt::Display) -> Result<Run, Error> {
        let request = TriggerScheduleRequest {
            schedule_id: schedule_id.to_string(),
        };
        Ok(self
            .call(
                CallKind::Create,
                "TriggerSchedule",
                request,
                |mut c, r| async move { c.trigger_schedule(r).await },
            )
            .await?)
    }

    /// Runs the schedule's fires in `[from, to)` (past fires only; those that already have a
    /// run are left alone, so a retry is safe), or with `dry_run` only lists their times.
    pub async fn backfill_schedule(
        &self,
        schedule_id: impl fmt::Display,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<BackfillScheduleResponse, Error> {
        let request = BackfillScheduleRequest {
            schedule_id: schedule_id.to_string(),
            from: Some(timestamp(from)),
            to: Some(timestamp(to)),
            dry_run,
        };
        let kind = if dry_run {
            CallKind::Read
        } else {
            CallKind::IdempotentWrite
        };
        Ok(self
            .call(kind, "BackfillSchedule", request, |mut c, r| async move {
                c.backfill_schedule(r).await
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_schedule_has_one_cadence_and_only_the_named_fields() {
        let req: CreateScheduleRequest = NewSchedule::every("job_1", Duration::from_secs(300))
            .overlap_policy(OverlapPolicy::BufferOne)
            .paused(true)
            .into();
        assert_eq!(req.job_id, "job_1");
        assert_eq!(req.interval_seconds, Some(300));
        assert_eq!((req.cron, req.at, req.timezone), (None, None, None));
        assert_eq!(req.overlap_policy.as_deref(), Some("buffer_one"));
        assert_eq!(req.paused, Some(true));
        let at = DateTime::from_timestamp(1_769_850_000, 0).unwrap();
        let req: CreateScheduleRequest = NewSchedule::at("job_1", at).into();
        assert_eq!(req.at.map(|t| t.seconds), Some(1_769_850_000));
    }

    #[test]
    fn a_schedule_update_never_sets_paused() {
        let req: UpdateScheduleRequest = ScheduleUpdate::new("sch_1")
            .cron("@hourly")
            .jitter(Duration::from_secs(5))
            .into();
        assert_eq!(req.cron.as_deref(), Some("@hourly"));
        assert_eq!(req.jitter_seconds, Some(5));
        assert_eq!(req.paused, None);
    }
}
