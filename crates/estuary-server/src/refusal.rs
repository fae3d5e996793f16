//! Refusals answered before the application sees the request: the server
//! limits (`max_connections`, `max_connections_per_ip` at accept, the
//! handshake rate, the per-address count behind a proxy). No tower layer
//! sees these, so the server reports each one to the hook set with
//! [`Server::on_refusal`](crate::Server::on_refusal), for an access log
//! and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::HandshakeRefusal;
use crate::proxy::TrustedProxies;

/// A request refused by a server limit before any service saw it, as told
/// to the hook of [`Server::on_refusal`](crate::Server::on_refusal).
///
/// A connection refused at accept (`max_connections`, or
/// `max_connections_per_ip` on a direct peer) is answered at once; then its
/// request head is read (within the same second, 8 KiB at most), so that
/// its method, path and client are known (and so that closing does not
/// reset the connection under the answer); a client that sends nothing in
/// that second is reported without them, and so is one refused while 64
/// others are waiting for their heads (a flood of silent connections holds
/// no more descriptors than that).
///
/// ```
/// use std::time::Duration;
/// use estuary_server::{EarlyRefusal, HandshakeRefusal};
///
/// fn log(refusal: &EarlyRefusal) -> String {
///     format!(
///         "{} {} {} ({})",
///         refusal.method.as_ref().map_or("-", |m| m.as_str()),
///         refusal.path.as_deref().unwrap_or("-"),
///         refusal.status,
///         refusal.reason.as_str(),
///     )
/// }
/// # let _ = log;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EarlyRefusal {
    /// Which limit refused.
    pub reason: HandshakeRefusal,
    /// The status answered (503 or 429).
    pub status: u16,
    /// The request's method, when its head was read.
    pub method: Option<Method>,
    /// The request's path (without the query), when its head was read.
    pub path: Option<String>,
    /// True when the request was a WebSocket handshake.
    pub websocket: bool,
    /// The client, after the trusted proxies' `X-Forwarded-For` when the
    /// head was read; the TCP peer otherwise (`None` on a Unix socket).
    pub client: Option<SocketAddr>,
    /// From the connection's accept (or the request's arrival) to the
    /// answer written.
    pub elapsed: Duration,
}

/// What [`Server::on_refusal`](crate::Server::on_refusal) calls.
pub(crate) type RefusalHook = Arc<dyn Fn(&EarlyRefusal) + Send + Sync>;

/// The longest request head read from a connection refused at accept.
const HEAD_LIMIT: usize = 8 * 1024;
/// The time a connection refused at accept gets to send its head and take
/// the answer.
const REFUSE_WITHIN: Duration = Duration::from_secs(1);

/// Refused connections waiting for their request head at once, at most
/// (in the process). Past it, a refused connection is closed as soon as it
/// is answered, and reported without its head: a flood of connections that
/// send nothing holds no more than this many descriptors past the answer.
const MAX_WAITING: usize = 64;
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_WAITING`] places, given back on drop.
struct Waiting;

impl Waiting {
    fn take() -> Option<Self> {
        let taken = WAITING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_WAITING).then_some(n + 1)
        });
        taken.is_ok().then(|| Self)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The request head as far as a refusal needs it.
#[derive(Default)]
struct Head {
    method: Option<Method>,
    path: Option<String>,
    headers: HeaderMap,
}

impl Head {
    /// Parses a complete head; `None` while it is incomplete.
    fn parse(buf: &[u8]) -> Option<Self> {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut fields);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return None,
            // Not HTTP: refused all the same, reported without a head.
            Err(_) => return Some(Self::default()),
        }
        let mut headers = HeaderMap::new();
        for field in request.headers.iter() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(field.name.as_bytes()),
                HeaderValue::from_bytes(field.value),
            ) {
                headers.append(name, value);
            }
        }
        Some(Self {
            method: request.method.and_then(|m| Method::from_bytes(m.as_bytes()).ok()),
            path: request
                .path
                .map(|p| p.split_once('?').map_or(p, |(path, _)| path).to_owned()),
            headers,
        })
    }
}

/// Reads the request head from `io` (bounded by `HEAD_LIMIT`; the caller
/// bounds the time). Reading it also means the close does not meet unread
/// bytes, which would make it a reset that can destroy the answer in
/// flight.
async fn read_head<I: AsyncRead + Unpin>(io: &mut I) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return Head::default(),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
        if let Some(head) = Head::parse(&buf) {
            return head;
        }
        if buf.len() >= HEAD_LIMIT {
            return Head::default();
        }
    }
}

/// A connection refused at accept: `response` (a whole HTTP response with
/// `connection: close`) written and the write side shut, then the request
/// head read (unless [`MAX_WAITING`] others are waiting for theirs);
/// reported to `hook` with `reason` and `status`. Bounded by
/// `REFUSE_WITHIN` in all.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn refuse_at_accept<I>(
    mut io: I,
    response: &'static [u8],
    status: u16,
    reason: HandshakeRefusal,
    peer: Option<SocketAddr>,
    proxies: TrustedProxies,
    hook: Option<RefusalHook>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let answered = tokio::time::timeout(REFUSE_WITHIN, async {
        let _ = io.write_all(response).await;
        let _ = io.shutdown().await;
    })
    .await;
    if answered.is_err() {
        tracing::debug!(?peer, "a refused connection took its answer too slowly; dropped");
    }
    let head = match Waiting::take() {
        Some(_waiting) => {
            let left = REFUSE_WITHIN.saturating_sub(started.elapsed());
            tokio::time::timeout(left, read_head(&mut io))
                .await
                .unwrap_or_default()
        }
        None => Head::default(),
    };
    if let Some(hook) = hook {
        hook(&EarlyRefusal {
            reason,
            status,
            websocket: head.headers.contains_key(http::header::SEC_WEBSOCKET_KEY),
            client: proxies.client_of(peer, &head.headers).or(peer),
            method: head.method,
            path: head.path,
            elapsed: started.elapsed(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_for_its_method_path_and_upgrade() {
        let head = Head::parse(b"GET /ws/chat/x/?a=1 HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\n\r\n")
            .expect("complete");
        assert_eq!(head.method, Some(Method::GET));
        assert_eq!(head.path.as_deref(), Some("/ws/chat/x/"));
        assert!(head.headers.contains_key(http::header::SEC_WEBSOCKET_KEY));
        assert!(Head::parse(b"GET / HTTP/1.1\r\nHost: h\r\n").is_none(), "partial");
        let garbage = Head::parse(b"\x16\x03\x01 not http\r\n\r\n").expect("not HTTP is final");
        assert!(garbage.method.is_none());
    }

    #[test]
    fn at_most_max_waiting_wait_for_their_head() {
        let places: Vec<Waiting> = std::iter::from_fn(Waiting::take).take(MAX_WAITING + 1).collect();
        assert_eq!(places.len(), MAX_WAITING);
        drop(places);
        assert!(Waiting::take().is_some(), "given back");
    }
}
