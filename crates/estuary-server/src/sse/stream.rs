//! One client's event stream: the layer events of its channel, rendered,
//! numbered, with notices of what it missed; its groups left when it ends.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::response::sse::Event;
use estuary_core::{BoxError, ChannelLayer, ChannelLayerError, Message};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::event::SseEvent;
use super::membership::{Membership, spawn_cleanup};
use super::stats::SseStats;

/// The name of the event that tells a client it may have missed events
/// (`estuary.missed`); see [`SseRoute`](super::SseRoute) for when it is sent and its data.
pub const MISSED_EVENT: &str = "estuary.missed";

/// How a route renders layer events (see [`SseRoute::render`](super::SseRoute::render)).
pub(crate) type RenderFn =
    std::sync::Arc<dyn Fn(&Message) -> Result<Option<SseEvent>, BoxError> + Send + Sync>;

/// What an [`SseRoute`](super::SseRoute) does when a client reads more slowly than its
/// groups' events arrive, so that its channel on the layer is full.
///
/// Either way the events that did not fit are dropped by the layer (a
/// group send skips a full member), counted in [`SseSnapshot::lost`](super::SseSnapshot::lost), and
/// the client is told with an [`MISSED_EVENT`] event whose data is
/// `{"type": "estuary.missed", "reason": "slow_client", "count": N}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SseSlowClient {
    /// Send the notice and go on streaming (the default): the client sees
    /// a gap, and knows it.
    #[default]
    Notify,
    /// Send the notice, then end the stream: the browser reconnects after
    /// its retry delay, with its `Last-Event-ID`.
    Close,
}

/// How many ended streams a route remembers the last position of, to tell
/// a reconnecting client how many events it is known to have missed.
const ENDED_STREAMS: usize = 1024;

/// What all the streams of one route share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: SseStats,
    /// Tells apart this route's ids from another process's or another
    /// route's (a client may reconnect to a restarted server).
    epoch: u64,
    next_stream: AtomicU64,
    ended: Mutex<Ended>,
    /// Bumped by `close_all`: every stream open then ends.
    pub(crate) closing: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Ended {
    order: VecDeque<u64>,
    last_position: HashMap<u64, u64>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        static ROUTES: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            stats: SseStats::default(),
            epoch: now ^ ROUTES.fetch_add(1, Ordering::Relaxed).rotate_left(48),
            next_stream: AtomicU64::new(1),
            ended: Mutex::new(Ended::default()),
            closing: watch::Sender::new(0),
        }
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, Ended> {
        self.ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember_end(&self, stream: u64, position: u64) {
        let mut ended = self.ended();
        if ended.order.len() == ENDED_STREAMS
            && let Some(oldest) = ended.order.pop_front()
        {
            ended.last_position.remove(&oldest);
        }
        ended.order.push_back(stream);
        ended.last_position.insert(stream, position);
    }

    /// The stream and position of an id this route gave, if it is one.
    fn parse_id(&self, id: &str) -> Option<(u64, u64)> {
        let mut parts = id.split('-');
        let epoch = u64::from_str_radix(parts.next()?, 16).ok()?;
        let stream = parts.next()?.parse().ok()?;
        let position = parts.next()?.parse().ok()?;
        (epoch == self.epoch && parts.next().is_none()).then_some((stream, position))
    }

    /// The notice a client reconnecting with `last_event_id` gets first.
    fn reconnect_notice(&self, last_event_id: &str) -> SseEvent {
        let known_missed = self.parse_id(last_event_id).and_then(|(stream, position)| {
            let last = *self.ended().last_position.get(&stream)?;
            Some(last.saturating_sub(position))
        });
        let data = json!({
            "type": MISSED_EVENT,
            "reason": "reconnect",
            "last_event_id": last_event_id,
            "known_missed": known_missed,
        });
        missed_notice(data)
    }
}

fn missed_notice(data: serde_json::Value) -> SseEvent {
    SseEvent::named(MISSED_EVENT, data.to_string()).unwrap_or_else(|_| SseEvent::message(data.to_string()))
}

/// The state of one open stream. Dropping it (the stream ended, or the
/// client went away and the response body was dropped) leaves its groups.
pub(crate) struct Live {
    shared: std::sync::Arc<Shared>,
    render: RenderFn,
    slow_client: SseSlowClient,
    membership: Membership,
    stream: u64,
    /// Events sent on this stream: the last one's position.
    position: u64,
    /// Events to send before any layer event.
    queued: VecDeque<Event>,
    closing: watch::Receiver<u64>,
    shutdown: Option<CancellationToken>,
    /// Set when the stream is to end once `queued` is sent.
    finishing: bool,
}

/// What [`Live::open`] needs.
pub(crate) struct Opening {
    pub(crate) shared: std::sync::Arc<Shared>,
    pub(crate) render: RenderFn,
    pub(crate) slow_client: SseSlowClient,
    pub(crate) membership: Membership,
    pub(crate) retry: Option<std::time::Duration>,
    pub(crate) last_event_id: Option<String>,
    pub(crate) shutdown: Option<CancellationToken>,
}

impl Live {
    pub(crate) fn open(o: Opening) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        let stream = o.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        o.shared.stats.opened(o.last_event_id.is_some());
        let closing = o.shared.closing.subscribe();
        let mut live = Live {
            shared: o.shared,
            render: o.render,
            slow_client: o.slow_client,
            membership: o.membership,
            stream,
            position: 0,
            queued: VecDeque::new(),
            closing,
            shutdown: o.shutdown,
            finishing: false,
        };
        if let Some(retry) = o.retry {
            live.queued.push_back(Event::default().retry(retry));
        }
        if let Some(id) = o.last_event_id {
            let notice = live.shared.reconnect_notice(&id);
            let event = live.stamp(notice);
            live.queued.push_back(event);
        }
        futures_util::stream::unfold(live, |mut live| async move {
            let event = live.next().await?;
            Some((Ok(event), live))
        })
    }

    /// Gives `event` the stream's next position (unless it has an id of
    /// its own) and counts it as sent.
    fn stamp(&mut self, event: SseEvent) -> Event {
        self.position += 1;
        self.shared.stats.sent();
        let id = format!("{:x}-{}-{}", self.shared.epoch, self.stream, self.position);
        event.into_axum(&id)
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            if self.finishing {
                return None;
            }
            let received = tokio::select! {
                biased;
                () = cancelled(self.shutdown.as_ref()) => return None,
                _ = self.closing.changed() => return None,
                received = self.membership.layer().receive(self.membership.channel()) => received,
            };
            match received {
                Ok(message) => {
                    if let Some(event) = self.render(&message) {
                        return Some(self.stamp(event));
                    }
                }
                Err(ChannelLayerError::Lost { count }) => {
                    self.shared.stats.lost(count);
                    let notice = missed_notice(json!({
                        "type": MISSED_EVENT,
                        "reason": "slow_client",
                        "count": count,
                    }));
                    self.finishing = self.slow_client == SseSlowClient::Close;
                    return Some(self.stamp(notice));
                }
                Err(error) => {
                    estuary_core::throttled!(warn, %error, "an SSE stream ends: its channel failed (the client reconnects); check that the channel layer is reachable");
                    return None;
                }
            }
        }
    }

    /// The rendered event, or `None` when it is not sent (skipped, or the
    /// renderer failed: counted, and logged).
    fn render(&self, message: &Message) -> Option<SseEvent> {
        match (self.render)(message) {
            Ok(Some(event)) => Some(event),
            Ok(None) => {
                self.shared.stats.skipped();
                None
            }
            Err(error) => {
                self.shared.stats.render_failed();
                let kind = message.message_type();
                estuary_core::throttled!(warn, error = %error, %kind, "an SSE route could not render a layer event; not sent (a bug in the route's render function, or an event it was not written for)");
                None
            }
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.shared.remember_end(self.stream, self.position);
        let release = self.membership.release_later();
        let closed = Closed(self.shared.stats.clone());
        spawn_cleanup(async move {
            release.await;
            drop(closed);
        });
    }
}

/// Counts the stream closed when dropped: after its groups are left, or
/// when that cleanup could not run (the runtime shut down).
struct Closed(SseStats);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.closed();
    }
}

async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}
