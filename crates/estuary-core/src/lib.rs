//! The core of Estuary: the Django Channels model with Rust types.
//!
//! * [`Scope`]: what is known about a connection when it opens.
//! * [`Consumer`] and [`Context`]: the code that handles one connection;
//!   [`JsonConsumer`] for clients that speak JSON; [`ClientHandle`] to
//!   send to a client from other tasks.
//! * [`ChannelLayer`]: how consumers and processes reach each other, with
//!   [`InMemoryChannelLayer`] for one process and a cloneable
//!   [`ChannelLayerHandle`] for everything that needs a layer.
//! * [`ChannelName`], [`GroupName`], [`Message`]: validated names and
//!   encode-once messages.
//! * [`Presence`] (who is in a group, once per user, announced as
//!   `presence.diff` events) and [`History`] (recorded groups, positions,
//!   recovery after a reconnect): optional capabilities of a layer, which
//!   the in-memory layer has (modules [`layer::presence`] and
//!   [`layer::history`]).
//! * [`Worker`], [`ChannelNameRouter`] and [`run_workers`]: background
//!   workers on named channels (Channels' `runworker`).
//! * [`Authenticator`], [`Handshake`], [`Admission`] and [`AuthChain`]
//!   (module [`auth`]): who is connecting, decided from the handshake.
//! * [`Session`] and [`Transport`]: the loop that binds a consumer to a
//!   connection, shared by the server and the test communicator.
//!
//! Nothing here opens a socket.

pub mod auth;
mod client;
mod close;
mod consumer;
mod context;
mod error;
mod group_set;
mod json;
mod json_encoder;
pub mod layer;
mod message;
mod names;
mod outbound;
mod position;
mod scope;
#[cfg(feature = "serde")]
mod secs;
mod session;
pub mod sync;
mod throttle;
mod worker;
mod ws;

pub use auth::{Admission, AuthChain, AuthError, AuthFuture, Authenticator, Handshake};
pub use client::ClientHandle;
pub use close::{CloseCode, CloseFrame, CloseReason};
pub use consumer::{Accept, Connect, Consumer, DEFAULT_CHANNEL_LAYER, NoEvent, Reject};
pub use context::{Context, DEFAULT_GROUP_SEND_WINDOW, SlowClientPolicy};
pub use error::ConsumerError;
pub use json::{JsonConsumer, JsonFrameError, OnMalformed};
pub use json_encoder::{JsonEncoder, SerdeJsonEncoder};
pub use layer::{
    BoxError, ChannelLayer, ChannelLayerConfig, ChannelLayerError, ChannelLayerHandle, ChannelReceiver,
    EPOCH_LEN, Epoch, GroupSendReport, History, HistoryConfig, HistoryError, InMemoryChannelLayer,
    InvalidEpoch, LayerFuture, MAX_PRESENCE_KEY_LEN, MAX_PRESENCE_META_BYTES, OVERFLOW_FACTOR, POSITION_KEY,
    PRESENCE_DIFF, Presence, PresenceChange, PresenceCoalescer, PresenceConfig, PresenceCount, PresenceDiff,
    PresenceEntry, PresenceError, PresenceJoined, PresenceKey, PresenceList, PresenceMeta,
    PresenceTransition, PresenceView, REAP_INTERVAL, ReceiverState, Recovered, Recovery, SendError,
    StreamPosition, Unrecoverable,
};
#[cfg(feature = "serde")]
pub use layer::{HistorySettings, HistorySettingsError, PresenceSettings, PresenceSettingsError};
pub use message::{Message, MessageError, RESERVED_KEY};
pub use names::{ChannelName, GroupName, MAX_NAME_LEN, NameError};
pub use scope::{
    Recheck, RecheckFuture, Scope, ScopeBuilder, ScopeError, ScopeErrorKind, User, empty_as_none,
};
pub use session::{
    AddressRateLimiter, Inbound, Outcome, RateLimit, Session, SessionConfig, SessionStats, Transport,
    TransportError, WRITE_BATCH_BOUNDS, address_key,
};
pub use throttle::Throttle;
pub use worker::{
    ChannelNameRouter, Worker, WorkerContext, WorkerError, WorkerRouteError, WorkerStats, run_workers,
};
pub use ws::WsMessage;

#[doc(hidden)]
pub mod __private {
    //! What the crate's macros need from their callers' point of view.
    pub use tracing;
}

pub use bytes::Bytes;
pub use bytestring::ByteString;
