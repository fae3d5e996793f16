//! [`WebSocketSettings`]: the WebSocket settings as a file holds them
//! (`[websocket]` of `estuary serve`), and [`WsSettings`]' serde form.

use std::time::Duration;

use estuary_core::{AddressRateLimiter, RateLimit, SlowClientPolicy};
use serde::{Deserialize, Serialize};

use crate::WsSettings;

/// `slow_client` of [`WebSocketSettings`]: what happens to a client whose
/// outbound queue is full. It reads and writes as `"disconnect"` or
/// `"drop"`; any other value is an error listing these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowClient {
    /// Close it with 1013 after `slow_client_grace` seconds
    /// ([`SlowClientPolicy::Disconnect`]).
    #[default]
    Disconnect,
    /// Drop the message and count it; the client stays
    /// ([`SlowClientPolicy::Drop`]).
    Drop,
}

/// A [`WsSettings`] (with its [`SessionConfig`](estuary_core::SessionConfig))
/// as plain values, the form serde reads and writes (`[websocket]` of
/// `estuary serve`'s TOML file): one flat table, seconds as integers, a rate
/// limit as a rate and a burst, 0 for "no limit" where a limit can be off.
/// Missing keys take `WsSettings::default()`'s values: the rate limits per
/// connection and per address are off, the control-frame limit is on.
///
/// [`check`](Self::check) names the key of an invalid value;
/// [`ws_settings`](Self::ws_settings) makes the settings a
/// [`Router`](crate::Router) takes. `WsSettings` deserializes through this
/// form, checked.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::SlowClientPolicy;
/// use estuary_server::{WebSocketSettings, WsSettings};
///
/// let settings: WsSettings = toml::from_str(
///     r#"
///     max_message_size = 1048576
///     ping_interval = 0
///     slow_client = "drop"
///     rate_limit = 20.0
///     rate_burst = 40
///     "#,
/// )?;
/// assert_eq!(settings.max_message_size, 1 << 20);
/// assert_eq!(settings.session.ping_interval, None, "0: no pings");
/// assert_eq!(settings.session.slow_client, SlowClientPolicy::Drop);
/// assert_eq!(settings.session.rate_limit.map(|r| r.burst), Some(40));
/// assert!(settings.session.address_rate_limit.is_none(), "the default: off");
///
/// let error = serde_json::from_str::<WsSettings>(r#"{"read_buffer_size": 10}"#).unwrap_err();
/// assert!(error.to_string().contains("read_buffer_size: must be between 256 bytes and 1 MiB"), "{error}");
///
/// let settings = WebSocketSettings { ping_timeout: 30, ..WebSocketSettings::default() };
/// assert_eq!(settings.ws_settings().session.ping_timeout, Duration::from_secs(30));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketSettings {
    /// Largest client message (and frame) in bytes (at least 128); larger
    /// closes with 1009.
    pub max_message_size: usize,
    /// Bytes read from a client's socket at a time (256 bytes to 1 MiB).
    /// Sockets are read into one buffer per worker thread, so this costs
    /// no memory per connection; messages larger than it take several
    /// reads.
    pub read_buffer_size: usize,
    /// Seconds between keepalive pings (0: no pings).
    pub ping_interval: u64,
    /// Seconds a silent client is kept after a ping.
    pub ping_timeout: u64,
    /// Outbound queue per connection, in messages (at least 1).
    pub outbound_capacity: usize,
    /// Bytes a connection's outbound queue may hold besides its message
    /// count (at least 1024); past it the client counts as slow.
    pub outbound_bytes: usize,
    /// What happens to a slow client: `"disconnect"` (close 1013 after
    /// `slow_client_grace`) or `"drop"` (drop the message and count it).
    pub slow_client: SlowClient,
    /// Seconds a send may wait for room before a slow client is closed.
    pub slow_client_grace: u64,
    /// Seconds one write to a client may stall (its TCP window closed)
    /// before it is closed with 1013 (at least 1).
    pub write_timeout: u64,
    /// Seconds the server waits for the client's reply to its close.
    pub close_timeout: u64,
    /// Client messages per second per connection, on average (0: no
    /// limit); past it, close 1008.
    pub rate_limit: f64,
    /// Client messages a connection may send in a burst (0 counts as 1).
    pub rate_burst: u32,
    /// Client messages per second per client address, over all its
    /// connections (0: no limit); past it, close 1008.
    pub rate_limit_per_ip: f64,
    /// Burst of `rate_limit_per_ip` (0 counts as 1).
    pub rate_burst_per_ip: u32,
    /// Pings and pongs a client may send per second (0: no limit), in
    /// bursts of four seconds' worth; past it, close 1008.
    pub control_rate_limit: f64,
    /// Largest event from the channel layer, in bytes (at least 1024):
    /// larger ones are dropped, counted and logged.
    pub max_event_size: usize,
    /// Groups one connection may be in (at least 1).
    pub max_groups: usize,
    /// Group sends one connection may have in flight at once when its
    /// consumer pipelines them (at least 1; the chat app does). While that
    /// many wait for the layer, the client's next messages stay unread.
    pub group_send_window: usize,
    /// Seconds a connection may stay open (daphne's `websocket_timeout`;
    /// 0, the default: no limit). Past it the connection is closed with
    /// 1001 (going away), reason `"connection lifetime reached"`.
    pub max_lifetime: u64,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        let d = WsSettings::default();
        let s = &d.session;
        let (slow_client, grace) = match s.slow_client {
            SlowClientPolicy::Disconnect { grace } => (SlowClient::Disconnect, grace),
            SlowClientPolicy::Drop => (SlowClient::Drop, Duration::from_secs(5)),
        };
        Self {
            max_message_size: d.max_message_size,
            read_buffer_size: d.read_buffer_size,
            ping_interval: s.ping_interval.map_or(0, |i| i.as_secs()),
            ping_timeout: s.ping_timeout.as_secs(),
            outbound_capacity: s.outbound_capacity,
            outbound_bytes: s.outbound_bytes,
            slow_client,
            slow_client_grace: grace.as_secs(),
            write_timeout: s.write_timeout.as_secs(),
            close_timeout: d.close_timeout.as_secs(),
            rate_limit: s.rate_limit.map_or(0.0, |r| r.per_second),
            // The bursts a limit gets when it is turned on: two seconds' worth
            // of a chat client's 20 messages a second, of 200 per address.
            rate_burst: s.rate_limit.map_or(40, |r| r.burst),
            rate_limit_per_ip: s
                .address_rate_limit
                .as_ref()
                .map_or(0.0, |l| l.limit().per_second),
            rate_burst_per_ip: s.address_rate_limit.as_ref().map_or(400, |l| l.limit().burst),
            control_rate_limit: s.control_rate_limit.map_or(0.0, |r| r.per_second),
            max_event_size: s.max_event_size,
            max_groups: s.max_groups,
            group_send_window: s.group_send_window,
            max_lifetime: s.max_lifetime.map_or(0, |d| d.as_secs()),
        }
    }
}

/// Why [`WebSocketSettings`] are out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebSocketSettingsError {
    /// A count or a number of seconds that must be at least 1 is 0.
    #[error("{key}: must be at least 1")]
    Zero {
        /// `outbound_capacity`, `write_timeout`, `max_groups` or
        /// `group_send_window`.
        key: &'static str,
    },
    /// A size below its least.
    #[error("{key}: must be at least {least} bytes")]
    TooSmall {
        /// `max_message_size`, `outbound_bytes` or `max_event_size`.
        key: &'static str,
        /// The least it may be, in bytes.
        least: usize,
    },
    /// `read_buffer_size` out of its range.
    #[error("read_buffer_size: must be between 256 bytes and 1 MiB")]
    ReadBuffer,
    /// A rate negative or not a number.
    #[error("{key}: must be a number of at least 0 (0: no limit)")]
    Rate {
        /// `rate_limit`, `rate_limit_per_ip` or `control_rate_limit`.
        key: &'static str,
    },
}

impl WebSocketSettingsError {
    /// The key whose value is wrong.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Zero { key } | Self::TooSmall { key, .. } | Self::Rate { key } => key,
            Self::ReadBuffer => "read_buffer_size",
        }
    }
}

impl WebSocketSettings {
    /// Checks every value against its range.
    pub fn check(&self) -> Result<(), WebSocketSettingsError> {
        for (key, value, least) in [
            ("max_message_size", self.max_message_size, 128),
            ("outbound_bytes", self.outbound_bytes, 1024),
            ("max_event_size", self.max_event_size, 1024),
        ] {
            if value < least {
                return Err(WebSocketSettingsError::TooSmall { key, least });
            }
        }
        if !(256..=1024 * 1024).contains(&self.read_buffer_size) {
            return Err(WebSocketSettingsError::ReadBuffer);
        }
        for (key, value) in [
            ("outbound_capacity", self.outbound_capacity as u64),
            ("write_timeout", self.write_timeout),
            ("max_groups", self.max_groups as u64),
            ("group_send_window", self.group_send_window as u64),
        ] {
            if value == 0 {
                return Err(WebSocketSettingsError::Zero { key });
            }
        }
        for (key, rate) in [
            ("rate_limit", self.rate_limit),
            ("rate_limit_per_ip", self.rate_limit_per_ip),
            ("control_rate_limit", self.control_rate_limit),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                return Err(WebSocketSettingsError::Rate { key });
            }
        }
        Ok(())
    }

    /// `slow_client` and `slow_client_grace` as the session's policy.
    pub fn slow_client_policy(&self) -> SlowClientPolicy {
        match self.slow_client {
            SlowClient::Drop => SlowClientPolicy::Drop,
            SlowClient::Disconnect => SlowClientPolicy::Disconnect {
                grace: Duration::from_secs(self.slow_client_grace),
            },
        }
    }

    /// The settings a [`Router`](crate::Router) takes, unchecked (a 0 among
    /// the counts counts as 1, a rate that is not a positive number is no
    /// limit: call [`check`](Self::check) first to refuse them, or go
    /// through [`TryFrom`]). Frames are bounded by `max_message_size`; what
    /// this form does not hold (the write buffer) keeps its default.
    pub fn ws_settings(&self) -> WsSettings {
        let limit = |per_second: f64, burst: u32| {
            (per_second > 0.0).then_some(RateLimit {
                per_second,
                burst: burst.max(1),
            })
        };
        let control_burst = (self.control_rate_limit * 4.0)
            .ceil()
            .clamp(1.0, f64::from(u32::MAX)) as u32;
        let mut settings = WsSettings {
            max_message_size: self.max_message_size,
            max_frame_size: self.max_message_size,
            read_buffer_size: self.read_buffer_size,
            close_timeout: Duration::from_secs(self.close_timeout),
            ..WsSettings::default()
        };
        let session = &mut settings.session;
        session.outbound_capacity = self.outbound_capacity.max(1);
        session.outbound_bytes = self.outbound_bytes;
        session.slow_client = self.slow_client_policy();
        session.ping_interval = (self.ping_interval > 0).then(|| Duration::from_secs(self.ping_interval));
        session.ping_timeout = Duration::from_secs(self.ping_timeout);
        session.write_timeout = Duration::from_secs(self.write_timeout.max(1));
        session.rate_limit = limit(self.rate_limit, self.rate_burst);
        session.address_rate_limit =
            limit(self.rate_limit_per_ip, self.rate_burst_per_ip).map(AddressRateLimiter::new);
        session.control_rate_limit = limit(self.control_rate_limit, control_burst);
        session.max_event_size = self.max_event_size;
        session.max_groups = self.max_groups.max(1);
        session.group_send_window = self.group_send_window.max(1);
        session.max_lifetime = (self.max_lifetime > 0).then(|| Duration::from_secs(self.max_lifetime));
        settings
    }
}

impl TryFrom<WebSocketSettings> for WsSettings {
    type Error = WebSocketSettingsError;

    fn try_from(settings: WebSocketSettings) -> Result<Self, Self::Error> {
        settings.check()?;
        Ok(settings.ws_settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_value_names_its_key() {
        for (text, message) in [
            (
                "max_message_size = 100",
                "max_message_size: must be at least 128 bytes",
            ),
            ("read_buffer_size = 2000000", "read_buffer_size: must be between"),
            ("outbound_capacity = 0", "outbound_capacity: must be at least 1"),
            (
                "outbound_bytes = 10",
                "outbound_bytes: must be at least 1024 bytes",
            ),
            (
                "max_event_size = 10",
                "max_event_size: must be at least 1024 bytes",
            ),
            ("max_groups = 0", "max_groups: must be at least 1"),
            ("group_send_window = 0", "group_send_window: must be at least 1"),
            ("write_timeout = 0", "write_timeout: must be at least 1"),
            ("rate_limit = -1.0", "rate_limit: must be a number of at least 0"),
            ("rate_limit_per_ip = nan", "rate_limit_per_ip: must be a number"),
            ("control_rate_limit = inf", "control_rate_limit: must be a number"),
            ("slow_client = \"dorp\"", "expected `disconnect` or `drop`"),
            ("rate_burst = -1", "rate_burst"),
            ("max_frame_size = 3", "unknown field `max_frame_size`"),
        ] {
            let error = toml::from_str::<WsSettings>(text).unwrap_err().to_string();
            assert!(error.contains(message), "{text}: {error}");
        }
        assert_eq!(WebSocketSettingsError::ReadBuffer.key(), "read_buffer_size");
    }

    #[test]
    fn the_defaults_are_the_libraries() {
        let settings = WebSocketSettings::default();
        assert_eq!(toml::from_str::<WebSocketSettings>("").unwrap(), settings);
        let text = toml::to_string(&settings).unwrap();
        assert_eq!(toml::from_str::<WebSocketSettings>(&text).unwrap(), settings);
        let (made, d) = (WsSettings::try_from(settings).unwrap(), WsSettings::default());
        assert_eq!(
            (made.max_message_size, made.max_frame_size, made.read_buffer_size),
            (d.max_message_size, d.max_frame_size, d.read_buffer_size)
        );
        assert_eq!(
            (made.write_buffer_size, made.close_timeout),
            (d.write_buffer_size, d.close_timeout)
        );
        let (s, ds) = (made.session, d.session);
        assert_eq!(
            (s.outbound_capacity, s.outbound_bytes, s.slow_client),
            (ds.outbound_capacity, ds.outbound_bytes, ds.slow_client)
        );
        assert_eq!(
            (s.ping_interval, s.ping_timeout, s.write_timeout),
            (ds.ping_interval, ds.ping_timeout, ds.write_timeout)
        );
        assert_eq!(
            (s.rate_limit, s.control_rate_limit),
            (ds.rate_limit, ds.control_rate_limit)
        );
        assert!(s.address_rate_limit.is_none() && ds.address_rate_limit.is_none());
        assert_eq!(
            (s.max_event_size, s.max_groups, s.max_lifetime),
            (ds.max_event_size, ds.max_groups, ds.max_lifetime)
        );
        assert_eq!(s.group_send_window, ds.group_send_window);
        let windowed: WsSettings = toml::from_str("group_send_window = 32").unwrap();
        assert_eq!(windowed.session.group_send_window, 32);
        let lived: WsSettings = toml::from_str("max_lifetime = 86400").unwrap();
        assert_eq!(lived.session.max_lifetime, Some(Duration::from_secs(86400)));
    }

    #[test]
    fn zero_turns_a_limit_off_and_bursts_follow_their_rates() {
        let settings: WsSettings =
            toml::from_str("rate_limit = 0\ncontrol_rate_limit = 0\nrate_limit_per_ip = 0\n").unwrap();
        assert_eq!(settings.session.rate_limit, None);
        assert_eq!(settings.session.control_rate_limit, None);
        assert!(settings.session.address_rate_limit.is_none());

        let settings: WsSettings = toml::from_str(
            "rate_limit = 2.5\nrate_burst = 0\nrate_limit_per_ip = 200\nrate_burst_per_ip = 400\n\
             control_rate_limit = 2.5\nslow_client_grace = 9\n",
        )
        .unwrap();
        let s = settings.session;
        assert_eq!(
            s.rate_limit,
            Some(RateLimit {
                per_second: 2.5,
                burst: 1
            }),
            "a burst of 0 counts as 1"
        );
        let per_ip = s.address_rate_limit.map(|l| l.limit());
        assert_eq!(
            per_ip,
            Some(RateLimit {
                per_second: 200.0,
                burst: 400
            })
        );
        assert_eq!(
            s.control_rate_limit,
            Some(RateLimit {
                per_second: 2.5,
                burst: 10
            }),
            "four seconds' worth"
        );
        assert_eq!(
            s.slow_client,
            SlowClientPolicy::Disconnect {
                grace: Duration::from_secs(9)
            }
        );
    }
}
