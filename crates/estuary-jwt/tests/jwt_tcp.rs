//! JWT authentication over real TCP: tokens minted here (HS256 with a
//! secret, RS256 and ES256 with the fixed test keys in `tests/keys/`) are
//! sent in the `Authorization` header, the `?token=` query parameter and
//! the `token` cookie to a router behind `AuthLayer::new(JwtAuthenticator)`.
//! A valid token is the scope's user; every invalid one is an anonymous
//! visitor (greeted on the optional route, 401 on the required one); a JWKS
//! file picks keys by `kid`; a token that expires while connected closes
//! the socket with 4401.

use estuary_jwt::{JwtAlgorithm, JwtAuthenticator, JwtConfig};
use estuary_test_support::auth::{self, WhoAmI, serve_auth};
use estuary_test_support::ws::{self, Ws};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

mod common;
use common::*;

async fn serve(config: JwtConfig) -> (std::net::SocketAddr, CancellationToken) {
    let authenticator = JwtAuthenticator::new(config).expect("valid config");
    let served = serve_auth(authenticator, WhoAmI::new()).await.served;
    (served.addr, served.stop)
}

/// The who-am-I greeting as the assertions below spell it: "user=<name>
/// id=<id>" or "user=anonymous".
fn who(greeting: &serde_json::Value) -> String {
    match greeting["user"].as_object() {
        Some(user) => format!(
            "user={} id={}",
            user["name"].as_str().unwrap_or_default(),
            user["id"].as_str().unwrap_or_default()
        ),
        None => "user=anonymous".to_owned(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Via {
    Header,
    Query,
    Cookie,
}

async fn connect(addr: std::net::SocketAddr, path: &str, token: Option<&str>, via: Via) -> Result<Ws, u16> {
    let url = match (token, via) {
        (Some(t), Via::Query) => format!("ws://{addr}{path}?token={t}"),
        _ => format!("ws://{addr}{path}"),
    };
    let mut request = url.into_client_request().unwrap();
    match (token, via) {
        (Some(t), Via::Header) => {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        (Some(t), Via::Cookie) => {
            request
                .headers_mut()
                .insert("cookie", format!("theme=dark; token={t}").parse().unwrap());
        }
        _ => {}
    }
    ws::handshake(request).await
}

async fn greeting(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    via: Via,
) -> Result<String, u16> {
    let mut ws = connect(addr, path, token, via).await?;
    Ok(who(&auth::greeting(&mut ws).await))
}

const ALICE: &str = "user=alice id=42";
const ANONYMOUS: &str = "user=anonymous";

/// Each token, in each place, on the optional route (greeting) and the
/// required one (greeting, or 401 when anonymous).
async fn check_table(addr: std::net::SocketAddr, table: &[(&str, Option<String>, bool)]) {
    for (case, token, accepted) in table {
        for via in [Via::Header, Via::Query, Via::Cookie] {
            let open = greeting(addr, "/ws/open/", token.as_deref(), via).await;
            let private = greeting(addr, "/ws/private/", token.as_deref(), via).await;
            if *accepted {
                assert_eq!(open.as_deref(), Ok(ALICE), "{case} via {via:?} (optional route)");
                assert_eq!(
                    private.as_deref(),
                    Ok(ALICE),
                    "{case} via {via:?} (required route)"
                );
            } else {
                assert_eq!(
                    open.as_deref(),
                    Ok(ANONYMOUS),
                    "{case} via {via:?} (optional route)"
                );
                assert_eq!(private, Err(401), "{case} via {via:?} (required route)");
            }
        }
    }
}

#[tokio::test]
async fn valid_tokens_are_the_user_and_invalid_ones_anonymous_in_header_query_and_cookie() {
    let (addr, _stop) = serve(main_config()).await;
    let c = claims();
    let other_secret = EncodingKey::from_secret(b"not the configured secret");
    // The signature's first character changed: its last carries two bits
    // that are only padding, which a change there could leave untouched.
    let good = hs(&c);
    let (message, signature) = good.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{message}.{first}{}", &signature[1..]);
    let table = [
        ("valid HS256", Some(hs(&c)), true),
        ("valid RS256", Some(rs(RSA1, None, &c)), true),
        ("valid ES256", Some(es(None, &c)), true),
        (
            "valid, aud a string",
            Some(hs(&with(c.clone(), "aud", json!(AUD)))),
            true,
        ),
        (
            "expired",
            Some(hs(&with(c.clone(), "exp", json!(now() - 60)))),
            false,
        ),
        (
            "not yet valid",
            Some(hs(&with(c.clone(), "nbf", json!(now() + 600)))),
            false,
        ),
        (
            "wrong signature (other secret)",
            Some(sign(Algorithm::HS256, None, &other_secret, &c)),
            false,
        ),
        ("wrong signature (other RSA key)", Some(rs(RSA2, None, &c)), false),
        ("tampered signature", Some(tampered), false),
        (
            "wrong audience",
            Some(hs(&with(c.clone(), "aud", json!("elsewhere")))),
            false,
        ),
        ("no audience", Some(hs(&without(c.clone(), "aud"))), false),
        (
            "wrong issuer",
            Some(hs(&with(c.clone(), "iss", json!("https://evil.test/")))),
            false,
        ),
        ("no exp", Some(hs(&without(c.clone(), "exp"))), false),
        ("alg none", Some(unsigned(&c)), false),
        (
            "HS384 (not allowed)",
            Some(sign(
                Algorithm::HS384,
                None,
                &EncodingKey::from_secret(SECRET),
                &c,
            )),
            false,
        ),
        ("garbage", Some("not-a-jwt".to_owned()), false),
        ("missing", None, false),
    ];
    check_table(addr, &table).await;
}

#[tokio::test]
async fn an_hs256_token_is_refused_where_only_rs256_is_configured() {
    // Algorithm confusion: the attacker signs HS256 with the RSA public
    // key's PEM as the HMAC secret.
    let config = JwtConfig::new()
        .rsa_pem(RSA1_PUB, None)
        .unwrap()
        .algorithms([JwtAlgorithm::RS256])
        .audience(AUD)
        .issuer(ISS);
    let (addr, _stop) = serve(config).await;
    let c = claims();
    let table = [
        ("valid RS256", Some(rs(RSA1, None, &c)), true),
        (
            "HS256 signed with the public key",
            Some(sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(RSA1_PUB),
                &c,
            )),
            false,
        ),
        ("ES256", Some(es(None, &c)), false),
        ("alg none", Some(unsigned(&c)), false),
    ];
    check_table(addr, &table).await;
}

#[tokio::test]
async fn a_jwks_file_picks_the_key_by_kid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/jwks.json");
    let config = JwtConfig::new()
        .jwks_file(path)
        .unwrap()
        .audience(AUD)
        .issuer(ISS);
    let (addr, _stop) = serve(config).await;
    let c = claims();
    let table = [
        (
            "rsa-two signed by rsa2",
            Some(rs(RSA2, Some("rsa-two"), &c)),
            true,
        ),
        (
            "rsa-one signed by rsa1",
            Some(rs(RSA1, Some("rsa-one"), &c)),
            true,
        ),
        (
            "no kid, signed by rsa2 (each RSA key tried)",
            Some(rs(RSA2, None, &c)),
            true,
        ),
        ("ec-one signed by ec1", Some(es(Some("ec-one"), &c)), true),
        (
            "rsa-two's kid, signed by rsa1",
            Some(rs(RSA1, Some("rsa-two"), &c)),
            false,
        ),
        ("an unknown kid", Some(rs(RSA1, Some("rsa-three"), &c)), false),
        ("HS256 (no secret in a JWKS)", Some(hs(&c)), false),
    ];
    check_table(addr, &table).await;
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_with_4401() {
    let (addr, _stop) = serve(main_config()).await;
    let token = hs(&with(claims(), "exp", json!(now() + 2)));
    let mut ws = connect(addr, "/ws/private/", Some(&token), Via::Header)
        .await
        .unwrap();
    let code = tokio::time::timeout(ws::WAIT, async {
        while let Some(Ok(frame)) = ws.next().await {
            match frame {
                Message::Text(t) => assert_eq!(who(&serde_json::from_str(t.as_str()).unwrap()), ALICE),
                Message::Close(close) => return close.map(|c| u16::from(c.code)),
                _ => {}
            }
        }
        None
    })
    .await
    .expect("closed within 10 s");
    assert_eq!(code, Some(4401));
}
