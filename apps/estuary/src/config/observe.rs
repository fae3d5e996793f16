//! `[metrics]` and `[log]`: what an operator sees of the server.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// `[metrics]`: where the Prometheus metrics are served.
///
/// ```
/// use estuary_cli::config::{MetricsAt, MetricsSettings};
///
/// assert_eq!(MetricsSettings::default().at()?, MetricsAt::Main);
/// let admin = MetricsSettings { listen: "127.0.0.1:9090".into() };
/// assert_eq!(admin.at()?, MetricsAt::Admin("127.0.0.1:9090".parse()?));
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// `main`: `GET /metrics` on the main port (any `Host`); `off`; or
    /// `HOST:PORT`, a separate listener that serves only `/metrics`.
    pub listen: String,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: "main".into(),
        }
    }
}

/// Where the metrics are served, parsed from [`MetricsSettings::listen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAt {
    /// `GET /metrics` on the main port.
    Main,
    /// Not served.
    Off,
    /// A listener of their own.
    Admin(SocketAddr),
}

impl MetricsSettings {
    /// The parsed `listen`.
    pub fn at(&self) -> anyhow::Result<MetricsAt> {
        match self.listen.trim() {
            "main" => Ok(MetricsAt::Main),
            "off" => Ok(MetricsAt::Off),
            addr => Ok(MetricsAt::Admin(addr.parse().with_context(|| {
                format!("invalid metrics.listen {addr:?}: use main, off, or HOST:PORT")
            })?)),
        }
    }
}

/// `[log]`: the log's format and the access log.
///
/// ```
/// use estuary_cli::config::{LogFormat, LogSettings};
///
/// let log = LogSettings::default();
/// assert!(log.access);
/// assert_eq!(log.format()?, LogFormat::Text);
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (default) or `json`: one JSON object a line.
    pub format: String,
    /// One line per HTTP request and WebSocket handshake (default on).
    pub access: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "text".into(),
            access: true,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

impl LogSettings {
    /// The parsed `format`.
    pub fn format(&self) -> anyhow::Result<LogFormat> {
        match self.format.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => bail!("invalid log.format {other:?}: use text or json"),
        }
    }
}
