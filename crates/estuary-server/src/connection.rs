//! One accepted connection: HTTP/1.1 with upgrades through hyper, the
//! request's checks (Host, the handshake rate, the per-address count
//! behind a proxy), what a trusted proxy forwards, and its part in a
//! graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt;

use crate::body::TimedBody;
use crate::limits::{ServerStats, Slots};
use crate::refusal::{EarlyRefusal, RefusalHook};
use crate::router::{ConnectionInfo, Runtime};
use crate::server_config::ServerConfig;
use crate::service::HandshakeTimeout;
use crate::throttle::{HANDSHAKES_REFUSED, PER_IP_REFUSED, refused_log, untrusted_forwarding};
use estuary_core::AddressRateLimiter;

/// How long a connection accepted but not yet asked anything may take to
/// send its first request once shutdown has begun.
const FRESH_CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// The smallest head limit hyper accepts.
const MIN_HEADER_SIZE: usize = 8 * 1024;

pub(crate) struct Conn<S> {
    pub(crate) service: S,
    pub(crate) runtime: Runtime,
    pub(crate) config: ServerConfig,
    pub(crate) stats: ServerStats,
    pub(crate) handshakes: Option<AddressRateLimiter>,
    /// Told of the handshakes refused here, before the service.
    pub(crate) on_refusal: Option<RefusalHook>,
    pub(crate) slots: Slots,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
    /// The connection came over TLS to this server.
    pub(crate) tls: bool,
}

impl<S> Conn<S> {
    /// The TLS handshake (within the handshake timeout), then [`run`](Self::run).
    #[cfg(feature = "tls")]
    pub(crate) async fn run_tls<B>(
        mut self,
        io: tokio::net::TcpStream,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) where
        S: tower::Service<Request<axum::body::Body>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
        B: http_body::Body<Data = Bytes> + Default + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(acceptor) = acceptor else {
            return self.run(io).await;
        };
        match tokio::time::timeout(self.config.handshake_timeout, acceptor.accept(io)).await {
            Ok(Ok(stream)) => {
                self.tls = true;
                self.run(stream).await;
            }
            Ok(Err(error)) => tracing::debug!(%error, peer = ?self.peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = ?self.peer, "TLS handshake timed out"),
        }
    }

    pub(crate) async fn run<I, B>(self, io: I)
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
            on_refusal,
            slots,
            peer,
            local,
            tls,
        } = self;
        let shutdown = runtime.shutdown.clone();
        let handshake_timeout = config.handshake_timeout;
        let body_timeout = config.body_timeout;
        let per_ip = config.max_connections_per_ip;
        let proxies = config.trusted_proxies;
        let proxied =
            peer.is_some_and(|p| proxies.trusts(p.ip())) || (peer.is_none() && proxies.trusts_unix());
        let root_path: Option<std::sync::Arc<str>> = config.root_path.as_deref().map(Into::into);
        // A permit once a request has come: see the shutdown below.
        let requested = std::sync::Arc::new(tokio::sync::Notify::new());
        let request_came = requested.clone();
        let hyper_service = hyper::service::service_fn(move |req: Request<Incoming>| {
            request_came.notify_one();
            let arrived = std::time::Instant::now();
            if let Some(fault) = host_fault(&req) {
                refused_request(peer, fault);
                return futures_util::future::Either::Left(std::future::ready(Ok(bad_request())));
            }
            let mut req = req.map(|body| axum::body::Body::new(TimedBody::new(body, body_timeout)));
            let forwarded_secure = proxied && crate::forwarded::apply_trusted(req.headers_mut());
            let secure = tls || forwarded_secure;
            if let Some(root) = &root_path
                && let Some(uri) = crate::forwarded::strip_root_path(req.uri(), root)
            {
                *req.uri_mut() = uri;
            }
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
                    if let Some(hook) = &on_refusal {
                        let reason = refused.extensions().get::<crate::HandshakeRefusal>().copied();
                        hook(&EarlyRefusal {
                            reason: reason.unwrap_or(crate::HandshakeRefusal::HandshakeRate),
                            status: refused.status().as_u16(),
                            method: Some(req.method().clone()),
                            path: Some(req.uri().path().to_owned()),
                            websocket: true,
                            client,
                            elapsed: arrived.elapsed(),
                        });
                    }
                    return futures_util::future::Either::Left(std::future::ready(Ok(refused)));
                }
            }
            let ext = req.extensions_mut();
            ext.insert(ConnectionInfo {
                peer,
                client,
                local,
                secure,
                root_path: root_path.clone(),
            });
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
                // A connection accepted just before shutdown whose request
                // has not arrived yet would be closed unanswered by hyper's
                // graceful shutdown (it closes idle connections): in a
                // rolling restart on a shared socket, that client sees a
                // connection closed instead of the answer. It gets its
                // first request answered, if it comes within a second (a
                // browser's preconnect that never sends one does not hold
                // the shutdown up longer).
                let grace = handshake_timeout.min(FRESH_CONNECTION_GRACE);
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = async {
                        let _ = tokio::time::timeout(grace, requested.notified()).await;
                    } => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
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
