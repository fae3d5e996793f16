//! [`JwtSettings`]: the JWT configuration as a file holds it (`[auth.jwt]`
//! of `estuary serve`: key files, not keys), and [`JwtConfig`]'s serde
//! form.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{JwtConfig, JwtConfigError};

/// A [`JwtConfig`] as plain values, the form serde reads and writes
/// (`[auth.jwt]` of `estuary serve`'s TOML file): an HMAC secret, PEM key
/// files and a JWKS file, and the claims required. Turned into a
/// `JwtConfig` by [`TryFrom`], which reads the files and runs the builder's
/// checks; `JwtConfig` deserializes through it, so that an invalid key is
/// an error naming its key. At least one key is needed.
///
/// ```
/// use estuary_jwt::{JwtConfig, JwtSettings};
///
/// let config: JwtConfig = toml::from_str(
///     r#"
///     hmac_secret = "a long random secret"
///     audience = "chat"
///     leeway = 5
///     "#,
/// )?;
///
/// let error = toml::from_str::<JwtConfig>(r#"rsa_public_key_file = "/nonexistent.pem""#)
///     .unwrap_err()
///     .to_string();
/// assert!(error.contains("rsa_public_key_file: cannot read /nonexistent.pem"), "{error}");
/// let error = toml::from_str::<JwtConfig>(r#"hmac_secret = """#).unwrap_err().to_string();
/// assert!(error.contains("hmac_secret: the HMAC secret is empty"), "{error}");
///
/// // The same values, as plain data.
/// let settings = JwtSettings { hmac_secret: Some("a long random secret".into()), ..JwtSettings::default() };
/// let config = JwtConfig::try_from(settings)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// An HS256 secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    /// A PEM file with an RSA public key (RS256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsa_public_key_file: Option<PathBuf>,
    /// A PEM file with a P-256 public key (ES256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec_public_key_file: Option<PathBuf>,
    /// A JWKS file (keys chosen by `kid`), re-read when it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Seconds between checks of `jwks_file` for a change (default 30; a
    /// token naming an unknown `kid` also checks, at most once a second);
    /// 0: read once, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_reload_every: Option<u64>,
    /// The `aud` a token must carry, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The `iss` a token must carry, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf` (default 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leeway: Option<u64>,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("hmac_secret", &self.hmac_secret.as_ref().map(|_| "<redacted>"))
            .field("rsa_public_key_file", &self.rsa_public_key_file)
            .field("ec_public_key_file", &self.ec_public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("jwks_reload_every", &self.jwks_reload_every)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// Why [`JwtSettings`] do not make a [`JwtConfig`].
#[derive(Debug, thiserror::Error)]
pub enum JwtSettingsError {
    /// A key's value is wrong: a file that cannot be read, a key that does
    /// not parse, an empty secret.
    #[error("{key}: {source}")]
    Invalid {
        /// The key (`hmac_secret`, `rsa_public_key_file`, `jwks_file` ...).
        key: &'static str,
        /// What is wrong with it.
        #[source]
        source: JwtConfigError,
    },
    /// None of the keys that give a key is set.
    #[error("no key: set hmac_secret, rsa_public_key_file, ec_public_key_file or jwks_file")]
    NoKey,
}

/// The PEM file at `path`, or an error naming it.
fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, JwtConfigError> {
    std::fs::read(path).map_err(|source| JwtConfigError::KeyFile {
        path: path.to_owned(),
        source,
    })
}

impl TryFrom<JwtSettings> for JwtConfig {
    type Error = JwtSettingsError;

    fn try_from(s: JwtSettings) -> Result<Self, Self::Error> {
        let at = |key: &'static str| move |source: JwtConfigError| JwtSettingsError::Invalid { key, source };
        let mut config = JwtConfig::new();
        let mut keys = 0;
        if let Some(secret) = s.hmac_secret {
            config = config
                .hmac_secret(secret.into_bytes())
                .map_err(at("hmac_secret"))?;
            keys += 1;
        }
        if let Some(path) = &s.rsa_public_key_file {
            let pem = read_pem(path).map_err(at("rsa_public_key_file"))?;
            config = config.rsa_pem(&pem, None).map_err(at("rsa_public_key_file"))?;
            keys += 1;
        }
        if let Some(path) = &s.ec_public_key_file {
            let pem = read_pem(path).map_err(at("ec_public_key_file"))?;
            config = config.ec_pem(&pem, None).map_err(at("ec_public_key_file"))?;
            keys += 1;
        }
        if let Some(path) = &s.jwks_file {
            config = match s.jwks_reload_every {
                Some(0) => {
                    let json = std::fs::read_to_string(path)
                        .map_err(|source| JwtConfigError::JwksFile {
                            path: path.clone(),
                            source,
                        })
                        .map_err(at("jwks_file"))?;
                    config.jwks_json(&json).map_err(at("jwks_file"))?
                }
                Some(seconds) => config
                    .jwks_file(path)
                    .map_err(at("jwks_file"))?
                    .jwks_reload_every(Duration::from_secs(seconds)),
                None => config.jwks_file(path).map_err(at("jwks_file"))?,
            };
            keys += 1;
        }
        if keys == 0 {
            return Err(JwtSettingsError::NoKey);
        }
        if let Some(audience) = s.audience {
            config = config.audience(audience);
        }
        if let Some(issuer) = s.issuer {
            config = config.issuer(issuer);
        }
        if let Some(leeway) = s.leeway {
            config = config.leeway(Duration::from_secs(leeway));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of the settings `text` (TOML), as text.
    fn error(text: &str) -> String {
        match toml::from_str::<JwtConfig>(text) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn an_invalid_value_names_its_key() {
        let dir = std::env::temp_dir().join(format!("estuary-jwt-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "not a key").unwrap();
        let not_jwks = dir.join("not.json");
        std::fs::write(&not_jwks, "{}").unwrap();

        assert!(error("").contains("no key: set hmac_secret"));
        assert!(error("hmac_secret = \"\"").contains("hmac_secret: the HMAC secret is empty"));
        let rsa = error(&format!(
            "rsa_public_key_file = {:?}",
            not_pem.display().to_string()
        ));
        assert!(
            rsa.contains("rsa_public_key_file: invalid RS256 public key"),
            "{rsa}"
        );
        let ec = error(&format!(
            "ec_public_key_file = {:?}",
            not_pem.display().to_string()
        ));
        assert!(
            ec.contains("ec_public_key_file: invalid ES256 public key"),
            "{ec}"
        );
        let missing = error("ec_public_key_file = \"/nonexistent/key.pem\"");
        assert!(
            missing.contains("ec_public_key_file: cannot read /nonexistent/key.pem"),
            "{missing}"
        );
        for reload in ["", "\njwks_reload_every = 0"] {
            let jwks = error(&format!(
                "jwks_file = {:?}{reload}",
                not_jwks.display().to_string()
            ));
            assert!(jwks.contains("jwks_file: invalid JWKS"), "{jwks}");
        }
        assert!(error("hmac_secret = \"s\"\nleeway = -1").contains("leeway"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings_become_the_config() {
        let settings = JwtSettings {
            hmac_secret: Some("a long random secret".into()),
            audience: Some("chat".into()),
            issuer: Some("https://auth.example.com/".into()),
            leeway: Some(5),
            ..JwtSettings::default()
        };
        let text = toml::to_string(&settings).unwrap();
        assert_eq!(toml::from_str::<JwtSettings>(&text).unwrap(), settings);
        let config = JwtConfig::try_from(settings.clone()).unwrap();
        assert_eq!(config.leeway, Duration::from_secs(5));
        assert_eq!(config.audience, Some(vec!["chat".to_owned()]));
        assert!(
            !format!("{settings:?}").contains("random"),
            "the secret is not in Debug"
        );
    }
}
