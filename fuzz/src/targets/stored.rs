//! Stored layer messages: what a channel layer reads back from Redis, where
//! any process (or anyone with access) may have written any value. A hostile
//! member must be an error, never a panic.
//!
//! `Message::from_msgpack` and its accessors run on the member's body;
//! the Redis codec's `decode_member` runs on the whole member, plain and
//! with a fixed Fernet key; and the body is also encrypted with that key and
//! decoded again, so that the decoder behind the decryption sees the same
//! hostile msgpack.
//!
//! Input: a sorted-set member (12 bytes of prefix, then the body).

use std::sync::OnceLock;

use bytes::Bytes;
use estuary_core::{ChannelName, Message};
use estuary_redis::fuzzing::{Keys, decode_member, encode_member};

use crate::Trail;

/// The key the encrypted corpus entries were made with.
pub const KEY: &str = "estuary-fuzz-key";

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys::new(&[KEY]).expect("a key"))
}

/// Runs one input.
pub fn run(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let body = data.get(12..).unwrap_or_default();
    for bytes in [data, body] {
        if let Ok(message) = Message::from_msgpack(Bytes::copy_from_slice(bytes)) {
            trail.note("message");
            check_message(&message);
        }
    }

    let plain = decode_member(data, None);
    trail.note((
        "plain",
        plain.as_ref().map(|(_, t)| t.len().min(3)).map_err(|e| e.clone()),
    ));
    let encrypted = decode_member(data, Some(keys()));
    trail.note(("encrypted", encrypted.is_ok()));
    if let Ok((message, targets)) = &encrypted {
        check_message(message);
        check_round_trip(message, targets, Some(keys()));
    }
    if let Ok((message, targets)) = &plain {
        check_message(message);
        check_round_trip(message, targets, None);
        check_round_trip(message, targets, Some(keys()));
    }
    // The same body behind encryption decodes to the same thing.
    if data.len() >= 12 {
        let mut member = data[..12].to_vec();
        member.extend_from_slice(&keys().encrypt(body));
        let behind = decode_member(&member, Some(keys()));
        match (&plain, &behind) {
            (Ok((m1, t1)), Ok((m2, t2))) => {
                assert_eq!(m1.as_bytes(), m2.as_bytes());
                assert_eq!(t1, t2);
            }
            (Err(e1), Err(e2)) => assert_eq!(e1, e2),
            (p, b) => panic!("plain {p:?} but behind encryption {b:?}"),
        }
    }
    trail.finish()
}

/// The accessors of a message that passed `from_msgpack` never fail.
fn check_message(message: &Message) {
    let kind = message.message_type().to_owned();
    assert!(!message.as_bytes().is_empty());
    let value = message.to_value();
    let map = value.as_map().expect("a message is a map");
    let found = map
        .iter()
        .find(|(k, _)| k.as_str() == Some("type"))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned);
    // With a duplicated key, `message_type` names the last one.
    if map.iter().filter(|(k, _)| k.as_str() == Some("type")).count() == 1 {
        assert_eq!(found.as_deref(), Some(kind.as_str()));
    }
    let _ = message.decode::<serde_json::Value>();
    let _ = message.decode::<rmpv::Value>();
    let _ = message.to_json();
    let _ = format!("{message:?}");
}

/// Encoding the decoded message for its targets and decoding it again gives
/// it back.
fn check_round_trip(message: &Message, targets: &[ChannelName], keys: Option<&Keys>) {
    for as_array in [false, true] {
        let member = encode_member(message, targets, as_array, keys);
        let (again, back) = decode_member(&member, keys).expect("an encoded member decodes");
        assert_eq!(again.as_bytes(), message.as_bytes());
        assert_eq!(back, targets);
    }
}

/// msgpack markers and the strings channels_redis writes.
pub const DICTIONARY: &[&[u8]] = &[
    b"\xa4type",
    b"\xb0__asgi_channel__",
    b"\xacchat.message",
    b"\xa7message",
    b"\x91",
    b"\x92",
    b"\x9f",
    b"\xdc\xff\xff",
    b"\xdd\xff\xff\xff\xff",
    b"\xde\x00\x10",
    b"\xdf\xff\xff\xff\xff",
    b"\x80",
    b"\x81",
    b"\x8f",
    b"\xd9\x4a",
    b"\xda\xff\xff",
    b"\xdb\xff\xff\xff\xff",
    b"\xc4\x02\x00\x01",
    b"\xc5\xff\xff",
    b"\xc6\xff\xff\xff\xff",
    b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00",
    b"\xca\x7f\xc0\x00\x00",
    b"\xc0",
    b"\xc1",
    b"\xc2",
    b"\xc3",
    b"\xd4\x01\x00",
    b"\xc7\x00\xff",
    b"\xd6\xff\x00\x00\x00\x00",
    b"\xcf",
    b"\xd3",
    b"\x7f",
    b"\xe0",
    b"specific.abc!def",
    b"\xa3a!b",
    b"gAAAAA",
    b"RUSTRUSTRUST",
];
