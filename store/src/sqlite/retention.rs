//! Retention of run history without partitions: deletes the runs, events and idempotency keys
//! of the months wholly past the retention, the same cut Postgres makes by dropping monthly
//! partitions; it must never delete a run fired in a month that still overlaps the retention.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use kairos_domain::FieldError;

use super::SqliteStore;
use super::time::ts;
use crate::{PartitionReport, Result, StoreError};

/// Deletes the history fired before the first day (UTC) of the month holding
/// `now - retention_days`, in one transaction. Nothing is created: there are no partitions,
/// so the report is empty.
#[tracing::instrument(skip_all, fields(%now, retention_days))]
pub(super) async fn maintain(
    store: &SqliteStore,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<PartitionReport> {
    let out_of_range = || {
        StoreError::Invalid(FieldError::new(
            "now",
            "is too far from the present to compute the retention",
        ))
    };
    let cutoff = now
        .checked_sub_signed(Duration::days(i64::from(retention_days)))
        .ok_or_else(out_of_range)?;
    let kept_from = NaiveDate::from_ymd_opt(cutoff.year(), cutoff.month(), 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(out_of_range)?;
    let kept_from = ts(kept_from);
    let mut tx = store.begin_write().await?;
    let events = sqlx::query("DELETE FROM run_events WHERE fire_time < ?1")
        .bind(&kept_from)
        .execute(tx.conn())
        .await?
        .rows_affected();
    let runs = sqlx::query("DELETE FROM runs WHERE fire_time < ?1")
        .bind(&kept_from)
        .execute(tx.conn())
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM idempotency_keys WHERE fire_time < ?1")
        .bind(&kept_from)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    if runs > 0 || events > 0 {
        tracing::info!(runs, events, kept_from = %kept_from, "run history past the retention deleted");
    }
    Ok(PartitionReport::default())
}
