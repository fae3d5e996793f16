//! [`ServerSettings`]: the server-wide limits as a file holds them
//! (`[server]` of `estuary serve`), and [`ServerConfig`]'s serde form.

use std::time::Duration;

use estuary_core::RateLimit;
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_LISTEN_BACKLOG, ServerConfig, TrustedProxies};

/// A [`ServerConfig`] (and the listen backlog) as plain values, the form
/// serde reads and writes (`[server]` of `estuary serve`'s TOML file):
/// seconds as integers, 0 for "no limit" where a limit can be off. Missing
/// keys take `ServerConfig::default()`'s values. The trusted proxies are not
/// part of it (`estuary serve` has them at the top of its file).
///
/// [`check`](Self::check) names the key of an invalid value; `ServerConfig`
/// deserializes through this form, checked.
///
/// ```
/// use std::time::Duration;
/// use estuary_server::{ServerConfig, ServerSettings, TrustedProxies};
///
/// let config: ServerConfig = toml::from_str("handshake_timeout = 5\nmax_connections_per_ip = 0\n")?;
/// assert_eq!(config.handshake_timeout, Duration::from_secs(5));
/// assert_eq!(config.max_connections_per_ip, None, "0: no limit");
/// assert_eq!(config.max_header_size, 16 * 1024, "the default");
///
/// let error = toml::from_str::<ServerConfig>("max_header_size = 1024").unwrap_err().to_string();
/// assert!(error.contains("max_header_size: must be between 8192 bytes and 1 MiB"), "{error}");
///
/// let settings = ServerSettings { body_timeout: 30, ..ServerSettings::default() };
/// let config = settings.server_config(TrustedProxies::new(["10.0.0.0/8"])?)?;
/// assert_eq!(config.body_timeout, Duration::from_secs(30));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Seconds for request headers and the consumer's connect (at least 1).
    pub handshake_timeout: u64,
    /// Seconds shutdown waits for connections to close.
    pub shutdown_timeout: u64,
    /// Connections open at once (0: the open-file limit less 256).
    pub max_connections: usize,
    /// Connections open at once per client address (0: no limit).
    pub max_connections_per_ip: usize,
    /// WebSocket handshakes per second per client address (0: no limit).
    pub handshake_rate: f64,
    /// Burst of `handshake_rate` (at least 1).
    pub handshake_burst: u32,
    /// Largest request head in bytes (8192 to 1 MiB); past it, 431.
    pub max_header_size: usize,
    /// Most header fields in a request (at least 1); past it, 431.
    pub max_headers: usize,
    /// Seconds a request body may take to arrive (at least 1); past it, 408.
    pub body_timeout: u64,
    /// Connections the kernel queues while the accept loop is busy (capped
    /// by `net.core.somaxconn`; at least 1); past it, connects wait a
    /// second and retry. Given to [`Server::bind_with_backlog`](crate::Server::bind_with_backlog),
    /// not part of a `ServerConfig`.
    pub listen_backlog: u32,
    /// The prefix the application is mounted under (daphne's
    /// `--root-path`; empty: none): `/realtime/ws/chat/x/` routes as
    /// `/ws/chat/x/`, with `root_path` `/realtime` in the scope. See
    /// [`ServerConfig::root_path`].
    pub root_path: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let d = ServerConfig::default();
        Self {
            handshake_timeout: d.handshake_timeout.as_secs(),
            shutdown_timeout: d.shutdown_timeout.as_secs(),
            max_connections: 0,
            max_connections_per_ip: d.max_connections_per_ip.unwrap_or(0),
            handshake_rate: d.handshake_rate.map_or(0.0, |r| r.per_second),
            handshake_burst: d.handshake_rate.map_or(1, |r| r.burst),
            max_header_size: d.max_header_size,
            max_headers: d.max_headers,
            body_timeout: d.body_timeout.as_secs(),
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            root_path: String::new(),
        }
    }
}

/// Why [`ServerSettings`] do not make a [`ServerConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerSettingsError {
    /// A count or a number of seconds that must be at least 1 is 0.
    #[error("{key}: must be at least 1")]
    Zero {
        /// The key.
        key: &'static str,
    },
    /// `max_header_size` out of hyper's range.
    #[error("max_header_size: must be between 8192 bytes and 1 MiB")]
    HeaderSize,
    /// `handshake_rate` negative or not a number.
    #[error("handshake_rate: must be a number of at least 0 (0: no limit)")]
    Rate,
    /// `root_path` is not a URL path (it holds `?`, `#`, `%`, a space or a
    /// control character).
    #[error("root_path: must be a URL path such as /realtime (no ?, #, %, spaces)")]
    RootPath,
}

impl ServerSettingsError {
    /// The key whose value is wrong.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Zero { key } => key,
            Self::HeaderSize => "max_header_size",
            Self::Rate => "handshake_rate",
            Self::RootPath => "root_path",
        }
    }
}

impl ServerSettings {
    /// Checks every value against its range.
    pub fn check(&self) -> Result<(), ServerSettingsError> {
        if !(8192..=1024 * 1024).contains(&self.max_header_size) {
            return Err(ServerSettingsError::HeaderSize);
        }
        if !(self.handshake_rate.is_finite() && self.handshake_rate >= 0.0) {
            return Err(ServerSettingsError::Rate);
        }
        if self
            .root_path
            .chars()
            .any(|c| matches!(c, '?' | '#' | '%') || c.is_whitespace() || c.is_control())
        {
            return Err(ServerSettingsError::RootPath);
        }
        for (key, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("max_headers", self.max_headers as u64),
            ("body_timeout", self.body_timeout),
            ("listen_backlog", u64::from(self.listen_backlog)),
        ] {
            if value == 0 {
                return Err(ServerSettingsError::Zero { key });
            }
        }
        Ok(())
    }

    /// The checked [`ServerConfig`], with these trusted proxies.
    pub fn server_config(
        &self,
        trusted_proxies: TrustedProxies,
    ) -> Result<ServerConfig, ServerSettingsError> {
        self.check()?;
        let defaults = ServerConfig::default();
        Ok(ServerConfig {
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            trusted_proxies,
            max_connections: match self.max_connections {
                0 => defaults.max_connections,
                n => Some(n),
            },
            max_connections_per_ip: (self.max_connections_per_ip > 0).then_some(self.max_connections_per_ip),
            handshake_rate: (self.handshake_rate > 0.0).then_some(RateLimit {
                per_second: self.handshake_rate,
                burst: self.handshake_burst.max(1),
            }),
            max_header_size: self.max_header_size,
            max_headers: self.max_headers,
            body_timeout: Duration::from_secs(self.body_timeout),
            root_path: crate::normalize_root_path(&self.root_path),
            #[cfg(feature = "tls")]
            tls: None,
        })
    }
}

impl TryFrom<ServerSettings> for ServerConfig {
    type Error = ServerSettingsError;

    fn try_from(settings: ServerSettings) -> Result<Self, Self::Error> {
        settings.server_config(TrustedProxies::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_value_names_its_key() {
        for (text, message) in [
            ("max_header_size = 2000000", "max_header_size: must be between"),
            ("handshake_rate = -1.0", "handshake_rate: must be a number"),
            ("handshake_timeout = 0", "handshake_timeout: must be at least 1"),
            ("max_headers = 0", "max_headers: must be at least 1"),
            ("body_timeout = 0", "body_timeout: must be at least 1"),
            ("listen_backlog = 0", "listen_backlog: must be at least 1"),
            ("root_path = \"/a b\"", "root_path: must be a URL path"),
            ("timeout = 3", "unknown field `timeout`"),
        ] {
            let error = toml::from_str::<ServerConfig>(text).unwrap_err().to_string();
            assert!(error.contains(message), "{text}: {error}");
        }
        assert_eq!(ServerSettingsError::Rate.key(), "handshake_rate");
    }

    #[test]
    fn the_defaults_are_server_configs() {
        let settings = ServerSettings::default();
        assert_eq!(toml::from_str::<ServerSettings>("").unwrap(), settings);
        let text = toml::to_string(&settings).unwrap();
        assert_eq!(toml::from_str::<ServerSettings>(&text).unwrap(), settings);
        let (config, defaults) = (ServerConfig::try_from(settings).unwrap(), ServerConfig::default());
        assert_eq!(config.max_connections, defaults.max_connections);
        assert_eq!(config.max_connections_per_ip, defaults.max_connections_per_ip);
        assert_eq!(config.handshake_rate, defaults.handshake_rate);
        assert_eq!(config.handshake_timeout, defaults.handshake_timeout);
        assert_eq!(config.body_timeout, defaults.body_timeout);
    }
}
