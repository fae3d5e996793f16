//! [`JwtAuthenticator`]: a bearer token, query parameter or cookie checked
//! as a JWT and turned into the scope's [`User`].

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use estuary_core::User;
use estuary_server::{AuthFuture, Authenticator, Handshake};
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

use crate::config::{JwtAlgorithm, JwtConfig, JwtConfigError, Key, TokenSource};

/// The longest token looked at; a longer one is refused unread.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was not accepted. It is logged at debug level and never
/// told to the client, which sees an anonymous user (or 401 on a required
/// route).
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
    #[error("missing or malformed claim {0}")]
    Claim(String),
}

impl JwtRejection {
    fn from_jsonwebtoken(error: &jsonwebtoken::errors::Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Self::AlgorithmNotAllowed,
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
                Self::Claim(claim.clone())
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
fn header_algorithm(token: &str) -> Result<JwtAlgorithm, JwtRejection> {
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

/// A key ready to verify, with the validation rules for its algorithm.
struct Verifier {
    kid: Option<String>,
    algorithm: JwtAlgorithm,
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

/// Authenticates WebSocket handshakes by JWT (HS256, RS256, ES256).
///
/// The token is read from the configured [`TokenSource`]s, first present
/// wins; its `alg` must be allowed and match a key's type (a secret serves
/// HS256 only, an RSA key RS256 only, an EC key ES256 only: an HS256 token
/// is never checked against a public key); with a `kid`, only the keys of
/// that `kid` (or, if none has it, the keys without one) are tried. `exp`,
/// `nbf`, `aud` and `iss` are checked with the leeway. The user's id comes
/// from the id claim, the name from the first name claim present, every
/// claim is an attribute, and the expiry is `exp` plus the leeway: the
/// connection closes with 4401 when the token stops being acceptable.
///
/// No token, and a token that is not valid, are both `Ok(None)`: an
/// anonymous visitor, as Django treats a bad session; the route's
/// [`AuthPolicy`](estuary_server::AuthPolicy) decides. Why a token was
/// refused is logged at debug level, never sent to the client.
///
/// ```no_run
/// use estuary_jwt::{JwtAuthenticator, JwtConfig};
/// use estuary_server::AuthLayer;
///
/// let config = JwtConfig::new()
///     .jwks_file("/etc/estuary/jwks.json")?
///     .audience("chat")
///     .issuer("https://auth.example.com/");
/// let layer = AuthLayer::new(JwtAuthenticator::new(config)?).require_under("/ws/private/");
/// # Ok::<(), estuary_jwt::JwtConfigError>(())
/// ```
pub struct JwtAuthenticator {
    verifiers: Vec<Verifier>,
    sources: Vec<TokenSource>,
    id_claim: String,
    name_claims: Vec<String>,
    leeway: Duration,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<_> = self
            .verifiers
            .iter()
            .map(|v| (v.algorithm, v.kid.as_deref()))
            .collect();
        f.debug_struct("JwtAuthenticator")
            .field("keys", &keys)
            .field("sources", &self.sources)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// Builds the authenticator; fails if no key serves an allowed
    /// algorithm or no token source is configured.
    pub fn new(config: JwtConfig) -> Result<Self, JwtConfigError> {
        if config.sources.is_empty() {
            return Err(JwtConfigError::NoSources);
        }
        let allowed = |alg: JwtAlgorithm| config.algorithms.as_ref().is_none_or(|a| a.contains(&alg));
        let verifiers: Vec<Verifier> = config
            .keys
            .into_iter()
            .filter(|k| allowed(k.algorithm))
            .map(|Key { kid, algorithm, key }| {
                let mut validation = jsonwebtoken::Validation::new(algorithm.to_jsonwebtoken());
                validation.leeway = config.leeway.as_secs();
                validation.validate_nbf = true;
                let mut required = Vec::new();
                if config.require_exp {
                    required.push("exp");
                }
                validation.validate_exp = true;
                match &config.audience {
                    Some(audience) => {
                        validation.set_audience(audience);
                        required.push("aud");
                    }
                    None => validation.validate_aud = false,
                }
                if let Some(issuer) = &config.issuer {
                    validation.set_issuer(issuer);
                    required.push("iss");
                }
                validation.set_required_spec_claims(&required);
                Verifier {
                    kid,
                    algorithm,
                    key,
                    validation,
                }
            })
            .collect();
        if verifiers.is_empty() {
            return Err(JwtConfigError::NoKeys);
        }
        Ok(Self {
            verifiers,
            sources: config.sources,
            id_claim: config.id_claim,
            name_claims: config.name_claims,
            leeway: config.leeway,
        })
    }

    /// The token a handshake carries: the first configured source present.
    pub fn token_from(&self, handshake: &Handshake<'_>) -> Option<String> {
        self.sources.iter().find_map(|source| match source {
            TokenSource::Header => handshake.bearer_token().map(str::to_owned),
            TokenSource::Query(name) => handshake.query_param(name),
            TokenSource::Cookie(name) => handshake.cookie(name),
        })
    }

    /// Checks a token: the user it names, or `None` (the reason is logged
    /// at debug level). Synchronous and cheap enough to call inline.
    pub fn validate(&self, token: &str) -> Option<User> {
        match self.check(token) {
            Ok(user) => Some(user),
            Err(rejection) => {
                tracing::debug!(%rejection, "JWT not accepted; the visitor is anonymous");
                None
            }
        }
    }

    /// Checks a token, saying why it is refused.
    pub fn check(&self, token: &str) -> Result<User, JwtRejection> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtRejection::TooLong);
        }
        let algorithm = header_algorithm(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRejection::Malformed)?;
        if JwtAlgorithm::from_header(header.alg) != Some(algorithm) {
            return Err(JwtRejection::Malformed);
        }
        let of_type: Vec<&Verifier> = self
            .verifiers
            .iter()
            .filter(|v| v.algorithm == algorithm)
            .collect();
        if of_type.is_empty() {
            return Err(JwtRejection::AlgorithmNotAllowed);
        }
        let candidates: Vec<&Verifier> = match header.kid.as_deref() {
            Some(kid) if of_type.iter().any(|v| v.kid.as_deref() == Some(kid)) => of_type
                .into_iter()
                .filter(|v| v.kid.as_deref() == Some(kid))
                .collect(),
            Some(_) => of_type.into_iter().filter(|v| v.kid.is_none()).collect(),
            None => of_type,
        };
        let mut outcome = Err(JwtRejection::NoKey);
        for verifier in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &verifier.key, &verifier.validation) {
                Ok(data) => return self.user(data.claims),
                Err(e) => {
                    let rejection = JwtRejection::from_jsonwebtoken(&e);
                    // Only a signature that does not verify sends us to the
                    // next key; anything else is about the claims, which
                    // another key would not change.
                    if rejection != JwtRejection::BadSignature {
                        return Err(rejection);
                    }
                    outcome = Err(rejection);
                }
            }
        }
        outcome
    }

    fn user(&self, claims: Map<String, Value>) -> Result<User, JwtRejection> {
        let text = |claim: &str| match claims.get(claim) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let id = text(&self.id_claim).ok_or_else(|| JwtRejection::Claim(self.id_claim.clone()))?;
        let name = self
            .name_claims
            .iter()
            .find_map(|c| text(c))
            .unwrap_or_else(|| id.clone());
        let expiry = claims
            .get("exp")
            .and_then(Value::as_u64)
            .and_then(|exp| Duration::from_secs(exp).checked_add(self.leeway))
            .and_then(|after_epoch| SystemTime::UNIX_EPOCH.checked_add(after_epoch));
        let mut user = User::new(id, name).with_attributes(claims);
        if let Some(at) = expiry {
            user = user.with_expiry(at);
        }
        Ok(user)
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        let user = self
            .token_from(&handshake)
            .and_then(|token| self.validate(&token));
        Box::pin(async move { Ok(user.into()) })
    }
}
