//! daphne's deployment settings over real sockets: `X-Forwarded-Proto` and
//! `X-Forwarded-Host` from trusted proxies only (into the scope's scheme
//! and the host the checks read), and `root_path`.

use std::time::Duration;

use estuary_core::{Consumer, ConsumerError, Context, NoEvent};
use estuary_server::{AllowedHosts, OriginLayer, Router, Server, ServerConfig, TrustedProxies};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use tower::Layer as _;

const WAIT: Duration = Duration::from_secs(10);

/// Serves `ws/scope/` (answering its scope on the first message) behind the
/// allowed-hosts and origin checks for `chat.example.com`.
async fn serve(trusted: &str, root_path: Option<&str>) -> (std::net::SocketAddr, CancellationToken) {
    let hosts = AllowedHosts::new(["chat.example.com"]);
    let origins = OriginLayer::new(Vec::<String>::new())
        .or_allowed_hosts(&hosts)
        .allow_missing_origin();
    let service = hosts
        .layer()
        .layer(origins.layer(Router::new().websocket("ws/scope/", || Echo).into_service()));
    let config = ServerConfig {
        trusted_proxies: trusted.parse::<TrustedProxies>().unwrap(),
        root_path: root_path.map(str::to_owned),
        ..ServerConfig::default()
    };
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_config(config);
    let addr = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(server.serve(service, async move { stopped.cancelled().await }));
    (addr, stop)
}

/// Answers any message with `scheme root_path path host`.
struct Echo;

impl Consumer for Echo {
    type Event = NoEvent;

    async fn receive(
        &mut self,
        ctx: &mut Context,
        _message: estuary_core::WsMessage,
    ) -> Result<(), ConsumerError> {
        let scope = ctx.scope();
        let text = format!(
            "{} {} {} {}",
            scope.scheme(),
            if scope.root_path().is_empty() {
                "-"
            } else {
                scope.root_path()
            },
            scope.path(),
            scope.header("host").unwrap_or("-"),
        );
        ctx.send_text(text).await
    }
}

/// Opens `path` with these headers; the scope's answer, or the refusal's status.
async fn open(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<String, u16> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (mut ws, _) = match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
    {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => return Err(response.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    };
    futures_util::SinkExt::send(&mut ws, Message::text("scope"))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an answer in time")
        {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("no answer: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_trusted_proxy_sets_the_scheme_and_the_host_the_checks_read() {
    let (addr, stop) = serve("127.0.0.1", None).await;
    let forwarded = [
        ("host", "127.0.0.1"),
        ("x-forwarded-host", "chat.example.com"),
        ("x-forwarded-proto", "https"),
        ("origin", "https://chat.example.com"),
    ];
    assert_eq!(
        open(addr, "/ws/scope/", &forwarded).await,
        Ok("wss - /ws/scope/ chat.example.com".to_owned())
    );
    // Without the forwarded host, the proxy's Host is not an allowed host.
    assert_eq!(open(addr, "/ws/scope/", &[("host", "127.0.0.1")]).await, Err(400));
    // Plain http from the proxy: ws.
    let plain = [
        ("host", "127.0.0.1"),
        ("x-forwarded-host", "chat.example.com"),
        ("x-forwarded-proto", "http"),
    ];
    assert_eq!(
        open(addr, "/ws/scope/", &plain).await,
        Ok("ws - /ws/scope/ chat.example.com".to_owned())
    );
    stop.cancel();
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_host_or_scheme() {
    // 127.0.0.1 is not trusted here: its forwarding headers are its own words.
    let (addr, stop) = serve("10.0.0.0/8", None).await;
    let lying = [
        ("host", "127.0.0.1"),
        ("x-forwarded-host", "chat.example.com"),
        ("x-forwarded-proto", "https"),
    ];
    assert_eq!(
        open(addr, "/ws/scope/", &lying).await,
        Err(400),
        "Host 127.0.0.1 stays"
    );
    let lying = [
        ("host", "chat.example.com"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "other.example.com"),
    ];
    assert_eq!(
        open(addr, "/ws/scope/", &lying).await,
        Ok("ws - /ws/scope/ chat.example.com".to_owned()),
        "the scheme stays ws and the Host stays the request's"
    );
    stop.cancel();
}

#[tokio::test]
async fn routes_live_under_the_root_path() {
    let (addr, stop) = serve("", Some("/realtime")).await;
    let host = [("host", "chat.example.com")];
    assert_eq!(
        open(addr, "/realtime/ws/scope/", &host).await,
        Ok("ws /realtime /ws/scope/ chat.example.com".to_owned())
    );
    // A proxy that took the prefix off already: the request routes as it came.
    assert_eq!(
        open(addr, "/ws/scope/", &host).await,
        Ok("ws /realtime /ws/scope/ chat.example.com".to_owned())
    );
    // Not a segment boundary: not under the prefix, and no route.
    assert_eq!(open(addr, "/realtimes/ws/scope/", &host).await, Err(404));
    stop.cancel();
}
