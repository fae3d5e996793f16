//! `GET /metrics` of the real `estuary serve` process over a Redis the test
//! owns: a scripted session (a chat, a refused origin, a missing route, a
//! member that stops reading, a Redis outage) moves each counter as it
//! should. The scrape is parsed by the Prometheus Python client's own
//! text-format parser (`prometheus_client.parser`, installed by
//! `scripts/install-interop.sh`), and every family must have a help line.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::served::Served;
use common::{Client, Refused};
use estuary_test_support::eventually::poll_async;
use estuary_test_support::{http, redis};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Longest any step may take.
const LIMIT: Duration = Duration::from_secs(30);

/// One sample: the labels, sorted, as `k="v",...`, and the value.
type Samples = BTreeMap<String, BTreeMap<String, f64>>;

/// Parses `text` with `prometheus_client.parser.text_string_to_metric_families`
/// (the Python in `ESTUARY_INTEROP_PYTHON`); fails on a family without a
/// help line. Samples by name, then by their labels.
fn parse(text: &str) -> Samples {
    let python = std::env::var_os("ESTUARY_INTEROP_PYTHON")
        .expect("ESTUARY_INTEROP_PYTHON: run scripts/install-interop.sh");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    assert family.documentation, "no help line for " + family.name
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out.setdefault(s.name, {})[labels] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("write the scrape");
    let output = child.wait_with_output().expect("python ran");
    assert!(
        output.status.success(),
        "the parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from the parser")
}

/// Scrapes and parses `/metrics`.
async fn scrape(server: &Served) -> Samples {
    let response = http::get(server.addr(), "/metrics").await;
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse(body)
}

/// The value of `name{labels}` (0 when absent).
fn value(samples: &Samples, name: &str, labels: &str) -> f64 {
    samples
        .get(name)
        .and_then(|by_labels| by_labels.get(labels))
        .copied()
        .unwrap_or(0.0)
}

/// A handshake to `url` with this `Origin`: the status it was refused with.
async fn refused_origin(url: &str, origin: &str) -> u16 {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("{origin} was let in"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake failed otherwise: {other}"),
    }
}

/// A member with a tiny receive buffer that never reads, in a room another
/// member floods: the server closes it with 1013. Returns its close code.
async fn stalled_member(server: &Served, room: &str) -> Option<u16> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr()).await.unwrap();
    let url = server.url(&format!("/ws/chat/{room}/"));
    let (mut stalled, _) =
        tokio_tungstenite::client_async(&url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let sender = Client::join(&url).await;
    let (mut tx, mut rx) = sender.ws.split();
    // The sender reads the room, or it would be a stalled reader too.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    // 4-byte characters: 4 KB a message, 12 MB in all, more than the
    // kernel buffers of the stalled connection hold.
    let text = "\u{1F30A}".repeat(1000);
    for _ in 0..3000 {
        let frame = json!({"message": text, "username": "flood"}).to_string();
        if tx.send(Message::text(frame)).await.is_err() {
            break;
        }
    }
    let code = tokio::time::timeout(LIMIT, async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the stalled member is closed");
    let _ = tx.close().await;
    reader.abort();
    code
}

#[tokio::test]
#[ignore = "needs the redis-server binary and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn the_metrics_follow_a_scripted_session() {
    let mut redis = redis::RedisServer::start();
    let prefix = redis::unique_prefix();
    let server = Served::start(&[
        "--layer",
        &redis.url(),
        "--redis-prefix",
        &prefix,
        "--push-insecure",
        "--rate-limit",
        "0",
        "--rate-limit-per-ip",
        "0",
        // Open connections' counts are added in at each ping.
        "--ping-interval",
        "1",
    ]);
    let before = scrape(&server).await;
    assert_eq!(value(&before, "estuary_layer_up", r#"backend="redis""#), 1.0);
    // Flow control's time is visible over Redis as in memory.
    for name in [
        "estuary_layer_backlogged_seconds_total",
        "estuary_layer_backlog_episodes_total",
    ] {
        assert!(before[name].contains_key(r#"backend="redis""#), "{name}");
    }
    assert!(value(&before, "process_open_fds", "") > 0.0);
    assert!(value(&before, "process_resident_memory_bytes", "") > 0.0);

    // A chat: one member says something and hears it back, then leaves.
    let url = server.url("/ws/chat/lobby/");
    let mut member = Client::join(&url).await;
    member
        .send_json(&json!({"message": "hello", "username": "ann"}))
        .await;
    let echo = member.recv_type("chat_message").await;
    assert_eq!(echo["message"], "hello");
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    member.ws.close(Some(bye)).await.unwrap();
    assert_eq!(member.recv_close().await, 1000);

    // Refusals: an origin not allowed, a path with no route.
    assert_eq!(refused_origin(&url, "http://evil.example").await, 403);
    let missing = Client::try_connect(&server.url("/ws/nowhere/")).await;
    assert!(matches!(missing, Err(Refused(404))), "{:?}", missing.err());

    // A member that stops reading is closed with 1013.
    assert_eq!(stalled_member(&server, "busy").await, Some(1013));

    let during = poll_async(
        "the chat's counters",
        LIMIT,
        Duration::from_millis(100),
        || async {
            let s = scrape(&server).await;
            let closed_normally = value(&s, "estuary_websocket_closed_total", r#"code="1000""#) >= 1.0;
            let too_slow = value(&s, "estuary_websocket_closed_total", r#"code="1013""#) >= 1.0;
            (closed_normally && too_slow).then_some(s)
        },
    )
    .await;
    let s = &during;
    assert!(value(s, "estuary_websocket_opened_total", "") >= 3.0);
    assert!(value(s, "estuary_websocket_messages_received_total", "") >= 1.0);
    assert!(value(s, "estuary_websocket_messages_sent_total", "") >= 2.0);
    assert!(value(s, "estuary_websocket_sent_bytes_total", "") > 0.0);
    assert!(value(s, "estuary_websocket_received_bytes_total", "") >= 5.0);
    assert_eq!(
        value(s, "estuary_handshakes_refused_total", r#"reason="origin""#),
        1.0
    );
    assert_eq!(
        value(s, "estuary_handshakes_refused_total", r#"reason="route""#),
        1.0
    );
    assert!(
        value(
            s,
            "estuary_http_requests_total",
            r#"kind="websocket",status="101""#
        ) >= 3.0
    );
    assert_eq!(
        value(
            s,
            "estuary_http_requests_total",
            r#"kind="websocket",status="403""#
        ),
        1.0
    );
    assert!(
        value(
            s,
            "estuary_http_request_duration_seconds_count",
            r#"kind="websocket""#
        ) >= 5.0
    );
    assert!(value(s, "estuary_websocket_write_batch_messages_count", "") >= 1.0);
    // No [auth]: every visitor anonymous, counted under "none".
    assert!(
        value(
            s,
            "estuary_auth_total",
            r#"authenticator="none",outcome="anonymous""#
        ) >= 3.0
    );
    assert!(value(s, "estuary_connections", "") >= 1.0);
    assert!(
        value(
            s,
            "estuary_layer_operation_duration_seconds_count",
            r#"backend="redis",operation="group_send""#
        ) >= 1.0
    );
    assert!(
        value(
            s,
            "estuary_layer_operation_duration_seconds_count",
            r#"backend="redis",operation="group_add""#
        ) >= 3.0
    );

    // A Redis outage: the layer reports down, and a send fails.
    let mut watcher = Client::join(&server.url("/ws/chat/outage/")).await;
    redis.stop();
    let down = poll_async(
        "the layer reported down",
        LIMIT,
        Duration::from_millis(100),
        || async {
            let s = scrape(&server).await;
            (value(&s, "estuary_layer_up", r#"backend="redis""#) == 0.0).then_some(s)
        },
    )
    .await;
    assert!(
        value(&down, "estuary_layer_reconnects_total", r#"backend="redis""#) >= 1.0,
        "the outage is counted"
    );
    let failed_before = value(
        &down,
        "estuary_layer_losses_total",
        r#"backend="redis",reason="redis_unreachable""#,
    );
    let posted = http::post_json(
        server.addr(),
        "/api/rooms/outage/messages",
        &json!({"message": "into the void"}).to_string(),
    )
    .await;
    assert!(posted.starts_with("HTTP/1.1 503"), "{posted}");
    let after = scrape(&server).await;
    assert!(
        value(
            &after,
            "estuary_layer_losses_total",
            r#"backend="redis",reason="redis_unreachable""#
        ) > failed_before,
        "a failed send is counted"
    );
    assert_eq!(
        value(
            &after,
            "estuary_http_requests_total",
            r#"kind="http",status="503""#
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "estuary_layer_operation_errors_total",
            r#"backend="redis",operation="group_send""#
        ) >= 1.0
    );
    watcher.assert_no_chat_message().await;

    // The access log has a line per handshake, with its status.
    let log = server.log();
    let access: Vec<&String> = log.iter().filter(|l| l.contains("estuary::access")).collect();
    assert!(
        access
            .iter()
            .any(|l| l.contains("status=403") && l.contains("refused=\"origin\"")),
        "{access:#?}"
    );
    assert!(access.iter().any(|l| l.contains("status=101")), "{access:#?}");
}

/// On the in-memory layer: its own families, and the admin listener
/// (`--metrics HOST:PORT`) serving them while the main port does not.
#[tokio::test]
#[ignore = "needs Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn the_in_memory_layer_on_an_admin_listener() {
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let server = Served::start(&["--metrics", &admin_addr.to_string()]);
    let main = http::get(server.addr(), "/metrics").await;
    assert!(main.starts_with("HTTP/1.1 404"), "{main}");
    let mut member = Client::join(&server.url("/ws/chat/lobby/")).await;
    member
        .send_json(&json!({"message": "hi", "username": "bo"}))
        .await;
    member.recv_type("chat_message").await;
    let response = http::get(admin_addr, "/metrics").await;
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let s = parse(body);
    assert_eq!(value(&s, "estuary_layer_up", r#"backend="memory""#), 1.0);
    assert_eq!(value(&s, "estuary_websocket_connections", ""), 1.0);
    for name in [
        "estuary_layer_backlogged_seconds_total",
        "estuary_layer_backlog_episodes_total",
        "estuary_layer_held_bytes",
    ] {
        assert!(s.contains_key(name), "{name}");
    }
    assert!(s["estuary_layer_losses_total"].contains_key(r#"backend="memory",reason="channel_full""#));
}
