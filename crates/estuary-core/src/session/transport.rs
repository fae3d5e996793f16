//! The `Transport` trait: a WebSocket connection as a session needs it.

use std::future::Future;

use crate::close::{CloseCode, CloseFrame};
use crate::ws::WsMessage;

/// What a transport read from the client.
#[derive(Debug)]
pub enum Inbound {
    /// A complete data message.
    Message(WsMessage),
    /// A pong (or any other sign of life that is not data).
    Pong,
    /// The client sent a close frame (`None`: one without a code).
    Close(Option<CloseFrame>),
}

/// Why a transport failed. Each maps to the close code the session sends.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A message or frame over the configured maximum size (1009).
    #[error("message too big")]
    TooBig,
    /// A text message that is not valid UTF-8 (1007).
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// Any other WebSocket protocol violation (1002).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection is gone.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
}

impl TransportError {
    /// The close code to answer this error with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            TransportError::TooBig => CloseCode::MESSAGE_TOO_BIG,
            TransportError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            TransportError::Protocol(_) => CloseCode::PROTOCOL_ERROR,
            TransportError::Io(_) => CloseCode::ABNORMAL,
        }
    }
}

/// A WebSocket connection as a session needs it. Implemented by the server
/// over tokio-tungstenite and by the test communicator over in-process queues.
pub trait Transport: Send {
    /// The next message from the client; `None` when the connection ended
    /// without a close frame. Must be cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Option<Result<Inbound, TransportError>>> + Send;

    /// Queues `message` for the client; it may sit in a buffer until
    /// [`flush`](Self::flush).
    fn feed(&mut self, message: WsMessage) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Writes out everything fed so far.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends a ping.
    fn ping(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends a close frame (when `frame` is `Some`) and completes the closing
    /// handshake within the transport's own deadline.
    fn close(&mut self, frame: Option<CloseFrame>) -> impl Future<Output = ()> + Send;
}
