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
    /// Accepted, with the subprotocol, and closed right after when the
    /// application closed after accepting (Channels' `accept()` then
    /// `close(4001)` in `connect`).
    Accepted {
        subprotocol: Option<String>,
        close: Option<(u16, String)>,
    },
    Refused,
    TimedOut,
    Unavailable,
    /// More frames during the handshake than the connection's outbound
    /// queue holds until it completes.
    Overflow,
}

/// What the application said so far during the handshake.
#[derive(Default)]
struct Said {
    /// `websocket.accept`, with the subprotocol kept.
    accepted: Option<Option<String>>,
    /// `websocket.close` after the accept: its code and reason.
    close: Option<(u16, String)>,
}

impl Said {
    /// The handshake's end, now that the application is done with it.
    fn outcome(self) -> Handshake {
        match self.accepted {
            Some(subprotocol) => Handshake::Accepted {
                subprotocol,
                close: self.close,
            },
            None => Handshake::Refused,
        }
    }
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
        // Given back when the handshake ends, or when its future is
        // dropped (the server's `handshake_timeout`, a client gone).
        let Some(slot) = self.shared.slot() else {
            estuary_core::throttled!(warn, relay = %self.shared.name, "handshake refused with 503: max_in_flight events are out (the workers are behind: run more of them, or raise the relay's max_in_flight)");
            return Ok(unavailable(self));
        };
        self.shared.stats.add(Count::EventsSent, 1);
        // From here the application may hear of the connection: it hears
        // of its end too, whatever the handshake's (unset below when the
        // event could not be handed over).
        link.set_delivered(true);
        let outcome = match self.shared.target.kind() {
            TargetKind::Channel(worker) => match ctx.channel_layer().send(worker, event).await {
                Ok(()) => {
                    self.link = Some(link.clone());
                    self.await_handshake(ctx, &link).await
                }
                Err(error) => {
                    estuary_core::throttled!(warn, relay = %self.shared.name, %worker, %error, "handshake refused with 503: cannot send websocket.connect to the worker channel (full: run more workers; or the channel layer is down: check that it is reachable)");
                    link.set_delivered(false);
                    Ok(Handshake::Unavailable)
                }
            },
            TargetKind::Http { .. } => {
                let outcome = self.connect_http(ctx, &link, &event).await;
                // Unanswered (unreachable, or not a valid answer): as
                // before, the application is not told of an end.
                if matches!(outcome, Ok(Handshake::Unavailable)) {
                    link.set_delivered(false);
                } else {
                    self.link = Some(link.clone());
                }
                outcome
            }
        };
        drop(slot);
        let outcome = outcome?;
        Ok(match outcome {
            Handshake::Accepted { subprotocol, close } => {
                if let Some((code, reason)) = close {
                    // After what the application sent, as its `accept()`
                    // then `close()` would be on Daphne; the close never
                    // waits for room.
                    if code == 1011 {
                        self.shared.stats.add(Count::WorkerErrors, 1);
                    }
                    let _ = ctx.client().close(CloseCode::from(code), &reason).await;
                }
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
            Handshake::Overflow => {
                estuary_core::throttled!(warn, relay = %self.shared.name, target = %self.shared.target, "handshake refused with 503: the application sent more frames before completing the handshake than the connection's outbound queue holds until then (the server's outbound_capacity and outbound_bytes)");
                unavailable(self)
            }
        })
    }

    /// Applies one reply of the application during the handshake: `Some`
    /// when it decides the handshake. Frames go to the outbound queue,
    /// written once the handshake completes: when it is full they cannot
    /// wait (nothing is written before), and the handshake is refused.
    fn during_handshake(
        &self,
        ctx: &mut Context,
        link: &Link,
        said: &mut Said,
        reply: Reply,
    ) -> Result<Option<Handshake>, ConsumerError> {
        match reply {
            Reply::Accept { subprotocol } => {
                if said.accepted.is_none() {
                    said.accepted = Some(self.subprotocol(ctx.scope(), subprotocol));
                }
            }
            Reply::Send { .. } => {
                // After a close nothing more is sent, as on Daphne.
                if said.close.is_none()
                    && let Some(frame) = reply.frame()
                    && !ctx.try_send(frame)?
                {
                    return Ok(Some(Handshake::Overflow));
                }
            }
            Reply::Close { code, reason } => {
                if said.accepted.is_none() {
                    return Ok(Some(Handshake::Refused));
                }
                if said.close.is_none() {
                    said.close = Some((Reply::close_code(code.as_ref()), reason.unwrap_or_default()));
                }
            }
            Reply::Ack { seq: 0, state } => {
                if let Some(state) = state_bytes(state) {
                    link.set_state(state);
                }
                if said.accepted.is_some() {
                    self.shared.stats.add(Count::Acked, 1);
                }
                return Ok(Some(std::mem::take(said).outcome()));
            }
            Reply::Ack { .. } => {}
        }
        Ok(None)
    }

    /// Reads the connection's channel (its session does not yet) until the
    /// acknowledgement of event 0, within `connect_timeout`.
    async fn await_handshake(&self, ctx: &mut Context, link: &Link) -> Result<Handshake, ConsumerError> {
        let deadline = deadline_after(self.shared.connect_timeout);
        let mut said = Said::default();
        loop {
            let received = match tokio::time::timeout_at(
                deadline,
                ctx.channel_layer().receive(ctx.channel_name()),
            )
            .await
            {
                // Accepted and closed already: the missing acknowledgement
                // changes nothing the client sees.
                Err(_) if said.close.is_some() => return Ok(said.outcome()),
                Err(_) => return Ok(Handshake::TimedOut),
                Ok(Err(ChannelLayerError::Lost { .. })) => continue,
                Ok(Err(error)) => {
                    estuary_core::throttled!(warn, relay = %self.shared.name, %error, "handshake refused with 503: cannot read the connection's channel (check that the channel layer is reachable)");
                    return Ok(Handshake::Unavailable);
                }
                Ok(Ok(message)) => message,
            };
            match received.decode::<Reply>() {
                Ok(reply) => {
                    if let Some(outcome) = self.during_handshake(ctx, link, &mut said, reply)? {
                        return Ok(outcome);
                    }
                }
                Err(error) if REPLY_TYPES.contains(&received.message_type()) => {
                    self.malformed(link, &received, &error);
                }
                // Another message (to a group joined before connect): for
                // the application once the handshake is done.
                Err(_) => {
                    if !link.stash(Item::Forward(received)) {
                        self.shared.stats.add(Count::RefusedBusy, 1);
                        estuary_core::throttled!(warn, relay = %self.shared.name, channel = %link.channel, "message for a connecting relayed connection dropped: max_pending (or max_pending_bytes) kept already (counted in refused_busy)");
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
                estuary_core::throttled!(warn, relay = %self.shared.name, target = %self.shared.target, %error, "handshake refused: websocket.connect not answered over HTTP (check that the application at the relay's target is up and answers within connect_timeout; the error names why)");
                return Ok(if error.is_timeout() {
                    Handshake::TimedOut
                } else {
                    Handshake::Unavailable
                });
            }
        };
        let mut said = Said::default();
        for reply in answer.messages {
            // The answer is the acknowledgement; one inside it is ignored.
            if matches!(reply, Reply::Ack { .. }) {
                continue;
            }
            if let Some(outcome) = self.during_handshake(ctx, link, &mut said, reply)? {
                return Ok(outcome);
            }
        }
        if let Some(state) = answer.state {
            link.set_state(state);
        }
        if said.accepted.is_some() {
            self.shared.stats.add(Count::Acked, 1);
        }
        Ok(said.outcome())
    }

    /// The subprotocol the application chose, if the client offered it.
    fn subprotocol(&self, scope: &Scope, chosen: Option<String>) -> Option<String> {
        let chosen = chosen?;
        if scope.subprotocols().contains(&chosen) {
            return Some(chosen);
        }
        estuary_core::throttled!(warn, relay = %self.shared.name, subprotocol = %chosen, "websocket.accept chose a subprotocol the client did not offer; accepted without one (fix the worker: choose one of scope['subprotocols'])");
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
            "malformed message from the application; dropped (fix the worker: the error names what is wrong)"
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
                link.set_delivered(true);
                self.shared.stats.add(Count::EventsSent, 1);
                match self.shared.target.kind() {
                    TargetKind::Channel(worker) => {
                        if let Err(error) = ctx.channel_layer().send(worker, event).await {
                            estuary_core::throttled!(warn, relay = %self.shared.name, %worker, %error, "handshake refused with 503: cannot send websocket.connect to the worker channel (full: run more workers; or the channel layer is down: check that it is reachable)");
                            link.abandon_connect();
                            link.set_delivered(false);
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
                estuary_core::throttled!(warn, relay = %self.shared.name, "websocket.send with neither text nor bytes; dropped (fix the worker: send text or bytes)");
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
