//! Who is connecting, as configured in `[auth]`: Django's sessions, or
//! nobody (every visitor anonymous).

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

/// `None`: no authentication configured, every visitor anonymous.
#[derive(Debug)]
struct Inner {
    django: Option<Django>,
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
        Ok(Self {
            inner: Arc::new(Inner { django }),
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
        match &self.inner.django {
            None => Box::pin(async { Ok(None::<User>) }),
            Some(Django { config, sessions }) => Box::pin(async move {
                let sessions = sessions
                    .get_or_try_init(|| DjangoSessions::connect(config.clone()))
                    .await
                    .map_err(|e| AuthError::Unavailable(Box::new(e)))?;
                sessions.authenticate(handshake).await
            }),
        }
    }
}
