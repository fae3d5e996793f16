//! What can go wrong setting a Redis layer up.

/// The Redis layer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisLayerError {
    /// No hosts were given.
    #[error("no Redis hosts configured")]
    NoHosts,
    /// A host URL is invalid.
    #[error("invalid Redis URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What the client said.
        source: redis::RedisError,
    },
    /// The prefix cannot start a channel name (the pub/sub layer names
    /// channels `{prefix}specific.<id>`).
    #[error("invalid prefix {prefix:?} for the pub/sub layer: {source}")]
    InvalidPrefix {
        /// The prefix.
        prefix: String,
        /// Why it cannot start a channel name.
        #[source]
        source: estuary_core::NameError,
    },
    /// The layer must be made inside a tokio runtime (it starts its receive task).
    #[error("RedisChannelLayer::new must be called inside a tokio runtime")]
    NoRuntime,
}
