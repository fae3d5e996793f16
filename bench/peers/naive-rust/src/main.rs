//! Benchmark peer: the chat server a Rust developer would write in an afternoon.
//!
//! axum's WebSocket support with default settings, and one
//! `tokio::sync::broadcast` channel per room behind a global mutex. It speaks
//! the chat protocol's core (`{"message", "username"}` in, the same plus
//! `"type": "chat_message"` out to every member of the room) and nothing else.
//!
//! Usage: `naive-broadcast --bind 127.0.0.1:PORT` or `naive-broadcast PORT`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

/// Messages a room's channel buffers for a slow member before it lags.
const ROOM_CAPACITY: usize = 1024;

/// How long a leaving member gets to complete the close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by every connection.
#[derive(Default)]
struct AppState {
    /// One broadcast channel per room, created by its first member.
    rooms: Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
    /// Messages skipped by members that fell more than `ROOM_CAPACITY` behind.
    lagged: AtomicU64,
}

/// A chat message as the client sends it; unknown fields are ignored.
#[derive(Deserialize)]
struct Incoming {
    /// The text to broadcast.
    message: String,
    /// The sender's chosen name, if any.
    username: Option<String>,
}

/// A chat message as every member of the room receives it.
#[derive(Serialize)]
struct Outgoing<'a> {
    /// Always `"chat_message"`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The text, unchanged.
    message: &'a str,
    /// The sender's name, or `"Anonymous"`.
    username: &'a str,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = parse_bind(std::env::args().skip(1))?;
    let state = Arc::new(AppState::default());
    let app = Router::new()
        .route("/ws/chat/{room}/", get(ws_handler))
        .route("/ws/chat/{room}", get(ws_handler))
        .with_state(state.clone());

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("naive-broadcast listening on ws://{addr}/ws/chat/{{room}}/");

    tokio::select! {
        served = axum::serve(listener, app) => served.context("server failed")?,
        () = shutdown_signal() => {}
    }
    // Lags are silent message loss; report them so a run can be judged.
    eprintln!(
        "naive-broadcast: lagged (dropped) messages: {}",
        state.lagged.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Reads `--bind ADDR`, `--bind=ADDR` or a bare `PORT` (bound on 127.0.0.1).
fn parse_bind(mut args: impl Iterator<Item = String>) -> anyhow::Result<SocketAddr> {
    let usage = "usage: naive-broadcast --bind 127.0.0.1:PORT | naive-broadcast PORT";
    let Some(first) = args.next() else { bail!(usage) };
    let value = match first.as_str() {
        "--bind" => args.next().context(usage)?,
        other => other.strip_prefix("--bind=").unwrap_or(other).to_owned(),
    };
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    value
        .parse()
        .with_context(|| format!("bad address {value:?}; {usage}"))
}

/// Resolves on SIGINT or SIGTERM (the harness stops peers with the latter).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Same room rule as the chat protocol: `[A-Za-z0-9_-]{1,94}`.
fn valid_room(room: &str) -> bool {
    (1..=94).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Upgrades a request for a valid room; anything else is a 404.
async fn ws_handler(
    ws: WebSocketUpgrade,
    Path(room): Path<String>,
    State(state): State<Arc<AppState>>,
) -> Response {
    if !valid_room(&room) {
        return StatusCode::NOT_FOUND.into_response();
    }
    ws.on_upgrade(move |socket| handle_socket(socket, room, state))
}

/// Runs one member: one task forwards the room's broadcast to the socket,
/// another reads the socket into the room's broadcast; this one waits for
/// either to end, then cleans up.
async fn handle_socket(socket: WebSocket, room: String, state: Arc<AppState>) {
    let (tx, mut rx) = {
        let mut rooms = state.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let tx = rooms
            .entry(room.clone())
            .or_insert_with(|| broadcast::channel(ROOM_CAPACITY).0)
            .clone();
        let rx = tx.subscribe();
        (tx, rx)
    };
    let (mut sink, mut stream) = socket.split();

    let forward_state = state.clone();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let mut forward = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                received = rx.recv() => match received {
                    Ok(text) => {
                        if sink.send(Message::Text(text)).await.is_err() {
                            return;
                        }
                    }
                    // Naive: skip what was missed and carry on, but keep count.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        forward_state.lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        // Flushes the close reply tungstenite queued when the client's Close
        // frame arrived, so clients see a clean close rather than 1006.
        let _ = sink.close().await;
    });

    let reader_tx = tx.clone();
    let mut read = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Text(text) => {
                    // Bad JSON or a missing message is ignored, as the naive
                    // server has no way to answer the sender alone.
                    let Ok(incoming) = serde_json::from_str::<Incoming>(&text) else {
                        continue;
                    };
                    let username = match incoming.username.as_deref() {
                        Some(name) if !name.is_empty() => name,
                        _ => "Anonymous",
                    };
                    let out = Outgoing {
                        kind: "chat_message",
                        message: &incoming.message,
                        username,
                    };
                    // Rendered once; every member gets a cheap clone of the bytes.
                    if let Ok(json) = serde_json::to_string(&out) {
                        // An error only means nobody is subscribed.
                        let _ = reader_tx.send(Utf8Bytes::from(json));
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });

    // Whichever side ends first ends the member; awaiting the aborted task
    // makes sure its receiver is dropped before the room count is checked.
    tokio::select! {
        _ = &mut forward => {
            read.abort();
            let _ = read.await;
        }
        _ = &mut read => {
            let _ = stop_tx.send(());
            // A client that stopped reading must not keep the member alive.
            if tokio::time::timeout(CLOSE_TIMEOUT, &mut forward).await.is_err() {
                forward.abort();
                let _ = forward.await;
            }
        }
    }

    // Drop the room once its last member is gone so rooms do not accumulate,
    // unless the name already belongs to a newer channel.
    let mut rooms = state.rooms.lock().unwrap_or_else(|e| e.into_inner());
    if tx.receiver_count() == 0 && rooms.get(&room).is_some_and(|current| current.same_channel(&tx)) {
        rooms.remove(&room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(args: &[&str]) -> anyhow::Result<SocketAddr> {
        parse_bind(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_bind_forms() {
        assert_eq!(bind(&["8001"]).unwrap(), "127.0.0.1:8001".parse().unwrap());
        assert_eq!(
            bind(&["--bind", "127.0.0.1:9"]).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(bind(&["--bind=0.0.0.0:7"]).unwrap(), "0.0.0.0:7".parse().unwrap());
        assert!(bind(&[]).is_err());
        assert!(bind(&["--bind"]).is_err());
        assert!(bind(&["nope"]).is_err());
    }

    #[test]
    fn room_rule() {
        assert!(valid_room("lobby-1_x"));
        assert!(!valid_room(""));
        assert!(!valid_room("a b"));
        assert!(!valid_room(&"a".repeat(95)));
    }
}
