//! Planning decisions, as pure functions of a schedule and the time: which fires of a due
//! schedule to record now, and whether each runs or is recorded `skipped/missed`.
//!
//! No I/O and no clock here: the caller passes "now" and the horizon, so every rule is tested
//! with fixed times. It never decides overlap (that needs the runs in flight; a later step).

use chrono::{DateTime, Duration, Utc};
use kairos_domain::SkipReason;
use kairos_store::{DueSchedule, FireState, Materialize};

/// Most fires of one schedule recorded in one planning round; the rest wait for the next
/// round (bounded work per round, even for a 1 s schedule after a day of downtime).
pub const MAX_FIRES_PER_ROUND: usize = 1000;

/// The fires of `due` from its `next_fire_at` up to `until` (inclusive), at most `max`.
///
/// A fire older than the schedule's catch-up window (relative to `now`) is recorded as
/// `skipped` with reason `missed`; a fire inside the window runs, late. Each fire carries the
/// schedule's next fire after it, so the store advances `next_fire_at` past the batch.
pub fn plan_fires(
    due: &DueSchedule,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    max: usize,
) -> Vec<Materialize> {
    let window = Duration::seconds(i64::from(due.spec.catchup_window_seconds));
    let mut fires = Vec::new();
    let mut next = Some(due.next_fire_at);
    while let Some(fire_time) = next.filter(|t| *t <= until) {
        if fires.len() == max {
            break;
        }
        next = due.spec.next_fire_after(fire_time);
        let state = if fire_time < now - window {
            FireState::Skipped(SkipReason::Missed)
        } else {
            FireState::Scheduled
        };
        fires.push(Materialize {
            schedule_id: due.id,
            schedule_version: due.version,
            fire_time,
            state,
            next_fire_at: next,
        });
    }
    fires
}

#[cfg(test)]
mod tests {
    use kairos_domain::{JobId, ScheduleDraft, ScheduleId, TenantId};

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn due(every: i64, catchup: i64, next: &str) -> DueSchedule {
        let spec = ScheduleDraft {
            interval_seconds: Some(every),
            start_at: Some("2026-01-01T00:00:00Z".into()),
            catchup_window_seconds: Some(catchup),
            ..ScheduleDraft::default()
        }
        .parse(t("2026-01-01T00:00:00Z"))
        .unwrap();
        DueSchedule {
            id: ScheduleId::generate(),
            tenant_id: TenantId::generate(),
            job_id: JobId::generate(),
            version: 3,
            spec,
            next_fire_at: t(next),
        }
    }

    #[test]
    fn plans_every_fire_up_to_the_horizon_and_advances_past_it() {
        let d = due(10, 60, "2026-03-01T00:00:10Z");
        let fires = plan_fires(
            &d,
            t("2026-03-01T00:00:00Z"),
            t("2026-03-01T00:00:40Z"),
            100,
        );
        let times: Vec<_> = fires.iter().map(|f| f.fire_time.to_rfc3339()).collect();
        assert_eq!(
            times,
            [
                "2026-03-01T00:00:10+00:00",
                "2026-03-01T00:00:20+00:00",
                "2026-03-01T00:00:30+00:00",
                "2026-03-01T00:00:40+00:00"
            ]
        );
        assert!(
            fires
                .iter()
                .all(|f| f.state == FireState::Scheduled && f.schedule_version == 3)
        );
        assert_eq!(
            fires.last().unwrap().next_fire_at,
            Some(t("2026-03-01T00:00:50Z"))
        );
    }

    #[test]
    fn fires_older_than_the_catchup_window_are_recorded_missed_and_newer_ones_run_late() {
        let d = due(60, 120, "2026-03-01T00:00:00Z");
        let fires = plan_fires(
            &d,
            t("2026-03-01T00:05:00Z"),
            t("2026-03-01T00:05:00Z"),
            100,
        );
        let states: Vec<_> = fires
            .iter()
            .map(|f| (f.fire_time.format("%M").to_string(), f.state))
            .collect();
        let missed = FireState::Skipped(SkipReason::Missed);
        assert_eq!(
            states,
            [
                ("00".into(), missed),
                ("01".into(), missed),
                ("02".into(), missed),
                ("03".into(), FireState::Scheduled),
                ("04".into(), FireState::Scheduled),
                ("05".into(), FireState::Scheduled)
            ]
        );
    }

    #[test]
    fn a_round_is_bounded_and_the_next_one_resumes_where_it_stopped() {
        let d = due(1, 0, "2026-03-01T00:00:00Z");
        let fires = plan_fires(&d, t("2026-03-02T00:00:00Z"), t("2026-03-02T00:00:00Z"), 5);
        assert_eq!(fires.len(), 5);
        assert_eq!(fires[4].next_fire_at, Some(t("2026-03-01T00:00:05Z")));
    }

    #[test]
    fn nothing_is_planned_before_the_next_fire() {
        let d = due(60, 60, "2026-03-01T01:00:00Z");
        assert!(
            plan_fires(&d, t("2026-03-01T00:00:00Z"), t("2026-03-01T00:05:00Z"), 10).is_empty()
        );
    }
}
