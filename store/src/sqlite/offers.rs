//! Offers: what a worker needs to start runs, read in one snapshot across shards before the
//! ack (or, for upcoming runs, before the fire). Reads only, so no fence: the ack or the fire
//! (`firing.rs`) is the decision and re-checks everything in its write transaction.

use std::collections::{HashMap, HashSet};

use kairos_domain::{JobId, RunId};
use uuid::Uuid;

use super::fencing::{self, shards_json};
use super::jobs::SqliteJobRow;
use super::rows::{RunRow, job_columns, offer, run_columns};
use super::{SqliteStore, credentials};
use crate::{Job, LeasedRun, Offer, Result, Run, ShardLease};

/// Offers for queued runs of one shard (the single-shard form of [`offers_across`]), refused
/// with `Fenced` once the lease is superseded.
#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), runs = run_ids.len()))]
pub(super) async fn run_offers(
    store: &SqliteStore,
    lease: &ShardLease,
    run_ids: &[RunId],
) -> Result<Vec<Offer>> {
    let mut tx = store.begin_read().await?;
    fencing::check(&mut tx, lease).await?;
    tx.commit().await?;
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
/// `scheduled`), not cancel-requested, of a live job, among the runs of the leases' shards.
#[tracing::instrument(skip_all, fields(runs = runs.len(), upcoming))]
pub(super) async fn offers_across(
    store: &SqliteStore,
    runs: &[LeasedRun],
    upcoming: bool,
) -> Result<Vec<Offer>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let shards = shards_json(runs.iter().map(|r| r.lease.shard()));
    let states = if upcoming {
        r#"["queued","scheduled"]"#
    } else {
        r#"["queued"]"#
    };
    let mut tx = store.begin_read().await?;
    let mut found = Vec::with_capacity(runs.len());
    for r in runs {
        let row: Option<RunRow> = sqlx::query_as(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = ?1 AND shard IN (SELECT value FROM json_each(?2))
                AND state IN (SELECT value FROM json_each(?3)) AND NOT cancel_requested
                AND blocked_by IS NULL"
        ))
        .bind(r.id.as_uuid())
        .bind(&shards)
        .bind(states)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            found.push(Run::try_from(row)?);
        }
    }
    let mut jobs: HashMap<JobId, Option<Job>> = HashMap::new();
    for run in &found {
        if jobs.contains_key(&run.job_id) {
            continue;
        }
        let row: Option<SqliteJobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = ?1 AND deleted_at IS NULL"
        ))
        .bind(run.job_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        jobs.insert(run.job_id, row.map(Job::try_from).transpose()?);
    }
    let wanted: Vec<(Uuid, String)> = jobs
        .values()
        .flatten()
        .filter_map(|j| {
            j.spec
                .registry_credential
                .as_ref()
                .map(|c| (j.tenant_id.as_uuid(), c.as_str().to_owned()))
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let auth = credentials::auth_for(store, &mut tx, &wanted).await?;
    tx.commit().await?;
    // A run whose job is gone is not offered: the job's delete cancels it.
    found
        .into_iter()
        .filter_map(|run| {
            let job = jobs.get(&run.job_id)?.as_ref()?;
            let registry_auth = job.spec.registry_credential.as_ref().and_then(|c| {
                auth.get(&(job.tenant_id.as_uuid(), c.as_str().to_owned()))
                    .cloned()
            });
            Some(offer(run, job, registry_auth))
        })
        .collect()
}
