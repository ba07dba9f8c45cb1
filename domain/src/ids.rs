//! Opaque, prefixed identifiers (`job_…`, `run_…`) over time-ordered UUIDv7 values.
//!
//! The prefix tells a human what kind of id they hold; it never carries tenant or shard data,
//! and parsing never accepts an id of another kind.

use std::{fmt, str::FromStr};

use uuid::Uuid;

/// An id string that is not of the expected kind or shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id")]
pub struct IdParseError {
    pub kind: &'static str,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// The text before the hex digits, e.g. `job_`.
            pub const PREFIX: &'static str = $prefix;

            /// A new id, ordered after every id generated earlier by this process.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", Self::PREFIX, self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let hex = s.strip_prefix(Self::PREFIX).ok_or(IdParseError { kind: $kind })?;
                if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(IdParseError { kind: $kind });
                }
                Uuid::try_parse(hex).map(Self).map_err(|_| IdParseError { kind: $kind })
            }
        }
    };
}

id_type!(
    /// A customer account; every other resource belongs to exactly one tenant.
    TenantId, "ten_", "tenant"
);
id_type!(
    /// An API key's public id (the secret part is never stored).
    ApiKeyId, "key_", "api key"
);
id_type!(
    /// A job: what to run.
    JobId, "job_", "job"
);
id_type!(
    /// A schedule: when to run a job.
    ScheduleId, "sch_", "schedule"
);
id_type!(
    /// One execution attempt of a job.
    RunId, "run_", "run"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_text_form() {
        let id = JobId::generate();
        let text = id.to_string();
        assert!(text.starts_with("job_"));
        assert_eq!(text.len(), 4 + 32);
        assert_eq!(text.parse::<JobId>(), Ok(id));
    }

    #[test]
    fn an_id_of_another_kind_is_rejected() {
        let run = RunId::generate().to_string();
        assert_eq!(run.parse::<JobId>(), Err(IdParseError { kind: "job" }));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "job_",
            "job_xyz",
            "job_0123",
            "JOB_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
        let dashed = format!("job_{}", Uuid::now_v7().hyphenated());
        assert!(dashed.parse::<JobId>().is_err());
    }

    #[test]
    fn ids_generated_later_sort_after_earlier_ones() {
        let a = RunId::generate();
        let b = RunId::generate();
        assert!(a < b);
    }
}
