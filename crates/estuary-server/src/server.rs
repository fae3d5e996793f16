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
use tokio::net::{TcpListener, UnixListener};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::proxy::TrustedProxies;
use crate::router::{ConnectionInfo, Runtime};
use crate::service::HandshakeTimeout;

/// Server-wide settings.
///
/// ```
/// use std::time::Duration;
/// use estuary_server::ServerConfig;
///
/// let config = ServerConfig { shutdown_timeout: Duration::from_secs(5), ..ServerConfig::default() };
/// assert_eq!(config.handshake_timeout, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a client may take to send its request headers, and a
    /// consumer's `connect` to decide (default 10 s).
    pub handshake_timeout: Duration,
    /// How long shutdown waits for connections to close after telling every
    /// WebSocket 1001 (default 10 s); then the rest are dropped.
    pub shutdown_timeout: Duration,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` are believed.
    pub trusted_proxies: TrustedProxies,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

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
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Listens on a TCP address (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self::from_tcp(TcpListener::bind(addr).await?))
    }

    /// Serves on a listener you made.
    pub fn from_tcp(listener: TcpListener) -> Self {
        Self {
            listener: Listener::Tcp(listener),
            config: ServerConfig::default(),
        }
    }

    /// Listens on a Unix socket, replacing a stale socket file.
    pub fn bind_unix(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        Ok(Self {
            listener: Listener::Unix(listener, path.to_owned()),
            config: ServerConfig::default(),
        })
    }

    /// Sets the server-wide settings.
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
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
    /// HTTP requests in flight finish, and returns once all is closed or
    /// [`ServerConfig::shutdown_timeout`] has passed.
    pub async fn serve<S, B>(self, service: S, shutdown: impl Future<Output = ()> + Send) -> io::Result<()>
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let runtime = Runtime::default();
        let connections = TaskTracker::new();
        let local = self.local_addr();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = accept(&self.listener) => accepted,
            };
            match accepted {
                Ok((io, peer)) => {
                    let conn = Conn {
                        service: service.clone(),
                        runtime: runtime.clone(),
                        config: self.config.clone(),
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
                    tracing::warn!(%error, "accept failed");
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
        let drained = tokio::time::timeout(self.config.shutdown_timeout, async {
            runtime.tracker.wait().await;
            connections.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                websockets = runtime.tracker.len(),
                http = connections.len(),
                "shutdown deadline passed; dropping the remaining connections"
            );
        }
        Ok(())
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

struct Conn<S> {
    service: S,
    runtime: Runtime,
    config: ServerConfig,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
}

impl<S> Conn<S> {
    async fn run<I, B>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Conn {
            service,
            runtime,
            config,
            peer,
            local,
        } = self;
        let shutdown = runtime.shutdown.clone();
        let handshake_timeout = config.handshake_timeout;
        let proxies = config.trusted_proxies;
        let hyper_service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let client = proxies.client_of(peer, req.headers());
            let ext = req.extensions_mut();
            ext.insert(ConnectionInfo { peer, client, local });
            ext.insert(runtime.clone());
            ext.insert(HandshakeTimeout(handshake_timeout));
            service.clone().oneshot(req)
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(handshake_timeout)
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
