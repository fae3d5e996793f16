//! Where the callback goes and what it carries.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Uri, header};

/// Why a [`CallbackConfig`] cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse.
    #[error("callback URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What the parser said.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// An `https://` URL: this build has no TLS client.
    #[error(
        "callback URL {url:?}: https is not supported (no TLS client in this build): call the application over http on loopback or a private network"
    )]
    Https {
        /// The URL as given.
        url: String,
    },
    /// A URL whose scheme is not `http`, or that has none.
    #[error("callback URL {url:?}: needs an http:// URL")]
    NotHttp {
        /// The URL as given.
        url: String,
    },
    /// A URL without a host.
    #[error("callback URL {url:?}: has no host")]
    NoHost {
        /// The URL as given.
        url: String,
    },
    /// The shared secret is too short to sign with.
    #[error(
        "the callback secret must be at least {MIN_SECRET_LEN} bytes (for example the output of `openssl rand -hex 32`)"
    )]
    ShortSecret,
    /// A count or a duration of 0 where at least 1 is needed (the
    /// timeout, `max_in_flight`, `max_in_flight_per_client`).
    #[error("must be at least 1")]
    Zero,
    /// A cookie name that is not one.
    #[error("{0:?} is not a cookie name")]
    Cookie(String),
    /// A header that cannot be forwarded.
    #[error("header {0:?} cannot be forwarded: {1}")]
    Header(String, &'static str),
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
        let parsed: Uri = url.parse().map_err(|source| ConfigError::InvalidUrl {
            url: url.to_owned(),
            source,
        })?;
        match parsed.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(ConfigError::Https { url: url.to_owned() }),
            _ => return Err(ConfigError::NotHttp { url: url.to_owned() }),
        }
        if parsed.host().is_none_or(str::is_empty) {
            return Err(ConfigError::NoHost { url: url.to_owned() });
        }
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::ShortSecret);
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
                .map_err(|_| ConfigError::Header(name.to_owned(), "not a header name"))?;
            if parsed == header::COOKIE {
                return Err(ConfigError::Header(
                    name.to_owned(),
                    "list cookies with forward_cookies",
                ));
            }
            if NOT_FORWARDED.contains(&parsed)
                || parsed.as_str().starts_with("proxy-")
                || parsed.as_str() == "keep-alive"
            {
                return Err(ConfigError::Header(name.to_owned(), "it belongs to one HTTP hop"));
            }
            if parsed == header::FORWARDED
                || parsed.as_str().starts_with("x-forwarded-")
                || parsed.as_str() == "x-real-ip"
            {
                return Err(ConfigError::Header(
                    name.to_owned(),
                    "the application would take the visitor's word for its address (the body's client is the one Estuary saw)",
                ));
            }
            if parsed.as_str() == SIGNATURE_HEADER {
                return Err(ConfigError::Header(name.to_owned(), "the callback sets it"));
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
                return Err(ConfigError::Cookie(name));
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
