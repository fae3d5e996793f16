//! `AllowedHosts`: refuse requests whose `Host` the server does not answer
//! to (Django's `ALLOWED_HOSTS`), the defence against DNS rebinding.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{Request, Response, StatusCode, header};

/// The host names this server answers to, as Django's `ALLOWED_HOSTS`.
///
/// A page on an attacker's domain that re-points its DNS to your server's
/// address (DNS rebinding) sends requests whose `Host` is the attacker's
/// name: refusing unknown hosts stops it, and lets the origin check trust the
/// list instead of the request. Patterns:
///
/// * `example.com`: that host, on any port;
/// * `.example.com`: it and every subdomain;
/// * `*`: any host (no protection: for servers that only a proxy reaches,
///   and that proxy checks `Host`);
/// * IP addresses as written in a URL: `127.0.0.1`, `[::1]`.
///
/// Matching ignores the port and case, and a trailing dot (`example.com.`).
/// A `Host` that is not a syntactically valid host never matches, nor does a
/// missing one (HTTP/1.1 requires it).
///
/// ```
/// use estuary_server::AllowedHosts;
///
/// let hosts = AllowedHosts::new([".example.com", "203.0.113.7"]);
/// assert!(hosts.allows("chat.example.com"));
/// assert!(hosts.allows("example.com:8443"));
/// assert!(hosts.allows("203.0.113.7:8000"));
/// assert!(!hosts.allows("attacker.test"));
/// assert!(!hosts.allows("example.com.attacker.test"));
///
/// let local = AllowedHosts::loopback();
/// assert!(local.allows("localhost:8000") && local.allows("[::1]:8000"));
/// assert!(!local.allows("rebind.attacker.test:8000"));
/// ```
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    patterns: Arc<[String]>,
    any: bool,
}

/// The names of the loopback interface: what [`AllowedHosts::loopback`]
/// allows.
pub const LOOPBACK_HOSTS: [&str; 4] = ["localhost", ".localhost", "127.0.0.1", "[::1]"];

impl AllowedHosts {
    /// Allows hosts matching any of `patterns` (see the type's docs).
    pub fn new<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns: Vec<String> = patterns
            .into_iter()
            .map(|p| p.as_ref().trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        let any = patterns.iter().any(|p| p == "*");
        Self {
            patterns: patterns.into(),
            any,
        }
    }

    /// Any host: no check.
    pub fn any() -> Self {
        Self::new(["*"])
    }

    /// The loopback names ([`LOOPBACK_HOSTS`]): the default of a server bound
    /// to a loopback address.
    pub fn loopback() -> Self {
        Self::new(LOOPBACK_HOSTS)
    }

    /// True when every host is allowed (`*`).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// The patterns, normalised (lower case, no trailing dot).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// True when a request with this `Host` header (port optional) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        match split_host(host) {
            Some(name) => self.allows_name(&name),
            None => false,
        }
    }

    /// True when the bare host name `name` (no port; IPv6 in brackets) matches.
    pub(crate) fn allows_name(&self, name: &str) -> bool {
        if self.any {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.patterns.iter().any(|p| match p.strip_prefix('.') {
            Some(domain) => name == domain || name.ends_with(p.as_str()),
            None => name == *p,
        })
    }

    /// The tower layer that answers 400 to requests with a `Host` not in
    /// this list.
    pub fn layer(&self) -> AllowedHostsLayer {
        AllowedHostsLayer { hosts: self.clone() }
    }
}

/// Splits `host[:port]` and checks its syntax (RFC 3986's reg-name, an IPv4
/// address or a bracketed IPv6 address, then an optional numeric port).
/// Returns the name, lower case, with IPv6 in brackets.
fn split_host(raw: &str) -> Option<String> {
    let (name, port) = if raw.starts_with('[') {
        let end = raw.find(']')?;
        let name = &raw[..=end];
        name[1..end].parse::<std::net::Ipv6Addr>().ok()?;
        (name, raw[end + 1..].strip_prefix(':'))
    } else {
        match raw.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    if !name.starts_with('[') {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return None;
        }
    }
    Some(name.to_ascii_lowercase())
}

/// The [`tower::Layer`] of [`AllowedHosts`]: requests (plain HTTP and
/// WebSocket handshakes alike) whose `Host` is missing or not allowed get
/// `400 Bad Request` and never reach the inner service.
///
/// ```
/// use axum::body::Body;
/// use estuary_server::{AllowedHosts, Router};
/// use http::{Request, StatusCode};
/// use tower::{Layer, ServiceExt};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
/// let service = AllowedHosts::new(["example.com"]).layer().layer(router.into_service());
///
/// let request = Request::get("/").header("host", "example.com").body(Body::empty()).unwrap();
/// assert_eq!(service.clone().oneshot(request).await.unwrap().status(), StatusCode::OK);
/// let request = Request::get("/").header("host", "evil.test").body(Body::empty()).unwrap();
/// assert_eq!(service.oneshot(request).await.unwrap().status(), StatusCode::BAD_REQUEST);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct AllowedHostsLayer {
    hosts: AllowedHosts,
}

impl<S> tower::Layer<S> for AllowedHostsLayer {
    type Service = AllowedHostsService<S>;

    fn layer(&self, inner: S) -> AllowedHostsService<S> {
        AllowedHostsService {
            inner,
            hosts: self.hosts.clone(),
        }
    }
}

/// The service made by [`AllowedHostsLayer`].
#[derive(Debug, Clone)]
pub struct AllowedHostsService<S> {
    inner: S,
    hosts: AllowedHosts,
}

impl<S, B> tower::Service<Request<B>> for AllowedHostsService<S>
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
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
        if !self.hosts.allows_any() && !host.is_some_and(|h| self.hosts.allows(h)) {
            crate::throttle::refused_host(host);
            let response = crate::report::refused(
                crate::service::plain(
                    StatusCode::BAD_REQUEST,
                    "Invalid Host header: add it to allowed_hosts if this server should answer to it",
                ),
                crate::HandshakeRefusal::Host,
            );
            return Box::pin(async move { Ok(response) });
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_syntax() {
        let hosts = AllowedHosts::new(["example.com", "[::1]", "127.0.0.1"]);
        for ok in [
            "example.com",
            "EXAMPLE.com",
            "example.com.",
            "example.com:80",
            "[::1]",
            "[::1]:8000",
            "127.0.0.1:1",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "",
            "example.com:",
            "example.com:80:80",
            "example.com:http",
            "example.com:123456",
            "exa mple.com",
            "example.com/x",
            "example.com@evil",
            "[::1",
            "[zz]:80",
            "::1",
            "sub.example.com",
            "127.0.0.2",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        assert!(AllowedHosts::any().allows("whatever, really"));
        assert!(!AllowedHosts::new(Vec::<String>::new()).allows("localhost"));
    }

    #[test]
    fn subdomain_patterns() {
        let hosts = AllowedHosts::new([".Example.COM."]);
        assert!(hosts.allows("example.com"));
        assert!(hosts.allows("a.b.example.com:1"));
        assert!(!hosts.allows("badexample.com"));
        assert!(AllowedHosts::loopback().allows("app.localhost"));
    }
}
