//! Offers: what a worker needs to start `queued` runs of a shard, read in one round trip
//! before the ack. Reads only; the ack (`dispatch.rs`) is the decision and re-checks
//! everything under its conditional update.

use std::collections::{HashMap, HashSet};

use kairos_domain::{JobId, RunId};
use uuid::Uuid;

use super::{
    PgStore, fencing,
    rows::{JobRow, RunRow, job_columns, run_columns, shard_value},
};
use crate::{Job, Offer, Result, Run, ShardLease};

#[tracing::instrument(skip_all, fields(shard = lease.shard().get(), runs = run_ids.len()))]
pub(super) async fn run_offers(
    store: &PgStore,
    lease: &ShardLease,
    run_ids: &[RunId],
) -> Result<Vec<Offer>> {
    if run_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = run_ids.iter().map(RunId::as_uuid).collect();
    let mut tx = fencing::begin(store, lease).await?;
    let runs: Vec<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = ANY($1) AND shard = $2 AND state = 'queued' AND NOT cancel_requested"
    ))
    .bind(&ids)
    .bind(shard_value(lease.shard())?)
    .fetch_all(tx.conn())
    .await?;
    let runs = runs
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
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    let jobs: HashMap<JobId, Job> = jobs
        .into_iter()
        .map(|row| Job::try_from(row).map(|job| (job.id, job)))
        .collect::<Result<_>>()?;
    // A run whose job is gone is not offered: the job's delete cancels it.
    runs.into_iter()
        .filter_map(|run| jobs.get(&run.job_id).map(|job| offer(run, job)))
        .collect()
}

fn offer(run: Run, job: &Job) -> Result<Offer> {
    let env = super::dispatch::merged_env(&run, job)?;
    Ok(Offer {
        run_id: run.id,
        job_id: run.job_id,
        image: job.spec.image.clone(),
        command: job.spec.command.clone(),
        env,
        memory: job.spec.memory,
        timeout: job.spec.timeout,
        fire_time: run.fire_time,
        attempt: run.attempt,
    })
}
