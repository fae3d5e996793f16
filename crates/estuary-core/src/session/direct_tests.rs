//! Frames rendered for group messages go straight into the transport's
//! buffer (`feed_now`) while nothing is queued ahead of them.

use serde::Deserialize;

use super::tests::{Recorder, run_backlog, say, texts};
use super::*;
use crate::close::CloseFrame;
use crate::{ConsumerError, Message, WsMessage};

/// A transport that takes frames without waiting (`feed_now`), as the
/// server's socket does, records them flush by flush, and says when its
/// `recv` is known to be pending (`is_quiet`: nothing from the client waits).
pub(super) struct NowRecorder(pub(super) Recorder);

impl Transport for NowRecorder {
    async fn recv(&mut self) -> Option<Result<Inbound, TransportError>> {
        self.0.recv().await
    }
    async fn feed(&mut self, message: WsMessage) -> Result<(), TransportError> {
        self.0.feed(message).await
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        self.0.flush().await
    }
    fn feed_now(&mut self, message: WsMessage) -> Result<Option<WsMessage>, TransportError> {
        self.0.fed.push(message);
        Ok(None)
    }
    fn flush_now(&mut self) -> Result<bool, TransportError> {
        if !self.0.fed.is_empty() {
            self.0
                .flushes
                .lock()
                .unwrap()
                .push(std::mem::take(&mut self.0.fed));
        }
        Ok(true)
    }
    fn is_quiet(&mut self, _cx: &std::task::Context<'_>) -> bool {
        self.0.has_no_inbound()
    }
    async fn ping(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    async fn close(&mut self, _frame: Option<CloseFrame>) {}
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum MixedEvent {
    #[serde(rename = "say")]
    Say { n: u32 },
    #[serde(rename = "shout")]
    Shout,
}

/// Renders what it says; a shout runs its handler, which sends "shout".
struct Mixed;

impl Consumer for Mixed {
    type Event = MixedEvent;
    fn render(event: &MixedEvent) -> Option<WsMessage> {
        match event {
            MixedEvent::Say { n } => Some(WsMessage::text(n.to_string())),
            MixedEvent::Shout => None,
        }
    }
    async fn event(&mut self, ctx: &mut Context, _shout: MixedEvent) -> Result<(), ConsumerError> {
        ctx.send(WsMessage::text("shout")).await
    }
}

/// Runs `Mixed` over a `NowRecorder` with `backlog` in its channel.
async fn run_mixed(backlog: Vec<Message>) -> Vec<Vec<WsMessage>> {
    run_backlog(Mixed, backlog, SessionConfig::default(), NowRecorder).await
}

/// Rendered frames go straight into the transport's buffer (nothing is
/// queued), and a backlog of them still leaves in one flush, in order.
#[tokio::test]
async fn rendered_frames_fed_straight_to_the_transport_leave_in_one_flush() {
    let flushes = run_mixed((0..10).map(say).collect()).await;
    assert_eq!(flushes.len(), 1, "{flushes:?}");
    assert_eq!(
        texts(&flushes),
        (0..10).map(|n| n.to_string()).collect::<Vec<_>>()
    );
}

/// A rendered frame never overtakes what a handler queued before it.
#[tokio::test]
async fn a_rendered_frame_waits_behind_what_a_handler_queued() {
    let shout = Message::from_json(&serde_json::json!({"type": "shout"})).unwrap();
    let flushes = run_mixed(vec![say(0), shout, say(1), say(2)]).await;
    assert_eq!(texts(&flushes), ["0", "shout", "1", "2"]);
}
