//! The connection scope: everything known about a connection when it opens.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use http::{Extensions, HeaderMap};

mod headers;
use headers::Headers;
use serde::de::DeserializeOwned;

/// Why the query string or a route parameter could not be read.
///
/// Opaque, like [`std::io::Error`]: [`kind`](Self::kind) says which check
/// failed, [`param`](Self::param) and [`value`](Self::value) give the
/// parameter and the text at fault, and [`source`](std::error::Error::source)
/// is the parser's own error. A consumer whose `connect` fails with it
/// refuses the handshake with 400 and this text.
///
/// ```
/// use estuary_core::{Scope, ScopeErrorKind};
///
/// let scope = Scope::builder("/ws/items/x/").param("id", "x").build();
/// let error = scope.param::<u32>("id").unwrap_err();
/// assert_eq!(error.kind(), ScopeErrorKind::InvalidParam);
/// assert_eq!((error.param(), error.value()), (Some("id"), Some("x")));
/// assert_eq!(error.to_string(), r#"route parameter "id" = "x" is not valid: invalid digit found in string"#);
///
/// let error = scope.param::<u32>("page").unwrap_err();
/// assert_eq!(error.kind(), ScopeErrorKind::MissingParam);
/// assert_eq!(error.to_string(), r#"no route parameter named "page""#);
/// ```
#[derive(Debug)]
pub struct ScopeError {
    kind: ScopeErrorKind,
    /// The route parameter's name (not for `Query`).
    param: Option<Box<str>>,
    /// The route parameter's raw value (`InvalidParam` only).
    value: Option<Box<str>>,
    /// The parser's error (not for `MissingParam`).
    source: Option<crate::BoxError>,
}

/// Which check a [`ScopeError`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScopeErrorKind {
    /// The query string did not deserialize into the requested type.
    Query,
    /// The route has no parameter of that name.
    MissingParam,
    /// A route parameter did not parse as the requested type.
    InvalidParam,
    /// A query-string parameter that is needed is absent.
    MissingQueryParam,
}

impl ScopeError {
    fn missing(name: &str) -> Self {
        Self {
            kind: ScopeErrorKind::MissingParam,
            param: Some(name.into()),
            value: None,
            source: None,
        }
    }

    fn invalid(name: &str, value: &str, source: crate::BoxError) -> Self {
        Self {
            kind: ScopeErrorKind::InvalidParam,
            param: Some(name.into()),
            value: Some(value.into()),
            source: Some(source),
        }
    }

    /// The query-string parameter `name` is needed and absent (for
    /// code that reads the scope for something, e.g. a group name made from
    /// it).
    ///
    /// ```
    /// use estuary_core::{ScopeError, ScopeErrorKind};
    ///
    /// let error = ScopeError::missing_query_param("order_id");
    /// assert_eq!(error.kind(), ScopeErrorKind::MissingQueryParam);
    /// assert_eq!(error.param(), Some("order_id"));
    /// assert_eq!(error.to_string(), r#"no query parameter named "order_id""#);
    /// ```
    pub fn missing_query_param(name: &str) -> Self {
        Self {
            kind: ScopeErrorKind::MissingQueryParam,
            param: Some(name.into()),
            value: None,
            source: None,
        }
    }

    /// Which check failed.
    pub fn kind(&self) -> ScopeErrorKind {
        self.kind
    }

    /// The route or query parameter asked for (`None` for a query string
    /// that did not deserialize).
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// The route parameter's raw value, for
    /// [`InvalidParam`](ScopeErrorKind::InvalidParam).
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl From<serde_urlencoded::de::Error> for ScopeError {
    fn from(error: serde_urlencoded::de::Error) -> Self {
        Self {
            kind: ScopeErrorKind::Query,
            param: None,
            value: None,
            source: Some(Box::new(error)),
        }
    }
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let param = self.param().unwrap_or_default();
        match (self.kind, &self.source) {
            (ScopeErrorKind::Query, Some(source)) => write!(f, "invalid query string: {source}"),
            (ScopeErrorKind::MissingParam, _) => write!(f, "no route parameter named {param:?}"),
            (ScopeErrorKind::MissingQueryParam, _) => write!(f, "no query parameter named {param:?}"),
            (ScopeErrorKind::InvalidParam, Some(source)) => write!(
                f,
                "route parameter {param:?} = {:?} is not valid: {source}",
                self.value().unwrap_or_default()
            ),
            (ScopeErrorKind::Query, None) => f.write_str("invalid query string"),
            (ScopeErrorKind::InvalidParam, None) => write!(f, "route parameter {param:?} is not valid"),
        }
    }
}

impl std::error::Error for ScopeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The authenticated user of a connection, as an authentication middleware
/// puts it in the scope (Channels' `scope["user"]`): an identifier, a
/// display name, attributes or claims a consumer can read (a JWT's claims,
/// a Django user's `is_staff` and `email`), and when the credential expires.
///
/// A connection whose user's credential expires is closed by its session
/// with [`CloseCode::CREDENTIALS_EXPIRED`](crate::CloseCode::CREDENTIALS_EXPIRED)
/// (4401).
///
/// ```
/// use estuary_core::User;
///
/// let user = User::new("42", "alice").with_attribute("is_staff", true);
/// assert_eq!(user.name(), "alice");
/// assert_eq!(user.attribute("is_staff"), Some(&serde_json::json!(true)));
/// assert!(user.expires_at().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    id: String,
    name: String,
    attributes: serde_json::Map<String, serde_json::Value>,
    expires_at: Option<std::time::SystemTime>,
}

impl User {
    /// A user with a stable identifier and a display name.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            attributes: serde_json::Map::new(),
            expires_at: None,
        }
    }

    /// Adds an attribute (a claim).
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Sets every attribute at once.
    pub fn with_attributes(mut self, attributes: serde_json::Map<String, serde_json::Value>) -> Self {
        self.attributes = attributes;
        self
    }

    /// Sets when the credential expires (a JWT's `exp`).
    pub fn with_expiry(mut self, at: std::time::SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// An attribute (a claim), if present.
    pub fn attribute(&self, key: &str) -> Option<&serde_json::Value> {
        self.attributes.get(key)
    }

    /// Every attribute.
    pub fn attributes(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.attributes
    }

    /// When the credential expires, if it does.
    pub fn expires_at(&self) -> Option<std::time::SystemTime> {
        self.expires_at
    }

    /// The user's stable identifier.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The user's display name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A check, repeated while the connection is open, that its user is still
/// signed in (the session not logged out, the password not changed). An
/// authentication middleware puts it in the scope's extensions; the
/// session runs it every [`Recheck::every`] and closes the connection with
/// [`CloseCode::CREDENTIALS_EXPIRED`](crate::CloseCode::CREDENTIALS_EXPIRED)
/// (4401) when it answers `Ok(false)`. An `Err` (the check could not be
/// made) keeps the connection and tries again at the next interval.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::Recheck;
///
/// let recheck = Recheck::new(Duration::from_secs(60), || async { Ok(true) });
/// assert_eq!(recheck.every(), Duration::from_secs(60));
/// ```
#[derive(Clone)]
pub struct Recheck {
    every: std::time::Duration,
    check: Arc<dyn Fn() -> RecheckFuture + Send + Sync>,
}

/// What a [`Recheck`] returns: still signed in, or why it could not tell.
pub type RecheckFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, crate::BoxError>> + Send>>;

impl Recheck {
    /// Runs `check` every `every` (at least one second, at most a year).
    pub fn new<F, Fut>(every: std::time::Duration, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<bool, crate::BoxError>> + Send + 'static,
    {
        Self {
            // A year at most: a deadline must stay representable.
            every: every.clamp(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(365 * 24 * 3600),
            ),
            check: Arc::new(move || Box::pin(check())),
        }
    }

    /// How often the check runs.
    pub fn every(&self) -> std::time::Duration {
        self.every
    }

    /// Runs the check once.
    pub fn check(&self) -> RecheckFuture {
        (self.check)()
    }
}

/// Two rechecks are equal when they run the same check (one made by
/// [`Recheck::new`], and its clones) at the same interval.
impl PartialEq for Recheck {
    fn eq(&self, other: &Self) -> bool {
        self.every == other.every && Arc::ptr_eq(&self.check, &other.check)
    }
}

impl fmt::Debug for Recheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recheck")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// Everything known about a WebSocket connection when it opens: Channels'
/// `scope` dict as a struct.
///
/// The server builds it from the handshake request; handshake middleware
/// (origin checks, authentication) writes into it through the request's
/// extensions; consumers read it through [`Context::scope`](crate::Context::scope).
///
/// ```
/// use estuary_core::Scope;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Params { #[serde(default = "default_llm")] llm: String, #[serde(default)] page: u32 }
/// fn default_llm() -> String { "ernie".into() }
///
/// let scope = Scope::builder("/ws/abc")
///     .query_string("page=3")
///     .param("session", "abc")
///     .build();
/// assert_eq!(scope.param::<String>("session").unwrap(), "abc");
/// let p: Params = scope.query().unwrap();
/// assert_eq!((p.llm.as_str(), p.page), ("ernie", 3));
/// ```
#[derive(Clone)]
pub struct Scope {
    // Boxed strings, not `String`s: every open connection keeps its scope,
    // and the capacities would take 16 bytes of it for nothing.
    path: Box<str>,
    query_string: Box<str>,
    /// Boxed: parsed only for a consumer that asks.
    #[allow(clippy::box_collection)]
    query_pairs: OnceLock<Box<Vec<(String, String)>>>,
    headers: Headers,
    /// Boxed, as `user`: every open connection keeps its scope, and most
    /// never parse cookies.
    #[allow(clippy::box_collection)]
    cookies: OnceLock<Box<HashMap<String, String>>>,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    secure: bool,
    params: Vec<(Arc<str>, String)>,
    user: Option<Box<User>>,
    /// `None` while every field of it is empty.
    rare: Option<Box<Rare>>,
    extensions: Extensions,
}

/// What few connections' scopes hold, behind one box: every open
/// connection keeps its scope, and the usual one is smaller without them.
#[derive(Clone, Default)]
struct Rare {
    raw_path: Option<String>,
    root_path: String,
    subprotocols: Vec<String>,
    data: serde_json::Map<String, serde_json::Value>,
    initial_groups: Vec<crate::GroupName>,
}

impl Scope {
    /// Starts a scope for `path`; servers and the test communicator use this.
    pub fn builder(path: impl Into<String>) -> ScopeBuilder {
        ScopeBuilder {
            scope: Scope {
                path: path.into().into_boxed_str(),
                query_string: Box::default(),
                query_pairs: OnceLock::new(),
                headers: Headers::default(),
                cookies: OnceLock::new(),
                client: None,
                server: None,
                secure: false,
                params: Vec::new(),
                user: None,
                rare: None,
                extensions: Extensions::new(),
            },
        }
    }

    /// The request path, percent-decoded (ASGI's `path`): `/ws/a b/` for `/ws/a%20b/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path as received, still percent-encoded (ASGI's `raw_path`).
    pub fn raw_path(&self) -> &str {
        self.rare
            .as_ref()
            .and_then(|rare| rare.raw_path.as_deref())
            .unwrap_or(&self.path)
    }

    /// The raw query string, without the `?`.
    pub fn query_string(&self) -> &str {
        &self.query_string
    }

    /// The query string as decoded `(name, value)` pairs, in order.
    pub fn query_pairs(&self) -> &[(String, String)] {
        self.query_pairs
            .get_or_init(|| Box::new(serde_urlencoded::from_str(&self.query_string).unwrap_or_default()))
    }

    /// The first value of query parameter `name`, if any.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query_pairs()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Deserializes the query string into `T`; use `#[serde(default)]` for
    /// defaults and [`empty_as_none`] to treat `token=` as absent.
    pub fn query<T: DeserializeOwned>(&self) -> Result<T, ScopeError> {
        Ok(serde_urlencoded::from_str(&self.query_string)?)
    }

    /// The handshake request's headers, as a `HeaderMap` (built on the
    /// first call: the scope keeps them compactly; [`header`](Self::header)
    /// and [`header_pairs`](Self::header_pairs) read them without one).
    pub fn headers(&self) -> &HeaderMap {
        self.headers.map()
    }

    /// The value of header `name` (any case) as text, if present and visible
    /// ASCII; the first, when there are several.
    ///
    /// ```
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("origin", "https://example.com".parse().unwrap());
    /// let scope = estuary_core::Scope::builder("/ws/").headers(headers).build();
    /// assert_eq!(scope.header("Origin"), Some("https://example.com"));
    /// assert_eq!(scope.header("host"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(headers::visible_ascii)
    }

    /// Every header, in order, as its lowercase name and its value's bytes.
    ///
    /// ```
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("host", "example.com".parse().unwrap());
    /// headers.append("cookie", "a=1".parse().unwrap());
    /// let scope = estuary_core::Scope::builder("/ws/").headers(headers).build();
    /// let pairs: Vec<_> = scope.header_pairs().collect();
    /// assert_eq!(pairs, [("host", &b"example.com"[..]), ("cookie", b"a=1")]);
    /// ```
    pub fn header_pairs(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers.iter()
    }

    /// The request's cookies, parsed from every `Cookie` header.
    pub fn cookies(&self) -> &HashMap<String, String> {
        self.cookies.get_or_init(|| {
            let mut jar = HashMap::new();
            let values = self.headers.iter().filter(|(name, _)| *name == "cookie");
            for value in values.filter_map(|(_, value)| headers::visible_ascii(value)) {
                for pair in value.split(';') {
                    if let Some((k, v)) = pair.split_once('=') {
                        let v = v.trim().trim_matches('"');
                        jar.entry(k.trim().to_owned()).or_insert_with(|| v.to_owned());
                    }
                }
            }
            Box::new(jar)
        })
    }

    /// The value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies().get(name).map(String::as_str)
    }

    /// The client's address: the peer, or the address a trusted proxy reported.
    pub fn client(&self) -> Option<SocketAddr> {
        self.client
    }

    /// The server's address the client connected to (none over a Unix socket).
    pub fn server(&self) -> Option<SocketAddr> {
        self.server
    }

    /// ASGI's `scheme`: `"wss"` when the client's connection is encrypted
    /// (TLS to this server, or `X-Forwarded-Proto: https` from a trusted
    /// proxy), else `"ws"`.
    ///
    /// ```
    /// use estuary_core::Scope;
    ///
    /// assert_eq!(Scope::builder("/ws/").build().scheme(), "ws");
    /// assert_eq!(Scope::builder("/ws/").secure(true).build().scheme(), "wss");
    /// ```
    pub fn scheme(&self) -> &'static str {
        if self.secure { "wss" } else { "ws" }
    }

    /// ASGI's `root_path`: the prefix the application is mounted under
    /// (`--root-path`; empty when none). [`path`](Self::path) is the path
    /// below it, the one routes match.
    ///
    /// ```
    /// use estuary_core::Scope;
    ///
    /// let scope = Scope::builder("/ws/chat/lobby/").root_path("/realtime").build();
    /// assert_eq!(scope.root_path(), "/realtime");
    /// assert_eq!(scope.path(), "/ws/chat/lobby/");
    /// ```
    pub fn root_path(&self) -> &str {
        self.rare.as_ref().map_or("", |rare| &rare.root_path)
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn subprotocols(&self) -> &[String] {
        self.rare.as_ref().map_or(&[], |rare| &rare.subprotocols)
    }

    /// All route parameters, in the order the route names them.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (&**k, v.as_str()))
    }

    /// Route parameter `name`, parsed as `T` (`String`, `i64`, `uuid::Uuid`, ...).
    pub fn param<T>(&self, name: &str) -> Result<T, ScopeError>
    where
        T: FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let raw = self
            .params
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| ScopeError::missing(name))?;
        raw.parse()
            .map_err(|e: T::Err| ScopeError::invalid(name, raw, Box::new(e)))
    }

    /// The authenticated user, when an authentication middleware set one.
    pub fn user(&self) -> Option<&User> {
        self.user.as_deref()
    }

    /// Data the handshake middleware attached to the connection (a connect
    /// callback's `data`: a tenant, permissions), as Channels middleware
    /// adds keys to `scope`. Empty unless set.
    ///
    /// ```
    /// use estuary_core::Scope;
    ///
    /// let mut data = serde_json::Map::new();
    /// data.insert("tenant".into(), "acme".into());
    /// let scope = Scope::builder("/ws/").data(data).build();
    /// assert_eq!(scope.data()["tenant"], "acme");
    /// ```
    pub fn data(&self) -> &serde_json::Map<String, serde_json::Value> {
        static EMPTY: std::sync::LazyLock<serde_json::Map<String, serde_json::Value>> =
            std::sync::LazyLock::new(serde_json::Map::new);
        self.rare.as_ref().map_or(&EMPTY, |rare| &rare.data)
    }

    /// The groups the handshake middleware put this connection in (a
    /// connect callback's `groups`). The session joins them before the
    /// consumer's `connect` runs (then the consumer's own
    /// [`Consumer::groups`](crate::Consumer::groups), Channels' `groups`
    /// attribute), and leaves them when the connection ends; they count
    /// against [`SessionConfig::max_groups`](crate::SessionConfig::max_groups).
    pub fn initial_groups(&self) -> &[crate::GroupName] {
        self.rare.as_ref().map_or(&[], |rare| &rare.initial_groups)
    }

    /// Typed values that middleware attached to the handshake request.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Mutable access to the typed extensions.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("path", &self.path)
            .field("query_string", &self.query_string)
            .field("client", &self.client)
            .field("scheme", &self.scheme())
            .field("root_path", &self.root_path())
            .field("params", &self.params)
            .field("user", &self.user)
            .field("data", self.data())
            .field("initial_groups", &self.initial_groups())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Scope`]; see [`Scope::builder`].
#[derive(Debug)]
pub struct ScopeBuilder {
    scope: Scope,
}

impl ScopeBuilder {
    /// Sets the path as received, when it differs from the decoded path.
    pub fn raw_path(mut self, raw: impl Into<String>) -> Self {
        let raw = raw.into();
        // Most paths need no decoding: one copy is kept, not two.
        let raw = (*raw != *self.scope.path).then_some(raw);
        if let Some(rare) = self.rare(raw.is_none()) {
            rare.raw_path = raw;
        }
        self
    }

    /// The scope's rare fields, to set one: `None` when the value is empty
    /// and none is set yet (nothing to box).
    fn rare(&mut self, empty: bool) -> Option<&mut Rare> {
        if empty && self.scope.rare.is_none() {
            return None;
        }
        Some(self.scope.rare.get_or_insert_with(Box::default))
    }

    /// Sets the raw query string (without `?`).
    pub fn query_string(mut self, query: impl Into<String>) -> Self {
        self.scope.query_string = query.into().into_boxed_str();
        self
    }

    /// Sets the request headers.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.scope.headers = Headers::from_pairs(&headers);
        self
    }

    /// Sets the request headers from name and value pairs, in order (a
    /// server keeps some of a request's headers without copying them into
    /// a map first).
    ///
    /// ```
    /// let mut request = http::HeaderMap::new();
    /// request.insert("host", "example.com".parse().unwrap());
    /// request.insert("upgrade", "websocket".parse().unwrap());
    /// let kept = request.iter().filter(|(name, _)| *name != http::header::UPGRADE);
    /// let scope = estuary_core::Scope::builder("/ws/").headers_from(kept).build();
    /// assert_eq!(scope.headers().len(), 1);
    /// ```
    pub fn headers_from<'a>(
        mut self,
        headers: impl IntoIterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>,
    ) -> Self {
        self.scope.headers = Headers::from_pairs(headers);
        self
    }

    /// Sets the client's address.
    pub fn client(mut self, addr: SocketAddr) -> Self {
        self.scope.client = Some(addr);
        self
    }

    /// Sets the server's address.
    pub fn server(mut self, addr: SocketAddr) -> Self {
        self.scope.server = Some(addr);
        self
    }

    /// Marks the client's connection as encrypted ([`Scope::scheme`] `"wss"`).
    pub fn secure(mut self, secure: bool) -> Self {
        self.scope.secure = secure;
        self
    }

    /// Sets the prefix the application is mounted under ([`Scope::root_path`]).
    pub fn root_path(mut self, root_path: impl Into<String>) -> Self {
        let root_path = root_path.into();
        if let Some(rare) = self.rare(root_path.is_empty()) {
            rare.root_path = root_path;
        }
        self
    }

    /// Sets the offered subprotocols.
    pub fn subprotocols(mut self, protocols: Vec<String>) -> Self {
        if let Some(rare) = self.rare(protocols.is_empty()) {
            rare.subprotocols = protocols;
        }
        self
    }

    /// Adds a route parameter.
    pub fn param(mut self, name: impl Into<Arc<str>>, value: impl Into<String>) -> Self {
        // Exactly: a route has a parameter or two, and every open
        // connection keeps its scope (a growing vector would hold four).
        self.scope.params.reserve_exact(1);
        self.scope.params.push((name.into(), value.into()));
        self
    }

    /// Sets the authenticated user.
    pub fn user(mut self, user: Option<User>) -> Self {
        self.scope.user = user.map(Box::new);
        self
    }

    /// Sets the data middleware attached (see [`Scope::data`]).
    pub fn data(mut self, data: serde_json::Map<String, serde_json::Value>) -> Self {
        if let Some(rare) = self.rare(data.is_empty()) {
            rare.data = data;
        }
        self
    }

    /// Sets the groups the connection joins before `connect` (see
    /// [`Scope::initial_groups`]).
    pub fn initial_groups(mut self, groups: Vec<crate::GroupName>) -> Self {
        if let Some(rare) = self.rare(groups.is_empty()) {
            rare.initial_groups = groups;
        }
        self
    }

    /// Sets the typed extensions.
    pub fn extensions(mut self, extensions: Extensions) -> Self {
        self.scope.extensions = extensions;
        self
    }

    /// Finishes the scope.
    pub fn build(self) -> Scope {
        self.scope
    }
}

/// A serde helper: reads an empty query value (`token=`) as `None`.
///
/// ```
/// use estuary_core::Scope;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Q { #[serde(default, deserialize_with = "estuary_core::empty_as_none")] token: Option<String> }
///
/// let scope = Scope::builder("/").query_string("token=").build();
/// assert_eq!(scope.query::<Q>().unwrap().token, None);
/// let scope = Scope::builder("/").query_string("token=abc").build();
/// assert_eq!(scope.query::<Q>().unwrap().token.as_deref(), Some("abc"));
/// ```
pub fn empty_as_none<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let raw: Option<String> = serde::Deserialize::deserialize(de)?;
    match raw.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests;
