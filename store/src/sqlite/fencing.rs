//! The shard_fences table: claiming a shard at a newer token, and the lease checks every shard
//! write and fenced read makes inside its transaction; no shard write may skip them.
//!
//! Writes are serialized on the one writer connection, so a claim and a fenced write never
//! interleave: a claim waits for the write in flight, and a write that starts after the claim
//! committed reads the new token and is refused before it has written anything (I1, I8).

use std::collections::HashSet;

use kairos_domain::{FieldError, ShardId};
use sqlx::SqliteConnection;

use super::SqliteStore;
use super::rows::shard_value;
use crate::{Result, ShardLease, StoreError};

/// Longest owner (node id) recorded with a claim.
const MAX_OWNER_LEN: usize = 256;

/// Records `owner` as the holder of `shard` at `token` if `token` is newer than the current
/// one; `Fenced` (and nothing written) otherwise.
#[tracing::instrument(skip_all, fields(shard = shard.get(), token = token))]
pub(super) async fn claim(
    store: &SqliteStore,
    shard: ShardId,
    token: i64,
    owner: &str,
) -> Result<ShardLease> {
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN {
        return Err(FieldError::new("owner", format!("must be 1 to {MAX_OWNER_LEN} bytes")).into());
    }
    let mut tx = store.begin_write().await?;
    let current = token_of(tx.conn(), shard).await?;
    if token <= current {
        tracing::debug!(
            current,
            "claim refused: token not newer than the current one"
        );
        return Err(StoreError::Fenced { shard, token });
    }
    let now = tx.now.clone();
    sqlx::query("UPDATE shard_fences SET token = ?2, owner = ?3, updated_at = ?4 WHERE shard = ?1")
        .bind(shard_value(shard)?)
        .bind(token)
        .bind(owner)
        .bind(now)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    tracing::info!(previous = current, owner, "shard claimed");
    Ok(ShardLease::new(shard, token))
}

/// The highest token any shard was claimed at (0 if none ever was).
pub(super) async fn highest_token(store: &SqliteStore) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(token), 0) FROM shard_fences")
            .fetch_one(store.reader())
            .await?,
    )
}

async fn token_of(conn: &mut SqliteConnection, shard: ShardId) -> Result<i64> {
    let current: Option<i64> =
        sqlx::query_scalar("SELECT token FROM shard_fences WHERE shard = ?1")
            .bind(shard_value(shard)?)
            .fetch_optional(conn)
            .await?;
    current.ok_or_else(|| missing_fence_row(shard))
}

/// `Fenced` unless `lease` still holds the current token of its shard. Run inside the
/// transaction whose writes (or reads) it guards.
pub(super) async fn check(conn: &mut SqliteConnection, lease: &ShardLease) -> Result<()> {
    let current = token_of(conn, lease.shard()).await?;
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
    Ok(())
}

fn missing_fence_row(shard: ShardId) -> StoreError {
    StoreError::Corrupt(format!("shard {} has no fence row", shard.get()))
}

/// The leases of a batch spanning many shards, sorted into current and superseded inside the
/// batch's write transaction. Writes may touch only the runs of the leases it
/// [`holds`](Self::holds); the others are reported back.
#[derive(Debug)]
pub(super) struct Leases {
    held: HashSet<ShardLease>,
    /// The shard values of the held leases, as a JSON array for `IN (SELECT value FROM
    /// json_each(?))`.
    shards: String,
    pub(super) fenced: Vec<ShardId>,
}

impl Leases {
    /// Whether `lease` is still current: only its runs may be written in this transaction.
    pub(super) fn holds(&self, lease: &ShardLease) -> bool {
        self.held.contains(lease)
    }

    /// The held shards as a JSON array of numbers.
    pub(super) fn shards_json(&self) -> &str {
        &self.shards
    }
}

/// Reads the fence rows of every lease of a batch and sorts the leases.
pub(super) async fn sort<'a>(
    conn: &mut SqliteConnection,
    leases: impl IntoIterator<Item = &'a ShardLease>,
) -> Result<Leases> {
    let distinct: HashSet<ShardLease> = leases.into_iter().cloned().collect();
    let mut held = HashSet::with_capacity(distinct.len());
    let mut fenced = Vec::new();
    for lease in distinct {
        if token_of(&mut *conn, lease.shard()).await? == lease.token() {
            held.insert(lease);
        } else {
            fenced.push(lease.shard());
        }
    }
    if !fenced.is_empty() {
        tracing::debug!(
            fenced = fenced.len(),
            "batch writes refused for shards claimed at a newer token"
        );
    }
    let shards = shards_json(held.iter().map(ShardLease::shard));
    Ok(Leases {
        held,
        shards,
        fenced,
    })
}

/// Shards as a JSON array of their numbers, for `json_each`.
pub(super) fn shards_json(shards: impl IntoIterator<Item = ShardId>) -> String {
    let numbers: Vec<String> = shards.into_iter().map(|s| s.get().to_string()).collect();
    format!("[{}]", numbers.join(","))
}
