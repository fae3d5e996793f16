//! The transports a session runs over: a real socket, or in-process queues.

use estuary_core::{CloseFrame, Inbound, Transport, TransportError, WsMessage};
use tokio::sync::mpsc;

pub use crate::socket::SocketTransport;

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
            return Err(TransportError::Closed);
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

    fn feed_now(&mut self, message: WsMessage) -> Result<Option<WsMessage>, TransportError> {
        if self.closed {
            return Err(TransportError::Closed);
        }
        self.buffered.push(message);
        Ok(None)
    }

    fn flush_now(&mut self) -> Result<bool, TransportError> {
        for message in self.buffered.drain(..) {
            self.to_client
                .send(ServerFrame::Message(message))
                .map_err(|_| TransportError::Io(std::io::ErrorKind::BrokenPipe.into()))?;
        }
        Ok(true)
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

    fn feed_now(&mut self, message: WsMessage) -> Result<Option<WsMessage>, TransportError> {
        match self {
            AnyTransport::Socket(t) => t.feed_now(message),
            AnyTransport::Memory(t) => t.feed_now(message),
        }
    }

    fn flush_now(&mut self) -> Result<bool, TransportError> {
        match self {
            AnyTransport::Socket(t) => t.flush_now(),
            AnyTransport::Memory(t) => t.flush_now(),
        }
    }

    fn is_quiet(&mut self, cx: &std::task::Context<'_>) -> bool {
        match self {
            AnyTransport::Socket(t) => t.is_quiet(cx),
            AnyTransport::Memory(t) => t.is_quiet(cx),
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
