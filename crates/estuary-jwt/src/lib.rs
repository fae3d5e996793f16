//! JWT authentication for Estuary: a [`JwtAuthenticator`] reads a JSON Web
//! Token from a WebSocket handshake (`Authorization: Bearer`, a `?token=`
//! query parameter or a cookie), checks it (HS256, RS256 or ES256; `exp`,
//! `nbf`, `aud`, `iss`), and makes its claims the scope's
//! [`User`](estuary_core::User). Put it behind
//! estuary-server's `AuthLayer`, which decides per route
//! whether an anonymous visitor is let in.
//!
//! Keys come from configuration (an HMAC secret, RSA or EC public keys as
//! PEM) or a JWKS file ([`parse_jwks`]), which is re-read when it changes
//! ([`JwtConfig::jwks_file`]): keys rotate without a restart. The signatures are checked by the
//! `jsonwebtoken` crate on its pure-Rust (RustCrypto) backend.
//!
//! ```
//! use estuary_jwt::{JwtAlgorithm, JwtAuthenticator, JwtConfig};
//! use estuary_server::AuthLayer;
//!
//! let config = JwtConfig::new()
//!     .hmac_secret(b"a long random secret".to_vec())?
//!     .algorithms([JwtAlgorithm::HS256])
//!     .audience("chat");
//! let jwt = JwtAuthenticator::new(config)?;
//! assert!(jwt.validate("not.a.token").is_none());
//! let layer = AuthLayer::new(jwt).require_under("/ws/private/");
//! # Ok::<(), estuary_jwt::JwtConfigError>(())
//! ```
//!
//! A token that is absent or not valid makes an anonymous visitor, never an
//! error: on a required route the handshake gets 401, and why the token was
//! refused is logged at debug level (as a warning, at most one a second,
//! when a token signed by a configured key has claims that cannot be used:
//! its issuer's mistake). A user authenticated by a token with `exp` is
//! disconnected with close code 4401 once it expires.
//!
//! `exp`, `nbf` and `iat` are RFC 7519 NumericDates: any JSON number, an
//! integer, a fraction (`1735689600.5`, kept to the nanosecond) or an
//! exponent form (`1.7356896e9`). A time claim that is present is never
//! ignored: one that is not a number, is negative, or is past the year
//! 9999 ([`MAX_NUMERIC_DATE`]) refuses the token, as does an `iat` still to
//! come. The user's id is at most 255 bytes and the name at most
//! [`JwtConfig::max_name_chars`] characters (150 unless set): a longer one
//! refuses the token.

// Modules import downwards only (no cycle): `authenticator` uses
// `config`, `verifier`, `watch`, `rejection`; `config` uses `jwks`,
// `watch` (`read`, `Seen`), `key`; `watch` uses `verifier`, `jwks`;
// `verifier`, `jwks` and `rejection` use `key`; `key` uses nothing.
mod authenticator;
mod config;
mod jwks;
mod key;
mod rejection;
#[cfg(feature = "serde")]
mod settings;
mod verifier;
mod watch;

pub use authenticator::JwtAuthenticator;
pub use config::{
    DEFAULT_JWKS_RELOAD_EVERY, DEFAULT_LEEWAY, JwtConfig, JwtConfigError, MAX_LEEWAY, TokenSource,
};
pub use jwks::{Jwks, JwksError, MIN_RSA_BITS, parse_jwks};
pub use key::JwtAlgorithm;
pub use rejection::{JwtClaim, JwtRejection, MAX_NUMERIC_DATE, MAX_TOKEN_LEN};
#[cfg(feature = "serde")]
pub use settings::{JwtSettings, JwtSettingsError};
