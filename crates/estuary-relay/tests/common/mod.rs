//! What the relay's tests share: an app with one relayed route on an
//! in-memory layer, and a worker's side of the protocol played in Rust.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use estuary_core::{ChannelLayer, ChannelLayerHandle, ChannelName, InMemoryChannelLayer, Message};
use estuary_relay::Relay;
use estuary_server::{Router, RouterService};
use serde_json::{Value, json};

/// How long a worker waits for an event.
pub const WAIT: Duration = Duration::from_secs(120);

/// The worker channel every test relays to.
pub const WORKER: &str = "chat";

/// The route every test serves.
pub const ROUTE: &str = "ws/chat/<room>/<int:n>/";

pub fn worker() -> ChannelName {
    ChannelName::new(WORKER).unwrap()
}

/// An app serving `relay` at [`ROUTE`] on `layer`.
pub fn app(relay: &Relay, layer: &InMemoryChannelLayer) -> RouterService {
    Router::new()
        .with_channel_layer(ChannelLayerHandle::new(layer.clone()))
        .websocket(ROUTE, relay.factory())
        .into_service()
}

/// A message's msgpack as JSON, byte strings as text (tests only look at
/// what they expect to be text).
pub fn json_of(message: &Message) -> Value {
    fn conv(v: &rmpv::Value) -> Value {
        match v {
            rmpv::Value::Nil => Value::Null,
            rmpv::Value::Boolean(b) => json!(b),
            rmpv::Value::Integer(n) => n.as_i64().map_or(Value::Null, |n| json!(n)),
            rmpv::Value::String(s) => json!(s.as_str().unwrap_or_default()),
            rmpv::Value::Binary(b) => json!({"bin": String::from_utf8_lossy(b)}),
            rmpv::Value::Array(a) => Value::Array(a.iter().map(conv).collect()),
            rmpv::Value::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), conv(v)))
                    .collect(),
            ),
            _ => Value::Null,
        }
    }
    conv(&message.to_value())
}

/// The worker's side: reads events from the worker channel and answers
/// to connections' channels.
#[derive(Clone)]
pub struct FakeWorker {
    pub layer: InMemoryChannelLayer,
}

impl FakeWorker {
    /// The next event on the worker channel, as JSON.
    pub async fn next(&self) -> Value {
        let message = tokio::time::timeout(WAIT, self.layer.receive(&worker()))
            .await
            .expect("an event reached the worker channel in time")
            .expect("the worker channel can be read");
        json_of(&message)
    }

    /// The next event, which must be of `kind`.
    pub async fn expect(&self, kind: &str) -> Value {
        let event = self.next().await;
        assert_eq!(event["type"], kind, "{event}");
        event
    }

    /// Sends `message` (JSON) to `event`'s connection.
    pub async fn reply(&self, event: &Value, message: Value) {
        let channel = ChannelName::new(event["channel"].as_str().unwrap()).unwrap();
        self.layer
            .send(&channel, Message::from_json(&message).unwrap())
            .await
            .unwrap();
    }

    /// `estuary.ack` for `event`, with `state` when given.
    pub async fn ack(&self, event: &Value, state: Option<Value>) {
        let mut ack = json!({"type": "estuary.ack", "seq": event["seq"]});
        if let Some(state) = state {
            ack["state"] = state;
        }
        self.reply(event, ack).await;
    }

    /// Accepts a `websocket.connect` and acknowledges it.
    pub async fn accept(&self) -> Value {
        let event = self.expect("websocket.connect").await;
        self.reply(&event, json!({"type": "websocket.accept"})).await;
        self.ack(&event, None).await;
        event
    }

    /// Echoes a `websocket.receive` and acknowledges it.
    pub async fn echo(&self) -> Value {
        let event = self.expect("websocket.receive").await;
        let text = format!("echo:{}", event["text"].as_str().unwrap_or_default());
        self.reply(&event, json!({"type": "websocket.send", "text": text}))
            .await;
        self.ack(&event, None).await;
        event
    }
}
