//! The in-process channel layer, for development and single-process servers.

mod budget;
mod channel_layer;
mod history;
mod presence;
mod queue;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::time::Instant;

use super::ChannelLayerConfig;
use super::presence::PresenceCoalescer;
use crate::names::{ChannelName, GroupName};
use crate::sync::{lock, read, write};
use budget::Budget;
use history::Recorded;
use presence::Book;
use queue::{Backlog, Queue};

/// The longest pause between two runs of the in-memory layer's reaper.
pub const REAP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A channel layer inside one process (Channels' `InMemoryChannelLayer`).
///
/// Cloning it gives another handle to the same layer. It keeps the whole
/// [delivery contract](crate::ChannelLayer): per-channel capacity with `Full` handing the
/// message back, group sends that skip full members and count them, message
/// expiry and group expiry on tokio's clock (so tests can pause time).
/// A group send shares one encoded [`Message`](crate::Message) with every member: no copy per
/// recipient. What the queues hold in all is bounded by
/// [`ChannelLayerConfig::max_bytes`], a shared message counted once: past
/// it, sends fail with [`ChannelLayerError::TooManyBytes`](crate::ChannelLayerError::TooManyBytes).
///
/// Expired messages are reclaimed without anyone touching their queue: made
/// inside a tokio runtime, the layer runs a reaper task (until the last
/// handle is dropped) that, every [`REAP_INTERVAL`] at most (a quarter of
/// the expiry if that is shorter), drops expired messages, forgets worker
/// queues left empty with no one receiving, and lapsed group memberships.
/// A message is thus held at most `expiry` plus that interval. Made outside
/// a runtime, the layer reclaims only as queues are used and as the channel
/// map grows.
///
/// ```
/// use estuary_core::{ChannelLayer, ChannelName, InMemoryChannelLayer, ChannelLayerConfig, Message, SendError};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(1));
/// let worker = ChannelName::new("thumbnails").unwrap();
/// let job = Message::from_json(&serde_json::json!({"type": "resize"})).unwrap();
/// layer.send(&worker, job.clone()).await.unwrap();
/// let err = layer.send(&worker, job).await.unwrap_err();
/// assert!(matches!(err, SendError::Full { capacity: 1, .. }));
/// let handed_back: Message = err.into_message();
/// assert_eq!(handed_back.message_type(), "resize");
/// # });
/// ```
#[derive(Clone)]
pub struct InMemoryChannelLayer {
    inner: Arc<Inner>,
}

struct Inner {
    config: ChannelLayerConfig,
    /// `specific.<uuid>!`: the prefix of every channel this layer makes.
    client_prefix: String,
    channels: Mutex<HashMap<ChannelName, Arc<Queue>>>,
    /// Each group behind its own mutex: a group send pushes to every member
    /// while holding it, so all members see one order per group.
    groups: RwLock<HashMap<GroupName, Arc<Mutex<Members>>>>,
    /// Channel-map size after the last sweep of abandoned queues.
    swept_at: AtomicU64,
    dropped: AtomicU64,
    backlog: Arc<Backlog>,
    budget: Arc<Budget>,
    /// Who is present in which group.
    presence: Mutex<Book>,
    /// Presence changes waiting to be announced.
    diffs: PresenceCoalescer,
    /// The recorded groups' histories.
    histories: Mutex<HashMap<GroupName, Recorded>>,
}

type Members = HashMap<ChannelName, Member>;

struct Member {
    added: Instant,
    queue: Arc<Queue>,
}

impl Member {
    /// A membership lapses when its channel closed, or when it is older than
    /// the group expiry and its channel is not an open channel of this layer
    /// (those are kept alive, so long-lived connections stay in their groups).
    fn is_stale(&self, name: &ChannelName, now: Instant, ttl: std::time::Duration) -> bool {
        // The clock comparison first: it is cheaper than scanning the name,
        // and group sends check every member.
        self.queue.closed.load(Ordering::Relaxed) || (self.added + ttl <= now && !name.is_process_specific())
    }
}

impl Default for InMemoryChannelLayer {
    fn default() -> Self {
        Self::new(ChannelLayerConfig::default())
    }
}

impl std::fmt::Debug for InMemoryChannelLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryChannelLayer")
            .field("config", &self.inner.config)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl InMemoryChannelLayer {
    /// A layer with the given settings (inside a tokio runtime, with its
    /// reaper task).
    pub fn new(config: ChannelLayerConfig) -> Self {
        let layer = Self::without_reaper(config);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let every =
                (layer.inner.config.expiry() / 4).clamp(std::time::Duration::from_millis(10), REAP_INTERVAL);
            runtime.spawn(reap(Arc::downgrade(&layer.inner), every));
        }
        layer
    }

    fn without_reaper(config: ChannelLayerConfig) -> Self {
        let budget = Arc::new(Budget {
            held: Arc::new(AtomicUsize::new(0)),
            limit: config.max_bytes(),
            refused: AtomicU64::new(0),
        });
        Self {
            inner: Arc::new(Inner {
                budget,
                presence: Mutex::default(),
                diffs: PresenceCoalescer::new(config.presence().interval()),
                histories: Mutex::default(),
                config,
                client_prefix: format!("specific.{}!", uuid::Uuid::new_v4().simple()),
                channels: Mutex::new(HashMap::new()),
                groups: RwLock::new(HashMap::new()),
                swept_at: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                backlog: Arc::default(),
            }),
        }
    }

    /// The layer's settings.
    pub fn config(&self) -> &ChannelLayerConfig {
        &self.inner.config
    }

    /// Messages held in all queues now (expired ones included until they
    /// are reclaimed).
    pub fn queued(&self) -> usize {
        self.inner
            .channels()
            .values()
            .map(|q| q.state().items.len())
            .sum()
    }

    /// Bytes of the messages this layer stored that are still alive (in a
    /// queue, or being handled), each counted once however many queues
    /// hold it, with its overhead (see [`ChannelLayerConfig::max_bytes`]).
    pub fn held_bytes(&self) -> usize {
        self.inner.budget.held.load(Ordering::Acquire)
    }

    /// How many sends and group sends were refused because the layer held
    /// [`ChannelLayerConfig::max_bytes`] already, in all.
    pub fn refused(&self) -> u64 {
        self.inner.budget.refused.load(Ordering::Relaxed)
    }

    /// How many messages group sends have dropped for full members, in all.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// How long the layer has been backlogged in all (flow control: some
    /// live member held more than its capacity, so sessions stopped reading
    /// their clients), the current episode included; and how many times it
    /// became so. Written only when the layer becomes backlogged or
    /// relieved.
    ///
    /// ```
    /// use estuary_core::InMemoryChannelLayer;
    ///
    /// let (time, episodes) = InMemoryChannelLayer::default().backlogged_time();
    /// assert_eq!((time.as_secs(), episodes), (0, 0));
    /// ```
    pub fn backlogged_time(&self) -> (std::time::Duration, u64) {
        self.inner.backlog.spent()
    }

    /// The number of members of `group` whose membership has not expired.
    pub fn group_size(&self, group: &GroupName) -> usize {
        let now = Instant::now();
        let ttl = self.inner.config.group_expiry();
        self.inner.group(group).map_or(0, |members| {
            lock(&members)
                .iter()
                .filter(|(name, m)| !m.is_stale(name, now, ttl))
                .count()
        })
    }
}

impl Inner {
    fn channels(&self) -> MutexGuard<'_, HashMap<ChannelName, Arc<Queue>>> {
        lock(&self.channels)
    }

    /// True while `channel` is an open channel made by this layer.
    fn is_open(&self, channel: &ChannelName) -> bool {
        channel.as_str().starts_with(&self.client_prefix) && self.channels().contains_key(channel)
    }

    fn group(&self, group: &GroupName) -> Option<Arc<Mutex<Members>>> {
        read(&self.groups).get(group).cloned()
    }

    fn group_or_insert(&self, group: &GroupName) -> Arc<Mutex<Members>> {
        if let Some(members) = self.group(group) {
            return members;
        }
        let mut groups = write(&self.groups);
        groups.entry(group.clone()).or_default().clone()
    }

    /// Forgets `group` if it has no members left.
    fn remove_if_empty(&self, group: &GroupName) {
        let mut groups = write(&self.groups);
        if groups.get(group).is_some_and(|m| lock(m).is_empty()) {
            groups.remove(group);
        }
    }

    /// The queue of `channel`. This layer's own channels exist only between
    /// `new_channel` and `close_channel`: for those, `Closed` unless
    /// `create`. Any other name gets a queue on first use (a worker
    /// channel), unless the layer holds `max_channels` already.
    fn queue(&self, channel: &ChannelName, create: bool) -> Result<Arc<Queue>, Missing> {
        let mut channels = self.channels();
        if let Some(q) = channels.get(channel) {
            return Ok(q.clone());
        }
        let own = channel.as_str().starts_with(&self.client_prefix);
        if !create && own {
            return Err(Missing::Closed);
        }
        if !own && channels.len() >= self.config.max_channels() {
            let now = Instant::now();
            let prefix = &self.client_prefix;
            channels.retain(|name, q| {
                name.as_str().starts_with(prefix.as_str()) || Arc::strong_count(q) > 1 || !q.is_abandoned(now)
            });
            if channels.len() >= self.config.max_channels() {
                return Err(Missing::TooMany(self.config.max_channels()));
            }
        }
        let q = Arc::new(Queue::new(
            self.config.capacity_for(channel.as_str()),
            self.backlog.clone(),
            channel.is_process_specific(),
        ));
        channels.insert(channel.clone(), q.clone());
        let len = channels.len() as u64;
        // Amortised cleanup: when the map has doubled since the last sweep,
        // forget worker queues that hold nothing and nobody waits on.
        if len >= 2 * self.swept_at.load(Ordering::Relaxed).max(512) {
            let now = Instant::now();
            let own = &self.client_prefix;
            channels.retain(|name, q| {
                name.as_str().starts_with(own.as_str()) || Arc::strong_count(q) > 1 || !q.is_abandoned(now)
            });
            self.swept_at.store(channels.len() as u64, Ordering::Relaxed);
        }
        Ok(q)
    }
}

/// Why [`Inner::queue`] gave no queue.
enum Missing {
    /// One of this layer's own channels, closed (or never made).
    Closed,
    /// A new channel past `max_channels`.
    TooMany(usize),
}

/// The reaper: reclaims expired messages, abandoned worker queues and
/// lapsed memberships every `every`, until the layer is dropped.
async fn reap(layer: std::sync::Weak<Inner>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = layer.upgrade() else { return };
        inner.reap(Instant::now());
    }
}

impl Inner {
    fn reap(&self, now: Instant) {
        {
            let own = &self.client_prefix;
            let mut channels = self.channels();
            // `is_abandoned` drops the expired messages of every queue it
            // looks at; this layer's own channels stay until closed.
            channels.retain(|name, q| {
                let empty = q.is_abandoned(now);
                name.as_str().starts_with(own.as_str()) || Arc::strong_count(q) > 1 || !empty
            });
            self.swept_at.store(channels.len() as u64, Ordering::Relaxed);
        }
        let ttl = self.config.group_expiry();
        let groups: Vec<(GroupName, Arc<Mutex<Members>>)> = read(&self.groups)
            .iter()
            .map(|(g, m)| (g.clone(), m.clone()))
            .collect();
        for (group, members) in groups {
            let empty = {
                let mut members = lock(&members);
                members.retain(|name, m| !m.is_stale(name, now, ttl));
                members.is_empty()
            };
            if empty {
                self.remove_if_empty(&group);
            }
        }
        self.reap_histories(now);
    }
}
