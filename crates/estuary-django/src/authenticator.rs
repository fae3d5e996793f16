//! [`DjangoSessions`] as an [`Authenticator`](estuary_core::auth::Authenticator):
//! the user Django logged in is the WebSocket's user.

use estuary_core::User;

use estuary_core::auth::{
    Admission, AuthError, AuthFuture, Authenticator, Handshake, UserBoundsError, check_user_bounds,
};
use http::header;

use crate::{DjangoSessions, DjangoUser};

impl DjangoUser {
    /// As the scope's [`User`]: the id, the username as the name, and
    /// `is_staff`, `is_superuser` and the configured attribute columns
    /// (first name, last name, email) as attributes.
    pub fn into_user(self) -> User {
        let mut attributes = self.attributes;
        attributes.insert("is_staff".into(), self.is_staff.into());
        attributes.insert("is_superuser".into(), self.is_superuser.into());
        User::new(self.id, self.username).with_attributes(attributes)
    }
}

/// Every `Cookie` header of a request as one header value, for
/// [`DjangoSessions::user_from_cookie_header`]. Lossy: a cookie holding bytes
/// that are not UTF-8 must not hide the session's.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::COOKIE};
///
/// let mut headers = HeaderMap::new();
/// headers.append(COOKIE, HeaderValue::from_bytes(b"theme=\xff").unwrap());
/// headers.append(COOKIE, HeaderValue::from_static("sessionid=abc"));
/// assert_eq!(estuary_django::cookie_header(&headers), "theme=\u{fffd}; sessionid=abc");
/// ```
pub fn cookie_header(headers: &http::HeaderMap) -> String {
    let cookies: Vec<std::borrow::Cow<'_, str>> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    cookies.join("; ")
}

/// The longest username let in, in characters: Django's `username` is at
/// most 150, and a custom `USERNAME_FIELD` that is an `EmailField` at most
/// 254. A longer one (or a primary key longer than
/// [`MAX_USER_ID_LEN`](estuary_core::auth::MAX_USER_ID_LEN) bytes) makes the
/// visitor anonymous, with a warning for the operator.
pub const MAX_USERNAME_CHARS: usize = 254;

/// A Django user refused for the length of their username or id: one
/// warning a second at most.
fn out_of_bounds(error: &UserBoundsError) {
    estuary_core::throttled!(
        warn,
        %error,
        "a Django user was let in as anonymous: shorten the username (or id) in Django's user table \
         (held_back: refusals since the last line)"
    );
}

/// Reads the session cookie of the handshake (every `Cookie` header) the way
/// Django does. A database failure is [`AuthError::Unavailable`] (the
/// handshake gets 503, never an anonymous user by mistake).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use estuary_django::{DatabaseUrl, DjangoConfig, DjangoSessions};
/// use estuary_server::{AuthLayer, Router};
/// use tower::Layer;
///
/// let config = DjangoConfig::new("the project's SECRET_KEY", "postgres://estuary@127.0.0.1/app".parse()?);
/// let sessions = DjangoSessions::connect(config).await?;
/// let service = AuthLayer::new(sessions).layer(Router::new().into_service());
/// # let _ = service;
/// # Ok(()) }
/// ```
impl Authenticator for DjangoSessions {
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        let cookie_header = cookie_header(handshake.headers);
        Box::pin(async move {
            match self.user_from_cookie_header(&cookie_header).await {
                Ok(Some(user))
                    if let Err(error) = check_user_bounds(&user.id, &user.username, MAX_USERNAME_CHARS) =>
                {
                    out_of_bounds(&error);
                    Ok(Admission::anonymous())
                }
                Ok(user) => Ok(user.map(DjangoUser::into_user).into()),
                Err(error) => Err(AuthError::Unavailable(Box::new(error))),
            }
        })
    }
}
