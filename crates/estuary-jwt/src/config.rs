//! What a [`JwtAuthenticator`](crate::JwtAuthenticator) accepts: algorithms,
//! keys, audience, issuer, leeway, where the token is read and how claims
//! become a user.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::jwks::{JwksError, parse_jwks};
use crate::key::{JwtAlgorithm, Key};
use crate::watch::Seen;

/// The leeway allowed on `exp` and `nbf` unless set: 30 seconds of clock
/// skew between the issuer and this server.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The largest leeway accepted; a larger one is clamped to it.
pub const MAX_LEEWAY: Duration = Duration::from_secs(24 * 3600);

/// How often a JWKS file is checked for a change unless set
/// ([`JwtConfig::jwks_reload_every`]): every 30 seconds.
pub const DEFAULT_JWKS_RELOAD_EVERY: Duration = Duration::from_secs(30);

/// Where a token is read from in a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// The query-string parameter of this name (`?token=`).
    Query(String),
    /// The cookie of this name.
    Cookie(String),
}

/// A JWKS file given to [`JwtConfig::jwks_file`]: where it is, what was
/// read from it, and its keys.
#[derive(Debug, Clone)]
pub(crate) struct JwksFile {
    pub(crate) path: PathBuf,
    pub(crate) seen: Seen,
    pub(crate) keys: Vec<Key>,
}

/// Why a [`JwtConfig`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// A PEM public key could not be read.
    #[error("invalid {algorithm:?} public key (PEM): {source}")]
    InvalidPem {
        /// The algorithm the key was given for.
        algorithm: JwtAlgorithm,
        /// The parser's error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A JWKS document could not be read.
    #[error("invalid JWKS: {0}")]
    Jwks(#[from] JwksError),
    /// The JWKS file could not be opened.
    #[error("cannot read the JWKS file {}: {source}", .path.display())]
    JwksFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM key file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An HMAC secret was empty.
    #[error("the HMAC secret is empty")]
    EmptySecret,
    /// No key is configured for any allowed algorithm.
    #[error("no key for any allowed algorithm")]
    NoKeys,
    /// No token source is configured.
    #[error("no token source configured")]
    NoSources,
}

/// The settings of a [`JwtAuthenticator`](crate::JwtAuthenticator).
///
/// Defaults: the algorithms are those of the keys given (narrow them with
/// [`JwtConfig::algorithms`]); no audience or issuer required; `exp`
/// required; leeway [`DEFAULT_LEEWAY`] (30 s); the token read from
/// `Authorization: Bearer`, then `?token=`, then the cookie `token` (the
/// first one present is the one checked); the user's id from `sub`, the
/// name from `name`, then `preferred_username`, then `sub`; a JWKS file
/// checked for a change every [`DEFAULT_JWKS_RELOAD_EVERY`] (30 s).
///
/// ```
/// use std::time::Duration;
/// use estuary_jwt::{JwtAlgorithm, JwtConfig, TokenSource};
///
/// let config = JwtConfig::new()
///     .hmac_secret(b"a long random secret".to_vec())?
///     .algorithms([JwtAlgorithm::HS256])
///     .audience("chat")
///     .issuer("https://auth.example.com/")
///     .leeway(Duration::from_secs(10))
///     .sources([TokenSource::Query("token".into()), TokenSource::Header]);
/// # Ok::<(), estuary_jwt::JwtConfigError>(())
/// ```
///
/// With the `serde` feature it deserializes through `JwtSettings`, its form as
/// plain values, checked as the constructors check (an invalid value is an
/// error naming its key).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "crate::settings::JwtSettings"))]
pub struct JwtConfig {
    pub(crate) keys: Vec<Key>,
    pub(crate) jwks_files: Vec<JwksFile>,
    pub(crate) jwks_reload_every: Duration,
    pub(crate) algorithms: Option<Vec<JwtAlgorithm>>,
    pub(crate) audience: Option<Vec<String>>,
    pub(crate) issuer: Option<Vec<String>>,
    pub(crate) leeway: Duration,
    pub(crate) require_exp: bool,
    pub(crate) sources: Vec<TokenSource>,
    pub(crate) id_claim: String,
    pub(crate) name_claims: Vec<String>,
    pub(crate) max_name_chars: usize,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtConfig {
    /// A configuration with no keys yet, and the defaults above.
    pub fn new() -> Self {
        Self {
            keys: Vec::new(),
            jwks_files: Vec::new(),
            jwks_reload_every: DEFAULT_JWKS_RELOAD_EVERY,
            algorithms: None,
            audience: None,
            issuer: None,
            leeway: DEFAULT_LEEWAY,
            require_exp: true,
            sources: vec![
                TokenSource::Header,
                TokenSource::Query("token".into()),
                TokenSource::Cookie("token".into()),
            ],
            id_claim: "sub".into(),
            name_claims: vec!["name".into(), "preferred_username".into(), "sub".into()],
            max_name_chars: estuary_core::auth::DEFAULT_MAX_USER_NAME_CHARS,
        }
    }

    /// Adds an HMAC secret, for HS256 tokens.
    pub fn hmac_secret(mut self, secret: impl Into<Vec<u8>>) -> Result<Self, JwtConfigError> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(JwtConfigError::EmptySecret);
        }
        self.keys.push(Key {
            kid: None,
            algorithm: JwtAlgorithm::HS256,
            key: jsonwebtoken::DecodingKey::from_secret(&secret),
        });
        Ok(self)
    }

    /// Adds an RSA public key (PEM, `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC
    /// KEY`), for RS256 tokens; `kid` names it for tokens that name theirs.
    pub fn rsa_pem(self, pem: &[u8], kid: Option<&str>) -> Result<Self, JwtConfigError> {
        let key =
            jsonwebtoken::DecodingKey::from_rsa_pem(pem).map_err(|source| JwtConfigError::InvalidPem {
                algorithm: JwtAlgorithm::RS256,
                source,
            })?;
        Ok(self.with_key(kid, JwtAlgorithm::RS256, key))
    }

    /// Adds an EC P-256 public key (PEM, `BEGIN PUBLIC KEY`), for ES256
    /// tokens; `kid` names it for tokens that name theirs.
    pub fn ec_pem(self, pem: &[u8], kid: Option<&str>) -> Result<Self, JwtConfigError> {
        let key =
            jsonwebtoken::DecodingKey::from_ec_pem(pem).map_err(|source| JwtConfigError::InvalidPem {
                algorithm: JwtAlgorithm::ES256,
                source,
            })?;
        Ok(self.with_key(kid, JwtAlgorithm::ES256, key))
    }

    /// Adds the keys of a JWKS document (see [`parse_jwks`] for what is
    /// read and what is skipped).
    pub fn jwks_json(mut self, json: &str) -> Result<Self, JwtConfigError> {
        self.keys.extend(parse_jwks(json)?.keys);
        Ok(self)
    }

    /// Adds the keys of a JWKS file, read now (an error if it cannot be
    /// read or is not a JWKS document), and remembered: the
    /// [`JwtAuthenticator`](crate::JwtAuthenticator) re-reads it when it
    /// changes, so that an identity provider's key rotation needs no
    /// restart.
    ///
    /// A change is looked for on the token path, never in the background:
    /// at most every [`jwks_reload_every`](Self::jwks_reload_every) (30 s
    /// unless set), and at once (at most once a second) when an RS256 or
    /// ES256 token names a `kid` that no current key of its algorithm has.
    /// A change is a new modification time, length or (on Unix) inode or
    /// change time; since two writes can share a modification time, a
    /// version read less than two seconds after it was written is read
    /// again at the next check whatever its metadata says, and a read whose
    /// content has the same hash as the last one changes nothing.
    ///
    /// The keys read then replace this file's previous keys: a key removed
    /// from the file stops verifying tokens (those already accepted keep
    /// their connection until `exp`). Keys given otherwise (an HMAC secret,
    /// PEM keys, [`jwks_json`](Self::jwks_json), other files) stay. A file
    /// that cannot be read, is not a JWKS document, or yields no key of an
    /// allowed algorithm leaves the previous keys in place and logs a
    /// warning, once for each version of the file. Write a new version
    /// atomically (a temporary file renamed over it), as rotation tools do,
    /// so that a half-written file is never read.
    ///
    /// To read a file once and never again, give its content to
    /// [`jwks_json`](Self::jwks_json).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use estuary_jwt::{JwtAuthenticator, JwtConfig};
    ///
    /// let config = JwtConfig::new()
    ///     .jwks_file("/etc/estuary/jwks.json")?
    ///     .jwks_reload_every(Duration::from_secs(60));
    /// let jwt = JwtAuthenticator::new(config)?;
    /// # Ok::<(), estuary_jwt::JwtConfigError>(())
    /// ```
    pub fn jwks_file(mut self, path: impl AsRef<Path>) -> Result<Self, JwtConfigError> {
        let path = path.as_ref();
        let error = |source| JwtConfigError::JwksFile {
            path: path.to_owned(),
            source,
        };
        let (stamp, bytes) = crate::watch::read(path).map_err(error)?;
        let seen = Seen::of(stamp, &bytes, SystemTime::now());
        let json = String::from_utf8(bytes)
            .map_err(|e| error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let keys = parse_jwks(&json)?.keys;
        self.jwks_files.push(JwksFile {
            path: path.to_owned(),
            seen,
            keys,
        });
        Ok(self)
    }

    /// How often the files given to [`jwks_file`](Self::jwks_file) are
    /// checked for a change, at most (default
    /// [`DEFAULT_JWKS_RELOAD_EVERY`], 30 s): the check is made by the
    /// first token checked once this time has passed since the last one.
    /// [`Duration::ZERO`] checks on every token (for tests: it costs a
    /// `stat` per token). A token naming an unknown `kid` checks at once
    /// whatever this is, at most once a second.
    ///
    /// ```
    /// use std::time::Duration;
    /// use estuary_jwt::JwtConfig;
    ///
    /// let config = JwtConfig::new().jwks_reload_every(Duration::from_secs(300));
    /// ```
    pub fn jwks_reload_every(mut self, every: Duration) -> Self {
        self.jwks_reload_every = every;
        self
    }

    fn with_key(
        mut self,
        kid: Option<&str>,
        algorithm: JwtAlgorithm,
        key: jsonwebtoken::DecodingKey,
    ) -> Self {
        self.keys.push(Key {
            kid: kid.map(str::to_owned),
            algorithm,
            key,
        });
        self
    }

    /// The algorithms a token may use (each still needs a key of its type).
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = JwtAlgorithm>) -> Self {
        self.algorithms = Some(algorithms.into_iter().collect());
        self
    }

    /// Requires the token's `aud` (a string, or an array) to hold this
    /// audience; call again to accept another.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience.get_or_insert_with(Vec::new).push(audience.into());
        self
    }

    /// Requires the token's `iss` to be this issuer; call again to accept
    /// another.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer.get_or_insert_with(Vec::new).push(issuer.into());
        self
    }

    /// The clock skew allowed on `exp` and `nbf` (whole seconds; at most
    /// [`MAX_LEEWAY`]).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.min(MAX_LEEWAY);
        self
    }

    /// Whether a token without `exp` is refused (the default) or accepted
    /// as never expiring.
    pub fn require_exp(mut self, required: bool) -> Self {
        self.require_exp = required;
        self
    }

    /// Where the token is looked for, in order; the first one present is
    /// the one checked.
    pub fn sources(mut self, sources: impl IntoIterator<Item = TokenSource>) -> Self {
        self.sources = sources.into_iter().collect();
        self
    }

    /// The claim that holds the user's id (default `sub`).
    pub fn id_claim(mut self, claim: impl Into<String>) -> Self {
        self.id_claim = claim.into();
        self
    }

    /// The claims tried, in order, for the user's display name (default
    /// `name`, `preferred_username`, `sub`); the id is the last resort.
    pub fn name_claims(mut self, claims: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.name_claims = claims.into_iter().map(Into::into).collect();
        self
    }

    /// The longest user name a token may give, in characters (default
    /// [`DEFAULT_MAX_USER_NAME_CHARS`](estuary_core::auth::DEFAULT_MAX_USER_NAME_CHARS),
    /// 150, Django's `username` length). A token whose name is longer is
    /// refused ([`JwtRejection::User`](crate::JwtRejection::User)), as is
    /// one whose id is longer than
    /// [`MAX_USER_ID_LEN`](estuary_core::auth::MAX_USER_ID_LEN) bytes: a name
    /// is shown to others, and a cut one could pass for someone else's.
    pub fn max_name_chars(mut self, max: usize) -> Self {
        self.max_name_chars = max;
        self
    }
}
