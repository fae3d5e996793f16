//! Each authenticator of `[auth]` timed and counted on its own: an
//! [`Authenticator`] that forwards to the one it wraps and records, under
//! that one's name (`jwt`, `callback`, `django`), what it answered and how
//! long it took. A chain that asks JWT, then Django, shows the Django
//! session lookup's latency apart from the token check.

use std::sync::Arc;
use std::time::Instant;

use estuary::auth::ReadyFuture;
use estuary::{AuthError, AuthFuture, Authenticator, Handshake, Recheck, User};

use super::http::HttpStats;

/// An authenticator whose answers are counted into [`HttpStats`] under a
/// name (`estuary_auth_total{authenticator,outcome}` and
/// `estuary_auth_duration_seconds{authenticator}`).
///
/// The outcome is `user` (it let someone in), `anonymous` (it found no
/// credential of its kind, or let the visitor in anonymously), `refused`,
/// `unavailable` (its backend failed) or `bad_answer` (its backend answered
/// something it could not read).
///
/// ```
/// use estuary::{AuthChain, Authenticator, Handshake};
/// use estuary_cli::metrics::{HttpStats, MeteredAuthenticator};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let stats = HttpStats::default();
/// // An empty chain lets everyone in as anonymous.
/// let metered = MeteredAuthenticator::new("none", AuthChain::new(), stats.clone());
/// let uri = "/ws/chat/".parse().unwrap();
/// let headers = http::HeaderMap::new();
/// metered.authenticate(Handshake { uri: &uri, headers: &headers, client: None }).await.unwrap();
/// assert_eq!(stats.auth_count("none", "anonymous"), 1);
/// # });
/// ```
pub struct MeteredAuthenticator {
    name: &'static str,
    inner: Arc<dyn Authenticator>,
    stats: HttpStats,
}

impl std::fmt::Debug for MeteredAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredAuthenticator")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MeteredAuthenticator {
    /// Counts `inner`'s answers into `stats` under `name`.
    pub fn new(name: &'static str, inner: impl Authenticator, stats: HttpStats) -> Self {
        Self {
            name,
            inner: Arc::new(inner),
            stats,
        }
    }
}

/// The outcome label of one authenticator's answer.
fn outcome(result: &Result<estuary::Admission, AuthError>) -> &'static str {
    match result {
        Ok(admission) if admission.user.is_some() => "user",
        Ok(_) => "anonymous",
        Err(AuthError::Refused { .. } | AuthError::Closed { .. }) => "refused",
        Err(AuthError::Unavailable(_)) => "unavailable",
        Err(AuthError::BadAnswer(_)) => "bad_answer",
    }
}

impl Authenticator for MeteredAuthenticator {
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.authenticate(handshake).await;
            self.stats.auth(self.name, outcome(&result), started.elapsed());
            result
        })
    }

    fn recheck(self: Arc<Self>, handshake: Handshake<'_>, user: &User) -> Option<Recheck> {
        Arc::clone(&self.inner).recheck(handshake, user)
    }

    fn ready(&self) -> ReadyFuture<'_> {
        self.inner.ready()
    }
}
