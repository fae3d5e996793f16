//! The accept loop: HTTP/1.1 with upgrades, on TCP or a Unix socket, with
//! graceful shutdown that includes upgraded WebSockets.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tokio::net::{TcpListener, TcpSocket, UnixListener, UnixSocket};
use tokio_util::task::TaskTracker;

use crate::connection::Conn;
use crate::limits::{ServerStats, Slots};
use crate::refusal::{EarlyRefusal, RefusalHook, refuse_at_accept};
use crate::router::Runtime;
use crate::server_config::ServerConfig;
use crate::throttle::{PER_IP_REFUSED, refused_log};
use estuary_core::{AddressRateLimiter, ChannelLayerHandle, ChannelNameRouter};

enum Listener {
    Tcp(TcpListener),
    /// With the socket file's path when this server made it (removed at
    /// shutdown); `None` for a socket it was given.
    Unix(UnixListener, Option<PathBuf>),
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
    on_refusal: Option<RefusalHook>,
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
            on_refusal: None,
        }
    }

    /// Serves on a Unix listener you made, or one the process inherited
    /// (systemd's socket activation): its socket file is left in place at
    /// shutdown, for the next process.
    pub fn from_unix(listener: UnixListener) -> Self {
        Self {
            listener: Listener::Unix(listener, None),
            config: ServerConfig::default(),
            stats: ServerStats::default(),
            workers: None,
            on_refusal: None,
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
            listener: Listener::Unix(listener, Some(path.to_owned())),
            config: ServerConfig::default(),
            stats: ServerStats::default(),
            workers: None,
            on_refusal: None,
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

    /// Calls `hook` for each request refused by a server limit before any
    /// service saw it ([`EarlyRefusal`]: `max_connections`,
    /// `max_connections_per_ip`, the handshake rate), so that an access
    /// log and metrics outside the service see them too. The hook runs on
    /// the connection's task: keep it short.
    ///
    /// ```
    /// use estuary_server::Server;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let server = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap().on_refusal(|refusal| {
    ///     tracing::info!(status = refusal.status, reason = refusal.reason.as_str(), "refused");
    /// });
    /// # let _ = server;
    /// # });
    /// ```
    pub fn on_refusal(mut self, hook: impl Fn(&EarlyRefusal) + Send + Sync + 'static) -> Self {
        self.on_refusal = Some(std::sync::Arc::new(hook));
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
                            let proxies = self.config.trusted_proxies.clone();
                            connections.spawn(refuse(io, refusal, peer, proxies, self.on_refusal.clone()));
                            continue;
                        }
                    };
                    let conn = Conn {
                        service: service.clone(),
                        runtime: runtime.clone(),
                        config: self.config.clone(),
                        stats: self.stats.clone(),
                        handshakes: handshakes.clone(),
                        on_refusal: self.on_refusal.clone(),
                        slots,
                        peer,
                        local,
                        tls: false,
                    };
                    match io {
                        #[cfg(feature = "tls")]
                        Io::Tcp(s) if self.config.tls.is_some() => {
                            let acceptor = self.config.tls.as_ref().map(crate::TlsFiles::acceptor);
                            connections.spawn(conn.run_tls(s, acceptor))
                        }
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
        if let Listener::Unix(_, Some(path)) = &self.listener {
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
                    tracing::error!(%error, "the workers' task failed: worker channels were not read from then on (a panic outside a handler is a bug: report it with this error)");
                }
            }
        })
        .await;
        if drained.is_err() {
            if let Some(workers) = workers_abort.filter(|w| !w.is_finished()) {
                tracing::warn!(
                    "shutdown deadline passed; a worker's handler is cut short (if handlers need longer, raise shutdown_timeout and the process manager's stop timeout, e.g. systemd's TimeoutStopSec)"
                );
                workers.abort();
            }
            tracing::warn!(
                websockets = runtime.tracker.len(),
                http = connections.len(),
                "shutdown deadline passed; dropping the remaining connections (their clients see 1006 and reconnect; to give them longer, raise shutdown_timeout and the process manager's stop timeout, e.g. systemd's TimeoutStopSec)"
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
/// Answers a refused connection with a minimal response and closes it,
/// after reading its request head (bounded: a second in all).
async fn refuse(
    io: Io,
    refusal: Refusal,
    peer: Option<SocketAddr>,
    proxies: crate::TrustedProxies,
    hook: Option<RefusalHook>,
) {
    let (response, status, reason): (&'static [u8], u16, _) = match refusal {
        Refusal::Busy => (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\
              retry-after: 5\r\nconnection: close\r\n\r\nserver at capacity.\n",
            503,
            crate::HandshakeRefusal::MaxConnections,
        ),
        Refusal::TooMany => (
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\ncontent-length: 37\r\n\
              retry-after: 5\r\nconnection: close\r\n\r\ntoo many connections from this address\n",
            429,
            crate::HandshakeRefusal::ConnectionsPerIp,
        ),
    };
    match io {
        Io::Tcp(s) => refuse_at_accept(s, response, status, reason, peer, proxies, hook).await,
        Io::Unix(s) => refuse_at_accept(s, response, status, reason, peer, proxies, hook).await,
    }
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
