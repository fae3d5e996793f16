//! Who is connecting, as configured in `[auth]`: an [`AuthChain`] asking a
//! JWT first (a valid token decides), then Django's session or the
//! application's connect callback (never both), or nobody (every visitor
//! anonymous).

use estuary::server::{AuthLayer, AuthPolicy};
use estuary::{AuthChain, Authenticator, Handshake};

use crate::config::{Config, RouteAuth};
use crate::metrics::{HttpStats, MeteredAuthenticator};

/// The configured authenticator: a chain, in `[auth]`'s order. Django's
/// database is connected by [`AppAuth::ready`] at startup (so that building
/// the service stays synchronous, and a wrong URL, table or column stops
/// `estuary serve` with a clear message instead of failing handshakes), or
/// by the first handshake.
#[derive(Clone, Debug)]
pub struct AppAuth {
    chain: AuthChain,
}

impl AppAuth {
    /// From `[auth]`; each authenticator's answers and latency are counted
    /// into `stats` under its name (`jwt`, `callback`, `django`, or `none`
    /// when `[auth]` configures none).
    pub fn from_config(config: &Config, stats: &HttpStats) -> anyhow::Result<Self> {
        let mut chain = AuthChain::new();
        // Tried first: a valid token decides; without one the next is asked.
        if let Some(jwt) = &config.auth.jwt {
            let jwt = estuary_jwt::JwtAuthenticator::new(jwt.clone().try_into()?)?;
            chain = chain.then(MeteredAuthenticator::new("jwt", jwt, stats.clone()));
        }
        // The configuration allows one of these two (`AuthSettings` checks it).
        if let Some(callback) = &config.auth.callback {
            let callback = estuary_callback::ConnectCallback::new(callback.clone().try_into()?);
            let callback = MeteredAuthenticator::new("callback", callback, stats.clone());
            // Routes with `callback = false` are not asked about.
            let skipped = config
                .routes
                .iter()
                .filter(|route| !route.asks_callback())
                .map(|route| route.pattern())
                .collect::<anyhow::Result<Vec<_>>>()?;
            if skipped.is_empty() {
                chain = chain.then(callback);
            } else {
                chain = chain.then_when(callback, move |handshake: &Handshake<'_>| {
                    let path = handshake.uri.path();
                    !skipped.iter().any(|pattern| pattern.matches(path).is_some())
                });
            }
        }
        if let Some(django) = &config.auth.django {
            chain = chain.then(MeteredAuthenticator::new(
                "django",
                django.authenticator()?,
                stats.clone(),
            ));
        }
        if chain.is_empty() {
            // Everyone anonymous, still counted: handshakes authenticated.
            chain = AuthChain::new().then(MeteredAuthenticator::new("none", AuthChain::new(), stats.clone()));
        }
        Ok(Self { chain })
    }

    /// Makes every authenticator ready: connects to Django's database now
    /// (a no-op without `[auth.django]`).
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.chain
            .ready()
            .await
            .map_err(|e| anyhow::anyhow!("[auth]: {e}"))
    }

    /// The tower layer: optional authentication, or required with
    /// `auth.required`, and required on the `[[routes]]` with `auth = "required"`.
    pub fn layer(&self, config: &Config) -> anyhow::Result<AuthLayer> {
        let policy = if config.auth.required {
            AuthPolicy::Required
        } else {
            AuthPolicy::Optional
        };
        let mut layer = AuthLayer::new(self.chain.clone()).with_policy(policy);
        for route in config.routes.iter().filter(|r| r.auth == RouteAuth::Required) {
            layer = layer.require_matching(route.pattern()?);
        }
        Ok(layer)
    }
}
