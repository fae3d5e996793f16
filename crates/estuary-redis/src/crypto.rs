//! Symmetric encryption compatible with channels_redis's
//! `symmetric_encryption_keys` (Fernet, key = SHA-256 of the configured string).

use base64::Engine;
use sha2::{Digest, Sha256};

/// The configured keys: encrypt with the first, decrypt with any.
#[derive(Clone)]
pub(crate) struct Crypto {
    keys: Vec<fernet::Fernet>,
    ttl: Option<u64>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("keys", &self.keys.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Decryption failed with every key (or the token is older than the TTL).
#[derive(Debug, thiserror::Error)]
#[error("message could not be decrypted with any configured key (wrong key, or older than its TTL)")]
pub(crate) struct DecryptError;

impl Crypto {
    /// Keys as channels_redis derives them: `base64url(sha256(utf8(key)))`.
    /// `ttl` is the token lifetime checked on decryption (core: expiry + 10 s).
    pub(crate) fn new<S: AsRef<str>>(keys: &[S], ttl: Option<u64>) -> Option<Self> {
        let keys: Vec<fernet::Fernet> = keys
            .iter()
            .filter_map(|k| {
                let digest = Sha256::digest(k.as_ref().as_bytes());
                fernet::Fernet::new(&base64::engine::general_purpose::URL_SAFE.encode(digest))
            })
            .collect();
        (!keys.is_empty()).then_some(Self { keys, ttl })
    }

    pub(crate) fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        self.keys[0].encrypt(plain).into_bytes()
    }

    pub(crate) fn decrypt(&self, token: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let token = std::str::from_utf8(token).map_err(|_| DecryptError)?;
        self.keys
            .iter()
            .find_map(|k| match self.ttl {
                Some(ttl) => k.decrypt_with_ttl(token, ttl).ok(),
                None => k.decrypt(token).ok(),
            })
            .ok_or(DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_key_rotation() {
        let old = Crypto::new(&["old-key"], Some(70)).unwrap();
        let both = Crypto::new(&["new-key", "old-key"], Some(70)).unwrap();
        let token = old.encrypt(b"hello");
        assert!(token.starts_with(b"gAAAAA"), "Fernet version byte 0x80");
        assert_eq!(both.decrypt(&token).unwrap(), b"hello");
        let other = Crypto::new(&["other"], Some(70)).unwrap();
        assert!(other.decrypt(&token).is_err());
        assert!(Crypto::new::<&str>(&[], None).is_none());
    }
}
