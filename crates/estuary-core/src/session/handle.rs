//! What the session does with each thing that happens on a connection: a
//! client message, a layer event, a keepalive tick, a write.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use tokio::time::Instant;

use super::Session;
use super::conn::Conn;
use super::drive::{drive, handler_step};
use super::keepalive::Due;
use super::step::{Closing, Step};
use super::transport::{Inbound, Transport, TransportError};
use super::write::{ping, write_batch};
use crate::close::{CloseCode, CloseFrame};
use crate::consumer::Consumer;
use crate::context::SlowClientPolicy;
use crate::layer::ChannelLayerError;
use crate::message::Handling;
use crate::names::ChannelName;
use crate::outbound::Outgoing;

impl<C: Consumer> Session<C> {
    /// Writes `first` (if any) and whatever else is queued, in one flush
    /// with what was fed to the transport before.
    pub(super) async fn write_out<T: Transport>(
        &mut self,
        conn: &mut Conn<'_, T>,
        first: Option<Outgoing>,
    ) -> Step {
        let flow = self.flow(conn);
        let (step, blocked) = write_batch(
            conn.transport,
            &mut self.outbound,
            first,
            conn.config.write_timeout,
            Some(&flow),
            &mut conn.tally,
        )
        .await;
        if blocked {
            self.ctx.mark_stalled();
        }
        if conn.tally.is_full() {
            conn.tally.fold(&self.config.stats);
        }
        step
    }

    /// Something came from the client: a message (rate-limited, then handed
    /// to `receive`), a pong, a close, an error, or the end of the stream.
    pub(super) async fn on_client<T: Transport>(
        &mut self,
        conn: &mut Conn<'_, T>,
        inbound: Option<Result<Inbound, TransportError>>,
    ) -> Step {
        conn.keepalive.heard();
        let message = match inbound {
            None => return Closing::gone(CloseCode::ABNORMAL, true),
            Some(Ok(Inbound::Pong)) => {
                let limit = conn.config.control_rate_limit;
                if over(conn.control.as_mut(), limit) {
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
        conn.tally.received(message.len());
        conn.client_turns = conn.client_turns.saturating_add(1);
        if over(conn.bucket.as_mut(), conn.config.rate_limit) {
            return Closing::server(CloseCode::POLICY_VIOLATION, "rate limit exceeded", true);
        }
        if conn.address.as_ref().is_some_and(|(l, ip)| !l.check(*ip)) {
            return Closing::server(
                CloseCode::POLICY_VIOLATION,
                "rate limit exceeded (per address)",
                true,
            );
        }
        // Boxed: the consumer's `receive` (whatever state it keeps across
        // its awaits) need not size every idle connection's future; one
        // allocation per client message.
        Box::pin(self.receive(conn, message)).await
    }

    /// Runs `receive` for a client message.
    async fn receive<T: Transport>(&mut self, conn: &mut Conn<'_, T>, message: crate::WsMessage) -> Step {
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
    pub(super) async fn on_layer<T: Transport>(
        &mut self,
        conn: &mut Conn<'_, T>,
        received: Result<crate::Message, ChannelLayerError>,
    ) -> Step {
        conn.client_turns = 0;
        let mut step = match self.handle_layer(conn, received) {
            Ok(step) => step,
            Err(pending) => Box::pin(self.handle_event(conn, pending)).await,
        };
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
            step = match self.handle_layer(conn, received) {
                Ok(step) => step,
                Err(pending) => Box::pin(self.handle_event(conn, pending)).await,
            };
        }
        step
    }

    /// Handles one receive from the channel layer: sends the frame rendered
    /// for it, or runs the consumer's event handler (or `undecodable_event`),
    /// or reacts to a layer failure.
    fn handle_layer<T: Transport>(
        &mut self,
        conn: &mut Conn<'_, T>,
        received: Result<crate::Message, ChannelLayerError>,
    ) -> Result<Step, Pending<C::Event>> {
        Ok(match received {
            Ok(message) if message.as_bytes().len() > self.config.max_event_size => {
                conn.oversized += 1;
                oversized_event(conn.channel, message.message_type(), message.as_bytes().len());
                Step::Continue
            }
            // A recorded message this connection already has (from a read
            // of the history): its live copy is dropped.
            Ok(message) if self.ctx.skips(&message) => Step::Continue,
            Ok(message) => {
                // `render` is the consumer's: a panic in it closes with 1011,
                // as one in a handler does.
                let rendered =
                    std::panic::catch_unwind(AssertUnwindSafe(|| message.rendered::<C, C::Event>(C::render)));
                let handling = match rendered {
                    Ok(handling) => handling,
                    Err(panic) => return Ok(handler_step(Err(panic))),
                };
                // A frame rendered once for the whole group goes straight
                // into the outbound queue when it has room: the usual
                // delivery runs no handler future at all.
                match handling {
                    Handling::Frame(frame) => match self.feed_frame(conn, frame) {
                        Ok(None) => Step::Continue,
                        Ok(Some(frame)) => return Err(Pending(message, Handling::Frame(frame))),
                        Err(step) => step,
                    },
                    // A handler's state (an event's, a send that waits for
                    // room) is boxed by the caller: it need not size every
                    // idle connection's future.
                    other => return Err(Pending(message, other)),
                }
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
                    self.config.stats.count_lost();
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
        })
    }

    /// Sends a frame rendered for a group message. While nothing is queued
    /// ahead of it, it goes straight into the transport's buffer (written
    /// by the flush that ends the layer turn): a delivery then neither
    /// queues nor takes anything. Otherwise, or when the transport's buffer
    /// is full, it is queued; `Ok(Some(frame))` when the queue is full too.
    fn feed_frame<T: Transport>(
        &mut self,
        conn: &mut Conn<'_, T>,
        frame: crate::WsMessage,
    ) -> Result<Option<crate::WsMessage>, Step> {
        let frame = if !self.ctx.is_closing() && self.outbound.is_empty() {
            let len = frame.len();
            match conn.transport.feed_now(frame) {
                Ok(None) => {
                    conn.tally.sent(len);
                    conn.fed = true;
                    return Ok(None);
                }
                Ok(Some(frame)) => frame,
                Err(_) => return Err(Closing::gone(CloseCode::ABNORMAL, false)),
            }
        } else {
            frame
        };
        self.ctx
            .send_now(frame)
            .map_err(|error| handler_step(Ok(Err(error))))
    }

    /// Runs the handler a layer message calls for: the consumer's `event`
    /// (or `undecodable_event`), or a send of its rendered frame that has
    /// to wait for room.
    async fn handle_event<T: Transport>(
        &mut self,
        conn: &mut Conn<'_, T>,
        Pending(message, handling): Pending<C::Event>,
    ) -> Step {
        let flow = self.flow(conn);
        let (step, waited) = {
            let (consumer, ctx) = (&mut self.consumer, &mut self.ctx);
            let fut = std::pin::pin!(async {
                match handling {
                    Handling::Frame(frame) => ctx.send(frame).await,
                    Handling::Event(event) => consumer.event(ctx, event).await,
                    Handling::Undecodable(error) => consumer.undecodable_event(ctx, message, error).await,
                }
            });
            drive(fut, &mut self.outbound, conn, flow).await
        };
        if waited {
            self.ctx.mark_stalled();
        }
        step
    }

    /// A keepalive tick: ping, or give up on a peer that never answered.
    pub(super) async fn on_keepalive<T: Transport>(&mut self, conn: &mut Conn<'_, T>) -> Step {
        // The connection's counts reach the shared stats once an interval.
        conn.tally.fold(&self.config.stats);
        match conn.keepalive.due(self.config.ping_timeout) {
            Due::Dead => {
                tracing::debug!(channel = %conn.channel, "no answer to a ping within the timeout; dropping the peer");
                Closing::gone(CloseCode::ABNORMAL, false)
            }
            Due::Waiting => Step::Continue,
            Due::Ping => {
                let flow = self.flow(conn);
                // Boxed: a ping every interval need not size every idle
                // connection's future for its deadline.
                let (sent, blocked) = Box::pin(ping(conn.transport, conn.config.write_timeout, &flow)).await;
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
}

/// True when a message is over the limit: the bucket (made with `limit`)
/// has no token left.
fn over(bucket: Option<&mut super::rate::Bucket>, limit: Option<crate::RateLimit>) -> bool {
    match (bucket, limit) {
        (Some(bucket), Some(limit)) => !bucket.take(limit, Instant::now()),
        _ => false,
    }
}

/// A layer message whose handling has to run a handler: the message, and
/// what it calls for.
pub(super) struct Pending<E>(crate::Message, Handling<E>);

/// Logs a dropped oversized layer message, at most once a second.
fn oversized_event(channel: &ChannelName, kind: &str, size: usize) {
    static THROTTLE: crate::Throttle = crate::Throttle::new(Duration::from_secs(1));
    if let Some(held_back) = THROTTLE.allow(std::time::Instant::now()) {
        tracing::warn!(
            %channel,
            kind,
            size,
            held_back,
            "channel-layer message larger than max_event_size dropped (this member never gets it): \
             send smaller events, or raise max_event_size (`[websocket] max_event_size` in estuary serve)"
        );
    }
}
