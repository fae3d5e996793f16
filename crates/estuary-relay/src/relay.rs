//! A relayed route: its builder, and the handle the router's factory and
//! the operator hold.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use estuary_core::WsMessage;

use crate::consumer::RelayConsumer;
use crate::groups::GroupTemplate;
use crate::http::HttpClient;
use crate::shared::Shared;
use crate::stats::RelayStats;
#[cfg(test)]
use crate::target::RelayErrorKind;
use crate::target::{ConnectMode, RelayError, Target, TargetKind};

/// Builds a [`Relay`]; see [`Relay::builder`].
///
/// ```
/// use std::time::Duration;
/// use estuary_relay::{ConnectMode, Relay, Target};
///
/// let relay = Relay::builder(Target::http("http://127.0.0.1:8000/estuary/events/", "0123456789abcdef").unwrap())
///     .name("orders")
///     .route("ws/orders/<int:order_id>/")
///     .groups(["orders.{order_id}", "user.{user.id}"])
///     .query_param("lang", "en")
///     .connect_mode(ConnectMode::Accept)
///     .connect_timeout(Duration::from_secs(5))
///     .reply_timeout(Duration::from_secs(10))
///     .max_pending(8)
///     .max_pending_bytes(128 * 1024)
///     .max_in_flight(1024)
///     .max_answer_bytes(64 * 1024)
///     .max_state_bytes(16 * 1024)
///     .build()
///     .unwrap();
/// assert_eq!(relay.name(), "orders");
/// ```
#[derive(Debug, Clone)]
pub struct RelayBuilder {
    target: Target,
    name: Option<String>,
    connect: ConnectMode,
    connect_timeout: Duration,
    reply_timeout: Duration,
    max_pending: usize,
    max_pending_bytes: usize,
    max_in_flight: usize,
    busy_frame: Option<WsMessage>,
    query: Vec<(String, String)>,
    route: Option<String>,
    groups: Vec<String>,
    max_answer_bytes: usize,
    max_state_bytes: usize,
}

/// The default `connect_timeout`: 5 s, half the server's default
/// `handshake_timeout` (which covers the whole handshake: authentication,
/// groups, then this wait).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `reply_timeout`: 30 s.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default `max_pending`: 16 client messages per connection.
pub const DEFAULT_MAX_PENDING: usize = 16;
/// The default `max_pending_bytes`: 256 KiB of client messages per
/// connection.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 256 * 1024;
/// The default `max_in_flight`: 4,096 events per relay.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
/// The default `max_state_bytes`: a connection's state is at most 64 KiB
/// (as msgpack).
pub const DEFAULT_MAX_STATE_BYTES: usize = 64 * 1024;

/// Idle connections an HTTP relay keeps to its endpoint, at most (fewer
/// when `max_in_flight` is lower).
const MAX_IDLE_CONNECTIONS: usize = 256;

/// The largest HTTP answer read by default: 1 MiB.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 1024 * 1024;

impl RelayBuilder {
    /// Names the relay in log lines (the route, e.g. `ws/chat/<room>/`);
    /// by default its route pattern, or its target.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How the handshake completes (default [`ConnectMode::Worker`]).
    pub fn connect_mode(mut self, mode: ConnectMode) -> Self {
        self.connect = mode;
        self
    }

    /// How long the handshake waits for the application (default 5 s;
    /// 504 past it). Keep it under the server's `handshake_timeout`, which
    /// covers the whole handshake.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an event waits for its acknowledgement (default 30 s);
    /// past it the client gets the busy frame (or 1013) and the next event
    /// is sent.
    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// Client messages a connection holds while an event is out (default
    /// 16); one more gets the busy frame (or 1013).
    pub fn max_pending(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// Bytes of the messages a connection holds while an event is out
    /// (default 256 KiB); a message past it gets the busy frame (or 1013),
    /// as one past `max_pending` does. One message always fits when none
    /// is held (its size is the WebSocket limit's to bound).
    pub fn max_pending_bytes(mut self, max: usize) -> Self {
        self.max_pending_bytes = max;
        self
    }

    /// Events this relay has out at once, over all its connections
    /// (default 4,096); a client message past it gets the busy frame (or
    /// 1013), a handshake 503.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// The frame a client gets for a message refused as busy or an event
    /// not acknowledged in time; without one, the connection is closed
    /// with 1013 (try again later).
    pub fn busy_frame(mut self, frame: impl Into<WsMessage>) -> Self {
        self.busy_frame = Some(frame.into());
        self
    }

    /// Declares query parameter `name` with its `default`: the scope's
    /// `query` holds it, from the client or the default.
    pub fn query_param(mut self, name: impl Into<String>, default: impl Into<String>) -> Self {
        self.query.push((name.into(), default.into()));
        self
    }

    /// The route's pattern (Django `path()` syntax, or a `re_path()` regex
    /// with named groups): its parameters are the ones group templates may
    /// name, and `<int:name>` ones reach the application as integers.
    pub fn route(mut self, pattern: impl Into<String>) -> Self {
        self.route = Some(pattern.into());
        self
    }

    /// Groups each connection joins before its `websocket.connect` (and
    /// leaves when it ends), as [`GroupTemplate`]s checked at
    /// [`build`](Self::build) against the route and the declared query
    /// parameters.
    pub fn groups<I, S>(mut self, templates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.groups.extend(templates.into_iter().map(Into::into));
        self
    }

    /// The largest HTTP answer read (default 1 MiB); a larger one counts
    /// as no answer.
    pub fn max_answer_bytes(mut self, max: usize) -> Self {
        self.max_answer_bytes = max;
        self
    }

    /// The largest state a connection keeps, as msgpack (default 64 KiB):
    /// a larger one in an acknowledgement is refused (logged and counted
    /// in [`RelayStats::states_refused`]) and the previous state kept; the
    /// event still counts as acknowledged. It travels with every event.
    pub fn max_state_bytes(mut self, max: usize) -> Self {
        self.max_state_bytes = max;
        self
    }

    /// Checks the settings and builds the relay.
    pub fn build(self) -> Result<Relay, RelayError> {
        for (value, what) in [
            (self.connect_timeout.is_zero(), "connect_timeout"),
            (self.reply_timeout.is_zero(), "reply_timeout"),
            (self.max_in_flight == 0, "max_in_flight"),
            (self.max_answer_bytes == 0, "max_answer_bytes"),
            (self.max_state_bytes == 0, "max_state_bytes"),
        ] {
            if value {
                return Err(RelayError::zero(what));
            }
        }
        let params = self.route.as_deref().map(route_params).unwrap_or_default();
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        let queries: Vec<&str> = self.query.iter().map(|(n, _)| n.as_str()).collect();
        let groups = self
            .groups
            .iter()
            .map(|t| GroupTemplate::parse(t, &names, &queries))
            .collect::<Result<Vec<_>, _>>()?;
        let int_params = params
            .iter()
            .filter(|(_, int)| *int)
            .map(|(n, _)| n.clone())
            .collect();
        let http = match self.target.kind() {
            TargetKind::Http { url, secret } => Some(HttpClient::new(
                url.clone(),
                secret.clone(),
                self.max_answer_bytes,
                self.max_in_flight.min(MAX_IDLE_CONNECTIONS),
            )),
            TargetKind::Channel(_) => None,
        };
        let name = self
            .name
            .or(self.route)
            .unwrap_or_else(|| self.target.to_string());
        Ok(Relay {
            shared: Arc::new(Shared {
                name,
                target: self.target,
                connect: self.connect,
                connect_timeout: self.connect_timeout,
                reply_timeout: self.reply_timeout,
                max_pending: self.max_pending,
                max_pending_bytes: self.max_pending_bytes,
                max_state_bytes: self.max_state_bytes,
                max_in_flight: self.max_in_flight,
                busy_frame: self.busy_frame,
                query: self.query,
                int_params,
                groups,
                http,
                in_flight: AtomicUsize::new(0),
                disconnects: Arc::new(tokio::sync::Semaphore::new(
                    self.max_in_flight.min(tokio::sync::Semaphore::MAX_PERMITS),
                )),
                stats: RelayStats::default(),
                watchdog: OnceLock::new(),
            }),
        })
    }
}

/// The parameters of a route pattern and whether each is an integer
/// (`<int:name>`); a `re_path()` regex's named groups are text.
fn route_params(pattern: &str) -> Vec<(String, bool)> {
    let mut params = Vec::new();
    if pattern.contains("(?P<") {
        for piece in pattern.split("(?P<").skip(1) {
            if let Some((name, _)) = piece.split_once('>') {
                params.push((name.to_owned(), false));
            }
        }
        return params;
    }
    for piece in pattern.split('<').skip(1) {
        let Some((inside, _)) = piece.split_once('>') else {
            continue;
        };
        let (converter, name) = inside.split_once(':').unwrap_or(("str", inside));
        params.push((name.to_owned(), converter == "int"));
    }
    params
}

/// A relayed route: hands each connection's events to Django workers on a
/// named channel or to an HTTP endpoint, and their answers back, as
/// `docs/WORKERS.md` specifies. Clones share everything (the in-flight
/// count, the counters, the watchdog). Make one per route and give the
/// router its [`factory`](Self::factory).
///
/// ```
/// use std::time::Duration;
/// use estuary_relay::{ConnectMode, Relay, Target};
///
/// let relay = Relay::builder(Target::channel("chat").unwrap())
///     .route("ws/chat/<room_name>/")
///     .groups(["chat_{room_name}"])
///     .connect_mode(ConnectMode::Worker)
///     .reply_timeout(Duration::from_secs(5))
///     .busy_frame(r#"{"type": "busy"}"#)
///     .build()
///     .unwrap();
/// // Router::new().websocket("ws/chat/<room_name>/", relay.factory())
/// let make = relay.factory();
/// let _consumer = make();
/// assert_eq!(relay.stats().events_sent(), 0);
/// ```
#[derive(Clone)]
pub struct Relay {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("name", &self.shared.name)
            .field("target", &self.shared.target)
            .field("connect", &self.shared.connect)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Starts a relay to `target` with the defaults: connect mode
    /// `worker`, 5 s to connect, 30 s per event, 16 pending messages (256
    /// KiB) per connection, 4,096 events in flight, no busy frame (1013).
    pub fn builder(target: Target) -> RelayBuilder {
        RelayBuilder {
            target,
            name: None,
            connect: ConnectMode::Worker,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            busy_frame: None,
            query: Vec::new(),
            route: None,
            groups: Vec::new(),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
        }
    }

    /// A consumer for one connection.
    pub fn consumer(&self) -> RelayConsumer {
        RelayConsumer::new(self.shared.clone())
    }

    /// A factory for a router's WebSocket route: one consumer per
    /// connection.
    pub fn factory(&self) -> impl Fn() -> RelayConsumer + Clone + Send + Sync + 'static {
        let relay = self.clone();
        move || relay.consumer()
    }

    /// The relay's counters.
    pub fn stats(&self) -> &RelayStats {
        &self.shared.stats
    }

    /// Events out now, waiting for their acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// `websocket.disconnect` requests out now, over HTTP (at most
    /// `max_in_flight`; one more is counted in
    /// [`lost_at_disconnect`](RelayStats::lost_at_disconnect)).
    ///
    /// ```
    /// use estuary_relay::{Relay, Target};
    ///
    /// let relay = Relay::builder(Target::http("http://127.0.0.1:8000/estuary/events/", "0123456789abcdef").unwrap())
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(relay.disconnects_out(), 0);
    /// ```
    pub fn disconnects_out(&self) -> usize {
        self.shared
            .max_in_flight
            .min(tokio::sync::Semaphore::MAX_PERMITS)
            .saturating_sub(self.shared.disconnects.available_permits())
    }

    /// The name log lines give the relay.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where the events go.
    pub fn target(&self) -> &Target {
        &self.shared.target
    }

    /// How the handshake completes.
    ///
    /// ```
    /// use estuary_relay::{ConnectMode, Relay, Target};
    ///
    /// let relay = Relay::builder(Target::channel("chat").unwrap()).build().unwrap();
    /// assert_eq!(relay.connect_mode(), ConnectMode::Worker);
    /// ```
    pub fn connect_mode(&self) -> ConnectMode {
        self.shared.connect
    }

    /// The groups each connection joins before its `websocket.connect`.
    ///
    /// ```
    /// use estuary_relay::{Relay, Target};
    ///
    /// let relay = Relay::builder(Target::channel("chat").unwrap())
    ///     .route("ws/chat/<room>/")
    ///     .groups(["chat_{room}"])
    ///     .build()
    ///     .unwrap();
    /// assert!(relay.groups()[0].is_client_chosen());
    /// ```
    pub fn groups(&self) -> &[GroupTemplate] {
        &self.shared.groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_parameters_and_their_integers() {
        assert_eq!(
            route_params("ws/items/<int:id>/<slug:s>/<room>/"),
            [("id".into(), true), ("s".into(), false), ("room".into(), false)]
        );
        assert_eq!(route_params(r"^ws/(?P<id>[0-9]+)/$"), [("id".into(), false)]);
        assert!(route_params("ws/plain/").is_empty());
    }

    #[test]
    fn templates_are_checked_against_the_route_when_built() {
        let target = || Target::channel("chat").unwrap();
        let ok = Relay::builder(target())
            .route("ws/chat/<room_name>/")
            .query_param("order_id", "0")
            .groups(["chat_{room_name}", "orders.{query.order_id}", "user.{user.id}"])
            .build();
        assert!(ok.is_ok());
        let unknown = Relay::builder(target()).groups(["chat_{room_name}"]).build();
        assert_eq!(unknown.unwrap_err().kind(), RelayErrorKind::Template);
    }

    #[test]
    fn zero_bounds_and_timeouts_are_refused() {
        let target = || Target::channel("chat").unwrap();
        let zero = |built: Result<Relay, RelayError>| built.unwrap_err().setting();
        assert_eq!(
            zero(Relay::builder(target()).reply_timeout(Duration::ZERO).build()),
            Some("reply_timeout")
        );
        assert_eq!(
            zero(Relay::builder(target()).max_in_flight(0).build()),
            Some("max_in_flight")
        );
        assert_eq!(
            zero(Relay::builder(target()).max_state_bytes(0).build()),
            Some("max_state_bytes")
        );
        assert!(
            Relay::builder(target()).max_pending(0).build().is_ok(),
            "0 pending: one at a time"
        );
    }

    #[test]
    fn slots_are_bounded() {
        let relay = Relay::builder(Target::channel("chat").unwrap())
            .max_in_flight(1)
            .build()
            .unwrap();
        assert!(relay.shared.take_slot());
        assert!(!relay.shared.take_slot());
        relay.shared.release_slot();
        assert!(relay.shared.take_slot());
    }
}
