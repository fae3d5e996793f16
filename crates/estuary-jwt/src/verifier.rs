//! A key ready to verify tokens ([`Verifier`]), made by the [`Rules`] of a
//! configuration: for the configuration's keys and a JWKS file's alike.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::key::{JwtAlgorithm, Key};

/// A key ready to verify, with the validation rules for its algorithm.
#[derive(Clone)]
pub(crate) struct Verifier {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: JwtAlgorithm,
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl Verifier {
    /// The token's claims, if its signature verifies with this key and its
    /// `aud` and `iss` pass.
    pub(crate) fn decode(&self, token: &str) -> Result<Map<String, Value>, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation).map(|data| data.claims)
    }
}

/// What makes a key a [`Verifier`]: the algorithms allowed and the claims
/// checked. The same for the keys of the configuration and those of a JWKS
/// file read again.
pub(crate) struct Rules {
    pub(crate) algorithms: Option<Vec<JwtAlgorithm>>,
    pub(crate) leeway: Duration,
    pub(crate) require_exp: bool,
    pub(crate) audience: Option<Vec<String>>,
    pub(crate) issuer: Option<Vec<String>>,
}

impl Rules {
    pub(crate) fn allows(&self, algorithm: JwtAlgorithm) -> bool {
        self.algorithms.as_ref().is_none_or(|a| a.contains(&algorithm))
    }

    /// The verifier of a key, if its algorithm is allowed.
    pub(crate) fn verifier(&self, Key { kid, algorithm, key }: Key) -> Option<Verifier> {
        if !self.allows(algorithm) {
            return None;
        }
        let mut validation = jsonwebtoken::Validation::new(algorithm.to_jsonwebtoken());
        validation.leeway = self.leeway.as_secs();
        // `exp`, `nbf` and `iat` are checked by `JwtAuthenticator::user`,
        // which reads every numeric form (this crate rounds a fraction, and
        // a claim it cannot read would be ignored where it is optional).
        validation.validate_nbf = false;
        validation.validate_exp = false;
        let mut required = Vec::new();
        match &self.audience {
            Some(audience) => {
                validation.set_audience(audience);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(issuer);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Some(Verifier {
            kid,
            algorithm,
            key,
            validation,
        })
    }
}
