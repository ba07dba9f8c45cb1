//! Run operations: execute now, trigger, backfill, read, list, cancel, logs and events.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use kairos_domain::{
    Env, JobId, PageRequest, RunId, RunState, ScheduleId, ShardId, TenantId, Trigger,
    schedule::parse_instant,
};
use kairos_store::{NewRun, Page, Run, RunEvent, RunFilter, RunLogs};

use super::{Service, parse_id};
use crate::ApiError;

/// The most runs one backfill call may create; larger ranges are refused, not truncated.
pub const MAX_BACKFILL_RUNS: usize = 1000;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// What a backfill did (or, for a dry run, would do).
#[derive(Debug, Clone)]
pub struct BackfillOutcome {
    pub fire_times: Vec<DateTime<Utc>>,
    pub runs: Vec<Run>,
    pub dry_run: bool,
    /// Dry run only: the range holds more fires than the listed ones.
    pub truncated: bool,
}

fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(
            "idempotency_key",
            format!(
                "must be 1-{MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters without spaces"
            ),
        ));
    }
    Ok(())
}

impl Service {
    /// Queues a run of the job now. With an idempotency key, a repeat returns the first run
    /// and `false`.
    pub async fn execute_now(
        &self,
        tenant: TenantId,
        job_id: &str,
        idempotency_key: Option<&str>,
        env: BTreeMap<String, String>,
    ) -> Result<(Run, bool), ApiError> {
        let job_id: JobId = parse_id(job_id, "job")?;
        if let Some(key) = idempotency_key {
            check_idempotency_key(key)?;
        }
        let new = NewRun {
            id: RunId::generate(),
            job_id,
            schedule: None,
            shard: ShardId::of(job_id.as_uuid()),
            trigger: Trigger::Manual,
            attempt: 1,
            retry_of: None,
            fire_time: self.now(),
            state: RunState::Queued,
            env: Env::parse(env)?,
        };
        let (run, created) = self
            .store()
            .create_run(tenant, &new, idempotency_key)
            .await?;
        if created {
            self.metrics().runs_created(Trigger::Manual);
            tracing::info!(tenant_id = %tenant, job_id = %job_id, run_id = %run.id, shard = run.shard.get(), "run queued");
        }
        Ok((run, created))
    }

    /// Runs a schedule's job once now, recorded against the schedule's current version.
    pub async fn trigger_schedule(&self, tenant: TenantId, id: &str) -> Result<Run, ApiError> {
        let id: ScheduleId = parse_id(id, "schedule")?;
        let schedule = self.store().get_schedule(tenant, id).await?;
        let new = NewRun {
            id: RunId::generate(),
            job_id: schedule.job_id,
            schedule: Some((schedule.id, schedule.version)),
            shard: schedule.shard,
            trigger: Trigger::Manual,
            attempt: 1,
            retry_of: None,
            fire_time: self.now(),
            state: RunState::Queued,
            env: Env::default(),
        };
        let (run, _) = self.store().create_run(tenant, &new, None).await?;
        self.metrics().runs_created(Trigger::Manual);
        tracing::info!(tenant_id = %tenant, schedule_id = %id, run_id = %run.id, "schedule triggered");
        Ok(run)
    }

    /// Creates one run per fire time of the schedule in `[from, to)`; fires that already
    /// have a run are left alone. A dry run only lists the fire times.
    pub async fn backfill(
        &self,
        tenant: TenantId,
        id: &str,
        from: &str,
        to: &str,
        dry_run: bool,
    ) -> Result<BackfillOutcome, ApiError> {
        let id: ScheduleId = parse_id(id, "schedule")?;
        let (from, to) = (parse_instant("from", from)?, parse_instant("to", to)?);
        let now = self.now();
        if to <= from {
            return Err(ApiError::invalid("to", "must be after from"));
        }
        if to > now {
            return Err(ApiError::invalid(
                "to",
                "must not be in the future: backfill covers past fires",
            ));
        }
        if from < now - Duration::days(365) {
            return Err(ApiError::invalid(
                "from",
                "must be within the 365 days of kept history",
            ));
        }
        let schedule = self.store().get_schedule(tenant, id).await?;
        let (fire_times, more) = schedule.spec.fires_between(from, to, MAX_BACKFILL_RUNS);
        if dry_run {
            return Ok(BackfillOutcome {
                fire_times,
                runs: Vec::new(),
                dry_run,
                truncated: more,
            });
        }
        if more {
            return Err(ApiError::invalid(
                "to",
                format!(
                    "the range holds more than {MAX_BACKFILL_RUNS} fires; split it into smaller ranges"
                ),
            ));
        }
        let runs = self
            .store()
            .create_backfill_runs(tenant, &schedule, &fire_times)
            .await?;
        for _ in &runs {
            self.metrics().runs_created(Trigger::Backfill);
        }
        tracing::info!(tenant_id = %tenant, schedule_id = %id, fires = fire_times.len(), created = runs.len(), "backfill queued");
        Ok(BackfillOutcome {
            fire_times,
            runs,
            dry_run,
            truncated: false,
        })
    }

    pub async fn get_run(&self, tenant: TenantId, id: &str) -> Result<Run, ApiError> {
        let id: RunId = parse_id(id, "run")?;
        Ok(self.store().get_run(tenant, id).await?)
    }

    pub async fn list_runs(
        &self,
        tenant: TenantId,
        job_id: Option<&str>,
        schedule_id: Option<&str>,
        state: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Run>, ApiError> {
        let filter = RunFilter {
            job_id: job_id.map(|j| parse_id(j, "job")).transpose()?,
            schedule_id: schedule_id.map(|s| parse_id(s, "schedule")).transpose()?,
            state: state
                .map(|s| {
                    RunState::parse(s).ok_or_else(|| {
                        ApiError::invalid(
                            "state",
                            format!("unknown state '{s}'; expected one of scheduled, queued, running, succeeded, failed, cancelled, skipped"),
                        )
                    })
                })
                .transpose()?,
        };
        Ok(self.store().list_runs(tenant, &filter, page).await?)
    }

    pub async fn cancel_run(&self, tenant: TenantId, id: &str) -> Result<Run, ApiError> {
        let id: RunId = parse_id(id, "run")?;
        let run = self.store().cancel_run(tenant, id).await?;
        tracing::info!(tenant_id = %tenant, run_id = %id, state = %run.state, "run cancel requested");
        Ok(run)
    }

    /// The run's stored output from byte `offset` on (all of what is kept without one).
    pub async fn run_logs(
        &self,
        tenant: TenantId,
        id: &str,
        offset: Option<i64>,
    ) -> Result<LogsView, ApiError> {
        let offset = match offset {
            Some(o) if o < 0 => {
                return Err(kairos_domain::FieldError::new("offset", "must be 0 or more").into());
            }
            Some(o) => Some(o as u64),
            None => None,
        };
        let id: RunId = parse_id(id, "run")?;
        let logs = self.store().run_logs(tenant, id).await?;
        Ok(LogsView::from_offset(logs, offset))
    }

    pub async fn run_events(&self, tenant: TenantId, id: &str) -> Result<Vec<RunEvent>, ApiError> {
        let id: RunId = parse_id(id, "run")?;
        Ok(self.store().run_events(tenant, id).await?)
    }
}

/// A run's output as a reader following it sees it: the part from the asked offset on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsView {
    pub run_id: RunId,
    /// The output from `offset` up to `next_offset`.
    pub content: String,
    /// True when output older than what is kept was dropped.
    pub truncated: bool,
    /// Byte offset (in the run's whole output) of the first byte of `content`.
    pub offset: u64,
    /// Bytes written in all so far: ask from here next time.
    pub next_offset: u64,
    /// True when the asked offset is older than what is kept: the bytes between were lost.
    pub gap: bool,
    pub state: kairos_domain::RunState,
}

impl LogsView {
    /// Cuts the stored tail at `offset` (moved forward to a character boundary).
    pub fn from_offset(logs: RunLogs, offset: Option<u64>) -> Self {
        let total = logs.total_bytes.max(logs.content.len() as u64);
        let start = total - logs.content.len() as u64;
        let asked = offset.unwrap_or(start);
        let gap = asked < start;
        let from = asked.clamp(start, total);
        let mut cut = (from - start) as usize;
        while cut < logs.content.len() && !logs.content.is_char_boundary(cut) {
            cut += 1;
        }
        Self {
            run_id: logs.run_id,
            content: logs.content[cut..].to_owned(),
            truncated: logs.truncated,
            offset: start + cut as u64,
            next_offset: total,
            gap,
            state: logs.state,
        }
    }
}

#[cfg(test)]
mod logs_tests {
    use kairos_domain::RunState;

    use super::*;

    fn logs(content: &str, total: u64) -> RunLogs {
        RunLogs {
            run_id: RunId::generate(),
            content: content.to_owned(),
            truncated: total > content.len() as u64,
            total_bytes: total,
            state: RunState::Running,
        }
    }

    #[test]
    fn without_an_offset_everything_kept_is_served() {
        let v = LogsView::from_offset(logs("abcdef", 10), None);
        assert_eq!(
            (v.content.as_str(), v.offset, v.next_offset, v.gap),
            ("abcdef", 4, 10, false)
        );
    }

    #[test]
    fn an_offset_inside_the_tail_serves_only_the_new_part() {
        let v = LogsView::from_offset(logs("abcdef", 10), Some(7));
        assert_eq!(
            (v.content.as_str(), v.offset, v.next_offset, v.gap),
            ("def", 7, 10, false)
        );
        let v = LogsView::from_offset(logs("abcdef", 10), Some(10));
        assert_eq!((v.content.as_str(), v.offset, v.gap), ("", 10, false));
    }

    #[test]
    fn an_offset_older_than_the_tail_says_there_is_a_gap() {
        let v = LogsView::from_offset(logs("abcdef", 10), Some(1));
        assert_eq!((v.content.as_str(), v.offset, v.gap), ("abcdef", 4, true));
    }

    #[test]
    fn an_offset_past_the_end_serves_nothing() {
        let v = LogsView::from_offset(logs("abc", 3), Some(99));
        assert_eq!(
            (v.content.as_str(), v.offset, v.next_offset, v.gap),
            ("", 3, 3, false)
        );
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // "€" is 3 bytes: offset 1 lands inside it and moves to the next character.
        let v = LogsView::from_offset(logs("€x", 4), Some(1));
        assert_eq!((v.content.as_str(), v.offset), ("x", 3));
    }
}
