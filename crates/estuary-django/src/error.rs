//! The error types: infrastructure and configuration failures, never "anonymous".

/// Why a user could not be looked up. An unknown, forged or expired session is not an
/// error (it is `Ok(None)`, anonymous); these are the failures an operator must see.
///
/// ```
/// use estuary_django::{DatabaseUrl, DjangoConfigError, DjangoError};
///
/// let err = "mysql://db/x".parse::<DatabaseUrl>().unwrap_err();
/// assert!(matches!(err, DjangoError::Config(DjangoConfigError::UnsupportedDatabaseUrl)));
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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DjangoConfigError {
    /// The database URL starts with none of `postgres://`, `postgresql://`
    /// and `sqlite://`.
    #[error("the database URL must start with postgres://, postgresql:// or sqlite://")]
    UnsupportedDatabaseUrl,
    /// An `sqlite://` URL without a path.
    #[error("an sqlite:// URL needs a path (sqlite:///path/db.sqlite3)")]
    SqliteWithoutPath,
    /// A `postgres://` URL the PostgreSQL driver cannot read.
    #[error("the PostgreSQL URL is not valid: {0}")]
    PostgresUrl(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The session cookie's name is empty.
    #[error("the session cookie name is empty")]
    EmptyCookieName,
    /// A table or column name that is not a plain SQL identifier (letters,
    /// digits and `_`, not starting with a digit, at most 63 bytes).
    #[error("{name:?} is not a plain SQL identifier")]
    NotAnIdentifier {
        /// The name as configured.
        name: String,
    },
    /// The user table's primary key is of a type whose name cannot be put
    /// in a query.
    #[error("unsupported primary key type {type_name:?}")]
    UnsupportedPrimaryKey {
        /// The type's name, from the server's catalogue.
        type_name: String,
    },
}
