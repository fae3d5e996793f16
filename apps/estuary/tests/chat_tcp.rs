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
/// target. 3,016 bytes before the per-connection metrics tally (48 bytes
/// of counts, folded into `SessionStats` at each ping) took it to 3,120;
/// 2,440 with the own codec; 1,640 once `run` stopped holding its
/// arguments twice and the usual delivery and write kept no future.
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
    assert!(size <= 1024 + 768, "the session future grew to {size} bytes");
}

// ---- presence and history (docs/CHAT.md, "Who is here" and "Catching up") ----

/// The chat application with a short leave delay, so that leaves come
/// quickly, and a small history.
async fn presence_server(leave_delay_ms: u64, history_size: usize) -> TestServer {
    let mut config = Config {
        push_insecure: true,
        ..Config::default()
    };
    config.chat.leave_delay_ms = leave_delay_ms;
    config.history.size = history_size;
    TestServer::with_config(config).await
}

/// The greeting, checked to be the first frame.
async fn greeting(client: &mut Client) -> serde_json::Value {
    let hello = client.recv_json().await;
    assert_eq!(hello["type"], "connection_established", "{hello}");
    hello
}

fn position(frame: &serde_json::Value) -> (String, u64) {
    let p = &frame["position"];
    (
        p["epoch"]
            .as_str()
            .unwrap_or_else(|| panic!("no position in {frame}"))
            .to_owned(),
        p["offset"].as_u64().unwrap(),
    )
}

fn since((epoch, offset): &(String, u64)) -> String {
    format!("since={epoch}:{offset}")
}

/// A member in two tabs is one presence: announced once when the first
/// arrives, once when the last leaves (after the leave delay); a tab that
/// reconnects within the delay is announced neither leaving nor joining.
#[tokio::test]
async fn two_tabs_are_one_member_and_a_reconnect_is_not_announced() {
    let server = presence_server(400, 100).await;
    let mut watcher = Client::join(&server.url("/ws/chat/tabs/")).await;
    let tab1 = Client::join(&server.url("/ws/chat/tabs/?username=ann")).await;
    let join = watcher.recv_json().await;
    assert_eq!(
        (join["type"].as_str(), join["username"].as_str()),
        (Some("user_join"), Some("ann")),
        "{join}"
    );
    let tab2 = Client::join(&server.url("/ws/chat/tabs/?username=ann")).await;
    tab1.close().await;
    // The page reloads: away for less than the delay.
    let tab1 = Client::join(&server.url("/ws/chat/tabs/?username=ann")).await;
    watcher.assert_no_message().await;
    tab1.close().await;
    tab2.close().await;
    let leave = watcher.recv_json().await;
    assert_eq!(
        (leave["type"].as_str(), leave["username"].as_str()),
        (Some("user_leave"), Some("ann")),
        "{leave}"
    );
    watcher.assert_no_message().await;
}

/// A guest that gives a name in its messages (as a page written for the
/// tutorial does) is announced under it, and again when it changes it.
#[tokio::test]
async fn a_name_given_after_joining_is_announced() {
    let server = presence_server(0, 100).await;
    let mut watcher = Client::join(&server.url("/ws/chat/names/")).await;
    let mut guest = Client::join(&server.url("/ws/chat/names/")).await;
    guest
        .send_json(&json!({"message": "hi", "username": "zoe"}))
        .await;
    let join = watcher.recv_type("user_join").await;
    assert_eq!(join["username"], "zoe", "{join}");
    guest
        .send_json(&json!({"message": "hi", "username": "zed"}))
        .await;
    let leave = watcher.recv_type("user_leave").await;
    assert_eq!(leave["username"], "zoe", "{leave}");
    let join = watcher.recv_type("user_join").await;
    assert_eq!(join["username"], "zed", "{join}");
    // Who is online, for a client that asks.
    let mut page = Client::connect(&server.url("/ws/chat/names/?presence=1&username=amy")).await;
    greeting(&mut page).await;
    // After the room's recent messages.
    let list = page.recv_type("presence").await;
    let names: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["amy", "zed"], "{list}");
    assert_eq!(list["count"], 2);
    watcher.recv_type("user_join").await;
    watcher.assert_no_chat_message().await;
}

/// The greeting carries the room's position, each message its own, one
/// after the other in one epoch.
#[tokio::test]
async fn the_greeting_and_every_message_carry_their_position() {
    let server = presence_server(0, 100).await;
    let mut c = Client::connect(&server.url("/ws/chat/positions/")).await;
    let hello = greeting(&mut c).await;
    let (epoch, start) = position(&hello);
    assert!(hello.get("recovered").is_none(), "{hello}");
    for i in 1..=3 {
        c.send_json(&json!({"message": format!("m{i}")})).await;
        let m = c.recv_type("chat_message").await;
        assert_eq!(position(&m), (epoch.clone(), start + i), "{m}");
    }
}

/// A client that comes back with the position of the last message it got
/// receives what was sent meanwhile, marked recovered, in order, then the
/// live messages: none missing, none twice.
#[tokio::test]
async fn a_client_back_with_its_position_recovers_what_it_missed() {
    let server = presence_server(0, 100).await;
    let url = server.url("/ws/chat/recover/");
    let mut away = Client::join(&url).await;
    let mut talker = Client::join(&url).await;
    talker.send_json(&json!({"message": "seen"})).await;
    let seen = position(&away.recv_type("chat_message").await);
    away.close().await;
    for i in 0..5 {
        talker.send_json(&json!({"message": format!("missed {i}")})).await;
    }
    let mut last = None;
    for _ in 0..6 {
        last = Some(talker.recv_type("chat_message").await);
    }
    let last = position(&last.unwrap());

    let mut back = Client::connect(&server.url(&format!("/ws/chat/recover/?{}", since(&seen)))).await;
    let hello = greeting(&mut back).await;
    assert_eq!(hello["recovered"], true, "{hello}");
    assert_eq!(position(&hello), last, "the greeting has the room's position");
    for i in 0..5 {
        let m = back.recv_json().await;
        assert_eq!(
            (
                m["type"].as_str(),
                m["message"].as_str(),
                m["recovered"].as_bool()
            ),
            (
                Some("chat_message"),
                Some(format!("missed {i}").as_str()),
                Some(true)
            ),
            "{m}"
        );
        assert_eq!(position(&m), (seen.0.clone(), seen.1 + 1 + i as u64));
        assert!(m["id"].is_string() && m["ts"].is_i64(), "{m}");
    }
    talker.send_json(&json!({"message": "live"})).await;
    let m = back.recv_json().await;
    assert_eq!(
        (m["message"].as_str(), m.get("recovered")),
        (Some("live"), None),
        "{m}"
    );
    back.assert_no_message().await;

    // Back again with the latest position: nothing to recover.
    let latest = position(&m);
    back.close().await;
    let mut again = Client::connect(&server.url(&format!("/ws/chat/recover/?{}", since(&latest)))).await;
    let hello = greeting(&mut again).await;
    assert_eq!(
        (hello["recovered"].as_bool(), position(&hello)),
        (Some(true), latest)
    );
    again.assert_no_message().await;
}

/// When the missed messages are no longer kept, or the position is from
/// another epoch or no position at all, the client is told it cannot
/// recover, then gets the recent history.
#[tokio::test]
async fn a_client_that_cannot_recover_is_told_so() {
    let server = presence_server(0, 3).await;
    let url = server.url("/ws/chat/lost/");
    let mut talker = Client::join(&url).await;
    let start = position(&greeting(&mut Client::connect(&url).await).await);
    for i in 0..6 {
        talker.send_json(&json!({"message": format!("m{i}")})).await;
        talker.recv_type("chat_message").await;
    }
    let cases = [
        (since(&start), "too_old"),
        ("since=ZZZZZZZZ:2".to_owned(), "epoch_changed"),
        ("since=nonsense".to_owned(), "invalid_position"),
    ];
    for (query, reason) in cases {
        let mut c = Client::connect(&server.url(&format!("/ws/chat/lost/?{query}"))).await;
        let hello = greeting(&mut c).await;
        assert_eq!(hello["recovered"], false, "{query}: {hello}");
        let failed = c.recv_json().await;
        assert_eq!(
            (failed["type"].as_str(), failed["reason"].as_str()),
            (Some("recovery_failed"), Some(reason)),
            "{query}: {failed}"
        );
        assert!(failed["message"].is_string());
        // The three messages the room keeps, as recent history.
        for i in 3..6 {
            let m = c.recv_json().await;
            assert_eq!(
                (m["message"].as_str(), m["history"].as_bool()),
                (Some(format!("m{i}").as_str()), Some(true)),
                "{m}"
            );
        }
        c.assert_no_message().await;
    }
}

/// A page that loads (no position) gets the room's recent messages as
/// chat messages marked `"history": true`, which a tutorial page shows as
/// it shows any message; an empty room sends none.
#[tokio::test]
async fn a_joining_page_gets_the_rooms_recent_history() {
    let server = presence_server(0, 100).await;
    let mut empty = Client::join(&server.url("/ws/chat/recent/")).await;
    empty.assert_no_message().await;
    for i in 0..3 {
        empty
            .send_json(&json!({"message": format!("m{i}"), "username": "ann"}))
            .await;
        empty.recv_type("chat_message").await;
    }
    let mut page = Client::connect(&server.url("/ws/chat/recent/")).await;
    let hello = greeting(&mut page).await;
    // Ann's `user_join` comes from the layer's presence, whenever its
    // change reaches the room: before, between or after the history.
    for i in 0..3u64 {
        let m = loop {
            let m = page.recv_json().await;
            if !matches!(m["type"].as_str(), Some("user_join" | "presence")) {
                break m;
            }
        };
        assert_eq!(
            (m["type"].as_str(), m["message"].as_str(), m["username"].as_str()),
            (Some("chat_message"), Some(format!("m{i}").as_str()), Some("ann")),
            "{m}"
        );
        assert_eq!(m["history"], true, "{m}");
        assert!(m["id"].is_string() && m["ts"].is_i64(), "{m}");
        assert_eq!(position(&m).1, i + 1);
    }
    assert_eq!(position(&hello).1, 3, "live messages follow the history");
    page.assert_no_chat_message().await;
}

/// `GET /api/rooms` and `GET /api/rooms/{room}/presence` count from the
/// layer's presence: a member in two tabs is one user with two connections.
#[tokio::test]
async fn the_room_api_counts_from_presence() {
    let server = presence_server(0, 100).await;
    let mut tabs = Vec::new();
    for _ in 0..2 {
        tabs.push(Client::join(&server.url("/ws/chat/counted/?username=ann")).await);
    }
    let _anonymous = Client::join(&server.url("/ws/chat/counted/")).await;
    let _elsewhere = Client::join(&server.url("/ws/chat/other/")).await;
    let body = |answer: String| -> serde_json::Value {
        serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap()
    };
    assert_eq!(
        body(server.get("/api/rooms").await),
        json!({"rooms": [{"room": "counted", "members": 3}, {"room": "other", "members": 1}]})
    );
    assert_eq!(
        body(server.get("/api/rooms/counted/presence").await),
        json!({"room": "counted", "members": 3, "online": 1, "users": [{"username": "ann", "connections": 2}]})
    );
    assert_eq!(
        body(server.get("/api/rooms/empty/presence").await),
        json!({"room": "empty", "members": 0, "online": 0, "users": []})
    );
    assert_eq!(server.get_status("/api/rooms/a.b/presence").await, 404);
}

/// A room name that is none gets a page (404) with a way back to the
/// picker, and the pages' icon is served (no 404 for `/favicon.ico`).
#[tokio::test]
async fn a_bad_room_is_a_page_with_a_way_back_and_the_icon_is_served() {
    let server = TestServer::start().await;
    for path in ["/chat/a.b/", "/chat/a.b"] {
        let page = server.get(path).await;
        assert!(page.starts_with("HTTP/1.1 404"), "{path}: {page}");
        let lower = page.to_ascii_lowercase();
        assert!(lower.contains("content-type: text/html"), "{page}");
        assert!(page.contains("href=\"/chat/\""), "a way back: {page}");
    }
    for path in ["/favicon.ico", "/static/favicon.svg"] {
        let icon = server.get(path).await;
        assert!(icon.starts_with("HTTP/1.1 200"), "{path}: {icon}");
        assert!(
            icon.to_ascii_lowercase().contains("content-type: image/svg+xml"),
            "{icon}"
        );
    }
    for page in ["/chat/", "/chat/lobby/"] {
        assert!(
            server.get(page).await.contains("/static/favicon.svg"),
            "{page} names its icon"
        );
    }
}
