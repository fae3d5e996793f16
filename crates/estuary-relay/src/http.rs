//! The HTTP transport: each event POSTed as signed JSON, the answer read
//! strictly.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use estuary_callback::{SIGNATURE_HEADER, sign};
use estuary_core::Message;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;

use crate::wire::{self, Reply, state_bytes};

/// Why an event got no answer over HTTP.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    #[error("answered {0} (only 200 with a JSON answer counts; redirects are not followed)")]
    Status(StatusCode),
    #[error("the answer could not be read (larger than the limit?): {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the answer is not {{\"messages\": [...], \"state\": {{...}}}}: {0}")]
    Answer(#[source] serde_json::Error),
}

impl HttpError {
    /// True when the application did not answer in time.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, HttpError::Timeout(_))
    }
}

/// An answer: messages applied in order, then the acknowledgement with
/// the new state (when given).
pub(crate) struct Answer {
    pub(crate) messages: Vec<Reply>,
    pub(crate) state: Option<Bytes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswer {
    #[serde(default)]
    messages: Vec<Reply>,
    #[serde(default)]
    state: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A pooled client for one URL and secret.
pub(crate) struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    url: http::Uri,
    secret: Arc<[u8]>,
    max_answer: usize,
}

impl HttpClient {
    /// A client keeping at most `max_idle` idle connections. How many
    /// requests are out at once is the relay's to bound: its events by
    /// `max_in_flight`, its disconnects by as many again.
    pub(crate) fn new(url: http::Uri, secret: Arc<[u8]>, max_answer: usize, max_idle: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Idle connections go before the application closes them
        // (gunicorn keeps them 2 s); hyper retries a request that meets a
        // connection closed before it was written.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(1500))
            .pool_max_idle_per_host(max_idle)
            .build(connector);
        Self {
            client,
            url,
            secret,
            max_answer,
        }
    }

    /// POSTs `event` as JSON (with `time`), signed; reads the answer
    /// within `timeout` in all.
    pub(crate) async fn post(&self, event: &Message, timeout: Duration) -> Result<Answer, HttpError> {
        let time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let body = Bytes::from(serde_json::to_vec(&wire::to_json(event, time)).unwrap_or_default());
        let signature = HeaderValue::from_str(&sign(&self.secret, &body)).ok();
        let exchange = async {
            let mut request = Request::new(Full::new(body));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = self.url.clone();
            let headers = request.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            if let Some(signature) = signature {
                headers.insert(SIGNATURE_HEADER, signature);
            }
            let response = self
                .client
                .request(request)
                .await
                .map_err(HttpError::Unreachable)?;
            if response.status() != StatusCode::OK {
                return Err(HttpError::Status(response.status()));
            }
            let body = Limited::new(response.into_body(), self.max_answer)
                .collect()
                .await
                .map_err(HttpError::Body)?
                .to_bytes();
            parse_answer(&body)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }
}

/// Reads `{"messages": [...], "state": {...}}` (both optional, nothing
/// else).
fn parse_answer(body: &[u8]) -> Result<Answer, HttpError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(HttpError::Answer)?;
    if !value.is_object() {
        return Err(HttpError::Answer(serde::de::Error::custom("not an object")));
    }
    let raw: RawAnswer = serde_json::from_value(value).map_err(HttpError::Answer)?;
    let state = raw
        .state
        .map(|map| rmpv::ext::to_value(serde_json::Value::Object(map)).unwrap_or(rmpv::Value::Nil));
    Ok(Answer {
        messages: raw.messages,
        state: state_bytes(state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        let answer =
            parse_answer(br#"{"messages": [{"type": "websocket.send", "text": "hi"}], "state": {"n": 1}}"#)
                .unwrap();
        assert_eq!(answer.messages.len(), 1);
        assert!(answer.state.is_some());
        let empty = parse_answer(b"{}").unwrap();
        assert!(empty.messages.is_empty() && empty.state.is_none());
        for bad in [
            &b"[]"[..],
            b"{\"message\": []}",
            b"{\"messages\": [{\"type\": \"x\"}]}",
            b"not json",
        ] {
            assert!(parse_answer(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
