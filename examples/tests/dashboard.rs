//! The dashboard example over TCP: HTTP pushes reach every socket; requests
//! are answered to their sender only.

mod common;

use estuary_test_support::http;

use common::{Example, assert_no_message, connect, recv_json, send_json};
use serde_json::json;

use estuary_test_support::http::get;

#[tokio::test]
async fn the_printed_address_serves_a_page_on_the_socket() {
    let example = Example::start(env!("CARGO_BIN_EXE_dashboard")).await;
    let page = get(&example.addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("text/html"), "{page}");
    assert!(page.contains("/ws/") && page.contains("/notify/sales"), "{page}");
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

    let response = http::post_json(example.addr.as_str(), "/notify/sales", r#"{"total": 42}"#).await;
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
