//! The connect callback over real TCP, both ways: WebSocket clients connect
//! to an Estuary server whose `AuthLayer` asks an application (an axum
//! server here; a real Django project in `apps/estuary/tests`) over HTTP.
//! Covers: accept with a user, groups and data (and what is forwarded and
//! signed), an anonymous answer on an optional and a required route,
//! refusals with a status and with a close code, a timeout, bad answers
//! of every kind, the application down or failing, a wrong secret, and a
//! recheck that closes a socket once the application stops admitting it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use estuary_callback::{CallbackConfig, ConnectCallback, SIGNATURE_HEADER, sign};
use estuary_core::{ChannelLayer, ChannelLayerHandle, GroupName, Message as LayerMessage};
use estuary_test_support::auth::{AuthServer, WhoAmI, greeting, serve_auth};
use estuary_test_support::ws::{self, Ws, next};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = ws::WAIT;
const SECRET: &str = "the shared secret of the tests";

/// What the application saw of one callback.
#[derive(Debug)]
struct Seen {
    headers: HeaderMap,
    body: Value,
}

/// The application's state: who it admits, and what it saw.
#[derive(Clone)]
struct App {
    seen: mpsc::UnboundedSender<Seen>,
    /// While false, `?as=flip` is anonymous.
    admits_flip: Arc<AtomicBool>,
}

/// The callback view: checks the signature, then answers as `?as=` says.
async fn connect_view(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if signature != sign(SECRET.as_bytes(), &body) {
        return (StatusCode::FORBIDDEN, "bad signature").into_response();
    }
    let body: Value = serde_json::from_slice(&body).expect("the callback sends JSON");
    let query = body["query"].as_str().unwrap_or("").to_owned();
    let who = query.strip_prefix("as=").unwrap_or("");
    let answer = |value: Value| axum::Json(value).into_response();
    // Decided before the test hears of the request: what the test changes
    // after hearing of it applies to the next one.
    let response = match who {
        "member" => answer(json!({
            "user": {"id": 42, "name": "alice", "attributes": {"is_staff": true}},
            "groups": ["user.42", "news"],
            "data": {"plan": "pro"},
        })),
        "anonymous" => answer(json!({})),
        "guest" => answer(json!({"user": null, "groups": ["news"]})),
        "banned" => answer(json!({"reject": {"status": 403, "reason": "banned"}})),
        "login" => answer(json!({"reject": {"close_code": 4403, "reason": "log in first"}})),
        "flip" if app.admits_flip.load(Ordering::SeqCst) => {
            answer(json!({"user": {"id": "7", "name": "flip"}}))
        }
        "flip" => answer(json!({})),
        "silent" => {
            let _ = app.seen.send(Seen { headers, body });
            return std::future::pending().await;
        }
        "garbage" => (StatusCode::OK, "this is not JSON").into_response(),
        "misspelt" => answer(json!({"user": {"id": "1"}, "group": ["user.1"]})),
        "bad-group" => answer(json!({"user": {"id": "1"}, "groups": ["no spaces allowed"]})),
        "bad-code" => answer(json!({"reject": {"close_code": 1000}})),
        "huge" => answer(json!({"user": {"id": "1"}, "data": {"blob": "x".repeat(100 * 1024)}})),
        "redirect" => (StatusCode::FOUND, [("location", "/login/")]).into_response(),
        "crash" => (StatusCode::INTERNAL_SERVER_ERROR, "Server Error").into_response(),
        "brief" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            answer(json!({"user": {"id": "8", "name": "brief", "expires_at": now + 1}}))
        }
        // Admits at the handshake, fails every recheck.
        "flaky" if body["event"] == "connect" => answer(json!({"user": {"id": "9", "name": "flaky"}})),
        "flaky" => (StatusCode::INTERNAL_SERVER_ERROR, "Server Error").into_response(),
        other => panic!("the tests ask as {other:?}"),
    };
    let _ = app.seen.send(Seen { headers, body });
    response
}

/// The application on a free port.
async fn application() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>, Arc<AtomicBool>) {
    let (seen, seen_rx) = mpsc::unbounded_channel();
    let admits_flip = Arc::new(AtomicBool::new(true));
    let app = App {
        seen,
        admits_flip: admits_flip.clone(),
    };
    let router = axum::Router::new()
        .route("/estuary/connect/", axum::routing::post(connect_view))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, seen_rx, admits_flip)
}

/// Estuary asking `config`'s URL, with `/ws/private/` requiring a user.
async fn estuary(config: CallbackConfig) -> (SocketAddr, ChannelLayerHandle, CancellationToken) {
    let AuthServer { served, layer } = serve_auth(ConnectCallback::new(config), WhoAmI::new()).await;
    (served.addr, layer, served.stop)
}

fn config(app: SocketAddr) -> CallbackConfig {
    CallbackConfig::new(&format!("http://{app}/estuary/connect/"), SECRET).unwrap()
}

/// Connects with a session cookie, another cookie and a header that are
/// not forwarded; the HTTP status when refused.
async fn connect(addr: SocketAddr, path: &str) -> Result<Ws, u16> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    let h = request.headers_mut();
    h.insert(
        "cookie",
        "sessionid=s3ss10n; tracking=not-forwarded".parse().unwrap(),
    );
    h.insert("origin", "http://example.test".parse().unwrap());
    h.insert("x-private", "not forwarded".parse().unwrap());
    ws::handshake(request).await
}

async fn seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the application was asked in time")
        .expect("the application runs")
}

#[tokio::test]
async fn an_accepted_visitor_is_the_user_in_its_groups_with_its_data() {
    let (app, mut asked, _) = application().await;
    let (addr, layer, _stop) = estuary(config(app)).await;
    let mut ws = connect(addr, "/ws/private/?as=member").await.expect("admitted");
    assert_eq!(
        greeting(&mut ws).await,
        json!({
            "user": {"id": "42", "name": "alice", "attributes": {"is_staff": true}},
            "groups": ["user.42", "news"],
            "data": {"plan": "pro"},
        })
    );

    // What the application was told, signed (the view checked it): the
    // forwarded headers and cookies only, in the body and as headers.
    let Seen { headers, body } = seen(&mut asked).await;
    assert_eq!(body["event"], "connect");
    assert_eq!(body["path"], "/ws/private/");
    assert_eq!(body["query"], "as=member");
    assert_eq!(body["cookies"], json!({"sessionid": "s3ss10n"}));
    assert_eq!(body["headers"]["origin"], "http://example.test");
    assert!(body["headers"].get("x-private").is_none());
    assert_eq!(body["client"]["host"], "127.0.0.1");
    assert!(body["time"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(headers.get("cookie").unwrap(), "sessionid=s3ss10n");
    assert_eq!(headers.get("origin").unwrap(), "http://example.test");
    assert!(headers.get("x-private").is_none());

    // The groups are the connection's: a push to the user reaches it.
    let message = LayerMessage::from_json(&json!({"type": "relay", "text": "just for alice"})).unwrap();
    let report = layer
        .group_send(&GroupName::new("user.42").unwrap(), message)
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(next(&mut ws).await, Message::text("just for alice"));
}

#[tokio::test]
async fn an_anonymous_answer_is_a_visitor_where_optional_and_401_where_required() {
    let (app, _asked, _) = application().await;
    let (addr, _layer, _stop) = estuary(config(app)).await;
    let mut ws = connect(addr, "/ws/open/?as=anonymous").await.expect("admitted");
    assert_eq!(
        greeting(&mut ws).await,
        json!({"user": null, "groups": [], "data": {}})
    );
    let mut guest = connect(addr, "/ws/open/?as=guest").await.expect("admitted");
    assert_eq!(greeting(&mut guest).await["groups"], json!(["news"]));
    assert_eq!(connect(addr, "/ws/private/?as=anonymous").await.err(), Some(401));
    assert_eq!(connect(addr, "/ws/private/?as=guest").await.err(), Some(401));
}

#[tokio::test]
async fn refusals_carry_the_applications_status_or_close_code() {
    let (app, _asked, _) = application().await;
    let (addr, _layer, _stop) = estuary(config(app)).await;
    assert_eq!(connect(addr, "/ws/open/?as=banned").await.err(), Some(403));

    let mut ws = connect(addr, "/ws/open/?as=login")
        .await
        .expect("a close code completes the handshake");
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4403);
            assert_eq!(frame.reason.as_str(), "log in first");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn an_application_that_does_not_answer_in_time_gets_the_handshake_503() {
    let (app, mut asked, _) = application().await;
    let (addr, _layer, _stop) = estuary(config(app).with_timeout(Duration::from_millis(300))).await;
    let started = tokio::time::Instant::now();
    assert_eq!(connect(addr, "/ws/open/?as=silent").await.err(), Some(503));
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(5)).contains(&took),
        "{took:?}"
    );
    seen(&mut asked).await;
    // The next visitor is answered as usual.
    assert!(connect(addr, "/ws/open/?as=member").await.is_ok());
}

#[tokio::test]
async fn a_bad_answer_never_lets_anyone_in_and_gets_502() {
    let (app, _asked, _) = application().await;
    let (addr, _layer, _stop) = estuary(config(app)).await;
    for who in ["garbage", "misspelt", "bad-group", "bad-code", "huge", "redirect"] {
        assert_eq!(
            connect(addr, &format!("/ws/open/?as={who}")).await.err(),
            Some(502),
            "as={who}"
        );
    }
}

#[tokio::test]
async fn an_application_down_or_failing_gets_the_handshake_503() {
    // A port with nothing behind it.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (addr, _layer, _stop) = estuary(config(closed)).await;
    assert_eq!(connect(addr, "/ws/open/?as=member").await.err(), Some(503));
    assert_eq!(connect(addr, "/ws/private/?as=member").await.err(), Some(503));

    let (app, _asked, _) = application().await;
    let (addr, _layer, _stop) = estuary(config(app)).await;
    assert_eq!(connect(addr, "/ws/open/?as=crash").await.err(), Some(503));
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_application_and_gets_502() {
    let (app, _asked, _) = application().await;
    let wrong = CallbackConfig::new(
        &format!("http://{app}/estuary/connect/"),
        "not the secret of the tests",
    )
    .unwrap();
    let (addr, _layer, _stop) = estuary(wrong).await;
    assert_eq!(connect(addr, "/ws/open/?as=member").await.err(), Some(502));
}

#[tokio::test]
async fn a_recheck_closes_the_socket_once_the_application_stops_admitting_its_user() {
    let (app, mut asked, admits_flip) = application().await;
    let config = config(app).with_recheck_every(Some(Duration::from_secs(1)));
    let (addr, _layer, _stop) = estuary(config).await;
    let mut ws = connect(addr, "/ws/open/?as=flip").await.expect("admitted");
    assert_eq!(greeting(&mut ws).await["user"]["name"], "flip");
    assert_eq!(seen(&mut asked).await.body["event"], "connect");
    // The first recheck still admits the user; then the application signs
    // the user out, and the second recheck (asked: the socket survived the
    // first) closes the socket.
    assert_eq!(seen(&mut asked).await.body["event"], "recheck");
    admits_flip.store(false, Ordering::SeqCst);
    assert_eq!(seen(&mut asked).await.body["event"], "recheck");
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(closed, Some(4401));
}

#[tokio::test]
async fn handshakes_past_max_in_flight_get_503_without_reaching_the_application() {
    let (app, mut asked, _) = application().await;
    let config = config(app)
        .with_timeout(Duration::from_millis(300))
        .with_max_in_flight(1)
        // All three come from loopback: their address's share is not what
        // is tested here (`apps/estuary/tests/auth_bounds.rs` tests it).
        .with_max_in_flight_per_client(3);
    let (addr, _layer, _stop) = estuary(config).await;
    // Three at once for one slot, each asked about by a silent application:
    // the first to get the slot holds it for its whole timeout; the next may
    // get it when it frees (or, arriving in the same instant, give up), and
    // whoever waits longer than a holder is refused without being sent.
    let handshakes = (0..3).map(|_| connect(addr, "/ws/open/?as=silent"));
    let statuses: Vec<_> = futures_util::future::join_all(handshakes)
        .await
        .into_iter()
        .map(|r| r.err())
        .collect();
    assert_eq!(statuses, [Some(503); 3]);
    // Every request that was sent reached the application before its
    // handshake ended (the view records it first), so all are here now.
    seen(&mut asked).await;
    let mut sent = 1;
    while asked.try_recv().is_ok() {
        sent += 1;
    }
    assert!(sent <= 2, "{sent} of 3 reached the application with one slot");
}

#[tokio::test]
async fn an_answers_expiry_closes_the_socket_with_4401() {
    let (app, _asked, _) = application().await;
    let (addr, _layer, _stop) = estuary(config(app)).await;
    let mut ws = connect(addr, "/ws/open/?as=brief").await.expect("admitted");
    assert_eq!(greeting(&mut ws).await["user"]["name"], "brief");
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4401),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn only_the_session_cookie_is_forwarded_whatever_the_others_hold() {
    let (app, mut asked, _) = application().await;
    let (addr, _layer, _stop) = estuary(config(app)).await;
    // A cookie of raw UTF-8 (as document.cookie sets it) beside the session's.
    let mut request = format!("ws://{addr}/ws/open/?as=anonymous")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "cookie",
        http::HeaderValue::from_bytes("theme=café; sessionid=s3ss10n".as_bytes()).unwrap(),
    );
    let (_ws, _) = tokio_tungstenite::connect_async(request).await.expect("admitted");
    let Seen { headers, body } = seen(&mut asked).await;
    assert_eq!(body["cookies"], json!({"sessionid": "s3ss10n"}));
    assert_eq!(headers.get("cookie").unwrap(), "sessionid=s3ss10n");

    // No cookie at all: none sent.
    let (_ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/open/?as=anonymous"))
        .await
        .expect("admitted");
    let Seen { headers, body } = seen(&mut asked).await;
    assert_eq!(body["cookies"], json!({}));
    assert!(headers.get("cookie").is_none());
}

#[tokio::test]
async fn a_recheck_without_an_answer_keeps_the_socket() {
    let (app, mut asked, _) = application().await;
    let config = config(app).with_recheck_every(Some(Duration::from_secs(1)));
    let (addr, _layer, _stop) = estuary(config).await;
    let mut ws = connect(addr, "/ws/open/?as=flaky").await.expect("admitted");
    assert_eq!(greeting(&mut ws).await["user"]["name"], "flaky");
    assert_eq!(seen(&mut asked).await.body["event"], "connect");
    // The first recheck fails (500); a second is asked: the socket stayed.
    assert_eq!(seen(&mut asked).await.body["event"], "recheck");
    assert_eq!(seen(&mut asked).await.body["event"], "recheck");
    ws.send(Message::Ping(Bytes::from_static(b"there?")))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::Pong(Bytes::from_static(b"there?")));
}

/// An application that keeps connections alive but closes one, without an
/// answer, when a second request arrives on it: a kept-alive connection
/// closed just as it is reused. Answers `{}` (an anonymous visitor).
async fn closes_reused_connections() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                // Reads one request (head and body), answers it.
                loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buffer).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buffer.len() >= end + 4 + length {
                        break;
                    }
                }
                let answer =
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                socket.write_all(answer.as_bytes()).await.unwrap();
                // The next request on this connection: closed unanswered.
                let _ = socket.read(&mut chunk).await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_kept_alive_connection_closed_under_the_request_is_asked_again() {
    let (app, connections) = closes_reused_connections().await;
    let (addr, _layer, _stop) = estuary(config(app)).await;
    for n in 1..=3 {
        let mut ws = connect(addr, "/ws/open/")
            .await
            .unwrap_or_else(|status| panic!("handshake {n}: {status}"));
        assert_eq!(greeting(&mut ws).await["user"], Value::Null);
    }
    // The second and third each met a closed connection and asked again.
    assert!(connections.load(Ordering::SeqCst) >= 3);
}
