//! Authentication over real TCP: the user an `Authenticator` finds is the
//! scope's user, its groups are joined before `connect` and its data is the
//! scope's; required routes refuse anonymous handshakes with 401; refusals,
//! an unavailable check and a bad backend answer get their statuses; a
//! refusal with a close code completes the handshake and closes with it; a
//! credential that expires while connected closes the socket with 4401.

use std::time::{Duration, SystemTime};

use estuary_core::{ChannelLayer, ChannelLayerHandle, CloseCode, GroupName, Message as LayerMessage, User};
use estuary_server::{Admission, AuthError, AuthFuture, Authenticator, Handshake};
use estuary_test_support::auth::{self, AuthServer, WhoAmI, serve_auth};
use estuary_test_support::ws;
use futures_util::StreamExt;
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = ws::WAIT;

/// The who-am-I greeting as the assertions below spell it: "user=<name>
/// staff=<bool>" or "user=anonymous", then its groups and data when it has
/// some.
fn summary(greeting: &serde_json::Value) -> String {
    let mut line = match greeting["user"].as_object() {
        Some(user) => format!(
            "user={} staff={}",
            user["name"].as_str().unwrap_or_default(),
            user["attributes"].get("staff").unwrap_or(&false.into())
        ),
        None => "user=anonymous".to_owned(),
    };
    let groups: Vec<&str> = greeting["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str())
        .collect();
    if !groups.is_empty() {
        line += &format!(" groups={}", groups.join(","));
    }
    if greeting["data"].as_object().is_some_and(|data| !data.is_empty()) {
        line += &format!(" data={}", greeting["data"]);
    }
    line
}

/// `?token=`: `alice` (staff), `brief` (expires in a second), `member`
/// (in groups `news` and `user.3`, data `tenant`), `guest` (anonymous, in
/// `news`), `banned` (refused 403), `log-in-again` (closed 4403), `down`
/// (unavailable), `nonsense` (a bad answer); anything else is anonymous.
struct Tokens;

impl Authenticator for Tokens {
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        let token = handshake
            .query_param("token")
            .or_else(|| handshake.bearer_token().map(str::to_owned));
        Box::pin(async move {
            match token.as_deref() {
                Some("alice") => Ok(User::new("1", "alice").with_attribute("staff", true).into()),
                Some("brief") => Ok(User::new("2", "brief")
                    .with_expiry(SystemTime::now() + Duration::from_secs(1))
                    .into()),
                Some("member") => Ok(Admission::from(User::new("3", "member"))
                    .join(GroupName::new("news").unwrap())
                    .join(GroupName::new("user.3").unwrap())
                    .with_data("tenant", "acme")),
                Some("guest") => Ok(Admission::anonymous().join(GroupName::new("news").unwrap())),
                Some("log-in-again") => Err(AuthError::Closed {
                    code: CloseCode::from(4403),
                    reason: "log in again".into(),
                }),
                Some("unsendable") => Err(AuthError::Closed {
                    code: CloseCode::ABNORMAL,
                    reason: "1006 is never sent".into(),
                }),
                Some("nonsense") => Err(AuthError::BadAnswer("the backend said 'maybe'".into())),
                Some("banned") => Err(AuthError::Refused {
                    status: StatusCode::FORBIDDEN,
                    reason: "banned".into(),
                }),
                Some("down") => Err(AuthError::Unavailable("session store down".into())),
                _ => Ok(Admission::anonymous()),
            }
        })
    }
}

async fn serve() -> (std::net::SocketAddr, CancellationToken) {
    let (addr, stop, _) = serve_with_layer().await;
    (addr, stop)
}

async fn serve_with_layer() -> (std::net::SocketAddr, CancellationToken, ChannelLayerHandle) {
    let AuthServer { served, layer } = serve_auth(Tokens, WhoAmI::announcing()).await;
    (served.addr, served.stop, layer)
}

async fn greeting(url: String) -> Result<String, u16> {
    let mut ws = ws::handshake(url).await?;
    Ok(summary(&auth::greeting(&mut ws).await))
}

#[tokio::test]
async fn the_authenticated_user_is_the_scopes_and_required_routes_refuse_anonymous() {
    let (addr, _stop) = serve().await;
    let url = |path: &str| format!("ws://{addr}{path}");
    assert_eq!(
        greeting(url("/ws/open/?token=alice")).await,
        Ok("user=alice staff=true".into())
    );
    assert_eq!(greeting(url("/ws/open/")).await, Ok("user=anonymous".into()));
    assert_eq!(
        greeting(url("/ws/open/?token=forged")).await,
        Ok("user=anonymous".into())
    );
    assert_eq!(
        greeting(url("/ws/private/?token=alice")).await,
        Ok("user=alice staff=true".into())
    );
    assert_eq!(greeting(url("/ws/private/")).await, Err(401));
    assert_eq!(greeting(url("/ws/private/?token=forged")).await, Err(401));
    assert_eq!(greeting(url("/ws/open/?token=banned")).await, Err(403));
    assert_eq!(greeting(url("/ws/open/?token=down")).await, Err(503));
    assert_eq!(greeting(url("/ws/open/?token=nonsense")).await, Err(502));
    // A 503 says when to try again.
    match tokio_tungstenite::connect_async(url("/ws/open/?token=down")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(
                r.headers().get("retry-after").map(|v| v.as_bytes()),
                Some(&b"1"[..])
            );
        }
        other => panic!("{other:?}"),
    }
}

async fn next_text(
    ws: &mut (impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> String {
    match tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
    {
        Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn an_admissions_groups_are_joined_before_connect_and_its_data_is_the_scopes() {
    let (addr, _stop, layer) = serve_with_layer().await;
    let (mut member, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/open/?token=member"))
        .await
        .unwrap();
    assert_eq!(
        summary(&auth::greeting(&mut member).await),
        r#"user=member staff=false groups=news,user.3 data={"tenant":"acme"}"#
    );
    assert_eq!(next_text(&mut member).await, "in news at connect");
    // Required routes need a user: a guest's groups do not let it in.
    assert_eq!(
        greeting(format!("ws://{addr}/ws/private/?token=guest")).await,
        Err(401)
    );
    let (mut guest, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/open/?token=guest"))
        .await
        .unwrap();
    assert_eq!(
        summary(&auth::greeting(&mut guest).await),
        "user=anonymous groups=news"
    );
    assert_eq!(next_text(&mut guest).await, "in news at connect");
    // The guest's own send at connect reached the member too.
    assert_eq!(next_text(&mut member).await, "in news at connect");

    let send = |group: &str, text: &str| {
        let layer = layer.clone();
        let group = GroupName::new(group).unwrap();
        let message = LayerMessage::from_json(&serde_json::json!({"type": "relay", "text": text})).unwrap();
        async move { layer.group_send(&group, message).await.unwrap().delivered }
    };
    assert_eq!(send("user.3", "for member only").await, 1);
    assert_eq!(send("news", "for everyone").await, 2);
    assert_eq!(next_text(&mut member).await, "for member only");
    assert_eq!(next_text(&mut member).await, "for everyone");
    assert_eq!(next_text(&mut guest).await, "for everyone");

    // The groups are left with the connection: once its close completes,
    // a send to its own group reaches nobody (within a deadline: the
    // server leaves the groups just after the closing handshake).
    member.close(None).await.unwrap();
    while let Some(Ok(_)) = tokio::time::timeout(WAIT, member.next())
        .await
        .expect("closed in time")
    {}
    tokio::time::timeout(WAIT, async {
        while send("user.3", "after the member left").await != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the member's groups are left when it goes");
}

/// Connects to `/ws/open/?token=<token>` offering the subprotocol
/// `graphql-ws`, as a browser's `new WebSocket(url, ["graphql-ws"])` does;
/// the handshake's response and the first frame.
async fn refused_after_upgrade(
    addr: std::net::SocketAddr,
    token: &str,
) -> (
    http::Response<Option<Vec<u8>>>,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    (u16, String),
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws/open/?token={token}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-ws".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the handshake completes");
    let close = match tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("closed in time")
    {
        Some(Ok(Message::Close(Some(frame)))) => (u16::from(frame.code), frame.reason.as_str().to_owned()),
        other => panic!("expected a close frame, got {other:?}"),
    };
    (response, ws, close)
}

#[tokio::test]
async fn a_refusal_with_a_close_code_completes_the_handshake_and_closes_with_it() {
    let (addr, _stop) = serve().await;
    let (response, mut ws, close) = refused_after_upgrade(addr, "log-in-again").await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    // The offered subprotocol is selected: a browser fails a handshake that
    // offered one and got none, and would show 1006 instead of the code.
    assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-ws");
    assert_eq!(close, (4403, "log in again".to_owned()));
    // The closing handshake completes: the stream ends cleanly.
    assert!(
        tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("ends in time")
            .is_none(),
        "a clean end after the close"
    );

    // A code that cannot be sent becomes 1008.
    let (_, _, close) = refused_after_upgrade(addr, "unsendable").await;
    assert_eq!(close, (1008, "1006 is never sent".to_owned()));
}

#[tokio::test]
async fn a_credential_that_expires_while_connected_closes_with_4401() {
    let (addr, _stop) = serve().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/open/?token=brief"))
        .await
        .unwrap();
    let code = tokio::time::timeout(WAIT, async {
        while let Some(Ok(frame)) = ws.next().await {
            if let Message::Close(close) = frame {
                return close.map(|c| u16::from(c.code));
            }
        }
        None
    })
    .await
    .expect("closed in time");
    assert_eq!(code, Some(4401));
}

/// A handshake the router refuses anyway (a malformed key) is not
/// authenticated: `down` would have answered 503; the router's 400 comes.
#[tokio::test]
async fn a_malformed_handshake_costs_no_authentication() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _stop) = serve().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = "GET /ws/open/?token=down HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\n\
                   connection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: short\r\n\r\n";
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    let status = String::from_utf8_lossy(&answer[..n]);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
}
