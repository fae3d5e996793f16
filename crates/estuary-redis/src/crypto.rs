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
        // Refuse a token dated in the far future before the fernet crate adds
        // the TTL to its timestamp (which would overflow on a crafted token).
        let header = base64::engine::general_purpose::URL_SAFE
            .decode(token.get(..12).ok_or(DecryptError)?)
            .map_err(|_| DecryptError)?;
        let stamp = u64::from_be_bytes(
            header
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .ok_or(DecryptError)?,
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if header[0] != 0x80 || stamp > now.saturating_add(60) {
            return Err(DecryptError);
        }
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
        // A token stamped at u64::MAX is refused, not an overflow.
        let mut forged = vec![0x80u8];
        forged.extend_from_slice(&u64::MAX.to_be_bytes());
        forged.extend_from_slice(&[0u8; 60]);
        let forged = base64::engine::general_purpose::URL_SAFE.encode(forged);
        assert!(both.decrypt(forged.as_bytes()).is_err());
        assert!(both.decrypt(b"short").is_err());
        assert!(Crypto::new::<&str>(&[], None).is_none());
    }
}
