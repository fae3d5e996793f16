//! `estuary serve` with `[auth.jwt]`: a valid token's subject is the chat
//! user, an expired one is anonymous (401 where authentication is
//! required), and a token that expires while connected closes the socket
//! with 4401.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, Refused, TestServer};
use estuary_cli::config::{Config, JwtSettings};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

const SECRET: &str = "a test HS256 secret, long enough";

fn token(name: &str, exp_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({"sub": "42", "name": name, "exp": now + exp_in, "aud": "chat"});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn config(required: bool) -> Config {
    let mut config = Config::default();
    config.auth.required = required;
    config.auth.jwt = Some(JwtSettings {
        hmac_secret: Some(SECRET.into()),
        audience: Some("chat".into()),
        leeway: Some(0),
        ..JwtSettings::default()
    });
    config
}

#[tokio::test]
async fn a_valid_token_is_the_chat_user_and_an_expired_one_is_anonymous() {
    let server = TestServer::with_config(config(false)).await;
    let mut listener = Client::join(&server.url("/ws/chat/jwt/")).await;
    let mut alice = Client::join(&server.url(&format!("/ws/chat/jwt/?token={}", token("alice", 60)))).await;
    assert_eq!(listener.recv_type("user_join").await["username"], "alice");
    alice.send_json(&json!({"message": "hi"})).await;
    assert_eq!(listener.recv_type("chat_message").await["username"], "alice");

    let mut late = Client::join(&server.url(&format!("/ws/chat/jwt/?token={}", token("late", -60)))).await;
    late.send_json(&json!({"message": "x"})).await;
    assert_eq!(listener.recv_type("chat_message").await["username"], "Anonymous");
}

#[tokio::test]
async fn where_auth_is_required_a_missing_or_expired_token_gets_401() {
    let server = TestServer::with_config(config(true)).await;
    for path in [
        "/ws/chat/jwt/".to_owned(),
        format!("/ws/chat/jwt/?token={}", token("late", -60)),
    ] {
        assert!(
            matches!(Client::try_connect(&server.url(&path)).await, Err(Refused(401))),
            "{path}"
        );
    }
    Client::join(&server.url(&format!("/ws/chat/jwt/?token={}", token("alice", 60)))).await;
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_with_4401() {
    let server = TestServer::with_config(config(false)).await;
    let mut brief = Client::join(&server.url(&format!("/ws/chat/jwt/?token={}", token("brief", 2)))).await;
    let started = std::time::Instant::now();
    assert_eq!(brief.recv_close().await, 4401);
    assert!(started.elapsed() < Duration::from_secs(5));
}
