//! Where a relay hands its events, how its handshakes complete, and why
//! one cannot be built.

use std::sync::Arc;

use estuary_core::{ChannelName, NameError};

use crate::groups::TemplateError;

/// The shortest HTTP secret accepted, as for the connect callback.
pub use estuary_callback::MIN_SECRET_LEN;

/// Why a [`Relay`](crate::Relay) cannot be built.
///
/// ```
/// use estuary_relay::{Relay, RelayError, Target};
///
/// let unknown = Relay::builder(Target::channel("chat").unwrap())
///     .route("ws/chat/<room>/")
///     .groups(["chat_{room_name}"])
///     .build();
/// assert!(matches!(unknown, Err(RelayError::Template(_))));
/// assert!(matches!(Target::channel("specific.a!b"), Err(RelayError::SpecificChannel(_))));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The worker channel's name is not a valid channel name.
    #[error("relay channel {name:?}: {source}")]
    Channel {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        #[source]
        source: NameError,
    },
    /// A process-specific name (`specific.…!…`) as the worker channel:
    /// only its own process could receive on it.
    #[error("relay channel {0:?}: a process-specific name cannot be a worker channel")]
    SpecificChannel(String),
    /// The HTTP URL does not parse, or is not `http://host/...`.
    #[error("relay URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error(
        "the relay's HTTP secret must be at least {MIN_SECRET_LEN} bytes (for example the output of `openssl rand -hex 32`)"
    )]
    ShortSecret,
    /// Neither `channel` nor `http`, or both, in [`RelaySettings`](crate::RelaySettings).
    #[error("a relayed route needs exactly one of `channel` and `http`")]
    Target,
    /// `http` without `secret`, or `secret` without `http`.
    #[error("`secret` goes with `http` (the HTTP requests are signed with it), and only with it")]
    Secret,
    /// A duration or a bound of 0 where at least 1 is needed.
    #[error("{0} must be more than 0")]
    Zero(&'static str),
    /// A group template names something the route does not have.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// Where a relay hands its connections' events.
///
/// ```
/// use estuary_relay::Target;
///
/// let worker = Target::channel("chat").unwrap();
/// let view = Target::http("http://127.0.0.1:8000/estuary/events/", "a secret of 16 bytes or more").unwrap();
/// assert!(Target::channel("no spaces").is_err());
/// assert!(Target::http("http://127.0.0.1:8000/", "short").is_err());
/// # let _ = (worker, view);
/// ```
#[derive(Clone)]
pub struct Target {
    kind: TargetKind,
}

#[derive(Clone)]
pub(crate) enum TargetKind {
    Channel(ChannelName),
    Http { url: http::Uri, secret: Arc<[u8]> },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            TargetKind::Channel(name) => f.debug_tuple("Channel").field(name).finish(),
            // The secret never reaches a log line.
            TargetKind::Http { url, .. } => f.debug_struct("Http").field("url", url).finish_non_exhaustive(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            TargetKind::Channel(name) => write!(f, "channel {name}"),
            TargetKind::Http { url, .. } => write!(f, "{url}"),
        }
    }
}

impl Target {
    /// A named channel on the channel layer, where Django workers
    /// `receive` (`runworker <name>`).
    pub fn channel(name: &str) -> Result<Self, RelayError> {
        let channel = ChannelName::new(name).map_err(|source| RelayError::Channel {
            name: name.to_owned(),
            source,
        })?;
        if channel.is_process_specific() {
            return Err(RelayError::SpecificChannel(name.to_owned()));
        }
        Ok(Self {
            kind: TargetKind::Channel(channel),
        })
    }

    /// An HTTP endpoint each event is POSTed to, signed with `secret`
    /// (at least [`MIN_SECRET_LEN`] bytes). Plain `http://` only: call the
    /// application on loopback or a private network.
    pub fn http(url: &str, secret: impl AsRef<[u8]>) -> Result<Self, RelayError> {
        let bad = |reason: &str| RelayError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported (no TLS client in this build)")),
            _ => return Err(bad("needs an http:// URL")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(RelayError::ShortSecret);
        }
        Ok(Self {
            kind: TargetKind::Http {
                url: uri,
                secret: Arc::from(secret),
            },
        })
    }

    pub(crate) fn kind(&self) -> &TargetKind {
        &self.kind
    }
}

/// How the handshake of a relayed connection completes.
///
/// ```
/// use estuary_relay::ConnectMode;
///
/// assert_eq!(ConnectMode::default(), ConnectMode::Worker);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum ConnectMode {
    /// The handshake waits for the application: `websocket.accept` then
    /// the acknowledgement of `websocket.connect` completes it; a close, or
    /// an acknowledgement without an accept, refuses it with 403.
    #[default]
    Worker,
    /// Estuary accepts at once; `websocket.connect` is only a notification.
    Accept,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        assert!(matches!(
            Target::channel("specific.abc!def"),
            Err(RelayError::SpecificChannel(_))
        ));
        let secret = "0123456789abcdef";
        assert!(Target::http("https://example.org/", secret).is_err());
        assert!(Target::http("/relative", secret).is_err());
        assert!(Target::http("http://127.0.0.1:8000/estuary/events/", secret).is_ok());
        let debug = format!("{:?}", Target::http("http://127.0.0.1/", secret).unwrap());
        assert!(!debug.contains(secret), "{debug}");
    }
}
