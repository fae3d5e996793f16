//! What can go wrong in Redis besides an outage, and how the layers name it:
//! a key of ours holding another type (a poisoned key), and memberships not
//! yet written back after a restart.

use estuary_core::ChannelLayerError;

/// A key the layer owns (a channel queue or a group) holds a value of another
/// type than the sorted set channels_redis keeps there: someone wrote over
/// it. The layer never deletes another process's key; it skips it, counts
/// it, and says which key it is ([`key`](Self::key)).
///
/// ```
/// use estuary_core::ChannelLayerError;
/// use estuary_redis::WrongType;
///
/// /// The key someone wrote over, if that is what `error` says.
/// fn written_over(error: &ChannelLayerError) -> Option<&str> {
///     match error {
///         ChannelLayerError::Corrupt(source) => source.downcast_ref::<WrongType>().map(WrongType::key),
///         _ => None,
///     }
/// }
/// assert_eq!(written_over(&ChannelLayerError::Lost { count: 1 }), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Redis key {key:?} holds a value of the wrong type (expected a sorted set)")]
pub struct WrongType {
    key: Box<str>,
}

impl WrongType {
    pub(crate) fn new(key: &str) -> Self {
        Self { key: key.into() }
    }

    /// The key written over.
    pub fn key(&self) -> &str {
        &self.key
    }
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
        ChannelLayerError::Corrupt(Box::new(WrongType::new(key)))
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
        let ChannelLayerError::Corrupt(source) = &e else {
            panic!("not corrupt: {e:?}");
        };
        let wrong = source.downcast_ref::<WrongType>().expect("a WrongType");
        assert_eq!(wrong.key(), "asgispecific.x!");
        assert_eq!(
            e.to_string(),
            "undecodable message in channel layer: Redis key \"asgispecific.x!\" holds a value of the wrong type (expected a sorted set)"
        );
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(layer_error(io, "k"), ChannelLayerError::Unavailable(_)));
    }
}
