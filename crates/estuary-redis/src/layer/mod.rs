//! `RedisChannelLayer`: the channels_redis core layer, in Rust.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_core::{
    ChannelLayer, ChannelLayerError, ChannelName, GroupName, GroupSendReport, Message, SendError,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use crate::codec::{Target, decode_member, encode_member};
use crate::config::RedisConfig;
use crate::crypto::Crypto;
use crate::local::{LocalQueue, lock, now};
use crate::scripts;
use crate::shard::shard_index;

mod receive;

use receive::{fetch_one, receive_loop, renew_loop};

/// The Redis layer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisLayerError {
    /// No hosts were given.
    #[error("no Redis hosts configured")]
    NoHosts,
    /// A host URL is invalid.
    #[error("invalid Redis URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What the client said.
        source: redis::RedisError,
    },
    /// The prefix cannot start a channel name (the pub/sub layer names
    /// channels `{prefix}specific.<id>`).
    #[error("invalid prefix {prefix:?} for the pub/sub layer: {reason}")]
    InvalidPrefix {
        /// The prefix.
        prefix: String,
        /// Why it cannot start a channel name.
        reason: String,
    },
    /// The layer must be made inside a tokio runtime (it starts its receive task).
    #[error("RedisChannelLayer::new must be called inside a tokio runtime")]
    NoRuntime,
}

/// A channel layer on Redis, wire-compatible with Django's
/// `channels_redis.core.RedisChannelLayer` (4.x): the same keys, sorted sets,
/// msgpack payloads with `__asgi_channel__`, capacity, expiry, group expiry,
/// sharding and encryption. A Django process and an Estuary process sharing
/// one Redis exchange `send` and `group_send` messages both ways.
///
/// # Connections
///
/// Commands go over one multiplexed connection per host, which reconnects by
/// itself with backoff. This process's own queue (`{prefix}specific.<id>!`)
/// is read by one background task with `BZPOPMIN` on a dedicated connection
/// and dispatched to the local channels it names. While Redis is away, every
/// operation fails with [`ChannelLayerError::Unavailable`] and the receive task
/// retries with backoff; when Redis is back, it resumes and this process's
/// group memberships are written again. Memberships are also renewed before
/// half of `group_expiry` has passed, so long-lived connections stay in their
/// groups.
///
/// # Differences from channels_redis
///
/// * Sends to plain channels (no `!`) use the consistent hash on their name,
///   not a round robin, so that Estuary processes find each other's worker
///   queues on a ring. With one host (the usual case) this is the same.
/// * Writes are Lua scripts, so capacity checks are atomic.
///
/// ```no_run
/// use estuary_core::{ChannelLayer, ChannelLayerHandle};
/// use estuary_redis::{RedisChannelLayer, RedisConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = RedisChannelLayer::new(RedisConfig::new(["redis://127.0.0.1:6379/0"]))?;
/// let handle = ChannelLayerHandle::new(layer);
/// let me = handle.new_channel().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisChannelLayer {
    inner: Arc<Inner>,
}

struct Shard {
    client: redis::Client,
    conn: ConnectionManager,
}

struct Inner {
    config: RedisConfig,
    shards: Vec<Shard>,
    crypto: Option<Crypto>,
    /// `specific.<uuid>!`: this process's prefix for its channels.
    client_prefix: String,
    local: Mutex<HashMap<ChannelName, Arc<LocalQueue>>>,
    plain: Mutex<HashMap<ChannelName, Arc<PlainReceiver>>>,
    /// Group memberships of this process's channels, and when they were written.
    memberships: Mutex<HashMap<ChannelName, HashMap<GroupName, Instant>>>,
    healthy: AtomicBool,
    /// Bits of the last score this process wrote: scores only move forward,
    /// so one sender's messages keep their order even if the clock steps back.
    last_score: AtomicU64,
    dropped: AtomicU64,
    undecodable: AtomicU64,
    shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One process's copy of a group message: its queue key, the stored member,
/// the queue's capacity, and how many group members it carries.
struct QueuePayload {
    key: String,
    payload: Vec<u8>,
    capacity: usize,
    members: usize,
}

/// Receives on a plain channel (a worker queue): one blocking pop at a time,
/// into a buffer, so a cancelled receive loses nothing.
struct PlainReceiver {
    queue: LocalQueue,
    fetching: AtomicBool,
    conn: ConnectionManager,
    /// Cancelled by `close_channel`: stops a fetch in flight.
    token: CancellationToken,
}

fn unavailable(e: redis::RedisError) -> ChannelLayerError {
    ChannelLayerError::Unavailable(Box::new(e))
}

impl std::fmt::Debug for RedisChannelLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannelLayer")
            .field("hosts", &self.inner.config.hosts)
            .field("prefix", &self.inner.config.prefix)
            .field("client_prefix", &self.inner.client_prefix)
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

impl RedisChannelLayer {
    /// Sets up the layer and starts its receive and renewal tasks. It does not
    /// wait for Redis: connections are made on first use and remade after
    /// failures. Must be called inside a tokio runtime.
    pub fn new(config: RedisConfig) -> Result<Self, RedisLayerError> {
        let shards: Vec<Shard> = config
            .open_hosts()?
            .into_iter()
            .map(|h| Shard {
                client: h.client,
                conn: h.commands,
            })
            .collect();
        let ttl = config.layer.expiry().as_secs() + 10;
        let crypto = Crypto::new(&config.encryption_keys, Some(ttl));
        let client_prefix = format!("specific.{}!", uuid::Uuid::new_v4().simple());
        let inner = Arc::new(Inner {
            shards,
            crypto,
            client_prefix,
            local: Mutex::new(HashMap::new()),
            plain: Mutex::new(HashMap::new()),
            memberships: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(true),
            last_score: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            config,
        });
        let key = inner.channel_key(&inner.client_prefix);
        let shard = &inner.shards[inner.shard(&inner.client_prefix)];
        let blocking = ConnectionManager::new_lazy_with_config(shard.client.clone(), inner.blocking_config())
            .map_err(|source| RedisLayerError::InvalidUrl {
                url: inner.config.hosts[0].clone(),
                source,
            })?;
        tokio::spawn(receive_loop(
            Arc::downgrade(&inner),
            blocking,
            key,
            inner.shutdown.clone(),
        ));
        tokio::spawn(renew_loop(Arc::downgrade(&inner), inner.shutdown.clone()));
        Ok(Self { inner })
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// False while the receive task cannot reach Redis.
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Messages dropped because a local channel's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Stored messages that could not be decoded (wrong key, corrupt data).
    pub fn undecodable(&self) -> u64 {
        self.inner.undecodable.load(Ordering::Relaxed)
    }

    /// This process's queue key in Redis, e.g. `asgispecific.<id>!`.
    pub fn process_key(&self) -> String {
        self.inner.channel_key(&self.inner.client_prefix)
    }
}

impl Inner {
    fn shard(&self, name: &str) -> usize {
        shard_index(name, self.shards.len())
    }

    fn conn(&self, name: &str) -> ConnectionManager {
        self.shards[self.shard(name)].conn.clone()
    }

    fn channel_key(&self, non_local: &str) -> String {
        format!("{}{}", self.config.prefix, non_local)
    }

    fn group_key(&self, group: &GroupName) -> String {
        format!("{}:group:{}", self.config.prefix, group)
    }

    fn blocking_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            // Longer than the blocking pop, or every idle pop would time out.
            .set_response_timeout(Some(self.config.receive_timeout + Duration::from_secs(5)))
            .set_number_of_retries(1)
    }

    fn is_mine(&self, channel: &ChannelName) -> bool {
        channel.as_str().starts_with(&self.client_prefix)
    }

    fn expiry_secs(&self) -> u64 {
        self.config.layer.expiry().as_secs().max(1)
    }

    /// The score for a write now: the wall clock, but never below (or equal
    /// to) the previous score of this process.
    fn score(&self) -> f64 {
        let mut last = self.last_score.load(Ordering::Relaxed);
        loop {
            let floor = f64::from_bits(last);
            let next = now().max(floor + 1e-6);
            match self.last_score.compare_exchange_weak(
                last,
                next.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    /// Hands a popped member to the local channels it names. Nothing in a
    /// stored member can stop the receive loop: a panic while decoding is
    /// caught, logged and counted.
    fn dispatch(&self, member: &[u8], score: f64) {
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.dispatch_inner(member, score)
        }));
        if handled.is_err() {
            self.undecodable.fetch_add(1, Ordering::Relaxed);
            tracing::error!("decoding a stored message panicked; message dropped");
        }
    }

    fn dispatch_inner(&self, member: &[u8], score: f64) {
        let decoded = match decode_member(member, self.crypto.as_ref()) {
            Ok(d) => d,
            Err(error) => {
                self.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "undecodable message in this process's Redis queue; dropped");
                return;
            }
        };
        if decoded.targets.is_empty() {
            tracing::warn!(
                r#type = decoded.message.message_type(),
                "message without __asgi_channel__ in a process queue; dropped"
            );
            return;
        }
        let expires = score + self.config.layer.expiry().as_secs_f64();
        let local = lock(&self.local);
        for target in decoded.targets {
            match local.get(&target) {
                Some(queue) => {
                    if !queue.push(expires, decoded.message.clone()) {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(channel = %target, "local buffer full; message dropped");
                    }
                }
                None => tracing::debug!(channel = %target, "message for a closed channel; dropped"),
            }
        }
    }

    /// Writes memberships (ZADD now + EXPIRE), one pipeline per shard.
    async fn write_memberships(&self, due: &[(GroupName, ChannelName)]) -> Result<(), ChannelLayerError> {
        let mut by_shard: BTreeMap<usize, redis::Pipeline> = BTreeMap::new();
        let score = self.score().to_string();
        let ttl = self.config.layer.group_expiry().as_secs() as i64;
        for (group, channel) in due {
            let key = self.group_key(group);
            let pipe = by_shard.entry(self.shard(group.as_str())).or_insert_with(|| {
                let mut p = redis::pipe();
                p.atomic();
                p
            });
            pipe.zadd(&key, channel.as_str(), &score)
                .ignore()
                .expire(&key, ttl)
                .ignore();
        }
        for (shard, pipe) in by_shard {
            let mut conn = self.shards[shard].conn.clone();
            pipe.query_async::<()>(&mut conn).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// Writes again the memberships older than half the group expiry (or
    /// all of them). True when everything due was written.
    async fn renew(&self, all: bool) -> bool {
        let max_age = self.config.layer.group_expiry() / 2;
        let due: Vec<(GroupName, ChannelName)> = lock(&self.memberships)
            .iter()
            .flat_map(|(ch, groups)| {
                groups
                    .iter()
                    .filter(|(_, at)| all || at.elapsed() >= max_age)
                    .map(move |(g, _)| (g.clone(), ch.clone()))
            })
            .collect();
        if due.is_empty() {
            return true;
        }
        tracing::debug!(count = due.len(), all, "renewing group memberships");
        if let Err(error) = self.write_memberships(&due).await {
            tracing::warn!(%error, "could not renew group memberships; will retry");
            return false;
        }
        let mut gone = Vec::new();
        {
            let mut memberships = lock(&self.memberships);
            for (group, channel) in due {
                match memberships.get_mut(&channel).and_then(|g| g.get_mut(&group)) {
                    Some(at) => *at = Instant::now(),
                    // Discarded while we wrote it back: take it out again.
                    None => gone.push((group, channel)),
                }
            }
        }
        for (group, channel) in gone {
            let mut conn = self.conn(group.as_str());
            let _ = redis::cmd("ZREM")
                .arg(self.group_key(&group))
                .arg(channel.as_str())
                .query_async::<()>(&mut conn)
                .await;
        }
        true
    }

    async fn receive_plain(self: &Arc<Self>, channel: &ChannelName) -> Result<Message, ChannelLayerError> {
        let rx = {
            let mut plain = lock(&self.plain);
            plain
                .entry(channel.clone())
                .or_insert_with(|| {
                    let shard = &self.shards[self.shard(channel.as_str())];
                    // Lazy: this cannot fail for a client that was already opened.
                    let conn =
                        ConnectionManager::new_lazy_with_config(shard.client.clone(), self.blocking_config())
                            .unwrap_or_else(|_| shard.conn.clone());
                    Arc::new(PlainReceiver {
                        queue: LocalQueue::new(self.config.layer.capacity_for(channel.as_str())),
                        fetching: AtomicBool::new(false),
                        conn,
                        token: self.shutdown.child_token(),
                    })
                })
                .clone()
        };
        // Fetch only for a receiver that finds nothing buffered, one pop at
        // a time, so an idle worker takes no messages from its peers.
        if rx.queue.is_empty() && !rx.fetching.swap(true, Ordering::AcqRel) {
            let key = self.channel_key(channel.as_str());
            tokio::spawn(fetch_one(Arc::downgrade(self), rx.clone(), key, rx.token.clone()));
        }
        rx.queue
            .pop()
            .await
            .ok_or_else(|| ChannelLayerError::ChannelClosed(channel.clone()))
    }
}

impl ChannelLayer for RedisChannelLayer {
    async fn new_channel(&self) -> Result<ChannelName, ChannelLayerError> {
        let inner = &self.inner;
        let name = format!("{}{}", inner.client_prefix, uuid::Uuid::new_v4().simple());
        let name = ChannelName::new(&name).map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))?;
        let queue = LocalQueue::new(inner.config.layer.capacity_for(name.as_str()));
        lock(&inner.local).insert(name.clone(), Arc::new(queue));
        Ok(name)
    }

    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), SendError> {
        let inner = &self.inner;
        let (non_local, target) = if channel.is_process_specific() {
            (channel.non_local_name(), Target::One(channel))
        } else {
            (channel.as_str(), Target::None)
        };
        let member = encode_member(&message, target, inner.crypto.as_ref());
        let now = inner.score();
        let expiry = inner.expiry_secs();
        let capacity = inner.config.layer.capacity_for(channel.as_str());
        let mut conn = inner.conn(non_local);
        let stored: Result<i64, _> = scripts::SEND
            .key(inner.channel_key(non_local))
            .arg(member)
            .arg(now.to_string())
            .arg(now.floor() as i64 - expiry as i64)
            .arg(capacity)
            .arg(expiry)
            .invoke_async(&mut conn)
            .await;
        match stored {
            Ok(1) => Ok(()),
            Ok(_) => Err(SendError::Full {
                channel: channel.clone(),
                capacity,
                message,
            }),
            Err(e) => Err(SendError::Backend {
                channel: channel.clone(),
                error: unavailable(e),
                message,
            }),
        }
    }

    async fn receive(&self, channel: &ChannelName) -> Result<Message, ChannelLayerError> {
        let inner = &self.inner;
        if inner.is_mine(channel) {
            let queue = lock(&inner.local).get(channel).cloned();
            let queue = queue.ok_or_else(|| ChannelLayerError::ChannelClosed(channel.clone()))?;
            return queue
                .pop()
                .await
                .ok_or_else(|| ChannelLayerError::ChannelClosed(channel.clone()));
        }
        if channel.is_process_specific() {
            return Err(ChannelLayerError::ForeignChannel(channel.clone()));
        }
        inner.receive_plain(channel).await
    }

    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        if inner.is_mine(channel) && !lock(&inner.local).contains_key(channel) {
            tracing::debug!(%group, %channel, "group_add of a closed channel; ignored");
            return Ok(());
        }
        inner
            .write_memberships(&[(group.clone(), channel.clone())])
            .await?;
        if inner.is_mine(channel) {
            lock(&inner.memberships)
                .entry(channel.clone())
                .or_default()
                .insert(group.clone(), Instant::now());
        }
        Ok(())
    }

    async fn group_discard(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        if let Some(groups) = lock(&inner.memberships).get_mut(channel) {
            groups.remove(group);
        }
        let mut conn = inner.conn(group.as_str());
        redis::cmd("ZREM")
            .arg(inner.group_key(group))
            .arg(channel.as_str())
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn group_send(
        &self,
        group: &GroupName,
        message: Message,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        let inner = &self.inner;
        let now = inner.score();
        let group_expiry = inner.config.layer.group_expiry().as_secs() as i64;
        let mut conn = inner.conn(group.as_str());
        let members: Vec<String> = scripts::GROUP_MEMBERS
            .key(inner.group_key(group))
            .arg(now.floor() as i64 - group_expiry)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut report = GroupSendReport::default();
        if members.is_empty() {
            return Ok(report);
        }
        // One payload per destination queue (one per process), each naming
        // every member it carries, grouped by the shard that holds the queue.
        let mut by_queue: BTreeMap<String, Vec<ChannelName>> = BTreeMap::new();
        for member in members {
            match ChannelName::new(&member) {
                Ok(ch) => by_queue
                    .entry(ch.non_local_name().to_owned())
                    .or_default()
                    .push(ch),
                Err(error) => {
                    tracing::warn!(%group, %member, %error, "invalid channel name in group; skipped")
                }
            }
        }
        let mut by_shard: BTreeMap<usize, Vec<QueuePayload>> = BTreeMap::new();
        for (non_local, channels) in &by_queue {
            let refs: Vec<&ChannelName> = channels.iter().collect();
            let payload = encode_member(&message, Target::Many(&refs), inner.crypto.as_ref());
            let capacity = inner.config.layer.capacity_for(channels[0].as_str());
            by_shard
                .entry(inner.shard(non_local))
                .or_default()
                .push(QueuePayload {
                    key: inner.channel_key(non_local),
                    payload,
                    capacity,
                    members: channels.len(),
                });
        }
        let expiry = inner.expiry_secs();
        let mut failure = None;
        let mut shards_ok = 0;
        for (shard, queues) in by_shard {
            let mut invocation = scripts::GROUP_SEND.prepare_invoke();
            for q in &queues {
                invocation.key(&q.key);
            }
            for q in &queues {
                invocation.arg(q.payload.as_slice());
            }
            for q in &queues {
                invocation.arg(q.capacity);
            }
            invocation
                .arg(now.to_string())
                .arg(now.floor() as i64 - expiry as i64)
                .arg(expiry);
            let mut conn = inner.shards[shard].conn.clone();
            match invocation.invoke_async::<Vec<i64>>(&mut conn).await {
                Ok(stored) => {
                    shards_ok += 1;
                    for (q, ok) in queues.iter().zip(stored) {
                        if ok == 1 {
                            report.delivered += q.members;
                        } else {
                            report.dropped += q.members;
                        }
                    }
                }
                Err(e) => {
                    // Members on an unreachable shard are counted as dropped.
                    report.dropped += queues.iter().map(|q| q.members).sum::<usize>();
                    failure = Some(e);
                }
            }
        }
        if report.dropped > 0 {
            tracing::info!(%group, dropped = report.dropped, "group_send skipped members of full queues");
        }
        match failure {
            Some(e) if shards_ok == 0 => Err(unavailable(e)),
            Some(e) => {
                tracing::warn!(%group, error = %e, "group_send reached some shards only");
                Ok(report)
            }
            None => Ok(report),
        }
    }

    async fn flush(&self) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        let pattern = format!("{}*", inner.config.prefix);
        for shard in &inner.shards {
            let mut conn = shard.conn.clone();
            scripts::FLUSH
                .arg(&pattern)
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        lock(&inner.memberships).clear();
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
        lock(&inner.memberships).remove(channel);
        if let Some(queue) = lock(&inner.local).remove(channel) {
            queue.close();
        }
        if let Some(rx) = lock(&inner.plain).remove(channel) {
            rx.token.cancel();
            rx.queue.close();
        }
    }
}
