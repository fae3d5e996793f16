//! A WebSocket client over TCP whose every step has a timeout.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a handshake or a receive may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A handshake the server refused with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The response's status.
    pub status: u16,
    /// The response's body, lossily decoded.
    pub body: String,
    /// The response's `Retry-After` header, when it has one.
    pub retry_after: Option<String>,
}

/// Connects to `request` (a `ws://` URL or a request with headers), waiting
/// at most [`WAIT`]; `Err` when the server answers the handshake with an
/// HTTP status. Panics on a timeout or any other error.
pub async fn connect(request: impl IntoClientRequest + Unpin) -> Result<Ws, Refused> {
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake did not complete in time")
    {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(response)) => Err(Refused {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
            retry_after: response
                .headers()
                .get("retry-after")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        }),
        Err(error) => panic!("the handshake failed: {error}"),
    }
}

/// [`connect`], keeping only the refusal's status.
pub async fn handshake(request: impl IntoClientRequest + Unpin) -> Result<Ws, u16> {
    connect(request).await.map_err(|refused| refused.status)
}

/// The next frame (pings and pongs included), waiting at most [`WAIT`].
/// Panics on a timeout, an error, or the end of the stream.
pub async fn next(ws: &mut Ws) -> Message {
    match tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("no frame in time")
    {
        Some(Ok(message)) => message,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// The next text frame's text; panics on any other frame.
pub async fn next_text(ws: &mut Ws) -> String {
    match next(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// The next text frame, parsed as JSON; panics on anything else.
pub async fn next_json(ws: &mut Ws) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("expected JSON, got {text:?}: {e}"))
}
