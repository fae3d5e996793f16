//! Opening WebSocket connections the way the scenarios need them: from a
//! chosen 127.0.0.x source address, with small buffers when asked.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Where the scenarios connect: the server's address, and the path of a room.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's host and port.
    pub addr: SocketAddr,
    /// The path of a room's socket, `{room}` replaced by the room's name.
    pub path: String,
    /// Source addresses to spread connections over (127.0.0.1, .2, ...).
    pub sources: u8,
    /// The longest a connection may take to open (TCP and handshake).
    pub connect_timeout: Duration,
}

impl Target {
    /// Parses `ws://HOST:PORT` (any path is ignored: see `path`).
    pub fn new(url: &str, path: &str, sources: u8) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .context("the target must be a ws:// URL (TLS is out of scope)")?;
        let host = rest.split('/').next().unwrap_or(rest);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        if !path.contains("{room}") {
            bail!("the path must contain {{room}}");
        }
        Ok(Self {
            addr,
            path: path.to_owned(),
            sources: sources.max(1),
            connect_timeout: CONNECT_TIMEOUT,
        })
    }

    /// The URL of a room's socket.
    pub fn url(&self, room: &str) -> String {
        format!("ws://{}{}", self.addr, self.path.replace("{room}", room))
    }

    /// The source address for the `n`th connection: loopback targets are
    /// reached from 127.0.0.1..=127.0.0.S in turn, so that one run can hold
    /// more connections than one address has ephemeral ports.
    fn source(&self, n: usize) -> Option<SocketAddr> {
        if self.sources <= 1 || !self.addr.ip().is_loopback() || !self.addr.is_ipv4() {
            return None;
        }
        let last = 1 + (n % self.sources as usize) as u8;
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0))
    }

    /// Opens the `n`th connection to `room`: TCP connect and the WebSocket
    /// handshake. `recv_buffer` sets a small kernel receive buffer (slow
    /// clients), so that a client that stops reading pushes back quickly.
    pub async fn connect(&self, room: &str, n: usize, recv_buffer: Option<u32>) -> anyhow::Result<Ws> {
        match tokio::time::timeout(self.connect_timeout, self.open(room, n, recv_buffer)).await {
            Ok(done) => done,
            Err(_) => bail!(
                "connecting to {} took over {:?} (connect and handshake)",
                self.url(room),
                self.connect_timeout
            ),
        }
    }

    async fn open(&self, room: &str, n: usize, recv_buffer: Option<u32>) -> anyhow::Result<Ws> {
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = self.source(n) {
            socket.bind(source)?;
        }
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let mut request = self.url(room).into_client_request()?;
        // Browsers always send an Origin, and Django's
        // AllowedHostsOriginValidator refuses a handshake without one.
        let origin = format!("http://{}", self.addr).parse()?;
        request.headers_mut().insert("origin", origin);
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config()))
            .await
            .with_context(|| format!("handshake with {}", self.url(room)))?;
        Ok(ws)
    }
}

/// Client buffers: small enough that 10,000 idle clients stay cheap in the
/// load generator, large enough to read a burst in one call.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Nanoseconds since the load generator started: the send time a message
/// carries, compared with the receive time in the same process.
pub fn now_ns() -> u64 {
    ns_at(Instant::now())
}

/// `at` as nanoseconds since the load generator started (0 if earlier).
pub fn ns_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    at.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_nanos() as u64
}

/// The longest a TCP connect plus WebSocket handshake may take by default:
/// a server that accepts and never answers must fail the run, not hang it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for `f` to hold, checking every few milliseconds, for at most
/// `limit`. The load generator polls its own counters: cheaper than a wake-up
/// per delivered message.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}
