//! Where the callback goes and what it carries.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Uri, header};

/// Why a [`CallbackConfig`] cannot be used.
///
/// Opaque, like [`std::io::Error`]: [`kind`](Self::kind) says what is
/// wrong, [`url`](Self::url) or [`name`](Self::name) give the value at
/// fault, and a URL that does not parse has the parser's error as its
/// [`source`](std::error::Error::source). A URL's password (`user:***@`)
/// is masked in all of them.
///
/// ```
/// use estuary_callback::{CallbackConfig, ConfigErrorKind};
///
/// let error = CallbackConfig::new("https://app.internal/estuary/connect/", "a secret of 16+ bytes").unwrap_err();
/// assert_eq!(error.kind(), ConfigErrorKind::Https);
/// assert_eq!(error.url(), Some("https://app.internal/estuary/connect/"));
///
/// let base = CallbackConfig::new("http://127.0.0.1:8000/c/", "a secret of 16+ bytes")?;
/// let error = base.forward_cookies(["session; admin=1"]).unwrap_err();
/// assert_eq!((error.kind(), error.name()), (ConfigErrorKind::Cookie, Some("session; admin=1")));
/// assert_eq!(error.to_string(), r#""session; admin=1" is not a cookie name"#);
/// # Ok::<(), estuary_callback::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    /// The URL (its password masked), the cookie name or the header name.
    input: Option<Box<str>>,
    /// Why a header cannot be forwarded.
    why: &'static str,
    source: Option<http::uri::InvalidUri>,
}

/// What is wrong with a [`CallbackConfig`] ([`ConfigError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The URL does not parse (the parser's error is the source).
    InvalidUrl,
    /// An `https://` URL: this build has no TLS client.
    Https,
    /// A URL whose scheme is not `http`, or that has none.
    NotHttp,
    /// A URL without a host.
    NoHost,
    /// A URL with user info (`user:password@host`): nothing would send it,
    /// and a password in a URL ends up in logs. The callback is
    /// authenticated by its signature.
    UserInfo,
    /// The shared secret is too short to sign with.
    ShortSecret,
    /// A count or a duration of 0 where at least 1 is needed (the
    /// timeout, `max_in_flight`, `max_in_flight_per_client`).
    Zero,
    /// A cookie name that is not one ([`ConfigError::name`]).
    Cookie,
    /// A header that cannot be forwarded ([`ConfigError::name`]; the text
    /// says why).
    Header,
}

impl ConfigError {
    fn new(kind: ConfigErrorKind, input: Option<String>) -> Self {
        Self {
            kind,
            input: input.map(String::into_boxed_str),
            why: "",
            source: None,
        }
    }

    fn url_error(kind: ConfigErrorKind, url: &str) -> Self {
        Self::new(kind, Some(masked(url)))
    }

    fn header(name: &str, why: &'static str) -> Self {
        Self {
            why,
            ..Self::new(ConfigErrorKind::Header, Some(name.to_owned()))
        }
    }

    #[cfg(any(feature = "serde", test))]
    pub(crate) fn zero() -> Self {
        Self::new(ConfigErrorKind::Zero, None)
    }

    /// What is wrong.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The URL as given, its password masked (the URL kinds only).
    pub fn url(&self) -> Option<&str> {
        match self.kind {
            ConfigErrorKind::InvalidUrl
            | ConfigErrorKind::Https
            | ConfigErrorKind::NotHttp
            | ConfigErrorKind::NoHost
            | ConfigErrorKind::UserInfo => self.input.as_deref(),
            _ => None,
        }
    }

    /// The cookie or header name as given ([`Cookie`](ConfigErrorKind::Cookie)
    /// and [`Header`](ConfigErrorKind::Header) only).
    pub fn name(&self) -> Option<&str> {
        match self.kind {
            ConfigErrorKind::Cookie | ConfigErrorKind::Header => self.input.as_deref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let input = self.input.as_deref().unwrap_or_default();
        match self.kind {
            ConfigErrorKind::InvalidUrl => match &self.source {
                Some(source) => write!(f, "callback URL {input:?}: {source}"),
                None => write!(f, "callback URL {input:?}: not a URL"),
            },
            ConfigErrorKind::Https => write!(
                f,
                "callback URL {input:?}: https is not supported (no TLS client in this build): call the application over http on loopback or a private network"
            ),
            ConfigErrorKind::NotHttp => write!(f, "callback URL {input:?}: needs an http:// URL"),
            ConfigErrorKind::NoHost => write!(f, "callback URL {input:?}: has no host"),
            ConfigErrorKind::UserInfo => write!(
                f,
                "callback URL {input:?}: user info (user:password@) is not sent; the callback is authenticated by its signature"
            ),
            ConfigErrorKind::ShortSecret => write!(
                f,
                "the callback secret must be at least {MIN_SECRET_LEN} bytes (for example the output of `openssl rand -hex 32`)"
            ),
            ConfigErrorKind::Zero => f.write_str("must be at least 1"),
            ConfigErrorKind::Cookie => write!(f, "{input:?} is not a cookie name"),
            ConfigErrorKind::Header => write!(f, "header {input:?} cannot be forwarded: {}", self.why),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `url` with the password of its user info masked (`http://user:***@host/`),
/// also when it is no valid URL: the user info ends at the last `@`.
fn masked(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    match rest.rfind('@').and_then(|at| Some((rest[..at].find(':')?, at))) {
        Some((colon, at)) => format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..]),
        None => url.to_owned(),
    }
}

/// The shortest shared secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// Headers the callback sets itself, or that belong to one HTTP hop: never
/// forwarded from the handshake. (`Forwarded`, `X-Forwarded-*` and
/// `X-Real-IP` are refused apart: the application would take the visitor's
/// word for its own address; the body's `client` is the address Estuary
/// saw.)
const NOT_FORWARDED: [HeaderName; 14] = [
    header::EXPECT,
    header::CONTENT_ENCODING,
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::COOKIE,
    header::ACCEPT,
];

/// One client address's share of the callback slots unless set: at most
/// `max_in_flight / 32` of them ([`CallbackConfig::with_max_in_flight_per_client`]).
pub const DEFAULT_IN_FLIGHT_PER_CLIENT_SHARE: usize = 32;

/// The header that carries the body's signature.
pub const SIGNATURE_HEADER: &str = "x-estuary-signature";

/// Where the connect callback goes, how it is signed, and what of the
/// handshake it forwards.
///
/// Defaults: a 2 s timeout (for a slot, then for the exchange), the `Origin` and
/// `User-Agent` headers and the `sessionid` cookie forwarded (Django's
/// session, so that the view's `request.user` is the visitor), at most
/// 256 callbacks in flight and 8 of them for one client address, user
/// names of at most 150 characters, no recheck.
///
/// ```
/// use std::time::Duration;
/// use estuary_callback::CallbackConfig;
///
/// let config = CallbackConfig::new("http://127.0.0.1:8000/estuary/connect/", "a secret of 16+ bytes")?
///     .with_timeout(Duration::from_secs(1))
///     .forward_headers(["origin", "user-agent", "accept-language"])?
///     .forward_cookies(["sessionid", "csrftoken"])?
///     .with_recheck_every(Some(Duration::from_secs(60)));
/// assert_eq!(config.timeout(), Duration::from_secs(1));
/// assert!(CallbackConfig::new("https://example.org/", "a secret of 16+ bytes").is_err());
/// let base = || CallbackConfig::new("http://127.0.0.1:8000/c/", "a secret of 16+ bytes").unwrap();
/// assert!(base().forward_headers(["x-forwarded-for"]).is_err(), "a visitor's word for its address");
/// assert!(base().forward_cookies(["session; admin=1"]).is_err());
/// assert_eq!(base().max_in_flight_per_client(), 8, "256 / 32 for one client address");
/// assert_eq!(base().with_max_in_flight(16).max_in_flight_per_client(), 1);
/// # Ok::<(), estuary_callback::ConfigError>(())
/// ```
///
/// With the `serde` feature it deserializes through `CallbackSettings`, its form as
/// plain values, checked as the constructors check (an invalid value is an
/// error naming its key).
#[derive(Clone)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "crate::settings::CallbackSettings"))]
pub struct CallbackConfig {
    pub(crate) url: Uri,
    pub(crate) secret: Arc<[u8]>,
    pub(crate) timeout: Duration,
    pub(crate) headers: Vec<HeaderName>,
    pub(crate) cookies: Vec<String>,
    pub(crate) max_in_flight: usize,
    pub(crate) max_in_flight_per_client: Option<usize>,
    pub(crate) max_name_chars: usize,
    pub(crate) recheck_every: Option<Duration>,
}

impl std::fmt::Debug for CallbackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("headers", &self.headers)
            .field("cookies", &self.cookies)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_per_client", &self.max_in_flight_per_client())
            .field("max_name_chars", &self.max_name_chars)
            .field("recheck_every", &self.recheck_every)
            .finish()
    }
}

impl CallbackConfig {
    /// A callback to `url` (`http://`; put the application on a private
    /// network or loopback: this build has no TLS client), signed with
    /// `secret` (at least 16 bytes).
    pub fn new(url: &str, secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let parsed: Uri = url.parse().map_err(|source| ConfigError {
            source: Some(source),
            ..ConfigError::url_error(ConfigErrorKind::InvalidUrl, url)
        })?;
        match parsed.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(ConfigError::url_error(ConfigErrorKind::Https, url)),
            _ => return Err(ConfigError::url_error(ConfigErrorKind::NotHttp, url)),
        }
        if parsed.host().is_none_or(str::is_empty) {
            return Err(ConfigError::url_error(ConfigErrorKind::NoHost, url));
        }
        if parsed.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(ConfigError::url_error(ConfigErrorKind::UserInfo, url));
        }
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::new(ConfigErrorKind::ShortSecret, None));
        }
        Ok(Self {
            url: parsed,
            secret: secret.into(),
            timeout: Duration::from_secs(2),
            headers: vec![header::ORIGIN, header::USER_AGENT],
            cookies: vec!["sessionid".to_owned()],
            max_in_flight: 256,
            max_in_flight_per_client: None,
            max_name_chars: estuary_core::auth::DEFAULT_MAX_USER_NAME_CHARS,
            recheck_every: None,
        })
    }

    /// How long a handshake may wait for a free slot (see
    /// [`with_max_in_flight`](Self::with_max_in_flight)), and then how long
    /// the exchange may take (the request, a second try on a new connection
    /// if a kept-alive one failed under it, the answer); past either, the
    /// handshake gets 503.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The handshake headers forwarded (in the JSON body, and as headers of
    /// the callback request so the application's middleware sees them).
    /// Replaces the default list. `Host`, `Cookie`, `Content-Type`,
    /// `Accept` and hop-by-hop headers cannot be forwarded.
    pub fn forward_headers<I, S>(mut self, names: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut headers = Vec::new();
        for name in names {
            let name = name.as_ref();
            let parsed = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| ConfigError::header(name, "not a header name"))?;
            if parsed == header::COOKIE {
                return Err(ConfigError::header(name, "list cookies with forward_cookies"));
            }
            if NOT_FORWARDED.contains(&parsed)
                || parsed.as_str().starts_with("proxy-")
                || parsed.as_str() == "keep-alive"
            {
                return Err(ConfigError::header(name, "it belongs to one HTTP hop"));
            }
            if parsed == header::FORWARDED
                || parsed.as_str().starts_with("x-forwarded-")
                || parsed.as_str() == "x-real-ip"
            {
                return Err(ConfigError::header(
                    name,
                    "the application would take the visitor's word for its address (the body's client is the one Estuary saw)",
                ));
            }
            if parsed.as_str() == SIGNATURE_HEADER {
                return Err(ConfigError::header(name, "the callback sets it"));
            }
            headers.push(parsed);
        }
        self.headers = headers;
        Ok(self)
    }

    /// The cookies forwarded (in the JSON body, and as the callback
    /// request's `Cookie` header). Replaces the default `["sessionid"]`.
    /// A name must be a cookie name (RFC 6265: no spaces, `;`, `=` ...).
    pub fn forward_cookies<I, S>(mut self, names: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut cookies = Vec::new();
        for name in names {
            let name = name.into();
            let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(ConfigError::new(ConfigErrorKind::Cookie, Some(name)));
            }
            cookies.push(name);
        }
        self.cookies = cookies;
        Ok(self)
    }

    /// How many callbacks may wait for the application at once (at least
    /// one); a handshake beyond waits for a slot within the timeout.
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        self
    }

    /// How many of the [`with_max_in_flight`](Self::with_max_in_flight)
    /// slots the handshakes of one client address may hold or wait for
    /// at once (the address after trusted-proxy resolution; an IPv6
    /// address counts by its /64, as the server's per-address limits do).
    /// A handshake beyond gets 429 with `Retry-After: 1` at once, without
    /// asking the application, so that a few addresses cannot take every
    /// slot from the others while the application is slow. Default:
    /// [`DEFAULT_IN_FLIGHT_PER_CLIENT_SHARE`] of `max_in_flight`
    /// (8 of 256), at least 1. (It counts the handshakes waiting for a slot
    /// too, so it can be more than `max_in_flight`.) Behind a
    /// reverse proxy that is not in `trusted_proxies`, every visitor has the
    /// proxy's address: list it there, or raise this.
    pub fn with_max_in_flight_per_client(mut self, max: usize) -> Self {
        self.max_in_flight_per_client = Some(max.max(1));
        self
    }

    /// The bound of [`with_max_in_flight_per_client`](Self::with_max_in_flight_per_client).
    pub fn max_in_flight_per_client(&self) -> usize {
        self.max_in_flight_per_client
            .unwrap_or(self.max_in_flight / DEFAULT_IN_FLIGHT_PER_CLIENT_SHARE)
            .max(1)
    }

    /// The longest user name an answer may give, in characters (default
    /// [`DEFAULT_MAX_USER_NAME_CHARS`](estuary_core::auth::DEFAULT_MAX_USER_NAME_CHARS),
    /// 150, Django's `username` length). An answer whose user name is
    /// longer, or whose id is longer than
    /// [`MAX_USER_ID_LEN`](estuary_core::auth::MAX_USER_ID_LEN) bytes, is a bad
    /// answer (502, and an error line that says so): a name is shown to
    /// others, and a cut one could pass for someone else's.
    pub fn with_max_name_chars(mut self, max: usize) -> Self {
        self.max_name_chars = max;
        self
    }

    /// Asks the application again every `every` while a user's connection
    /// is open (`"event": "recheck"`); an answer that no longer admits the
    /// same user closes it with 4401. `None` (the default): asked at the
    /// handshake only.
    pub fn with_recheck_every(mut self, every: Option<Duration>) -> Self {
        self.recheck_every = every;
        self
    }

    /// The callback URL.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The exchange's timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a secret of 16+ bytes";

    fn url_error(url: &str) -> ConfigError {
        match CallbackConfig::new(url, SECRET) {
            Ok(_) => panic!("{url} was accepted"),
            Err(error) => error,
        }
    }

    #[test]
    fn every_url_error_names_its_kind_and_the_url() {
        for (url, kind, text) in [
            (
                "http://exa mple/",
                ConfigErrorKind::InvalidUrl,
                "callback URL \"http://exa mple/\": invalid uri character",
            ),
            (
                "https://h/",
                ConfigErrorKind::Https,
                "callback URL \"https://h/\": https is not supported (no TLS client in this build): call the application over http on loopback or a private network",
            ),
            (
                "ftp://h/",
                ConfigErrorKind::NotHttp,
                "callback URL \"ftp://h/\": needs an http:// URL",
            ),
            (
                "/c/",
                ConfigErrorKind::NotHttp,
                "callback URL \"/c/\": needs an http:// URL",
            ),
            (
                "http://u:secret@h/c/",
                ConfigErrorKind::UserInfo,
                "callback URL \"http://u:***@h/c/\": user info (user:password@) is not sent; the callback is authenticated by its signature",
            ),
        ] {
            let error = url_error(url);
            assert_eq!(
                (error.kind(), error.to_string()),
                (kind, text.to_owned()),
                "{url}"
            );
            assert_eq!(error.name(), None);
            assert_eq!(
                std::error::Error::source(&error).is_some(),
                kind == ConfigErrorKind::InvalidUrl,
                "{url}"
            );
        }
        let masked = url_error("http://u:pa ss@h/");
        assert_eq!(masked.kind(), ConfigErrorKind::InvalidUrl);
        assert_eq!(masked.url(), Some("http://u:***@h/"));
        assert!(!format!("{masked:?}").contains("pa ss"), "{masked:?}");
        let short = CallbackConfig::new("http://h/", "short").unwrap_err();
        assert_eq!(
            (short.kind(), short.url(), short.name()),
            (ConfigErrorKind::ShortSecret, None, None)
        );
        assert!(
            short
                .to_string()
                .starts_with("the callback secret must be at least 16 bytes")
        );
        let zero = ConfigError::zero();
        assert_eq!(
            (zero.kind(), zero.to_string()),
            (ConfigErrorKind::Zero, "must be at least 1".to_owned())
        );
    }

    #[test]
    fn cookie_and_header_errors_name_them() {
        let base = || CallbackConfig::new("http://127.0.0.1:8000/c/", SECRET).unwrap();
        let cookie = base().forward_cookies([""]).unwrap_err();
        assert_eq!(
            (cookie.kind(), cookie.name(), cookie.url()),
            (ConfigErrorKind::Cookie, Some(""), None)
        );
        assert_eq!(cookie.to_string(), "\"\" is not a cookie name");
        for (name, why) in [
            ("bad header", "not a header name"),
            ("cookie", "list cookies with forward_cookies"),
            ("Host", "it belongs to one HTTP hop"),
            ("proxy-x", "it belongs to one HTTP hop"),
            (
                "x-real-ip",
                "the application would take the visitor's word for its address (the body's client is the one Estuary saw)",
            ),
            (SIGNATURE_HEADER, "the callback sets it"),
        ] {
            let error = base().forward_headers([name]).unwrap_err();
            assert_eq!(
                (error.kind(), error.name()),
                (ConfigErrorKind::Header, Some(name))
            );
            assert_eq!(
                error.to_string(),
                format!("header {name:?} cannot be forwarded: {why}")
            );
        }
    }
}
