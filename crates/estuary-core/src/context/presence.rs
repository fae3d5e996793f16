//! A consumer's presence and history, through its [`Context`].

use super::Context;
use crate::error::ConsumerError;
use crate::layer::{
    ChannelLayer, HistoryError, PresenceError, PresenceJoined, PresenceKey, PresenceList, PresenceMeta,
    Recovered, Recovery, StreamPosition,
};
use crate::message::Message;
use crate::names::GroupName;

impl From<PresenceError> for ConsumerError {
    /// A backend failure is a [`ConsumerError::ChannelLayer`] (close 1011,
    /// or 503 during `connect`); the rest are the consumer's mistakes
    /// ([`ConsumerError::Other`]).
    fn from(error: PresenceError) -> Self {
        match error {
            PresenceError::Layer(e) => ConsumerError::ChannelLayer(e),
            other => ConsumerError::other(other),
        }
    }
}

impl From<HistoryError> for ConsumerError {
    /// A backend failure is a [`ConsumerError::ChannelLayer`] (close 1011,
    /// or 503 during `connect`); the rest are the consumer's mistakes
    /// ([`ConsumerError::Other`]).
    fn from(error: HistoryError) -> Self {
        match error {
            HistoryError::Layer(e) => ConsumerError::ChannelLayer(e),
            other => ConsumerError::other(other),
        }
    }
}

/// Presence and history for a consumer: the [`Presence`](crate::Presence)
/// and [`History`](crate::History) capabilities of the connection's layer,
/// with its own channel.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::{
///     ChannelLayerConfig, ChannelLayerHandle, Connect, Consumer, ConsumerError, Context, GroupName,
///     HistoryConfig, InMemoryChannelLayer, NoEvent, PresenceKey, PresenceMeta, Scope, Session,
///     SessionConfig,
/// };
///
/// struct Room;
///
/// impl Consumer for Room {
///     type Event = NoEvent;
///
///     async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
///         let room = GroupName::new("chat_lobby")?;
///         ctx.group_add(&room).await?;
///         let me = PresenceKey::new("user.42")?;
///         ctx.presence_join(&room, &me, &PresenceMeta::new(serde_json::json!({"name": "ann"}))?).await?;
///         let online = ctx.presence_list(&room).await?;
///         let position = ctx.history_position(&room).await?;
///         ctx.send_json(&serde_json::json!({"online": online.keys(), "position": position})).await?;
///         Ok(Connect::accept())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let config = ChannelLayerConfig::default()
///     .with_history_glob("chat_*", HistoryConfig::new(100, Duration::from_secs(60)))
///     .unwrap();
/// let layer = ChannelLayerHandle::new(InMemoryChannelLayer::new(config));
/// let scope = Scope::builder("/ws/chat/lobby/").build();
/// let (session, _accept) = Session::open(Room, scope, layer, SessionConfig::default())
///     .await
///     .expect("accepted");
/// # drop(session);
/// # });
/// ```
impl Context {
    /// Joins `group`'s presence as `key` with `meta`, with this connection
    /// (see [`Presence::presence_join`](crate::Presence::presence_join)).
    /// The connection leaves it by itself when it ends. Join the group too
    /// ([`group_add`](Self::group_add)) to hear its `presence.diff` events.
    pub async fn presence_join(
        &self,
        group: &GroupName,
        key: &PresenceKey,
        meta: &PresenceMeta,
    ) -> Result<PresenceJoined, ConsumerError> {
        let presence = self.layer.presence().ok_or(PresenceError::Unsupported)?;
        Ok(presence.presence_join(group, &self.channel, key, meta).await?)
    }

    /// Takes this connection out of `group`'s presence; true when it was in.
    pub async fn presence_leave(&self, group: &GroupName) -> Result<bool, ConsumerError> {
        let presence = self.layer.presence().ok_or(PresenceError::Unsupported)?;
        Ok(presence.presence_leave(group, &self.channel).await?)
    }

    /// Who is present in `group`.
    pub async fn presence_list(&self, group: &GroupName) -> Result<PresenceList, ConsumerError> {
        let presence = self.layer.presence().ok_or(PresenceError::Unsupported)?;
        Ok(presence.presence_list(group).await?)
    }

    /// The recorded `group`'s current position (for a client that starts
    /// following it).
    pub async fn history_position(&self, group: &GroupName) -> Result<StreamPosition, ConsumerError> {
        let history = self.layer.history().ok_or(HistoryError::Unsupported)?;
        Ok(history.history_position(group).await?)
    }

    /// Every message of the recorded `group` after `since`, or why not (see
    /// [`Recovery`]). Join the group first: live messages at or below the
    /// recovered position are then duplicates to skip.
    pub async fn history_since(
        &self,
        group: &GroupName,
        since: StreamPosition,
    ) -> Result<Recovery, ConsumerError> {
        let history = self.layer.history().ok_or(HistoryError::Unsupported)?;
        Ok(history.history_since(group, since).await?)
    }

    /// The last `limit` messages the recorded `group` keeps.
    pub async fn history_recent(&self, group: &GroupName, limit: usize) -> Result<Recovered, ConsumerError> {
        let history = self.layer.history().ok_or(HistoryError::Unsupported)?;
        Ok(history.history_recent(group, limit).await?)
    }

    /// Drops the layer events recorded at or below `position` (of its
    /// epoch, with an offset up to its offset) when they arrive, before
    /// any handler or [`render`](crate::Consumer::render) sees them: the
    /// live copies of the messages that a read of the history
    /// ([`history_since`](Self::history_since),
    /// [`history_recent`](Self::history_recent)) already gave this
    /// connection, which joined the group before reading. Call it with the
    /// position the read returned; one position is kept per epoch (a later
    /// one for the same epoch replaces it, at most eight epochs are kept).
    /// Messages without a position are never dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use estuary_core::{
    ///     ChannelLayer, ChannelLayerConfig, ChannelLayerHandle, Connect, Consumer, ConsumerError, Context,
    ///     GroupName, HistoryConfig, InMemoryChannelLayer, NoEvent, Recovery, Scope, Session,
    ///     SessionConfig, StreamPosition,
    /// };
    ///
    /// /// A client that comes back with the last position it saw.
    /// struct Returning(StreamPosition);
    ///
    /// impl Consumer for Returning {
    ///     type Event = NoEvent;
    ///
    ///     async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
    ///         let room = GroupName::new("chat_lobby")?;
    ///         ctx.group_add(&room).await?; // first: nothing sent from now on is missed
    ///         if let Recovery::Recovered(missed) = ctx.history_since(&room, self.0).await? {
    ///             for message in &missed.messages {
    ///                 ctx.send_json(&message.to_json()).await?;
    ///             }
    ///             // Their live copies, already queued for this connection, are dropped.
    ///             ctx.skip_recorded_through(missed.position);
    ///         }
    ///         Ok(Connect::accept())
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let config = ChannelLayerConfig::default()
    ///     .with_history_glob("chat_*", HistoryConfig::new(100, Duration::from_secs(60)))
    ///     .unwrap();
    /// let layer = ChannelLayerHandle::new(InMemoryChannelLayer::new(config));
    /// let room = GroupName::new("chat_lobby").unwrap();
    /// let seen = layer.history().unwrap().history_position(&room).await.unwrap();
    /// let scope = Scope::builder("/ws/chat/lobby/").build();
    /// let (session, _accept) = Session::open(Returning(seen), scope, layer, SessionConfig::default())
    ///     .await
    ///     .expect("accepted");
    /// # drop(session);
    /// # });
    /// ```
    pub fn skip_recorded_through(&mut self, position: StreamPosition) {
        const MAX_EPOCHS: usize = 8;
        match self.skip_recorded.iter_mut().find(|p| p.epoch == position.epoch) {
            Some(kept) => kept.offset = kept.offset.max(position.offset),
            None => {
                if self.skip_recorded.len() == MAX_EPOCHS {
                    self.skip_recorded.remove(0);
                }
                // Exactly: one epoch is usual, and every open connection
                // keeps its context.
                self.skip_recorded.reserve_exact(1);
                self.skip_recorded.push(position);
            }
        }
    }

    /// True when `message` is a recorded message at or below a position
    /// given to [`skip_recorded_through`](Self::skip_recorded_through).
    pub(crate) fn skips(&self, message: &Message) -> bool {
        if self.skip_recorded.is_empty() {
            return false;
        }
        message.position().is_some_and(|at| {
            self.skip_recorded
                .iter()
                .any(|p| p.epoch == at.epoch && at.offset <= p.offset)
        })
    }
}
