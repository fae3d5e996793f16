//! The per-connection rate limit: a token bucket.

use tokio::time::Instant;

/// A per-connection rate limit on client messages: a token bucket.
/// Exceeding it closes the connection with 1008 (policy violation).
///
/// ```
/// use estuary_core::RateLimit;
///
/// let limit = RateLimit { per_second: 20.0, burst: 40 };
/// assert_eq!(limit.burst, 40);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages per second allowed on average.
    pub per_second: f64,
    /// Messages allowed in a burst.
    pub burst: u32,
}

pub(super) struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst.max(1)),
            at: now,
        }
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * self.limit.per_second;
        self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst.max(1)));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
