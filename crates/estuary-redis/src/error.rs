//! What can go wrong setting a Redis layer up.

use std::fmt;

use estuary_core::BoxError;

/// The Redis layer could not be set up.
///
/// Opaque, like [`std::io::Error`]: [`kind`](Self::kind) says what is
/// wrong, [`url`](Self::url) and [`prefix`](Self::prefix) name the value at
/// fault, and the client's or the name check's error is the
/// [`source`](std::error::Error::source). A URL is kept with its password
/// replaced by `***` (in its user part and in a `pass` or `password` query
/// parameter): neither the text nor the accessor can leak it into a log.
///
/// ```
/// use estuary_redis::{RedisChannelLayer, RedisConfig, RedisLayerErrorKind};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let error = RedisChannelLayer::new(RedisConfig::new(["redis://:hunter2@127.0.0.1:x/0"])).unwrap_err();
/// assert_eq!(error.kind(), RedisLayerErrorKind::InvalidUrl);
/// assert_eq!(error.url(), Some("redis://:***@127.0.0.1:x/0"));
/// assert!(!error.to_string().contains("hunter2"));
/// assert!(!format!("{error:?}").contains("hunter2"));
/// # });
/// ```
#[derive(Debug)]
pub struct RedisLayerError {
    kind: RedisLayerErrorKind,
    /// The URL (its password masked) or the prefix at fault.
    input: Option<Box<str>>,
    source: Option<BoxError>,
}

/// What is wrong with a Redis layer's settings ([`RedisLayerError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisLayerErrorKind {
    /// No hosts were given.
    NoHosts,
    /// A host URL is invalid ([`RedisLayerError::url`]; the client's
    /// error is the source).
    InvalidUrl,
    /// The prefix cannot start a channel name (the pub/sub layer names
    /// channels `{prefix}specific.<id>`): [`RedisLayerError::prefix`]; the
    /// name check's error is the source.
    InvalidPrefix,
    /// The layer must be made inside a tokio runtime (it starts its receive
    /// task).
    NoRuntime,
}

impl RedisLayerError {
    pub(crate) fn no_hosts() -> Self {
        Self::new(RedisLayerErrorKind::NoHosts, None, None)
    }

    pub(crate) fn no_runtime() -> Self {
        Self::new(RedisLayerErrorKind::NoRuntime, None, None)
    }

    pub(crate) fn invalid_url(url: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(
            RedisLayerErrorKind::InvalidUrl,
            Some(redacted(url).into()),
            Some(Box::new(source)),
        )
    }

    pub(crate) fn invalid_prefix(prefix: &str, source: estuary_core::NameError) -> Self {
        Self::new(
            RedisLayerErrorKind::InvalidPrefix,
            Some(prefix.into()),
            Some(Box::new(source)),
        )
    }

    fn new(kind: RedisLayerErrorKind, input: Option<Box<str>>, source: Option<BoxError>) -> Self {
        Self { kind, input, source }
    }

    /// What is wrong.
    pub fn kind(&self) -> RedisLayerErrorKind {
        self.kind
    }

    /// The invalid host URL, its password replaced by `***`
    /// ([`InvalidUrl`](RedisLayerErrorKind::InvalidUrl) only).
    pub fn url(&self) -> Option<&str> {
        match self.kind {
            RedisLayerErrorKind::InvalidUrl => self.input.as_deref(),
            _ => None,
        }
    }

    /// The prefix that cannot start a channel name
    /// ([`InvalidPrefix`](RedisLayerErrorKind::InvalidPrefix) only).
    pub fn prefix(&self) -> Option<&str> {
        match self.kind {
            RedisLayerErrorKind::InvalidPrefix => self.input.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for RedisLayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input = self.input.as_deref().unwrap_or_default();
        match self.kind {
            RedisLayerErrorKind::NoHosts => f.write_str("no Redis hosts configured"),
            RedisLayerErrorKind::InvalidUrl => write!(f, "invalid Redis URL {input:?}"),
            RedisLayerErrorKind::InvalidPrefix => write!(f, "invalid prefix {input:?} for the pub/sub layer"),
            RedisLayerErrorKind::NoRuntime => {
                f.write_str("RedisChannelLayer::new must be called inside a tokio runtime")
            }
        }?;
        match &self.source {
            Some(source) => write!(f, ": {source}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for RedisLayerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `url` with its password replaced by `***`: the user info after its
/// first `:` (`redis://user:***@host`), and the value of a `pass` or
/// `password` query parameter (`unix:///run/redis.sock?pass=***`). Works on
/// text that is no valid URL too (that is when it is shown), erring on the
/// side of masking: the user info ends at the last `@`, wherever it is, and
/// every `?` or `&` may start a parameter.
pub(crate) fn redacted(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let (head, rest) = url.split_at(start);
    let masked;
    let rest = match rest.rfind('@').and_then(|at| Some((rest[..at].find(':')?, at))) {
        Some((colon, at)) => {
            masked = format!("{}:***{}", &rest[..colon], &rest[at..]);
            masked.as_str()
        }
        None => rest,
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    for (i, segment) in rest.split_inclusive(['?', '&']).enumerate() {
        let (pair, delimiter) = match segment.char_indices().last() {
            Some((end, c @ ('?' | '&'))) => (&segment[..end], Some(c)),
            _ => (segment, None),
        };
        match pair.split_once('=') {
            Some((key, _))
                if i > 0
                    && (key.eq_ignore_ascii_case("pass")
                        || key.to_ascii_lowercase().ends_with("password")) =>
            {
                out.push_str(key);
                out.push_str("=***");
            }
            _ => out.push_str(pair),
        }
        out.extend(delimiter);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_in_urls() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
            ("rediss://user:secret@host/1", "rediss://user:***@host/1"),
            ("redis://user@host", "redis://user@host"),
            // Not valid URLs, and still masked: a password with `@` or `/`.
            ("redis://:se@cr/et@host", "redis://:***@host"),
            ("redis://:pass/word@host:x", "redis://:***@host:x"),
            ("://:secret@", "://:***@"),
            (":secret@host", ":***@host"),
            (
                "unix:///run/redis.sock?db=2&pass=secret",
                "unix:///run/redis.sock?db=2&pass=***",
            ),
            (
                "redis+unix:///s?PASSWORD=x&user=u",
                "redis+unix:///s?PASSWORD=***&user=u",
            ),
            ("unix:///s?user=a@b&pass=secret", "unix:///s?user=a@b&pass=***"),
            (
                "redis://u:secret@h/0?x=1&pass=secret&",
                "redis://u:***@h/0?x=1&pass=***&",
            ),
            ("redis://h/?pass=", "redis://h/?pass=***"),
            ("", ""),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }

    #[test]
    fn every_kind_is_named_and_keeps_its_source() {
        let source = redis::Client::open("redis://:secret@host:x/0").unwrap_err();
        let url = RedisLayerError::invalid_url("redis://:secret@host:x/0", source);
        assert_eq!(url.kind(), RedisLayerErrorKind::InvalidUrl);
        assert_eq!((url.url(), url.prefix()), (Some("redis://:***@host:x/0"), None));
        assert!(
            url.to_string()
                .starts_with("invalid Redis URL \"redis://:***@host:x/0\": "),
            "{url}"
        );
        assert!(!format!("{url:?}").contains("secret"));
        let source = std::error::Error::source(&url).expect("the client's error");
        assert!(source.downcast_ref::<redis::RedisError>().is_some());

        let name = estuary_core::ChannelName::new("bad prefix").unwrap_err();
        let prefix = RedisLayerError::invalid_prefix("bad prefix", name.clone());
        assert_eq!(prefix.kind(), RedisLayerErrorKind::InvalidPrefix);
        assert_eq!((prefix.prefix(), prefix.url()), (Some("bad prefix"), None));
        assert_eq!(
            prefix.to_string(),
            format!("invalid prefix \"bad prefix\" for the pub/sub layer: {name}")
        );
        let source = std::error::Error::source(&prefix).expect("the name's error");
        assert_eq!(source.downcast_ref::<estuary_core::NameError>(), Some(&name));

        let none = RedisLayerError::no_hosts();
        assert_eq!(
            (none.kind(), none.url(), none.prefix()),
            (RedisLayerErrorKind::NoHosts, None, None)
        );
        assert_eq!(none.to_string(), "no Redis hosts configured");
        assert!(std::error::Error::source(&none).is_none());
        let runtime = RedisLayerError::no_runtime();
        assert_eq!(runtime.kind(), RedisLayerErrorKind::NoRuntime);
        assert_eq!(
            runtime.to_string(),
            "RedisChannelLayer::new must be called inside a tokio runtime"
        );
    }
}
