//! Memory against event size x members, over real sockets against the real
//! `estuary serve` process: a large event is held once, not once per member,
//! and the bytes the in-memory layer holds are bounded.

mod common;

use estuary_test_support::http;

use std::time::Duration;

use common::served::Served;
use common::{Client, WAIT};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Memory the kernel's TCP sockets hold, machine-wide, in MiB (for the
/// report only: other processes share it).
fn kernel_tcp_mib() -> f64 {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages: u64 = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "mem")
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    pages as f64 * 4096.0 / (1024.0 * 1024.0)
}

/// A member that completes the handshake, reads the
/// `connection_established` frame, and never reads again (a small receive
/// buffer, so the kernel takes little of what is sent to it).
async fn silent_member(server: &Served, room: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(server.addr()).await.unwrap();
    let request = format!(
        "GET /ws/chat/{room}/ HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        server.port()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(WAIT, s.read_exact(&mut byte))
            .await
            .expect("a handshake answer in time")
            .unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // The greeting: a short unmasked text frame.
    let mut frame = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut frame))
        .await
        .expect("the greeting in time")
        .unwrap();
    assert_eq!(frame[0], 0x81);
    let mut greeting = vec![0u8; usize::from(frame[1])];
    s.read_exact(&mut greeting).await.unwrap();
    assert!(String::from_utf8_lossy(&greeting).contains("connection_established"));
    s
}

/// Before: tungstenite copied each member's frame into its own write
/// buffer and kept it, so one 1 MB push to 1,000 members that did not read
/// raised the server's RSS by about 1 GB (the same with members that read).
/// Now every member's socket writes from the one rendered frame.
#[tokio::test]
async fn a_large_push_to_a_room_of_silent_members_is_held_once() {
    const MEMBERS: usize = 1000;
    const SIZE: usize = 1_000_000;
    let server = Served::start(&[
        "--push-insecure",
        "--handshake-rate",
        "0",
        "--max-connections-per-ip",
        "0",
    ]);
    let mut reader = Client::join(&server.url("/ws/chat/big/")).await;
    let mut silent = Vec::with_capacity(MEMBERS);
    for _ in 0..MEMBERS {
        silent.push(silent_member(&server, "big").await);
    }
    let before = server.peak_rss_mib();
    let kernel_before = kernel_tcp_mib();
    let body = json!({"type": "chat.message", "message": "x".repeat(SIZE), "username": "big"}).to_string();
    let answer = http::post_json(server.addr(), "/api/groups/chat_big/send", &body).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(
        answer.contains(&format!("\"delivered\":{}", MEMBERS + 1)),
        "{answer}"
    );
    // Every member's session has the frame in hand once its first bytes
    // reach the member (peeked: nothing is taken from the socket).
    for s in &silent {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(60), s.peek(&mut byte))
            .await
            .expect("the push reaches every member")
            .unwrap();
        assert_eq!(n, 1);
    }
    let got = reader.recv_type("chat_message").await;
    assert_eq!(got["message"].as_str().map(str::len), Some(SIZE));
    let after = server.peak_rss_mib();
    let kernel_after = kernel_tcp_mib();
    println!(
        "{MEMBERS} silent members, one {SIZE}-byte push: peak RSS {before:.1} -> {after:.1} MiB \
         (+{:.1}); kernel TCP memory (machine-wide) {kernel_before:.1} -> {kernel_after:.1} MiB",
        after - before
    );
    // Held per member, this is 1,000 MB; held once, a few copies of 1 MB
    // (the body, its JSON, the message, the frame) and allocator slack.
    assert!(
        after - before < 64.0,
        "peak RSS rose by {:.1} MiB for one {SIZE}-byte push",
        after - before
    );
    drop(silent);
    reader
        .send_json(&json!({"message": "still fine", "username": "ok"}))
        .await;
    assert_eq!(reader.recv_type("chat_message").await["message"], "still fine");
}

/// Before: every push to a worker channel nobody reads was held until its
/// expiry (60 s), without bound: 1,000 pushes of 1 MB held 1 GB. Now the
/// in-memory layer holds at most `layer.max_bytes` (128 MiB by default),
/// and a push past it gets a clear 503.
#[tokio::test]
async fn pushes_to_channels_nobody_reads_stop_at_the_layer_bound_with_503() {
    const SIZE: usize = 1_000_000;
    const PUSHES: usize = 400;
    let server = Served::start(&["--push-insecure"]);
    let before = server.peak_rss_mib();
    let body = json!({"type": "job", "data": "x".repeat(SIZE)}).to_string();
    let (mut accepted, mut refused) = (0, None);
    for n in 0..PUSHES {
        let answer = http::post_json(server.addr(), &format!("/api/channels/worker-{n}/send"), &body).await;
        if answer.starts_with("HTTP/1.1 202") {
            accepted += 1;
            continue;
        }
        refused = Some(answer);
        break;
    }
    let after = server.peak_rss_mib();
    println!(
        "{accepted} pushes of {SIZE} bytes accepted, then {:?}; peak RSS {before:.1} -> {after:.1} MiB",
        refused.as_deref().and_then(|a| a.lines().next())
    );
    let refused = refused.unwrap_or_else(|| {
        panic!("all {PUSHES} pushes accepted: the layer holds them all (peak RSS {after:.1} MiB)")
    });
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("layer.max_bytes"), "{refused}");
    // 128 MiB holds 134 messages of 1 MB and their overhead.
    assert!((120..=134).contains(&accepted), "{accepted} accepted");
    // What is held, and the transient copies of one push.
    assert!(
        after - before < 128.0 + 64.0,
        "peak RSS rose by {:.1} MiB",
        after - before
    );
    // Still refused (nothing was taken), and the answer stays clear.
    let again = http::post_json(server.addr(), "/api/channels/worker-new/send", &body).await;
    assert!(again.starts_with("HTTP/1.1 503"), "{again}");
    // A push to a group without members stores nothing: still accepted.
    let group_push = http::post_json(server.addr(), "/api/groups/anyone/send", &body).await;
    assert!(group_push.starts_with("HTTP/1.1 202"), "{group_push}");
}
