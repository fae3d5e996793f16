//! The chat application on the Redis layer: Django processes in the same
//! rooms (through the real channels_redis), two Estuary processes sharing
//! one Redis, and a Redis outage.

use estuary_test_support::probe;

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::chat_protocol::recv_chat;
use common::{Client, TestServer};
use estuary_cli::config::Config;
use probe::Probe;
use serde_json::json;

use estuary_test_support::redis::SHARED_REDIS;

fn prefix() -> String {
    format!("estuarytest{}", uuid::Uuid::new_v4().simple())
}

fn redis_config(url: &str, prefix: &str, key: Option<&str>) -> Config {
    let mut config = Config::default();
    config.layer.redis = vec![url.to_owned()];
    config.layer.prefix = prefix.to_owned();
    config.layer.encryption_keys = key.map(|k| vec![k.to_owned()]).unwrap_or_default();
    config
}

async fn django_and_estuary_share_a_room(key: Option<&str>, flavour: &str) {
    let prefix = prefix();
    let mut config = redis_config(SHARED_REDIS, &prefix, key);
    config.layer.flavour = flavour.parse().expect("core or pubsub");
    let server = TestServer::with_config(config).await;
    let mut probe = Probe::new(SHARED_REDIS, &prefix, key);
    probe.layer_args.extend(["--layer".into(), flavour.into()]);
    // Named from the start: she is announced now, not when her first
    // message names her (the listener below takes one event).
    let mut alice = Client::join(&server.url("/ws/chat/lobby/?username=alice")).await;
    let mut bob = Client::join(&server.url("/ws/chat/lobby/")).await;

    // Django → Estuary: a view's group_send reaches every client of the room.
    let django = probe.clone();
    tokio::task::spawn_blocking(move || {
        django.group_send(
            "chat_lobby",
            &json!({"type": "chat.message", "message": "hi", "username": "django"}),
        )
    })
    .await
    .unwrap();
    for c in [&mut alice, &mut bob] {
        let m = recv_chat(c).await;
        assert_eq!(
            (m["type"].as_str(), m["message"].as_str(), m["username"].as_str()),
            (Some("chat_message"), Some("hi"), Some("django"))
        );
    }
    // The spec's headline message has no username: it defaults.
    let django = probe.clone();
    tokio::task::spawn_blocking(move || {
        django.group_send("chat_lobby", &json!({"type": "chat.message", "message": "bare"}))
    })
    .await
    .unwrap();
    assert_eq!(recv_chat(&mut alice).await["username"], "Anonymous");
    recv_chat(&mut bob).await;

    // Estuary → Django: a client's message reaches a Python consumer of the group.
    let listening = probe.start(
        "listen",
        &["--group", "chat_lobby", "--count", "1", "--timeout", "20"],
    );
    alice
        .send_json(&json!({"message": "hello", "username": "alice"}))
        .await;
    let (code, lines) = tokio::task::spawn_blocking(move || listening.finish())
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(lines[0]["type"], "chat.message");
    assert_eq!(lines[0]["message"], "hello");
    assert_eq!(lines[0]["username"], "alice");
    assert_eq!(
        recv_chat(&mut bob).await["message"],
        "hello",
        "Estuary's own members get it once, through Redis"
    );
    bob.assert_no_message().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn django_and_estuary_share_a_room_plain() {
    django_and_estuary_share_a_room(None, "core").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn django_and_estuary_share_a_room_pubsub() {
    django_and_estuary_share_a_room(None, "pubsub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn django_and_estuary_share_a_room_encrypted() {
    django_and_estuary_share_a_room(Some("a shared secret"), "core").await;
}

/// An `estuary serve` process; killed on drop.
struct Estuary {
    child: Child,
    port: u16,
}

impl Estuary {
    fn start(prefix: &str) -> Self {
        let port = process::free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_estuary"));
        cmd.args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--layer",
            SHARED_REDIS,
            "--redis-prefix",
            prefix,
        ])
        .args(["--rate-limit", "0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::inherit());
        let (child, _) = process::spawn_ready(cmd, "listening", Duration::from_secs(30));
        Self { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }
}

impl Drop for Estuary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn two_processes_share_a_room_through_redis() {
    let prefix = prefix();
    let a = Estuary::start(&prefix);
    let b = Estuary::start(&prefix);
    let mut clients = Vec::new();
    for i in 0..200 {
        let server = if i % 2 == 0 { &a } else { &b };
        clients.push(Client::join(&server.url("/ws/chat/lobby/")).await);
    }
    // Five senders on each process, two messages each.
    let senders: Vec<usize> = (0..10).collect();
    for &i in &senders {
        for k in 0..2 {
            clients[i]
                .send_json(&json!({"message": format!("s{i}-k{k}"), "username": format!("u{i}")}))
                .await;
        }
    }
    let expected = senders.len() * 2;
    let mut readers = Vec::new();
    for mut client in clients {
        readers.push(tokio::spawn(async move {
            let mut got: HashMap<String, usize> = HashMap::new();
            let mut last: HashMap<String, usize> = HashMap::new();
            for _ in 0..expected {
                let m = client.recv_type("chat_message").await;
                let text = m["message"].as_str().unwrap().to_owned();
                let (sender, k) = text.split_once("-k").unwrap();
                let k: usize = k.parse().unwrap();
                if let Some(prev) = last.insert(sender.to_owned(), k) {
                    assert!(k > prev, "out of order for {sender}");
                }
                *got.entry(text).or_default() += 1;
            }
            client.assert_no_chat_message().await;
            assert_eq!(got.len(), expected, "lost messages");
            assert!(got.values().all(|&n| n == 1), "duplicates");
        }));
    }
    for r in readers {
        r.await.expect("a client missed messages");
    }
}

use estuary_test_support::redis as redis_server;

use estuary_test_support::process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary"]
async fn redis_outage_keeps_websockets_and_recovers() {
    let mut redis = redis_server::RedisServer::start();
    let port = redis.port;
    let server = TestServer::with_config(redis_config(&redis.url(), "asgi", None)).await;
    let mut a = Client::join(&server.url("/ws/chat/lobby/")).await;
    let mut b = Client::join(&server.url("/ws/chat/lobby/")).await;
    a.send_json(&json!({"message": "before"})).await;
    assert_eq!(b.recv_json().await["message"], "before");
    a.recv_json().await;
    assert_eq!(server.get_status("/healthz").await, 200);

    redis.stop();
    // The WebSockets stay open; a send during the outage is an error frame.
    a.send_json(&json!({"message": "during"})).await;
    let e = a.recv_json().await;
    assert_eq!(e["type"], "error", "{e}");
    wait_for_status(&server, 503).await;
    b.assert_no_message().await;

    let _redis = redis_server::RedisServer::start_on(port);
    wait_for_status(&server, 200).await;
    // Redis came back empty, without the room's membership: what other
    // processes sent before it was written again missed these sockets, so
    // each is told (1013, "messages were lost; reconnect"), not left open.
    assert_eq!(a.recv_close().await, 1013);
    assert_eq!(b.recv_close().await, 1013);
    // Reconnected, they talk again.
    let mut a = Client::join(&server.url("/ws/chat/lobby/")).await;
    let mut b = Client::join(&server.url("/ws/chat/lobby/")).await;
    a.send_json(&json!({"message": "after"})).await;
    assert_eq!(b.recv_json().await["message"], "after");
    assert_eq!(a.recv_json().await["message"], "after");
    server.stop().await;
}

/// Waits (bounded) until `/healthz` answers `status`.
async fn wait_for_status(server: &TestServer, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        if server.get_status("/healthz").await == status {
            return;
        }
        assert!(Instant::now() < deadline, "/healthz never answered {status}");
    }
}

/// A sender whose every message awaits a group send through Redis still
/// takes its own deliveries: its channel's buffer (here 20) never
/// overflows, so it is not closed for falling behind, and every member gets
/// every message. (With client input read before deliveries, the sender's
/// own channel overflowed and it was closed with 1013.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_fast_sender_through_redis_keeps_up_with_its_own_room() {
    use futures_util::{SinkExt, StreamExt};
    let prefix = prefix();
    let mut config = redis_config(SHARED_REDIS, &prefix, None);
    config.layer.capacity = 20;
    config.websocket.rate_limit = 0.0;
    config.websocket.rate_limit_per_ip = 0.0;
    let server = TestServer::with_config(config).await;
    let url = server.url("/ws/chat/fast/");
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Client::join(&url).await);
    }
    let sender = Client::join(&url).await;
    let (mut tx, mut rx) = sender.ws.split();
    const SENDS: usize = 1000;
    let reading = tokio::spawn(async move {
        let mut own = 0;
        while own < SENDS {
            match tokio::time::timeout(common::WAIT, rx.next()).await {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) if t.contains("\"burst\"") => {
                    own += 1
                }
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                    return Err(format!("closed: {f:?}"));
                }
                Ok(Some(Ok(_))) => {}
                other => return Err(format!("after {own}: {other:?}")),
            }
        }
        Ok(own)
    });
    for _ in 0..SENDS {
        tx.send(tokio_tungstenite::tungstenite::Message::text(
            json!({"message": "burst", "username": "s"}).to_string(),
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        reading.await.unwrap(),
        Ok(SENDS),
        "the sender got its own messages"
    );
    for member in &mut members {
        let mut got = 0;
        while got < SENDS {
            if member.recv_type("chat_message").await["message"] == "burst" {
                got += 1;
            }
        }
    }
}
