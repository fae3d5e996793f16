//! Why a token is refused ([`JwtRejection`]), and the checks that read a
//! token's header and time claims before and after its signature.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use estuary_core::auth::UserBoundsError;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

use crate::key::JwtAlgorithm;

/// The longest token looked at; a longer one is refused unread.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was not accepted. It is logged at debug level (a warning,
/// at most one a second, for [`Time`](Self::Time) and
/// [`User`](Self::User): a signed token only its issuer could have made)
/// and never told to the client, which sees an anonymous user (or 401 on a
/// required route).
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum JwtRejection {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token too long")]
    TooLong,
    /// Not three base64url parts with a JSON header and claims.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not one this configuration allows (`none`,
    /// HS384, or HS256 where only RS256 is configured, ...).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// No configured key of the token's type (and `kid`, if it has one).
    #[error("no key for this token")]
    NoKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `nbf` is still to come (beyond the leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// `aud` does not name this service.
    #[error("wrong audience")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// A required claim is missing or of the wrong type (`exp`, `aud`,
    /// `iss`, the id claim).
    #[error("missing or malformed claim: {0}")]
    Claim(JwtClaim),
    /// `exp`, `nbf` or `iat` is not a NumericDate this server can use: not
    /// a number (a string, `null`, ...), negative, or past
    /// [`MAX_NUMERIC_DATE`]. Never ignored: a time claim that cannot be
    /// read refuses the token.
    #[error("claim {claim} is not a usable NumericDate: {why}")]
    Time {
        /// The claim.
        claim: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `iat` is still to come (beyond the leeway): the token was issued in
    /// the future.
    #[error("issued in the future")]
    IssuedInTheFuture,
    /// The user's id or name is out of bounds (see
    /// [`check_user_bounds`](estuary_core::auth::check_user_bounds) and
    /// [`JwtConfig::max_name_chars`](crate::JwtConfig::max_name_chars)).
    #[error("{0}")]
    User(#[from] UserBoundsError),
}

/// Which claim a [`JwtRejection::Claim`] is about: one of the registered
/// claims this crate reads, or the configured id claim.
///
/// ```
/// use estuary_jwt::{JwtClaim, JwtRejection};
///
/// assert_eq!(JwtRejection::Claim(JwtClaim::Aud).to_string(), "missing or malformed claim: aud");
/// assert_eq!(
///     JwtRejection::Claim(JwtClaim::Id).to_string(),
///     "missing or malformed claim: the id claim (JwtConfig::id_claim)"
/// );
/// assert_eq!(JwtClaim::Other.to_string(), "another registered claim");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtClaim {
    /// `exp`, the expiry.
    Exp,
    /// `nbf`, not before.
    Nbf,
    /// `iat`, issued at.
    Iat,
    /// `aud`, the audience.
    Aud,
    /// `iss`, the issuer.
    Iss,
    /// `sub`, the subject.
    Sub,
    /// The claim that holds the user's id ([`JwtConfig::id_claim`](crate::JwtConfig::id_claim),
    /// `sub` by default): a string or a number is needed.
    Id,
    /// Another registered claim the verifier named.
    Other,
}

impl JwtClaim {
    /// The registered claim of this name, or [`Other`](Self::Other).
    fn named(name: &str) -> Self {
        match name {
            "exp" => Self::Exp,
            "nbf" => Self::Nbf,
            "iat" => Self::Iat,
            "aud" => Self::Aud,
            "iss" => Self::Iss,
            "sub" => Self::Sub,
            _ => Self::Other,
        }
    }
}

impl std::fmt::Display for JwtClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Exp => "exp",
            Self::Nbf => "nbf",
            Self::Iat => "iat",
            Self::Aud => "aud",
            Self::Iss => "iss",
            Self::Sub => "sub",
            Self::Id => "the id claim (JwtConfig::id_claim)",
            Self::Other => "another registered claim",
        })
    }
}

impl JwtRejection {
    /// True for a token whose signature verified but whose claims cannot be
    /// used: only its issuer could have made it, so the operator is told
    /// (a warning, at most one a second), not only the debug log.
    pub(crate) fn is_issuers_mistake(&self) -> bool {
        matches!(self, Self::Time { .. } | Self::User(_))
    }
}

/// The latest NumericDate accepted (9999-12-31T23:59:59Z); a later `exp`,
/// `nbf` or `iat` refuses the token ([`JwtRejection::Time`]).
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// A NumericDate claim (RFC 7519 section 2: "a JSON numeric value
/// representing the number of seconds from 1970-01-01T00:00:00Z ...
/// non-integer values can be represented"): an integer, a fraction
/// (`1735689600.5`) or an exponent form (`1.7356896e9`) are all read, to the
/// nanosecond; `None` when the claim is absent.
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<SystemTime>, JwtRejection> {
    let bad = |why| JwtRejection::Time { claim, why };
    let number = match claims.get(claim) {
        None => return Ok(None),
        Some(Value::Number(number)) => number,
        Some(_) => return Err(bad("not a number")),
    };
    let since_epoch = if let Some(seconds) = number.as_u64() {
        if seconds > MAX_NUMERIC_DATE {
            return Err(bad("after the year 9999"));
        }
        Duration::from_secs(seconds)
    } else {
        // A negative integer, or a number with a fraction or an exponent.
        let seconds = number.as_f64().ok_or_else(|| bad("not a number"))?;
        if !seconds.is_finite() {
            return Err(bad("not a finite number"));
        }
        if seconds < 0.0 {
            return Err(bad("before 1970"));
        }
        if seconds > MAX_NUMERIC_DATE as f64 {
            return Err(bad("after the year 9999"));
        }
        Duration::try_from_secs_f64(seconds).map_err(|_| bad("out of range"))?
    };
    SystemTime::UNIX_EPOCH
        .checked_add(since_epoch)
        .map(Some)
        .ok_or_else(|| bad("beyond what this clock holds"))
}

impl JwtRejection {
    pub(crate) fn from_jsonwebtoken(error: &jsonwebtoken::errors::Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Self::AlgorithmNotAllowed,
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
                Self::Claim(JwtClaim::named(claim))
            }
            // A key that the crypto backend cannot use (an EC point off the
            // curve) verifies nothing.
            ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
                Self::BadSignature
            }
            _ => Self::Malformed,
        }
    }
}

/// The header's `alg`, read before anything else: `none` and every
/// algorithm but the three supported are refused here, whatever the
/// crypto crate would make of them.
pub(crate) fn header_algorithm(token: &str) -> Result<JwtAlgorithm, JwtRejection> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtRejection::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtRejection::Malformed)?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| JwtRejection::Malformed)?;
    match header.get("alg").and_then(Value::as_str) {
        Some(name) => JwtAlgorithm::from_name(name).ok_or(JwtRejection::AlgorithmNotAllowed),
        None => Err(JwtRejection::Malformed),
    }
}
