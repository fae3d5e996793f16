//! The echo example over TCP.

mod common;

use common::{Example, connect, recv};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echoes_text_and_binary_in_order() {
    let example = Example::start(env!("CARGO_BIN_EXE_echo")).await;
    let mut ws = connect(&example.ws("/")).await;
    ws.send(Message::text("hello")).await.unwrap();
    ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    let big = "x".repeat(1 << 20);
    ws.send(Message::text(big.clone())).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::text("hello"));
    assert_eq!(recv(&mut ws).await, Message::binary(vec![0u8, 1, 2]));
    assert_eq!(recv(&mut ws).await, Message::text(big));
    let mut other = connect(&example.ws("/any/path")).await;
    other.send(Message::text("x")).await.unwrap();
    assert_eq!(recv(&mut other).await, Message::text("x"));
}
