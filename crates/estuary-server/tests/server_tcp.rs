//! The server over real sockets: limits, slow clients, keepalive, proxies,
//! Unix sockets, handshake details.

use std::sync::Arc;
use std::time::Duration;

use estuary_core::{
    CloseCode, Connect, Consumer, ConsumerError, Context, NoEvent, RateLimit, SlowClientPolicy, WsMessage,
};
use estuary_server::{Router, Server, ServerConfig, TrustedProxies, WsSettings};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// Releases a "slow" handler (see `Probe::receive`).
static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Reports its scope and ending; floods the client on "flood".
struct Probe {
    report: mpsc::UnboundedSender<String>,
}

impl Consumer for Probe {
    type Event = NoEvent;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let client = ctx
            .scope()
            .client()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let _ = self.report.send(format!("client={client}"));
        let mut names: Vec<&str> = ctx.scope().headers().keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        let _ = self.report.send(format!("headers={}", names.join(",")));
        if ctx.scope().subprotocols().iter().any(|p| p == "v2") {
            return Ok(Connect::accept_subprotocol("v2").with_header("x-estuary", "yes"));
        }
        if ctx.scope().query_param("reject").is_some() {
            return Ok(Connect::reject_with(http::StatusCode::UNAUTHORIZED, "no token"));
        }
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        if message.as_text() == Some("slow") {
            // A handler busy until the test releases it, like a long model call.
            RELEASE.notified().await;
            return ctx.send_text("done").await;
        }
        if message.as_text() == Some("flood") {
            let chunk = "y".repeat(16 * 1024);
            loop {
                ctx.send_text(chunk.clone()).await?;
            }
        }
        ctx.send(message).await
    }

    async fn disconnect(&mut self, _ctx: &mut Context, code: CloseCode) {
        let _ = self.report.send(format!("disconnect={code}"));
    }
}

struct Running {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    reports: Arc<Mutex<mpsc::UnboundedReceiver<String>>>,
}

impl Running {
    async fn next_report(&self, prefix: &str) -> String {
        let mut rx = self.reports.lock().await;
        loop {
            let r = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("no report in time")
                .expect("reports ended");
            if r.starts_with(prefix) {
                return r;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(settings: WsSettings, config: ServerConfig) -> Running {
    let (tx, rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .with_settings(settings)
        .websocket("ws/probe/", move || Probe { report: tx.clone() });
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_config(config);
    let addr = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server.serve(router.into_service(), async move { token.cancelled().await }));
    Running {
        addr,
        stop,
        reports: Arc::new(Mutex::new(rx)),
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1013() {
    let mut settings = WsSettings::default();
    settings.session.outbound_capacity = 4;
    settings.session.slow_client = SlowClientPolicy::Disconnect {
        grace: Duration::from_millis(200),
    };
    settings.session.write_timeout = Duration::from_millis(300);
    let server = start(settings, ServerConfig::default()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/probe/", server.addr))
        .await
        .unwrap();
    ws.send(Message::text("flood")).await.unwrap();
    // Never read: kernel buffers fill, then the outbound queue, then the grace runs out.
    assert_eq!(server.next_report("disconnect=").await, "disconnect=1013");
}

#[tokio::test]
async fn unresponsive_peers_are_dropped_by_keepalive() {
    let mut settings = WsSettings::default();
    settings.session.ping_interval = Some(Duration::from_millis(100));
    settings.session.ping_timeout = Duration::from_millis(100);
    let server = start(settings, ServerConfig::default()).await;
    // A raw TCP client that completes the handshake and then never answers pings.
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/probe/", server.addr))
        .await
        .unwrap();
    let raw = ws.into_inner();
    assert_eq!(server.next_report("disconnect=").await, "disconnect=1006");
    drop(raw);
}

#[tokio::test]
async fn rate_limit_closes_with_1008() {
    let mut settings = WsSettings::default();
    settings.session.rate_limit = Some(RateLimit {
        per_second: 0.5,
        burst: 2,
    });
    let server = start(settings, ServerConfig::default()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/probe/", server.addr))
        .await
        .unwrap();
    for _ in 0..5 {
        let _ = ws.send(Message::text("x")).await;
    }
    assert_eq!(server.next_report("disconnect=").await, "disconnect=1008");
}

#[tokio::test]
async fn subprotocol_headers_and_rejection_status() {
    let server = start(WsSettings::default(), ServerConfig::default()).await;
    let mut req = format!("ws://{}/ws/probe/", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "v1, v2".parse().unwrap());
    let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "v2");
    assert_eq!(resp.headers()["x-estuary"], "yes");

    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws/probe/?reject=1", server.addr))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 401);
            assert_eq!(
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).trim(),
                "no token"
            );
        }
        other => panic!("expected an HTTP rejection, got {other}"),
    }
}

/// The scope keeps what a consumer can use (cookies, origin, agent), not
/// the handshake's own headers.
#[tokio::test]
async fn the_scope_keeps_no_handshake_only_headers() {
    let server = start(WsSettings::default(), ServerConfig::default()).await;
    let mut req = format!("ws://{}/ws/probe/", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", "sessionid=abc".parse().unwrap());
    req.headers_mut().insert("user-agent", "test".parse().unwrap());
    let (_ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        server.next_report("headers=").await,
        "headers=cookie,host,user-agent"
    );
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    for (trusted, expected) in [
        ("127.0.0.1", "client=203.0.113.7"),
        ("10.0.0.0/8", "client=127.0.0.1"),
    ] {
        let config = ServerConfig {
            trusted_proxies: TrustedProxies::new([trusted]).unwrap(),
            ..ServerConfig::default()
        };
        let server = start(WsSettings::default(), config).await;
        let mut req = format!("ws://{}/ws/probe/", server.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        let (_ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(
            server.next_report("client=").await,
            expected,
            "trusting {trusted}"
        );
    }
}

#[tokio::test]
async fn echo_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("estuary-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let (tx, _rx) = mpsc::unbounded_channel();
    let router = Router::new().websocket("ws/probe/", move || Probe { report: tx.clone() });
    let server = Server::bind_unix(&path).unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(server.serve(router.into_service(), async move { token.cancelled().await }));
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/ws/probe/", stream)
        .await
        .unwrap();
    ws.send(Message::text("over unix")).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("over unix"));
    stop.cancel();
    let close = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert!(matches!(close, Some(Ok(Message::Close(Some(f)))) if u16::from(f.code) == 1001));
    drop(ws);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[tokio::test]
async fn bad_handshakes_get_http_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(WsSettings::default(), ServerConfig::default()).await;
    let sample_key = "dGhlIHNhbXBsZSBub25jZQ==";
    for (http, key, version, expected) in [
        ("HTTP/1.1", sample_key, "8", "426"),
        // Not base64, not 16 bytes, or padded wrong: a broken client.
        ("HTTP/1.1", "not a key", "13", "400"),
        ("HTTP/1.1", "dGhlIHNhbXBsZSBub25j", "13", "400"),
        ("HTTP/1.1", "dGhlIHNhbXBsZSBub25jZQ", "13", "400"),
        ("HTTP/1.1", "dGhlIHNhbXBsZSBub25jZSE=", "13", "400"),
        // RFC 6455 needs HTTP/1.1 at least.
        ("HTTP/1.0", sample_key, "13", "400"),
        ("HTTP/1.1", sample_key, "13", "101"),
    ] {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let req = format!(
            "GET /ws/probe/ {http}\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-key: {key}\r\nsec-websocket-version: {version}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        let status = head.split_whitespace().nth(1).unwrap_or_default();
        assert_eq!(status, expected, "{http} key {key:?} version {version}: {head}");
        if expected == "101" {
            assert!(
                head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                "RFC 6455 sample accept key: {head}"
            );
        }
    }
    // The consumer's connect ran for the valid handshake only.
    assert_eq!(server.next_report("client=").await, "client=127.0.0.1");
    let mut reports = server.reports.lock().await;
    while let Ok(report) = reports.try_recv() {
        assert!(
            !report.starts_with("client="),
            "connect ran for a rejected handshake"
        );
    }
}

#[tokio::test]
async fn a_client_that_never_sends_its_request_is_dropped_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = start(WsSettings::default(), config).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Half a request line, then silence.
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /ws/probe/ HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("the server never hung up");
    // hyper answers 408 or just closes; either way the connection ends.
    let text = String::from_utf8_lossy(&buf[..n.unwrap_or(0)]).to_string();
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn keepalive_pings_continue_while_a_handler_is_busy() {
    let mut settings = WsSettings::default();
    settings.session.ping_interval = Some(Duration::from_millis(100));
    settings.session.ping_timeout = Duration::from_millis(100);
    let server = start(settings, ServerConfig::default()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/probe/", server.addr))
        .await
        .unwrap();
    ws.send(Message::text("slow")).await.unwrap();
    // The handler is busy until released: pings must still arrive meanwhile.
    let mut pings = 0;
    while pings < 3 {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no ping while the handler is busy")
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    RELEASE.notify_one();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame in time")
        {
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(Message::Text(t))) if t.as_str() == "done" => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // And the connection is still healthy afterwards.
    ws.send(Message::text("echo")).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("no echo") {
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(m)) => {
                assert_eq!(m, Message::text("echo"));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A client frame, masked as RFC 6455 requires of clients.
fn masked_text(text: &str) -> Vec<u8> {
    let mask = [0x5a, 0x17, 0xc3, 0x08];
    let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).expect("a short text")];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

#[tokio::test]
async fn frames_sent_with_the_handshake_request_are_read_first() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let running = start(WsSettings::default(), ServerConfig::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    // Request and frames in one write: the server's HTTP parser reads the
    // frames with the request, before the connection is a WebSocket.
    let mut bytes = format!(
        "GET /ws/probe/ HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        running.addr
    )
    .into_bytes();
    bytes.extend(masked_text("first"));
    bytes.extend(masked_text("second"));
    tcp.write_all(&bytes).await.unwrap();
    // The 101, then the two echoes (unmasked server frames).
    let expected_tail = [&[0x81, 5][..], b"first", &[0x81, 6], b"second"].concat();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(&expected_tail) {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("the echoes in time")
            .unwrap();
        assert!(
            n > 0,
            "connection ended; read so far: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
}
