//! The configuration of `estuary serve`, in layers: the defaults, then a
//! TOML file (`--config`), then `ESTUARY_*` environment variables, then
//! command-line flags. A later layer wins, key by key.
//!
//! Every setting with a flag is one row of [`SETTINGS`]: its key in the
//! file, its flag and its variable. An invalid value is an error that names
//! where it came from: the file (its path, line and key), the variable, or
//! the flag. `estuary check-config` prints the result as a file `--config`
//! reads back ([`Config::to_toml`]), secrets redacted unless asked for.
//!
//! ```
//! use estuary_cli::config::{Config, Layers};
//!
//! let config = Config::from_layers(Layers {
//!     file: Some(("estuary.toml".into(), "[websocket]\nping_interval = 5\n".into())),
//!     env: vec![("ESTUARY_PING_INTERVAL".into(), "7".into())],
//!     flags: vec![("websocket.ping_interval", "9".into())],
//! })?;
//! assert_eq!(config.websocket.ping_interval, 9, "a flag wins over the variable and the file");
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

mod auth;
mod chat;
mod keys;
mod library;
mod load;
mod observe;
mod print;
mod routes;
mod validate;

pub use auth::AuthSettings;
pub use chat::ChatSettings;
pub use estuary::redis::LayerSettings;
pub use estuary::redis::{RedisFlavour, SerializerFormat};
pub use estuary::server::{ServerSettings, SlowClient, WebSocketSettings};
pub use estuary::{HistorySettings, PresenceSettings};
pub use estuary_callback::CallbackSettings;
pub use estuary_django::{DjangoSettings, SessionEngineName};
pub use estuary_jwt::JwtSettings;
pub use keys::{SETTINGS, Setting, ValueKind};
pub use load::{Layers, PRECEDENCE, ServeArgs};
pub use observe::{LogFormat, LogSettings, MetricsAt, MetricsSettings};
pub use print::{REDACTED, Secrets, redact_url};
pub use routes::{RouteAuth, RouteConfig};

/// A value out of its range, or a placeholder for a secret: the key it is
/// about, and why (the loader adds where the value came from).
#[derive(Debug)]
pub(crate) struct Invalid {
    /// The dotted key whose value is wrong (the first, when several are
    /// named).
    pub(crate) key: String,
    pub(crate) error: anyhow::Error,
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// A TCP address.
    Tcp(std::net::SocketAddr),
    /// A Unix socket path (`unix:/run/estuary.sock`).
    Unix(PathBuf),
}

impl std::str::FromStr for Bind {
    type Err = anyhow::Error;

    /// `unix:PATH`, `IP:PORT`, or `NAME:PORT` with a host name resolved
    /// now (`localhost:8000`; the first address it resolves to).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Bind::Unix(path.into()));
        }
        if let Ok(addr) = s.parse() {
            return Ok(Bind::Tcp(addr));
        }
        let syntax = || anyhow::anyhow!("invalid bind address {s:?} (use HOST:PORT or unix:PATH)");
        let (host, port) = s.rsplit_once(':').ok_or_else(syntax)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(syntax());
        }
        use std::net::ToSocketAddrs as _;
        let mut addrs = s
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve the bind address {s:?}"))?;
        let addr = addrs
            .next()
            .ok_or_else(|| anyhow::anyhow!("the bind address {s:?} resolves to no address"))?;
        Ok(Bind::Tcp(addr))
    }
}

/// The whole configuration of `estuary serve`, as read from a TOML file.
///
/// `[websocket]`, `[layer]`, `[server]` and the `[auth.*]` tables are the
/// libraries' own serde forms. [`Config::default`] holds the app's defaults,
/// which [`Config::from_layers`] puts under the file; they differ from the
/// libraries' in `[websocket]`, where the rate limits per connection and per
/// address are on. (Deserialized directly, a table the text leaves out takes
/// these defaults, but a key left out of a table takes its library's.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `HOST:PORT` or `unix:PATH` (default `127.0.0.1:8000`).
    pub bind: String,
    /// Serve on the listening socket the process inherited as this file
    /// descriptor instead of binding `bind` (daphne's `--fd`), by
    /// systemd's protocol: `LISTEN_FDS` counts the sockets from fd 3 (see
    /// docs/DEPLOY.md). Without it, a socket systemd passes (`LISTEN_FDS`)
    /// is used all the same, the first one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<u32>,
    /// TLS on the port: the certificate chain (PEM, the server's first),
    /// with `tls_key`. Both files are read again on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Host names the server answers to (Django's `ALLOWED_HOSTS`): requests
    /// with another `Host` get 400. Empty: the loopback names when bound to
    /// a loopback address, else the server refuses to start. `["*"]` allows
    /// any (only behind a proxy that checks `Host`).
    pub allowed_hosts: Vec<String>,
    /// Origins allowed to open WebSockets besides those on `allowed_hosts`
    /// (Django `ALLOWED_HOSTS` syntax; `["*"]` allows any).
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (IPs or CIDRs).
    pub trusted_proxies: Vec<String>,
    /// The bearer token the push API's POST routes require. Without one,
    /// they answer 403 unless `push_insecure` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_token: Option<String>,
    /// Opens the push API's POST routes to anyone who can reach the port
    /// (Centrifugo's `api_insecure`): only for a network you trust.
    pub push_insecure: bool,
    /// WebSocket limits.
    pub websocket: WebSocketSettings,
    /// Channel-layer settings.
    pub layer: LayerSettings,
    /// Timeouts.
    pub server: ServerSettings,
    /// Who is connecting: a JWT, Django's sessions, or the connect callback.
    pub auth: AuthSettings,
    /// How presence is announced and kept alive across processes.
    pub presence: PresenceSettings,
    /// Which groups are recorded for recovery and recent history, and how.
    pub history: HistorySettings,
    /// How the chat rooms use presence and history.
    pub chat: ChatSettings,
    /// WebSocket routes relayed to the application (Django workers or an
    /// HTTP endpoint), matched in order before the built-in chat's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Where the Prometheus metrics are served.
    pub metrics: MetricsSettings,
    /// The log's format, and the access log.
    pub log: LogSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8000".into(),
            fd: None,
            tls_cert: None,
            tls_key: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            push_token: None,
            push_insecure: false,
            websocket: websocket_defaults(),
            layer: LayerSettings::default(),
            server: ServerSettings::default(),
            auth: AuthSettings::default(),
            presence: PresenceSettings::default(),
            history: chat::history_defaults(),
            chat: ChatSettings::default(),
            routes: Vec::new(),
            metrics: MetricsSettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// `[websocket]`'s defaults: the library's, with the rate limits on (the
/// app serves the public: 20 messages a second per connection, 200 per
/// client address).
fn websocket_defaults() -> WebSocketSettings {
    WebSocketSettings {
        rate_limit: 20.0,
        rate_burst: 40,
        rate_limit_per_ip: 200.0,
        rate_burst_per_ip: 400,
        control_rate_limit: 5.0,
        ..WebSocketSettings::default()
    }
}

impl Config {
    /// The parsed bind address.
    pub fn bind(&self) -> anyhow::Result<Bind> {
        self.bind.parse()
    }
}
