//! [`LayerSettings`]: the channel layer's settings as a file holds them
//! (`[layer]` of `estuary serve`, Channels' `CHANNEL_LAYERS` entry), and
//! [`RedisConfig`]'s serde form.

use std::time::Duration;

use estuary_core::{ChannelLayerConfig, ChannelLayerHandle, InMemoryChannelLayer};
use serde::{Deserialize, Serialize};

use crate::{ChannelCapacity, RedisConfig, RedisFlavour, RedisLayerError};

/// A channel layer's settings as plain values, the form serde reads and
/// writes (`[layer]` of `estuary serve`'s TOML file): the Redis hosts (none:
/// the in-memory layer), channels_redis's flavour, prefix and keys, and the
/// bounds every layer has. Missing keys take [`RedisConfig::new`]'s and
/// [`ChannelLayerConfig`]'s defaults.
///
/// [`check`](Self::check) names the key of an invalid value;
/// [`layer`](Self::layer) makes the layer. `RedisConfig` deserializes
/// through this form, checked (hosts required; `flavour` is the layer's
/// kind, not a `RedisConfig` setting: keep a `LayerSettings` to use it).
///
/// ```
/// use estuary_redis::{LayerSettings, RedisConfig, RedisFlavour};
///
/// let settings: LayerSettings = toml::from_str(
///     r#"
///     redis = ["redis://127.0.0.1:6379/0"]
///     flavour = "pubsub"
///     prefix = "myapp"
///     capacity = 500
///     "#,
/// )?;
/// assert_eq!(settings.flavour, RedisFlavour::PubSub);
/// assert_eq!(settings.layer_config().capacity(), 500);
/// assert_eq!(settings.layer_config().max_channels(), 100_000, "the default");
///
/// let config: RedisConfig = toml::from_str(r#"redis = ["redis://127.0.0.1:6379/0"]"#)?;
/// assert_eq!(config.prefix(), "asgi");
///
/// let error = toml::from_str::<RedisConfig>(r#"redis = ["127.0.0.1:6379"]"#).unwrap_err();
/// assert!(error.to_string().contains("redis[0]: not a redis://, rediss:// or unix:// URL"), "{error}");
/// // channels_redis's Sentinel entry is a `redis+sentinel://` URL:
/// let sentinel: LayerSettings = toml::from_str(
///     r#"redis = [{ sentinels = [["10.0.0.1", 26379]], master_name = "mymaster" }]"#,
/// )?;
/// assert_eq!(sentinel.redis, ["redis+sentinel://10.0.0.1:26379/mymaster/0"]);
/// let unchecked: LayerSettings = toml::from_str("expiry = 0")?;
/// assert_eq!(unchecked.check().unwrap_err().to_string(), "expiry: must be at least 1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerSettings {
    /// Redis URLs of the channel layer, in ring order
    /// (`redis://[:password@]host:port/db`, `rediss://`, `unix:///path`,
    /// or a primary found through Sentinel:
    /// `redis+sentinel://[:password@]host:port[,host:port...]/master_name[/db]`);
    /// empty: the in-memory layer. The file may write a Sentinel host as
    /// channels_redis's `hosts` entry does, a table that reads as that
    /// URL: `{ sentinels = [["10.0.0.1", 26379], "10.0.0.2:26379"],
    /// master_name = "mymaster", sentinel_kwargs = { password = "..." },
    /// password = "...", db = 0 }`.
    #[serde(deserialize_with = "crate::hosts::deserialize")]
    pub redis: Vec<String>,
    /// `core` (channels_redis's default `RedisChannelLayer`) or `pubsub`
    /// (`RedisPubSubChannelLayer`); must match the Django side.
    pub flavour: RedisFlavour,
    /// Key prefix in Redis (channels_redis `prefix`).
    pub prefix: String,
    /// channels_redis `symmetric_encryption_keys`.
    pub encryption_keys: Vec<String>,
    /// channels_redis `serializer_format`: `msgpack` (the default) or
    /// `json`; must match the Django side.
    pub serializer_format: crate::SerializerFormat,
    /// Messages a channel holds (at least 1).
    pub capacity: usize,
    /// channels_redis `channel_capacity`: the capacity of the channels
    /// whose names match a pattern, tried in order (the first that
    /// matches decides; others have `capacity`).
    pub channel_capacity: Vec<ChannelCapacity>,
    /// Seconds a message lives (at least 1).
    pub expiry: u64,
    /// Seconds a group membership lives (at least 1).
    pub group_expiry: u64,
    /// Channels the in-memory layer holds at most; past it, a send to a new
    /// channel is refused (Redis layers leave this to Redis's maxmemory).
    pub max_channels: usize,
    /// Bytes of undelivered messages the in-memory layer holds in all (a
    /// group message counted once for all its members); past it, sends are
    /// refused until members take what they hold or it expires. Redis
    /// layers leave this to Redis's maxmemory.
    pub max_bytes: usize,
}

impl Default for LayerSettings {
    fn default() -> Self {
        let layer = ChannelLayerConfig::default();
        Self {
            redis: Vec::new(),
            flavour: RedisFlavour::Core,
            prefix: "asgi".into(),
            encryption_keys: Vec::new(),
            serializer_format: crate::SerializerFormat::Msgpack,
            capacity: layer.capacity(),
            channel_capacity: Vec::new(),
            expiry: layer.expiry().as_secs(),
            group_expiry: layer.group_expiry().as_secs(),
            max_channels: layer.max_channels(),
            max_bytes: layer.max_bytes(),
        }
    }
}

/// Why [`LayerSettings`] cannot make a layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerSettingsError {
    /// A count or a number of seconds that must be at least 1 is 0.
    #[error("{key}: must be at least 1")]
    Zero {
        /// `capacity`, `expiry`, `group_expiry`, `max_channels` or `max_bytes`.
        key: &'static str,
    },
    /// A host that is not a Redis URL.
    #[error(
        "redis[{index}]: not a redis://, rediss:// or unix:// URL, nor a valid \
         redis+sentinel://host:port[,host:port...]/master_name[/db]"
    )]
    NotARedisUrl {
        /// Its place in `redis`, from 0.
        index: usize,
    },
    /// A [`RedisConfig`] is wanted and `redis` lists no host.
    #[error("redis: lists no host")]
    NoHosts,
    /// An entry of `channel_capacity` whose pattern does not compile.
    #[error("channel_capacity[{index}]: not a valid glob or regular expression")]
    InvalidPattern {
        /// Its place in `channel_capacity`, from 0.
        index: usize,
    },
}

impl LayerSettingsError {
    /// The key whose value is wrong.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Zero { key } => key,
            Self::NotARedisUrl { .. } | Self::NoHosts => "redis",
            Self::InvalidPattern { .. } => "channel_capacity",
        }
    }
}

impl LayerSettings {
    /// Checks every value: the hosts are Redis URLs, the counts and
    /// seconds at least 1.
    pub fn check(&self) -> Result<(), LayerSettingsError> {
        if let Some(index) = self.redis.iter().position(|url| {
            !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://")
                || (url.starts_with(crate::sentinel::SCHEME)
                    && crate::sentinel::SentinelUrl::parse(url).is_ok()))
        }) {
            return Err(LayerSettingsError::NotARedisUrl { index });
        }
        for (key, value) in [
            ("capacity", self.capacity as u64),
            ("expiry", self.expiry),
            ("group_expiry", self.group_expiry),
            ("max_channels", self.max_channels as u64),
            ("max_bytes", self.max_bytes as u64),
        ] {
            if value == 0 {
                return Err(LayerSettingsError::Zero { key });
            }
        }
        for (index, entry) in self.channel_capacity.iter().enumerate() {
            if entry.capacity == 0 {
                return Err(LayerSettingsError::Zero {
                    key: "channel_capacity",
                });
            }
            if entry.apply(ChannelLayerConfig::default()).is_err() {
                return Err(LayerSettingsError::InvalidPattern { index });
            }
        }
        Ok(())
    }

    /// Capacity (with the `channel_capacity` patterns), expiries and
    /// bounds, for any channel layer. A pattern that does not compile is
    /// left out: call [`check`](Self::check) first to refuse it.
    pub fn layer_config(&self) -> ChannelLayerConfig {
        let config = ChannelLayerConfig::default()
            .with_capacity(self.capacity)
            .with_expiry(Duration::from_secs(self.expiry))
            .with_group_expiry(Duration::from_secs(self.group_expiry))
            .with_max_channels(self.max_channels.max(1))
            .with_max_bytes(self.max_bytes);
        self.channel_capacity
            .iter()
            .fold(config, |config, entry| match entry.apply(config.clone()) {
                Ok(with) => with,
                Err(_) => config,
            })
    }

    /// The Redis layer's settings (whatever `redis` lists; see
    /// [`TryFrom`] for the checked form).
    pub fn redis_config(&self) -> RedisConfig {
        RedisConfig::new(self.redis.clone())
            .with_prefix(self.prefix.clone())
            .with_encryption_keys(self.encryption_keys.clone())
            .with_serializer_format(self.serializer_format)
            .with_layer_config(self.layer_config())
    }

    /// The layer: Redis of [`flavour`](Self::flavour) when `redis` lists
    /// hosts, else in-memory (a 0 among the bounds counts as 1: call
    /// [`check`](Self::check) first to refuse it). Must be called inside a
    /// tokio runtime (the Redis layers start their tasks).
    pub fn layer(&self) -> Result<ChannelLayerHandle, RedisLayerError> {
        if self.redis.is_empty() {
            return Ok(ChannelLayerHandle::new(InMemoryChannelLayer::new(
                self.layer_config(),
            )));
        }
        self.flavour.layer(self.redis_config())
    }
}

impl TryFrom<LayerSettings> for RedisConfig {
    type Error = LayerSettingsError;

    fn try_from(settings: LayerSettings) -> Result<Self, Self::Error> {
        settings.check()?;
        if settings.redis.is_empty() {
            return Err(LayerSettingsError::NoHosts);
        }
        Ok(settings.redis_config())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_value_names_its_key() {
        for (text, message) in [
            ("capacity = 0", "capacity: must be at least 1"),
            ("group_expiry = 0", "group_expiry: must be at least 1"),
            ("max_bytes = 0", "max_bytes: must be at least 1"),
            (
                "redis = [\"redis://a:6379/0\", \"memory\"]",
                "redis[1]: not a redis://",
            ),
            ("flavour = \"fast\"", "unknown variant `fast`"),
            ("hosts = []", "unknown field `hosts`"),
            (
                "channel_capacity = [\"a*=0\"]",
                "channel_capacity: must be at least 1",
            ),
            (
                "channel_capacity = [\"a=1\", \"re:(=2\"]",
                "channel_capacity[1]: not a valid glob or regular expression",
            ),
            ("channel_capacity = [\"a\"]", "expected PATTERN=CAPACITY"),
        ] {
            let error = match toml::from_str::<LayerSettings>(text) {
                Ok(settings) => settings.check().unwrap_err().to_string(),
                Err(error) => error.to_string(),
            };
            let config = toml::from_str::<RedisConfig>(&format!("redis = [\"redis://h/0\"]\n{text}"));
            let error_of_config = config.unwrap_err().to_string();
            assert!(
                text.starts_with("redis") || error_of_config.contains(message),
                "{text}: {error_of_config}"
            );
            assert!(error.contains(message), "{text}: {error}");
        }
        let error = toml::from_str::<RedisConfig>("prefix = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("redis: lists no host"), "{error}");
        assert_eq!(LayerSettingsError::NotARedisUrl { index: 0 }.key(), "redis");
    }

    /// channels_redis's Sentinel `hosts` entry reads as its URL, which
    /// reads back the same; a table without its keys is refused.
    #[test]
    fn a_sentinel_table_reads_as_its_url() {
        let settings: LayerSettings = toml::from_str(
            r#"
            redis = [
                "redis://10.0.0.9:6379/0",
                { sentinels = [["10.0.0.1", 26379], "10.0.0.2:26380"], master_name = "my master",
                  sentinel_kwargs = { password = "s@cret" }, password = "p:w", db = 3 },
            ]
            "#,
        )
        .unwrap();
        settings.check().unwrap();
        let url =
            "redis+sentinel://:p%3Aw@10.0.0.1:26379,10.0.0.2:26380/my%20master/3?sentinel_password=s%40cret";
        assert_eq!(settings.redis, ["redis://10.0.0.9:6379/0", url]);
        let parsed = crate::sentinel::SentinelUrl::parse(url).unwrap();
        assert_eq!(
            (
                parsed.master_name.as_str(),
                parsed.password.as_deref(),
                parsed.sentinel_password.as_deref()
            ),
            ("my master", Some("p:w"), Some("s@cret"))
        );
        let text = toml::to_string(&settings).unwrap();
        assert_eq!(toml::from_str::<LayerSettings>(&text).unwrap(), settings);
        let shown = format!("{:?}", settings.redis_config());
        assert!(!shown.contains("p%3Aw") && !shown.contains("s%40cret"), "{shown}");
        for bad in [
            "redis = [{ master_name = \"m\" }]",
            "redis = [{ sentinels = [\"h:1\"], master_name = \"m\", socket_timeout = 1 }]",
        ] {
            let error = toml::from_str::<LayerSettings>(bad).unwrap_err().to_string();
            assert!(error.contains("sentinels and master_name"), "{bad}: {error}");
        }
        let settings: LayerSettings = toml::from_str("redis = [\"redis+sentinel://h:1\"]").unwrap();
        assert_eq!(
            settings.check().unwrap_err(),
            LayerSettingsError::NotARedisUrl { index: 0 }
        );
    }

    #[test]
    fn the_defaults_are_the_libraries_and_round_trip() {
        let settings = LayerSettings::default();
        assert_eq!(toml::from_str::<LayerSettings>("").unwrap(), settings);
        let text = toml::to_string(&settings).unwrap();
        assert_eq!(toml::from_str::<LayerSettings>(&text).unwrap(), settings);
        let config = settings.redis_config();
        assert_eq!(config.prefix(), RedisConfig::new(["redis://h/0"]).prefix());
    }
}
