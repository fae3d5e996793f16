//! A session's settings, and how a connection ended.

use std::time::Duration;

use super::rate::{AddressRateLimiter, RateLimit};
use super::stats::SessionStats;
use crate::close::CloseCode;
use crate::context::SlowClientPolicy;

/// Settings of a session (the server fills them from its configuration).
///
/// ```
/// use std::time::Duration;
/// use estuary_core::{RateLimit, SessionConfig, SlowClientPolicy};
///
/// let config = SessionConfig {
///     outbound_capacity: 128,
///     slow_client: SlowClientPolicy::Drop,
///     rate_limit: Some(RateLimit { per_second: 10.0, burst: 20 }),
///     ..SessionConfig::default()
/// };
/// assert_eq!(config.ping_interval, Some(Duration::from_secs(20)));
/// ```
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Capacity of the outbound queue, in messages (default 64).
    pub outbound_capacity: usize,
    /// What to do when the outbound queue is full.
    pub slow_client: SlowClientPolicy,
    /// Interval between keepalive pings; `None` disables them (default 20 s).
    pub ping_interval: Option<Duration>,
    /// How long a client may stay silent after a ping before it is dropped as
    /// dead (default 20 s).
    pub ping_timeout: Duration,
    /// Rate limit on client messages; exceeding it closes with 1008.
    pub rate_limit: Option<RateLimit>,
    /// How long one write to the client may stall (its TCP window closed)
    /// before the client is taken as too slow and dropped with 1013
    /// (default 10 s).
    pub write_timeout: Duration,
    /// Bytes the outbound queue may hold besides its message count (default
    /// 1 MiB): past it the queue counts as full and the slow-client policy
    /// applies. A single larger message is still sent when the queue is
    /// empty.
    pub outbound_bytes: usize,
    /// Client messages per second per client address, shared by all of that
    /// address's connections (a connection over it closes with 1008).
    pub address_rate_limit: Option<AddressRateLimiter>,
    /// Pings and pongs a client may send per second (default 5, burst 20);
    /// past it the connection closes with 1008. Each ping costs the server
    /// a pong.
    pub control_rate_limit: Option<RateLimit>,
    /// Largest channel-layer message handed to this connection, in bytes
    /// (default 1 MiB). Larger ones are dropped, counted in
    /// [`Outcome::oversized`] and logged (at most once a second).
    pub max_event_size: usize,
    /// Groups one connection may be in at once (default 100); past it,
    /// [`Context::group_add`](crate::Context::group_add) fails with [`ConsumerError::TooManyGroups`](crate::ConsumerError::TooManyGroups).
    pub max_groups: usize,
    /// Group sends one connection may have in flight through
    /// [`Context::group_send_pipelined`](crate::Context::group_send_pipelined)
    /// (default [`DEFAULT_GROUP_SEND_WINDOW`](crate::DEFAULT_GROUP_SEND_WINDOW),
    /// 8; 0 counts as 1). While that many are in flight the session reads
    /// no more of the client's messages.
    pub group_send_window: usize,
    /// How long a connection may stay open (daphne's `websocket_timeout`;
    /// `None`, the default: no limit). When it elapses the session sends
    /// what is queued and closes with 1001 (going away, reason
    /// `"connection lifetime reached"`), as at shutdown: a client that
    /// reconnects on 1001 lands on a fresh connection (after a deploy, on
    /// the new process).
    pub max_lifetime: Option<Duration>,
    /// The counters the sessions of this config add to (clones of the
    /// config share them): read them from here, or replace them with
    /// counters of your own before the config is used.
    pub stats: SessionStats,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            outbound_capacity: 64,
            slow_client: SlowClientPolicy::default(),
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(20),
            rate_limit: None,
            write_timeout: Duration::from_secs(10),
            outbound_bytes: 1024 * 1024,
            address_rate_limit: None,
            control_rate_limit: Some(RateLimit {
                per_second: 5.0,
                burst: 20,
            }),
            max_event_size: 1024 * 1024,
            max_groups: 100,
            group_send_window: crate::DEFAULT_GROUP_SEND_WINDOW,
            max_lifetime: None,
            stats: SessionStats::default(),
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The close code handed to `disconnect`.
    pub code: CloseCode,
    /// True when the client closed first.
    pub client_closed: bool,
    /// Messages dropped for this client under [`SlowClientPolicy::Drop`].
    pub dropped: u64,
    /// Channel-layer messages dropped for being larger than
    /// [`SessionConfig::max_event_size`].
    pub oversized: u64,
}
