//! Offers: what a worker needs to start runs, read in one round trip across shards before the
//! ack (or, for upcoming runs, before the fire). Reads only, so no fence: the ack or the fire
//! (`firing.rs`) is the decision and re-checks everything under its conditional update.

use std::collections::{HashMap, HashSet};

use kairos_domain::{JobId, RunId};
use uuid::Uuid;

use super::{
    PgStore, credentials, fencing,
    firing::fire_range,
    rows::{JobRow, RunRow, job_columns, offer, run_columns, shard_value},
};
use crate::{Job, LeasedRun, Offer, Result, Run, ShardLease};

/// Offers for queued runs of one shard (the single-shard form of [`offers_across`]), refused
/// with `Fenced` once the lease is superseded.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), runs = run_ids.len()))]
pub(super) async fn run_offers(
    store: &PgStore,
    lease: &ShardLease,
    run_ids: &[RunId],
) -> Result<Vec<Offer>> {
    fencing::begin(store, lease).await?.commit().await?;
    let runs: Vec<LeasedRun> = run_ids
        .iter()
        .map(|id| LeasedRun {
            lease: lease.clone(),
            id: *id,
            fire_time: None,
        })
        .collect();
    offers_across(store, &runs, false).await
}

/// What workers need to start these runs: those still `queued` (or, `upcoming`, also still
/// `scheduled`), not held by the overlap policy, not cancel-requested, of a live job, among
/// the runs of the leases' shards.
#[tracing::instrument(skip_all, fields(runs = runs.len(), upcoming))]
pub(super) async fn offers_across(
    store: &PgStore,
    runs: &[LeasedRun],
    upcoming: bool,
) -> Result<Vec<Offer>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = runs.iter().map(|r| r.id.as_uuid()).collect();
    let mut shards: Vec<i16> = runs
        .iter()
        .map(|r| shard_value(r.lease.shard()))
        .collect::<Result<_>>()?;
    shards.sort_unstable();
    shards.dedup();
    let states: &[&str] = if upcoming {
        &["queued", "scheduled"]
    } else {
        &["queued"]
    };
    let range = fire_range(runs.iter());
    let mut conn = store.pool().acquire().await?;
    let rows: Vec<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = ANY($1) AND shard = ANY($2) AND state = ANY($3)
            AND NOT cancel_requested AND blocked_by IS NULL
            AND fire_time >= $4 AND fire_time <= $5"
    ))
    .bind(&ids)
    .bind(&shards)
    .bind(states)
    .bind(range.0)
    .bind(range.1)
    .fetch_all(&mut *conn)
    .await?;
    let runs = rows
        .into_iter()
        .map(Run::try_from)
        .collect::<Result<Vec<_>>>()?;
    let job_ids: Vec<Uuid> = runs
        .iter()
        .map(|r| r.job_id.as_uuid())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let jobs: Vec<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = ANY($1) AND deleted_at IS NULL"
    ))
    .bind(&job_ids)
    .fetch_all(&mut *conn)
    .await?;
    let jobs: HashMap<JobId, Job> = jobs
        .into_iter()
        .map(|row| Job::try_from(row).map(|job| (job.id, job)))
        .collect::<Result<_>>()?;
    let wanted: Vec<(Uuid, String)> = jobs
        .values()
        .filter_map(|j| {
            j.spec
                .registry_credential
                .as_ref()
                .map(|c| (j.tenant_id.as_uuid(), c.as_str().to_owned()))
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let auth = credentials::auth_for(store, &mut conn, &wanted).await?;
    drop(conn);
    // A run whose job is gone is not offered: the job's delete cancels it.
    runs.into_iter()
        .filter_map(|run| {
            let job = jobs.get(&run.job_id)?;
            let registry_auth = job.spec.registry_credential.as_ref().and_then(|c| {
                auth.get(&(job.tenant_id.as_uuid(), c.as_str().to_owned()))
                    .cloned()
            });
            Some(offer(run, job, registry_auth))
        })
        .collect()
}
