//! Drives one consumer over one connection: the loop every transport shares.
//!
//! The server (over TCP) and the test communicator (in process) both hand a
//! [`Transport`] to a [`Session`]. The session owns the consumer and runs its
//! handlers one at a time; its loop selects over the client's next message,
//! the channel layer's next event for this connection, the outbound queue,
//! keepalive and shutdown.
//!
//! Two rules keep the broadcast path cheap and lossless:
//!
//! - **Drain, then write once.** After a layer event's handler, the handlers
//!   of the events the layer already holds for the connection run too (while
//!   the outbound queue is under half full), and what they queued goes out in
//!   one write: a backlog costs one system call and one TCP segment, not one
//!   each, while a lone message still leaves at once. A write's deadline is
//!   armed only when the write would block.
//! - **Flow control.** The session tells the layer how its receiver is doing
//!   ([`ReceiverState`]): live while its client keeps up, stalled while a
//!   write blocks or a handler waits. While the layer is backlogged (a live
//!   member holds more than its capacity), the session reads nothing from
//!   its client, so producers slow down instead of members losing messages.

mod drive;
mod keepalive;
#[cfg(test)]
mod limit_tests;
mod rate;
mod recheck;
#[cfg(test)]
mod tests;
mod transport;
mod write;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use drive::{Flow, drive};
use keepalive::{Due, Keepalive};
pub use rate::{AddressRateLimiter, RateLimit, address_key};
use recheck::{Rechecks, Verdict};
pub use transport::{Inbound, Transport, TransportError};
use write::{ping, write_batch};

use crate::close::{CloseCode, CloseFrame};
use crate::consumer::{Accept, Connect, Consumer, Reject};
use crate::context::{Context, Outgoing, SlowClientPolicy};
use crate::layer::{ChannelLayer, ChannelLayerError, ChannelLayerHandle, ChannelReceiver, ReceiverState};
use crate::message::Handling;
use crate::names::ChannelName;
use crate::outbound::{OutboundReceiver, outbound};
use crate::scope::Scope;
use rate::Bucket;

/// Settings of a session (the server fills them from its configuration).
///
/// ```
/// use std::time::Duration;
/// use estuary_core::{RateLimit, SessionConfig, SlowClientPolicy};
///
/// let config = SessionConfig {
///     outbound_capacity: 128,
///     slow_client: SlowClientPolicy::Drop,
///     rate_limit: Some(RateLimit { per_second: 10.0, burst: 20 }),
///     ..SessionConfig::default()
/// };
/// assert_eq!(config.ping_interval, Some(Duration::from_secs(20)));
/// ```
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
    /// Bytes the outbound queue may hold besides its message count (default
    /// 1 MiB): past it the queue counts as full and the slow-client policy
    /// applies. A single larger message is still sent when the queue is
    /// empty.
    pub outbound_bytes: usize,
    /// Client messages per second per client address, shared by all of that
    /// address's connections (a connection over it closes with 1008).
    pub address_rate_limit: Option<AddressRateLimiter>,
    /// Pings and pongs a client may send per second (default 5, burst 20);
    /// past it the connection closes with 1008. Each ping costs the server
    /// a pong.
    pub control_rate_limit: Option<RateLimit>,
    /// Largest channel-layer message handed to this connection, in bytes
    /// (default 1 MiB). Larger ones are dropped, counted in
    /// [`Outcome::oversized`] and logged (at most once a second).
    pub max_event_size: usize,
    /// Groups one connection may be in at once (default 100); past it,
    /// [`Context::group_add`] fails with [`ConsumerError::TooManyGroups`](crate::ConsumerError::TooManyGroups).
    pub max_groups: usize,
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
            outbound_bytes: 1024 * 1024,
            address_rate_limit: None,
            control_rate_limit: Some(RateLimit {
                per_second: 5.0,
                burst: 20,
            }),
            max_event_size: 1024 * 1024,
            max_groups: 100,
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
    /// Channel-layer messages dropped for being larger than
    /// [`SessionConfig::max_event_size`].
    pub oversized: u64,
}

/// One consumer bound to one connection, from handshake to disconnect.
///
/// Whatever happens — a rejected handshake, a handler that fails or
/// panics, a client that vanishes, a shutdown, or the session being dropped
/// unfinished — the connection's groups are left and its channel is closed,
/// exactly once.
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
    outbound: OutboundReceiver,
    config: SessionConfig,
}

impl<C: Consumer> std::fmt::Debug for Session<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// Joins the groups a consumer declared ([`Consumer::groups`]), before its
/// `connect`; the context leaves them with the rest when the connection ends.
async fn join_declared(
    ctx: &mut Context,
    declared: Result<Vec<crate::names::GroupName>, crate::ConsumerError>,
) -> Result<(), crate::ConsumerError> {
    for group in &declared? {
        ctx.group_add(group).await?;
    }
    Ok(())
}

/// What the loop does next.
enum Step {
    Continue,
    Close(Closing),
}

/// How the connection closes.
struct Closing {
    /// The close frame to send (`None`: the transport is gone or the client closed).
    frame: Option<CloseFrame>,
    /// The code handed to `disconnect`.
    code: CloseCode,
    client_closed: bool,
    /// Whether messages still queued should be written before the close frame
    /// (not when the transport failed or the client stopped reading).
    drain: bool,
}

impl Closing {
    fn server(code: CloseCode, reason: &str, drain: bool) -> Step {
        let frame = code.is_sendable().then(|| CloseFrame::new(code, reason));
        Step::Close(Closing {
            frame,
            code,
            client_closed: false,
            drain,
        })
    }

    fn gone(code: CloseCode, client_closed: bool) -> Step {
        Step::Close(Closing {
            frame: None,
            code,
            client_closed,
            drain: false,
        })
    }
}

impl<C: Consumer> Session<C> {
    /// Gives the connection a channel and runs [`Consumer::connect`].
    ///
    /// On acceptance returns the session (ready to [`run`](Self::run) once the
    /// handshake completes) and how to accept. On rejection the consumer's
    /// `disconnect` runs with 1006 (as Channels does), its groups and channel
    /// are released, and the rejection is returned.
    pub async fn open(
        mut consumer: C,
        scope: Scope,
        layer: ChannelLayerHandle,
        config: SessionConfig,
    ) -> Result<(Self, Accept), Reject> {
        let channel = layer.new_channel().await.map_err(|error| {
            crate::throttled!(error, %error, "cannot make a channel for a new connection; handshakes get 503 until the channel layer answers");
            Reject {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                reason: "channel layer unavailable".into(),
            }
        })?;
        let (tx, rx) = outbound(config.outbound_capacity, config.outbound_bytes);
        // Nothing is allocated for the usual empty list.
        let initial_groups = scope.initial_groups().to_vec();
        // The consumer's own `groups` (Channels' attribute), computed from
        // the scope before it is shared.
        let declared = consumer.groups(&scope);
        let mut ctx = Context::new(Arc::new(scope), channel, layer, tx, config.slow_client);
        ctx.set_max_groups(config.max_groups);
        // The groups the handshake middleware chose (Channels' `groups`
        // attribute) are joined before `connect`, which can rely on them.
        for group in &initial_groups {
            if let Err(error) = ctx.group_add(group).await {
                // Not the visitor's doing: the authenticator (a connect
                // callback) named too many groups, or the layer is down.
                crate::throttled!(
                    warn,
                    %group,
                    %error,
                    groups = initial_groups.len(),
                    "cannot join the groups the handshake's authentication named; handshake rejected"
                );
                ctx.release().await;
                return Err(Reject {
                    status: error.http_status(),
                    reason: error.http_reason(),
                });
            }
        }
        if let Err(error) = join_declared(&mut ctx, declared).await {
            tracing::info!(path = ctx.scope().path(), %error, "cannot join the consumer's declared groups; handshake rejected");
            ctx.release().await;
            return Err(Reject {
                status: error.http_status(),
                reason: error.http_reason(),
            });
        }
        let decision = AssertUnwindSafe(consumer.connect(&mut ctx)).catch_unwind().await;
        let mut session = Self {
            consumer,
            ctx,
            outbound: rx,
            config,
        };
        let reject = match decision {
            Ok(Ok(Connect::Accept(accept))) => return Ok((session, accept)),
            Ok(Ok(Connect::Reject(reject))) => reject,
            Ok(Err(error)) => {
                tracing::info!(path = session.ctx.scope().path(), %error, "connect failed; handshake rejected");
                Reject {
                    status: error.http_status(),
                    reason: error.http_reason(),
                }
            }
            Err(_) => {
                crate::throttled!(
                    error,
                    path = session.ctx.scope().path(),
                    "connect panicked; handshake rejected with 500 (a bug in the consumer)"
                );
                Reject {
                    status: http::StatusCode::INTERNAL_SERVER_ERROR,
                    reason: "internal error".into(),
                }
            }
        };
        session.finish(CloseCode::ABNORMAL).await;
        Err(reject)
    }

    /// This connection's channel name.
    pub fn channel_name(&self) -> &crate::ChannelName {
        self.ctx.channel_name()
    }

    /// Runs `disconnect` (shielded from panics), then releases groups and channel.
    async fn finish(&mut self, code: CloseCode) {
        self.outbound.close();
        if AssertUnwindSafe(self.consumer.disconnect(&mut self.ctx, code))
            .catch_unwind()
            .await
            .is_err()
        {
            crate::throttled!(error, channel = %self.ctx.channel_name(), "disconnect handler panicked (a bug in the consumer)");
        }
        self.ctx.release().await;
    }

    /// Runs the connection until it closes or `shutdown` is cancelled (then it
    /// sends what is queued, closes with 1001 and runs `disconnect`).
    pub async fn run<T: Transport>(mut self, transport: T, shutdown: CancellationToken) -> Outcome {
        let layer = self.ctx.channel_layer().clone();
        let channel = self.ctx.channel_name().clone();
        let mut conn = Conn {
            transport,
            layer: &layer,
            channel: &channel,
            shutdown: &shutdown,
            // Bound once: a message costs no lookup of the channel.
            receiver: layer.receiver(&channel),
            layer_pause: None,
            keepalive: Keepalive::new(self.config.ping_interval, self.config.ping_timeout),
            bucket: self.config.rate_limit.map(|r| Bucket::new(r, Instant::now())),
            control: self
                .config
                .control_rate_limit
                .map(|r| Bucket::new(r, Instant::now())),
            address: self
                .config
                .address_rate_limit
                .clone()
                .and_then(|limiter| Some((limiter, self.ctx.scope().client()?.ip()))),
            oversized: 0,
            client_turns: 0,
            recheck: self
                .ctx
                .scope()
                .extensions()
                .get::<crate::Recheck>()
                .map(|r| Box::new(Rechecks::new(r.clone(), Instant::now()))),
            credential_deadline: self.ctx.scope().user().and_then(|u| u.expires_at()).map(|at| {
                let left = at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                Instant::now() + left
            }),
            write_timeout: self.config.write_timeout,
        };
        // From here on a session drains this channel: group sends may hold
        // more than its capacity for it while the server catches up.
        layer.set_receiver(&channel, ReceiverState::Live);
        let closing = loop {
            // While some live channel is over capacity, read no client: the
            // producers wait for the server instead of members losing
            // messages (flow control, see `ChannelLayer`). Everything else
            // (writing, layer messages, keepalive) goes on.
            let backlogged = layer.backlogged();
            if backlogged {
                conn.keepalive.excuse();
            }
            if self.outbound.is_empty() {
                self.ctx.keeping_up();
            }
            // Client input goes first (a burst of it then reaches the layer
            // together, and its deliveries come back together), but a busy
            // sender (its handler awaiting each group send) must not read
            // message after message while its own channel overflows: after
            // `CLIENT_TURNS` client messages in a row, what the layer holds
            // is taken first.
            let forced = if conn.client_turns >= CLIENT_TURNS && conn.layer_pause.is_none() {
                conn.client_turns = 0;
                std::future::poll_fn(|cx| conn.receiver.poll_receive(cx)).now_or_never()
            } else {
                None
            };
            let step = match forced {
                Some(received) => self.on_layer(&mut conn, received).await,
                // Inline rather than a method per turn: a turn's future
                // would be built (and moved, all of its size) on every
                // wake-up.
                None => tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => Closing::server(CloseCode::GOING_AWAY, "server shutting down", true),
                    Some(item) = self.outbound.recv() => self.write_out(&mut conn, item).await,
                    // An async block: the relief future is made only when polled.
                    _ = async { layer.relieved().await }, if backlogged => Step::Continue,
                    inbound = conn.transport.recv(), if !backlogged => self.on_client(&mut conn, inbound).await,
                    received = std::future::poll_fn(|cx| conn.receiver.poll_receive(cx)), if conn.layer_pause.is_none() => {
                        self.on_layer(&mut conn, received).await
                    }
                    _ = sleep_until_opt(conn.layer_pause) => {
                        conn.layer_pause = None;
                        Step::Continue
                    }
                    _ = conn.keepalive.tick() => self.on_keepalive(&mut conn).await,
                    verdict = std::future::poll_fn(|cx| match conn.recheck.as_deref_mut() {
                        Some(rechecks) => rechecks.poll_next(cx),
                        None => std::task::Poll::Pending,
                    }), if conn.recheck.is_some() => on_recheck(conn.channel, verdict),
                    _ = sleep_until_opt(conn.credential_deadline) => {
                        tracing::debug!(channel = %conn.channel, "credentials expired; closing");
                        Closing::server(CloseCode::CREDENTIALS_EXPIRED, "credentials expired", true)
                    }
                },
            };
            if let Step::Close(closing) = step {
                break closing;
            }
        };
        // Boxed: closing happens once, and its state (the drain's deadline,
        // `disconnect`, leaving groups) need not size the running future.
        Box::pin(self.close(conn, closing)).await
    }

    /// The flow-control view of this connection's channel.
    fn flow<'a, T>(&self, conn: &Conn<'a, T>) -> Flow<'a> {
        Flow {
            layer: conn.layer,
            channel: conn.channel,
            stalled: self.ctx.is_stalled(),
        }
    }

    /// Writes `first` and whatever else is queued, in one flush.
    async fn write_out<T: Transport>(&mut self, conn: &mut Conn<'_, T>, first: Outgoing) -> Step {
        let flow = self.flow(conn);
        let (step, blocked) = write_batch(
            &mut conn.transport,
            &mut self.outbound,
            first,
            conn.write_timeout,
            Some(&flow),
        )
        .await;
        if blocked {
            self.ctx.mark_stalled();
        }
        step
    }

    /// Something came from the client: a message (rate-limited, then handed
    /// to `receive`), a pong, a close, an error, or the end of the stream.
    async fn on_client<T: Transport>(
        &mut self,
        conn: &mut Conn<'_, T>,
        inbound: Option<Result<Inbound, TransportError>>,
    ) -> Step {
        conn.keepalive.heard();
        let message = match inbound {
            None => return Closing::gone(CloseCode::ABNORMAL, true),
            Some(Ok(Inbound::Pong)) => {
                if conn.control.as_mut().is_some_and(|b| !b.take(Instant::now())) {
                    return Closing::server(CloseCode::POLICY_VIOLATION, "control frame rate exceeded", true);
                }
                return Step::Continue;
            }
            Some(Ok(Inbound::Close(frame))) => {
                return Closing::gone(
                    frame.as_ref().map_or(CloseCode::NO_STATUS, CloseFrame::code),
                    true,
                );
            }
            Some(Err(error)) => {
                tracing::debug!(channel = %conn.channel, %error, "closing on transport error");
                return Closing::server(error.close_code(), &error.to_string(), false);
            }
            Some(Ok(Inbound::Message(message))) => message,
        };
        conn.client_turns = conn.client_turns.saturating_add(1);
        if conn.bucket.as_mut().is_some_and(|b| !b.take(Instant::now())) {
            return Closing::server(CloseCode::POLICY_VIOLATION, "rate limit exceeded", true);
        }
        if conn.address.as_ref().is_some_and(|(l, ip)| !l.check(*ip)) {
            return Closing::server(
                CloseCode::POLICY_VIOLATION,
                "rate limit exceeded (per address)",
                true,
            );
        }
        let flow = self.flow(conn);
        let (step, waited) = {
            let fut = std::pin::pin!(self.consumer.receive(&mut self.ctx, message));
            drive(fut, &mut self.outbound, conn, flow).await
        };
        if waited {
            self.ctx.mark_stalled();
        }
        step
    }

    /// The layer delivered a message (or failed). Handles it, then the
    /// messages the layer already holds for this connection, before
    /// writing: a backlog leaves in one write (one TCP segment, one wake-up
    /// of the client) rather than one per message, while a lone message
    /// still leaves at once. Bounded in turns, and by the outbound queue: a
    /// drained handler starts with up to half the queue in use, so an event
    /// that sends more than half the queue's capacity in frames may meet the
    /// slow-client policy sooner.
    async fn on_layer<T: Transport>(
        &mut self,
        conn: &mut Conn<'_, T>,
        received: Result<crate::Message, ChannelLayerError>,
    ) -> Step {
        conn.client_turns = 0;
        let mut step = self.handle_layer(conn, received).await;
        let drain_limit = self.config.outbound_capacity / 2;
        let mut turns = 0;
        while matches!(step, Step::Continue)
            && conn.layer_pause.is_none()
            && self.outbound.len() < drain_limit
            && turns < drain_limit
            // After `ctx.close`, the close goes out next: no later message
            // is handled first (a rendered one would fail as sent after the
            // close, and turn a clean close into an abnormal one).
            && !self.ctx.is_closing()
        {
            turns += 1;
            // A no-op waker: the loop polls the receiver again, with its
            // own, before it waits.
            let ready = conn
                .receiver
                .poll_receive(&mut std::task::Context::from_waker(std::task::Waker::noop()));
            let std::task::Poll::Ready(received) = ready else {
                break;
            };
            step = self.handle_layer(conn, received).await;
        }
        step
    }

    /// Handles one receive from the channel layer: sends the frame rendered
    /// for it, or runs the consumer's event handler (or `undecodable_event`),
    /// or reacts to a layer failure.
    async fn handle_layer<T: Transport>(
        &mut self,
        conn: &mut Conn<'_, T>,
        received: Result<crate::Message, ChannelLayerError>,
    ) -> Step {
        match received {
            Ok(message) if message.as_bytes().len() > self.config.max_event_size => {
                conn.oversized += 1;
                oversized_event(conn.channel, message.message_type(), message.as_bytes().len());
                Step::Continue
            }
            Ok(message) => {
                let flow = self.flow(conn);
                let (step, waited) = {
                    let (consumer, ctx) = (&mut self.consumer, &mut self.ctx);
                    let fut = std::pin::pin!(async {
                        match message.rendered::<C, C::Event>(C::render) {
                            Handling::Frame(frame) => ctx.send(frame).await,
                            Handling::Event(event) => consumer.event(ctx, event).await,
                            Handling::Undecodable(error) => {
                                consumer.undecodable_event(ctx, message, error).await
                            }
                        }
                    });
                    drive(fut, &mut self.outbound, conn, flow).await
                };
                if waited {
                    self.ctx.mark_stalled();
                }
                step
            }
            Err(ChannelLayerError::ChannelClosed(_)) => {
                Closing::server(CloseCode::INTERNAL_ERROR, "channel closed", true)
            }
            // Messages for this client were lost (its channel was full while
            // it did not read, or the layer lost them: a deleted group key, a
            // lost subscriber): never silently. Disconnect tells the client
            // (1013), which then knows to reload; Drop counts them. The
            // reason names the loss, not its cause, which may not be the
            // client's.
            Err(ChannelLayerError::Lost { count }) => match self.config.slow_client {
                SlowClientPolicy::Disconnect { .. } => {
                    tracing::debug!(channel = %conn.channel, count, "messages for this connection lost; closing");
                    Closing::server(CloseCode::TRY_AGAIN_LATER, "messages were lost; reconnect", false)
                }
                SlowClientPolicy::Drop => {
                    self.ctx.count_dropped(count);
                    Step::Continue
                }
            },
            Err(error) => {
                // The backend is down: keep the socket, retry in a second.
                crate::throttled!(warn, channel = %conn.channel, %error, "channel layer receive failed; retrying in a second (is the channel layer reachable?)");
                conn.layer_pause = Some(Instant::now() + Duration::from_secs(1));
                Step::Continue
            }
        }
    }

    /// A keepalive tick: ping, or give up on a peer that never answered.
    async fn on_keepalive<T: Transport>(&mut self, conn: &mut Conn<'_, T>) -> Step {
        match conn.keepalive.due() {
            Due::Dead => {
                tracing::debug!(channel = %conn.channel, "no answer to a ping within the timeout; dropping the peer");
                Closing::gone(CloseCode::ABNORMAL, false)
            }
            Due::Waiting => Step::Continue,
            Due::Ping => {
                let flow = self.flow(conn);
                // Boxed: a ping every interval need not size every idle
                // connection's future for its deadline.
                let (sent, blocked) = Box::pin(ping(&mut conn.transport, conn.write_timeout, &flow)).await;
                if blocked {
                    self.ctx.mark_stalled();
                }
                if sent {
                    conn.keepalive.pinged();
                    Step::Continue
                } else {
                    Closing::gone(CloseCode::ABNORMAL, false)
                }
            }
        }
    }

    /// Closes the connection as `closing` says: detaches the channel, writes
    /// what is queued (when asked to), sends the close frame, and runs
    /// `disconnect`.
    async fn close<T: Transport>(mut self, conn: Conn<'_, T>, closing: Closing) -> Outcome {
        let Closing {
            frame,
            code,
            client_closed,
            drain,
        } = closing;
        let Conn {
            mut transport,
            layer,
            channel,
            write_timeout,
            ..
        } = conn;
        // No longer drained: the channel must not hold the layer's flow
        // control up while the connection closes and `disconnect` runs.
        layer.set_receiver(channel, ReceiverState::Detached);
        self.outbound.close();
        if drain {
            // Let in-flight sends finish before the close frame.
            let flushed = tokio::time::timeout(write_timeout, async {
                while let Some(Outgoing::Message(m)) = self.outbound.try_recv() {
                    if transport.feed(m).await.is_err() {
                        return;
                    }
                }
                let _ = transport.flush().await;
            })
            .await;
            if flushed.is_err() {
                tracing::debug!(%channel, "queued messages not written before close: client too slow");
            }
        }
        if frame.is_some() || client_closed {
            transport.close(frame).await;
        }
        self.finish(code).await;
        Outcome {
            code,
            client_closed,
            dropped: self.ctx.dropped(),
            oversized: conn.oversized,
        }
    }
}

/// What the session loop holds while a connection runs, besides the session.
struct Conn<'a, T> {
    transport: T,
    layer: &'a ChannelLayerHandle,
    channel: &'a ChannelName,
    shutdown: &'a CancellationToken,
    /// This connection's channel, bound once.
    receiver: Box<dyn ChannelReceiver + 'a>,
    /// The layer failed: no receive until then.
    layer_pause: Option<Instant>,
    keepalive: Keepalive,
    bucket: Option<Bucket>,
    /// Pings and pongs from the client.
    control: Option<Bucket>,
    /// The limit shared by the client's address, and that address.
    address: Option<(AddressRateLimiter, std::net::IpAddr)>,
    /// Layer messages dropped for their size.
    oversized: u64,
    /// Client messages handled since the layer's last turn.
    client_turns: u8,
    /// When the user's credential expires (a JWT's `exp`).
    credential_deadline: Option<Instant>,
    /// The check that the user is still signed in (boxed: rare).
    recheck: Option<Box<Rechecks>>,
    write_timeout: Duration,
}

/// What a [`Recheck`](crate::Recheck) of the user found: signed out
/// closes with 4401; a failed or timed-out check keeps the connection (the
/// next is due an interval later).
fn on_recheck(channel: &ChannelName, verdict: Verdict) -> Step {
    match verdict {
        Verdict::SignedOut => {
            tracing::debug!(%channel, "user no longer signed in; closing");
            return Closing::server(CloseCode::CREDENTIALS_EXPIRED, "signed out", true);
        }
        Verdict::SignedIn => {}
        // Every open connection rechecks: with the backend down, one line
        // each per interval would flood the log. One a second at most.
        Verdict::Failed(error) => {
            crate::throttled!(warn, %channel, %error, "sign-in recheck failed; keeping the connection (is the authentication backend reachable?)")
        }
        Verdict::TimedOut => {
            crate::throttled!(warn, %channel, "sign-in recheck timed out; keeping the connection (is the authentication backend slow?)")
        }
    }
    Step::Continue
}

/// Client messages a session handles in a row, while its channel holds
/// deliveries, before it takes those first.
const CLIENT_TURNS: u8 = 8;

/// Logs a dropped oversized layer message, at most once a second.
fn oversized_event(channel: &ChannelName, kind: &str, size: usize) {
    static THROTTLE: crate::Throttle = crate::Throttle::new(Duration::from_secs(1));
    if let Some(held_back) = THROTTLE.allow(std::time::Instant::now()) {
        tracing::warn!(
            %channel,
            kind,
            size,
            held_back,
            "channel-layer message larger than max_event_size dropped"
        );
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        // Boxed: a paused layer is rare, and the timer would otherwise
        // size every connection's future.
        Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
        None => std::future::pending().await,
    }
}
