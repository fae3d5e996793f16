//! What can go wrong in Redis besides an outage, and how the layers name it:
//! a key of ours holding another type (a poisoned key), memberships not yet
//! written back after a restart, and a warning that is logged at most every
//! few seconds however often its fault recurs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// Logs at most once per period; counts what it held back meanwhile, and the
/// next message it lets through says how many.
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    start: Instant,
    /// Milliseconds after `start` of the last message let through, plus one
    /// (zero: none yet).
    last: AtomicU64,
    held_back: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            period,
            start: Instant::now(),
            last: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last one)` when a message may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let period = u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < period {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_period() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        let t = Throttle::new(Duration::ZERO);
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), Some(0));
    }

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
