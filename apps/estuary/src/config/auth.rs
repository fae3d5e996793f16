//! `[auth]`: who is connecting (a JWT, Django's session, or the
//! application's connect callback).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::Invalid;

/// `[auth]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Every WebSocket route needs an authenticated user (401 without one);
    /// otherwise anonymous visitors connect without a user, as in Django.
    pub required: bool,
    /// Reads Django's session cookie (`[auth.django]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub django: Option<DjangoSettings>,
    /// Reads a JWT (`[auth.jwt]`); tried before Django's session or the
    /// callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSettings>,
    /// Asks the application (`[auth.callback]`); not with `[auth.django]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackSettings>,
}

impl AuthSettings {
    /// Checks what can be checked without connecting anywhere.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        let key = |key: &'static str| move |error: anyhow::Error| Invalid { key, error };
        if let Some(django) = &self.django {
            django.django_config().map_err(key("auth.django"))?;
        }
        if let Some(jwt) = &self.jwt {
            jwt.jwt_config().map_err(key("auth.jwt"))?;
        }
        if let Some(callback) = &self.callback {
            callback.callback_config().map_err(key("auth.callback"))?;
        }
        if self.django.is_some() && self.callback.is_some() {
            return Err(key("auth.callback")(anyhow::anyhow!(
                "[auth.django] and [auth.callback] are two ways to recognise the same visitors: configure one (the callback can answer from Django's own sessions)"
            )));
        }
        if self.required && self.django.is_none() && self.jwt.is_none() && self.callback.is_none() {
            return Err(key("auth.required")(anyhow::anyhow!(
                "auth.required needs a way to authenticate: configure [auth.django], [auth.jwt] or [auth.callback]"
            )));
        }
        Ok(())
    }
}

/// `[auth.callback]`: the application's connect callback (see the
/// `estuary-callback` crate for the protocol and a Django view).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackSettings {
    /// The view's URL (`http://`).
    pub url: String,
    /// The shared secret the request is signed with (at least 16 bytes).
    pub secret: String,
    /// Milliseconds a handshake may wait for a slot, and then the exchange
    /// may take (default 2000); past either, the handshake gets 503.
    #[serde(default = "default_callback_timeout_ms")]
    pub timeout_ms: u64,
    /// Handshake headers forwarded (default `["origin", "user-agent"]`).
    #[serde(default = "default_callback_headers")]
    pub headers: Vec<String>,
    /// Cookies forwarded (default `["sessionid"]`).
    #[serde(default = "default_callback_cookies")]
    pub cookies: Vec<String>,
    /// Callbacks in flight at once (default 256).
    #[serde(default = "default_callback_in_flight")]
    pub max_in_flight: usize,
    /// Of those, how many the handshakes of one client address may hold or
    /// wait for (an IPv6 address by its /64); one more gets 429 at once, so
    /// that a few addresses cannot starve the others while the application
    /// is slow. Default `max_in_flight / 32` (8), at least 1.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight_per_client: Option<usize>,
    /// Seconds between asking again about an open connection's user (a
    /// user no longer admitted is closed with 4401); 0: at the handshake
    /// only (default).
    #[serde(default)]
    pub recheck_every: u64,
}

fn default_callback_timeout_ms() -> u64 {
    2000
}

fn default_callback_headers() -> Vec<String> {
    vec!["origin".into(), "user-agent".into()]
}

fn default_callback_cookies() -> Vec<String> {
    vec!["sessionid".into()]
}

fn default_callback_in_flight() -> usize {
    256
}

impl std::fmt::Debug for CallbackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSettings")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("headers", &self.headers)
            .field("cookies", &self.cookies)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_per_client", &self.max_in_flight_per_client)
            .field("recheck_every", &self.recheck_every)
            .finish()
    }
}

impl CallbackSettings {
    /// A callback to `url` signed with `secret`, the rest by default.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
            timeout_ms: default_callback_timeout_ms(),
            headers: default_callback_headers(),
            cookies: default_callback_cookies(),
            max_in_flight: default_callback_in_flight(),
            max_in_flight_per_client: None,
            recheck_every: 0,
        }
    }

    /// As `estuary-callback`'s configuration.
    pub fn callback_config(&self) -> anyhow::Result<estuary_callback::CallbackConfig> {
        if self.timeout_ms == 0 {
            bail!("auth.callback.timeout_ms must be at least 1");
        }
        let config = estuary_callback::CallbackConfig::new(&self.url, &self.secret)
            .map_err(|e| anyhow::anyhow!("auth.callback: {e}"))?
            .with_timeout(Duration::from_millis(self.timeout_ms))
            .forward_headers(&self.headers)
            .map_err(|e| anyhow::anyhow!("auth.callback.headers: {e}"))?
            .forward_cookies(self.cookies.iter().cloned())
            .map_err(|e| anyhow::anyhow!("auth.callback.cookies: {e}"))?
            .with_max_in_flight(self.max_in_flight)
            .with_recheck_every((self.recheck_every > 0).then(|| Duration::from_secs(self.recheck_every)));
        let config = match self.max_in_flight_per_client {
            Some(0) => bail!("auth.callback.max_in_flight_per_client must be at least 1"),
            Some(max) => config.with_max_in_flight_per_client(max),
            None => config,
        };
        Ok(config)
    }
}

/// `[auth.jwt]`: JSON Web Tokens from `Authorization: Bearer`, `?token=` or
/// a `token` cookie (the first present is the one checked).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// An HS256 secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    /// A PEM file with an RSA public key (RS256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsa_public_key_file: Option<PathBuf>,
    /// A PEM file with a P-256 public key (ES256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec_public_key_file: Option<PathBuf>,
    /// A JWKS file (keys chosen by `kid`), re-read when it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Seconds between checks of `jwks_file` for a change (default 30; a
    /// token naming an unknown `kid` also checks, at most once a second);
    /// 0: read once at startup, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_reload_every: Option<u64>,
    /// The `aud` a token must carry, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The `iss` a token must carry, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf` (default 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leeway: Option<u64>,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("hmac_secret", &self.hmac_secret.as_ref().map(|_| "<redacted>"))
            .field("rsa_public_key_file", &self.rsa_public_key_file)
            .field("ec_public_key_file", &self.ec_public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("jwks_reload_every", &self.jwks_reload_every)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl JwtSettings {
    /// As `estuary-jwt`'s configuration (reads the key files).
    pub fn jwt_config(&self) -> anyhow::Result<estuary_jwt::JwtConfig> {
        let mut config = estuary_jwt::JwtConfig::new();
        let mut keys = 0;
        if let Some(secret) = &self.hmac_secret {
            config = config.hmac_secret(secret.clone().into_bytes())?;
            keys += 1;
        }
        if let Some(path) = &self.rsa_public_key_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("auth.jwt.rsa_public_key_file {}", path.display()))?;
            config = config.rsa_pem(&pem, None)?;
            keys += 1;
        }
        if let Some(path) = &self.ec_public_key_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("auth.jwt.ec_public_key_file {}", path.display()))?;
            config = config.ec_pem(&pem, None)?;
            keys += 1;
        }
        if let Some(path) = &self.jwks_file {
            config = match self.jwks_reload_every {
                Some(0) => {
                    let json = std::fs::read_to_string(path)
                        .with_context(|| format!("auth.jwt.jwks_file {}", path.display()))?;
                    config
                        .jwks_json(&json)
                        .with_context(|| format!("auth.jwt.jwks_file {}", path.display()))?
                }
                Some(seconds) => config
                    .jwks_file(path)?
                    .jwks_reload_every(Duration::from_secs(seconds)),
                None => config.jwks_file(path)?,
            };
            keys += 1;
        }
        if keys == 0 {
            bail!(
                "[auth.jwt] needs a key: hmac_secret, rsa_public_key_file, ec_public_key_file or jwks_file"
            );
        }
        if let Some(audience) = &self.audience {
            config = config.audience(audience.clone());
        }
        if let Some(issuer) = &self.issuer {
            config = config.issuer(issuer.clone());
        }
        if let Some(leeway) = self.leeway {
            config = config.leeway(Duration::from_secs(leeway));
        }
        // Names are bounded by the library's default, Django's username
        // length (150): a Django project's users keep their names (the
        // chat's 50 bounds the names guests choose, not these).
        Ok(config)
    }
}

/// `[auth.django]`: the Django project whose logged-in users are the
/// WebSocket's users. Its values are the project's settings of the same
/// names.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DjangoSettings {
    /// `SECRET_KEY`.
    pub secret_key: String,
    /// `SECRET_KEY_FALLBACKS`.
    #[serde(default)]
    pub secret_key_fallbacks: Vec<String>,
    /// `DATABASES["default"]` as a URL: `postgres://user@host/db` or
    /// `sqlite:///path/db.sqlite3` (opened read-only). Use a read-only role.
    pub database: String,
    /// `SESSION_ENGINE`: `"db"` (default) or `"signed_cookies"`.
    #[serde(default)]
    pub session_engine: SessionEngineName,
    /// `SESSION_COOKIE_NAME` (default `sessionid`).
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// `SESSION_COOKIE_AGE` in seconds, for `signed_cookies` (default two weeks).
    #[serde(default = "default_cookie_age")]
    pub cookie_age: u64,
    /// `AUTH_USER_MODEL`'s table (default `auth_user`).
    #[serde(default = "default_user_table")]
    pub user_table: String,
    /// Seconds between checks that an open connection's session is still
    /// valid (a logout, a changed password or a deactivated user then
    /// closes it with 4401); 0 checks at the handshake only (default 60).
    #[serde(default = "default_recheck_every")]
    pub recheck_every: u64,
}

fn default_recheck_every() -> u64 {
    60
}

/// `auth.django.session_engine`: Django's `SESSION_ENGINE`, by the last
/// part of its module name. Any other value is an error listing these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEngineName {
    /// `django.contrib.sessions.backends.db`.
    #[default]
    Db,
    /// `django.contrib.sessions.backends.signed_cookies` (valid for
    /// `cookie_age` seconds).
    SignedCookies,
}

fn default_cookie_name() -> String {
    "sessionid".into()
}

fn default_cookie_age() -> u64 {
    1_209_600
}

fn default_user_table() -> String {
    "auth_user".into()
}

impl std::fmt::Debug for DjangoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoSettings")
            .field("secret_key", &"<redacted>")
            .field("secret_key_fallbacks", &self.secret_key_fallbacks.len())
            .field("database", &self.database)
            .field("session_engine", &self.session_engine)
            .field("cookie_name", &self.cookie_name)
            .field("cookie_age", &self.cookie_age)
            .field("user_table", &self.user_table)
            .field("recheck_every", &self.recheck_every)
            .finish()
    }
}

impl DjangoSettings {
    /// The project with `SECRET_KEY` `secret_key` and database `database`,
    /// the rest by default.
    pub fn new(secret_key: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            secret_key: secret_key.into(),
            secret_key_fallbacks: Vec::new(),
            database: database.into(),
            session_engine: SessionEngineName::Db,
            cookie_name: default_cookie_name(),
            cookie_age: default_cookie_age(),
            user_table: default_user_table(),
            recheck_every: default_recheck_every(),
        }
    }

    /// As `estuary-django`'s configuration.
    pub fn django_config(&self) -> anyhow::Result<estuary_django::DjangoConfig> {
        let database: estuary_django::DatabaseUrl = self
            .database
            .parse()
            .map_err(|e| anyhow::anyhow!("auth.django.database: {e}"))?;
        let mut config = estuary_django::DjangoConfig::new(self.secret_key.clone(), database);
        config.secret_key_fallbacks = self.secret_key_fallbacks.clone();
        config.cookie_name = self.cookie_name.clone();
        config.engine = match self.session_engine {
            SessionEngineName::Db => estuary_django::SessionEngine::Db,
            SessionEngineName::SignedCookies => estuary_django::SessionEngine::SignedCookies {
                max_age: Duration::from_secs(self.cookie_age),
            },
        };
        config.user_model.table = self.user_table.clone();
        Ok(config)
    }
}
