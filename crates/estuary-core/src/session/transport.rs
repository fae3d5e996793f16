//! The `Transport` trait: a WebSocket connection as a session needs it.

use std::future::Future;

use crate::close::{CloseCode, CloseFrame};
use crate::layer::BoxError;
use crate::ws::WsMessage;

/// What a transport read from the client.
///
/// A client close without a code reaches [`Consumer::disconnect`](crate::Consumer::disconnect)
/// as 1005 ([`CloseCode::NO_STATUS`]), as the session does here:
///
/// ```
/// use estuary_core::{CloseCode, CloseFrame, Inbound, WsMessage};
///
/// fn client_close_code(inbound: &Inbound) -> Option<CloseCode> {
///     match inbound {
///         Inbound::Close(frame) => Some(frame.as_ref().map_or(CloseCode::NO_STATUS, CloseFrame::code)),
///         Inbound::Message(_) | Inbound::Pong => None,
///     }
/// }
///
/// let bye = Inbound::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "tab closed")));
/// assert_eq!(client_close_code(&bye), Some(CloseCode::GOING_AWAY));
/// assert_eq!(client_close_code(&Inbound::Close(None)), Some(CloseCode::NO_STATUS));
/// assert_eq!(client_close_code(&Inbound::Message(WsMessage::text("hi"))), None);
/// ```
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
///
/// ```
/// use estuary_core::{CloseCode, TransportError};
///
/// assert_eq!(TransportError::TooBig.close_code(), CloseCode::MESSAGE_TOO_BIG);
/// assert_eq!(TransportError::InvalidUtf8.close_code(), CloseCode::INVALID_PAYLOAD);
/// let reset = TransportError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
/// // 1006 is never sent: the connection is gone, so no close frame goes out.
/// assert_eq!(reset.close_code(), CloseCode::ABNORMAL);
/// assert!(!reset.close_code().is_sendable());
/// assert_eq!(TransportError::Closed.close_code(), CloseCode::ABNORMAL);
/// ```
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A message or frame over the configured maximum size (1009).
    #[error("message too big")]
    TooBig,
    /// A text message that is not valid UTF-8 (1007).
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// Any other WebSocket protocol violation (1002); the source is the
    /// WebSocket implementation's own error.
    #[error("protocol error: {0}")]
    Protocol(#[source] BoxError),
    /// The connection is closed already: nothing more can be written (1006,
    /// never sent).
    #[error("connection closed")]
    Closed,
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
            TransportError::Closed => CloseCode::ABNORMAL,
            TransportError::Io(_) => CloseCode::ABNORMAL,
        }
    }
}

/// A WebSocket connection as a session needs it. Implemented by the server
/// over its own RFC 6455 codec and by the test communicator over in-process queues.
///
/// A transport that replays scripted client frames and records what the
/// server sends, running an echo consumer through a [`Session`](crate::Session):
///
/// ```
/// use std::collections::VecDeque;
/// use std::sync::{Arc, Mutex};
///
/// use estuary_core::{
///     ChannelLayerHandle, CloseCode, CloseFrame, Consumer, ConsumerError, Context, Inbound, NoEvent,
///     Scope, Session, SessionConfig, Transport, TransportError, WsMessage,
/// };
///
/// struct Script {
///     inbound: VecDeque<Inbound>,
///     sent: Arc<Mutex<Vec<WsMessage>>>,
/// }
///
/// impl Transport for Script {
///     async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
///         self.inbound.pop_front().map(Ok)
///     }
///     async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
///         self.sent.lock().unwrap().push(message);
///         Ok(())
///     }
///     async fn flush(&mut self) -> Result<(), TransportError> {
///         Ok(())
///     }
///     async fn ping(&mut self) -> Result<(), TransportError> {
///         Ok(())
///     }
///     async fn close(&mut self, _frame: Option<CloseFrame>) {}
/// }
///
/// struct Echo;
///
/// impl Consumer for Echo {
///     type Event = NoEvent;
///     async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
///         ctx.send(msg).await
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let sent = Arc::new(Mutex::new(Vec::new()));
/// let script = Script {
///     inbound: VecDeque::from([
///         Inbound::Message(WsMessage::text("hi")),
///         Inbound::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))),
///     ]),
///     sent: sent.clone(),
/// };
/// let scope = Scope::builder("/ws/echo/").build();
/// let layer = ChannelLayerHandle::default();
/// let (session, _accept) = Session::open(Echo, scope, layer, SessionConfig::default())
///     .await
///     .expect("accepted");
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// let outcome = session.run(script, shutdown).await;
///
/// assert_eq!(*sent.lock().unwrap(), [WsMessage::text("hi")]);
/// assert!(outcome.client_closed);
/// assert_eq!(outcome.code, CloseCode::NORMAL);
/// # });
/// ```
pub trait Transport: Send {
    /// The next message from the client; `None` when the connection ended
    /// without a close frame. Must be cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Option<Result<Inbound, TransportError>>> + Send;

    /// Queues `message` for the client; it may sit in a buffer until
    /// [`flush`](Self::flush).
    fn feed(&mut self, message: WsMessage) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Writes out everything fed so far.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Queues `message` if that needs no waiting, as [`feed`](Self::feed)
    /// would: `Ok(None)` when it is queued, `Ok(Some(message))` when it is
    /// handed back untouched (then the session calls `feed`). The session
    /// tries this first, so that the usual write keeps no future.
    ///
    /// The default hands every message back.
    ///
    /// ```
    /// use estuary_core::{CloseFrame, Transport, TransportError, WsMessage};
    ///
    /// /// Collects what is sent; never has to wait.
    /// struct Collect(Vec<WsMessage>);
    ///
    /// impl Transport for Collect {
    ///     async fn recv(&mut self) -> Option<Result<estuary_core::Inbound, TransportError>> {
    ///         None
    ///     }
    ///     async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
    ///         self.0.push(message);
    ///         Ok(())
    ///     }
    ///     async fn flush(&mut self) -> Result<(), TransportError> {
    ///         Ok(())
    ///     }
    ///     fn feed_now(&mut self, message: WsMessage) -> Result<Option<WsMessage>, TransportError> {
    ///         self.0.push(message);
    ///         Ok(None)
    ///     }
    ///     fn flush_now(&mut self) -> Result<bool, TransportError> {
    ///         Ok(true)
    ///     }
    ///     async fn ping(&mut self) -> Result<(), TransportError> {
    ///         Ok(())
    ///     }
    ///     async fn close(&mut self, _frame: Option<CloseFrame>) {}
    /// }
    ///
    /// let mut collect = Collect(Vec::new());
    /// assert!(collect.feed_now(WsMessage::text("hi")).unwrap().is_none());
    /// assert!(collect.flush_now().unwrap());
    /// assert_eq!(collect.0, [WsMessage::text("hi")]);
    /// ```
    fn feed_now(&mut self, message: WsMessage) -> Result<Option<WsMessage>, TransportError> {
        Ok(Some(message))
    }

    /// Writes out what was fed if that needs no waiting: `Ok(true)` when
    /// all of it is written, `Ok(false)` when [`flush`](Self::flush) must
    /// finish (it is called next, and must not lose what this wrote).
    ///
    /// The default writes nothing and returns `Ok(false)`.
    fn flush_now(&mut self) -> Result<bool, TransportError> {
        Ok(false)
    }

    /// `true` only when [`recv`](Self::recv), polled now with `cx`, is
    /// known to be pending without being polled: it was polled with the
    /// same waker, is registered to be woken, and nothing arrived since.
    /// The session then takes a delivery without polling the client again.
    ///
    /// The default is `false` (the session polls `recv`).
    fn is_quiet(&mut self, cx: &std::task::Context<'_>) -> bool {
        let _ = cx;
        false
    }

    /// Sends a ping.
    fn ping(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends a close frame (when `frame` is `Some`) and completes the closing
    /// handshake within the transport's own deadline.
    fn close(&mut self, frame: Option<CloseFrame>) -> impl Future<Output = ()> + Send;
}
