//! The dashboard example over TCP: HTTP pushes reach every socket; requests
//! are answered to their sender only.

mod common;

use common::{Example, assert_no_message, connect, recv_json, send_json};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn post(addr: &str, path: &str, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(common::WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn http_post_reaches_every_socket_and_requests_are_answered_privately() {
    let example = Example::start(env!("CARGO_BIN_EXE_dashboard")).await;
    let mut browsers = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(&example.ws("/ws/")).await;
        assert_eq!(recv_json(&mut ws).await, json!({"type": "ready"}));
        browsers.push(ws);
    }

    let response = post(&example.addr, "/notify/sales", r#"{"total": 42}"#).await;
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    assert!(response.contains(r#""delivered":3"#), "{response}");
    for ws in &mut browsers {
        assert_eq!(
            recv_json(ws).await,
            json!({"type": "update", "kind": "sales", "data": {"total": 42}})
        );
    }

    let (first, rest) = browsers.split_first_mut().unwrap();
    send_json(first, &json!({"type": "ping", "id": 7})).await;
    assert_eq!(recv_json(first).await, json!({"type": "pong", "id": 7}));
    send_json(first, &json!({"type": "stats"})).await;
    assert_eq!(recv_json(first).await, json!({"type": "stats", "updates": 1}));
    send_json(first, &json!({"type": "launch_rockets"})).await;
    let error = recv_json(first).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["request_type"], "launch_rockets");
    for ws in rest.iter_mut() {
        assert_no_message(ws).await;
    }
}
