//! The in-process channel layer, for development and single-process servers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Poll, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    ChannelLayer, ChannelLayerConfig, ChannelLayerError, ChannelReceiver, GroupSendReport, OVERFLOW_FACTOR,
    ReceiverState, SendError,
};
use crate::message::{Charge, Message};
use crate::names::{ChannelName, GroupName};
use crate::sync::lock;

/// The longest pause between two runs of the in-memory layer's reaper.
pub const REAP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A channel layer inside one process (Channels' `InMemoryChannelLayer`).
///
/// Cloning it gives another handle to the same layer. It keeps the whole
/// [delivery contract](crate::ChannelLayer): per-channel capacity with `Full` handing the
/// message back, group sends that skip full members and count them, message
/// expiry and group expiry on tokio's clock (so tests can pause time).
/// A group send shares one encoded [`Message`] with every member: no copy per
/// recipient. What the queues hold in all is bounded by
/// [`ChannelLayerConfig::max_bytes`], a shared message counted once: past
/// it, sends fail with [`ChannelLayerError::TooManyBytes`].
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
}

/// What a message costs besides its encoded bytes (the message itself, its
/// queue slots): so that a flood of empty messages is bounded too.
const MESSAGE_OVERHEAD: usize = 128;

/// The bytes of messages the layer stores, against `max_bytes`. A message
/// keeps its charge ([`Charge`]) until its last clone is dropped, so one
/// shared by every member of a group is counted once.
struct Budget {
    held: Arc<AtomicUsize>,
    limit: usize,
    refused: AtomicU64,
}

impl Budget {
    /// Charges `message` before it is stored (nothing if it is charged
    /// already), or refuses it (counted, and logged at most once a second)
    /// when the layer would hold more than its limit.
    fn charge(&self, message: &Message) -> Result<(), ChannelLayerError> {
        if message.is_charged() {
            return Ok(());
        }
        let bytes = message.as_bytes().len().saturating_add(MESSAGE_OVERHEAD);
        let before = self.held.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) <= self.limit {
            message.keep_charge(Charge::new(bytes, self.held.clone()));
            return Ok(());
        }
        self.held.fetch_sub(bytes, Ordering::AcqRel);
        self.refused.fetch_add(1, Ordering::Relaxed);
        crate::throttled!(
            warn,
            limit = self.limit,
            held = before,
            size = bytes,
            "channel layer full: a send was refused (max_bytes); its producer was told"
        );
        Err(ChannelLayerError::TooManyBytes { limit: self.limit })
    }
}

/// A queued message and when it expires.
struct Entry {
    expires: Instant,
    message: Message,
}

/// Flow control: how many live channels hold more than their capacity, and
/// a wake-up for the sessions waiting for that to reach zero.
#[derive(Default)]
struct Backlog {
    over: AtomicUsize,
    relief: Notify,
}

impl Backlog {
    /// Recounts `state` after its length or receiver changed. A live queue
    /// counts from above its capacity until it is back to half of it, so
    /// that one hovering at capacity does not wake every waiting session on
    /// each message.
    fn update(&self, state: &mut QueueState, capacity: usize) {
        let len = state.items.len();
        let over = state.receiver == ReceiverState::Live
            && (len > capacity || (state.counted && len > capacity / 2));
        if over == state.counted {
            return;
        }
        state.counted = over;
        if over {
            self.over.fetch_add(1, Ordering::AcqRel);
        } else if self.over.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.relief.notify_waiters();
        }
    }
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
        self.queue.closed.load(Ordering::Relaxed) || (!name.is_process_specific() && self.added + ttl <= now)
    }
}

struct Queue {
    capacity: usize,
    /// A connection's own channel: losses are reported to its receiver.
    reports_loss: bool,
    state: Mutex<QueueState>,
    ready: Notify,
    closed: AtomicBool,
    backlog: Arc<Backlog>,
}

struct QueueState {
    items: VecDeque<Entry>,
    /// The bound receiver waiting for a message ([`ChannelLayer::receiver`]).
    waiting: Option<Waker>,
    receiver: ReceiverState,
    /// Whether this queue is counted in the layer's backlog.
    counted: bool,
    /// Group messages dropped because the queue was full, not yet reported
    /// to the bound receiver.
    lost: u64,
}

/// Why a push failed; the message comes back.
struct Rejected {
    message: Message,
    /// The receiver was live: the overflow limit was reached, not the capacity.
    live: bool,
}

impl Queue {
    fn new(capacity: usize, backlog: Arc<Backlog>, reports_loss: bool) -> Self {
        Self {
            capacity,
            reports_loss,
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                waiting: None,
                receiver: ReceiverState::Detached,
                counted: false,
                lost: 0,
            }),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            backlog,
        }
    }

    fn state(&self) -> MutexGuard<'_, QueueState> {
        lock(&self.state)
    }

    /// Stores `message` unless the queue is full (after dropping expired
    /// ones). A group send (`overflow`) to a live receiver may go past the
    /// capacity, up to the overflow limit.
    fn push(&self, message: Message, expires: Instant, now: Instant, overflow: bool) -> Result<(), Rejected> {
        let mut state = self.state();
        while state.items.front().is_some_and(|e| e.expires <= now) {
            state.items.pop_front();
        }
        let live = state.receiver == ReceiverState::Live;
        let limit = if overflow && live {
            self.capacity.saturating_mul(OVERFLOW_FACTOR)
        } else {
            self.capacity
        };
        if state.items.len() >= limit {
            self.backlog.update(&mut state, self.capacity);
            if overflow && self.reports_loss {
                // A group message this connection will never see: its
                // session is told (`ChannelLayerError::Lost`), so the loss
                // is not silent.
                state.lost += 1;
                let waiting = state.waiting.take();
                drop(state);
                match waiting {
                    Some(receiver) => receiver.wake(),
                    None => self.ready.notify_one(),
                }
            }
            return Err(Rejected {
                message,
                live: live && overflow,
            });
        }
        state.items.push_back(Entry { expires, message });
        self.backlog.update(&mut state, self.capacity);
        let waiting = state.waiting.take();
        drop(state);
        match waiting {
            Some(receiver) => receiver.wake(),
            None => self.ready.notify_one(),
        }
        Ok(())
    }

    fn pop_locked(&self, state: &mut QueueState, now: Instant) -> Option<Message> {
        let mut found = None;
        while let Some(entry) = state.items.pop_front() {
            if entry.expires > now {
                found = Some(entry.message);
                break;
            }
        }
        self.backlog.update(state, self.capacity);
        found
    }

    fn set_receiver(&self, receiver: ReceiverState) {
        let mut state = self.state();
        state.receiver = receiver;
        self.backlog.update(&mut state, self.capacity);
    }

    fn clear(&self) {
        let mut state = self.state();
        state.items.clear();
        self.backlog.update(&mut state, self.capacity);
    }

    fn is_abandoned(&self, now: Instant) -> bool {
        let mut state = self.state();
        while state.items.front().is_some_and(|e| e.expires <= now) {
            state.items.pop_front();
        }
        self.backlog.update(&mut state, self.capacity);
        state.items.is_empty()
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

    fn group(&self, group: &GroupName) -> Option<Arc<Mutex<Members>>> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
            .cloned()
    }

    fn group_or_insert(&self, group: &GroupName) -> Arc<Mutex<Members>> {
        if let Some(members) = self.group(group) {
            return members;
        }
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        groups.entry(group.clone()).or_default().clone()
    }

    /// Forgets `group` if it has no members left.
    fn remove_if_empty(&self, group: &GroupName) {
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
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
        let groups: Vec<(GroupName, Arc<Mutex<Members>>)> = self
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
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
    }
}

impl ChannelLayer for InMemoryChannelLayer {
    async fn new_channel(&self) -> Result<ChannelName, ChannelLayerError> {
        let name = format!("{}{}", self.inner.client_prefix, uuid::Uuid::new_v4().simple());
        let name = ChannelName::new(&name).map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))?;
        // Own channels are never refused (the connection limit bounds them).
        let _ = self.inner.queue(&name, true);
        Ok(name)
    }

    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), SendError> {
        let queue = match self.inner.queue(channel, false) {
            Ok(queue) => queue,
            Err(Missing::Closed) => {
                tracing::debug!(%channel, "send to a closed channel; dropped");
                return Ok(());
            }
            Err(Missing::TooMany(limit)) => {
                return Err(SendError::Backend {
                    channel: channel.clone(),
                    error: ChannelLayerError::TooManyChannels { limit },
                    message,
                });
            }
        };
        if let Err(error) = self.inner.budget.charge(&message) {
            return Err(SendError::Backend {
                channel: channel.clone(),
                error,
                message,
            });
        }
        let now = Instant::now();
        queue
            .push(message, now + self.inner.config.expiry(), now, false)
            .map_err(|rejected| SendError::Full {
                channel: channel.clone(),
                capacity: queue.capacity,
                message: rejected.message,
            })
    }

    async fn receive(&self, channel: &ChannelName) -> Result<Message, ChannelLayerError> {
        let queue = self
            .inner
            .queue(channel, false)
            .map_err(|missing| match missing {
                Missing::Closed => ChannelLayerError::ChannelClosed(channel.clone()),
                Missing::TooMany(limit) => ChannelLayerError::TooManyChannels { limit },
            })?;
        loop {
            let ready = queue.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut state = queue.state();
                if state.lost > 0 {
                    let count = std::mem::take(&mut state.lost);
                    return Err(ChannelLayerError::Lost { count });
                }
                if let Some(message) = queue.pop_locked(&mut state, Instant::now()) {
                    return Ok(message);
                }
            }
            if queue.closed.load(Ordering::Acquire) {
                return Err(ChannelLayerError::ChannelClosed(channel.clone()));
            }
            ready.await;
        }
    }

    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let queue = match self.inner.queue(channel, false) {
            Ok(queue) => queue,
            Err(Missing::Closed) => {
                tracing::debug!(%group, %channel, "group_add of a closed channel; ignored");
                return Ok(());
            }
            Err(Missing::TooMany(limit)) => return Err(ChannelLayerError::TooManyChannels { limit }),
        };
        let members = self.inner.group_or_insert(group);
        lock(&members).insert(
            channel.clone(),
            Member {
                added: Instant::now(),
                queue,
            },
        );
        Ok(())
    }

    async fn group_discard(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        if let Some(members) = self.inner.group(group) {
            lock(&members).remove(channel);
            self.inner.remove_if_empty(group);
        }
        Ok(())
    }

    async fn group_send(
        &self,
        group: &GroupName,
        message: Message,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        let now = Instant::now();
        let expires = now + self.inner.config.expiry();
        let ttl = self.inner.config.group_expiry();
        let mut report = GroupSendReport::default();
        let mut live_dropped = 0;
        let Some(members) = self.inner.group(group) else {
            return Ok(report);
        };
        let empty = {
            let mut members = lock(&members);
            members.retain(|name, m| !m.is_stale(name, now, ttl));
            if !members.is_empty() {
                // Charged once for every member: they share the message.
                self.inner.budget.charge(&message)?;
                for member in members.values() {
                    // Cloning a Message clones a refcounted Bytes: one encoding for all.
                    match member.queue.push(message.clone(), expires, now, true) {
                        Ok(()) => report.delivered += 1,
                        Err(rejected) => {
                            report.dropped += 1;
                            live_dropped += usize::from(rejected.live);
                        }
                    }
                }
            }
            members.is_empty()
        };
        if empty {
            self.inner.remove_if_empty(group);
        }
        if report.dropped > 0 {
            self.inner
                .dropped
                .fetch_add(report.dropped as u64, Ordering::Relaxed);
            tracing::debug!(%group, dropped = report.dropped, "group_send skipped full channels");
        }
        if live_dropped > 0 {
            crate::throttled!(
                warn,
                %group,
                members = live_dropped,
                "group_send dropped messages for members {OVERFLOW_FACTOR} times their capacity behind: the server is overloaded"
            );
        }
        Ok(report)
    }

    async fn flush(&self) -> Result<(), ChannelLayerError> {
        self.inner
            .groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // Open channels stay open (their receivers keep waiting); only
        // messages go, and worker queues are forgotten.
        let own = self.inner.client_prefix.clone();
        self.inner.channels().retain(|name, queue| {
            queue.clear();
            name.as_str().starts_with(&own)
        });
        Ok(())
    }

    async fn close_channel(&self, channel: &ChannelName) {
        let removed = self.inner.channels().remove(channel);
        if let Some(queue) = removed {
            queue.closed.store(true, Ordering::Release);
            queue.set_receiver(ReceiverState::Detached);
            queue.clear();
            queue.ready.notify_waiters();
            let waiting = queue.state().waiting.take();
            if let Some(receiver) = waiting {
                receiver.wake();
            }
        }
    }

    fn set_receiver(&self, channel: &ChannelName, state: ReceiverState) {
        if let Some(queue) = self.inner.channels().get(channel) {
            queue.set_receiver(state);
        }
    }

    fn backlogged(&self) -> bool {
        self.inner.backlog.over.load(Ordering::Acquire) > 0
    }

    /// A process-specific channel has one receiver (its connection) and one
    /// queue for its life: the receiver holds that queue. A plain (worker)
    /// channel may have several receivers and its queue may be replaced
    /// (after `flush`), so it is received through `receive`.
    fn receiver<'a>(&'a self, channel: &'a ChannelName) -> Box<dyn ChannelReceiver + 'a> {
        if !channel.is_process_specific() {
            return Box::new(super::ReceiveLoop {
                layer: self,
                channel,
                pending: None,
            });
        }
        Box::new(QueueReceiver {
            queue: self.inner.queue(channel, false).ok(),
            channel,
        })
    }

    async fn relieved(&self) {
        let backlog = &self.inner.backlog;
        loop {
            let relief = backlog.relief.notified();
            tokio::pin!(relief);
            relief.as_mut().enable();
            if backlog.over.load(Ordering::Acquire) == 0 {
                return;
            }
            relief.await;
        }
    }
}

/// A session's hold on its channel's queue: a message costs one lock, not a
/// lookup in the channel map, a boxed future and a `Notify` registration.
struct QueueReceiver<'a> {
    /// `None`: the channel was closed before the receiver was made.
    queue: Option<Arc<Queue>>,
    channel: &'a ChannelName,
}

impl Drop for QueueReceiver<'_> {
    fn drop(&mut self) {
        // A stored waker would take the next push's wake-up from `receive`.
        if let Some(queue) = &self.queue {
            queue.state().waiting = None;
        }
    }
}

impl ChannelReceiver for QueueReceiver<'_> {
    fn poll_receive(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<Message, ChannelLayerError>> {
        let Some(queue) = &self.queue else {
            return Poll::Ready(Err(ChannelLayerError::ChannelClosed(self.channel.clone())));
        };
        let mut state = queue.state();
        if state.lost > 0 {
            let count = std::mem::take(&mut state.lost);
            return Poll::Ready(Err(ChannelLayerError::Lost { count }));
        }
        if let Some(message) = queue.pop_locked(&mut state, Instant::now()) {
            return Poll::Ready(Ok(message));
        }
        // Checked under the lock that `close_channel` takes after setting it.
        if queue.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(ChannelLayerError::ChannelClosed(self.channel.clone())));
        }
        match &mut state.waiting {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
