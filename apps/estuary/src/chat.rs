//! The chat room consumer: the protocol in `docs/CHAT.md`.

use std::time::{SystemTime, UNIX_EPOCH};

use estuary::prelude::*;
use estuary::{
    ChannelLayerError, PresenceDiff, PresenceKey, PresenceMeta, Recovery, StreamPosition, Unrecoverable,
};
use serde::Serialize;

use crate::announce::{Announcer, Presence};
use crate::online::{Online, OnlineUser};
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
        #[serde(flatten)]
        place: Place,
    },
    ConnectionEstablished {
        message: &'a str,
        /// The room's position: live messages follow it.
        #[serde(skip_serializing_if = "Option::is_none")]
        position: Option<StreamPosition>,
        /// Only when the client asked to recover (`?since=`): whether it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
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
        #[serde(flatten)]
        place: Place,
    },
    UserLeave {
        username: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "is_false")]
        verified: bool,
        #[serde(skip_serializing_if = "<[Member]>::is_empty")]
        users: &'a [Member],
        #[serde(flatten)]
        place: Place,
    },
    /// Who is present (for a client that asked, `?presence=1`).
    Presence {
        users: &'a [OnlineUser],
        count: usize,
    },
    /// The client asked to recover (`?since=`) and cannot.
    RecoveryFailed {
        message: &'a str,
        reason: &'a str,
    },
}

/// Where a frame's event sits in the room's history, and how it reaches
/// this client.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Place {
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<StreamPosition>,
    /// Recent history sent when the client joined.
    #[serde(skip_serializing_if = "is_false")]
    history: bool,
    /// Missed while the client was away, recovered when it came back.
    #[serde(skip_serializing_if = "is_false")]
    recovered: bool,
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
/// The `message` of a `recovery_failed` frame.
const NOT_RECOVERED: &str = "Some messages sent while you were away could not be recovered";

/// What the chat connections of a process share: the room counts, the
/// announcer (for a layer without presence), presence, and how many
/// recorded messages a joining page gets.
#[derive(Debug, Clone)]
pub struct ChatShared {
    /// This process's rooms: the signed-in members' names, and the counts
    /// of a layer without presence.
    pub rooms: Rooms,
    /// Joins and leaves, on a layer without presence.
    pub announcer: Announcer,
    /// Presence, on a layer with it.
    pub online: Online,
    /// Recorded messages a page joining without a position gets.
    pub recent_history: usize,
}

/// One chat connection.
#[derive(Debug)]
pub struct ChatConsumer {
    shared: ChatShared,
    room: Option<String>,
    /// The member's name when known (authenticated, `?username=`, or a
    /// guest's frame).
    known_name: Option<String>,
    authenticated: bool,
    /// The folded name of a signed-in member, counted in `rooms` (boxed:
    /// most connections are guests, and an idle connection's size counts).
    signed_in_key: Option<Box<[String; 2]>>,
    /// The presence this connection holds in its room (boxed: anonymous
    /// connections hold none).
    present: Option<Box<(PresenceKey, PresenceMeta)>>,
}

impl ChatConsumer {
    /// A consumer sharing `shared` with the process's other connections.
    pub fn new(shared: ChatShared) -> Self {
        Self {
            shared,
            room: None,
            known_name: None,
            authenticated: false,
            signed_in_key: None,
            present: None,
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
                    if self.shared.rooms.name_taken(&room, &name) {
                        return Self::refuse(ctx, CLOSE_USERNAME_TAKEN, USERNAME_TAKEN).await;
                    }
                    Some(name)
                }
            };
        }
        let group = room_group(&room)?;
        ctx.group_add(&group).await?;
        self.shared.rooms.join(&room);
        if self.authenticated {
            let key = usernames::fold(self.known_name.as_deref().unwrap_or_default());
            self.shared.rooms.sign_in(&room, &key);
            self.signed_in_key = Some(Box::new(key));
        }
        // Set before anything else can fail: `disconnect` undoes the count,
        // the sign-in and the join from it.
        self.room = Some(room.clone());
        if self.shared.online.tracks() {
            self.shared.online.enter(ctx, &room).await;
            if let Some(member) = self.member() {
                self.be_present(ctx, &group, member).await;
            }
        } else if let Some(member) = self.member() {
            self.shared.announcer.announce(&room, Presence::Join, member);
        }
        let catch_up = self.catch_up(ctx, &group).await;
        ctx.send_json(&Outgoing::ConnectionEstablished {
            message: "Connected to chat room",
            position: catch_up.position,
            recovered: catch_up.recovered,
        })
        .await?;
        for frame in catch_up.frames {
            ctx.send(frame).await?;
        }
        let wants_list = matches!(ctx.scope().query_param("presence"), Some("1" | "true"));
        if wants_list && self.shared.online.tracks() {
            match ctx.presence_list(&group).await {
                Ok(list) => {
                    let (count, users) = crate::online::users(list);
                    ctx.send_json(&Outgoing::Presence { users: &users, count })
                        .await?;
                }
                Err(error) => {
                    estuary::throttled!(warn, %error, "could not list a room's presence (is the channel layer reachable?)");
                }
            }
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
        let ClientMessage {
            message,
            username,
            guest_named,
        } = match parse_client_message(&text, authenticated_as) {
            Ok(parsed) => parsed,
            Err(reason) => return Self::error(ctx, reason).await,
        };
        let Some(room) = self.room.clone() else {
            return Ok(());
        };
        if guest_named && self.shared.rooms.name_taken(&room, &username) {
            return Self::error(ctx, USERNAME_TAKEN).await;
        }
        let group = room_group(&room)?;
        if guest_named && username != anonymous() && self.known_name.as_deref() != Some(&username) {
            self.rename(ctx, &room, &group, &username).await;
        }
        let event = ChatEvent::Message {
            message,
            username,
            id: Some(uuid::Uuid::new_v4().simple().to_string()),
            ts: Some(now_millis()),
            verified: self.authenticated,
            position: None,
        };
        // Not awaited: the sender's next message is read while this one is
        // on its way (over Redis, one round trip each would otherwise pace
        // the sender), in order and within the session's window; a failure
        // comes back in `group_send_failed`.
        ctx.group_send_pipelined(&group, &event).await
    }

    async fn group_send_failed(
        &mut self,
        ctx: &mut Context,
        _group: GroupName,
        error: ConsumerError,
    ) -> Result<(), ConsumerError> {
        match error {
            // The channel layer is unreachable (Redis down): tell the sender
            // and keep the connection; the next message may get through.
            // The layer holds all it may (max_bytes): the server is busy,
            // not broken; the sender is told so and may retry.
            ConsumerError::ChannelLayer(ChannelLayerError::TooManyBytes { .. }) => {
                Self::error(ctx, UNDELIVERED_BUSY).await
            }
            ConsumerError::ChannelLayer(error) => {
                estuary::throttled!(warn, %error, "chat message not delivered (the sender got an error frame): is the channel layer reachable?");
                Self::error(ctx, UNDELIVERED).await
            }
            other => Err(other),
        }
    }

    /// A chat message, or a presence change that is only joins or only
    /// leaves, renders to the same frame for every member: made once per
    /// group message and shared (an id and time filled in for a
    /// Django-sent message are the same for the whole room). A presence
    /// change with both (two frames) is handled by each member.
    fn render(event: &ChatEvent) -> Option<WsMessage> {
        match frames(event, Place::default()) {
            Ok(mut frames) if frames.len() == 1 => frames.pop(),
            Ok(_) => None,
            Err(error) => {
                estuary::throttled!(warn, %error, "cannot render a chat event; each member renders its own (slower, not lost; report it as a bug)");
                None
            }
        }
    }

    async fn event(&mut self, ctx: &mut Context, event: ChatEvent) -> Result<(), ConsumerError> {
        for frame in frames(&event, Place::default())? {
            ctx.send(frame).await?;
        }
        Ok(())
    }

    async fn disconnect(&mut self, _ctx: &mut Context, _code: CloseCode) {
        let Some(room) = self.room.take() else { return };
        self.shared.rooms.leave(&room);
        if let Some(key) = self.signed_in_key.take() {
            self.shared.rooms.sign_out(&room, &key);
        }
        if let Some(present) = self.present.take() {
            // Still held by this connection: the member stays for the
            // leave delay, and leaves then unless it came back.
            if let Ok(group) = room_group(&room) {
                let (key, meta) = &*present;
                self.shared.online.linger(&group, key, meta).await;
            }
        } else if !self.shared.online.tracks() {
            if let Some(member) = self.member() {
                self.shared.announcer.announce(&room, Presence::Leave, member);
            }
        }
    }
}

impl ChatConsumer {
    /// Makes this connection present in its room as `member`.
    async fn be_present(&mut self, ctx: &Context, group: &GroupName, member: Member) {
        let user_id = self
            .authenticated
            .then(|| ctx.scope().user().map(|u| u.id().to_owned()))
            .flatten();
        let key = Online::key(&member, user_id.as_deref())
            .unwrap_or_else(|| PresenceKey::for_channel(ctx.channel_name()));
        let meta = member.to_meta();
        if self.shared.online.join(ctx, group, &key, &meta).await {
            self.present = Some(Box::new((key, meta)));
        }
    }

    /// A guest's frame named it `name`, another name than its last: it is
    /// present (and announced) under the new one.
    async fn rename(&mut self, ctx: &Context, room: &str, group: &GroupName, name: &str) {
        let before = self.member();
        self.known_name = Some(name.to_owned());
        let Some(member) = self.member() else { return };
        if self.shared.online.tracks() {
            self.be_present(ctx, group, member).await;
        } else {
            if let Some(before) = before {
                self.shared.announcer.announce(room, Presence::Leave, before);
            }
            self.shared.announcer.announce(room, Presence::Join, member);
        }
    }

    /// What a joining client gets from the room's history: the room's
    /// position, and the messages it missed (`?since=`) or the recent ones.
    /// Live messages at or below the position are dropped from then on.
    async fn catch_up(&self, ctx: &mut Context, group: &GroupName) -> CatchUp {
        let mut out = CatchUp::default();
        let Some(history) = ctx.channel_layer().history() else {
            return out;
        };
        if !history.is_recorded(group) {
            return out;
        }
        let since = ctx.scope().query_param("since").map(parse_position);
        let result = match since {
            Some(Some(since)) => match ctx.history_since(group, since).await {
                Ok(Recovery::Recovered(missed)) => {
                    out.recovered = Some(true);
                    out.position = Some(missed.position);
                    out.frames = recorded_frames(&missed.messages, true);
                    Ok(())
                }
                Ok(Recovery::Unrecoverable { reason, .. }) => {
                    out.recovered = Some(false);
                    self.start_over(ctx, group, reason_name(reason), &mut out).await
                }
                Err(error) => Err(error),
            },
            Some(None) => {
                out.recovered = Some(false);
                self.start_over(ctx, group, "invalid_position", &mut out).await
            }
            None => self.recent(ctx, group, &mut out).await,
        };
        match result {
            Ok(()) => {
                if let Some(position) = out.position {
                    ctx.skip_recorded_through(position);
                }
            }
            Err(error) => {
                estuary::throttled!(warn, %error, "could not read a room's history (is the channel layer reachable?)");
                out.position = None;
            }
        }
        out
    }

    /// Recovery is impossible: a frame saying so, then the recent history.
    async fn start_over(
        &self,
        ctx: &Context,
        group: &GroupName,
        reason: &str,
        out: &mut CatchUp,
    ) -> Result<(), ConsumerError> {
        let failed = Outgoing::RecoveryFailed {
            message: NOT_RECOVERED,
            reason,
        };
        out.frames.push(WsMessage::json(&failed)?);
        self.recent(ctx, group, out).await
    }

    /// The room's recent history (and position).
    async fn recent(&self, ctx: &Context, group: &GroupName, out: &mut CatchUp) -> Result<(), ConsumerError> {
        let limit = self.shared.recent_history;
        if limit == 0 {
            out.position = Some(ctx.history_position(group).await?);
            return Ok(());
        }
        let recent = ctx.history_recent(group, limit).await?;
        out.position = Some(recent.position);
        let messages: Vec<Message> = recent
            .messages
            .into_iter()
            .filter(|m| m.message_type() == "chat.message")
            .collect();
        out.frames.extend(recorded_frames(&messages, false));
        Ok(())
    }
}

/// What [`ChatConsumer::catch_up`] found.
#[derive(Debug, Default)]
struct CatchUp {
    position: Option<StreamPosition>,
    recovered: Option<bool>,
    frames: Vec<WsMessage>,
}

/// `?since=<epoch>:<offset>`, as a page gives it back.
fn parse_position(text: &str) -> Option<StreamPosition> {
    let (epoch, offset) = text.split_once(':')?;
    Some(StreamPosition::new(offset.parse().ok()?, epoch.parse().ok()?))
}

/// The `reason` of a `recovery_failed` frame.
fn reason_name(reason: Unrecoverable) -> &'static str {
    match reason {
        Unrecoverable::EpochChanged => "epoch_changed",
        Unrecoverable::TooOld => "too_old",
    }
}

/// The frames of recorded messages: recovered (`"recovered": true`), or
/// recent history (`"history": true`). Events that are no chat event are
/// skipped.
fn recorded_frames(messages: &[Message], recovered: bool) -> Vec<WsMessage> {
    let place = |position| Place {
        position,
        history: !recovered,
        recovered,
    };
    messages
        .iter()
        .filter_map(|message| {
            let event = message.decode::<ChatEvent>().ok()?;
            let position = message.position();
            frames(&event, place(position)).ok()
        })
        .flatten()
        .collect()
}

/// The frames a chat event becomes for the room's clients: one, or for a
/// presence change, a `user_leave` for the named members who left and a
/// `user_join` for those who arrived (none for a change without names).
#[doc(hidden)] // Public for the fuzz harness (`fuzz/`), not an API.
pub fn event_frames(event: &ChatEvent) -> Result<Vec<WsMessage>, serde_json::Error> {
    frames(event, Place::default())
}

fn frames(event: &ChatEvent, place: Place) -> Result<Vec<WsMessage>, serde_json::Error> {
    let place = |position: &Option<StreamPosition>| Place {
        position: *position,
        ..place
    };
    let frame = match event {
        ChatEvent::Message {
            message,
            username,
            id,
            ts,
            verified,
            position,
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
                place: place(position),
            })?
        }
        ChatEvent::Join {
            username,
            verified,
            users,
            position,
        } => notice(Presence::Join, username, *verified, users, place(position))?,
        ChatEvent::Leave {
            username,
            verified,
            users,
            position,
        } => notice(Presence::Leave, username, *verified, users, place(position))?,
        ChatEvent::Presence(diff) => return presence_frames(diff),
    };
    Ok(vec![frame])
}

/// A `user_join` or `user_leave` frame.
fn notice(
    kind: Presence,
    username: &str,
    verified: bool,
    users: &[Member],
    place: Place,
) -> Result<WsMessage, serde_json::Error> {
    match kind {
        Presence::Join => WsMessage::json(&Outgoing::UserJoin {
            username,
            message: &format!("{} joined the room", who(username, users)),
            verified,
            users,
            place,
        }),
        Presence::Leave => WsMessage::json(&Outgoing::UserLeave {
            username,
            message: &format!("{} left the room", who(username, users)),
            verified,
            users,
            place,
        }),
    }
}

/// The notices of a presence change: the named members who left, then
/// those who arrived (or changed their name), each in the order of their
/// change.
fn presence_frames(diff: &PresenceDiff) -> Result<Vec<WsMessage>, serde_json::Error> {
    let named = |changes: &std::collections::BTreeMap<PresenceKey, estuary::PresenceChange>| {
        let mut named: Vec<(u64, Member)> = changes
            .values()
            .filter_map(|c| Some((c.version, Member::from_meta(&c.meta)?)))
            .collect();
        named.sort_by_key(|(version, _)| *version);
        named.into_iter().map(|(_, m)| m).collect::<Vec<_>>()
    };
    let mut frames = Vec::new();
    for (kind, members) in [
        (Presence::Leave, named(&diff.leaves)),
        (Presence::Join, named(&diff.joins)),
    ] {
        let Some(first) = members.first() else { continue };
        let users: &[Member] = if members.len() > 1 { &members } else { &[] };
        frames.push(notice(
            kind,
            &first.username,
            first.verified,
            users,
            Place::default(),
        )?);
    }
    Ok(frames)
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
            ..
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
