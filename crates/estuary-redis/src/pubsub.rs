//! `RedisPubSubChannelLayer`: channels_redis's pub/sub layer, in Rust.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use estuary_core::{
    ChannelLayer, ChannelLayerError, ChannelName, GroupName, GroupSendReport, Message, SendError, Throttle,
};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::RedisConfig;
use crate::crypto::Crypto;
use crate::error::RedisLayerError;
use crate::local::{LocalQueue, lock, now};
use crate::shard::shard_index;

/// A channel layer on Redis pub/sub, wire-compatible with Django's
/// `channels_redis.pubsub.RedisPubSubChannelLayer`.
///
/// Nothing is stored in Redis: a message reaches the processes subscribed
/// when it is published, and is lost for everyone else. There is no capacity
/// or expiry in Redis, so [`send`](ChannelLayer::send) never fails with
/// `Full`; each local channel's buffer is bounded by the capacity and drops
/// (and counts) what overflows. Group membership is local to each process;
/// a process subscribes to `{prefix}__group__{group}` while it has members.
/// [`GroupSendReport::delivered`] counts the subscribed processes, not members.
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
/// channel, or a group, on that host) gets [`ChannelLayerError::Lost`]
/// with a count of 1 at its next receive (how many were published meanwhile
/// is unknown), and its session applies its slow-client policy (close 1013,
/// or count the loss). Connections receiving only through other hosts are
/// not affected. The loss is logged, at most once per 10 s with a count of
/// the others, and counted ([`subscriber_reconnects`](Self::subscriber_reconnects));
/// the layer is unavailable until the connection is back, and a
/// [`group_add`](ChannelLayer::group_add) or a new channel on that host
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
        if let Err(error) = ChannelName::new(&format!("{}specific.x", config.prefix)) {
            return Err(RedisLayerError::InvalidPrefix {
                prefix: config.prefix.clone(),
                reason: error.to_string(),
            });
        }
        let inner = Arc::new(Inner {
            crypto: Crypto::new(&config.encryption_keys, None),
            shards,
            local: Mutex::new(HashMap::new()),
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
                        tracing::warn!(%error, %channel, held_back, "undecryptable pub/sub message; dropped");
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
                    tracing::warn!(%error, %channel, held_back, "undecodable pub/sub message; dropped");
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

/// How long a subscriber connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before connecting again after a failure; it doubles with
/// each failure in a row, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two connection attempts: Redis back is found
/// within this.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a connection must have lived for the backoff to start again
/// from [`MIN_BACKOFF`] after it is lost.
const STABLE: Duration = Duration::from_secs(1);

/// Why a subscriber connection was given up.
#[derive(Debug)]
enum Loss {
    /// Its stream ended: Redis closed the connection (a restart, a shutdown,
    /// `CLIENT KILL`, an output buffer limit) or the network failed.
    Closed,
    /// A keepalive `PING` had no answer within the command timeout.
    NoPong(Duration),
    /// A keepalive `PING` failed.
    PingFailed(redis::RedisError),
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::Closed => f.write_str(
                "the connection was closed (Redis restarted or shut down, the client was killed, or the network failed)",
            ),
            Loss::NoPong(within) => write!(f, "no answer to a keepalive PING within {within:?}"),
            Loss::PingFailed(error) => write!(f, "a keepalive PING failed: {error}"),
        }
    }
}

impl Inner {
    /// Subscribes a new connection to `shard` to everything this process
    /// needs there, and makes it the one subscription changes go through.
    /// Holds `subscriptions` throughout, so that no change is missed
    /// between the list and the switch.
    async fn resubscribe(
        &self,
        shard: usize,
        mut sink: PubSubSink,
        down_since: Option<Instant>,
    ) -> Result<(), String> {
        let _guard = self.subscriptions.lock().await;
        let names = self.subscriptions(shard);
        if !names.is_empty() {
            let within = self.config.command_timeout;
            match tokio::time::timeout(within, sink.subscribe(&names)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(format!("SUBSCRIBE failed: {error}")),
                Err(_) => return Err(format!("no answer to SUBSCRIBE within {within:?}")),
            }
        }
        self.now_connected(shard, sink, down_since);
        Ok(())
    }

    /// A subscriber connection to `shard` is up, with this process's
    /// subscriptions there: subscription changes go through `sink` now.
    fn now_connected(&self, shard: usize, sink: PubSubSink, down_since: Option<Instant>) {
        let s = &self.shards[shard];
        s.sink.send_replace(Some(sink));
        s.healthy.store(true, Ordering::Relaxed);
        if let Some(since) = down_since {
            if let Some(held_back) = self.restored_log.allow(Instant::now()) {
                tracing::info!(
                    shard,
                    down_for = ?since.elapsed(),
                    held_back,
                    "Redis pub/sub subscriber connected again; subscriptions restored"
                );
            }
        }
    }

    /// The subscriber connection to `shard` is gone: messages published
    /// there from now until it is back reach no one here. Every connection
    /// that was receiving through it (its own channel, or a group, on that
    /// host) is told it may have missed messages.
    fn lost(&self, shard: usize, loss: &Loss) {
        let s = &self.shards[shard];
        s.sink.send_replace(None);
        s.healthy.store(false, Ordering::Relaxed);
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        let (told, workers) = self.report_gap(shard);
        if let Some(held_back) = self.lost_log.allow(Instant::now()) {
            tracing::error!(
                shard,
                reason = %loss,
                connections_told = told,
                worker_channels = workers,
                held_back,
                "Redis pub/sub subscriber lost: what is published on that host until it is back \
                 reaches no one here; the connections receiving through it were told they may have \
                 missed messages (they close 1013, or count the loss, per their slow-client policy); \
                 reconnecting"
            );
        }
    }

    /// Marks a gap on every local channel that receives through `shard`:
    /// channels subscribed there, and members of groups subscribed there.
    /// Returns how many connections were told, and how many worker
    /// channels (which cannot be told) were affected.
    fn report_gap(&self, shard: usize) -> (usize, usize) {
        let groups = lock(&self.groups);
        let local = lock(&self.local);
        let mut affected: HashSet<&ChannelName> =
            local.keys().filter(|c| self.shard(c.as_str()) == shard).collect();
        for (group, members) in groups.iter() {
            if self.shard(&self.group_channel(group)) == shard {
                affected.extend(members);
            }
        }
        let (mut told, mut workers) = (0, 0);
        for name in affected {
            if let Some(queue) = local.get(name) {
                if queue.mark_gap() {
                    told += 1;
                } else {
                    workers += 1;
                }
            }
        }
        (told, workers)
    }
}

/// Keeps one subscriber connection to one host: connects, subscribes to
/// everything this process needs there, reads and pings, and starts over
/// after a failure, telling the members who may have missed messages.
async fn subscriber(inner: Weak<Inner>, shard: usize, client: redis::Client, token: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    // Since when this host has been without a subscriber (None: never
    // connected yet, nothing to restore).
    let mut down_since: Option<Instant> = None;
    loop {
        let connected = tokio::select! {
            _ = token.cancelled() => return,
            c = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()) => c,
        };
        let failure = match connected {
            Ok(Ok(pubsub)) => {
                let (sink, stream) = pubsub.split();
                let Some(layer) = inner.upgrade() else { return };
                let subscribed = layer.resubscribe(shard, sink.clone(), down_since).await;
                drop(layer);
                match subscribed {
                    Ok(()) => {
                        let up = Instant::now();
                        let Some(loss) = read(&inner, sink, stream, &token).await else {
                            return;
                        };
                        let Some(layer) = inner.upgrade() else { return };
                        layer.lost(shard, &loss);
                        down_since = Some(Instant::now());
                        if up.elapsed() >= STABLE {
                            backoff = MIN_BACKOFF;
                        }
                        None
                    }
                    Err(error) => Some(error),
                }
            }
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("connection timed out after {CONNECT_TIMEOUT:?}")),
        };
        if let Some(error) = failure {
            let Some(layer) = inner.upgrade() else { return };
            layer.shards[shard].healthy.store(false, Ordering::Relaxed);
            if let Some(held_back) = layer.connect_log.allow(Instant::now()) {
                tracing::warn!(
                    shard,
                    %error,
                    held_back,
                    "cannot connect the Redis pub/sub subscriber; retrying"
                );
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

type PingReply = Result<redis::RedisResult<redis::Value>, tokio::time::error::Elapsed>;

/// Reads one subscriber connection and keeps it alive until it fails;
/// `None` when the layer is shut down or dropped.
///
/// The keepalive `PING` runs beside the reads, never instead of them: its
/// answer comes behind every message Redis sent before it, and those keep
/// being dispatched while it is awaited. On a subscribed RESP2 connection
/// Redis answers `PING` with the array `["pong", ""]`, not `PONG`: any
/// answer that is not an error proves the connection alive.
async fn read(
    inner: &Weak<Inner>,
    sink: PubSubSink,
    mut stream: PubSubStream,
    token: &CancellationToken,
) -> Option<Loss> {
    let (every, within) = {
        let layer = inner.upgrade()?;
        (layer.config.pubsub_keepalive, layer.config.command_timeout)
    };
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping: Option<Pin<Box<dyn Future<Output = PingReply> + Send>>> = None;
    loop {
        tokio::select! {
            _ = token.cancelled() => return None,
            next = stream.next() => {
                let Some(msg) = next else { return Some(Loss::Closed) };
                inner.upgrade()?.dispatch(msg.get_channel_name(), msg.get_payload_bytes());
            }
            _ = keepalive.tick(), if ping.is_none() => {
                inner.upgrade()?.pings.fetch_add(1, Ordering::Relaxed);
                let mut sink = sink.clone();
                ping = Some(Box::pin(tokio::time::timeout(within, async move {
                    sink.ping::<redis::Value>().await.and_then(redis::Value::extract_error)
                })));
            }
            answer = async { Some(ping.as_mut()?.await) }, if ping.is_some() => {
                ping = None;
                match answer {
                    Some(Ok(Ok(_))) | None => {}
                    Some(Ok(Err(error))) => return Some(Loss::PingFailed(error)),
                    Some(Err(_)) => return Some(Loss::NoPong(within)),
                }
            }
        }
    }
}

impl ChannelLayer for RedisPubSubChannelLayer {
    async fn new_channel(&self) -> Result<ChannelName, ChannelLayerError> {
        let inner = &self.inner;
        let name = format!(
            "{}specific.{}",
            inner.config.prefix,
            uuid::Uuid::new_v4().simple()
        );
        let name = ChannelName::new(&name).map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))?;
        inner.connected(name.as_str()).await?;
        let _guard = inner.subscriptions.lock().await;
        let queue = Arc::new(LocalQueue::reporting(
            inner.config.layer.capacity_for(name.as_str()),
        ));
        lock(&inner.local).insert(name.clone(), queue);
        if let Err(error) = inner.subscribe(name.as_str()).await {
            lock(&inner.local).remove(&name);
            return Err(error);
        }
        Ok(name)
    }

    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), SendError> {
        let inner = &self.inner;
        let payload = inner.encode(&message);
        let mut conn = inner.shards[inner.shard(channel.as_str())].publish.clone();
        match redis::cmd("PUBLISH")
            .arg(channel.as_str())
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(SendError::Backend {
                channel: channel.clone(),
                error: unavailable(e),
                message,
            }),
        }
    }

    async fn receive(&self, channel: &ChannelName) -> Result<Message, ChannelLayerError> {
        let inner = &self.inner;
        let (queue, created) = {
            let mut local = lock(&inner.local);
            match local.get(channel) {
                Some(q) => (q.clone(), false),
                // A connection's channel that was closed (or never made here).
                None if channel
                    .as_str()
                    .starts_with(&format!("{}specific.", inner.config.prefix)) =>
                {
                    return Err(ChannelLayerError::ChannelClosed(channel.clone()));
                }
                None => {
                    // A worker channel: subscribe on first receive, as Python does.
                    let q = Arc::new(LocalQueue::new(inner.config.layer.capacity_for(channel.as_str())));
                    local.insert(channel.clone(), q.clone());
                    (q, true)
                }
            }
        };
        if created {
            let subscribed = match inner.connected(channel.as_str()).await {
                Ok(()) => {
                    let _guard = inner.subscriptions.lock().await;
                    inner.subscribe(channel.as_str()).await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = subscribed {
                lock(&inner.local).remove(channel);
                return Err(error);
            }
        }
        queue
            .pop()
            .await
            .ok_or_else(|| ChannelLayerError::ChannelClosed(channel.clone()))?
            .map_err(|count| ChannelLayerError::Lost { count })
    }

    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        let name = inner.group_channel(group);
        inner.connected(&name).await?;
        let _guard = inner.subscriptions.lock().await;
        let first = {
            let mut groups = lock(&inner.groups);
            let members = groups.entry(group.clone()).or_default();
            let first = members.is_empty();
            members.insert(channel.clone());
            first
        };
        // The group's first member here subscribes to it; a later one only
        // checks that the subscription is still up (a member added while it
        // is down would miss messages without being told; one added before
        // it is found down is told).
        let subscribed = if first {
            inner.subscribe(&name).await
        } else if inner.sink(&name).is_some() {
            Ok(())
        } else {
            Err(unavailable(NotConnected))
        };
        if let Err(error) = subscribed {
            let mut groups = lock(&inner.groups);
            if let Some(members) = groups.get_mut(group) {
                members.remove(channel);
                if members.is_empty() {
                    groups.remove(group);
                }
            }
            return Err(error);
        }
        Ok(())
    }

    async fn group_discard(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        let _guard = inner.subscriptions.lock().await;
        let last = {
            let mut groups = lock(&inner.groups);
            match groups.get_mut(group) {
                Some(members) => {
                    members.remove(channel);
                    let empty = members.is_empty();
                    if empty {
                        groups.remove(group);
                    }
                    empty
                }
                None => false,
            }
        };
        if last {
            inner.unsubscribe(&inner.group_channel(group)).await;
        }
        Ok(())
    }

    async fn group_send(
        &self,
        group: &GroupName,
        message: Message,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        let inner = &self.inner;
        let name = inner.group_channel(group);
        let payload = inner.encode(&message);
        let mut conn = inner.shards[inner.shard(&name)].publish.clone();
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&name)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(GroupSendReport {
            delivered: receivers.max(0) as usize,
            dropped: 0,
        })
    }

    async fn flush(&self) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        let _guard = inner.subscriptions.lock().await;
        let groups: Vec<GroupName> = lock(&inner.groups).drain().map(|(g, _)| g).collect();
        for group in groups {
            inner.unsubscribe(&inner.group_channel(&group)).await;
        }
        for queue in lock(&inner.local).values() {
            queue.clear();
        }
        Ok(())
    }

    fn is_available(&self) -> bool {
        self.is_healthy()
    }

    async fn close_channel(&self, channel: &ChannelName) {
        let inner = &self.inner;
        let _guard = inner.subscriptions.lock().await;
        let removed = lock(&inner.local).remove(channel);
        if let Some(queue) = removed {
            queue.close();
            inner.unsubscribe(channel.as_str()).await;
        }
        let emptied: Vec<GroupName> = {
            let mut groups = lock(&inner.groups);
            let mut emptied = Vec::new();
            groups.retain(|group, members| {
                members.remove(channel);
                if members.is_empty() {
                    emptied.push(group.clone());
                }
                !members.is_empty()
            });
            emptied
        };
        for group in emptied {
            inner.unsubscribe(&inner.group_channel(&group)).await;
        }
    }
}
