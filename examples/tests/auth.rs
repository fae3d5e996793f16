//! The auth example over TCP: JWTs through `AuthLayer`, the `Origin` check
//! of `OriginLayer`, and the `Host` check of `AllowedHosts`.

mod common;

use common::{Example, Ws, connect, recv_json, refused};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use estuary_test_support::http;

/// `GET path` with this `Host`; the whole response.
async fn get(addr: &str, host: &str, path: &str) -> String {
    http::get_with_host(addr, host, path).await
}

async fn token(example: &Example, user: &str) -> String {
    let response = get(&example.addr, &example.addr, &format!("/token?user={user}")).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    let body: Value = serde_json::from_str(body).expect("JSON");
    body["token"].as_str().expect("a token").to_owned()
}

/// A handshake sending `Origin: origin`: the socket, or the refusal's status.
async fn connect_from(url: &str, origin: &str) -> Result<Ws, u16> {
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("origin", origin.parse().expect("header"));
    match tokio::time::timeout(common::WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("timeout")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn a_token_names_the_user_and_private_routes_need_one() {
    let example = Example::start(env!("CARGO_BIN_EXE_auth")).await;
    let alice = token(&example, "alice").await;

    let mut ws = connect(&example.ws(&format!("/ws/private/?token={alice}"))).await;
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"type": "hello", "user": "alice", "id": "user:alice", "private": true})
    );
    ws.send(Message::text("hi")).await.expect("send");
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"type": "echo", "from": "alice", "text": "hi"})
    );

    let (status, _) = refused(&example.ws("/ws/private/")).await;
    assert_eq!(status, 401, "no token on a private route");
    let (status, _) = refused(&example.ws("/ws/private/?token=not.a.token")).await;
    assert_eq!(status, 401, "a bad token is no user");

    let mut ws = connect(&example.ws("/ws/me/?token=not.a.token")).await;
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"type": "hello", "user": null, "id": null, "private": false}),
        "an anonymous visitor where the route allows one"
    );
}

#[tokio::test]
async fn pages_on_other_sites_and_other_hosts_are_refused() {
    let example = Example::start(env!("CARGO_BIN_EXE_auth")).await;
    let url = example.ws("/ws/me/");
    assert_eq!(connect_from(&url, "https://evil.example").await.err(), Some(403));
    assert_eq!(
        connect_from(&url, "http://127.0.0.1.evil.example").await.err(),
        Some(403)
    );
    for allowed in [
        "http://localhost:3000",
        "http://127.0.0.1:8003",
        "https://app.example.com",
    ] {
        let mut ws = connect_from(&url, allowed)
            .await
            .unwrap_or_else(|status| panic!("{allowed} refused with {status}"));
        assert_eq!(recv_json(&mut ws).await["type"], "hello");
    }
    let response = get(&example.addr, "evil.example", "/token?user=alice").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
}
