//! A real WebSocket client over TCP, and an in-process server to test against.

#![allow(dead_code, unreachable_pub)]

pub mod chat_protocol;
pub mod served;

use std::net::SocketAddr;
use std::time::Duration;

use estuary_cli::config::Config;
use estuary_test_support::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = ws::WAIT;
pub const QUIET: Duration = Duration::from_millis(300);

/// The chat application served on a free port, stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Many clients from this one address, as a load test makes: the
    /// per-address limits off.
    pub async fn crowded() -> Self {
        let mut config = Config {
            push_insecure: true,
            ..Config::default()
        };
        config.server.handshake_rate = 0.0;
        config.server.max_connections_per_ip = 0;
        config.websocket.rate_limit_per_ip = 0.0;
        Self::with_config(config).await
    }

    /// The default configuration, with the push API open (tests that check
    /// its closed default use [`TestServer::with_config`]).
    pub async fn start() -> Self {
        Self::with_config(Config {
            push_insecure: true,
            ..Config::default()
        })
        .await
    }

    pub async fn with_config(config: Config) -> Self {
        let config = Config {
            bind: "127.0.0.1:0".into(),
            ..config
        };
        let service = estuary_cli::serve::service(&config).expect("the application");
        Self::serve(config, service).await
    }

    /// The application on a channel layer the test made (and keeps, to
    /// read its counters).
    pub async fn with_layer(config: Config, layer: estuary::ChannelLayerHandle) -> Self {
        let config = Config {
            bind: "127.0.0.1:0".into(),
            ..config
        };
        let service = estuary_cli::serve::service_with_layer(&config, layer).expect("the application");
        Self::serve(config, service).await
    }

    /// The application and the workers `estuary serve` runs beside it
    /// (the room-post worker), on a channel layer the test made; with the
    /// workers' counters.
    pub async fn with_workers(
        config: Config,
        layer: estuary::ChannelLayerHandle,
    ) -> (Self, estuary::WorkerStats) {
        let config = Config {
            bind: "127.0.0.1:0".into(),
            ..config
        };
        let service =
            estuary_cli::serve::service_with_layer(&config, layer.clone()).expect("the application");
        let (workers, stats) = estuary_cli::posts::workers();
        let server = estuary_cli::serve::listen(&config)
            .expect("a free port")
            .with_workers(workers, layer);
        (Self::run(server, service), stats)
    }

    async fn serve(config: Config, service: estuary_cli::serve::AppService) -> Self {
        Self::run(estuary_cli::serve::listen(&config).expect("a free port"), service)
    }

    fn run(server: estuary::Server, service: estuary_cli::serve::AppService) -> Self {
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            server
                .serve(service, async move { token.cancelled().await })
                .await
                .unwrap();
        });
        Self {
            addr,
            stop,
            task: Some(task),
        }
    }

    /// `GET path`; returns the status code.
    pub async fn get_status(&self, path: &str) -> u16 {
        self.get(path)
            .await
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// `GET path`; returns the whole response, head and body.
    pub async fn get(&self, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            self.addr
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(WAIT, s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// This server as the chat protocol suite's target.
    pub fn target(&self) -> chat_protocol::ChatTarget {
        chat_protocol::ChatTarget { addr: self.addr }
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
    }

    /// Stops the server and checks that `serve` returned cleanly (workers
    /// drained) within [`WAIT`].
    pub async fn stop_cleanly(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("serve returns")
                .expect("serve succeeds");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A WebSocket client with timeouts on every receive.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server answered to a handshake it refused.
#[derive(Debug)]
pub struct Refused(pub u16);

impl Client {
    pub async fn connect(url: &str) -> Self {
        Self::try_connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e:?}"))
    }

    pub async fn try_connect(url: &str) -> Result<Self, Refused> {
        match ws::connect(url).await {
            Ok(ws) => Ok(Self { ws }),
            Err(refused) => Err(Refused(refused.status)),
        }
    }

    /// Connects to a chat room and waits for the greeting.
    pub async fn join(url: &str) -> Self {
        let mut c = Self::connect(url).await;
        let hello = c.recv_json().await;
        assert_eq!(hello["type"], "connection_established", "{hello}");
        c
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next data message (pings are answered by tungstenite).
    pub async fn recv(&mut self) -> Message {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing received in time");
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return m,
                Some(Err(e)) => panic!("receive failed: {e}"),
                None => panic!("connection ended"),
            }
        }
    }

    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Message::Text(t) => serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}")),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Receives chat frames until one of type `kind` arrives that is not
    /// the room's recent history (`"history": true`, sent on joining a
    /// room that talked before).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv_json().await;
            if v["type"] == kind && v["history"] != true {
                return v;
            }
        }
    }

    /// Waits for the close frame; returns its code (1006 if none came).
    pub async fn recv_close(&mut self) -> u16 {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no close in time");
            match next {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or(1005, |f: CloseFrame| u16::from(f.code));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return 1006,
            }
        }
    }

    /// Asserts that nothing but pings arrives for a short while.
    pub async fn assert_no_message(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected no message, got {other:?}"),
            }
        }
    }

    /// Asserts that nothing but pings and presence frames (`user_join`,
    /// `user_leave`, `presence`, which a member naming itself in its
    /// messages causes) arrives for a short while.
    pub async fn assert_no_chat_message(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(Message::Text(text))))
                    if serde_json::from_str::<Value>(&text).is_ok_and(|v| {
                        matches!(v["type"].as_str(), Some("user_join" | "user_leave" | "presence"))
                    }) =>
                {
                    continue;
                }
                Ok(other) => panic!("expected no message, got {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }
}

/// The log lines the server writes on this test's thread (a `#[tokio::test]`
/// runtime has one thread, so the server's tasks log there too). The
/// throttles are process-wide: a test counting lines has a file of its own.
#[derive(Clone, Default)]
pub struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Captures INFO and above on this thread until the guard is dropped.
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The lines containing `text`.
    pub fn matching(&self, text: &str) -> Vec<String> {
        self.lines().into_iter().filter(|l| l.contains(text)).collect()
    }
}

/// Checks that throttled `lines` came at most one a second (and the first)
/// over `elapsed`, and that they and their held-back counts account for no
/// more than the `events` that caused them; returns that count.
pub fn assert_throttled(lines: &[String], elapsed: Duration, events: u64) -> u64 {
    assert!(
        lines.len() as u64 <= elapsed.as_secs() + 2,
        "{} lines in {elapsed:?}",
        lines.len()
    );
    let counted: u64 = lines.iter().map(|l| held_back(l) + 1).sum();
    assert!(counted <= events, "{counted} counted for {events} events");
    counted
}

/// The `held_back=N` of a throttled log line (0 when it has none).
pub fn held_back(line: &str) -> u64 {
    line.split("held_back=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}
