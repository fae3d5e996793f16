//! Per-router WebSocket settings: limits, buffers, keepalive, queues.

use std::time::Duration;

use estuary_core::SessionConfig;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// WebSocket settings of a [`Router`](crate::Router). The defaults are safe
/// for a public server.
///
/// ```
/// use std::time::Duration;
/// use estuary_server::WsSettings;
///
/// let mut settings = WsSettings::default();
/// settings.max_message_size = 1 << 20;
/// settings.session.ping_interval = Some(Duration::from_secs(30));
/// assert_eq!(settings.read_buffer_size, 1024);
/// ```
///
/// With the `serde` feature it deserializes through `WebSocketSettings`, its
/// form as plain values, checked (an invalid value is an error naming its
/// key).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(try_from = "crate::websocket_settings::WebSocketSettings")
)]
pub struct WsSettings {
    /// Largest message accepted from a client, in bytes; larger closes with
    /// 1009 (default 64 KiB).
    pub max_message_size: usize,
    /// Largest single frame accepted, in bytes (default 64 KiB).
    pub max_frame_size: usize,
    /// Read buffer per connection, and the most one socket read takes
    /// (default 1 KiB). Every connection keeps it resident, idle or not
    /// (tungstenite zero-fills it): 1 KiB instead of 4 took an idle chat
    /// connection from 13.0 to 10.0 KiB; tungstenite's own default of
    /// 128 KiB would cost 128. A message larger than it arrives in several
    /// reads: raise it for servers that mostly receive large messages.
    pub read_buffer_size: usize,
    /// Bytes buffered before a write is flushed by itself (default 4 KiB).
    pub write_buffer_size: usize,
    /// How long the server waits for the client's close reply (default 2 s).
    pub close_timeout: Duration,
    /// Outbound queue, slow-client policy, keepalive and rate limit.
    pub session: SessionConfig,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            max_frame_size: 64 * 1024,
            read_buffer_size: 1024,
            write_buffer_size: 4 * 1024,
            close_timeout: Duration::from_secs(2),
            session: SessionConfig::default(),
        }
    }
}

impl WsSettings {
    pub(crate) fn tungstenite(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            // tungstenite's write buffer stays unbounded (its default): the
            // outbound queue already bounds what a connection holds, and a
            // cap here would refuse large outgoing messages outright.
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_frame_size.min(self.max_message_size)))
    }
}
