//! The outermost layer of `estuary serve`: `GET /metrics` (when served on
//! the main port), the access log, and the request counters.
//!
//! An access line is written per HTTP request and per WebSocket handshake
//! (when the 101, or the refusal, is answered), at `info` with the target
//! `estuary::access` (`RUST_LOG=estuary::access=off` silences it alone):
//! `method`, `path`, `status`, `duration_ms`, `client` (after the trusted
//! proxies' `X-Forwarded-For`), `user` (when authenticated), `kind`
//! (`http` or `websocket`), and `refused` (why, when refused by the
//! middleware or a server limit).
//!
//! Requests refused by a server limit before the application
//! (`max_connections`, `max_connections_per_ip`, the handshake rate) never
//! reach this layer: the server tells [`refused_early`] of them, which
//! counts them and writes their line the same way.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{self, Request, Response, StatusCode, header};
use estuary::server::{AuthReport, ConnectionInfo, EarlyRefusal, HandshakeRefusal};

use crate::metrics::{CONTENT_TYPE, HttpStats, Metrics, RequestKind};

/// Wraps the application: see the module's documentation.
#[derive(Debug, Clone)]
pub struct AccessLayer {
    metrics: Metrics,
    serve_metrics: bool,
    log: bool,
}

impl AccessLayer {
    /// Counts into `metrics`; answers `GET /metrics` itself when
    /// `serve_metrics`; writes access lines when `log`.
    pub fn new(metrics: Metrics, serve_metrics: bool, log: bool) -> Self {
        Self {
            metrics,
            serve_metrics,
            log,
        }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> AccessService<S> {
        AccessService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AccessLayer`] makes.
#[derive(Debug, Clone)]
pub struct AccessService<S> {
    inner: S,
    layer: AccessLayer,
}

/// `GET /metrics`: the scrape.
pub fn scrape(metrics: &Metrics) -> Response<Body> {
    let mut response = Response::new(Body::from(metrics.render()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(CONTENT_TYPE));
    response
}

impl<S> tower::Service<Request<Body>> for AccessService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let kind = if req.headers().contains_key(header::SEC_WEBSOCKET_KEY) {
            RequestKind::WebSocket
        } else {
            RequestKind::Http
        };
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let client = req.extensions().get::<ConnectionInfo>().and_then(|i| i.client);
        let layer = self.layer.clone();
        if layer.serve_metrics && path == "/metrics" && kind == RequestKind::Http {
            let response = if method == http::Method::GET || method == http::Method::HEAD {
                scrape(&layer.metrics)
            } else {
                let mut r = Response::new(Body::from("use GET\n"));
                *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                r
            };
            record(&layer, kind, &method, &path, client, &response, started);
            return Box::pin(std::future::ready(Ok(response)));
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(req).await?;
            record(&layer, kind, &method, &path, client, &response, started);
            Ok(response)
        })
    }
}

/// Counts the answer and writes its access line.
fn record(
    layer: &AccessLayer,
    kind: RequestKind,
    method: &http::Method,
    path: &str,
    client: Option<std::net::SocketAddr>,
    response: &Response<Body>,
    started: Instant,
) {
    let took = started.elapsed();
    let status = response.status().as_u16();
    let refused = response
        .extensions()
        .get::<HandshakeRefusal>()
        .map(|r| r.as_str());
    let auth = response.extensions().get::<AuthReport>();
    let http = layer.metrics.http();
    http.request(kind, status, took, refused);
    // Authentications are counted by each authenticator, under its name
    // (`MeteredAuthenticator`); the report gives the access line its user.
    if layer.log {
        let user = auth.and_then(|a| a.user.as_deref());
        line(kind, method.as_str(), path, status, took, client, user, refused);
    }
}

/// What [`estuary::Server::on_refusal`] calls in `estuary serve`: counts
/// the refusal into `http` (`estuary_handshakes_refused_total{reason}`,
/// `estuary_http_requests_total`) and writes its access line when `log`.
///
/// ```
/// use estuary_cli::access::refused_early;
/// use estuary_cli::metrics::HttpStats;
///
/// let http = HttpStats::default();
/// let hook = refused_early(http.clone(), false);
/// # let _ = hook;
/// assert_eq!(http.refused("max_connections"), 0);
/// ```
pub fn refused_early(http: HttpStats, log: bool) -> impl Fn(&EarlyRefusal) + Send + Sync + 'static {
    move |refusal| {
        let kind = if refusal.websocket {
            RequestKind::WebSocket
        } else {
            RequestKind::Http
        };
        let reason = refusal.reason.as_str();
        http.request(kind, refusal.status, refusal.elapsed, Some(reason));
        if log {
            let method = refusal.method.as_ref().map_or("-", |m| m.as_str());
            let path = refusal.path.as_deref().unwrap_or("-");
            line(
                kind,
                method,
                path,
                refusal.status,
                refusal.elapsed,
                refusal.client,
                None,
                Some(reason),
            );
        }
    }
}

/// One access line.
#[allow(clippy::too_many_arguments)]
fn line(
    kind: RequestKind,
    method: &str,
    path: &str,
    status: u16,
    took: std::time::Duration,
    client: Option<std::net::SocketAddr>,
    user: Option<&str>,
    refused: Option<&str>,
) {
    let client = client.map_or_else(|| "-".to_owned(), |c| c.ip().to_string());
    tracing::info!(
        target: "estuary::access",
        kind = kind.as_str(),
        method = %method,
        path,
        status,
        duration_ms = (took.as_secs_f64() * 1e6).round() / 1e3,
        %client,
        user,
        refused,
        "access"
    );
}
