//! The accept loop: HTTP/1.1 with upgrades, on TCP or a Unix socket, with
//! graceful shutdown that includes upgraded WebSockets.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, UnixListener, UnixSocket};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::body::TimedBody;
use crate::limits::{ServerStats, Slots, open_file_limit};
use crate::proxy::TrustedProxies;
use crate::router::{ConnectionInfo, Runtime};
use crate::service::HandshakeTimeout;
use estuary_core::{AddressRateLimiter, ChannelLayerHandle, ChannelNameRouter, RateLimit};

/// Server-wide settings. The defaults are safe for a public server: every
/// limit is on, and each refusal is a clear HTTP status, counted in
/// [`ServerStats`].
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
        }
    }
}

/// The smallest head limit hyper accepts.
const MIN_HEADER_SIZE: usize = 8 * 1024;

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Serves a [`Router`](crate::Router) (or any service wrapping one) over HTTP/1.1.
///
/// ```no_run
/// use estuary_server::{Router, Server, shutdown_signal};
///
/// # async fn run() -> std::io::Result<()> {
/// let router = Router::new();
/// Server::bind("127.0.0.1:8000".parse().unwrap())
///     .await?
///     .serve(router.into_service(), shutdown_signal())
///     .await
/// # }
/// ```
pub struct Server {
    listener: Listener,
    config: ServerConfig,
    stats: ServerStats,
    workers: Option<(ChannelNameRouter, ChannelLayerHandle)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

/// The listen backlog [`Server::bind`] and [`Server::bind_unix`] ask for:
/// connections the kernel completes and queues while the accept loop is
/// busy. The standard library's `bind` asks for 128, which a burst of
/// connects (a deploy's reconnect wave) overflows: the kernel then drops
/// SYNs and clients retry only after a second. Linux caps the request at
/// `net.core.somaxconn` (4096 by default since 5.4).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;

impl Server {
    /// Listens on a TCP address (port 0 picks a free port), with a backlog
    /// of [`DEFAULT_LISTEN_BACKLOG`].
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Self::bind_with_backlog(addr, DEFAULT_LISTEN_BACKLOG)
    }

    /// Listens on a TCP address with a listen backlog of `backlog`
    /// connections (nginx's `listen ... backlog=`; the kernel caps it at
    /// `net.core.somaxconn`).
    ///
    /// ```
    /// use estuary_server::Server;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let server = Server::bind_with_backlog("127.0.0.1:0".parse().unwrap(), 1024).unwrap();
    /// assert!(server.local_addr().is_some());
    /// # });
    /// ```
    pub fn bind_with_backlog(addr: SocketAddr, backlog: u32) -> io::Result<Self> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // As the standard library's bind: a restarted server may bind while
        // its previous sockets sit in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok(Self::from_tcp(socket.listen(backlog.max(1))?))
    }

    /// Serves on a listener you made.
    pub fn from_tcp(listener: TcpListener) -> Self {
        Self {
            listener: Listener::Tcp(listener),
            config: ServerConfig::default(),
            stats: ServerStats::default(),
            workers: None,
        }
    }

    /// Listens on a Unix socket, replacing a stale socket file, with a
    /// backlog of [`DEFAULT_LISTEN_BACKLOG`].
    pub fn bind_unix(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::bind_unix_with_backlog(path, DEFAULT_LISTEN_BACKLOG)
    }

    /// Listens on a Unix socket with a listen backlog of `backlog`
    /// connections, replacing a stale socket file.
    pub fn bind_unix_with_backlog(path: impl AsRef<Path>, backlog: u32) -> io::Result<Self> {
        let path = path.as_ref();
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        let socket = UnixSocket::new_stream()?;
        socket.bind(path)?;
        let listener = socket.listen(backlog.max(1))?;
        Ok(Self {
            listener: Listener::Unix(listener, path.to_owned()),
            config: ServerConfig::default(),
            stats: ServerStats::default(),
            workers: None,
        })
    }

    /// Sets the server-wide settings.
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs `workers` on `layer` beside the WebSocket tier (Channels'
    /// `runworker` in the same process): [`serve`](Self::serve) starts them
    /// with the accept loop and, on shutdown, lets each finish the message
    /// in hand (within [`ServerConfig::shutdown_timeout`], shared with the
    /// connections) before it returns. The contract is
    /// [`run_workers`](estuary_core::run_workers)'; take the counters with
    /// [`ChannelNameRouter::stats`] before passing the router here.
    ///
    /// ```no_run
    /// use estuary_core::{
    ///     ChannelLayerHandle, ChannelNameRouter, InMemoryChannelLayer, Worker, WorkerContext, WorkerError,
    /// };
    /// use estuary_server::{Router, Server, shutdown_signal};
    ///
    /// struct Emails;
    ///
    /// impl Worker for Emails {
    ///     type Event = serde_json::Value;
    ///     async fn handle(&mut self, _: &mut WorkerContext, email: serde_json::Value) -> Result<(), WorkerError> {
    ///         tracing::info!(%email, "sending");
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = ChannelLayerHandle::new(InMemoryChannelLayer::default());
    /// let workers = ChannelNameRouter::new().route("emails", Emails)?;
    /// Server::bind("127.0.0.1:8000".parse()?)
    ///     .await?
    ///     .with_workers(workers, layer.clone())
    ///     .serve(Router::new().with_channel_layer(layer).into_service(), shutdown_signal())
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_workers(mut self, workers: ChannelNameRouter, layer: ChannelLayerHandle) -> Self {
        self.workers = Some((workers, layer));
        self
    }

    /// The server's counters (open connections, refusals); clones share
    /// them, so take one before [`serve`](Self::serve).
    pub fn stats(&self) -> ServerStats {
        self.stats.clone()
    }

    /// The bound TCP address (`None` for a Unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// Serves until `shutdown` completes; then stops accepting, closes every
    /// WebSocket with 1001 (after the messages already queued for it), lets
    /// HTTP requests in flight finish, lets the [workers](Self::with_workers)
    /// finish the messages in hand, and returns once all is closed or
    /// [`ServerConfig::shutdown_timeout`] has passed.
    ///
    /// Request bodies reach `service` as [`axum::body::Body`], failing with
    /// [`BodyTimeout`](crate::BodyTimeout) past [`ServerConfig::body_timeout`].
    pub async fn serve<S, B>(
        mut self,
        service: S,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()>
    where
        S: tower::Service<Request<axum::body::Body>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
        B: http_body::Body<Data = Bytes> + Default + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let runtime = Runtime::default();
        let connections = TaskTracker::new();
        let local = self.local_addr();
        let handshakes = self.config.handshake_rate.map(AddressRateLimiter::new);
        let workers_stop = tokio_util::sync::CancellationToken::new();
        let workers = self.workers.take().map(|(router, layer)| {
            tokio::spawn(estuary_core::run_workers(
                router,
                layer,
                workers_stop.clone().cancelled_owned(),
            ))
        });
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = accept(&self.listener) => accepted,
            };
            match accepted {
                Ok((io, peer)) => {
                    let slots = match self.admit(peer) {
                        Ok(slots) => slots,
                        Err(refusal) => {
                            connections.spawn(refuse(io, refusal));
                            continue;
                        }
                    };
                    let conn = Conn {
                        service: service.clone(),
                        runtime: runtime.clone(),
                        config: self.config.clone(),
                        stats: self.stats.clone(),
                        handshakes: handshakes.clone(),
                        slots,
                        peer,
                        local,
                    };
                    match io {
                        Io::Tcp(s) => connections.spawn(conn.run(s)),
                        Io::Unix(s) => connections.spawn(conn.run(s)),
                    };
                }
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    estuary_core::throttled!(warn, %error, "accept failed; retrying in 50 ms (out of open files? raise the limit or lower max_connections)");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }

        tracing::info!(
            websockets = runtime.tracker.len(),
            "shutting down: closing WebSockets with 1001"
        );
        if let Listener::Unix(_, path) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
        drop(self.listener);
        runtime.shutdown.cancel();
        runtime.tracker.close();
        connections.close();
        workers_stop.cancel();
        let workers_abort = workers.as_ref().map(|w| w.abort_handle());
        let drained = tokio::time::timeout(self.config.shutdown_timeout, async {
            runtime.tracker.wait().await;
            connections.wait().await;
            if let Some(workers) = workers {
                if let Err(error) = workers.await {
                    tracing::error!(%error, "the workers' task failed");
                }
            }
        })
        .await;
        if drained.is_err() {
            if let Some(workers) = workers_abort.filter(|w| !w.is_finished()) {
                tracing::warn!("shutdown deadline passed; a worker's handler is cut short");
                workers.abort();
            }
            tracing::warn!(
                websockets = runtime.tracker.len(),
                http = connections.len(),
                "shutdown deadline passed; dropping the remaining connections"
            );
        }
        Ok(())
    }
}

impl Server {
    /// The slots a new connection from `peer` takes, or why it is refused.
    fn admit(&self, peer: Option<SocketAddr>) -> Result<Slots, Refusal> {
        let Some(total) = self.stats.open(self.config.max_connections) else {
            refused_log(&TOTAL_REFUSED, peer, "max_connections");
            return Err(Refusal::Busy);
        };
        let mut slots = vec![std::sync::Arc::new(total)];
        // A trusted proxy carries many clients: those are counted per
        // WebSocket on the address it reports (see `Conn::run`).
        if let (Some(peer), Some(max)) = (peer, self.config.max_connections_per_ip) {
            if !self.config.trusted_proxies.trusts(peer.ip()) {
                let Some(slot) = self.stats.open_for(peer.ip(), max) else {
                    refused_log(&PER_IP_REFUSED, Some(peer), "max_connections_per_ip");
                    return Err(Refusal::TooMany);
                };
                slots.push(std::sync::Arc::new(slot));
            }
        }
        Ok(Slots(slots))
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `max_connections`: 503.
    Busy,
    /// `max_connections_per_ip`: 429.
    TooMany,
}

static TOTAL_REFUSED: estuary_core::Throttle = estuary_core::Throttle::new(Duration::from_secs(1));
static PER_IP_REFUSED: estuary_core::Throttle = estuary_core::Throttle::new(Duration::from_secs(1));
static UNTRUSTED_FORWARDING: estuary_core::Throttle = estuary_core::Throttle::new(Duration::from_secs(60));

/// A peer that is not a trusted proxy sent `X-Forwarded-For`: either a
/// client lying about its address (ignored), or a proxy the operator forgot
/// to trust, whose clients then all count as one address in every
/// per-address limit. Said once a minute.
fn untrusted_forwarding(peer: Option<SocketAddr>) {
    if let Some(held_back) = UNTRUSTED_FORWARDING.allow(std::time::Instant::now()) {
        tracing::warn!(
            ?peer,
            held_back,
            "X-Forwarded-For from a peer not in trusted_proxies: ignored; if this is your reverse \
             proxy, add it to trusted_proxies, or all its clients count as one address in the \
             per-address limits"
        );
    }
}

static HANDSHAKES_REFUSED: estuary_core::Throttle = estuary_core::Throttle::new(Duration::from_secs(1));

fn refused_log(throttle: &estuary_core::Throttle, peer: Option<SocketAddr>, limit: &'static str) {
    if let Some(held_back) = throttle.allow(std::time::Instant::now()) {
        tracing::warn!(
            ?peer,
            limit,
            held_back,
            "connection refused: limit reached (if these clients are legitimate, raise the limit named, or the open-file limit for max_connections)"
        );
    }
}

/// Answers a refused connection with a minimal response and closes it,
/// without reading its request (bounded: a peer that does not read gets
/// dropped after a second).
async fn refuse(io: Io, refusal: Refusal) {
    use tokio::io::AsyncWriteExt;
    let response: &[u8] = match refusal {
        Refusal::Busy => {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\
              retry-after: 5\r\nconnection: close\r\n\r\nserver at capacity.\n"
        }
        Refusal::TooMany => {
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\ncontent-length: 37\r\n\
              retry-after: 5\r\nconnection: close\r\n\r\ntoo many connections from this address\n"
        }
    };
    let write = async move {
        match io {
            Io::Tcp(mut s) => {
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            }
            Io::Unix(mut s) => {
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

enum Io {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<(Io, Option<SocketAddr>)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Io::Tcp(s), Some(peer)))
        }
        Listener::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            Ok((Io::Unix(s), None))
        }
    }
}

struct Conn<S> {
    service: S,
    runtime: Runtime,
    config: ServerConfig,
    stats: ServerStats,
    handshakes: Option<AddressRateLimiter>,
    slots: Slots,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
}

impl<S> Conn<S> {
    async fn run<I, B>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: tower::Service<Request<axum::body::Body>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
        B: http_body::Body<Data = Bytes> + Default + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Conn {
            service,
            runtime,
            config,
            stats,
            handshakes,
            slots,
            peer,
            local,
        } = self;
        let shutdown = runtime.shutdown.clone();
        let handshake_timeout = config.handshake_timeout;
        let body_timeout = config.body_timeout;
        let per_ip = config.max_connections_per_ip;
        let proxies = config.trusted_proxies;
        let proxied =
            peer.is_some_and(|p| proxies.trusts(p.ip())) || (peer.is_none() && proxies.trusts_unix());
        let hyper_service = hyper::service::service_fn(move |req: Request<Incoming>| {
            if let Some(fault) = host_fault(&req) {
                refused_request(peer, fault);
                return futures_util::future::Either::Left(std::future::ready(Ok(bad_request())));
            }
            let mut req = req.map(|body| axum::body::Body::new(TimedBody::new(body, body_timeout)));
            let client = proxies.client_of(peer, req.headers());
            if !proxied && req.headers().contains_key("x-forwarded-for") {
                untrusted_forwarding(peer);
            }
            let upgrade = req.headers().contains_key(http::header::SEC_WEBSOCKET_KEY);
            let mut slots = slots.clone();
            if upgrade {
                if let Some(refused) =
                    admit_handshake(&handshakes, &stats, client, proxied, per_ip, &mut slots)
                {
                    return futures_util::future::Either::Left(std::future::ready(Ok(refused)));
                }
            }
            let ext = req.extensions_mut();
            ext.insert(ConnectionInfo { peer, client, local });
            ext.insert(runtime.clone());
            ext.insert(HandshakeTimeout(handshake_timeout));
            ext.insert(slots);
            futures_util::future::Either::Right(service.clone().oneshot(req))
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(handshake_timeout)
            .max_buf_size(config.max_header_size.max(MIN_HEADER_SIZE))
            .max_headers(config.max_headers)
            .serve_connection(TokioIo::new(io), hyper_service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, ?peer, "HTTP connection ended with an error");
        }
    }
}

/// The handshake rate and, behind a trusted proxy, the per-address count
/// of WebSockets. `Some(response)` refuses the handshake; else the slot
/// taken joins `slots`.
fn admit_handshake<B: Default>(
    handshakes: &Option<AddressRateLimiter>,
    stats: &ServerStats,
    client: Option<SocketAddr>,
    proxied: bool,
    per_ip: Option<usize>,
    slots: &mut Slots,
) -> Option<Response<B>> {
    let ip = client.map(|c| c.ip())?;
    if handshakes.as_ref().is_some_and(|limiter| !limiter.check(ip)) {
        stats.count_handshake_refused();
        refused_log(&HANDSHAKES_REFUSED, client, "handshake_rate");
        return Some(crate::report::refused(
            too_many("1"),
            crate::HandshakeRefusal::HandshakeRate,
        ));
    }
    if let (true, Some(max)) = (proxied, per_ip) {
        match stats.open_for(ip, max) {
            Some(slot) => slots.0.push(std::sync::Arc::new(slot)),
            None => {
                refused_log(&PER_IP_REFUSED, client, "max_connections_per_ip");
                return Some(crate::report::refused(
                    too_many("5"),
                    crate::HandshakeRefusal::ConnectionsPerIp,
                ));
            }
        }
    }
    None
}

/// RFC 9112 3.2: a request with more than one `Host`, or an HTTP/1.1
/// request with none, gets 400. Two `Host` headers are how a request is
/// made to mean one host to a proxy and another to the server (the host
/// check reads the first; something behind it may read the last).
fn host_fault<B>(req: &Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Some("more than one Host header"),
        (None, _) if req.version() == http::Version::HTTP_11 => Some("HTTP/1.1 request without Host"),
        _ => None,
    }
}

static REQUESTS_REFUSED: estuary_core::Throttle = estuary_core::Throttle::new(Duration::from_secs(1));

fn refused_request(peer: Option<SocketAddr>, fault: &'static str) {
    if let Some(held_back) = REQUESTS_REFUSED.allow(std::time::Instant::now()) {
        tracing::warn!(
            ?peer,
            fault,
            held_back,
            "request refused with 400 (a broken client or a request-smuggling attempt; if a proxy \
             in front sends this, fix its configuration)"
        );
    }
}

/// An empty 400 that closes the connection.
fn bad_request<B: Default>() -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = http::StatusCode::BAD_REQUEST;
    response
        .headers_mut()
        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

fn too_many<B: Default>(retry_after: &'static str) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static(retry_after),
    );
    response
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
