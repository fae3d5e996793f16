//! What goes over the wire: the events Estuary sends (msgpack on the
//! channel layer, JSON over HTTP), the scope inside them, and the messages
//! the application answers with.

use base64::Engine as _;
use bytes::Bytes;
use estuary_core::{Message, MessageError, Scope, WsMessage};
use rmpv::Value;
use serde::Deserialize;

/// The `type`s of the messages the application answers with.
pub(crate) const REPLY_TYPES: [&str; 4] = [
    "websocket.accept",
    "websocket.send",
    "websocket.close",
    "estuary.ack",
];

/// A message the application sends to a relayed connection (to its
/// channel, or in an HTTP answer), as the relay reads it: the relay's
/// [`Consumer::Event`](estuary_core::Consumer::Event).
///
/// Any other message that reaches the connection (a group's
/// `{"type": "chat.message", ...}`) is not one of these: it goes to the
/// application as an `estuary.event`.
///
/// ```
/// use estuary_core::Message;
/// use estuary_relay::Reply;
///
/// let ack = Message::from_json(&serde_json::json!({"type": "estuary.ack", "seq": 3, "state": {"n": 1}})).unwrap();
/// assert!(matches!(ack.decode::<Reply>().unwrap(), Reply::Ack { seq: 3, state: Some(_) }));
/// let other = Message::from_json(&serde_json::json!({"type": "chat.message", "text": "hi"})).unwrap();
/// assert!(other.decode::<Reply>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum Reply {
    /// `websocket.accept`: accept the handshake (while connecting).
    #[serde(rename = "websocket.accept")]
    Accept {
        /// The subprotocol to select, one the client offered.
        #[serde(default)]
        subprotocol: Option<String>,
    },
    /// `websocket.send`: a frame to the client.
    #[serde(rename = "websocket.send")]
    Send {
        /// A text frame.
        #[serde(default)]
        text: Option<String>,
        /// A binary frame (base64 in JSON).
        #[serde(default)]
        bytes: Option<Bin>,
    },
    /// `websocket.close`: close the connection (before accept: refuse it).
    #[serde(rename = "websocket.close")]
    Close {
        /// The close code (1000 when absent or not a code).
        #[serde(default)]
        code: Option<Value>,
        /// The reason.
        #[serde(default)]
        reason: Option<String>,
    },
    /// `estuary.ack`: the application is done with event `seq`.
    #[serde(rename = "estuary.ack")]
    Ack {
        /// The event acknowledged.
        seq: u64,
        /// The connection's new state, when given (a map).
        #[serde(default)]
        state: Option<Value>,
    },
}

impl Reply {
    /// The frame a `websocket.send` carries (text first, as ASGI has one
    /// of the two); `None` for anything else.
    pub fn frame(&self) -> Option<WsMessage> {
        match self {
            Reply::Send { text: Some(text), .. } => Some(WsMessage::text(text.clone())),
            Reply::Send {
                bytes: Some(Bin(bytes)),
                ..
            } => Some(WsMessage::binary(bytes.clone())),
            _ => None,
        }
    }

    /// The code of a `websocket.close`: 1000 when absent, or not a number
    /// from 1000 to 4999.
    pub(crate) fn close_code(code: Option<&Value>) -> u16 {
        code.and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (1000..=4999).contains(c))
            .unwrap_or(1000)
    }
}

/// Binary data in a reply: a msgpack byte string, or a base64 string in
/// JSON.
///
/// ```
/// use estuary_relay::Bin;
///
/// let from_json: Bin = serde_json::from_value(serde_json::json!("AAEC")).unwrap();
/// assert_eq!(from_json, Bin(vec![0, 1, 2].into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin(pub Bytes);

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bin;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes, or a base64 string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bin, E> {
                Ok(Bin(Bytes::from(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bin, E> {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(|b| Bin(Bytes::from(b)))
                    .map_err(|_| E::custom("bytes must be base64"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bin, A::Error> {
                let mut out = Vec::new();
                while let Some(byte) = seq.next_element::<u8>()? {
                    out.push(byte);
                }
                Ok(Bin(Bytes::from(out)))
            }
        }
        de.deserialize_any(Visitor)
    }
}

/// What an event carries besides the common keys.
pub(crate) enum Body<'a> {
    /// `websocket.connect`.
    Connect,
    /// `websocket.receive`.
    Receive(&'a WsMessage),
    /// `websocket.disconnect` with its code.
    Disconnect(u16),
    /// `estuary.event` with the message, as its msgpack.
    Event(&'a Message),
}

impl Body<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Body::Connect => "websocket.connect",
            Body::Receive(_) => "websocket.receive",
            Body::Disconnect(_) => "websocket.disconnect",
            Body::Event(_) => "estuary.event",
        }
    }
}

/// An event as msgpack: `type`, `channel`, `seq`, `scope` and `state`
/// (spliced from their encoded bytes), then the body's keys.
pub(crate) fn event(
    body: &Body<'_>,
    channel: &str,
    seq: u64,
    scope: &[u8],
    state: &[u8],
) -> Result<Message, MessageError> {
    use rmp::encode::{write_bin, write_map_len, write_str, write_uint};
    let extra = match body {
        Body::Connect => 0,
        Body::Receive(_) | Body::Disconnect(_) | Body::Event(_) => 1,
    };
    let payload = match body {
        Body::Receive(m) => m.len(),
        Body::Event(m) => m.as_bytes().len(),
        _ => 0,
    };
    let mut buf = Vec::with_capacity(64 + channel.len() + scope.len() + state.len() + payload);
    // Writes into a Vec cannot fail.
    let _ = write_map_len(&mut buf, 5 + extra);
    let _ = write_str(&mut buf, "type");
    let _ = write_str(&mut buf, body.kind());
    let _ = write_str(&mut buf, "channel");
    let _ = write_str(&mut buf, channel);
    let _ = write_str(&mut buf, "seq");
    let _ = write_uint(&mut buf, seq);
    let _ = write_str(&mut buf, "scope");
    buf.extend_from_slice(scope);
    let _ = write_str(&mut buf, "state");
    buf.extend_from_slice(state);
    match body {
        Body::Connect => {}
        Body::Receive(WsMessage::Text(text)) => {
            let _ = write_str(&mut buf, "text");
            let _ = write_str(&mut buf, text);
        }
        Body::Receive(WsMessage::Binary(bytes)) => {
            let _ = write_str(&mut buf, "bytes");
            let _ = write_bin(&mut buf, bytes);
        }
        Body::Disconnect(code) => {
            let _ = write_str(&mut buf, "code");
            let _ = write_uint(&mut buf, u64::from(*code));
        }
        Body::Event(message) => {
            let _ = write_str(&mut buf, "event");
            buf.extend_from_slice(message.as_bytes());
        }
    }
    Message::from_msgpack(Bytes::from(buf))
}

/// What of the route the scope needs: its declared query parameters with
/// their defaults, and which path parameters are integers.
pub(crate) struct ScopeRules<'a> {
    pub(crate) query: &'a [(String, String)],
    pub(crate) int_params: &'a [String],
}

/// The connection's scope as msgpack (the map a Channels consumer reads as
/// `self.scope`); with `headers` only for `websocket.connect`.
pub(crate) fn scope(scope: &Scope, groups: &[String], rules: &ScopeRules<'_>, headers: bool) -> Bytes {
    let text = |s: &str| Value::from(s);
    let mut map: Vec<(Value, Value)> = Vec::with_capacity(13);
    map.push((text("type"), text("websocket")));
    map.push((text("scheme"), text(scope.scheme())));
    map.push((text("path"), text(scope.path())));
    map.push((text("root_path"), text(scope.root_path())));
    map.push((
        text("query_string"),
        Value::Binary(scope.query_string().as_bytes().to_vec()),
    ));
    let query = rules
        .query
        .iter()
        .map(|(name, default)| {
            let value = scope.query_param(name).unwrap_or(default);
            (text(name), text(value))
        })
        .collect();
    map.push((text("query"), Value::Map(query)));
    let kwargs = scope
        .params()
        .map(|(name, value)| {
            let converted = match value.parse::<i64>() {
                Ok(n) if rules.int_params.iter().any(|p| p == name) => Value::from(n),
                _ => text(value),
            };
            (text(name), converted)
        })
        .collect();
    map.push((
        text("url_route"),
        Value::Map(vec![
            (text("args"), Value::Array(Vec::new())),
            (text("kwargs"), Value::Map(kwargs)),
        ]),
    ));
    let user = match scope.user() {
        None => Value::Nil,
        Some(user) => Value::Map(vec![
            (text("id"), text(user.id())),
            (text("name"), text(user.name())),
            (
                text("attributes"),
                rmpv::ext::to_value(user.attributes()).unwrap_or(Value::Map(Vec::new())),
            ),
        ]),
    };
    map.push((text("user"), user));
    map.push((
        text("groups"),
        Value::Array(groups.iter().map(|g| text(g)).collect()),
    ));
    map.push((
        text("subprotocols"),
        Value::Array(scope.subprotocols().iter().map(|p| text(p)).collect()),
    ));
    if headers {
        let pairs = scope
            .header_pairs()
            .filter(|(name, _)| *name != "cookie" && *name != "authorization")
            .map(|(name, value)| {
                Value::Array(vec![
                    Value::Binary(name.as_bytes().to_vec()),
                    Value::Binary(value.to_vec()),
                ])
            })
            .collect();
        map.push((text("headers"), Value::Array(pairs)));
    }
    let client = match scope.client() {
        None => Value::Nil,
        Some(addr) => Value::Array(vec![Value::from(addr.ip().to_string()), Value::from(addr.port())]),
    };
    map.push((text("client"), client));
    encode_value(&Value::Map(map))
}

/// The msgpack of `value`.
pub(crate) fn encode_value(value: &Value) -> Bytes {
    let mut buf = Vec::new();
    // Writes into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut buf, value);
    Bytes::from(buf)
}

/// The empty state: a msgpack map with nothing in it.
pub(crate) const EMPTY_STATE: &[u8] = &[0x80];

/// The key a byte string is tagged with inside an `estuary.event`'s
/// `event` over HTTP: `{"$bytes": "<base64>"}`.
pub(crate) const BYTES_TAG: &str = "$bytes";

/// An event (msgpack) as the JSON of an HTTP request, plus `time` (Unix
/// seconds). Byte strings: the `bytes` of `websocket.receive` in base64,
/// the scope's (query string, headers) as text, and every one inside an
/// `estuary.event`'s `event` (an application's message, whatever its
/// shape) as `{"$bytes": "<base64>"}`, at any depth, so that the view
/// gets back the bytes a worker would (docs/WORKERS.md).
pub(crate) fn to_json(message: &Message, time: u64) -> serde_json::Value {
    let mut json = match message.to_value() {
        Value::Map(pairs) => serde_json::Value::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let name = key_of(k);
                    let value = if name == "event" {
                        tagged_json_of(v)
                    } else {
                        json_of(v, Some(&name))
                    };
                    (name, value)
                })
                .collect(),
        ),
        other => json_of(&other, None),
    };
    if let serde_json::Value::Object(map) = &mut json {
        map.insert("time".into(), time.into());
    }
    json
}

/// A map key as JSON has them: a string.
fn key_of(key: &Value) -> String {
    match key {
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => json_of(other, None).to_string(),
    }
}

/// A scalar as JSON, `None` for byte strings, arrays and maps.
fn scalar_json_of(value: &Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match value {
        Value::Nil | Value::Ext(..) => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(n) => n
            .as_i64()
            .map(J::from)
            .or_else(|| n.as_u64().map(J::from))
            .unwrap_or(J::Null),
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(_) | Value::Array(_) | Value::Map(_) => return None,
    })
}

/// The protocol's own keys: byte strings under a `bytes` key in base64,
/// others (the scope's) as text.
fn json_of(value: &Value, key: Option<&str>) -> serde_json::Value {
    use serde_json::Value as J;
    if let Some(scalar) = scalar_json_of(value) {
        return scalar;
    }
    match value {
        Value::Binary(b) if key == Some("bytes") => {
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Value::Binary(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::Array(items) => J::Array(items.iter().map(|v| json_of(v, None)).collect()),
        Value::Map(pairs) => J::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let name = key_of(k);
                    let value = json_of(v, Some(&name));
                    (name, value)
                })
                .collect(),
        ),
        _ => J::Null,
    }
}

/// An application's message: every byte string as `{"$bytes": "<base64>"}`.
fn tagged_json_of(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    if let Some(scalar) = scalar_json_of(value) {
        return scalar;
    }
    match value {
        Value::Binary(b) => {
            let mut tagged = serde_json::Map::new();
            tagged.insert(
                BYTES_TAG.into(),
                J::String(base64::engine::general_purpose::STANDARD.encode(b)),
            );
            J::Object(tagged)
        }
        Value::Array(items) => J::Array(items.iter().map(tagged_json_of).collect()),
        Value::Map(pairs) => J::Object(
            pairs
                .iter()
                .map(|(k, v)| (key_of(k), tagged_json_of(v)))
                .collect(),
        ),
        _ => J::Null,
    }
}

/// An acknowledgement's state as msgpack, when it is a map.
pub(crate) fn state_bytes(state: Option<rmpv::Value>) -> Option<Bytes> {
    match state? {
        value @ rmpv::Value::Map(_) => Some(encode_value(&value)),
        rmpv::Value::Nil => None,
        _ => {
            estuary_core::throttled!(
                warn,
                "estuary.ack with a state that is not a map; state kept (fix the worker: send a dict as state)"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> (Vec<(String, String)>, Vec<String>) {
        (vec![("page".into(), "1".into())], vec!["id".into()])
    }

    #[test]
    fn an_event_is_a_checked_message_with_the_common_keys_and_its_own() {
        let (query, ints) = rules();
        let scope = Scope::builder("/ws/items/7/")
            .query_string("x=y")
            .param("id", "7")
            .param("slug", "12")
            .build();
        let scope = super::scope(
            &scope,
            &["g".into()],
            &ScopeRules {
                query: &query,
                int_params: &ints,
            },
            false,
        );
        let text = WsMessage::text("hi");
        let message = event(&Body::Receive(&text), "specific.a!b", 4, &scope, EMPTY_STATE).unwrap();
        assert_eq!(message.message_type(), "websocket.receive");
        let json = to_json(&message, 0);
        assert_eq!(json["seq"], 4);
        assert_eq!(json["text"], "hi");
        assert_eq!(json["channel"], "specific.a!b");
        assert_eq!(json["state"], serde_json::json!({}));
        assert_eq!(json["scope"]["query"], serde_json::json!({"page": "1"}));
        assert_eq!(
            json["scope"]["url_route"],
            serde_json::json!({"args": [], "kwargs": {"id": 7, "slug": "12"}}),
            "only declared integers are converted"
        );
        assert!(json["scope"].get("headers").is_none());
        let value = message.to_value();
        let scope_map = value
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_str() == Some("scope"))
            .unwrap();
        let query_string = scope_map
            .1
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_str() == Some("query_string"))
            .unwrap();
        assert_eq!(
            query_string.1,
            Value::Binary(b"x=y".to_vec()),
            "bytes, as ASGI has it"
        );
    }

    #[test]
    fn binary_frames_are_bytes_in_msgpack_and_base64_in_json() {
        let frame = WsMessage::binary(vec![0u8, 1, 2]);
        let message = event(&Body::Receive(&frame), "c", 1, EMPTY_STATE, EMPTY_STATE).unwrap();
        let json = to_json(&message, 42);
        assert_eq!(json["bytes"], "AAEC");
        assert_eq!(json["time"], 42);
    }

    #[test]
    fn a_forwarded_message_is_spliced_whole() {
        let inner = Message::from_json(&serde_json::json!({"type": "chat.message", "n": [1, 2]})).unwrap();
        let message = event(&Body::Event(&inner), "c", 2, EMPTY_STATE, EMPTY_STATE).unwrap();
        assert_eq!(
            message.to_json()["event"],
            serde_json::json!({"type": "chat.message", "n": [1, 2]})
        );
    }

    #[test]
    fn over_http_every_byte_string_of_a_forwarded_message_is_tagged_base64() {
        let inner = Value::Map(vec![
            ("type".into(), "file.chunk".into()),
            ("data".into(), Value::Binary(vec![0, 255])),
            ("bytes".into(), Value::Binary(vec![1])),
            (
                "list".into(),
                Value::Array(vec![Value::Binary(vec![2]), "text".into()]),
            ),
            (
                "nested".into(),
                Value::Map(vec![("deep".into(), Value::Binary(vec![3]))]),
            ),
            ("text".into(), "hi".into()),
        ]);
        let inner = Message::from_msgpack(encode_value(&inner)).unwrap();
        let message = event(&Body::Event(&inner), "c", 2, EMPTY_STATE, EMPTY_STATE).unwrap();
        assert_eq!(
            to_json(&message, 0)["event"],
            serde_json::json!({
                "type": "file.chunk",
                "data": {"$bytes": "AP8="},
                "bytes": {"$bytes": "AQ=="},
                "list": [{"$bytes": "Ag=="}, "text"],
                "nested": {"deep": {"$bytes": "Aw=="}},
                "text": "hi",
            })
        );
    }

    #[test]
    fn headers_come_only_with_connect_and_never_cookies_or_authorization() {
        let mut headers = http::HeaderMap::new();
        headers.insert("origin", "https://example.org".parse().unwrap());
        headers.insert("cookie", "sessionid=secret".parse().unwrap());
        headers.insert("authorization", "Bearer secret".parse().unwrap());
        let scope = Scope::builder("/ws/").headers(headers).build();
        let bytes = super::scope(
            &scope,
            &[],
            &ScopeRules {
                query: &[],
                int_params: &[],
            },
            true,
        );
        let message = event(&Body::Connect, "c", 0, &bytes, EMPTY_STATE).unwrap();
        let json = to_json(&message, 0);
        assert_eq!(
            json["scope"]["headers"],
            serde_json::json!([["origin", "https://example.org"]])
        );
    }

    #[test]
    fn replies_decode_from_msgpack_and_json_alike() {
        let send =
            Message::from_json(&serde_json::json!({"type": "websocket.send", "text": "hi", "bytes": null}))
                .unwrap();
        let reply: Reply = send.decode().unwrap();
        assert_eq!(reply.frame(), Some(WsMessage::text("hi")));
        let json: Reply =
            serde_json::from_value(serde_json::json!({"type": "websocket.send", "bytes": "AAEC"})).unwrap();
        assert_eq!(json.frame(), Some(WsMessage::binary(vec![0u8, 1, 2])));
        let close: Reply =
            serde_json::from_value(serde_json::json!({"type": "websocket.close", "code": 4000})).unwrap();
        let Reply::Close { code, .. } = close else {
            panic!()
        };
        assert_eq!(Reply::close_code(code.as_ref()), 4000);
        assert_eq!(Reply::close_code(None), 1000);
        assert_eq!(Reply::close_code(Some(&Value::from(99_999))), 1000);
        assert_eq!(Reply::close_code(Some(&Value::from(true))), 1000);
    }
}
