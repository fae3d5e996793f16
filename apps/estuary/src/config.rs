//! Configuration: defaults, then a TOML file, then `ESTUARY_*` variables and
//! command-line flags (flags and variables win).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use estuary::server::{AllowedHosts, ServerConfig, TrustedProxies};
use estuary::{AddressRateLimiter, RateLimit, SlowClientPolicy, WsSettings};
use serde::Deserialize;

mod auth;
pub use auth::{AuthSettings, CallbackSettings, DjangoSettings, JwtSettings};

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
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Bind::Unix(path.into()));
        }
        let addr = s
            .parse()
            .with_context(|| format!("invalid bind address {s:?} (use HOST:PORT or unix:PATH)"))?;
        Ok(Bind::Tcp(addr))
    }
}

/// The whole configuration of `estuary serve`, as read from a TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `HOST:PORT` or `unix:PATH` (default `127.0.0.1:8000`).
    pub bind: String,
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
    pub push_token: Option<String>,
    /// Opens the push API's POST routes to anyone who can reach the port
    /// (Centrifugo's `api_insecure`): only for a network you trust.
    pub push_insecure: bool,
    /// WebSocket limits.
    pub websocket: WebSocketConfig,
    /// Channel-layer settings.
    pub layer: LayerSettings,
    /// Timeouts.
    pub server: ServerSettings,
    /// Who is connecting: a JWT, Django's sessions, or the connect callback.
    pub auth: AuthSettings,
}

/// `[websocket]`
#[derive(Debug, Clone, Deserialize)]
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
    pub slow_client: String,
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

/// `[layer]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerSettings {
    /// Redis URLs of the channel layer, in ring order; empty: the in-memory layer.
    pub redis: Vec<String>,
    /// `core` (channels_redis's default `RedisChannelLayer`) or `pubsub`
    /// (`RedisPubSubChannelLayer`); must match the Django side.
    pub flavour: String,
    /// Key prefix in Redis (channels_redis `prefix`).
    pub prefix: String,
    /// channels_redis `symmetric_encryption_keys`.
    pub encryption_keys: Vec<String>,
    /// Messages a channel holds.
    pub capacity: usize,
    /// Seconds a message lives.
    pub expiry: u64,
    /// Seconds a group membership lives.
    pub group_expiry: u64,
    /// Channels the in-memory layer holds at most; past it, a push to a new
    /// channel gets 429 (Redis layers leave this to Redis's maxmemory).
    pub max_channels: usize,
    /// Bytes of undelivered messages the in-memory layer holds in all (a
    /// group message counted once for all its members); past it, sends and
    /// pushes are refused (push API: 503) until members take what they
    /// hold or it expires. Redis layers leave this to Redis's maxmemory.
    pub max_bytes: usize,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Seconds for request headers and the consumer's connect.
    pub handshake_timeout: u64,
    /// Seconds shutdown waits for connections to close.
    pub shutdown_timeout: u64,
    /// Connections open at once (0: the open-file limit less 256).
    pub max_connections: usize,
    /// Connections open at once per client address (0: no limit).
    pub max_connections_per_ip: usize,
    /// WebSocket handshakes per second per client address (0: no limit).
    pub handshake_rate: f64,
    /// Burst of `handshake_rate`.
    pub handshake_burst: u32,
    /// Largest request head in bytes (at least 8192); past it, 431.
    pub max_header_size: usize,
    /// Most header fields in a request; past it, 431.
    pub max_headers: usize,
    /// Seconds a request body may take to arrive; past it, 408.
    pub body_timeout: u64,
    /// Connections the kernel queues while the accept loop is busy (capped
    /// by `net.core.somaxconn`); past it, connects wait a second and retry.
    pub listen_backlog: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8000".into(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            push_token: None,
            push_insecure: false,
            websocket: WebSocketConfig::default(),
            layer: LayerSettings::default(),
            server: ServerSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            ping_interval: 20,
            ping_timeout: 20,
            outbound_capacity: 64,
            slow_client: "disconnect".into(),
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

impl Default for LayerSettings {
    fn default() -> Self {
        Self {
            redis: Vec::new(),
            flavour: "core".into(),
            prefix: "asgi".into(),
            encryption_keys: Vec::new(),
            capacity: 100,
            expiry: 60,
            group_expiry: 86_400,
            max_channels: 100_000,
            max_bytes: 128 * 1024 * 1024,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: 10,
            shutdown_timeout: 10,
            max_connections: 0,
            max_connections_per_ip: 1_000,
            handshake_rate: 50.0,
            handshake_burst: 200,
            max_header_size: 16 * 1024,
            max_headers: 64,
            body_timeout: 10,
            listen_backlog: estuary::server::DEFAULT_LISTEN_BACKLOG,
        }
    }
}

/// Flags of `estuary serve`; each also reads an `ESTUARY_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT or unix:PATH [default: 127.0.0.1:8000]
    #[arg(long, env = "ESTUARY_BIND")]
    pub bind: Option<String>,
    /// A TOML configuration file.
    #[arg(long, env = "ESTUARY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Host names the server answers to, comma-separated (Django's ALLOWED_HOSTS; * for any)
    /// [default: the loopback names when bound to loopback]
    #[arg(long, env = "ESTUARY_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins allowed besides those on the allowed hosts, comma-separated (* for any).
    #[arg(long, env = "ESTUARY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Trusted reverse proxies, comma-separated IPs, CIDRs, or `unix` (peers on a Unix socket).
    #[arg(long, env = "ESTUARY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Bearer token required by the push API (without one it answers 403).
    #[arg(long, env = "ESTUARY_PUSH_TOKEN", hide_env_values = true)]
    pub push_token: Option<String>,
    /// Open the push API to anyone who reaches the port, without a token.
    #[arg(long, env = "ESTUARY_PUSH_INSECURE")]
    pub push_insecure: bool,
    /// Largest client message in bytes.
    #[arg(long, env = "ESTUARY_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Seconds between keepalive pings (0 disables).
    #[arg(long, env = "ESTUARY_PING_INTERVAL")]
    pub ping_interval: Option<u64>,
    /// Seconds a client may stay silent after a ping before it is dropped.
    #[arg(long, env = "ESTUARY_PING_TIMEOUT")]
    pub ping_timeout: Option<u64>,
    /// Bytes read from a client's socket at a time (each connection keeps a buffer this large).
    #[arg(long, env = "ESTUARY_READ_BUFFER_SIZE")]
    pub read_buffer_size: Option<usize>,
    /// Client messages per second per connection (0: no limit).
    #[arg(long, env = "ESTUARY_RATE_LIMIT")]
    pub rate_limit: Option<f64>,
    /// Client message burst per connection.
    #[arg(long, env = "ESTUARY_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Every WebSocket route needs an authenticated user (401 without one).
    #[arg(long, env = "ESTUARY_AUTH_REQUIRED")]
    pub auth_required: bool,
    /// The Django project's SECRET_KEY: its logged-in users become the WebSocket's users.
    #[arg(long, env = "ESTUARY_DJANGO_SECRET_KEY", hide_env_values = true)]
    pub django_secret_key: Option<String>,
    /// The Django project's database URL (postgres://... or sqlite:///...), with --django-secret-key.
    #[arg(long, env = "ESTUARY_DJANGO_DATABASE")]
    pub django_database: Option<String>,
    /// The application's connect callback URL (http://...): it decides who connects.
    #[arg(long, env = "ESTUARY_CALLBACK_URL")]
    pub callback_url: Option<String>,
    /// The secret the connect callback is signed with, with --callback-url.
    #[arg(long, env = "ESTUARY_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,
    /// Client messages per second per client address, over all its connections (0: no limit).
    #[arg(long, env = "ESTUARY_RATE_LIMIT_PER_IP")]
    pub rate_limit_per_ip: Option<f64>,
    /// Connections open at once (0: the open-file limit less 256).
    #[arg(long, env = "ESTUARY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Connections open at once per client address (0: no limit).
    #[arg(long, env = "ESTUARY_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// WebSocket handshakes per second per client address (0: no limit).
    #[arg(long, env = "ESTUARY_HANDSHAKE_RATE")]
    pub handshake_rate: Option<f64>,
    /// Largest event from the channel layer or the push API, in bytes.
    #[arg(long, env = "ESTUARY_MAX_EVENT_SIZE")]
    pub max_event_size: Option<usize>,
    /// Seconds for a client's request headers and the consumer's connect.
    #[arg(long, env = "ESTUARY_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<u64>,
    /// Seconds a request body may take to arrive (past it, 408).
    #[arg(long, env = "ESTUARY_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,
    /// Seconds shutdown waits for connections to close.
    #[arg(long, env = "ESTUARY_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<u64>,
    /// Connections the kernel queues while the accept loop is busy (capped by net.core.somaxconn).
    #[arg(long, env = "ESTUARY_LISTEN_BACKLOG")]
    pub listen_backlog: Option<u32>,
    /// Channel layer: `memory`, or Redis URLs (comma-separated or repeated, in ring order).
    #[arg(long, env = "ESTUARY_LAYER", value_delimiter = ',')]
    pub layer: Option<Vec<String>>,
    /// Redis layer flavour: core or pubsub (must match Django's BACKEND).
    #[arg(long, env = "ESTUARY_REDIS_FLAVOUR")]
    pub redis_flavour: Option<String>,
    /// Redis key prefix (must match Django's CHANNEL_LAYERS prefix).
    #[arg(long, env = "ESTUARY_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// channels_redis symmetric encryption keys, comma-separated (first encrypts).
    #[arg(
        long = "encryption-key",
        env = "ESTUARY_ENCRYPTION_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub encryption_keys: Option<Vec<String>>,
    /// Messages a channel holds.
    #[arg(long, env = "ESTUARY_CAPACITY")]
    pub capacity: Option<usize>,
    /// Seconds a channel-layer message lives.
    #[arg(long, env = "ESTUARY_EXPIRY")]
    pub expiry: Option<u64>,
    /// Seconds a group membership lives.
    #[arg(long, env = "ESTUARY_GROUP_EXPIRY")]
    pub group_expiry: Option<u64>,
}

impl Config {
    /// Reads the file named by the flags (if any), then applies the flags.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read configuration file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid configuration file {}", path.display()))?
            }
            None => Config::default(),
        };
        let a = args.clone();
        if let Some(v) = a.bind {
            config.bind = v;
        }
        if let Some(v) = a.allowed_hosts {
            config.allowed_hosts = v.into_iter().filter(|h| !h.trim().is_empty()).collect();
        }
        if a.push_insecure {
            config.push_insecure = true;
        }
        if let Some(v) = a.allowed_origins {
            config.allowed_origins = v;
        }
        if let Some(v) = a.trusted_proxies {
            config.trusted_proxies = v;
        }
        if let Some(v) = a.push_token {
            config.push_token = Some(v).filter(|t| !t.is_empty());
        }
        if let Some(v) = a.max_message_size {
            config.websocket.max_message_size = v;
        }
        if let Some(v) = a.ping_interval {
            config.websocket.ping_interval = v;
        }
        if let Some(v) = a.ping_timeout {
            config.websocket.ping_timeout = v;
        }
        if let Some(v) = a.read_buffer_size {
            config.websocket.read_buffer_size = v;
        }
        if let Some(v) = a.rate_limit {
            config.websocket.rate_limit = v;
        }
        if let Some(v) = a.rate_burst {
            config.websocket.rate_burst = v;
        }
        if a.auth_required {
            config.auth.required = true;
        }
        match (a.django_secret_key, a.django_database) {
            (Some(secret_key), Some(database)) => {
                let mut django = config
                    .auth
                    .django
                    .take()
                    .unwrap_or_else(|| DjangoSettings::new("", ""));
                django.secret_key = secret_key;
                django.database = database;
                config.auth.django = Some(django);
            }
            (None, None) => {}
            _ => bail!("--django-secret-key and --django-database go together"),
        }
        match (a.callback_url, a.callback_secret) {
            (Some(url), Some(secret)) => {
                let mut callback = config
                    .auth
                    .callback
                    .take()
                    .unwrap_or_else(|| CallbackSettings::new("", ""));
                callback.url = url;
                callback.secret = secret;
                config.auth.callback = Some(callback);
            }
            (None, None) => {}
            _ => bail!("--callback-url and --callback-secret go together"),
        }
        if let Some(v) = a.rate_limit_per_ip {
            config.websocket.rate_limit_per_ip = v;
        }
        if let Some(v) = a.max_connections {
            config.server.max_connections = v;
        }
        if let Some(v) = a.max_connections_per_ip {
            config.server.max_connections_per_ip = v;
        }
        if let Some(v) = a.handshake_rate {
            config.server.handshake_rate = v;
        }
        if let Some(v) = a.max_event_size {
            config.websocket.max_event_size = v;
        }
        if let Some(v) = a.handshake_timeout {
            config.server.handshake_timeout = v;
        }
        if let Some(v) = a.body_timeout {
            config.server.body_timeout = v;
        }
        if let Some(v) = a.shutdown_timeout {
            config.server.shutdown_timeout = v;
        }
        if let Some(v) = a.listen_backlog {
            config.server.listen_backlog = v;
        }
        if let Some(v) = a.layer {
            config.layer.redis = v.into_iter().filter(|u| !u.is_empty() && u != "memory").collect();
        }
        if let Some(v) = a.redis_flavour {
            config.layer.flavour = v;
        }
        if let Some(v) = a.redis_prefix {
            config.layer.prefix = v;
        }
        if let Some(v) = a.encryption_keys {
            config.layer.encryption_keys = v.into_iter().filter(|k| !k.is_empty()).collect();
        }
        if let Some(v) = a.capacity {
            config.layer.capacity = v;
        }
        if let Some(v) = a.expiry {
            config.layer.expiry = v;
        }
        if let Some(v) = a.group_expiry {
            config.layer.group_expiry = v;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.bind()?;
        self.auth.validate()?;
        self.allowed_hosts()?;
        self.trusted_proxies()?;
        if self.websocket.max_message_size < 128 {
            bail!("websocket.max_message_size must be at least 128 bytes");
        }
        if !(256..=1024 * 1024).contains(&self.websocket.read_buffer_size) {
            bail!("websocket.read_buffer_size must be between 256 bytes and 1 MiB");
        }
        if !(8192..=1024 * 1024).contains(&self.server.max_header_size) {
            bail!("server.max_header_size must be between 8192 bytes and 1 MiB");
        }
        if self.server.max_headers == 0 || self.server.body_timeout == 0 || self.server.handshake_timeout == 0
        {
            bail!("server.max_headers, server.body_timeout and server.handshake_timeout must be at least 1");
        }
        if self.server.listen_backlog == 0 {
            bail!("server.listen_backlog must be at least 1");
        }
        if self.layer.max_bytes < self.websocket.max_event_size {
            bail!("layer.max_bytes must be at least websocket.max_event_size (one event must fit)");
        }
        if self.websocket.max_event_size < 1024 || self.websocket.outbound_bytes < 1024 {
            bail!("websocket.max_event_size and websocket.outbound_bytes must be at least 1024 bytes");
        }
        for (name, rate) in [
            ("websocket.rate_limit", self.websocket.rate_limit),
            ("websocket.rate_limit_per_ip", self.websocket.rate_limit_per_ip),
            ("websocket.control_rate_limit", self.websocket.control_rate_limit),
            ("server.handshake_rate", self.server.handshake_rate),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                bail!("{name} must be a number of at least 0 (0: no limit)");
            }
        }
        if !matches!(self.websocket.slow_client.as_str(), "disconnect" | "drop") {
            bail!("websocket.slow_client must be \"disconnect\" or \"drop\"");
        }
        if self.websocket.outbound_capacity == 0 || self.layer.capacity == 0 {
            bail!("queue capacities must be at least 1");
        }
        if self.layer.expiry == 0 || self.layer.group_expiry == 0 {
            bail!("layer.expiry and layer.group_expiry must be at least 1 second");
        }
        if !matches!(self.layer.flavour.as_str(), "core" | "pubsub") {
            bail!("layer.flavour must be \"core\" or \"pubsub\"");
        }
        for url in &self.layer.redis {
            if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
                bail!(
                    "invalid channel layer {url:?}: use memory, redis://HOST:PORT/DB, rediss:// or unix://"
                );
            }
        }
        Ok(())
    }

    /// A copy with the push token and encryption keys replaced, for printing.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        c.push_token = c.push_token.map(|_| "<redacted>".into());
        c.auth.redact();
        c.layer.encryption_keys = c
            .layer
            .encryption_keys
            .iter()
            .map(|_| "<redacted>".into())
            .collect();
        c
    }

    /// The parsed bind address.
    pub fn bind(&self) -> anyhow::Result<Bind> {
        self.bind.parse()
    }

    /// The host names the server answers to: `allowed_hosts`, or the
    /// loopback names when it is empty and the server is bound to a
    /// loopback address. An error when it is empty and the server is
    /// reachable from elsewhere (any other address, or a Unix socket behind
    /// a proxy), as Django refuses to run without `ALLOWED_HOSTS`.
    pub fn allowed_hosts(&self) -> anyhow::Result<AllowedHosts> {
        if !self.allowed_hosts.is_empty() {
            return Ok(AllowedHosts::new(&self.allowed_hosts));
        }
        match self.bind()? {
            Bind::Tcp(addr) if addr.ip().is_loopback() => Ok(AllowedHosts::loopback()),
            _ => bail!(
                "allowed_hosts must be set when bound to {}: list the host names clients use \
                 (--allowed-hosts chat.example.com or ESTUARY_ALLOWED_HOSTS), or \"*\" when a \
                 proxy in front checks Host",
                self.bind
            ),
        }
    }

    /// The parsed trusted proxies.
    pub fn trusted_proxies(&self) -> anyhow::Result<TrustedProxies> {
        Ok(TrustedProxies::new(&self.trusted_proxies)?)
    }

    /// The WebSocket settings for the router.
    pub fn ws_settings(&self) -> WsSettings {
        let w = &self.websocket;
        let mut s = WsSettings {
            max_message_size: w.max_message_size,
            max_frame_size: w.max_message_size,
            read_buffer_size: w.read_buffer_size,
            ..WsSettings::default()
        };
        s.session.outbound_capacity = w.outbound_capacity;
        s.session.ping_interval = (w.ping_interval > 0).then(|| Duration::from_secs(w.ping_interval));
        s.session.ping_timeout = Duration::from_secs(w.ping_timeout);
        s.session.slow_client = if w.slow_client == "drop" {
            SlowClientPolicy::Drop
        } else {
            SlowClientPolicy::Disconnect {
                grace: Duration::from_secs(w.slow_client_grace),
            }
        };
        s.session.rate_limit = (w.rate_limit > 0.0).then_some(RateLimit {
            per_second: w.rate_limit,
            burst: w.rate_burst.max(1),
        });
        s.session.address_rate_limit = (w.rate_limit_per_ip > 0.0).then(|| {
            AddressRateLimiter::new(RateLimit {
                per_second: w.rate_limit_per_ip,
                burst: w.rate_burst_per_ip.max(1),
            })
        });
        s.session.control_rate_limit = (w.control_rate_limit > 0.0).then_some(RateLimit {
            per_second: w.control_rate_limit,
            burst: (w.control_rate_limit * 4.0).ceil().max(1.0) as u32,
        });
        s.session.outbound_bytes = w.outbound_bytes;
        s.session.max_event_size = w.max_event_size;
        s.session.max_groups = w.max_groups.max(1);
        s
    }

    /// The server-wide settings (timeouts, proxies, connection limits).
    pub fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let v = &self.server;
        let defaults = ServerConfig::default();
        Ok(ServerConfig {
            handshake_timeout: Duration::from_secs(v.handshake_timeout),
            shutdown_timeout: Duration::from_secs(v.shutdown_timeout),
            trusted_proxies: self.trusted_proxies()?,
            max_connections: match v.max_connections {
                0 => defaults.max_connections,
                n => Some(n),
            },
            max_connections_per_ip: (v.max_connections_per_ip > 0).then_some(v.max_connections_per_ip),
            handshake_rate: (v.handshake_rate > 0.0).then_some(RateLimit {
                per_second: v.handshake_rate,
                burst: v.handshake_burst.max(1),
            }),
            max_header_size: v.max_header_size,
            max_headers: v.max_headers,
            body_timeout: Duration::from_secs(v.body_timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("estuary-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("estuary.toml");
        std::fs::write(
            &path,
            "bind = \"0.0.0.0:9000\"\nallowed_hosts = [\"chat.example.com\"]\n[websocket]\nmax_message_size = 1024\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.bind().unwrap(), Bind::Tcp("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(c.websocket.max_message_size, 1024);
        let args = ServeArgs {
            config: Some(path),
            bind: Some("unix:/tmp/x.sock".into()),
            ..ServeArgs::default()
        };
        assert_eq!(
            Config::load(&args).unwrap().bind().unwrap(),
            Bind::Unix("/tmp/x.sock".into())
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let args = ServeArgs {
            bind: Some("nowhere".into()),
            ..ServeArgs::default()
        };
        assert!(
            Config::load(&args)
                .unwrap_err()
                .to_string()
                .contains("invalid bind address")
        );
        let args = ServeArgs {
            trusted_proxies: Some(vec!["10.0.0.0/99".into()]),
            ..ServeArgs::default()
        };
        assert!(Config::load(&args).is_err());
        assert!(toml::from_str::<Config>("unknown = 1").is_err());
    }
}
