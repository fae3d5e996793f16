//! Errors from consumer handlers, and how they map to close codes and HTTP
//! statuses (in one place).

use http::StatusCode;

use crate::close::{CloseCode, CloseReason};
use crate::layer::{BoxError, ChannelLayerError, SendError};
use crate::message::MessageError;
use crate::names::NameError;
use crate::scope::ScopeError;

/// An error returned by a [`Consumer`](crate::Consumer) handler.
///
/// A handler's error ends that connection only: the server logs it, closes the
/// socket with [`close_code`](Self::close_code) (or, during `connect`, rejects
/// the handshake with [`http_status`](Self::http_status)), and runs
/// `disconnect`. `?` converts the errors of Estuary's own operations; wrap your
/// own with [`ConsumerError::other`].
///
/// ```
/// use estuary_core::{CloseCode, ConsumerError};
///
/// let e = ConsumerError::close(CloseCode::from(4003), "token expired");
/// assert_eq!(e.close_code(), CloseCode::from(4003));
/// assert_eq!(e.close_reason(), "token expired");
/// assert_eq!(e.to_string(), "closing with 4003: token expired");
/// let e = ConsumerError::other(std::io::Error::other("database down"));
/// assert_eq!(e.close_code(), CloseCode::INTERNAL_ERROR);
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The client did not read its messages fast enough: its outbound queue
    /// stayed full past the grace period (close 1013).
    #[error("client too slow: outbound queue full")]
    SlowClient,
    /// The connection is closed; nothing more can be sent to the client.
    #[error("connection closed")]
    ConnectionClosed,
    /// The handler asked to close the connection with this code and reason.
    /// The reason is what the client is told (in the close frame, or the
    /// body of a refused handshake), so it is a [`CloseReason`]: bounded to
    /// what a close frame carries when it is made.
    #[error("closing with {code}: {reason}")]
    Close {
        /// The close code to send.
        code: CloseCode,
        /// The reason to send.
        reason: CloseReason,
    },
    /// The connection is already in as many groups as it may be
    /// ([`SessionConfig::max_groups`](crate::SessionConfig::max_groups); close 1008).
    #[error("too many groups: a connection may be in {limit}")]
    TooManyGroups {
        /// The limit.
        limit: usize,
    },
    /// A channel-layer operation failed.
    #[error(transparent)]
    ChannelLayer(#[from] ChannelLayerError),
    /// A channel-layer send failed.
    #[error(transparent)]
    Send(#[from] SendError),
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The scope's query string or a route parameter is invalid.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// A channel or group name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// JSON could not be encoded or decoded.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Any other failure.
    #[error(transparent)]
    Other(BoxError),
}

impl ConsumerError {
    /// An error that closes the connection with `code` and `reason` (cut
    /// to 123 bytes, see [`CloseReason`]).
    pub fn close(code: CloseCode, reason: impl Into<CloseReason>) -> Self {
        ConsumerError::Close {
            code,
            reason: reason.into(),
        }
    }

    /// Wraps any error.
    pub fn other(error: impl Into<BoxError>) -> Self {
        ConsumerError::Other(error.into())
    }

    /// The close code the connection is closed with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ConsumerError::SlowClient => CloseCode::TRY_AGAIN_LATER,
            ConsumerError::ConnectionClosed => CloseCode::ABNORMAL,
            ConsumerError::Close { code, .. } => *code,
            ConsumerError::Scope(_) | ConsumerError::Name(_) | ConsumerError::TooManyGroups { .. } => {
                CloseCode::POLICY_VIOLATION
            }
            ConsumerError::Json(_) => CloseCode::UNSUPPORTED_DATA,
            ConsumerError::ChannelLayer(_)
            | ConsumerError::Send(_)
            | ConsumerError::Message(_)
            | ConsumerError::Other(_) => CloseCode::INTERNAL_ERROR,
        }
    }

    /// The reason sent in the close frame: short, and free of internals.
    pub fn close_reason(&self) -> &str {
        match self {
            ConsumerError::SlowClient => "client too slow",
            ConsumerError::Close { reason, .. } => reason.as_str(),
            ConsumerError::Scope(_) | ConsumerError::Name(_) => "invalid request",
            ConsumerError::TooManyGroups { .. } => "too many groups",
            ConsumerError::Json(_) => "invalid JSON",
            _ => "internal error",
        }
    }

    /// The HTTP status a failing `connect` rejects the handshake with.
    pub fn http_status(&self) -> StatusCode {
        match self {
            ConsumerError::Scope(_) | ConsumerError::Name(_) | ConsumerError::Json(_) => {
                StatusCode::BAD_REQUEST
            }
            ConsumerError::Close { .. } | ConsumerError::TooManyGroups { .. } => StatusCode::FORBIDDEN,
            ConsumerError::ChannelLayer(_) | ConsumerError::Send(_) | ConsumerError::SlowClient => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The reason put in the body of a rejected handshake: for errors the
    /// client caused, what was wrong; for the server's own, nothing internal.
    pub fn http_reason(&self) -> String {
        match self {
            ConsumerError::Scope(e) => e.to_string(),
            ConsumerError::Name(e) => e.to_string(),
            ConsumerError::Json(e) => format!("invalid JSON: {e}"),
            ConsumerError::Close { reason, .. } => reason.to_string(),
            ConsumerError::TooManyGroups { .. } => "too many groups".into(),
            ConsumerError::ChannelLayer(_) | ConsumerError::Send(_) => "channel layer unavailable".into(),
            _ => "internal error".into(),
        }
    }
}
