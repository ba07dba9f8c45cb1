//! A stable 64-bit hash (FNV-1a) for values derived from ids that must never change between
//! releases or machines: shards, jitter offsets, retry backoff jitter.
//!
//! Spelled out rather than borrowed from std, whose `DefaultHasher` may change between Rust
//! releases; it must never be used where an attacker choosing the input could matter.

/// FNV-1a, 64 bit, over `parts` in order (as if concatenated).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// A number in `[0, 1)` drawn from `seed` (its top 53 bits), for deterministic jitter.
pub fn unit_interval(seed: u64) -> f64 {
    // SplitMix64 finalizer: neighbouring seeds land far apart.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_pinned() {
        // Pinned: shards and jitter offsets are stored or relied on across releases.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&[b"ab"]), fnv1a(&[b"a", b"b"]));
    }

    #[test]
    fn unit_interval_stays_in_range_and_spreads() {
        let draws: Vec<f64> = (0..10_000u64).map(unit_interval).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let low = draws.iter().filter(|u| **u < 0.5).count();
        assert!(
            (4_500..5_500).contains(&low),
            "{low} of 10000 below one half"
        );
    }
}
