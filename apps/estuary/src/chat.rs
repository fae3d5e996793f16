//! The chat room consumer: the protocol in `shared/spec/chat-protocol.md`.

use std::time::{SystemTime, UNIX_EPOCH};

use estuary::prelude::*;
use serde::{Deserialize, Serialize};

use crate::rooms::Rooms;

/// The longest room name: the group `chat_{room}` must stay under Django's
/// 100-character limit so that rooms can be shared with a Django process.
pub const MAX_ROOM_LEN: usize = 94;
/// The longest message, in characters after trimming.
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// The longest user name, in characters.
pub const MAX_USERNAME_CHARS: usize = 50;

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
    },
    /// A named member arrived.
    #[serde(rename = "user.join")]
    Join {
        /// The member's name.
        username: String,
    },
    /// A named member left.
    #[serde(rename = "user.leave")]
    Leave {
        /// The member's name.
        username: String,
    },
}

fn anonymous() -> String {
    "Anonymous".to_owned()
}

/// The current time in Unix milliseconds (the `ts` of chat messages).
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Frames the server sends to chat clients.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Outgoing<'a> {
    ChatMessage {
        message: &'a str,
        username: &'a str,
        id: &'a str,
        ts: i64,
    },
    ConnectionEstablished {
        message: &'a str,
    },
    Error {
        message: &'a str,
    },
    // `message` is an addition for pages written for the tutorial, which
    // print `data.message` of every frame.
    UserJoin {
        username: &'a str,
        message: &'a str,
    },
    UserLeave {
        username: &'a str,
        message: &'a str,
    },
}

const INVALID_JSON: &str = "Invalid JSON format";
const INVALID_MESSAGE: &str = "Invalid message";
const SPOOFED: &str = "username does not match the signed-in user";
const UNDELIVERED: &str = "Message not delivered: the server cannot reach its channel layer; try again";

/// One chat connection.
#[derive(Debug)]
pub struct ChatConsumer {
    rooms: Rooms,
    room: Option<String>,
    /// The member's name when known (authenticated, or `?username=`).
    known_name: Option<String>,
    authenticated: bool,
}

impl ChatConsumer {
    /// A consumer that counts its room in `rooms`.
    pub fn new(rooms: Rooms) -> Self {
        Self {
            rooms,
            room: None,
            known_name: None,
            authenticated: false,
        }
    }

    async fn error(ctx: &mut Context, message: &str) -> Result<(), ConsumerError> {
        ctx.send_json(&Outgoing::Error { message }).await
    }
}

fn clean_username(raw: &str) -> Option<String> {
    let name = raw.trim();
    (!name.is_empty() && name.chars().count() <= MAX_USERNAME_CHARS).then(|| name.to_owned())
}

/// A chat message from a client, checked: the text and the name it goes
/// out under.
#[doc(hidden)] // Public for the fuzz harness (`fuzz/`), not an API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// The text, trimmed: 1 to [`MAX_MESSAGE_CHARS`] characters.
    pub message: String,
    /// The sender's name: the authenticated name, the one given, or `Anonymous`.
    pub username: String,
}

/// Reads a client's text frame (the protocol's "Client to server"); the
/// error is the text of the error frame to answer with. `authenticated_as`
/// is the authenticated member's name, which wins over the frame's.
#[doc(hidden)] // Public for the fuzz harness (`fuzz/`), not an API.
pub fn parse_client_message(
    text: &str,
    authenticated_as: Option<String>,
) -> Result<ClientMessage, &'static str> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Err(INVALID_JSON);
    };
    let body = match fields.get("message") {
        Some(serde_json::Value::String(m)) => m.trim(),
        _ => return Err(INVALID_MESSAGE),
    };
    let chars = body.chars().count();
    if chars == 0 || chars > MAX_MESSAGE_CHARS {
        return Err(INVALID_MESSAGE);
    }
    let username = match authenticated_as {
        // A signed-in member writes under its own name: another one in the
        // frame is refused, not silently replaced.
        Some(name) => match fields.get("username") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() && s.trim() != name => {
                return Err(SPOOFED);
            }
            _ => name,
        },
        None => match fields.get("username") {
            None | Some(serde_json::Value::Null) => anonymous(),
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => anonymous(),
            Some(serde_json::Value::String(s)) => clean_username(s).ok_or(INVALID_MESSAGE)?,
            Some(_) => return Err(INVALID_MESSAGE),
        },
    };
    Ok(ClientMessage {
        message: body.to_owned(),
        username,
    })
}

impl Consumer for ChatConsumer {
    type Event = ChatEvent;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let room: String = ctx.scope().param("room")?;
        if !valid_room(&room) {
            return Ok(Connect::reject_with(http_forbidden(), "invalid room name"));
        }
        if let Some(user) = ctx.scope().user() {
            // `?username=` naming someone else is a spoof: refused.
            let claimed = ctx.scope().query_param("username").and_then(clean_username);
            if claimed.is_some_and(|c| c != user.name()) {
                return Ok(Connect::reject_with(http_forbidden(), SPOOFED));
            }
            self.known_name = Some(user.name().to_owned());
            self.authenticated = true;
        } else {
            self.known_name = ctx.scope().query_param("username").and_then(clean_username);
        }
        let group = room_group(&room)?;
        ctx.group_add(&group).await?;
        self.rooms.join(&room);
        self.room = Some(room);
        ctx.send_json(&Outgoing::ConnectionEstablished {
            message: "Connected to chat room",
        })
        .await?;
        if let Some(username) = self.known_name.clone() {
            ctx.group_send(&group, &ChatEvent::Join { username }).await?;
        }
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        let WsMessage::Text(text) = message else {
            return Self::error(ctx, "Binary messages are not supported").await;
        };
        let authenticated_as = self
            .authenticated
            .then(|| self.known_name.clone().unwrap_or_else(anonymous));
        let ClientMessage { message, username } = match parse_client_message(&text, authenticated_as) {
            Ok(parsed) => parsed,
            Err(reason) => return Self::error(ctx, reason).await,
        };
        let Some(room) = &self.room else { return Ok(()) };
        let event = ChatEvent::Message {
            message,
            username,
            id: Some(uuid::Uuid::new_v4().simple().to_string()),
            ts: Some(now_millis()),
        };
        match ctx.group_send(&room_group(room)?, &event).await {
            Ok(_) => Ok(()),
            // The channel layer is unreachable (Redis down): tell the sender
            // and keep the connection; the next message may get through.
            Err(ConsumerError::ChannelLayer(error)) => {
                tracing::warn!(%error, "chat message not delivered: channel layer unavailable");
                Self::error(ctx, UNDELIVERED).await
            }
            Err(other) => Err(other),
        }
    }

    /// Every chat event renders to the same frame for every member: made
    /// once per group message and shared (an id and time filled in for a
    /// Django-sent message are the same for the whole room).
    fn render(event: &ChatEvent) -> Option<WsMessage> {
        match frame(event) {
            Ok(frame) => Some(frame),
            Err(error) => {
                tracing::warn!(%error, "cannot render a chat event; each member renders its own");
                None
            }
        }
    }

    async fn event(&mut self, ctx: &mut Context, event: ChatEvent) -> Result<(), ConsumerError> {
        ctx.send(frame(&event)?).await
    }

    async fn disconnect(&mut self, ctx: &mut Context, _code: CloseCode) {
        let Some(room) = self.room.take() else { return };
        self.rooms.leave(&room);
        if let (Some(username), Ok(group)) = (self.known_name.clone(), room_group(&room)) {
            if let Err(error) = ctx.group_send(&group, &ChatEvent::Leave { username }).await {
                tracing::warn!(%error, %room, "could not announce a leave");
            }
        }
    }
}

/// The frame a chat event becomes for the room's clients.
fn frame(event: &ChatEvent) -> Result<WsMessage, serde_json::Error> {
    match event {
        ChatEvent::Message {
            message,
            username,
            id,
            ts,
        } => {
            let fresh;
            let id = match id {
                Some(id) => id.as_str(),
                None => {
                    fresh = uuid::Uuid::new_v4().simple().to_string();
                    &fresh
                }
            };
            WsMessage::json(&Outgoing::ChatMessage {
                message,
                username,
                id,
                ts: ts.unwrap_or_else(now_millis),
            })
        }
        ChatEvent::Join { username } => WsMessage::json(&Outgoing::UserJoin {
            username,
            message: &format!("{username} joined the room"),
        }),
        ChatEvent::Leave { username } => WsMessage::json(&Outgoing::UserLeave {
            username,
            message: &format!("{username} left the room"),
        }),
    }
}

fn http_forbidden() -> axum::http::StatusCode {
    axum::http::StatusCode::FORBIDDEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(valid_room("lobby"));
        assert!(valid_room("a-b_C9"));
        assert!(valid_room(&"r".repeat(94)));
        assert!(!valid_room(&"r".repeat(95)));
        assert!(!valid_room(""));
        assert!(!valid_room("a.b"));
        assert!(!valid_room("caf\u{e9}"));
    }

    #[test]
    fn django_shaped_event_decodes() {
        let m = Message::from_json(
            &serde_json::json!({"type": "chat.message", "message": "hi", "username": "dj"}),
        )
        .unwrap();
        let ChatEvent::Message {
            message,
            username,
            id,
            ts,
        } = m.decode().unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (message.as_str(), username.as_str(), id, ts),
            ("hi", "dj", None, None)
        );
    }
}
