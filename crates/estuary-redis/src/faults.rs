//! What can go wrong in Redis besides an outage, and how the layers name it:
//! a key of ours holding another type (a poisoned key), and memberships not
//! yet written back after a restart.

use estuary_core::ChannelLayerError;

/// A key the layer owns (a channel queue or a group) holds a value of another
/// type than the sorted set channels_redis keeps there: someone wrote over
/// it. The layer never deletes another process's key; it skips it, counts
/// it, and says which key it is.
#[derive(Debug, thiserror::Error)]
#[error("Redis key {key:?} holds a value of the wrong type (expected a sorted set)")]
pub struct WrongType {
    /// The key.
    pub key: String,
}

/// A group send was refused because Redis is unreachable, or reachable
/// again but without this process's group memberships written back yet: a
/// group send then could miss this process's members without a word.
#[derive(Debug, thiserror::Error)]
#[error("Redis is unreachable, or back and this process's group memberships are not written again yet")]
pub struct NotRestored;

/// Maps a Redis error on `key` to the channel layer's kinds: a `WRONGTYPE`
/// answer is [`ChannelLayerError::Corrupt`] (retrying will not help), every
/// other failure [`ChannelLayerError::Unavailable`].
pub(crate) fn layer_error(error: redis::RedisError, key: &str) -> ChannelLayerError {
    if is_wrong_type(&error) {
        ChannelLayerError::Corrupt(Box::new(WrongType { key: key.to_owned() }))
    } else {
        ChannelLayerError::Unavailable(Box::new(error))
    }
}

/// True for Redis's `WRONGTYPE` answer, also when a script or a
/// transaction passes it on (their errors carry it in their text only).
pub(crate) fn is_wrong_type(error: &redis::RedisError) -> bool {
    error.code() == Some("WRONGTYPE") || error.to_string().contains("WRONGTYPE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_type_is_corrupt_not_unavailable() {
        let wrong = redis::make_extension_error(
            "WRONGTYPE".to_owned(),
            Some("Operation against a key holding the wrong kind of value".to_owned()),
        );
        let e = layer_error(wrong, "asgispecific.x!");
        assert!(matches!(e, ChannelLayerError::Corrupt(_)), "{e:?}");
        assert!(e.to_string().contains("asgispecific.x!"), "{e}");
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(layer_error(io, "k"), ChannelLayerError::Unavailable(_)));
    }
}
