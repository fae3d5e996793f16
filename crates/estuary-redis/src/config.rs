//! Settings of the Redis channel layer, named as in channels_redis.

use std::fmt;
use std::time::Duration;

use estuary_core::ChannelLayerConfig;
use redis::aio::ConnectionManagerConfig;

use crate::connection::{Client, ConnectionManager};

use crate::error::{RedisLayerError, redacted};

/// Settings of a [`RedisChannelLayer`](crate::RedisChannelLayer); every
/// process sharing the layer (Django ones included) must agree on the hosts
/// (in order), the prefix, the expiry and the encryption keys.
///
/// ```
/// use estuary_redis::RedisConfig;
///
/// let config = RedisConfig::new(["redis://127.0.0.1:6379/0"])
///     .with_prefix("myapp")
///     .with_encryption_keys(["a-long-secret"]);
/// assert_eq!(config.prefix(), "myapp");
/// ```
///
/// With the `serde` feature it deserializes through `LayerSettings`, its form as
/// plain values, checked as the constructors check (an invalid value is an
/// error naming its key).
///
/// Its `Debug` output masks the hosts' passwords and the encryption keys:
///
/// ```
/// use estuary_redis::RedisConfig;
///
/// let config = RedisConfig::new(["redis://:hunter2@10.0.0.1:6379/0"]).with_encryption_keys(["a-long-secret"]);
/// let shown = format!("{config:?}");
/// assert!(shown.contains("redis://:***@10.0.0.1:6379/0"), "{shown}");
/// assert!(!shown.contains("hunter2") && !shown.contains("a-long-secret"), "{shown}");
/// ```
#[derive(Clone)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "crate::settings::LayerSettings"))]
pub struct RedisConfig {
    pub(crate) hosts: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) layer: ChannelLayerConfig,
    pub(crate) encryption_keys: Vec<String>,
    pub(crate) serializer_format: crate::SerializerFormat,
    pub(crate) receive_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) membership_check: Duration,
    pub(crate) pubsub_keepalive: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> = self.hosts.iter().map(|url| redacted(url)).collect();
        f.debug_struct("RedisConfig")
            .field("hosts", &hosts)
            .field("prefix", &self.prefix)
            .field("layer", &self.layer)
            .field(
                "encryption_keys",
                &format_args!("<{} redacted>", self.encryption_keys.len()),
            )
            .field("serializer_format", &self.serializer_format)
            .field("receive_timeout", &self.receive_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("membership_check", &self.membership_check)
            .field("pubsub_keepalive", &self.pubsub_keepalive)
            .finish()
    }
}

impl RedisConfig {
    /// A configuration for these hosts (`redis://[:password@]host:port/db`,
    /// `rediss://`, `unix:///path`), in ring order. Defaults: prefix `asgi`,
    /// capacity 100, expiry 60 s, group expiry 86400 s, no encryption.
    ///
    /// ```
    /// use std::time::Duration;
    /// use estuary_redis::RedisConfig;
    ///
    /// let config = RedisConfig::new(["redis://10.0.0.1:6379/0", "redis://10.0.0.2:6379/0"]);
    /// assert_eq!(config.hosts().len(), 2);
    /// assert_eq!(config.prefix(), "asgi");
    /// assert_eq!(config.layer_config().capacity(), 100);
    /// assert_eq!(config.layer_config().expiry(), Duration::from_secs(60));
    /// ```
    pub fn new<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            hosts: hosts.into_iter().map(Into::into).collect(),
            prefix: "asgi".into(),
            layer: ChannelLayerConfig::default(),
            encryption_keys: Vec::new(),
            serializer_format: crate::SerializerFormat::Msgpack,
            receive_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            membership_check: Duration::from_secs(2),
            pubsub_keepalive: Duration::from_secs(10),
        }
    }

    /// The key prefix (channels_redis `prefix`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Capacity, expiry and group expiry.
    ///
    /// ```
    /// use std::time::Duration;
    /// use estuary_core::ChannelLayerConfig;
    /// use estuary_redis::RedisConfig;
    ///
    /// let config = RedisConfig::new(["redis://127.0.0.1:6379/0"]).with_layer_config(
    ///     ChannelLayerConfig::default()
    ///         .with_capacity(1000)
    ///         .with_expiry(Duration::from_secs(30)),
    /// );
    /// assert_eq!(config.layer_config().capacity(), 1000);
    /// ```
    pub fn with_layer_config(mut self, layer: ChannelLayerConfig) -> Self {
        self.layer = layer;
        self
    }

    /// channels_redis `symmetric_encryption_keys`: encrypt with the first,
    /// decrypt with any.
    pub fn with_encryption_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.encryption_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// channels_redis `serializer_format`: how messages are written in
    /// Redis (msgpack, the default, or JSON); every process sharing the
    /// layer must use the same. It applies before encryption, as in
    /// channels_redis: with `symmetric_encryption_keys`, the JSON is
    /// encrypted.
    pub fn with_serializer_format(mut self, format: crate::SerializerFormat) -> Self {
        self.serializer_format = format;
        self
    }

    /// How messages are written in Redis (see
    /// [`with_serializer_format`](Self::with_serializer_format)).
    pub fn serializer_format(&self) -> crate::SerializerFormat {
        self.serializer_format
    }

    /// How long one blocking pop waits before it is issued again (default
    /// 5 s, as channels_redis). The connection's read timeout is longer.
    pub fn with_receive_timeout(mut self, timeout: Duration) -> Self {
        self.receive_timeout = timeout.max(Duration::from_secs(1));
        self
    }

    /// How long a command may take before it fails (default 5 s).
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How often the core layer checks that this process's group memberships
    /// are still in Redis (default 2 s, at least 100 ms). A group key that
    /// was evicted, deleted or lost in a restart is found within this
    /// interval (sooner when this process sends to the group) and this
    /// process's memberships in it are written again at once, so its
    /// members miss other processes' group sends for at most this long plus
    /// one round trip, and are told that they did
    /// (`ChannelLayerError::Lost`). The same check takes back this
    /// process's queue if something wrote another type over it. Each check
    /// costs one script call per host, covering every group this process
    /// has members in, and one for its queue.
    ///
    /// ```
    /// use std::time::Duration;
    /// use estuary_redis::RedisConfig;
    ///
    /// let config = RedisConfig::new(["redis://127.0.0.1:6379/0"]);
    /// assert_eq!(config.membership_check(), Duration::from_secs(2));
    /// let config = config.with_membership_check(Duration::from_millis(500));
    /// assert_eq!(config.membership_check(), Duration::from_millis(500));
    /// ```
    pub fn with_membership_check(mut self, interval: Duration) -> Self {
        self.membership_check = interval.max(Duration::from_millis(100));
        self
    }

    /// How often memberships are checked (see [`with_membership_check`](Self::with_membership_check)).
    pub fn membership_check(&self) -> Duration {
        self.membership_check
    }

    /// How often the pub/sub layer pings each of its subscriber connections
    /// (default 10 s, at least 100 ms). A connection that does not answer
    /// within the command timeout is dropped and made again, and the
    /// members it was receiving for are told they may have missed messages
    /// (see [`RedisPubSubChannelLayer`](crate::RedisPubSubChannelLayer)).
    /// The core layer does not use it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use estuary_redis::RedisConfig;
    ///
    /// let config = RedisConfig::new(["redis://127.0.0.1:6379/0"]);
    /// assert_eq!(config.pubsub_keepalive(), Duration::from_secs(10));
    /// let config = config.with_pubsub_keepalive(Duration::from_secs(2));
    /// assert_eq!(config.pubsub_keepalive(), Duration::from_secs(2));
    /// ```
    pub fn with_pubsub_keepalive(mut self, interval: Duration) -> Self {
        self.pubsub_keepalive = interval.max(Duration::from_millis(100));
        self
    }

    /// How often the pub/sub layer pings its subscriber connections (see
    /// [`with_pubsub_keepalive`](Self::with_pubsub_keepalive)).
    pub fn pubsub_keepalive(&self) -> Duration {
        self.pubsub_keepalive
    }

    /// The hosts, in ring order.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Capacity and expiry settings.
    pub fn layer_config(&self) -> &ChannelLayerConfig {
        &self.layer
    }
}

/// The key that names, on each host, the primary that history's epochs
/// were started on (see [`Client::mark_primary`]).
pub(crate) fn primary_key(prefix: &str) -> String {
    format!("{prefix}:primary")
}

/// A host's client and its (lazily connected, self-healing) command connection.
pub(crate) struct Host {
    pub(crate) client: Client,
    pub(crate) commands: ConnectionManager,
}

impl RedisConfig {
    /// Checks what every Redis layer needs (hosts, a runtime) and opens one
    /// command connection per host, lazily: nothing waits for Redis here.
    pub(crate) fn open_hosts(&self) -> Result<Vec<Host>, RedisLayerError> {
        if self.hosts.is_empty() {
            return Err(RedisLayerError::no_hosts());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisLayerError::no_runtime());
        }
        let commands = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        self.hosts
            .iter()
            .map(|url| {
                let invalid = |source| RedisLayerError::invalid_url(url, source);
                let client = Client::open(url, self.command_timeout)
                    .map_err(|source| RedisLayerError::invalid_url(url, source))?;
                client.mark_primary(primary_key(&self.prefix));
                let commands = ConnectionManager::new_lazy_with_config(client.clone(), commands.clone())
                    .map_err(invalid)?;
                Ok(Host { client, commands })
            })
            .collect()
    }
}
