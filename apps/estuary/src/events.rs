//! The chat's rooms and the channel-layer events of a room: what a Django
//! consumer sharing a room over Redis sends and handles. The chat consumer
//! and the announcer both speak them (neither depends on the other for it).

use estuary::prelude::*;
use estuary::{PresenceDiff, PresenceMeta, StreamPosition};
use serde::{Deserialize, Serialize};

/// The longest room name: the group `chat_{room}` must stay under Django's
/// 100-character limit so that rooms can be shared with a Django process.
pub const MAX_ROOM_LEN: usize = 94;

/// True for a valid room name: one to 94 of `[A-Za-z0-9_-]`.
pub fn valid_room(room: &str) -> bool {
    (1..=MAX_ROOM_LEN).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The group of a room, as a Django consumer names it.
pub fn room_group(room: &str) -> Result<GroupName, ConsumerError> {
    Ok(GroupName::new(&format!("chat_{room}"))?)
}

/// Channel-layer events of a chat room. `chat.message` is what a Django
/// tutorial consumer sends and handles (`chat_message`), so rooms can be
/// shared with Django processes over Redis.
///
/// `verified` is true when the server authenticated the member named
/// (absent, false, from guests, the push API, and Django code that does not
/// set it). `position` is where the layer recorded the event in the room's
/// history (`"__position__"`), when it records the room.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ChatEvent {
    /// A chat message for the room.
    #[serde(rename = "chat.message")]
    Message {
        /// The text.
        message: String,
        /// Who sent it.
        #[serde(default = "anonymous")]
        username: String,
        /// A unique id (absent from messages sent by Django code).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// When the server accepted it, in Unix milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<i64>,
        /// The sender is signed in as `username`.
        #[serde(default, skip_serializing_if = "is_false")]
        verified: bool,
        /// Where the room's history recorded it.
        #[serde(rename = "__position__", default, skip_serializing_if = "Option::is_none")]
        position: Option<StreamPosition>,
    },
    /// Named members arrived: `username` (the first), or all of `users`
    /// when there are several.
    #[serde(rename = "user.join")]
    Join {
        /// The (first) member's name.
        username: String,
        /// The (first) member is signed in as `username`.
        #[serde(default, skip_serializing_if = "is_false")]
        verified: bool,
        /// Every member announced, in order, when more than one.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        users: Vec<Member>,
        /// Where the room's history recorded it (sent by Django through
        /// the push API, say).
        #[serde(rename = "__position__", default, skip_serializing_if = "Option::is_none")]
        position: Option<StreamPosition>,
    },
    /// Named members left: `username` (the first), or all of `users` when
    /// there are several.
    #[serde(rename = "user.leave")]
    Leave {
        /// The (first) member's name.
        username: String,
        /// The (first) member is signed in as `username`.
        #[serde(default, skip_serializing_if = "is_false")]
        verified: bool,
        /// Every member announced, in order, when more than one.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        users: Vec<Member>,
        /// Where the room's history recorded it (sent by Django through
        /// the push API, say).
        #[serde(rename = "__position__", default, skip_serializing_if = "Option::is_none")]
        position: Option<StreamPosition>,
    },
    /// The room's presence changed: the layer's coalesced diff (see
    /// [`estuary::layer::presence`]). Its named joins and leaves become
    /// the `user_join` and `user_leave` frames.
    #[serde(rename = "presence.diff")]
    Presence(PresenceDiff),
}

/// A member named in a join or leave announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's name.
    pub username: String,
    /// The member is signed in as `username`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified: bool,
}

impl Member {
    /// The member a presence's metadata names (`{"username": ..., "verified":
    /// true}`), if it names one.
    pub fn from_meta(meta: &PresenceMeta) -> Option<Self> {
        let value = meta.as_value();
        let username = value.get("username")?.as_str()?;
        (!username.is_empty()).then(|| Self {
            username: username.to_owned(),
            verified: value.get("verified") == Some(&serde_json::Value::Bool(true)),
        })
    }

    /// The presence metadata naming this member.
    pub fn to_meta(&self) -> PresenceMeta {
        let value = if self.verified {
            serde_json::json!({"username": self.username, "verified": true})
        } else {
            serde_json::json!({"username": self.username})
        };
        // A name of at most 50 characters (a signed-in member's, at most
        // 150) is far below the bound on metadata.
        PresenceMeta::new(value).unwrap_or_default()
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// The name of a member who gave none.
pub(crate) fn anonymous() -> String {
    "Anonymous".to_owned()
}
