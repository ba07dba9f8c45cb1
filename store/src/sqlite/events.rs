//! The run_events table: the one writer of transitions (I3) and the read of a run's history;
//! it must never record a transition outside the transaction that makes it.

use chrono::{DateTime, Utc};
use kairos_domain::{RunId, RunState, TenantId};
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{EventRow, convert, event_columns};
use super::time::ts;
use super::tx::WriteTx;
use crate::{Result, RunEvent, StoreError};

/// One state change of one run, as it is being written.
#[derive(Debug, Clone)]
pub(super) struct Transition {
    pub run_id: Uuid,
    pub fire_time: DateTime<Utc>,
    /// `None` for the run's creation.
    pub from: Option<RunState>,
    pub to: RunState,
    pub reason: Option<String>,
}

/// Writes one `run_events` row per transition, in slice order, inside `tx`. Every state change
/// of any module goes through here (or [`record_across_tenants`]), in the transaction that
/// changes the state.
pub(super) async fn record(
    tx: &mut WriteTx,
    tenant: TenantId,
    transitions: &[Transition],
) -> Result<()> {
    for t in transitions {
        write(tx, tenant, t).await?;
    }
    Ok(())
}

/// Like [`record`], for a batch whose runs belong to several tenants.
pub(super) async fn record_across_tenants(
    tx: &mut WriteTx,
    transitions: &[(TenantId, Transition)],
) -> Result<()> {
    for (tenant, t) in transitions {
        write(tx, *tenant, t).await?;
    }
    Ok(())
}

async fn write(tx: &mut WriteTx, tenant: TenantId, t: &Transition) -> Result<()> {
    let now = tx.now.clone();
    sqlx::query(
        "INSERT INTO run_events (run_id, tenant_id, fire_time, from_state, to_state, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(t.run_id)
    .bind(tenant.as_uuid())
    .bind(ts(t.fire_time))
    .bind(t.from.map(RunState::as_str))
    .bind(t.to.as_str())
    .bind(t.reason.as_deref())
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Every transition of the tenant's run, oldest first; `NotFound` if the run is not theirs.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, run_id = %id))]
pub(super) async fn list(
    store: &SqliteStore,
    tenant: TenantId,
    id: RunId,
) -> Result<Vec<RunEvent>> {
    let mut tx = store.begin_read().await?;
    let known: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM runs WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
    known.ok_or(StoreError::NotFound("run"))?;
    let rows: Vec<EventRow> = sqlx::query_as(concat!(
        "SELECT ",
        event_columns!(),
        " FROM run_events WHERE tenant_id = ?1 AND run_id = ?2 ORDER BY id"
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    convert(rows)
}
