//! Channel-layer messages: a msgpack map with a `type`, encoded once.

use std::any::TypeId;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::position::StreamPosition;
use crate::ws::WsMessage;

/// Why a value cannot be a channel-layer message, or a message cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The value did not serialize to msgpack.
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The message did not decode into the requested type.
    #[error("cannot decode message of type {:?} into {into}: {source}", .message.message_type())]
    Decode {
        /// The message (its [`message_type`](Message::message_type) says
        /// which it was; a clone shares the original's bytes).
        message: Message,
        /// The Rust type asked for ([`std::any::type_name`]).
        into: &'static str,
        /// What the decoder said.
        source: rmp_serde::decode::Error,
    },
    /// The value is not a map, or has no string `type` field, or uses the key
    /// reserved for channel layers.
    #[error("a message must be a map with a string \"type\" field ({0})")]
    Shape(&'static str),
}

/// One channel-layer message: a msgpack map with string keys and a string
/// `"type"` field, exactly what Django Channels passes to `group_send`.
///
/// The message is encoded once, when it is made, and then shared: cloning it
/// bumps a reference count, so a group send hands every member the same
/// allocation (and the frame a consumer renders from it once, see
/// [`Consumer::render`](crate::Consumer::render)). Consumers decode it into
/// their own serde type; msgpack
/// keeps the difference between text and byte strings, so a message survives a
/// round trip through a Python process unchanged.
///
/// ```
/// use estuary_core::Message;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// #[serde(tag = "type", rename = "chat.message")]
/// struct ChatMessage { message: String, username: String }
///
/// let msg = Message::encode(&ChatMessage { message: "hi".into(), username: "ann".into() }).unwrap();
/// assert_eq!(msg.message_type(), "chat.message");
/// let back: ChatMessage = msg.decode().unwrap();
/// assert_eq!(back.username, "ann");
/// ```
#[derive(Clone)]
pub struct Message {
    inner: Arc<Inner>,
}

struct Inner {
    bytes: Bytes,
    /// Byte range of the `type` string inside `bytes`.
    type_at: (u32, u32),
    /// What the first consumer to handle this message rendered from it, for
    /// every other member of the same consumer type (see [`Message::rendered`]).
    rendered: OnceLock<Rendered>,
    /// What a channel layer counts for this message against its bound,
    /// given back when the last clone is dropped (see [`Charge`]).
    charge: OnceLock<Charge>,
    /// The recorded position, read from `bytes` once (every member of a
    /// group send asks it when its connection skips what it recovered).
    position: OnceLock<Option<StreamPosition>>,
}

/// Bytes a channel layer counts against its bound
/// ([`ChannelLayerConfig::max_bytes`](crate::ChannelLayerConfig::max_bytes))
/// for as long as a message lives: kept with the message, so that one
/// message shared by many queues is counted once, and given back when its
/// last clone is dropped, wherever that is (a queue, a session handling
/// it, the producer).
pub(crate) struct Charge {
    bytes: usize,
    held: Arc<AtomicUsize>,
}

impl Charge {
    /// `bytes`, already added to `held`.
    pub(crate) fn new(bytes: usize, held: Arc<AtomicUsize>) -> Self {
        Self { bytes, held }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A frame rendered once from a message, and by which consumer type.
struct Rendered {
    by: TypeId,
    frame: WsMessage,
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.inner.bytes == other.inner.bytes
    }
}

impl Eq for Message {}

/// How a consumer handles one message: with a frame rendered once for every
/// member, with its own event handler, or as undecodable.
pub(crate) enum Handling<E> {
    Frame(WsMessage),
    Event(E),
    Undecodable(MessageError),
}

/// The key channel layers use to address a message inside a shared queue.
pub const RESERVED_KEY: &str = "__asgi_channel__";

/// The key under which a recording layer puts a group message's position
/// ([`StreamPosition`], as `{"offset": 17, "epoch": "k3vQ9cXa"}`): see
/// [`Message::position`] and the [history model](crate::layer::history).
///
/// ```
/// use estuary_core::{Epoch, Message, POSITION_KEY, StreamPosition};
///
/// let msg = Message::from_json(&serde_json::json!({"type": "note"})).unwrap();
/// let kept = msg.with_position(StreamPosition::new(3, Epoch::random()));
/// assert_eq!(kept.to_json()[POSITION_KEY]["offset"], 3);
/// ```
pub const POSITION_KEY: &str = "__position__";

impl Message {
    /// Encodes a serde value as a message (structs as maps, as Python reads them).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, MessageError> {
        let bytes = rmp_serde::to_vec_named(value)?;
        Self::from_msgpack(Bytes::from(bytes))
    }

    /// Converts a JSON object (for example the body of an HTTP push) into a message.
    ///
    /// ```
    /// use estuary_core::Message;
    ///
    /// let msg = Message::from_json(&serde_json::json!({"type": "note", "n": 1})).unwrap();
    /// assert_eq!(msg.message_type(), "note");
    /// assert!(Message::from_json(&serde_json::json!([1, 2])).is_err());
    /// ```
    pub fn from_json(value: &serde_json::Value) -> Result<Self, MessageError> {
        if !value.is_object() {
            return Err(MessageError::Shape("not an object"));
        }
        Self::encode(value)
    }

    /// Wraps msgpack bytes that hold a map with a string `type`, after checking them.
    pub fn from_msgpack(bytes: Bytes) -> Result<Self, MessageError> {
        let type_at = find_type(&bytes)?;
        Ok(Self {
            inner: Arc::new(Inner {
                bytes,
                type_at,
                rendered: OnceLock::new(),
                charge: OnceLock::new(),
                position: OnceLock::new(),
            }),
        })
    }

    /// The message's `type` field, such as `"chat.message"`.
    pub fn message_type(&self) -> &str {
        let (start, end) = self.inner.type_at;
        // The range was checked to be UTF-8 when the message was made.
        std::str::from_utf8(&self.inner.bytes[start as usize..end as usize]).unwrap_or_default()
    }

    /// Decodes the message into a serde type: usually a consumer's event enum,
    /// tagged with `#[serde(tag = "type")]`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, MessageError> {
        rmp_serde::from_slice(&self.inner.bytes).map_err(|source| MessageError::Decode {
            message: self.clone(),
            into: std::any::type_name::<T>(),
            source,
        })
    }

    /// Decodes the message into a dynamic msgpack value.
    pub fn to_value(&self) -> rmpv::Value {
        // Checked to be a well-formed map when the message was made.
        rmpv::decode::read_value(&mut &self.inner.bytes[..]).unwrap_or(rmpv::Value::Nil)
    }

    /// Renders the message as JSON (byte strings become arrays of numbers).
    pub fn to_json(&self) -> serde_json::Value {
        self.decode().unwrap_or(serde_json::Value::Null)
    }

    /// The encoded msgpack bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.inner.bytes
    }

    /// The encoded msgpack bytes, by value.
    pub fn into_bytes(self) -> Bytes {
        self.inner.bytes.clone()
    }

    /// The message with its position under [`POSITION_KEY`] (what a
    /// recording layer delivers and keeps). The map's other entries are
    /// copied as they are, not decoded; a position the message held already
    /// is replaced.
    ///
    /// ```
    /// use estuary_core::{Epoch, Message, StreamPosition};
    ///
    /// let msg = Message::from_json(&serde_json::json!({"type": "chat.message", "text": "hi"})).unwrap();
    /// assert_eq!(msg.position(), None);
    /// let at = StreamPosition::new(7, Epoch::random());
    /// let recorded = msg.with_position(at);
    /// assert_eq!(recorded.position(), Some(at));
    /// assert_eq!(recorded.to_json()["text"], "hi");
    /// assert_eq!(recorded.to_json()["__position__"]["offset"], 7);
    /// ```
    pub fn with_position(&self, position: StreamPosition) -> Message {
        let bytes = &self.inner.bytes[..];
        let Some((count, body, held)) = top_level(bytes, POSITION_KEY) else {
            return self.clone();
        };
        let mut out = Vec::with_capacity(bytes.len() + 40);
        let count = count - u32::from(held.is_some()) + 1;
        // Writing to a Vec cannot fail.
        let _ = rmp::encode::write_map_len(&mut out, count);
        match held {
            Some((start, end)) => {
                out.extend_from_slice(&bytes[body..start]);
                out.extend_from_slice(&bytes[end..]);
            }
            None => out.extend_from_slice(&bytes[body..]),
        }
        let _ = rmp::encode::write_str(&mut out, POSITION_KEY);
        let _ = rmp::encode::write_map_len(&mut out, 2);
        let _ = rmp::encode::write_str(&mut out, "offset");
        let _ = rmp::encode::write_uint(&mut out, position.offset);
        let _ = rmp::encode::write_str(&mut out, "epoch");
        let _ = rmp::encode::write_str(&mut out, position.epoch.as_str());
        Message::from_msgpack(Bytes::from(out)).unwrap_or_else(|_| self.clone())
    }

    /// The position a recording layer gave this message (its
    /// [`POSITION_KEY`] entry), if it has a well-formed one.
    pub fn position(&self) -> Option<StreamPosition> {
        *self.inner.position.get_or_init(|| self.read_position())
    }

    fn read_position(&self) -> Option<StreamPosition> {
        let bytes = &self.inner.bytes[..];
        let (_, _, held) = top_level(bytes, POSITION_KEY)?;
        let (start, end) = held?;
        let mut entry = &bytes[start..end];
        let _ = rmp::decode::read_str_len(&mut entry).ok()?;
        let value = &entry[POSITION_KEY.len()..];
        rmp_serde::from_slice(value).ok()
    }

    /// True once a channel layer counts this message against its bound.
    pub(crate) fn is_charged(&self) -> bool {
        self.inner.charge.get().is_some()
    }

    /// Keeps `charge` until the last clone is dropped; a message charged
    /// already keeps its first (and `charge` is given back at once).
    pub(crate) fn keep_charge(&self, charge: Charge) {
        let _ = self.inner.charge.set(charge);
    }

    /// Decides how consumer type `K` handles this message. The first member
    /// of type `K` to render a frame from it keeps the frame with the
    /// message; every other member of type `K` (a group send shares one
    /// message between them) takes that frame and neither decodes nor
    /// renders. One frame is kept per message: members of a second rendering
    /// type in the same group render on their own. A message that `render`
    /// declines is decoded by each member for its own handler, and takes no
    /// place.
    pub(crate) fn rendered<K: 'static, E: DeserializeOwned>(
        &self,
        render: fn(&E) -> Option<WsMessage>,
    ) -> Handling<E> {
        let by = TypeId::of::<K>();
        let kept = |memo: &Rendered| (memo.by == by).then(|| memo.frame.clone());
        if let Some(frame) = self.inner.rendered.get().and_then(kept) {
            return Handling::Frame(frame);
        }
        let event = match self.decode::<E>() {
            Ok(event) => event,
            Err(error) => return Handling::Undecodable(error),
        };
        let Some(frame) = render(&event) else {
            return Handling::Event(event);
        };
        match self.inner.rendered.set(Rendered {
            by,
            frame: frame.clone(),
        }) {
            Ok(()) => Handling::Frame(frame),
            // Another member rendered it meanwhile (on another thread):
            // send its frame, so that every member sends the same bytes.
            Err(_) => Handling::Frame(self.inner.rendered.get().and_then(kept).unwrap_or(frame)),
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("type", &self.message_type())
            .field("len", &self.inner.bytes.len())
            .finish()
    }
}

/// Walks the top-level map once: checks it is a map with string keys, finds a
/// string `type`, refuses the reserved key, and checks nothing trails the map.
fn find_type(bytes: &[u8]) -> Result<(u32, u32), MessageError> {
    use rmp::decode;
    let mut rd = bytes;
    let len = decode::read_map_len(&mut rd).map_err(|_| MessageError::Shape("not a map"))?;
    let mut type_at = None;
    for _ in 0..len {
        let key_len = decode::read_str_len(&mut rd)
            .map_err(|_| MessageError::Shape("map keys must be strings"))? as usize;
        if rd.len() < key_len {
            return Err(MessageError::Shape("truncated"));
        }
        let (key, rest) = rd.split_at(key_len);
        rd = rest;
        if key == RESERVED_KEY.as_bytes() {
            return Err(MessageError::Shape("\"__asgi_channel__\" is reserved"));
        }
        if key == b"type" {
            let value_len = decode::read_str_len(&mut rd)
                .map_err(|_| MessageError::Shape("\"type\" is not a string"))?
                as usize;
            if rd.len() < value_len || std::str::from_utf8(&rd[..value_len]).is_err() {
                return Err(MessageError::Shape("\"type\" is not valid text"));
            }
            let start = bytes.len() - rd.len();
            type_at = Some((start as u32, (start + value_len) as u32));
            rd = &rd[value_len..];
        } else {
            skip_value(&mut rd)?;
        }
    }
    if !rd.is_empty() {
        return Err(MessageError::Shape("trailing bytes"));
    }
    type_at.ok_or(MessageError::Shape("no \"type\""))
}

/// A top-level map as [`top_level`] finds it: its entry count, where its
/// first entry starts, and the byte range (key and value) of the entry
/// looked for, if it is there.
type TopLevel = (u32, usize, Option<(usize, usize)>);

/// Walks a top-level map, looking for the entry whose key is `key`.
fn top_level(bytes: &[u8], key: &str) -> Option<TopLevel> {
    let mut rd = bytes;
    let count = rmp::decode::read_map_len(&mut rd).ok()?;
    let body = bytes.len() - rd.len();
    let mut found = None;
    for _ in 0..count {
        let start = bytes.len() - rd.len();
        let key_len = rmp::decode::read_str_len(&mut rd).ok()? as usize;
        let this = rd.get(..key_len)?;
        rd = &rd[key_len..];
        skip_value(&mut rd).ok()?;
        if this == key.as_bytes() {
            found = Some((start, bytes.len() - rd.len()));
        }
    }
    Some((count, body, found))
}

fn skip_value(rd: &mut &[u8]) -> Result<(), MessageError> {
    rmpv::decode::read_value_ref(rd)
        .map(|_| ())
        .map_err(|_| MessageError::Shape("malformed msgpack"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn a_decode_error_names_the_message_type_and_the_rust_type() {
        #[derive(Debug, Deserialize)]
        struct Wanted {
            #[allow(dead_code)]
            count: u32,
        }
        let msg = Message::from_json(&serde_json::json!({"type": "chat.message", "count": "x"})).unwrap();
        let error = msg.decode::<Wanted>().unwrap_err();
        let MessageError::Decode { message, into, .. } = &error else {
            panic!("not a decode error: {error:?}");
        };
        assert_eq!(message.message_type(), "chat.message");
        assert!(into.ends_with("Wanted"), "{into}");
        let text = error.to_string();
        assert!(
            text.starts_with("cannot decode message of type \"chat.message\" into ")
                && text.contains("Wanted: "),
            "{text}"
        );
        assert!(std::error::Error::source(&error).is_some());
    }

    #[test]
    fn finds_type_anywhere_in_the_map() {
        let msg = Message::from_json(&serde_json::json!({"a": [1, {"b": 2}], "type": "x.y"})).unwrap();
        assert_eq!(msg.message_type(), "x.y");
    }

    #[test]
    fn rejects_bad_shapes() {
        for v in [
            serde_json::json!({"no": "type"}),
            serde_json::json!({"type": 1}),
            serde_json::json!({"type": "a", "__asgi_channel__": "x"}),
            serde_json::json!("text"),
        ] {
            assert!(Message::from_json(&v).is_err(), "{v}");
        }
        assert!(Message::from_msgpack(Bytes::from_static(b"\x81\xa4type\xa1x\x00")).is_err());
        assert!(Message::from_msgpack(Bytes::from_static(b"\x81\xa4type")).is_err());
        assert!(Message::from_msgpack(Bytes::new()).is_err());
    }

    #[test]
    fn keeps_bytes_and_text_apart() {
        #[derive(Serialize, Deserialize)]
        struct M {
            #[serde(rename = "type")]
            kind: String,
            #[serde(with = "serde_bytes_compat")]
            blob: Vec<u8>,
        }
        mod serde_bytes_compat {
            pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(v)
            }
            pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
                let v = <rmpv::Value as serde::Deserialize>::deserialize(d)?;
                match v {
                    rmpv::Value::Binary(b) => Ok(b),
                    _ => Err(serde::de::Error::custom("expected bin")),
                }
            }
        }
        use serde::Serialize;
        let msg = Message::encode(&M {
            kind: "t".into(),
            blob: vec![0, 1],
        })
        .unwrap();
        // fixmap(2) "type" "t" "blob" bin8(2) 00 01
        assert_eq!(&msg.as_bytes()[..], b"\x82\xa4type\xa1t\xa4blob\xc4\x02\x00\x01");
        let back: M = msg.decode().unwrap();
        assert_eq!(back.blob, vec![0, 1]);
    }
}
