//! The channel layer: how consumers and processes talk to each other.
//!
//! # The delivery contract
//!
//! Every [`ChannelLayer`] implementation keeps these promises; the conformance
//! suite in `estuary-testing` checks them for each one.
//!
//! * **At most once.** A message is delivered to a channel's receiver at most
//!   once. Layers never retry behind your back.
//! * **Order.** Messages from one sender to one channel are received in the
//!   order they were sent. Across senders there is no order.
//! * **Capacity.** A channel holds at most [`ChannelLayerConfig::capacity_for`] unread
//!   messages. [`send`](ChannelLayer::send) to a full channel fails with
//!   [`SendError::Full`] and hands the message back. [`group_send`](ChannelLayer::group_send)
//!   skips full members, counts them in [`GroupSendReport::dropped`], and still
//!   delivers to the others.
//! * **Expiry.** A message not received within [`ChannelLayerConfig::expiry`] is
//!   discarded and never delivered. A group membership lapses after
//!   [`ChannelLayerConfig::group_expiry`] unless [`group_add`](ChannelLayer::group_add) renews it.
//! * **Receive is cancel-safe.** Dropping a pending [`receive`](ChannelLayer::receive)
//!   future loses no message: use it in `tokio::select!`.
//! * **Names only.** A layer knows channel and group names and messages; it
//!   never sees a socket.

mod config;
mod handle;
mod memory;

use std::future::Future;

pub use config::ChannelLayerConfig;
pub use handle::ChannelLayerHandle;
pub use memory::InMemoryChannelLayer;

use crate::message::Message;
use crate::names::{ChannelName, GroupName};

/// A boxed error from a layer's backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A channel layer failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelLayerError {
    /// The backend (for example Redis) cannot be reached; the operation may
    /// succeed when it is back.
    #[error("channel layer backend unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The channel was closed with [`ChannelLayer::close_channel`] while receiving.
    #[error("channel {0} is closed")]
    ChannelClosed(ChannelName),
    /// The process-specific channel belongs to another process: only its own
    /// process can receive on it.
    #[error("channel {0} belongs to another process")]
    ForeignChannel(ChannelName),
    /// A stored message could not be decoded.
    #[error("undecodable message in channel layer: {0}")]
    Corrupt(#[source] BoxError),
}

/// A [`ChannelLayer::send`] failed; the message is handed back.
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSendReport {
    /// Members (or, for a layer that stores one queue per process, queues) the
    /// message was stored for.
    pub delivered: usize,
    /// Members skipped because their channel was full.
    pub dropped: usize,
}

/// A channel layer, with the verbs of Django Channels' `channel_layer`.
///
/// See the [module documentation](self) for the delivery contract every
/// implementation keeps. Implement this trait for a new backend; hold a
/// [`ChannelLayerHandle`] to use one without naming its type.
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

    /// Sends `message` to every current member of `group`, skipping full ones.
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
    /// the layer frees what it holds for it, and pending receives end with
    /// [`ChannelLayerError::ChannelClosed`]. Messages sent to it later expire unread.
    fn close_channel(&self, channel: &ChannelName) -> impl Future<Output = ()> + Send {
        let _ = channel;
        async {}
    }
}
