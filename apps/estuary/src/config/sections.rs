//! The file's `[websocket]` table, with its defaults (`[layer]` and
//! `[server]` are the libraries' `LayerSettings` and `ServerSettings`).

use serde::{Deserialize, Serialize};

/// `websocket.slow_client`: what happens to a client whose outbound queue
/// is full. Any other value in the file is an error listing these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowClient {
    /// Close it with 1013 after `slow_client_grace` seconds.
    #[default]
    Disconnect,
    /// Drop the message and count it; the client stays.
    Drop,
}

/// `[websocket]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Largest client message in bytes; larger closes with 1009.
    pub max_message_size: usize,
    /// Seconds between keepalive pings (0 disables them).
    pub ping_interval: u64,
    /// Seconds a silent client is kept after a ping.
    pub ping_timeout: u64,
    /// Outbound queue per connection, in messages.
    pub outbound_capacity: usize,
    /// `"disconnect"` (close 1013 after `slow_client_grace` seconds) or `"drop"`.
    pub slow_client: SlowClient,
    /// Seconds a send may wait for room before a slow client is closed.
    pub slow_client_grace: u64,
    /// Client messages per second allowed on average (0: no limit); past it, close 1008.
    pub rate_limit: f64,
    /// Client messages allowed in a burst.
    pub rate_burst: u32,
    /// Bytes read from a client's socket at a time. Each connection keeps a
    /// buffer this large, so it weighs on idle memory; messages larger than
    /// it take several reads.
    pub read_buffer_size: usize,
    /// Bytes a connection's outbound queue may hold (besides
    /// `outbound_capacity` messages); past it the client counts as slow.
    pub outbound_bytes: usize,
    /// Client messages per second per client address, over all its
    /// connections (0: no limit); past it, close 1008.
    pub rate_limit_per_ip: f64,
    /// Burst of `rate_limit_per_ip`.
    pub rate_burst_per_ip: u32,
    /// Pings and pongs a client may send per second (0: no limit); past
    /// it, close 1008.
    pub control_rate_limit: f64,
    /// Largest event from the channel layer or the push API, in bytes:
    /// larger layer events are dropped (counted and logged), larger pushes
    /// get 413.
    pub max_event_size: usize,
    /// Groups one connection may be in.
    pub max_groups: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            ping_interval: 20,
            ping_timeout: 20,
            outbound_capacity: 64,
            slow_client: SlowClient::Disconnect,
            slow_client_grace: 5,
            rate_limit: 20.0,
            rate_burst: 40,
            read_buffer_size: 1024,
            outbound_bytes: 1024 * 1024,
            rate_limit_per_ip: 200.0,
            rate_burst_per_ip: 400,
            control_rate_limit: 5.0,
            max_event_size: 1024 * 1024,
            max_groups: 100,
        }
    }
}
