//! Long-polling: an HTTP request that waits for one event of some groups.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use estuary_core::{ChannelLayer, ChannelLayerError, ChannelLayerHandle, GroupName, Message};
use http::StatusCode;

use super::membership::Membership;

/// Waits for one event of some groups, with a timeout: the long-poll form
/// of Channels' `AsyncHttpConsumer`, for use inside any axum handler.
///
/// [`wait`](Self::wait) makes a channel, joins the groups, waits for the
/// first event on it or the timeout, then leaves the groups and closes the
/// channel, also when the request is dropped midway (the client went
/// away). [`respond`](Self::respond) does the same and answers the HTTP
/// way: `200` with the event as JSON, `204 No Content` on timeout, `503`
/// when the layer fails.
///
/// There is no history store: an event sent to the groups while no poll
/// of a client is waiting (between two polls) is not seen by that client.
/// Clients that must see every event, or know when they missed one, use an
/// [`SseRoute`](super::SseRoute).
///
/// ```
/// use std::time::Duration;
///
/// use axum::extract::{Path, State};
/// use axum::response::{IntoResponse, Response};
/// use estuary_core::{ChannelLayerHandle, GroupName};
/// use estuary_server::Router;
/// use estuary_server::sse::LongPoll;
/// use http::StatusCode;
///
/// /// `GET /poll/{room}`: the next event of the room, or 204 after 25 s.
/// async fn poll(State(layer): State<ChannelLayerHandle>, Path(room): Path<String>) -> Response {
///     let Ok(group) = GroupName::new(&format!("room.{room}")) else {
///         return StatusCode::NOT_FOUND.into_response();
///     };
///     LongPoll::new(layer, Duration::from_secs(25)).group(group).respond().await
/// }
///
/// let layer = ChannelLayerHandle::default();
/// let http = axum::Router::new()
///     .route("/poll/{room}", axum::routing::get(poll))
///     .with_state(layer.clone());
/// let router = Router::new().with_channel_layer(layer).merge(http);
/// # let _ = router;
/// ```
#[derive(Debug, Clone)]
pub struct LongPoll {
    layer: ChannelLayerHandle,
    groups: Vec<GroupName>,
    timeout: Duration,
}

impl LongPoll {
    /// A poll on `layer` that waits at most `timeout`, for no group yet.
    pub fn new(layer: ChannelLayerHandle, timeout: Duration) -> Self {
        Self {
            layer,
            groups: Vec::new(),
            timeout,
        }
    }

    /// Also waits for events of `group`.
    pub fn group(mut self, group: GroupName) -> Self {
        if !self.groups.contains(&group) {
            self.groups.push(group);
        }
        self
    }

    /// The first event sent to the groups from now on, or `None` when none
    /// came within the timeout. The groups are left before this returns.
    pub async fn wait(&self) -> Result<Option<Message>, ChannelLayerError> {
        let mut membership = Membership::join(&self.layer, self.groups.clone()).await?;
        let received = tokio::time::timeout(self.timeout, self.layer.receive(membership.channel())).await;
        membership.release().await;
        match received {
            Ok(Ok(message)) => Ok(Some(message)),
            Ok(Err(error)) => Err(error),
            Err(_elapsed) => Ok(None),
        }
    }

    /// [`wait`](Self::wait), answered: `200` with the event as JSON, `204`
    /// when none came in time, `503` (logged) when the layer failed.
    pub async fn respond(&self) -> Response {
        match self.wait().await {
            Ok(Some(message)) => Json(message.to_json()).into_response(),
            Ok(None) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => {
                estuary_core::throttled!(warn, %error, "a long-poll failed on the channel layer; the client retries (check that the channel layer is reachable)");
                crate::service::plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the channel layer is unavailable; retry later",
                )
            }
        }
    }
}
