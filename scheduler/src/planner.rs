//! Planning decisions, as pure functions of a schedule and the time: which fires of a due
//! schedule to record now, and whether each runs or is recorded `skipped/missed` (the
//! catch-up rule); and, when a shard is recovered, which fires a previous owner left planned
//! are now missed.
//!
//! No I/O and no clock here: the caller passes "now" and the horizon, so every rule is tested
//! with fixed times. It never decides overlap: that needs the runs in progress, and is decided
//! where a fire starts (`kairos_domain::overlap`, applied by the store's firing batch).
//!
//! The catch-up rule (docs/schedules.md): a fire more than `catchup_window_seconds` late is
//! missed; one at most `ON_TIME_TOLERANCE_SECONDS` late runs (a failover or a restart delays
//! it, never costs it); of the fires in between, the latest `catchup_max_runs` run late and
//! the older ones are missed — never a silent cliff, never an unbounded pile-up.

use chrono::{DateTime, Duration, Utc};
use kairos_domain::{RunId, ScheduleSpec, SkipReason};
use kairos_store::{DueSchedule, FireState, Materialize, Schedule};

/// Most fires of one schedule recorded in one planning round; the rest wait for the next
/// round (bounded work per round, even for a 1 s schedule after a day of downtime).
pub const MAX_FIRES_PER_ROUND: usize = 1000;

/// The instants that sort a fire by lateness at `now`.
#[derive(Debug, Clone, Copy)]
struct Lateness {
    /// Fires before this are missed (outside the window).
    missed_before: DateTime<Utc>,
    /// Fires before this (and not missed) are late: the cap applies to them.
    late_before: DateTime<Utc>,
    cap: usize,
}

impl Lateness {
    fn of(spec: &ScheduleSpec, now: DateTime<Utc>) -> Self {
        let window = Duration::seconds(i64::from(spec.catchup_window_seconds));
        let tolerance = Duration::seconds(i64::from(ScheduleSpec::ON_TIME_TOLERANCE_SECONDS));
        Self {
            missed_before: now - window,
            // Within a window narrower than the tolerance every fire kept is on time.
            late_before: (now - tolerance).max(now - window),
            cap: spec.catchup_max_runs as usize,
        }
    }

    fn is_missed(&self, fire: DateTime<Utc>) -> bool {
        fire < self.missed_before
    }

    fn is_late(&self, fire: DateTime<Utc>) -> bool {
        !self.is_missed(fire) && fire < self.late_before
    }

    /// Of `late` late fires, followed by `newer` later ones that are late too, how many of the
    /// oldest are missed: all but the latest `cap` of them all.
    fn missed_of(&self, late: usize, newer: usize) -> usize {
        let may_run = self.cap.saturating_sub(newer);
        late.saturating_sub(may_run)
    }
}

/// The fires of `due` from its `next_fire_at` up to `until` (inclusive), at most `max`, on
/// its timeline (jitter offset, bounds, `max_runs`), each with the catch-up rule applied at
/// `now`. Each fire carries the schedule's next fire after it, so the store advances
/// `next_fire_at` past the batch.
pub fn plan_fires(
    due: &DueSchedule,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    max: usize,
) -> Vec<Materialize> {
    let rule = Lateness::of(&due.spec, now);
    let mut timeline = due.timeline();
    let mut fires = Vec::new();
    let mut next = (timeline.remaining() != Some(0)).then_some(due.next_fire_at);
    while let Some(fire_time) = next.filter(|t| *t <= until) {
        if fires.len() == max {
            break;
        }
        timeline = timeline.after_fire();
        next = timeline.next_after(fire_time);
        let state = if rule.is_missed(fire_time) {
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
    // The cap: of the late fires, only the latest `cap` of all the schedule's late fires run
    // (those of later rounds included, counted up to the cap).
    let late: Vec<usize> = (0..fires.len())
        .filter(|i| rule.is_late(fires[*i].fire_time))
        .collect();
    if !late.is_empty() {
        let newer = next.map_or(0, |first| {
            std::iter::once(first)
                .chain(timeline.after_fire().fires_after(first))
                .take_while(|t| rule.is_late(*t))
                .take(rule.cap)
                .count()
        });
        for i in late.iter().take(rule.missed_of(late.len(), newer)) {
            fires[*i].state = FireState::Skipped(SkipReason::Missed);
        }
    }
    fires
}

/// When a shard is recovered: which of the fires a previous owner left `scheduled` for
/// `schedule` (`planned`, at its current version) are now missed under the catch-up rule at
/// `now`. The schedule's fires not planned yet (from its `next_fire_at`) count as newer: the
/// planner applies the same rule to them, so together at most `catchup_max_runs` late fires
/// run.
pub fn missed_on_recovery(
    schedule: &Schedule,
    planned: &[(RunId, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> Vec<RunId> {
    let rule = Lateness::of(&schedule.spec, now);
    let mut planned = planned.to_vec();
    planned.sort_by_key(|(id, t)| (*t, *id));
    let mut missed: Vec<RunId> = planned
        .iter()
        .filter(|(_, t)| rule.is_missed(*t))
        .map(|(id, _)| *id)
        .collect();
    let late: Vec<RunId> = planned
        .iter()
        .filter(|(_, t)| rule.is_late(*t))
        .map(|(id, _)| *id)
        .collect();
    let timeline = schedule.timeline();
    let newer = schedule.next_fire_at.map_or(0, |first| {
        std::iter::once(first)
            .chain(timeline.after_fire().fires_after(first))
            .take_while(|t| rule.is_late(*t))
            .take(rule.cap)
            .count()
    });
    missed.extend(late.iter().take(rule.missed_of(late.len(), newer)));
    missed
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
            fire_count: 0,
        }
    }

    /// An every-minute schedule with the given catch-up window and cap.
    fn minutely(window: i64, cap: i64, next: &str) -> DueSchedule {
        let mut d = due(60, window, next);
        d.spec.catchup_max_runs = u32::try_from(cap).unwrap();
        d
    }

    fn states(fires: &[Materialize]) -> Vec<(String, FireState)> {
        fires
            .iter()
            .map(|f| (f.fire_time.format("%H:%M:%S").to_string(), f.state))
            .collect()
    }

    const MISSED: FireState = FireState::Skipped(SkipReason::Missed);
    const RUNS: FireState = FireState::Scheduled;

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
        let mut d = due(60, 120, "2026-03-01T00:00:00Z");
        d.spec.catchup_max_runs = 10;
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
    fn only_the_latest_late_fires_up_to_the_cap_run_and_the_older_are_missed() {
        // Down from 00:00 to 00:10; every minute, a one-hour window, the default cap of 1.
        let d = minutely(3600, 1, "2026-03-01T00:00:00Z");
        let fires = plan_fires(
            &d,
            t("2026-03-01T00:10:00Z"),
            t("2026-03-01T00:11:00Z"),
            100,
        );
        let mut expected: Vec<(String, FireState)> =
            (0..9).map(|m| (format!("00:{m:02}:00"), MISSED)).collect();
        expected.push(("00:09:00".into(), RUNS)); // the latest late fire runs
        expected.push(("00:10:00".into(), RUNS)); // on time
        expected.push(("00:11:00".into(), RUNS)); // ahead
        assert_eq!(states(&fires), expected);

        let d = minutely(3600, 3, "2026-03-01T00:00:00Z");
        let fires = plan_fires(
            &d,
            t("2026-03-01T00:10:00Z"),
            t("2026-03-01T00:10:00Z"),
            100,
        );
        let run_late: Vec<_> = states(&fires)
            .into_iter()
            .filter(|(_, s)| *s == RUNS)
            .map(|(t, _)| t)
            .collect();
        assert_eq!(run_late, ["00:07:00", "00:08:00", "00:09:00", "00:10:00"]);
    }

    #[test]
    fn the_cap_holds_across_rounds_that_each_see_part_of_the_backlog() {
        // 20 late fires, rounds of 5: the first rounds see only fires older than the newest
        // three, so they record them all missed; the last round runs the newest three.
        let mut d = minutely(3600, 3, "2026-03-01T00:00:00Z");
        let now = t("2026-03-01T00:20:00Z");
        let mut ran = Vec::new();
        let mut missed = 0;
        for _ in 0..5 {
            let fires = plan_fires(&d, now, now - Duration::minutes(1), 5);
            for f in &fires {
                match f.state {
                    RUNS => ran.push(f.fire_time.format("%M").to_string()),
                    _ => missed += 1,
                }
            }
            let Some(last) = fires.last() else { break };
            d.next_fire_at = last.next_fire_at.unwrap();
            d.fire_count += fires.len() as u64;
        }
        assert_eq!(ran, ["17", "18", "19"]);
        assert_eq!(missed, 17);
    }

    #[test]
    fn a_fire_within_the_tolerance_is_on_time_whatever_the_cap() {
        // A failover delays fires by a few seconds: even with a cap of 0 they all run.
        let mut d = due(5, 900, "2026-03-01T00:00:00Z");
        d.spec.catchup_max_runs = 0;
        let fires = plan_fires(
            &d,
            t("2026-03-01T00:00:25Z"),
            t("2026-03-01T00:00:25Z"),
            100,
        );
        assert_eq!(fires.len(), 6);
        assert!(fires.iter().all(|f| f.state == RUNS));
        // Beyond the tolerance, a cap of 0 runs no late fire at all.
        let fires = plan_fires(
            &d,
            t("2026-03-01T00:01:00Z"),
            t("2026-03-01T00:01:00Z"),
            100,
        );
        let late_ran = fires
            .iter()
            .filter(|f| f.state == RUNS && f.fire_time < t("2026-03-01T00:00:30Z"))
            .count();
        assert_eq!(late_ran, 0);
    }

    #[test]
    fn a_window_narrower_than_the_tolerance_still_bounds_lateness() {
        let d = due(5, 10, "2026-03-01T00:00:00Z");
        let fires = plan_fires(
            &d,
            t("2026-03-01T00:00:20Z"),
            t("2026-03-01T00:00:20Z"),
            100,
        );
        assert_eq!(
            states(&fires),
            [
                ("00:00:00".to_owned(), MISSED),
                ("00:00:05".to_owned(), MISSED),
                ("00:00:10".to_owned(), RUNS),
                ("00:00:15".to_owned(), RUNS),
                ("00:00:20".to_owned(), RUNS),
            ]
        );
    }

    #[test]
    fn planned_fires_carry_the_jitter_offset_and_stop_at_max_runs() {
        let mut d = due(60, 60, "2026-03-01T00:00:00Z");
        d.spec.jitter_seconds = 30;
        d.spec.max_runs = Some(3);
        let offset = d.spec.jitter_offset(d.id);
        d.next_fire_at = t("2026-03-01T00:00:00Z") + offset;
        d.fire_count = 1;
        let fires = plan_fires(
            &d,
            t("2026-03-01T00:00:00Z"),
            t("2026-03-01T01:00:00Z"),
            100,
        );
        let times: Vec<_> = fires.iter().map(|f| f.fire_time).collect();
        assert_eq!(
            times,
            [
                t("2026-03-01T00:00:00Z") + offset,
                t("2026-03-01T00:01:00Z") + offset
            ],
            "two fires were left of three"
        );
        assert_eq!(fires[0].next_fire_at, Some(times[1]));
        assert_eq!(
            fires[1].next_fire_at, None,
            "the last fire ends the schedule"
        );
    }

    #[test]
    fn recovery_misses_old_planned_fires_and_counts_the_unplanned_ones_as_newer() {
        let spec = minutely(3600, 2, "2026-03-01T00:00:00Z").spec;
        let mut schedule = Schedule {
            id: ScheduleId::generate(),
            tenant_id: TenantId::generate(),
            job_id: JobId::generate(),
            shard: kairos_domain::ShardId::new(0).unwrap(),
            spec,
            paused: false,
            pause_note: None,
            paused_at: None,
            version: 3,
            next_fire_at: Some(t("2026-03-01T00:05:00Z")),
            fire_count: 5,
            last_fire_at: None,
            created_at: t("2026-01-01T00:00:00Z"),
            updated_at: t("2026-01-01T00:00:00Z"),
        };
        let planned: Vec<(RunId, DateTime<Utc>)> = (0..5)
            .map(|m| (RunId::generate(), t(&format!("2026-03-01T00:0{m}:00Z"))))
            .collect();
        // At 00:10 the unplanned fires 00:05..00:09 are late too and newer: every planned one
        // is missed (the planner runs the newest two of the unplanned).
        let missed = missed_on_recovery(&schedule, &planned, t("2026-03-01T00:10:00Z"));
        assert_eq!(missed.len(), 5);
        // At 00:05:10 the unplanned 00:05 fire is on time: the newest two planned ones run.
        let missed = missed_on_recovery(&schedule, &planned, t("2026-03-01T00:05:10Z"));
        assert_eq!(
            missed,
            planned[..3].iter().map(|(id, _)| *id).collect::<Vec<_>>()
        );
        // Nothing left to plan: the planned ones are the newest.
        schedule.next_fire_at = None;
        let missed = missed_on_recovery(&schedule, &planned, t("2026-03-01T00:10:00Z"));
        assert_eq!(missed.len(), 3);
        // Fires older than the window are missed whatever the cap.
        schedule.spec.catchup_window_seconds = 150;
        let missed = missed_on_recovery(&schedule, &planned, t("2026-03-01T00:05:10Z"));
        assert_eq!(missed.len(), 3, "00:00..00:02 are beyond the window");
    }

    #[test]
    fn nothing_is_planned_before_the_next_fire() {
        let d = due(60, 60, "2026-03-01T01:00:00Z");
        assert!(
            plan_fires(&d, t("2026-03-01T00:00:00Z"), t("2026-03-01T00:05:00Z"), 10).is_empty()
        );
    }
}
