//! The relay's handshake in connect mode `worker`, at its edges: abandoned
//! by the server's `handshake_timeout`, frames the worker sends before it
//! completes, and a close after the accept.

mod common;

use std::time::Duration;

use common::{FakeWorker, WAIT, app};
use estuary_core::{CloseCode, GroupName, InMemoryChannelLayer};
use estuary_relay::{Relay, RelayBuilder, Target};
use estuary_server::{Server, ServerConfig};
use estuary_test_support::{server::Served, ws};
use estuary_testing::{Communicator, CommunicatorError};
use http::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn builder() -> RelayBuilder {
    Relay::builder(Target::channel(common::WORKER).unwrap()).route(common::ROUTE)
}

/// `relay` on `layer` over TCP, with the server's `handshake_timeout`.
async fn serve(relay: &Relay, layer: &InMemoryChannelLayer, handshake_timeout: Duration) -> Served {
    let config = ServerConfig {
        handshake_timeout,
        ..ServerConfig::default()
    };
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_config(config);
    let addr = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server.serve(app(relay, layer), async move { token.cancelled().await }));
    Served { addr, stop }
}

#[tokio::test]
async fn a_handshake_the_server_gives_up_on_frees_its_slot_and_disconnects() {
    let relay = builder()
        .max_in_flight(1)
        .groups(["chat_{room}"])
        .build()
        .unwrap();
    let layer = InMemoryChannelLayer::default();
    let worker = FakeWorker { layer: layer.clone() };
    // The server gives up first (the relay's connect_timeout is 10 s).
    let served = serve(&relay, &layer, Duration::from_millis(300)).await;
    let url = served.ws("/ws/chat/lobby/1/");

    let unanswered = tokio::spawn(ws::handshake(url.clone()));
    let connect = worker.expect("websocket.connect").await;
    assert!(matches!(unanswered.await.unwrap(), Err(504)));
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!(end["channel"], connect["channel"]);
    assert_eq!(end["code"], 1006, "as for a connection lost");
    assert_eq!(relay.in_flight(), 0, "the handshake's slot is given back");
    estuary_test_support::eventually::poll(
        "the abandoned connection to leave its group",
        WAIT,
        Duration::from_millis(5),
        || (layer.group_size(&GroupName::new("chat_lobby").unwrap()) == 0).then_some(()),
    )
    .await;

    // The one slot is free again: the next handshake is not refused.
    let accepting = tokio::spawn(ws::handshake(url));
    worker.accept().await;
    assert!(accepting.await.unwrap().is_ok(), "accepted");
    served.stop.cancel();
}

fn client(relay: &Relay, layer: &InMemoryChannelLayer) -> Communicator {
    Communicator::new(app(relay, layer), "/ws/chat/a/1/").timeout(WAIT)
}

/// The outbound queue's capacity in messages (`SessionConfig`'s default).
const OUTBOUND: usize = 64;

#[tokio::test(start_paused = true)]
async fn frames_sent_while_connecting_go_out_after_the_accept_up_to_the_outbound_queue() {
    let relay = builder().build().unwrap();
    let layer = InMemoryChannelLayer::default();
    let worker = FakeWorker { layer: layer.clone() };

    // As many as the queue holds: all of them, in order, after the accept.
    let mut c = client(&relay, &layer);
    let connecting = tokio::spawn(async move {
        let accepted = c.connect().await;
        (c, accepted)
    });
    let connect = worker.expect("websocket.connect").await;
    worker.reply(&connect, json!({"type": "websocket.accept"})).await;
    for n in 0..OUTBOUND {
        worker
            .reply(&connect, json!({"type": "websocket.send", "text": n.to_string()}))
            .await;
    }
    worker.ack(&connect, None).await;
    let (mut c, accepted) = connecting.await.unwrap();
    accepted.expect("accepted");
    for n in 0..OUTBOUND {
        assert_eq!(c.receive_text().await.unwrap(), n.to_string());
    }

    // One more: refused at once with 503, counted (never a wait for the
    // slow-client grace with nothing draining the queue).
    let mut c = client(&relay, &layer);
    let refused = tokio::spawn(async move { c.connect().await });
    let connect = worker.expect("websocket.connect").await;
    worker.reply(&connect, json!({"type": "websocket.accept"})).await;
    for n in 0..=OUTBOUND {
        worker
            .reply(&connect, json!({"type": "websocket.send", "text": n.to_string()}))
            .await;
    }
    match refused.await.unwrap() {
        Err(CommunicatorError::Rejected { status, .. }) => {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(relay.stats().connects_unavailable(), 1);
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!(end["code"], 1006);
    assert_eq!(relay.in_flight(), 0);
}

#[tokio::test]
async fn a_close_after_the_accept_in_connect_accepts_then_closes_with_its_code() {
    let relay = builder().build().unwrap();
    let layer = InMemoryChannelLayer::default();
    let worker = FakeWorker { layer: layer.clone() };
    let mut c = client(&relay, &layer);
    let connecting = tokio::spawn(async move {
        let accepted = c.connect().await;
        (c, accepted)
    });
    let connect = worker.expect("websocket.connect").await;
    worker.reply(&connect, json!({"type": "websocket.accept"})).await;
    worker
        .reply(&connect, json!({"type": "websocket.send", "text": "first this"}))
        .await;
    worker
        .reply(
            &connect,
            json!({"type": "websocket.close", "code": 4001, "reason": "not yet"}),
        )
        .await;
    worker
        .reply(
            &connect,
            json!({"type": "websocket.send", "text": "not after the close"}),
        )
        .await;
    worker.ack(&connect, Some(json!({"room": "a"}))).await;
    let (mut c, accepted) = connecting.await.unwrap();
    accepted.expect("accepted, as Channels does for accept() then close()");
    assert_eq!(c.receive_text().await.unwrap(), "first this");
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::from(4001));
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!(
        end["state"],
        json!({"room": "a"}),
        "the state connect set reaches disconnect"
    );
    assert_eq!(relay.stats().connects_refused(), 0);
    assert_eq!(relay.in_flight(), 0);
}
