//! [`ServerConfig`]: the server-wide settings and limits.

use std::time::Duration;

use crate::limits::open_file_limit;
use crate::proxy::TrustedProxies;
use estuary_core::RateLimit;

/// Server-wide settings. The defaults are safe for a public server: every
/// limit is on, and each refusal is a clear HTTP status, counted in
/// [`ServerStats`](crate::ServerStats).
///
/// | limit | default | past it |
/// |---|---|---|
/// | `max_connections` | the open-file limit less 256 | `503`, closed |
/// | `max_connections_per_ip` | 1,000 | `429`, closed |
/// | `handshake_rate` | 50/s per address, bursts of 200 | `429` + `Retry-After` |
/// | `max_header_size` | 16 KiB | `431` |
/// | `max_headers` | 64 | `431` |
/// | `body_timeout` | 10 s | the body fails with [`BodyTimeout`](crate::BodyTimeout) |
/// | `handshake_timeout` | 10 s | connection closed (headers), `504` (`connect`) |
///
/// ```
/// use std::time::Duration;
/// use estuary_server::ServerConfig;
///
/// let config = ServerConfig { shutdown_timeout: Duration::from_secs(5), ..ServerConfig::default() };
/// assert_eq!(config.handshake_timeout, Duration::from_secs(10));
/// assert_eq!(config.max_header_size, 16 * 1024);
/// ```
///
/// With the `serde` feature it deserializes through `ServerSettings`, its form as
/// plain values, checked as the constructors check (an invalid value is an
/// error naming its key).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "crate::server_settings::ServerSettings"))]
pub struct ServerConfig {
    /// How long a client may take to send its request headers, and a
    /// consumer's `connect` to decide (default 10 s).
    pub handshake_timeout: Duration,
    /// How long shutdown waits for connections to close after telling every
    /// WebSocket 1001 (default 10 s); then the rest are dropped.
    pub shutdown_timeout: Duration,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` are believed.
    pub trusted_proxies: TrustedProxies,
    /// Connections open at once, HTTP and WebSocket (`None`: no limit). A
    /// connection past it is answered `503` and closed. Default: the
    /// process's open-file limit less 256 (kept for the channel layer, logs
    /// and the listener), so that the server refuses cleanly instead of
    /// failing `accept` and every file it opens.
    pub max_connections: Option<usize>,
    /// Connections open at once per client address (IPv6 per /64; `None`:
    /// no limit; default 1,000). Counted on the TCP peer, or, for peers
    /// that are trusted proxies, per WebSocket on the client address the
    /// proxy reports. Past it: `429`.
    pub max_connections_per_ip: Option<usize>,
    /// WebSocket handshakes per second per client address (default 50, in
    /// bursts of 200; `None`: no limit). Past it: `429` with `Retry-After`.
    pub handshake_rate: Option<RateLimit>,
    /// Largest request head (request line and headers) in bytes; past it
    /// `431` (default 16 KiB; at least 8 KiB). nginx's default is 8 KiB
    /// per header line.
    pub max_header_size: usize,
    /// Most header fields in a request (default 64); past it `431`.
    pub max_headers: usize,
    /// How long a request body may take to arrive in full, from the moment
    /// a handler starts reading it (default 10 s). Past it the body fails
    /// with [`BodyTimeout`](crate::BodyTimeout).
    pub body_timeout: Duration,
    /// The prefix the application is mounted under (daphne's
    /// `--root-path`; `None`: none), in the form
    /// [`normalize_root_path`](crate::normalize_root_path) gives. A request
    /// under it routes without it (`/prefix/ws/chat/x/` as `/ws/chat/x/`),
    /// and the scope carries it as its `root_path`; a request outside it
    /// routes as it came (a proxy may have taken the prefix off already).
    pub root_path: Option<String>,
    /// TLS on this port (`None`, the default: plain TCP). The handshake
    /// shares [`handshake_timeout`](Self::handshake_timeout); the scope's
    /// scheme is then `wss`. Unix sockets stay plain.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::TlsFiles>,
}

/// File descriptors kept free below the open-file limit by the default
/// [`ServerConfig::max_connections`].
const RESERVED_FILES: usize = 256;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            trusted_proxies: TrustedProxies::default(),
            max_connections: Some(
                open_file_limit()
                    .map_or(10_000, |n| n.saturating_sub(RESERVED_FILES))
                    .max(1),
            ),
            max_connections_per_ip: Some(1_000),
            handshake_rate: Some(RateLimit {
                per_second: 50.0,
                burst: 200,
            }),
            max_header_size: 16 * 1024,
            max_headers: 64,
            body_timeout: Duration::from_secs(10),
            root_path: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}
