//! Who is connecting: an [`Authenticator`] reads a WebSocket handshake and
//! says who the user is (and, if it likes, which groups the connection
//! joins and what data its scope carries: an [`Admission`]); [`AuthLayer`]
//! puts that in the scope (Channels' `AuthMiddlewareStack`), and refuses
//! the handshake where authentication is required.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use estuary_core::{CloseCode, CloseFrame, GroupName, Recheck, User};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header};

use crate::router::ConnectionInfo;

/// The boxed future an [`Authenticator`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Admission, AuthError>> + Send + 'a>>;

/// The longest user id an authenticator of Estuary's lets in, in bytes: an
/// id is a key (groups such as `user.<id>`, rechecks, logs), and one that
/// is longer is refused, never cut (two cut ids could be the same).
pub const MAX_USER_ID_LEN: usize = 255;

/// The longest user name an authenticator of Estuary's lets in unless
/// configured otherwise, in characters: Django's `username` length (150),
/// so that no Django user is refused by default. A longer name refuses the
/// credential (a JWT, a connect callback's answer), with a reason for the
/// operator: a name is shown to others, and a cut one could pass for
/// someone else's.
pub const DEFAULT_MAX_USER_NAME_CHARS: usize = 150;

/// Why a user's id or name cannot be let in ([`check_user_bounds`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum UserBoundsError {
    /// The id is empty.
    #[error("the user id is empty")]
    EmptyId,
    /// The id is longer than [`MAX_USER_ID_LEN`] bytes.
    #[error("the user id is {len} bytes long, over the {max} allowed")]
    IdTooLong {
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The name is longer than the configured bound.
    #[error("the user name is {chars} characters long, over the {max} allowed")]
    NameTooLong {
        /// Its length in characters.
        chars: usize,
        /// The bound.
        max: usize,
    },
}

/// Checks a user's id (at most [`MAX_USER_ID_LEN`] bytes, not empty) and
/// name (at most `max_name_chars` characters) before they are let in.
///
/// ```
/// use estuary_server::{UserBoundsError, check_user_bounds};
///
/// assert!(check_user_bounds("42", "alice", 50).is_ok());
/// assert_eq!(
///     check_user_bounds("42", &"a".repeat(51), 50),
///     Err(UserBoundsError::NameTooLong { chars: 51, max: 50 })
/// );
/// assert!(check_user_bounds(&"1".repeat(256), "bob", 50).is_err());
/// ```
pub fn check_user_bounds(id: &str, name: &str, max_name_chars: usize) -> Result<(), UserBoundsError> {
    if id.is_empty() {
        return Err(UserBoundsError::EmptyId);
    }
    if id.len() > MAX_USER_ID_LEN {
        return Err(UserBoundsError::IdTooLong {
            len: id.len(),
            max: MAX_USER_ID_LEN,
        });
    }
    let chars = name.chars().count();
    if chars > max_name_chars {
        return Err(UserBoundsError::NameTooLong {
            chars,
            max: max_name_chars,
        });
    }
    Ok(())
}

/// What an [`Authenticator`] decided for a handshake it lets in: the user
/// (`None`: an anonymous visitor), the groups the connection joins before
/// the consumer's `connect` runs ([`Scope::initial_groups`](estuary_core::Scope::initial_groups)),
/// and data for its scope ([`Scope::data`](estuary_core::Scope::data)).
/// An authenticator that only says who the user is converts its answer
/// with `.into()`.
///
/// ```
/// use estuary_core::{GroupName, User};
/// use estuary_server::Admission;
///
/// let admission = Admission::from(User::new("42", "alice"))
///     .join(GroupName::new("user.42").unwrap())
///     .with_data("tenant", "acme");
/// assert_eq!(admission.user.as_ref().map(User::name), Some("alice"));
/// assert!(Admission::from(None::<User>).user.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Admission {
    /// Who is connecting; `None` for an anonymous visitor.
    pub user: Option<User>,
    /// Groups the connection joins before `connect`, and leaves at the end.
    pub groups: Vec<GroupName>,
    /// Data put in the scope for the consumer to read.
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl Admission {
    /// An anonymous visitor, in no group, with no data.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Adds a group to join.
    pub fn join(mut self, group: GroupName) -> Self {
        self.groups.push(group);
        self
    }

    /// Adds an entry to the scope's data.
    pub fn with_data(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }
}

impl From<User> for Admission {
    fn from(user: User) -> Self {
        Self {
            user: Some(user),
            ..Self::default()
        }
    }
}

impl From<Option<User>> for Admission {
    fn from(user: Option<User>) -> Self {
        Self {
            user,
            ..Self::default()
        }
    }
}

/// What an [`Authenticator`] sees of a WebSocket handshake.
#[derive(Debug, Clone, Copy)]
pub struct Handshake<'a> {
    /// The request's URI (path and query string).
    pub uri: &'a Uri,
    /// The request's headers (`Cookie`, `Authorization`, `Origin`, ...).
    pub headers: &'a HeaderMap,
    /// The client's address, after trusted-proxy resolution.
    pub client: Option<SocketAddr>,
}

impl Handshake<'_> {
    /// The value of the query-string parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.uri.query()?;
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    /// The value of the cookie `name` (the last one, if sent twice), if it
    /// is UTF-8. Other cookies may hold any bytes (browsers send what
    /// `document.cookie` set): they do not hide this one.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
            .filter_map(|pair| {
                let at = pair.iter().position(|&b| b == b'=')?;
                Some((&pair[..at], &pair[at + 1..]))
            })
            .filter(|(k, _)| k.trim_ascii() == name.as_bytes())
            .filter_map(|(_, v)| std::str::from_utf8(v.trim_ascii()).ok())
            .map(|v| v.trim_matches('"').to_owned())
            .next_back()
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        self.headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(str::trim)
    }
}

/// Why a handshake is not let in (not: the credential is bad, which is an
/// anonymous [`Admission`]), or why that could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The credential was presented and refused, with the status to answer
    /// (401 or 403) and a reason for the client.
    #[error("{reason}")]
    Refused {
        /// The HTTP status of the refusal.
        status: StatusCode,
        /// Why, for the client.
        reason: String,
    },
    /// Refused with a close code: the handshake completes and the
    /// connection is closed at once with `code` and `reason`, before any
    /// consumer runs. A browser's `CloseEvent` shows the code (a refused
    /// handshake's HTTP status is hidden from page scripts), so a client
    /// can tell "log in again" from "try later".
    #[error("{reason} (close code {code})")]
    Closed {
        /// The close code (an application code, 4000-4999, or 1008).
        code: CloseCode,
        /// Why, for the client (at most 123 bytes are sent).
        reason: String,
    },
    /// The check could not be made (the session database is down, the
    /// backend did not answer in time): the handshake gets 503, never an
    /// anonymous user by mistake.
    #[error("authentication unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The authentication backend answered something that is not an answer
    /// (a connect callback's malformed reply): the handshake gets 502 and
    /// the operator a log line with the detail.
    #[error("bad answer from the authentication backend: {0}")]
    BadAnswer(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Reads a WebSocket handshake and says who the user is.
///
/// Contract: an [`Admission`] with the user for a valid credential; one
/// without a user for none, or one that is not valid (expired, forged, a
/// user who is inactive), which is an anonymous visitor, as Django has
/// (refused with 401 where the route requires a user);
/// `Err(AuthError::Refused)` or `Err(AuthError::Closed)` to refuse the
/// handshake outright whatever the route's policy;
/// `Err(AuthError::Unavailable)` when the check cannot be made (503); and
/// `Err(AuthError::BadAnswer)` when a backend answered nonsense (502). Set
/// [`User::with_expiry`] when the credential expires: the connection is
/// then closed with 4401 at that moment.
///
/// ```
/// use estuary_core::{CloseCode, CloseFrame, GroupName, Recheck, User};
/// use estuary_server::{AuthFuture, Authenticator, Handshake};
///
/// /// `?token=letmein` is alice.
/// struct Fixed;
///
/// impl Authenticator for Fixed {
///     fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
///         let user = (handshake.query_param("token").as_deref() == Some("letmein"))
///             .then(|| User::new("1", "alice"));
///         Box::pin(async move { Ok(user.into()) })
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// Decides who is connecting.
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a>;

    /// A check to repeat while `user`'s connection is open (its session
    /// still valid: not logged out, the password not changed), put in the
    /// scope for the session to run. `None` (the default): checked at the
    /// handshake only.
    fn recheck(self: Arc<Self>, handshake: Handshake<'_>, user: &User) -> Option<Recheck> {
        let _ = (handshake, user);
        None
    }
}

/// Whether a route needs an authenticated user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPolicy {
    /// Anonymous visitors are let in with no user (Django's
    /// `AnonymousUser`); the consumer decides.
    Optional,
    /// Without a valid credential the handshake gets 401 before the upgrade.
    Required,
}

/// The tower layer that runs an [`Authenticator`] on every WebSocket
/// handshake and puts the user in the scope ([`Scope::user`](estuary_core::Scope::user)).
/// Plain HTTP requests, and handshakes the router refuses anyway (a bad key
/// or version), pass untouched. The policy is [`AuthPolicy::Optional`]
/// unless set; paths can be given their own with [`AuthLayer::require_under`].
///
/// ```
/// use estuary_core::{CloseCode, CloseFrame, GroupName, Recheck, User};
/// use estuary_server::{Admission, AuthFuture, AuthLayer, AuthPolicy, Authenticator, Handshake};
///
/// struct Nobody;
/// impl Authenticator for Nobody {
///     fn authenticate<'a>(&'a self, _: Handshake<'a>) -> AuthFuture<'a> {
///         Box::pin(async { Ok(Admission::anonymous()) })
///     }
/// }
///
/// let layer = AuthLayer::new(Nobody).require_under("/ws/private/");
/// assert_eq!(layer.policy_for("/ws/private/room/"), AuthPolicy::Required);
/// assert_eq!(layer.policy_for("/ws/chat/lobby/"), AuthPolicy::Optional);
/// ```
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<dyn Authenticator>,
    default: AuthPolicy,
    required_under: Arc<[String]>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("default", &self.default)
            .field("required_under", &self.required_under)
            .finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// Authentication by `authenticator`, optional everywhere.
    pub fn new(authenticator: impl Authenticator) -> Self {
        Self {
            authenticator: Arc::new(authenticator),
            default: AuthPolicy::Optional,
            required_under: Arc::from(Vec::new()),
        }
    }

    /// Sets the policy of every route not named by `require_under`.
    pub fn with_policy(mut self, policy: AuthPolicy) -> Self {
        self.default = policy;
        self
    }

    /// Requires authentication for paths starting with `prefix`.
    pub fn require_under(mut self, prefix: impl Into<String>) -> Self {
        let mut prefixes = self.required_under.to_vec();
        prefixes.push(prefix.into());
        self.required_under = prefixes.into();
        self
    }

    /// The policy of a request path.
    pub fn policy_for(&self, path: &str) -> AuthPolicy {
        if self.required_under.iter().any(|p| path.starts_with(p.as_str())) {
            AuthPolicy::Required
        } else {
            self.default
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> tower::Service<Request<B>> for AuthService<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Only what can become a WebSocket is authenticated: a plain
        // request, or a handshake the router will refuse anyway (a bad key
        // or version), costs no check (no database query, no callback).
        if !crate::service::is_websocket_upgrade(req.headers(), req.method())
            || crate::service::check_upgrade(&req).is_err()
        {
            return Box::pin(self.inner.call(req));
        }
        // The ready inner service is taken; a clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let client = req.extensions().get::<ConnectionInfo>().and_then(|i| i.client);
            let handshake = Handshake {
                uri: req.uri(),
                headers: req.headers(),
                client,
            };
            let decided = layer.authenticator.authenticate(handshake).await;
            match decided {
                Ok(admission)
                    if admission.user.is_none()
                        && layer.policy_for(req.uri().path()) == AuthPolicy::Required =>
                {
                    let mut response =
                        crate::service::plain(StatusCode::UNAUTHORIZED, "authentication required");
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    return Ok(response);
                }
                Ok(admission) => {
                    if let Some(user) = &admission.user
                        && let Some(recheck) = layer.authenticator.clone().recheck(handshake, user)
                    {
                        req.extensions_mut().insert(recheck);
                    }
                    req.extensions_mut().insert(admission);
                }
                Err(AuthError::Refused { status, reason }) => {
                    let mut response = crate::service::plain(status, &reason);
                    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    }
                    return Ok(response);
                }
                Err(AuthError::Closed { code, reason }) => {
                    return Ok(crate::service::close_at_once(req, CloseFrame::new(code, reason)));
                }
                Err(AuthError::Unavailable(error)) => {
                    unavailable(&*error);
                    let mut response =
                        crate::service::plain(StatusCode::SERVICE_UNAVAILABLE, "authentication unavailable");
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return Ok(response);
                }
                Err(AuthError::BadAnswer(error)) => {
                    bad_answer(&*error);
                    return Ok(crate::service::plain(
                        StatusCode::BAD_GATEWAY,
                        "authentication backend failed",
                    ));
                }
            }
            inner.call(req).await
        })
    }
}

/// A handshake refused because the authentication backend could not be
/// asked: one log line a second at most (each handshake would write one),
/// with the count of those held back.
fn unavailable(error: &(dyn std::error::Error + Send + Sync)) {
    estuary_core::throttled!(
        warn,
        %error,
        "handshake refused with 503: authentication unavailable; check that the authentication backend \
         (the connect callback's application, Django's database) is up and answers within its timeout \
         (held_back: refusals since the last line)"
    );
}

/// A handshake refused because the backend answered nonsense: one log
/// line a second at most, with the count of those held back.
fn bad_answer(error: &(dyn std::error::Error + Send + Sync)) {
    estuary_core::throttled!(
        error,
        %error,
        "handshake refused with 502: bad answer from the authentication backend; fix what the error names \
         in the application's answer (held_back: refusals since the last line)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Handshake<'a> {
        Handshake {
            uri,
            headers,
            client: None,
        }
    }

    #[test]
    fn credentials_are_read_from_query_cookie_and_header() {
        let uri: Uri = "/ws/chat/a/?token=a%20b&x=1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; sessionid=\"abc\"; sessionid=def".parse().unwrap(),
        );
        headers.insert(header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        let h = handshake(&uri, &headers);
        assert_eq!(h.query_param("token").as_deref(), Some("a b"));
        assert_eq!(h.query_param("missing"), None);
        assert_eq!(h.cookie("sessionid").as_deref(), Some("def"), "the last one wins");
        assert_eq!(h.bearer_token(), Some("t0k"));
        let mut odd = HeaderMap::new();
        odd.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"theme=caf\xc3\xa9; sessionid=abc; raw=\xff\xfe").unwrap(),
        );
        let h = handshake(&uri, &odd);
        assert_eq!(
            h.cookie("sessionid").as_deref(),
            Some("abc"),
            "odd bytes elsewhere"
        );
        assert_eq!(h.cookie("theme").as_deref(), Some("café"));
        assert_eq!(h.cookie("raw"), None, "not UTF-8");
        let bare = HeaderMap::new();
        assert_eq!(handshake(&uri, &bare).cookie("sessionid"), None);
        assert_eq!(handshake(&uri, &bare).bearer_token(), None);
    }
}
