//! The channel layer: how consumers and processes talk to each other.
//!
//! The delivery contract every layer keeps is documented on [`ChannelLayer`].

mod config;
mod handle;
pub mod history;
mod memory;
pub mod presence;
#[cfg(feature = "serde")]
mod settings;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

pub use config::ChannelLayerConfig;
pub use handle::ChannelLayerHandle;
pub use history::{
    EPOCH_LEN, Epoch, History, HistoryConfig, HistoryError, InvalidEpoch, POSITION_KEY, Recovered, Recovery,
    StreamPosition, Unrecoverable,
};
pub use memory::{InMemoryChannelLayer, REAP_INTERVAL};
pub use presence::{
    MAX_PRESENCE_KEY_LEN, MAX_PRESENCE_META_BYTES, PRESENCE_DIFF, Presence, PresenceChange,
    PresenceCoalescer, PresenceConfig, PresenceCount, PresenceDiff, PresenceEntry, PresenceError,
    PresenceJoined, PresenceKey, PresenceList, PresenceMeta, PresenceTransition, PresenceView,
};
#[cfg(feature = "serde")]
pub use settings::{HistorySettings, HistorySettingsError, PresenceSettings, PresenceSettingsError};

use crate::message::Message;
use crate::names::{ChannelName, GroupName};

/// A boxed error from a layer's backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The future an object-safe layer capability ([`Presence`], [`History`])
/// returns.
///
/// ```
/// use estuary_core::LayerFuture;
///
/// fn answer<'a>(n: &'a u32) -> LayerFuture<'a, u32> {
///     Box::pin(async move { *n + 1 })
/// }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert_eq!(answer(&41).await, 42);
/// # });
/// ```
pub type LayerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A channel layer failed.
///
/// Only [`Unavailable`](Self::Unavailable) is worth retrying; a receive that
/// fails with [`ChannelClosed`](Self::ChannelClosed) will never succeed again.
///
/// ```
/// use estuary_core::{ChannelLayer, ChannelLayerError, InMemoryChannelLayer};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let layer = InMemoryChannelLayer::default();
/// let me = layer.new_channel().await.unwrap();
/// layer.close_channel(&me).await;
///
/// let err = layer.receive(&me).await.unwrap_err();
/// assert!(matches!(err, ChannelLayerError::ChannelClosed(ref name) if *name == me));
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ChannelLayerError {
    /// The backend (for example Redis) cannot be reached; the operation may
    /// succeed when it is back.
    #[error("channel layer backend unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The channel was closed with [`ChannelLayer::close_channel`]: pending
    /// and later receives on it fail with this.
    #[error("channel {0} is closed")]
    ChannelClosed(ChannelName),
    /// The process-specific channel belongs to another process: only its own
    /// process can receive on it.
    #[error("channel {0} belongs to another process")]
    ForeignChannel(ChannelName),
    /// A stored message could not be decoded.
    #[error("undecodable message in channel layer: {0}")]
    Corrupt(#[source] BoxError),
    /// Messages for this process-specific channel (a connection's own) were
    /// dropped because it was full: its consumer fell behind. Reported once
    /// per loss, ahead of the messages still queued, by
    /// [`ChannelLayer::receive`] and [`ChannelLayer::receiver`] on that
    /// channel: the session then applies its slow-client policy (close
    /// 1013, or count the loss), so that no loss goes unnoticed. Worker
    /// channels never report it (their drops are counted by the layer).
    /// A layer that stopped receiving for the channel for a while (the
    /// Redis pub/sub layer, when a subscriber connection is lost) reports
    /// that the same way, with a count of 1: how many it missed is unknown.
    #[error(
        "{count} messages for this channel were dropped: it was full, or the layer stopped receiving for it"
    )]
    Lost {
        /// Messages dropped since the last report.
        count: u64,
    },
    /// The layer holds as many channels as it may
    /// ([`ChannelLayerConfig::max_channels`]): a send, receive or group add
    /// that would make another one is refused.
    #[error("too many channels: the layer holds {limit}")]
    TooManyChannels {
        /// The limit.
        limit: usize,
    },
    /// The layer holds as many bytes of messages as it may
    /// ([`ChannelLayerConfig::max_bytes`]): the send or group send is
    /// refused, whole, until members take what they hold or it expires.
    #[error(
        "the channel layer is full: it holds {limit} bytes of undelivered messages (max_bytes); try again later"
    )]
    TooManyBytes {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// A [`ChannelLayer::send`] failed; the message is handed back.
///
/// ```
/// use estuary_core::{ChannelLayer, ChannelLayerConfig, ChannelName, InMemoryChannelLayer, Message};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(1));
/// let worker = ChannelName::new("emails").unwrap();
/// let job = Message::from_json(&serde_json::json!({"type": "email.send"})).unwrap();
/// layer.send(&worker, job.clone()).await.unwrap();
///
/// match layer.send(&worker, job).await {
///     Ok(()) => unreachable!("the channel holds one message"),
///     Err(e) if e.is_full() => {
///         // Take the message back, to retry later or store elsewhere.
///         let job = e.into_message();
///         assert_eq!(job.message_type(), "email.send");
///     }
///     Err(e) => panic!("backend failed: {e}"),
/// }
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The channel holds `capacity` unread messages already (Channels' `ChannelFull`).
    #[error("channel {channel} is full ({capacity} messages)")]
    Full {
        /// The full channel.
        channel: ChannelName,
        /// Its capacity.
        capacity: usize,
        /// The message that was not sent.
        message: Message,
    },
    /// The channel layer failed (its backend is unreachable, for one).
    #[error("send to {channel} failed: {error}")]
    Backend {
        /// The destination channel.
        channel: ChannelName,
        /// What went wrong.
        #[source]
        error: ChannelLayerError,
        /// The message that was not sent.
        message: Message,
    },
}

impl SendError {
    /// Takes back the message that was not sent.
    pub fn into_message(self) -> Message {
        match self {
            SendError::Full { message, .. } | SendError::Backend { message, .. } => message,
        }
    }

    /// True when the channel was full.
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full { .. })
    }
}

/// What a [`ChannelLayer::group_send`] did.
///
/// ```
/// use estuary_core::{
///     ChannelLayer, ChannelLayerConfig, GroupName, GroupSendReport, InMemoryChannelLayer, Message,
/// };
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(1));
/// let room = GroupName::new("room").unwrap();
/// let (a, b) = (layer.new_channel().await.unwrap(), layer.new_channel().await.unwrap());
/// layer.group_add(&room, &a).await.unwrap();
/// layer.group_add(&room, &b).await.unwrap();
///
/// let hello = Message::from_json(&serde_json::json!({"type": "hello"})).unwrap();
/// layer.send(&a, hello.clone()).await.unwrap(); // `a` is now full
/// let report = layer.group_send(&room, hello).await.unwrap();
/// assert_eq!(report, GroupSendReport { delivered: 1, dropped: 1, position: None });
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSendReport {
    /// Members (or, for a layer that stores one queue per process, queues) the
    /// message was stored for.
    pub delivered: usize,
    /// Members skipped because their channel was full.
    pub dropped: usize,
    /// The message's position when the group is recorded (see
    /// [`ChannelLayerConfig::with_history_glob`]); `None` otherwise.
    pub position: Option<StreamPosition>,
}

/// How many times its capacity a [`ReceiverState::Live`] channel may hold
/// while the server catches up (see the flow-control rule on [`ChannelLayer`]).
pub const OVERFLOW_FACTOR: usize = 4;

/// How the receiver of a channel is doing, as its session tells the layer
/// (see the flow-control rule on [`ChannelLayer`]).
///
/// ```
/// use estuary_core::ReceiverState;
///
/// assert_eq!(ReceiverState::default(), ReceiverState::Detached);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReceiverState {
    /// No session receives on it (a worker channel, or one whose connection
    /// is still opening): a full channel is skipped by group sends.
    #[default]
    Detached,
    /// A session receives on it and its client keeps up: when the channel is
    /// full, group sends store beyond capacity and the layer is backlogged.
    Live,
    /// A session receives on it but its client stopped reading (the
    /// session's outbound queue is full): a full channel is skipped, and the
    /// session's slow-client policy deals with the client.
    Stalled,
}

/// A channel layer, with the verbs of Django Channels' `channel_layer`.
///
/// Implement this trait for a new backend; hold a [`ChannelLayerHandle`] to
/// use one without naming its type.
///
/// # The delivery contract
///
/// Every implementation keeps these promises; the conformance suite in
/// `estuary-testing` checks them for each one.
///
/// * **At most once.** A message is delivered to a channel's receiver at most
///   once. Layers never retry behind your back.
/// * **Order.** Messages from one sender to one channel are received in the
///   order they were sent. Across senders there is no order. The
///   [`InMemoryChannelLayer`] also gives each group one order: every member
///   receives the group's messages in the same order.
/// * **Capacity.** A channel holds at most [`ChannelLayerConfig::capacity_for`]
///   unread messages. [`send`](ChannelLayer::send) to a full channel fails with
///   [`SendError::Full`] and hands the message back.
///   [`group_send`](ChannelLayer::group_send) skips full members, counts them
///   in [`GroupSendReport::dropped`], and still delivers to the others.
///   A layer that passes a process's messages through one shared queue (the
///   Redis layer) may hold up to twice the capacity for a process-specific
///   channel: the shared queue plus the channel's own buffer. When that buffer
///   is full, the layer drops the message and counts it instead of returning
///   `Full` (so does the Redis pub/sub layer, which stores nothing in Redis).
/// * **Flow control** (optional; the [`InMemoryChannelLayer`] and the Redis
///   core layer keep it, for the channels of their own process; the Redis
///   pub/sub layer keeps the plain capacity rule). A session tells the layer
///   how its receiver is doing with [`set_receiver`](ChannelLayer::set_receiver).
///   A group send to a [`ReceiverState::Live`] member that is merely behind
///   (its connection reads, the server has not caught up) does not skip it:
///   the layer stores up to [`OVERFLOW_FACTOR`] times the capacity and is
///   [`backlogged`](ChannelLayer::backlogged) until every such member is back
///   to half its capacity; sessions stop reading their clients meanwhile
///   (all of them: the server as a whole is behind), so producers that are
///   clients slow down instead of messages being lost. Producers that are not
///   clients (an HTTP push, a background task) are not slowed: past the
///   overflow limit their messages are dropped, counted and logged. A
///   [`ReceiverState::Stalled`] member (its client stopped reading) and a
///   [`ReceiverState::Detached`] one (no session) are skipped when full, as
///   above; a member at the overflow limit too, counted and logged.
/// * **Expiry.** A message not received within [`ChannelLayerConfig::expiry`]
///   is discarded and never delivered. A group membership lapses after
///   [`ChannelLayerConfig::group_expiry`] unless
///   [`group_add`](ChannelLayer::group_add) renews it.
/// * **Closing is final.** After [`close_channel`](ChannelLayer::close_channel),
///   pending and later receives on the channel fail with
///   [`ChannelLayerError::ChannelClosed`], and messages sent to it later are
///   dropped or expire unread. The channel is never made again: a new
///   connection gets a new name from [`new_channel`](ChannelLayer::new_channel).
/// * **Named channels are work queues.** Any valid name without a `!`
///   (`"thumbnails"`) is a named channel: it needs no
///   [`new_channel`](ChannelLayer::new_channel), is made by the first send or
///   receive, and any number of receivers, in this process or others sharing
///   the backend, may [`receive`](ChannelLayer::receive) on it at once. They
///   compete: each message goes to one of them, never to two (the Redis
///   layer keeps it as channels_redis does, one sorted set
///   `{prefix}{channel}` popped with `BZPOPMIN`, so Python workers take part
///   too). A receiver takes a message only when it asks for one (the Redis
///   layer pops one at a time), so an idle or busy process does not hoard
///   its peers' work. This is what [`Worker`](crate::Worker)s consume.
///   The Redis pub/sub layer is the exception across processes: it stores
///   nothing, and every process receiving on the channel gets its own copy
///   (as with channels_redis's pub/sub layer); within one process its
///   receivers compete too. Process-specific names (`specific.<process>!<id>`) are the opposite:
///   one receiver, in the process that made them
///   ([`ChannelLayerError::ForeignChannel`] elsewhere).
/// * **Receive is cancel-safe.** Dropping a pending [`receive`](ChannelLayer::receive)
///   future loses no message: use it in `tokio::select!`.
/// * **Names only.** A layer knows channel and group names and messages; it
///   never sees a socket.
/// * **Optional capabilities.** A layer may track presence
///   ([`presence`](ChannelLayer::presence)) and record groups' history
///   ([`history`](ChannelLayer::history)); a recorded group's
///   [`group_send`](ChannelLayer::group_send) delivers the message with its
///   position. A layer that tracks presence leaves a channel's presences
///   when the channel is closed.
///
/// # Example
///
/// ```
/// use estuary_core::{ChannelLayer, GroupName, InMemoryChannelLayer, Message};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let layer = InMemoryChannelLayer::default();
/// let me = layer.new_channel().await.unwrap();
/// let room = GroupName::new("chat_lobby").unwrap();
/// layer.group_add(&room, &me).await.unwrap();
///
/// let msg = Message::from_json(&serde_json::json!({"type": "chat.message", "message": "hi"})).unwrap();
/// let report = layer.group_send(&room, msg).await.unwrap();
/// assert_eq!(report.delivered, 1);
///
/// let got = layer.receive(&me).await.unwrap();
/// assert_eq!(got.message_type(), "chat.message");
/// # });
/// ```
pub trait ChannelLayer: Send + Sync + 'static {
    /// Makes a new process-specific channel name (`specific.<process>!<random>`),
    /// unique across every process sharing the layer.
    fn new_channel(&self) -> impl Future<Output = Result<ChannelName, ChannelLayerError>> + Send;

    /// Sends `message` to `channel`. Fails with [`SendError::Full`] when the
    /// channel is at capacity; the error hands the message back.
    fn send(
        &self,
        channel: &ChannelName,
        message: Message,
    ) -> impl Future<Output = Result<(), SendError>> + Send;

    /// Waits for the next message on `channel`. Cancel-safe. Expired messages
    /// are skipped.
    fn receive(
        &self,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<Message, ChannelLayerError>> + Send;

    /// Adds `channel` to `group`, or renews its membership.
    fn group_add(
        &self,
        group: &GroupName,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<(), ChannelLayerError>> + Send;

    /// Removes `channel` from `group`; removing a non-member is not an error.
    fn group_discard(
        &self,
        group: &GroupName,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<(), ChannelLayerError>> + Send;

    /// Sends `message` to every current member of `group`, skipping full ones
    /// (a live member that is merely behind is not full until the overflow
    /// limit: see the flow-control rule above). When the layer records
    /// `group` ([`history`](ChannelLayer::history)), the message is kept
    /// and delivered with its position under [`POSITION_KEY`], and the
    /// report has the position.
    fn group_send(
        &self,
        group: &GroupName,
        message: Message,
    ) -> impl Future<Output = Result<GroupSendReport, ChannelLayerError>> + Send;

    /// Removes every channel, message and group this layer stores (Channels'
    /// `flush`). Meant for tests; on a shared backend it affects every process
    /// using the same prefix.
    fn flush(&self) -> impl Future<Output = Result<(), ChannelLayerError>> + Send;

    /// False while the layer knows its backend is unreachable (for health
    /// checks; operations then fail with [`ChannelLayerError::Unavailable`]).
    fn is_available(&self) -> bool {
        true
    }

    /// Says that nobody will receive on `channel` again (its connection ended):
    /// the layer frees what it holds for it, pending and later receives fail
    /// with [`ChannelLayerError::ChannelClosed`], and messages sent to it later
    /// are dropped or expire unread. The channel is never made again.
    ///
    /// ```
    /// use estuary_core::{ChannelLayer, InMemoryChannelLayer, Message};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let layer = InMemoryChannelLayer::default();
    /// let gone = layer.new_channel().await.unwrap();
    /// layer.close_channel(&gone).await;
    ///
    /// // A late send is not an error for the sender; the message is dropped.
    /// let late = Message::from_json(&serde_json::json!({"type": "late"})).unwrap();
    /// assert!(layer.send(&gone, late).await.is_ok());
    /// assert!(layer.receive(&gone).await.is_err());
    /// # });
    /// ```
    fn close_channel(&self, channel: &ChannelName) -> impl Future<Output = ()> + Send {
        let _ = channel;
        async {}
    }

    /// Tells the layer how the receiver of `channel` is doing (flow control;
    /// the default ignores it). Cheap: sessions call it on every change.
    fn set_receiver(&self, channel: &ChannelName, state: ReceiverState) {
        let _ = (channel, state);
    }

    /// True while a [`ReceiverState::Live`] channel holds more than its
    /// capacity: sessions stop reading their clients until
    /// [`relieved`](ChannelLayer::relieved). Always false by default.
    fn backlogged(&self) -> bool {
        false
    }

    /// Whether group sends started one after the other from one task (each
    /// future polled once before the next is made) reach the backend in
    /// that order, so that a connection may keep several in flight
    /// ([`Context::group_send_pipelined`](crate::Context::group_send_pipelined))
    /// and its members still see its messages in the order sent. A layer
    /// whose `group_send` hands its command to one ordered connection on
    /// its first poll says true. False by default: pipelined sends then run
    /// one at a time.
    fn pipelines_group_sends(&self) -> bool {
        false
    }

    /// Completes once the layer is not [`backlogged`](ChannelLayer::backlogged)
    /// (at once when it is not).
    fn relieved(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The layer's presence tracking, if it has it (`None` by default): see
    /// [`Presence`].
    ///
    /// ```
    /// use estuary_core::{ChannelLayer, ChannelLayerHandle, InMemoryChannelLayer};
    ///
    /// let layer = ChannelLayerHandle::new(InMemoryChannelLayer::default());
    /// assert!(layer.presence().is_some());
    /// ```
    fn presence(&self) -> Option<&dyn Presence> {
        None
    }

    /// The layer's group history, if it keeps one (`None` by default): see
    /// [`History`].
    ///
    /// ```
    /// use estuary_core::{ChannelLayer, GroupName, InMemoryChannelLayer};
    ///
    /// let layer = InMemoryChannelLayer::default();
    /// let history = layer.history().expect("the in-memory layer can record");
    /// // Nothing is recorded until a pattern is configured.
    /// assert!(!history.is_recorded(&GroupName::new("chat_lobby").unwrap()));
    /// ```
    fn history(&self) -> Option<&dyn History> {
        None
    }

    /// A receiver bound to `channel`, for a caller that receives on it for a
    /// long time (a session, for its connection's life): the same messages
    /// and errors as [`receive`](ChannelLayer::receive), under the same
    /// contract, without finding the channel again for every message. The
    /// default receives through `receive`; the in-memory layer hands out the
    /// channel's queue itself.
    ///
    /// ```
    /// use estuary_core::{ChannelLayer, InMemoryChannelLayer, Message};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let layer = InMemoryChannelLayer::default();
    /// let me = layer.new_channel().await.unwrap();
    /// let mut receiver = layer.receiver(&me);
    /// layer.send(&me, Message::from_json(&serde_json::json!({"type": "hello"})).unwrap()).await.unwrap();
    /// let got = std::future::poll_fn(|cx| receiver.poll_receive(cx)).await.unwrap();
    /// assert_eq!(got.message_type(), "hello");
    /// # });
    /// ```
    fn receiver<'a>(&'a self, channel: &'a ChannelName) -> Box<dyn ChannelReceiver + 'a> {
        Box::new(ReceiveLoop {
            layer: self,
            channel,
            pending: None,
        })
    }
}

/// A receiver bound to one channel (see [`ChannelLayer::receiver`]).
pub trait ChannelReceiver: Send {
    /// The next message on the channel, or the channel's failure. Pending
    /// until there is one, with `cx`'s waker registered. Cancel-safe: a
    /// message is taken only when this returns it.
    fn poll_receive(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<Message, ChannelLayerError>>;
}

pub(crate) type ReceiveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Message, ChannelLayerError>> + Send + 'a>>;

/// The default [`ChannelReceiver`]: one [`ChannelLayer::receive`] after another.
pub(crate) struct ReceiveLoop<'a, L: ?Sized> {
    pub(crate) layer: &'a L,
    pub(crate) channel: &'a ChannelName,
    pub(crate) pending: Option<ReceiveFuture<'a>>,
}

impl<L: ChannelLayer + ?Sized> ChannelReceiver for ReceiveLoop<'_, L> {
    fn poll_receive(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<Message, ChannelLayerError>> {
        let (layer, channel) = (self.layer, self.channel);
        let pending = self
            .pending
            .get_or_insert_with(|| Box::pin(layer.receive(channel)));
        let received = pending.as_mut().poll(cx);
        if received.is_ready() {
            self.pending = None;
        }
        received
    }
}
