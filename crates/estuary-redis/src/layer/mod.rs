//! `RedisChannelLayer`: the channels_redis core layer, in Rust.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estuary_core::{ChannelLayerError, ChannelName, GroupName, PresenceCoalescer};
use redis::aio::ConnectionManagerConfig;
use tokio_util::sync::CancellationToken;

use crate::config::RedisConfig;
use crate::connection::{Client, ConnectionManager};
use crate::crypto::Crypto;
use crate::error::RedisLayerError;
use crate::local::{Backlog, LocalQueue, now};
use crate::shard::shard_index;

mod channel_layer;
mod dispatch;
mod fanout;
mod group_send;
mod history;
mod memberships;
mod presence;
mod receive;
mod registry;
mod untrusted;
mod warnings;

use memberships::membership_loop;
use presence::{Held, presence_loop};
use receive::receive_loop;
use registry::Registry;

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
/// and dispatched to the local channels it names. Memberships are renewed
/// before half of `group_expiry` has passed, so long-lived connections stay
/// in their groups.
///
/// # Faults, and what they cost
///
/// No fault in Redis loses messages without the caller or the counters
/// saying so:
///
/// * **Redis away.** [`send`](estuary_core::ChannelLayer::send) and
///   [`group_send`](estuary_core::ChannelLayer::group_send) fail with
///   [`ChannelLayerError::Unavailable`](estuary_core::ChannelLayerError::Unavailable) and are counted in
///   [`failed_sends`](Self::failed_sends); [`is_healthy`](Self::is_healthy)
///   (and `is_available`) is false. The receive task retries at most 500 ms
///   apart; when Redis is back (possibly empty), it writes every group
///   membership of this process again *before* it reports healthy, and
///   `group_send` from this process fails until then rather than miss this
///   process's members. Healthy again typically within one second of Redis
///   being back. Before writing them, it checks which of them Redis still
///   holds: if Redis came back without some (restarted empty), other
///   processes' group sends since it came back missed those members, so
///   they are told ([`ChannelLayerError::Lost`](estuary_core::ChannelLayerError::Lost); sessions close 1013). A
///   blip in which Redis kept its data finds nothing missing and tells
///   nobody. Not knowable, and not told: what sat unread in this process's
///   own queue when Redis lost it (the receive task keeps it near empty).
/// * **A group key lost** (evicted, deleted, Redis restarted without this
///   process noticing), or some of this process's members removed from it.
///   This process keeps its own record of its memberships and compares:
///   a [`group_send`](estuary_core::ChannelLayer::group_send) from this process notices
///   at once that the group no longer lists some of its members, and every
///   [`RedisConfig::membership_check`] (default 2 s) the layer checks that
///   each group it has members in still holds one of them (one sample
///   member per group; when it is missing, all of them are checked, and
///   only those missing are acted on). A group whose local members
///   changed while Redis was being asked (a `group_discard` and `group_add`
///   of the same channel racing the check) is left to the next check, so a
///   membership in flight is never taken for a loss. What is done depends
///   on what Redis still holds:
///   - *The group key is gone* (every member lost: eviction, `DEL`, a
///     restart): this process's memberships of it are written again
///     (counted in [`memberships_repaired`](Self::memberships_repaired))
///     and, since other processes' group sends meanwhile missed those
///     members and nothing can bring them back, each is told: its next
///     receive fails with [`ChannelLayerError::Lost`](estuary_core::ChannelLayerError::Lost) (a session then
///     closes 1013, a code clients reconnect on, or counts the loss under
///     `slow_client = drop`), counted in
///     [`losses_reported`](Self::losses_reported). A group send from this
///     process that finds the key gone still reaches those members.
///   - *The key still lists others, not these members*: they were removed
///     one by one, which is what a `group_discard` from another process (a
///     Django view removing a user from a room) does, and what a Django
///     Channels user expects to stand, as it does under channels_redis. So
///     they are not written back (that would undo the discard); they are
///     forgotten here and told ([`ChannelLayerError::Lost`](estuary_core::ChannelLayerError::Lost)), because the
///     same picture follows a lost key that another member wrote again
///     since. A session then closes 1013 and its consumer, on reconnecting,
///     decides again whether to join. The sample check notices such a
///     removal only when it removed the sample; a group send from this
///     process notices it at once.
///
///   The bound: a gap lasts at most the check interval plus one round trip
///   (less when this process sends to the group meanwhile), and no member
///   misses a message in it without being told.
/// * **This process's queue full** (the process fell behind what Redis
///   hands it). A group message another process sends finds no room and is
///   skipped there (in that sender's [`GroupSendReport::dropped`](estuary_core::GroupSendReport::dropped)). When the
///   sender is an Estuary process, it counts the refusal beside the queue
///   (`<queue key>:refused`); this process's receive task takes the count
///   with its next batch and, since which channels the message was for is
///   not known, tells every channel of this process
///   ([`ChannelLayerError::Lost`](estuary_core::ChannelLayerError::Lost)). A group send from this process that
///   finds its own queue full tells the group's members at once. Not seen:
///   a Django (channels_redis) process's group message refused by a full
///   queue (channels_redis skips it without a trace); size `capacity` so the
///   queue does not fill.
/// * **A key of the wrong type** (someone wrote a string over a queue or a
///   group). Only that key is affected: `group_send` delivers to every other
///   member and counts the poisoned queue's members in
///   [`GroupSendReport::dropped`](estuary_core::GroupSendReport::dropped) and in [`poisoned`](Self::poisoned), with a
///   warning naming the key; `send` to it fails with
///   [`ChannelLayerError::Corrupt`](estuary_core::ChannelLayerError::Corrupt) (a [`WrongType`](crate::WrongType) naming the key), as do
///   `group_send` and `group_add` on a poisoned group key. This process's own
///   queue, if poisoned, is deleted and used again (nobody else writes
///   there), within the membership check (at once when this process's own
///   group send meets it), and every channel of this process is told
///   ([`ChannelLayerError::Lost`](estuary_core::ChannelLayerError::Lost)): what the queue held and what was sent to
///   it meanwhile is gone. A `DEL` of this process's queue, by contrast,
///   cannot be seen: it loses what the queue held at that instant (usually
///   nothing: the receive task keeps it empty), silently.
/// * **A group member no process could have written** (not UTF-8, not a
///   channel name by Django Channels' rule, or scored below zero, at
///   infinity, or more than the group expiry, and at least an hour, ahead
///   of this process's clock: channels_redis scores memberships with the
///   time of `group_add`). `group_send` skips it, delivers to every other
///   member, removes exactly that member from the group, and counts it in
///   [`invalid_members`](Self::invalid_members). A name Django accepts but
///   Estuary cannot address (Unicode letters after the `!`) is skipped and
///   counted, and left in place.
///
/// Each warning these faults log is logged at most once a second per kind,
/// with the number held back since the last one, and says what to do.
///
/// # Flow control, and one round trip per group send
///
/// This process's connections' buffers keep the flow-control rule of
/// [`ChannelLayer`](estuary_core::ChannelLayer): a live connection's buffer
/// may hold up to [`OVERFLOW_FACTOR`](estuary_core::OVERFLOW_FACTOR) times
/// its capacity while the server catches up, and the layer is
/// [`backlogged`](estuary_core::ChannelLayer::backlogged) meanwhile, so
/// sessions stop reading their clients (producers that are clients slow
/// down) instead of members losing messages. This process's own queue in
/// Redis takes the same factor for the group sends this process makes (its
/// receive task drains it into those buffers), and the layer is backlogged
/// too while that queue is deep (the receive task found a full batch
/// waiting), so that this process's producers slow down before the queue's
/// room in Redis runs out; another process's queue
/// keeps `capacity`, and what it refuses is counted in the sender's
/// [`GroupSendReport::dropped`](estuary_core::GroupSendReport::dropped) and
/// told to that process's channels (see the faults below).
///
/// With one host, no encryption and no per-channel capacities, a group
/// send is one script call: it reads the members, records the message
/// (recorded groups) and writes each destination queue's payload in one
/// round trip: the channels_redis form for other processes, the group's
/// name for this process's own queue (its receive task delivers to its own
/// members of the group by its own record). Anything it cannot decide alone
/// (a member no process could have written, a group key gone with this
/// process's members in it) goes to the general path, which reads the
/// members first and writes after (as with several hosts).
///
/// # Presence and history
///
/// The layer tracks presence ([`ChannelLayer::presence`](estuary_core::ChannelLayer::presence))
/// and records the groups its configuration names
/// ([`ChannelLayerConfig::with_history_glob`](estuary_core::ChannelLayerConfig::with_history_glob)),
/// shared by every process on the same Redis and prefix:
///
/// * **Presence** lives in two keys per group on the group's shard
///   (`{prefix}:presence:{group}:c` and `:h`). Each connection's entry
///   lapses [`PresenceConfig::timeout`](estuary_core::PresenceConfig::timeout)
///   after its process last renewed it; every
///   [`PresenceConfig::refresh`](estuary_core::PresenceConfig::refresh) a
///   process renews its own and takes out lapsed ones in the groups it holds
///   presences or members in, announcing the leaves. A process that dies
///   loses its presences within timeout plus refresh (plus the diff
///   interval for the announcement); lists and counts never show a lapsed
///   entry. Transitions are numbered in Redis, so diffs from two processes
///   apply in any order ([`PresenceView`](estuary_core::PresenceView)).
/// * **History** is a stream per recorded group (`{prefix}:history:{group}`,
///   capped with `MAXLEN` at the size, entry ids the offsets) and its epoch
///   and last offset beside it (`:meta`), so that every process records into
///   one order; Redis's clock decides the ttl. When the keys are lost
///   (expired after `meta_ttl`, evicted, flushed, Redis restarted empty), the
///   group starts a new epoch. A group send records before it delivers (in
///   the same script, when it takes one round trip), so a member never sees
///   a message its history lacks; two processes sending at once may deliver
///   in the other order than their offsets (on the general path). Messages sent
///   by a channels_redis process (a Django `group_send`) are delivered and
///   not recorded.
///
/// # Differences from channels_redis
///
/// * Sends to plain channels (no `!`) use the consistent hash on their name,
///   not a round robin, so that Estuary processes find each other's worker
///   queues on a ring. With one host (the usual case) this is the same.
/// * Writes are Lua scripts, so capacity checks are atomic.
/// * `group_send` removes group members no process could have written (see
///   above); channels_redis would fail on a member that is not UTF-8, and
///   keep sending to one scored at infinity for ever.
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
    client: Client,
    conn: ConnectionManager,
}

struct Inner {
    config: RedisConfig,
    shards: Vec<Shard>,
    crypto: Option<Crypto>,
    /// `specific.<uuid>!`: this process's prefix for its channels.
    client_prefix: String,
    local: Mutex<HashMap<ChannelName, Arc<LocalQueue>>>,
    /// Live connections' buffers over their capacity (flow control).
    backlog: Arc<Backlog>,
    plain: Mutex<HashMap<ChannelName, Arc<PlainReceiver>>>,
    /// Group memberships of this process's channels, and when they were written.
    memberships: Mutex<Registry>,
    /// The number of the current or last outage, times two, plus one while
    /// healthy: the receive loop starts an outage, the restoration of that
    /// outage (and no older one) ends it.
    health: AtomicU64,
    /// Bits of the last score this process wrote: scores only move forward,
    /// so one sender's messages keep their order even if the clock steps back.
    last_score: AtomicU64,
    dropped: AtomicU64,
    undecodable: AtomicU64,
    /// Members skipped because their queue key held another type.
    poisoned: AtomicU64,
    /// Sends and group sends that failed (or reached only some hosts)
    /// because Redis could not be reached.
    failed_sends: AtomicU64,
    /// Memberships written back after their group key lost them.
    repaired: AtomicU64,
    /// Group members skipped because no process could have written them
    /// (or Estuary cannot address them).
    invalid_members: AtomicU64,
    /// Losses reported to this process's channels because Redis lost their
    /// group membership or this process's queue.
    losses_reported: AtomicU64,
    /// This process's presences, renewed every presence refresh.
    held: Mutex<Held>,
    /// Presence changes waiting to be announced.
    diffs: PresenceCoalescer,
    shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Receives on a plain channel (a worker queue): one blocking pop at a time,
/// into a buffer, so a cancelled receive loses nothing.
struct PlainReceiver {
    queue: LocalQueue,
    fetching: AtomicBool,
    /// Woken when a fetch has put its message in the buffer: receivers that
    /// did not get it start the next fetch (several receivers in this
    /// process may wait on one channel: workers).
    fetched: tokio::sync::Notify,
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
        let crypto = Crypto::for_layer(&config.encryption_keys, Some(ttl), config.serializer_format);
        let client_prefix = format!("specific.{}!", uuid::Uuid::new_v4().simple());
        let inner = Arc::new(Inner {
            shards,
            crypto,
            client_prefix,
            local: Mutex::new(HashMap::new()),
            backlog: Arc::default(),
            plain: Mutex::new(HashMap::new()),
            memberships: Mutex::new(Registry::default()),
            health: AtomicU64::new(1),
            last_score: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            poisoned: AtomicU64::new(0),
            failed_sends: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
            invalid_members: AtomicU64::new(0),
            losses_reported: AtomicU64::new(0),
            held: Mutex::default(),
            diffs: PresenceCoalescer::new(config.layer.presence().interval()),
            shutdown: CancellationToken::new(),
            config,
        });
        let key = inner.channel_key(&inner.client_prefix);
        let shard = &inner.shards[inner.shard(&inner.client_prefix)];
        let blocking = ConnectionManager::new_lazy_with_config(shard.client.clone(), inner.blocking_config())
            .map_err(|source| RedisLayerError::invalid_url(&inner.config.hosts[0], source))?;
        tokio::spawn(receive_loop(
            Arc::downgrade(&inner),
            blocking,
            key,
            inner.shutdown.clone(),
        ));
        tokio::spawn(membership_loop(Arc::downgrade(&inner), inner.shutdown.clone()));
        tokio::spawn(presence_loop(Arc::downgrade(&inner), inner.shutdown.clone()));
        Ok(Self { inner })
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// False while the receive task cannot reach Redis, and after Redis is
    /// back until this process's group memberships are written again.
    pub fn is_healthy(&self) -> bool {
        self.inner.is_healthy()
    }

    /// Times this process lost Redis (its receive task could not reach it)
    /// since the layer was made; each was followed by a reconnection and the
    /// write-back of this process's memberships once Redis answered again.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), estuary_redis::RedisLayerError> {
    /// use estuary_redis::{RedisChannelLayer, RedisConfig};
    ///
    /// let layer = RedisChannelLayer::new(RedisConfig::new(["redis://127.0.0.1:6379/0"]))?;
    /// assert_eq!(layer.outages(), 0);
    /// # Ok(()) }
    /// ```
    pub fn outages(&self) -> u64 {
        self.inner.outage()
    }

    /// Sends and group sends that failed because Redis could not be
    /// reached (each returned an error, or for a group send reaching only
    /// some hosts, counted the others' members as dropped).
    pub fn failed_sends(&self) -> u64 {
        self.inner.failed_sends.load(Ordering::Relaxed)
    }

    /// Members skipped by sends and group sends because their queue key in
    /// Redis held another type than a sorted set (someone wrote over it).
    pub fn poisoned(&self) -> u64 {
        self.inner.poisoned.load(Ordering::Relaxed)
    }

    /// Memberships of this process written back because their group key had
    /// lost them (eviction, `DEL`, a restart); see
    /// [`RedisConfig::membership_check`].
    pub fn memberships_repaired(&self) -> u64 {
        self.inner.repaired.load(Ordering::Relaxed)
    }

    /// Group members skipped by group sends because no process could have
    /// written them: not UTF-8, not a channel name, or scored where no clock
    /// is (negative, infinite, far ahead); these are also removed from the
    /// group. Also counts names Django accepts but Estuary cannot address
    /// (non-ASCII letters after the `!`), which are left in place.
    pub fn invalid_members(&self) -> u64 {
        self.inner.invalid_members.load(Ordering::Relaxed)
    }

    /// How many times one of this process's channels was told
    /// ([`ChannelLayerError::Lost`](estuary_core::ChannelLayerError::Lost) on its next receive) that messages for
    /// it may have been lost because Redis lost its group membership or
    /// this process's queue.
    pub fn losses_reported(&self) -> u64 {
        self.inner.losses_reported.load(Ordering::Relaxed)
    }

    /// How long the layer has been backlogged in all (flow control: a live
    /// connection's buffer held more than its capacity, or this process's
    /// queue in Redis was deep, so sessions stopped reading their clients),
    /// the current episode included; and how many times it became so.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), estuary_redis::RedisLayerError> {
    /// use estuary_redis::{RedisChannelLayer, RedisConfig};
    ///
    /// let layer = RedisChannelLayer::new(RedisConfig::new(["redis://127.0.0.1:6379/0"]))?;
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

    fn is_healthy(&self) -> bool {
        self.health.load(Ordering::Acquire) & 1 == 1
    }

    /// The number of the current (or last) outage.
    fn outage(&self) -> u64 {
        self.health.load(Ordering::Acquire) >> 1
    }

    /// Starts a new outage: unhealthy until it is restored. Returns its number.
    fn mark_down(&self) -> u64 {
        let previous = self
            .health
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(((h >> 1).wrapping_add(1)) << 1)
            })
            .unwrap_or_else(|h| h);
        (previous >> 1).wrapping_add(1)
    }

    /// Ends outage `outage` (healthy again) unless a newer one began.
    fn mark_restored(&self, outage: u64) -> bool {
        self.health
            .compare_exchange(
                outage << 1,
                (outage << 1) | 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Counts a send that Redis could not take, when that was unavailability.
    fn count_failure(&self, error: &ChannelLayerError) {
        if matches!(error, ChannelLayerError::Unavailable(_)) {
            self.failed_sends.fetch_add(1, Ordering::Relaxed);
        }
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
}
