//! What the handshake middleware decided, left in the response's
//! extensions for an outer layer (an access log, metrics) to read.

use std::time::Duration;

/// Why a WebSocket handshake (or a request) was refused, in the
/// extensions of the refusing response. Each refusing layer of this crate
/// adds it; an outer tower layer reads it to count refusals by reason.
///
/// ```
/// use estuary_server::HandshakeRefusal;
///
/// assert_eq!(HandshakeRefusal::Origin.as_str(), "origin");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeRefusal {
    /// The `Host` is not one of the allowed hosts (400).
    Host,
    /// The `Origin` is not allowed (403).
    Origin,
    /// The authenticator refused, or a user was required (401, 403, ...).
    Auth,
    /// The authentication backend could not be asked or answered nonsense
    /// (503, 502).
    AuthUnavailable,
    /// No WebSocket route for the path (404).
    Route,
    /// The consumer's `connect` rejected, failed or timed out.
    Connect,
    /// The handshake rate of the client's address (429).
    HandshakeRate,
    /// The connections of the client's address (429): counted on the TCP
    /// peer at accept, or per WebSocket behind a trusted proxy.
    ConnectionsPerIp,
    /// The server held `max_connections` (503, at accept).
    MaxConnections,
}

impl HandshakeRefusal {
    /// A short name, for a metric's label or a log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Origin => "origin",
            Self::Auth => "auth",
            Self::AuthUnavailable => "auth_unavailable",
            Self::Route => "route",
            Self::Connect => "connect",
            Self::HandshakeRate => "handshake_rate",
            Self::ConnectionsPerIp => "connections_per_ip",
            Self::MaxConnections => "max_connections",
        }
    }
}

/// How the [`AuthLayer`](crate::AuthLayer) decided a handshake: in the
/// extensions of every response to a handshake it authenticated.
///
/// ```
/// use std::time::Duration;
/// use estuary_server::AuthReport;
///
/// let report = AuthReport { user: Some("42".into()), elapsed: Duration::from_millis(3), admitted: true };
/// assert_eq!(report.user.as_deref(), Some("42"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthReport {
    /// The authenticated user's id; `None` for an anonymous visitor or a
    /// refusal.
    pub user: Option<String>,
    /// How long the authenticator took.
    pub elapsed: Duration,
    /// True when the authenticator let the handshake through.
    pub admitted: bool,
}

/// Marks `response` as refused for `reason`.
pub(crate) fn refused<B>(mut response: http::Response<B>, reason: HandshakeRefusal) -> http::Response<B> {
    response.extensions_mut().insert(reason);
    response
}
