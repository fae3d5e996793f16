//! JWTs as Estuary checks them (`estuary-jwt`): hostile tokens (three
//! base64url parts, bad JSON, huge numbers, odd `alg` and `kid`) and hostile
//! JWKS documents must never panic the server.
//!
//! Input: text, used four ways: as a token, checked by an authenticator
//! that holds an HS256 secret, an RSA and an EC key; as the claims of a
//! token signed here with the secret, so that the mutations reach the claim
//! checks and the mapping to a user behind a valid signature; as the header
//! of a token so signed (`alg`, `kid`, `typ`); and as a JWKS document, whose
//! keys, if it is one, then check a token.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use estuary_jwt::{JwtAuthenticator, JwtConfig, parse_jwks};
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::{Trail, text};

const SECRET: &[u8] = b"fuzz-jwt-secret";
const RSA_PUB: &[u8] = include_bytes!("../../../crates/estuary-jwt/tests/keys/rsa1.pub.pem");
const EC_PUB: &[u8] = include_bytes!("../../../crates/estuary-jwt/tests/keys/ec1.pub.pem");
/// Tokens of the right shape for RS256 (kid `k1`) and ES256, signed with
/// nothing: checked against the keys of a fuzzed JWKS, so that odd key
/// material (a tiny exponent, a point off the curve) meets the verifier.
const KEYLESS_SHAPES: [&str; 2] = [
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiIxIn0.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn-AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq-wsbKztLW2t7i5uru8vb6_wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t_g4eLj5OXm5-jp6uvs7e7v8PHy8_T19vf4-fr7_P3-_w",
    "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4_QA",
];

fn authenticator() -> &'static JwtAuthenticator {
    static JWT: OnceLock<JwtAuthenticator> = OnceLock::new();
    JWT.get_or_init(|| {
        let config = JwtConfig::new()
            .hmac_secret(SECRET.to_vec())
            .and_then(|c| c.rsa_pem(RSA_PUB, Some("rsa")))
            .and_then(|c| c.ec_pem(EC_PUB, Some("ec")))
            .expect("the fuzz keys load")
            .audience("fuzz")
            .issuer("https://fuzz.test/");
        JwtAuthenticator::new(config).expect("the fuzz config is valid")
    })
}

fn signed(header: &[u8], claims: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .expect("HMAC signs anything");
    format!("{message}.{signature}")
}

fn check(trail: &mut Trail, jwt: &JwtAuthenticator, token: &str) -> Option<estuary_core::User> {
    let checked = jwt.check(token);
    assert_eq!(
        jwt.validate(token).map(|u| u.id().to_owned()),
        checked.as_ref().ok().map(|u| u.id().to_owned()),
        "validate agrees with check"
    );
    trail.note(checked.as_ref().err());
    if let Ok(user) = &checked {
        assert!(!user.id().is_empty(), "an accepted user has an id");
        assert!(!user.name().is_empty(), "an accepted user has a name");
    }
    checked.ok()
}

/// Runs one input.
pub fn run(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let raw = text(data);
    let jwt = authenticator();

    // The input as a token.
    check(&mut trail, jwt, raw.trim());

    // The input as claims behind a valid HS256 signature.
    let token = signed(br#"{"alg":"HS256","typ":"JWT"}"#, raw.as_bytes());
    if let Some(user) = check(&mut trail, jwt, &token) {
        trail.note("signed claims accepted");
        let claims: serde_json::Value = serde_json::from_str(&raw).expect("accepted claims are JSON");
        assert_eq!(
            Some(user.attributes()),
            claims.as_object(),
            "every claim is an attribute"
        );
        // The same claims unsigned (`alg: none`) or re-signed under another
        // secret are refused.
        let (message, _) = token.rsplit_once('.').expect("three parts");
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            message.split_once('.').expect("two parts").1
        );
        assert!(jwt.validate(&none).is_none(), "alg none is refused");
        let forged = format!("{message}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert!(jwt.validate(&forged).is_none(), "a forged signature is refused");
    }

    // The input as the header of a signed token with good claims.
    let claims = br#"{"sub":"1","aud":"fuzz","iss":"https://fuzz.test/","exp":4102444800}"#;
    let token = signed(raw.as_bytes(), claims);
    if check(&mut trail, jwt, &token).is_some() {
        trail.note("signed header accepted");
    }

    // The input as a JWKS document; its keys check a token.
    match parse_jwks(&raw) {
        Ok(jwks) => {
            trail.note((jwks.len(), jwks.skipped()));
            let config = JwtConfig::new()
                .jwks_json(&raw)
                .expect("a JWKS that parses loads");
            if let Ok(from_jwks) = JwtAuthenticator::new(config) {
                for token in KEYLESS_SHAPES {
                    assert!(
                        check(&mut trail, &from_jwks, token).is_none(),
                        "an unsigned token is refused"
                    );
                }
            }
        }
        Err(e) => trail.note(e.to_string()),
    }
    trail.finish()
}

/// Tokens of JWTs and JWKS documents.
pub const DICTIONARY: &[&[u8]] = &[
    b".",
    b"eyJ",
    b"\"alg\":",
    b"\"none\"",
    b"\"HS256\"",
    b"\"RS256\"",
    b"\"ES256\"",
    b"\"kid\":",
    b"\"exp\":",
    b"\"nbf\":",
    b"\"aud\":",
    b"\"iss\":",
    b"\"sub\":",
    b"\"fuzz\"",
    b"\"https://fuzz.test/\"",
    b"4102444800",
    b"18446744073709551616",
    b"1e400",
    b"-1",
    b"\"keys\":",
    b"\"kty\":\"RSA\"",
    b"\"kty\":\"EC\"",
    b"\"crv\":\"P-256\"",
    b"\"n\":",
    b"\"e\":\"AQAB\"",
    b"\"x\":",
    b"\"y\":",
    b"-_",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_reach_an_accepted_token() {
        let jwt = authenticator();
        let valid = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/corpus/jwt/seed-token-valid"
        ))
        .unwrap();
        assert_eq!(
            jwt.validate(valid.trim()).map(|u| u.name().to_owned()).as_deref(),
            Some("alice")
        );
        let claims = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/corpus/jwt/seed-claims-valid"
        ))
        .unwrap();
        let token = signed(br#"{"alg":"HS256"}"#, claims.as_bytes());
        assert_eq!(
            jwt.validate(&token).map(|u| u.name().to_owned()).as_deref(),
            Some("alice")
        );
        let jwks = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/corpus/jwt/seed-jwks-test-keys"
        ))
        .unwrap();
        assert_eq!(parse_jwks(&jwks).unwrap().len(), 3);
    }
}
