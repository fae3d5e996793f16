//! A JWKS file rewritten while the authenticator runs (key rotation without
//! a restart): a new key is used at once by the token that names it, a
//! removed key stops verifying, a broken rewrite keeps the previous keys,
//! and the keys given in configuration stay. Files are rewritten as
//! rotation tools do (a temporary file renamed over the old one) and in
//! place. The rate limit of the unknown-`kid` check, which needs time to
//! pass, is tested with a clock given as a parameter in `src/watch.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use estuary_jwt::{JwtAuthenticator, JwtConfig, JwtRejection};
use serde_json::{Value, json};

mod common;
use common::*;

/// A directory of its own for each test, under the target directory.
fn dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("jwks-reload-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A JWKS document with the test keys named by their kid in
/// `tests/keys/jwks.json` (`rsa-one`, `rsa-two`, `ec-one`), each under a
/// new kid: `[("a", "rsa-one")]`.
fn jwks(keys: &[(&str, &str)]) -> String {
    let all: Value = serde_json::from_str(include_str!("keys/jwks.json")).unwrap();
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
    json!({ "keys": keys }).to_string()
}

/// Writes a new version as rotation tools do: a temporary file, renamed
/// over the old one, so that no reader sees half of it.
fn replace(path: &Path, content: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, content).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Writes a new version in place (the same inode, truncated and written).
fn overwrite(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
}

fn config(path: &Path) -> JwtConfig {
    JwtConfig::new()
        .jwks_file(path)
        .unwrap()
        .audience(AUD)
        .issuer(ISS)
}

/// RS256 tokens by `rsa1` (key A) and `rsa2` (key B), naming `kid`.
fn by_a(kid: &str) -> String {
    rs(RSA1, Some(kid), &claims())
}

fn by_b(kid: &str) -> String {
    rs(RSA2, Some(kid), &claims())
}

#[test]
fn a_new_key_is_used_at_once_and_a_removed_one_stops_verifying() {
    let path = dir("rotation").join("jwks.json");
    replace(&path, &jwks(&[("a", "rsa-one")]));
    // The default: a change is looked for every 30 s, and at once for an
    // unknown kid.
    let jwt = JwtAuthenticator::new(config(&path)).unwrap();
    assert_eq!(jwt.check(&by_a("a")).unwrap().id(), "42");

    replace(&path, &jwks(&[("b", "rsa-two")]));
    // B's kid is unknown: the file is read at once.
    assert_eq!(jwt.check(&by_b("b")).unwrap().id(), "42");
    // A went with the old file.
    assert_eq!(jwt.check(&by_a("a")).err(), Some(JwtRejection::NoKey));

    // Revocation of a key whose kid is still known is seen at the next
    // check: on every token with Duration::ZERO, after 30 s by default.
    replace(&path, &jwks(&[("a", "rsa-one"), ("b", "rsa-two")]));
    let every_token = JwtAuthenticator::new(config(&path).jwks_reload_every(Duration::ZERO)).unwrap();
    let by_default = JwtAuthenticator::new(config(&path)).unwrap();
    for jwt in [&every_token, &by_default] {
        assert!(jwt.check(&by_a("a")).is_ok());
        assert!(jwt.check(&by_b("b")).is_ok());
    }
    overwrite(&path, &jwks(&[("b", "rsa-two")]));
    assert_eq!(every_token.check(&by_a("a")).err(), Some(JwtRejection::NoKey));
    assert!(every_token.check(&by_b("b")).is_ok());
    assert!(
        by_default.check(&by_a("a")).is_ok(),
        "not checked again before 30 s"
    );
}

#[test]
fn a_rewrite_of_the_same_length_and_modification_time_is_seen() {
    let path = dir("same-stamp").join("jwks.json");
    // RSA keys of the same size under kids of the same length: the two
    // documents are the same length.
    let (first, second) = (jwks(&[("k", "rsa-one")]), jwks(&[("k", "rsa-two")]));
    assert_eq!(first.len(), second.len());
    overwrite(&path, &first);
    let jwt = JwtAuthenticator::new(config(&path).jwks_reload_every(Duration::ZERO)).unwrap();
    assert!(jwt.check(&by_a("k")).is_ok());

    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    overwrite(&path, &second);
    // As a tool that keeps the modification time would leave it.
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    assert_eq!(jwt.check(&by_a("k")).err(), Some(JwtRejection::BadSignature));
    assert!(jwt.check(&by_b("k")).is_ok());
}

#[test]
fn a_broken_rewrite_keeps_the_previous_keys_until_the_file_is_fixed() {
    let path = dir("broken").join("jwks.json");
    replace(&path, &jwks(&[("a", "rsa-one")]));
    let jwt = JwtAuthenticator::new(config(&path).jwks_reload_every(Duration::ZERO)).unwrap();
    assert!(jwt.check(&by_a("a")).is_ok());

    let broken = [
        "{\"keys\": [",                                          // not JSON (half written)
        "{\"keys\": [{\"kty\": \"RSA\", \"n\": \"AQAB\"}]}",     // a malformed key
        "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}", // no usable key
        "{\"keys\": []}",                                        // no key at all
    ];
    for content in broken {
        replace(&path, content);
        assert!(jwt.check(&by_a("a")).is_ok(), "A kept after {content}");
        // Checked twice: the same broken version is not read as new.
        assert!(jwt.check(&by_a("a")).is_ok(), "A kept after {content}");
    }
    overwrite(&path, "not JSON either");
    assert!(jwt.check(&by_a("a")).is_ok());
    std::fs::remove_file(&path).unwrap();
    assert!(jwt.check(&by_a("a")).is_ok(), "A kept while the file is missing");
    assert!(jwt.check(&by_a("a")).is_ok());
    assert_eq!(jwt.check(&by_b("b")).err(), Some(JwtRejection::NoKey));

    // Fixed: the new version is read.
    overwrite(&path, &jwks(&[("b", "rsa-two")]));
    assert!(jwt.check(&by_b("b")).is_ok());
    assert_eq!(jwt.check(&by_a("a")).err(), Some(JwtRejection::NoKey));
    // And broken again, then fixed again.
    replace(&path, "[]");
    assert!(jwt.check(&by_b("b")).is_ok());
    replace(&path, &jwks(&[("a", "rsa-one")]));
    assert!(jwt.check(&by_a("a")).is_ok());
    assert_eq!(jwt.check(&by_b("b")).err(), Some(JwtRejection::NoKey));
}

#[test]
fn keys_from_the_configuration_stay_across_reloads() {
    let path = dir("configured").join("jwks.json");
    replace(&path, &jwks(&[("a", "rsa-one")]));
    let config = config(&path)
        .hmac_secret(SECRET.to_vec())
        .unwrap()
        .ec_pem(EC1_PUB, Some("pem-ec"))
        .unwrap()
        .jwks_reload_every(Duration::ZERO);
    let jwt = JwtAuthenticator::new(config).unwrap();
    let hs256 = hs(&claims());
    let es256 = es(Some("pem-ec"), &claims());
    assert!(jwt.check(&hs256).is_ok());
    assert!(jwt.check(&es256).is_ok());
    assert!(jwt.check(&by_a("a")).is_ok());

    replace(&path, &jwks(&[("b", "rsa-two")]));
    assert!(jwt.check(&by_b("b")).is_ok());
    assert_eq!(jwt.check(&by_a("a")).err(), Some(JwtRejection::NoKey));
    assert!(jwt.check(&hs256).is_ok());
    assert!(jwt.check(&es256).is_ok());

    replace(&path, "broken");
    std::fs::remove_file(&path).unwrap();
    assert!(jwt.check(&hs256).is_ok());
    assert!(jwt.check(&es256).is_ok());
    assert!(jwt.check(&by_b("b")).is_ok());
}

#[test]
fn reloaded_keys_follow_the_allowed_algorithms_and_claims() {
    let path = dir("rules").join("jwks.json");
    replace(&path, &jwks(&[("a", "rsa-one")]));
    let config = config(&path)
        .algorithms([estuary_jwt::JwtAlgorithm::RS256])
        .jwks_reload_every(Duration::ZERO);
    let jwt = JwtAuthenticator::new(config).unwrap();

    // Only an EC key, which RS256 alone does not allow: no usable key, A
    // stays.
    replace(&path, &jwks(&[("e", "ec-one")]));
    assert!(jwt.check(&by_a("a")).is_ok());
    assert_eq!(
        jwt.check(&es(Some("e"), &claims())).err(),
        Some(JwtRejection::AlgorithmNotAllowed)
    );

    // A reloaded key checks the configured audience like the first ones.
    replace(&path, &jwks(&[("b", "rsa-two"), ("e", "ec-one")]));
    let elsewhere = with(claims(), "aud", json!("elsewhere"));
    assert_eq!(
        jwt.check(&rs(RSA2, Some("b"), &elsewhere)).err(),
        Some(JwtRejection::WrongAudience)
    );
    assert!(jwt.check(&by_b("b")).is_ok());
    assert_eq!(
        jwt.check(&es(Some("e"), &claims())).err(),
        Some(JwtRejection::AlgorithmNotAllowed)
    );
}

#[test]
fn a_file_that_cannot_be_read_at_first_is_an_error() {
    let path = dir("first").join("jwks.json");
    let missing = JwtConfig::new().jwks_file(&path).err();
    assert!(
        matches!(&missing, Some(estuary_jwt::JwtConfigError::JwksFile { path: at, .. }) if *at == path),
        "{missing:?}"
    );
    let text = missing.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.starts_with(&format!("cannot read the JWKS file {}: ", path.display())),
        "{text}"
    );
    replace(&path, "{}");
    assert!(matches!(
        JwtConfig::new().jwks_file(&path),
        Err(estuary_jwt::JwtConfigError::Jwks(_))
    ));
}
