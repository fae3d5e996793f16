//! `RedisPubSubChannelLayer`: channels_redis's pub/sub layer, in Rust.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use estuary_core::{
    ChannelLayer, ChannelLayerError, ChannelName, GroupName, GroupSendReport, Message, SendError,
};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::RedisConfig;
use crate::crypto::Crypto;
use crate::layer::RedisLayerError;
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

    async fn sink(&self, name: &str) -> Result<PubSubSink, ChannelLayerError> {
        let mut rx = self.shards[self.shard(name)].sink.subscribe();
        let waited = tokio::time::timeout(self.config.command_timeout, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(sink)) => sink.clone().ok_or_else(|| unavailable(NotConnected)),
            _ => Err(unavailable(NotConnected)),
        }
    }

    async fn subscribe(&self, name: &str) -> Result<(), ChannelLayerError> {
        self.sink(name).await?.subscribe(name).await.map_err(unavailable)
    }

    async fn unsubscribe(&self, name: &str) {
        if let Ok(mut sink) = self.sink(name).await {
            if let Err(error) = sink.unsubscribe(name).await {
                tracing::debug!(%error, %name, "unsubscribe failed");
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
                    tracing::warn!(%error, %channel, "undecryptable pub/sub message; dropped");
                    return;
                }
            },
            None => Bytes::copy_from_slice(payload),
        };
        let message = match Message::from_msgpack(body) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, %channel, "undecodable pub/sub message; dropped");
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

/// Keeps one subscriber connection to one host: connects, subscribes to
/// everything this process needs there, reads, and starts over after a failure.
async fn subscriber(inner: Weak<Inner>, shard: usize, client: redis::Client, token: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = token.cancelled() => return,
            c = tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub()) => c,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut stream) = pubsub.split();
                let names = match inner.upgrade() {
                    Some(layer) => layer.subscriptions(shard),
                    None => return,
                };
                let subscribed = names.is_empty() || sink.subscribe(&names).await.is_ok();
                if subscribed {
                    match inner.upgrade() {
                        Some(layer) => {
                            layer.shards[shard].sink.send_replace(Some(sink.clone()));
                            if !layer.shards[shard].healthy.swap(true, Ordering::Relaxed) {
                                tracing::info!(shard, "Redis pub/sub reconnected; subscriptions restored");
                            }
                        }
                        None => return,
                    }
                    backoff = Duration::from_millis(100);
                    // A half-open TCP connection never ends the stream: ping it.
                    let mut keepalive = tokio::time::interval(Duration::from_secs(10));
                    keepalive.tick().await;
                    loop {
                        let next = tokio::select! {
                            _ = token.cancelled() => return,
                            m = stream.next() => m,
                            _ = keepalive.tick() => {
                                let ping = tokio::time::timeout(Duration::from_secs(5), sink.ping::<String>()).await;
                                if matches!(ping, Ok(Ok(_))) { continue } else { break }
                            }
                        };
                        let Some(msg) = next else { break };
                        let Some(layer) = inner.upgrade() else { return };
                        layer.dispatch(msg.get_channel_name(), msg.get_payload_bytes());
                    }
                }
                if let Some(layer) = inner.upgrade() {
                    layer.shards[shard].sink.send_replace(None);
                    layer.shards[shard].healthy.store(false, Ordering::Relaxed);
                }
                tracing::error!(shard, "Redis pub/sub connection lost; reconnecting");
            }
            failed => {
                if let Some(layer) = inner.upgrade() {
                    layer.shards[shard].healthy.store(false, Ordering::Relaxed);
                }
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connection timed out".to_owned(),
                };
                tracing::warn!(shard, %error, "cannot connect the Redis subscriber; retrying");
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl ChannelLayer for RedisPubSubChannelLayer {
    async fn new_channel(&self) -> Result<ChannelName, ChannelLayerError> {
        let inner = &self.inner;
        let _guard = inner.subscriptions.lock().await;
        let name = format!(
            "{}specific.{}",
            inner.config.prefix,
            uuid::Uuid::new_v4().simple()
        );
        let name = ChannelName::new(&name).map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))?;
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
            let _guard = inner.subscriptions.lock().await;
            if let Err(error) = inner.subscribe(channel.as_str()).await {
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
        let _guard = inner.subscriptions.lock().await;
        let first = {
            let mut groups = lock(&inner.groups);
            let members = groups.entry(group.clone()).or_default();
            let first = members.is_empty();
            members.insert(channel.clone());
            first
        };
        if first {
            if let Err(error) = inner.subscribe(&inner.group_channel(group)).await {
                if let Some(members) = lock(&inner.groups).get_mut(group) {
                    members.remove(channel);
                }
                return Err(error);
            }
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
