//! The relay over the in-memory channel layer, with the worker's side
//! played in Rust: handshakes, order, state, fan-out, bounds, timeouts and
//! the end of a connection, as docs/WORKERS.md specifies them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{FakeWorker, WAIT, app, worker as worker_channel};
use estuary_core::{
    ChannelLayer, ChannelLayerConfig, CloseCode, GroupName, InMemoryChannelLayer, Message, User, WsMessage,
};
use estuary_relay::{ConnectMode, Relay, RelayBuilder, Target};
use estuary_testing::{Communicator, CommunicatorError};
use http::StatusCode;
use serde_json::json;

fn builder() -> RelayBuilder {
    Relay::builder(Target::channel(common::WORKER).unwrap()).route(common::ROUTE)
}

fn setup(builder: RelayBuilder) -> (Relay, InMemoryChannelLayer, FakeWorker) {
    let relay = builder.build().unwrap();
    let layer = InMemoryChannelLayer::default();
    let worker = FakeWorker { layer: layer.clone() };
    (relay, layer, worker)
}

fn client(relay: &Relay, layer: &InMemoryChannelLayer, path: &str) -> Communicator {
    Communicator::new(app(relay, layer), path).timeout(WAIT)
}

fn status(result: Result<Option<String>, CommunicatorError>) -> StatusCode {
    match result {
        Err(CommunicatorError::Rejected { status, .. }) => status,
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn the_worker_accepts_and_answers_with_the_scope_and_state_it_set() {
    let (relay, layer, worker) = setup(
        builder()
            .query_param("lang", "en")
            .query_param("page", "1")
            .groups(["chat_{room}"]),
    );
    let mut c = client(&relay, &layer, "/ws/chat/lobby/7/?page=3&other=x")
        .user(User::new("42", "alice").with_attribute("is_staff", true))
        .subprotocol("chat.v1")
        .header("origin", "https://example.org")
        .header("cookie", "sessionid=secret");
    let connecting = tokio::spawn(async move {
        let protocol = c.connect().await;
        (c, protocol)
    });
    let connect = worker.expect("websocket.connect").await;
    assert_eq!(connect["seq"], 0);
    assert_eq!(connect["state"], json!({}));
    let scope = &connect["scope"];
    assert_eq!(scope["type"], "websocket");
    assert_eq!(scope["scheme"], "ws");
    assert_eq!(scope["root_path"], "");
    assert_eq!(scope["path"], "/ws/chat/lobby/7/");
    assert_eq!(scope["query_string"], json!({"bin": "page=3&other=x"}));
    assert_eq!(scope["query"], json!({"lang": "en", "page": "3"}));
    assert_eq!(
        scope["url_route"],
        json!({"args": [], "kwargs": {"room": "lobby", "n": 7}})
    );
    assert_eq!(
        scope["user"],
        json!({"id": "42", "name": "alice", "attributes": {"is_staff": true}})
    );
    assert_eq!(scope["groups"], json!(["chat_lobby"]));
    assert_eq!(scope["subprotocols"], json!(["chat.v1"]));
    assert_eq!(
        scope["headers"],
        json!([[{"bin": "origin"}, {"bin": "https://example.org"}], [{"bin": "sec-websocket-protocol"}, {"bin": "chat.v1"}]])
    );
    assert_eq!(scope["client"], json!(["127.0.0.1", 40000]));
    let channel = connect["channel"].as_str().unwrap().to_owned();
    assert!(channel.starts_with("specific."), "{channel}");

    worker
        .reply(
            &connect,
            json!({"type": "websocket.accept", "subprotocol": "chat.v1"}),
        )
        .await;
    worker
        .reply(&connect, json!({"type": "websocket.send", "text": "welcome"}))
        .await;
    worker.ack(&connect, Some(json!({"visits": 1}))).await;
    let (mut c, protocol) = connecting.await.unwrap();
    assert_eq!(protocol.unwrap().as_deref(), Some("chat.v1"));
    assert_eq!(c.receive_text().await.unwrap(), "welcome");

    c.send_text("hello").await.unwrap();
    let event = worker.expect("websocket.receive").await;
    assert_eq!(
        (event["seq"].clone(), event["text"].clone()),
        (json!(1), json!("hello"))
    );
    assert_eq!(
        event["state"],
        json!({"visits": 1}),
        "the state set by the connect's ack"
    );
    assert!(
        event["scope"].get("headers").is_none(),
        "headers come with connect only"
    );
    assert_eq!(event["channel"], channel.as_str());
    worker
        .reply(&event, json!({"type": "websocket.send", "text": "hi alice"}))
        .await;
    worker.ack(&event, Some(json!({"visits": 2}))).await;
    assert_eq!(c.receive_text().await.unwrap(), "hi alice");

    c.send_binary(vec![0u8, 159, 146]).await.unwrap();
    let event = worker.expect("websocket.receive").await;
    assert_eq!(event["seq"], 2);
    assert_eq!(
        event["bytes"],
        json!({"bin": String::from_utf8_lossy(&[0, 159, 146])})
    );
    assert_eq!(event["state"], json!({"visits": 2}));
    worker.ack(&event, None).await;

    c.send_text("again").await.unwrap();
    let event = worker.expect("websocket.receive").await;
    assert_eq!(
        event["state"],
        json!({"visits": 2}),
        "an ack without state keeps it"
    );
    worker.ack(&event, None).await;

    let outcome = c.disconnect().await.unwrap();
    assert_eq!(outcome.code, CloseCode::NORMAL);
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!((end["code"].clone(), end["seq"].clone()), (json!(1000), json!(4)));
    let stats = relay.stats();
    assert_eq!((stats.events_sent(), stats.acked(), stats.timed_out()), (5, 4, 0));
    assert_eq!(relay.in_flight(), 0);
}

#[tokio::test]
async fn a_close_before_accept_or_an_ack_without_accept_refuses_with_403() {
    let (relay, layer, worker) = setup(builder());
    let mut c = client(&relay, &layer, "/ws/chat/a/1/");
    let refused = tokio::spawn(async move { status(c.connect().await) });
    let connect = worker.expect("websocket.connect").await;
    worker
        .reply(&connect, json!({"type": "websocket.close", "code": 4003}))
        .await;
    assert_eq!(refused.await.unwrap(), StatusCode::FORBIDDEN);
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!(
        end["code"], 1006,
        "as Channels: a refused handshake disconnects with 1006"
    );

    let mut c = client(&relay, &layer, "/ws/chat/a/1/");
    let refused = tokio::spawn(async move { status(c.connect().await) });
    let connect = worker.expect("websocket.connect").await;
    worker.ack(&connect, None).await;
    assert_eq!(refused.await.unwrap(), StatusCode::FORBIDDEN);
    worker.expect("websocket.disconnect").await;
    assert_eq!(relay.stats().connects_refused(), 2);
    assert_eq!(relay.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn no_answer_to_connect_is_504() {
    let (relay, layer, worker) = setup(builder().connect_timeout(Duration::from_secs(10)));
    let mut c = client(&relay, &layer, "/ws/chat/a/1/");
    assert_eq!(status(c.connect().await), StatusCode::GATEWAY_TIMEOUT);
    worker.expect("websocket.connect").await;
    worker.expect("websocket.disconnect").await;
    assert_eq!(relay.stats().connects_timed_out(), 1);
    assert_eq!(relay.in_flight(), 0);
}

#[tokio::test]
async fn a_full_worker_channel_at_connect_is_503() {
    let relay = builder().build().unwrap();
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(1));
    let filler = Message::from_json(&json!({"type": "filler"})).unwrap();
    layer.send(&worker_channel(), filler).await.unwrap();
    let mut c = client(&relay, &layer, "/ws/chat/a/1/");
    assert_eq!(status(c.connect().await), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(relay.stats().connects_unavailable(), 1);
    let queued = layer.receive(&worker_channel()).await.unwrap();
    assert_eq!(
        queued.message_type(),
        "filler",
        "nothing else was queued, no disconnect either"
    );
    assert_eq!(relay.in_flight(), 0);
}

#[tokio::test]
async fn one_event_in_flight_per_connection_keeps_order_across_competing_workers() {
    const MESSAGES: usize = 30;
    let (relay, layer, worker) = setup(builder().max_pending(MESSAGES));
    let mut c = client(&relay, &layer, "/ws/chat/a/1/");
    let connecting = tokio::spawn(async move {
        c.connect().await.unwrap();
        c
    });
    worker.accept().await;
    let mut c = connecting.await.unwrap();

    // Two workers compete on the channel, each slower at times than the
    // other (a different number of yields before answering).
    let busy = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for id in 0..2usize {
        let worker = worker.clone();
        let busy = busy.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            loop {
                let event = worker.next().await;
                if event["type"] == "websocket.disconnect" {
                    return seqs;
                }
                assert_eq!(
                    busy.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two events of one connection in flight"
                );
                let seq = event["seq"].as_u64().unwrap();
                seqs.push(seq);
                for _ in 0..(seq as usize * 7 + id * 3) % 11 {
                    tokio::task::yield_now().await;
                }
                let text = event["text"].as_str().unwrap().to_owned();
                worker
                    .reply(
                        &event,
                        json!({"type": "websocket.send", "text": format!("{text}.a")}),
                    )
                    .await;
                worker
                    .reply(
                        &event,
                        json!({"type": "websocket.send", "text": format!("{text}.b")}),
                    )
                    .await;
                busy.fetch_sub(1, Ordering::SeqCst);
                worker.ack(&event, None).await;
            }
        }));
    }
    for n in 0..MESSAGES {
        c.send_text(&n.to_string()).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..MESSAGES * 2 {
        got.push(c.receive_text().await.unwrap());
    }
    let expected: Vec<String> = (0..MESSAGES)
        .flat_map(|n| [format!("{n}.a"), format!("{n}.b")])
        .collect();
    assert_eq!(got, expected);
    c.disconnect().await;
    // The disconnect reaches one worker; one more stops the other.
    let stop = Message::from_json(&json!({"type": "websocket.disconnect"})).unwrap();
    layer.send(&worker_channel(), stop).await.unwrap();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(tokio::time::timeout(WAIT, task).await.unwrap().unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=MESSAGES as u64).collect::<Vec<_>>());
    assert!(relay.stats().refused_busy() == 0);
}

#[tokio::test]
async fn a_group_websocket_send_is_rendered_once_and_other_messages_reach_the_worker_per_member() {
    let (relay, layer, worker) = setup(builder().groups(["chat_{room}"]));
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut c = client(&relay, &layer, "/ws/chat/lobby/1/");
        let connecting = tokio::spawn(async move {
            c.connect().await.unwrap();
            c
        });
        worker.accept().await;
        members.push(connecting.await.unwrap());
    }
    let group = GroupName::new("chat_lobby").unwrap();
    assert_eq!(layer.group_size(&group), 3);

    let broadcast = Message::from_json(&json!({"type": "websocket.send", "text": "to everyone"})).unwrap();
    layer.group_send(&group, broadcast).await.unwrap();
    let mut frames = Vec::new();
    for c in &mut members {
        frames.push(c.receive().await.unwrap());
    }
    let WsMessage::Text(first) = &frames[0] else {
        panic!("text")
    };
    assert_eq!(first, "to everyone");
    for frame in &frames[1..] {
        let WsMessage::Text(text) = frame else {
            panic!("text")
        };
        assert_eq!(
            text.as_bytes().as_ptr(),
            first.as_bytes().as_ptr(),
            "every member sends the one frame rendered for the group"
        );
    }

    let chat = json!({"type": "chat.message", "message": "hi", "n": 1});
    layer
        .group_send(&group, Message::from_json(&chat).unwrap())
        .await
        .unwrap();
    let mut channels = Vec::new();
    for _ in 0..3 {
        let event = worker.expect("estuary.event").await;
        assert_eq!(event["event"], chat);
        assert_eq!(event["seq"], 1);
        channels.push(event["channel"].as_str().unwrap().to_owned());
        worker
            .reply(&event, json!({"type": "websocket.send", "text": format!("for {}", event["channel"].as_str().unwrap())}))
            .await;
        worker.ack(&event, None).await;
    }
    channels.sort();
    channels.dedup();
    assert_eq!(channels.len(), 3, "one event per member");
    for c in &mut members {
        assert!(c.receive_text().await.unwrap().starts_with("for specific."));
    }

    let close = Message::from_json(&json!({"type": "websocket.close", "code": 4000})).unwrap();
    layer.group_send(&group, close).await.unwrap();
    for c in &mut members {
        assert_eq!(c.receive_close().await.unwrap(), CloseCode::from(4000));
    }
}

/// A connected client and the worker's view of its connect.
async fn connected(relay: &Relay, layer: &InMemoryChannelLayer, worker: &FakeWorker) -> Communicator {
    let mut c = client(relay, layer, "/ws/chat/a/1/");
    let connecting = tokio::spawn(async move {
        c.connect().await.unwrap();
        c
    });
    worker.accept().await;
    connecting.await.unwrap()
}

#[tokio::test]
async fn past_max_pending_a_message_gets_the_busy_frame_or_closes_with_1013() {
    let (relay, layer, worker) = setup(builder().max_pending(1).busy_frame(r#"{"type":"busy"}"#));
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("one").await.unwrap();
    let one = worker.expect("websocket.receive").await;
    c.send_text("two").await.unwrap();
    c.send_text("three").await.unwrap();
    assert_eq!(c.receive_text().await.unwrap(), r#"{"type":"busy"}"#);
    worker.ack(&one, None).await;
    let two = worker.expect("websocket.receive").await;
    assert_eq!(two["text"], "two", "the refused message never reaches the worker");
    worker.ack(&two, None).await;
    assert_eq!(relay.stats().refused_busy(), 1);

    let (relay, layer, worker) = setup(builder().max_pending(1));
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("one").await.unwrap();
    let one = worker.expect("websocket.receive").await;
    c.send_text("two").await.unwrap();
    c.send_text("three").await.unwrap();
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::TRY_AGAIN_LATER);
    worker.ack(&one, None).await;
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!(end["code"], 1013);
    assert_eq!(
        relay.stats().lost_at_disconnect(),
        1,
        "\"two\" was pending when the client was closed"
    );
}

#[tokio::test]
async fn past_max_in_flight_a_message_is_busy_and_a_handshake_503() {
    let (relay, layer, worker) = setup(builder().max_in_flight(1).busy_frame("busy"));
    let mut a = connected(&relay, &layer, &worker).await;
    let mut b = connected(&relay, &layer, &worker).await;
    a.send_text("from a").await.unwrap();
    let from_a = worker.expect("websocket.receive").await;
    assert_eq!(relay.in_flight(), 1);
    b.send_text("from b").await.unwrap();
    assert_eq!(b.receive_text().await.unwrap(), "busy");
    let mut c = client(&relay, &layer, "/ws/chat/a/1/");
    assert_eq!(status(c.connect().await), StatusCode::SERVICE_UNAVAILABLE);
    worker.ack(&from_a, None).await;
    b.send_text("again").await.unwrap();
    let again = worker.expect("websocket.receive").await;
    assert_eq!(again["text"], "again");
    worker.ack(&again, None).await;
    assert_eq!(relay.stats().refused_busy(), 1);
    assert_eq!(relay.stats().connects_unavailable(), 1);

    let (relay, layer, worker) = setup(builder().max_in_flight(1));
    let mut a = connected(&relay, &layer, &worker).await;
    let mut b = connected(&relay, &layer, &worker).await;
    a.send_text("from a").await.unwrap();
    worker.expect("websocket.receive").await;
    b.send_text("from b").await.unwrap();
    assert_eq!(b.receive_close().await.unwrap(), CloseCode::TRY_AGAIN_LATER);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_hears_of_a_missing_ack_and_the_next_event_goes() {
    let (relay, layer, worker) = setup(builder().reply_timeout(Duration::from_secs(5)).busy_frame("busy"));
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("lost").await.unwrap();
    let lost = worker.expect("websocket.receive").await;
    // The client sends nothing more: the watchdog alone tells it.
    assert_eq!(c.receive_text().await.unwrap(), "busy");
    assert_eq!(relay.stats().timed_out(), 1);
    assert_eq!(relay.in_flight(), 0);
    // A late ack is ignored; the connection goes on.
    worker.ack(&lost, None).await;
    c.send_text("next").await.unwrap();
    worker.echo().await;
    assert_eq!(c.receive_text().await.unwrap(), "echo:next");
    assert_eq!(relay.stats().acked(), 2, "the connect and \"next\"");

    // With messages waiting: each missing ack is reported and the next is sent.
    c.send_text("a").await.unwrap();
    c.send_text("b").await.unwrap();
    let a = worker.expect("websocket.receive").await;
    assert_eq!(a["text"], "a");
    assert_eq!(c.receive_text().await.unwrap(), "busy");
    let b = worker.expect("websocket.receive").await;
    assert_eq!(b["text"], "b");
    worker.ack(&b, None).await;
    assert_eq!(relay.stats().timed_out(), 2);
}

#[tokio::test(start_paused = true)]
async fn without_a_busy_frame_a_missing_ack_closes_with_1013() {
    let (relay, layer, worker) = setup(builder().reply_timeout(Duration::from_secs(5)));
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("lost").await.unwrap();
    worker.expect("websocket.receive").await;
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::TRY_AGAIN_LATER);
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!(end["code"], 1013);
    assert_eq!(relay.stats().timed_out(), 1);
    assert_eq!(relay.in_flight(), 0);
}

#[tokio::test]
async fn a_worker_error_is_a_close_with_1011() {
    let (relay, layer, worker) = setup(builder());
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("boom").await.unwrap();
    let event = worker.expect("websocket.receive").await;
    worker
        .reply(&event, json!({"type": "websocket.close", "code": 1011}))
        .await;
    worker.ack(&event, None).await;
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::INTERNAL_ERROR);
    assert_eq!(relay.stats().worker_errors(), 1);
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!(end["code"], 1011);
}

#[tokio::test]
async fn at_disconnect_pending_events_are_flushed_then_disconnect_is_sent() {
    let (relay, layer, worker) = setup(builder());
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("one").await.unwrap();
    let one = worker.expect("websocket.receive").await;
    c.send_text("two").await.unwrap();
    c.send_text("three").await.unwrap();
    let closed = tokio::spawn(async move { c.disconnect_with(CloseCode::from(4000)).await });
    // Answers still arrive for a client that is gone; nothing breaks.
    worker
        .reply(&one, json!({"type": "websocket.send", "text": "too late"}))
        .await;
    worker.ack(&one, None).await;
    let two = worker.expect("websocket.receive").await;
    assert_eq!(two["text"], "two");
    worker.ack(&two, None).await;
    let three = worker.expect("websocket.receive").await;
    assert_eq!(three["text"], "three");
    worker.ack(&three, None).await;
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!((end["code"].clone(), end["seq"].clone()), (json!(4000), json!(4)));
    assert_eq!(closed.await.unwrap().unwrap().code, CloseCode::from(4000));
    assert_eq!(relay.stats().lost_at_disconnect(), 0);
    assert_eq!(relay.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn at_disconnect_a_missing_ack_gives_up_the_rest_and_counts_it() {
    let (relay, layer, worker) = setup(builder().reply_timeout(Duration::from_secs(5)));
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("one").await.unwrap();
    worker.expect("websocket.receive").await;
    c.send_text("two").await.unwrap();
    c.send_text("three").await.unwrap();
    let outcome = c.disconnect().await;
    assert!(outcome.is_some());
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!(
        end["seq"], 2,
        "\"two\" and \"three\" never went out: numbers go to events sent"
    );
    assert_eq!(relay.stats().timed_out(), 1);
    assert_eq!(relay.stats().lost_at_disconnect(), 2);
    assert_eq!(relay.in_flight(), 0);
}

#[tokio::test]
async fn messages_sent_during_connect_wait_for_the_handshake() {
    let (relay, layer, worker) = setup(builder().groups(["chat_{room}"]));
    let mut c = client(&relay, &layer, "/ws/chat/lobby/1/");
    let connecting = tokio::spawn(async move {
        c.connect().await.unwrap();
        c
    });
    let connect = worker.expect("websocket.connect").await;
    // A group message while the handshake waits: handed to the worker after it.
    let note = json!({"type": "room.note", "n": 1});
    layer
        .group_send(
            &GroupName::new("chat_lobby").unwrap(),
            Message::from_json(&note).unwrap(),
        )
        .await
        .unwrap();
    worker.reply(&connect, json!({"type": "websocket.accept"})).await;
    worker.ack(&connect, None).await;
    let mut c = connecting.await.unwrap();
    let event = worker.expect("estuary.event").await;
    assert_eq!((event["seq"].clone(), event["event"].clone()), (json!(1), note));
    worker.ack(&event, None).await;
    c.send_text("after").await.unwrap();
    assert_eq!(worker.echo().await["seq"], 2);
    assert_eq!(c.receive_text().await.unwrap(), "echo:after");
}

#[tokio::test]
async fn in_accept_mode_the_handshake_completes_at_once_and_connect_is_event_zero() {
    let (relay, layer, worker) = setup(builder().connect_mode(ConnectMode::Accept));
    let mut c = client(&relay, &layer, "/ws/chat/a/1/");
    c.connect().await.unwrap();
    c.send_text("first").await.unwrap();
    let connect = worker.expect("websocket.connect").await;
    assert_eq!(relay.in_flight(), 1, "the message waits for the connect's ack");
    worker.ack(&connect, Some(json!({"joined": true}))).await;
    let event = worker.echo().await;
    assert_eq!(event["state"], json!({"joined": true}));
    assert_eq!(c.receive_text().await.unwrap(), "echo:first");
}

#[tokio::test]
async fn a_group_template_that_makes_no_valid_name_refuses_with_400_and_sends_nothing() {
    let (relay, layer, _worker) = setup(builder().groups(["chat_{room}"]));
    let mut c = client(&relay, &layer, "/ws/chat/a%20b/1/");
    assert_eq!(status(c.connect().await), StatusCode::BAD_REQUEST);
    let (relay, layer, _worker) = setup(builder().groups(["user.{user.id}"]));
    let mut c = client(&relay, &layer, "/ws/chat/a/1/");
    assert_eq!(status(c.connect().await), StatusCode::FORBIDDEN);
    assert_eq!(relay.stats().events_sent(), 0);
    let nothing = tokio::time::timeout(Duration::from_millis(50), layer.receive(&worker_channel())).await;
    assert!(nothing.is_err(), "no event reached the worker");
}

#[tokio::test]
async fn a_reply_that_is_not_one_is_forwarded_and_a_malformed_one_dropped() {
    let (relay, layer, worker) = setup(builder());
    let mut c = connected(&relay, &layer, &worker).await;
    c.send_text("x").await.unwrap();
    let event = worker.expect("websocket.receive").await;
    worker
        .reply(&event, json!({"type": "websocket.send", "text": 42}))
        .await;
    worker
        .reply(&event, json!({"type": "websocket.send", "text": "fine"}))
        .await;
    worker.ack(&event, None).await;
    assert_eq!(
        c.receive_text().await.unwrap(),
        "fine",
        "the malformed send was dropped"
    );
    c.send_text("y").await.unwrap();
    worker.echo().await;
    assert_eq!(c.receive_text().await.unwrap(), "echo:y");
}

#[tokio::test]
async fn over_tcp_refusals_are_http_statuses_and_an_accepted_connection_talks() {
    use estuary_test_support::{server, ws};
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as Frame;

    let (relay, layer, worker) = setup(builder().connect_timeout(Duration::from_millis(300)));
    let served = server::serve(app(&relay, &layer)).await;
    let url = served.ws("/ws/chat/a/1/");

    let refusing = tokio::spawn(ws::handshake(url.clone()));
    let connect = worker.expect("websocket.connect").await;
    worker.reply(&connect, json!({"type": "websocket.close"})).await;
    assert!(matches!(refusing.await.unwrap(), Err(403)));
    worker.expect("websocket.disconnect").await;

    let unanswered = tokio::spawn(ws::handshake(url.clone()));
    worker.expect("websocket.connect").await;
    assert!(matches!(unanswered.await.unwrap(), Err(504)));
    worker.expect("websocket.disconnect").await;

    let accepting = tokio::spawn(ws::handshake(url));
    worker.accept().await;
    let Ok(mut client) = accepting.await.unwrap() else {
        panic!("accepted")
    };
    client.send(Frame::text("over tcp")).await.unwrap();
    worker.echo().await;
    assert_eq!(ws::next_text(&mut client).await, "echo:over tcp");
    client.close(None).await.unwrap();
    let end = worker.expect("websocket.disconnect").await;
    assert_eq!(end["code"], 1005, "closed without a code");
    served.stop.cancel();
}
