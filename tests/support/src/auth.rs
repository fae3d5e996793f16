//! The auth harness: the who-am-I consumer behind an
//! [`AuthLayer`], on an optional route
//! (`/ws/open/`) and a required one (`/ws/private/`), and the greeting it
//! sends.
//!
//! ```
//! use estuary_server::{Admission, AuthFuture, Authenticator, Handshake};
//! use estuary_test_support::auth::{WhoAmI, greeting, serve_auth};
//! use estuary_test_support::ws;
//!
//! /// Lets everyone in, anonymous.
//! struct Anyone;
//!
//! impl Authenticator for Anyone {
//!     fn authenticate<'a>(&'a self, _handshake: Handshake<'a>) -> AuthFuture<'a> {
//!         Box::pin(async { Ok(Admission::anonymous()) })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = serve_auth(Anyone, WhoAmI::new()).await;
//! let mut visitor = ws::handshake(server.served.ws("/ws/open/")).await.unwrap();
//! assert_eq!(greeting(&mut visitor).await["user"], serde_json::Value::Null);
//! // The required route refuses anonymous visitors.
//! assert_eq!(ws::handshake(server.served.ws("/ws/private/")).await.err(), Some(401));
//! # }
//! ```

use estuary_core::{ChannelLayerHandle, Connect, Consumer, ConsumerError, Context, WsMessage};
use estuary_server::{AuthLayer, Authenticator, Router};
use serde_json::{Value, json};
use tower::Layer;

use crate::server::{Served, serve};
use crate::ws::{Ws, next_json};

/// A consumer that greets with its scope as JSON,
/// `{"user": {"id", "name", "attributes"} | null, "groups": [...], "data": {...}}`,
/// then relays the `text` of each [`Relay`] event it gets.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhoAmI {
    announce: bool,
}

impl WhoAmI {
    /// Greets and relays.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also, before greeting, sends a [`Relay`] `"in <group> at connect"` to
    /// the first of the admission's groups: it reaches this connection too,
    /// since the groups are joined before `connect` runs.
    pub fn announcing() -> Self {
        Self { announce: true }
    }
}

/// A layer event `{"type": "relay", "text": ...}`: the consumer sends `text`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename = "relay")]
pub struct Relay {
    /// What to send to the client.
    pub text: String,
}

impl Consumer for WhoAmI {
    type Event = Relay;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let scope = ctx.scope();
        let greeting = json!({
            "user": scope.user().map(|u| json!({"id": u.id(), "name": u.name(), "attributes": u.attributes()})),
            "groups": scope.initial_groups().iter().map(|g| g.as_str()).collect::<Vec<_>>(),
            "data": scope.data(),
        });
        if self.announce {
            if let Some(first) = scope.initial_groups().first().cloned() {
                let text = format!("in {first} at connect");
                ctx.group_send(&first, &Relay { text }).await?;
            }
        }
        ctx.send(WsMessage::text(greeting.to_string())).await?;
        Ok(Connect::accept())
    }

    async fn event(&mut self, ctx: &mut Context, event: Relay) -> Result<(), ConsumerError> {
        ctx.send_text(event.text).await
    }
}

/// [`WhoAmI`] behind `authenticator`, served on a free port.
#[derive(Debug)]
pub struct AuthServer {
    /// The server (its address, its stop token).
    pub served: Served,
    /// The router's channel layer, to send [`Relay`] events to groups.
    pub layer: ChannelLayerHandle,
}

/// Serves `who` at `/ws/open/` (anonymous visitors admitted) and
/// `/ws/private/` (`require_under`: anonymous handshakes get 401) behind
/// `AuthLayer::new(authenticator)`.
pub async fn serve_auth(authenticator: impl Authenticator, who: WhoAmI) -> AuthServer {
    let router = Router::new()
        .websocket("ws/open/", move || who)
        .websocket("ws/private/", move || who);
    let layer = router.channel_layer().clone();
    let service = AuthLayer::new(authenticator)
        .require_under("/ws/private/")
        .layer(router.into_service());
    AuthServer {
        served: serve(service).await,
        layer,
    }
}

/// The greeting [`WhoAmI`] sends first.
pub async fn greeting(ws: &mut Ws) -> Value {
    next_json(ws).await
}
