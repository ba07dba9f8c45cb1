//! Monthly partitions of `runs` and `run_events`: creates those from the retention horizon to
//! 13 months ahead and drops those wholly past retention, under an advisory lock; it must never
//! drop a partition that can still hold a run inside the retention window.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use kairos_domain::FieldError;
use sqlx::AssertSqlSafe;

use super::PgStore;
use crate::{PartitionReport, Result, StoreError};

/// How long run history is kept unless configured otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 365;
/// Months after the current one that always have partitions (schedules reach a year ahead).
const MONTHS_AHEAD: u32 = 13;
/// The partitioned tables, each partitioned by `fire_time` in the same months.
const PARENTS: [&str; 2] = ["runs", "run_events"];
/// `pg_advisory_xact_lock` key serializing maintenance passes ("kairos:p").
const LOCK_KEY: i64 = 0x6b61_6972_6f73_3a70;
/// A pass gives up rather than queue run traffic behind its DDL for longer than this.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '10s'";

/// One calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Month {
    year: i32,
    month: u32,
}

impl Month {
    fn containing(t: DateTime<Utc>) -> Self {
        Self {
            year: t.year(),
            month: t.month(),
        }
    }

    fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Midnight UTC of the month's first day; `None` beyond chrono's range.
    fn start(self) -> Option<DateTime<Utc>> {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    }

    /// The partition of `parent` holding this month, e.g. `runs_p202601`.
    fn partition_of(self, parent: &str) -> String {
        format!("{parent}_p{:04}{:02}", self.year, self.month)
    }

    /// The month of a partition named by [`Month::partition_of`].
    fn of_partition(parent: &str, name: &str) -> Option<Self> {
        let digits = name.strip_prefix(parent)?.strip_prefix("_p")?;
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let year = digits[..4].parse().ok()?;
        let month = digits[4..].parse().ok()?;
        (1..=12).contains(&month).then_some(Self { year, month })
    }
}

/// Creates the partitions from the month holding `now - retention_days` through the 13th month
/// after `now`, and drops those whose upper bound is at or before `now - retention_days`, in
/// one transaction under an advisory lock (concurrent passes queue, so the work is done once).
/// Idempotency keys of dropped runs go with them.
#[tracing::instrument(skip_all, fields(%now, retention_days))]
pub(super) async fn maintain(
    store: &PgStore,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<PartitionReport> {
    let out_of_range = || {
        StoreError::Invalid(FieldError::new(
            "now",
            "is too far from the present to compute partitions",
        ))
    };
    let cutoff = now
        .checked_sub_signed(Duration::days(i64::from(retention_days)))
        .ok_or_else(out_of_range)?;
    let first = Month::containing(cutoff);
    let mut last = Month::containing(now);
    for _ in 0..MONTHS_AHEAD {
        last = last.next();
    }
    if first.year < 1 || last.year > 9999 {
        // Partition names carry a four-digit year.
        return Err(out_of_range());
    }
    let kept_from = first.start().ok_or_else(out_of_range)?;

    let mut tx = store.begin().await?;
    sqlx::query(LOCK_TIMEOUT).execute(tx.conn()).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(tx.conn())
        .await?;

    let mut report = PartitionReport::default();
    for parent in PARENTS {
        let existing: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::text::regclass
             ORDER BY 1",
        )
        .bind(parent)
        .fetch_all(tx.conn())
        .await?;

        let mut month = first;
        while month <= last {
            let name = month.partition_of(parent);
            if !existing.contains(&name) {
                let (Some(from), Some(to)) = (month.start(), month.next().start()) else {
                    return Err(out_of_range());
                };
                // Identifiers and bounds are built from fixed names and integers only.
                let ddl = format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {parent} \
                     FOR VALUES FROM ('{}') TO ('{}')",
                    from.format("%Y-%m-%d %H:%M:%S+00"),
                    to.format("%Y-%m-%d %H:%M:%S+00"),
                );
                sqlx::query(AssertSqlSafe(ddl)).execute(tx.conn()).await?;
                report.created.push(name);
            }
            month = month.next();
        }

        for name in &existing {
            let Some(month) = Month::of_partition(parent, name) else {
                tracing::warn!(partition = %name, "partition not named by maintenance; left alone");
                continue;
            };
            let Some(upper) = month.next().start() else {
                continue;
            };
            if upper <= cutoff {
                let ddl = format!("DROP TABLE IF EXISTS {name}");
                sqlx::query(AssertSqlSafe(ddl)).execute(tx.conn()).await?;
                report.dropped.push(name.clone());
            }
        }
    }
    if !report.dropped.is_empty() {
        sqlx::query("DELETE FROM idempotency_keys WHERE fire_time < $1")
            .bind(kept_from)
            .execute(tx.conn())
            .await?;
    }
    tx.commit().await?;
    if !report.created.is_empty() || !report.dropped.is_empty() {
        tracing::info!(created = ?report.created, dropped = ?report.dropped, "run partitions maintained");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn partition_names_round_trip_to_their_month() {
        let m = Month::containing(t("2026-01-31T23:59:59Z"));
        assert_eq!(m.partition_of("runs"), "runs_p202601");
        assert_eq!(Month::of_partition("runs", "runs_p202601"), Some(m));
        assert_eq!(Month::of_partition("runs", "run_events_p202601"), None);
        assert_eq!(
            Month::of_partition("run_events", "run_events_p202613"),
            None
        );
        assert_eq!(Month::of_partition("runs", "runs_default"), None);
    }

    #[test]
    fn december_is_followed_by_january() {
        let dec = Month::containing(t("2026-12-15T00:00:00Z"));
        assert_eq!(dec.next().partition_of("runs"), "runs_p202701");
        assert_eq!(dec.next().start(), Some(t("2027-01-01T00:00:00Z")));
    }
}
