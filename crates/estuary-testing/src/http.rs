//! `HttpClient`: drive an application's HTTP routes in process (no
//! socket), beside the WebSocket [`Communicator`](crate::Communicator).

use std::time::Duration;

use axum::body::{Body, Bytes};
use estuary_core::BoxError;
use estuary_server::ConnectionInfo;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// What went wrong while talking to the application over HTTP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpClientError {
    /// The request could not be built (a bad header name or value, a bad
    /// URI).
    #[error("invalid request")]
    InvalidRequest(#[source] http::Error),
    /// A request body could not be serialized as JSON, or a response body
    /// (or event data) was not the JSON expected.
    #[error("not the JSON expected")]
    Json(#[source] serde_json::Error),
    /// Nothing (no answer, no body, no event) arrived within the timeout.
    #[error("nothing received within {0:?}")]
    Timeout(Duration),
    /// The service returned an error instead of a response.
    #[error("the service failed")]
    Service(#[source] BoxError),
    /// The response body failed while it was read.
    #[error("the response body failed")]
    Body(#[source] BoxError),
    /// The body is not UTF-8 text.
    #[error("the body is not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The event stream ended before an event arrived.
    #[error("the event stream ended")]
    StreamEnded,
}

type Service = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// An in-process HTTP client for an application: an
/// [`estuary_server::Router`]'s service, an axum `Router`, or any tower
/// service; requests go straight to it (no TCP), with the
/// [`ConnectionInfo`] of a loopback client as the server would add.
///
/// Every wait (the answer, a body, an event) is bounded by the client's
/// timeout, 1 s by default.
///
/// ```
/// use axum::Json;
/// use axum::routing::{get, post};
/// use estuary_server::Router;
/// use estuary_testing::HttpClient;
/// use http::StatusCode;
/// use serde_json::{Value, json};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let app = Router::new()
///     .route("/health", get(|| async { "ok" }))
///     .route("/echo", post(|Json(v): Json<Value>| async move { Json(v) }))
///     .into_service();
/// let client = HttpClient::new(app);
///
/// let response = client.get("/health").send().await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(response.text().await.unwrap(), "ok");
///
/// let response = client.post("/echo").json(&json!({"n": 1})).send().await.unwrap();
/// assert_eq!(response.json::<Value>().await.unwrap(), json!({"n": 1}));
/// # });
/// ```
#[derive(Clone)]
pub struct HttpClient {
    service: Service,
    info: ConnectionInfo,
    timeout: Duration,
    no_event_wait: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("info", &self.info)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for `service`.
    pub fn new<S, B>(service: S) -> Self
    where
        S: tower::Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let service = service
            .map_response(|response: Response<B>| response.map(Body::new))
            .map_err(Into::into);
        Self {
            service: BoxCloneSyncService::new(service),
            info: ConnectionInfo {
                peer: Some(([127, 0, 0, 1], 40000).into()),
                client: Some(([127, 0, 0, 1], 40000).into()),
                local: Some(([127, 0, 0, 1], 8000).into()),
                ..ConnectionInfo::default()
            },
            timeout: Duration::from_secs(1),
            no_event_wait: Duration::from_millis(100),
        }
    }

    /// Sets how long any wait may take (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how long [`SseStream::assert_no_event`] waits (default 100 ms).
    pub fn no_event_wait(mut self, wait: Duration) -> Self {
        self.no_event_wait = wait;
        self
    }

    /// Sets the addresses handlers see in [`ConnectionInfo`].
    pub fn connection_info(mut self, info: ConnectionInfo) -> Self {
        self.info = info;
        self
    }

    /// A request with `method` for `path` (with an optional `?query`).
    pub fn request(&self, method: Method, path: &str) -> TestRequest {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(headers) = builder.headers_mut() {
            headers.insert(header::HOST, HeaderValue::from_static("testserver"));
        }
        TestRequest {
            client: self.clone(),
            builder,
            body: Body::empty(),
            error: None,
        }
    }

    /// A `GET` request.
    pub fn get(&self, path: &str) -> TestRequest {
        self.request(Method::GET, path)
    }

    /// A `POST` request.
    pub fn post(&self, path: &str) -> TestRequest {
        self.request(Method::POST, path)
    }

    /// A `PUT` request.
    pub fn put(&self, path: &str) -> TestRequest {
        self.request(Method::PUT, path)
    }

    /// A `DELETE` request.
    pub fn delete(&self, path: &str) -> TestRequest {
        self.request(Method::DELETE, path)
    }
}

/// A request being built by an [`HttpClient`]; [`send`](Self::send) it.
#[derive(Debug)]
#[must_use = "a request does nothing until it is sent"]
pub struct TestRequest {
    client: HttpClient,
    builder: http::request::Builder,
    body: Body,
    error: Option<HttpClientError>,
}

impl TestRequest {
    /// Adds a header (a bad name or value fails the [`send`](Self::send)).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Sends `value` as an `application/json` body.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                self.body = Body::from(bytes);
                self.header("content-type", "application/json")
            }
            Err(e) => {
                self.error = Some(HttpClientError::Json(e));
                self
            }
        }
    }

    /// Sends `body` as it is (set a `content-type` with [`header`](Self::header)).
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request; waits at most the client's timeout for the
    /// response's head (the body is read afterwards, see [`TestResponse`]).
    pub async fn send(self) -> Result<TestResponse, HttpClientError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let mut request = self
            .builder
            .body(self.body)
            .map_err(HttpClientError::InvalidRequest)?;
        request.extensions_mut().insert(self.client.info.clone());
        let timeout = self.client.timeout;
        let response = tokio::time::timeout(timeout, self.client.service.clone().oneshot(request))
            .await
            .map_err(|_| HttpClientError::Timeout(timeout))?
            .map_err(HttpClientError::Service)?;
        Ok(TestResponse {
            response,
            timeout,
            no_event_wait: self.client.no_event_wait,
        })
    }
}

/// A response an [`HttpClient`] got: its status and headers now, its body
/// read with a timeout.
#[derive(Debug)]
pub struct TestResponse {
    response: Response<Body>,
    timeout: Duration,
    no_event_wait: Duration,
}

impl TestResponse {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// A header's value as text (`None` when absent or not text).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = HeaderName::try_from(name).ok()?;
        self.response.headers().get(name)?.to_str().ok()
    }

    /// The whole body, read within the timeout.
    pub async fn bytes(self) -> Result<Bytes, HttpClientError> {
        let timeout = self.timeout;
        let collected = tokio::time::timeout(timeout, self.response.into_body().collect())
            .await
            .map_err(|_| HttpClientError::Timeout(timeout))?
            .map_err(|e| HttpClientError::Body(e.into()))?;
        Ok(collected.to_bytes())
    }

    /// The whole body as text.
    pub async fn text(self) -> Result<String, HttpClientError> {
        let bytes = self.bytes().await?;
        std::str::from_utf8(&bytes)
            .map(str::to_owned)
            .map_err(HttpClientError::NotUtf8)
    }

    /// The whole body as JSON.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, HttpClientError> {
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(HttpClientError::Json)
    }

    /// The body as a stream of server-sent events, read one by one.
    pub fn sse(self) -> SseStream {
        SseStream {
            body: self.response.into_body(),
            pending: Vec::new(),
            current: SseRecord::default(),
            timeout: self.timeout,
            no_event_wait: self.no_event_wait,
        }
    }

    /// The response itself.
    pub fn into_inner(self) -> Response<Body> {
        self.response
    }
}

/// One record of an event stream, as a browser's `EventSource` parses it
/// (its fields up to the blank line that ends it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SseRecord {
    /// The `event:` name (`None`: the browser fires `message`).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`; `None` when there was no `data:`
    /// (the browser dispatches nothing then).
    pub data: Option<String>,
    /// The `id:`, if the record had one.
    pub id: Option<String>,
    /// The `retry:` delay, if the record had one.
    pub retry: Option<Duration>,
    /// The comment lines (`: keep-alive`), without the colon.
    pub comments: Vec<String>,
}

impl SseRecord {
    /// True when a browser would dispatch it (it has data).
    pub fn is_event(&self) -> bool {
        self.data.is_some()
    }

    /// The data as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpClientError> {
        serde_json::from_str(self.data.as_deref().unwrap_or_default()).map_err(HttpClientError::Json)
    }

    /// Applies one line of the stream; true when it ended the record.
    fn feed(&mut self, line: &str) -> bool {
        if line.is_empty() {
            return true;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.comments.push(comment.trim_start_matches(' ').to_owned());
            return false;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        false
    }
}

/// A response body read as server-sent events, one record at a time, each
/// wait bounded by the client's timeout. Dropping it drops the body: the
/// server sees the client go away.
#[derive(Debug)]
pub struct SseStream {
    body: Body,
    /// Bytes received and not yet split into lines.
    pending: Vec<u8>,
    /// The record the lines read so far belong to.
    current: SseRecord,
    timeout: Duration,
    no_event_wait: Duration,
}

impl SseStream {
    /// The next record: an event, or a comment (a keep-alive) or a `retry:`
    /// alone.
    pub async fn next_record(&mut self) -> Result<SseRecord, HttpClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.read_record())
            .await
            .map_err(|_| HttpClientError::Timeout(timeout))?
    }

    /// The next record with data (what a browser dispatches), skipping
    /// comments and `retry:`-only records; all within one timeout.
    pub async fn next_event(&mut self) -> Result<SseRecord, HttpClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            loop {
                let record = self.read_record().await?;
                if record.is_event() {
                    return Ok(record);
                }
            }
        })
        .await
        .map_err(|_| HttpClientError::Timeout(timeout))?
    }

    /// Panics if an event (not a comment) arrives within the client's
    /// no-event wait (100 ms by default).
    pub async fn assert_no_event(&mut self) {
        let wait = self.no_event_wait;
        let next = tokio::time::timeout(wait, async {
            loop {
                match self.read_record().await {
                    Ok(record) if !record.is_event() => continue,
                    other => return other,
                }
            }
        })
        .await;
        if let Ok(got) = next {
            panic!("expected no event, got {got:?}");
        }
    }

    /// Cancel-safe: a record's lines are kept in `self` until it is whole.
    async fn read_record(&mut self) -> Result<SseRecord, HttpClientError> {
        loop {
            while let Some(line) = self.take_line()? {
                if self.current.feed(&line) {
                    return Ok(std::mem::take(&mut self.current));
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(HttpClientError::Body(e.into())),
                None => return Err(HttpClientError::StreamEnded),
            }
        }
    }

    /// The next whole line (ended by CRLF, LF or CR), if one was received.
    fn take_line(&mut self) -> Result<Option<String>, HttpClientError> {
        let Some(end) = self.pending.iter().position(|&b| b == b'\n' || b == b'\r') else {
            return Ok(None);
        };
        // A CR at the end of what arrived may be the first half of a CRLF.
        if self.pending[end] == b'\r' && end + 1 == self.pending.len() {
            return Ok(None);
        }
        let skip = if self.pending[end] == b'\r' && self.pending[end + 1] == b'\n' {
            2
        } else {
            1
        };
        let line = std::str::from_utf8(&self.pending[..end])
            .map(str::to_owned)
            .map_err(HttpClientError::NotUtf8)?;
        self.pending.drain(..end + skip);
        Ok(Some(line))
    }
}
