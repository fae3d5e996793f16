//! `DjangoSessions`: from a cookie to a user, as Django's `get_user` decides.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::database::Database;
use crate::session::{DB_SESSION_SALT, SIGNED_COOKIES_SALT, plausible_session_key};
use crate::signing::{Signer, constant_time_eq};
use crate::{
    DjangoConfig, DjangoConfigError, DjangoError, DjangoUser, SessionAuth, SessionEngine, cookie_value,
    session_auth_hash,
};

/// Reads Django's session cookies and tells which user (if any) they belong to,
/// exactly as Django's `django.contrib.auth.get_user` would: the signature (current
/// secret or a fallback), the expiry, the login in the session, the user row, that
/// the user is active, and that `_auth_user_hash` still matches the password (so a
/// password change logs the sockets out as it logs out the site).
///
/// Session data is only read, never written. Cheap to share: wrap it in an `Arc`.
///
/// ```no_run
/// use estuary_django::{DjangoConfig, DjangoSessions};
///
/// # async fn run() -> Result<(), estuary_django::DjangoError> {
/// let config = DjangoConfig::new("the SECRET_KEY", "postgres://django@127.0.0.1/shop".parse()?);
/// let sessions = DjangoSessions::connect(config).await?;
/// match sessions.user_from_cookie_header("sessionid=0123456789abcdefghijklmnopqrstuv").await? {
///     Some(user) => println!("{} ({})", user.username, user.id),
///     None => println!("anonymous"),
/// }
/// # Ok(())
/// # }
/// ```
pub struct DjangoSessions {
    config: DjangoConfig,
    signer: Signer,
    database: Database,
}

impl std::fmt::Debug for DjangoSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoSessions")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DjangoSessions {
    /// Checks the configuration and connects to the database, preparing the session
    /// and user queries, so that a wrong URL, table or column fails here and not at
    /// the first connection. Later failures reconnect on their own.
    pub async fn connect(config: DjangoConfig) -> Result<Self, DjangoError> {
        config.user_model.validate()?;
        if config.cookie_name.is_empty() {
            return Err(DjangoConfigError::empty_cookie_name().into());
        }
        let salt = match config.engine {
            SessionEngine::Db => DB_SESSION_SALT,
            SessionEngine::SignedCookies { .. } => SIGNED_COOKIES_SALT,
        };
        let signer = Signer::new(salt, config.secrets());
        let sessions_table = config.engine == SessionEngine::Db;
        let database = Database::connect(&config.database, &config.user_model, sessions_table).await?;
        Ok(Self {
            config,
            signer,
            database,
        })
    }

    /// The configuration this was built from.
    pub fn config(&self) -> &DjangoConfig {
        &self.config
    }

    /// The user behind a `Cookie:` request header, reading the configured cookie
    /// (`SESSION_COOKIE_NAME`). `Ok(None)` is anonymous: no cookie, an unknown, forged
    /// or expired session, no login in it, an unknown or inactive user, or a password
    /// changed since the login. `Err` only when the database fails.
    pub async fn user_from_cookie_header(
        &self,
        cookie_header: &str,
    ) -> Result<Option<DjangoUser>, DjangoError> {
        match cookie_value(cookie_header, &self.config.cookie_name) {
            Some(value) => self.user_for_session_key(&value).await,
            None => Ok(None),
        }
    }

    /// The user behind a session key, that is the session cookie's value: a key into
    /// `django_session` for the `db` engine, the signed session itself for
    /// `signed_cookies`. Same answers as [`Self::user_from_cookie_header`].
    pub async fn user_for_session_key(&self, key: &str) -> Result<Option<DjangoUser>, DjangoError> {
        let Some(data) = self.session_data(key).await? else {
            return Ok(None);
        };
        self.user_for_session_data(&data).await
    }

    /// The decoded session behind `key`, or `None` (unknown, forged, expired).
    async fn session_data(&self, key: &str) -> Result<Option<serde_json::Value>, DjangoError> {
        let now = SystemTime::now();
        match &self.config.engine {
            SessionEngine::Db => {
                if !plausible_session_key(key) {
                    return Ok(None);
                }
                let Some(row) = self.database.session(key).await? else {
                    return Ok(None);
                };
                let now_secs = now
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                // Django keeps only rows with expire_date > now.
                if row.expire_epoch.partial_cmp(&now_secs) != Some(std::cmp::Ordering::Greater) {
                    return Ok(None);
                }
                Ok(self.decode(self.signer.loads(&row.session_data, None, now)))
            }
            SessionEngine::SignedCookies { max_age } => {
                Ok(self.decode(self.signer.loads(key, Some(*max_age), now)))
            }
        }
    }

    fn decode(
        &self,
        loaded: Result<serde_json::Value, crate::signing::BadSignature>,
    ) -> Option<serde_json::Value> {
        match loaded {
            Ok(value) => Some(value),
            Err(reason) => {
                tracing::debug!(%reason, "Django session refused");
                None
            }
        }
    }

    /// The user for decoded session data (Django's `get_user` after the session
    /// loaded): the backend must be configured, the user must exist and be active
    /// (unless the backend allows all), and `_auth_user_hash` must match the password
    /// under the current secret or a fallback.
    pub async fn user_for_session_data(
        &self,
        data: &serde_json::Value,
    ) -> Result<Option<DjangoUser>, DjangoError> {
        let Some(auth) = SessionAuth::from_session_data(data) else {
            return Ok(None);
        };
        if !self.config.authentication_backends.contains(&auth.backend) {
            return Ok(None);
        }
        let Some(row) = self.database.user(&auth.user_id).await? else {
            return Ok(None);
        };
        let allows_inactive = auth.backend.ends_with(".AllowAllUsersModelBackend")
            || auth.backend.ends_with(".AllowAllUsersRemoteUserBackend");
        if !row.is_active && !allows_inactive {
            return Ok(None);
        }
        let Some(hash) = auth.hash.as_deref().filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        let mut verified = false;
        for secret in self.config.secrets() {
            verified |= constant_time_eq(
                hash.as_bytes(),
                session_auth_hash(&row.password, secret).as_bytes(),
            );
        }
        if !verified {
            return Ok(None);
        }
        Ok(Some(DjangoUser {
            id: row.id,
            username: row.username,
            is_staff: row.is_staff,
            is_superuser: row.is_superuser,
            attributes: row.attributes,
        }))
    }
}
