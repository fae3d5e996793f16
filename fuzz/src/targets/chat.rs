//! The chat protocol: a client's text frame (`parse_client_message`), and a
//! `ChatEvent` from the channel layer, as msgpack (what Redis carries, also
//! from Django processes) and as JSON (what the push API takes), rendered to
//! the frame that members receive.
//!
//! Input: the bytes, read each way.

use bytes::Bytes;
use estuary_cli::chat::{
    ChatConsumer, ChatEvent, MAX_MESSAGE_CHARS, MAX_USERNAME_CHARS, event_frames, parse_client_message,
};
use estuary_cli::usernames;
use estuary_core::{Consumer, Message, WsMessage};

use crate::{Trail, text};

/// Runs one input.
pub fn run(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let frame = text(data);
    for authenticated in [None, Some("alice".to_owned())] {
        let is_auth = authenticated.is_some();
        match parse_client_message(&frame, authenticated) {
            Ok(m) => {
                trail.note("client message");
                let chars = m.message.chars().count();
                assert!(
                    (1..=MAX_MESSAGE_CHARS).contains(&chars),
                    "{chars} characters accepted"
                );
                assert_eq!(m.message.trim(), m.message, "the message is trimmed");
                assert!(!m.username.trim().is_empty());
                assert!(m.username.chars().count() <= MAX_USERNAME_CHARS);
                if is_auth {
                    assert_eq!(m.username, "alice", "the authenticated name wins");
                    assert!(!m.guest_named);
                } else if m.guest_named {
                    // A guest's name passed the checks: no control,
                    // bidirectional or invisible-only name goes out.
                    assert_eq!(usernames::check(&m.username), Ok(Some(m.username.clone())));
                    assert!(
                        !m.username.chars().any(usernames::forbidden_char),
                        "{:?}",
                        m.username
                    );
                    check_fold(&m.username);
                    trail.note("guest named");
                } else {
                    assert_eq!(m.username, "Anonymous");
                }
            }
            Err(reason) => trail.note(reason),
        }
    }

    if let Ok(message) = Message::from_msgpack(Bytes::copy_from_slice(data)) {
        trail.note("msgpack message");
        match message.decode::<ChatEvent>() {
            Ok(event) => {
                trail.note(("msgpack event", kind(&event)));
                check_event(&event);
            }
            Err(e) => {
                trail.note("msgpack not an event");
                let _ = e.to_string();
            }
        }
    }
    let json = serde_json::from_slice::<ChatEvent>(data);
    if let Err(e) = &json {
        trail.note(("json", e.classify() as u8));
    }
    if let Ok(event) = json {
        trail.note(("json event", kind(&event)));
        check_event(&event);
        // What the push API does with a JSON body.
        let value = serde_json::to_value(&event).expect("an event is JSON");
        let message = Message::from_json(&value).expect("an event is a message");
        assert_eq!(
            message.decode::<ChatEvent>().map(|e| kind(&e)).ok(),
            Some(kind(&event))
        );
    }
    trail.finish()
}

/// The confusable key of a name: never empty for a visible name, and blind
/// to an invisible character appended.
fn check_fold(name: &str) {
    let key = usernames::fold(name);
    assert!(key.iter().all(|k| !k.is_empty()), "{name:?} folds to nothing");
    assert_eq!(usernames::fold(&format!("{name}\u{200b}")), key, "{name:?}");
}

fn kind(event: &ChatEvent) -> &'static str {
    match event {
        ChatEvent::Message { .. } => "chat_message",
        ChatEvent::Join { .. } => "user_join",
        ChatEvent::Leave { .. } => "user_leave",
        ChatEvent::Presence(_) => "presence",
    }
}

/// Re-encoding is stable, and the rendered frame is the protocol's JSON.
fn check_event(event: &ChatEvent) {
    let once = Message::encode(event).expect("an event encodes");
    let back: ChatEvent = once.decode().expect("an encoded event decodes");
    let twice = Message::encode(&back).expect("an event encodes");
    assert_eq!(
        once.as_bytes(),
        twice.as_bytes(),
        "decode-then-encode is not stable for {event:?}"
    );

    let frames = event_frames(event).expect("every chat event renders");
    if let ChatEvent::Presence(diff) = event {
        // A leave frame and a join frame at most, each naming someone;
        // rendered once for everyone when there is one.
        assert!(frames.len() <= 2 && frames.len() <= diff.joins.len() + diff.leaves.len());
        assert_eq!(ChatConsumer::render(event).is_some(), frames.len() == 1);
        for frame in frames {
            let WsMessage::Text(text) = frame else {
                panic!("a chat frame is text")
            };
            let json: serde_json::Value = serde_json::from_str(&text).expect("a chat frame is JSON");
            assert!(
                json["type"] == "user_join" || json["type"] == "user_leave",
                "{text}"
            );
            assert!(json["username"].as_str().is_some_and(|n| !n.is_empty()), "{text}");
            assert!(json["message"].is_string(), "{text}");
        }
        return;
    }
    assert_eq!(frames.len(), 1, "one frame for {event:?}");
    let frame = ChatConsumer::render(event).expect("every chat event but a presence change renders");
    let WsMessage::Text(text) = frame else {
        panic!("a chat frame is text")
    };
    let json: serde_json::Value = serde_json::from_str(&text).expect("a chat frame is JSON");
    assert_eq!(json["type"], kind(event), "{text}");
    match event {
        ChatEvent::Message {
            message, username, ..
        } => {
            assert_eq!(json["message"], message.as_str());
            assert_eq!(json["username"], username.as_str());
            assert!(json["ts"].is_i64() && json["id"].is_string(), "{text}");
            let verified = matches!(event, ChatEvent::Message { verified: true, .. });
            assert_eq!(json["verified"].as_bool().unwrap_or(false), verified, "{text}");
        }
        ChatEvent::Join {
            username,
            verified,
            users,
            ..
        }
        | ChatEvent::Leave {
            username,
            verified,
            users,
            ..
        } => {
            assert_eq!(json["username"], username.as_str());
            assert_eq!(json["verified"].as_bool().unwrap_or(false), *verified, "{text}");
            assert_eq!(
                json["users"].as_array().map_or(0, Vec::len),
                users.len(),
                "{text}"
            );
            assert!(json["message"].is_string(), "{text}");
        }
        ChatEvent::Presence(_) => unreachable!("handled above"),
    }
}

/// Tokens of chat frames, in JSON and msgpack.
pub const DICTIONARY: &[&[u8]] = &[
    b"\"message\"",
    b"\"username\"",
    b"\"type\"",
    b"\"chat.message\"",
    b"\"user.join\"",
    b"\"user.leave\"",
    b"\"id\"",
    b"\"ts\"",
    b"\"verified\"",
    b"\"users\"",
    b"\"presence.diff\"",
    b"\"joins\"",
    b"\"leaves\"",
    b"\"version\"",
    b"\"meta\"",
    b"\"group\"",
    b"\"__position__\"",
    b"\"offset\"",
    b"\"epoch\"",
    b"\\u202e",
    b"\\u200b",
    b"\\ufeff",
    b"\\u001b",
    b"\xe2\x80\x8b",
    b"\xd0\xb0lice",
    b"null",
    b"true",
    b"1e400",
    b"-9223372036854775809",
    b"9223372036854775807",
    b"\\u0000",
    b"\\ud800",
    b"\\u00e9",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"  ",
    b"\t",
    b"\xa4type",
    b"\xacchat.message",
    b"\xa7message",
    b"\xa8username",
    b"\xa2id",
    b"\xa2ts",
    b"\xa9user.join",
    b"\xaauser.leave",
    b"\xc0",
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",
    b"\xc4\x02\x00\x01",
    b"\x82",
    b"\x83",
    b"\x84",
];
