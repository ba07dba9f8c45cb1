//! API keys and the admin token: minting keys, hashing them for storage, and checking bearers.
//!
//! A key's secret is shown once, at tenant creation, and only its SHA-256 is stored. Keys carry
//! 256 random bits, so a fast hash is enough (no password stretching needed). Nothing here may
//! log a key or a token.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// The visible prefix of every API key, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "kairos_";

/// A freshly minted API key: the secret for the client, the hash and prefix for storage.
#[derive(Debug)]
pub struct MintedKey {
    pub secret: Secret,
    pub hash: [u8; 32],
    pub display_prefix: String,
}

/// Mints a key of 32 random bytes, hex encoded after [`KEY_PREFIX`].
pub fn mint_key() -> MintedKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let display_prefix = secret.chars().take(KEY_PREFIX.len() + 6).collect();
    MintedKey {
        hash: hash_key(&secret),
        secret: Secret::new(secret),
        display_prefix,
    }
}

pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The bearer token of an `Authorization` header value, if it has one.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares a presented admin token with the configured one in constant time.
pub fn admin_token_matches(configured: &Secret, presented: &str) -> bool {
    // Compare hashes so the length of the secret does not leak through timing either.
    let (a, b) = (hash_key(configured.expose()), hash_key(presented));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_unique_and_hash_to_their_stored_hash() {
        let (a, b) = (mint_key(), mint_key());
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.expose().starts_with(KEY_PREFIX));
        assert_eq!(a.secret.expose().len(), KEY_PREFIX.len() + 64);
        assert_eq!(hash_key(a.secret.expose()), a.hash);
        assert!(a.secret.expose().starts_with(&a.display_prefix));
        assert!(!format!("{a:?}").contains(a.secret.expose()));
    }

    #[test]
    fn bearer_tokens_are_extracted() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn admin_tokens_compare_exactly() {
        let configured = Secret::new("s3cret");
        assert!(admin_token_matches(&configured, "s3cret"));
        assert!(!admin_token_matches(&configured, "s3cre"));
        assert!(!admin_token_matches(&configured, "s3cret "));
    }
}
