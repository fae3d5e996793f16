//! `live`: a page that shows the events pushed to a group, over server-sent
//! events (`EventSource`), with no WebSocket (Channels' `AsyncHttpConsumer`
//! streaming a group to the browser).
//!
//! * `GET /?topic=news`: the page; it streams `/events/news`.
//! * `GET /events/{topic}`: the event stream of the group `live.<topic>`:
//!   each post as an event named `live.post`; `estuary.missed` when the
//!   browser reconnects (it may have missed posts meanwhile).
//! * `POST /publish/{topic}` with `{"text": "..."}`: a post to every page
//!   showing that topic (`202 {"delivered": n, "dropped": n}`).
//! * `POST /reconnect`: ends every stream; browsers reconnect with their
//!   `Last-Event-ID` (what a deploy does to them).
//! * `GET /stats`: the streams' counters.
//!
//! Run: `cargo run -p estuary-examples --bin live -- 127.0.0.1:8003`; it
//! prints its address, its paths and a `curl` command to try.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::{get, post};
use estuary::prelude::*;
use estuary::server::sse::{SseRequest, SseRoute};
use serde::Deserialize;
use serde_json::{Value, json};

/// The group of a topic; a topic that cannot name one is not found.
fn topic_group(topic: &str) -> Result<GroupName, StatusCode> {
    let valid = !topic.is_empty()
        && topic.len() <= 50
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(StatusCode::NOT_FOUND);
    }
    GroupName::new(&format!("live.{topic}")).map_err(|_| StatusCode::NOT_FOUND)
}

#[derive(Clone)]
struct App {
    layer: ChannelLayerHandle,
    events: SseRoute,
}

#[derive(Deserialize)]
struct Post {
    text: String,
}

/// `POST /publish/{topic}`: the Rust form of `group_send` from a Django view.
async fn publish(
    State(app): State<App>,
    Path(topic): Path<String>,
    Json(post): Json<Post>,
) -> (StatusCode, Json<Value>) {
    let group = match topic_group(&topic) {
        Ok(group) => group,
        Err(status) => return (status, Json(json!({"error": "invalid topic"}))),
    };
    let event = json!({"type": "live.post", "topic": topic, "text": post.text});
    let message = match Message::from_json(&event) {
        Ok(message) => message,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": e.to_string()})),
            );
        }
    };
    match app.layer.group_send(&group, message).await {
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

/// `POST /reconnect`: every browser reconnects, sending its `Last-Event-ID`.
async fn reconnect(State(app): State<App>) -> StatusCode {
    app.events.close_all();
    StatusCode::ACCEPTED
}

async fn stats(State(app): State<App>) -> Json<Value> {
    let s = app.events.stats().snapshot();
    Json(json!({
        "open": s.open, "opened": s.opened, "sent": s.sent, "lost": s.lost,
        "resumed": s.resumed,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8003".into());
    let layer = ChannelLayerHandle::default();
    // One stream per page; the browser waits half a second before it
    // reconnects.
    let events = SseRoute::new(layer.clone(), |req: &SseRequest| {
        topic_group(req.param("topic").unwrap_or_default()).map(|group| vec![group])
    })
    .retry(Duration::from_millis(500));
    let app = App {
        layer: layer.clone(),
        events: events.clone(),
    };
    let http = axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/publish/{topic}", post(publish))
        .route("/reconnect", post(reconnect))
        .route("/stats", get(stats))
        .with_state(app);
    let router = Router::new()
        .with_channel_layer(layer)
        .route("/events/{topic}", events.method_router())
        .merge(http);
    let server = Server::bind(addr.parse()?).await?;
    let local = server.local_addr().expect("TCP");
    println!("listening on http://{local}");
    println!(
        "paths: GET http://{local}/?topic=news (the page), GET http://{local}/events/<topic> (text/event-stream), \
         POST http://{local}/publish/<topic> {{\"text\": ...}}, POST http://{local}/reconnect, GET http://{local}/stats"
    );
    println!("try:   curl -N http://{local}/events/news   (in one terminal; or open the page)");
    println!(
        "       curl -H 'content-type: application/json' -d '{{\"text\": \"hello\"}}' http://{local}/publish/news"
    );
    server.serve(router.into_service(), shutdown_signal()).await?;
    Ok(())
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Live</title>
  <style>
    body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
    #status[data-state=open] { color: green; }
    #notices li { color: #a60; }
  </style>
</head>
<body data-opens="0">
  <h1>Live: <span id="topic"></span></h1>
  <p>Stream: <span id="status" data-state="connecting">connecting</span></p>
  <ul id="notices"></ul>
  <ul id="events"></ul>
  <script>
    const topic = new URLSearchParams(location.search).get('topic') || 'news';
    document.getElementById('topic').textContent = topic;
    const status = document.getElementById('status');
    const setStatus = (state) => { status.dataset.state = state; status.textContent = state; };
    const source = new EventSource('/events/' + encodeURIComponent(topic));
    source.onopen = () => {
      document.body.dataset.opens = String(Number(document.body.dataset.opens) + 1);
      setStatus('open');
    };
    source.onerror = () => setStatus(source.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
    source.addEventListener('live.post', (e) => {
      const li = document.createElement('li');
      li.textContent = JSON.parse(e.data).text;
      li.dataset.id = e.lastEventId;
      document.getElementById('events').append(li);
    });
    // The server keeps no history: after a break it says what it knows.
    source.addEventListener('estuary.missed', (e) => {
      const notice = JSON.parse(e.data);
      const li = document.createElement('li');
      li.textContent = notice.reason === 'reconnect'
        ? 'Reconnected: posts sent meanwhile may be missing; reload to be sure.'
        : notice.count + ' posts were dropped: this page fell behind.';
      li.dataset.notice = e.data;
      document.getElementById('notices').append(li);
    });
  </script>
</body>
</html>
"#;
