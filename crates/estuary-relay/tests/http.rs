//! The relay's HTTP transport against a small axum server that plays the
//! Django view: every request's signature is checked, the test decides
//! each answer.

mod common;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use estuary_core::{CloseCode, InMemoryChannelLayer, WsMessage};
use estuary_relay::{ConnectMode, Relay, RelayBuilder, Target};
use estuary_testing::{Communicator, CommunicatorError};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

const SECRET: &str = "the relay's secret, long enough";
const WAIT: Duration = Duration::from_secs(10);

/// One request as the view saw it; answer through `answer`.
struct Request {
    body: Value,
    signed: bool,
    answer: oneshot::Sender<Response>,
}

/// The view: hands each request to the test and waits for its answer.
async fn view(
    State(requests): State<mpsc::UnboundedSender<Request>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = estuary_callback::sign(SECRET.as_bytes(), &body);
    let signed = headers
        .get("x-estuary-signature")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (answer, answered) = oneshot::channel();
    if requests.send(Request { body, signed, answer }).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    // A test that drops the sender never answers: the request hangs.
    match answered.await {
        Ok(response) => response,
        Err(_) => std::future::pending().await,
    }
}

/// The view on a free port, and the requests it receives.
struct View {
    url: String,
    requests: mpsc::UnboundedReceiver<Request>,
}

impl View {
    async fn start() -> Self {
        let (tx, requests) = mpsc::unbounded_channel();
        let app = axum::Router::new()
            .route("/estuary/events/", post(view))
            .route("/elsewhere/", post(|| async { "{}" }))
            .with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/estuary/events/"),
            requests,
        }
    }

    /// The next request, which must be signed and of `kind`, with its
    /// `time` set.
    async fn expect(&mut self, kind: &str) -> Request {
        let request = tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("a request in time")
            .expect("the view runs");
        assert!(request.signed, "the request is signed with the secret");
        assert_eq!(request.body["type"], kind, "{}", request.body);
        assert!(request.body["time"].as_u64().unwrap() > 1_700_000_000);
        request
    }
}

/// How a test answers one request.
type Respond = Box<dyn FnOnce(Request)>;

fn answer(request: Request, body: Value) {
    let _ = request.answer.send(axum::Json(body).into_response());
}

fn fail(request: Request, status: StatusCode) {
    let _ = request.answer.send(status.into_response());
}

fn builder(view: &View) -> RelayBuilder {
    Relay::builder(Target::http(&view.url, SECRET).unwrap()).route(common::ROUTE)
}

fn client(relay: &Relay) -> Communicator {
    let layer = InMemoryChannelLayer::default();
    Communicator::new(common::app(relay, &layer), "/ws/chat/a/1/").timeout(WAIT)
}

fn status(result: Result<Option<String>, CommunicatorError>) -> StatusCode {
    match result {
        Err(CommunicatorError::Rejected { status, .. }) => status,
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

/// A client whose handshake the view accepted.
async fn connected(relay: &Relay, view: &mut View) -> Communicator {
    let mut c = client(relay);
    let connecting = tokio::spawn(async move {
        c.connect().await.unwrap();
        c
    });
    let connect = view.expect("websocket.connect").await;
    answer(connect, json!({"messages": [{"type": "websocket.accept"}]}));
    connecting.await.unwrap()
}

#[tokio::test]
async fn events_are_posted_signed_and_the_answers_applied_in_order_with_the_state() {
    let mut view = View::start().await;
    let relay = builder(&view).build().unwrap();
    let mut c = client(&relay);
    let connecting = tokio::spawn(async move {
        c.connect().await.unwrap();
        c
    });
    let connect = view.expect("websocket.connect").await;
    assert_eq!(connect.body["seq"], 0);
    assert_eq!(
        connect.body["scope"]["url_route"]["kwargs"],
        json!({"room": "a", "n": 1})
    );
    assert_eq!(connect.body["scope"]["query_string"], "");
    let channel = connect.body["channel"].as_str().unwrap().to_owned();
    answer(
        connect,
        json!({
            "messages": [{"type": "websocket.accept"}, {"type": "websocket.send", "text": "welcome"}],
            "state": {"n": 1},
        }),
    );
    let mut c = connecting.await.unwrap();
    assert_eq!(c.receive_text().await.unwrap(), "welcome");

    c.send_binary(vec![0u8, 1, 2]).await.unwrap();
    let event = view.expect("websocket.receive").await;
    assert_eq!(event.body["bytes"], "AAEC", "binary frames are base64");
    assert_eq!(event.body["state"], json!({"n": 1}));
    assert_eq!(event.body["channel"], channel.as_str());
    answer(
        event,
        json!({"messages": [{"type": "websocket.send", "bytes": "AwQ="}, {"type": "websocket.send", "text": "two"}], "state": {"n": 2}}),
    );
    assert_eq!(c.receive().await.unwrap(), WsMessage::binary(vec![3u8, 4]));
    assert_eq!(c.receive_text().await.unwrap(), "two");

    c.send_text("three").await.unwrap();
    let event = view.expect("websocket.receive").await;
    assert_eq!(
        (event.body["seq"].clone(), event.body["text"].clone()),
        (json!(2), json!("three"))
    );
    assert_eq!(event.body["state"], json!({"n": 2}));
    answer(event, json!({}));

    c.send_text("four").await.unwrap();
    let event = view.expect("websocket.receive").await;
    assert_eq!(
        event.body["state"],
        json!({"n": 2}),
        "an answer without state keeps it"
    );
    answer(
        event,
        json!({"messages": [{"type": "websocket.close", "code": 4000, "reason": "bye"}]}),
    );
    assert_eq!(c.receive_close().await.unwrap(), CloseCode::from(4000));
    let end = view.expect("websocket.disconnect").await;
    assert_eq!(end.body["code"], 4000);
    answer(end, json!({}));
    let stats = relay.stats();
    assert_eq!(
        (stats.events_sent(), stats.acked(), stats.undelivered()),
        (5, 4, 0)
    );
}

#[tokio::test]
async fn a_failed_or_redirected_or_malformed_answer_counts_as_no_ack() {
    let mut view = View::start().await;
    let relay = builder(&view).busy_frame("busy").build().unwrap();
    let mut c = connected(&relay, &mut view).await;
    let cases: [(&str, Respond); 4] = [
        ("500", Box::new(|r| fail(r, StatusCode::INTERNAL_SERVER_ERROR))),
        (
            "302",
            Box::new(|r| {
                let redirect = (StatusCode::FOUND, [("location", "/elsewhere/")]).into_response();
                let _ = r.answer.send(redirect);
            }),
        ),
        ("not an answer", Box::new(|r| answer(r, json!({"message": []})))),
        (
            "not a reply",
            Box::new(|r| answer(r, json!({"messages": [{"type": "chat.message"}]}))),
        ),
    ];
    for (n, (what, respond)) in cases.into_iter().enumerate() {
        c.send_text(what).await.unwrap();
        let event = view.expect("websocket.receive").await;
        assert_eq!(event.body["text"], what);
        respond(event);
        assert_eq!(c.receive_text().await.unwrap(), "busy", "{what}");
        assert_eq!(relay.stats().undelivered(), n as u64 + 1);
    }
    c.send_text("fine").await.unwrap();
    let event = view.expect("websocket.receive").await;
    answer(
        event,
        json!({"messages": [{"type": "websocket.send", "text": "ok"}]}),
    );
    assert_eq!(c.receive_text().await.unwrap(), "ok");
    assert_eq!(relay.in_flight(), 0);
}

#[tokio::test]
async fn a_slow_view_gets_the_busy_frame_and_the_next_event_goes() {
    let mut view = View::start().await;
    let relay = builder(&view)
        .reply_timeout(Duration::from_millis(300))
        .busy_frame("busy")
        .build()
        .unwrap();
    let mut c = connected(&relay, &mut view).await;
    c.send_text("slow").await.unwrap();
    c.send_text("next").await.unwrap();
    let slow = view.expect("websocket.receive").await;
    assert_eq!(c.receive_text().await.unwrap(), "busy");
    let next = view.expect("websocket.receive").await;
    assert_eq!(next.body["text"], "next");
    answer(
        next,
        json!({"messages": [{"type": "websocket.send", "text": "answered"}]}),
    );
    assert_eq!(c.receive_text().await.unwrap(), "answered");
    drop(slow);
    let stats = relay.stats();
    assert_eq!(
        stats.undelivered() + stats.timed_out(),
        1,
        "counted once, by whichever saw it first"
    );
}

#[tokio::test]
async fn the_view_refuses_fails_or_says_nothing_at_connect() {
    let mut view = View::start().await;
    let relay = builder(&view)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    let mut c = client(&relay);
    let refused = tokio::spawn(async move { status(c.connect().await) });
    let connect = view.expect("websocket.connect").await;
    answer(connect, json!({"messages": [{"type": "websocket.close"}]}));
    assert_eq!(refused.await.unwrap(), StatusCode::FORBIDDEN);
    answer(view.expect("websocket.disconnect").await, json!({}));

    let mut c = client(&relay);
    let refused = tokio::spawn(async move { status(c.connect().await) });
    let connect = view.expect("websocket.connect").await;
    answer(connect, json!({"state": {"no": "accept"}}));
    assert_eq!(
        refused.await.unwrap(),
        StatusCode::FORBIDDEN,
        "an answer without accept"
    );
    answer(view.expect("websocket.disconnect").await, json!({}));

    let mut c = client(&relay);
    let failed = tokio::spawn(async move { status(c.connect().await) });
    fail(view.expect("websocket.connect").await, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);

    let mut c = client(&relay);
    let silent = tokio::spawn(async move { status(c.connect().await) });
    let connect = view.expect("websocket.connect").await;
    assert_eq!(silent.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    drop(connect);
    answer(view.expect("websocket.disconnect").await, json!({}));

    let stats = relay.stats();
    assert_eq!(
        (
            stats.connects_refused(),
            stats.connects_unavailable(),
            stats.connects_timed_out()
        ),
        (2, 1, 1)
    );
    assert_eq!(relay.in_flight(), 0);
}

#[tokio::test]
async fn an_unreachable_view_is_503_at_connect() {
    let port = estuary_test_support::process::free_port();
    let relay = Relay::builder(Target::http(&format!("http://127.0.0.1:{port}/"), SECRET).unwrap())
        .build()
        .unwrap();
    let mut c = client(&relay);
    assert_eq!(status(c.connect().await), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn in_accept_mode_the_connect_answer_sets_the_state_for_the_next_event() {
    let mut view = View::start().await;
    let relay = builder(&view).connect_mode(ConnectMode::Accept).build().unwrap();
    let mut c = client(&relay);
    c.connect().await.unwrap();
    c.send_text("hello").await.unwrap();
    let connect = view.expect("websocket.connect").await;
    answer(
        connect,
        json!({"messages": [{"type": "websocket.send", "text": "hi"}], "state": {"user": 1}}),
    );
    assert_eq!(c.receive_text().await.unwrap(), "hi");
    let event = view.expect("websocket.receive").await;
    assert_eq!(event.body["state"], json!({"user": 1}));
    answer(event, json!({}));
}

#[tokio::test]
async fn a_handshake_abandoned_while_the_view_thinks_still_disconnects() {
    use estuary_core::{ChannelLayerHandle, Scope, Session, SessionConfig};

    let mut view = View::start().await;
    let relay = builder(&view).max_in_flight(1).build().unwrap();
    let scope = Scope::builder("/ws/chat/a/1/")
        .param("room", "a")
        .param("n", "1")
        .build();
    // As the server does past its handshake_timeout: the open future dropped.
    let opening = Session::open(
        relay.consumer(),
        scope,
        ChannelLayerHandle::default(),
        SessionConfig::default(),
    );
    let (abandoned, connect) = tokio::join!(
        tokio::time::timeout(Duration::from_millis(300), opening),
        view.expect("websocket.connect")
    );
    assert!(abandoned.is_err(), "the view never answered");
    let end = view.expect("websocket.disconnect").await;
    assert_eq!(end.body["code"], 1006);
    assert_eq!(end.body["channel"], connect.body["channel"]);
    assert_eq!(relay.in_flight(), 0, "the handshake's slot is given back");
    answer(end, json!({}));
}

#[tokio::test]
async fn disconnects_out_at_once_are_bounded_and_the_rest_counted() {
    let mut view = View::start().await;
    let relay = builder(&view).max_in_flight(1).build().unwrap();
    let a = connected(&relay, &mut view).await;
    let b = connected(&relay, &mut view).await;
    let c = connected(&relay, &mut view).await;
    a.disconnect().await;
    // The view holds the first disconnect: it is the one allowed out.
    let held = view.expect("websocket.disconnect").await;
    b.disconnect().await;
    assert_eq!(
        relay.stats().lost_at_disconnect(),
        1,
        "b's disconnect is counted, not posted"
    );
    answer(held, json!({}));
    // Once the first is answered, the next may go out.
    estuary_test_support::eventually::poll(
        "the first disconnect's slot to be free",
        WAIT,
        Duration::from_millis(5),
        || relay.disconnects_out().eq(&0).then_some(()),
    )
    .await;
    c.disconnect().await;
    let end = view.expect("websocket.disconnect").await;
    answer(end, json!({}));
    assert_eq!(relay.stats().lost_at_disconnect(), 1);
}
