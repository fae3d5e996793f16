//! HTTP consumers: server-sent events from groups, and long-polls (the
//! Rust form of Channels' `AsyncHttpConsumer`).
//!
//! * [`SseRoute`]: an axum route that streams the events of one or more
//!   groups to a browser's `EventSource`, one stream per request.
//! * [`LongPoll`]: waits for one event of some groups, with a timeout, in
//!   any axum handler.
//!
//! Both make a channel on the channel layer for each request, join the
//! groups with it, and leave them when the request is over, however it ends.

mod event;
mod membership;
mod poll;
mod request;
mod stats;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use estuary_core::{BoxError, ChannelLayerHandle, GroupName, Message};
use http::request::Parts;
use http::{HeaderValue, StatusCode};

pub use event::{SseEvent, SseEventError};
pub use poll::LongPoll;
pub use request::SseRequest;
pub use stats::{SseSnapshot, SseStats};

use crate::router::Runtime;
use membership::Membership;
use stream::{Live, Opening, RenderFn, Shared};
pub use stream::{MISSED_EVENT, SseSlowClient};

/// How often an [`SseRoute`] sends a keep-alive comment by default: 15 s,
/// under the idle timeouts of common proxies (30 s and up).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

type GroupsFn = Arc<dyn Fn(&SseRequest) -> Result<Vec<GroupName>, Box<Response>> + Send + Sync>;

/// A route that streams group events as server-sent events (Channels'
/// `AsyncHttpConsumer` streaming a group to the browser).
///
/// For each request the route:
///
/// 1. asks the *groups* function which groups to stream, from the
///    [`SseRequest`] (route parameters, query, headers); an `Err` is
///    answered as it is (any [`IntoResponse`]). The groups of an
///    [`Admission`](crate::Admission) an authentication middleware left in
///    the request's extensions are joined too;
/// 2. makes a channel on the channel layer and joins the groups (503 when
///    the layer fails);
/// 3. answers `200 text/event-stream` and sends each layer event received
///    on the channel, rendered by the *render* function (by default
///    [`SseEvent::from_message`]: `event:` the message's `type`, `data:` the
///    message as JSON). Events of one group arrive in the order the layer
///    delivers them (see its contract); events of several groups interleave.
///
/// # Ids and `Last-Event-ID`
///
/// Every event gets an `id:`, its position in the stream, unless the
/// renderer gave it one of its own. The ids are opaque to clients
/// (`<route>-<stream>-<position>`).
///
/// There is **no history store**: events sent to the groups while a client
/// was not connected are gone, and the route cannot replay them. A client
/// reconnecting with a `Last-Event-ID` header (as `EventSource` does
/// after a break) therefore first gets an [`MISSED_EVENT`] event with the
/// data `{"type": "estuary.missed", "reason": "reconnect", "last_event_id":
/// <the id it sent>, "known_missed": N | null}`, then the events from now
/// on. `known_missed` counts the events the previous stream sent after that
/// id (the client never got them) when this route remembers that stream (it
/// remembers the last 1024 that ended, in this process); `null` when it does
/// not. Events sent to the groups between the two connections are never
/// counted: the notice means "you may have missed events", and the client
/// should refetch what it shows.
///
/// # Buffering and slow clients
///
/// A stream buffers nothing of its own beyond the event being written: the
/// client's events wait in its channel on the layer, which holds at most
/// the layer's capacity ([`ChannelLayerConfig::capacity_for`](estuary_core::ChannelLayerConfig::capacity_for),
/// 100 by default). When it is full, see [`SseSlowClient`].
///
/// # Keep-alive, retry, end
///
/// A comment line (`: keep-alive`) is sent after [`keep_alive`](Self::keep_alive)
/// of silence (default [`DEFAULT_KEEP_ALIVE`]), so that proxies keep the
/// connection and a dead client is found. [`retry`](Self::retry) sends a
/// `retry:` field first, the browser's reconnect delay. A stream ends when
/// the client goes away, when the server shuts down, on
/// [`close_all`](Self::close_all), and when its channel fails (logged); the
/// groups are left in every case, then [`SseSnapshot::open`] drops.
///
/// # Example
///
/// ```
/// use axum::body::Body;
/// use estuary_core::{ChannelLayer, ChannelLayerHandle, GroupName, Message};
/// use estuary_server::Router;
/// use estuary_server::sse::{SseRequest, SseRoute};
/// use http::{Request, StatusCode};
/// use http_body_util::BodyExt;
/// use tower::ServiceExt;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let layer = ChannelLayerHandle::default();
/// // `/events/{room}` streams the group `room.<room>`; a bad name is a 404.
/// let events = SseRoute::new(layer.clone(), |req: &SseRequest| {
///     let room = req.param("room").unwrap_or_default();
///     GroupName::new(&format!("room.{room}"))
///         .map(|group| vec![group])
///         .map_err(|_| StatusCode::NOT_FOUND)
/// });
/// let router = Router::new()
///     .with_channel_layer(layer.clone())
///     .route("/events/{room}", events.method_router());
///
/// let request = Request::get("/events/lobby").body(Body::empty()).unwrap();
/// let response = router.into_service().oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
///
/// // A view, a worker or Django pushes to the group...
/// let score = serde_json::json!({"type": "score", "home": 2});
/// let group = GroupName::new("room.lobby").unwrap();
/// layer.group_send(&group, Message::from_json(&score).unwrap()).await.unwrap();
///
/// // ...and the browser gets it as an event.
/// let mut body = response.into_body();
/// let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
/// let text = std::str::from_utf8(&frame).unwrap();
/// assert!(text.starts_with("data: {\"home\":2,\"type\":\"score\"}\nevent: score\nid: "), "{text}");
/// assert_eq!(events.stats().snapshot().sent, 1);
/// # });
/// ```
#[derive(Clone)]
pub struct SseRoute {
    layer: ChannelLayerHandle,
    groups: GroupsFn,
    render: RenderFn,
    keep_alive: Option<Duration>,
    retry: Option<Duration>,
    slow_client: SseSlowClient,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SseRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseRoute")
            .field("layer", &self.layer)
            .field("keep_alive", &self.keep_alive)
            .field("retry", &self.retry)
            .field("slow_client", &self.slow_client)
            .field("stats", &self.shared.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl SseRoute {
    /// A route on `layer` that streams the groups `groups` chooses for each
    /// request, rendered with [`SseEvent::from_message`].
    pub fn new<F, E>(layer: ChannelLayerHandle, groups: F) -> Self
    where
        F: Fn(&SseRequest) -> Result<Vec<GroupName>, E> + Send + Sync + 'static,
        E: IntoResponse,
    {
        Self {
            layer,
            groups: Arc::new(move |request| groups(request).map_err(|e| Box::new(e.into_response()))),
            render: Arc::new(|message| Ok(Some(SseEvent::from_message(message)?))),
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            retry: None,
            slow_client: SseSlowClient::default(),
            shared: Arc::new(Shared::new()),
        }
    }

    /// Renders layer events with `render`: `Ok(Some(event))` is sent,
    /// `Ok(None)` is skipped on purpose (counted in
    /// [`SseSnapshot::skipped`]), `Err` is logged and counted in
    /// [`SseSnapshot::render_failed`]; the stream goes on either way.
    ///
    /// ```
    /// use estuary_core::ChannelLayerHandle;
    /// use estuary_server::sse::{SseEvent, SseRequest, SseRoute};
    ///
    /// let route = SseRoute::new(ChannelLayerHandle::default(), |_: &SseRequest| {
    ///     Ok::<_, http::StatusCode>(vec![])
    /// })
    /// .render(|message| {
    ///     // Plain `message` events with the text only; other types are not for browsers.
    ///     if message.message_type() != "chat.message" {
    ///         return Ok(None);
    ///     }
    ///     let text = message.to_json()["text"].as_str().unwrap_or_default().to_owned();
    ///     Ok::<_, std::convert::Infallible>(Some(SseEvent::message(text)))
    /// });
    /// # let _ = route;
    /// ```
    pub fn render<R, E>(mut self, render: R) -> Self
    where
        R: Fn(&Message) -> Result<Option<SseEvent>, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        self.render = Arc::new(move |message| render(message).map_err(Into::into));
        self
    }

    /// Sends a keep-alive comment after `interval` of silence (`None`:
    /// never). Default: [`DEFAULT_KEEP_ALIVE`].
    pub fn keep_alive(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Tells browsers to wait `delay` before reconnecting (a `retry:` field
    /// at the start of each stream). Default: none (the browser's own,
    /// about 3 s).
    pub fn retry(mut self, delay: Duration) -> Self {
        self.retry = Some(delay);
        self
    }

    /// What to do when a client falls behind. Default: [`SseSlowClient::Notify`].
    pub fn slow_client(mut self, policy: SseSlowClient) -> Self {
        self.slow_client = policy;
        self
    }

    /// The counters of this route's streams (shared by its clones).
    pub fn stats(&self) -> &SseStats {
        &self.shared.stats
    }

    /// Ends every stream open now (they leave their groups); browsers
    /// reconnect after their retry delay, with their `Last-Event-ID`. For a
    /// deploy that moves clients elsewhere, or a test of reconnection.
    /// Streams opened afterwards are not affected.
    pub fn close_all(&self) {
        self.shared.closing.send_modify(|generation| *generation += 1);
    }

    /// The route as an axum `GET` handler, for [`Router::route`](crate::Router::route)
    /// or an axum router.
    pub fn method_router<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let route = Arc::new(self.clone());
        axum::routing::get(move |parts: Parts| {
            let route = Arc::clone(&route);
            async move { route.open(parts).await }
        })
    }

    /// Answers one request: joins its groups and streams them.
    async fn open(&self, parts: Parts) -> Response {
        let shutdown = parts.extensions.get::<Runtime>().map(|r| r.shutdown.clone());
        let request = SseRequest::from_parts(parts).await;
        let mut groups = match (self.groups)(&request) {
            Ok(groups) => groups,
            Err(response) => return *response,
        };
        if let Some(admission) = request.admission() {
            for group in &admission.groups {
                if !groups.contains(group) {
                    groups.push(group.clone());
                }
            }
        }
        let membership = match Membership::join(&self.layer, groups).await {
            Ok(membership) => membership,
            Err(error) => {
                estuary_core::throttled!(warn, %error, "an SSE stream could not join its groups; the request fails (check that the channel layer is reachable)");
                return crate::service::plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the channel layer is unavailable; retry later",
                );
            }
        };
        let stream = Live::open(Opening {
            shared: Arc::clone(&self.shared),
            render: Arc::clone(&self.render),
            slow_client: self.slow_client,
            membership,
            retry: self.retry,
            last_event_id: request.last_event_id().map(str::to_owned),
            shutdown,
        });
        let mut response = match self.keep_alive {
            Some(interval) => Sse::new(stream)
                .keep_alive(KeepAlive::new().interval(interval).text("keep-alive"))
                .into_response(),
            None => Sse::new(stream).into_response(),
        };
        // Tells nginx not to hold the stream in its buffers.
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }
}
