//! # Estuary
//!
//! Django Channels in Rust: consumers behind URL routes, groups and channel
//! layers, handshake middleware, an in-process test communicator, and a server
//! that speaks HTTP and WebSocket on one port. Built on tokio, hyper, tower and
//! axum.
//!
//! ```
//! use estuary::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(tag = "type")]
//! enum Event {
//!     #[serde(rename = "chat.message")]
//!     ChatMessage { message: String },
//! }
//!
//! struct Chat;
//!
//! impl Consumer for Chat {
//!     type Event = Event;
//!
//!     async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
//!         ctx.group_add(&GroupName::new("lobby")?).await?;
//!         Ok(Connect::accept())
//!     }
//!
//!     async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
//!         let message = msg.as_text().unwrap_or_default();
//!         let event = serde_json::json!({"type": "chat.message", "message": message});
//!         ctx.group_send(&GroupName::new("lobby")?, &event).await?;
//!         Ok(())
//!     }
//!
//!     async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
//!         let Event::ChatMessage { message } = event;
//!         ctx.send_text(message).await
//!     }
//! }
//!
//! let router = Router::new().websocket("ws/chat/", || Chat);
//! # let _ = router;
//! ```
//!
//! Crates behind this facade: `estuary-core` (the model, no sockets),
//! `estuary-server` (feature `server`, on by default) and `estuary-testing`
//! (feature `testing`).

pub use estuary_core::*;

#[cfg(feature = "server")]
pub use estuary_server::{
    AllowedHosts, BodyTimeout, ConnectionInfo, OriginLayer, PathPattern, PatternError, Router, RouterService,
    Server, ServerConfig, ServerStats, TrustedProxies, UnknownChannelLayer, WsSettings, shutdown_signal,
};

/// The server crate, for everything not re-exported at the top.
#[cfg(feature = "server")]
pub use estuary_server as server;

/// The Redis channel layer, wire-compatible with Django's channels_redis.
#[cfg(feature = "redis")]
pub use estuary_redis as redis;

/// Test tools: [`Communicator`](testing::Communicator) and the layer
/// conformance suite.
#[cfg(feature = "testing")]
pub use estuary_testing as testing;

/// The names most applications need.
pub mod prelude {
    pub use estuary_core::{
        ChannelLayer, ChannelLayerHandle, ChannelName, ChannelNameRouter, CloseCode, Connect, Consumer,
        ConsumerError, Context, GroupName, JsonConsumer, Message, NoEvent, OnMalformed, Scope, Worker,
        WorkerContext, WorkerError, WsMessage,
    };
    #[cfg(feature = "server")]
    pub use estuary_server::{Router, Server, shutdown_signal};
}

/// The user guide, `docs/GUIDE.md`: its code blocks run as this crate's doc
/// tests (`cargo test -p estuary --doc`). Only under `cfg(doctest)`, so that
/// the file, which lies outside the package, is never needed to build it.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/GUIDE.md")]
pub mod guide {}

/// `README.md`'s code, compiled as this crate's doc tests (as the guide).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub mod readme {}
