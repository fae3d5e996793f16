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
///
/// With the `serde` feature it reads and writes as `{ per_second = 20.0,
/// burst = 40 }`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct RateLimit {
    /// Messages per second allowed on average.
    pub per_second: f64,
    /// Messages allowed in a burst.
    pub burst: u32,
}

///
/// The limit is the caller's (a connection's `SessionConfig`, an address
/// limiter's), not copied into every bucket.
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: f64::from(limit.burst.max(1)),
            at: now,
        }
    }

    /// Takes a token under `limit` (the one the bucket was made with).
    pub(super) fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * limit.per_second;
        self.tokens = (self.tokens + refill).min(f64::from(limit.burst.max(1)));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A rate limit shared by every connection from one client address: what
/// stops a client that reconnects to get a fresh per-connection allowance,
/// or spreads its flood over many sockets. IPv6 addresses count per /64
/// (one subscriber's allocation), so rotating through a prefix does not
/// multiply the allowance.
///
/// Cheap to clone (the clones share the counters). Memory is bounded by the
/// addresses active within one refill of the burst: an idle address's full
/// bucket is forgotten, which costs nothing since a new bucket starts full.
///
/// ```
/// use std::net::IpAddr;
/// use estuary_core::{AddressRateLimiter, RateLimit};
///
/// let limiter = AddressRateLimiter::new(RateLimit { per_second: 1.0, burst: 2 });
/// let a: IpAddr = "192.0.2.1".parse().unwrap();
/// let b: IpAddr = "192.0.2.2".parse().unwrap();
/// assert!(limiter.check(a) && limiter.check(a));
/// assert!(!limiter.check(a), "the burst is spent");
/// assert!(limiter.check(b), "another address has its own");
/// ```
#[derive(Clone)]
pub struct AddressRateLimiter {
    limit: RateLimit,
    state: std::sync::Arc<std::sync::Mutex<Addresses>>,
}

struct Addresses {
    buckets: std::collections::HashMap<std::net::IpAddr, Bucket>,
    /// The map's size at which idle buckets are swept next.
    sweep_at: usize,
}

const SWEEP_MIN: usize = 1024;

impl std::fmt::Debug for AddressRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressRateLimiter")
            .field("limit", &self.limit)
            .field("addresses", &crate::sync::lock(&self.state).buckets.len())
            .finish()
    }
}

impl AddressRateLimiter {
    /// `limit` per client address.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: std::sync::Arc::new(std::sync::Mutex::new(Addresses {
                buckets: std::collections::HashMap::new(),
                sweep_at: SWEEP_MIN,
            })),
        }
    }

    /// The limit each address gets.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token for `address`: `false` when its allowance is spent.
    pub fn check(&self, address: std::net::IpAddr) -> bool {
        self.check_at(address, Instant::now())
    }

    fn check_at(&self, address: std::net::IpAddr, now: Instant) -> bool {
        let key = address_key(address);
        let mut state = crate::sync::lock(&self.state);
        if state.buckets.len() >= state.sweep_at {
            let burst = f64::from(self.limit.burst.max(1));
            let per_second = self.limit.per_second;
            // Forget the buckets that have refilled: they equal a new one.
            state
                .buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst);
            state.sweep_at = (state.buckets.len() * 2).max(SWEEP_MIN);
        }
        let limit = self.limit;
        state
            .buckets
            .entry(key)
            .or_insert_with(|| Bucket::new(limit, now))
            .take(limit, now)
    }

    /// Addresses currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        crate::sync::lock(&self.state).buckets.len()
    }
}

/// The address that per-address limits count by: IPv4 as is (IPv4-mapped
/// IPv6 too), IPv6 by its /64, one subscriber's usual allocation.
///
/// ```
/// use estuary_core::address_key;
///
/// assert_eq!(address_key("2001:db8::7".parse().unwrap()).to_string(), "2001:db8::");
/// assert_eq!(address_key("::ffff:192.0.2.1".parse().unwrap()).to_string(), "192.0.2.1");
/// ```
pub fn address_key(address: std::net::IpAddr) -> std::net::IpAddr {
    match address {
        std::net::IpAddr::V4(_) => address,
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ipv6_counts_per_64_and_idle_buckets_are_swept() {
        let limiter = AddressRateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 1,
        });
        let now = Instant::now();
        assert!(limiter.check_at("2001:db8::1".parse().unwrap(), now));
        assert!(!limiter.check_at("2001:db8::ffff:2".parse().unwrap(), now));
        assert!(limiter.check_at("2001:db8:0:1::1".parse().unwrap(), now));
        assert!(limiter.check_at("::ffff:192.0.2.1".parse().unwrap(), now));
        assert!(!limiter.check_at("192.0.2.1".parse().unwrap(), now));
        // Three addresses so far; fill the map to the sweep mark.
        for i in 0..(SWEEP_MIN - 3) as u32 {
            limiter.check_at(std::net::IpAddr::V4(i.into()), now);
        }
        assert_eq!(limiter.tracked(), SWEEP_MIN);
        // A second later every bucket has refilled: the next check sweeps.
        limiter.check_at("198.51.100.1".parse().unwrap(), now + Duration::from_secs(1));
        assert_eq!(limiter.tracked(), 1);
    }
}
