//! JSON Web Key Sets (RFC 7517): the verification keys an identity
//! provider publishes, read here for RS256 and ES256 (P-256).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::key::{JwtAlgorithm, Key};

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The keys read from a JWKS document by [`parse_jwks`].
#[derive(Debug, Clone)]
pub struct Jwks {
    pub(crate) keys: Vec<Key>,
    skipped: usize,
}

impl Jwks {
    /// How many keys were read.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key was read.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids read (`None` for a key without `kid`), in order.
    pub fn kids(&self) -> impl Iterator<Item = Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref())
    }

    /// How many keys were skipped (another type, curve or use).
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// Why a JWKS document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or not an object with a `keys` array.
    #[error("not a JWKS document (an object with a \"keys\" array)")]
    NotJwks,
    /// The key at `index` is malformed (a field missing, not base64url, the
    /// wrong size).
    #[error("key {index}: {reason}")]
    BadKey {
        /// Its position in `keys`.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn field<'a>(key: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    key.get(name).and_then(Value::as_str)
}

fn b64(key: &serde_json::Map<String, Value>, name: &str, index: usize) -> Result<Vec<u8>, JwksError> {
    let text = field(key, name).ok_or(JwksError::BadKey {
        index,
        reason: "a key field is missing or not a string",
    })?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| JwksError::BadKey {
            index,
            reason: "a key field is not base64url",
        })
}

/// Reads a JWKS document: `{"keys": [...]}`. RSA keys (`kty: "RSA"`, `n`,
/// `e`, at least [`MIN_RSA_BITS`] bits) serve RS256 and EC keys
/// (`kty: "EC"`, `crv: "P-256"`, `x`, `y`) serve ES256; their `kid` names
/// them. Keys of another type or curve, with `use` other than `sig`, or an
/// `alg` other than the one their type serves are skipped; a key of a
/// supported type that is malformed is an error.
///
/// ```
/// let jwks = estuary_jwt::parse_jwks(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#)?;
/// assert!(jwks.is_empty());
/// assert_eq!(jwks.skipped(), 1);
/// # Ok::<(), estuary_jwt::JwksError>(())
/// ```
pub fn parse_jwks(json: &str) -> Result<Jwks, JwksError> {
    let document: Value = serde_json::from_str(json).map_err(|_| JwksError::NotJwks)?;
    let list = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NotJwks)?;
    let mut jwks = Jwks {
        keys: Vec::new(),
        skipped: 0,
    };
    for (index, entry) in list.iter().enumerate() {
        let Some(key) = entry.as_object() else {
            return Err(JwksError::BadKey {
                index,
                reason: "not an object",
            });
        };
        let algorithm = match (field(key, "kty"), field(key, "crv")) {
            (Some("RSA"), _) => JwtAlgorithm::RS256,
            (Some("EC"), Some("P-256")) => JwtAlgorithm::ES256,
            _ => {
                jwks.skipped += 1;
                continue;
            }
        };
        let wrong_use = key.get("use").is_some_and(|u| u.as_str() != Some("sig"));
        let wrong_alg = key
            .get("alg")
            .is_some_and(|a| a.as_str() != Some(algorithm.as_str()));
        if wrong_use || wrong_alg {
            jwks.skipped += 1;
            continue;
        }
        let decoding = match algorithm {
            JwtAlgorithm::RS256 => {
                let n = b64(key, "n", index)?;
                let e = b64(key, "e", index)?;
                let n_bits = n.iter().position(|&b| b != 0).map_or(0, |i| (n.len() - i) * 8);
                if n_bits < MIN_RSA_BITS || n.len() > 2048 {
                    return Err(JwksError::BadKey {
                        index,
                        reason: "the RSA modulus is too small or too large",
                    });
                }
                if e.is_empty() || e.len() > 8 || e.iter().all(|&b| b == 0) {
                    return Err(JwksError::BadKey {
                        index,
                        reason: "the RSA exponent is not valid",
                    });
                }
                jsonwebtoken::DecodingKey::from_rsa_raw_components(&n, &e)
            }
            _ => {
                let x = b64(key, "x", index)?;
                let y = b64(key, "y", index)?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(JwksError::BadKey {
                        index,
                        reason: "a P-256 coordinate is not 32 bytes",
                    });
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                jsonwebtoken::DecodingKey::from_ec_der(&point)
            }
        };
        let kid = key.get("kid").and_then(Value::as_str).map(str::to_owned);
        jwks.keys.push(Key {
            kid,
            algorithm,
            key: decoding,
        });
    }
    Ok(jwks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_jwks_reads_three_keys_by_kid() {
        let jwks = parse_jwks(include_str!("../tests/keys/jwks.json")).unwrap();
        let kids: Vec<_> = jwks.kids().collect();
        assert_eq!(kids, [Some("rsa-one"), Some("rsa-two"), Some("ec-one")]);
        assert_eq!(jwks.keys[2].algorithm, JwtAlgorithm::ES256);
    }

    #[test]
    fn hostile_documents_are_errors_not_panics() {
        for doc in [
            "",
            "[]",
            "{\"keys\": 1}",
            "{\"keys\": [1]}",
            "{\"keys\": [{\"kty\": \"RSA\"}]}",
            "{\"keys\": [{\"kty\": \"RSA\", \"n\": \"AQAB\", \"e\": \"AQAB\"}]}",
            "{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AA\", \"y\": \"!!\"}]}",
        ] {
            assert!(parse_jwks(doc).is_err(), "{doc}");
        }
        let skipped = parse_jwks(
            "{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-384\"}, {\"kty\": \"RSA\", \"use\": \"enc\"}]}",
        )
        .unwrap();
        assert_eq!((skipped.len(), skipped.skipped()), (0, 2));
    }

    #[test]
    fn a_point_off_the_curve_loads_but_verifies_nothing() {
        let zero = "A".repeat(43);
        let doc = format!(r#"{{"keys": [{{"kty": "EC", "crv": "P-256", "x": "{zero}", "y": "{zero}"}}]}}"#);
        let config = crate::JwtConfig::new()
            .jwks_json(&doc)
            .unwrap()
            .require_exp(false);
        let jwt = crate::JwtAuthenticator::new(config).unwrap();
        // {"alg":"ES256"}.{"sub":"1"}.<64 bytes>
        let token = format!("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.{}", "A".repeat(86));
        assert_eq!(jwt.check(&token).err(), Some(crate::JwtRejection::BadSignature));
    }
}
