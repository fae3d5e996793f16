//! The tower layer that runs an [`Authenticator`] on every WebSocket
//! handshake ([`AuthLayer`], Channels' `AuthMiddlewareStack`): it puts the
//! user in the scope, and refuses the handshake where authentication is
//! required. What an authenticator is, sees and answers lives in
//! [`estuary_core::auth`], re-exported here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use estuary_core::CloseFrame;
use estuary_core::auth::{AuthError, Authenticator, Handshake};
use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::router::ConnectionInfo;

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
    required_matching: Arc<[crate::PathPattern]>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("default", &self.default)
            .field("required_under", &self.required_under)
            .field(
                "required_matching",
                &self
                    .required_matching
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>(),
            )
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
            required_matching: Arc::from(Vec::new()),
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

    /// Requires authentication for the paths `pattern` matches (a route's
    /// own pattern, parameters and all).
    ///
    /// ```
    /// use estuary_server::{Admission, AuthFuture, AuthLayer, AuthPolicy, Authenticator, Handshake, PathPattern};
    ///
    /// struct Nobody;
    /// impl Authenticator for Nobody {
    ///     fn authenticate<'a>(&'a self, _: Handshake<'a>) -> AuthFuture<'a> {
    ///         Box::pin(async { Ok(Admission::anonymous()) })
    ///     }
    /// }
    ///
    /// let orders = PathPattern::path("ws/orders/<int:id>/")?;
    /// let layer = AuthLayer::new(Nobody).require_matching(orders);
    /// assert_eq!(layer.policy_for("/ws/orders/7/"), AuthPolicy::Required);
    /// assert_eq!(layer.policy_for("/ws/orders/"), AuthPolicy::Optional);
    /// # Ok::<(), estuary_server::PatternError>(())
    /// ```
    pub fn require_matching(mut self, pattern: crate::PathPattern) -> Self {
        let mut patterns = self.required_matching.to_vec();
        patterns.push(pattern);
        self.required_matching = patterns.into();
        self
    }

    /// The policy of a request path.
    pub fn policy_for(&self, path: &str) -> AuthPolicy {
        if self.required_under.iter().any(|p| path.starts_with(p.as_str()))
            || self.required_matching.iter().any(|p| p.matches(path).is_some())
        {
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
            let started = std::time::Instant::now();
            let decided = layer.authenticator.authenticate(handshake).await;
            let mut report = crate::AuthReport {
                user: None,
                elapsed: started.elapsed(),
                admitted: false,
            };
            let refused = |response: Response<Body>, reason, report: crate::AuthReport| {
                let mut response = crate::report::refused(response, reason);
                response.extensions_mut().insert(report);
                Ok(response)
            };
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
                    return refused(response, crate::HandshakeRefusal::Auth, report);
                }
                Ok(mut admission) => {
                    // The admission's own recheck first (a chain's carries
                    // the one of the authenticator that let the user in).
                    let recheck = admission.recheck.take();
                    if let Some(user) = &admission.user
                        && let Some(recheck) =
                            recheck.or_else(|| layer.authenticator.clone().recheck(handshake, user))
                    {
                        req.extensions_mut().insert(recheck);
                    }
                    report.user = admission.user.as_ref().map(|u| u.id().to_owned());
                    report.admitted = true;
                    req.extensions_mut().insert(admission);
                }
                Err(AuthError::Refused { status, reason }) => {
                    let mut response = crate::service::plain(status, reason.as_str());
                    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    }
                    return refused(response, crate::HandshakeRefusal::Auth, report);
                }
                Err(AuthError::Closed { code, reason }) => {
                    let response = crate::service::close_at_once(req, CloseFrame::new(code, reason));
                    return refused(response, crate::HandshakeRefusal::Auth, report);
                }
                Err(AuthError::Unavailable(error)) => {
                    unavailable(&*error);
                    let mut response =
                        crate::service::plain(StatusCode::SERVICE_UNAVAILABLE, "authentication unavailable");
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return refused(response, crate::HandshakeRefusal::AuthUnavailable, report);
                }
                Err(AuthError::BadAnswer(error)) => {
                    bad_answer(&*error);
                    let response =
                        crate::service::plain(StatusCode::BAD_GATEWAY, "authentication backend failed");
                    return refused(response, crate::HandshakeRefusal::AuthUnavailable, report);
                }
            }
            let mut response = inner.call(req).await?;
            response.extensions_mut().insert(report);
            Ok(response)
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
