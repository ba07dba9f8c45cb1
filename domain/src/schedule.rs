//! When to run a job: cron (with seconds), fixed interval, or one-off, in an IANA time zone,
//! within optional bounds, shifted by the schedule's jitter offset and cut off after `max_runs`
//! fires.
//!
//! Every function here is pure: the current time is a parameter, never read from a clock, so
//! fire-time evaluation is testable across DST transitions. Cron evaluation is croner's, whose
//! DST rules we adopt and document (`docs/schedules.md`): a fixed local time that falls in a
//! spring-forward gap fires at the first valid instant after the gap that day; one that occurs
//! twice in a fall-back fires once, at its first occurrence; wildcard/step fields fire for each
//! real instant that matches. Intervals and one-offs are UTC arithmetic, blind to DST.
//!
//! A schedule's fires come from its [`Timeline`] (`ScheduleSpec::timeline`), never from the
//! cadence alone: it must never hand out a fire without the jitter offset and the run limit.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, SecondsFormat, TimeZone as _, Utc};
use croner::{
    Cron, JobType,
    parser::{CronParser, Seconds, Year},
};

use crate::{FieldError, ScheduleId, stable_hash};

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

    /// Whether the seconds, minutes and hours fields each name one value (`30 2 * * *`): such
    /// a pattern fires once a day at most, also on a day whose clocks fall back.
    pub fn is_fixed_time(&self) -> bool {
        self.cron.determine_job_type() == JobType::FixedTime
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

    /// How a fire of this pattern at `fire` meets a DST transition in `tz`, if it does.
    fn dst_note(&self, fire: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<DstNote> {
        let local = fire.with_timezone(&tz);
        // croner moves a fixed local time that does not exist to the first instant after the
        // gap; that instant does not match the pattern's fields.
        if !self.cron.is_time_matching(&local).unwrap_or(true) {
            return Some(DstNote::SpringForward);
        }
        match tz.from_local_datetime(&local.naive_local()) {
            LocalResult::Ambiguous(first, _) if first == local => Some(DstNote::FallBackFirst {
                fires_twice: !self.is_fixed_time(),
            }),
            LocalResult::Ambiguous(..) => Some(DstNote::FallBackSecond),
            _ => None,
        }
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

    /// Parses a policy named in request field `field`.
    pub fn parse_field(field: &str, raw: &str) -> Result<Self, FieldError> {
        match raw {
            "allow" => Ok(Self::Allow),
            "skip" => Ok(Self::Skip),
            "buffer_one" => Ok(Self::BufferOne),
            "replace" => Ok(Self::Replace),
            _ => Err(FieldError::new(
                field,
                format!("unknown policy '{raw}'; expected one of allow, skip, buffer_one, replace"),
            )),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::parse_field("overlap_policy", raw)
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

/// How a cron fire meets a daylight-saving transition of the schedule's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstNote {
    /// The pattern's local time does not exist that day (the clocks spring forward over it):
    /// the fire is at the first instant after the gap.
    SpringForward,
    /// The fire's local time occurs twice that day (the clocks fall back); this is the first
    /// occurrence. `fires_twice`: the pattern (wildcards or steps in its time fields) fires at
    /// the second occurrence too; a fixed-time pattern does not.
    FallBackFirst { fires_twice: bool },
    /// The second occurrence of a local time that occurs twice (only patterns with wildcards
    /// or steps in their time fields fire here).
    FallBackSecond,
}

impl DstNote {
    /// The stable code the API returns (`dst` of a previewed fire).
    pub const fn code(self) -> &'static str {
        match self {
            DstNote::SpringForward => "spring_forward",
            DstNote::FallBackFirst { .. } => "fall_back_first",
            DstNote::FallBackSecond => "fall_back_second",
        }
    }

    /// One sentence for people, naming the rule that applied.
    pub const fn explain(self) -> &'static str {
        match self {
            DstNote::SpringForward => {
                "the pattern's local time does not exist on this day (clocks spring forward): \
                 the fire moves to the first instant after the gap"
            }
            DstNote::FallBackFirst { fires_twice: false } => {
                "this local time occurs twice on this day (clocks fall back): a fixed-time \
                 pattern fires once, at this first occurrence"
            }
            DstNote::FallBackFirst { fires_twice: true } => {
                "this local time occurs twice on this day (clocks fall back): this is the first \
                 occurrence, and the pattern fires at the second one too"
            }
            DstNote::FallBackSecond => {
                "this local time occurs twice on this day (clocks fall back): this is the second \
                 occurrence, which only patterns with wildcards or steps in their time fields fire"
            }
        }
    }
}

/// One upcoming fire, in UTC and in the schedule's local time (with its offset), and how it
/// meets a DST transition, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePreview {
    pub utc: DateTime<Utc>,
    pub local: String,
    pub dst: Option<DstNote>,
}

/// A checked schedule: a cadence, a time zone, optional bounds and its policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub cadence: Cadence,
    pub timezone: TimeZone,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub overlap_policy: OverlapPolicy,
    /// Fires later than this when they are planned are recorded `skipped/missed`.
    pub catchup_window_seconds: u32,
    /// Of the fires more than [`ScheduleSpec::ON_TIME_TOLERANCE_SECONDS`] late but within the
    /// window, at most this many (the latest) run; the older ones are recorded `skipped/missed`.
    pub catchup_max_runs: u32,
    /// Every fire is shifted by the same offset in `[0, jitter_seconds)`, drawn from the
    /// schedule's id.
    pub jitter_seconds: u32,
    /// The schedule ends after this many fires (`None`: no limit).
    pub max_runs: Option<u32>,
}

impl ScheduleSpec {
    pub const DEFAULT_CATCHUP_WINDOW_SECONDS: u32 = 900;
    pub const MAX_CATCHUP_WINDOW_SECONDS: u32 = 7 * 86_400;
    pub const DEFAULT_CATCHUP_MAX_RUNS: u32 = 1;
    pub const MAX_CATCHUP_MAX_RUNS: u32 = 1000;
    /// A fire at most this late is on time for the catch-up cap: a scheduler failover or a
    /// rolling restart delays it, it never costs it (the window still applies).
    pub const ON_TIME_TOLERANCE_SECONDS: u32 = 30;
    pub const MAX_JITTER_SECONDS: u32 = 3_600;
    pub const MAX_INTERVAL_SECONDS: u32 = 366 * 86_400;
    pub const MAX_RUNS_LIMIT: u32 = 100_000_000;
    /// One-off and start times may lie at most this far ahead (the product keeps a year).
    pub const MAX_AHEAD_DAYS: i64 = 366;

    /// The fires of schedule `id` after `fired` of them were made (its fire count).
    pub fn timeline(&self, id: ScheduleId, fired: u64) -> Timeline<'_> {
        Timeline {
            spec: self,
            offset: self.jitter_offset(id),
            remaining: self
                .max_runs
                .map(|max| u64::from(max).saturating_sub(fired)),
        }
    }

    /// The offset every fire of schedule `id` is shifted by: a stable hash of the id, in whole
    /// milliseconds within `[0, jitter_seconds)` (the same on every node and after restarts;
    /// it changes only with `jitter_seconds`).
    pub fn jitter_offset(&self, id: ScheduleId) -> Duration {
        let span = u64::from(self.jitter_seconds) * 1000;
        if span == 0 {
            return Duration::zero();
        }
        let hash = stable_hash::fnv1a(&[b"kairos-jitter", id.as_uuid().as_bytes()]);
        Duration::milliseconds((hash % span) as i64)
    }

    /// The first cadence instant strictly after `after`, within `start..=end` (jitter and
    /// the run limit aside: use [`Self::timeline`]). `None` when the cadence has no fire left.
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.nominal_after(after, self.start_at, self.end_at)
    }

    fn nominal_after(
        &self,
        after: DateTime<Utc>,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        // The search starts strictly after `after`, or at `start` when that is later.
        let from = start.filter(|s| *s > after);
        let next = match &self.cadence {
            Cadence::At(at) => (*at > after && start.is_none_or(|s| *at >= s)).then_some(*at),
            Cadence::Interval { seconds, anchor } => {
                // Microseconds: the store keeps them, and an anchor may carry them.
                let step = i64::from(*seconds) * 1_000_000;
                let lower = from.map_or(after, |s| s - Duration::microseconds(1));
                let from_anchor = (lower - *anchor).num_microseconds()?;
                let k = if from_anchor < 0 {
                    0
                } else {
                    from_anchor / step + 1
                };
                anchor.checked_add_signed(Duration::microseconds(k.checked_mul(step)?))
            }
            Cadence::Cron(cron) => match from {
                Some(s) => cron.next(s, self.timezone.tz(), true),
                None => cron.next(after, self.timezone.tz(), false),
            },
        }?;
        match end {
            Some(e) if next > e => None,
            _ => Some(next),
        }
    }
}

/// The fires of one schedule: its cadence within its bounds, every fire shifted by the
/// schedule's jitter offset, and none after the last one `max_runs` allows. Bounds apply to
/// the shifted times: no fire before `start_at` or after `end_at`.
#[derive(Debug, Clone, Copy)]
pub struct Timeline<'a> {
    spec: &'a ScheduleSpec,
    offset: Duration,
    /// Fires left under `max_runs` (`None`: no limit).
    remaining: Option<u64>,
}

impl<'a> Timeline<'a> {
    pub fn offset(&self) -> Duration {
        self.offset
    }

    /// Fires left under `max_runs` (`None`: no limit).
    pub fn remaining(&self) -> Option<u64> {
        self.remaining
    }

    /// The same fires without the run limit (backfill covers past fires whatever it says).
    pub fn unlimited(self) -> Self {
        Self {
            remaining: None,
            ..self
        }
    }

    /// This timeline once one more fire was made.
    pub fn after_fire(self) -> Self {
        Self {
            remaining: self.remaining.map(|r| r.saturating_sub(1)),
            ..self
        }
    }

    /// The first fire strictly after `after`; `None` when the schedule has no fire left.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.remaining == Some(0) {
            return None;
        }
        let shift = |t: DateTime<Utc>| t - self.offset;
        self.spec
            .nominal_after(
                shift(after),
                self.spec.start_at.map(shift),
                self.spec.end_at.map(shift),
            )
            .map(|t| t + self.offset)
    }

    /// The fires strictly after `after`, in order, as many as the limit leaves.
    pub fn fires_after(self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + 'a {
        let mut timeline = self;
        let mut cursor = after;
        std::iter::from_fn(move || {
            let next = timeline.next_after(cursor)?;
            timeline = timeline.after_fire();
            cursor = next;
            Some(next)
        })
    }

    /// Up to `n` fires strictly after `after`, with their local time and DST notes.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<FirePreview> {
        let tz = self.spec.timezone.tz();
        self.fires_after(after)
            .take(n)
            .map(|utc| FirePreview {
                utc,
                local: utc
                    .with_timezone(&tz)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, false),
                dst: match &self.spec.cadence {
                    Cadence::Cron(cron) => cron.dst_note(utc - self.offset, tz),
                    _ => None,
                },
            })
            .collect()
    }

    /// Fires in `[from, to)`, at most `limit` of them (backfill). The bool is true when more
    /// fires remained past the limit.
    pub fn between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let mut fires = Vec::new();
        for t in self
            .fires_after(from - Duration::microseconds(1))
            .take_while(|t| *t < to)
        {
            if fires.len() == limit {
                return (fires, true);
            }
            fires.push(t);
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
    pub catchup_max_runs: Option<i64>,
    pub jitter_seconds: Option<i64>,
    pub max_runs: Option<i64>,
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

/// A bounded number for `field`: the draft's if present, else the current spec's, else the
/// default.
fn bounded_or(
    field: &str,
    raw: Option<i64>,
    current: Option<u32>,
    default: u32,
    (min, max): (u32, u32),
) -> Result<u32, FieldError> {
    match raw {
        Some(v) => bounded(field, v, min, max),
        None => Ok(current.unwrap_or(default)),
    }
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
        let catchup_window_seconds = bounded_or(
            "catchup_window_seconds",
            self.catchup_window_seconds,
            current.map(|c| c.catchup_window_seconds),
            ScheduleSpec::DEFAULT_CATCHUP_WINDOW_SECONDS,
            (0, ScheduleSpec::MAX_CATCHUP_WINDOW_SECONDS),
        )?;
        let catchup_max_runs = bounded_or(
            "catchup_max_runs",
            self.catchup_max_runs,
            current.map(|c| c.catchup_max_runs),
            ScheduleSpec::DEFAULT_CATCHUP_MAX_RUNS,
            (0, ScheduleSpec::MAX_CATCHUP_MAX_RUNS),
        )?;
        let jitter_seconds = bounded_or(
            "jitter_seconds",
            self.jitter_seconds,
            current.map(|c| c.jitter_seconds),
            0,
            (0, ScheduleSpec::MAX_JITTER_SECONDS),
        )?;
        if let Cadence::Interval { seconds, .. } = cadence
            && jitter_seconds >= seconds
            && jitter_seconds > 0
        {
            return Err(FieldError::new(
                "jitter_seconds",
                format!("must be less than interval_seconds ({seconds})"),
            ));
        }
        let max_runs = match (self.max_runs, current) {
            (Some(v), _) => Some(bounded("max_runs", v, 1, ScheduleSpec::MAX_RUNS_LIMIT)?),
            (None, Some(c)) => c.max_runs,
            (None, None) => None,
        };
        Ok(ScheduleSpec {
            cadence,
            timezone,
            start_at,
            end_at,
            overlap_policy,
            catchup_window_seconds,
            catchup_max_runs,
            jitter_seconds,
            max_runs,
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

    /// A schedule id for the tests; its jitter offset only matters with `jitter_seconds`.
    const ID: ScheduleId = ScheduleId::from_uuid(uuid::Uuid::from_u128(
        0x0190_f0c2_d8a8_7c3e_9f4b_1a2b_3c4d_5e6f,
    ));

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
        spec.timeline(ID, 0)
            .upcoming(t(after), n)
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
        let preview = spec.timeline(ID, 0).upcoming(t("2026-07-10T12:00:00Z"), 1);
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
            .timeline(ID, 0)
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
            .timeline(ID, 0)
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
            spec.timeline(ID, 0)
                .between(t("2026-03-01T00:00:00Z"), t("2026-03-01T03:00:00Z"), 10);
        assert_eq!(fires.len(), 3);
        assert!(!more);
        let (fires, more) =
            spec.timeline(ID, 0)
                .between(t("2026-03-01T00:00:00Z"), t("2026-03-02T00:00:00Z"), 5);
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

    fn with(draft: ScheduleDraft) -> ScheduleSpec {
        draft.parse(t("2026-01-01T00:00:00Z")).unwrap()
    }

    #[test]
    fn previews_name_the_dst_rule_that_moved_or_kept_a_fire() {
        // Spring forward: 02:30 does not exist in New York on 2026-03-08.
        let spring = cron("30 2 * * *", "America/New_York")
            .timeline(ID, 0)
            .upcoming(t("2026-03-07T12:00:00Z"), 2);
        assert_eq!(spring[0].dst, Some(DstNote::SpringForward));
        assert_eq!(spring[0].dst.unwrap().code(), "spring_forward");
        assert_eq!(spring[1].dst, None, "the next day is ordinary");

        // Fall back, fixed time: 01:30 occurs twice on 2026-11-01; only the first fires.
        let fixed = cron("30 1 * * *", "America/New_York")
            .timeline(ID, 0)
            .upcoming(t("2026-10-31T12:00:00Z"), 2);
        assert_eq!(
            fixed[0].dst,
            Some(DstNote::FallBackFirst { fires_twice: false })
        );
        assert_eq!(fixed[1].dst, None);

        // Fall back, wildcard hour: both 01:30s are real instants and both fire.
        let hourly = cron("30 * * * *", "America/New_York")
            .timeline(ID, 0)
            .upcoming(t("2026-11-01T04:00:00Z"), 3);
        let seen: Vec<_> = hourly
            .iter()
            .map(|p| (p.local.as_str(), p.dst.map(DstNote::code)))
            .collect();
        assert_eq!(
            seen,
            [
                ("2026-11-01T00:30:00-04:00", None),
                ("2026-11-01T01:30:00-04:00", Some("fall_back_first")),
                ("2026-11-01T01:30:00-05:00", Some("fall_back_second")),
            ]
        );
        assert!(
            DstNote::FallBackSecond
                .explain()
                .contains("second occurrence")
        );

        // Intervals are UTC arithmetic: no note, even across a transition.
        let every_hour = with(ScheduleDraft {
            interval_seconds: Some(3600),
            timezone: Some("America/New_York".into()),
            start_at: Some("2026-03-08T05:00:00Z".into()),
            ..Default::default()
        });
        let preview = every_hour
            .timeline(ID, 0)
            .upcoming(t("2026-03-08T05:30:00Z"), 3);
        assert!(preview.iter().all(|p| p.dst.is_none()));
        assert_eq!(preview[0].local, "2026-03-08T01:00:00-05:00");
        assert_eq!(preview[1].local, "2026-03-08T03:00:00-04:00");
    }

    #[test]
    fn jitter_shifts_every_fire_by_one_stable_offset_per_schedule() {
        let spec = with(ScheduleDraft {
            cron: Some("0 * * * *".into()),
            jitter_seconds: Some(600),
            ..Default::default()
        });
        let offset = spec.jitter_offset(ID);
        // Pinned: the offset of a schedule must not move between releases or nodes.
        assert_eq!(offset, Duration::milliseconds(280_953));
        let nominal: Vec<_> =
            std::iter::successors(spec.next_fire_after(t("2026-03-01T00:30:00Z")), |t| {
                spec.next_fire_after(*t)
            })
            .take(4)
            .collect();
        let jittered: Vec<_> = spec
            .timeline(ID, 0)
            .fires_after(t("2026-03-01T00:30:00Z"))
            .take(4)
            .collect();
        for (n, j) in nominal.iter().zip(&jittered) {
            assert_eq!(*j - *n, offset, "every fire moves by the same offset");
        }
        // Previews show the jittered times.
        let preview = spec.timeline(ID, 0).upcoming(t("2026-03-01T00:30:00Z"), 1);
        assert_eq!(preview[0].utc, jittered[0]);
        assert_eq!(preview[0].local, "2026-03-01T01:04:40.953+00:00");
        // No jitter, no offset; another schedule, another offset.
        assert_eq!(cron("0 * * * *", "UTC").jitter_offset(ID), Duration::zero());
        assert_ne!(spec.jitter_offset(ScheduleId::generate()), offset);
    }

    #[test]
    fn jitter_spreads_schedules_over_the_whole_window() {
        let spec = with(ScheduleDraft {
            cron: Some("0 0 * * *".into()),
            jitter_seconds: Some(60),
            ..Default::default()
        });
        let mut buckets = [0u32; 6];
        for _ in 0..6000 {
            let offset = spec.jitter_offset(ScheduleId::generate());
            assert!(offset >= Duration::zero() && offset < Duration::seconds(60));
            buckets[(offset.num_seconds() / 10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|b| (800..1200).contains(b)),
            "offsets by 10 s bucket: {buckets:?}"
        );
    }

    #[test]
    fn bounds_apply_to_the_jittered_times() {
        let spec = with(ScheduleDraft {
            interval_seconds: Some(3600),
            start_at: Some("2026-03-01T00:00:00Z".into()),
            end_at: Some("2026-03-01T02:00:00Z".into()),
            jitter_seconds: Some(1800),
            ..Default::default()
        });
        let offset = spec.jitter_offset(ID);
        assert!(offset > Duration::zero());
        let fires: Vec<_> = spec
            .timeline(ID, 0)
            .fires_after(t("2026-02-01T00:00:00Z"))
            .collect();
        // 00:00 and 01:00 shifted; 02:00 shifted would land after end_at.
        assert_eq!(
            fires,
            [
                t("2026-03-01T00:00:00Z") + offset,
                t("2026-03-01T01:00:00Z") + offset
            ]
        );
    }

    #[test]
    fn max_runs_ends_the_timeline_after_that_many_fires() {
        let spec = with(ScheduleDraft {
            cron: Some("0 * * * *".into()),
            max_runs: Some(3),
            ..Default::default()
        });
        let after = t("2026-03-01T00:30:00Z");
        assert_eq!(spec.timeline(ID, 0).fires_after(after).count(), 3);
        assert_eq!(spec.timeline(ID, 2).upcoming(after, 5).len(), 1);
        assert_eq!(spec.timeline(ID, 3).next_after(after), None);
        assert_eq!(spec.timeline(ID, 7).remaining(), Some(0));
        // Backfill looks at past fires whatever the limit says.
        let (past, _) = spec.timeline(ID, 3).unlimited().between(
            t("2026-02-01T00:00:00Z"),
            t("2026-02-01T10:00:00Z"),
            100,
        );
        assert_eq!(past.len(), 10);
        assert_eq!(cron("@hourly", "UTC").timeline(ID, 1_000).remaining(), None);
    }

    #[test]
    fn an_interval_anchor_keeps_its_microseconds() {
        let spec = with(ScheduleDraft {
            interval_seconds: Some(10),
            start_at: Some("2026-03-01T00:00:00.000250Z".into()),
            ..Default::default()
        });
        let fires: Vec<_> = spec
            .timeline(ID, 0)
            .fires_after(t("2026-03-01T00:00:00.000250Z"))
            .take(2)
            .collect();
        assert_eq!(
            fires,
            [
                t("2026-03-01T00:00:10.000250Z"),
                t("2026-03-01T00:00:20.000250Z")
            ]
        );
        assert_eq!(
            spec.timeline(ID, 0).next_after(t("2026-02-01T00:00:00Z")),
            Some(t("2026-03-01T00:00:00.000250Z")),
            "start_at itself is the first fire"
        );
    }

    #[test]
    fn catch_up_and_run_limits_are_checked() {
        let now = t("2026-01-01T00:00:00Z");
        let field = |d: ScheduleDraft| d.parse(now).unwrap_err().field;
        let daily = || ScheduleDraft {
            cron: Some("@daily".into()),
            ..Default::default()
        };
        assert_eq!(
            field(ScheduleDraft {
                max_runs: Some(0),
                ..daily()
            }),
            "max_runs"
        );
        assert_eq!(
            field(ScheduleDraft {
                catchup_max_runs: Some(1001),
                ..daily()
            }),
            "catchup_max_runs"
        );
        assert_eq!(
            field(ScheduleDraft {
                catchup_max_runs: Some(-1),
                ..daily()
            }),
            "catchup_max_runs"
        );
        let spec = daily().parse(now).unwrap();
        assert_eq!(
            spec.catchup_max_runs,
            ScheduleSpec::DEFAULT_CATCHUP_MAX_RUNS
        );
        assert_eq!(spec.max_runs, None);
        let patched = ScheduleDraft {
            max_runs: Some(5),
            ..Default::default()
        }
        .patch(&spec, now)
        .unwrap();
        assert_eq!(patched.max_runs, Some(5));
        let kept = ScheduleDraft {
            jitter_seconds: Some(5),
            ..Default::default()
        }
        .patch(&patched, now)
        .unwrap();
        assert_eq!(kept.max_runs, Some(5), "an absent field keeps its value");
    }

    const ZONES: [&str; 8] = [
        "UTC",
        "Europe/Paris",
        "Europe/London",
        "America/New_York",
        "Australia/Sydney",
        // A 30-minute DST shift.
        "Australia/Lord_Howe",
        // UTC+12:45, with DST.
        "Pacific/Chatham",
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

        /// Jitter shifts the whole timeline: still strictly increasing, each fire exactly the
        /// nominal one plus the schedule's offset.
        #[test]
        fn jittered_fires_are_the_nominal_ones_shifted(
            zone in 0usize..ZONES.len(),
            pattern in 0usize..PATTERNS.len(),
            jitter in 1i64..3600,
            start in 1_767_225_600i64..1_861_920_000i64,
        ) {
            let spec = ScheduleDraft {
                cron: Some(PATTERNS[pattern].into()),
                timezone: Some(ZONES[zone].into()),
                jitter_seconds: Some(jitter),
                ..Default::default()
            }
            .parse(t("2026-01-01T00:00:00Z"))
            .unwrap();
            let id = ScheduleId::generate();
            let offset = spec.jitter_offset(id);
            prop_assert!(offset < Duration::seconds(jitter));
            let after = DateTime::from_timestamp(start, 0).unwrap();
            let fires: Vec<_> = spec.timeline(id, 0).fires_after(after).take(10).collect();
            let mut nominal = after - offset;
            for pair in fires.windows(2) {
                prop_assert!(pair[1] > pair[0]);
            }
            for fire in fires {
                prop_assert!(fire > after);
                nominal = spec.next_fire_after(nominal).unwrap();
                prop_assert_eq!(fire, nominal + offset);
            }
        }

        /// A fixed daily time fires exactly once per local calendar day in every zone, across
        /// every DST transition of 2026–2028: never twice on a fall-back day, never skipped on
        /// a spring-forward day.
        #[test]
        fn a_fixed_daily_time_fires_once_on_every_local_day(
            zone in 0usize..ZONES.len(),
            hour in 0u32..24,
            minute in prop::sample::select(vec![0u32, 15, 30, 45]),
            start in 1_767_225_600i64..1_861_920_000i64,
        ) {
            let spec = cron(&format!("{minute} {hour} * * *"), ZONES[zone]);
            let tz: chrono_tz::Tz = ZONES[zone].parse().unwrap();
            let after = DateTime::from_timestamp(start, 0).unwrap();
            let days: Vec<_> = spec
                .timeline(ID, 0)
                .fires_after(after)
                .take(40)
                .map(|f| f.with_timezone(&tz).date_naive())
                .collect();
            for pair in days.windows(2) {
                prop_assert_eq!(pair[1], pair[0].succ_opt().unwrap(), "{} -> {}", pair[0], pair[1]);
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
