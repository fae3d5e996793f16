//! The transports a session runs over: a real socket, or in-process queues.

use std::time::Duration;

use bytes::Bytes;
use estuary_core::{ByteString, CloseCode, CloseFrame, Inbound, Transport, TransportError, WsMessage};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Error as WsError, Message, Utf8Bytes, error::ProtocolError};

/// A WebSocket over an upgraded HTTP connection, framed by tokio-tungstenite.
///
/// Why tokio-tungstenite: it passes the Autobahn suite cleanly, its reads are
/// cancel-safe (the session `select!`s on them), payloads are `Bytes`, and with
/// a small read buffer (1 KiB instead of its 128 KiB default, which it
/// zero-fills and keeps) an idle connection costs a few KiB. Its buffers never
/// shrink after a large message, which is why the message and frame limits are
/// kept low by default. See `docs/ARCHITECTURE.md`.
pub struct SocketTransport {
    ws: WebSocketStream<TokioIo<Upgraded>>,
    close_timeout: Duration,
}

impl std::fmt::Debug for SocketTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTransport").finish_non_exhaustive()
    }
}

impl SocketTransport {
    pub(crate) fn new(ws: WebSocketStream<TokioIo<Upgraded>>, close_timeout: Duration) -> Self {
        Self { ws, close_timeout }
    }
}

fn map_error(error: WsError) -> Option<TransportError> {
    match error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => None,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Capacity(_) => Some(TransportError::TooBig),
        WsError::Utf8(_) => Some(TransportError::InvalidUtf8),
        WsError::Protocol(p) => Some(TransportError::Protocol(p.to_string())),
        WsError::Io(e) => Some(TransportError::Io(e)),
        other => Some(TransportError::Protocol(other.to_string())),
    }
}

fn to_wire(message: WsMessage) -> Message {
    match message {
        // ByteString guarantees UTF-8; the conversion only re-checks it.
        WsMessage::Text(text) => match Utf8Bytes::try_from(text.into_bytes()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Text(Utf8Bytes::from_static("")),
        },
        WsMessage::Binary(bytes) => Message::Binary(bytes),
    }
}

impl Transport for SocketTransport {
    async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
        loop {
            let next = self.ws.next().await?;
            return match next {
                Ok(Message::Text(text)) => match ByteString::try_from(Bytes::from(text)) {
                    Ok(text) => Some(Ok(Inbound::Message(WsMessage::Text(text)))),
                    Err(_) => Some(Err(TransportError::InvalidUtf8)),
                },
                Ok(Message::Binary(bytes)) => Some(Ok(Inbound::Message(WsMessage::Binary(bytes)))),
                // tungstenite queues the pong itself and sends it on the next read or flush.
                Ok(Message::Ping(_)) => {
                    if let Err(e) = self.ws.flush().await {
                        return map_error(e).map(Err);
                    }
                    Some(Ok(Inbound::Pong))
                }
                Ok(Message::Pong(_)) => Some(Ok(Inbound::Pong)),
                Ok(Message::Close(frame)) => {
                    Some(Ok(Inbound::Close(frame.map(|f| {
                        CloseFrame::new(CloseCode::from(u16::from(f.code)), f.reason.as_str())
                    }))))
                }
                Ok(Message::Frame(_)) => continue,
                Err(e) => map_error(e).map(Err),
            };
        }
    }

    async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
        self.ws
            .feed(to_wire(message))
            .await
            .map_err(|e| map_error(e).unwrap_or(TransportError::Protocol("closed".into())))
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.ws
            .flush()
            .await
            .map_err(|e| map_error(e).unwrap_or(TransportError::Protocol("closed".into())))
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        self.ws
            .send(Message::Ping(Bytes::new()))
            .await
            .map_err(|e| map_error(e).unwrap_or(TransportError::Protocol("closed".into())))
    }

    async fn close(&mut self, frame: Option<CloseFrame>) {
        let deadline = self.close_timeout;
        let handshake = async {
            match frame {
                Some(frame) => {
                    let frame = tungstenite::protocol::CloseFrame {
                        code: frame.code().as_u16().into(),
                        reason: frame.reason().to_owned().into(),
                    };
                    if self.ws.close(Some(frame)).await.is_err() {
                        return;
                    }
                    // Wait for the client's close reply (the closing handshake).
                    while let Some(Ok(_)) = self.ws.next().await {}
                }
                None => {
                    // The client closed first: flush tungstenite's queued reply.
                    let _ = self.ws.flush().await;
                }
            }
        };
        let _ = tokio::time::timeout(deadline, handshake).await;
    }
}

/// What an in-process client sees from the server side of a [`MemoryTransport`].
///
/// ```
/// use estuary_core::{CloseCode, CloseFrame, Transport};
/// use estuary_server::{MemoryTransport, ServerFrame};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let (mut transport, mut client) = MemoryTransport::pair();
/// transport.close(Some(CloseFrame::new(CloseCode::POLICY_VIOLATION, "rate limit"))).await;
///
/// match client.from_server.recv().await {
///     Some(ServerFrame::Close(Some(frame))) => assert_eq!(frame.code(), CloseCode::POLICY_VIOLATION),
///     other => panic!("expected a close frame, got {other:?}"),
/// }
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// A data message.
    Message(WsMessage),
    /// A close frame (`None`: the connection ended without one).
    Close(Option<CloseFrame>),
}

/// An in-process transport with no socket: the test communicator's.
///
/// The client side holds the other ends of the two queues: it sends
/// [`Inbound`] items and receives [`ServerFrame`]s.
#[derive(Debug)]
pub struct MemoryTransport {
    from_client: mpsc::Receiver<Inbound>,
    to_client: mpsc::UnboundedSender<ServerFrame>,
    buffered: Vec<WsMessage>,
    closed: bool,
}

/// The client's ends of a [`MemoryTransport`].
#[derive(Debug)]
pub struct MemoryClient {
    /// Sends messages to the server.
    pub to_server: mpsc::Sender<Inbound>,
    /// Receives what the server sends.
    pub from_server: mpsc::UnboundedReceiver<ServerFrame>,
}

impl MemoryTransport {
    /// A transport and its client ends.
    ///
    /// ```
    /// use estuary_core::{Inbound, Transport, WsMessage};
    /// use estuary_server::{MemoryTransport, ServerFrame};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let (mut transport, mut client) = MemoryTransport::pair();
    ///
    /// client.to_server.send(Inbound::Message(WsMessage::text("ping"))).await.unwrap();
    /// let got = transport.recv().await;
    /// assert!(matches!(got, Some(Ok(Inbound::Message(m))) if m.as_text() == Some("ping")));
    ///
    /// // Fed messages reach the client only when flushed.
    /// transport.feed(WsMessage::text("pong")).await.unwrap();
    /// assert!(client.from_server.try_recv().is_err());
    /// transport.flush().await.unwrap();
    /// let sent = client.from_server.recv().await;
    /// assert_eq!(sent, Some(ServerFrame::Message(WsMessage::text("pong"))));
    /// # });
    /// ```
    pub fn pair() -> (Self, MemoryClient) {
        let (to_server, from_client) = mpsc::channel(64);
        let (to_client, from_server) = mpsc::unbounded_channel();
        (
            Self {
                from_client,
                to_client,
                buffered: Vec::new(),
                closed: false,
            },
            MemoryClient {
                to_server,
                from_server,
            },
        )
    }
}

impl Transport for MemoryTransport {
    async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
        self.from_client.recv().await.map(Ok)
    }

    async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::Protocol("closed".into()));
        }
        self.buffered.push(message);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        for message in self.buffered.drain(..) {
            self.to_client
                .send(ServerFrame::Message(message))
                .map_err(|_| TransportError::Io(std::io::ErrorKind::BrokenPipe.into()))?;
        }
        Ok(())
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    async fn close(&mut self, frame: Option<CloseFrame>) {
        let _ = self.flush().await;
        self.closed = true;
        let _ = self.to_client.send(ServerFrame::Close(frame));
    }
}

/// Either transport, so that one router serves sockets and in-process clients
/// without boxing every read and write.
///
/// A session run over a client that vanished without a close frame ends
/// with 1006:
///
/// ```
/// use estuary_core::{ChannelLayerHandle, CloseCode, Consumer, NoEvent, Scope, Session, SessionConfig};
/// use estuary_server::{AnyTransport, MemoryTransport};
/// use tokio_util::sync::CancellationToken;
///
/// struct Quiet;
/// impl Consumer for Quiet { type Event = NoEvent; }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let scope = Scope::builder("/ws/quiet/").build();
/// let layer = ChannelLayerHandle::default();
/// let (session, _accept) = Session::open(Quiet, scope, layer, SessionConfig::default())
///     .await
///     .expect("accepted");
/// let (transport, client) = MemoryTransport::pair();
/// drop(client);
/// let outcome = session.run(AnyTransport::Memory(transport), CancellationToken::new()).await;
/// assert_eq!(outcome.code, CloseCode::ABNORMAL);
/// # });
/// ```
#[derive(Debug)]
// Both variants live inline in the connection's task; the in-process one is
// for tests only, so its smaller size buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum AnyTransport {
    /// A real WebSocket.
    Socket(SocketTransport),
    /// An in-process client.
    Memory(MemoryTransport),
}

impl Transport for AnyTransport {
    async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
        match self {
            AnyTransport::Socket(t) => t.recv().await,
            AnyTransport::Memory(t) => t.recv().await,
        }
    }

    async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
        match self {
            AnyTransport::Socket(t) => t.feed(message).await,
            AnyTransport::Memory(t) => t.feed(message).await,
        }
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        match self {
            AnyTransport::Socket(t) => t.flush().await,
            AnyTransport::Memory(t) => t.flush().await,
        }
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        match self {
            AnyTransport::Socket(t) => t.ping().await,
            AnyTransport::Memory(t) => t.ping().await,
        }
    }

    async fn close(&mut self, frame: Option<CloseFrame>) {
        match self {
            AnyTransport::Socket(t) => t.close(frame).await,
            AnyTransport::Memory(t) => t.close(frame).await,
        }
    }
}
