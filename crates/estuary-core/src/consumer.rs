//! The consumer trait: the code that handles one WebSocket connection.

use std::future::Future;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use crate::close::CloseCode;
use crate::context::Context;
use crate::error::ConsumerError;
use crate::message::{Message, MessageError};
use crate::names::GroupName;
use crate::scope::Scope;
use crate::throttle::Throttle;
use crate::ws::WsMessage;

/// The alias of a router's default channel layer (Channels' `"default"` in
/// `CHANNEL_LAYERS`): what [`Consumer::CHANNEL_LAYER_ALIAS`] is unless a
/// consumer names another.
pub const DEFAULT_CHANNEL_LAYER: &str = "default";

/// The default [`Consumer::undecodable_event`]: a warning, throttled
/// process-wide to one a second (one bad group message reaches every
/// member, and must not log once per member).
pub(crate) fn log_undecodable(ctx: &Context, message: &Message, error: &MessageError) {
    static UNDECODABLE: Throttle = Throttle::new(std::time::Duration::from_secs(1));
    match UNDECODABLE.allow(std::time::Instant::now()) {
        Some(held_back) => tracing::warn!(
            channel = %ctx.channel_name(),
            r#type = message.message_type(),
            %error,
            held_back,
            "no handler for channel-layer message; dropped: add its type to the consumer's Event enum, or stop sending it to this channel (held_back: how many more were not logged since the last warning)"
        ),
        None => tracing::debug!(
            channel = %ctx.channel_name(),
            r#type = message.message_type(),
            %error,
            "no handler for channel-layer message; dropped"
        ),
    }
}

/// The code that handles one WebSocket connection: Channels'
/// `AsyncWebsocketConsumer`.
///
/// The server makes one consumer per connection and calls its handlers **one
/// at a time, in order**: a handler runs to completion before the next frame
/// or event is handled, so a consumer needs no locks for its own state.
/// Messages it sends while a handler runs go out as they are sent (useful for
/// streaming replies). A handler that returns an error closes this connection
/// only (see [`ConsumerError`]).
///
/// Layer events (what `group_send` and `send` deliver) are decoded into
/// [`Consumer::Event`], usually an enum tagged by the message's `type`:
/// `{"type": "chat.message", ...}` reaches the variant renamed `chat.message`.
/// A message that matches no variant goes to
/// [`undecodable_event`](Consumer::undecodable_event), which logs it.
///
/// ```
/// use estuary_core::{Connect, Consumer, ConsumerError, Context, GroupName, WsMessage};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(tag = "type")]
/// enum Event {
///     #[serde(rename = "chat.message")]
///     ChatMessage { message: String },
/// }
///
/// struct Chat;
///
/// impl Consumer for Chat {
///     type Event = Event;
///
///     async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
///         ctx.group_add(&GroupName::new("lobby")?).await?;
///         Ok(Connect::accept())
///     }
///
///     async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
///         let text = msg.as_text().unwrap_or_default().to_owned();
///         ctx.group_send(&GroupName::new("lobby")?, &Event::ChatMessage { message: text }).await?;
///         Ok(())
///     }
///
///     async fn event(&mut self, ctx: &mut Context, event: Event) -> Result<(), ConsumerError> {
///         let Event::ChatMessage { message } = event;
///         ctx.send_text(message).await
///     }
/// }
/// ```
pub trait Consumer: Send + 'static {
    /// The layer events this consumer handles; [`NoEvent`] if none.
    type Event: DeserializeOwned + Send;

    /// The channel layer this consumer's channel, groups and events live on
    /// (Channels' `channel_layer_alias`): [`DEFAULT_CHANNEL_LAYER`] unless
    /// the consumer names another. The server's router resolves the name
    /// when it is built (an unknown name is an error there, not at connect
    /// time).
    ///
    /// ```
    /// use estuary_core::{Consumer, NoEvent};
    ///
    /// struct Telemetry;
    /// impl Consumer for Telemetry {
    ///     type Event = NoEvent;
    ///     // Registered on the router with `with_named_channel_layer("metrics", ...)`.
    ///     const CHANNEL_LAYER_ALIAS: &'static str = "metrics";
    /// }
    /// assert_eq!(Telemetry::CHANNEL_LAYER_ALIAS, "metrics");
    /// ```
    const CHANNEL_LAYER_ALIAS: &'static str = DEFAULT_CHANNEL_LAYER;

    /// The groups this connection joins when it opens (Channels' `groups`
    /// attribute): static names, or names computed from the scope (a route
    /// parameter, the user). The default is none.
    ///
    /// The session joins them before [`connect`](Consumer::connect) runs
    /// (after the groups the handshake middleware chose,
    /// [`Scope::initial_groups`]), so they are joined before the handshake
    /// is accepted and `connect` can rely on them; they are left on every
    /// way the connection ends (a rejected handshake, a close by either
    /// side, a failed handler, a shutdown) and count against
    /// [`SessionConfig::max_groups`](crate::SessionConfig::max_groups). An
    /// error (a route parameter that makes no valid group name) rejects the
    /// handshake with [`ConsumerError::http_status`] and runs no handler.
    ///
    /// ```
    /// use estuary_core::{Consumer, ConsumerError, GroupName, NoEvent, Scope};
    ///
    /// struct Room;
    /// impl Consumer for Room {
    ///     type Event = NoEvent;
    ///
    ///     fn groups(&self, scope: &Scope) -> Result<Vec<GroupName>, ConsumerError> {
    ///         let room: String = scope.param("room")?;
    ///         Ok(vec![GroupName::new("announcements")?, GroupName::new(&format!("room.{room}"))?])
    ///     }
    /// }
    ///
    /// let scope = Scope::builder("/ws/chat/lobby/").param("room", "lobby").build();
    /// let names: Vec<String> = Room.groups(&scope).unwrap().iter().map(|g| g.to_string()).collect();
    /// assert_eq!(names, ["announcements", "room.lobby"]);
    /// ```
    fn groups(&self, scope: &Scope) -> Result<Vec<GroupName>, ConsumerError> {
        let _ = scope;
        Ok(Vec::new())
    }

    /// The client asks to connect. Accept (optionally choosing a subprotocol or
    /// adding response headers) or reject. Messages sent here are delivered
    /// right after the handshake completes. The default accepts.
    fn connect(&mut self, ctx: &mut Context) -> impl Future<Output = Result<Connect, ConsumerError>> + Send {
        let _ = ctx;
        async { Ok(Connect::accept()) }
    }

    /// A text or binary message arrived from the client. The default ignores it.
    fn receive(
        &mut self,
        ctx: &mut Context,
        message: WsMessage,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let _ = (ctx, message);
        async { Ok(()) }
    }

    /// The frame every member sends its client for `event`, when that frame
    /// depends on the event alone (not on this member's state): return it
    /// here and the session sends it in place of calling
    /// [`event`](Consumer::event). The default returns `None`: every event
    /// goes to `event`.
    ///
    /// A group send hands all of its members in a process one message; the
    /// first member to handle it decodes it and calls `render`, and every
    /// other member of this consumer type sends the same frame (a reference
    /// count, no copy) without decoding or encoding anything. Over a layer
    /// that delivers a copy per member (Redis), each copy is decoded and
    /// rendered once. The frame is sent as [`Context::send`] sends (in order
    /// with everything else, under the slow-client policy).
    ///
    /// `render` runs once per message, so what it puts in the frame (a fresh
    /// id, a timestamp) is the same for every member.
    ///
    /// ```
    /// use estuary_core::{Consumer, WsMessage};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// #[serde(tag = "type")]
    /// enum Event {
    ///     #[serde(rename = "chat.message")]
    ///     ChatMessage { message: String },
    ///     #[serde(rename = "chat.kick")]
    ///     Kick { username: String },
    /// }
    ///
    /// struct Chat;
    ///
    /// impl Consumer for Chat {
    ///     type Event = Event;
    ///
    ///     fn render(event: &Event) -> Option<WsMessage> {
    ///         match event {
    ///             // The same JSON for everyone: rendered once per group message.
    ///             Event::ChatMessage { message } => {
    ///                 WsMessage::json(&serde_json::json!({"type": "chat", "message": message})).ok()
    ///             }
    ///             // Each member decides for itself: handled by `event`.
    ///             Event::Kick { .. } => None,
    ///         }
    ///     }
    /// }
    ///
    /// let frame = Chat::render(&Event::ChatMessage { message: "hi".into() });
    /// assert_eq!(frame, Some(WsMessage::text(r#"{"message":"hi","type":"chat"}"#)));
    /// assert!(Chat::render(&Event::Kick { username: "ann".into() }).is_none());
    /// ```
    fn render(event: &Self::Event) -> Option<WsMessage> {
        let _ = event;
        None
    }

    /// A channel-layer event arrived for this connection (one that
    /// [`render`](Consumer::render) did not render).
    fn event(
        &mut self,
        ctx: &mut Context,
        event: Self::Event,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let _ = (ctx, event);
        async { Ok(()) }
    }

    /// A channel-layer message did not decode into [`Consumer::Event`]. The
    /// default logs a warning and keeps the connection open: one bad producer
    /// must not disconnect a whole group. Return an error to close instead.
    ///
    /// The warning is throttled process-wide to one a second (with the count
    /// of those held back): one bad group message reaches every member, and
    /// must not log once per member.
    fn undecodable_event(
        &mut self,
        ctx: &mut Context,
        message: Message,
        error: MessageError,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        log_undecodable(ctx, &message, &error);
        async { Ok(()) }
    }

    /// A group send issued with [`Context::group_send_pipelined`] failed
    /// (the layer is unreachable, it holds all it may): `error` is what
    /// [`Context::group_send`] would have returned. Called between
    /// handlers, once per failed send, in the order the failures occur; at
    /// disconnect, before [`disconnect`](Consumer::disconnect) (when a frame
    /// sent to the client fails with [`ConsumerError::ConnectionClosed`]).
    ///
    /// The default returns `error`, as a handler that awaited the send with
    /// `?` would: the connection closes with its
    /// [`close_code`](ConsumerError::close_code). Return `Ok(())` to keep
    /// the connection (telling the client, say).
    fn group_send_failed(
        &mut self,
        ctx: &mut Context,
        group: GroupName,
        error: ConsumerError,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let _ = (ctx, group);
        async move { Err(error) }
    }

    /// The connection ended, with the close code the client sent, or the one
    /// the server closed with. Groups joined through the context are left
    /// automatically after this returns.
    fn disconnect(&mut self, ctx: &mut Context, code: CloseCode) -> impl Future<Output = ()> + Send {
        let _ = (ctx, code);
        async {}
    }
}

/// The `Event` type of a consumer that takes no layer events: every message
/// fails to decode and is logged.
#[derive(Debug, serde::Deserialize)]
pub enum NoEvent {}

/// What [`Consumer::connect`] decided.
///
/// ```
/// use estuary_core::Connect;
/// use http::StatusCode;
///
/// let accept = Connect::accept_subprotocol("graphql-ws").with_header("x-room", "lobby");
/// let reject = Connect::reject_with(StatusCode::UNAUTHORIZED, "log in first");
/// # let _ = (accept, reject);
/// ```
#[derive(Debug)]
pub enum Connect {
    /// Complete the handshake.
    Accept(Accept),
    /// Refuse it with an HTTP status (Channels answers 403).
    Reject(Reject),
}

/// How to accept a connection.
#[derive(Debug, Default)]
pub struct Accept {
    /// The subprotocol to select; it must be one the client offered.
    pub subprotocol: Option<String>,
    /// Extra headers for the `101 Switching Protocols` response.
    pub headers: HeaderMap,
}

/// How to reject a connection.
#[derive(Debug)]
pub struct Reject {
    /// The HTTP status (403 by default).
    pub status: StatusCode,
    /// A short reason for the response body.
    pub reason: String,
}

impl Connect {
    /// Accept the connection.
    pub fn accept() -> Self {
        Connect::Accept(Accept::default())
    }

    /// Accept, selecting `protocol` from those the client offered.
    pub fn accept_subprotocol(protocol: impl Into<String>) -> Self {
        Connect::Accept(Accept {
            subprotocol: Some(protocol.into()),
            headers: HeaderMap::new(),
        })
    }

    /// Reject with 403 Forbidden, as Channels does.
    pub fn reject() -> Self {
        Self::reject_with(StatusCode::FORBIDDEN, "forbidden")
    }

    /// Reject with `status` and a short `reason`.
    pub fn reject_with(status: StatusCode, reason: impl Into<String>) -> Self {
        Connect::Reject(Reject {
            status,
            reason: reason.into(),
        })
    }

    /// Adds a response header to an acceptance (ignored on a rejection, and for
    /// names or values that are not valid HTTP).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Connect::Accept(accept) = &mut self {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                accept.headers.append(n, v);
            }
        }
        self
    }
}
