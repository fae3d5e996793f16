//! The chat protocol (docs/CHAT.md) as a suite any server can be put to: the
//! built-in chat application (`chat_tcp.rs`) and a chat served by a Django
//! worker through the relay run the same checks.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::Client;

/// The next frame that is not about who is present (`user_join`,
/// `user_leave`, `presence`): a server may announce a member who names
/// itself in its messages (a tutorial-style server sends none of these
/// for a member without `?username=`).
pub async fn recv_chat(client: &mut Client) -> serde_json::Value {
    loop {
        let frame = client.recv_json().await;
        if !matches!(
            frame["type"].as_str(),
            Some("user_join" | "user_leave" | "presence")
        ) {
            return frame;
        }
    }
}

/// Where a chat is served: its address and how its URLs are made.
pub struct ChatTarget {
    /// The server's address (for `Origin` checks).
    pub addr: std::net::SocketAddr,
}

impl ChatTarget {
    /// The `ws://` URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

pub async fn two_clients_in_a_room_receive_in_order_and_other_rooms_do_not(target: &ChatTarget) {
    let mut alice = Client::join(&target.url("/ws/chat/lobby/")).await;
    let mut bob = Client::join(&target.url("/ws/chat/lobby")).await;
    let mut carol = Client::join(&target.url("/ws/chat/kitchen/")).await;

    for i in 0..5 {
        alice
            .send_json(&json!({"message": format!("m{i}"), "username": "alice"}))
            .await;
    }
    for client in [&mut alice, &mut bob] {
        for i in 0..5 {
            let m = recv_chat(client).await;
            assert_eq!(m["type"], "chat_message");
            assert_eq!(m["message"], format!("m{i}"));
            assert_eq!(m["username"], "alice");
            assert!(m["id"].is_string() && m["ts"].is_i64(), "{m}");
        }
    }
    carol.assert_no_message().await;
}

pub async fn join_and_leave_events_for_named_members(target: &ChatTarget) {
    let mut watcher = Client::join(&target.url("/ws/chat/presence/")).await;
    let dave = Client::join(&target.url("/ws/chat/presence/?username=dave")).await;
    assert_eq!(
        watcher.recv_json().await,
        json!({"type": "user_join", "username": "dave", "message": "dave joined the room"})
    );
    dave.close().await;
    assert_eq!(
        watcher.recv_json().await,
        json!({"type": "user_leave", "username": "dave", "message": "dave left the room"})
    );
    // Anonymous members come and go silently.
    let anon = Client::join(&target.url("/ws/chat/presence/")).await;
    anon.close().await;
    watcher.assert_no_message().await;
}

pub async fn default_username_is_anonymous(target: &ChatTarget) {
    let mut c = Client::join(&target.url("/ws/chat/anon/")).await;
    c.send_json(&json!({"message": "  hi  ", "username": ""})).await;
    let m = c.recv_json().await;
    assert_eq!(
        (m["message"].as_str(), m["username"].as_str()),
        (Some("hi"), Some("Anonymous"))
    );
    c.send_json(&json!({"message": "x", "extra": [1, 2]})).await;
    assert_eq!(c.recv_json().await["username"], "Anonymous");
}

pub async fn bad_input_gets_an_error_frame_and_the_connection_stays_open(target: &ChatTarget) {
    let mut c = Client::join(&target.url("/ws/chat/bad/")).await;
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "Invalid JSON format"),
        ("[1, 2]".into(), "Invalid JSON format"),
        ("\"text\"".into(), "Invalid JSON format"),
        ("{}".into(), "Invalid message"),
        (json!({"message": 5}).to_string(), "Invalid message"),
        (json!({"message": ""}).to_string(), "Invalid message"),
        (json!({"message": "   "}).to_string(), "Invalid message"),
        (
            json!({"message": "x".repeat(1001)}).to_string(),
            "Invalid message",
        ),
        (
            json!({"message": "ok", "username": "u".repeat(51)}).to_string(),
            "Invalid message",
        ),
    ];
    for (input, expected) in cases {
        c.send_text(&input).await;
        assert_eq!(
            c.recv_json().await,
            json!({"type": "error", "message": expected}),
            "input: {input}"
        );
    }
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let e = c.recv_json().await;
    assert_eq!(e["type"], "error");
    // Exactly 1000 characters is allowed, and the connection still works.
    c.send_json(&json!({"message": "é".repeat(1000)})).await;
    assert_eq!(c.recv_json().await["type"], "chat_message");
}

pub async fn oversize_message_closes_with_1009(target: &ChatTarget) {
    let mut c = Client::join(&target.url("/ws/chat/big/")).await;
    let huge = json!({"message": "x".repeat(70 * 1024)}).to_string();
    let _ = c.ws.send(Message::text(huge)).await;
    assert_eq!(c.recv_close().await, 1009);
}

pub async fn invalid_utf8_closes_with_1007(target: &ChatTarget) {
    let mut c = Client::join(&target.url("/ws/chat/utf/")).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    c.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(c.recv_close().await, 1007);
}

pub async fn one_bad_client_does_not_affect_another(target: &ChatTarget) {
    let mut good = Client::join(&target.url("/ws/chat/common/")).await;
    let mut bad = Client::join(&target.url("/ws/chat/common/")).await;
    let frame = Frame::message(vec![0xc3, 0x28], OpCode::Data(Data::Text), true);
    bad.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(bad.recv_close().await, 1007);
    good.send_json(&json!({"message": "still fine"})).await;
    assert_eq!(good.recv_json().await["message"], "still fine");
}

pub async fn unknown_paths_and_bad_rooms_are_refused_before_upgrade(target: &ChatTarget) {
    assert_eq!(
        Client::try_connect(&target.url("/ws/nowhere/"))
            .await
            .err()
            .map(|r| r.0),
        Some(404)
    );
    assert_eq!(
        Client::try_connect(&target.url("/ws/chat/"))
            .await
            .err()
            .map(|r| r.0),
        Some(404)
    );
    assert_eq!(
        Client::try_connect(&target.url("/ws/chat/a.b/"))
            .await
            .err()
            .map(|r| r.0),
        Some(403)
    );
    let long = "r".repeat(95);
    assert_eq!(
        Client::try_connect(&target.url(&format!("/ws/chat/{long}/")))
            .await
            .err()
            .map(|r| r.0),
        Some(403)
    );
}

pub async fn cross_site_origins_are_refused(target: &ChatTarget) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = target.url("/ws/chat/o/").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 403));
    let mut req = target.url("/ws/chat/o/").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", format!("http://{}", target.addr).parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(req).await.is_ok(),
        "same-host origin is allowed"
    );
}
