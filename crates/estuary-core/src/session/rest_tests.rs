//! A session woken by the layer's next delivery takes it without polling
//! its other sources only while they show nothing (`rest`).

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

use super::direct_tests::NowRecorder;
use super::tests::{Flushes, Recorder, say, texts};
use super::*;
use crate::{ChannelLayer, ConsumerError, WsMessage};

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Said {
    #[serde(rename = "say")]
    Say { n: u32 },
}

/// Renders what the room says; echoes its client.
struct Echo;

impl Consumer for Echo {
    type Event = Said;
    fn render(event: &Said) -> Option<WsMessage> {
        let Said::Say { n } = event;
        Some(WsMessage::text(n.to_string()))
    }
    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        ctx.send(message).await
    }
}

/// A session of `Echo` in the group "room", resting after its first
/// delivery ("0" written).
struct Resting {
    layer: ChannelLayerHandle,
    room: crate::GroupName,
    to_session: mpsc::UnboundedSender<Inbound>,
    flushes: Flushes,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Outcome>,
}

impl Resting {
    async fn start() -> Self {
        let layer = ChannelLayerHandle::default();
        let (session, _) = Session::open(
            Echo,
            Scope::builder("/ws/t").build(),
            layer.clone(),
            SessionConfig::default(),
        )
        .await
        .expect("accepted");
        let room = crate::GroupName::new("room").unwrap();
        layer.group_add(&room, session.channel_name()).await.unwrap();
        let (recorder, to_session, flushes) = Recorder::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(session.run(NowRecorder(recorder), shutdown.clone()));
        layer.group_send(&room, say(0)).await.unwrap();
        let resting = Self {
            layer,
            room,
            to_session,
            flushes,
            shutdown,
            task,
        };
        resting.written(1).await;
        resting
    }

    /// Waits (bounded) until `frames` frames were written.
    async fn written(&self, frames: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.flushes.lock().unwrap().iter().map(Vec::len).sum::<usize>() < frames {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("frames written");
    }

    async fn outcome(self) -> Outcome {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the session ended")
            .unwrap()
    }
}

/// A shutdown that comes with a delivery is seen: the delivery does not
/// take the wake-up the cancelled token gave.
#[tokio::test(flavor = "current_thread")]
async fn a_shutdown_that_comes_with_a_delivery_is_not_missed() {
    let resting = Resting::start().await;
    // Both before the session runs again (this thread is the runtime's).
    resting.layer.group_send(&resting.room, say(1)).await.unwrap();
    resting.shutdown.cancel();
    let outcome = resting.outcome().await;
    assert_eq!(outcome.code, CloseCode::GOING_AWAY);
}

/// A client message that comes with a delivery is read first, as the
/// session's order has it (the client before the layer).
#[tokio::test(flavor = "current_thread")]
async fn a_client_message_that_comes_with_a_delivery_is_read_first() {
    let resting = Resting::start().await;
    resting
        .to_session
        .send(Inbound::Message(WsMessage::text("hi")))
        .unwrap();
    resting.layer.group_send(&resting.room, say(1)).await.unwrap();
    resting.written(3).await;
    resting.to_session.send(Inbound::Close(None)).unwrap();
    let flushes = std::mem::take(&mut *resting.flushes.lock().unwrap());
    assert_eq!(texts(&flushes), ["0", "hi", "1"]);
    resting.outcome().await;
}

/// Deliveries one after another, each taken on waking, all arrive in
/// order while nothing else happens.
#[tokio::test(flavor = "current_thread")]
async fn deliveries_taken_on_waking_arrive_in_order() {
    let resting = Resting::start().await;
    for n in 1..50 {
        resting.layer.group_send(&resting.room, say(n)).await.unwrap();
        resting.written(n as usize + 1).await;
    }
    resting.to_session.send(Inbound::Close(None)).unwrap();
    let flushes = std::mem::take(&mut *resting.flushes.lock().unwrap());
    assert_eq!(
        texts(&flushes),
        (0..50).map(|n| n.to_string()).collect::<Vec<_>>()
    );
    resting.outcome().await;
}
