//! The one error type: infrastructure and configuration failures, never "anonymous".

/// Why a user could not be looked up. An unknown, forged or expired session is not an
/// error (it is `Ok(None)`, anonymous); these are the failures an operator must see.
///
/// ```
/// use estuary_django::{DatabaseUrl, DjangoError};
/// let err = "mysql://db/x".parse::<DatabaseUrl>().unwrap_err();
/// assert!(matches!(err, DjangoError::Config { .. }));
/// assert!(err.to_string().starts_with("Django settings:"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum DjangoError {
    /// The configuration cannot work (bad URL, a table name that is not an identifier).
    #[error("Django settings: {reason}")]
    Config {
        /// What is wrong, in words.
        reason: String,
    },
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
