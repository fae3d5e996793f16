//! The key types: the algorithms a token may use, and a verification key
//! (from the configuration or a JWKS file).

/// A signature algorithm a token may use. `none` and the algorithms not
/// listed here are not representable, so never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256, with a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, with an RSA public key.
    RS256,
    /// ECDSA on P-256 with SHA-256, with an EC public key.
    ES256,
}

impl JwtAlgorithm {
    /// The name in a token's header (`"HS256"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
        }
    }

    /// The algorithm of a header's `alg` name, if it is one of these
    /// (exactly: `"none"`, `"hs256"` and `"HS384"` are not).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::HS256, Self::RS256, Self::ES256]
            .into_iter()
            .find(|a| a.as_str() == name)
    }

    pub(crate) fn from_header(alg: jsonwebtoken::Algorithm) -> Option<Self> {
        match alg {
            jsonwebtoken::Algorithm::HS256 => Some(Self::HS256),
            jsonwebtoken::Algorithm::RS256 => Some(Self::RS256),
            jsonwebtoken::Algorithm::ES256 => Some(Self::ES256),
            _ => None,
        }
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// A verification key, with the algorithm it serves (its type decides it:
/// a secret is HS256 only, an RSA key RS256 only, an EC key ES256 only).
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: JwtAlgorithm,
    pub(crate) key: jsonwebtoken::DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}
