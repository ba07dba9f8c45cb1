//! The shard_fences table: claiming a shard at a newer token, and the one fenced transaction
//! every shard write runs in; no shard write may open a transaction any other way.
//!
//! A claim locks the shard's fence row `FOR UPDATE`; a fenced transaction begins by reading it
//! `FOR SHARE` and holds that lock until it ends. So a claim waits for the previous holder's
//! writes in flight, and once the claim commits every write with the old token fails before
//! it has written anything (I1, I8).

use std::collections::{HashMap, HashSet};

use kairos_domain::{FieldError, ShardId};
use sqlx::PgConnection;

use super::PgStore;
use super::rows::shard_value;
use super::tx::Tx;
use crate::{Result, ShardLease, StoreError};

/// Longest owner (node id) recorded with a claim.
const MAX_OWNER_LEN: usize = 256;

/// Records `owner` as the holder of `shard` at `token` if `token` is newer than the current
/// one; `Fenced` (and nothing written) otherwise.
#[tracing::instrument(skip_all, fields(shard = shard.get(), token = token))]
pub(super) async fn claim(
    store: &PgStore,
    shard: ShardId,
    token: i64,
    owner: &str,
) -> Result<ShardLease> {
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN {
        return Err(FieldError::new("owner", format!("must be 1 to {MAX_OWNER_LEN} bytes")).into());
    }
    let mut tx = store.begin().await?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT token FROM shard_fences WHERE shard = $1 FOR UPDATE")
            .bind(shard_value(shard)?)
            .fetch_optional(tx.conn())
            .await?;
    let current = current.ok_or_else(|| missing_fence_row(shard))?;
    if token <= current {
        tracing::debug!(
            current,
            "claim refused: token not newer than the current one"
        );
        return Err(StoreError::Fenced { shard, token });
    }
    sqlx::query(
        "UPDATE shard_fences SET token = $2, owner = $3, updated_at = now() WHERE shard = $1",
    )
    .bind(shard_value(shard)?)
    .bind(token)
    .bind(owner)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    tracing::info!(previous = current, owner, "shard claimed");
    Ok(ShardLease::new(shard, token))
}

/// The highest token any shard was claimed at (0 if none ever was).
pub(super) async fn highest_token(store: &PgStore) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(token), 0)::bigint FROM shard_fences")
            .fetch_one(store.pool())
            .await?,
    )
}

/// A transaction that has checked the lease and holds the fence row `FOR SHARE` until it ends.
/// The only way to write a shard's runs and schedules.
#[derive(Debug)]
pub(super) struct FencedTx {
    tx: Tx,
}

impl FencedTx {
    /// The transaction's connection, to run statements on.
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        self.tx.conn()
    }

    /// The underlying transaction, for `events::record*`.
    pub(super) fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    pub(super) async fn commit(self) -> Result<()> {
        self.tx.commit().await
    }
}

/// Begins a transaction and checks that `lease` still holds the current token of its shard,
/// locking the fence row against a new claim until the transaction ends; `Fenced` otherwise.
pub(super) async fn begin(store: &PgStore, lease: &ShardLease) -> Result<FencedTx> {
    let mut tx = store.begin().await?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT token FROM shard_fences WHERE shard = $1 FOR SHARE")
            .bind(shard_value(lease.shard())?)
            .fetch_optional(tx.conn())
            .await?;
    let current = current.ok_or_else(|| missing_fence_row(lease.shard()))?;
    if current != lease.token() {
        // Not logged louder here: the caller handles it (it stops firing the shard).
        tracing::debug!(
            shard = lease.shard().get(),
            token = lease.token(),
            current,
            "write refused: the shard was claimed at a newer token"
        );
        return Err(StoreError::Fenced {
            shard: lease.shard(),
            token: lease.token(),
        });
    }
    Ok(FencedTx { tx })
}

fn missing_fence_row(shard: ShardId) -> StoreError {
    StoreError::Corrupt(format!("shard {} has no fence row", shard.get()))
}

/// A transaction that checked several leases at once (the scheduler's cross-shard batches)
/// and holds their fence rows `FOR SHARE` until it ends. Writes in it may touch only the runs
/// of the leases it [`holds`](Self::holds); the others were superseded and are reported back.
#[derive(Debug)]
pub(super) struct FencedBatch {
    pub(super) tx: FencedTx,
    held: HashSet<ShardLease>,
    fenced: Vec<ShardId>,
}

impl FencedBatch {
    /// Whether `lease` is still current: only its runs may be written in this transaction.
    pub(super) fn holds(&self, lease: &ShardLease) -> bool {
        self.held.contains(lease)
    }

    /// The shard values of the current leases, for `shard = ANY($n)` in the batch's SQL.
    pub(super) fn shard_values(&self) -> Result<Vec<i16>> {
        self.held.iter().map(|l| shard_value(l.shard())).collect()
    }

    /// Commits, answering the shards whose lease in the batch was superseded by a newer claim
    /// (nothing of theirs was written).
    pub(super) async fn commit(self) -> Result<Vec<ShardId>> {
        self.tx.commit().await?;
        Ok(self.fenced)
    }
}

/// Begins one transaction for a batch spanning many shards: reads all their fence rows
/// `FOR SHARE` in one statement (in shard order, against deadlocks with claims) and sorts the
/// leases into current and superseded. One round trip instead of one transaction per shard.
pub(super) async fn begin_many<'a>(
    store: &PgStore,
    leases: impl IntoIterator<Item = &'a ShardLease>,
) -> Result<FencedBatch> {
    let distinct: HashSet<ShardLease> = leases.into_iter().cloned().collect();
    let mut shards: Vec<i16> = distinct
        .iter()
        .map(|l| shard_value(l.shard()))
        .collect::<Result<_>>()?;
    shards.sort_unstable();
    shards.dedup();
    let mut tx = store.begin().await?;
    let current: Vec<(i16, i64)> = sqlx::query_as(
        "SELECT shard, token FROM shard_fences WHERE shard = ANY($1) ORDER BY shard FOR SHARE",
    )
    .bind(&shards)
    .fetch_all(tx.conn())
    .await?;
    let current: HashMap<i16, i64> = current.into_iter().collect();
    let mut held = HashSet::with_capacity(distinct.len());
    let mut fenced = Vec::new();
    for lease in distinct {
        let value = shard_value(lease.shard())?;
        match current.get(&value) {
            Some(token) if *token == lease.token() => {
                held.insert(lease);
            }
            Some(_) => fenced.push(lease.shard()),
            None => return Err(missing_fence_row(lease.shard())),
        }
    }
    if !fenced.is_empty() {
        tracing::debug!(
            fenced = fenced.len(),
            "batch writes refused for shards claimed at a newer token"
        );
    }
    Ok(FencedBatch {
        tx: FencedTx { tx },
        held,
        fenced,
    })
}
