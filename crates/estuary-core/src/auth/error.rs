//! Why a handshake is not let in.

use http::StatusCode;

use crate::{CloseCode, CloseReason};

/// Why a handshake is not let in (not: the credential is bad, which is an
/// anonymous [`Admission`](super::Admission)), or why that could not be decided.
///
/// A refusal's reason is told to the client (the body of the 401 or 403, or
/// the close frame), so it is a [`CloseReason`]: at most 123 bytes, cut
/// when it is made, never a description of an internal failure (those are
/// the sources of [`Unavailable`](Self::Unavailable) and
/// [`BadAnswer`](Self::BadAnswer), for the log).
///
/// ```
/// use estuary_core::auth::AuthError;
/// use estuary_core::CloseCode;
/// use http::StatusCode;
///
/// let refused = AuthError::Refused { status: StatusCode::FORBIDDEN, reason: "banned".into() };
/// assert_eq!(refused.to_string(), "banned");
/// let closed = AuthError::Closed { code: CloseCode::from(4403), reason: "log in first".into() };
/// assert_eq!(closed.to_string(), "log in first (close code 4403)");
/// let down = AuthError::Unavailable(std::io::Error::other("database down").into());
/// assert_eq!(down.to_string(), "authentication unavailable: database down");
/// assert!(std::error::Error::source(&down).is_some());
/// ```
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The credential was presented and refused, with the status to answer
    /// (401 or 403) and a reason for the client.
    #[error("{reason}")]
    Refused {
        /// The HTTP status of the refusal.
        status: StatusCode,
        /// Why, for the client.
        reason: CloseReason,
    },
    /// Refused with a close code: the handshake completes and the
    /// connection is closed at once with `code` and `reason`, before any
    /// consumer runs. A browser's `CloseEvent` shows the code (a refused
    /// handshake's HTTP status is hidden from page scripts), so a client
    /// can tell "log in again" from "try later".
    #[error("{reason} (close code {code})")]
    Closed {
        /// The close code (an application code, 4000-4999, or 1008).
        code: CloseCode,
        /// Why, for the client.
        reason: CloseReason,
    },
    /// The check could not be made (the session database is down, the
    /// backend did not answer in time): the handshake gets 503, never an
    /// anonymous user by mistake.
    #[error("authentication unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The authentication backend answered something that is not an answer
    /// (a connect callback's malformed reply): the handshake gets 502 and
    /// the operator a log line with the detail.
    #[error("bad answer from the authentication backend: {0}")]
    BadAnswer(#[source] Box<dyn std::error::Error + Send + Sync>),
}
