//! The room-post worker: a Django process posts to a chat room over the
//! channel layer, as `POST /api/rooms/<room>/messages` does over HTTP.
//!
//! ```python
//! async_to_sync(channel_layer.send)("estuary.room-posts", {
//!     "type": "room.post", "room": "lobby", "message": "Maintenance at 5", "username": "Ops",
//! })
//! ```
//!
//! The worker checks the post as the push API does (a valid room, a
//! message of 1 to 1,000 characters, a name of at most 50, "Server" when
//! absent), gives it an id and a timestamp, and sends the room a
//! `chat.message`. An invalid post is logged and counted
//! ([`WorkerStats::failed`](estuary::WorkerStats::failed)), never sent.

use std::fmt;

use estuary::WorkerStats;
use estuary::prelude::*;
use serde::Deserialize;

use crate::chat::{ChatEvent, MAX_MESSAGE_CHARS, MAX_USERNAME_CHARS, now_millis, room_group, valid_room};

/// The named channel the room-post worker consumes.
pub const ROOM_POSTS: &str = "estuary.room-posts";

/// One post (`{"type": "room.post", ...}`).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename = "room.post")]
pub struct RoomPost {
    /// The room.
    pub room: String,
    /// The text.
    pub message: String,
    /// Who posts it ("Server" when absent or blank).
    #[serde(default)]
    pub username: Option<String>,
}

/// Why a post was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidPost {
    /// The room name is not valid.
    Room,
    /// The message is blank or longer than 1,000 characters.
    Message,
    /// The name is longer than 50 characters.
    Username,
}

impl fmt::Display for InvalidPost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidPost::Room => "invalid room name",
            InvalidPost::Message => "invalid message: blank, or over 1000 characters",
            InvalidPost::Username => "invalid username: over 50 characters",
        })
    }
}

impl std::error::Error for InvalidPost {}

/// Posts to chat rooms what arrives on [`ROOM_POSTS`].
#[derive(Debug, Default)]
pub struct RoomPosts;

impl Worker for RoomPosts {
    type Event = RoomPost;

    async fn handle(&mut self, ctx: &mut WorkerContext, post: RoomPost) -> Result<(), WorkerError> {
        if !valid_room(&post.room) {
            return Err(WorkerError::other(InvalidPost::Room));
        }
        let event = server_post(&post.message, post.username.as_deref()).map_err(WorkerError::other)?;
        let group = room_group(&post.room).map_err(WorkerError::other)?;
        ctx.group_send(&group, &event).await?;
        Ok(())
    }
}

/// A post from the server side (this worker, or `POST
/// /api/rooms/<room>/messages`) as the `chat.message` its room receives: the
/// message trimmed, 1 to 1,000 characters; the name trimmed, at most 50,
/// "Server" when absent or blank; a fresh id and timestamp. The room is
/// checked by the caller (each answers an invalid room its own way).
///
/// ```
/// use estuary_cli::posts::{InvalidPost, server_post};
///
/// assert!(server_post(" hi ", None).is_ok());
/// assert_eq!(server_post("  ", None).err(), Some(InvalidPost::Message));
/// assert_eq!(server_post("hi", Some(&"x".repeat(51))).err(), Some(InvalidPost::Username));
/// ```
pub fn server_post(message: &str, username: Option<&str>) -> Result<ChatEvent, InvalidPost> {
    let text = message.trim();
    if text.is_empty() || text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(InvalidPost::Message);
    }
    let username = match username.map(str::trim) {
        None | Some("") => "Server".to_owned(),
        Some(name) if name.chars().count() <= MAX_USERNAME_CHARS => name.to_owned(),
        Some(_) => return Err(InvalidPost::Username),
    };
    Ok(ChatEvent::Message {
        message: text.to_owned(),
        username,
        id: Some(uuid::Uuid::new_v4().simple().to_string()),
        ts: Some(now_millis()),
        verified: false,
        position: None,
    })
}

/// The workers `estuary serve` runs beside its WebSocket tier, with their
/// counters.
pub fn workers() -> (ChannelNameRouter, WorkerStats) {
    let router = ChannelNameRouter::new()
        .route(ROOM_POSTS, RoomPosts)
        // A constant, valid, named channel: this cannot fail.
        .unwrap_or_default();
    let stats = router.stats();
    (router, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_post_worker_is_routed() {
        let (router, _) = workers();
        let channels: Vec<_> = router.channels().map(ChannelName::as_str).collect();
        assert_eq!(channels, [ROOM_POSTS]);
    }
}
