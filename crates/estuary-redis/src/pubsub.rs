//! `RedisPubSubChannelLayer`: channels_redis's pub/sub layer, in Rust.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use estuary_core::{ChannelLayerError, ChannelName, GroupName, Message, Throttle};
use redis::aio::PubSubSink;

use crate::connection::ConnectionManager;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::RedisConfig;
use crate::crypto::Crypto;
use crate::error::RedisLayerError;
use crate::local::{Backlog, LocalQueue, lock, now};
use crate::shard::shard_index;

mod channel_layer;
mod subscriber;

use subscriber::subscriber;

/// A channel layer on Redis pub/sub, wire-compatible with Django's
/// `channels_redis.pubsub.RedisPubSubChannelLayer`.
///
/// Nothing is stored in Redis: a message reaches the processes subscribed
/// when it is published, and is lost for everyone else. There is no capacity
/// or expiry in Redis, so [`send`](estuary_core::ChannelLayer::send) never fails with
/// `Full`; each local channel's buffer is bounded by the capacity and drops
/// (and counts) what overflows. A connection's buffer keeps the flow-control
/// rule of [`ChannelLayer`](estuary_core::ChannelLayer): while its session
/// keeps up ([`ReceiverState::Live`](estuary_core::ReceiverState::Live)) it
/// holds up to [`OVERFLOW_FACTOR`](estuary_core::OVERFLOW_FACTOR) times the
/// capacity, and the layer is [`backlogged`](estuary_core::ChannelLayer::backlogged)
/// meanwhile, so that sessions stop reading their clients and producers
/// that are clients of this process wait for it; what is published from
/// elsewhere past that is dropped and reported to the member
/// ([`ChannelLayerError::Lost`](estuary_core::ChannelLayerError::Lost)). Group membership is local to each process;
/// a process subscribes to `{prefix}__group__{group}` while it has members.
/// [`GroupSendReport::delivered`](estuary_core::GroupSendReport::delivered) counts the subscribed processes, not members.
///
/// Channel names have no `!`: `{prefix}specific.<uuid>`, as in Python.
/// One subscriber connection per host resubscribes everything after a
/// reconnect; publishes go over a separate connection.
///
/// Each subscriber connection is pinged every
/// [`RedisConfig::pubsub_keepalive`] (10 s by default) while it keeps
/// delivering. When one is lost (Redis restarted or shut down, the network
/// failed, a ping unanswered within the command timeout), what is published
/// on that host until it is back reaches no one in this process, so no loss
/// is silent: every connection that was receiving through it (its own
/// channel, or a group, on that host) gets [`ChannelLayerError::Lost`](estuary_core::ChannelLayerError::Lost)
/// with a count of 1 at its next receive (how many were published meanwhile
/// is unknown), and its session applies its slow-client policy (close 1013,
/// or count the loss). Connections receiving only through other hosts are
/// not affected. The loss is logged, at most once per 10 s with a count of
/// the others, and counted ([`subscriber_reconnects`](Self::subscriber_reconnects));
/// the layer is unavailable until the connection is back, and a
/// [`group_add`](estuary_core::ChannelLayer::group_add) or a new channel on that host
/// waits for it (up to the command timeout) or fails.
///
/// ```no_run
/// use estuary_core::ChannelLayerHandle;
/// use estuary_redis::{RedisConfig, RedisPubSubChannelLayer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = RedisPubSubChannelLayer::new(RedisConfig::new(["redis://127.0.0.1:6379/0"]))?;
/// let handle = ChannelLayerHandle::new(layer);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisPubSubChannelLayer {
    inner: Arc<Inner>,
}

struct Shard {
    publish: ConnectionManager,
    /// The subscriber connection's command half while connected.
    sink: watch::Sender<Option<PubSubSink>>,
    healthy: AtomicBool,
}

struct Inner {
    config: RedisConfig,
    shards: Vec<Shard>,
    crypto: Option<Crypto>,
    /// Channels received on in this process, by name (= Redis channel name).
    local: Mutex<HashMap<ChannelName, Arc<LocalQueue>>>,
    /// Flow control over the connections' buffers (see `Backlog`).
    backlog: Arc<Backlog>,
    /// Local members of each group.
    groups: Mutex<HashMap<GroupName, HashSet<ChannelName>>>,
    /// `{prefix}__group__`, the start of every group's Redis channel.
    group_prefix: String,
    /// Serialises subscription changes, so a SUBSCRIBE and an UNSUBSCRIBE of
    /// one name never cross.
    subscriptions: tokio::sync::Mutex<()>,
    dropped: AtomicU64,
    /// Subscriber connections lost (each is then made again).
    reconnects: AtomicU64,
    /// Keepalive pings sent on subscriber connections.
    pings: AtomicU64,
    lost_log: Throttle,
    restored_log: Throttle,
    connect_log: Throttle,
    bad_message_log: Throttle,
    shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> ChannelLayerError {
    ChannelLayerError::Unavailable(Box::new(e))
}

#[derive(Debug, thiserror::Error)]
#[error("Redis subscriber connection not established within the command timeout")]
struct NotConnected;

#[derive(Debug, thiserror::Error)]
#[error("no answer to SUBSCRIBE on the Redis subscriber connection within {0:?}")]
struct NoAnswer(Duration);

/// At most one log line per this, per kind, per layer (with a count of the
/// lines held back).
const LOG_EVERY: Duration = Duration::from_secs(10);

impl std::fmt::Debug for RedisPubSubChannelLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPubSubChannelLayer")
            .field("hosts", &self.inner.config.hosts)
            .field("prefix", &self.inner.config.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisPubSubChannelLayer {
    /// Sets up the layer and starts one subscriber task per host. Must be
    /// called inside a tokio runtime.
    pub fn new(config: RedisConfig) -> Result<Self, RedisLayerError> {
        let mut shards = Vec::new();
        let mut clients = Vec::new();
        for host in config.open_hosts()? {
            shards.push(Shard {
                publish: host.commands,
                sink: watch::Sender::new(None),
                healthy: AtomicBool::new(true),
            });
            clients.push(host.client);
        }
        // Channel names start with the prefix: it must be valid in one.
        if let Err(source) = ChannelName::new(&format!("{}specific.x", config.prefix)) {
            return Err(RedisLayerError::invalid_prefix(&config.prefix, source));
        }
        let inner = Arc::new(Inner {
            crypto: Crypto::for_layer(&config.encryption_keys, None, config.serializer_format),
            shards,
            local: Mutex::new(HashMap::new()),
            backlog: Arc::default(),
            groups: Mutex::new(HashMap::new()),
            group_prefix: format!("{}__group__", config.prefix),
            subscriptions: tokio::sync::Mutex::new(()),
            dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            lost_log: Throttle::new(LOG_EVERY),
            restored_log: Throttle::new(LOG_EVERY),
            connect_log: Throttle::new(LOG_EVERY),
            bad_message_log: Throttle::new(LOG_EVERY),
            shutdown: CancellationToken::new(),
            config,
        });
        for (index, client) in clients.into_iter().enumerate() {
            tokio::spawn(subscriber(
                Arc::downgrade(&inner),
                index,
                client,
                inner.shutdown.clone(),
            ));
        }
        Ok(Self { inner })
    }

    /// False while any subscriber connection is down.
    pub fn is_healthy(&self) -> bool {
        self.inner
            .shards
            .iter()
            .all(|s| s.healthy.load(Ordering::Relaxed))
    }

    /// How long the layer has been backlogged in all (flow control: a live
    /// connection's buffer held more than its capacity, so sessions stopped
    /// reading their clients), the current episode included; and how many
    /// times it became so.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), estuary_redis::RedisLayerError> {
    /// use estuary_redis::{RedisConfig, RedisPubSubChannelLayer};
    ///
    /// let layer = RedisPubSubChannelLayer::new(RedisConfig::new(["redis://127.0.0.1:6379/0"]))?;
    /// let (time, episodes) = layer.backlogged_time();
    /// assert_eq!((time.as_secs(), episodes), (0, 0));
    /// # Ok(()) }
    /// ```
    pub fn backlogged_time(&self) -> (std::time::Duration, u64) {
        self.inner.backlog.spent()
    }

    /// Messages dropped because a local channel's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// How many times a subscriber connection was lost (and made again,
    /// once its host answers), over every host: zero while Redis and the
    /// network hold. Each loss is logged and told to the connections that
    /// were receiving through it.
    ///
    /// ```no_run
    /// use estuary_redis::{RedisConfig, RedisPubSubChannelLayer};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = RedisPubSubChannelLayer::new(RedisConfig::new(["redis://127.0.0.1:6379/0"]))?;
    /// assert_eq!(layer.subscriber_reconnects(), 0);
    /// # Ok(()) }
    /// ```
    pub fn subscriber_reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// How many keepalive pings were sent on subscriber connections (one
    /// per host every [`RedisConfig::pubsub_keepalive`], the next only once
    /// the previous one is answered or failed).
    pub fn keepalive_pings(&self) -> u64 {
        self.inner.pings.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn shard(&self, name: &str) -> usize {
        shard_index(name, self.shards.len())
    }

    fn group_channel(&self, group: &GroupName) -> String {
        format!("{}{}", self.group_prefix, group)
    }

    /// Every Redis channel this process must be subscribed to on `shard`.
    fn subscriptions(&self, shard: usize) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.local).keys().map(|c| c.to_string()).collect();
        names.extend(lock(&self.groups).keys().map(|g| self.group_channel(g)));
        names.retain(|n| self.shard(n) == shard);
        names
    }

    /// Waits (up to the command timeout) until the subscriber connection
    /// for `name`'s host is up. Never called holding `subscriptions`: the
    /// subscriber task takes it to bring the connection up.
    async fn connected(&self, name: &str) -> Result<(), ChannelLayerError> {
        let mut rx = self.shards[self.shard(name)].sink.subscribe();
        let waited = tokio::time::timeout(self.config.command_timeout, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(unavailable(NotConnected)),
        }
    }

    /// The subscriber connection for `name`'s host, if it is up now.
    fn sink(&self, name: &str) -> Option<PubSubSink> {
        self.shards[self.shard(name)].sink.borrow().clone()
    }

    /// Subscribes to `name` on its host's connection, which must be up
    /// (call [`connected`](Self::connected) first). Called holding
    /// `subscriptions`.
    async fn subscribe(&self, name: &str) -> Result<(), ChannelLayerError> {
        let mut sink = self.sink(name).ok_or_else(|| unavailable(NotConnected))?;
        let within = self.config.command_timeout;
        match tokio::time::timeout(within, sink.subscribe(name)).await {
            Ok(done) => done.map_err(unavailable),
            Err(_) => Err(unavailable(NoAnswer(within))),
        }
    }

    /// Unsubscribes from `name` if its host's connection is up (a new
    /// connection subscribes only to what is still needed). Called holding
    /// `subscriptions`.
    async fn unsubscribe(&self, name: &str) {
        if let Some(mut sink) = self.sink(name) {
            let done = tokio::time::timeout(self.config.command_timeout, sink.unsubscribe(name)).await;
            if !matches!(done, Ok(Ok(()))) {
                tracing::debug!(%name, "unsubscribe failed");
            }
        }
    }

    fn encode(&self, message: &Message) -> Vec<u8> {
        match &self.crypto {
            Some(c) => c.encrypt(message.as_bytes()),
            None => message.as_bytes().to_vec(),
        }
    }

    fn dispatch(&self, channel: &str, payload: &[u8]) {
        let body = match &self.crypto {
            Some(c) => match c.decrypt(payload) {
                Ok(b) => Bytes::from(b),
                Err(error) => {
                    if let Some(held_back) = self.bad_message_log.allow(Instant::now()) {
                        tracing::warn!(%error, %channel, held_back, "undecryptable pub/sub message; dropped. Check that every process publishing on this Redis under this prefix has the same symmetric_encryption_keys");
                    }
                    return;
                }
            },
            None => Bytes::copy_from_slice(payload),
        };
        let message = match Message::from_msgpack(body) {
            Ok(m) => m,
            Err(error) => {
                if let Some(held_back) = self.bad_message_log.allow(Instant::now()) {
                    tracing::warn!(%error, %channel, held_back, "undecodable pub/sub message; dropped. Check that every process publishing on this Redis under this prefix uses the same serializer_format");
                }
                return;
            }
        };
        let expires = now() + self.config.layer.expiry().as_secs_f64();
        let targets: Vec<Arc<LocalQueue>> = match channel.strip_prefix(&self.group_prefix) {
            Some(group) => {
                let groups = lock(&self.groups);
                let local = lock(&self.local);
                GroupName::new(group)
                    .ok()
                    .and_then(|g| groups.get(&g))
                    .map(|members| members.iter().filter_map(|m| local.get(m).cloned()).collect())
                    .unwrap_or_default()
            }
            None => ChannelName::new(channel)
                .ok()
                .and_then(|c| lock(&self.local).get(&c).cloned())
                .into_iter()
                .collect(),
        };
        for queue in targets {
            if !queue.push(expires, message.clone()) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
