//! A relayed route's settings as plain values: what a configuration file
//! holds.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::relay::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_STATE_BYTES, DEFAULT_REPLY_TIMEOUT, Relay, RelayBuilder,
};
use crate::target::{ConnectMode, RelayError, RelayErrorKind, Target};

/// The relay keys of a route, as plain values: exactly one of `channel`
/// and `http` (with `secret`), the connect mode, the timeouts (seconds in
/// a file), the bounds, the busy frame and the declared query parameters
/// with their defaults. Missing keys take the defaults of
/// [`Relay::builder`].
///
/// With the `serde` feature it reads from (and writes as) a table; unknown
/// keys are an error, query defaults may be written as numbers or booleans:
///
/// ```toml
/// channel = "chat"
/// connect = "worker"          # or "accept"
/// connect_timeout = 5
/// reply_timeout = 30
/// max_pending = 16
/// max_pending_bytes = 262144
/// max_in_flight = 4096
/// max_state_bytes = 65536
/// busy_frame = '{"type": "busy"}'
/// query = { lang = "en", page = 1 }
/// ```
///
/// ```
/// use estuary_relay::RelaySettings;
///
/// let settings = RelaySettings {
///     channel: Some("chat".into()),
///     busy_frame: Some(r#"{"type": "busy"}"#.into()),
///     ..RelaySettings::default()
/// };
/// // The app adds what the route knows, then builds.
/// let relay = settings.builder().unwrap().route("ws/chat/<room>/").build().unwrap();
/// assert_eq!(relay.name(), "ws/chat/<room>/");
///
/// let neither = RelaySettings::default();
/// assert!(neither.build().is_err());
/// ```
#[derive(Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RelaySettings {
    /// The worker channel ([`Target::channel`]).
    pub channel: Option<String>,
    /// The HTTP endpoint ([`Target::http`]).
    pub http: Option<String>,
    /// The HTTP requests' signing secret (with `http` only).
    pub secret: Option<String>,
    /// How the handshake completes.
    pub connect: ConnectMode,
    /// How long the handshake waits for the application.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub connect_timeout: Duration,
    /// How long an event waits for its acknowledgement.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub reply_timeout: Duration,
    /// Client messages a connection holds while an event is out.
    pub max_pending: usize,
    /// Bytes of those messages.
    pub max_pending_bytes: usize,
    /// Events the relay has out at once.
    pub max_in_flight: usize,
    /// The largest state a connection keeps (msgpack bytes).
    pub max_state_bytes: usize,
    /// The text frame a client gets for a refused message or a missing
    /// acknowledgement (else: close 1013).
    pub busy_frame: Option<String>,
    /// Declared query parameters and their defaults.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "query_values"))]
    pub query: BTreeMap<String, String>,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            channel: None,
            http: None,
            secret: None,
            connect: ConnectMode::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            busy_frame: None,
            query: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySettings")
            .field("channel", &self.channel)
            .field("http", &self.http)
            // Never in a log line.
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .field("connect", &self.connect)
            .field("connect_timeout", &self.connect_timeout)
            .field("reply_timeout", &self.reply_timeout)
            .field("max_pending", &self.max_pending)
            .field("max_pending_bytes", &self.max_pending_bytes)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_state_bytes", &self.max_state_bytes)
            .field("busy_frame", &self.busy_frame)
            .field("query", &self.query)
            .finish()
    }
}

impl RelaySettings {
    /// A builder with these settings, checked, for the caller to add the
    /// route's pattern, groups and name.
    pub fn builder(&self) -> Result<RelayBuilder, RelayError> {
        let target = match (&self.channel, &self.http, &self.secret) {
            (Some(channel), None, None) => Target::channel(channel)?,
            (None, Some(url), Some(secret)) => Target::http(url, secret)?,
            (None, Some(_), None) | (Some(_), None, Some(_)) => {
                return Err(RelayError::new(RelayErrorKind::Secret));
            }
            _ => return Err(RelayError::new(RelayErrorKind::Target)),
        };
        let mut builder = Relay::builder(target)
            .connect_mode(self.connect)
            .connect_timeout(self.connect_timeout)
            .reply_timeout(self.reply_timeout)
            .max_pending(self.max_pending)
            .max_pending_bytes(self.max_pending_bytes)
            .max_in_flight(self.max_in_flight)
            .max_state_bytes(self.max_state_bytes);
        if let Some(frame) = &self.busy_frame {
            builder = builder.busy_frame(frame.clone());
        }
        for (name, default) in &self.query {
            builder = builder.query_param(name.clone(), default.clone());
        }
        Ok(builder)
    }

    /// Builds the relay from these settings alone.
    pub fn build(&self) -> Result<Relay, RelayError> {
        self.builder()?.build()
    }
}

/// Durations as seconds (integers or decimals).
#[cfg(feature = "serde")]
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if value.subsec_nanos() == 0 {
            s.serialize_u64(value.as_secs())
        } else {
            s.serialize_f64(value.as_secs_f64())
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Secs {
            Whole(u64),
            Decimal(f64),
        }
        match Secs::deserialize(d)? {
            Secs::Whole(n) => Ok(Duration::from_secs(n)),
            Secs::Decimal(f) => Duration::try_from_secs_f64(f)
                .map_err(|_| serde::de::Error::custom("a duration is a number of seconds, 0 or more")),
        }
    }
}

/// Query defaults as text, whether written as strings, numbers or booleans.
#[cfg(feature = "serde")]
fn query_values<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = <BTreeMap<String, Scalar> as serde::Deserialize>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                Scalar::Text(s) => s,
                Scalar::Int(n) => n.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (name, text)
        })
        .collect())
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;

    #[test]
    fn reads_a_route_table() {
        let settings: RelaySettings = toml::from_str(
            r#"
            http = "http://127.0.0.1:8000/estuary/events/"
            secret = "0123456789abcdef0123"
            connect = "accept"
            connect_timeout = 2.5
            reply_timeout = 5
            max_pending = 4
            max_pending_bytes = 1000
            busy_frame = "busy"
            query = { lang = "en", page = 1, debug = false }
            "#,
        )
        .unwrap();
        assert_eq!(settings.connect, ConnectMode::Accept);
        assert_eq!(settings.connect_timeout, Duration::from_millis(2500));
        assert_eq!(settings.reply_timeout, Duration::from_secs(5));
        assert_eq!(settings.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(settings.max_pending_bytes, 1000);
        assert_eq!(settings.query["page"], "1");
        assert_eq!(settings.query["debug"], "false");
        assert!(!format!("{settings:?}").contains("0123456789abcdef0123"));
        settings.build().unwrap();
        let back: RelaySettings = toml::from_str(&toml::to_string(&settings).unwrap()).unwrap();
        assert_eq!(back, settings);
    }

    #[test]
    fn refuses_unknown_keys_and_bad_targets() {
        assert!(toml::from_str::<RelaySettings>("chanel = \"chat\"").is_err());
        assert!(toml::from_str::<RelaySettings>("connect = \"later\"").is_err());
        assert!(toml::from_str::<RelaySettings>("reply_timeout = -1").is_err());
        let both: RelaySettings = toml::from_str("channel = \"chat\"\nhttp = \"http://x/\"").unwrap();
        assert_eq!(both.build().unwrap_err().kind(), RelayErrorKind::Target);
        let no_secret: RelaySettings = toml::from_str("http = \"http://x/\"").unwrap();
        assert_eq!(no_secret.build().unwrap_err().kind(), RelayErrorKind::Secret);
    }
}
