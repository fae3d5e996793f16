//! A handle to one connection's client, for tasks beside its handlers.

use std::time::Duration;

use crate::close::{CloseCode, CloseFrame};
use crate::error::ConsumerError;
use crate::names::ChannelName;
use crate::outbound::{OutboundSender, Outgoing, TrySendError};
use crate::ws::WsMessage;

/// What a handle does when the outbound queue is full: the connection's
/// slow-client policy, as the handle applies it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WhenFull {
    /// Drop the message and count it.
    Drop,
    /// Wait this long for room, then close the connection with 1013.
    Wait(Duration),
}

/// Sends to one connection's client from anywhere: a task a handler spawned
/// (a reply streamed while the next messages are handled, Channels'
/// `self.send` from a background coroutine), a timer, a watchdog. Get one
/// with [`Context::client`](crate::Context::client); clones are cheap and
/// share the connection.
///
/// Messages go to the connection's own outbound queue, in order with what
/// its handlers send, under its [`SlowClientPolicy`](crate::SlowClientPolicy): with
/// [`Disconnect`](crate::SlowClientPolicy::Disconnect) a send waits up to the grace
/// for room, then the connection is closed with 1013 and the send fails with
/// [`ConsumerError::SlowClient`]; with [`Drop`](crate::SlowClientPolicy::Drop) the
/// message is dropped and counted ([`Outcome::dropped`](crate::Outcome::dropped)).
/// Once the connection has ended (or a handle closed it) sends fail with
/// [`ConsumerError::ConnectionClosed`]: a task can stop when its client is
/// gone.
///
/// [`close`](Self::close) closes the connection as
/// [`Context::close`](crate::Context::close) does: after what is queued, then
/// [`Consumer::disconnect`](crate::Consumer::disconnect) runs and the groups
/// are left. Messages a handler sends after it are not written.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::{CloseCode, Consumer, ConsumerError, Context, NoEvent, WsMessage};
///
/// /// Answers each message with a countdown, ticking while the next message is handled.
/// struct Countdown;
///
/// impl Consumer for Countdown {
///     type Event = NoEvent;
///
///     async fn receive(&mut self, ctx: &mut Context, _msg: WsMessage) -> Result<(), ConsumerError> {
///         let client = ctx.client();
///         tokio::spawn(async move {
///             for n in (1..=3).rev() {
///                 // Fails once the client is gone: the task ends with it.
///                 if client.send(WsMessage::text(n.to_string())).await.is_err() {
///                     return;
///                 }
///                 tokio::time::sleep(Duration::from_secs(1)).await;
///             }
///             let _ = client.close(CloseCode::NORMAL, "lift-off").await;
///         });
///         Ok(())
///     }
/// }
/// # let _ = Countdown;
/// ```
#[derive(Clone)]
pub struct ClientHandle {
    outbound: OutboundSender,
    when_full: WhenFull,
    channel: ChannelName,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle")
            .field("channel", &self.channel)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl ClientHandle {
    pub(crate) fn new(outbound: OutboundSender, when_full: WhenFull, channel: ChannelName) -> Self {
        Self {
            outbound,
            when_full,
            channel,
        }
    }

    /// The connection's own channel name.
    pub fn channel_name(&self) -> &ChannelName {
        &self.channel
    }

    /// True once the connection ended or is closing (its session no
    /// longer takes messages), or a handle closed it: sends will fail.
    pub fn is_closed(&self) -> bool {
        self.outbound.is_handle_closed() || self.outbound.is_closed()
    }

    /// Sends a message to the client, in order with everything else sent
    /// to it. See the type's documentation for a full queue.
    pub async fn send(&self, message: impl Into<WsMessage>) -> Result<(), ConsumerError> {
        if self.outbound.is_handle_closed() {
            return Err(ConsumerError::ConnectionClosed);
        }
        let item = match self.outbound.try_send(Outgoing::Message(message.into())) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed) => return Err(ConsumerError::ConnectionClosed),
            Err(TrySendError::Full(item)) => item,
        };
        match self.when_full {
            WhenFull::Drop => {
                self.outbound.count_dropped();
                Ok(())
            }
            WhenFull::Wait(grace) => {
                match tokio::time::timeout(grace, self.outbound.send(item)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(())) => Err(ConsumerError::ConnectionClosed),
                    Err(_) => {
                        // The client stopped reading: close it now, ahead of
                        // what it did not read.
                        if !self.outbound.mark_handle_closed() {
                            let frame = CloseFrame::new(CloseCode::TRY_AGAIN_LATER, "client too slow");
                            let _ = self.outbound.force_close(frame, true);
                        }
                        Err(ConsumerError::SlowClient)
                    }
                }
            }
        }
    }

    /// Sends a text message.
    pub async fn send_text(&self, text: impl Into<bytestring::ByteString>) -> Result<(), ConsumerError> {
        self.send(WsMessage::Text(text.into())).await
    }

    /// Closes the connection with `code` and `reason` once the messages
    /// queued before it are sent; later sends through any handle fail. A
    /// code that may not appear on the wire is sent as 1000, as
    /// [`Context::close`](crate::Context::close) does. Closing twice is a
    /// no-op; closing an ended connection fails with
    /// [`ConsumerError::ConnectionClosed`].
    ///
    /// The close never waits for room: it carries no payload, and is
    /// queued once.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), ConsumerError> {
        if self.outbound.mark_handle_closed() {
            return Ok(());
        }
        let code = if code.is_sendable() {
            code
        } else {
            crate::throttled!(warn, %code, "close code cannot be sent on the wire (use 1000 or 3000-4999); sending 1000");
            CloseCode::NORMAL
        };
        self.outbound
            .force_close(CloseFrame::new(code, reason), false)
            .map_err(|()| ConsumerError::ConnectionClosed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;
    use crate::SlowClientPolicy;
    use crate::outbound::{OutboundReceiver, outbound};

    fn handle(capacity: usize, policy: SlowClientPolicy) -> (ClientHandle, OutboundReceiver) {
        let (tx, rx) = outbound(capacity, usize::MAX);
        let channel = ChannelName::new("specific.test!one").unwrap();
        (ClientHandle::new(tx, WhenFull::from(policy), channel), rx)
    }

    fn describe(item: Option<Outgoing>) -> String {
        match item {
            Some(Outgoing::Message(m)) => m.as_text().unwrap_or_default().to_owned(),
            Some(Outgoing::Close(frame)) => format!("close {}", frame.code()),
            None => "nothing".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stays_full_past_the_grace_is_closed_ahead_of_what_it_did_not_read() {
        let grace = Duration::from_secs(5);
        let (client, mut rx) = handle(1, SlowClientPolicy::Disconnect { grace });
        client.send(WsMessage::text("unread")).await.unwrap();
        let error = client.send(WsMessage::text("late")).await.unwrap_err();
        assert!(matches!(error, ConsumerError::SlowClient), "{error:?}");
        assert_eq!(describe(rx.try_recv()), "close 1013", "the close goes first");
        assert_eq!(describe(rx.try_recv()), "unread");
        assert!(client.is_closed());
        assert!(matches!(
            client.send(WsMessage::text("after")).await,
            Err(ConsumerError::ConnectionClosed)
        ));
    }

    #[tokio::test]
    async fn under_the_drop_policy_a_full_queue_drops_and_counts() {
        let (client, mut rx) = handle(1, SlowClientPolicy::Drop);
        client.send(WsMessage::text("kept")).await.unwrap();
        client.send(WsMessage::text("dropped")).await.unwrap();
        assert_eq!(client.outbound.dropped(), 1);
        assert_eq!(describe(rx.try_recv()), "kept");
        assert_eq!(describe(rx.try_recv()), "nothing");
    }

    #[tokio::test]
    async fn a_close_is_queued_after_what_is_queued_even_when_full_and_once() {
        let (client, mut rx) = handle(1, SlowClientPolicy::default());
        client.send(WsMessage::text("first")).await.unwrap();
        client.close(CloseCode::from(4000), "bye").await.unwrap();
        client.close(CloseCode::from(4001), "again").await.unwrap();
        assert!(matches!(
            client.send(WsMessage::text("late")).await,
            Err(ConsumerError::ConnectionClosed)
        ));
        assert_eq!(describe(rx.try_recv()), "first");
        assert_eq!(describe(rx.try_recv()), "close 4000");
        assert_eq!(describe(rx.try_recv()), "nothing");
    }

    #[tokio::test]
    async fn an_unsendable_code_is_sent_as_1000() {
        let (client, mut rx) = handle(4, SlowClientPolicy::default());
        client.close(CloseCode::ABNORMAL, "").await.unwrap();
        assert_eq!(describe(rx.try_recv()), "close 1000");
    }

    #[tokio::test]
    async fn several_senders_waiting_for_room_all_get_it() {
        let (client, mut rx) = handle(
            1,
            SlowClientPolicy::Disconnect {
                grace: Duration::from_secs(60),
            },
        );
        client.send(WsMessage::text("0")).await.unwrap();
        let (a, b) = (client.clone(), client.clone());
        let first = tokio::spawn(async move { a.send(WsMessage::text("a")).await });
        let second = tokio::spawn(async move { b.send(WsMessage::text("b")).await });
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while got.len() < 3 {
                got.push(describe(rx.recv().await));
            }
        })
        .await
        .expect("both waiting senders are woken");
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        got[1..].sort();
        assert_eq!(got, ["0", "a", "b"]);
    }

    #[tokio::test]
    async fn an_ended_connection_refuses_sends_and_closes() {
        let (client, mut rx) = handle(4, SlowClientPolicy::default());
        rx.close();
        assert!(client.is_closed());
        assert!(matches!(
            client.send(WsMessage::text("x")).now_or_never(),
            Some(Err(ConsumerError::ConnectionClosed))
        ));
        assert!(matches!(
            client.close(CloseCode::NORMAL, "").await,
            Err(ConsumerError::ConnectionClosed)
        ));
    }
}
