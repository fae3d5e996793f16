//! `Communicator`: drive an application in process, like Django's
//! `WebsocketCommunicator`.

use std::time::Duration;

use axum::body::Bytes;
use estuary_core::{CloseCode, CloseFrame, Inbound, Outcome, User, WsMessage};
use estuary_server::{Admission, ConnectionInfo, InMemoryConnection, RouterService, ServerFrame};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// What went wrong while talking to the application.
#[derive(Debug, thiserror::Error)]
pub enum CommunicatorError {
    /// Nothing arrived within the timeout.
    #[error("nothing received within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection (the frame it sent, if any).
    #[error("connection closed by the server: {0:?}")]
    Closed(Option<CloseFrame>),
    /// The handshake was rejected. The body is the response's, as the
    /// server sent it (Estuary's refusals: the reason and a line feed); the
    /// message shows it as text.
    #[error("handshake rejected with {status}: {}", String::from_utf8_lossy(body).trim())]
    Rejected {
        /// The HTTP status.
        status: StatusCode,
        /// The response body.
        body: Bytes,
    },
    /// The handshake request could not be built (a header or path given to
    /// the communicator is invalid).
    #[error("invalid handshake request: {0}")]
    Request(#[source] http::Error),
    /// A value given to [`Communicator::send_json`] could not be encoded.
    #[error("cannot encode the message as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// A binary message came where a text message was expected.
    #[error("unexpected binary message of {len} bytes (a text message was expected)")]
    NotText {
        /// The binary message's length.
        len: usize,
    },
    /// A message was not the expected JSON.
    #[error("unexpected message: {source}: {message:?}")]
    NotJson {
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
        /// The message as it came.
        message: WsMessage,
    },
    /// `connect` was not called, or the connection is over.
    #[error("not connected")]
    NotConnected,
}

/// An in-process WebSocket client for an application: no TCP, same routing,
/// same consumers, same session loop as the server.
///
/// Every receive waits at most the communicator's timeout (1 s by default).
///
/// ```
/// use estuary_core::{Consumer, ConsumerError, Context, NoEvent, WsMessage};
/// use estuary_server::Router;
/// use estuary_testing::Communicator;
///
/// struct Echo;
/// impl Consumer for Echo {
///     type Event = NoEvent;
///     async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
///         ctx.send(msg).await
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let app = Router::new().websocket("ws/echo/", || Echo).into_service();
/// let mut c = Communicator::new(app, "/ws/echo/");
/// c.connect().await.unwrap();
/// c.send_text("hello").await.unwrap();
/// assert_eq!(c.receive_text().await.unwrap(), "hello");
/// c.assert_no_message().await;
/// c.disconnect().await;
/// # });
/// ```
#[derive(Debug)]
pub struct Communicator {
    app: RouterService,
    path_and_query: String,
    headers: HeaderMap,
    subprotocols: Vec<String>,
    admission: Option<Admission>,
    info: ConnectionInfo,
    timeout: Duration,
    no_message_wait: Duration,
    shutdown: CancellationToken,
    conn: Option<InMemoryConnection>,
    close: Option<Option<CloseFrame>>,
}

impl Communicator {
    /// A client for `path` (with an optional `?query`) on `app`.
    pub fn new(app: impl Into<RouterService>, path: &str) -> Self {
        Self {
            app: app.into(),
            path_and_query: path.to_owned(),
            headers: HeaderMap::new(),
            subprotocols: Vec::new(),
            admission: None,
            info: ConnectionInfo {
                peer: Some(([127, 0, 0, 1], 40000).into()),
                client: Some(([127, 0, 0, 1], 40000).into()),
                local: Some(([127, 0, 0, 1], 8000).into()),
                ..ConnectionInfo::default()
            },
            timeout: Duration::from_secs(1),
            no_message_wait: Duration::from_millis(100),
            shutdown: CancellationToken::new(),
            conn: None,
            close: None,
        }
    }

    /// Adds a handshake header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            self.headers.append(n, v);
        }
        self
    }

    /// Offers a subprotocol.
    pub fn subprotocol(mut self, protocol: &str) -> Self {
        self.subprotocols.push(protocol.to_owned());
        self
    }

    /// Connects as `user`, as an authentication layer would have decided
    /// (Channels: `communicator.scope["user"] = user`).
    ///
    /// ```
    /// use estuary_core::{Connect, Consumer, ConsumerError, Context, NoEvent, User};
    /// use estuary_server::Router;
    /// use estuary_testing::Communicator;
    ///
    /// struct Hello;
    /// impl Consumer for Hello {
    ///     type Event = NoEvent;
    ///     async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
    ///         let name = ctx.scope().user().map_or("stranger", |u| u.name()).to_owned();
    ///         ctx.send_text(format!("hello {name}")).await?;
    ///         Ok(Connect::accept())
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let app = Router::new().websocket("ws/", || Hello).into_service();
    /// let mut c = Communicator::new(app, "/ws/").user(User::new("42", "alice"));
    /// c.connect().await.unwrap();
    /// assert_eq!(c.receive_text().await.unwrap(), "hello alice");
    /// # });
    /// ```
    pub fn user(self, user: User) -> Self {
        self.admission(Admission::from(user))
    }

    /// Connects with what an authentication layer admitted: the user (or
    /// none), groups joined before `connect`, and the scope's data.
    pub fn admission(mut self, admission: Admission) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Sets how long a receive waits (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how long [`assert_no_message`](Self::assert_no_message) watches (default 100 ms).
    pub fn no_message_wait(mut self, wait: Duration) -> Self {
        self.no_message_wait = wait;
        self
    }

    /// A token that, when cancelled, acts like a server shutdown (close 1001).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Performs the handshake. On acceptance returns the selected subprotocol.
    pub async fn connect(&mut self) -> Result<Option<String>, CommunicatorError> {
        let mut builder = Request::builder().method("GET").uri(&self.path_and_query);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if !self.subprotocols.is_empty() {
            builder = builder.header("sec-websocket-protocol", self.subprotocols.join(", "));
        }
        if let Some(admission) = self.admission.clone() {
            builder = builder.extension(admission);
        }
        let request = builder.body(()).map_err(CommunicatorError::Request)?;
        match self
            .app
            .open_in_memory(request, self.info.clone(), self.shutdown.clone())
            .await
        {
            Ok(conn) => {
                let protocol = conn.accept.subprotocol.clone();
                self.conn = Some(conn);
                Ok(protocol)
            }
            Err(response) => {
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Err(CommunicatorError::Rejected { status, body })
            }
        }
    }

    fn conn(&mut self) -> Result<&mut InMemoryConnection, CommunicatorError> {
        self.conn.as_mut().ok_or(CommunicatorError::NotConnected)
    }

    /// Sends a message to the consumer.
    pub async fn send(&mut self, message: WsMessage) -> Result<(), CommunicatorError> {
        let conn = self.conn()?;
        conn.client
            .to_server
            .send(Inbound::Message(message))
            .await
            .map_err(|_| CommunicatorError::Closed(None))
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), CommunicatorError> {
        self.send(WsMessage::text(text.to_owned())).await
    }

    /// Sends a binary message.
    pub async fn send_binary(
        &mut self,
        bytes: impl Into<estuary_core::Bytes>,
    ) -> Result<(), CommunicatorError> {
        self.send(WsMessage::Binary(bytes.into())).await
    }

    /// Sends `value` as a JSON text message.
    pub async fn send_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CommunicatorError> {
        let text = serde_json::to_string(value).map_err(CommunicatorError::Encode)?;
        self.send(WsMessage::text(text)).await
    }

    /// The next message from the consumer, waiting at most the timeout.
    pub async fn receive(&mut self) -> Result<WsMessage, CommunicatorError> {
        if let Some(frame) = &self.close {
            return Err(CommunicatorError::Closed(frame.clone()));
        }
        let timeout = self.timeout;
        let conn = self.conn()?;
        match tokio::time::timeout(timeout, conn.client.from_server.recv()).await {
            Err(_) => Err(CommunicatorError::Timeout(timeout)),
            Ok(Some(ServerFrame::Message(message))) => Ok(message),
            Ok(Some(ServerFrame::Close(frame))) => {
                self.close = Some(frame.clone());
                Err(CommunicatorError::Closed(frame))
            }
            Ok(None) => {
                self.close = Some(None);
                Err(CommunicatorError::Closed(None))
            }
        }
    }

    /// The next message, which must be text.
    pub async fn receive_text(&mut self) -> Result<String, CommunicatorError> {
        match self.receive().await? {
            WsMessage::Text(t) => Ok(t.to_string()),
            WsMessage::Binary(b) => Err(CommunicatorError::NotText { len: b.len() }),
        }
    }

    /// The next message, parsed as JSON.
    pub async fn receive_json<T: DeserializeOwned>(&mut self) -> Result<T, CommunicatorError> {
        let message = self.receive().await?;
        message
            .parse_json()
            .map_err(|source| CommunicatorError::NotJson { source, message })
    }

    /// Waits for the server to close; returns its close code (1006 when it
    /// ended without a close frame). Messages before the close are skipped.
    pub async fn receive_close(&mut self) -> Result<CloseCode, CommunicatorError> {
        loop {
            match self.receive().await {
                Ok(_) => continue,
                Err(CommunicatorError::Closed(frame)) => {
                    return Ok(frame.map_or(CloseCode::ABNORMAL, |f| f.code()));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Panics if a message (or a close) arrives within the no-message wait.
    pub async fn assert_no_message(&mut self) {
        let wait = self.no_message_wait;
        let Ok(conn) = self.conn() else { return };
        if let Ok(Some(frame)) = tokio::time::timeout(wait, conn.client.from_server.recv()).await {
            panic!("expected no message, got {frame:?}");
        }
    }

    /// Closes from the client side with 1000 and waits for the consumer's
    /// `disconnect` to finish; returns how the session ended.
    pub async fn disconnect(self) -> Option<Outcome> {
        self.disconnect_with(CloseCode::NORMAL).await
    }

    /// Closes from the client side with `code`.
    pub async fn disconnect_with(mut self, code: CloseCode) -> Option<Outcome> {
        let timeout = self.timeout;
        let conn = self.conn.take()?;
        let _ = conn
            .client
            .to_server
            .send(Inbound::Close(Some(CloseFrame::new(code, ""))))
            .await;
        tokio::time::timeout(timeout * 5, conn.task).await.ok()?.ok()
    }
}
