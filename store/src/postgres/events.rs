//! The run_events table: the one writer of transitions (I3) and the read of a run's
//! history; it must never record a transition outside the transaction that makes it.

use chrono::{DateTime, Utc};
use kairos_domain::{RunId, RunState, TenantId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::rows::{EventRow, convert, event_columns};
use super::tx::Tx;
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
    tx: &mut Tx,
    tenant: TenantId,
    transitions: &[Transition],
) -> Result<()> {
    write(tx, transitions.iter().map(|t| (tenant, t))).await
}

/// Like [`record`], for a batch whose runs belong to several tenants (the scheduler's
/// batches, which span a shard).
pub(super) async fn record_across_tenants(
    tx: &mut Tx,
    transitions: &[(TenantId, Transition)],
) -> Result<()> {
    write(tx, transitions.iter().map(|(tenant, t)| (*tenant, t))).await
}

async fn write<'a>(
    tx: &mut Tx,
    transitions: impl ExactSizeIterator<Item = (TenantId, &'a Transition)>,
) -> Result<()> {
    let n = transitions.len();
    if n == 0 {
        return Ok(());
    }
    let mut run_ids = Vec::with_capacity(n);
    let mut tenants = Vec::with_capacity(n);
    let mut fire_times = Vec::with_capacity(n);
    let mut froms = Vec::with_capacity(n);
    let mut tos = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    for (tenant, t) in transitions {
        run_ids.push(t.run_id);
        tenants.push(tenant.as_uuid());
        fire_times.push(t.fire_time);
        froms.push(t.from.map(RunState::as_str));
        tos.push(t.to.as_str());
        reasons.push(t.reason.as_deref());
    }
    // WITH ORDINALITY + ORDER BY keeps the identity values in slice order.
    sqlx::query(
        "INSERT INTO run_events (run_id, tenant_id, fire_time, from_state, to_state, reason)
         SELECT e.run_id, e.tenant_id, e.fire_time, e.from_state, e.to_state, e.reason
         FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[],
                     $6::text[])
              WITH ORDINALITY AS e(run_id, tenant_id, fire_time, from_state, to_state, reason, n)
         ORDER BY e.n",
    )
    .bind(&run_ids)
    .bind(&tenants)
    .bind(&fire_times)
    .bind(&froms)
    .bind(&tos)
    .bind(&reasons)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Every transition of the tenant's run, oldest first; `NotFound` if the run is not theirs.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, run_id = %id))]
pub(super) async fn list(pool: &PgPool, tenant: TenantId, id: RunId) -> Result<Vec<RunEvent>> {
    let mut conn = pool.acquire().await?;
    let fire_time = run_fire_time(&mut conn, tenant, id)
        .await?
        .ok_or(StoreError::NotFound("run"))?;
    let rows: Vec<EventRow> = sqlx::query_as(concat!(
        "SELECT ",
        event_columns!(),
        " FROM run_events
         WHERE tenant_id = $1 AND run_id = $2 AND fire_time = $3
         ORDER BY id"
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .bind(fire_time)
    .fetch_all(&mut *conn)
    .await?;
    convert(rows)
}

/// The fire time (partition key) of the tenant's run, if the run is theirs.
async fn run_fire_time(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: RunId,
) -> Result<Option<DateTime<Utc>>> {
    Ok(
        sqlx::query_scalar("SELECT fire_time FROM runs WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(conn)
            .await?,
    )
}
