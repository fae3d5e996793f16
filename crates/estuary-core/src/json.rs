//! JSON consumers (Channels' `JsonWebsocketConsumer`): client frames decoded
//! into the consumer's serde type, replies through a pluggable encoder.

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::close::CloseCode;
use crate::consumer::{Connect, Consumer, DEFAULT_CHANNEL_LAYER, log_undecodable};
use crate::context::Context;
use crate::error::ConsumerError;
use crate::json_encoder::JsonEncoder;
use crate::message::{Message, MessageError};
use crate::names::GroupName;
use crate::scope::Scope;
use crate::ws::WsMessage;

/// What a [`JsonConsumer`] does with a client frame it cannot decode
/// ([`JsonFrameError`]), when it does not override
/// [`malformed_frame`](JsonConsumer::malformed_frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMalformed {
    /// Close the connection with the error's
    /// [`close_code`](JsonFrameError::close_code): 1007 for text that is
    /// not JSON or not the expected message, 1003 for a binary frame. The
    /// default (Channels closes on a frame it cannot decode, too).
    #[default]
    Close,
    /// Answer with the error's [`error_frame`](JsonFrameError::error_frame)
    /// and keep the connection open.
    ErrorFrame,
}

/// A client frame a [`JsonConsumer`] could not decode into its
/// [`Incoming`](JsonConsumer::Incoming) type.
///
/// ```
/// use estuary_core::{CloseCode, JsonFrameError, WsMessage};
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Say { message: String }
///
/// let error = JsonFrameError::decode::<Say>(&WsMessage::text("{\"msg\": 1}")).unwrap_err();
/// assert_eq!(error.kind(), "invalid_message");
/// assert_eq!(error.close_code(), CloseCode::INVALID_PAYLOAD);
///
/// let error = JsonFrameError::decode::<Say>(&WsMessage::binary(vec![1, 2])).unwrap_err();
/// assert_eq!(error.close_code(), CloseCode::UNSUPPORTED_DATA);
/// let frame: serde_json::Value = error.error_frame().parse_json().unwrap();
/// assert_eq!(frame["type"], "error");
/// assert_eq!(frame["error"], "binary_frame");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum JsonFrameError {
    /// The text is not JSON.
    #[error("frame is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// The text is JSON of another shape than the consumer expects (a
    /// missing field, a wrong type, an unknown `type` tag).
    #[error("frame is not a message this consumer takes")]
    WrongShape(#[source] serde_json::Error),
    /// A binary frame arrived; JSON consumers take text frames only.
    #[error("binary frame where a JSON text frame was expected")]
    Binary,
}

impl JsonFrameError {
    /// Decodes a client frame as a [`JsonConsumer`] does: a text frame
    /// holding JSON of type `T`.
    pub fn decode<T: DeserializeOwned>(frame: &WsMessage) -> Result<T, JsonFrameError> {
        let Some(text) = frame.as_text() else {
            return Err(JsonFrameError::Binary);
        };
        serde_json::from_str(text).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => JsonFrameError::WrongShape(error),
            _ => JsonFrameError::NotJson(error),
        })
    }

    /// A short, stable name for the error: `invalid_json`,
    /// `invalid_message` or `binary_frame`.
    pub fn kind(&self) -> &'static str {
        match self {
            JsonFrameError::NotJson(_) => "invalid_json",
            JsonFrameError::WrongShape(_) => "invalid_message",
            JsonFrameError::Binary => "binary_frame",
        }
    }

    /// The close code for [`OnMalformed::Close`]: 1007 (invalid payload)
    /// for text that is not JSON or not the expected message, 1003
    /// (unsupported data) for a binary frame.
    pub fn close_code(&self) -> CloseCode {
        match self {
            JsonFrameError::NotJson(_) | JsonFrameError::WrongShape(_) => CloseCode::INVALID_PAYLOAD,
            JsonFrameError::Binary => CloseCode::UNSUPPORTED_DATA,
        }
    }

    /// The frame [`OnMalformed::ErrorFrame`] answers with, a JSON text frame
    /// of this shape:
    ///
    /// ```json
    /// {"type": "error", "error": "invalid_message", "detail": "missing field `message` at line 1 column 2"}
    /// ```
    ///
    /// `error` is [`kind`](Self::kind); `detail` says what serde found wrong
    /// (positions and field names only, never the frame itself).
    pub fn error_frame(&self) -> WsMessage {
        let detail = match self {
            JsonFrameError::NotJson(e) | JsonFrameError::WrongShape(e) => e.to_string(),
            JsonFrameError::Binary => self.to_string(),
        };
        let frame = serde_json::json!({"type": "error", "error": self.kind(), "detail": detail});
        WsMessage::text(frame.to_string())
    }
}

/// A consumer whose client frames are JSON (Channels'
/// `JsonWebsocketConsumer`): each text frame is decoded into
/// [`Incoming`](Self::Incoming) and handed to
/// [`receive_json`](Self::receive_json); [`Context::send_json`] writes
/// replies with the consumer's [`json_encoder`](Self::json_encoder).
///
/// Every `JsonConsumer` is a [`Consumer`] (a blanket implementation
/// forwards to it), so it is routed, tested and served like any other. Its
/// other items mean what they mean on [`Consumer`].
///
/// A frame that does not decode (not JSON, JSON of another shape, a binary
/// frame) goes to [`malformed_frame`](Self::malformed_frame), which by
/// default does what [`ON_MALFORMED`](Self::ON_MALFORMED) says: close with
/// 1007 (1003 for binary), or answer with an error frame and go on.
///
/// ```
/// use estuary_core::{ConsumerError, Context, JsonConsumer, NoEvent, OnMalformed};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// #[serde(tag = "type", rename_all = "snake_case")]
/// enum Request {
///     Add { a: i64, b: i64 },
///     Echo { text: String },
/// }
///
/// #[derive(Serialize)]
/// struct Answer<'a> { result: &'a str }
///
/// struct Calculator;
///
/// impl JsonConsumer for Calculator {
///     type Incoming = Request;
///     type Event = NoEvent;
///     // A typo from the client gets an error frame, not a closed socket.
///     const ON_MALFORMED: OnMalformed = OnMalformed::ErrorFrame;
///
///     async fn receive_json(&mut self, ctx: &mut Context, request: Request) -> Result<(), ConsumerError> {
///         match request {
///             Request::Add { a, b } => ctx.send_json(&Answer { result: &(a + b).to_string() }).await,
///             Request::Echo { text } => ctx.send_json(&Answer { result: &text }).await,
///         }
///     }
/// }
///
/// // Routed like any consumer: `Router::new().websocket("ws/calc/", || Calculator)`.
/// fn is_consumer<C: estuary_core::Consumer>(_: &C) {}
/// is_consumer(&Calculator);
/// ```
pub trait JsonConsumer: Send + 'static {
    /// What a client frame decodes into: usually an enum tagged by `type`.
    type Incoming: DeserializeOwned + Send;

    /// The layer events this consumer handles; [`NoEvent`](crate::NoEvent) if none.
    type Event: DeserializeOwned + Send;

    /// What the default [`malformed_frame`](Self::malformed_frame) does:
    /// [`OnMalformed::Close`] unless the consumer says otherwise.
    const ON_MALFORMED: OnMalformed = OnMalformed::Close;

    /// See [`Consumer::CHANNEL_LAYER_ALIAS`].
    const CHANNEL_LAYER_ALIAS: &'static str = DEFAULT_CHANNEL_LAYER;

    /// The encoder [`Context::send_json`] uses on this connection (set
    /// before [`connect`](Self::connect) runs); `None`, the default, writes
    /// with serde_json directly. Keep one `Arc` in the route's factory and
    /// clone it, rather than making an encoder per connection.
    fn json_encoder(&self) -> Option<Arc<dyn JsonEncoder>> {
        None
    }

    /// See [`Consumer::groups`].
    fn groups(&self, scope: &Scope) -> Result<Vec<GroupName>, ConsumerError> {
        let _ = scope;
        Ok(Vec::new())
    }

    /// See [`Consumer::connect`].
    fn connect(&mut self, ctx: &mut Context) -> impl Future<Output = Result<Connect, ConsumerError>> + Send {
        let _ = ctx;
        async { Ok(Connect::accept()) }
    }

    /// A client frame decoded into [`Incoming`](Self::Incoming). The default ignores it.
    fn receive_json(
        &mut self,
        ctx: &mut Context,
        message: Self::Incoming,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let _ = (ctx, message);
        async { Ok(()) }
    }

    /// A client frame did not decode. The default follows
    /// [`ON_MALFORMED`](Self::ON_MALFORMED): it closes with
    /// [`JsonFrameError::close_code`] (the reason is
    /// [`kind`](JsonFrameError::kind)), or sends
    /// [`JsonFrameError::error_frame`] and keeps the connection open.
    fn malformed_frame(
        &mut self,
        ctx: &mut Context,
        error: JsonFrameError,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        async move {
            tracing::debug!(channel = %ctx.channel_name(), %error, "malformed JSON frame from the client");
            match Self::ON_MALFORMED {
                OnMalformed::Close => ctx.close(error.close_code(), error.kind()).await,
                OnMalformed::ErrorFrame => ctx.send(error.error_frame()).await,
            }
        }
    }

    /// See [`Consumer::render`].
    fn render(event: &Self::Event) -> Option<WsMessage> {
        let _ = event;
        None
    }

    /// See [`Consumer::event`].
    fn event(
        &mut self,
        ctx: &mut Context,
        event: Self::Event,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let _ = (ctx, event);
        async { Ok(()) }
    }

    /// See [`Consumer::undecodable_event`] (the same throttled warning).
    fn undecodable_event(
        &mut self,
        ctx: &mut Context,
        message: Message,
        error: MessageError,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        log_undecodable(ctx, &message, &error);
        async { Ok(()) }
    }

    /// See [`Consumer::group_send_failed`] (the default returns `error`).
    fn group_send_failed(
        &mut self,
        ctx: &mut Context,
        group: GroupName,
        error: ConsumerError,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send {
        let _ = (ctx, group);
        async move { Err(error) }
    }

    /// See [`Consumer::disconnect`].
    fn disconnect(&mut self, ctx: &mut Context, code: CloseCode) -> impl Future<Output = ()> + Send {
        let _ = (ctx, code);
        async {}
    }
}

impl<J: JsonConsumer> Consumer for J {
    type Event = J::Event;
    const CHANNEL_LAYER_ALIAS: &'static str = J::CHANNEL_LAYER_ALIAS;

    fn groups(&self, scope: &Scope) -> Result<Vec<GroupName>, ConsumerError> {
        JsonConsumer::groups(self, scope)
    }

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        if let Some(encoder) = self.json_encoder() {
            ctx.set_json_encoder(encoder);
        }
        JsonConsumer::connect(self, ctx).await
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        match JsonFrameError::decode(&message) {
            Ok(incoming) => self.receive_json(ctx, incoming).await,
            Err(error) => self.malformed_frame(ctx, error).await,
        }
    }

    fn render(event: &J::Event) -> Option<WsMessage> {
        <J as JsonConsumer>::render(event)
    }

    async fn event(&mut self, ctx: &mut Context, event: J::Event) -> Result<(), ConsumerError> {
        JsonConsumer::event(self, ctx, event).await
    }

    async fn undecodable_event(
        &mut self,
        ctx: &mut Context,
        message: Message,
        error: MessageError,
    ) -> Result<(), ConsumerError> {
        JsonConsumer::undecodable_event(self, ctx, message, error).await
    }

    async fn group_send_failed(
        &mut self,
        ctx: &mut Context,
        group: GroupName,
        error: ConsumerError,
    ) -> Result<(), ConsumerError> {
        JsonConsumer::group_send_failed(self, ctx, group, error).await
    }

    async fn disconnect(&mut self, ctx: &mut Context, code: CloseCode) {
        JsonConsumer::disconnect(self, ctx, code).await
    }
}
