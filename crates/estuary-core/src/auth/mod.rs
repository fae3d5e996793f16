//! Who is connecting: an [`Authenticator`] reads a WebSocket [`Handshake`]
//! and says who the user is (and, if it likes, which groups the connection
//! joins and what data its scope carries: an [`Admission`]), or why the
//! handshake is refused ([`AuthError`]).
//!
//! This module is the boundary between the server and the authenticators:
//! it needs no HTTP server, so an authenticator crate (JWT, Django's
//! sessions, a connect callback) depends on `estuary-core` only. The server
//! runs an authenticator on every handshake with its `AuthLayer` (Channels'
//! `AuthMiddlewareStack`); [`AuthChain`] asks several in turn.

mod admission;
mod bounds;
mod chain;
mod error;
mod handshake;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use admission::Admission;
pub use bounds::{DEFAULT_MAX_USER_NAME_CHARS, MAX_USER_ID_LEN, UserBoundsError, check_user_bounds};
pub use chain::AuthChain;
pub use error::AuthError;
pub use handshake::Handshake;

use crate::{BoxError, Recheck, User};

/// The boxed future an [`Authenticator`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Admission, AuthError>> + Send + 'a>>;

/// The boxed future of [`Authenticator::ready`]: `Ok` once the
/// authenticator can answer, or why it cannot.
pub type ReadyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

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
/// use estuary_core::User;
/// use estuary_core::auth::{AuthFuture, Authenticator, Handshake};
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
    /// handshake only. Asked after [`authenticate`](Self::authenticate) let
    /// `user` in, unless its [`Admission`] already carries a recheck
    /// ([`Admission::with_recheck`]).
    fn recheck(self: Arc<Self>, handshake: Handshake<'_>, user: &User) -> Option<Recheck> {
        let _ = (handshake, user);
        None
    }

    /// Makes ready what [`authenticate`](Self::authenticate) needs (a
    /// database connection, a key file), so that a wrong setting stops a
    /// server at startup with a clear message instead of failing every
    /// handshake. Whoever starts serving calls it once, before the first
    /// handshake; the server does not. The default has nothing to prepare.
    fn ready(&self) -> ReadyFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}
