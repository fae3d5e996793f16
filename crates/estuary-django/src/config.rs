//! What `DjangoSessions` needs to know of the Django project: its settings, in Rust.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::{DjangoConfigError, DjangoError};

/// The Django project's settings that decide how a session cookie is read.
///
/// [`DjangoConfig::new`] gives Django's defaults (`sessionid`, the `db` engine,
/// `auth_user`, `ModelBackend`); change the public fields to match `settings.py`.
///
/// ```
/// use estuary_django::{DatabaseUrl, DjangoConfig, SessionEngine};
/// use std::time::Duration;
///
/// let database: DatabaseUrl = "postgres://django@127.0.0.1:5432/shop".parse().unwrap();
/// let mut config = DjangoConfig::new("the SECRET_KEY", database);
/// config.secret_key_fallbacks = vec!["the previous SECRET_KEY".into()];
/// config.cookie_name = "shop_session".into();
/// config.engine = SessionEngine::SignedCookies { max_age: Duration::from_secs(1_209_600) };
/// ```
///
/// With the `serde` feature it deserializes through `DjangoSettings`, its form as
/// plain values, checked as the constructors check (an invalid value is an
/// error naming its key).
#[derive(Clone)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "crate::settings::DjangoSettings"))]
pub struct DjangoConfig {
    /// `SECRET_KEY`.
    pub secret_key: String,
    /// `SECRET_KEY_FALLBACKS`, tried in order after `secret_key`.
    pub secret_key_fallbacks: Vec<String>,
    /// `SESSION_COOKIE_NAME` (default `sessionid`).
    pub cookie_name: String,
    /// `SESSION_ENGINE`.
    pub engine: SessionEngine,
    /// The project's database (`DATABASES["default"]`): sessions of the `db` engine and
    /// the user table live there.
    pub database: DatabaseUrl,
    /// `AUTH_USER_MODEL`'s table and columns.
    pub user_model: UserModel,
    /// `AUTHENTICATION_BACKENDS`: a session whose `_auth_user_backend` is not listed is
    /// anonymous, as in Django. A backend ending in `AllowAllUsersModelBackend` also lets
    /// inactive users in, as Django's does.
    pub authentication_backends: Vec<String>,
}

impl std::fmt::Debug for DjangoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach a log line.
        f.debug_struct("DjangoConfig")
            .field("secret_key", &"<redacted>")
            .field("secret_key_fallbacks", &self.secret_key_fallbacks.len())
            .field("cookie_name", &self.cookie_name)
            .field("engine", &self.engine)
            .field("database", &self.database)
            .field("user_model", &self.user_model)
            .field("authentication_backends", &self.authentication_backends)
            .finish()
    }
}

impl DjangoConfig {
    /// Django's defaults for everything but the secret and the database.
    pub fn new(secret_key: impl Into<String>, database: DatabaseUrl) -> Self {
        Self {
            secret_key: secret_key.into(),
            secret_key_fallbacks: Vec::new(),
            cookie_name: "sessionid".into(),
            engine: SessionEngine::Db,
            database,
            user_model: UserModel::default(),
            authentication_backends: vec!["django.contrib.auth.backends.ModelBackend".into()],
        }
    }

    /// The secrets to try, newest first.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        std::iter::once(self.secret_key.as_str())
            .chain(self.secret_key_fallbacks.iter().map(String::as_str))
            .collect()
    }
}

/// `SESSION_ENGINE`: where the session data lives.
///
/// ```
/// use estuary_django::SessionEngine;
/// use std::time::Duration;
/// let engine = SessionEngine::SignedCookies { max_age: Duration::from_secs(1_209_600) };
/// assert_ne!(engine, SessionEngine::Db);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEngine {
    /// `django.contrib.sessions.backends.db`: the cookie is a key into `django_session`.
    Db,
    /// `django.contrib.sessions.backends.signed_cookies`: the cookie is the signed
    /// session itself, valid for `max_age` (`SESSION_COOKIE_AGE`) after it was signed.
    SignedCookies {
        /// `SESSION_COOKIE_AGE` (Django's default is two weeks).
        max_age: Duration,
    },
}

/// The project's database, from a URL.
///
/// * `postgres://user@host:port/dbname` (or `postgresql://`, with libpq's options).
/// * `sqlite:///absolute/path/db.sqlite3` or `sqlite://relative/path.sqlite3`;
///   opened read-only.
///
/// ```
/// use estuary_django::DatabaseUrl;
/// let pg: DatabaseUrl = "postgres://postgres@127.0.0.1:5432/shop".parse().unwrap();
/// assert!(matches!(pg, DatabaseUrl::Postgres(_)));
/// let lite: DatabaseUrl = "sqlite:///srv/shop/db.sqlite3".parse().unwrap();
/// assert_eq!(lite, DatabaseUrl::Sqlite("/srv/shop/db.sqlite3".into()));
/// assert!("mysql://x/y".parse::<DatabaseUrl>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A PostgreSQL connection string, as `tokio-postgres` reads it.
    Postgres(String),
    /// The path of an SQLite file.
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The URL may carry a password.
            Self::Postgres(_) => f.write_str("Postgres(<url>)"),
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = DjangoError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(DjangoConfigError::sqlite_without_path().into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        Err(DjangoConfigError::unsupported_database_url().into())
    }
}

/// `AUTH_USER_MODEL`'s table and the columns read from it.
///
/// The default is `django.contrib.auth.models.User` (`auth_user`). For a custom user
/// model, name its table and columns; a column set to `None` is not read (a model
/// without `is_active` counts as active, as Django's `ModelBackend` does). Every name
/// is checked to be a plain SQL identifier when [`crate::DjangoSessions::connect`] runs.
///
/// ```
/// use estuary_django::UserModel;
/// let model = UserModel {
///     table: "accounts_member".into(),
///     username_column: "email".into(),
///     is_staff_column: None,
///     is_superuser_column: None,
///     attribute_columns: vec!["display_name".into()],
///     ..UserModel::default()
/// };
/// assert_eq!(model.pk_column, "id");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserModel {
    /// The table (`auth_user`).
    pub table: String,
    /// The primary key column (`id`); integer, text or UUID.
    pub pk_column: String,
    /// `USERNAME_FIELD`'s column (`username`).
    pub username_column: String,
    /// The password hash column (`password`), needed for `_auth_user_hash`.
    pub password_column: String,
    /// `is_active` (`Some("is_active")`); `None` if the model has none.
    pub is_active_column: Option<String>,
    /// `is_staff`; `None` if the model has none (then `false`).
    pub is_staff_column: Option<String>,
    /// `is_superuser`; `None` if the model has none (then `false`).
    pub is_superuser_column: Option<String>,
    /// Further columns copied into [`crate::DjangoUser::attributes`]
    /// (`first_name`, `last_name`, `email`).
    pub attribute_columns: Vec<String>,
}

impl Default for UserModel {
    fn default() -> Self {
        Self {
            table: "auth_user".into(),
            pk_column: "id".into(),
            username_column: "username".into(),
            password_column: "password".into(),
            is_active_column: Some("is_active".into()),
            is_staff_column: Some("is_staff".into()),
            is_superuser_column: Some("is_superuser".into()),
            attribute_columns: vec!["first_name".into(), "last_name".into(), "email".into()],
        }
    }
}

impl UserModel {
    /// Every table and column name, checked to be `[A-Za-z_][A-Za-z0-9_]*` (at most 63
    /// bytes), so that it can be written into SQL between double quotes.
    pub(crate) fn validate(&self) -> Result<(), DjangoError> {
        let names = [
            &self.table,
            &self.pk_column,
            &self.username_column,
            &self.password_column,
        ]
        .into_iter()
        .chain(self.is_active_column.iter())
        .chain(self.is_staff_column.iter())
        .chain(self.is_superuser_column.iter())
        .chain(self.attribute_columns.iter());
        for name in names {
            let mut bytes = name.bytes();
            let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
            if !first_ok || name.len() > 63 || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(DjangoConfigError::not_an_identifier(name).into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        let mut model = UserModel::default();
        assert!(model.validate().is_ok());
        model.table = "auth_user\"; drop table x; --".into();
        assert!(model.validate().is_err());
        model.table = String::new();
        assert!(model.validate().is_err());
        model.table = "1abc".into();
        assert!(model.validate().is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let config = DjangoConfig::new("s3cr3t", "postgres://u:pw@h/db".parse().unwrap());
        let text = format!("{config:?}");
        assert!(!text.contains("s3cr3t") && !text.contains("pw"));
    }
}
