//! What one connection may hold, and how long its end may take: pending
//! bytes, its state's size, the flush at disconnect.

mod common;

use std::time::Duration;

use common::{FakeWorker, WAIT, app};
use estuary_core::InMemoryChannelLayer;
use estuary_relay::{Relay, RelayBuilder, Target};
use estuary_testing::Communicator;
use serde_json::json;

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

#[tokio::test]
async fn a_state_past_max_state_bytes_is_refused_and_the_previous_one_kept() {
    let (relay, layer, worker) = setup(builder().max_state_bytes(64));
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("one").await.unwrap();
    let one = worker.expect("websocket.receive").await;
    worker.ack(&one, Some(json!({"n": 1}))).await;
    c.send_text("two").await.unwrap();
    let two = worker.expect("websocket.receive").await;
    assert_eq!(two["state"], json!({"n": 1}));
    worker
        .ack(&two, Some(json!({"n": 2, "blob": "x".repeat(100)})))
        .await;
    // The event counts as acknowledged: the next one goes.
    c.send_text("three").await.unwrap();
    let three = worker.expect("websocket.receive").await;
    assert_eq!(three["state"], json!({"n": 1}), "the previous state is kept");
    worker.ack(&three, None).await;
    assert_eq!(relay.stats().states_refused(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_flush_at_disconnect_takes_at_most_one_reply_timeout_in_all() {
    let (relay, layer, worker) = setup(builder().reply_timeout(Duration::from_secs(5)));
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("one").await.unwrap();
    let one = worker.expect("websocket.receive").await;
    c.send_text("two").await.unwrap();
    c.send_text("three").await.unwrap();
    let closed = tokio::spawn(async move { c.disconnect().await });
    // A slow worker: each event answered in 4 s, under reply_timeout, but
    // the three of them would hold the closed connection 12 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    worker.ack(&one, None).await;
    let two = worker.expect("websocket.receive").await;
    assert_eq!(two["text"], "two");
    tokio::time::sleep(Duration::from_secs(4)).await;
    worker.ack(&two, None).await;
    let end = worker.next().await;
    assert_eq!(
        end["type"], "websocket.disconnect",
        "\"two\" was given up when reply_timeout passed since the disconnect: {end}"
    );
    assert!(closed.await.unwrap().is_some());
    assert_eq!(relay.stats().lost_at_disconnect(), 1, "\"three\"");
    assert_eq!(relay.in_flight(), 0);
}
