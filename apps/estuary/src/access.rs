//! The outermost layer of `estuary serve`: `GET /metrics` (when served on
//! the main port), the access log, and the request counters.
//!
//! An access line is written per HTTP request and per WebSocket handshake
//! (when the 101, or the refusal, is answered), at `info` with the target
//! `estuary::access` (`RUST_LOG=estuary::access=off` silences it alone):
//! `method`, `path`, `status`, `duration_ms`, `client` (after the trusted
//! proxies' `X-Forwarded-For`), `user` (when authenticated), `kind`
//! (`http` or `websocket`), and `refused` (why, when refused by the
//! middleware).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{self, Request, Response, StatusCode, header};
use estuary::server::{AuthReport, ConnectionInfo, HandshakeRefusal};

use crate::metrics::{CONTENT_TYPE, Metrics, RequestKind};

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
    if let Some(auth) = auth {
        let outcome = match (auth.admitted, &auth.user, refused) {
            (true, Some(_), _) => "user",
            (true, None, _) => "anonymous",
            (false, _, Some("auth_unavailable")) => "unavailable",
            (false, _, _) => "refused",
        };
        http.auth(outcome, auth.elapsed);
    }
    if layer.log {
        let user = auth.and_then(|a| a.user.as_deref());
        let client = client.map_or_else(|| "-".to_owned(), |c| c.ip().to_string());
        tracing::info!(
            target: "estuary::access",
            kind = kind.as_str(),
            %method,
            path,
            status,
            duration_ms = (took.as_secs_f64() * 1e6).round() / 1e3,
            %client,
            user,
            refused,
            "access"
        );
    }
}
