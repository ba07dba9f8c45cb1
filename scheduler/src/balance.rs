//! Decides which shards one scheduler node should claim or release next; a pure function of a snapshot, it never does I/O, reads a clock or takes a shard from a live owner.
//!
//! Hand-written on purpose: shard ownership is the core of the scheduler (every fire of a shard
//! is run by whichever node owns it), so its rules are ours to state and to test, not a
//! library's.
//!
//! # Rules
//! With `S` shards and `N` live nodes the target is `⌈S/N⌉` shards per node. `N` counts the
//! planning node even when the snapshot does not list it yet.
//! - A node **above** target releases exactly its surplus, and claims nothing.
//! - A node **at or below** target claims unowned shards until it reaches the target.
//! - A node never takes a shard from another owner, live or dead, and never releases a shard it
//!   is allowed to keep: there is no stop-the-world rebalance. A node that joins gets only what
//!   the others release (or what nobody owns).
//!
//! Since `N · ⌈S/N⌉ ≥ S`, every shard has room somewhere, so once everyone acts on the same
//! membership the cluster converges to every shard owned exactly once and every node at most at
//! target (checked by the property tests below). The result is not necessarily perfectly even
//! (e.g. S = 16, N = 3 can end as 6/6/4); no node is ever above `⌈S/N⌉`.
//!
//! # Shards of dead nodes
//! A shard whose owner is not in `live_nodes` is left alone. Its key is bound to the dead node's
//! lease and disappears when that lease expires; only then can the claim transaction
//! (`create_revision == 0`) succeed anyway, so planning to claim it earlier would only produce
//! failing transactions. Such shards still count as owned until their key vanishes.
//!
//! # Spreading
//! Each node walks the shards in its own order, starting at an offset derived from its id
//! (FNV-1a, stable across releases), so nodes that start together mostly try different shards.
//! A node releases the shards that come last in its own order and so keeps a stable home range.

use std::collections::{BTreeMap, BTreeSet};

use kairos_domain::ShardId;

/// What one node should do next: claim these unowned shards, release these of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Unowned shards to claim, most preferred first; at most `target - owned`.
    pub claim: Vec<ShardId>,
    /// Shards of this node to hand off, exactly `owned - target` when above target.
    pub release: Vec<ShardId>,
}

impl Plan {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.claim.is_empty() && self.release.is_empty()
    }
}

/// `⌈shard_count / nodes⌉`, the most shards one node may hold (`shard_count` when `nodes` is 0).
pub fn target(shard_count: u16, nodes: usize) -> usize {
    usize::from(shard_count).div_ceil(nodes.max(1))
}

/// Plans the next step of node `me` from a snapshot of live nodes and shard owners.
///
/// `owners` maps each owned shard to its owner's node id; shards missing from it are unowned.
/// Shards at or above `shard_count` are ignored.
pub fn plan(
    me: &str,
    live_nodes: &BTreeSet<String>,
    owners: &BTreeMap<ShardId, String>,
    shard_count: u16,
) -> Plan {
    let nodes = live_nodes.len() + usize::from(!live_nodes.contains(me));
    let target = target(shard_count, nodes);
    let order = preference_order(me, shard_count);

    let mine: Vec<ShardId> = order
        .iter()
        .copied()
        .filter(|shard| owners.get(shard).is_some_and(|owner| owner == me))
        .collect();
    if mine.len() > target {
        // Keep the head of our own order, hand off the tail.
        return Plan {
            claim: Vec::new(),
            release: mine[target..].to_vec(),
        };
    }
    let claim = order
        .into_iter()
        .filter(|shard| !owners.contains_key(shard))
        .take(target - mine.len())
        .collect();
    Plan {
        claim,
        release: Vec::new(),
    }
}

/// Every shard below `shard_count`, starting at `me`'s offset and wrapping around.
fn preference_order(me: &str, shard_count: u16) -> Vec<ShardId> {
    if shard_count == 0 {
        return Vec::new();
    }
    let offset = offset_of(me, shard_count);
    (0..shard_count)
        .filter_map(|i| {
            let n = (u32::from(offset) + u32::from(i)) % u32::from(shard_count);
            u16::try_from(n).ok().and_then(ShardId::new)
        })
        .collect()
}

/// Where `me` starts its walk over the shards: FNV-1a of the id, modulo the shard count.
fn offset_of(me: &str, shard_count: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in me.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    u16::try_from(hash % u64::from(shard_count.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::btree_map::Entry;

    fn shard(n: u16) -> ShardId {
        ShardId::new(n).unwrap()
    }

    fn nodes(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    fn count(owners: &BTreeMap<ShardId, String>, node: &str) -> usize {
        owners.values().filter(|owner| *owner == node).count()
    }

    #[test]
    fn a_lone_node_claims_every_shard_starting_at_its_offset() {
        let plan = plan("a", &nodes(&["a"]), &BTreeMap::new(), 16);
        assert!(plan.release.is_empty());
        assert_eq!(plan.claim.len(), 16);
        assert_eq!(plan.claim[0], shard(offset_of("a", 16)));
        let distinct: BTreeSet<_> = plan.claim.iter().collect();
        assert_eq!(distinct.len(), 16);
    }

    #[test]
    fn a_node_counts_itself_even_before_it_is_listed() {
        let plan = plan("b", &nodes(&["a"]), &BTreeMap::new(), 16);
        assert_eq!(plan.claim.len(), 8);
    }

    #[test]
    fn a_node_above_target_releases_exactly_its_surplus_from_the_tail_of_its_order() {
        let owners: BTreeMap<_, _> = (0..16).map(|n| (shard(n), "a".to_owned())).collect();
        let plan = plan("a", &nodes(&["a", "b", "c"]), &owners, 16);
        assert!(plan.claim.is_empty());
        assert_eq!(plan.release.len(), 16 - 6);
        let order = preference_order("a", 16);
        assert_eq!(plan.release, order[6..].to_vec());
    }

    #[test]
    fn a_node_at_target_does_nothing_even_with_unowned_shards_left() {
        let owners: BTreeMap<_, _> = (0..8).map(|n| (shard(n), "a".to_owned())).collect();
        let plan = plan("a", &nodes(&["a", "b"]), &owners, 16);
        assert!(plan.is_empty());
    }

    #[test]
    fn shards_of_other_owners_live_or_dead_are_never_claimed() {
        let mut owners = BTreeMap::new();
        owners.insert(shard(0), "b".to_owned());
        owners.insert(shard(1), "dead".to_owned());
        let plan = plan("a", &nodes(&["a", "b"]), &owners, 4);
        let claimed: BTreeSet<_> = plan.claim.iter().copied().collect();
        assert_eq!(claimed, [shard(2), shard(3)].into_iter().collect());
    }

    #[test]
    fn claims_never_exceed_the_target() {
        let mut owners = BTreeMap::new();
        owners.insert(shard(0), "a".to_owned());
        let plan = plan("a", &nodes(&["a", "b", "c"]), &owners, 10);
        assert_eq!(plan.claim.len(), 3);
    }

    #[test]
    fn the_target_is_the_ceiling_of_shards_over_nodes() {
        assert_eq!(target(16, 3), 6);
        assert_eq!(target(16, 2), 8);
        assert_eq!(target(1024, 0), 1024);
        assert_eq!(target(3, 5), 1);
    }

    #[test]
    fn zero_shards_plans_nothing() {
        assert!(plan("a", &nodes(&["a"]), &BTreeMap::new(), 0).is_empty());
    }

    /// A tiny deterministic generator (xorshift64*) so each proptest case replays exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                let j = usize::try_from(self.next() % (i as u64 + 1)).unwrap();
                items.swap(i, j);
            }
        }
    }

    /// What happened to shards while the simulation ran.
    #[derive(Default)]
    struct Churn {
        /// (node, shard) for every successful release.
        released: Vec<(String, ShardId)>,
        /// (node, shard) for every successful claim.
        claimed: Vec<(String, ShardId)>,
    }

    /// Runs rounds until no node has anything to do. In each round every live node plans
    /// against the same snapshot taken at the start of the round (so their plans race), then
    /// the plans are applied in a random order like etcd would: a claim succeeds only if the
    /// shard is still unowned (`create_revision == 0`), a release only if the node still owns
    /// the shard. Returns the churn, or an error naming the round that broke a rule.
    fn simulate(
        live: &BTreeSet<String>,
        owners: &mut BTreeMap<ShardId, String>,
        shard_count: u16,
        rng: &mut Rng,
    ) -> Result<Churn, TestCaseError> {
        let target = target(shard_count, live.len());
        let mut churn = Churn::default();
        // Releases take one round, claims at least one more per wave of contention.
        let max_rounds = 4 * usize::from(shard_count) + 10;
        for _ in 0..max_rounds {
            let snapshot = owners.clone();
            let mut order: Vec<&String> = live.iter().collect();
            rng.shuffle(&mut order);
            let plans: Vec<(&String, Plan)> = order
                .iter()
                .map(|node| (*node, plan(node, live, &snapshot, shard_count)))
                .collect();
            if plans.iter().all(|(_, plan)| plan.is_empty()) {
                return Ok(churn);
            }
            for (node, plan) in plans {
                let before = count(owners, node);
                for shard in plan.release {
                    prop_assert_eq!(owners.get(&shard), Some(node));
                    owners.remove(&shard);
                    churn.released.push((node.clone(), shard));
                }
                for shard in plan.claim {
                    if let Entry::Vacant(free) = owners.entry(shard) {
                        free.insert(node.clone());
                        churn.claimed.push((node.clone(), shard));
                    }
                }
                let after = count(owners, node);
                prop_assert!(
                    after <= before.max(target),
                    "{node} grew from {before} to {after}, past target {target}"
                );
            }
        }
        Err(TestCaseError::fail(format!(
            "no convergence after {max_rounds} rounds"
        )))
    }

    fn check_converged(
        live: &BTreeSet<String>,
        owners: &BTreeMap<ShardId, String>,
        shard_count: u16,
    ) -> Result<(), TestCaseError> {
        let target = target(shard_count, live.len());
        prop_assert_eq!(owners.len(), usize::from(shard_count), "every shard owned");
        for node in live {
            prop_assert!(count(owners, node) <= target, "{node} above {target}");
        }
        prop_assert!(owners.values().all(|owner| live.contains(owner)));
        Ok(())
    }

    fn node_names(n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn racing_nodes_converge_to_every_shard_owned_once_and_none_above_target(
            node_count in 1usize..7,
            shard_count in 1u16..96,
            seed in 1u64..,
        ) {
            let live = node_names(node_count);
            let mut owners = BTreeMap::new();
            let mut rng = Rng(seed);
            simulate(&live, &mut owners, shard_count, &mut rng)?;
            check_converged(&live, &owners, shard_count)?;
        }

        #[test]
        fn a_joining_node_takes_only_what_others_release_and_they_release_only_their_surplus(
            node_count in 1usize..6,
            shard_count in 1u16..96,
            seed in 1u64..,
        ) {
            let mut live = node_names(node_count);
            let mut owners = BTreeMap::new();
            let mut rng = Rng(seed);
            simulate(&live, &mut owners, shard_count, &mut rng)?;

            let joiner = "joiner".to_owned();
            live.insert(joiner.clone());
            let new_target = target(shard_count, live.len());
            let surplus: usize = live
                .iter()
                .map(|node| count(&owners, node).saturating_sub(new_target))
                .sum();
            let churn = simulate(&live, &mut owners, shard_count, &mut rng)?;
            check_converged(&live, &owners, shard_count)?;

            // Everything was owned before the join: whatever anyone claims now was released.
            let released: BTreeSet<ShardId> =
                churn.released.iter().map(|(_, shard)| *shard).collect();
            for (_, shard) in &churn.claimed {
                prop_assert!(released.contains(shard));
            }
            prop_assert!(churn.released.iter().all(|(node, _)| *node != joiner));
            prop_assert_eq!(churn.released.len(), surplus, "no release beyond the surplus");
        }

        #[test]
        fn survivors_of_a_crash_pick_up_its_shards_once_its_keys_vanish(
            node_count in 2usize..7,
            shard_count in 1u16..96,
            seed in 1u64..,
        ) {
            let mut live = node_names(node_count);
            let mut owners = BTreeMap::new();
            let mut rng = Rng(seed);
            simulate(&live, &mut owners, shard_count, &mut rng)?;

            let victim = "node-0".to_owned();
            live.remove(&victim);
            // While its lease lives its keys stay, and nobody touches them.
            let churn = simulate(&live, &mut owners, shard_count, &mut rng)?;
            prop_assert!(churn.released.is_empty());
            for (_, shard) in &churn.claimed {
                prop_assert!(owners.get(shard) != Some(&victim));
            }
            // Then the lease expires and its keys disappear.
            owners.retain(|_, owner| *owner != victim);
            simulate(&live, &mut owners, shard_count, &mut rng)?;
            check_converged(&live, &owners, shard_count)?;
        }
    }
}
