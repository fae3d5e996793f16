//! Per-router WebSocket settings: limits, buffers, keepalive, queues.

use std::time::Duration;

use estuary_core::SessionConfig;

use crate::codec::read::Limits;
use crate::socket::SocketConfig;

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
    /// The most one socket read takes, in bytes (default 1 KiB). Sockets
    /// are read into one buffer per worker thread, not per connection, so
    /// this costs no memory per connection; a message larger than it
    /// arrives in several reads (raise it for servers that mostly receive
    /// large messages).
    pub read_buffer_size: usize,
    /// Bytes of outgoing frames queued before they are written without
    /// waiting for the batch's end (default 4 KiB). Frames are not copied
    /// into a buffer: this bounds how much a batch holds before its first
    /// write, not a buffer's size.
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
    /// The socket transport's configuration. What a connection queues for
    /// writing is bounded by the session's outbound queue; `write_buffer_size`
    /// only decides when a batch starts going out before it is complete.
    pub(crate) fn socket_config(&self) -> SocketConfig {
        SocketConfig {
            limits: Limits {
                max_message: self.max_message_size,
                max_frame: self.max_frame_size.min(self.max_message_size),
            },
            read_size: self.read_buffer_size,
            write_size: self.write_buffer_size,
            close_timeout: self.close_timeout,
        }
    }
}
