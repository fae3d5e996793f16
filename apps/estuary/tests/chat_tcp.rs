//! The chat protocol over real TCP with a real WebSocket client.

mod common;

use estuary_test_support::http;

use common::{Client, TestServer, chat_protocol};
use estuary_cli::config::Config;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn two_clients_in_a_room_receive_in_order_and_other_rooms_do_not() {
    let server = TestServer::start().await;
    chat_protocol::two_clients_in_a_room_receive_in_order_and_other_rooms_do_not(&server.target()).await;
}

#[tokio::test]
async fn join_and_leave_events_for_named_members() {
    let server = TestServer::start().await;
    chat_protocol::join_and_leave_events_for_named_members(&server.target()).await;
}

#[tokio::test]
async fn default_username_is_anonymous() {
    let server = TestServer::start().await;
    chat_protocol::default_username_is_anonymous(&server.target()).await;
}

#[tokio::test]
async fn bad_input_gets_an_error_frame_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    chat_protocol::bad_input_gets_an_error_frame_and_the_connection_stays_open(&server.target()).await;
}

#[tokio::test]
async fn oversize_message_closes_with_1009() {
    let server = TestServer::start().await;
    chat_protocol::oversize_message_closes_with_1009(&server.target()).await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = TestServer::start().await;
    chat_protocol::invalid_utf8_closes_with_1007(&server.target()).await;
}

#[tokio::test]
async fn flooding_past_the_rate_limit_closes_with_1008() {
    let mut config = Config::default();
    config.websocket.rate_limit = 1.0;
    config.websocket.rate_burst = 3;
    let server = TestServer::with_config(config).await;
    let mut c = Client::join(&server.url("/ws/chat/flood/")).await;
    for i in 0..20 {
        if c.ws
            .send(Message::text(json!({"message": format!("{i}")}).to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(c.recv_close().await, 1008);
}

#[tokio::test]
async fn one_bad_client_does_not_affect_another() {
    let server = TestServer::start().await;
    chat_protocol::one_bad_client_does_not_affect_another(&server.target()).await;
}

#[tokio::test]
async fn unknown_paths_and_bad_rooms_are_refused_before_upgrade() {
    let server = TestServer::start().await;
    chat_protocol::unknown_paths_and_bad_rooms_are_refused_before_upgrade(&server.target()).await;
}

#[tokio::test]
async fn cross_site_origins_are_refused() {
    let server = TestServer::start().await;
    chat_protocol::cross_site_origins_are_refused(&server.target()).await;
}

#[tokio::test]
async fn push_api_reaches_a_room() {
    let server = TestServer::start().await;
    let mut c = Client::join(&server.url("/ws/chat/news/")).await;
    let status = http_post(
        server.addr,
        "/api/rooms/news/messages",
        r#"{"message": "from HTTP"}"#,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    let m = c.recv_json().await;
    assert_eq!(
        (m["message"].as_str(), m["username"].as_str()),
        (Some("from HTTP"), Some("Server"))
    );
    let status = http_post(
        server.addr,
        "/api/groups/chat_news/send",
        r#"{"type": "chat.message", "message": "raw", "username": "django"}"#,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    assert_eq!(c.recv_json().await["username"], "django");
    let status = http_post(server.addr, "/api/groups/chat_news/send", r#"[1]"#).await;
    assert!(status.starts_with("HTTP/1.1 422"), "{status}");
}

/// A chat message from Django code carries no id or time: the server fills
/// them in once for the room (the frame is rendered once per group message),
/// so every member sees the same frame, byte for byte.
#[tokio::test]
async fn every_member_gets_the_same_frame_for_a_django_message() {
    let server = TestServer::start().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Client::join(&server.url("/ws/chat/same/")).await);
    }
    let status = http_post(
        server.addr,
        "/api/groups/chat_same/send",
        r#"{"type": "chat.message", "message": "caf\u00e9 \"quoted\"", "username": "django"}"#,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    let mut frames = Vec::new();
    for member in members.iter_mut() {
        match member.recv().await {
            Message::Text(text) => frames.push(text.as_str().to_owned()),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
    assert_eq!(frames[0], frames[1]);
    assert_eq!(frames[0], frames[2]);
    let frame: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
    assert_eq!(frame["message"], "caf\u{e9} \"quoted\"");
    assert_eq!(
        frame["id"].as_str().map(str::len),
        Some(32),
        "an id was filled in"
    );
    assert!(
        frame["ts"].as_i64().is_some_and(|ts| ts > 0),
        "a time was filled in"
    );
}

#[tokio::test]
async fn push_api_checks_token_and_content_type() {
    let config = Config {
        push_token: Some("s3cret".into()),
        ..Config::default()
    };
    let server = TestServer::with_config(config).await;
    let body = r#"{"message": "x"}"#;
    let json = "content-type: application/json\r\n";
    let status = http_request(server.addr, "/api/rooms/a/messages", json, body).await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    let auth = "content-type: application/json\r\nauthorization: Bearer s3cret\r\n";
    let status = http_request(server.addr, "/api/rooms/a/messages", auth, body).await;
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    let form = "content-type: text/plain\r\nauthorization: Bearer s3cret\r\n";
    let status = http_request(server.addr, "/api/rooms/a/messages", form, body).await;
    assert!(
        status.starts_with("HTTP/1.1 415"),
        "a cross-site simple POST is refused: {status}"
    );
    assert_eq!(server.get_status("/api/rooms").await, 200, "reads need no token");
}

/// A POST with JSON; returns the status line.
async fn http_post(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    http_request(addr, path, "content-type: application/json\r\n", body).await
}

/// A POST with extra header lines; returns the status line.
async fn http_request(addr: std::net::SocketAddr, path: &str, headers: &str, body: &str) -> String {
    http::post(addr, path, headers, body)
        .await
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn pages_forbid_framing_and_foreign_content() {
    let server = TestServer::start().await;
    for page in ["/chat/", "/chat/lobby/"] {
        let response = server.get(page).await.to_ascii_lowercase();
        assert!(response.starts_with("http/1.1 200"), "{page}: {response}");
        assert!(response.contains("x-frame-options: deny"), "{page}");
        assert!(response.contains("frame-ancestors 'none'"), "{page}");
        assert!(response.contains("script-src 'self'"), "{page}");
        assert!(response.contains("referrer-policy: same-origin"), "{page}");
    }
    let script = server.get("/static/chat.js").await.to_ascii_lowercase();
    assert!(script.contains("x-content-type-options: nosniff"));
    assert!(
        !script.contains("content-security-policy"),
        "scripts need no policy of their own"
    );
    server.stop().await;
}

/// An idle connection's memory is mostly the future of its session: its
/// size is the largest state it can be in, so states that are rare (a
/// handler that waits, a blocked write, a ping, closing) are boxed instead.
/// About 2.5 KB when this test was written (7.9 KB before): a guard, not a
/// target.
#[tokio::test]
async fn a_chat_connection_future_stays_small() {
    use estuary::server::{AnyTransport, MemoryTransport};
    use estuary::{ChannelLayerHandle, Scope, Session, SessionConfig};

    let layer = ChannelLayerHandle::default();
    let shared = estuary_cli::chat::ChatShared {
        rooms: estuary_cli::rooms::Rooms::default(),
        announcer: estuary_cli::announce::Announcer::new(layer.clone()),
        online: estuary_cli::online::Online::new(layer.clone(), std::time::Duration::from_secs(3)),
        recent_history: 50,
    };
    let scope = Scope::builder("/ws/chat/lobby/").param("room", "lobby").build();
    let (session, _accept) = Session::open(
        estuary_cli::chat::ChatConsumer::new(shared),
        scope,
        layer,
        SessionConfig::default(),
    )
    .await
    .expect("accepted");
    let (transport, _client) = MemoryTransport::pair();
    let running = session.run(AnyTransport::Memory(transport), Default::default());
    let size = std::mem::size_of_val(&running);
    println!("a chat connection's session future: {size} bytes");
    assert!(size <= 3 * 1024, "the session future grew to {size} bytes");
}
