//! The chat room consumer: the protocol in `docs/CHAT.md`.

use std::time::{SystemTime, UNIX_EPOCH};

use estuary::ChannelLayerError;
use estuary::prelude::*;
use serde::Serialize;

use crate::announce::{Announcer, Presence};
use crate::rooms::Rooms;
use crate::usernames::{self, NameProblem};

/// The longest message, in characters after trimming.
pub const MAX_MESSAGE_CHARS: usize = 1000;
pub use crate::events::{ChatEvent, MAX_ROOM_LEN, Member, room_group, valid_room};
use crate::events::{anonymous, is_false};
pub use crate::usernames::MAX_USERNAME_CHARS;

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
        #[serde(skip_serializing_if = "is_false")]
        verified: bool,
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
        #[serde(skip_serializing_if = "is_false")]
        verified: bool,
        #[serde(skip_serializing_if = "<[Member]>::is_empty")]
        users: &'a [Member],
    },
    UserLeave {
        username: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "is_false")]
        verified: bool,
        #[serde(skip_serializing_if = "<[Member]>::is_empty")]
        users: &'a [Member],
    },
}

const INVALID_JSON: &str = "Invalid JSON format";
const INVALID_MESSAGE: &str = "Invalid message";
const SPOOFED: &str = "username does not match the signed-in user";
/// The error frame for a guest's name with a control, bidirectional or
/// invisible-only character (and the close reason at connect, code 4400).
pub const INVALID_USERNAME: &str =
    "Invalid username: control, bidirectional or invisible characters are not allowed";
/// The error frame for a guest's name that looks like a signed-in member's
/// in the room (and the close reason at connect, code 4409).
pub const USERNAME_TAKEN: &str = "This name belongs to a signed-in member of the room; choose another";
/// The close code for a connection whose `?username=` is refused as invalid.
pub const CLOSE_INVALID_USERNAME: u16 = 4400;
/// The close code for a connection whose `?username=` is a signed-in member's.
pub const CLOSE_USERNAME_TAKEN: u16 = 4409;
/// The error frame for a message the channel layer could not take (Redis down).
const UNDELIVERED: &str = "Message not delivered: the server cannot reach its channel layer; try again";
/// The error frame for a message the channel layer had no room for.
const UNDELIVERED_BUSY: &str = "Message not delivered: the server is busy; try again";

/// One chat connection.
#[derive(Debug)]
pub struct ChatConsumer {
    rooms: Rooms,
    announcer: Announcer,
    room: Option<String>,
    /// The member's name when known (authenticated, or `?username=`).
    known_name: Option<String>,
    authenticated: bool,
    /// The folded name of a signed-in member, counted in `rooms` (boxed:
    /// most connections are guests, and an idle connection's size counts).
    signed_in_key: Option<Box<[String; 2]>>,
}

impl ChatConsumer {
    /// A consumer that counts its room in `rooms` and announces named
    /// members with `announcer`.
    pub fn new(rooms: Rooms, announcer: Announcer) -> Self {
        Self {
            rooms,
            announcer,
            room: None,
            known_name: None,
            authenticated: false,
            signed_in_key: None,
        }
    }

    /// Refuses the connection after accepting it: an error frame, then a
    /// close with `code` and the same text as its reason (a browser sees the
    /// reason, where a refused handshake tells it nothing).
    async fn refuse(ctx: &mut Context, code: u16, reason: &str) -> Result<Connect, ConsumerError> {
        Self::error(ctx, reason).await?;
        ctx.close(CloseCode::from(code), reason).await?;
        Ok(Connect::accept())
    }

    fn member(&self) -> Option<Member> {
        self.known_name.clone().map(|username| Member {
            username,
            verified: self.authenticated,
        })
    }

    async fn error(ctx: &mut Context, message: &str) -> Result<(), ConsumerError> {
        ctx.send_json(&Outgoing::Error { message }).await
    }
}

fn clean_username(raw: &str) -> Option<String> {
    let name = raw.trim();
    (!name.is_empty() && name.chars().count() <= MAX_USERNAME_CHARS).then(|| name.to_owned())
}

/// The error frame's text for a guest name refused by [`usernames::check`].
fn name_error(problem: NameProblem) -> &'static str {
    match problem {
        // As before names were checked for characters.
        NameProblem::TooLong => INVALID_MESSAGE,
        NameProblem::Forbidden(_) | NameProblem::Invisible => INVALID_USERNAME,
    }
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
    /// A guest gave `username` in the frame (it is not the default).
    pub guest_named: bool,
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
    let (username, guest_named) = match authenticated_as {
        // A signed-in member writes under its own name: another one in the
        // frame is refused, not silently replaced.
        Some(name) => match fields.get("username") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() && s.trim() != name => {
                return Err(SPOOFED);
            }
            _ => (name, false),
        },
        None => match fields.get("username") {
            None | Some(serde_json::Value::Null) => (anonymous(), false),
            Some(serde_json::Value::String(s)) => match usernames::check(s) {
                Ok(Some(name)) => (name, true),
                Ok(None) => (anonymous(), false),
                Err(problem) => return Err(name_error(problem)),
            },
            Some(_) => return Err(INVALID_MESSAGE),
        },
    };
    Ok(ClientMessage {
        message: body.to_owned(),
        username,
        guest_named,
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
            // A guest's name: refused with a control, bidirectional or
            // invisible-only character, or when it looks like the name of a
            // member signed in in this room.
            self.known_name = match ctx.scope().query_param("username").map(usernames::check) {
                None | Some(Ok(None)) => None,
                Some(Err(problem)) => {
                    let reason = match problem {
                        NameProblem::TooLong => "Invalid username: over 50 characters",
                        _ => INVALID_USERNAME,
                    };
                    return Self::refuse(ctx, CLOSE_INVALID_USERNAME, reason).await;
                }
                Some(Ok(Some(name))) => {
                    if self.rooms.name_taken(&room, &name) {
                        return Self::refuse(ctx, CLOSE_USERNAME_TAKEN, USERNAME_TAKEN).await;
                    }
                    Some(name)
                }
            };
        }
        let group = room_group(&room)?;
        ctx.group_add(&group).await?;
        self.rooms.join(&room);
        if self.authenticated {
            let key = usernames::fold(self.known_name.as_deref().unwrap_or_default());
            self.rooms.sign_in(&room, &key);
            self.signed_in_key = Some(Box::new(key));
        }
        if let Some(member) = self.member() {
            self.announcer.announce(&room, Presence::Join, member);
        }
        // Set before anything else can fail: `disconnect` undoes the count,
        // the sign-in and the join from it.
        self.room = Some(room);
        ctx.send_json(&Outgoing::ConnectionEstablished {
            message: "Connected to chat room",
        })
        .await?;
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        let WsMessage::Text(text) = message else {
            return Self::error(ctx, "Binary messages are not supported").await;
        };
        let authenticated_as = self
            .authenticated
            .then(|| self.known_name.clone().unwrap_or_else(anonymous));
        let ClientMessage {
            message,
            username,
            guest_named,
        } = match parse_client_message(&text, authenticated_as) {
            Ok(parsed) => parsed,
            Err(reason) => return Self::error(ctx, reason).await,
        };
        let Some(room) = &self.room else { return Ok(()) };
        if guest_named && self.rooms.name_taken(room, &username) {
            return Self::error(ctx, USERNAME_TAKEN).await;
        }
        let event = ChatEvent::Message {
            message,
            username,
            id: Some(uuid::Uuid::new_v4().simple().to_string()),
            ts: Some(now_millis()),
            verified: self.authenticated,
        };
        match ctx.group_send(&room_group(room)?, &event).await {
            Ok(_) => Ok(()),
            // The channel layer is unreachable (Redis down): tell the sender
            // and keep the connection; the next message may get through.
            // The layer holds all it may (max_bytes): the server is busy,
            // not broken; the sender is told so and may retry.
            Err(ConsumerError::ChannelLayer(ChannelLayerError::TooManyBytes { .. })) => {
                Self::error(ctx, UNDELIVERED_BUSY).await
            }
            Err(ConsumerError::ChannelLayer(error)) => {
                estuary::throttled!(warn, %error, "chat message not delivered (the sender got an error frame): is the channel layer reachable?");
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
                estuary::throttled!(warn, %error, "cannot render a chat event; each member renders its own");
                None
            }
        }
    }

    async fn event(&mut self, ctx: &mut Context, event: ChatEvent) -> Result<(), ConsumerError> {
        ctx.send(frame(&event)?).await
    }

    async fn disconnect(&mut self, _ctx: &mut Context, _code: CloseCode) {
        let Some(room) = self.room.take() else { return };
        self.rooms.leave(&room);
        if let Some(key) = self.signed_in_key.take() {
            self.rooms.sign_out(&room, &key);
        }
        if let Some(member) = self.member() {
            self.announcer.announce(&room, Presence::Leave, member);
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
            verified,
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
                verified: *verified,
            })
        }
        ChatEvent::Join {
            username,
            verified,
            users,
        } => WsMessage::json(&Outgoing::UserJoin {
            username,
            message: &format!("{} joined the room", who(username, users)),
            verified: *verified,
            users,
        }),
        ChatEvent::Leave {
            username,
            verified,
            users,
        } => WsMessage::json(&Outgoing::UserLeave {
            username,
            message: &format!("{} left the room", who(username, users)),
            verified: *verified,
            users,
        }),
    }
}

/// Who an announcement names, for its `message`: `alice`, `alice and bob`,
/// `alice, bob and carol`, `alice, bob and 98 others`.
fn who(username: &str, users: &[Member]) -> String {
    match users {
        [] | [_] => username.to_owned(),
        [a, b] => format!("{} and {}", a.username, b.username),
        [a, b, c] => format!("{}, {} and {}", a.username, b.username, c.username),
        [a, b, rest @ ..] => format!("{}, {} and {} others", a.username, b.username, rest.len()),
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
            verified,
        } = m.decode().unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (message.as_str(), username.as_str(), id, ts, verified),
            ("hi", "dj", None, None, false)
        );
    }
}
