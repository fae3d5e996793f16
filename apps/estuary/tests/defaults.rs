//! Safe defaults of `estuary serve`: only the allowed hosts are answered
//! (DNS rebinding), the origin check trusts that list and not the request's
//! `Host`, and the push API is closed until the operator opens it.

use estuary_test_support::http;

mod common;

use common::{Client, TestServer, WAIT};
use estuary_cli::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` (request line and headers, no final blank line) and returns
/// the status code of the answer.
async fn status_of(addr: std::net::SocketAddr, head: &str) -> u16 {
    status_with_body(addr, head, "").await
}

async fn status_with_body(addr: std::net::SocketAddr, head: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nconnection: close\r\n\r\n{body}").as_bytes())
        .await
        .unwrap();
    // Read the head only: a 101 leaves the connection open.
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

const UPGRADE: &str = "upgrade: websocket\r\nconnection: Upgrade\r\n\
    sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13";

/// DNS rebinding: a page on rebind.test, whose name now points at 127.0.0.1,
/// sends requests with its own name as `Host` and as `Origin`. Before the
/// check, the same-host origin rule trusted that `Host`: the socket opened.
#[tokio::test]
async fn a_rebinding_page_is_refused_on_every_route() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let evil = format!("host: rebind.test:{port}\r\norigin: http://rebind.test:{port}");
    let handshake = format!("GET /ws/chat/lobby/ HTTP/1.1\r\n{evil}\r\n{UPGRADE}");
    assert_eq!(status_of(server.addr, &handshake).await, 400);
    let page = format!("GET /chat/ HTTP/1.1\r\n{evil}");
    assert_eq!(status_of(server.addr, &page).await, 400);
    let push = format!(
        "POST /api/rooms/lobby/messages HTTP/1.1\r\n{evil}\r\ncontent-type: application/json\r\ncontent-length: 17"
    );
    assert_eq!(
        status_with_body(server.addr, &push, r#"{"message": "x"}"#).await,
        400
    );
    // No Host at all (HTTP/1.1 requires one) is refused too.
    assert_eq!(status_of(server.addr, "GET /chat/ HTTP/1.1").await, 400);

    // The loopback names are answered, on this port or through a proxy's.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]".into(),
    ] {
        let page = format!("GET /chat/ HTTP/1.1\r\nhost: {host}");
        assert_eq!(status_of(server.addr, &page).await, 200, "{host}");
    }
    // And a healthy client is unaffected.
    Client::join(&server.url("/ws/chat/lobby/")).await;
}

/// The origin check uses the allowed hosts, not the request's `Host`: an
/// origin on an allowed host passes on any port, another is refused even
/// when it equals `Host`.
#[tokio::test]
async fn origins_are_checked_against_the_allowed_hosts() {
    let config = Config {
        allowed_hosts: vec!["127.0.0.1".into(), "chat.example.com".into()],
        ..Config::default()
    };
    let server = TestServer::with_config(config).await;
    let port = server.addr.port();
    let handshake = |host: &str, origin: &str| {
        format!("GET /ws/chat/lobby/ HTTP/1.1\r\nhost: {host}\r\norigin: {origin}\r\n{UPGRADE}")
    };
    let local = format!("127.0.0.1:{port}");
    for (host, origin, expected) in [
        (local.as_str(), "https://chat.example.com", 101),
        (local.as_str(), "http://127.0.0.1:3000", 101),
        ("chat.example.com", "https://chat.example.com", 101),
        ("chat.example.com", "https://evil.example", 403),
        (local.as_str(), "http://localhost:8000", 403),
    ] {
        let status = status_of(server.addr, &handshake(host, origin)).await;
        assert_eq!(status, expected, "Host {host}, Origin {origin}");
    }
}

#[tokio::test]
async fn the_push_api_is_closed_by_default() {
    let server = TestServer::with_config(Config::default()).await;
    let mut member = Client::join(&server.url("/ws/chat/news/")).await;
    let answer = http::post_json(server.addr, "/api/rooms/news/messages", r#"{"message": "x"}"#).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("push_token"),
        "the answer says what to set: {answer}"
    );
    let answer = http::post_json(
        server.addr,
        "/api/groups/chat_news/send",
        r#"{"type": "chat.message", "message": "x"}"#,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let answer = http::post_json(server.addr, "/api/channels/specific.x!y/send", r#"{"type": "x"}"#).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // Reads stay open, and nothing reached the room: the member's next
    // message is its own.
    assert_eq!(server.get_status("/api/rooms").await, 200);
    assert_eq!(server.get_status("/healthz").await, 200);
    member
        .send_json(&serde_json::json!({"message": "mine", "username": "m"}))
        .await;
    assert_eq!(member.recv_type("chat_message").await["message"], "mine");
}

#[tokio::test]
async fn a_wrong_token_gets_401_with_a_challenge() {
    let config = Config {
        push_token: Some("s3cret".into()),
        push_insecure: true,
        ..Config::default()
    };
    let server = TestServer::with_config(config).await;
    let answer = http::post_json(server.addr, "/api/rooms/a/messages", r#"{"message": "x"}"#).await;
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "a token wins over push_insecure: {answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("www-authenticate: bearer"),
        "{answer}"
    );
    let answer = http::post(
        server.addr,
        "/api/rooms/a/messages",
        "content-type: application/json\r\nauthorization: Bearer s3cre\r\n",
        r#"{"message": "x"}"#,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[test]
fn a_public_bind_needs_allowed_hosts() {
    use estuary_cli::config::ServeArgs;
    for bind in ["0.0.0.0:8000", "192.0.2.1:8000", "unix:/tmp/estuary-test.sock"] {
        let args = ServeArgs::try_parse_from(["--bind", bind]).unwrap();
        let error = format!("{:#}", Config::from_layers(args.layers()).unwrap_err());
        assert!(error.contains("allowed_hosts"), "{bind}: {error}");
        let args =
            ServeArgs::try_parse_from(["--bind", bind, "--allowed-hosts", "chat.example.com"]).unwrap();
        assert!(Config::from_layers(args.layers()).is_ok(), "{bind}");
    }
}

/// With the channel layer unreachable, a push is refused with 503 (and
/// `/healthz` says so), never accepted and lost.
#[tokio::test]
async fn a_push_while_the_layer_is_down_gets_503() {
    let mut config = Config {
        push_insecure: true,
        ..Config::default()
    };
    // A port where nothing listens.
    config.layer.redis = vec![format!("redis://127.0.0.1:{}/0", free_port())];
    let server = TestServer::with_config(config).await;
    let answer = http::post_json(
        server.addr,
        "/api/groups/chat_x/send",
        r#"{"type": "chat.message", "message": "x"}"#,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(server.get_status("/healthz").await, 503);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// RFC 9112 3.2: two `Host` headers are refused, whichever comes first and
/// even when both are allowed; the host check read the first one only, so
/// a request meaning another host to whatever reads the last was upgraded.
#[tokio::test]
async fn two_host_headers_are_refused() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let valid = format!("host: 127.0.0.1:{port}");
    for hosts in [
        format!("{valid}\r\nhost: evil.test"),
        format!("{valid}\r\n{valid}"),
        format!("host: evil.test\r\n{valid}"),
    ] {
        let handshake = format!("GET /ws/chat/lobby/ HTTP/1.1\r\n{hosts}\r\n{UPGRADE}");
        assert_eq!(status_of(server.addr, &handshake).await, 400, "{hosts:?}");
        let page = format!("GET /chat/ HTTP/1.1\r\n{hosts}");
        assert_eq!(status_of(server.addr, &page).await, 400, "{hosts:?}");
    }
    // The same request with one Host is served.
    let handshake = format!("GET /ws/chat/lobby/ HTTP/1.1\r\n{valid}\r\n{UPGRADE}");
    assert_eq!(status_of(server.addr, &handshake).await, 101);

    // With the host check off ("*"), a missing or doubled Host is still 400.
    let any = TestServer::with_config(Config {
        allowed_hosts: vec!["*".into()],
        push_insecure: true,
        ..Config::default()
    })
    .await;
    assert_eq!(status_of(any.addr, "GET /chat/ HTTP/1.1").await, 400);
    assert_eq!(
        status_of(any.addr, "GET /chat/ HTTP/1.1\r\nhost: a.test\r\nhost: b.test").await,
        400
    );
    assert_eq!(
        status_of(any.addr, "GET /chat/ HTTP/1.1\r\nhost: a.test").await,
        200
    );
    // HTTP/1.0 has no Host requirement.
    assert_eq!(status_of(any.addr, "GET /chat/ HTTP/1.0").await, 200);
}

/// A burst of connects while the accept loop is busy lands in the listen
/// backlog. With the standard library's 128, the 129th SYN was dropped and
/// its client waited a second to retry; the default is now 4096 (and
/// `server.listen_backlog` sets it). The server here listens but does not
/// accept yet, so the backlog alone decides who completes the TCP handshake.
#[tokio::test]
async fn a_burst_of_connects_fits_the_listen_backlog() {
    const BURST: usize = 600;
    let config = Config {
        bind: "127.0.0.1:0".into(),
        ..Config::default()
    };
    assert_eq!(config.server.listen_backlog, 4096);
    let server = estuary_cli::serve::listen(&config).expect("a free port");
    let addr = server.local_addr().unwrap();
    let connects = (0..BURST).map(|_| tokio::time::timeout(WAIT, TcpStream::connect(addr)));
    let results = futures_util::future::join_all(connects).await;
    let connected: Vec<TcpStream> = results.into_iter().filter_map(|r| r.ok()?.ok()).collect();
    assert_eq!(
        connected.len(),
        BURST,
        "connects that completed without an accept"
    );
    drop(server);
}
