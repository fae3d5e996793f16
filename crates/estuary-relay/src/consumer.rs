//! The consumer a relayed route runs for each connection.

use std::sync::Arc;

use estuary_core::{
    ChannelLayer, ChannelLayerError, CloseCode, Connect, Consumer, ConsumerError, Context, GroupName,
    Message, MessageError, Scope, WsMessage,
};
use http::StatusCode;

use crate::link::{Item, Link};
use crate::shared::{Shared, deadline_after};
use crate::stats::Count;
use crate::target::{ConnectMode, TargetKind};
use crate::wire::{self, REPLY_TYPES, Reply, ScopeRules, state_bytes};

/// The consumer of a relayed connection: hands its events to the
/// application and the application's messages to the client, as
/// `docs/WORKERS.md` specifies. Made by [`Relay::consumer`](crate::Relay::consumer)
/// or [`Relay::factory`](crate::Relay::factory), one per connection.
///
/// It renders `websocket.send` messages once for every member of a group
/// ([`Consumer::render`]), closes on `websocket.close`, applies
/// `estuary.ack`, and hands any other message to the application as an
/// `estuary.event`.
///
/// ```
/// use estuary_relay::{Relay, Target};
///
/// let relay = Relay::builder(Target::channel("chat").unwrap()).build().unwrap();
/// let consumer = relay.consumer();
/// # let _ = consumer;
/// ```
pub struct RelayConsumer {
    shared: Arc<Shared>,
    link: Option<Arc<Link>>,
}

impl std::fmt::Debug for RelayConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConsumer")
            .field("relay", &self.shared.name)
            .field("connected", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

/// How the handshake ended, in connect mode `worker`.
enum Handshake {
    Accepted(Option<String>),
    Refused,
    TimedOut,
    Unavailable,
}

impl RelayConsumer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, link: None }
    }

    fn rules(&self) -> ScopeRules<'_> {
        ScopeRules {
            query: &self.shared.query,
            int_params: &self.shared.int_params,
        }
    }

    fn reject(&self, status: StatusCode, reason: &str, count: Count) -> Connect {
        self.shared.stats.add(count, 1);
        Connect::reject_with(status, reason)
    }

    /// Connect mode `worker`: the handshake waits for `websocket.accept`
    /// and the acknowledgement of event 0.
    async fn connect_worker(
        &mut self,
        ctx: &mut Context,
        link: Arc<Link>,
        event: Message,
    ) -> Result<Connect, ConsumerError> {
        let unavailable = |this: &Self| {
            this.reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "the application is unavailable",
                Count::ConnectsUnavailable,
            )
        };
        if !self.shared.take_slot() {
            estuary_core::throttled!(warn, relay = %self.shared.name, "handshake refused with 503: max_in_flight events are out");
            return Ok(unavailable(self));
        }
        self.shared.stats.add(Count::EventsSent, 1);
        let outcome = match self.shared.target.kind() {
            TargetKind::Channel(worker) => match ctx.channel_layer().send(worker, event).await {
                Ok(()) => {
                    // Delivered: the application hears of the end too,
                    // whatever the handshake's.
                    self.link = Some(link.clone());
                    self.await_handshake(ctx, &link).await
                }
                Err(error) => {
                    estuary_core::throttled!(warn, relay = %self.shared.name, %worker, %error, "handshake refused with 503: cannot send websocket.connect to the worker channel");
                    Ok(Handshake::Unavailable)
                }
            },
            TargetKind::Http { .. } => {
                let outcome = self.connect_http(ctx, &link, &event).await;
                if !matches!(outcome, Ok(Handshake::Unavailable)) {
                    self.link = Some(link.clone());
                }
                outcome
            }
        };
        self.shared.release_slot();
        let outcome = outcome?;
        Ok(match outcome {
            Handshake::Accepted(subprotocol) => {
                self.shared.stats.add(Count::Acked, 1);
                self.link = Some(link.clone());
                let step = link.kick();
                link.drive(step).await;
                match subprotocol {
                    Some(protocol) => Connect::accept_subprotocol(protocol),
                    None => Connect::accept(),
                }
            }
            Handshake::Refused => self.reject(
                StatusCode::FORBIDDEN,
                "refused by the application",
                Count::ConnectsRefused,
            ),
            Handshake::TimedOut => {
                estuary_core::throttled!(warn, relay = %self.shared.name, target = %self.shared.target, "handshake refused with 504: no answer to websocket.connect within connect_timeout (is a worker running?)");
                self.reject(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the application did not answer",
                    Count::ConnectsTimedOut,
                )
            }
            Handshake::Unavailable => unavailable(self),
        })
    }

    /// Reads the connection's channel (its session does not yet) until the
    /// acknowledgement of event 0, within `connect_timeout`.
    async fn await_handshake(&self, ctx: &mut Context, link: &Link) -> Result<Handshake, ConsumerError> {
        let deadline = deadline_after(self.shared.connect_timeout);
        let mut accepted = None;
        loop {
            let received = match tokio::time::timeout_at(
                deadline,
                ctx.channel_layer().receive(ctx.channel_name()),
            )
            .await
            {
                Err(_) => return Ok(Handshake::TimedOut),
                Ok(Err(ChannelLayerError::Lost { .. })) => continue,
                Ok(Err(error)) => {
                    estuary_core::throttled!(warn, relay = %self.shared.name, %error, "handshake refused with 503: cannot read the connection's channel");
                    return Ok(Handshake::Unavailable);
                }
                Ok(Ok(message)) => message,
            };
            match received.decode::<Reply>() {
                Ok(Reply::Accept { subprotocol }) => {
                    accepted = Some(self.subprotocol(ctx.scope(), subprotocol))
                }
                Ok(reply @ Reply::Send { .. }) => {
                    // Sent once the handshake completes.
                    if let Some(frame) = reply.frame() {
                        ctx.send(frame).await?;
                    }
                }
                Ok(Reply::Close { .. }) => return Ok(Handshake::Refused),
                Ok(Reply::Ack { seq: 0, state }) => {
                    if let Some(state) = state_bytes(state) {
                        link.set_state(state);
                    }
                    return Ok(accepted.map_or(Handshake::Refused, Handshake::Accepted));
                }
                Ok(Reply::Ack { .. }) => {}
                Err(error) if REPLY_TYPES.contains(&received.message_type()) => {
                    self.malformed(link, &received, &error);
                }
                // Another message (to a group joined before connect): for
                // the application once the handshake is done.
                Err(_) => {
                    if !link.stash(Item::Forward(received)) {
                        self.shared.stats.add(Count::RefusedBusy, 1);
                        estuary_core::throttled!(warn, relay = %self.shared.name, channel = %link.channel, "message for a connecting relayed connection dropped: max_pending kept already (counted in refused_busy)");
                    }
                }
            }
        }
    }

    /// Connect mode `worker` over HTTP: the answer decides.
    async fn connect_http(
        &self,
        ctx: &mut Context,
        link: &Link,
        event: &Message,
    ) -> Result<Handshake, ConsumerError> {
        let Some(http) = &self.shared.http else {
            return Ok(Handshake::Unavailable);
        };
        let answer = match http.post(event, self.shared.connect_timeout).await {
            Ok(answer) => answer,
            Err(error) => {
                estuary_core::throttled!(warn, relay = %self.shared.name, target = %self.shared.target, %error, "handshake refused: websocket.connect not answered over HTTP");
                return Ok(if error.is_timeout() {
                    Handshake::TimedOut
                } else {
                    Handshake::Unavailable
                });
            }
        };
        let mut accepted = None;
        for reply in answer.messages {
            match reply {
                Reply::Accept { subprotocol } => accepted = Some(self.subprotocol(ctx.scope(), subprotocol)),
                Reply::Send { .. } => {
                    if let Some(frame) = reply.frame() {
                        ctx.send(frame).await?;
                    }
                }
                Reply::Close { .. } => return Ok(Handshake::Refused),
                Reply::Ack { .. } => {}
            }
        }
        if let Some(state) = answer.state {
            link.set_state(state);
        }
        Ok(accepted.map_or(Handshake::Refused, Handshake::Accepted))
    }

    /// The subprotocol the application chose, if the client offered it.
    fn subprotocol(&self, scope: &Scope, chosen: Option<String>) -> Option<String> {
        let chosen = chosen?;
        if scope.subprotocols().contains(&chosen) {
            return Some(chosen);
        }
        estuary_core::throttled!(warn, relay = %self.shared.name, subprotocol = %chosen, "websocket.accept chose a subprotocol the client did not offer; accepted without one");
        None
    }

    /// A reply that does not decode (a `websocket.send` whose `text` is a
    /// number): logged and dropped.
    fn malformed(&self, link: &Link, message: &Message, error: &MessageError) {
        estuary_core::throttled!(
            warn,
            relay = %self.shared.name,
            channel = %link.channel,
            r#type = message.message_type(),
            %error,
            "malformed message from the application; dropped"
        );
    }
}

impl Consumer for RelayConsumer {
    type Event = Reply;

    fn groups(&self, scope: &Scope) -> Result<Vec<GroupName>, ConsumerError> {
        self.shared
            .groups
            .iter()
            .map(|template| template.render(scope, &self.shared.query))
            .collect()
    }

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let groups: Vec<String> = ctx.groups().map(|g| g.as_str().to_owned()).collect();
        let rules = self.rules();
        let scope = wire::scope(ctx.scope(), &groups, &rules, false);
        let connect_scope = wire::scope(ctx.scope(), &groups, &rules, true);
        let link = Link::new(
            self.shared.clone(),
            ctx.channel_layer().clone(),
            ctx.channel_name().clone(),
            ctx.client(),
            scope,
        );
        let event = link.connect_event(&connect_scope)?;
        match self.shared.connect {
            ConnectMode::Worker => self.connect_worker(ctx, link, event).await,
            ConnectMode::Accept => {
                if !self.shared.take_slot() {
                    return Ok(self.reject(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the application is unavailable",
                        Count::ConnectsUnavailable,
                    ));
                }
                link.begin_connect();
                self.shared.stats.add(Count::EventsSent, 1);
                match self.shared.target.kind() {
                    TargetKind::Channel(worker) => {
                        if let Err(error) = ctx.channel_layer().send(worker, event).await {
                            estuary_core::throttled!(warn, relay = %self.shared.name, %worker, %error, "handshake refused with 503: cannot send websocket.connect to the worker channel");
                            link.abandon_connect();
                            return Ok(self.reject(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "the application is unavailable",
                                Count::ConnectsUnavailable,
                            ));
                        }
                    }
                    TargetKind::Http { .. } => link.post_connect(event),
                }
                self.link = Some(link);
                Ok(Connect::accept())
            }
        }
    }

    async fn receive(&mut self, _ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        if let Some(link) = &self.link {
            let step = link.submit(Item::Receive(message));
            link.drive(step).await;
        }
        Ok(())
    }

    fn render(event: &Reply) -> Option<WsMessage> {
        event.frame()
    }

    async fn event(&mut self, ctx: &mut Context, event: Reply) -> Result<(), ConsumerError> {
        match event {
            Reply::Ack { seq, state } => {
                if let Some(link) = &self.link
                    && let Some(step) = link.settle(seq, state_bytes(state))
                {
                    link.drive(step).await;
                }
                Ok(())
            }
            Reply::Close { code, reason } => {
                let code = Reply::close_code(code.as_ref());
                if code == 1011 {
                    self.shared.stats.add(Count::WorkerErrors, 1);
                }
                ctx.close(CloseCode::from(code), reason.as_deref().unwrap_or(""))
                    .await
            }
            // Rendered by `render` when it has a frame.
            Reply::Send { .. } => {
                estuary_core::throttled!(warn, relay = %self.shared.name, "websocket.send with neither text nor bytes; dropped");
                Ok(())
            }
            Reply::Accept { .. } => Ok(()),
        }
    }

    async fn undecodable_event(
        &mut self,
        _ctx: &mut Context,
        message: Message,
        error: MessageError,
    ) -> Result<(), ConsumerError> {
        let Some(link) = self.link.clone() else {
            return Ok(());
        };
        if REPLY_TYPES.contains(&message.message_type()) {
            self.malformed(&link, &message, &error);
            return Ok(());
        }
        let step = link.submit(Item::Forward(message));
        link.drive(step).await;
        Ok(())
    }

    async fn disconnect(&mut self, _ctx: &mut Context, code: CloseCode) {
        if let Some(link) = self.link.take() {
            link.finish(code.as_u16()).await;
        }
    }
}
