//! [`DjangoSettings`]: the Django project's settings as a file holds them
//! (`[auth.django]` of `estuary serve`), and [`DjangoConfig`]'s serde form.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{DatabaseUrl, DjangoAuthenticator, DjangoConfig, DjangoConfigError, DjangoError, SessionEngine};

/// A [`DjangoConfig`] (and the [`DjangoAuthenticator`]'s recheck) as plain
/// values, the form serde reads and writes (`[auth.django]` of `estuary
/// serve`'s TOML file). Its values are the project's settings of the same
/// names. Turned into a `DjangoConfig` by [`TryFrom`], which checks the
/// database URL, the cookie name and the user table; `DjangoConfig`
/// deserializes through it, so that an invalid value is an error naming
/// its key.
///
/// ```
/// use estuary_django::{DjangoConfig, DjangoSettings, SessionEngine};
///
/// let config: DjangoConfig = serde_json::from_str(
///     r#"{"secret_key": "the SECRET_KEY", "database": "sqlite:///srv/shop/db.sqlite3",
///         "session_engine": "signed_cookies", "cookie_age": 3600}"#,
/// )?;
/// assert_eq!(config.engine, SessionEngine::SignedCookies { max_age: std::time::Duration::from_secs(3600) });
///
/// let bad = r#"{"secret_key": "k", "database": "mysql://db/shop"}"#;
/// let error = serde_json::from_str::<DjangoConfig>(bad).unwrap_err().to_string();
/// assert!(error.starts_with("database: "), "{error}");
///
/// // With the recheck, as an authenticator.
/// let settings = DjangoSettings::new("the SECRET_KEY", "postgres://django@127.0.0.1/shop");
/// assert_eq!(settings.recheck_every, 60);
/// let authenticator = settings.authenticator()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    /// A setting of the [`DjangoAuthenticator`]
    /// ([`authenticator`](Self::authenticator)), not of the `DjangoConfig`.
    #[serde(default = "default_recheck_every")]
    pub recheck_every: u64,
}

/// `session_engine`: Django's `SESSION_ENGINE`, by the last part of its
/// module name. Any other value is an error listing these two.
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

fn default_recheck_every() -> u64 {
    60
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
            .field("database", &"<url>")
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

    /// The authenticator these settings describe: their [`DjangoConfig`],
    /// rechecking every `recheck_every` seconds (never when 0).
    pub fn authenticator(&self) -> Result<DjangoAuthenticator, DjangoSettingsError> {
        let authenticator = DjangoAuthenticator::new(DjangoConfig::try_from(self.clone())?);
        Ok(match self.recheck_every {
            0 => authenticator,
            seconds => authenticator.recheck_every(Duration::from_secs(seconds)),
        })
    }
}

/// Why [`DjangoSettings`] do not make a [`DjangoConfig`]: the key, and what
/// is wrong with its value.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {source}")]
pub struct DjangoSettingsError {
    /// The key whose value is wrong (`database`, `cookie_name`, `user_table`).
    pub key: &'static str,
    /// What is wrong with it.
    #[source]
    pub source: DjangoError,
}

impl TryFrom<DjangoSettings> for DjangoConfig {
    type Error = DjangoSettingsError;

    fn try_from(s: DjangoSettings) -> Result<Self, Self::Error> {
        let at = |key: &'static str| move |source: DjangoError| DjangoSettingsError { key, source };
        let database: DatabaseUrl = s.database.parse().map_err(at("database"))?;
        if s.cookie_name.is_empty() {
            return Err(at("cookie_name")(DjangoConfigError::empty_cookie_name().into()));
        }
        let mut config = DjangoConfig::new(s.secret_key, database);
        config.user_model.table = s.user_table;
        config.user_model.validate().map_err(at("user_table"))?;
        config.secret_key_fallbacks = s.secret_key_fallbacks;
        config.cookie_name = s.cookie_name;
        config.engine = match s.session_engine {
            SessionEngineName::Db => SessionEngine::Db,
            SessionEngineName::SignedCookies => SessionEngine::SignedCookies {
                max_age: Duration::from_secs(s.cookie_age),
            },
        };
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of the settings `json` (an object's members), as text.
    fn error(json: &str) -> String {
        match serde_json::from_str::<DjangoConfig>(&format!("{{\"secret_key\": \"k\", {json}}}")) {
            Ok(_) => panic!("{json:?} was accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn an_invalid_value_names_its_key() {
        assert!(error(r#""database": "mysql://db/x""#).starts_with("database: "));
        assert!(error(r#""database": "sqlite://""#).starts_with("database: "));
        let table = error(r#""database": "sqlite:///x.db", "user_table": "auth user""#);
        assert!(table.starts_with("user_table: "), "{table}");
        let cookie = error(r#""database": "sqlite:///x.db", "cookie_name": """#);
        assert!(cookie.starts_with("cookie_name: "), "{cookie}");
        let engine = error(r#""database": "sqlite:///x.db", "session_engine": "cache""#);
        assert!(engine.contains("unknown variant `cache`"), "{engine}");
    }

    #[test]
    fn settings_become_the_config_and_the_authenticator() {
        let settings: DjangoSettings = toml::from_str(
            "secret_key = \"k\"\nsecret_key_fallbacks = [\"old\"]\ndatabase = \"sqlite:///srv/db.sqlite3\"\n\
             cookie_name = \"shop\"\nuser_table = \"accounts_member\"\nrecheck_every = 0\n",
        )
        .unwrap();
        assert_eq!(
            toml::from_str::<DjangoSettings>(&toml::to_string(&settings).unwrap()).unwrap(),
            settings
        );
        let config = DjangoConfig::try_from(settings.clone()).unwrap();
        assert_eq!(config.database, DatabaseUrl::Sqlite("/srv/db.sqlite3".into()));
        assert_eq!(config.secret_key_fallbacks, ["old"]);
        assert_eq!(config.cookie_name, "shop");
        assert_eq!(config.user_model.table, "accounts_member");
        assert_eq!(config.engine, SessionEngine::Db);
        assert!(settings.authenticator().is_ok());
        assert!(
            !format!("{settings:?}").contains("\"k\""),
            "the secret is not in Debug"
        );
    }
}
