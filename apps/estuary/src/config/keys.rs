//! The settings that have a flag and a variable: one row each, read by the
//! command line ([`ServeArgs`](super::ServeArgs)) and the environment
//! alike. Every other key is set in the file only.

use toml::Value;

/// How a flag's or a variable's text becomes the key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Taken as it is.
    Text,
    /// Taken as it is; empty unsets the key (`ESTUARY_PUSH_TOKEN=`).
    OptionalText,
    /// A whole number, at least 0.
    Integer,
    /// A number (`2.5`, `20`).
    Number,
    /// A flag without a value; as a variable `true`/`false` (or `1`/`0`,
    /// `yes`/`no`, `on`/`off`).
    Switch,
    /// A flag without a value that turns the key off (`--no-access-log`);
    /// as a variable `true`/`false`, as a [`Switch`](Self::Switch).
    SwitchOff,
    /// Comma-separated (or a repeated flag); empty items are dropped.
    List,
    /// `memory`, or Redis URLs as a [`List`](Self::List): `memory` items
    /// are dropped, so `memory` alone is the in-memory layer. An item that
    /// is not a URL after a `redis+sentinel://` one is one more sentinel of
    /// it (`redis+sentinel://s1:26379,s2:26379/mymaster`).
    Layer,
}

/// One setting with a flag and an `ESTUARY_*` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Its dotted key in the file (`websocket.ping_interval`).
    pub key: &'static str,
    /// Its flag, without the dashes (`ping-interval`).
    pub flag: &'static str,
    /// Its environment variable (`ESTUARY_PING_INTERVAL`).
    pub env: &'static str,
    /// How its text is read.
    pub kind: ValueKind,
    /// One line for `--help`.
    pub help: &'static str,
}

macro_rules! settings {
    ($($key:literal, $flag:literal, $env:literal, $kind:ident, $help:literal;)*) => {
        /// Every setting with a flag and a variable, in `--help` order.
        pub const SETTINGS: &[Setting] = &[$(Setting {
            key: $key,
            flag: $flag,
            env: $env,
            kind: ValueKind::$kind,
            help: $help,
        }),*];
    };
}

settings! {
    "bind", "bind", "ESTUARY_BIND", Text,
        "Address to listen on: HOST:PORT or unix:PATH [default: 127.0.0.1:8000]";
    "fd", "fd", "ESTUARY_FD", Integer,
        "Serve on this inherited listening socket (systemd's LISTEN_FDS protocol, fds from 3) instead of --bind";
    "tls_cert", "tls-cert", "ESTUARY_TLS_CERT", Text,
        "TLS certificate chain (PEM) to serve https/wss on the port, with --tls-key; reread on SIGHUP";
    "tls_key", "tls-key", "ESTUARY_TLS_KEY", Text,
        "TLS private key (PEM) of --tls-cert";
    "allowed_hosts", "allowed-hosts", "ESTUARY_ALLOWED_HOSTS", List,
        "Host names the server answers to, comma-separated (Django's ALLOWED_HOSTS; * for any) [default: the loopback names when bound to loopback]";
    "allowed_origins", "allowed-origins", "ESTUARY_ALLOWED_ORIGINS", List,
        "Origins allowed besides those on the allowed hosts, comma-separated (* for any)";
    "trusted_proxies", "trusted-proxies", "ESTUARY_TRUSTED_PROXIES", List,
        "Trusted reverse proxies, comma-separated IPs, CIDRs, or `unix` (peers on a Unix socket)";
    "push_token", "push-token", "ESTUARY_PUSH_TOKEN", OptionalText,
        "Bearer token required by the push API (without one it answers 403)";
    "push_insecure", "push-insecure", "ESTUARY_PUSH_INSECURE", Switch,
        "Open the push API to anyone who reaches the port, without a token";
    "websocket.max_message_size", "max-message-size", "ESTUARY_MAX_MESSAGE_SIZE", Integer,
        "Largest client message in bytes";
    "websocket.ping_interval", "ping-interval", "ESTUARY_PING_INTERVAL", Integer,
        "Seconds between keepalive pings (0 disables)";
    "websocket.ping_timeout", "ping-timeout", "ESTUARY_PING_TIMEOUT", Integer,
        "Seconds a client may stay silent after a ping before it is dropped";
    "websocket.read_buffer_size", "read-buffer-size", "ESTUARY_READ_BUFFER_SIZE", Integer,
        "Bytes read from a client's socket at a time (each connection keeps a buffer this large)";
    "websocket.rate_limit", "rate-limit", "ESTUARY_RATE_LIMIT", Number,
        "Client messages per second per connection (0: no limit)";
    "websocket.rate_burst", "rate-burst", "ESTUARY_RATE_BURST", Integer,
        "Client message burst per connection";
    "websocket.rate_limit_per_ip", "rate-limit-per-ip", "ESTUARY_RATE_LIMIT_PER_IP", Number,
        "Client messages per second per client address, over all its connections (0: no limit)";
    "websocket.max_lifetime", "max-lifetime", "ESTUARY_MAX_LIFETIME", Integer,
        "Seconds a WebSocket may stay open before it is closed with 1001 (daphne's websocket_timeout; 0: no limit)";
    "websocket.max_event_size", "max-event-size", "ESTUARY_MAX_EVENT_SIZE", Integer,
        "Largest event from the channel layer or the push API, in bytes";
    "auth.required", "auth-required", "ESTUARY_AUTH_REQUIRED", Switch,
        "Every WebSocket route needs an authenticated user (401 without one)";
    "auth.django.secret_key", "django-secret-key", "ESTUARY_DJANGO_SECRET_KEY", Text,
        "The Django project's SECRET_KEY: its logged-in users become the WebSocket's users";
    "auth.django.database", "django-database", "ESTUARY_DJANGO_DATABASE", Text,
        "The Django project's database URL (postgres://... or sqlite:///...), with --django-secret-key";
    "auth.callback.url", "callback-url", "ESTUARY_CALLBACK_URL", Text,
        "The application's connect callback URL (http://...): it decides who connects";
    "auth.callback.secret", "callback-secret", "ESTUARY_CALLBACK_SECRET", Text,
        "The secret the connect callback is signed with, with --callback-url";
    "server.max_connections", "max-connections", "ESTUARY_MAX_CONNECTIONS", Integer,
        "Connections open at once (0: the open-file limit less 256)";
    "server.max_connections_per_ip", "max-connections-per-ip", "ESTUARY_MAX_CONNECTIONS_PER_IP", Integer,
        "Connections open at once per client address (0: no limit)";
    "server.handshake_rate", "handshake-rate", "ESTUARY_HANDSHAKE_RATE", Number,
        "WebSocket handshakes per second per client address (0: no limit)";
    "server.handshake_timeout", "handshake-timeout", "ESTUARY_HANDSHAKE_TIMEOUT", Integer,
        "Seconds for a client's request headers and the consumer's connect";
    "server.body_timeout", "body-timeout", "ESTUARY_BODY_TIMEOUT", Integer,
        "Seconds a request body may take to arrive (past it, 408)";
    "server.shutdown_timeout", "shutdown-timeout", "ESTUARY_SHUTDOWN_TIMEOUT", Integer,
        "Seconds shutdown waits for connections to close";
    "server.listen_backlog", "listen-backlog", "ESTUARY_LISTEN_BACKLOG", Integer,
        "Connections the kernel queues while the accept loop is busy (capped by net.core.somaxconn)";
    "server.root_path", "root-path", "ESTUARY_ROOT_PATH", Text,
        "Prefix the routes live under (daphne's --root-path): /prefix/ws/chat/x/ routes as /ws/chat/x/";
    "layer.redis", "layer", "ESTUARY_LAYER", Layer,
        "Channel layer: `memory`, or Redis URLs (comma-separated or repeated, in ring order)";
    "layer.flavour", "redis-flavour", "ESTUARY_REDIS_FLAVOUR", Text,
        "Redis layer flavour: core or pubsub (must match Django's BACKEND)";
    "layer.prefix", "redis-prefix", "ESTUARY_REDIS_PREFIX", Text,
        "Redis key prefix (must match Django's CHANNEL_LAYERS prefix)";
    "layer.encryption_keys", "encryption-key", "ESTUARY_ENCRYPTION_KEYS", List,
        "channels_redis symmetric encryption keys, comma-separated (first encrypts)";
    "layer.serializer_format", "serializer-format", "ESTUARY_SERIALIZER_FORMAT", Text,
        "How messages are written in Redis: msgpack or json (channels_redis serializer_format; must match Django's)";
    "layer.capacity", "capacity", "ESTUARY_CAPACITY", Integer,
        "Messages a channel holds";
    "layer.channel_capacity", "channel-capacity", "ESTUARY_CHANNEL_CAPACITY", List,
        "Capacities of channels by name, first match wins: GLOB=N or re:REGEX=N, comma-separated (channels_redis channel_capacity; a regex with a comma goes in the file)";
    "layer.expiry", "expiry", "ESTUARY_EXPIRY", Integer,
        "Seconds a channel-layer message lives";
    "layer.group_expiry", "group-expiry", "ESTUARY_GROUP_EXPIRY", Integer,
        "Seconds a group membership lives";
    "presence.interval_ms", "presence-interval-ms", "ESTUARY_PRESENCE_INTERVAL_MS", Integer,
        "Milliseconds a group's presence changes may wait, to go out together as one diff";
    "presence.refresh_ms", "presence-refresh-ms", "ESTUARY_PRESENCE_REFRESH_MS", Integer,
        "Milliseconds between a process's renewals of its presences in Redis (below the timeout)";
    "presence.timeout_ms", "presence-timeout-ms", "ESTUARY_PRESENCE_TIMEOUT_MS", Integer,
        "Milliseconds a dead process's presences stay in Redis before the others announce them gone";
    "history.groups", "history-groups", "ESTUARY_HISTORY_GROUPS", List,
        "Groups whose messages are recorded for recovery, comma-separated globs (empty: none) [default: chat_*]";
    "history.size", "history-size", "ESTUARY_HISTORY_SIZE", Integer,
        "Messages a recorded group keeps";
    "history.ttl", "history-ttl", "ESTUARY_HISTORY_TTL", Integer,
        "Seconds a recorded message is kept";
    "chat.leave_delay_ms", "leave-delay-ms", "ESTUARY_LEAVE_DELAY_MS", Integer,
        "Milliseconds a chat member stays present after its last connection closed (0: leaves at once)";
    "chat.recent_history", "recent-history", "ESTUARY_RECENT_HISTORY", Integer,
        "Recorded messages a chat page gets when it joins without a position (0: none)";
    "metrics.listen", "metrics", "ESTUARY_METRICS", Text,
        "Prometheus metrics: `main` (GET /metrics on the main port), `off`, or HOST:PORT of a separate admin listener [default: main]";
    "log.format", "log-format", "ESTUARY_LOG_FORMAT", Text,
        "Log lines as `text` or `json` (one object a line); filter with RUST_LOG [default: text]";
    "log.access", "no-access-log", "ESTUARY_ACCESS_LOG", SwitchOff,
        "Turn off the access log (a line per HTTP request and WebSocket handshake); as a variable: true or false";
}

/// Why a flag's or a variable's text is not a value of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KindError {
    /// Not a whole number of at least 0.
    #[error("expected a whole number of at least 0")]
    Integer,
    /// Not a number.
    #[error("expected a number")]
    Number,
    /// Not `true` or `false`.
    #[error("expected true or false")]
    Switch,
}

impl Setting {
    /// The setting whose variable is `name`.
    pub fn by_env(name: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.env == name)
    }

    /// The setting whose key is `key`.
    pub fn by_key(key: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.key == key)
    }

    /// `text` as this setting's value; `None` unsets the key.
    pub(crate) fn value(&self, text: &str) -> Result<Option<Value>, KindError> {
        let list = |layer: bool| {
            let mut items: Vec<String> = Vec::new();
            for item in text.split(',').map(str::trim) {
                if item.is_empty() || (layer && item == "memory") {
                    continue;
                }
                match items.last_mut() {
                    // `redis+sentinel://s1:26379,s2:26379/mymaster`: s2 is
                    // a sentinel of the URL before it.
                    Some(last) if layer && last.starts_with("redis+sentinel://") && !item.contains("://") => {
                        last.push(',');
                        last.push_str(item);
                    }
                    _ => items.push(item.to_owned()),
                }
            }
            Value::Array(items.into_iter().map(Value::String).collect())
        };
        Ok(Some(match self.kind {
            ValueKind::Text => Value::String(text.to_owned()),
            ValueKind::OptionalText if text.is_empty() => return Ok(None),
            ValueKind::OptionalText => Value::String(text.to_owned()),
            ValueKind::Integer => Value::Integer(
                text.trim()
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| i64::try_from(n).ok())
                    .ok_or(KindError::Integer)?,
            ),
            ValueKind::Number => Value::Float(text.trim().parse::<f64>().map_err(|_| KindError::Number)?),
            ValueKind::Switch | ValueKind::SwitchOff => {
                Value::Boolean(match text.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" | "" => false,
                    _ => return Err(KindError::Switch),
                })
            }
            ValueKind::List => list(false),
            ValueKind::Layer => list(true),
        }))
    }
}
