//! The relay: Estuary holds the sockets, your Django code keeps the
//! real-time logic.
//!
//! A relayed route hands every event of each connection (connect, each
//! client message, disconnect, and any message sent to the connection that
//! is not an answer) to the application, in order, one at a time per
//! connection: to Django workers reading a named channel of the shared
//! channel layer ([`Target::channel`], `runworker <name>`), or to an HTTP
//! view ([`Target::http`], signed like the connect callback). The
//! application answers with the ASGI messages a Channels consumer already
//! produces (`websocket.accept`, `websocket.send`, `websocket.close`) and
//! an `estuary.ack` per event; group broadcasts of `websocket.send` go from
//! the channel layer straight to the sockets, rendered once per process.
//! `docs/WORKERS.md` is the protocol.
//!
//! Use it when the logic of a real-time feature lives in Django (models,
//! permissions, the ORM) and should stay there, while the connections,
//! their limits and their fan-out move to Estuary; write a
//! [`Consumer`](estuary_core::Consumer) in Rust when the logic is small or
//! hot enough to move too.
//!
//! Nothing is dropped without a word: a missing acknowledgement gives the
//! client the route's busy frame (or closes it with 1013) and is counted in
//! [`RelayStats`]; so are refused handshakes (403), unanswered ones (504),
//! and an unavailable application (503).
//!
//! ```
//! use std::time::Duration;
//! use estuary_relay::{Relay, Target};
//!
//! let relay = Relay::builder(Target::channel("chat").unwrap())
//!     .route("ws/chat/<room_name>/")
//!     .groups(["chat_{room_name}"])
//!     .query_param("lang", "en")
//!     .reply_timeout(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//! // estuary_server::Router::new().websocket("ws/chat/<room_name>/", relay.factory());
//! # let _ = relay.factory();
//! ```
//!
//! A worker on the Django side, with nothing but channels_redis:
//!
//! ```python
//! layer = get_channel_layer()
//! while True:
//!     event = await layer.receive("chat")
//!     reply = event["channel"]
//!     if event["type"] == "websocket.connect":
//!         await layer.group_add("lobby", reply)
//!         await layer.send(reply, {"type": "websocket.accept"})
//!     elif event["type"] == "websocket.receive":
//!         await layer.group_send("lobby", {"type": "websocket.send", "text": event["text"]})
//!     if event["type"] != "websocket.disconnect":
//!         await layer.send(reply, {"type": "estuary.ack", "seq": event["seq"]})
//! ```
//!
//! Settings as plain values (the keys of a route in `estuary.toml`) are a
//! [`RelaySettings`] (with `Deserialize` under the `serde` feature).

mod consumer;
mod groups;
mod http;
mod link;
mod relay;
mod settings;
mod shared;
mod stats;
mod target;
mod watchdog;
mod wire;

pub use consumer::RelayConsumer;
pub use groups::{GroupTemplate, TemplateError, TemplateErrorKind};
pub use relay::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_STATE_BYTES, DEFAULT_REPLY_TIMEOUT, Relay, RelayBuilder,
};
pub use settings::RelaySettings;
pub use stats::RelayStats;
pub use target::{ConnectMode, MIN_SECRET_LEN, RelayError, RelayErrorKind, Target};
pub use wire::{Bin, Reply};
