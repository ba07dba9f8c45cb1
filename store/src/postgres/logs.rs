//! Run output in the store: the live tail of running runs, written in batches across shards as
//! workers send it, so `GET /v1/runs/{id}/logs` can follow a run by offset while it runs. It
//! must never write a run that is no longer running (its report holds the final output), nor
//! a run of a superseded lease.

use std::collections::HashMap;

use uuid::Uuid;

use super::PgStore;
use super::fencing;
use super::firing::fire_range;
use crate::{LiveLog, Result, cap_log_tail};

/// Stores the latest live tail of each run (the last one given wins); see
/// [`crate::SchedulerStore::record_live_logs`].
#[tracing::instrument(skip_all, fields(runs = logs.len()))]
pub(super) async fn record_live_logs(
    store: &PgStore,
    logs: &[LiveLog],
) -> Result<Vec<kairos_domain::ShardId>> {
    if logs.is_empty() {
        return Ok(Vec::new());
    }
    let batch = fencing::begin_many(store, logs.iter().map(|l| &l.run.lease)).await?;
    let mut latest: HashMap<Uuid, &LiveLog> = HashMap::new();
    for log in logs.iter().filter(|l| batch.holds(&l.run.lease)) {
        latest.insert(log.run.id.as_uuid(), log);
    }
    let mut batch = batch;
    if !latest.is_empty() {
        let mut entries: Vec<(Uuid, &LiveLog)> = latest.into_iter().collect();
        entries.sort_unstable_by_key(|(id, _)| *id);
        let range = fire_range(entries.iter().map(|(_, l)| &l.run));
        let shards = batch.shard_values()?;
        let mut ids = Vec::with_capacity(entries.len());
        let mut tails = Vec::with_capacity(entries.len());
        let mut truncated = Vec::with_capacity(entries.len());
        let mut totals = Vec::with_capacity(entries.len());
        for (id, log) in &entries {
            let (tail, cut) = cap_log_tail(&log.tail);
            ids.push(*id);
            totals.push(
                i64::try_from(log.total_bytes)
                    .unwrap_or(i64::MAX)
                    .max(tail.len() as i64),
            );
            truncated.push(cut || log.total_bytes > tail.len() as u64);
            tails.push(tail);
        }
        // Only forward: a late tail never replaces a longer count already stored.
        sqlx::query(
            "UPDATE runs r
             SET log_tail = i.log_tail, log_truncated = i.log_truncated, log_bytes = i.log_bytes
             FROM UNNEST($1::uuid[], $2::text[], $3::bool[], $4::bigint[])
                  AS i(id, log_tail, log_truncated, log_bytes)
             WHERE r.id = i.id AND r.shard = ANY($5) AND r.state = 'running'
               AND r.fire_time >= $6 AND r.fire_time <= $7 AND i.log_bytes >= r.log_bytes",
        )
        .bind(&ids)
        .bind(&tails)
        .bind(&truncated)
        .bind(&totals)
        .bind(&shards)
        .bind(range.0)
        .bind(range.1)
        .execute(batch.tx.conn())
        .await?;
    }
    batch.commit().await
}
