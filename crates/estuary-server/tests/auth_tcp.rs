//! Authentication over real TCP: the user an `Authenticator` finds is the
//! scope's user; required routes refuse anonymous handshakes with 401;
//! refusals and an unavailable check get their statuses; a credential that
//! expires while connected closes the socket with 4401.

use std::time::{Duration, SystemTime};

use estuary_core::{Connect, Consumer, ConsumerError, Context, NoEvent, User, WsMessage};
use estuary_server::{AuthError, AuthFuture, AuthLayer, Authenticator, Handshake, Router, Server};
use futures_util::StreamExt;
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tower::Layer;

const WAIT: Duration = Duration::from_secs(10);

/// Greets with the scope's user: "user=<name>" or "user=anonymous".
struct WhoAmI;

impl Consumer for WhoAmI {
    type Event = NoEvent;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        let name = ctx.scope().user().map_or("anonymous".to_owned(), |u| {
            format!(
                "{} staff={}",
                u.name(),
                u.attribute("staff").unwrap_or(&false.into())
            )
        });
        ctx.send(WsMessage::text(format!("user={name}"))).await?;
        Ok(Connect::accept())
    }
}

/// `?token=`: `alice` (staff), `brief` (expires in a second), `banned`
/// (refused 403), `down` (unavailable); anything else is anonymous.
struct Tokens;

impl Authenticator for Tokens {
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        let token = handshake
            .query_param("token")
            .or_else(|| handshake.bearer_token().map(str::to_owned));
        Box::pin(async move {
            match token.as_deref() {
                Some("alice") => Ok(Some(User::new("1", "alice").with_attribute("staff", true))),
                Some("brief") => Ok(Some(
                    User::new("2", "brief").with_expiry(SystemTime::now() + Duration::from_secs(1)),
                )),
                Some("banned") => Err(AuthError::Refused {
                    status: StatusCode::FORBIDDEN,
                    reason: "banned".into(),
                }),
                Some("down") => Err(AuthError::Unavailable("session store down".into())),
                _ => Ok(None),
            }
        })
    }
}

async fn serve() -> (std::net::SocketAddr, CancellationToken) {
    let router = Router::new()
        .websocket("ws/open/", || WhoAmI)
        .websocket("ws/private/", || WhoAmI);
    let service = AuthLayer::new(Tokens)
        .require_under("/ws/private/")
        .layer(router.into_service());
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server.serve(service, async move { token.cancelled().await }));
    (addr, stop)
}

async fn greeting(url: String) -> Result<String, u16> {
    match tokio_tungstenite::connect_async(url).await {
        Ok((mut ws, _)) => match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("greeting in time")
        {
            Some(Ok(Message::Text(t))) => Ok(t.as_str().to_owned()),
            other => panic!("expected a greeting, got {other:?}"),
        },
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
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
