//! `estuary serve` with `[auth.jwt]` and `[auth.callback]`: `/metrics`
//! counts each authenticator's answers and latency under its own name, so
//! the callback's (or Django's) latency shows apart from the token check.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::IntoResponse;
use common::Client;
use common::served::Served;
use estuary_test_support::eventually::poll_async;
use estuary_test_support::http;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

const SECRET: &str = "a test HS256 secret, long enough";

fn token(name: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"sub": "42", "name": name, "exp": now + 600, "aud": "chat"});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A connect callback view that lets everyone in as `bob`; its address.
async fn serve_view() -> SocketAddr {
    let view = || async { axum::Json(json!({"user": {"id": "7", "name": "bob"}})).into_response() };
    let app = axum::Router::new().route("/estuary/connect/", axum::routing::post(view));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The value of the sample `line_start` (name and labels, as printed).
fn sample(scrape: &str, line_start: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
}

#[tokio::test]
async fn each_authenticator_is_counted_and_timed_under_its_name() {
    let view = serve_view().await;
    let dir = std::env::temp_dir().join(format!("estuary-auth-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("estuary.toml");
    std::fs::write(
        &file,
        format!(
            "[auth.jwt]\nhmac_secret = \"{SECRET}\"\naudience = \"chat\"\n\n\
             [auth.callback]\nurl = \"http://{view}/estuary/connect/\"\nsecret = \"the callback secret\"\n"
        ),
    )
    .unwrap();
    let server = Served::start(&["--config", file.to_str().unwrap(), "--rate-limit", "0"]);

    // A token: the JWT authenticator decides, the callback is not asked.
    let mut alice = Client::join(&server.url(&format!("/ws/chat/auth/?token={}", token("alice")))).await;
    // No token: JWT passes (anonymous), the callback lets bob in.
    let mut bob = Client::join(&server.url("/ws/chat/auth/")).await;
    // Alice hears her own join, then bob's.
    while alice.recv_type("user_join").await["username"] != "bob" {}
    bob.send_json(&json!({"message": "hi"})).await;
    assert_eq!(alice.recv_type("chat_message").await["username"], "bob");

    let scrape = poll_async(
        "both handshakes counted",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let response = http::get(server.addr(), "/metrics").await;
            let body = response.split_once("\r\n\r\n")?.1.to_owned();
            sample(
                &body,
                r#"estuary_auth_total{authenticator="callback",outcome="user"}"#,
            )
            .is_some()
            .then_some(body)
        },
    )
    .await;
    for (line, want) in [
        (r#"estuary_auth_total{authenticator="jwt",outcome="user"}"#, 1.0),
        (
            r#"estuary_auth_total{authenticator="jwt",outcome="anonymous"}"#,
            1.0,
        ),
        (
            r#"estuary_auth_total{authenticator="callback",outcome="user"}"#,
            1.0,
        ),
        (r#"estuary_auth_duration_seconds_count{authenticator="jwt"}"#, 2.0),
        (
            r#"estuary_auth_duration_seconds_count{authenticator="callback"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&scrape, line), Some(want), "{line} in\n{scrape}");
    }
    assert!(
        !scrape.contains(r#"authenticator="django""#),
        "no Django lookup configured, none counted:\n{scrape}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
