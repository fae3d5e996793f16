//! Prometheus metrics of `estuary serve`: read from the libraries'
//! counters ([`ServerStats`], [`SessionStats`], the channel layer's own,
//! [`WorkerStats`]) and the access layer's ([`HttpStats`]) at scrape time,
//! and written in the text format. docs/OPERATIONS.md lists every family.

mod http;
mod layer;
mod metered_auth;
mod process;
mod text;
mod timed;

use estuary::server::ServerStats;
use estuary::{SessionStats, WRITE_BATCH_BOUNDS, WorkerStats};

pub use http::{DURATION_BOUNDS, HttpStats, RequestKind};
pub use layer::LayerProbe;
pub use metered_auth::MeteredAuthenticator;
pub use text::CONTENT_TYPE;
use text::{Kind, Text};
pub use timed::{LayerOps, TimedLayer};

/// Everything a scrape reads; clones share the counters.
///
/// ```
/// use estuary_cli::metrics::{LayerProbe, Metrics};
///
/// let metrics = Metrics::new(
///     Default::default(),
///     Default::default(),
///     LayerProbe::Other,
///     Default::default(),
///     Default::default(),
/// );
/// let metrics = metrics.with_layer_ops(Default::default());
/// assert!(metrics.render().contains("# TYPE estuary_websocket_connections gauge"));
/// ```
#[derive(Debug, Clone)]
pub struct Metrics {
    server: ServerStats,
    sessions: SessionStats,
    layer: LayerProbe,
    http: HttpStats,
    workers: WorkerStats,
    layer_ops: Option<LayerOps>,
}

impl Metrics {
    /// The metrics of these counters.
    pub fn new(
        server: ServerStats,
        sessions: SessionStats,
        layer: LayerProbe,
        http: HttpStats,
        workers: WorkerStats,
    ) -> Self {
        Self {
            server,
            sessions,
            layer,
            http,
            workers,
            layer_ops: None,
        }
    }

    /// With the channel layer's operations timed by a [`TimedLayer`].
    pub fn with_layer_ops(mut self, ops: LayerOps) -> Self {
        self.layer_ops = Some(ops);
        self
    }

    /// The access layer's counters.
    pub fn http(&self) -> &HttpStats {
        &self.http
    }

    /// The scrape: every family, in the text format.
    pub fn render(&self) -> String {
        let mut text = Text::default();
        self.render_connections(&mut text);
        self.render_messages(&mut text);
        self.http.render(&mut text);
        self.layer.render(&mut text);
        if let Some(ops) = &self.layer_ops {
            ops.render(&mut text, self.layer.backend());
        }
        self.render_workers(&mut text);
        process::render(&mut text);
        text.finish()
    }

    fn render_connections(&self, text: &mut Text) {
        let (s, w) = (&self.server, &self.sessions);
        text.single(
            "estuary_connections",
            Kind::Gauge,
            "TCP (or Unix socket) connections open now, HTTP and WebSocket.",
            s.connections(),
        );
        text.family(
            "estuary_connections_refused_total",
            Kind::Counter,
            "Connections and handshakes refused by a server limit, by limit: max_connections (503), \
             max_connections_per_ip (429), handshake_rate (429).",
        );
        for (limit, n) in [
            ("max_connections", s.refused_total()),
            ("max_connections_per_ip", s.refused_per_ip()),
            ("handshake_rate", s.refused_handshake_rate()),
        ] {
            text.sample("estuary_connections_refused_total", &[("limit", limit)], n);
        }
        text.single(
            "estuary_websocket_connections",
            Kind::Gauge,
            "WebSocket connections open now.",
            w.open(),
        );
        text.single(
            "estuary_websocket_opened_total",
            Kind::Counter,
            "WebSocket connections accepted.",
            w.opened(),
        );
        text.family(
            "estuary_websocket_closed_total",
            Kind::Counter,
            "WebSocket connections ended, by close code (1006: dropped without a close frame; 1013: \
             too slow, or messages lost).",
        );
        for (code, n) in w.closes() {
            text.sample(
                "estuary_websocket_closed_total",
                &[("code", &code.as_u16().to_string())],
                n,
            );
        }
    }

    fn render_messages(&self, text: &mut Text) {
        let w = &self.sessions;
        let note = " Counted per connection, added in at each keepalive ping and at close.";
        for (name, help, value) in [
            (
                "estuary_websocket_messages_received_total",
                "Data messages received from WebSocket clients.",
                w.messages_received(),
            ),
            (
                "estuary_websocket_received_bytes_total",
                "Payload bytes of the messages received from WebSocket clients.",
                w.bytes_received(),
            ),
            (
                "estuary_websocket_messages_sent_total",
                "Data messages written to WebSocket clients.",
                w.messages_sent(),
            ),
            (
                "estuary_websocket_sent_bytes_total",
                "Payload bytes of the messages written to WebSocket clients.",
                w.bytes_sent(),
            ),
        ] {
            text.single(name, Kind::Counter, &format!("{help}{note}"), value);
        }
        text.family(
            "estuary_websocket_losses_total",
            Kind::Counter,
            "Messages a client did not get, by reason: slow_client_dropped (its queue was full, \
             slow_client = drop), oversized (over max_event_size); and lost_closed: connections closed \
             with 1013 because the channel layer lost messages for them.",
        );
        for (reason, n) in [
            ("slow_client_dropped", w.dropped()),
            ("oversized", w.oversized()),
            ("lost_closed", w.closed_for_losses()),
        ] {
            text.sample("estuary_websocket_losses_total", &[("reason", reason)], n);
        }
        let bounds: Vec<f64> = WRITE_BATCH_BOUNDS.iter().map(|&b| b as f64).collect();
        let counts = w.write_batches();
        text.family(
            "estuary_websocket_write_batch_messages",
            Kind::Histogram,
            "Messages per write to a client: the outbound queue's depth as the writer found it (a \
             backlog leaves in one write).",
        );
        text.histogram(
            "estuary_websocket_write_batch_messages",
            &[],
            &bounds,
            &counts,
            w.messages_sent() as f64,
        );
    }

    fn render_workers(&self, text: &mut Text) {
        let w = &self.workers;
        text.family(
            "estuary_worker_messages_total",
            Kind::Counter,
            "Messages taken by the in-process workers (room posts), by outcome.",
        );
        for (outcome, n) in [
            ("handled", w.handled()),
            ("failed", w.failed()),
            ("panicked", w.panicked()),
            ("undecodable", w.undecodable()),
            ("lost", w.lost()),
        ] {
            text.sample("estuary_worker_messages_total", &[("outcome", outcome)], n);
        }
    }
}
