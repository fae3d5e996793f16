//! `estuary serve` with `[auth.jwt]` and `[auth.callback]`, over TCP: a
//! token's `exp` in any numeric form closes the socket with 4401 on time; a
//! time claim that cannot be read, or a name longer than Django's 150
//! characters (a username's length), refuses the token (401 where authentication is required); a
//! callback's answer with such a name is a bad answer (502); and a slow
//! callback's slots are shared fairly between client addresses.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use common::{Client, Refused, TestServer, WAIT};
use estuary_cli::config::{CallbackSettings, Config, JwtSettings};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "a test HS256 secret, long enough";
const CALLBACK_SECRET: &str = "the callback secret of the tests";

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// An HS256 token whose claims are `claims`, written as they are (so that
/// a number keeps the form it is written in: `1.7e9`, `17e8`, `-1`).
fn token(claims: &str) -> String {
    let message = format!(
        "{}.{}",
        base64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        base64url(claims.as_bytes())
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn jwt_config(required: bool) -> Config {
    let mut config = Config::default();
    config.auth.required = required;
    config.auth.jwt = Some(JwtSettings {
        hmac_secret: Some(SECRET.into()),
        audience: Some("chat".into()),
        leeway: Some(0),
        ..JwtSettings::default()
    });
    config
}

#[tokio::test]
async fn exp_as_a_fraction_or_an_exponent_closes_the_socket_on_time() {
    let server = TestServer::with_config(jwt_config(false)).await;
    let mut listener = Client::join(&server.url("/ws/chat/numeric/")).await;
    for form in ["fraction", "exponent"] {
        let in_two = now() + 2.0;
        let (name, exp) = match form {
            // 1735689600.5-like: a fraction.
            "fraction" => (form, format!("{in_two:.3}")),
            // 1.7356896e9-like: an exponent, with a fraction of a second.
            _ => (form, format!("{:.12}e9", in_two / 1e9)),
        };
        let claims = format!(r#"{{"sub":"{name}","name":"{name}","aud":"chat","exp":{exp}}}"#);
        let mut client =
            Client::join(&server.url(&format!("/ws/chat/numeric/?token={}", token(&claims)))).await;
        assert_eq!(
            listener.recv_type("user_join").await["username"],
            name,
            "{claims}"
        );
        let started = Instant::now();
        let code = client.recv_close().await;
        let after = started.elapsed();
        eprintln!(
            "{form}: exp {exp}, closed with {code} {:.3} s after exp",
            now() - in_two
        );
        assert_eq!(code, 4401, "{claims}");
        assert!(
            after < Duration::from_secs(4),
            "{claims}: closed {after:?} after joining"
        );
        assert!(now() + 0.05 >= in_two, "{claims}: closed before exp");
    }
}

#[tokio::test]
async fn a_time_claim_that_cannot_be_read_or_a_name_too_long_refuses_the_token() {
    let server = TestServer::with_config(jwt_config(true)).await;
    let exp = now() as u64 + 600;
    let long = "x".repeat(10 * 1024);
    let refused = [
        format!(r#""exp":"{exp}""#),
        r#""exp":null"#.to_owned(),
        r#""exp":-5"#.to_owned(),
        r#""exp":-5.5"#.to_owned(),
        r#""exp":1e19"#.to_owned(),
        r#""exp":18446744073709551615"#.to_owned(),
        r#""exp":1e300"#.to_owned(),
        format!(r#""exp":{exp},"nbf":"soon""#),
        format!(r#""exp":{exp},"iat":"yesterday""#),
        format!(r#""exp":{exp},"iat":true"#),
        format!(r#""exp":{exp},"iat":-1"#),
        format!(r#""exp":{exp},"iat":{}"#, exp + 3600),
        format!(r#""exp":{exp},"nbf":{}.5"#, exp),
        format!(r#""exp":{exp},"name":"{long}""#),
        format!(r#""exp":{exp},"name":"{}""#, "é".repeat(151)),
        format!(r#""exp":{exp},"sub":"{}""#, "1".repeat(256)),
    ];
    for claims in refused {
        let claims = format!(r#"{{"sub":"42","aud":"chat",{claims}}}"#);
        let url = server.url(&format!("/ws/chat/numeric/?token={}", token(&claims)));
        match Client::try_connect(&url).await {
            Err(Refused(401)) => {}
            Err(Refused(other)) => panic!("{other} for {:.200}", claims),
            Ok(_) => panic!("accepted: {:.200}", claims),
        }
    }
    let now = now();
    for claims in [
        format!(
            r#""exp":{:.3},"nbf":{:.3},"iat":{:.3}"#,
            now + 600.0,
            now - 1.5,
            now - 1.5
        ),
        format!(r#""exp":{:.9}e9,"iat":{}"#, (now + 600.0) / 1e9, now as u64),
        format!(r#""exp":{},"name":"{}""#, now as u64 + 600, "é".repeat(150)),
    ] {
        let claims = format!(r#"{{"sub":"42","aud":"chat",{claims}}}"#);
        let url = server.url(&format!("/ws/chat/numeric/?token={}", token(&claims)));
        assert!(Client::try_connect(&url).await.is_ok(), "refused: {claims}");
    }
}

/// A connect callback view: answers as `?as=` says at once, except for the
/// client addresses it holds until a permit is added to `release`.
#[derive(Clone)]
struct View {
    /// The client host of each request, as it arrives.
    seen: mpsc::UnboundedSender<String>,
    /// The start of the client addresses held.
    held: &'static str,
    release: Arc<Semaphore>,
}

async fn view(State(view): State<View>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    let host = body["client"]["host"].as_str().unwrap_or_default().to_owned();
    let _ = view.seen.send(host.clone());
    if host.starts_with(view.held) {
        let _ = view.release.acquire().await.map(|permit| permit.forget());
    }
    let query = body["query"].as_str().unwrap_or_default();
    let name = query.strip_prefix("as=").unwrap_or("someone");
    axum::Json(json!({"user": {"id": name, "name": name}})).into_response()
}

/// Serves `view`; returns its address.
async fn serve_view(view: View) -> SocketAddr {
    let app = axum::Router::new()
        .route("/estuary/connect/", axum::routing::post(self::view))
        .with_state(view);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A chat handshake presented as coming from `client` through the trusted
/// proxy (loopback): its status (101 for a join).
async fn handshake_from(server: &TestServer, client: &str, name: &str) -> u16 {
    let mut request = server
        .url(&format!("/ws/chat/fair/?as={name}"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", client.parse().unwrap());
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake timed out")
    {
        Ok((mut ws, _)) => {
            let hello = tokio::time::timeout(WAIT, ws.next()).await.expect("no greeting");
            assert!(matches!(hello, Some(Ok(_))), "{hello:?}");
            101
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            if status == 429 || status == 503 {
                let retry_after = response.headers().get("retry-after").map(|v| v.as_bytes());
                assert_eq!(retry_after, Some(&b"1"[..]), "{status} without Retry-After");
            }
            status
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[tokio::test]
async fn a_slow_callback_is_shared_fairly_between_client_addresses() {
    // One IPv6 /64: its addresses count as one.
    const HOG: &str = "2001:db8:1:2:";
    let (seen, mut arrivals) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let app = serve_view(View {
        seen,
        held: HOG,
        release: release.clone(),
    })
    .await;
    let mut config = Config {
        trusted_proxies: vec!["127.0.0.1".into()],
        ..Config::default()
    };
    config.server.handshake_rate = 0.0;
    config.server.max_connections_per_ip = 0;
    let mut callback = CallbackSettings::new(format!("http://{app}/estuary/connect/"), CALLBACK_SECRET);
    callback.max_in_flight = 8;
    callback.max_in_flight_per_client = Some(4);
    callback.timeout_ms = 3000;
    config.auth.callback = Some(callback);
    let server = Arc::new(TestServer::with_config(config).await);

    // One address (twelve in one /64) starts 12 handshakes the application
    // holds: 4 reach it, the other 8 are refused at once with 429.
    let hogs: Vec<_> = (0..12)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(
                async move { handshake_from(&server, &format!("{HOG}:{i}"), &format!("hog{i}")).await },
            )
        })
        .collect();
    for _ in 0..4 {
        let host = tokio::time::timeout(WAIT, arrivals.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(host.starts_with(HOG), "{host}");
    }
    // Other addresses still get a slot (without the fair share they wait
    // behind the hog's handshakes for the whole timeout, then get 503).
    for (other, name) in [("198.51.100.2", "bob"), ("2001:db8:1:3::2", "carol")] {
        let started = Instant::now();
        assert_eq!(handshake_from(&server, other, name).await, 101, "{other}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            tokio::time::timeout(WAIT, arrivals.recv())
                .await
                .unwrap()
                .unwrap(),
            other
        );
    }
    release.add_permits(1000);
    let mut statuses = Vec::new();
    for hog in hogs {
        statuses.push(hog.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [101, 101, 101, 101, 429, 429, 429, 429, 429, 429, 429, 429]
    );
}

#[tokio::test]
async fn a_callback_answer_with_a_name_too_long_is_a_bad_answer() {
    let (seen, _arrivals) = mpsc::unbounded_channel();
    let app = serve_view(View {
        seen,
        held: "nobody",
        release: Arc::new(Semaphore::new(0)),
    })
    .await;
    let mut config = Config::default();
    config.auth.callback = Some(CallbackSettings::new(
        format!("http://{app}/estuary/connect/"),
        CALLBACK_SECRET,
    ));
    let server = TestServer::with_config(config).await;
    let long = "n".repeat(151);
    assert!(matches!(
        Client::try_connect(&server.url(&format!("/ws/chat/fair/?as={long}"))).await,
        Err(Refused(502))
    ));
    let longest = "n".repeat(150);
    let mut listener = Client::join(&server.url("/ws/chat/fair/?as=listener")).await;
    assert_eq!(listener.recv_type("user_join").await["username"], "listener");
    Client::join(&server.url(&format!("/ws/chat/fair/?as={longest}"))).await;
    assert_eq!(
        listener.recv_type("user_join").await["username"],
        longest.as_str()
    );
}
