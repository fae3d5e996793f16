//! A Redis channel layer for Estuary, wire-compatible with Django's
//! `channels_redis` (core layer, 4.x).
//!
//! A Django project and Estuary sharing one Redis exchange `send` and
//! `group_send` messages in both directions: Django's `group_send` reaches
//! Estuary's WebSocket clients, and Estuary's consumers reach Django's.
//! See [`RedisChannelLayer`] and `docs/DJANGO.md`.

mod codec;
mod config;
mod crypto;
mod faults;
mod layer;
mod local;
mod pubsub;
mod scripts;
mod shard;

pub use config::RedisConfig;
pub use faults::{NotRestored, WrongType};
pub use layer::{RedisChannelLayer, RedisLayerError};
pub use pubsub::RedisPubSubChannelLayer;
pub use shard::shard_index;
