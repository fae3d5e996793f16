//! Who a chat member is, over TCP against the app with authentication
//! optional (the default): a signed-in member's frames are `"verified":
//! true` and a guest's are not; a guest may not take a name that looks like
//! a signed-in member's in the room, nor a name with control, bidirectional
//! or invisible-only characters.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Client, TestServer};
use estuary_cli::config::{Config, JwtSettings};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "a test HS256 secret for chat identity";
const TAKEN: &str = "This name belongs to a signed-in member of the room; choose another";
const INVALID: &str = "Invalid username: control, bidirectional or invisible characters are not allowed";

fn token(name: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({"sub": name, "name": name, "exp": now + 600, "aud": "chat"});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The default configuration (authentication optional) with a JWT signer.
async fn server() -> TestServer {
    let mut config = Config::default();
    config.auth.jwt = Some(JwtSettings {
        hmac_secret: Some(SECRET.into()),
        audience: Some("chat".into()),
        ..JwtSettings::default()
    });
    TestServer::with_config(config).await
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Connects with `?username=name` and expects the refusal: the error frame,
/// then a close with `code`.
async fn refused_at_connect(server: &TestServer, room: &str, name: &str, reason: &str, code: u16) {
    let mut c = Client::connect(&server.url(&format!("/ws/chat/{room}/?username={}", enc(name)))).await;
    assert_eq!(
        c.recv_json().await,
        json!({"type": "error", "message": reason}),
        "?username={name:?}"
    );
    assert_eq!(c.recv_close().await, code, "?username={name:?}");
}

fn verified(frame: &Value) -> bool {
    frame["verified"] == json!(true)
}

#[tokio::test]
async fn a_signed_in_member_is_verified_and_a_guest_of_the_same_name_is_not() {
    let server = server().await;
    let mut watcher = Client::join(&server.url("/ws/chat/id/")).await;

    // A guest calls itself alice while no alice is signed in: allowed, unverified.
    let mut guest = Client::join(&server.url("/ws/chat/id/?username=alice")).await;
    let join = watcher.recv_type("user_join").await;
    assert_eq!(join["username"], "alice");
    assert!(!verified(&join), "a guest's join is not verified: {join}");
    guest
        .send_json(&json!({"message": "from the guest", "username": "alice"}))
        .await;
    let m = watcher.recv_type("chat_message").await;
    assert_eq!(
        (m["message"].as_str(), m["username"].as_str()),
        (Some("from the guest"), Some("alice"))
    );
    assert!(!verified(&m), "a guest's message is not verified: {m}");

    // The signed-in alice: verified.
    let mut alice = Client::join(&server.url(&format!("/ws/chat/id/?token={}", token("alice")))).await;
    let join = watcher.recv_type("user_join").await;
    assert_eq!(join["username"], "alice");
    assert!(verified(&join), "a signed-in member's join is verified: {join}");
    alice.send_json(&json!({"message": "from alice"})).await;
    let m = watcher.recv_type("chat_message").await;
    assert_eq!(
        (m["message"].as_str(), m["username"].as_str()),
        (Some("from alice"), Some("alice"))
    );
    assert!(verified(&m), "a signed-in member's message is verified: {m}");

    // Now the guest may no longer write as alice (nor a lookalike of it).
    for name in ["alice", "Alice", "\u{430}lice"] {
        guest
            .send_json(&json!({"message": "still me", "username": name}))
            .await;
        assert_eq!(
            guest.recv_type("error").await,
            json!({"type": "error", "message": TAKEN}),
            "{name:?}"
        );
    }
    guest
        .send_json(&json!({"message": "as someone else", "username": "mallory"}))
        .await;
    let m = watcher.recv_type("chat_message").await;
    assert_eq!(
        m["message"], "as someone else",
        "the refused messages never reached the room"
    );

    // The guest's frame named it mallory: it was announced as leaving
    // under its old name then. The signed-in alice leaves now.
    alice.close().await;
    let leave = loop {
        let leave = watcher.recv_type("user_leave").await;
        if verified(&leave) {
            break leave;
        }
        assert_eq!(leave["username"], "alice", "{leave}");
    };
    assert_eq!(leave["username"], "alice", "{leave}");
    // With alice gone, the name is free for guests again.
    guest
        .send_json(&json!({"message": "alice is gone", "username": "alice"}))
        .await;
    let m = watcher.recv_type("chat_message").await;
    assert!(m["message"] == "alice is gone" && !verified(&m), "{m}");
}

#[tokio::test]
async fn guest_names_confusable_with_a_signed_in_members_are_refused() {
    let server = server().await;
    let mut watcher = Client::join(&server.url("/ws/chat/look/")).await;
    let _alice = Client::join(&server.url(&format!("/ws/chat/look/?token={}", token("alice")))).await;
    assert!(verified(&watcher.recv_type("user_join").await));

    let lookalikes = [
        "alice",
        "ALICE",
        " alice ",
        "alice\u{200b}",
        "al\u{200d}ice",
        "\u{430}lice",                              // Cyrillic a
        "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}", // fullwidth
        "aIice",                                    // a capital I for the l
        "\u{391}LICE",                              // a Greek capital Alpha
    ];
    for name in lookalikes {
        refused_at_connect(&server, "look", name, TAKEN, 4409).await;
    }
    let mut guest = Client::join(&server.url("/ws/chat/look/")).await;
    for name in lookalikes {
        guest.send_json(&json!({"message": "hi", "username": name})).await;
        assert_eq!(
            guest.recv_type("error").await,
            json!({"type": "error", "message": TAKEN}),
            "{name:?}"
        );
    }
    // Other names, and alice in another room, are fine.
    Client::join(&server.url("/ws/chat/look/?username=alicia")).await;
    Client::join(&server.url("/ws/chat/elsewhere/?username=alice")).await;
    // Nothing the refused guests tried reached the room.
    let next = watcher.recv_type("user_join").await;
    assert_eq!(next["username"], "alicia", "{next}");
}

#[tokio::test]
async fn names_with_control_bidi_or_only_invisible_characters_are_refused() {
    let server = server().await;
    let bad = [
        "a\nb",
        "\u{1b}[31mred",
        "nul\0",
        "\u{202e}ecila",
        "\u{feff}bob",
        "x\u{2066}y",
        "\u{200b}",
        "\u{200b}\u{2060}\u{feff}",
        "\u{200d}\u{3164}",
    ];
    for name in bad {
        refused_at_connect(&server, "ctl", name, INVALID, 4400).await;
    }
    let mut c = Client::join(&server.url("/ws/chat/ctl/")).await;
    for name in bad {
        c.send_json(&json!({"message": "hi", "username": name})).await;
        assert_eq!(
            c.recv_json().await,
            json!({"type": "error", "message": INVALID}),
            "{name:?}"
        );
    }
    // A name of 51 characters at connect is refused too (it used to be dropped silently).
    refused_at_connect(
        &server,
        "ctl",
        &"u".repeat(51),
        "Invalid username: over 50 characters",
        4400,
    )
    .await;
    // Visible names with joiners and accents are fine.
    for name in ["\u{1f469}\u{200d}\u{1f4bb} dev", "Zo\u{eb}", "\u{674e}"] {
        c.send_json(&json!({"message": "hi", "username": name})).await;
        // (Each new name is announced too: a user_join before or after.)
        assert_eq!(c.recv_type("chat_message").await["username"], name);
    }
}
