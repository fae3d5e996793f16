//! History and recovery: what a group said while a client was away.
//!
//! # The model
//!
//! History is opt-in, per group name pattern
//! ([`ChannelLayerConfig::with_history_glob`](crate::ChannelLayerConfig::with_history_glob),
//! for example `chat_*`), each pattern with a [`HistoryConfig`]: how many
//! messages a group keeps (`size`), how long each is kept (`ttl`) and how
//! long the group's position survives a silence (`meta_ttl`).
//!
//! * **Recording is a group send.** A [`group_send`](crate::ChannelLayer::group_send)
//!   to a recorded group gives the message the group's next *offset*,
//!   stores it, and delivers it to the members with its position in the
//!   message under [`POSITION_KEY`] (`"__position__"`: `{"offset": 17,
//!   "epoch": "k3vQ9cXa"}`); the report says the position too
//!   ([`GroupSendReport::position`](crate::GroupSendReport::position)).
//!   Every member and the history see the same bytes.
//! * **A position is an offset within an epoch.** Offsets count the
//!   group's recorded messages from 1, with no gap. The [`Epoch`] names one
//!   unbroken run of offsets: when the history is lost (the in-memory
//!   layer's process restarts, Redis loses or expires the keys), the next
//!   message starts a new epoch, so a position from before can never be
//!   mistaken for one after.
//! * **Recovery is all or nothing.** [`History::history_since`] with the last
//!   position a client saw returns either every message after it, in order
//!   ([`Recovery::Recovered`]), or [`Recovery::Unrecoverable`] with the
//!   reason ([`Unrecoverable::EpochChanged`], [`Unrecoverable::TooOld`]:
//!   the next message it needs was dropped for `size` or `ttl`) and the
//!   current position to start again from. Never a part with a silent hole.
//! * **Recover without duplicates.** Join the group first, then read
//!   history since the client's position: live messages that arrive
//!   meanwhile carry offsets the recovery already returned; skip those at or
//!   below the recovered position.
//! * **Groups that record nothing pay nothing.** With no pattern configured
//!   a group send checks one empty list; with patterns, one match against a
//!   precompiled set.
//!
//! Live delivery keeps the layer's own order rules: on the in-memory layer a
//! group's members receive its messages in offset order; across processes
//! (Redis) two senders' messages may reach a member in either order while
//! the history keeps one. A client that must never miss one keeps, as its
//! position, the highest offset below which it received every message
//! (not merely the highest it received), and skips offsets it already has. Messages that do not go through a recording
//! layer's `group_send` (a Django process's channels_redis `group_send`
//! into a shared Redis) are delivered live and not recorded.
//!
//! ```
//! use std::time::Duration;
//! use estuary_core::{
//!     ChannelLayer, ChannelLayerConfig, GroupName, HistoryConfig, InMemoryChannelLayer, Message,
//!     Recovery,
//! };
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let config = ChannelLayerConfig::default()
//!     .with_history_glob("chat_*", HistoryConfig::new(100, Duration::from_secs(300)))
//!     .unwrap();
//! let layer = InMemoryChannelLayer::new(config);
//! let history = layer.history().expect("the in-memory layer records");
//! let room = GroupName::new("chat_lobby").unwrap();
//!
//! let seen = history.history_position(&room).await.unwrap();
//! for n in 1..=3 {
//!     let msg = Message::from_json(&serde_json::json!({"type": "chat.message", "n": n})).unwrap();
//!     let report = layer.group_send(&room, msg).await.unwrap();
//!     assert_eq!(report.position.unwrap().offset, seen.offset + n);
//! }
//! match history.history_since(&room, seen).await.unwrap() {
//!     Recovery::Recovered(missed) => {
//!         assert_eq!(missed.messages.len(), 3);
//!         assert_eq!(missed.messages[0].position().unwrap().offset, 1);
//!         assert_eq!(missed.position.offset, 3);
//!     }
//!     Recovery::Unrecoverable { reason, .. } => panic!("{reason}"),
//! }
//! # });
//! ```

use std::time::Duration;

use super::{ChannelLayerError, LayerFuture};
use crate::message::Message;
use crate::names::GroupName;

pub use crate::message::POSITION_KEY;
pub use crate::position::{EPOCH_LEN, Epoch, InvalidEpoch, StreamPosition};

/// How one pattern of groups is recorded.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::HistoryConfig;
///
/// let config = HistoryConfig::new(500, Duration::from_secs(600));
/// assert_eq!(config.size(), 500);
/// assert_eq!(config.ttl(), Duration::from_secs(600));
/// assert_eq!(config.meta_ttl(), Duration::from_secs(86_400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    size: usize,
    ttl: Duration,
    meta_ttl: Duration,
}

impl HistoryConfig {
    /// Keeps the last `size` messages of each group (at least 1), each for
    /// `ttl`; the group's position survives a silence of a day (see
    /// [`with_meta_ttl`](Self::with_meta_ttl)).
    pub fn new(size: usize, ttl: Duration) -> Self {
        Self {
            size: size.max(1),
            ttl,
            meta_ttl: Duration::from_secs(86_400).max(ttl),
        }
    }

    /// How many messages a group keeps: recording one more drops the oldest.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How long a message is kept after it was recorded.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long a group's epoch and last offset are kept after its last
    /// message (at least `ttl`): a client that saw everything and comes
    /// back within it recovers nothing, successfully; after it, the group
    /// starts a new epoch and the client is told it cannot recover.
    pub fn meta_ttl(&self) -> Duration {
        self.meta_ttl
    }

    /// Sets [`meta_ttl`](Self::meta_ttl) (raised to `ttl` if shorter).
    pub fn with_meta_ttl(mut self, meta_ttl: Duration) -> Self {
        self.meta_ttl = meta_ttl.max(self.ttl);
        self
    }
}

/// What a client gets back from [`History::history_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Every message after the position asked for, in order.
    Recovered(Recovered),
    /// Some message after the position asked for is gone: nothing is
    /// returned rather than a part with a hole.
    Unrecoverable {
        /// Why.
        reason: Unrecoverable,
        /// The group's current position, to go on from.
        position: StreamPosition,
    },
}

/// Messages read from a group's history, in offset order, each with its
/// position under [`POSITION_KEY`], and the group's position when they
/// were read (the last message's, or the position asked for when nothing
/// was missed).
///
/// ```
/// use estuary_core::{Epoch, Recovered, StreamPosition};
///
/// let nothing = Recovered { messages: Vec::new(), position: StreamPosition::new(0, Epoch::random()) };
/// assert!(nothing.messages.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
    /// The group's position after them.
    pub position: StreamPosition,
}

/// Why a recovery is impossible.
///
/// ```
/// use estuary_core::Unrecoverable;
///
/// assert_eq!(Unrecoverable::TooOld.to_string(), "the missed messages are older than the history keeps");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unrecoverable {
    /// The position is from another epoch (the history was lost since), or
    /// ahead of anything this epoch recorded.
    #[error("the history was lost since that position (new epoch)")]
    EpochChanged,
    /// The first message after the position was dropped (the group kept
    /// its last `size` messages, or it passed its `ttl`).
    #[error("the missed messages are older than the history keeps")]
    TooOld,
}

/// A history operation failed.
///
/// ```
/// use estuary_core::{GroupName, HistoryError};
///
/// let e = HistoryError::NotRecorded(GroupName::new("lobby").unwrap());
/// assert!(e.to_string().contains("lobby"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The group matches no history pattern of the layer's configuration.
    #[error("group {0} is not recorded: no history pattern of the layer matches it")]
    NotRecorded(GroupName),
    /// The layer keeps no history at all.
    #[error("this channel layer keeps no history")]
    Unsupported,
    /// The layer's backend failed.
    #[error(transparent)]
    Layer(#[from] ChannelLayerError),
}

/// A layer that records the messages of some groups: the optional history
/// capability of a [`ChannelLayer`](crate::ChannelLayer), reached through
/// [`ChannelLayer::history`](crate::ChannelLayer::history). See the
/// [module](self) for the model.
///
/// Recording itself happens in the layer's
/// [`group_send`](crate::ChannelLayer::group_send); these methods read.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::{
///     ChannelLayer, ChannelLayerConfig, ChannelLayerHandle, GroupName, HistoryConfig, HistoryError,
///     InMemoryChannelLayer, Message,
/// };
///
/// /// The last messages of a room, for a page that has just loaded.
/// async fn recent(layer: &ChannelLayerHandle, room: &GroupName) -> Result<Vec<Message>, HistoryError> {
///     let history = layer.history().ok_or(HistoryError::Unsupported)?;
///     Ok(history.history_recent(room, 20).await?.messages)
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let config = ChannelLayerConfig::default()
///     .with_history_glob("chat_*", HistoryConfig::new(100, Duration::from_secs(60)))
///     .unwrap();
/// let layer = ChannelLayerHandle::new(InMemoryChannelLayer::new(config));
/// let room = GroupName::new("chat_lobby").unwrap();
/// let hi = Message::from_json(&serde_json::json!({"type": "chat.message", "text": "hi"})).unwrap();
/// layer.group_send(&room, hi).await.unwrap();
/// assert_eq!(recent(&layer, &room).await.unwrap().len(), 1);
/// # });
/// ```
pub trait History: Send + Sync {
    /// True when a group send to `group` records (a pattern matches it).
    fn is_recorded(&self, group: &GroupName) -> bool;

    /// The group's current position (the last recorded message's; offset
    /// 0 in a fresh epoch when nothing was recorded or the history was
    /// lost). Give it to a client that starts following the group.
    fn history_position<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> LayerFuture<'a, Result<StreamPosition, HistoryError>>;

    /// Every message after `since`, in order, or why not (see
    /// [`Recovery`]).
    fn history_since<'a>(
        &'a self,
        group: &'a GroupName,
        since: StreamPosition,
    ) -> LayerFuture<'a, Result<Recovery, HistoryError>>;

    /// The last `limit` messages the group keeps, oldest first (for a page
    /// that shows recent history), with the group's position.
    fn history_recent<'a>(
        &'a self,
        group: &'a GroupName,
        limit: usize,
    ) -> LayerFuture<'a, Result<Recovered, HistoryError>>;
}
