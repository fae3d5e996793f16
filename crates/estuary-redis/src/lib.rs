//! A Redis channel layer for Estuary, wire-compatible with Django's
//! `channels_redis` (core layer, 4.x).
//!
//! A Django project and Estuary sharing one Redis exchange `send` and
//! `group_send` messages in both directions: Django's `group_send` reaches
//! Estuary's WebSocket clients, and Estuary's consumers reach Django's.
//! See [`RedisChannelLayer`] and `docs/DJANGO.md`.

#[cfg(feature = "serde")]
mod capacity;
mod codec;
mod config;
mod connection;
mod crypto;
mod error;
mod faults;
mod flavour;
#[cfg(feature = "serde")]
mod hosts;
mod layer;
mod local;
mod pubsub;
mod scripts;
mod sentinel;
mod serializer;
#[cfg(feature = "serde")]
mod settings;
mod shard;
mod tcp;

#[cfg(feature = "serde")]
pub use capacity::{CapacityPattern, ChannelCapacity, NotACapacity};
pub use config::RedisConfig;
pub use error::{RedisLayerError, RedisLayerErrorKind};
pub use faults::{NotRestored, WrongType};
pub use flavour::{RedisFlavour, UnknownFlavour};
pub use layer::RedisChannelLayer;
pub use pubsub::RedisPubSubChannelLayer;
pub use serializer::{NotJson, SerializerFormat, UnknownFormat};
#[cfg(feature = "serde")]
pub use settings::{LayerSettings, LayerSettingsError};
pub use shard::shard_index;

/// The stored-message codec, reachable from the fuzz harness (`fuzz/`).
///
/// Not part of the API: it exists so that the harness can feed hostile
/// sorted-set members to the decoder the layer runs on every message it
/// reads from Redis, and may change at any time.
#[doc(hidden)]
pub mod fuzzing {
    use estuary_core::{ChannelName, Message};

    /// A decoded member: the message without `__asgi_channel__`, and its targets.
    pub type Decoded = (Message, Vec<ChannelName>);

    /// The Fernet keys of a layer configured with `symmetric_encryption_keys`.
    #[derive(Debug, Clone)]
    pub struct Keys(crate::crypto::Crypto);

    impl Keys {
        /// Keys derived as channels_redis derives them, with no TTL check (so
        /// that stored corpus tokens stay decryptable).
        pub fn new(keys: &[&str]) -> Option<Self> {
            crate::crypto::Crypto::new(keys, None).map(Self)
        }

        /// Encrypts `plain` into a Fernet token, as the layer does before storing.
        pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
            self.0.encrypt(plain)
        }
    }

    /// Decodes a stored sorted-set member (random prefix, optional
    /// encryption, msgpack with `__asgi_channel__`); errors as text.
    pub fn decode_member(member: &[u8], keys: Option<&Keys>) -> Result<Decoded, String> {
        crate::codec::decode_member(member, keys.map(|k| &k.0))
            .map(|d| {
                // The names the layer would reach: those Estuary can address.
                let targets = d.targets().filter_map(|t| ChannelName::new(t).ok()).collect();
                (d.message, targets)
            })
            .map_err(|e| e.to_string())
    }

    /// Encodes `message` for storage, addressed to `targets` as a group send
    /// (an array), a direct send (one name, `as_array` false) or a plain
    /// channel (no names).
    pub fn encode_member(
        message: &Message,
        targets: &[ChannelName],
        as_array: bool,
        keys: Option<&Keys>,
    ) -> Vec<u8> {
        use crate::codec::Target;
        let refs: Vec<&ChannelName> = targets.iter().collect();
        let target = match (&refs[..], as_array) {
            ([], _) => Target::None,
            ([one], false) => Target::One(one),
            (many, _) => Target::Many(many),
        };
        crate::codec::encode_member(message, target, keys.map(|k| &k.0))
    }
}
