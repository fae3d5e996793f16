//! `OriginLayer`: refuse WebSocket handshakes from other sites (Channels'
//! `AllowedHostsOriginValidator`).

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{HeaderMap, Request, Response, StatusCode, header};

use crate::AllowedHosts;

/// A tower layer that answers 403 to WebSocket handshakes whose `Origin` is
/// not allowed. Other requests pass untouched.
///
/// Patterns follow Django's `ALLOWED_HOSTS`: `example.com` (that host),
/// `.example.com` (it and every subdomain), `*` (any origin, even none), and
/// optionally a port (`localhost:8000`) or scheme (`https://example.com`).
/// [`OriginLayer::or_allowed_hosts`] also allows origins on the server's
/// [`AllowedHosts`] (Channels' `AllowedHostsOriginValidator`), the usual
/// choice. [`OriginLayer::same_host`] allows an origin whose host and port
/// equal the request's `Host` header; it trusts that header, so put an
/// [`AllowedHosts`] layer in front of it (else a DNS-rebinding page passes).
/// A handshake without `Origin` is refused unless `*` is allowed or
/// [`OriginLayer::allow_missing_origin`] says otherwise.
///
/// ```
/// use estuary_server::OriginLayer;
///
/// let layer = OriginLayer::new([".example.com", "localhost:8000"]);
/// assert!(layer.allows(Some("https://chat.example.com"), None));
/// assert!(layer.allows(Some("http://localhost:8000"), None));
/// assert!(!layer.allows(Some("http://localhost:9000"), None));
/// assert!(!layer.allows(Some("https://evil.com"), None));
/// assert!(!layer.allows(None, None));
/// ```
#[derive(Debug, Clone)]
pub struct OriginLayer {
    rules: Arc<Rules>,
}

#[derive(Debug, Clone)]
struct Rules {
    patterns: Vec<Pattern>,
    same_host: bool,
    allowed_hosts: Option<AllowedHosts>,
    allow_missing: bool,
}

#[derive(Debug, Clone)]
struct Pattern {
    scheme: Option<String>,
    host: String,
    port: Option<String>,
    any: bool,
}

struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<&'a str>,
}

fn parse_origin(origin: &str) -> Option<Origin<'_>> {
    let (scheme, rest) = origin.split_once("://")?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = split_host_port(rest);
    (!host.is_empty()).then_some(Origin { scheme, host, port })
}

fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(stripped) = s.strip_prefix('[') {
        // [v6]:port
        if let Some((h, rest)) = stripped.split_once(']') {
            return (h, rest.strip_prefix(':'));
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
        _ => (s, None),
    }
}

impl Pattern {
    fn parse(raw: &str) -> Self {
        let raw = raw.trim().to_ascii_lowercase();
        if raw == "*" {
            return Self {
                scheme: None,
                host: String::new(),
                port: None,
                any: true,
            };
        }
        let (scheme, rest) = match raw.split_once("://") {
            Some((s, r)) => (Some(s.to_owned()), r.to_owned()),
            None => (None, raw),
        };
        let (host, port) = split_host_port(&rest);
        Self {
            scheme,
            host: host.to_owned(),
            port: port.map(str::to_owned),
            any: false,
        }
    }

    fn matches(&self, origin: &Origin<'_>) -> bool {
        if self.any {
            return true;
        }
        let host = origin.host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix('.') {
            Some(domain) => host == domain || host.ends_with(&self.host),
            None => host == self.host,
        };
        host_ok
            && self
                .scheme
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case(origin.scheme))
            && self.port.as_deref().is_none_or(|p| Some(p) == origin.port)
    }
}

impl OriginLayer {
    /// Allows origins matching any of `patterns`.
    pub fn new<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns = patterns.into_iter().map(|p| Pattern::parse(p.as_ref())).collect();
        Self {
            rules: Arc::new(Rules {
                patterns,
                same_host: false,
                allowed_hosts: None,
                allow_missing: false,
            }),
        }
    }

    /// Allows only origins on the host (and port) the request was sent to.
    pub fn same_host() -> Self {
        Self {
            rules: Arc::new(Rules {
                patterns: Vec::new(),
                same_host: true,
                allowed_hosts: None,
                allow_missing: false,
            }),
        }
    }

    /// Also allows origins on the request's own host (and port).
    pub fn or_same_host(self) -> Self {
        self.modify(|r| r.same_host = true)
    }

    /// Also allows origins whose host is one of `hosts`, on any port and
    /// scheme, as Channels' `AllowedHostsOriginValidator` does with
    /// `ALLOWED_HOSTS`. With `*` among them, any origin is allowed.
    ///
    /// ```
    /// use estuary_server::{AllowedHosts, OriginLayer};
    ///
    /// let layer = OriginLayer::new(["https://app.example.com"])
    ///     .or_allowed_hosts(&AllowedHosts::loopback());
    /// assert!(layer.allows(Some("http://localhost:8000"), None));
    /// assert!(layer.allows(Some("https://app.example.com"), None));
    /// // The request's Host is not trusted: a rebinding page's origin is refused.
    /// assert!(!layer.allows(Some("http://rebind.test:8000"), Some("rebind.test:8000")));
    /// ```
    pub fn or_allowed_hosts(self, hosts: &AllowedHosts) -> Self {
        let hosts = hosts.clone();
        self.modify(|r| r.allowed_hosts = Some(hosts))
    }

    /// Lets handshakes without an `Origin` header through. Browsers always
    /// send one, so this admits only non-browser clients (CLIs, backends),
    /// which cross-site WebSocket hijacking cannot use anyway.
    pub fn allow_missing_origin(self) -> Self {
        self.modify(|r| r.allow_missing = true)
    }

    fn modify(self, f: impl FnOnce(&mut Rules)) -> Self {
        let mut rules = Arc::try_unwrap(self.rules).unwrap_or_else(|shared| (*shared).clone());
        f(&mut rules);
        Self {
            rules: Arc::new(rules),
        }
    }

    /// True when a handshake with this `Origin` (and `Host`) header is allowed.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        if self.rules.patterns.iter().any(|p| p.any)
            || self
                .rules
                .allowed_hosts
                .as_ref()
                .is_some_and(AllowedHosts::allows_any)
        {
            return true;
        }
        let Some(origin) = origin else {
            return self.rules.allow_missing;
        };
        let Some(origin) = parse_origin(origin) else {
            return false;
        };
        if let Some(hosts) = &self.rules.allowed_hosts {
            let allowed = if origin.host.contains(':') {
                hosts.allows_name(&format!("[{}]", origin.host))
            } else {
                hosts.allows_name(origin.host)
            };
            if allowed {
                return true;
            }
        }
        if self.rules.same_host {
            if let Some(host) = host {
                let (h, p) = split_host_port(host);
                if h.eq_ignore_ascii_case(origin.host) && p == origin.port {
                    return true;
                }
            }
        }
        self.rules.patterns.iter().any(|p| p.matches(&origin))
    }

    fn check(&self, headers: &HeaderMap) -> bool {
        let get = |name| {
            headers
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
        };
        self.allows(get(header::ORIGIN), get(header::HOST))
    }
}

impl<S> tower::Layer<S> for OriginLayer {
    type Service = OriginService<S>;

    fn layer(&self, inner: S) -> OriginService<S> {
        OriginService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`OriginLayer`].
#[derive(Debug, Clone)]
pub struct OriginService<S> {
    inner: S,
    layer: OriginLayer,
}

impl<S, B> tower::Service<Request<B>> for OriginService<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let upgrade = req.headers().contains_key(header::SEC_WEBSOCKET_KEY);
        if upgrade && !self.layer.check(req.headers()) {
            tracing::info!(origin = ?req.headers().get(header::ORIGIN), "WebSocket handshake refused: origin not allowed");
            let mut response = Response::new(Body::from("origin not allowed\n"));
            *response.status_mut() = StatusCode::FORBIDDEN;
            let response = crate::report::refused(response, crate::HandshakeRefusal::Origin);
            return Box::pin(async move { Ok(response) });
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let l = OriginLayer::new(["https://secure.example.org", "*.nope", "[::1]:8000"]);
        assert!(l.allows(Some("https://secure.example.org"), None));
        assert!(!l.allows(Some("http://secure.example.org"), None));
        assert!(l.allows(Some("http://[::1]:8000"), None));
        assert!(!l.allows(Some("null"), None));
        assert!(OriginLayer::new(["*"]).allows(None, None));
    }

    #[test]
    fn same_host() {
        let l = OriginLayer::same_host();
        assert!(l.allows(Some("http://127.0.0.1:8000"), Some("127.0.0.1:8000")));
        assert!(!l.allows(Some("http://127.0.0.1:8001"), Some("127.0.0.1:8000")));
        assert!(!l.allows(Some("http://evil.com"), Some("127.0.0.1:8000")));
        assert!(!l.allows(None, Some("127.0.0.1:8000")));
        let l = OriginLayer::new(["example.com"])
            .or_same_host()
            .allow_missing_origin();
        assert!(l.allows(None, Some("127.0.0.1:8000")));
        assert!(l.allows(Some("http://example.com"), Some("127.0.0.1:8000")));
        assert!(l.allows(Some("http://127.0.0.1:8000"), Some("127.0.0.1:8000")));
        assert!(!l.allows(Some("http://evil.com"), Some("127.0.0.1:8000")));
    }

    #[test]
    fn allowed_hosts() {
        let l = OriginLayer::new(Vec::<String>::new()).or_allowed_hosts(&AllowedHosts::loopback());
        assert!(l.allows(Some("http://127.0.0.1:8000"), None));
        assert!(l.allows(Some("http://[::1]:8000"), None));
        assert!(l.allows(Some("https://app.localhost"), None));
        assert!(!l.allows(Some("http://127.0.0.1.evil.test"), Some("127.0.0.1.evil.test")));
        assert!(!l.allows(None, None));
        let any = OriginLayer::new(Vec::<String>::new()).or_allowed_hosts(&AllowedHosts::any());
        assert!(any.allows(Some("http://wherever.test"), None));
    }
}
