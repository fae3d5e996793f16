//! channels_redis's `serializer_format`: how a message's bytes are written
//! in Redis, `msgpack` (the default) or `json`.
//!
//! channels_redis 4.3 serializes the message dict (with
//! `__asgi_channel__`) with the format, then encrypts the result with the
//! first of `symmetric_encryption_keys` (Fernet), then puts the random
//! prefix in front (core layer only). Estuary holds every message as
//! msgpack; with `json` it writes the same map as JSON at that step and
//! reads JSON back into msgpack, so every process sharing the layer must
//! agree on the format (as on the keys).

use std::fmt;
use std::str::FromStr;

use estuary_core::Message;
use rmpv::Value as Pack;
use serde_json::Value as Json;

/// channels_redis's `serializer_format`: the form of a message in Redis.
///
/// ```
/// use estuary_redis::{RedisConfig, SerializerFormat};
///
/// let config = RedisConfig::new(["redis://127.0.0.1:6379/0"]).with_serializer_format(SerializerFormat::Json);
/// assert_eq!(config.serializer_format(), SerializerFormat::Json);
/// assert_eq!("msgpack".parse::<SerializerFormat>(), Ok(SerializerFormat::Msgpack));
/// assert_eq!(SerializerFormat::default().to_string(), "msgpack");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum SerializerFormat {
    /// msgpack (channels_redis's default): every message Estuary can hold.
    #[default]
    Msgpack,
    /// JSON (UTF-8): a message with bytes, a map key that is not a string,
    /// or a float that is not finite cannot be sent (as Python's
    /// `json.dumps` refuses bytes); the send fails with
    /// [`ChannelLayerError::Corrupt`](estuary_core::ChannelLayerError::Corrupt)
    /// holding a [`NotJson`].
    Json,
}

/// A format name that is neither `msgpack` nor `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown serializer format (expected msgpack or json)")]
pub struct UnknownFormat;

impl FromStr for SerializerFormat {
    type Err = UnknownFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "msgpack" => Ok(Self::Msgpack),
            "json" => Ok(Self::Json),
            _ => Err(UnknownFormat),
        }
    }
}

impl fmt::Display for SerializerFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Msgpack => "msgpack",
            Self::Json => "json",
        })
    }
}

/// A message that JSON cannot hold, refused by a layer with
/// `serializer_format = "json"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the message cannot be written as JSON (serializer_format = \"json\"): it holds {0}")]
pub struct NotJson(&'static str);

/// A stored JSON message that is not a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a stored message is not JSON (is every process's serializer_format the same?)")]
pub(crate) struct BadJson;

/// `value` as JSON; `strict` refuses what JSON cannot hold, otherwise it is
/// written as near as JSON allows (bytes as text, keys as their JSON text,
/// a non-finite float as null).
fn to_json(value: &Pack, strict: bool) -> Result<Json, NotJson> {
    Ok(match value {
        Pack::Nil => Json::Null,
        Pack::Boolean(b) => Json::Bool(*b),
        Pack::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Json::from(n),
            (None, Some(n)) => Json::from(n),
            (None, None) => Json::Null,
        },
        Pack::F32(x) => float(f64::from(*x), strict)?,
        Pack::F64(x) => float(*x, strict)?,
        Pack::String(s) => match s.as_str() {
            Some(text) => Json::String(text.to_owned()),
            None if strict => return Err(NotJson("a string that is not UTF-8")),
            None => Json::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        },
        Pack::Binary(bytes) if !strict => Json::String(String::from_utf8_lossy(bytes).into_owned()),
        Pack::Binary(_) => return Err(NotJson("bytes")),
        Pack::Ext(..) if !strict => Json::Null,
        Pack::Ext(..) => return Err(NotJson("a msgpack extension")),
        Pack::Array(items) => Json::Array(
            items
                .iter()
                .map(|item| to_json(item, strict))
                .collect::<Result<_, _>>()?,
        ),
        Pack::Map(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (key, item) in entries {
                let key = match key.as_str() {
                    Some(key) => key.to_owned(),
                    None if strict => return Err(NotJson("a map key that is not a string")),
                    None => key.to_string(),
                };
                map.insert(key, to_json(item, strict)?);
            }
            Json::Object(map)
        }
    })
}

fn float(x: f64, strict: bool) -> Result<Json, NotJson> {
    match serde_json::Number::from_f64(x) {
        Some(n) => Ok(Json::Number(n)),
        None if strict => Err(NotJson("a float that is not finite")),
        None => Ok(Json::Null),
    }
}

fn to_pack(value: Json) -> Pack {
    match value {
        Json::Null => Pack::Nil,
        Json::Bool(b) => Pack::Boolean(b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Pack::from(i),
            (None, Some(u)) => Pack::from(u),
            (None, None) => Pack::F64(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Pack::from(s),
        Json::Array(items) => Pack::Array(items.into_iter().map(to_pack).collect()),
        Json::Object(map) => Pack::Map(
            map.into_iter()
                .map(|(k, v)| (Pack::from(k), to_pack(v)))
                .collect(),
        ),
    }
}

/// Whether `message` can be written as JSON.
pub(crate) fn check_json(message: &Message) -> Result<(), NotJson> {
    to_json(&message.to_value(), true).map(|_| ())
}

/// A msgpack body (a message map, perhaps with `__asgi_channel__`) as JSON
/// bytes. Written as near as JSON allows when it holds what JSON cannot:
/// the layers refuse such a message before they get here
/// ([`check_json`]).
pub(crate) fn msgpack_to_json(body: &[u8]) -> Vec<u8> {
    let mut rd = body;
    let value = rmpv::decode::read_value(&mut rd).unwrap_or(Pack::Nil);
    let json = to_json(&value, false).unwrap_or(Json::Null);
    serde_json::to_vec(&json).unwrap_or_default()
}

/// A JSON body read back as the msgpack the layers hold.
pub(crate) fn json_to_msgpack(body: &[u8]) -> Result<Vec<u8>, BadJson> {
    let json: Json = serde_json::from_slice(body).map_err(|_| BadJson)?;
    if !json.is_object() {
        return Err(BadJson);
    }
    let mut out = Vec::with_capacity(body.len());
    rmpv::encode::write_value(&mut out, &to_pack(json)).map_err(|_| BadJson)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_what_it_can_hold_and_refuses_the_rest() {
        let message = Message::from_json(&serde_json::json!({
            "type": "chat.message", "n": -3, "big": u64::MAX, "x": 1.5, "ok": true,
            "none": null, "list": [1, "a"], "nested": {"é": "ü"}
        }))
        .unwrap();
        check_json(&message).unwrap();
        let json = msgpack_to_json(message.as_bytes());
        let back = json_to_msgpack(&json).unwrap();
        assert_eq!(
            Message::from_msgpack(back.into()).unwrap().to_json(),
            message.to_json()
        );

        // {"type": "x", "b": bin}, {"type": "x", 1: 2}
        let with_bytes =
            Message::from_msgpack(bytes::Bytes::from_static(b"\x82\xa4type\xa1x\xa1b\xc4\x01\x00")).unwrap();
        assert_eq!(check_json(&with_bytes), Err(NotJson("bytes")));
        for bad in [&b"[1]"[..], b"not json", b"\"text\""] {
            assert_eq!(json_to_msgpack(bad), Err(BadJson));
        }
        assert_eq!("yaml".parse::<SerializerFormat>(), Err(UnknownFormat));
    }
}
