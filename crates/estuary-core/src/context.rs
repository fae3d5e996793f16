//! What a consumer's handlers work with: the scope, the layer, the client.

mod pipeline;
mod presence;

pub(crate) use pipeline::Failure as PipelineFailure;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use serde::Serialize;

use crate::client::{ClientHandle, WhenFull};
use crate::close::{CloseCode, CloseFrame};
use crate::error::ConsumerError;
use crate::json_encoder::JsonEncoder;
use crate::layer::{ChannelLayer, ChannelLayerHandle, GroupSendReport, ReceiverState};
use crate::message::Message;
use crate::names::{ChannelName, GroupName};
use crate::outbound::{OutboundSender, Outgoing, TrySendError};
use crate::scope::Scope;
use crate::ws::WsMessage;

/// What to do when a client does not read fast enough and its bounded
/// outbound queue is full. Set it in [`SessionConfig::slow_client`](crate::SessionConfig::slow_client).
///
/// ```
/// use std::time::Duration;
/// use estuary_core::{SessionConfig, SlowClientPolicy};
///
/// assert_eq!(
///     SlowClientPolicy::default(),
///     SlowClientPolicy::Disconnect { grace: Duration::from_secs(5) },
/// );
///
/// // A live price feed: a stale update is worthless, so drop it and keep the client.
/// let config = SessionConfig {
///     slow_client: SlowClientPolicy::Drop,
///     ..SessionConfig::default()
/// };
/// # let _ = config;
/// ```
///
/// With the `serde` feature the policy reads and writes as a table tagged
/// by `policy`, the grace in seconds: `{ policy = "disconnect", grace = 5 }`
/// or `{ policy = "drop" }`; another `policy` is an error that lists the
/// two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "policy", rename_all = "lowercase", deny_unknown_fields)
)]
pub enum SlowClientPolicy {
    /// Wait up to `grace` for room; then close the connection with 1013
    /// (try again later). The default, with a grace of 5 s.
    Disconnect {
        /// How long a send may wait for room.
        #[cfg_attr(feature = "serde", serde(with = "crate::secs"))]
        grace: Duration,
    },
    /// Drop the message at once and count it; the connection stays open.
    Drop,
}

impl From<SlowClientPolicy> for WhenFull {
    fn from(policy: SlowClientPolicy) -> Self {
        match policy {
            SlowClientPolicy::Drop => WhenFull::Drop,
            SlowClientPolicy::Disconnect { grace } => WhenFull::Wait(grace),
        }
    }
}

impl Default for SlowClientPolicy {
    fn default() -> Self {
        SlowClientPolicy::Disconnect {
            grace: Duration::from_secs(5),
        }
    }
}

/// How many pipelined group sends a connection has in flight at most,
/// unless [`SessionConfig::group_send_window`](crate::SessionConfig::group_send_window)
/// says otherwise.
pub const DEFAULT_GROUP_SEND_WINDOW: usize = 8;

/// The connection as one consumer's handlers see it (Channels' `self`):
/// the scope, its own channel name, the channel layer, and the client.
///
/// Sends go to a bounded outbound queue that the connection drains while the
/// handler runs; see [`SlowClientPolicy`] for what happens when it is full.
/// Groups joined with [`group_add`](Self::group_add) are left automatically
/// when the connection ends.
///
/// There is no public constructor: the session makes one per connection and
/// lends it to each [`Consumer`](crate::Consumer) handler.
///
/// ```
/// use estuary_core::{
///     ChannelLayerHandle, CloseCode, Connect, Consumer, ConsumerError, Context, GroupName,
///     InMemoryChannelLayer, NoEvent, Scope, Session, SessionConfig, WsMessage,
/// };
///
/// struct Lobby;
///
/// impl Consumer for Lobby {
///     type Event = NoEvent;
///
///     async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
///         ctx.group_add(&GroupName::new("lobby")?).await?;
///         // Sent right after the handshake completes.
///         ctx.send_json(&serde_json::json!({"type": "welcome"})).await?;
///         Ok(Connect::accept())
///     }
///
///     async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
///         if msg.as_text() == Some("bye") {
///             return ctx.close(CloseCode::NORMAL, "goodbye").await;
///         }
///         ctx.send(msg).await
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let layer = InMemoryChannelLayer::default();
/// let scope = Scope::builder("/ws/lobby/").build();
/// let handle = ChannelLayerHandle::new(layer.clone());
/// let (session, _accept) = Session::open(Lobby, scope, handle, SessionConfig::default())
///     .await
///     .expect("accepted");
/// // `connect` joined the group through its context.
/// assert_eq!(layer.group_size(&GroupName::new("lobby").unwrap()), 1);
/// # drop(session);
/// # });
/// ```
pub struct Context {
    scope: Arc<Scope>,
    channel: ChannelName,
    layer: ChannelLayerHandle,
    outbound: OutboundSender,
    policy: SlowClientPolicy,
    groups: crate::group_set::GroupSet,
    max_groups: usize,
    closing: bool,
    dropped: u64,
    released: bool,
    /// The outbound queue was found full and has not emptied since: the
    /// channel is [`ReceiverState::Stalled`] for flow control.
    stalled: bool,
    /// What [`send_json`](Self::send_json) writes with; `None`: serde_json.
    json_encoder: Option<Arc<dyn JsonEncoder>>,
    /// Recorded messages to drop on arrival, one position per epoch (see
    /// [`skip_recorded_through`](Self::skip_recorded_through)).
    skip_recorded: Vec<crate::layer::StreamPosition>,
    /// The pipelined group sends ([`group_send_pipelined`](Self::group_send_pipelined)),
    /// made at the first. In a mutex only so that the context stays `Sync`
    /// (the futures in it are `Send` alone); always reached through
    /// `&mut self`, never locked.
    pipeline: Option<Box<Mutex<pipeline::Pipeline>>>,
    /// How many pipelined group sends may be in flight at once.
    pipeline_window: usize,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("channel", &self.channel)
            .field("path", &self.scope.path())
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn new(
        scope: Arc<Scope>,
        channel: ChannelName,
        layer: ChannelLayerHandle,
        outbound: OutboundSender,
        policy: SlowClientPolicy,
    ) -> Self {
        Self {
            scope,
            channel,
            layer,
            outbound,
            policy,
            groups: crate::group_set::GroupSet::default(),
            max_groups: usize::MAX,
            closing: false,
            dropped: 0,
            released: false,
            stalled: false,
            json_encoder: None,
            skip_recorded: Vec::new(),
            pipeline: None,
            pipeline_window: DEFAULT_GROUP_SEND_WINDOW,
        }
    }

    /// The connection's scope.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// This connection's own channel name: pass it to others so they can
    /// [`send`](ChannelLayer::send) to this connection alone.
    pub fn channel_name(&self) -> &ChannelName {
        &self.channel
    }

    /// The channel layer, for anything the helpers below do not cover.
    pub fn channel_layer(&self) -> &ChannelLayerHandle {
        &self.layer
    }

    /// The groups this connection joined through [`group_add`](Self::group_add).
    pub fn groups(&self) -> impl Iterator<Item = &GroupName> {
        self.groups.iter()
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// A handle that sends to this connection's client from other tasks
    /// (a reply streamed by a spawned task, a timer), through the same
    /// outbound queue and under the same [`SlowClientPolicy`]; see
    /// [`ClientHandle`].
    ///
    /// ```
    /// use estuary_core::{Consumer, ConsumerError, Context, NoEvent, WsMessage};
    ///
    /// struct Slow;
    /// impl Consumer for Slow {
    ///     type Event = NoEvent;
    ///     async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
    ///         let client = ctx.client();
    ///         // The next message is handled while this one is worked on.
    ///         tokio::spawn(async move {
    ///             let _ = client.send(msg).await;
    ///         });
    ///         Ok(())
    ///     }
    /// }
    /// # let _ = Slow;
    /// ```
    pub fn client(&self) -> ClientHandle {
        ClientHandle::new(self.outbound.clone(), self.policy.into(), self.channel.clone())
    }

    /// Sends a message to the client.
    ///
    /// Fails with [`ConsumerError::ConnectionClosed`] once the connection is
    /// closing, and with [`ConsumerError::SlowClient`] when the client's queue
    /// stays full (under [`SlowClientPolicy::Disconnect`]).
    pub async fn send(&mut self, message: impl Into<WsMessage>) -> Result<(), ConsumerError> {
        if self.closing {
            return Err(ConsumerError::ConnectionClosed);
        }
        self.enqueue(Outgoing::Message(message.into())).await
    }

    /// Queues a message for the client only if the outbound queue has room
    /// now ([`SessionConfig::outbound_capacity`](crate::SessionConfig::outbound_capacity)
    /// messages, [`outbound_bytes`](crate::SessionConfig::outbound_bytes)
    /// bytes): `Ok(false)` when it has none, and nothing is queued, waited
    /// for or counted, whatever the [`SlowClientPolicy`].
    ///
    /// For what must not wait: in [`Consumer::connect`](crate::Consumer::connect)
    /// nothing is written until the handshake completes, so a
    /// [`send`](Self::send) that finds the queue full would wait out the
    /// slow-client grace (then fail) or drop its message; `try_send` lets
    /// the consumer refuse the handshake instead. Fails with
    /// [`ConsumerError::ConnectionClosed`] as `send` does.
    ///
    /// ```
    /// use estuary_core::{Connect, Consumer, ConsumerError, Context, NoEvent, WsMessage};
    /// use http::StatusCode;
    ///
    /// /// Sends its backlog with the handshake, or refuses it.
    /// struct Backlog(Vec<String>);
    ///
    /// impl Consumer for Backlog {
    ///     type Event = NoEvent;
    ///     async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
    ///         for line in std::mem::take(&mut self.0) {
    ///             if !ctx.try_send(WsMessage::text(line))? {
    ///                 return Ok(Connect::reject_with(StatusCode::SERVICE_UNAVAILABLE, "backlog too long"));
    ///             }
    ///         }
    ///         Ok(Connect::accept())
    ///     }
    /// }
    /// # let _ = Backlog(Vec::new());
    /// ```
    pub fn try_send(&mut self, message: impl Into<WsMessage>) -> Result<bool, ConsumerError> {
        if self.closing {
            return Err(ConsumerError::ConnectionClosed);
        }
        match self.outbound.try_send(Outgoing::Message(message.into())) {
            Ok(()) => Ok(true),
            Err(TrySendError::Full(_)) => Ok(false),
            Err(TrySendError::Closed) => Err(ConsumerError::ConnectionClosed),
        }
    }

    /// Sends a text message to the client.
    pub async fn send_text(&mut self, text: impl Into<ByteString>) -> Result<(), ConsumerError> {
        self.send(WsMessage::Text(text.into())).await
    }

    /// Sends a binary message to the client.
    pub async fn send_binary(&mut self, bytes: impl Into<Bytes>) -> Result<(), ConsumerError> {
        self.send(WsMessage::Binary(bytes.into())).await
    }

    /// Sends `value` to the client as a JSON text message, written by this
    /// connection's [`JsonEncoder`] if one is set
    /// ([`set_json_encoder`](Self::set_json_encoder)), else by serde_json.
    pub async fn send_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConsumerError> {
        let message = match &self.json_encoder {
            None => WsMessage::json(value)?,
            Some(encoder) => WsMessage::text(encoder.encode(serde_json::to_value(value)?)?),
        };
        self.send(message).await
    }

    /// Makes [`send_json`](Self::send_json) write with `encoder` from now on
    /// (a [`JsonConsumer`](crate::JsonConsumer) sets its
    /// [`json_encoder`](crate::JsonConsumer::json_encoder) before `connect`).
    pub fn set_json_encoder(&mut self, encoder: Arc<dyn JsonEncoder>) {
        self.json_encoder = Some(encoder);
    }

    /// Closes the connection with `code` and `reason` once the messages queued
    /// before it are sent. Later sends fail; `disconnect` still runs. A code
    /// that may not appear on the wire (1005, 1006, 1015, or outside
    /// 1000–4999) is sent as 1000.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), ConsumerError> {
        if self.closing {
            return Ok(());
        }
        self.closing = true;
        let code = if code.is_sendable() {
            code
        } else {
            crate::throttled!(warn, %code, "close code cannot be sent on the wire (a bug in the consumer: use 1000 or 3000-4999); sending 1000");
            CloseCode::NORMAL
        };
        self.enqueue(Outgoing::Close(CloseFrame::new(code, reason))).await
    }

    /// Whether the channel is marked stalled for flow control.
    pub(crate) fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// The session marked the channel stalled (a handler waited, or a write
    /// blocked): it is made live again once the outbound queue is empty.
    pub(crate) fn mark_stalled(&mut self) {
        self.stalled = true;
    }

    /// The client reads again (the session emptied the outbound queue): its
    /// channel is live again for flow control.
    pub(crate) fn keeping_up(&mut self) {
        if std::mem::replace(&mut self.stalled, false) {
            self.layer.set_receiver(&self.channel, ReceiverState::Live);
        }
    }

    /// Queues `message` when that needs no waiting: `Ok(None)` when it is
    /// queued, `Ok(Some(message))` (untouched, uncounted) when the outbound
    /// queue is full and [`send`](Self::send) must decide, and the error
    /// `send` gives when the connection is closing or closed. The session's
    /// synchronous path for frames rendered once per group message.
    pub(crate) fn send_now(&mut self, message: WsMessage) -> Result<Option<WsMessage>, ConsumerError> {
        if self.closing {
            return Err(ConsumerError::ConnectionClosed);
        }
        match self.outbound.try_send(Outgoing::Message(message)) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(Outgoing::Message(message))) => Ok(Some(message)),
            Err(TrySendError::Full(Outgoing::Close(_)) | TrySendError::Closed) => {
                Err(ConsumerError::ConnectionClosed)
            }
        }
    }

    async fn enqueue(&mut self, item: Outgoing) -> Result<(), ConsumerError> {
        match self.outbound.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed) => Err(ConsumerError::ConnectionClosed),
            Err(TrySendError::Full(item)) => {
                // The client is not reading: group sends must not hold
                // messages for it beyond its capacity (that is for members
                // the server is behind on); its slow-client policy applies.
                if !std::mem::replace(&mut self.stalled, true) {
                    self.layer.set_receiver(&self.channel, ReceiverState::Stalled);
                }
                // Boxed: only a full queue needs the waiting state (a
                // deadline, a place in line), and every handler that sends
                // would otherwise carry it.
                Box::pin(self.enqueue_full(item)).await
            }
        }
    }

    async fn enqueue_full(&mut self, item: Outgoing) -> Result<(), ConsumerError> {
        match (self.policy, item) {
            (SlowClientPolicy::Drop, Outgoing::Message(_)) => {
                self.dropped += 1;
                Ok(())
            }
            (SlowClientPolicy::Drop, item) => {
                // A close is never dropped: wait for room like any reply.
                self.outbound
                    .send(item)
                    .await
                    .map_err(|_| ConsumerError::ConnectionClosed)
            }
            (SlowClientPolicy::Disconnect { grace }, item) => {
                match tokio::time::timeout(grace, self.outbound.send(item)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(ConsumerError::ConnectionClosed),
                    Err(_) => Err(ConsumerError::SlowClient),
                }
            }
        }
    }

    pub(crate) fn set_max_groups(&mut self, max: usize) {
        self.max_groups = max;
    }

    /// Adds this connection to `group` (or renews its membership). Fails
    /// with [`ConsumerError::TooManyGroups`] (close 1008) when the
    /// connection is already in [`SessionConfig::max_groups`](crate::SessionConfig::max_groups) others.
    pub async fn group_add(&mut self, group: &GroupName) -> Result<(), ConsumerError> {
        if self.groups.len() >= self.max_groups && !self.groups.contains(group) {
            return Err(ConsumerError::TooManyGroups {
                limit: self.max_groups,
            });
        }
        // Recorded before the layer is asked: a context dropped while the
        // layer works (a handshake abandoned mid-`connect`) may hold the
        // membership already, and leaves it with the others.
        let new = self.groups.insert(group.clone());
        if let Err(error) = self.layer.group_add(group, &self.channel).await {
            if new {
                self.groups.remove(group);
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// Removes this connection from `group`.
    pub async fn group_discard(&mut self, group: &GroupName) -> Result<(), ConsumerError> {
        self.layer.group_discard(group, &self.channel).await?;
        self.groups.remove(group);
        Ok(())
    }

    /// Encodes `event` once and sends it to every member of `group`.
    pub async fn group_send<T: Serialize + ?Sized>(
        &self,
        group: &GroupName,
        event: &T,
    ) -> Result<GroupSendReport, ConsumerError> {
        let message = Message::encode(event)?;
        Ok(self.layer.group_send(group, message).await?)
    }

    /// Sends `event` to every member of `group` without waiting for the
    /// layer: the send is started now and completes while the connection
    /// goes on (the handler returns, the next client message is read).
    /// [`group_send`](Self::group_send) waits for the layer's report
    /// instead; this is for the hot path of a handler that relays what its
    /// client says to a group, where waiting one layer round trip per
    /// message (over Redis) is what limits the connection.
    ///
    /// Contracts:
    ///
    /// * **Order.** Sends issued through one context reach the layer in the
    ///   order issued: when the layer keeps the order of sends started one
    ///   after the other ([`ChannelLayer::pipelines_group_sends`]), up to the
    ///   window are in flight at once, each started (its command handed to
    ///   the layer) before the next; otherwise they run one at a time, in
    ///   order. A group send awaited with [`group_send`](Self::group_send)
    ///   or a [`send_to`](Self::send_to) is not ordered with the pipelined
    ///   ones still in flight.
    /// * **Capacity.** At most [`SessionConfig::group_send_window`](crate::SessionConfig::group_send_window)
    ///   sends are in flight per connection. While the window is full the
    ///   session reads nothing more from the client (back-pressure: a client
    ///   that sends faster than the layer takes its messages waits in TCP,
    ///   as it does behind an awaited `group_send`); a handler that issues a
    ///   send into a full window waits here for the oldest to complete.
    /// * **Errors.** A send that fails is reported to the consumer's
    ///   [`group_send_failed`](crate::Consumer::group_send_failed), once, in
    ///   the order the failures occur, between handlers (never while one
    ///   runs). What the layer reports of a send that succeeded (members
    ///   skipped as full) is not reported. An event that cannot be encoded
    ///   fails here, at once, and nothing is sent.
    /// * **Disconnect.** When the connection ends, the sends in flight
    ///   complete and their failures are reported (a frame sent then fails
    ///   with [`ConsumerError::ConnectionClosed`]) before
    ///   [`disconnect`](crate::Consumer::disconnect) runs. A context dropped
    ///   without its session finishing (a handler that panicked, a
    ///   handshake abandoned in `connect`) completes them on a task of its
    ///   own and logs their failures. A send is never dropped unreported.
    ///
    /// In memory a send completes at once; the API is the same.
    ///
    /// ```
    /// use estuary_core::{Consumer, ConsumerError, Context, GroupName, NoEvent, WsMessage};
    ///
    /// struct Relay;
    ///
    /// impl Consumer for Relay {
    ///     type Event = NoEvent;
    ///
    ///     async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
    ///         let text = msg.as_text().unwrap_or_default().to_owned();
    ///         let event = serde_json::json!({"type": "relay.message", "text": text});
    ///         ctx.group_send_pipelined(&GroupName::new("room")?, &event).await
    ///     }
    ///
    ///     async fn group_send_failed(
    ///         &mut self,
    ///         ctx: &mut Context,
    ///         _group: GroupName,
    ///         _error: ConsumerError,
    ///     ) -> Result<(), ConsumerError> {
    ///         // Tell the sender; keep the connection.
    ///         ctx.send_text("not delivered, try again").await
    ///     }
    /// }
    /// # let _ = Relay;
    /// ```
    pub async fn group_send_pipelined<T: Serialize + ?Sized>(
        &mut self,
        group: &GroupName,
        event: &T,
    ) -> Result<(), ConsumerError> {
        let message = Message::encode(event)?;
        let window = self.pipeline_window;
        let layer = &self.layer;
        let pipeline = self
            .pipeline
            .get_or_insert_with(|| Box::new(Mutex::new(pipeline::Pipeline::new(layer.clone(), window))))
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if pipeline.is_full() {
            // Only a handler that sends several times comes here: the
            // session reads no client message while the window is full.
            std::future::poll_fn(|cx| {
                pipeline.progress(cx);
                if pipeline.is_full() {
                    std::task::Poll::Pending
                } else {
                    std::task::Poll::Ready(())
                }
            })
            .await;
        }
        pipeline.push(group.clone(), message);
        // Started now, in this task: its command reaches the layer before
        // the handler issues another.
        std::future::poll_fn(|cx| {
            pipeline.progress(cx);
            std::task::Poll::Ready(())
        })
        .await;
        Ok(())
    }

    fn pipeline(&mut self) -> Option<&mut pipeline::Pipeline> {
        self.pipeline
            .as_deref_mut()
            .map(|p| p.get_mut().unwrap_or_else(PoisonError::into_inner))
    }

    /// True while pipelined sends are in flight or failures are unreported.
    pub(crate) fn has_pipelined(&self) -> bool {
        self.pipeline
            .as_deref()
            .is_some_and(|p| !p.lock().unwrap_or_else(PoisonError::into_inner).is_idle())
    }

    /// True while the pipelined-send window is full: the session reads no
    /// client message.
    pub(crate) fn pipeline_full(&self) -> bool {
        self.pipeline
            .as_deref()
            .is_some_and(|p| p.lock().unwrap_or_else(PoisonError::into_inner).is_full())
    }

    /// See [`pipeline::Pipeline::poll_turn`]; pending when nothing is pipelined.
    pub(crate) fn poll_pipelined(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<pipeline::Failure>> {
        match self.pipeline() {
            Some(pipeline) => pipeline.poll_turn(cx),
            None => std::task::Poll::Pending,
        }
    }

    /// Completes the pipelined sends in flight; then the failures to
    /// report, oldest first, one per call.
    pub(crate) async fn settle_pipelined(&mut self) -> Option<pipeline::Failure> {
        let pipeline = self.pipeline()?;
        pipeline.settle().await;
        pipeline.take_failure()
    }

    pub(crate) fn set_group_send_window(&mut self, window: usize) {
        self.pipeline_window = window.max(1);
    }

    /// Sends `event` to one channel (Channels' `channel_layer.send`).
    pub async fn send_to<T: Serialize + ?Sized>(
        &self,
        channel: &ChannelName,
        event: &T,
    ) -> Result<(), ConsumerError> {
        let message = Message::encode(event)?;
        Ok(self.layer.send(channel, message).await?)
    }

    pub(crate) fn count_dropped(&mut self, count: u64) {
        self.dropped += count;
    }

    /// Messages dropped for this client under [`SlowClientPolicy::Drop`]
    /// (its own sends, its [`ClientHandle`]s', and group messages its
    /// channel had no room for).
    pub fn dropped(&self) -> u64 {
        self.dropped + self.outbound.dropped()
    }

    /// Leaves every group joined through this context and closes the
    /// channel; errors are logged. Runs once.
    pub(crate) async fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        for group in std::mem::take(&mut self.groups) {
            if let Err(error) = self.layer.group_discard(&group, &self.channel).await {
                crate::throttled!(warn, %group, channel = %self.channel, %error, "group_discard failed at disconnect; the membership expires with group_expiry");
            }
        }
        self.layer.close_channel(&self.channel).await;
    }
}

impl Drop for Context {
    /// A context dropped before its session finished (a handshake abandoned
    /// mid-`connect`, a task that panicked) still leaves its groups and
    /// closes its channel, on a spawned task.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // At once, runtime or not: an undrained channel must not hold the
        // layer's flow control up.
        self.layer.set_receiver(&self.channel, ReceiverState::Detached);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            crate::throttled!(warn, channel = %self.channel, "context dropped outside a runtime; groups not left (they expire with group_expiry)");
            return;
        };
        if let Some(pipeline) = self.pipeline.take() {
            pipeline
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .finish_detached(&runtime);
        }
        let layer = self.layer.clone();
        let channel = self.channel.clone();
        let groups = std::mem::take(&mut self.groups);
        runtime.spawn(async move {
            for group in groups {
                let _ = layer.group_discard(&group, &channel).await;
            }
            layer.close_channel(&channel).await;
        });
    }
}
