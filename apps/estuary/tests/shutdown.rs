//! SIGTERM closes every WebSocket with 1001 and the process exits 0 in time.

mod common;

use estuary_test_support::process;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_zero() {
    stop_with("-TERM").await;
}

#[tokio::test]
async fn sigint_does_the_same() {
    stop_with("-INT").await;
}

async fn stop_with(signal: &str) {
    let port = process::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_estuary"));
    cmd.args([
        "serve",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--shutdown-timeout",
        "5",
    ])
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1")
    .stderr(Stdio::inherit());
    // Wait for the "listening" log line (an event, bounded by a timeout).
    let (mut child, _) = process::spawn_ready(cmd, "listening", Duration::from_secs(20));
    let url = format!("ws://127.0.0.1:{port}/ws/chat/lobby/");
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(Client::join(&url).await);
    }

    let started = Instant::now();
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for c in &mut clients {
        assert_eq!(c.recv_close().await, 1001);
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
