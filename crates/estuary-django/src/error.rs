//! The error types: infrastructure and configuration failures, never "anonymous".

/// Why a user could not be looked up. An unknown, forged or expired session is not an
/// error (it is `Ok(None)`, anonymous); these are the failures an operator must see.
///
/// ```
/// use estuary_django::{DatabaseUrl, DjangoConfigErrorKind, DjangoError};
///
/// let err = "mysql://db/x".parse::<DatabaseUrl>().unwrap_err();
/// assert!(matches!(&err, DjangoError::Config(e) if e.kind() == DjangoConfigErrorKind::UnsupportedDatabaseUrl));
/// assert!(err.to_string().starts_with("Django settings:"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum DjangoError {
    /// The configuration cannot work (bad URL, a table name that is not an identifier).
    #[error("Django settings: {0}")]
    Config(#[from] DjangoConfigError),
    /// The database could not be reached or refused a query.
    #[error("Django database ({backend}) {operation} failed: {source}")]
    Database {
        /// `"postgresql"` or `"sqlite"`.
        backend: &'static str,
        /// What was being done: `"connect"`, `"session lookup"`, `"user lookup"`.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DjangoError {
    pub(crate) fn db(
        backend: &'static str,
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Database {
            backend,
            operation,
            source: source.into(),
        }
    }
}

/// What is wrong with the Django settings ([`DjangoError::Config`]).
///
/// Opaque, like [`std::io::Error`]: [`kind`](Self::kind) says what is
/// wrong, [`name`](Self::name) gives the table, column or type name at
/// fault, and the driver's error is the [`source`](std::error::Error::source)
/// of [`PostgresUrl`](DjangoConfigErrorKind::PostgresUrl).
///
/// ```
/// use estuary_django::{DjangoConfig, DjangoConfigErrorKind, DjangoError, DjangoSessions};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut config = DjangoConfig::new("the SECRET_KEY", "sqlite:///srv/db.sqlite3".parse().unwrap());
/// config.user_model.table = "auth_user; DROP TABLE x".into();
/// // The names are checked before any connection is made.
/// let Err(DjangoError::Config(error)) = DjangoSessions::connect(config).await else { panic!() };
/// assert_eq!(error.kind(), DjangoConfigErrorKind::NotAnIdentifier);
/// assert_eq!(error.name(), Some("auth_user; DROP TABLE x"));
/// assert_eq!(error.to_string(), r#""auth_user; DROP TABLE x" is not a plain SQL identifier"#);
/// # });
/// ```
#[derive(Debug)]
pub struct DjangoConfigError {
    kind: DjangoConfigErrorKind,
    /// The identifier or the type name at fault.
    name: Option<Box<str>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What is wrong with the Django settings ([`DjangoConfigError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DjangoConfigErrorKind {
    /// The database URL starts with none of `postgres://`, `postgresql://`
    /// and `sqlite://`.
    UnsupportedDatabaseUrl,
    /// An `sqlite://` URL without a path.
    SqliteWithoutPath,
    /// A `postgres://` URL the PostgreSQL driver cannot read (its error is
    /// the source).
    PostgresUrl,
    /// The session cookie's name is empty.
    EmptyCookieName,
    /// A table or column name that is not a plain SQL identifier (letters,
    /// digits and `_`, not starting with a digit, at most 63 bytes);
    /// [`name`](DjangoConfigError::name) is the name as configured.
    NotAnIdentifier,
    /// The user table's primary key is of a type whose name cannot be put
    /// in a query; [`name`](DjangoConfigError::name) is the type's name,
    /// from the server's catalogue.
    UnsupportedPrimaryKey,
}

impl DjangoConfigError {
    fn new(kind: DjangoConfigErrorKind, name: Option<&str>) -> Self {
        Self {
            kind,
            name: name.map(Box::from),
            source: None,
        }
    }

    pub(crate) fn unsupported_database_url() -> Self {
        Self::new(DjangoConfigErrorKind::UnsupportedDatabaseUrl, None)
    }

    pub(crate) fn sqlite_without_path() -> Self {
        Self::new(DjangoConfigErrorKind::SqliteWithoutPath, None)
    }

    pub(crate) fn postgres_url(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: Some(source.into()),
            ..Self::new(DjangoConfigErrorKind::PostgresUrl, None)
        }
    }

    pub(crate) fn empty_cookie_name() -> Self {
        Self::new(DjangoConfigErrorKind::EmptyCookieName, None)
    }

    pub(crate) fn not_an_identifier(name: &str) -> Self {
        Self::new(DjangoConfigErrorKind::NotAnIdentifier, Some(name))
    }

    pub(crate) fn unsupported_primary_key(type_name: &str) -> Self {
        Self::new(DjangoConfigErrorKind::UnsupportedPrimaryKey, Some(type_name))
    }

    /// What is wrong.
    pub fn kind(&self) -> DjangoConfigErrorKind {
        self.kind
    }

    /// The table or column name that is not an identifier, or the primary
    /// key's type name (`None` for the other kinds).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl std::fmt::Display for DjangoConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.name().unwrap_or_default();
        match self.kind {
            DjangoConfigErrorKind::UnsupportedDatabaseUrl => {
                f.write_str("the database URL must start with postgres://, postgresql:// or sqlite://")
            }
            DjangoConfigErrorKind::SqliteWithoutPath => {
                f.write_str("an sqlite:// URL needs a path (sqlite:///path/db.sqlite3)")
            }
            DjangoConfigErrorKind::PostgresUrl => match &self.source {
                Some(source) => write!(f, "the PostgreSQL URL is not valid: {source}"),
                None => f.write_str("the PostgreSQL URL is not valid"),
            },
            DjangoConfigErrorKind::EmptyCookieName => f.write_str("the session cookie name is empty"),
            DjangoConfigErrorKind::NotAnIdentifier => write!(f, "{name:?} is not a plain SQL identifier"),
            DjangoConfigErrorKind::UnsupportedPrimaryKey => {
                write!(f, "unsupported primary key type {name:?}")
            }
        }
    }
}

impl std::error::Error for DjangoConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_text() {
        let cases = [
            (
                DjangoConfigError::unsupported_database_url(),
                DjangoConfigErrorKind::UnsupportedDatabaseUrl,
                "the database URL must start with postgres://, postgresql:// or sqlite://",
            ),
            (
                DjangoConfigError::sqlite_without_path(),
                DjangoConfigErrorKind::SqliteWithoutPath,
                "an sqlite:// URL needs a path (sqlite:///path/db.sqlite3)",
            ),
            (
                DjangoConfigError::postgres_url(std::io::Error::other("bad port")),
                DjangoConfigErrorKind::PostgresUrl,
                "the PostgreSQL URL is not valid: bad port",
            ),
            (
                DjangoConfigError::empty_cookie_name(),
                DjangoConfigErrorKind::EmptyCookieName,
                "the session cookie name is empty",
            ),
            (
                DjangoConfigError::not_an_identifier("1table"),
                DjangoConfigErrorKind::NotAnIdentifier,
                "\"1table\" is not a plain SQL identifier",
            ),
            (
                DjangoConfigError::unsupported_primary_key("my type"),
                DjangoConfigErrorKind::UnsupportedPrimaryKey,
                "unsupported primary key type \"my type\"",
            ),
        ];
        for (error, kind, text) in cases {
            assert_eq!((error.kind(), error.to_string()), (kind, text.to_owned()));
            assert_eq!(
                std::error::Error::source(&error).is_some(),
                kind == DjangoConfigErrorKind::PostgresUrl,
                "{error}"
            );
        }
        assert_eq!(
            DjangoConfigError::not_an_identifier("1table").name(),
            Some("1table")
        );
        assert_eq!(DjangoConfigError::unsupported_primary_key("t").name(), Some("t"));
        assert_eq!(DjangoConfigError::empty_cookie_name().name(), None);
    }
}
