//! One router for WebSocket consumers and HTTP routes on one port.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::body::Body;
use estuary_core::{
    Accept, ChannelLayerHandle, Consumer, Outcome, Reject, Scope, Session, SessionConfig, User,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::route::{PathPattern, PatternError};
use crate::settings::WsSettings;
use crate::transport::{AnyTransport, SocketTransport};

/// Route parameters in the order the route names them.
type RouteParams = Vec<(Arc<str>, String)>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A consumer session that was accepted and waits for its transport.
pub(crate) trait OpenSession: Send {
    fn run(self: Box<Self>, transport: AnyTransport, shutdown: CancellationToken) -> BoxFuture<Outcome>;
}

impl<C: Consumer> OpenSession for Session<C> {
    fn run(self: Box<Self>, transport: AnyTransport, shutdown: CancellationToken) -> BoxFuture<Outcome> {
        Box::pin(Session::run(*self, transport, shutdown))
    }
}

/// Makes consumers for one route; erases the consumer type.
trait Endpoint: Send + Sync {
    fn open(
        &self,
        scope: Scope,
        layer: ChannelLayerHandle,
        config: SessionConfig,
    ) -> BoxFuture<Result<Accepted, Reject>>;
}

struct Factory<F>(F);

impl<F, C> Endpoint for Factory<F>
where
    F: Fn() -> C + Send + Sync + 'static,
    C: Consumer,
{
    fn open(
        &self,
        scope: Scope,
        layer: ChannelLayerHandle,
        config: SessionConfig,
    ) -> BoxFuture<Result<Accepted, Reject>> {
        let consumer = (self.0)();
        Box::pin(async move {
            let (session, accept) = Session::open(consumer, scope, layer, config).await?;
            Ok(Accepted {
                session: Box::new(session),
                accept,
            })
        })
    }
}

/// What the server knows about the connection a request arrived on. The
/// server puts it in every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// The TCP peer (`None` over a Unix socket).
    pub peer: Option<SocketAddr>,
    /// The client: the peer, or the address a trusted proxy reported.
    pub client: Option<SocketAddr>,
    /// The local address the connection arrived on.
    pub local: Option<SocketAddr>,
}

/// Where accepted WebSockets run: the server's task tracker and shutdown
/// token. The server puts it in every request's extensions; a router served
/// some other way uses its own.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    /// Tracks every WebSocket task, for graceful shutdown.
    pub tracker: TaskTracker,
    /// Cancelled when the server shuts down: sessions close with 1001.
    pub shutdown: CancellationToken,
}

/// Routes WebSocket handshakes to consumers and everything else to HTTP
/// handlers, on one port (Channels' `ProtocolTypeRouter` + `URLRouter`).
///
/// WebSocket routes use Django's syntax (see [`PathPattern`]); HTTP routes
/// are axum routes with axum's extractors. A WebSocket handshake for a path
/// that no WebSocket route matches is answered 404 before any consumer runs.
///
/// ```
/// use axum::routing::get;
/// use estuary_core::{Consumer, NoEvent};
/// use estuary_server::Router;
///
/// #[derive(Default)]
/// struct Echo;
/// impl Consumer for Echo { type Event = NoEvent; }
///
/// let router = Router::new()
///     .websocket("ws/echo/", Echo::default)
///     .websocket("ws/rooms/<slug:room>/", || Echo)
///     .websocket_re(r"^ws/legacy/(?P<id>[0-9]+)/$", || Echo)
///     .route("/health", get(|| async { "ok" }));
/// # let _ = router;
/// ```
#[derive(Clone)]
pub struct Router {
    routes: Vec<(PathPattern, Arc<dyn Endpoint>)>,
    http: axum::Router,
    layer: ChannelLayerHandle,
    settings: WsSettings,
    runtime: Runtime,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "websocket_routes",
                &self.routes.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            )
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// An empty router on a fresh in-memory channel layer.
    pub fn new() -> Self {
        Self {
            routes: Vec::new(),
            http: axum::Router::new(),
            layer: ChannelLayerHandle::default(),
            settings: WsSettings::default(),
            runtime: Runtime::default(),
        }
    }

    /// Routes WebSocket handshakes matching a Django `path()` pattern to
    /// consumers made by `factory`, one per connection.
    ///
    /// # Panics
    ///
    /// When the pattern does not compile (a programming error, found at
    /// start-up); use [`try_websocket`](Self::try_websocket) to handle it.
    pub fn websocket<F, C>(self, pattern: &str, factory: F) -> Self
    where
        F: Fn() -> C + Send + Sync + 'static,
        C: Consumer,
    {
        match self.try_websocket(pattern, factory) {
            Ok(router) => router,
            Err(e) => panic!("invalid WebSocket route {pattern:?}: {e}"),
        }
    }

    /// Like [`websocket`](Self::websocket), returning pattern errors.
    pub fn try_websocket<F, C>(mut self, pattern: &str, factory: F) -> Result<Self, PatternError>
    where
        F: Fn() -> C + Send + Sync + 'static,
        C: Consumer,
    {
        self.routes
            .push((PathPattern::path(pattern)?, Arc::new(Factory(factory))));
        Ok(self)
    }

    /// Routes WebSocket handshakes matching a Django `re_path()` regex.
    ///
    /// # Panics
    ///
    /// When the regex does not compile; use [`try_websocket_re`](Self::try_websocket_re).
    pub fn websocket_re<F, C>(self, regex: &str, factory: F) -> Self
    where
        F: Fn() -> C + Send + Sync + 'static,
        C: Consumer,
    {
        match self.try_websocket_re(regex, factory) {
            Ok(router) => router,
            Err(e) => panic!("invalid WebSocket route {regex:?}: {e}"),
        }
    }

    /// Like [`websocket_re`](Self::websocket_re), returning pattern errors.
    pub fn try_websocket_re<F, C>(mut self, regex: &str, factory: F) -> Result<Self, PatternError>
    where
        F: Fn() -> C + Send + Sync + 'static,
        C: Consumer,
    {
        self.routes
            .push((PathPattern::regex(regex)?, Arc::new(Factory(factory))));
        Ok(self)
    }

    /// Adds an HTTP route (axum's path syntax and method routers).
    pub fn route(mut self, path: &str, method_router: axum::routing::MethodRouter) -> Self {
        self.http = self.http.route(path, method_router);
        self
    }

    /// Merges an axum router's HTTP routes (with its state already applied).
    pub fn merge(mut self, http: axum::Router) -> Self {
        self.http = self.http.merge(http);
        self
    }

    /// Sets the channel layer consumers use (default: a fresh in-memory layer).
    pub fn with_channel_layer(mut self, layer: ChannelLayerHandle) -> Self {
        self.layer = layer;
        self
    }

    /// Sets the WebSocket settings.
    pub fn with_settings(mut self, settings: WsSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The channel layer: clone it into HTTP handlers to push to groups.
    pub fn channel_layer(&self) -> &ChannelLayerHandle {
        &self.layer
    }

    /// The WebSocket settings.
    pub fn settings(&self) -> &WsSettings {
        &self.settings
    }

    /// The router's own runtime, used when it is served without an Estuary
    /// [`Server`](crate::Server) (for example by `axum::serve`): cancel its
    /// token to close every WebSocket with 1001, then wait on its tracker.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Freezes the router into a cloneable tower service.
    pub fn into_service(self) -> RouterService {
        RouterService {
            inner: Arc::new(self),
        }
    }

    fn find(&self, path: &str) -> Option<(&Arc<dyn Endpoint>, RouteParams)> {
        self.routes
            .iter()
            .find_map(|(p, e)| p.matches(path).map(|params| (e, params)))
    }
}

/// A [`Router`] as a tower [`Service`](tower::Service) over HTTP requests.
///
/// Wrap it in tower layers ([`OriginLayer`](crate::OriginLayer), an
/// authentication layer, `tower-http`) and hand it to a
/// [`Server`](crate::Server).
#[derive(Clone, Debug)]
pub struct RouterService {
    inner: Arc<Router>,
}

impl From<Router> for RouterService {
    fn from(router: Router) -> Self {
        router.into_service()
    }
}

/// A handshake that a consumer accepted, ready to run over a transport.
pub(crate) struct Accepted {
    pub(crate) session: Box<dyn OpenSession>,
    pub(crate) accept: Accept,
}

fn plain(status: StatusCode, reason: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{reason}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn is_websocket_upgrade(headers: &HeaderMap, method: &Method) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    method == Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
}

/// The subprotocols offered in `Sec-WebSocket-Protocol`, in order.
fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

impl RouterService {
    /// The router behind this service.
    pub fn router(&self) -> &Router {
        &self.inner
    }

    /// Routes a handshake and runs the consumer's `connect`. Used by the HTTP
    /// path below and by in-process clients.
    pub(crate) async fn open(
        &self,
        parts: &mut http::request::Parts,
        info: ConnectionInfo,
        timeout: Option<Duration>,
    ) -> Result<Accepted, Response<Body>> {
        let router = &*self.inner;
        // Routes match the decoded path, as Django matches ASGI's `path`.
        let raw_path = parts.uri.path();
        let Ok(path) = percent_encoding::percent_decode_str(raw_path).decode_utf8() else {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                "path is not valid UTF-8 once decoded",
            ));
        };
        let path = path.into_owned();
        let Some((endpoint, params)) = router.find(&path) else {
            return Err(plain(StatusCode::NOT_FOUND, "no WebSocket route for this path"));
        };
        let mut builder = Scope::builder(path.clone())
            .raw_path(raw_path)
            .query_string(parts.uri.query().unwrap_or_default())
            .headers(parts.headers.clone())
            .subprotocols(offered_subprotocols(&parts.headers))
            .user(parts.extensions.remove::<User>());
        if let Some(client) = info.client {
            builder = builder.client(client);
        }
        if let Some(local) = info.local {
            builder = builder.server(local);
        }
        for (name, value) in params {
            builder = builder.param(name, value);
        }
        let scope = builder.extensions(std::mem::take(&mut parts.extensions)).build();
        let opening = endpoint.open(scope, router.layer.clone(), router.settings.session.clone());
        let opened = match timeout {
            Some(limit) => match tokio::time::timeout(limit, opening).await {
                Ok(opened) => opened,
                Err(_) => return Err(plain(StatusCode::GATEWAY_TIMEOUT, "connect handler timed out")),
            },
            None => opening.await,
        };
        opened.map_err(|reject| plain(reject.status, &reject.reason))
    }

    /// Opens an in-process connection (no socket) for the handshake `request`:
    /// what the test communicator uses. On acceptance the consumer runs on a
    /// spawned task over a [`MemoryTransport`](crate::MemoryTransport); the
    /// returned client ends talk to it. On rejection, the HTTP response the
    /// server would have sent.
    pub async fn open_in_memory(
        &self,
        request: Request<()>,
        info: ConnectionInfo,
        shutdown: CancellationToken,
    ) -> Result<InMemoryConnection, Response<Body>> {
        let (mut parts, ()) = request.into_parts();
        let Accepted { session, accept } = self.open(&mut parts, info, None).await?;
        let (transport, client) = crate::transport::MemoryTransport::pair();
        let task = tokio::spawn(session.run(AnyTransport::Memory(transport), shutdown));
        Ok(InMemoryConnection { client, accept, task })
    }

    async fn handle_upgrade(self, mut req: Request<Body>) -> Response<Body> {
        let headers = req.headers();
        if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
            let mut response = plain(StatusCode::UPGRADE_REQUIRED, "unsupported WebSocket version");
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            return response;
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        let info = req
            .extensions()
            .get::<ConnectionInfo>()
            .cloned()
            .unwrap_or_default();
        let runtime = req
            .extensions()
            .get::<Runtime>()
            .cloned()
            .unwrap_or_else(|| self.inner.runtime.clone());
        let timeout = req.extensions().get::<HandshakeTimeout>().map(|t| t.0);
        let on_upgrade = hyper::upgrade::on(&mut req);
        let (mut parts, _body) = req.into_parts();
        let offered = offered_subprotocols(&parts.headers);
        let Accepted { session, accept } = match self.open(&mut parts, info, timeout).await {
            Ok(accepted) => accepted,
            Err(response) => return response,
        };

        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.extend(accept.headers);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        match HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            Ok(v) => h.insert(header::SEC_WEBSOCKET_ACCEPT, v),
            Err(_) => return plain(StatusCode::BAD_REQUEST, "invalid Sec-WebSocket-Key"),
        };
        if let Some(protocol) = accept.subprotocol {
            match HeaderValue::from_str(&protocol) {
                Ok(v) if offered.contains(&protocol) => {
                    h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
                }
                _ => {
                    tracing::error!(%protocol, "consumer selected a subprotocol the client did not offer; ignored")
                }
            }
        }

        let ws_config = self.inner.settings.tungstenite();
        let close_timeout = self.inner.settings.close_timeout;
        let shutdown = runtime.shutdown.clone();
        runtime.tracker.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "upgrade failed after accept");
                    // Run the session over a dead transport so disconnect and cleanup happen.
                    let (transport, client) = crate::transport::MemoryTransport::pair();
                    drop(client);
                    session
                        .run(AnyTransport::Memory(transport), CancellationToken::new())
                        .await;
                    return;
                }
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config)).await;
            let transport = AnyTransport::Socket(SocketTransport::new(ws, close_timeout));
            let outcome = session.run(transport, shutdown).await;
            tracing::debug!(code = %outcome.code, client_closed = outcome.client_closed, "connection closed");
        });
        response
    }
}

/// An accepted in-process connection; see [`RouterService::open_in_memory`].
#[derive(Debug)]
pub struct InMemoryConnection {
    /// The client's ends of the transport.
    pub client: crate::transport::MemoryClient,
    /// How the consumer accepted.
    pub accept: Accept,
    /// The session's task; it yields how the connection ended.
    pub task: tokio::task::JoinHandle<Outcome>,
}

/// How long a consumer's `connect` may take; the server sets it per request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandshakeTimeout(pub(crate) Duration);

impl<B> tower::Service<Request<B>> for RouterService
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let req = req.map(Body::new);
        let this = self.clone();
        Box::pin(async move {
            if is_websocket_upgrade(req.headers(), req.method()) {
                return Ok(this.handle_upgrade(req).await);
            }
            let mut http = this.inner.http.clone();
            tower::Service::call(&mut http, req).await
        })
    }
}
