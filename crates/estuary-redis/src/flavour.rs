//! Which of channels_redis's two layers to speak: a choice, not a string.

use estuary_core::ChannelLayerHandle;

use crate::{RedisChannelLayer, RedisConfig, RedisLayerError, RedisPubSubChannelLayer};

/// The channels_redis layer a Redis configuration speaks; it must be the
/// one Django's `CHANNEL_LAYERS` `BACKEND` names.
///
/// With the `serde` feature it reads and writes as `"core"` or `"pubsub"`;
/// another value is an error that lists the two. [`FromStr`](std::str::FromStr)
/// reads the same names.
///
/// ```
/// use estuary_redis::{RedisConfig, RedisFlavour};
///
/// let flavour: RedisFlavour = "pubsub".parse()?;
/// assert_eq!(flavour, RedisFlavour::PubSub);
/// assert_eq!(RedisFlavour::default().as_str(), "core");
/// assert!("fast".parse::<RedisFlavour>().is_err());
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let layer = flavour.layer(RedisConfig::new(["redis://127.0.0.1:6379/0"]))?;
/// # drop(layer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum RedisFlavour {
    /// `channels_redis.core.RedisChannelLayer` (channels_redis's default):
    /// a [`RedisChannelLayer`].
    #[default]
    Core,
    /// `channels_redis.pubsub.RedisPubSubChannelLayer`: a
    /// [`RedisPubSubChannelLayer`].
    PubSub,
}

/// A flavour name that is neither `core` nor `pubsub`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Redis layer flavour: use \"core\" or \"pubsub\"")]
pub struct UnknownFlavour;

impl RedisFlavour {
    /// Its name in a configuration file: `"core"` or `"pubsub"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Core => "core",
            Self::PubSub => "pubsub",
        }
    }

    /// The layer of this flavour on `config`. Must be called inside a
    /// tokio runtime (the layer starts its tasks).
    pub fn layer(self, config: RedisConfig) -> Result<ChannelLayerHandle, RedisLayerError> {
        Ok(match self {
            Self::Core => ChannelLayerHandle::new(RedisChannelLayer::new(config)?),
            Self::PubSub => ChannelLayerHandle::new(RedisPubSubChannelLayer::new(config)?),
        })
    }
}

impl std::str::FromStr for RedisFlavour {
    type Err = UnknownFlavour;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "core" => Ok(Self::Core),
            "pubsub" => Ok(Self::PubSub),
            _ => Err(UnknownFlavour),
        }
    }
}

impl std::fmt::Display for RedisFlavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
