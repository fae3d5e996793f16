//! Why a token is refused (`JwtAuthenticator::check`), so that the TCP
//! tests' anonymous visitors are anonymous for the reason each case names;
//! how claims become the user; and where the token is read from, in order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use estuary_jwt::{JwtAlgorithm, JwtAuthenticator, JwtClaim, JwtConfig, JwtRejection, TokenSource};
use estuary_server::{Authenticator, Handshake, UserBoundsError};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

mod common;
use common::*;

fn jwt() -> JwtAuthenticator {
    JwtAuthenticator::new(main_config()).unwrap()
}

#[test]
fn each_invalid_token_is_refused_for_its_reason() {
    let jwt = jwt();
    let c = claims();
    let cases = [
        (
            hs(&with(c.clone(), "exp", json!(now() - 60))),
            JwtRejection::Expired,
        ),
        (
            hs(&with(c.clone(), "nbf", json!(now() + 600))),
            JwtRejection::NotYetValid,
        ),
        (
            sign(Algorithm::HS256, None, &EncodingKey::from_secret(b"other"), &c),
            JwtRejection::BadSignature,
        ),
        (rs(RSA2, None, &c), JwtRejection::BadSignature),
        (
            hs(&with(c.clone(), "aud", json!("elsewhere"))),
            JwtRejection::WrongAudience,
        ),
        (
            hs(&with(c.clone(), "aud", json!(["a", "b"]))),
            JwtRejection::WrongAudience,
        ),
        (hs(&without(c.clone(), "aud")), JwtRejection::Claim(JwtClaim::Aud)),
        (
            hs(&with(c.clone(), "iss", json!("https://evil.test/"))),
            JwtRejection::WrongIssuer,
        ),
        (hs(&without(c.clone(), "iss")), JwtRejection::Claim(JwtClaim::Iss)),
        (hs(&without(c.clone(), "exp")), JwtRejection::Claim(JwtClaim::Exp)),
        (
            hs(&with(c.clone(), "exp", json!("tomorrow"))),
            JwtRejection::Time {
                claim: "exp",
                why: "not a number",
            },
        ),
        (
            hs(&with(c.clone(), "exp", json!(-1.5))),
            JwtRejection::Time {
                claim: "exp",
                why: "before 1970",
            },
        ),
        (
            hs(&with(c.clone(), "exp", json!(u64::MAX))),
            JwtRejection::Time {
                claim: "exp",
                why: "after the year 9999",
            },
        ),
        (
            hs(&with(c.clone(), "nbf", json!(1e300))),
            JwtRejection::Time {
                claim: "nbf",
                why: "after the year 9999",
            },
        ),
        (
            hs(&with(c.clone(), "iat", json!(null))),
            JwtRejection::Time {
                claim: "iat",
                why: "not a number",
            },
        ),
        (
            hs(&with(c.clone(), "iat", json!(now() + 600))),
            JwtRejection::IssuedInTheFuture,
        ),
        (
            hs(&with(c.clone(), "name", json!("x".repeat(151)))),
            JwtRejection::User(UserBoundsError::NameTooLong { chars: 151, max: 150 }),
        ),
        (
            hs(&with(c.clone(), "sub", json!("1".repeat(256)))),
            JwtRejection::User(UserBoundsError::IdTooLong { len: 256, max: 255 }),
        ),
        (hs(&without(c.clone(), "sub")), JwtRejection::Claim(JwtClaim::Id)),
        (unsigned(&c), JwtRejection::AlgorithmNotAllowed),
        (
            sign(Algorithm::HS384, None, &EncodingKey::from_secret(SECRET), &c),
            JwtRejection::AlgorithmNotAllowed,
        ),
        ("a.b".to_owned(), JwtRejection::Malformed),
        ("x".repeat(20_000), JwtRejection::TooLong),
    ];
    for (token, reason) in cases {
        assert_eq!(jwt.check(&token).err(), Some(reason.clone()), "{reason}");
        assert!(jwt.validate(&token).is_none());
    }
    assert!(jwt.check(&hs(&c)).is_ok());
    // A claim is named by kind, the id claim whatever it is called.
    assert_eq!(
        JwtRejection::Claim(JwtClaim::Exp).to_string(),
        "missing or malformed claim: exp"
    );
    let by_user_id = JwtAuthenticator::new(main_config().id_claim("user_id")).unwrap();
    assert_eq!(
        by_user_id.check(&hs(&c)).err(),
        Some(JwtRejection::Claim(JwtClaim::Id))
    );
    assert!(
        by_user_id
            .check(&hs(&with(c.clone(), "user_id", json!(7))))
            .is_ok()
    );
}

#[test]
fn numeric_dates_are_read_in_every_json_form() {
    let jwt = JwtAuthenticator::new(main_config().leeway(Duration::ZERO)).unwrap();
    let exp = now() + 600;
    // A fraction is kept to the nanosecond, an exponent form read as the
    // number it is.
    let c = with(claims(), "exp", json!(exp as f64 + 0.5));
    let user = jwt.validate(&hs(&c)).unwrap();
    assert_eq!(
        user.expires_at(),
        Some(UNIX_EPOCH + Duration::from_millis(exp as u64 * 1000 + 500))
    );
    let c = with(
        with(
            with(claims(), "exp", json!(exp as f64 / 1e9 * 1e9)),
            "nbf",
            json!(1.5e9),
        ),
        "iat",
        json!(1.5e9),
    );
    assert!(jwt.check(&hs(&c)).is_ok());
    // A fraction of a second past exp is expired (rounding would keep it).
    let c = with(claims(), "exp", json!(now() as f64 - 0.4));
    assert_eq!(jwt.check(&hs(&c)).err(), Some(JwtRejection::Expired));
    // With exp optional, one that is there is still read.
    let optional = JwtAuthenticator::new(main_config().require_exp(false)).unwrap();
    assert!(optional.check(&hs(&without(claims(), "exp"))).is_ok());
    assert!(
        optional
            .check(&hs(&with(claims(), "exp", json!("never"))))
            .is_err()
    );
    // The name bound is configurable.
    let short = JwtAuthenticator::new(main_config().max_name_chars(5)).unwrap();
    assert!(short.check(&hs(&with(claims(), "name", json!("abcde")))).is_ok());
    assert!(
        short
            .check(&hs(&with(claims(), "name", json!("abcdef"))))
            .is_err()
    );
}

#[test]
fn algorithm_confusion_is_refused_before_any_key_is_tried() {
    let rsa_only = JwtAuthenticator::new(
        JwtConfig::new()
            .rsa_pem(RSA1_PUB, None)
            .unwrap()
            .hmac_secret(SECRET.to_vec())
            .unwrap()
            .algorithms([JwtAlgorithm::RS256]),
    )
    .unwrap();
    let c = without(without(claims(), "aud"), "iss");
    let confused = sign(Algorithm::HS256, None, &EncodingKey::from_secret(RSA1_PUB), &c);
    assert_eq!(
        rsa_only.check(&confused).err(),
        Some(JwtRejection::AlgorithmNotAllowed)
    );
    // Even the configured secret's own HS256 tokens: HS256 is not allowed.
    assert_eq!(
        rsa_only.check(&hs(&c)).err(),
        Some(JwtRejection::AlgorithmNotAllowed)
    );
    assert!(rsa_only.check(&rs(RSA1, None, &c)).is_ok());
}

#[test]
fn claims_become_the_user_with_exp_plus_leeway_as_its_expiry() {
    let leeway = Duration::from_secs(30);
    let jwt = JwtAuthenticator::new(main_config().leeway(leeway)).unwrap();
    let exp = now() + 600;
    let c = with(with(claims(), "exp", json!(exp)), "roles", json!(["staff"]));
    let user = jwt.validate(&hs(&c)).unwrap();
    assert_eq!((user.id(), user.name()), ("42", "alice"));
    assert_eq!(user.attribute("roles"), Some(&json!(["staff"])));
    assert_eq!(user.attribute("iss"), Some(&json!(ISS)));
    assert_eq!(
        user.expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(exp as u64) + leeway)
    );
    // The name falls back to preferred_username, then to sub.
    let c = with(without(claims(), "name"), "preferred_username", json!("al"));
    assert_eq!(jwt.validate(&hs(&c)).unwrap().name(), "al");
    let c = without(claims(), "name");
    assert_eq!(jwt.validate(&hs(&c)).unwrap().name(), "42");
    // Configured claims.
    let custom = JwtAuthenticator::new(main_config().id_claim("uid").name_claims(["email"])).unwrap();
    let c = with(with(claims(), "uid", json!(7)), "email", json!("a@example.com"));
    let user = custom.validate(&hs(&c)).unwrap();
    assert_eq!((user.id(), user.name()), ("7", "a@example.com"));
    // Without `exp`, where allowed, the user never expires.
    let lasting = JwtAuthenticator::new(main_config().require_exp(false)).unwrap();
    let user = lasting.validate(&hs(&without(claims(), "exp"))).unwrap();
    assert_eq!(user.expires_at(), None);
    assert!(SystemTime::now() < UNIX_EPOCH + Duration::from_secs(exp as u64));
}

fn token_in(jwt: &JwtAuthenticator, uri: &str, headers: &[(&'static str, &str)]) -> Option<String> {
    let uri: http::Uri = uri.parse().unwrap();
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, value.parse().unwrap());
    }
    let handshake = Handshake {
        uri: &uri,
        headers: &map,
        client: None,
    };
    jwt.token_from(&handshake)
}

#[test]
fn the_token_is_read_from_the_first_source_present() {
    let jwt = jwt();
    let all = [("authorization", "Bearer h"), ("cookie", "token=c")];
    assert_eq!(token_in(&jwt, "/ws/?token=q", &all).as_deref(), Some("h"));
    assert_eq!(token_in(&jwt, "/ws/?token=q", &all[1..]).as_deref(), Some("q"));
    assert_eq!(token_in(&jwt, "/ws/", &all[1..]).as_deref(), Some("c"));
    assert_eq!(
        token_in(&jwt, "/ws/?other=q", &[("authorization", "Basic x")]),
        None
    );
    let custom = JwtAuthenticator::new(main_config().sources([
        TokenSource::Cookie("jwt".into()),
        TokenSource::Query("access_token".into()),
    ]))
    .unwrap();
    let headers = [("authorization", "Bearer h"), ("cookie", "jwt=c")];
    assert_eq!(
        token_in(&custom, "/ws/?access_token=q", &headers).as_deref(),
        Some("c")
    );
    assert_eq!(
        token_in(&custom, "/ws/?access_token=q", &headers[..1]).as_deref(),
        Some("q")
    );
    assert_eq!(token_in(&custom, "/ws/", &headers[..1]), None);
}

#[tokio::test]
async fn authenticate_is_anonymous_for_no_token_and_a_bad_one() {
    let jwt = jwt();
    let uri: http::Uri = "/ws/?token=bad".parse().unwrap();
    let headers = http::HeaderMap::new();
    let handshake = Handshake {
        uri: &uri,
        headers: &headers,
        client: None,
    };
    assert!(jwt.authenticate(handshake).await.unwrap().user.is_none());
    let good: http::Uri = format!("/ws/?token={}", hs(&claims())).parse().unwrap();
    let handshake = Handshake {
        uri: &good,
        headers: &headers,
        client: None,
    };
    assert_eq!(
        jwt.authenticate(handshake).await.unwrap().user.unwrap().id(),
        "42"
    );
}
