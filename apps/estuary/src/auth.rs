//! Who is connecting, as configured in `[auth]`: a JWT, then Django's
//! session, or nobody (every visitor anonymous).

use std::sync::Arc;

use estuary::User;
use estuary::server::{AuthError, AuthFuture, AuthLayer, AuthPolicy, Authenticator, Handshake};
use estuary_django::{DjangoConfig, DjangoSessions};
use tokio::sync::OnceCell;

use crate::config::Config;

/// The configured authenticator. Django's database is connected on first
/// use (so that building the service stays synchronous); [`AppAuth::ready`]
/// connects at startup, so that a wrong URL, table or column stops
/// `estuary serve` with a clear message instead of failing handshakes.
#[derive(Clone, Debug)]
pub struct AppAuth {
    inner: Arc<Inner>,
}

/// Nothing configured: every visitor anonymous.
struct Inner {
    /// Tried first: a token in the handshake decides.
    jwt: Option<estuary_jwt::JwtAuthenticator>,
    django: Option<Django>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("jwt", &self.jwt.is_some())
            .field("django", &self.django)
            .finish()
    }
}

#[derive(Debug)]
struct Django {
    config: DjangoConfig,
    sessions: OnceCell<DjangoSessions>,
}

impl AppAuth {
    /// From `[auth]`.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let django = match &config.auth.django {
            Some(django) => Some(Django {
                config: django.django_config()?,
                sessions: OnceCell::new(),
            }),
            None => None,
        };
        let jwt = match &config.auth.jwt {
            Some(jwt) => Some(estuary_jwt::JwtAuthenticator::new(jwt.jwt_config()?)?),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner { jwt, django }),
        })
    }

    /// Connects to Django's database now (a no-op without `[auth.django]`).
    pub async fn ready(&self) -> anyhow::Result<()> {
        if let Some(Django { config, sessions }) = &self.inner.django {
            sessions
                .get_or_try_init(|| DjangoSessions::connect(config.clone()))
                .await
                .map_err(|e| anyhow::anyhow!("[auth.django]: {e}"))?;
        }
        Ok(())
    }

    /// The tower layer: optional authentication, or required with
    /// `auth.required`.
    pub fn layer(&self, config: &Config) -> AuthLayer {
        let policy = if config.auth.required {
            AuthPolicy::Required
        } else {
            AuthPolicy::Optional
        };
        AuthLayer::new(self.clone()).with_policy(policy)
    }
}

impl Authenticator for AppAuth {
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        Box::pin(async move {
            if let Some(jwt) = &self.inner.jwt {
                if let Some(user) = jwt.authenticate(handshake).await? {
                    return Ok(Some(user));
                }
            }
            match &self.inner.django {
                None => Ok(None::<User>),
                Some(Django { config, sessions }) => {
                    let sessions = sessions
                        .get_or_try_init(|| DjangoSessions::connect(config.clone()))
                        .await
                        .map_err(|e| AuthError::Unavailable(Box::new(e)))?;
                    sessions.authenticate(handshake).await
                }
            }
        })
    }
}
