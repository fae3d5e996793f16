//! The HTTP push API: `group_send` and `send` from any HTTP client, the way a
//! Django view calls `get_channel_layer()`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use estuary::prelude::*;
use estuary::{GroupSendReport, PresenceError, SendError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::chat::{room_group, valid_room};
use crate::online::Online;
use crate::posts::{InvalidPost, server_post};
use crate::rooms::Rooms;

/// What the push API handlers share.
#[derive(Debug, Clone)]
pub struct PushState {
    /// The channel layer.
    pub layer: ChannelLayerHandle,
    /// Room occupancy in this process (for a layer without presence).
    pub rooms: Rooms,
    /// Room occupancy across processes (for a layer with presence).
    pub online: Online,
    /// Who may push.
    pub access: PushAccess,
    /// Largest body accepted, in bytes (`websocket.max_event_size`); larger
    /// gets 413.
    pub max_body: usize,
}

/// Who may call the push API's POST routes. Closed unless configured:
/// a push reaches every member of a room, so it is never open by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAccess {
    /// Nobody: 403 (no token configured, and not declared open).
    Closed,
    /// Callers sending `Authorization: Bearer <token>`; others get 401.
    Token(String),
    /// Anyone who reaches the port (`push_insecure`).
    Insecure,
}

impl PushAccess {
    /// From `push_token` and `push_insecure`; a token wins over `push_insecure`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        match (&config.push_token, config.push_insecure) {
            (Some(token), _) => Self::Token(token.clone()),
            (None, true) => Self::Insecure,
            (None, false) => Self::Closed,
        }
    }
}

/// An error answer of the push API: a status and `{"error": ...}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({"error": self.message}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Middleware on the POST routes: the bearer token, when one is configured.
async fn require_token(
    State(state): State<PushState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authorize(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn authorize(state: &PushState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = match &state.access {
        PushAccess::Insecure => return Ok(()),
        PushAccess::Closed => {
            return Err(error(
                StatusCode::FORBIDDEN,
                "the push API is closed: the operator must set push_token (or push_insecure)",
            ));
        }
        PushAccess::Token(token) => token,
    };
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

/// 202 with the report: how many members got the message, how many were
/// skipped, and where a recorded group's history put it.
fn report(r: GroupSendReport) -> Response {
    let mut body = json!({"delivered": r.delivered, "dropped": r.dropped});
    if let Some(position) = r.position {
        body["position"] = json!(position);
    }
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Refuses bodies not sent as `application/json`: a browser can POST other
/// types across sites without a CORS preflight, JSON it cannot.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if json {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as application/json",
        ))
    }
}

/// Reads a body of at most `limit` bytes: 413 past it, 408 when it does not
/// arrive within the server's body timeout, 400 when the client broke off.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(cause) = source {
            if cause.is::<estuary::BodyTimeout>() {
                return error(StatusCode::REQUEST_TIMEOUT, "request body not received in time");
            }
            if cause.is::<http_body_util::LengthLimitError>() {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than {limit} bytes (max_event_size)"),
                );
            }
            source = cause.source();
        }
        error(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"))
    })
}

fn parse_body(body: &[u8]) -> Result<Message, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?;
    Message::from_json(&value).map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

async fn group_send(
    State(state): State<PushState>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = read_body(body, state.max_body).await?;
    let group = GroupName::new(&group)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid group name: {e}")))?;
    let message = parse_body(&body)?;
    match state.layer.group_send(&group, message).await {
        Ok(r) => Ok(report(r)),
        Err(e) => Err(layer_error(e)),
    }
}

/// 503 for a failed layer: unreachable, or (in-memory) holding
/// `layer.max_bytes` already. Either way the caller may retry later.
fn layer_error(e: estuary::ChannelLayerError) -> ApiError {
    match e {
        estuary::ChannelLayerError::TooManyBytes { limit } => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the channel layer is full: it holds {limit} bytes of undelivered messages \
                 (layer.max_bytes); retry later"
            ),
        ),
        other => error(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

async fn channel_send(
    State(state): State<PushState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = read_body(body, state.max_body).await?;
    let channel = ChannelName::new(&channel)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid channel name: {e}")))?;
    let message = parse_body(&body)?;
    match state.layer.send(&channel, message).await {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(json!({"delivered": 1}))).into_response()),
        Err(SendError::Full { capacity, .. }) => Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("channel is full ({capacity} messages)"),
        )),
        Err(SendError::Backend {
            error: estuary::ChannelLayerError::TooManyChannels { limit },
            ..
        }) => Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many channels: the layer holds {limit} (layer.max_channels)"),
        )),
        Err(SendError::Backend { error, .. }) => Err(layer_error(error)),
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
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = read_body(body, state.max_body).await?;
    if !valid_room(&room) {
        return Err(error(StatusCode::NOT_FOUND, "invalid room name"));
    }
    let post: RoomPost = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"message\": ...}}: {e}"),
        )
    })?;
    let event = server_post(&post.message, post.username.as_deref()).map_err(|invalid| match invalid {
        InvalidPost::Username => error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid username"),
        InvalidPost::Message | InvalidPost::Room => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid message")
        }
    })?;
    let group = room_group(&room).map_err(|e| error(StatusCode::NOT_FOUND, e.to_string()))?;
    let message =
        Message::encode(&event).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match state.layer.group_send(&group, message).await {
        Ok(r) => Ok(report(r)),
        Err(e) => Err(layer_error(e)),
    }
}

/// `GET /api/rooms`: the occupied rooms and their connections, across
/// processes (presence), or in this process (a layer without presence).
async fn rooms(State(state): State<PushState>) -> Result<Response, ApiError> {
    if !state.online.tracks() {
        return Ok(Json(json!({"rooms": state.rooms.list()})).into_response());
    }
    let rooms = state.online.rooms().await.map_err(presence_error)?;
    Ok(Json(json!({"rooms": rooms})).into_response())
}

/// `GET /api/rooms/{room}/presence`: who is in a room, by name, across
/// processes.
async fn room_presence(
    State(state): State<PushState>,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    if !valid_room(&room) {
        return Err(error(StatusCode::NOT_FOUND, "invalid room name"));
    }
    if !state.online.tracks() {
        return Err(presence_error(PresenceError::Unsupported));
    }
    let presence = state.online.room(&room).await.map_err(presence_error)?;
    Ok(Json(presence).into_response())
}

/// `GET /api/groups/{group}/presence`: a group's presence as the library
/// lists it (keys, metadata, connections, versions), for the application
/// (a Django view asking who is online).
async fn group_presence(
    State(state): State<PushState>,
    Path(group): Path<String>,
) -> Result<Response, ApiError> {
    let group = GroupName::new(&group)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid group name: {e}")))?;
    let presence = state
        .layer
        .presence()
        .ok_or_else(|| presence_error(PresenceError::Unsupported))?;
    let list = presence.presence_list(&group).await.map_err(presence_error)?;
    Ok(Json(json!({
        "group": group.as_str(),
        "keys": list.keys(),
        "connections": list.connections(),
        "version": list.version,
        "entries": list.entries,
    }))
    .into_response())
}

/// 501 for a layer without presence (Redis pub/sub), 503 for a failed one.
fn presence_error(e: PresenceError) -> ApiError {
    match e {
        PresenceError::Unsupported => error(
            StatusCode::NOT_IMPLEMENTED,
            "this channel layer does not track presence (the Redis pub/sub layer)",
        ),
        PresenceError::Layer(e) => layer_error(e),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// `GET /healthz`: 200 when the channel layer is reachable, 503 when not
/// (WebSockets stay open meanwhile).
async fn health(State(state): State<PushState>) -> Response {
    if state.layer.is_available() {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "channel layer unavailable"})),
        )
            .into_response()
    }
}

/// The push API's OpenAPI 3.0 document (`apps/estuary/openapi.json`),
/// served at `GET /api/openapi.json`. Written by hand; the `openapi` test and
/// schemathesis (in `scripts/test.sh`) keep it true.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Every route this module serves, as `(method, path)` in axum's path
/// syntax (which is OpenAPI's). [`routes`] mounts exactly these, so a route
/// cannot be served without being listed here, and the `openapi` test checks
/// that this list and the document's operations are the same.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/rooms"),
    ("GET", "/api/rooms/{room}/presence"),
    ("POST", "/api/rooms/{room}/messages"),
    ("POST", "/api/groups/{group}/send"),
    ("GET", "/api/groups/{group}/presence"),
    ("POST", "/api/channels/{channel}/send"),
    ("GET", "/api/openapi.json"),
    ("GET", "/healthz"),
];

/// The handler of one entry of [`ROUTES`]; POST routes, and what the
/// application asks about groups, need the token.
fn endpoint(method: &str, path: &str, state: &PushState) -> MethodRouter<PushState> {
    let push = |route: MethodRouter<PushState>| {
        route.route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
    };
    match (method, path) {
        ("GET", "/api/rooms") => get(rooms),
        ("GET", "/api/rooms/{room}/presence") => get(room_presence),
        ("POST", "/api/rooms/{room}/messages") => push(post(room_post)),
        ("POST", "/api/groups/{group}/send") => push(post(group_send)),
        ("GET", "/api/groups/{group}/presence") => push(get(group_presence)),
        ("POST", "/api/channels/{channel}/send") => push(post(channel_send)),
        ("GET", "/api/openapi.json") => {
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON) })
        }
        ("GET", "/healthz") => get(health),
        _ => unreachable!("ROUTES lists {method} {path} but no handler serves it"),
    }
}

/// The routes of [`ROUTES`]: `GET /api/rooms`, `GET /api/rooms/{room}/presence`,
/// `POST /api/groups/{group}/send`, `GET /api/groups/{group}/presence`,
/// `POST /api/channels/{channel}/send`, `POST /api/rooms/{room}/messages`,
/// `GET /api/openapi.json`, `GET /healthz`.
pub fn routes(state: PushState) -> axum::Router {
    ROUTES
        .iter()
        .fold(axum::Router::new(), |router, &(method, path)| {
            router.route(path, endpoint(method, path, &state))
        })
        .with_state(state)
}
