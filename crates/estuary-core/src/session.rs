//! Drives one consumer over one connection: the loop every transport shares.
//!
//! The server (over TCP) and the test communicator (in process) both hand a
//! [`Transport`] to a [`Session`]. The session owns the consumer and runs its
//! handlers one at a time; its loop selects over the client's next message,
//! the channel layer's next event for this connection, the outbound queue,
//! keepalive and shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::close::{CloseCode, CloseFrame};
use crate::consumer::{Accept, Connect, Consumer, Reject};
use crate::context::{Context, Outgoing, SlowClientPolicy};
use crate::error::ConsumerError;
use crate::layer::{ChannelLayer, ChannelLayerHandle, LayerError};
use crate::scope::Scope;
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

/// A per-connection rate limit on client messages: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages per second allowed on average.
    pub per_second: f64,
    /// Messages allowed in a burst.
    pub burst: u32,
}

/// Settings of a session (the server fills them from its configuration).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Capacity of the outbound queue, in messages (default 64).
    pub outbound_capacity: usize,
    /// What to do when the outbound queue is full.
    pub slow_client: SlowClientPolicy,
    /// Interval between keepalive pings; `None` disables them (default 20 s).
    pub ping_interval: Option<Duration>,
    /// How long a client may stay silent after a ping before it is dropped as
    /// dead (default 20 s).
    pub ping_timeout: Duration,
    /// Rate limit on client messages; exceeding it closes with 1008.
    pub rate_limit: Option<RateLimit>,
    /// How long one write to the client may stall (its TCP window closed)
    /// before the client is taken as too slow and dropped with 1013
    /// (default 10 s).
    pub write_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            outbound_capacity: 64,
            slow_client: SlowClientPolicy::default(),
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(20),
            rate_limit: None,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The close code handed to `disconnect`.
    pub code: CloseCode,
    /// True when the client closed first.
    pub client_closed: bool,
    /// Messages dropped for this client under [`SlowClientPolicy::Drop`].
    pub dropped: u64,
}

/// One consumer bound to one connection, from handshake to disconnect.
///
/// ```
/// use estuary_core::{ChannelLayerHandle, Connect, NoEvent, Consumer, Scope, Session, SessionConfig};
///
/// struct Hello;
/// impl Consumer for Hello { type Event = NoEvent; }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let scope = Scope::builder("/ws/hello").build();
/// let opened = Session::open(Hello, scope, ChannelLayerHandle::default(), SessionConfig::default()).await;
/// let (session, accept) = opened.expect("accepted");
/// assert!(accept.subprotocol.is_none());
/// # drop(session);
/// # });
/// ```
pub struct Session<C: Consumer> {
    consumer: C,
    ctx: Context,
    outbound: mpsc::Receiver<Outgoing>,
    config: SessionConfig,
    dropped: Arc<AtomicU64>,
}

impl<C: Consumer> std::fmt::Debug for Session<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

enum Step {
    Continue,
    Close {
        frame: Option<CloseFrame>,
        code: CloseCode,
        client_closed: bool,
    },
}

impl<C: Consumer> Session<C> {
    /// Gives the connection a channel and runs [`Consumer::connect`].
    ///
    /// On acceptance returns the session (ready to [`run`](Self::run) once the
    /// handshake completes) and how to accept. On rejection the consumer's
    /// groups and channel are released and the rejection is returned.
    pub async fn open(
        mut consumer: C,
        scope: Scope,
        layer: ChannelLayerHandle,
        config: SessionConfig,
    ) -> Result<(Self, Accept), Reject> {
        let channel = layer.new_channel().await.map_err(|error| {
            tracing::error!(%error, "cannot make a channel for a new connection");
            Reject {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                reason: "channel layer unavailable".into(),
            }
        })?;
        let (tx, rx) = mpsc::channel(config.outbound_capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut ctx = Context::new(
            Arc::new(scope),
            channel,
            layer,
            tx,
            config.slow_client,
            dropped.clone(),
        );
        let decision = consumer.connect(&mut ctx).await;
        let mut session = Self {
            consumer,
            ctx,
            outbound: rx,
            config,
            dropped,
        };
        match decision {
            Ok(Connect::Accept(accept)) => Ok((session, accept)),
            Ok(Connect::Reject(reject)) => {
                session.release().await;
                Err(reject)
            }
            Err(error) => {
                tracing::info!(path = session.ctx.scope().path(), %error, "connect failed; handshake rejected");
                session.release().await;
                Err(Reject {
                    status: error.http_status(),
                    reason: error.http_reason(),
                })
            }
        }
    }

    /// This connection's channel name.
    pub fn channel_name(&self) -> &crate::ChannelName {
        self.ctx.channel_name()
    }

    async fn release(&mut self) {
        self.ctx.leave_all_groups().await;
        self.ctx.layer().close_channel(self.ctx.channel_name()).await;
    }

    /// Runs the connection until it closes or `shutdown` is cancelled (then it
    /// sends what is queued, closes with 1001 and runs `disconnect`).
    pub async fn run<T: Transport>(mut self, mut transport: T, shutdown: CancellationToken) -> Outcome {
        let mut keepalive = self.config.ping_interval.map(|every| {
            let mut t = tokio::time::interval_at(Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut last_heard = Instant::now();
        let mut bucket = self.config.rate_limit.map(|r| Bucket::new(r, Instant::now()));
        let mut layer_pause: Option<Instant> = None;
        let layer = self.ctx.layer().clone();
        let channel = self.ctx.channel_name().clone();
        let write_timeout = self.config.write_timeout;

        let (frame, code, client_closed) = loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let frame = CloseFrame::new(CloseCode::GOING_AWAY, "server shutting down");
                    Step::Close { frame: Some(frame), code: CloseCode::GOING_AWAY, client_closed: false }
                }
                Some(item) = self.outbound.recv() => write_batch(&mut transport, &mut self.outbound, item, write_timeout).await,
                inbound = transport.recv() => {
                    last_heard = Instant::now();
                    match inbound {
                        None => Step::Close { frame: None, code: CloseCode::ABNORMAL, client_closed: true },
                        Some(Ok(Inbound::Pong)) => Step::Continue,
                        Some(Ok(Inbound::Close(frame))) => {
                            let code = frame.as_ref().map_or(CloseCode::NO_STATUS, CloseFrame::code);
                            Step::Close { frame: None, code, client_closed: true }
                        }
                        Some(Err(error)) => {
                            tracing::debug!(%channel, %error, "closing on transport error");
                            let code = error.close_code();
                            let frame = code.is_sendable().then(|| CloseFrame::new(code, error.to_string()));
                            Step::Close { frame, code, client_closed: false }
                        }
                        Some(Ok(Inbound::Message(message))) => {
                            if bucket.as_mut().is_some_and(|b| !b.take(Instant::now())) {
                                let frame = CloseFrame::new(CloseCode::POLICY_VIOLATION, "rate limit exceeded");
                                Step::Close { frame: Some(frame), code: CloseCode::POLICY_VIOLATION, client_closed: false }
                            } else {
                                let fut = self.consumer.receive(&mut self.ctx, message);
                                drive(fut, &mut transport, &mut self.outbound, write_timeout).await
                            }
                        }
                    }
                }
                received = layer.receive(&channel), if layer_pause.is_none() => match received {
                    Ok(message) => {
                        let fut = async {
                            match message.decode::<C::Event>() {
                                Ok(event) => self.consumer.event(&mut self.ctx, event).await,
                                Err(error) => self.consumer.undecodable_event(&mut self.ctx, message, error).await,
                            }
                        };
                        drive(fut, &mut transport, &mut self.outbound, write_timeout).await
                    }
                    Err(LayerError::ChannelClosed(_)) => {
                        let frame = CloseFrame::new(CloseCode::INTERNAL_ERROR, "channel closed");
                        Step::Close { frame: Some(frame), code: CloseCode::INTERNAL_ERROR, client_closed: false }
                    }
                    Err(error) => {
                        // The backend is down: keep the socket, retry in a second.
                        tracing::warn!(%channel, %error, "channel layer receive failed; retrying");
                        layer_pause = Some(Instant::now() + Duration::from_secs(1));
                        Step::Continue
                    }
                },
                _ = sleep_until_opt(layer_pause) => { layer_pause = None; Step::Continue }
                _ = tick_opt(keepalive.as_mut()) => {
                    let interval = self.config.ping_interval.unwrap_or_default();
                    if last_heard.elapsed() > interval + self.config.ping_timeout {
                        tracing::debug!(%channel, "peer silent past the ping timeout; dropping");
                        Step::Close { frame: None, code: CloseCode::ABNORMAL, client_closed: false }
                    } else if transport.ping().await.is_err() {
                        Step::Close { frame: None, code: CloseCode::ABNORMAL, client_closed: false }
                    } else {
                        Step::Continue
                    }
                }
            };
            if let Step::Close {
                frame,
                code,
                client_closed,
            } = step
            {
                break (frame, code, client_closed);
            }
        };

        // Let in-flight sends finish before the close frame, unless the
        // transport is already gone or the client broke the protocol.
        if frame
            .as_ref()
            .is_some_and(|f| matches!(f.code(), CloseCode::GOING_AWAY | CloseCode::NORMAL))
        {
            self.outbound.close();
            while let Ok(Outgoing::Message(m)) = self.outbound.try_recv() {
                if transport.feed(m).await.is_err() {
                    break;
                }
            }
            let _ = transport.flush().await;
        }
        self.outbound.close();
        if code != CloseCode::ABNORMAL || frame.is_some() {
            transport.close(frame).await;
        }
        self.consumer.disconnect(&mut self.ctx, code).await;
        self.release().await;
        Outcome {
            code,
            client_closed,
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Runs a handler to completion while writing what it queues; then maps its
/// result to the next step.
async fn drive<T, F>(
    fut: F,
    transport: &mut T,
    outbound: &mut mpsc::Receiver<Outgoing>,
    write_timeout: Duration,
) -> Step
where
    T: Transport,
    F: Future<Output = Result<(), ConsumerError>>,
{
    tokio::pin!(fut);
    let mut pending: Option<Step> = None;
    let result = loop {
        tokio::select! {
            biased;
            result = &mut fut => break result,
            Some(item) = outbound.recv(), if pending.is_none() => {
                if let step @ Step::Close { .. } = write_batch(transport, outbound, item, write_timeout).await {
                    // Stop writing; later sends from the handler fail fast.
                    outbound.close();
                    pending = Some(step);
                }
            }
        }
    };
    if let Some(step) = pending {
        return step;
    }
    match result {
        Ok(()) => Step::Continue,
        Err(error) => {
            let code = error.close_code();
            if matches!(error, ConsumerError::ConnectionClosed) {
                return Step::Close {
                    frame: None,
                    code,
                    client_closed: false,
                };
            }
            tracing::warn!(%error, %code, "consumer handler failed; closing the connection");
            let frame = code
                .is_sendable()
                .then(|| CloseFrame::new(code, error.close_reason()));
            Step::Close {
                frame,
                code,
                client_closed: false,
            }
        }
    }
}

/// Writes `first` and whatever else is queued, then flushes once. A write
/// that stalls past `limit` means the client stopped reading: close with 1013.
async fn write_batch<T: Transport>(
    transport: &mut T,
    outbound: &mut mpsc::Receiver<Outgoing>,
    first: Outgoing,
    limit: Duration,
) -> Step {
    match tokio::time::timeout(limit, write_batch_inner(transport, outbound, first)).await {
        Ok(step) => step,
        Err(_) => {
            tracing::info!("client stopped reading; closing it as too slow");
            let frame = CloseFrame::new(CloseCode::TRY_AGAIN_LATER, "client too slow");
            Step::Close {
                frame: Some(frame),
                code: CloseCode::TRY_AGAIN_LATER,
                client_closed: false,
            }
        }
    }
}

async fn write_batch_inner<T: Transport>(
    transport: &mut T,
    outbound: &mut mpsc::Receiver<Outgoing>,
    first: Outgoing,
) -> Step {
    let mut item = first;
    loop {
        match item {
            Outgoing::Close(frame) => {
                let _ = transport.flush().await;
                let code = frame.code();
                return Step::Close {
                    frame: Some(frame),
                    code,
                    client_closed: false,
                };
            }
            Outgoing::Message(m) => {
                if transport.feed(m).await.is_err() {
                    return Step::Close {
                        frame: None,
                        code: CloseCode::ABNORMAL,
                        client_closed: false,
                    };
                }
            }
        }
        match outbound.try_recv() {
            Ok(next) => item = next,
            Err(_) => break,
        }
    }
    match transport.flush().await {
        Ok(()) => Step::Continue,
        Err(_) => Step::Close {
            frame: None,
            code: CloseCode::ABNORMAL,
            client_closed: false,
        },
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst.max(1)),
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * self.limit.per_second;
        self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst.max(1)));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
