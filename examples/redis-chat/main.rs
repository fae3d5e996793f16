//! `redis-chat`: the Channels tutorial's chat room on the Redis channel
//! layer, so that several processes share the rooms: a message sent to one
//! process reaches the members connected to every other (and a Django
//! project's `group_send` on the same Redis and prefix, see `docs/DJANGO.md`).
//!
//! * `/ws/chat/<slug:room>/`: the client sends `{"message": "..."}`; every
//!   member of the room, on any process, gets `{"message": "..."}`.
//! * `POST /rooms/{room}/messages` with `{"message": "..."}`: the same, from
//!   an HTTP handler (Channels' `group_send` from a view).
//!
//! Run two processes on one Redis, then chat from one to the other:
//!
//! ```sh
//! cargo run -p estuary-examples --bin redis-chat -- 127.0.0.1:8004
//! cargo run -p estuary-examples --bin redis-chat -- 127.0.0.1:8005
//! websocat ws://127.0.0.1:8004/ws/chat/lobby/   # type {"message": "hi"}
//! websocat ws://127.0.0.1:8005/ws/chat/lobby/   # prints {"message":"hi"}
//! ```
//!
//! Arguments: `[ADDRESS] [REDIS_URL] [PREFIX]`, by default
//! `127.0.0.1:8004 redis://127.0.0.1:6379/0 asgi` (`asgi` is channels_redis'
//! default prefix: a Django project with the default `CHANNEL_LAYERS`
//! shares the rooms).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use estuary::prelude::*;
use estuary::redis::{RedisChannelLayer, RedisConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The tutorial's layer event: `{"type": "chat.message", "message": ...}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Event {
    #[serde(rename = "chat.message")]
    ChatMessage { message: String },
}

/// What a client sends: `{"message": "..."}`.
#[derive(Debug, Deserialize)]
struct Incoming {
    message: String,
}

/// One member of one room.
#[derive(Default)]
struct Chat {
    group: Option<GroupName>,
}

fn room_group(room: &str) -> Result<GroupName, ConsumerError> {
    Ok(GroupName::new(&format!("chat_{room}"))?)
}

impl Consumer for Chat {
    type Event = Event;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let room: String = ctx.scope().param("room")?;
        let group = room_group(&room)?;
        ctx.group_add(&group).await?;
        self.group = Some(group);
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        let Ok(Incoming { message }) = message.parse_json() else {
            return ctx
                .send_json(&json!({"error": "send {\"message\": \"...\"}"}))
                .await;
        };
        if let Some(group) = &self.group {
            ctx.group_send(group, &Event::ChatMessage { message }).await?;
        }
        Ok(())
    }

    /// The same frame for every member: rendered once per group message.
    fn render(event: &Event) -> Option<WsMessage> {
        let Event::ChatMessage { message } = event;
        WsMessage::json(&json!({ "message": message })).ok()
    }
}

/// `POST /rooms/{room}/messages`: a message into a room from HTTP.
async fn post_message(
    State(layer): State<ChannelLayerHandle>,
    Path(room): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let Some(message) = body.get("message").and_then(|m| m.as_str()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected {\"message\": \"...\"}"})),
        );
    };
    let event = Event::ChatMessage {
        message: message.to_owned(),
    };
    let (Ok(group), Ok(message)) = (room_group(&room), Message::encode(&event)) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "no such room"})));
    };
    match layer.group_send(&group, message).await {
        Ok(report) => (StatusCode::ACCEPTED, Json(json!({"delivered": report.delivered}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": e.to_string()})),
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8004".into());
    let redis = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let prefix = args.next().unwrap_or_else(|| "asgi".into());

    // Channels' CHANNEL_LAYERS = {"default": {"BACKEND":
    // "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [...]}}}
    let layer = ChannelLayerHandle::new(RedisChannelLayer::new(
        RedisConfig::new([redis.as_str()]).with_prefix(prefix.clone()),
    )?);
    let http = axum::Router::new()
        .route("/rooms/{room}/messages", post(post_message))
        .with_state(layer.clone());
    let router = Router::new()
        .with_channel_layer(layer)
        .websocket("ws/chat/<slug:room>/", Chat::default)
        .merge(http);

    let server = Server::bind(addr.parse()?).await?;
    let addr = server.local_addr().expect("TCP");
    println!("listening on http://{addr}");
    println!(
        "channel layer: {redis} (prefix {prefix:?}); start a second process on another port to share the rooms"
    );
    println!("paths: ws://{addr}/ws/chat/<room>/ and POST http://{addr}/rooms/<room>/messages");
    println!("try:   websocat ws://{addr}/ws/chat/lobby/    then type {{\"message\": \"hi\"}}");
    println!(
        "       curl -H 'content-type: application/json' -d '{{\"message\": \"hi\"}}' http://{addr}/rooms/lobby/messages"
    );
    server.serve(router.into_service(), shutdown_signal()).await?;
    Ok(())
}
