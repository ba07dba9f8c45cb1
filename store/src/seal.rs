//! Secrets at rest: registry passwords are sealed with AES-256-GCM (via the RustCrypto
//! `aes-gcm` crate) under the servers' `KAIROS_SECRET_KEY` before they are written, and opened
//! only for the offer that hands them to a worker. The key never leaves this module's type, and
//! nothing here logs or formats a plaintext.

use std::fmt;

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};

/// Bytes of the nonce that starts every sealed value.
const NONCE_LEN: usize = 12;

/// The 256-bit key secrets are sealed with. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SecretKey(Key<Aes256Gcm>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// A key that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KAIROS_SECRET_KEY must be 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`")]
pub struct BadSecretKey;

impl SecretKey {
    /// A key from 64 hex digits.
    pub fn from_hex(hex_key: &str) -> Result<Self, BadSecretKey> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| BadSecretKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| BadSecretKey)?;
        Ok(Self(bytes.into()))
    }

    /// A fresh random key, as 64 hex digits (for installs that keep their own, like standalone).
    pub fn generate_hex() -> String {
        hex::encode(Aes256Gcm::generate_key(&mut OsRng))
    }

    /// Seals `plaintext`, bound to `context` (the row it belongs to): nonce, then ciphertext.
    pub(crate) fn seal(&self, plaintext: &str, context: &[u8]) -> Result<Vec<u8>, SealError> {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context,
                },
            )
            .map_err(|_| SealError)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`seal`](Self::seal) made for the same `context`; fails on any other key,
    /// context or a changed byte.
    pub(crate) fn open(&self, sealed: &[u8], context: &[u8]) -> Result<String, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError)?;
        let plain = Aes256Gcm::new(&self.0)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| SealError)?;
        String::from_utf8(plain).map_err(|_| SealError)
    }
}

/// A value that cannot be sealed or opened (wrong key, tampered, not ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a sealed secret cannot be opened with this server's KAIROS_SECRET_KEY")]
pub struct SealError;

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_hex(&SecretKey::generate_hex()).expect("key")
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_context() {
        let k = key();
        let sealed = k.seal("hunter2", b"ten/ghcr").expect("seal");
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "no plaintext at rest"
        );
        assert_eq!(k.open(&sealed, b"ten/ghcr").expect("open"), "hunter2");
        assert_eq!(
            k.open(&sealed, b"ten/other"),
            Err(SealError),
            "bound to its row"
        );
        assert_eq!(
            key().open(&sealed, b"ten/ghcr"),
            Err(SealError),
            "another key"
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(k.open(&tampered, b"ten/ghcr"), Err(SealError));
    }

    #[test]
    fn two_seals_of_one_secret_differ() {
        let k = key();
        assert_ne!(
            k.seal("x", b"c").expect("seal"),
            k.seal("x", b"c").expect("seal")
        );
    }

    #[test]
    fn keys_are_64_hex_digits_and_never_shown() {
        assert!(SecretKey::from_hex("abcd").is_err());
        assert!(SecretKey::from_hex(&"zz".repeat(32)).is_err());
        let k = key();
        assert_eq!(format!("{k:?}"), "SecretKey(***)");
    }
}
