//! [`JwtAuthenticator`]: a bearer token, query parameter or cookie checked
//! as a JWT and turned into the scope's [`User`].

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use estuary_core::User;
use estuary_core::auth::{AuthFuture, Authenticator, Handshake, check_user_bounds};
use serde_json::{Map, Value};

use crate::config::{JwtConfig, JwtConfigError, TokenSource};
use crate::key::JwtAlgorithm;
use crate::rejection::{JwtClaim, JwtRejection, MAX_TOKEN_LEN, header_algorithm, numeric_date};
use crate::verifier::{Rules, Verifier};
use crate::watch::{Watch, Why};

/// Authenticates WebSocket handshakes by JWT (HS256, RS256, ES256).
///
/// The token is read from the configured [`TokenSource`]s, first present
/// wins; its `alg` must be allowed and match a key's type (a secret serves
/// HS256 only, an RSA key RS256 only, an EC key ES256 only: an HS256 token
/// is never checked against a public key); with a `kid`, only the keys of
/// that `kid` (or, if none has it, the keys without one) are tried. `exp`,
/// `nbf`, `aud` and `iss` are checked with the leeway (and `iat`, which
/// must not be to come); a time claim may be any JSON number, and one
/// that cannot be read refuses the token. The user's id comes from the id
/// claim, the name from the first name claim present (both bounded, see
/// [`JwtConfig::max_name_chars`]), every claim is an attribute, and the
/// expiry is `exp` plus the leeway: the connection closes with 4401 when
/// the token stops being acceptable.
///
/// No token, and a token that is not valid, are both `Ok(None)`: an
/// anonymous visitor, as Django treats a bad session; the route's
/// estuary-server's `AuthPolicy` decides. Why a token was
/// refused is logged at debug level, never sent to the client.
///
/// A JWKS file ([`JwtConfig::jwks_file`]) is re-read when it changes, so
/// that keys rotate without a restart: the check is made while a token is
/// checked (no task runs in the background), at most every
/// [`JwtConfig::jwks_reload_every`] (30 s unless set), and at once, at most
/// once a second, when an RS256 or ES256 token names a `kid` that no key of
/// its algorithm has (a key just published). The file's new keys replace
/// its previous ones, so a key removed from it stops verifying tokens (a
/// connection already accepted stays open until its token's `exp`); the
/// other keys of the configuration stay. A file that cannot be read or parsed, or that
/// holds no key of an allowed algorithm, leaves the keys as they were and
/// logs a warning once. Tokens are checked from many tasks at once: they
/// share the keys behind a lock held only to copy a pointer, never while a
/// file is read.
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
    /// The keys in use: replaced whole when a JWKS file brings new ones.
    verifiers: RwLock<Arc<[Verifier]>>,
    rules: Rules,
    /// The JWKS files, if any.
    watch: Option<Mutex<Watch>>,
    sources: Vec<TokenSource>,
    id_claim: String,
    name_claims: Vec<String>,
    max_name_chars: usize,
    leeway: Duration,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verifiers = self.verifiers();
        let keys: Vec<_> = verifiers
            .iter()
            .map(|v| (v.algorithm, v.kid.as_deref()))
            .collect();
        let mut debug = f.debug_struct("JwtAuthenticator");
        debug.field("keys", &keys);
        if let Some(watch) = &self.watch {
            let watch = estuary_core::sync::lock(watch);
            let paths: Vec<_> = watch.paths().collect();
            debug
                .field("jwks_files", &paths)
                .field("jwks_reload_every", &watch.every());
        }
        debug
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
        let rules = Rules {
            algorithms: config.algorithms,
            leeway: config.leeway,
            require_exp: config.require_exp,
            audience: config.audience,
            issuer: config.issuer,
        };
        let fixed: Vec<Verifier> = config
            .keys
            .into_iter()
            .filter_map(|k| rules.verifier(k))
            .collect();
        let files: Vec<_> = config
            .jwks_files
            .into_iter()
            .map(|file| {
                let verifiers: Vec<Verifier> =
                    file.keys.into_iter().filter_map(|k| rules.verifier(k)).collect();
                (file.path, file.seen, verifiers)
            })
            .collect();
        let verifiers: Arc<[Verifier]> = fixed
            .iter()
            .chain(files.iter().flat_map(|(_, _, v)| v))
            .cloned()
            .collect();
        if verifiers.is_empty() {
            return Err(JwtConfigError::NoKeys);
        }
        let watch = (!files.is_empty())
            .then(|| Mutex::new(Watch::new(config.jwks_reload_every, fixed, files, Instant::now())));
        Ok(Self {
            verifiers: RwLock::new(verifiers),
            rules,
            watch,
            sources: config.sources,
            id_claim: config.id_claim,
            name_claims: config.name_claims,
            max_name_chars: config.max_name_chars,
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
                if rejection.is_issuers_mistake() {
                    estuary_core::throttled!(
                        warn,
                        %rejection,
                        "a JWT signed by a configured key was refused (the visitor is anonymous, 401 where \
                         authentication is required): fix the token's issuer (held_back: refusals since the last line)"
                    );
                } else {
                    tracing::debug!(%rejection, "JWT not accepted; the visitor is anonymous");
                }
                None
            }
        }
    }

    /// Checks a token, saying why it is refused.
    pub fn check(&self, token: &str) -> Result<User, JwtRejection> {
        self.check_at(token, Instant::now())
    }

    /// [`check`](Self::check) at `now`, which decides whether a JWKS file
    /// is due for a check.
    pub(crate) fn check_at(&self, token: &str, now: Instant) -> Result<User, JwtRejection> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtRejection::TooLong);
        }
        let algorithm = header_algorithm(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRejection::Malformed)?;
        if JwtAlgorithm::from_header(header.alg) != Some(algorithm) {
            return Err(JwtRejection::Malformed);
        }
        self.refresh(now, Why::Due);
        let mut verifiers = self.verifiers();
        if let Some(kid) = header.kid.as_deref() {
            let known = verifiers
                .iter()
                .any(|v| v.algorithm == algorithm && v.kid.as_deref() == Some(kid));
            // A JWKS file holds no HMAC key: only a public key can be new.
            if !known
                && algorithm != JwtAlgorithm::HS256
                && self.rules.allows(algorithm)
                && self.refresh(now, Why::UnknownKid)
            {
                verifiers = self.verifiers();
            }
        }
        self.verify(token, algorithm, header.kid.as_deref(), &verifiers)
    }

    /// The keys in use.
    fn verifiers(&self) -> Arc<[Verifier]> {
        Arc::clone(&estuary_core::sync::read(&self.verifiers))
    }

    /// Checks the JWKS files if a check is due at `now` for this reason,
    /// and puts their new keys in use; whether a check was made. The files
    /// are read with no lock held.
    fn refresh(&self, now: Instant, why: Why) -> bool {
        let Some(watch) = &self.watch else {
            return false;
        };
        let pass = estuary_core::sync::lock(watch).begin(now, why);
        // The lock is released: the files are read without it.
        let Some(pass) = pass else {
            return false;
        };
        let found = pass.run(&self.rules);
        let news = {
            let mut watch = estuary_core::sync::lock(watch);
            let (verifiers, news) = watch.finish(found);
            if let Some(verifiers) = verifiers {
                *estuary_core::sync::write(&self.verifiers) = verifiers.into();
            }
            news
        };
        for news in news {
            news.log();
        }
        true
    }

    fn verify(
        &self,
        token: &str,
        algorithm: JwtAlgorithm,
        kid: Option<&str>,
        verifiers: &[Verifier],
    ) -> Result<User, JwtRejection> {
        let of_type: Vec<&Verifier> = verifiers.iter().filter(|v| v.algorithm == algorithm).collect();
        if of_type.is_empty() {
            return Err(JwtRejection::AlgorithmNotAllowed);
        }
        let candidates: Vec<&Verifier> = match kid {
            Some(kid) if of_type.iter().any(|v| v.kid.as_deref() == Some(kid)) => of_type
                .into_iter()
                .filter(|v| v.kid.as_deref() == Some(kid))
                .collect(),
            Some(_) => of_type.into_iter().filter(|v| v.kid.is_none()).collect(),
            None => of_type,
        };
        let mut outcome = Err(JwtRejection::NoKey);
        for verifier in candidates {
            match verifier.decode(token) {
                Ok(claims) => return self.user(claims),
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
        let id = text(&self.id_claim).ok_or(JwtRejection::Claim(JwtClaim::Id))?;
        let name = self
            .name_claims
            .iter()
            .find_map(|c| text(c))
            .unwrap_or_else(|| id.clone());
        check_user_bounds(&id, &name, self.max_name_chars)?;
        let exp = numeric_date(&claims, "exp")?;
        let nbf = numeric_date(&claims, "nbf")?;
        let iat = numeric_date(&claims, "iat")?;
        let now = SystemTime::now();
        let expiry = match exp {
            // The leeway is at most a day: past year 9999 it still fits.
            Some(exp) => Some(exp.checked_add(self.leeway).unwrap_or(exp)),
            None if self.rules.require_exp => return Err(JwtRejection::Claim(JwtClaim::Exp)),
            None => None,
        };
        if expiry.is_some_and(|expiry| expiry <= now) {
            return Err(JwtRejection::Expired);
        }
        let late_now = now.checked_add(self.leeway).unwrap_or(now);
        if nbf.is_some_and(|nbf| nbf > late_now) {
            return Err(JwtRejection::NotYetValid);
        }
        if iat.is_some_and(|iat| iat > late_now) {
            return Err(JwtRejection::IssuedInTheFuture);
        }
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

#[cfg(test)]
mod tests {
    //! The JWKS file's checks as time passes, with the clock given to
    //! `check_at` (the rest of reloading is tested in `tests/jwks_reload.rs`).

    use std::path::{Path, PathBuf};

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::watch::News;

    const RSA1: &[u8] = include_bytes!("../tests/keys/rsa1.pem");
    const RSA2: &[u8] = include_bytes!("../tests/keys/rsa2.pem");

    fn file(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("estuary-jwt-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("jwks.json")
    }

    /// Writes the test keys named by their kid in `tests/keys/jwks.json`,
    /// each under a new kid, to `path` (a temporary file renamed over it).
    fn write_jwks(path: &Path, keys: &[(&str, &str)]) {
        let all: Value = serde_json::from_str(include_str!("../tests/keys/jwks.json")).unwrap();
        let keys: Vec<Value> = keys
            .iter()
            .map(|(kid, original)| {
                let mut key = all["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|k| k["kid"] == *original)
                    .unwrap()
                    .clone();
                key["kid"] = json!(kid);
                key
            })
            .collect();
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, json!({ "keys": keys }).to_string()).unwrap();
        std::fs::rename(&temporary, path).unwrap();
    }

    fn token(alg: jsonwebtoken::Algorithm, key: &EncodingKey, kid: &str) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &json!({"sub": "1"}), key).unwrap()
    }

    fn rs(pem: &[u8], kid: &str) -> String {
        token(
            jsonwebtoken::Algorithm::RS256,
            &EncodingKey::from_rsa_pem(pem).unwrap(),
            kid,
        )
    }

    fn authenticator(path: &Path, every: Duration) -> JwtAuthenticator {
        let config = JwtConfig::new()
            .jwks_file(path)
            .unwrap()
            .hmac_secret(b"a secret".to_vec())
            .unwrap()
            .require_exp(false)
            .jwks_reload_every(every);
        JwtAuthenticator::new(config).unwrap()
    }

    fn passes(jwt: &JwtAuthenticator) -> u64 {
        jwt.watch.as_ref().unwrap().lock().unwrap().passes()
    }

    #[test]
    fn an_unknown_kid_reads_the_file_at_once_but_at_most_once_a_second() {
        let path = file("unknown-kid");
        write_jwks(&path, &[("a", "rsa-one")]);
        let jwt = authenticator(&path, Duration::from_secs(3600));
        let t0 = Instant::now();
        let ms = |ms| t0 + Duration::from_millis(ms);

        write_jwks(&path, &[("b", "rsa-two")]);
        assert!(jwt.check_at(&rs(RSA2, "b"), t0).is_ok());
        assert_eq!(passes(&jwt), 1);

        // Within the second, neither a made-up kid nor A's (published again)
        // makes the file be read.
        write_jwks(&path, &[("a", "rsa-one")]);
        for at in [ms(1), ms(500), ms(999)] {
            assert_eq!(
                jwt.check_at(&rs(RSA1, "junk"), at).err(),
                Some(JwtRejection::NoKey)
            );
            assert_eq!(jwt.check_at(&rs(RSA1, "a"), at).err(), Some(JwtRejection::NoKey));
        }
        assert_eq!(passes(&jwt), 1);
        // A known kid, or an HS256 token's kid (no JWKS file holds an HMAC
        // key), never does.
        let secret = EncodingKey::from_secret(b"a secret");
        let hs256 = token(jsonwebtoken::Algorithm::HS256, &secret, "unknown");
        assert!(jwt.check_at(&hs256, ms(1000)).is_ok());
        assert!(jwt.check_at(&rs(RSA2, "b"), ms(1000)).is_ok());
        assert_eq!(passes(&jwt), 1);

        // A second later, an unknown kid reads the file again.
        assert!(jwt.check_at(&rs(RSA1, "a"), ms(1000)).is_ok());
        assert_eq!(passes(&jwt), 2);
        assert_eq!(
            jwt.check_at(&rs(RSA2, "b"), ms(1001)).err(),
            Some(JwtRejection::NoKey)
        );
        assert_eq!(passes(&jwt), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_known_kid_sees_a_change_once_jwks_reload_every_has_passed() {
        let path = file("due");
        write_jwks(&path, &[("k", "rsa-one")]);
        let jwt = authenticator(&path, Duration::from_secs(10));
        let t0 = Instant::now();
        let s = |s| t0 + Duration::from_secs(s);

        write_jwks(&path, &[("k", "rsa-two")]);
        assert_eq!(
            jwt.check_at(&rs(RSA2, "k"), s(5)).err(),
            Some(JwtRejection::BadSignature)
        );
        assert!(jwt.check_at(&rs(RSA1, "k"), s(5)).is_ok());
        assert_eq!(passes(&jwt), 0);
        assert!(jwt.check_at(&rs(RSA2, "k"), s(10)).is_ok());
        assert_eq!(passes(&jwt), 1);

        write_jwks(&path, &[("k", "rsa-one")]);
        assert_eq!(
            jwt.check_at(&rs(RSA1, "k"), s(19)).err(),
            Some(JwtRejection::BadSignature)
        );
        assert_eq!(passes(&jwt), 1);
        assert!(jwt.check_at(&rs(RSA1, "k"), s(20)).is_ok());
        assert_eq!(passes(&jwt), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_pass_that_ends_after_a_later_one_changes_nothing() {
        let path = file("order");
        write_jwks(&path, &[("a", "rsa-one")]);
        let jwt = authenticator(&path, Duration::ZERO);
        let watch = jwt.watch.as_ref().unwrap();
        let now = Instant::now();

        write_jwks(&path, &[("b", "rsa-two")]);
        let first = watch.lock().unwrap().begin(now, Why::Due).unwrap();
        let found_first = first.run(&jwt.rules);
        write_jwks(&path, &[("c", "rsa-one")]);
        let second = watch.lock().unwrap().begin(now, Why::Due).unwrap();
        let found_second = second.run(&jwt.rules);

        let kids = |verifiers: Vec<Verifier>| -> Vec<Option<String>> {
            verifiers.into_iter().map(|v| v.kid).collect()
        };
        let applied = watch.lock().unwrap().finish(found_second).0.map(kids);
        assert_eq!(applied, Some(vec![None, Some("c".to_owned())]));
        let (stale, news) = watch.lock().unwrap().finish(found_first);
        assert!(stale.is_none() && news.is_empty());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn each_unusable_version_of_the_file_is_reported_once() {
        let path = file("reported");
        write_jwks(&path, &[("a", "rsa-one")]);
        let jwt = authenticator(&path, Duration::ZERO);
        let watch = jwt.watch.as_ref().unwrap();
        let mut at = Instant::now();
        // What a pass reports: (unusable versions, new key sets).
        let mut pass = |why| {
            at += Duration::from_secs(1);
            let found = watch.lock().unwrap().begin(at, why).unwrap().run(&jwt.rules);
            let (_, news) = watch.lock().unwrap().finish(found);
            let unusable = news.iter().filter(|n| matches!(n, News::Unusable { .. })).count();
            (unusable, news.len() - unusable)
        };

        std::fs::write(&path, "{\"keys\": [").unwrap();
        assert_eq!(pass(Why::Due), (1, 0));
        // Read again (a token with an unknown kid reads whatever the
        // metadata says): the same version, not reported again.
        assert_eq!(pass(Why::UnknownKid), (0, 0));
        assert_eq!(pass(Why::Due), (0, 0));
        std::fs::write(&path, "[]").unwrap();
        assert_eq!(pass(Why::Due), (1, 0));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(pass(Why::Due), (1, 0));
        assert_eq!(pass(Why::UnknownKid), (0, 0));
        assert_eq!(pass(Why::Due), (0, 0));
        write_jwks(&path, &[("b", "rsa-two")]);
        assert_eq!(pass(Why::Due), (0, 1));
        assert_eq!(pass(Why::Due), (0, 0));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
