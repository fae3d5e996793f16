//! `dashboard`: one socket per browser, all in one group, plus an HTTP
//! route that pushes to every socket through the channel layer (the Rust
//! form of calling `group_send` from a Django view).
//!
//! * Clients send requests as `{"type": "...", ...}`; each is decoded into a
//!   typed enum and answered to that client only. An unknown `type` gets an
//!   error frame, never silence.
//! * `POST /notify/{kind}` with a JSON body reaches every open socket as
//!   `{"type": "update", "kind": ..., "data": ...}`.
//!
//! Run: `cargo run -p estuary-examples --bin dashboard -- 127.0.0.1:8002`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use estuary::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const GROUP: &str = "dashboard";

/// What a browser may ask.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    /// Liveness check, echoed with its id.
    Ping { id: u64 },
    /// The number of updates this socket has received.
    Stats,
    /// Subscribe to one kind of update only.
    Filter { kind: Option<String> },
}

/// Channel-layer events.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Event {
    #[serde(rename = "dashboard.update")]
    Update { kind: String, data: Value },
}

#[derive(Default)]
struct Dashboard {
    updates: u64,
    filter: Option<String>,
}

impl Consumer for Dashboard {
    type Event = Event;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        ctx.group_add(&GroupName::new(GROUP)?).await?;
        ctx.send_json(&json!({"type": "ready"})).await?;
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        let value: Value = match message.parse_json() {
            Ok(v) => v,
            Err(_) => {
                return ctx
                    .send_json(&json!({"type": "error", "message": "invalid JSON"}))
                    .await;
            }
        };
        let request = match serde_json::from_value::<Request>(value.clone()) {
            Ok(r) => r,
            Err(e) => {
                let kind = value.get("type").cloned().unwrap_or(Value::Null);
                let error =
                    json!({"type": "error", "message": format!("bad request: {e}"), "request_type": kind});
                return ctx.send_json(&error).await;
            }
        };
        match request {
            Request::Ping { id } => ctx.send_json(&json!({"type": "pong", "id": id})).await,
            Request::Stats => {
                ctx.send_json(&json!({"type": "stats", "updates": self.updates}))
                    .await
            }
            Request::Filter { kind } => {
                self.filter = kind;
                ctx.send_json(&json!({"type": "filter", "kind": self.filter}))
                    .await
            }
        }
    }

    async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
        let Event::Update { kind, data } = event;
        if self.filter.as_ref().is_some_and(|f| f != &kind) {
            return Ok(());
        }
        self.updates += 1;
        ctx.send_json(&json!({"type": "update", "kind": kind, "data": data}))
            .await
    }
}

/// `POST /notify/{kind}`: an ordinary HTTP handler with the layer as state.
async fn notify(
    State(layer): State<ChannelLayerHandle>,
    Path(kind): Path<String>,
    Json(data): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let event = Event::Update { kind, data };
    let sent = match (GroupName::new(GROUP), Message::encode(&event)) {
        (Ok(group), Ok(message)) => layer.group_send(&group, message).await,
        _ => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "cannot encode"})),
            );
        }
    };
    match sent {
        Ok(r) => (
            StatusCode::ACCEPTED,
            Json(json!({"delivered": r.delivered, "dropped": r.dropped})),
        ),
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
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8002".into());
    let layer = ChannelLayerHandle::default();
    let http = axum::Router::new()
        .route("/notify/{kind}", post(notify))
        .with_state(layer.clone());
    let router = Router::new()
        .with_channel_layer(layer)
        .websocket("ws/", Dashboard::default)
        .merge(http);
    let server = Server::bind(addr.parse()?).await?;
    println!("listening on http://{}", server.local_addr().expect("TCP"));
    server.serve(router.into_service(), shutdown_signal()).await?;
    Ok(())
}
