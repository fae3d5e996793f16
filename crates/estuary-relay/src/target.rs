//! Where a relay hands its events, how its handshakes complete, and why
//! one cannot be built.

use std::sync::Arc;

use estuary_core::ChannelName;

use crate::groups::TemplateError;

/// The shortest HTTP secret accepted, as for the connect callback.
pub use estuary_callback::MIN_SECRET_LEN;

/// Why a [`Relay`](crate::Relay) cannot be built: which check failed
/// ([`kind`](Self::kind)), the channel name or URL at fault
/// ([`input`](Self::input), a URL's password masked) and the error
/// underneath ([`std::error::Error::source`]).
///
/// ```
/// use estuary_relay::{Relay, RelayErrorKind, Target};
///
/// let unknown = Relay::builder(Target::channel("chat").unwrap())
///     .route("ws/chat/<room>/")
///     .groups(["chat_{room_name}"])
///     .build()
///     .unwrap_err();
/// assert_eq!(unknown.kind(), RelayErrorKind::Template);
/// let specific = Target::channel("specific.a!b").unwrap_err();
/// assert_eq!(specific.kind(), RelayErrorKind::SpecificChannel);
/// assert_eq!(specific.input(), Some("specific.a!b"));
/// ```
#[derive(Debug)]
pub struct RelayError {
    kind: RelayErrorKind,
    input: Option<Box<str>>,
    detail: Option<&'static str>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Which check a [`RelayError`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RelayErrorKind {
    /// The worker channel's name is not a valid channel name.
    Channel,
    /// A process-specific name (`specific.…!…`) as the worker channel:
    /// only its own process could receive on it.
    SpecificChannel,
    /// The HTTP URL does not parse, or is not `http://host/...`, or
    /// carries a user name or password.
    Url,
    /// The HTTP secret is shorter than [`MIN_SECRET_LEN`] bytes.
    ShortSecret,
    /// Neither `channel` nor `http`, or both, in [`RelaySettings`](crate::RelaySettings).
    Target,
    /// `http` without `secret`, or `secret` without `http`.
    Secret,
    /// A duration or a bound of 0 where at least 1 is needed
    /// ([`RelayError::setting`] names it).
    Zero,
    /// A group template names something the route does not have (the
    /// source is the [`TemplateError`]).
    Template,
}

impl RelayError {
    pub(crate) fn new(kind: RelayErrorKind) -> Self {
        Self {
            kind,
            input: None,
            detail: None,
            source: None,
        }
    }

    pub(crate) fn zero(setting: &'static str) -> Self {
        Self {
            detail: Some(setting),
            ..Self::new(RelayErrorKind::Zero)
        }
    }

    fn with_input(mut self, input: &str) -> Self {
        self.input = Some(input.into());
        self
    }

    fn with_detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Which check failed.
    pub fn kind(&self) -> RelayErrorKind {
        self.kind
    }

    /// The channel name or URL at fault, as given (a URL's password
    /// masked).
    pub fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }

    /// The setting that must be more than 0, for
    /// [`RelayErrorKind::Zero`].
    pub fn setting(&self) -> Option<&'static str> {
        match self.kind {
            RelayErrorKind::Zero => self.detail,
            _ => None,
        }
    }
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let input = self.input.as_deref().unwrap_or_default();
        let why = |f: &mut std::fmt::Formatter<'_>| match (self.detail, &self.source) {
            (Some(detail), _) => f.write_str(detail),
            (None, Some(source)) => write!(f, "{source}"),
            (None, None) => f.write_str("invalid"),
        };
        match self.kind {
            RelayErrorKind::Channel => {
                write!(f, "relay channel {input:?}: ")?;
                why(f)
            }
            RelayErrorKind::SpecificChannel => write!(
                f,
                "relay channel {input:?}: a process-specific name cannot be a worker channel"
            ),
            RelayErrorKind::Url => {
                write!(f, "relay URL {input:?}: ")?;
                why(f)
            }
            RelayErrorKind::ShortSecret => write!(
                f,
                "the relay's HTTP secret must be at least {MIN_SECRET_LEN} bytes (for example the output of `openssl rand -hex 32`)"
            ),
            RelayErrorKind::Target => {
                f.write_str("a relayed route needs exactly one of `channel` and `http`")
            }
            RelayErrorKind::Secret => f.write_str(
                "`secret` goes with `http` (the HTTP requests are signed with it), and only with it",
            ),
            RelayErrorKind::Zero => write!(f, "{} must be more than 0", self.detail.unwrap_or("a bound")),
            RelayErrorKind::Template => why(f),
        }
    }
}

impl std::error::Error for RelayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<TemplateError> for RelayError {
    fn from(error: TemplateError) -> Self {
        Self::new(RelayErrorKind::Template).with_source(error)
    }
}

/// `url` with the password of a `user:password@` masked.
fn masked(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |at| scheme_end + at);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
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
        let channel = ChannelName::new(name).map_err(|source| {
            RelayError::new(RelayErrorKind::Channel)
                .with_input(name)
                .with_source(source)
        })?;
        if channel.is_process_specific() {
            return Err(RelayError::new(RelayErrorKind::SpecificChannel).with_input(name));
        }
        Ok(Self {
            kind: TargetKind::Channel(channel),
        })
    }

    /// An HTTP endpoint each event is POSTed to, signed with `secret`
    /// (at least [`MIN_SECRET_LEN`] bytes). Plain `http://` only: call the
    /// application on loopback or a private network.
    pub fn http(url: &str, secret: impl AsRef<[u8]>) -> Result<Self, RelayError> {
        let bad = || RelayError::new(RelayErrorKind::Url).with_input(&masked(url));
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad().with_source(e))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad().with_detail("https is not supported (no TLS client in this build)"));
            }
            _ => return Err(bad().with_detail("needs an http:// URL")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad().with_detail("has no host"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            // It would be sent nowhere, and end up in logs.
            return Err(bad().with_detail("must not carry a user name or password"));
        }
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(RelayError::new(RelayErrorKind::ShortSecret));
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
        let specific = Target::channel("specific.abc!def").unwrap_err();
        assert_eq!(specific.kind(), RelayErrorKind::SpecificChannel);
        let bad = Target::channel("no spaces").unwrap_err();
        assert_eq!(
            (bad.kind(), bad.input()),
            (RelayErrorKind::Channel, Some("no spaces"))
        );
        assert!(
            std::error::Error::source(&bad).is_some(),
            "the name error is kept"
        );
        let with_password = Target::http("http://user:hunter2@127.0.0.1/", "0123456789abcdef").unwrap_err();
        assert_eq!(with_password.kind(), RelayErrorKind::Url);
        assert!(!with_password.to_string().contains("hunter2"), "{with_password}");
        assert_eq!(with_password.input(), Some("http://<redacted>@127.0.0.1/"));
        let secret = "0123456789abcdef";
        assert!(Target::http("https://example.org/", secret).is_err());
        assert!(Target::http("/relative", secret).is_err());
        assert!(Target::http("http://127.0.0.1:8000/estuary/events/", secret).is_ok());
        let debug = format!("{:?}", Target::http("http://127.0.0.1/", secret).unwrap());
        assert!(!debug.contains(secret), "{debug}");
    }
}
