//! What one connection may hold, and how long its end may take: pending
//! bytes, its state's size, the flush at disconnect.

mod common;

use common::{FakeWorker, WAIT, app};
use estuary_core::InMemoryChannelLayer;
use estuary_relay::{Relay, RelayBuilder, Target};
use estuary_testing::Communicator;

fn builder() -> RelayBuilder {
    Relay::builder(Target::channel(common::WORKER).unwrap()).route(common::ROUTE)
}

/// A client of `relay` whose handshake the worker accepted.
async fn connected(relay: &Relay, layer: &InMemoryChannelLayer, worker: &FakeWorker) -> Communicator {
    let mut c = Communicator::new(app(relay, layer), "/ws/chat/a/1/").timeout(WAIT);
    let connecting = tokio::spawn(async move {
        c.connect().await.unwrap();
        c
    });
    worker.accept().await;
    connecting.await.unwrap()
}

fn setup(builder: RelayBuilder) -> (Relay, InMemoryChannelLayer, FakeWorker) {
    let relay = builder.build().unwrap();
    let layer = InMemoryChannelLayer::default();
    let worker = FakeWorker { layer: layer.clone() };
    (relay, layer, worker)
}

#[tokio::test]
async fn pending_messages_are_bounded_in_bytes_too() {
    let (relay, layer, worker) = setup(builder().max_pending_bytes(100).busy_frame("busy"));
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("one").await.unwrap();
    let one = worker.expect("websocket.receive").await;
    let sixty = "x".repeat(60);
    c.send_text(&sixty).await.unwrap();
    c.send_text(&sixty).await.unwrap();
    assert_eq!(
        c.receive_text().await.unwrap(),
        "busy",
        "120 bytes would wait: the second is refused"
    );
    assert_eq!(relay.stats().refused_busy(), 1);
    worker.ack(&one, None).await;
    let next = worker.expect("websocket.receive").await;
    assert_eq!(next["text"], sixty.as_str());
    worker.ack(&next, None).await;
    // Room again once it went out.
    c.send_text("after").await.unwrap();
    worker.echo().await;
    assert_eq!(c.receive_text().await.unwrap(), "echo:after");

    // One message always fits when none waits, whatever its size.
    let (relay, layer, worker) = setup(builder().max_pending_bytes(10).busy_frame("busy"));
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("one").await.unwrap();
    let one = worker.expect("websocket.receive").await;
    c.send_text(&sixty).await.unwrap();
    worker.ack(&one, None).await;
    assert_eq!(worker.echo().await["text"], sixty.as_str());
    assert_eq!(relay.stats().refused_busy(), 0);
}
