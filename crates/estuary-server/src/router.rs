//! One router for WebSocket consumers and HTTP routes on one port.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use estuary_core::{Accept, ChannelLayerHandle, Consumer, Outcome, Reject, Scope, Session, SessionConfig};
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::Slots;
use crate::route::{PathPattern, PatternError, RouteParams, WsRoute};
use crate::settings::WsSettings;
use crate::transport::AnyTransport;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A consumer session that was accepted and waits for its transport.
pub(crate) trait OpenSession: Send {
    fn run(self: Box<Self>, transport: AnyTransport, shutdown: CancellationToken) -> BoxFuture<Outcome>;

    /// Runs the session on a task of its own, `slots` held until it ends.
    /// The session's future is the task's, not boxed beside it: one
    /// allocation per connection, not a task cell and a box.
    fn spawn(
        self: Box<Self>,
        transport: AnyTransport,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
        slots: Option<Slots>,
    );
}

impl<C: Consumer> OpenSession for Session<C> {
    fn run(self: Box<Self>, transport: AnyTransport, shutdown: CancellationToken) -> BoxFuture<Outcome> {
        Box::pin(Session::run(*self, transport, shutdown))
    }

    fn spawn(
        self: Box<Self>,
        transport: AnyTransport,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
        slots: Option<Slots>,
    ) {
        // `map`, not an async block around the future: that would hold it
        // twice (as the block's capture and as the awaited local).
        let running = Session::run(*self, transport, shutdown).map(move |outcome| {
            drop(slots);
            tracing::debug!(code = %outcome.code, client_closed = outcome.client_closed, "connection closed");
        });
        drop(tracker.spawn(running));
    }
}

/// Makes consumers for one route; erases the consumer type.
pub(crate) trait Endpoint: Send + Sync {
    fn open(
        &self,
        scope: Scope,
        layer: ChannelLayerHandle,
        config: Arc<SessionConfig>,
    ) -> BoxFuture<Result<Accepted, Reject>>;

    /// The consumer's [`Consumer::CHANNEL_LAYER_ALIAS`].
    fn channel_layer_alias(&self) -> &'static str;

    /// The consumer's type name, for errors.
    fn consumer_name(&self) -> &'static str;
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
        config: Arc<SessionConfig>,
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

    fn channel_layer_alias(&self) -> &'static str {
        C::CHANNEL_LAYER_ALIAS
    }

    fn consumer_name(&self) -> &'static str {
        std::any::type_name::<C>()
    }
}

/// What the server knows about the connection a request arrived on. The
/// server puts it in every request's extensions; HTTP handlers read it with
/// axum's `Extension` extractor, consumers through [`Scope::client`] and
/// [`Scope::server`].
///
/// ```
/// use axum::{Extension, body::Body, routing::get};
/// use estuary_server::{ConnectionInfo, Router};
/// use http::Request;
/// use http_body_util::BodyExt;
/// use tower::ServiceExt;
///
/// async fn whoami(Extension(info): Extension<ConnectionInfo>) -> String {
///     info.client.map_or("unknown".into(), |addr| addr.ip().to_string())
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let service = Router::new().route("/whoami", get(whoami)).into_service();
///
/// // The server inserts this itself; a test does it by hand.
/// let mut request = Request::get("/whoami").body(Body::empty()).unwrap();
/// request.extensions_mut().insert(ConnectionInfo {
///     client: Some("203.0.113.7:51000".parse().unwrap()),
///     ..ConnectionInfo::default()
/// });
/// let response = service.oneshot(request).await.unwrap();
/// let body = response.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(&body[..], b"203.0.113.7");
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// The TCP peer (`None` over a Unix socket).
    pub peer: Option<SocketAddr>,
    /// The client: the peer, or the address a trusted proxy reported.
    pub client: Option<SocketAddr>,
    /// The local address the connection arrived on.
    pub local: Option<SocketAddr>,
    /// The client's connection is encrypted: TLS to this server, or a
    /// trusted proxy's `X-Forwarded-Proto: https` (the scope's `scheme`
    /// is then `wss`).
    pub secure: bool,
    /// The prefix the application is mounted under
    /// ([`ServerConfig::root_path`](crate::ServerConfig::root_path)), taken
    /// off the request's path before routing; the scope's `root_path`.
    pub root_path: Option<Arc<str>>,
}

/// Where accepted WebSockets run: the server's task tracker and shutdown
/// token. The server puts it in every request's extensions; a router served
/// some other way uses its own ([`Router::runtime`]). Clones share the same
/// tracker and token.
///
/// ```
/// use estuary_server::Router;
///
/// let router = Router::new();
/// let runtime = router.runtime().clone();
/// let service = router.into_service(); // serve it, e.g. with axum::serve
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// // At shutdown: close every WebSocket with 1001, then wait for their tasks.
/// runtime.shutdown.cancel();
/// runtime.tracker.close();
/// runtime.tracker.wait().await;
/// assert!(service.router().runtime().shutdown.is_cancelled());
/// # });
/// ```
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
    pub(crate) routes: Vec<WsRoute<Arc<dyn Endpoint>>>,
    pub(crate) http: axum::Router,
    pub(crate) layer: ChannelLayerHandle,
    /// Channel layers besides the default, by alias (see
    /// [`with_named_channel_layer`](Self::with_named_channel_layer)).
    pub(crate) named_layers: BTreeMap<String, ChannelLayerHandle>,
    pub(crate) settings: WsSettings,
    /// `settings.session`, shared by every connection's session.
    pub(crate) session_config: Arc<SessionConfig>,
    pub(crate) runtime: Runtime,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "websocket_routes",
                &self.routes.iter().map(WsRoute::describe).collect::<Vec<_>>(),
            )
            .field("layer", &self.layer)
            .field("named_layers", &self.named_layers)
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
            named_layers: BTreeMap::new(),
            settings: WsSettings::default(),
            session_config: Arc::new(WsSettings::default().session),
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
        self.routes.push(WsRoute::new(
            PathPattern::path(pattern)?,
            Arc::new(Factory(factory)),
        ));
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
        self.routes.push(WsRoute::new(
            PathPattern::regex(regex)?,
            Arc::new(Factory(factory)),
        ));
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
        self.session_config = Arc::new(settings.session.clone());
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

    /// The consumer and route parameters for `path`, and the channel layer
    /// the consumer lives on.
    pub(crate) fn find(&self, path: &str) -> Option<(&Arc<dyn Endpoint>, RouteParams, &ChannelLayerHandle)> {
        self.routes.iter().find_map(|route| {
            let params = route.matches(path)?;
            Some((
                &route.endpoint,
                params,
                route.layer.as_ref().unwrap_or(&self.layer),
            ))
        })
    }
}

/// A handshake that a consumer accepted, ready to run over a transport.
pub(crate) struct Accepted {
    pub(crate) session: Box<dyn OpenSession>,
    pub(crate) accept: Accept,
}
