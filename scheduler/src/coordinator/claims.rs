//! The only two writes a node makes to shard keys: claim (create the key only if absent, bound to our lease) and release (delete only our own claim); nothing here may overwrite or delete another node's claim.

use etcd_client::{Compare, CompareOp, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse};
use kairos_domain::ShardId;

use super::watch::{Claim, Keys};

/// Most claims in one transaction; etcd refuses more than 128 operations per transaction by
/// default (`--max-txn-ops`).
pub(crate) const CLAIM_BATCH: usize = 64;

/// How one claim in a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimOutcome {
    /// The key was absent and is now ours; `token` is the revision that created it.
    Won { token: i64 },
    /// Someone holds the key: their claim and its revision, when etcd returned it.
    Taken(Option<(Claim, i64)>),
}

/// Claims `shards` (at most [`CLAIM_BATCH`]) for `node_id` under `lease` in one transaction
/// made of one sub-transaction per shard: `create_revision(key) == 0 → put(key, node_id,
/// lease)`, else read the key. Every shard is decided on its own; all that are won share one
/// revision, the fence token (the etcd revision at which the shard was claimed).
pub(crate) async fn claim(
    kv: &mut KvClient,
    keys: &Keys,
    node_id: &str,
    lease: i64,
    shards: &[ShardId],
) -> Result<Vec<(ShardId, ClaimOutcome)>, etcd_client::Error> {
    let operations: Vec<TxnOp> = shards
        .iter()
        .map(|shard| {
            let key = keys.shard(*shard);
            TxnOp::txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        node_id,
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(key, None)]),
            )
        })
        .collect();
    let response = kv.txn(Txn::new().and_then(operations)).await?;
    let revision = response.header().map_or(0, |header| header.revision());
    let outcomes = response.op_responses().into_iter().map(|op| match op {
        TxnOpResponse::Txn(inner) if inner.succeeded() => ClaimOutcome::Won { token: revision },
        TxnOpResponse::Txn(inner) => {
            ClaimOutcome::Taken(inner.op_responses().into_iter().find_map(|op| {
                match op {
                    TxnOpResponse::Get(get) => get
                        .kvs()
                        .first()
                        .map(|kv| (Claim::from_kv(kv), kv.mod_revision())),
                    _ => None,
                }
            }))
        }
        _ => ClaimOutcome::Taken(None),
    });
    Ok(shards.iter().copied().zip(outcomes).collect())
}

/// Deletes `shard`'s key if it is still this claim: its value is `node_id` and it was created
/// at `token`. Returns the revision after the transaction; whether or not the key matched, it
/// is not ours afterwards.
pub(crate) async fn release(
    kv: &mut KvClient,
    keys: &Keys,
    node_id: &str,
    shard: ShardId,
    token: i64,
) -> Result<i64, etcd_client::Error> {
    let key = keys.shard(shard);
    let response = kv
        .txn(
            Txn::new()
                .when([
                    Compare::value(key.clone(), CompareOp::Equal, node_id),
                    Compare::create_revision(key.clone(), CompareOp::Equal, token),
                ])
                .and_then([TxnOp::delete(key, None)]),
        )
        .await?;
    Ok(response.header().map_or(0, |header| header.revision()))
}
