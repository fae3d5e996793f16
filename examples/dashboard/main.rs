//! `dashboard`: one socket per browser, all in one group, plus an HTTP
//! route that pushes to every socket through the channel layer (the Rust
//! form of calling `group_send` from a Django view).
//!
//! * Clients send requests as `{"type": "...", ...}`; each is decoded into a
//!   typed enum and answered to that client only. An unknown `type` gets an
//!   error frame, never silence.
//! * `POST /notify/{kind}` with a JSON body reaches every open socket as
//!   `{"type": "update", "kind": ..., "data": ...}`.
//! * `GET /`: a page that opens the socket and shows what arrives.
//!
//! Run: `cargo run -p estuary-examples --bin dashboard -- 127.0.0.1:8002`,
//! open <http://127.0.0.1:8002/>, then push an update to it:
//! `curl -H 'content-type: application/json' -d '{"total": 42}' http://127.0.0.1:8002/notify/sales`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::{get, post};
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

/// `GET /`: the socket, live, in a page.
const INDEX: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>Estuary dashboard</title>
<h1>Dashboard</h1>
<p>Push an update:
<code>curl -H 'content-type: application/json' -d '{"total": 42}' http://HOST/notify/sales</code></p>
<pre id="log"></pre>
<script>
  const log = document.getElementById("log");
  const ws = new WebSocket(`ws://${location.host}/ws/`);
  ws.onmessage = (e) => { log.textContent += e.data + "\n"; };
  ws.onclose = (e) => { log.textContent += `closed (${e.code})\n`; };
  document.querySelector("code").textContent =
    document.querySelector("code").textContent.replace("HOST", location.host);
</script>
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8002".into());
    let layer = ChannelLayerHandle::default();
    let http = axum::Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/notify/{kind}", post(notify))
        .with_state(layer.clone());
    let router = Router::new()
        .with_channel_layer(layer)
        .websocket("ws/", Dashboard::default)
        .merge(http);
    let server = Server::bind(addr.parse()?).await?;
    let addr = server.local_addr().expect("TCP");
    println!("listening on http://{addr}");
    println!(
        "paths: GET http://{addr}/ (a page on the socket), ws://{addr}/ws/, POST http://{addr}/notify/<kind>"
    );
    println!("try:   open http://{addr}/, then");
    println!(
        "       curl -H 'content-type: application/json' -d '{{\"total\": 42}}' http://{addr}/notify/sales"
    );
    server.serve(router.into_service(), shutdown_signal()).await?;
    Ok(())
}
