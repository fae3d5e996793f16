//! Who is connecting, as configured in `[auth]`: a JWT, then Django's
//! session or the application's connect callback, or nobody (every visitor
//! anonymous).

use std::sync::Arc;

use estuary::server::{Admission, AuthError, AuthFuture, AuthLayer, AuthPolicy, Authenticator, Handshake};
use estuary::{Recheck, User};
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
    /// Asked when no token decided (never with `django`).
    callback: Option<Arc<estuary_callback::ConnectCallback>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("jwt", &self.jwt.is_some())
            .field("django", &self.django)
            .field("callback", &self.callback)
            .finish()
    }
}

#[derive(Debug)]
struct Django {
    config: DjangoConfig,
    sessions: OnceCell<DjangoSessions>,
    /// How often an open connection's session is checked again.
    recheck_every: Option<std::time::Duration>,
}

impl AppAuth {
    /// From `[auth]`.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let django = match &config.auth.django {
            Some(django) => Some(Django {
                config: django.django_config()?,
                sessions: OnceCell::new(),
                recheck_every: (django.recheck_every > 0)
                    .then(|| std::time::Duration::from_secs(django.recheck_every)),
            }),
            None => None,
        };
        let jwt = match &config.auth.jwt {
            Some(jwt) => Some(estuary_jwt::JwtAuthenticator::new(jwt.jwt_config()?)?),
            None => None,
        };
        let callback = match &config.auth.callback {
            Some(callback) => Some(Arc::new(estuary_callback::ConnectCallback::new(
                callback.callback_config()?,
            ))),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                jwt,
                django,
                callback,
            }),
        })
    }

    /// Connects to Django's database now (a no-op without `[auth.django]`).
    pub async fn ready(&self) -> anyhow::Result<()> {
        if let Some(Django { config, sessions, .. }) = &self.inner.django {
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
    /// A Django user's session is read again every `recheck_every`: a
    /// logout, a changed password or a deactivated user closes the socket
    /// with 4401. The callback is asked again as `[auth.callback]
    /// recheck_every` says. A JWT user needs none (its expiry closes it).
    fn recheck(self: Arc<Self>, handshake: Handshake<'_>, user: &User) -> Option<Recheck> {
        if let Some(jwt) = &self.inner.jwt {
            if jwt
                .token_from(&handshake)
                .and_then(|t| jwt.validate(&t))
                .is_some()
            {
                return None;
            }
        }
        if let Some(callback) = &self.inner.callback {
            return callback.clone().recheck(handshake, user);
        }
        let django = self.inner.django.as_ref()?;
        let every = django.recheck_every?;
        let cookie_header = estuary_django::cookie_header(handshake.headers);
        let id = user.id().to_owned();
        Some(Recheck::new(every, move || {
            let auth = self.clone();
            let cookie_header = cookie_header.clone();
            let id = id.clone();
            async move {
                let Some(Django { sessions, .. }) = &auth.inner.django else {
                    return Ok(false);
                };
                let Some(sessions) = sessions.get() else {
                    return Ok(true);
                };
                let user = sessions.user_from_cookie_header(&cookie_header).await?;
                Ok(user.is_some_and(|u| u.id == id))
            }
        }))
    }

    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        Box::pin(async move {
            if let Some(jwt) = &self.inner.jwt {
                let admission = jwt.authenticate(handshake).await?;
                if admission.user.is_some() {
                    return Ok(admission);
                }
            }
            if let Some(callback) = &self.inner.callback {
                return callback.authenticate(handshake).await;
            }
            match &self.inner.django {
                None => Ok(Admission::anonymous()),
                Some(Django { config, sessions, .. }) => {
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
