//! WebSocket data messages as consumers see them.

use bytes::Bytes;
use bytestring::ByteString;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A complete WebSocket data message: text or binary.
///
/// Both forms hold reference-counted bytes, so one message can be queued to
/// many sockets without copying.
///
/// ```
/// use estuary_core::WsMessage;
///
/// let m = WsMessage::text(r#"{"message": "hi"}"#);
/// assert_eq!(m.as_text(), Some(r#"{"message": "hi"}"#));
/// let v: serde_json::Value = m.parse_json().unwrap();
/// assert_eq!(v["message"], "hi");
/// assert!(WsMessage::binary(vec![1, 2]).as_text().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message (valid UTF-8).
    Text(ByteString),
    /// A binary message.
    Binary(Bytes),
}

impl WsMessage {
    /// A text message.
    pub fn text(text: impl Into<ByteString>) -> Self {
        WsMessage::Text(text.into())
    }

    /// A binary message.
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        WsMessage::Binary(bytes.into())
    }

    /// A text message holding `value` as JSON.
    ///
    /// ```
    /// use estuary_core::WsMessage;
    ///
    /// let m = WsMessage::json(&serde_json::json!({"type": "ping"})).unwrap();
    /// assert_eq!(m.as_text(), Some(r#"{"type":"ping"}"#));
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(WsMessage::Text(serde_json::to_string(value)?.into()))
    }

    /// The text, for a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            WsMessage::Text(t) => Some(t),
            WsMessage::Binary(_) => None,
        }
    }

    /// The payload bytes, text or binary.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WsMessage::Text(t) => t.as_bytes(),
            WsMessage::Binary(b) => b,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True when the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses the payload (text or binary) as JSON (Channels' `receive_json`).
    ///
    /// ```
    /// use estuary_core::WsMessage;
    ///
    /// let n: u32 = WsMessage::binary(b"42".to_vec()).parse_json().unwrap();
    /// assert_eq!(n, 42);
    /// assert!(WsMessage::text("not json").parse_json::<u32>().is_err());
    /// ```
    pub fn parse_json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.as_bytes())
    }
}

impl From<String> for WsMessage {
    fn from(s: String) -> Self {
        WsMessage::Text(s.into())
    }
}

impl From<&'static str> for WsMessage {
    fn from(s: &'static str) -> Self {
        WsMessage::Text(ByteString::from_static(s))
    }
}

impl From<Bytes> for WsMessage {
    fn from(b: Bytes) -> Self {
        WsMessage::Binary(b)
    }
}

impl From<Vec<u8>> for WsMessage {
    fn from(b: Vec<u8>) -> Self {
        WsMessage::Binary(b.into())
    }
}
