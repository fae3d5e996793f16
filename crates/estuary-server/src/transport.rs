//! The transports a session runs over: a real socket, or in-process queues.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use estuary_core::{ByteString, CloseCode, CloseFrame, Inbound, Transport, TransportError, WsMessage};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
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
///
/// tungstenite copies every frame it sends into its write buffer, and that
/// buffer keeps its largest size for the connection's life: one 1 MiB
/// message to a room of 1,000 made 1,000 private copies, 1 GB that stayed
/// resident whether the members read or not. So a frame larger than the
/// write buffer does not go through tungstenite: its header is written here
/// and its payload straight from the message's shared bytes, which every
/// member's socket writes from without a copy of its own. A client that
/// stops reading in the middle holds a reference to that shared payload,
/// nothing more.
pub struct SocketTransport {
    ws: WebSocketStream<TokioIo<Upgraded>>,
    close_timeout: Duration,
    /// Frames with a payload larger than this are written by [`Direct`].
    direct_above: usize,
    /// A frame being written straight from its payload: every other write
    /// waits until it is out, so that nothing lands in its middle.
    /// Boxed: rare, and an idle connection's size counts.
    direct: Option<Box<Direct>>,
}

/// A data frame written from its shared payload: the header, then the
/// payload, with how far each has gone.
struct Direct {
    head: [u8; 10],
    head_len: u8,
    head_sent: u8,
    payload: Bytes,
}

impl Direct {
    /// An unmasked, final frame (a server's) of `opcode` around `payload`.
    fn new(opcode: u8, payload: Bytes) -> Self {
        let mut head = [0u8; 10];
        head[0] = 0x80 | opcode;
        let len = payload.len();
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            head[1] = 126;
            head[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self {
            head,
            head_len,
            head_sent: 0,
            payload,
        }
    }

    /// Writes what is left; cancel-safe (progress is kept here).
    fn poll_write(&mut self, io: &mut TokioIo<Upgraded>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            let head = &self.head[usize::from(self.head_sent)..usize::from(self.head_len)];
            if head.is_empty() && self.payload.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let bufs = [IoSlice::new(head), IoSlice::new(&self.payload)];
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &bufs))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            let from_head = n.min(head.len());
            self.head_sent += from_head as u8;
            // `advance` moves the start of this handle only: the shared
            // payload is neither copied nor freed before every member is done.
            bytes::Buf::advance(&mut self.payload, n - from_head);
        }
    }
}

impl std::fmt::Debug for SocketTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTransport").finish_non_exhaustive()
    }
}

impl SocketTransport {
    /// A transport over `ws`; frames larger than `write_buffer_size` (at
    /// least [`DIRECT_MIN`]) are written from their shared payload.
    pub(crate) fn new(
        ws: WebSocketStream<TokioIo<Upgraded>>,
        close_timeout: Duration,
        write_buffer_size: usize,
    ) -> Self {
        Self {
            ws,
            close_timeout,
            direct_above: write_buffer_size.max(DIRECT_MIN),
            direct: None,
        }
    }

    /// Finishes the frame being written straight from its payload, if any.
    async fn finish_direct(&mut self) -> Result<(), TransportError> {
        let Self { ws, direct, .. } = self;
        let Some(frame) = direct else { return Ok(()) };
        std::future::poll_fn(|cx| frame.poll_write(ws.get_mut(), cx)).await?;
        *direct = None;
        Ok(())
    }
}

/// The smallest payload written from its shared bytes rather than copied
/// into tungstenite's write buffer.
const DIRECT_MIN: usize = 1024;

fn sink_error(e: WsError) -> TransportError {
    map_error(e).unwrap_or(TransportError::Closed)
}

fn map_error(error: WsError) -> Option<TransportError> {
    match error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => None,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Capacity(_) => Some(TransportError::TooBig),
        WsError::Utf8(_) => Some(TransportError::InvalidUtf8),
        WsError::Protocol(p) => Some(TransportError::Protocol(Box::new(p))),
        WsError::Io(e) => Some(TransportError::Io(e)),
        other => Some(TransportError::Protocol(Box::new(other))),
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
        // A read may write (tungstenite answers pings): never into the
        // middle of a frame. (Only a write abandoned midway leaves one.)
        if let Err(e) = self.finish_direct().await {
            return Some(Err(e));
        }
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
        self.finish_direct().await?;
        if message.len() <= self.direct_above {
            return self.ws.feed(to_wire(message)).await.map_err(sink_error);
        }
        // What tungstenite holds (earlier frames, a pong) goes first.
        self.ws.flush().await.map_err(sink_error)?;
        self.direct = Some(Box::new(match message {
            WsMessage::Text(text) => Direct::new(0x1, text.into_bytes()),
            WsMessage::Binary(bytes) => Direct::new(0x2, bytes),
        }));
        self.finish_direct().await
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.finish_direct().await?;
        self.ws.flush().await.map_err(sink_error)
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        self.finish_direct().await?;
        self.ws
            .send(Message::Ping(Bytes::new()))
            .await
            .map_err(sink_error)
    }

    async fn close(&mut self, frame: Option<CloseFrame>) {
        let deadline = self.close_timeout;
        let handshake = async {
            // A frame cut short would swallow the close frame.
            if self.finish_direct().await.is_err() {
                return;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    /// The header written for a frame sent from its payload is the one
    /// tungstenite writes, at each length encoding's edges.
    #[test]
    fn direct_frames_are_framed_as_tungstenite_frames_them() {
        for len in [0, 125, 126, 65_535, 65_536, 1_000_000] {
            for (opcode, data) in [(0x1, Data::Text), (0x2, Data::Binary)] {
                let payload = Bytes::from(vec![b'x'; len]);
                let direct = Direct::new(opcode, payload.clone());
                let mut ours = direct.head[..usize::from(direct.head_len)].to_vec();
                ours.extend_from_slice(&payload);
                let mut theirs = Vec::new();
                Frame::message(payload, OpCode::Data(data), true)
                    .format(&mut theirs)
                    .unwrap();
                assert_eq!(ours, theirs, "{len} bytes, opcode {opcode}");
            }
        }
    }
}
