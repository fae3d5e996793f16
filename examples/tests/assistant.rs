//! The assistant example over TCP: typed query parameters and `close`.

mod common;

use common::{Example, connect, recv, recv_json, refused};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn greets_with_the_parsed_parameters() {
    let example = Example::start(env!("CARGO_BIN_EXE_assistant")).await;
    let mut ws = connect(&example.ws("/ws/s-42?llm=chatgpt&character_id=2&chatmode=text&token=")).await;
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"type": "greeting", "session": "s-42", "llm": "chatgpt", "character_id": 2, "chatmode": "text", "token": false})
    );
    let mut ws = connect(&example.ws("/ws/abc/")).await;
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"type": "greeting", "session": "abc", "llm": "ernie", "character_id": 1, "chatmode": "text", "token": false}),
        "defaults, and a trailing slash is tolerated"
    );
    let mut ws = connect(&example.ws("/ws/t?chatmode=voice&token=secret")).await;
    let greeting = recv_json(&mut ws).await;
    assert_eq!(
        (greeting["chatmode"].as_str(), greeting["token"].as_bool()),
        (Some("voice"), Some(true))
    );
}

#[tokio::test]
async fn malformed_parameters_reject_the_handshake() {
    let example = Example::start(env!("CARGO_BIN_EXE_assistant")).await;
    let (status, body) = refused(&example.ws("/ws/s?character_id=two")).await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid query string"), "{body}");
    let (status, _) = refused(&example.ws("/ws/s?chatmode=video")).await;
    assert_eq!(status, 400);
    let (status, _) = refused(&example.ws("/ws/a/b")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn streams_a_reply_and_closes_on_close() {
    let example = Example::start(env!("CARGO_BIN_EXE_assistant")).await;
    let mut ws = connect(&example.ws("/ws/s?llm=chatgpt")).await;
    recv_json(&mut ws).await;
    ws.send(Message::text("hi there")).await.unwrap();
    let mut words = Vec::new();
    loop {
        let m = recv_json(&mut ws).await;
        if m["type"] == "done" {
            break;
        }
        words.push(m["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(words.join(" "), "chatgpt heard: hi there");
    ws.send(Message::text("close")).await.unwrap();
    match recv(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected a close frame, got {other:?}"),
    }
}
