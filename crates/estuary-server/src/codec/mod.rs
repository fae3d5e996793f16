//! The server side of RFC 6455, written here rather than taken from
//! tungstenite, for what an idle connection costs.
//!
//! A connection reads into a buffer of its worker thread's, and only when
//! the socket is readable; complete frames are decoded straight out of it.
//! Only a frame that arrived in part keeps its bytes in a buffer of the
//! connection's, freed once the frame is complete, so an idle connection
//! holds no read buffer at all (tungstenite keeps one per connection,
//! zero-filled and resident). Frames going out are a header of 2 to 10 bytes
//! beside the message's shared payload, never copied, written many to a
//! vectored write.
//!
//! - [`frame`]: headers parsed and encoded, masks, close payloads.
//! - [`utf8`]: text checked fragment by fragment (fail fast).
//! - [`read`]: the decoder (frames to messages, the protocol's rules) and
//!   the per-thread read buffer.
//! - [`write`]: the queue of outgoing frames and its vectored writes.
//!
//! The client side (tests, the load generator) stays on tokio-tungstenite,
//! which checks this side against an independent implementation; the
//! Autobahn suite checks it against the RFC (`scripts/autobahn.sh`).

pub(crate) mod frame;
pub(crate) mod read;
pub(crate) mod utf8;
pub(crate) mod write;

use estuary_core::TransportError;

/// A client's violation of RFC 6455, or of the size limits; each maps to
/// the close code the connection is closed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodecError {
    /// A reserved header bit set (no extension is negotiated).
    #[error("reserved bits set in a frame header")]
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode")]
    ReservedOpcode,
    /// A client frame without a mask.
    #[error("unmasked client frame")]
    Unmasked,
    /// A close, ping or pong frame split into fragments.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with a payload over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A continuation frame with no message to continue.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new data message while another one's fragments were coming.
    #[error("new data frame while a fragmented message is incomplete")]
    ExpectedContinuation,
    /// A close payload of one byte, or with a code a peer may not send.
    #[error("invalid close frame payload or code")]
    BadClosePayload,
    /// A frame or message over the configured limit.
    #[error("frame or message too big")]
    TooBig,
    /// A text message (or close reason) that is not UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
}

impl From<CodecError> for TransportError {
    fn from(error: CodecError) -> Self {
        match error {
            CodecError::TooBig => TransportError::TooBig,
            CodecError::InvalidUtf8 => TransportError::InvalidUtf8,
            other => TransportError::Protocol(Box::new(other)),
        }
    }
}
