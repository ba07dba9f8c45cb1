//! Conversions between `chrono` UTC times and the protobuf `Timestamp` of the wire, and the
//! RFC 3339 form the REST API prints; they must never shift a time or round it.

use chrono::{DateTime, SecondsFormat, Utc};
use prost_types::Timestamp;

/// The protobuf form of a UTC time.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        // Always below 2·10⁹ (leap seconds at most), so it fits an i32.
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The UTC time of a protobuf timestamp, if it is within chrono's range.
pub fn datetime(ts: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

/// RFC 3339 in UTC with a `Z` and only as many fraction digits as needed, as the REST API
/// prints times (`2026-01-31T09:00:00Z`, `2026-01-31T09:00:00.250Z`).
pub fn rfc3339(ts: &Timestamp) -> String {
    match datetime(ts) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => format!("{}s", ts.seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_round_trips_through_the_wire_form() {
        let t = DateTime::parse_from_rfc3339("2026-01-31T10:00:00.25+01:00")
            .unwrap()
            .with_timezone(&Utc);
        let ts = timestamp(t);
        assert_eq!(
            ts,
            Timestamp {
                seconds: 1_769_850_000,
                nanos: 250_000_000
            }
        );
        assert_eq!(datetime(&ts), Some(t));
        assert_eq!(rfc3339(&ts), "2026-01-31T09:00:00.250Z");
        assert_eq!(
            rfc3339(&Timestamp {
                seconds: 1_769_850_000,
                nanos: 0
            }),
            "2026-01-31T09:00:00Z"
        );
    }
}
