//! Django's sessions, read natively: who is connecting, as Django would say.
//!
//! Given a request's `Cookie:` header, [`DjangoSessions`] finds the Django user it
//! belongs to, validating everything the way Django 5.2 does:
//!
//! * the `db` engine (`django_session` in PostgreSQL or SQLite) and the
//!   `signed_cookies` engine;
//! * signatures with `SECRET_KEY` and each of `SECRET_KEY_FALLBACKS`;
//! * expiry (`expire_date`, or `SESSION_COOKIE_AGE` for signed cookies);
//! * `_auth_user_backend` among `AUTHENTICATION_BACKENDS`;
//! * the user row (`auth_user` or a custom table), `is_active`;
//! * `_auth_user_hash` against the current password, so a password change logs out.
//!
//! Anything wrong with the session is anonymous (`Ok(None)`); only infrastructure
//! failures are errors. Nothing is ever written to the database.
//!
//! ```no_run
//! use estuary_django::{DjangoConfig, DjangoSessions};
//!
//! # async fn run() -> Result<(), estuary_django::DjangoError> {
//! let mut config = DjangoConfig::new("the SECRET_KEY", "sqlite:///srv/site/db.sqlite3".parse()?);
//! config.secret_key_fallbacks = vec!["the previous SECRET_KEY".into()];
//! let sessions = DjangoSessions::connect(config).await?;
//! let user = sessions.user_from_cookie_header("sessionid=abc; csrftoken=x").await?;
//! assert!(user.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! The parsing functions ([`signing`], [`cookie_value`], [`SessionAuth`]) are pure
//! and total, for fuzzing.

mod authenticator;
mod config;
mod cookie;
mod database;
mod error;
mod lazy;
mod session;
mod sessions;
#[cfg(feature = "serde")]
mod settings;
pub mod signing;
mod user;

pub use authenticator::{MAX_USERNAME_CHARS, cookie_header};
pub use config::{DatabaseUrl, DjangoConfig, SessionEngine, UserModel};
pub use cookie::cookie_value;
pub use error::{DjangoConfigError, DjangoConfigErrorKind, DjangoError};
pub use lazy::DjangoAuthenticator;
pub use session::{DB_SESSION_SALT, SIGNED_COOKIES_SALT, SessionAuth, session_auth_hash};
pub use sessions::DjangoSessions;
#[cfg(feature = "serde")]
pub use settings::{DjangoSettings, DjangoSettingsError, SessionEngineName};
pub use user::DjangoUser;
