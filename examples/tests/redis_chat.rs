//! The redis-chat example: two processes on one Redis share the rooms.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{assert_no_message, connect, recv_json, send_json};
use estuary_test_support::http::post_json;
use estuary_test_support::redis::unique_prefix;
use serde_json::json;

/// One `redis-chat` process; killed on drop.
struct Chat {
    child: Child,
    addr: String,
}

impl Chat {
    /// Starts the example on a free port with key `prefix`, and waits (on
    /// its output, at most 20 s) until it listens.
    fn start(prefix: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_redis-chat"))
            .args(["127.0.0.1:0", "redis://127.0.0.1:6379/0", prefix])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-chat");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.to_owned());
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Self { child, addr },
            Err(_) => {
                let _ = child.kill();
                panic!("redis-chat did not print its address within 20 s");
            }
        }
    }

    fn ws(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn two_processes_share_a_room_over_redis() {
    let prefix = unique_prefix();
    let (one, two) = (Chat::start(&prefix), Chat::start(&prefix));

    let mut ann = connect(&one.ws("/ws/chat/lobby/")).await;
    let mut bob = connect(&two.ws("/ws/chat/lobby/")).await;
    let mut elsewhere = connect(&two.ws("/ws/chat/kitchen/")).await;
    // The handshake completes once the member joined its group: what is
    // sent from now on reaches it.

    send_json(&mut ann, &json!({"message": "hello from one"})).await;
    for ws in [&mut ann, &mut bob] {
        assert_eq!(recv_json(ws).await, json!({"message": "hello from one"}));
    }

    let response = post_json(&two.addr, "/rooms/lobby/messages", r#"{"message": "from HTTP"}"#).await;
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    for ws in [&mut ann, &mut bob] {
        assert_eq!(recv_json(ws).await, json!({"message": "from HTTP"}));
    }

    send_json(&mut bob, &json!({"text": "not the protocol"})).await;
    assert_eq!(recv_json(&mut bob).await["error"], "send {\"message\": \"...\"}");
    assert_no_message(&mut ann).await;
    assert_no_message(&mut elsewhere).await;
}
