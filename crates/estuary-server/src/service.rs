//! The router as a tower service: WebSocket handshakes (routing, `connect`,
//! the 101 answer, the upgraded connection's task) and HTTP requests.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use estuary_core::{Accept, Outcome, Scope};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;

use crate::layers::UnknownChannelLayer;
use crate::limits::Slots;
use crate::router::{Accepted, ConnectionInfo, Router, Runtime};
use crate::transport::{AnyTransport, SocketTransport};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A [`Router`] as a tower [`Service`](tower::Service) over HTTP requests.
///
/// Wrap it in tower layers ([`OriginLayer`](crate::OriginLayer), an
/// authentication layer, `tower-http`) and hand it to a
/// [`Server`](crate::Server). Cloning it is cheap: clones share one router.
///
/// ```
/// use axum::{body::Body, routing::get};
/// use estuary_server::{Router, RouterService};
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let service: RouterService = Router::new().route("/health", get(|| async { "ok" })).into();
///
/// let request = Request::get("/health").body(Body::empty()).unwrap();
/// let response = service.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
///
/// let request = Request::get("/missing").body(Body::empty()).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::NOT_FOUND);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct RouterService {
    inner: Arc<Router>,
}

impl RouterService {
    pub(crate) fn new(router: Router) -> Self {
        Self {
            inner: Arc::new(router),
        }
    }
}

// Here rather than in router.rs, so that the router does not depend on
// the service it is frozen into, nor on the layers' lookup.
impl Router {
    /// Freezes the router into a cloneable tower service.
    ///
    /// # Panics
    ///
    /// When a consumer names a channel layer the router does not have (a
    /// programming error, found at start-up); use
    /// [`try_into_service`](Self::try_into_service) to handle it.
    pub fn into_service(self) -> RouterService {
        match self.try_into_service() {
            Ok(service) => service,
            Err(e) => panic!("invalid router: {e}"),
        }
    }

    /// Freezes the router into a cloneable tower service, once every
    /// consumer's channel layer alias is found among the router's layers
    /// (see [`with_named_channel_layer`](Self::with_named_channel_layer)).
    pub fn try_into_service(mut self) -> Result<RouterService, UnknownChannelLayer> {
        self.resolve_channel_layers()?;
        Ok(RouterService::new(self))
    }
}

impl From<Router> for RouterService {
    fn from(router: Router) -> Self {
        router.into_service()
    }
}

pub(crate) fn plain(status: StatusCode, reason: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{reason}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// RFC 6455 4.1: the key is 16 bytes, base64-encoded (24 characters).
pub(crate) fn valid_websocket_key(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|nonce| nonce.len() == 16)
}

pub(crate) fn is_websocket_upgrade(headers: &HeaderMap, method: &Method) -> bool {
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

/// Headers that served the handshake and mean nothing to a consumer
/// afterwards: the scope does not keep them.
const HANDSHAKE_ONLY: [header::HeaderName; 6] = [
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::UPGRADE,
    header::CONNECTION,
    header::CONTENT_LENGTH,
];

/// The headers a scope keeps: all but the handshake-only ones. The scope
/// copies them into one compact buffer of its own
/// ([`ScopeBuilder::headers_from`](estuary_core::ScopeBuilder::headers_from)):
/// hyper's header values are slices of its read buffer, and a scope that
/// kept them would keep that whole buffer alive for the life of the
/// WebSocket. What is kept is bounded by the server's head limit
/// ([`ServerConfig::max_header_size`](crate::ServerConfig::max_header_size)).
pub(crate) fn kept_headers(headers: &HeaderMap) -> impl Iterator<Item = (&header::HeaderName, &HeaderValue)> {
    headers.iter().filter(|(name, _)| !HANDSHAKE_ONLY.contains(name))
}

/// What of the handshake request's extensions the scope keeps: what
/// middleware put there, without the server's own plumbing (the connection's
/// [`ConnectionInfo`](crate::ConnectionInfo), which the scope holds as
/// fields, its runtime and handshake timeout). Empty, they take no memory:
/// every open connection keeps its scope.
pub(crate) fn scope_extensions(extensions: &mut http::Extensions) -> http::Extensions {
    extensions.remove::<crate::ConnectionInfo>();
    extensions.remove::<crate::Runtime>();
    extensions.remove::<HandshakeTimeout>();
    let kept = std::mem::take(extensions);
    if kept.is_empty() {
        http::Extensions::new()
    } else {
        kept
    }
}

/// The subprotocols offered in `Sec-WebSocket-Protocol`, in order.
pub(crate) fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Checks that `req` is a WebSocket opening handshake this server speaks
/// (HTTP/1.1 or later, version 13, a well-formed key): its key, or the
/// refusal to answer. Checked before anything of the application runs: a
/// malformed handshake is a broken client.
pub(crate) fn check_upgrade<B>(req: &Request<B>) -> Result<HeaderValue, Box<Response<Body>>> {
    // RFC 6455 4.1: the opening handshake is an HTTP/1.1 (or later) GET.
    if req.version() < Version::HTTP_11 {
        return Err(Box::new(plain(
            StatusCode::BAD_REQUEST,
            "WebSocket upgrades need HTTP/1.1",
        )));
    }
    let headers = req.headers();
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut response = plain(StatusCode::UPGRADE_REQUIRED, "unsupported WebSocket version");
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(Box::new(response));
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        None => Err(Box::new(plain(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        ))),
        Some(key) if !valid_websocket_key(key.as_bytes()) => Err(Box::new(plain(
            StatusCode::BAD_REQUEST,
            "invalid Sec-WebSocket-Key",
        ))),
        Some(key) => Ok(key.clone()),
    }
}

/// The `101 Switching Protocols` answer to a handshake with `key` (checked
/// by [`check_upgrade`]).
pub(crate) fn switching_protocols(key: &HeaderValue) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    // Base64 of a digest: always a valid header value.
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// How long a connection closed at once waits for the client's close frame.
const CLOSE_AT_ONCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Completes the handshake `req` and closes the connection at once with
/// `frame`, running nothing of the application: how a handshake is refused
/// with a close code a browser can read (it cannot read a refused
/// handshake's HTTP status). A code that cannot be sent (1005, 1006, ...)
/// becomes 1008. The first subprotocol the client offered is selected (a
/// browser fails a handshake that offered some and got none back, and would
/// then show 1006 instead of the code). The connection keeps its slots in
/// the server's limits until it is closed, holds small buffers meanwhile,
/// and is dropped when the server shuts down.
pub(crate) fn close_at_once<B>(mut req: Request<B>, frame: estuary_core::CloseFrame) -> Response<Body> {
    if !is_websocket_upgrade(req.headers(), req.method()) {
        return plain(StatusCode::BAD_REQUEST, "not a WebSocket upgrade");
    }
    let key = match check_upgrade(&req) {
        Ok(key) => key,
        Err(refusal) => return *refusal,
    };
    let frame = if frame.code().is_sendable() {
        frame
    } else {
        estuary_core::CloseFrame::new(estuary_core::CloseCode::POLICY_VIOLATION, frame.reason())
    };
    let protocol = offered_subprotocols(req.headers())
        .into_iter()
        .next()
        .and_then(|p| HeaderValue::from_str(&p).ok());
    let slots = req.extensions_mut().remove::<Slots>();
    let runtime = req.extensions().get::<Runtime>().cloned();
    let shutdown = runtime.as_ref().map(|r| r.shutdown.clone()).unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let closing = async move {
        let _slots = slots;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        // Nothing the client sends is wanted: small buffers and limits bound
        // what it can make the server hold meanwhile.
        let config = crate::socket::SocketConfig {
            limits: crate::codec::read::Limits {
                max_message: 4096,
                max_frame: 4096,
            },
            read_size: 1024,
            write_size: 0,
            close_timeout: CLOSE_AT_ONCE_TIMEOUT,
        };
        let mut transport = SocketTransport::new(upgraded, config);
        tokio::select! {
            () = estuary_core::Transport::close(&mut transport, Some(frame)) => {}
            () = shutdown.cancelled() => {}
        }
    };
    match runtime {
        Some(runtime) => drop(runtime.tracker.spawn(closing)),
        None => drop(tokio::spawn(closing)),
    }
    let mut response = switching_protocols(&key);
    if let Some(protocol) = protocol {
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
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
        let Some((endpoint, params, layer)) = router.find(&path) else {
            return Err(crate::report::refused(
                plain(StatusCode::NOT_FOUND, "no WebSocket route for this path"),
                crate::HandshakeRefusal::Route,
            ));
        };
        let mut builder = Scope::builder(path.clone())
            .raw_path(raw_path)
            .query_string(parts.uri.query().unwrap_or_default())
            .subprotocols(offered_subprotocols(&parts.headers))
            .headers_from(kept_headers(&parts.headers));
        if let Some(admission) = parts.extensions.remove::<crate::Admission>() {
            // A recheck the admission still carries (one given to a test
            // communicator; `AuthLayer` takes it out) runs all the same.
            if admission.user.is_some()
                && let Some(recheck) = admission.recheck
            {
                parts.extensions.insert(recheck);
            }
            builder = builder
                .user(admission.user)
                .initial_groups(admission.groups)
                .data(admission.data);
        }
        if let Some(client) = info.client {
            builder = builder.client(client);
        }
        if let Some(local) = info.local {
            builder = builder.server(local);
        }
        if let Some(root_path) = &info.root_path {
            builder = builder.root_path(root_path.as_ref());
        }
        builder = builder.secure(info.secure);
        for (name, value) in params {
            builder = builder.param(name, value);
        }
        let scope = builder
            .extensions(scope_extensions(&mut parts.extensions))
            .build();
        let opening = endpoint.open(scope, layer.clone(), router.session_config.clone());
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
        let key = match check_upgrade(&req) {
            Ok(key) => key,
            Err(refusal) => return *refusal,
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
        // The connection's slots in the server's limits: the WebSocket holds
        // them after the HTTP connection that carried it is done.
        let slots = req.extensions_mut().remove::<Slots>();
        let on_upgrade = hyper::upgrade::on(&mut req);
        let (mut parts, _body) = req.into_parts();
        let offered = offered_subprotocols(&parts.headers);
        let Accepted { session, accept } = match self.open(&mut parts, info, timeout).await {
            Ok(accepted) => accepted,
            Err(mut response) => {
                if response.extensions().get::<crate::HandshakeRefusal>().is_none() {
                    response.extensions_mut().insert(crate::HandshakeRefusal::Connect);
                }
                return response;
            }
        };

        let mut response = switching_protocols(&key);
        let h = response.headers_mut();
        h.extend(accept.headers);
        if let Some(protocol) = accept.subprotocol {
            match HeaderValue::from_str(&protocol) {
                Ok(v) if offered.contains(&protocol) => {
                    h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
                }
                _ => {
                    estuary_core::throttled!(error, %protocol, "consumer selected a subprotocol the client did not offer; ignored (a bug in the consumer)")
                }
            }
        }

        let socket_config = self.inner.settings.socket_config();
        let shutdown = runtime.shutdown.clone();
        let tracker = runtime.tracker.clone();
        // This task waits for the upgrade, then hands the connection to a
        // task of the session's own (see `OpenSession::spawn`) and ends.
        runtime.tracker.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    let _slots = slots;
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
            let transport = AnyTransport::Socket(SocketTransport::new(upgraded, socket_config));
            session.spawn(transport, shutdown, &tracker, slots);
        });
        response
    }
}

/// An accepted in-process connection; see [`RouterService::open_in_memory`].
///
/// ```
/// use estuary_core::{CloseCode, CloseFrame, Consumer, ConsumerError, Context, Inbound, NoEvent, WsMessage};
/// use estuary_server::{ConnectionInfo, Router, ServerFrame};
/// use http::Request;
/// use tokio_util::sync::CancellationToken;
///
/// struct Echo;
///
/// impl Consumer for Echo {
///     type Event = NoEvent;
///     async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
///         ctx.send(msg).await
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let service = Router::new().websocket("ws/echo/", || Echo).into_service();
/// let request = Request::get("/ws/echo/").body(()).unwrap();
/// let mut conn = service
///     .open_in_memory(request, ConnectionInfo::default(), CancellationToken::new())
///     .await
///     .expect("accepted");
///
/// conn.client.to_server.send(Inbound::Message(WsMessage::text("hi"))).await.unwrap();
/// let reply = conn.client.from_server.recv().await;
/// assert_eq!(reply, Some(ServerFrame::Message(WsMessage::text("hi"))));
///
/// let bye = CloseFrame::new(CloseCode::NORMAL, "");
/// conn.client.to_server.send(Inbound::Close(Some(bye))).await.unwrap();
/// let outcome = conn.task.await.unwrap();
/// assert!(outcome.client_closed);
/// assert_eq!(outcome.code, CloseCode::NORMAL);
/// # });
/// ```
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Tenant(&'static str);

    #[test]
    fn the_scope_keeps_what_middleware_added_and_not_the_servers_plumbing() {
        let plumbing = |ext: &mut http::Extensions| {
            ext.insert(ConnectionInfo::default());
            ext.insert(Runtime::default());
            ext.insert(HandshakeTimeout(Duration::from_secs(1)));
        };
        let mut ext = http::Extensions::new();
        plumbing(&mut ext);
        ext.insert(Tenant("acme"));
        let kept = scope_extensions(&mut ext);
        assert_eq!(kept.get::<Tenant>(), Some(&Tenant("acme")));
        assert!(kept.get::<ConnectionInfo>().is_none());
        assert!(kept.get::<Runtime>().is_none());
        assert!(kept.get::<HandshakeTimeout>().is_none());
        assert_eq!(kept.len(), 1);

        let mut ext = http::Extensions::new();
        plumbing(&mut ext);
        assert!(
            scope_extensions(&mut ext).is_empty(),
            "nothing of the server's left"
        );
    }
}
