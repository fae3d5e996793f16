//! Starts an example binary on a free port and talks to it over TCP.

#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};

use estuary_test_support::{process, ws};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub const WAIT: Duration = ws::WAIT;

/// A running example; killed on drop.
pub struct Example {
    child: Child,
    pub addr: String,
}

impl Example {
    /// Starts `bin` (a `CARGO_BIN_EXE_*` path) on port 0 and waits for its
    /// "listening on" line.
    pub async fn start(bin: &str) -> Self {
        let mut cmd = Command::new(bin);
        cmd.arg("127.0.0.1:0").stderr(Stdio::inherit());
        let (child, line) = process::spawn_ready(cmd, "listening on http://", WAIT * 2);
        let addr = line.trim_start_matches("listening on http://").to_owned();
        Self { child, addr }
    }

    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use estuary_test_support::ws::Ws;

pub async fn connect(url: &str) -> Ws {
    ws::connect(url).await.expect("connect")
}

/// The HTTP status a refused handshake got, and its body.
pub async fn refused(url: &str) -> (u16, String) {
    match ws::connect(url).await {
        Err(refused) => (refused.status, refused.body),
        Ok(_) => panic!("handshake was accepted"),
    }
}

pub async fn recv(ws: &mut Ws) -> Message {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("nothing received in time")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return m,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

pub async fn recv_json(ws: &mut Ws) -> Value {
    match recv(ws).await {
        Message::Text(t) => serde_json::from_str(&t).expect("JSON"),
        other => panic!("expected text, got {other:?}"),
    }
}

pub async fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

pub async fn assert_no_message(ws: &mut Ws) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        panic!("expected no message, got {m:?}");
    }
}
