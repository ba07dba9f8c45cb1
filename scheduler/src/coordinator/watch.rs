//! This node's view of the cluster in etcd (live nodes, shard claims), built from one consistent snapshot and kept current by watching `{prefix}nodes/` and `{prefix}shards/`; it never writes to etcd and never lets an event older than what it knows overwrite it.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::{
    Client, EventType, GetOptions, KeyValue, KvClient, Txn, TxnOp, TxnOpResponse, WatchOptions,
    WatchResponse, WatchStream,
};
use futures::StreamExt as _;
use kairos_domain::ShardId;

/// Owner recorded for a claim that carries this node's id but not its current lease (left by
/// an earlier lease of this node, or being deleted): not ours to fire, not free to claim. Node
/// ids are printable ASCII, so no node can be called this.
pub(crate) const STALE_OWNER: &str = "\u{0}stale";

/// The etcd keys of one deployment.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    shard_count: u16,
}

impl Keys {
    pub(crate) fn new(prefix: &str, shard_count: u16) -> Self {
        Self {
            prefix: prefix.to_owned(),
            shard_count,
        }
    }

    pub(crate) fn nodes_prefix(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    pub(crate) fn shards_prefix(&self) -> String {
        format!("{}shards/", self.prefix)
    }

    /// `{prefix}nodes/{node_id}`: present while the node's lease lives; its value is the
    /// node's advertised worker-facing URL.
    pub(crate) fn node(&self, node_id: &str) -> String {
        format!("{}nodes/{node_id}", self.prefix)
    }

    /// `{prefix}shards/{n}`: its value is the owner's node id, bound to the owner's lease.
    pub(crate) fn shard(&self, shard: ShardId) -> String {
        format!("{}shards/{}", self.prefix, shard.get())
    }

    fn parse_node(&self, key: &[u8]) -> Option<String> {
        let id = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.nodes_prefix())?;
        (!id.is_empty()).then(|| id.to_owned())
    }

    /// The shard of a canonical key (`.../shards/7`, not `.../shards/07`) below the shard count.
    fn parse_shard(&self, key: &[u8]) -> Option<ShardId> {
        let n = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.shards_prefix())?;
        let shard = n.parse::<u16>().ok().filter(|n| *n < self.shard_count)?;
        (shard.to_string() == n).then_some(())?;
        ShardId::new(shard)
    }
}

/// A shard key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) owner: String,
    pub(crate) lease: i64,
    /// The claim's fence token.
    pub(crate) create_revision: i64,
}

impl Claim {
    pub(crate) fn from_kv(kv: &KeyValue) -> Self {
        Self {
            owner: String::from_utf8_lossy(kv.value()).into_owned(),
            lease: kv.lease(),
            create_revision: kv.create_revision(),
        }
    }
}

/// What is known of one shard key, and as of which revision.
#[derive(Debug, Clone)]
struct Slot {
    claim: Option<Claim>,
    revision: i64,
}

/// Live nodes and shard claims as of the events applied so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    nodes: BTreeSet<String>,
    shards: BTreeMap<ShardId, Slot>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Node {
        id: String,
        present: bool,
    },
    Shard {
        shard: ShardId,
        claim: Option<Claim>,
        revision: i64,
    },
}

impl View {
    pub(crate) fn live_nodes(&self) -> &BTreeSet<String> {
        &self.nodes
    }

    pub(crate) fn claim(&self, shard: ShardId) -> Option<&Claim> {
        self.shards.get(&shard).and_then(|slot| slot.claim.as_ref())
    }

    /// Records a node joining or leaving; true if that changed the view.
    pub(crate) fn apply_node(&mut self, id: String, present: bool) -> bool {
        if present {
            self.nodes.insert(id)
        } else {
            self.nodes.remove(&id)
        }
    }

    /// Records the state of a shard key at `revision`, unless the view already knows a state
    /// at that revision or later; true if it was applied.
    pub(crate) fn apply_shard(
        &mut self,
        shard: ShardId,
        claim: Option<Claim>,
        revision: i64,
    ) -> bool {
        match self.shards.get(&shard) {
            Some(slot) if slot.revision >= revision => false,
            _ => {
                self.shards.insert(shard, Slot { claim, revision });
                true
            }
        }
    }

    /// Applies one watch change; true if it changed the view.
    pub(crate) fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Node { id, present } => self.apply_node(id, present),
            Change::Shard {
                shard,
                claim,
                revision,
            } => self.apply_shard(shard, claim, revision),
        }
    }

    /// Shard owners for [`crate::balance::plan`]: claims of `me` count as `me`'s only when
    /// `is_mine` says so; other claims carrying `me`'s id are [`STALE_OWNER`].
    pub(crate) fn owners(
        &self,
        me: &str,
        is_mine: impl Fn(ShardId, &Claim) -> bool,
    ) -> BTreeMap<ShardId, String> {
        self.shards
            .iter()
            .filter_map(|(shard, slot)| {
                let claim = slot.claim.as_ref()?;
                let owner = if claim.owner != me || is_mine(*shard, claim) {
                    claim.owner.clone()
                } else {
                    STALE_OWNER.to_owned()
                };
                Some((*shard, owner))
            })
            .collect()
    }
}

/// Reads every node and shard key in one transaction: the view and the revision it is at.
pub(crate) async fn snapshot(
    kv: &mut KvClient,
    keys: &Keys,
) -> Result<(View, i64), etcd_client::Error> {
    let response = kv
        .txn(Txn::new().and_then([
            TxnOp::get(keys.nodes_prefix(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(keys.shards_prefix(), Some(GetOptions::new().with_prefix())),
        ]))
        .await?;
    let revision = response.header().map_or(0, |header| header.revision());
    let mut view = View::default();
    for op in response.op_responses() {
        let TxnOpResponse::Get(get) = op else {
            continue;
        };
        for kv in get.kvs() {
            if let Some(id) = keys.parse_node(kv.key()) {
                view.nodes.insert(id);
            } else if let Some(shard) = keys.parse_shard(kv.key()) {
                view.apply_shard(shard, Some(Claim::from_kv(kv)), kv.mod_revision());
            }
        }
    }
    // Keys absent from the snapshot are known absent as of its revision.
    for n in 0..keys.shard_count {
        if let Some(shard) = ShardId::new(n) {
            view.shards.entry(shard).or_insert(Slot {
                claim: None,
                revision,
            });
        }
    }
    Ok((view, revision))
}

/// The changes one watch response carries; keys outside the node and shard ranges are skipped.
pub(crate) fn changes(keys: &Keys, response: &WatchResponse) -> Vec<Change> {
    response
        .events()
        .iter()
        .filter_map(|event| {
            let kv = event.kv()?;
            let present = matches!(event.event_type(), EventType::Put);
            if let Some(id) = keys.parse_node(kv.key()) {
                return Some(Change::Node { id, present });
            }
            let shard = keys.parse_shard(kv.key())?;
            Some(Change::Shard {
                shard,
                claim: present.then(|| Claim::from_kv(kv)),
                revision: kv.mod_revision(),
            })
        })
        .collect()
}

/// The two watches, from one revision on.
#[derive(Debug)]
pub(crate) struct Watches {
    nodes: WatchStream,
    shards: WatchStream,
}

impl Watches {
    pub(crate) async fn open(
        client: &Client,
        keys: &Keys,
        from_revision: i64,
    ) -> Result<Self, etcd_client::Error> {
        let mut watch = client.watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from_revision);
        let nodes = watch
            .watch(keys.nodes_prefix(), Some(options.clone()))
            .await?;
        let shards = watch.watch(keys.shards_prefix(), Some(options)).await?;
        Ok(Self { nodes, shards })
    }

    /// The next response of either watch; `Ok(None)` when a stream ended. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Option<WatchResponse>, etcd_client::Error> {
        tokio::select! {
            response = self.nodes.next() => response.transpose(),
            response = self.shards.next() => response.transpose(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(n: u16) -> ShardId {
        ShardId::new(n).unwrap()
    }

    fn claim(owner: &str, lease: i64, token: i64) -> Claim {
        Claim {
            owner: owner.to_owned(),
            lease,
            create_revision: token,
        }
    }

    #[test]
    fn keys_round_trip_and_reject_what_is_not_ours() {
        let keys = Keys::new("/k/", 16);
        assert_eq!(keys.shard(shard(7)), "/k/shards/7");
        assert_eq!(keys.node("a"), "/k/nodes/a");
        assert_eq!(keys.parse_shard(b"/k/shards/7"), Some(shard(7)));
        assert_eq!(keys.parse_shard(b"/k/shards/07"), None);
        assert_eq!(keys.parse_shard(b"/k/shards/16"), None);
        assert_eq!(keys.parse_shard(b"/other/shards/1"), None);
        assert_eq!(keys.parse_node(b"/k/nodes/a"), Some("a".to_owned()));
        assert_eq!(keys.parse_node(b"/k/nodes/"), None);
    }

    #[test]
    fn an_event_older_than_what_the_view_knows_is_ignored() {
        let mut view = View::default();
        assert!(view.apply_shard(shard(1), Some(claim("a", 5, 100)), 100));
        // A delete from before our claim arrives late.
        assert!(!view.apply_shard(shard(1), None, 90));
        assert_eq!(view.claim(shard(1)), Some(&claim("a", 5, 100)));
        // The real delete, after it.
        assert!(view.apply_shard(shard(1), None, 120));
        assert_eq!(view.claim(shard(1)), None);
        // And a late copy of the claim cannot resurrect it.
        assert!(!view.apply_shard(shard(1), Some(claim("a", 5, 100)), 100));
    }

    #[test]
    fn claims_with_our_id_but_not_ours_are_reported_stale() {
        let mut view = View::default();
        view.apply_shard(shard(0), Some(claim("me", 1, 10)), 10);
        view.apply_shard(shard(1), Some(claim("me", 2, 11)), 11);
        view.apply_shard(shard(2), Some(claim("other", 3, 12)), 12);
        let owners = view.owners("me", |_, claim| claim.lease == 2);
        assert_eq!(owners[&shard(0)], STALE_OWNER);
        assert_eq!(owners[&shard(1)], "me");
        assert_eq!(owners[&shard(2)], "other");
    }
}
