//! `auth`: who is connecting, and from which page. Channels'
//! `AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(...)))` as
//! tower layers around the router:
//!
//! * [`AllowedHosts`]: requests for another `Host` get 400 (Django's
//!   `ALLOWED_HOSTS`; loopback names here).
//! * [`OriginLayer`]: a WebSocket handshake from a page on another site gets
//!   403 (cross-site WebSocket hijacking); clients that send no `Origin`
//!   (not browsers: websocat, curl, backends) are let through.
//! * [`AuthLayer`] with a [`JwtAuthenticator`]: a JSON Web Token from
//!   `Authorization: Bearer`, `?token=` or a `token` cookie makes the scope's
//!   user. `/ws/me/` lets anonymous visitors in; `/ws/private/` answers 401
//!   without a valid token. A token that expires while connected closes the
//!   socket with 4401.
//!
//! `GET /token?user=alice` mints an HS256 token signed with the example's
//! secret: a stand-in for your identity provider, so that the example runs
//! alone. Never serve such a route in production.
//!
//! Run: `cargo run -p estuary-examples --bin auth -- 127.0.0.1:8003`, then
//!
//! ```sh
//! TOKEN=$(curl -s 'http://127.0.0.1:8003/token?user=alice' | jq -r .token)
//! websocat "ws://127.0.0.1:8003/ws/private/?token=$TOKEN"   # {"type":"hello","user":"alice",...}
//! websocat ws://127.0.0.1:8003/ws/private/                  # 401
//! websocat -H 'Origin: https://evil.example' ws://127.0.0.1:8003/ws/me/   # 403
//! ```
//!
//! The secret is `ESTUARY_EXAMPLE_JWT_SECRET` when set. The other way to
//! authenticate, asking the Django project itself on every handshake, is
//! the `estuary-callback` crate (`docs/SECURITY.md`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use estuary::prelude::*;
use estuary::server::{AuthLayer, Authenticator};
use estuary::{AllowedHosts, OriginLayer};
use estuary_jwt::{JwtAlgorithm, JwtAuthenticator, JwtConfig};
use serde::Deserialize;
use serde_json::json;
use tower::Layer;

const DEV_SECRET: &str = "estuary example secret: change me, keep me out of git";

/// Greets the user the token named (or `null` for an anonymous visitor).
struct WhoAmI {
    private: bool,
}

impl Consumer for WhoAmI {
    type Event = NoEvent;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let user = ctx.scope().user();
        let hello = json!({
            "type": "hello",
            "user": user.map(|u| u.name()),
            "id": user.map(|u| u.id()),
            "private": self.private,
        });
        ctx.send_json(&hello).await?;
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        let name = ctx.scope().user().map_or("anonymous", |u| u.name()).to_owned();
        let text = message.as_text().unwrap_or("(binary)").to_owned();
        ctx.send_json(&json!({"type": "echo", "from": name, "text": text}))
            .await
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    user: String,
}

/// `GET /token?user=alice`: a token valid for an hour (development only).
async fn token(
    State(secret): State<&'static str>,
    Query(TokenRequest { user }): Query<TokenRequest>,
) -> (StatusCode, Json<serde_json::Value>) {
    let exp = SystemTime::now()
        .checked_add(Duration::from_secs(3600))
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let claims = json!({"sub": format!("user:{user}"), "name": user, "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    match jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
        Ok(token) => (StatusCode::OK, Json(json!({ "token": token }))),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        ),
    }
}

/// The JWT check: HS256 with `secret`.
fn authenticator(secret: &str) -> anyhow::Result<impl Authenticator> {
    let config = JwtConfig::new()
        .hmac_secret(secret.as_bytes().to_vec())?
        .algorithms([JwtAlgorithm::HS256]);
    Ok(JwtAuthenticator::new(config)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8003".into());
    let secret: &'static str = match std::env::var("ESTUARY_EXAMPLE_JWT_SECRET") {
        Ok(s) => String::leak(s),
        Err(_) => DEV_SECRET,
    };

    let http = axum::Router::new().route("/token", get(token)).with_state(secret);
    let router = Router::new()
        .websocket("ws/me/", || WhoAmI { private: false })
        .websocket("ws/private/", || WhoAmI { private: true })
        .merge(http);

    // Outermost first: the Host check, the Origin check, then who the user is.
    let hosts = AllowedHosts::loopback();
    // Pages on the allowed hosts, plus your front-end's own site.
    let origins = OriginLayer::new(["https://app.example.com"])
        .or_allowed_hosts(&hosts)
        .allow_missing_origin();
    let auth = AuthLayer::new(authenticator(secret)?).require_under("/ws/private/");
    let service = hosts
        .layer()
        .layer(origins.layer(auth.layer(router.into_service())));

    let server = Server::bind(addr.parse()?).await?;
    let addr = server.local_addr().expect("TCP");
    println!("listening on http://{addr}");
    println!(
        "paths: GET http://{addr}/token?user=NAME (development tokens), ws://{addr}/ws/me/ (anyone), ws://{addr}/ws/private/ (token required)"
    );
    println!(
        "origins: pages on localhost, 127.0.0.1, [::1] (any port) and https://app.example.com, and clients that send no Origin"
    );
    println!("try:   TOKEN=$(curl -s 'http://{addr}/token?user=alice' | jq -r .token)");
    println!("       websocat \"ws://{addr}/ws/private/?token=$TOKEN\"");
    server.serve(service, shutdown_signal()).await?;
    Ok(())
}
