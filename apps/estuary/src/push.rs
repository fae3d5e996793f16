//! The HTTP push API: `group_send` and `send` from any HTTP client, the way a
//! Django view calls `get_channel_layer()`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use estuary::prelude::*;
use estuary::{GroupSendReport, SendError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::chat::{ChatEvent, MAX_MESSAGE_CHARS, room_group, valid_room};
use crate::rooms::Rooms;

/// What the push API handlers share.
#[derive(Debug, Clone)]
pub struct PushState {
    /// The channel layer.
    pub layer: ChannelLayerHandle,
    /// Room occupancy.
    pub rooms: Rooms,
    /// A bearer token required on pushes, if set.
    pub token: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn authorize(state: &PushState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &state.token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        Ok(())
    } else {
        Err(error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn report(r: GroupSendReport) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({"delivered": r.delivered, "dropped": r.dropped})),
    )
        .into_response()
}

fn parse_body(body: &[u8]) -> Result<Message, Response> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?;
    Message::from_json(&value).map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

async fn group_send(
    State(state): State<PushState>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return r;
    }
    let group = match GroupName::new(&group) {
        Ok(g) => g,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid group name: {e}")),
    };
    let message = match parse_body(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match state.layer.group_send(&group, message).await {
        Ok(r) => report(r),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn channel_send(
    State(state): State<PushState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return r;
    }
    let channel = match ChannelName::new(&channel) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid channel name: {e}")),
    };
    let message = match parse_body(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match state.layer.send(&channel, message).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"delivered": 1}))).into_response(),
        Err(SendError::Full { capacity, .. }) => error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("channel is full ({capacity} messages)"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
struct RoomPost {
    message: String,
    #[serde(default)]
    username: Option<String>,
}

async fn room_post(
    State(state): State<PushState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return r;
    }
    if !valid_room(&room) {
        return error(StatusCode::NOT_FOUND, "invalid room name");
    }
    let post: RoomPost = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"message\": ...}}: {e}"),
            );
        }
    };
    let text = post.message.trim();
    if text.is_empty() || text.chars().count() > MAX_MESSAGE_CHARS {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid message");
    }
    let event = ChatEvent::Message {
        message: text.to_owned(),
        username: post
            .username
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "Server".into()),
        id: Some(uuid::Uuid::new_v4().simple().to_string()),
        ts: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        ),
    };
    let (Ok(group), Ok(message)) = (room_group(&room), Message::encode(&event)) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode");
    };
    match state.layer.group_send(&group, message).await {
        Ok(r) => report(r),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `GET /api/rooms`, `POST /api/groups/{group}/send`,
/// `POST /api/channels/{channel}/send`, `POST /api/rooms/{room}/messages`,
/// `GET /healthz`.
pub fn routes(state: PushState) -> axum::Router {
    axum::Router::new()
        .route(
            "/api/rooms",
            get(|State(s): State<PushState>| async move { Json(json!({"rooms": s.rooms.list()})) }),
        )
        .route("/api/groups/{group}/send", post(group_send))
        .route("/api/channels/{channel}/send", post(channel_send))
        .route("/api/rooms/{room}/messages", post(room_post))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}
