//! What the access layer counts: requests and handshakes by status,
//! refusals by reason, durations, authentication outcomes.
//!
//! One lock per request or handshake, never per message: handshakes are
//! thousands a second at most, messages millions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estuary::sync::lock;

use super::text::{Kind, Text};

/// Upper bounds of the duration histograms, in seconds.
pub const DURATION_BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Whether a request was a WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestKind {
    /// A plain HTTP request.
    Http,
    /// A WebSocket handshake (answered 101 when accepted).
    WebSocket,
}

impl RequestKind {
    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::WebSocket => "websocket",
        }
    }
}

/// The counters of the access layer; clones share them.
///
/// ```
/// use std::time::Duration;
/// use estuary_cli::metrics::{HttpStats, RequestKind};
///
/// let stats = HttpStats::default();
/// stats.request(RequestKind::WebSocket, 403, Duration::from_millis(2), Some("origin"));
/// assert_eq!(stats.refused("origin"), 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct HttpStats {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    requests: BTreeMap<(RequestKind, u16), u64>,
    refused: BTreeMap<&'static str, u64>,
    durations: BTreeMap<RequestKind, Histogram>,
    auth: BTreeMap<(&'static str, &'static str), u64>,
    auth_duration: BTreeMap<&'static str, Histogram>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; DURATION_BOUNDS.len() + 1],
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        let at = DURATION_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DURATION_BOUNDS.len());
        if let Some(n) = self.counts.get_mut(at) {
            *n += 1;
        }
        self.sum += secs;
    }
}

impl HttpStats {
    /// Counts one answered request: its kind, status, how long it took to
    /// answer, and why it was refused (a
    /// [`HandshakeRefusal`](estuary::server::HandshakeRefusal)'s name).
    pub fn request(&self, kind: RequestKind, status: u16, took: Duration, refused: Option<&'static str>) {
        let mut counts = lock(&self.inner);
        *counts.requests.entry((kind, status)).or_insert(0) += 1;
        counts.durations.entry(kind).or_default().observe(took);
        if let Some(reason) = refused {
            *counts.refused.entry(reason).or_insert(0) += 1;
        }
    }

    /// Counts one authenticator's answer: `authenticator` is its name
    /// (`jwt`, `callback`, `django`, `none`), `outcome` one of `user`,
    /// `anonymous`, `refused`, `unavailable`, `bad_answer`.
    pub fn auth(&self, authenticator: &'static str, outcome: &'static str, took: Duration) {
        let mut counts = lock(&self.inner);
        *counts.auth.entry((authenticator, outcome)).or_insert(0) += 1;
        counts
            .auth_duration
            .entry(authenticator)
            .or_default()
            .observe(took);
    }

    /// Answers of `authenticator` with `outcome`, in all.
    pub fn auth_count(&self, authenticator: &str, outcome: &str) -> u64 {
        lock(&self.inner)
            .auth
            .iter()
            .find(|((a, o), _)| *a == authenticator && *o == outcome)
            .map_or(0, |(_, n)| *n)
    }

    /// Requests refused for `reason`, in all.
    pub fn refused(&self, reason: &str) -> u64 {
        lock(&self.inner).refused.get(reason).copied().unwrap_or(0)
    }

    pub(super) fn render(&self, text: &mut Text) {
        let counts = lock(&self.inner).clone_counts();
        text.family(
            "estuary_http_requests_total",
            Kind::Counter,
            "HTTP requests and WebSocket handshakes answered, by kind and status (101: a WebSocket opened).",
        );
        for ((kind, status), n) in &counts.requests {
            text.sample(
                "estuary_http_requests_total",
                &[("kind", kind.as_str()), ("status", &status.to_string())],
                n,
            );
        }
        text.family(
            "estuary_http_request_duration_seconds",
            Kind::Histogram,
            "Time to answer an HTTP request or a WebSocket handshake (to the 101), in seconds.",
        );
        for (kind, h) in &counts.durations {
            text.histogram(
                "estuary_http_request_duration_seconds",
                &[("kind", kind.as_str())],
                &DURATION_BOUNDS,
                &h.counts,
                h.sum,
            );
        }
        text.family(
            "estuary_handshakes_refused_total",
            Kind::Counter,
            "WebSocket handshakes (and requests) refused, by reason: by the middleware host, origin, auth, \
             auth_unavailable, route (404), connect (the consumer rejected); by a server limit before \
             the application max_connections (503), connections_per_ip and handshake_rate (429).",
        );
        for (reason, n) in &counts.refused {
            text.sample("estuary_handshakes_refused_total", &[("reason", reason)], n);
        }
        text.family(
            "estuary_auth_total",
            Kind::Counter,
            "Answers of each authenticator of [auth] (jwt, callback, django; none when none is \
             configured), by outcome: user (signed in), anonymous (no credential of its kind: the next \
             is asked), refused, unavailable (its backend failed), bad_answer.",
        );
        for ((authenticator, outcome), n) in &counts.auth {
            text.sample(
                "estuary_auth_total",
                &[("authenticator", authenticator), ("outcome", outcome)],
                n,
            );
        }
        text.family(
            "estuary_auth_duration_seconds",
            Kind::Histogram,
            "Time each authenticator took (jwt: the token check, django: the session lookup, \
             callback: the connect callback), in seconds.",
        );
        for (authenticator, h) in &counts.auth_duration {
            text.histogram(
                "estuary_auth_duration_seconds",
                &[("authenticator", authenticator)],
                &DURATION_BOUNDS,
                &h.counts,
                h.sum,
            );
        }
    }
}

impl Counts {
    /// A copy, so that rendering holds no lock.
    fn clone_counts(&self) -> Counts {
        Counts {
            requests: self.requests.clone(),
            refused: self.refused.clone(),
            durations: self.durations.clone(),
            auth: self.auth.clone(),
            auth_duration: self.auth_duration.clone(),
        }
    }
}
