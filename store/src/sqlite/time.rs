//! The stored form of instants: fixed-width RFC 3339 text in UTC to the microsecond, so that
//! SQLite's text comparison orders instants correctly; nothing may bind a time any other way.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// `t` as the schema stores it: `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (sub-microseconds are
/// dropped, as Postgres keeps microseconds).
pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// An optional instant in its stored form.
pub(super) fn ts_opt(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(ts)
}

/// Now, in its stored form: one value per transaction, as Postgres' `now()` is.
pub(super) fn now() -> String {
    ts(Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or_else(|_| Utc::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn stored_times_have_one_width_and_sort_as_the_instants() {
        let times = [
            at("1999-01-01T00:00:00Z"),
            at("2026-03-01T09:00:00Z"),
            at("2026-03-01T09:00:00.000001Z"),
            at("2026-03-01T09:00:00.5Z"),
            at("2026-03-01T09:00:01Z"),
            at("2040-12-31T23:59:59.999999Z"),
        ];
        let stored: Vec<String> = times.iter().copied().map(ts).collect();
        assert!(
            stored.iter().all(|s| s.len() == stored[0].len()),
            "{stored:?}"
        );
        let mut sorted = stored.clone();
        sorted.sort();
        assert_eq!(sorted, stored);
        assert_eq!(ts(times[3]), "2026-03-01T09:00:00.500000+00:00");
    }

    #[test]
    fn nanoseconds_are_dropped_to_the_microsecond() {
        let t = at("2026-03-01T09:00:00.123456789Z");
        assert_eq!(ts(t), "2026-03-01T09:00:00.123456+00:00");
        let back = DateTime::parse_from_rfc3339(&ts(t)).unwrap();
        assert_eq!(back.timestamp_subsec_micros(), 123_456);
    }
}
