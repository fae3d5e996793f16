//! A WebSocket over an upgraded HTTP connection: the codec (`crate::codec`)
//! on a socket, as a [`Transport`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use estuary_core::{CloseFrame, Inbound, Transport, TransportError, WsMessage};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::codec::frame::{self, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use crate::codec::read::{Event, Inbox, Limits, with_scratch};
use crate::codec::write::Writer;

/// A WebSocket over an upgraded HTTP connection, framed by Estuary's own
/// RFC 6455 codec.
///
/// Reading: the socket is read into a buffer of the worker thread's, and
/// only when it is readable; complete frames are decoded straight out of it.
/// Over plain TCP, a socket found not readable is not asked again (nor its
/// wake-up registered again) until the runtime has seen it become readable:
/// a connection woken for a delivery pays one check of a flag for its
/// client's side.
/// A frame that arrived in part (and whatever came after a message that is
/// returned) is kept in a buffer of the connection's, freed once used up, so
/// an idle connection holds no read buffer. `recv` is cancel-safe: a read
/// that is not ready consumes nothing, and one that is is decoded in the
/// same poll.
///
/// Writing: a message is queued as a header of 2 to 10 bytes beside its
/// shared payload (a room's members all write from one copy), and what is
/// queued goes out in vectored writes on `flush`, or on `feed` once more
/// than `write_buffer_size` bytes are queued. A write abandoned midway keeps
/// its progress. Pongs (and the reply to a client's close) are queued when
/// their ping arrives, and written while `recv` waits for the next frame.
pub struct SocketTransport {
    io: SocketIo,
    /// The decoder, and the bytes of a frame that arrived in part.
    inbox: Inbox,
    writer: Writer,
    /// The most one socket read takes.
    read_size: usize,
    /// Queued bytes past which `feed` writes before queueing more.
    write_size: usize,
    close_timeout: Duration,
    /// A close frame was queued (no frame may follow it).
    close_sent: bool,
    /// The client's close frame arrived, or reading failed: nothing more
    /// is read (except the close reply `close` waits for).
    read_done: bool,
    /// Reading failed on a protocol error: the bytes held are not frames.
    failed: bool,
    /// The waker the last read registered when it found the socket not
    /// readable: until the socket is readable, reading again with the same
    /// waker would only register it again.
    read_armed: Option<std::task::Waker>,
}

/// The socket under a WebSocket: the TCP stream itself when the handshake
/// came over plain TCP (no dynamic dispatch per read and write, no box, and
/// readiness that can be checked without registering a waker), else
/// hyper's upgraded connection (TLS, a Unix socket), boxed so that it does
/// not size the usual case.
enum SocketIo {
    Tcp(TcpStream),
    Upgraded(Box<TokioIo<Upgraded>>),
}

impl SocketIo {
    /// `false` only when the socket is known not to be readable: the
    /// runtime has not seen it readable since a read last found it empty.
    /// Registers nothing.
    fn maybe_readable(&self) -> bool {
        match self {
            // `try_io` runs the closure only when the runtime holds the
            // socket readable, and keeps that readiness (the closure does
            // not fail with `WouldBlock`, which would clear it).
            Self::Tcp(stream) => stream.try_io(Interest::READABLE, || Ok(())).is_ok(),
            Self::Upgraded(_) => true,
        }
    }
}

impl AsyncRead for SocketIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Upgraded(u) => Pin::new(&mut **u).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Upgraded(u) => Pin::new(&mut **u).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Upgraded(u) => Pin::new(&mut **u).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Upgraded(u) => u.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Upgraded(u) => Pin::new(&mut **u).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Upgraded(u) => Pin::new(&mut **u).poll_shutdown(cx),
        }
    }
}

impl std::fmt::Debug for SocketTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTransport").finish_non_exhaustive()
    }
}

/// A socket transport's sizes and limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketConfig {
    /// What the client may send.
    pub(crate) limits: Limits,
    /// The most one socket read takes.
    pub(crate) read_size: usize,
    /// Queued bytes past which `feed` writes first.
    pub(crate) write_size: usize,
    /// How long `close` waits for the closing handshake.
    pub(crate) close_timeout: Duration,
}

impl SocketTransport {
    /// A transport over an upgraded connection. Over plain TCP the stream
    /// is taken out of hyper's wrapper, with the bytes hyper read past the
    /// handshake (frames the client sent before the 101 arrived).
    pub(crate) fn new(upgraded: Upgraded, config: SocketConfig) -> Self {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let mut transport = Self::over(SocketIo::Tcp(parts.io.into_inner()), config);
                transport.inbox.hold(&parts.read_buf);
                transport
            }
            Err(upgraded) => Self::over(SocketIo::Upgraded(Box::new(TokioIo::new(upgraded))), config),
        }
    }

    /// A transport over `io`, nothing read yet.
    fn over(io: SocketIo, config: SocketConfig) -> Self {
        Self {
            io,
            inbox: Inbox::new(config.limits),
            writer: Writer::default(),
            read_size: config.read_size.max(1),
            write_size: config.write_size,
            close_timeout: config.close_timeout,
            close_sent: false,
            read_done: false,
            failed: false,
            read_armed: None,
        }
    }

    /// The next frame's meaning for the session; see `Transport::recv`.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Inbound, TransportError>>> {
        // Pongs and a close reply go out while waiting for the client. A
        // client that sends pings and does not read the pongs is read no
        // further once they pile up (as a blocked write would stop it).
        if !self.writer.is_empty() {
            match self.writer.poll_flush(&mut self.io, cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(self.fail(e.into())),
                Poll::Pending if self.writer.queued() > self.write_size.max(MIN_PONG_BACKLOG) => {
                    return Poll::Pending;
                }
                _ => {}
            }
        }
        if self.read_done {
            return Poll::Ready(None);
        }
        loop {
            match self.inbox.next_held() {
                Ok(Some(event)) => return Poll::Ready(Some(Ok(self.on_event(event)))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(self.fail(e.into())),
            }
            // Registered already, and nothing arrived since.
            if self.read_armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) && !self.io.maybe_readable()
            {
                return Poll::Pending;
            }
            let Self {
                io, read_size, inbox, ..
            } = self;
            let read = with_scratch(*read_size, |scratch| {
                let mut buf = ReadBuf::new(scratch);
                ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
                Poll::Ready(Ok(match buf.filled() {
                    [] => None,
                    fresh => Some(inbox.absorb(fresh)),
                }))
            });
            // A pending read registered the waker, unless the task had used
            // up tokio's cooperative budget: then nothing was registered
            // (the task is only woken to run again), and the next read
            // must register.
            self.read_armed = match self.read_armed.take() {
                _ if !read.is_pending() || !tokio::task::coop::has_budget_remaining() => None,
                Some(armed) if armed.will_wake(cx.waker()) => Some(armed),
                _ => Some(cx.waker().clone()),
            };
            match ready!(read) {
                Err(e) => return Poll::Ready(self.fail(TransportError::Io(e))),
                // The connection ended (a frame cut short with it).
                Ok(None) => {
                    self.read_done = true;
                    return Poll::Ready(None);
                }
                Ok(Some(Ok(Some(event)))) => return Poll::Ready(Some(Ok(self.on_event(event)))),
                Ok(Some(Ok(None))) => {}
                Ok(Some(Err(e))) => return Poll::Ready(self.fail(e.into())),
            }
        }
    }

    /// What an event means for the session; answers pings and closes.
    fn on_event(&mut self, event: Event) -> Inbound {
        match event {
            Event::Message(message) => Inbound::Message(message),
            Event::Ping(payload) => {
                if !self.close_sent {
                    self.writer.push(OP_PONG, payload);
                }
                Inbound::Pong
            }
            Event::Pong => Inbound::Pong,
            Event::Close(frame) => {
                self.read_done = true;
                self.inbox.reset();
                if !self.close_sent {
                    // The reply echoes the client's code (RFC 6455, 5.5.1).
                    let reply = frame.as_ref().map(|f| CloseFrame::new(f.code(), ""));
                    self.writer.push(OP_CLOSE, frame::close_payload(reply.as_ref()));
                    self.close_sent = true;
                }
                Inbound::Close(frame)
            }
        }
    }

    /// Stops reading after an error, and returns it.
    fn fail(&mut self, error: TransportError) -> Option<Result<Inbound, TransportError>> {
        self.read_done = true;
        self.failed = true;
        self.inbox.reset();
        Some(Err(error))
    }

    async fn flush_queued(&mut self) -> Result<(), TransportError> {
        let Self { io, writer, .. } = self;
        std::future::poll_fn(|cx| writer.poll_flush(io, cx)).await?;
        Ok(())
    }

    /// After our close frame: reads until the client's close (or the end,
    /// or anything unreadable), discarding data. Not after a read error
    /// (see `close`).
    async fn await_close_reply(&mut self) {
        // Frames the session left unread (it may have stopped reading a
        // flood) are read through, a frame cut short included: dropping the
        // socket with bytes unread would reset the connection, and the
        // client could lose the close frame.
        self.read_done = false;
        loop {
            match std::future::poll_fn(|cx| self.poll_recv(cx)).await {
                Some(Ok(Inbound::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Pong bytes a client may leave unread before it is read no further.
const MIN_PONG_BACKLOG: usize = 4096;

/// The longest a closed connection lingers (its write side shut, reading
/// and discarding) for the client to end it; under `close_timeout` too.
const LINGER: Duration = Duration::from_secs(1);

impl SocketTransport {
    /// The end of a closed connection (RFC 6455 7.1.1: the server closes
    /// the TCP connection first): shuts the write side, so the close frame
    /// is followed by a FIN, then reads and discards until the client ends
    /// its side, for [`LINGER`] at most. Dropping the socket with bytes
    /// unread (the rest of an oversized message, frames sent after a
    /// protocol error) would make the kernel answer with a reset; a proxy
    /// in front that gets the reset discards what it had not yet passed on,
    /// the close frame included, and its client sees 1006 instead of the
    /// code sent.
    async fn linger(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let io = &mut self.io;
        let drain = async {
            if io.shutdown().await.is_err() {
                return;
            }
            // On the heap and only now: a connection's future stays small.
            let mut discard = vec![0u8; 4096];
            while let Ok(1..) = io.read(&mut discard).await {}
        };
        let _ = tokio::time::timeout(self.close_timeout.min(LINGER), drain).await;
    }
}

impl Transport for SocketTransport {
    async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
        if self.close_sent {
            return Err(TransportError::Closed);
        }
        // Bounded like a write buffer: past `write_size` queued bytes, what
        // is queued goes out first.
        if self.writer.queued() > self.write_size {
            self.flush_queued().await?;
        }
        match message {
            WsMessage::Text(text) => self.writer.push(OP_TEXT, text.into_bytes()),
            WsMessage::Binary(bytes) => self.writer.push(OP_BINARY, bytes),
        }
        if self.writer.queued() > self.write_size {
            self.flush_queued().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.flush_queued().await
    }

    fn feed_now(&mut self, message: WsMessage) -> Result<Option<WsMessage>, TransportError> {
        if self.close_sent {
            return Err(TransportError::Closed);
        }
        // Past `write_size` queued bytes, `feed` writes first (and may wait).
        if self.writer.queued() > self.write_size {
            return Ok(Some(message));
        }
        match message {
            WsMessage::Text(text) => self.writer.push(OP_TEXT, text.into_bytes()),
            WsMessage::Binary(bytes) => self.writer.push(OP_BINARY, bytes),
        }
        Ok(None)
    }

    fn flush_now(&mut self) -> Result<bool, TransportError> {
        if self.writer.is_empty() {
            return Ok(true);
        }
        // A waker that does nothing: when the socket is not writable, the
        // `flush` that follows polls again with the task's own, and is woken.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.writer.poll_flush(&mut self.io, &mut cx) {
            Poll::Ready(result) => result.map(|()| true).map_err(TransportError::from),
            Poll::Pending => Ok(false),
        }
    }

    fn is_quiet(&mut self, cx: &Context<'_>) -> bool {
        // Nothing to write while waiting (pongs, a close reply), reading
        // not over, the last read registered this waker, and the socket
        // not readable since.
        self.writer.is_empty()
            && !self.read_done
            && self.read_armed.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
            && !self.io.maybe_readable()
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        if self.close_sent {
            return Err(TransportError::Closed);
        }
        self.writer.push(OP_PING, bytes::Bytes::new());
        self.flush_queued().await
    }

    async fn close(&mut self, frame: Option<CloseFrame>) {
        let deadline = self.close_timeout;
        let handshake = async {
            if let Some(frame) = frame.filter(|_| !self.close_sent) {
                self.writer.push(OP_CLOSE, frame::close_payload(Some(&frame)));
                self.close_sent = true;
                if self.flush_queued().await.is_err() {
                    return;
                }
                // Wait for the client's close reply (the closing
                // handshake), unless reading failed: then the bytes that
                // follow (the rest of an oversized message, say) are not
                // frames, and the reply cannot be told from them.
                if !self.failed {
                    self.await_close_reply().await;
                }
            } else {
                // The client closed first: write the queued reply.
                let _ = self.flush_queued().await;
            }
        };
        let _ = tokio::time::timeout(deadline, handshake).await;
        self.linger().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket transport over one end of a loopback TCP connection, and
    /// the other end.
    async fn pair() -> (SocketTransport, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let config = SocketConfig {
            limits: Limits {
                max_message: 1 << 20,
                max_frame: 1 << 20,
            },
            read_size: 4096,
            write_size: 4096,
            close_timeout: Duration::from_secs(1),
        };
        (SocketTransport::over(SocketIo::Tcp(server), config), client)
    }

    /// A read refused by tokio's cooperative budget registered no waker:
    /// the transport does not take it for one, and hears what comes next.
    #[tokio::test]
    async fn a_read_refused_for_budget_is_not_taken_for_a_registration() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncWriteExt;
        let (mut transport, mut client) = pair().await;
        // Each message taken from it costs the task one unit of budget.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        for _ in 0..1000 {
            tx.send(()).unwrap();
        }
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let receiving = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                if counted.fetch_add(1, Ordering::SeqCst) == 1 {
                    // The poll that finds the first bytes: leave it one unit,
                    // for the read that takes them (a short read clears the
                    // socket's readiness); the registration that follows is
                    // then refused for budget.
                    for _ in 0..127 {
                        assert!(rx.poll_recv(cx).is_ready());
                    }
                }
                transport.poll_recv(cx)
            })
            .await
        });
        // A masked text frame, "hi", sent in two parts.
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x82];
        frame.extend_from_slice(&mask);
        frame.extend(b"hi".iter().zip(mask).map(|(b, m)| b ^ m));
        let polled = |n: usize| {
            let polls = polls.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    while polls.load(Ordering::SeqCst) < n {
                        tokio::task::yield_now().await;
                    }
                })
                .await
                .expect("polled");
            }
        };
        polled(1).await;
        client.write_all(&frame[..3]).await.unwrap();
        // The refused poll, then the one its wake-up brings.
        polled(3).await;
        client.write_all(&frame[3..]).await.unwrap();
        let received = tokio::time::timeout(Duration::from_secs(10), receiving)
            .await
            .expect("the rest of the frame was heard")
            .unwrap();
        assert!(matches!(received, Some(Ok(Inbound::Message(m))) if m.as_text() == Some("hi")));
    }
}
