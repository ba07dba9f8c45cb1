//! When to run a job: cron (with seconds), fixed interval, or one-off, in an IANA time zone.
//!
//! Every function here is pure: the current time is a parameter, never read from a clock, so
//! fire-time evaluation is testable across DST transitions. Cron evaluation is croner's, whose
//! DST rules we adopt and document (`docs/schedules.md`): a fixed local time that falls in a
//! spring-forward gap fires at the first valid instant after the gap that day; one that occurs
//! twice in a fall-back fires once, at its first occurrence; wildcard/step fields fire for each
//! real instant that matches.

use std::str::FromStr;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

use crate::FieldError;

/// A checked cron pattern: 5 fields (minute resolution), 6 fields (leading seconds) or a
/// macro such as `@hourly`; day-of-month and day-of-week combine with OR as in Vixie cron.
#[derive(Debug, Clone)]
pub struct CronSpec {
    pattern: String,
    // Boxed: croner's parsed pattern is large, and `Cadence` is moved around a lot.
    cron: Box<Cron>,
}

impl PartialEq for CronSpec {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}
impl Eq for CronSpec {}

impl CronSpec {
    pub const MAX_LEN: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let pattern = raw.trim();
        let field = |reason: String| FieldError::new("cron", reason);
        if pattern.is_empty() {
            return Err(field("must not be empty".into()));
        }
        if pattern.len() > Self::MAX_LEN {
            return Err(field(format!(
                "must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if pattern.eq_ignore_ascii_case("@reboot") {
            return Err(field(
                "@reboot is not supported: a cloud job has no machine to boot".into(),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| {
                field(format!(
                    "'{pattern}' is not a valid cron expression ({e}); expected 5 fields \
                     'min hour dom mon dow', 6 fields with leading seconds, or a macro like @hourly"
                ))
            })?;
        // A pattern such as `0 0 30 2 *` parses but never fires: say so now, not never.
        let probe = DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default();
        cron.find_next_occurrence(&probe, false)
            .map_err(|_| field(format!("'{pattern}' never matches any date")))?;
        Ok(Self {
            pattern: pattern.to_owned(),
            cron: Box::new(cron),
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The first match strictly after (or, if `inclusive`, at) `after`, evaluated in `tz`.
    fn next(
        &self,
        after: DateTime<Utc>,
        tz: chrono_tz::Tz,
        inclusive: bool,
    ) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz);
        self.cron
            .find_next_occurrence(&local, inclusive)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// An IANA time zone such as `Europe/Paris`; `UTC` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    pub const UTC: TimeZone = TimeZone(chrono_tz::Tz::UTC);

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        chrono_tz::Tz::from_str(raw.trim()).map(Self).map_err(|_| {
            FieldError::new(
                "timezone",
                format!(
                    "unknown time zone '{raw}'; use an IANA name such as 'Europe/Paris' or 'UTC'"
                ),
            )
        })
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.0
    }
}

/// What a concurrent fire does when the previous run of the schedule is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapPolicy {
    /// Start another run alongside.
    Allow,
    /// Do not start; record the fire as `skipped` with reason `overlap`. The default.
    Skip,
    /// Keep at most one fire waiting and start it when the running one ends.
    BufferOne,
    /// Cancel the running one, then start.
    Replace,
}

impl OverlapPolicy {
    pub const DEFAULT: OverlapPolicy = OverlapPolicy::Skip;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "allow" => Ok(Self::Allow),
            "skip" => Ok(Self::Skip),
            "buffer_one" => Ok(Self::BufferOne),
            "replace" => Ok(Self::Replace),
            _ => Err(FieldError::new(
                "overlap_policy",
                format!("unknown policy '{raw}'; expected one of allow, skip, buffer_one, replace"),
            )),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Skip => "skip",
            Self::BufferOne => "buffer_one",
            Self::Replace => "replace",
        }
    }
}

/// How the fire times of a schedule are generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// Cron pattern evaluated in the schedule's time zone.
    Cron(CronSpec),
    /// Every `seconds`, at `anchor + k·seconds`: anchored, so it never drifts.
    Interval { seconds: u32, anchor: DateTime<Utc> },
    /// Once, at this instant.
    At(DateTime<Utc>),
}

/// One upcoming fire, in UTC and in the schedule's local time (with its offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePreview {
    pub utc: DateTime<Utc>,
    pub local: String,
}

/// A checked schedule: a cadence, a time zone, optional bounds and its policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub cadence: Cadence,
    pub timezone: TimeZone,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub overlap_policy: OverlapPolicy,
    pub catchup_window_seconds: u32,
    pub jitter_seconds: u32,
}

impl ScheduleSpec {
    pub const DEFAULT_CATCHUP_WINDOW_SECONDS: u32 = 900;
    pub const MAX_CATCHUP_WINDOW_SECONDS: u32 = 7 * 86_400;
    pub const MAX_JITTER_SECONDS: u32 = 3_600;
    pub const MAX_INTERVAL_SECONDS: u32 = 366 * 86_400;
    /// One-off and start times may lie at most this far ahead (the product keeps a year).
    pub const MAX_AHEAD_DAYS: i64 = 366;

    /// The first fire strictly after `after`, within `start_at..=end_at`; `None` when the
    /// schedule has no fire left.
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = match (&self.cadence, self.start_at) {
            (Cadence::At(at), _) => (*at > after).then_some(*at),
            (Cadence::Interval { seconds, anchor }, _) => {
                let step = i64::from(*seconds) * 1000;
                let from_anchor = (after - *anchor).num_milliseconds();
                let k = if from_anchor < 0 {
                    0
                } else {
                    from_anchor / step + 1
                };
                Some(*anchor + Duration::milliseconds(k * step))
            }
            (Cadence::Cron(cron), Some(start)) if start > after => {
                cron.next(start, self.timezone.tz(), true)
            }
            (Cadence::Cron(cron), _) => cron.next(after, self.timezone.tz(), false),
        }?;
        let next = match self.start_at {
            Some(start) if next < start => {
                return self.next_fire_after(start - Duration::milliseconds(1));
            }
            _ => next,
        };
        match self.end_at {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    /// Up to `n` fires strictly after `after`, with their local-time rendering.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<FirePreview> {
        let tz = self.timezone.tz();
        std::iter::successors(self.next_fire_after(after), |t| self.next_fire_after(*t))
            .take(n)
            .map(|utc| FirePreview {
                utc,
                local: utc
                    .with_timezone(&tz)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, false),
            })
            .collect()
    }

    /// Fires in `[from, to)`, at most `limit` of them (backfill). The bool is true when more
    /// fires remained past the limit.
    pub fn fires_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let mut fires = Vec::new();
        let mut cursor = self.next_fire_after(from - Duration::milliseconds(1));
        while let Some(t) = cursor.filter(|t| *t < to) {
            if fires.len() == limit {
                return (fires, true);
            }
            fires.push(t);
            cursor = self.next_fire_after(t);
        }
        (fires, false)
    }
}

/// Schedule fields as a client sent them (create) or wants them changed (patch); unchecked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleDraft {
    pub cron: Option<String>,
    pub interval_seconds: Option<i64>,
    pub at: Option<String>,
    pub timezone: Option<String>,
    pub start_at: Option<String>,
    pub end_at: Option<String>,
    pub overlap_policy: Option<String>,
    pub catchup_window_seconds: Option<i64>,
    pub jitter_seconds: Option<i64>,
}

/// Parses an RFC 3339 instant for `field`, with a message that shows the expected shape.
pub fn parse_instant(field: &str, raw: &str) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            FieldError::new(
                field,
                format!("'{raw}' is not an RFC 3339 time such as 2026-01-31T09:00:00Z"),
            )
        })
}

fn parse_opt_instant(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, FieldError> {
    raw.map(|r| parse_instant(field, r)).transpose()
}

fn bounded(field: &str, value: i64, min: u32, max: u32) -> Result<u32, FieldError> {
    if value < i64::from(min) || value > i64::from(max) {
        return Err(FieldError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(value as u32)
}

impl ScheduleDraft {
    /// Checks a new schedule created at `now`.
    pub fn parse(self, now: DateTime<Utc>) -> Result<ScheduleSpec, FieldError> {
        self.build(None, now)
    }

    /// Applies this draft as a patch over `current`: present fields replace, absent ones keep.
    /// Naming any of `cron`, `interval_seconds`, `at` replaces the cadence.
    pub fn patch(
        self,
        current: &ScheduleSpec,
        now: DateTime<Utc>,
    ) -> Result<ScheduleSpec, FieldError> {
        self.build(Some(current), now)
    }

    fn build(
        self,
        current: Option<&ScheduleSpec>,
        now: DateTime<Utc>,
    ) -> Result<ScheduleSpec, FieldError> {
        let horizon = now + Duration::days(ScheduleSpec::MAX_AHEAD_DAYS);
        let timezone = match (self.timezone.as_deref(), current) {
            (Some(raw), _) => TimeZone::parse(raw)?,
            (None, Some(c)) => c.timezone,
            (None, None) => TimeZone::UTC,
        };
        let start_at = match parse_opt_instant("start_at", self.start_at.as_deref())? {
            Some(s) if s > horizon => {
                return Err(FieldError::new(
                    "start_at",
                    "must be at most 366 days ahead",
                ));
            }
            Some(s) => Some(s),
            None => current.and_then(|c| c.start_at),
        };
        let end_at =
            parse_opt_instant("end_at", self.end_at.as_deref())?.or(current.and_then(|c| c.end_at));
        if let (Some(s), Some(e)) = (start_at, end_at)
            && e <= s
        {
            return Err(FieldError::new("end_at", "must be after start_at"));
        }

        let named = [
            self.cron.is_some(),
            self.interval_seconds.is_some(),
            self.at.is_some(),
        ];
        let cadence = match (named.iter().filter(|n| **n).count(), current) {
            (0, Some(c)) => match &c.cadence {
                // A new start_at re-anchors an interval.
                Cadence::Interval { seconds, anchor } => Cadence::Interval {
                    seconds: *seconds,
                    anchor: if self.start_at.is_some() {
                        start_at.unwrap_or(*anchor)
                    } else {
                        *anchor
                    },
                },
                other => other.clone(),
            },
            (1, _) => {
                if let Some(raw) = self.cron.as_deref() {
                    Cadence::Cron(CronSpec::parse(raw)?)
                } else if let Some(secs) = self.interval_seconds {
                    let seconds = bounded(
                        "interval_seconds",
                        secs,
                        1,
                        ScheduleSpec::MAX_INTERVAL_SECONDS,
                    )?;
                    let anchor = start_at.unwrap_or_else(|| truncate_to_second(now));
                    Cadence::Interval { seconds, anchor }
                } else {
                    let at = parse_instant("at", self.at.as_deref().unwrap_or_default())?;
                    if at < now - Duration::seconds(1) {
                        return Err(FieldError::new("at", "is in the past"));
                    }
                    if at > horizon {
                        return Err(FieldError::new("at", "must be at most 366 days ahead"));
                    }
                    Cadence::At(at)
                }
            }
            _ => {
                return Err(FieldError::new(
                    "cron",
                    "exactly one of cron, interval_seconds or at is required",
                ));
            }
        };

        let overlap_policy = match (self.overlap_policy.as_deref(), current) {
            (Some(raw), _) => OverlapPolicy::parse(raw)?,
            (None, Some(c)) => c.overlap_policy,
            (None, None) => OverlapPolicy::DEFAULT,
        };
        let catchup_window_seconds = match (self.catchup_window_seconds, current) {
            (Some(v), _) => bounded(
                "catchup_window_seconds",
                v,
                0,
                ScheduleSpec::MAX_CATCHUP_WINDOW_SECONDS,
            )?,
            (None, Some(c)) => c.catchup_window_seconds,
            (None, None) => ScheduleSpec::DEFAULT_CATCHUP_WINDOW_SECONDS,
        };
        let jitter_seconds = match (self.jitter_seconds, current) {
            (Some(v), _) => bounded("jitter_seconds", v, 0, ScheduleSpec::MAX_JITTER_SECONDS)?,
            (None, Some(c)) => c.jitter_seconds,
            (None, None) => 0,
        };
        if let Cadence::Interval { seconds, .. } = cadence
            && jitter_seconds >= seconds
            && jitter_seconds > 0
        {
            return Err(FieldError::new(
                "jitter_seconds",
                format!("must be less than interval_seconds ({seconds})"),
            ));
        }
        Ok(ScheduleSpec {
            cadence,
            timezone,
            start_at,
            end_at,
            overlap_policy,
            catchup_window_seconds,
            jitter_seconds,
        })
    }
}

fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant("t", s).unwrap()
    }

    fn cron(pattern: &str, tz: &str) -> ScheduleSpec {
        ScheduleDraft {
            cron: Some(pattern.into()),
            timezone: Some(tz.into()),
            ..ScheduleDraft::default()
        }
        .parse(t("2026-01-01T00:00:00Z"))
        .unwrap()
    }

    fn utc_list(spec: &ScheduleSpec, after: &str, n: usize) -> Vec<String> {
        spec.upcoming(t(after), n)
            .into_iter()
            .map(|p| p.utc.to_rfc3339())
            .collect()
    }

    #[test]
    fn six_field_cron_fires_on_seconds() {
        let spec = cron("*/15 * * * * *", "UTC");
        assert_eq!(
            utc_list(&spec, "2026-03-01T10:00:00Z", 3),
            [
                "2026-03-01T10:00:15+00:00",
                "2026-03-01T10:00:30+00:00",
                "2026-03-01T10:00:45+00:00"
            ]
        );
    }

    #[test]
    fn five_field_cron_and_macros_fire_on_minutes() {
        assert_eq!(
            utc_list(&cron("30 9 * * *", "UTC"), "2026-03-01T10:00:00Z", 1),
            ["2026-03-02T09:30:00+00:00"]
        );
        assert_eq!(
            utc_list(&cron("@hourly", "UTC"), "2026-03-01T10:00:00Z", 1),
            ["2026-03-01T11:00:00+00:00"]
        );
    }

    #[test]
    fn cron_is_evaluated_in_the_schedule_time_zone() {
        // 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
        let spec = cron("0 9 * * *", "Europe/Paris");
        assert_eq!(
            utc_list(&spec, "2026-01-10T12:00:00Z", 1),
            ["2026-01-11T08:00:00+00:00"]
        );
        assert_eq!(
            utc_list(&spec, "2026-07-10T12:00:00Z", 1),
            ["2026-07-11T07:00:00+00:00"]
        );
        let preview = spec.upcoming(t("2026-07-10T12:00:00Z"), 1);
        assert_eq!(preview[0].local, "2026-07-11T09:00:00+02:00");
    }

    #[test]
    fn a_fixed_time_in_the_spring_forward_gap_fires_once_right_after_the_gap() {
        // New York skips 02:00-03:00 on 2026-03-08.
        let spec = cron("30 2 * * *", "America/New_York");
        let fires = utc_list(&spec, "2026-03-07T12:00:00Z", 3);
        assert_eq!(fires[0], "2026-03-08T07:00:00+00:00"); // 03:00 EDT, the first instant after the gap
        assert_eq!(fires.len(), 3);
        let locals: Vec<_> = spec
            .upcoming(t("2026-03-07T12:00:00Z"), 3)
            .into_iter()
            .map(|p| p.local)
            .collect();
        assert_eq!(locals[0], "2026-03-08T03:00:00-04:00");
        assert_eq!(locals[1], "2026-03-09T02:30:00-04:00");
    }

    #[test]
    fn a_fixed_time_in_the_fall_back_overlap_fires_only_once() {
        // New York repeats 01:00-02:00 on 2026-11-01.
        let spec = cron("30 1 * * *", "America/New_York");
        let locals: Vec<_> = spec
            .upcoming(t("2026-10-31T12:00:00Z"), 2)
            .into_iter()
            .map(|p| p.local)
            .collect();
        assert_eq!(
            locals,
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
    }

    #[test]
    fn interval_schedules_are_anchored_and_do_not_drift() {
        let spec = ScheduleDraft {
            interval_seconds: Some(90),
            start_at: Some("2026-05-01T00:00:00Z".into()),
            ..ScheduleDraft::default()
        }
        .parse(t("2026-04-01T00:00:00Z"))
        .unwrap();
        assert_eq!(
            utc_list(&spec, "2026-04-15T00:00:00Z", 1),
            ["2026-05-01T00:00:00+00:00"]
        );
        assert_eq!(
            utc_list(&spec, "2026-05-01T00:00:00Z", 2),
            ["2026-05-01T00:01:30+00:00", "2026-05-01T00:03:00+00:00"]
        );
        assert_eq!(
            utc_list(&spec, "2026-05-01T00:01:29.999Z", 1),
            ["2026-05-01T00:01:30+00:00"]
        );
    }

    #[test]
    fn a_one_off_fires_once_and_then_never() {
        let spec = ScheduleDraft {
            at: Some("2026-06-01T12:00:00Z".into()),
            ..ScheduleDraft::default()
        }
        .parse(t("2026-05-01T00:00:00Z"))
        .unwrap();
        assert_eq!(
            utc_list(&spec, "2026-05-01T00:00:00Z", 5),
            ["2026-06-01T12:00:00+00:00"]
        );
        assert!(spec.next_fire_after(t("2026-06-01T12:00:00Z")).is_none());
    }

    #[test]
    fn start_and_end_bound_the_fires() {
        let spec = ScheduleDraft {
            cron: Some("0 0 * * *".into()),
            start_at: Some("2026-02-10T00:00:00Z".into()),
            end_at: Some("2026-02-12T00:00:00Z".into()),
            ..ScheduleDraft::default()
        }
        .parse(t("2026-01-01T00:00:00Z"))
        .unwrap();
        assert_eq!(
            utc_list(&spec, "2026-01-01T00:00:00Z", 10),
            [
                "2026-02-10T00:00:00+00:00",
                "2026-02-11T00:00:00+00:00",
                "2026-02-12T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn fires_between_is_half_open_and_bounded() {
        let spec = cron("0 * * * *", "UTC");
        let (fires, more) =
            spec.fires_between(t("2026-03-01T00:00:00Z"), t("2026-03-01T03:00:00Z"), 10);
        assert_eq!(fires.len(), 3);
        assert!(!more);
        let (fires, more) =
            spec.fires_between(t("2026-03-01T00:00:00Z"), t("2026-03-02T00:00:00Z"), 5);
        assert_eq!(fires.len(), 5);
        assert!(more);
    }

    #[test]
    fn bad_schedules_name_the_field() {
        let now = t("2026-01-01T00:00:00Z");
        let field = |d: ScheduleDraft| d.parse(now).unwrap_err().field;
        assert_eq!(
            field(ScheduleDraft {
                cron: Some("61 * * * *".into()),
                ..Default::default()
            }),
            "cron"
        );
        assert_eq!(
            field(ScheduleDraft {
                cron: Some("* * *".into()),
                ..Default::default()
            }),
            "cron"
        );
        assert_eq!(
            field(ScheduleDraft {
                cron: Some("0 0 30 2 *".into()),
                ..Default::default()
            }),
            "cron"
        );
        assert_eq!(field(ScheduleDraft::default()), "cron");
        assert_eq!(
            field(ScheduleDraft {
                cron: Some("@daily".into()),
                interval_seconds: Some(5),
                ..Default::default()
            }),
            "cron"
        );
        assert_eq!(
            field(ScheduleDraft {
                cron: Some("@daily".into()),
                timezone: Some("Mars/Olympus".into()),
                ..Default::default()
            }),
            "timezone"
        );
        assert_eq!(
            field(ScheduleDraft {
                interval_seconds: Some(0),
                ..Default::default()
            }),
            "interval_seconds"
        );
        assert_eq!(
            field(ScheduleDraft {
                at: Some("tomorrow".into()),
                ..Default::default()
            }),
            "at"
        );
        assert_eq!(
            field(ScheduleDraft {
                at: Some("2025-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            "at"
        );
        assert_eq!(
            field(ScheduleDraft {
                at: Some("2028-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            "at"
        );
        assert_eq!(
            field(ScheduleDraft {
                cron: Some("@daily".into()),
                overlap_policy: Some("queue".into()),
                ..Default::default()
            }),
            "overlap_policy"
        );
        assert_eq!(
            field(ScheduleDraft {
                cron: Some("@daily".into()),
                start_at: Some("2026-02-01T00:00:00Z".into()),
                end_at: Some("2026-01-15T00:00:00Z".into()),
                ..Default::default()
            }),
            "end_at"
        );
        assert_eq!(
            field(ScheduleDraft {
                interval_seconds: Some(60),
                jitter_seconds: Some(60),
                ..Default::default()
            }),
            "jitter_seconds"
        );
    }

    #[test]
    fn a_patch_keeps_unnamed_fields_and_can_replace_the_cadence() {
        let now = t("2026-01-01T00:00:00Z");
        let current = cron("0 9 * * *", "Europe/Paris");
        let patched = ScheduleDraft {
            interval_seconds: Some(60),
            ..Default::default()
        }
        .patch(&current, now)
        .unwrap();
        assert_eq!(patched.timezone.name(), "Europe/Paris");
        assert!(matches!(
            patched.cadence,
            Cadence::Interval { seconds: 60, .. }
        ));
        let tz_only = ScheduleDraft {
            timezone: Some("Asia/Tokyo".into()),
            ..Default::default()
        }
        .patch(&current, now)
        .unwrap();
        assert_eq!(tz_only.cadence, current.cadence);
    }

    const ZONES: [&str; 5] = [
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "Australia/Sydney",
        "Asia/Kolkata",
    ];
    const PATTERNS: [&str; 6] = [
        "*/7 * * * * *",
        "0 */5 * * * *",
        "30 1 * * *",
        "0 2 * * *",
        "15 2,3 * * 0",
        "0 0 1 * *",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Across 2026–2028 (all their DST transitions), fires strictly increase, never repeat,
        /// and each is exactly croner's next occurrence in the zone.
        #[test]
        fn cron_fires_are_strictly_increasing_and_match_croner(
            zone in 0usize..ZONES.len(),
            pattern in 0usize..PATTERNS.len(),
            start in 1_767_225_600i64..1_861_920_000i64,
        ) {
            let spec = cron(PATTERNS[pattern], ZONES[zone]);
            let tz: chrono_tz::Tz = ZONES[zone].parse().unwrap();
            let reference = CronParser::builder().seconds(Seconds::Optional).build().parse(PATTERNS[pattern]).unwrap();
            let mut prev = DateTime::from_timestamp(start, 0).unwrap();
            for _ in 0..20 {
                let Some(next) = spec.next_fire_after(prev) else { break };
                prop_assert!(next > prev, "{next} <= {prev}");
                let expected = reference.find_next_occurrence(&prev.with_timezone(&tz), false).unwrap().with_timezone(&Utc);
                prop_assert_eq!(next, expected);
                prev = next;
            }
        }

        #[test]
        fn interval_fires_sit_on_the_anchor_grid(secs in 1i64..100_000, offset in 0i64..10_000_000) {
            let now = t("2026-01-01T00:00:00Z");
            let spec = ScheduleDraft { interval_seconds: Some(secs), ..Default::default() }.parse(now).unwrap();
            let after = now + Duration::seconds(offset);
            let next = spec.next_fire_after(after).unwrap();
            prop_assert!(next > after);
            prop_assert!(next - after <= Duration::seconds(secs));
            prop_assert_eq!((next - now).num_seconds() % secs, 0);
        }
    }
}
