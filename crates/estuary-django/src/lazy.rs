//! [`DjangoAuthenticator`]: Django's sessions as an authenticator built
//! without a database round trip, connected at [`ready`](Authenticator::ready)
//! or on first use, with an optional recheck of open connections.

use std::sync::Arc;
use std::time::Duration;

use estuary_core::auth::{AuthError, AuthFuture, Authenticator, Handshake, ReadyFuture};
use estuary_core::{Recheck, User};
use tokio::sync::OnceCell;

use crate::{DjangoConfig, DjangoSessions, cookie_header};

/// Django's sessions as an [`Authenticator`], built synchronously (no
/// database yet): [`Authenticator::ready`] connects, so that a wrong URL,
/// table or column stops a server at startup with a clear message; without
/// it the first handshake connects (a failure there is
/// [`AuthError::Unavailable`], 503, and the next handshake tries again).
///
/// With [`DjangoAuthenticator::recheck_every`], an open connection's session
/// is read again at that interval: a logout, a changed password or a
/// deactivated user closes the socket with 4401. A failed read keeps the
/// connection (the session's rule for a recheck that errs).
///
/// ```no_run
/// # async fn demo() -> Result<(), estuary_core::BoxError> {
/// use std::time::Duration;
/// use estuary_core::auth::Authenticator;
/// use estuary_django::{DjangoAuthenticator, DjangoConfig};
///
/// let config = DjangoConfig::new("the project's SECRET_KEY", "sqlite:///srv/site/db.sqlite3".parse()?);
/// let django = DjangoAuthenticator::new(config).recheck_every(Duration::from_secs(60));
/// django.ready().await?; // connects now, or says why it cannot
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DjangoAuthenticator {
    config: DjangoConfig,
    /// Connected once, by `ready` or the first handshake; shared by every
    /// recheck.
    sessions: Arc<OnceCell<DjangoSessions>>,
    recheck_every: Option<Duration>,
}

impl DjangoAuthenticator {
    /// Reads Django's sessions as `config` says; connects later.
    pub fn new(config: DjangoConfig) -> Self {
        Self {
            config,
            sessions: Arc::new(OnceCell::new()),
            recheck_every: None,
        }
    }

    /// Reads an open connection's session again every `every` (at least a
    /// second); never, unless set.
    pub fn recheck_every(mut self, every: Duration) -> Self {
        self.recheck_every = Some(every);
        self
    }

    /// The connected sessions, connecting now if not yet.
    async fn sessions(&self) -> Result<&DjangoSessions, crate::DjangoError> {
        self.sessions
            .get_or_try_init(|| DjangoSessions::connect(self.config.clone()))
            .await
    }
}

impl Authenticator for DjangoAuthenticator {
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        Box::pin(async move {
            let sessions = self
                .sessions()
                .await
                .map_err(|e| AuthError::Unavailable(Box::new(e)))?;
            sessions.authenticate(handshake).await
        })
    }

    fn recheck(self: Arc<Self>, handshake: Handshake<'_>, user: &User) -> Option<Recheck> {
        let every = self.recheck_every?;
        let cookie_header = cookie_header(handshake.headers);
        let id = user.id().to_owned();
        let sessions = self.sessions.clone();
        Some(Recheck::new(every, move || {
            let sessions = sessions.clone();
            let cookie_header = cookie_header.clone();
            let id = id.clone();
            async move {
                // Not connected: the user came from elsewhere; nothing to check.
                let Some(sessions) = sessions.get() else {
                    return Ok(true);
                };
                let user = sessions.user_from_cookie_header(&cookie_header).await?;
                Ok(user.is_some_and(|u| u.id == id))
            }
        }))
    }

    fn ready(&self) -> ReadyFuture<'_> {
        Box::pin(async move {
            self.sessions().await?;
            Ok(())
        })
    }
}
