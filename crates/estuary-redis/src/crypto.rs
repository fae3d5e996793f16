//! Symmetric encryption compatible with channels_redis's
//! `symmetric_encryption_keys` (Fernet, key = SHA-256 of the configured
//! string), and the step before it, channels_redis's `serializer_format`:
//! with `json`, the msgpack body is written as JSON before it is encrypted
//! and read back after it is decrypted (see [`crate::serializer`]). A layer
//! whose messages need neither has no `Crypto`.

use base64::Engine;
use sha2::{Digest, Sha256};

/// The configured keys: encrypt with the first, decrypt with any (none:
/// only the JSON step).
#[derive(Clone)]
pub(crate) struct Crypto {
    keys: Vec<fernet::Fernet>,
    ttl: Option<u64>,
    /// `serializer_format = "json"`.
    json: bool,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("keys", &self.keys.len())
            .field("ttl", &self.ttl)
            .field("json", &self.json)
            .finish()
    }
}

/// Decryption failed with every key (or the token is older than the TTL),
/// or the decrypted body is not the JSON the format says.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecryptError {
    #[error("message could not be decrypted with any configured key (wrong key, or older than its TTL)")]
    Key,
    #[error(transparent)]
    Json(#[from] crate::serializer::BadJson),
}

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
        (!keys.is_empty()).then_some(Self {
            keys,
            ttl,
            json: false,
        })
    }

    /// What a layer with these keys and this format writes and reads with:
    /// `None` when it is plain msgpack.
    pub(crate) fn for_layer<S: AsRef<str>>(
        keys: &[S],
        ttl: Option<u64>,
        format: crate::SerializerFormat,
    ) -> Option<Self> {
        let json = format == crate::SerializerFormat::Json;
        match Self::new(keys, ttl) {
            Some(crypto) => Some(Self { json, ..crypto }),
            None => json.then_some(Self {
                keys: Vec::new(),
                ttl,
                json,
            }),
        }
    }

    /// Whether a send of `message` can be written (JSON cannot hold bytes).
    pub(crate) fn accepts(&self, message: &estuary_core::Message) -> Result<(), crate::serializer::NotJson> {
        if self.json {
            crate::serializer::check_json(message)?;
        }
        Ok(())
    }

    /// A msgpack body as stored: as JSON when the format says so, then
    /// encrypted with the first key, if any.
    pub(crate) fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let json;
        let plain = if self.json {
            json = crate::serializer::msgpack_to_json(plain);
            &json[..]
        } else {
            plain
        };
        match self.keys.first() {
            Some(key) => key.encrypt(plain).into_bytes(),
            None => plain.to_vec(),
        }
    }

    /// A stored body as msgpack: decrypted with any key, if any, then read
    /// from JSON when the format says so.
    pub(crate) fn decrypt(&self, token: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let plain = if self.keys.is_empty() {
            token.to_vec()
        } else {
            self.decrypt_token(token)?
        };
        if self.json {
            return Ok(crate::serializer::json_to_msgpack(&plain)?);
        }
        Ok(plain)
    }

    fn decrypt_token(&self, token: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let token = std::str::from_utf8(token).map_err(|_| DecryptError::Key)?;
        // Refuse a token dated in the far future before the fernet crate adds
        // the TTL to its timestamp (which would overflow on a crafted token).
        let header = base64::engine::general_purpose::URL_SAFE
            .decode(token.get(..12).ok_or(DecryptError::Key)?)
            .map_err(|_| DecryptError::Key)?;
        let stamp = u64::from_be_bytes(
            header
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .ok_or(DecryptError::Key)?,
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if header[0] != 0x80 || stamp > now.saturating_add(60) {
            return Err(DecryptError::Key);
        }
        self.keys
            .iter()
            .find_map(|k| match self.ttl {
                Some(ttl) => k.decrypt_with_ttl(token, ttl).ok(),
                None => k.decrypt(token).ok(),
            })
            .ok_or(DecryptError::Key)
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

    /// channels_redis's order: JSON first, then Fernet; without keys, the
    /// JSON alone; msgpack without keys needs no `Crypto`.
    #[test]
    fn json_is_written_before_it_is_encrypted() {
        use crate::SerializerFormat::{Json, Msgpack};
        let message = estuary_core::Message::from_json(&serde_json::json!({"type": "a.b", "n": 1})).unwrap();
        let plain = Crypto::for_layer::<&str>(&[], Some(70), Json).unwrap();
        let stored = plain.encrypt(message.as_bytes());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&stored).unwrap(),
            serde_json::json!({"type": "a.b", "n": 1})
        );
        assert_eq!(plain.decrypt(&stored).unwrap(), message.as_bytes().to_vec());
        let sealed = Crypto::for_layer(&["k"], Some(70), Json).unwrap();
        let token = sealed.encrypt(message.as_bytes());
        let inner = Crypto::new(&["k"], Some(70)).unwrap().decrypt(&token).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&inner).unwrap()["n"],
            1
        );
        assert_eq!(sealed.decrypt(&token).unwrap(), message.as_bytes().to_vec());
        assert!(matches!(
            plain.decrypt(b"\x81\xa1a\x01"),
            Err(DecryptError::Json(_))
        ));
        assert!(Crypto::for_layer::<&str>(&[], None, Msgpack).is_none());
    }
}
