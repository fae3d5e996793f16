//! The connect callback: the handshake POSTed to the application, its
//! answer turned into an admission or a refusal.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use estuary_core::auth::{Admission, AuthError, AuthFuture, Authenticator, Handshake, check_user_bounds};
use estuary_core::{Recheck, User, address_key};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use crate::answer::{AnswerError, Decision, MAX_ANSWER_SIZE, parse_answer};
use crate::config::{CallbackConfig, SIGNATURE_HEADER};

/// Why the application's answer could not be had or used. Each names the
/// callback URL, [`CallbackConfig::url`] (which holds no password:
/// [`CallbackConfig::new`] refuses user info).
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The application could not be reached (refused, reset, DNS).
    #[error("cannot reach the connect callback {url}: {source}")]
    Unreachable {
        /// The callback URL.
        url: Uri,
        /// What the client said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Every slot was taken for the whole timeout (a recheck: at once).
    #[error("all {max_in_flight} connect callbacks to {url} in flight")]
    Busy {
        /// The callback URL.
        url: Uri,
        /// The configured bound.
        max_in_flight: usize,
    },
    /// The client's address already holds its share of the slots
    /// ([`CallbackConfig::with_max_in_flight_per_client`]): 429 at once.
    #[error("{max} connect callbacks already in flight for client address {client}")]
    ClientBusy {
        /// The client's address (an IPv6 address by its /64).
        client: IpAddr,
        /// The configured bound.
        max: usize,
    },
    /// No answer within the timeout.
    #[error("no answer from the connect callback {url} within {after:?}")]
    Timeout {
        /// The callback URL.
        url: Uri,
        /// The timeout.
        after: Duration,
    },
    /// The application failed (a 5xx status).
    #[error("the connect callback {url} failed with {status}")]
    Failed {
        /// The callback URL.
        url: Uri,
        /// Its status.
        status: StatusCode,
    },
    /// A status that is no answer (not 200, not 5xx), with a hint.
    #[error("the connect callback {url} answered {status}: {hint}")]
    Status {
        /// The callback URL.
        url: Uri,
        /// Its status.
        status: StatusCode,
        /// What it likely means.
        hint: &'static str,
    },
    /// A 200 whose body is not an answer.
    #[error("the connect callback {url} answered badly: {source}")]
    Answer {
        /// The callback URL.
        url: Uri,
        /// What is wrong with it.
        #[source]
        source: AnswerError,
    },
    /// A 200 whose body is larger than 64 KiB, or could not be read.
    #[error("the connect callback {url}'s answer could not be read (at most 64 KiB): {source}")]
    Body {
        /// The callback URL.
        url: Uri,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<CallbackError> for AuthError {
    fn from(error: CallbackError) -> Self {
        match error {
            CallbackError::Unreachable { .. }
            | CallbackError::Busy { .. }
            | CallbackError::Timeout { .. }
            | CallbackError::Failed { .. } => AuthError::Unavailable(Box::new(error)),
            CallbackError::Status { .. } | CallbackError::Answer { .. } | CallbackError::Body { .. } => {
                AuthError::BadAnswer(Box::new(error))
            }
            CallbackError::ClientBusy { .. } => AuthError::Refused {
                status: StatusCode::TOO_MANY_REQUESTS,
                reason:
                    "too many handshakes from your address are waiting to be authenticated: retry in a second"
                        .into(),
            },
        }
    }
}

/// An [`Authenticator`] that asks the application: the handshake is POSTed
/// as JSON to [`CallbackConfig::new`]'s URL, signed with the shared
/// secret, and the answer admits the visitor (a user or none, groups to
/// join, data for the scope) or refuses it (an HTTP status, or a close
/// code after the upgrade). The crate documentation gives the protocol
/// and a Django view that answers it.
///
/// Failures never let anyone in by mistake: an application that cannot be
/// reached, does not answer within the timeout or fails (5xx) gives the
/// handshake 503; one that answers something else (another status, a body
/// that is not an answer) gives it 502 and the operator an error line.
/// Connections are kept alive and reused.
///
/// ```no_run
/// use estuary_callback::{CallbackConfig, ConnectCallback};
/// use estuary_server::{AuthLayer, Router};
/// use tower::Layer;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = CallbackConfig::new("http://127.0.0.1:8000/estuary/connect/", std::env::var("ESTUARY_CALLBACK_SECRET")?)?;
/// let service = AuthLayer::new(ConnectCallback::new(config)).layer(Router::new().into_service());
/// # let _ = service;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConnectCallback {
    inner: Arc<Inner>,
}

struct Inner {
    config: CallbackConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    in_flight: Semaphore,
    /// The handshakes holding or waiting for a slot, per client address
    /// (by [`address_key`]); an address is removed at zero.
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// A client address's share of the slots, given back on drop.
struct ClientSlot<'a> {
    per_client: &'a Mutex<HashMap<IpAddr, usize>>,
    key: IpAddr,
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        let mut per_client = estuary_core::sync::lock(self.per_client);
        if let Some(n) = per_client.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_client.remove(&self.key);
            }
        }
    }
}

impl std::fmt::Debug for ConnectCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectCallback")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Why the application is asked: the body's `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A handshake: waits for a slot.
    Connect,
    /// An open connection asked about again: only takes a free slot.
    Recheck,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Connect => "connect",
            Event::Recheck => "recheck",
        }
    }
}

/// What of a handshake is sent, owned (a recheck sends it again).
#[derive(Debug, Clone)]
struct Asked {
    /// The JSON fields but `event` and `time`.
    fields: serde_json::Map<String, serde_json::Value>,
    /// The forwarded headers and cookies.
    headers: HeaderMap,
    /// The client's address, whose handshakes share the slots fairly.
    client: Option<IpAddr>,
}

impl ConnectCallback {
    /// A callback as configured.
    pub fn new(config: CallbackConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        // Idle connections are dropped after 1.5 s, before the application
        // closes them (gunicorn keeps them 2 s, uvicorn 5 s), and reaped by a
        // timer; a reuse that still races the application's close is asked
        // again (see `ask`).
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(1500))
            .build(connector);
        Self {
            inner: Arc::new(Inner {
                in_flight: Semaphore::new(config.max_in_flight),
                per_client: Mutex::new(HashMap::new()),
                config,
                client,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CallbackConfig {
        &self.inner.config
    }

    /// What of `handshake` the application is told.
    fn asked(&self, handshake: &Handshake<'_>) -> Asked {
        let config = &self.inner.config;
        let mut headers = HeaderMap::new();
        let mut header_fields = BTreeMap::new();
        for name in &config.headers {
            let mut texts = Vec::new();
            for value in handshake.headers.get_all(name) {
                // An owned copy: hyper's values are slices of its read
                // buffer, which a recheck would otherwise keep alive for the
                // connection's life.
                if let Ok(owned) = HeaderValue::from_bytes(value.as_bytes()) {
                    headers.append(name.clone(), owned);
                }
                if let Ok(text) = value.to_str() {
                    texts.push(text);
                }
            }
            if !texts.is_empty() {
                // Sent twice: one field, as HTTP combines them.
                header_fields.insert(
                    name.as_str().to_owned(),
                    serde_json::Value::from(texts.join(", ")),
                );
            }
        }
        let mut cookie_fields = BTreeMap::new();
        let mut cookie_header = String::new();
        for name in &config.cookies {
            if let Some(value) = handshake.cookie(name) {
                if !cookie_header.is_empty() {
                    cookie_header.push_str("; ");
                }
                cookie_header.push_str(name);
                cookie_header.push('=');
                cookie_header.push_str(&value);
                cookie_fields.insert(name.clone(), serde_json::Value::from(value));
            }
        }
        if let Ok(value) = HeaderValue::from_str(&cookie_header)
            && !cookie_header.is_empty()
        {
            headers.insert(header::COOKIE, value);
        }
        let client = handshake
            .client
            .map(|addr| serde_json::json!({"host": addr.ip().to_string(), "port": addr.port()}));
        let mut fields = serde_json::Map::new();
        fields.insert("path".into(), handshake.uri.path().into());
        fields.insert("query".into(), handshake.uri.query().unwrap_or_default().into());
        fields.insert("headers".into(), header_fields.into_iter().collect());
        fields.insert("cookies".into(), cookie_fields.into_iter().collect());
        fields.insert("client".into(), client.unwrap_or_default());
        Asked {
            fields,
            headers,
            client: handshake.client.map(|addr| addr.ip()),
        }
    }

    /// Takes one of `client`'s share of the slots, or refuses at once when
    /// it holds them all.
    fn client_slot(&self, client: IpAddr) -> Result<ClientSlot<'_>, CallbackError> {
        let inner = &*self.inner;
        let key = address_key(client);
        let max = inner.config.max_in_flight_per_client();
        let mut per_client = estuary_core::sync::lock(&inner.per_client);
        let n = per_client.entry(key).or_insert(0);
        if *n >= max {
            drop(per_client);
            estuary_core::throttled!(
                warn,
                client = %key,
                max,
                "handshake refused with 429: this client address already has its share of the connect \
                 callbacks in flight; if many users share it (a reverse proxy), list the proxy in \
                 trusted_proxies or raise [auth.callback] max_in_flight_per_client (held_back: refusals \
                 since the last line)"
            );
            return Err(CallbackError::ClientBusy { client: key, max });
        }
        *n += 1;
        Ok(ClientSlot {
            per_client: &inner.per_client,
            key,
        })
    }

    /// Asks the application about `asked`.
    ///
    /// A handshake waits for a slot at most the timeout (503 past it), then
    /// the exchange has the whole timeout of its own: a request never starts
    /// with its time nearly spent. A recheck takes a slot only if one is
    /// free (otherwise it is tried again at the next interval), so rechecks
    /// never crowd out handshakes.
    async fn ask(&self, asked: &Asked, event: Event) -> Result<Decision, CallbackError> {
        let inner = &*self.inner;
        let timeout = inner.config.timeout;
        let busy = || CallbackError::Busy {
            url: inner.config.url.clone(),
            max_in_flight: inner.config.max_in_flight,
        };
        // A handshake holds its address's share from before it waits for a
        // slot: one address cannot queue up ahead of the others either.
        // A client whose address is unknown (a Unix socket behind a proxy
        // not in trusted_proxies) shares one share with every other such
        // client, as all clients of an untrusted proxy share its address:
        // never no bound at all.
        let _client_slot = match event {
            Event::Connect => Some(
                self.client_slot(
                    asked
                        .client
                        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
                )?,
            ),
            Event::Recheck => None,
        };
        let _slot = if event == Event::Recheck {
            inner.in_flight.try_acquire().map_err(|_| busy())?
        } else {
            match tokio::time::timeout(timeout, inner.in_flight.acquire()).await {
                Ok(Ok(slot)) => slot,
                Ok(Err(_)) | Err(_) => return Err(busy()),
            }
        };
        let mut fields = asked.fields.clone();
        fields.insert("event".into(), event.name().into());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        fields.insert("time".into(), now.into());
        let body = Bytes::from(serde_json::to_vec(&fields).unwrap_or_default());
        let signature = HeaderValue::from_str(&sign(&inner.config.secret, &body)).ok();
        let exchange = async {
            // Once more on a new connection when a kept-alive one fails
            // under the request (the application closed it as it was
            // reused): that is no answer, and the question is harmless to
            // repeat.
            let mut again = true;
            loop {
                let mut request = Request::new(Full::new(body.clone()));
                *request.method_mut() = Method::POST;
                *request.uri_mut() = inner.config.url.clone();
                let h = request.headers_mut();
                h.extend(asked.headers.clone());
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
                if let Some(signature) = &signature {
                    h.insert(SIGNATURE_HEADER, signature.clone());
                }
                match inner.client.request(request).await {
                    Ok(response) => return self.read(response).await,
                    Err(error) if again && !error.is_connect() => {
                        tracing::debug!(url = %inner.config.url, %error, "connect callback failed on a kept-alive connection; asking again");
                        again = false;
                    }
                    Err(error) => {
                        return Err(CallbackError::Unreachable {
                            url: inner.config.url.clone(),
                            source: Box::new(error),
                        });
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(decided) => decided,
            Err(_) => Err(CallbackError::Timeout {
                url: inner.config.url.clone(),
                after: timeout,
            }),
        }
    }

    /// The decision in `response`.
    async fn read(&self, response: http::Response<hyper::body::Incoming>) -> Result<Decision, CallbackError> {
        let url = &self.inner.config.url;
        let status = response.status();
        if status.is_server_error() {
            return Err(CallbackError::Failed {
                url: url.clone(),
                status,
            });
        }
        if status != StatusCode::OK {
            let hint = match status.as_u16() {
                300..=399 => {
                    "a redirect is no answer (is the view behind login_required, or SECURE_SSL_REDIRECT without SECURE_REDIRECT_EXEMPT?)"
                }
                400 => {
                    "Django answers 400 to a Host it does not allow: add the callback URL's host to ALLOWED_HOSTS"
                }
                401 | 403 => "the application refused the callback itself (does its secret match Estuary's?)",
                404 | 405 => "the URL does not lead to the callback view",
                _ => "only 200 with a JSON answer decides",
            };
            return Err(CallbackError::Status {
                url: url.clone(),
                status,
                hint,
            });
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER_SIZE)
            .collect()
            .await
            .map_err(|source| CallbackError::Body {
                url: url.clone(),
                source,
            })?
            .to_bytes();
        let bad = |source| CallbackError::Answer {
            url: url.clone(),
            source,
        };
        let decision = parse_answer(&body).map_err(bad)?;
        if let Decision::Accept(Admission { user: Some(user), .. }) = &decision {
            check_user_bounds(user.id(), user.name(), self.inner.config.max_name_chars)
                .map_err(|e| bad(AnswerError::user(e)))?;
        }
        Ok(decision)
    }

    /// Asks the application about `handshake`, as the handshake would.
    pub async fn decide(&self, handshake: Handshake<'_>) -> Result<Decision, CallbackError> {
        self.ask(&self.asked(&handshake), Event::Connect).await
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
///
/// ```
/// // The Python side: "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
/// let signature = estuary_callback::sign(b"key", b"The quick brown fox jumps over the lazy dog");
/// assert_eq!(signature, "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
/// ```
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        // HMAC takes keys of any length.
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

impl Authenticator for ConnectCallback {
    fn authenticate<'a>(&'a self, handshake: Handshake<'a>) -> AuthFuture<'a> {
        let asked = self.asked(&handshake);
        Box::pin(async move {
            match self.ask(&asked, Event::Connect).await? {
                Decision::Accept(admission) => Ok(admission),
                Decision::Reject(rejection) => Err(rejection.into()),
            }
        })
    }

    /// With [`CallbackConfig::with_recheck_every`]: the same question
    /// again, `"event": "recheck"`. Still the same user: kept. Another
    /// user, none, or a refusal: closed with 4401. No answer: kept, and
    /// asked again at the next interval.
    fn recheck(self: Arc<Self>, handshake: Handshake<'_>, user: &User) -> Option<Recheck> {
        let every = self.inner.config.recheck_every?;
        let asked = Arc::new(self.asked(&handshake));
        let id = user.id().to_owned();
        Some(Recheck::new(every, move || {
            let callback = self.clone();
            let asked = asked.clone();
            let id = id.clone();
            async move {
                match callback.ask(&asked, Event::Recheck).await? {
                    Decision::Accept(Admission { user: Some(user), .. }) => Ok(user.id() == id),
                    Decision::Accept(_) | Decision::Reject(_) => Ok(false),
                }
            }
        }))
    }
}
