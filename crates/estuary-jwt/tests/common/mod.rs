//! Tokens minted for the tests: HS256 with a secret, RS256 and ES256 with
//! the fixed test keys in `tests/keys/`.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use estuary_jwt::JwtConfig;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

pub const SECRET: &[u8] = b"estuary-jwt test secret, 32 bytes+";
pub const AUD: &str = "estuary-chat";
pub const ISS: &str = "https://auth.test/";

pub const RSA1: &[u8] = include_bytes!("../keys/rsa1.pem");
pub const RSA1_PUB: &[u8] = include_bytes!("../keys/rsa1.pub.pem");
pub const RSA2: &[u8] = include_bytes!("../keys/rsa2.pem");
pub const EC1: &[u8] = include_bytes!("../keys/ec1.pem");
pub const EC1_PUB: &[u8] = include_bytes!("../keys/ec1.pub.pem");

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn claims() -> serde_json::Value {
    json!({
        "sub": "42", "name": "alice", "aud": [AUD, "other"], "iss": ISS,
        "iat": now(), "nbf": now() - 10, "exp": now() + 600,
    })
}

pub fn with(mut claims: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    claims[key] = value;
    claims
}

pub fn without(mut claims: serde_json::Value, key: &str) -> serde_json::Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

pub fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn hs(claims: &serde_json::Value) -> String {
    sign(Algorithm::HS256, None, &EncodingKey::from_secret(SECRET), claims)
}

pub fn rs(pem: &[u8], kid: Option<&str>, claims: &serde_json::Value) -> String {
    sign(
        Algorithm::RS256,
        kid,
        &EncodingKey::from_rsa_pem(pem).unwrap(),
        claims,
    )
}

pub fn es(kid: Option<&str>, claims: &serde_json::Value) -> String {
    sign(
        Algorithm::ES256,
        kid,
        &EncodingKey::from_ec_pem(EC1).unwrap(),
        claims,
    )
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `alg: none`, no signature.
pub fn unsigned(claims: &serde_json::Value) -> String {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", b64(claims.to_string().as_bytes()))
}

/// HS256 with the secret, RS256 with `rsa1`, ES256 with `ec1`; leeway 0 so
/// that expiry is exact.
pub fn main_config() -> JwtConfig {
    JwtConfig::new()
        .hmac_secret(SECRET.to_vec())
        .unwrap()
        .rsa_pem(RSA1_PUB, None)
        .unwrap()
        .ec_pem(EC1_PUB, None)
        .unwrap()
        .audience(AUD)
        .issuer(ISS)
        .leeway(Duration::ZERO)
}
