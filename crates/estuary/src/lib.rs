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
//! Who is connecting is an [`Authenticator`]'s answer ([`Admission`]) to a
//! [`Handshake`]; an [`AuthChain`] asks several in turn, the first that
//! answers wins; the server's `AuthLayer` runs one on every handshake.
//!
//! ```
//! use estuary::server::AuthLayer;
//! use estuary::{AuthChain, AuthFuture, Authenticator, Handshake, User};
//!
//! /// `?guest=<name>` is a guest of that name; without it: "not mine".
//! struct Guest;
//!
//! impl Authenticator for Guest {
//!     fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
//!         let user = handshake.query_param("guest").map(|name| User::new(format!("guest.{name}"), name));
//!         Box::pin(async move { Ok(user.into()) })
//!     }
//! }
//!
//! // Asked in this order (with feature `jwt`, a `estuary::jwt::JwtAuthenticator`
//! // would go first): the first that lets a user in, or refuses, decides.
//! let chain = AuthChain::new().then(Guest);
//! let layer = AuthLayer::new(chain).require_under("/ws/private/");
//! # let _ = layer;
//! ```
//!
//! # Features
//!
//! | feature | default | what it brings |
//! |---|---|---|
//! | `server` | yes | the server: router, handshake middleware, accept loop ([`server`]) |
//! | `redis` | no | the Redis channel layer, wire-compatible with channels_redis (`estuary::redis`) |
//! | `testing` | no | the in-process `Communicator` and the layer conformance suite (`estuary::testing`) |
//! | `jwt` | no | JWT authentication: HS256, RS256, ES256, keys from a JWKS file (`estuary::jwt`) |
//! | `django` | no | Django's sessions (db, signed cookies) as the WebSocket's user (`estuary::django`) |
//! | `callback` | no | a connect callback: the application accepts or refuses each handshake (`estuary::callback`) |
//! | `relay` | no | the relay: a connection's events handed to Django workers (channel layer or HTTP), their answers back (`estuary::relay`) |
//! | `serde` | no | `Serialize`/`Deserialize` for the settings types; the configs (`ServerConfig`, `WsSettings`, `RedisConfig`, `JwtConfig`, `DjangoConfig`, `CallbackConfig`) deserialize, checked, from the form `estuary serve`'s file uses (`ServerSettings`, `WebSocketSettings`, `LayerSettings`, `JwtSettings`, `DjangoSettings`, `CallbackSettings`; with `relay`, `RelaySettings` reads and writes) |
//!
//! Crates behind this facade: `estuary-core` (the model and the auth
//! boundary, no sockets), `estuary-server` (feature `server`), `estuary-redis`
//! (`redis`), `estuary-testing` (`testing`), `estuary-jwt` (`jwt`),
//! `estuary-django` (`django`), `estuary-callback` (`callback`) and
//! `estuary-relay` (`relay`).

pub use estuary_core::*;

#[cfg(feature = "server")]
pub use estuary_server::{
    AllowedHosts, BodyTimeout, ConnectionInfo, OriginLayer, PathPattern, PatternError, PatternErrorKind,
    Router, RouterService, Server, ServerConfig, ServerStats, TrustedProxies, UnknownChannelLayer,
    WsSettings, shutdown_signal,
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

/// JWT authentication: [`JwtAuthenticator`](jwt::JwtAuthenticator) and its
/// configuration.
#[cfg(feature = "jwt")]
pub use estuary_jwt as jwt;

/// Django's sessions read natively: [`DjangoAuthenticator`](django::DjangoAuthenticator),
/// [`DjangoSessions`](django::DjangoSessions).
#[cfg(feature = "django")]
pub use estuary_django as django;

/// A connect callback: [`ConnectCallback`](callback::ConnectCallback) asks
/// the application about each handshake.
#[cfg(feature = "callback")]
pub use estuary_callback as callback;

/// The relay to Django workers: [`Relay`](relay::Relay) and its
/// [`RelayConsumer`](relay::RelayConsumer).
#[cfg(feature = "relay")]
pub use estuary_relay as relay;

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
