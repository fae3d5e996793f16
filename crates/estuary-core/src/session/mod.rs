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

#[cfg(test)]
mod abandon_tests;
#[cfg(test)]
mod client_tests;
mod config;
mod conn;
#[cfg(test)]
mod direct_tests;
mod drive;
mod handle;
mod keepalive;
#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod pipeline_tests;
mod pipelined;
mod rate;
mod recheck;
#[cfg(test)]
mod rest_tests;
mod stats;
mod step;
#[cfg(test)]
mod tests;
mod transport;
mod write;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{Outcome, SessionConfig};
use conn::{Conn, Flow};
use keepalive::Keepalive;
use rate::Bucket;
pub use rate::{AddressRateLimiter, RateLimit, address_key};
use recheck::{Rechecks, on_recheck};
use stats::Tally;
pub use stats::{SessionStats, WRITE_BATCH_BOUNDS};
use step::{Closing, Step};
pub use transport::{Inbound, Transport, TransportError};

use crate::close::CloseCode;
use crate::consumer::{Accept, Connect, Consumer, Reject};
use crate::context::Context;
use crate::layer::{ChannelLayer, ChannelLayerHandle, ReceiverState};
use crate::outbound::{OutboundReceiver, Outgoing, outbound};
use crate::scope::Scope;

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
    /// Shared by the connections of a route (the server opens every one
    /// with the same `Arc`): a copy each would make every connection's
    /// future larger.
    config: Arc<SessionConfig>,
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

impl<C: Consumer> Session<C> {
    /// Gives the connection a channel and runs [`Consumer::connect`].
    ///
    /// On acceptance returns the session (ready to [`run`](Self::run) once the
    /// handshake completes) and how to accept. On rejection the consumer's
    /// `disconnect` runs with 1006 (as Channels does), its groups and channel
    /// are released, and the rejection is returned.
    ///
    /// `config` is a [`SessionConfig`] or an `Arc` of one: a server opening
    /// many connections with the same settings passes one `Arc` to all.
    pub async fn open(
        mut consumer: C,
        scope: Scope,
        layer: ChannelLayerHandle,
        config: impl Into<Arc<SessionConfig>>,
    ) -> Result<(Self, Accept), Reject> {
        let config: Arc<SessionConfig> = config.into();
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
        ctx.set_group_send_window(config.group_send_window);
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
        // Boxed: only a connection that pipelined group sends waits here.
        Box::pin(self.settle_pipelined()).await;
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
    ///
    /// Not an `async fn`: one would copy `self` and `transport` from its
    /// arguments into its body, and every connection's future would hold
    /// both copies. The block below uses them where they were captured.
    #[allow(clippy::manual_async_fn)]
    pub fn run<T: Transport>(
        mut self,
        mut transport: T,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = Outcome> {
        async move {
            let layer = self.ctx.channel_layer().clone();
            let channel = self.ctx.channel_name().clone();
            let mut conn = Conn {
                transport: &mut transport,
                layer: &layer,
                channel: &channel,
                shutdown: &shutdown,
                // Bound once: a message costs no lookup of the channel.
                receiver: layer.receiver(&channel),
                layer_pause: None,
                keepalive: Keepalive::new(self.config.ping_interval),
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
                fed: false,
                recheck: self
                    .ctx
                    .scope()
                    .extensions()
                    .get::<crate::Recheck>()
                    .map(|r| Box::new(Rechecks::new(r.clone(), Instant::now()))),
                deadline: Deadline::earliest(
                    self.ctx.scope().user().and_then(|u| u.expires_at()).map(|at| {
                        let left = at
                            .duration_since(std::time::SystemTime::now())
                            .unwrap_or_default();
                        Instant::now() + left
                    }),
                    self.config.max_lifetime.map(|lifetime| Instant::now() + lifetime),
                ),
                config: self.config.clone(),
                tally: Tally::default(),
            };
            self.config.stats.count_open();
            // From here on a session drains this channel: group sends may hold
            // more than its capacity for it while the server catches up.
            layer.set_receiver(&channel, ReceiverState::Live);
            // Made and registered with the token once, not on every turn.
            let mut stopping = std::pin::pin!(shutdown.cancelled());
            let closing = 'turns: loop {
                let (mut turn, mut restful) = {
                    // While some live channel is over capacity, read no client: the
                    // producers wait for the server instead of members losing
                    // messages (flow control, see `ChannelLayer`). Everything else
                    // (writing, layer messages, keepalive) goes on.
                    let backlogged = layer.backlogged();
                    // A full window of pipelined group sends holds the client's
                    // next messages in TCP, as an awaited send would.
                    let reading = !backlogged && !self.ctx.pipeline_full();
                    let pipelined = self.ctx.has_pipelined();
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
                    let forced_turn = conn.client_turns >= CLIENT_TURNS && conn.layer_pause.is_none();
                    let forced = if forced_turn {
                        conn.client_turns = 0;
                        std::future::poll_fn(|cx| conn.receiver.poll_receive(cx)).now_or_never()
                    } else {
                        None
                    };
                    let turn = match forced {
                        Some(received) => Turn::Layer(received),
                        // Only what happened is taken here; its handling runs once
                        // the select's futures are dropped, so that the future of
                        // every connection holds the larger of the two, not both.
                        None => tokio::select! {
                            biased;
                            _ = stopping.as_mut() => Turn::Shutdown,
                            Some(item) = self.outbound.recv() => Turn::Outbound(item),
                            // An async block: the relief future is made only when polled.
                            _ = async { layer.relieved().await }, if backlogged => Turn::Idle,
                            inbound = conn.transport.recv(), if reading => Turn::Client(inbound),
                            sent = std::future::poll_fn(|cx| self.ctx.poll_pipelined(cx)), if pipelined => Turn::Pipelined(sent),
                            received = std::future::poll_fn(|cx| conn.receiver.poll_receive(cx)), if conn.layer_pause.is_none() => {
                                Turn::Layer(received)
                            }
                            _ = sleep_until_opt(conn.layer_pause) => {
                                conn.layer_pause = None;
                                Turn::Idle
                            }
                            _ = conn.keepalive.tick(conn.config.ping_interval) => Turn::Keepalive,
                            verdict = std::future::poll_fn(|cx| match conn.recheck.as_deref_mut() {
                                Some(rechecks) => rechecks.poll_next(cx),
                                None => std::task::Poll::Pending,
                            }), if conn.recheck.is_some() => Turn::Step(on_recheck(conn.channel, verdict)),
                            _ = sleep_until_opt(conn.deadline.map(|d| d.at)) => {
                                let closing = conn.deadline.map_or(Deadline::LIFETIME, |d| d.why());
                                tracing::debug!(channel = %conn.channel, reason = closing.1, "deadline reached; closing");
                                Turn::Step(Closing::server(closing.0, closing.1, true))
                            }
                        },
                    };
                    // A layer turn from the select had every source before the
                    // layer polled in this poll of the task: see `rest`.
                    let restful = !forced_turn && reading && !pipelined && matches!(turn, Turn::Layer(_));
                    (turn, restful)
                };
                // What a rest finds is handled here, before the sources are
                // polled again. (`turn` is moved out while the turn runs and
                // the rest waits: the future holds no second turn.)
                loop {
                    let step = match turn {
                        Turn::Shutdown => {
                            Closing::server(CloseCode::GOING_AWAY, "server shutting down", true)
                        }
                        Turn::Outbound(item) => self.write_out(&mut conn, Some(item)).await,
                        Turn::Client(inbound) => self.on_client(&mut conn, inbound).await,
                        Turn::Layer(received) => match self.on_layer(&mut conn, received).await {
                            // What the handlers queued goes out now, in one write:
                            // not on the loop's next turn, which would poll every
                            // source once more first. (Awaited here rather than in
                            // `on_layer`: the two futures then share their place.)
                            // Frames fed to the transport come first: nothing
                            // was queued when they were fed.
                            Step::Continue if std::mem::take(&mut conn.fed) => {
                                self.write_out(&mut conn, None).await
                            }
                            Step::Continue => match self.outbound.try_recv() {
                                Some(first) => self.write_out(&mut conn, Some(first)).await,
                                None => Step::Continue,
                            },
                            step => step,
                        },
                        Turn::Keepalive => self.on_keepalive(&mut conn).await,
                        Turn::Pipelined(Some(failure)) => self.on_group_send_failed(&mut conn, failure).await,
                        Turn::Pipelined(None) => Step::Continue,
                        Turn::Idle => Step::Continue,
                        Turn::Step(step) => step,
                    };
                    if let Step::Close(closing) = step {
                        break 'turns closing;
                    }
                    // After a delivery, wait without polling every source again
                    // (see `rest`), when that is known to be safe: the turn ran
                    // without waiting (a wait marks the context stalled), and
                    // none of the sources the rest does not cover is in use.
                    // (Pipelined sends the turn started are not among them.)
                    if restful
                        && !self.ctx.is_stalled()
                        && !self.ctx.has_pipelined()
                        && conn.layer_pause.is_none()
                        && conn.deadline.is_none()
                        && conn.recheck.is_none()
                    {
                        match rest(&mut self.outbound, &mut conn).await {
                            Some(next) => (turn, restful) = (next, true),
                            // Woken: every source is polled again.
                            None => continue 'turns,
                        }
                    } else {
                        continue 'turns;
                    }
                }
            };
            // Boxed: closing happens once, and its state (the drain's deadline,
            // `disconnect`, leaving groups) need not size the running future.
            Box::pin(self.close(conn, closing)).await
        }
    }

    /// The flow-control view of this connection's channel.
    fn flow<'a, T>(&self, conn: &Conn<'a, T>) -> Flow<'a> {
        Flow {
            layer: conn.layer,
            channel: conn.channel,
            stalled: self.ctx.is_stalled(),
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
            transport,
            layer,
            channel,
            config,
            receiver,
            mut tally,
            oversized,
            ..
        } = conn;
        // No longer read by the session: `disconnect` may read the channel
        // itself (`ChannelLayer::receive`), and a waker the receiver left
        // would take its wake-ups.
        drop(receiver);
        // No longer drained: the channel must not hold the layer's flow
        // control up while the connection closes and `disconnect` runs.
        layer.set_receiver(channel, ReceiverState::Detached);
        self.outbound.close();
        if drain {
            // Let in-flight sends finish before the close frame.
            let flushed = tokio::time::timeout(config.write_timeout, async {
                while let Some(Outgoing::Message(m)) = self.outbound.try_recv() {
                    tally.sent(m.len());
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
        let dropped = self.ctx.dropped();
        tally.batch_done();
        tally.fold(&self.config.stats);
        self.config.stats.count_close(code, dropped, oversized);
        Outcome {
            code,
            client_closed,
            dropped,
            oversized,
        }
    }
}

/// Waits for the next wake-up after a delivery, polling only the sources
/// the turn used: the outbound queue, the layer receiver (left with a
/// no-op waker by the drain) and the keepalive (after the layer in the
/// select's order, so perhaps not polled in this poll). A turn found
/// ready is returned, to be handled first.
///
/// Once woken, the layer's next delivery (what wakes a busy member) is
/// taken at once when every source the select polls before the layer is
/// known to have nothing, without polling it: the outbound queue is empty,
/// the layer is not backlogged (the select would stop reading the client),
/// the shutdown token is not cancelled, and the transport
/// ([`Transport::is_quiet`]) has nothing new. Otherwise `None`: the loop
/// then polls every source, in order, as usual.
///
/// Sound because the other sources (the shutdown token, the client's
/// socket) were polled, in this poll of the task, before the layer won
/// the select: each holds the task's waker (a registration lasts until
/// it fires), and one that fires during this poll has the task polled
/// again; and a delivery taken on waking is taken only when the checks
/// above show that none of them fired. Only a turn that did not wait (none
/// returned `Pending` to the runtime, whose wake-ups the turn would have
/// taken) may rest.
async fn rest<T: Transport>(outbound: &mut OutboundReceiver, conn: &mut Conn<'_, T>) -> Option<Turn> {
    let mut first = true;
    std::future::poll_fn(|cx| {
        use std::future::Future;
        use std::task::Poll;
        if !std::mem::take(&mut first) {
            if outbound.is_empty()
                && !conn.layer.backlogged()
                && !conn.shutdown.is_cancelled()
                && conn.transport.is_quiet(cx)
                && let Poll::Ready(received) = conn.receiver.poll_receive(cx)
            {
                return Poll::Ready(Some(Turn::Layer(received)));
            }
            return Poll::Ready(None);
        }
        if let Poll::Ready(Some(item)) = std::pin::pin!(outbound.recv()).poll(cx) {
            return Poll::Ready(Some(Turn::Outbound(item)));
        }
        if let Poll::Ready(received) = conn.receiver.poll_receive(cx) {
            return Poll::Ready(Some(Turn::Layer(received)));
        }
        if std::pin::pin!(conn.keepalive.tick(conn.config.ping_interval))
            .poll(cx)
            .is_ready()
        {
            return Poll::Ready(Some(Turn::Keepalive));
        }
        Poll::Pending
    })
    .await
}

/// What woke the session loop, taken from its select; handled after it.
enum Turn {
    Shutdown,
    Outbound(Outgoing),
    Client(Option<Result<Inbound, TransportError>>),
    Layer(Result<crate::Message, crate::layer::ChannelLayerError>),
    Keepalive,
    /// A pipelined group send failed, or the full window has room again.
    Pipelined(Option<crate::context::PipelineFailure>),
    /// Nothing to handle (the layer is relieved, its pause is over).
    Idle,
    /// Decided already.
    Step(Step),
}

/// Client messages a session handles in a row, while its channel holds
/// deliveries, before it takes those first.
const CLIENT_TURNS: u8 = 8;

/// When the connection must close by itself, and with what: the earlier
/// of the user's credential expiry (4401) and `max_lifetime` (1001). One
/// timer for both keeps the session loop's select as small as before.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    /// The credentials expire (else the lifetime ends): a flag, not the
    /// code and reason, in every connection's future.
    credentials: bool,
}

impl Deadline {
    const CREDENTIALS: (CloseCode, &'static str) = (CloseCode::CREDENTIALS_EXPIRED, "credentials expired");
    const LIFETIME: (CloseCode, &'static str) = (CloseCode::GOING_AWAY, "connection lifetime reached");

    /// The close code and reason when it is reached.
    fn why(self) -> (CloseCode, &'static str) {
        if self.credentials {
            Self::CREDENTIALS
        } else {
            Self::LIFETIME
        }
    }

    fn earliest(credentials: Option<Instant>, lifetime: Option<Instant>) -> Option<Self> {
        let credentials = credentials.map(|at| Self {
            at,
            credentials: true,
        });
        let lifetime = lifetime.map(|at| Self {
            at,
            credentials: false,
        });
        match (credentials, lifetime) {
            (Some(c), Some(l)) => Some(if l.at < c.at { l } else { c }),
            (c, l) => c.or(l),
        }
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
