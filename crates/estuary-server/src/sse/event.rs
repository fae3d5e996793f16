//! One server-sent event as a route renders it, and the default rendering
//! of `{"type": ..., ...}` layer events.

use axum::response::sse::Event;
use estuary_core::Message;

/// Why an [`SseEvent`] cannot be made: the SSE format cannot carry it.
///
/// ```
/// use estuary_server::sse::{SseEvent, SseEventError};
///
/// assert_eq!(SseEvent::named("two\nlines", "{}").unwrap_err(), SseEventError::LineBreakInName);
/// assert_eq!(SseEvent::named("", "{}").unwrap_err(), SseEventError::EmptyName);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseEventError {
    /// An event name is empty (a browser would dispatch it as `message`).
    #[error("an SSE event name cannot be empty")]
    EmptyName,
    /// An event name holds a carriage return or a line feed, which would
    /// end the `event:` field early.
    #[error("an SSE event name cannot contain CR or LF")]
    LineBreakInName,
    /// An id holds a carriage return, a line feed or a NUL (a browser
    /// ignores an id with a NUL).
    #[error("an SSE event id cannot contain CR, LF or NUL")]
    ForbiddenCharInId,
}

/// One event of a server-sent event stream: an optional `event:` name (what
/// `EventSource.addEventListener` listens for; without one the browser fires
/// `message`), the `data:` text (line breaks are sent as several `data:`
/// lines and joined again by the browser) and an optional `id:`.
///
/// Made only through checked constructors, so an event always fits the
/// format. A route gives every event without an id of its own the next
/// position of its stream (see [`SseRoute`](super::SseRoute)).
///
/// ```
/// use estuary_server::sse::SseEvent;
///
/// let plain = SseEvent::message("hello");
/// assert_eq!(plain.name(), None);
///
/// let named = SseEvent::named("chat.message", r#"{"text":"hi"}"#)?.with_id("42")?;
/// assert_eq!(named.name(), Some("chat.message"));
/// assert_eq!(named.id(), Some("42"));
/// # Ok::<(), estuary_server::sse::SseEventError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    name: Option<String>,
    data: String,
    id: Option<String>,
}

impl SseEvent {
    /// An event without a name (the browser fires `message`).
    pub fn message(data: impl Into<String>) -> Self {
        Self {
            name: None,
            data: data.into(),
            id: None,
        }
    }

    /// An event named `name` (the browser fires an event of that type).
    pub fn named(name: impl Into<String>, data: impl Into<String>) -> Result<Self, SseEventError> {
        let name = name.into();
        if name.is_empty() {
            return Err(SseEventError::EmptyName);
        }
        if name.contains(['\r', '\n']) {
            return Err(SseEventError::LineBreakInName);
        }
        Ok(Self {
            name: Some(name),
            data: data.into(),
            id: None,
        })
    }

    /// Gives the event an id of its own (a position the application keeps,
    /// say a database sequence), instead of the stream's next position.
    pub fn with_id(mut self, id: impl Into<String>) -> Result<Self, SseEventError> {
        let id = id.into();
        if id.contains(['\r', '\n', '\0']) {
            return Err(SseEventError::ForbiddenCharInId);
        }
        self.id = Some(id);
        Ok(self)
    }

    /// The default rendering of a layer event `{"type": ..., ...}`: the
    /// event is named after its `type`, and its data is the whole event as
    /// compact JSON (`type` included). Fails when the `type` cannot be an
    /// event name (empty, or holding a line break).
    ///
    /// ```
    /// use estuary_core::Message;
    /// use estuary_server::sse::SseEvent;
    ///
    /// let msg = Message::from_json(&serde_json::json!({"type": "score", "home": 2})).unwrap();
    /// let event = SseEvent::from_message(&msg).unwrap();
    /// assert_eq!(event.name(), Some("score"));
    /// assert_eq!(event.data(), r#"{"home":2,"type":"score"}"#);
    /// ```
    pub fn from_message(message: &Message) -> Result<Self, SseEventError> {
        Self::named(message.message_type(), message.to_json().to_string())
    }

    /// The `event:` name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The `data:` text.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The event's own id, if it has one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// axum's event, with `fallback_id` when the event has no id of its own.
    /// The checks above make axum's field checks (which panic) pass.
    pub(crate) fn into_axum(self, fallback_id: &str) -> Event {
        let mut event = Event::default().data(self.data);
        if let Some(name) = self.name {
            event = event.event(name);
        }
        event.id(self.id.as_deref().unwrap_or(fallback_id))
    }
}
