//! What a relay counts: cheap atomics, read at any time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of one [`Relay`](crate::Relay), shared by its
/// connections; clones read the same counters. Every way an event or a
/// client message fails to reach the application is counted here (and
/// logged, throttled), so that nothing is lost without a trace.
///
/// ```
/// use estuary_relay::{Relay, Target};
///
/// let relay = Relay::builder(Target::channel("chat").unwrap()).build().unwrap();
/// let stats = relay.stats();
/// assert_eq!((stats.events_sent(), stats.acked(), stats.timed_out()), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RelayStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    events_sent: AtomicU64,
    acked: AtomicU64,
    timed_out: AtomicU64,
    undelivered: AtomicU64,
    refused_busy: AtomicU64,
    worker_errors: AtomicU64,
    lost_at_disconnect: AtomicU64,
    connects_refused: AtomicU64,
    connects_timed_out: AtomicU64,
    connects_unavailable: AtomicU64,
    late: AtomicU64,
    states_refused: AtomicU64,
}

/// Which counter to add to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    EventsSent,
    Acked,
    TimedOut,
    Undelivered,
    RefusedBusy,
    WorkerErrors,
    LostAtDisconnect,
    ConnectsRefused,
    ConnectsTimedOut,
    ConnectsUnavailable,
    Late,
    StatesRefused,
}

impl RelayStats {
    pub(crate) fn add(&self, count: Count, n: u64) {
        let c = &self.inner;
        let counter = match count {
            Count::EventsSent => &c.events_sent,
            Count::Acked => &c.acked,
            Count::TimedOut => &c.timed_out,
            Count::Undelivered => &c.undelivered,
            Count::RefusedBusy => &c.refused_busy,
            Count::WorkerErrors => &c.worker_errors,
            Count::LostAtDisconnect => &c.lost_at_disconnect,
            Count::ConnectsRefused => &c.connects_refused,
            Count::ConnectsTimedOut => &c.connects_timed_out,
            Count::ConnectsUnavailable => &c.connects_unavailable,
            Count::Late => &c.late,
            Count::StatesRefused => &c.states_refused,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Events handed to the application (every `websocket.connect`,
    /// `websocket.receive`, `estuary.event` and `websocket.disconnect`
    /// sent to the worker channel or POSTed).
    pub fn events_sent(&self) -> u64 {
        self.inner.events_sent.load(Ordering::Relaxed)
    }

    /// Events the application acknowledged in time (`estuary.ack`, or an
    /// HTTP answer).
    pub fn acked(&self) -> u64 {
        self.inner.acked.load(Ordering::Relaxed)
    }

    /// Events not acknowledged within `reply_timeout`: the client got the
    /// busy frame, or was closed with 1013.
    pub fn timed_out(&self) -> u64 {
        self.inner.timed_out.load(Ordering::Relaxed)
    }

    /// Events that could not be handed over after the handshake (the
    /// worker channel full, the channel layer down, an HTTP request that
    /// failed or was not answered with a valid answer): treated as a
    /// missing acknowledgement.
    pub fn undelivered(&self) -> u64 {
        self.inner.undelivered.load(Ordering::Relaxed)
    }

    /// Client messages (and `estuary.event`s) refused because
    /// `max_pending` were waiting on their connection or `max_in_flight`
    /// events were out.
    pub fn refused_busy(&self) -> u64 {
        self.inner.refused_busy.load(Ordering::Relaxed)
    }

    /// Connections the application closed with 1011 (its handler raised).
    pub fn worker_errors(&self) -> u64 {
        self.inner.worker_errors.load(Ordering::Relaxed)
    }

    /// Events not delivered when their connection ended: pending events
    /// given up after a missing acknowledgement, and `websocket.disconnect`
    /// events that could not be sent.
    pub fn lost_at_disconnect(&self) -> u64 {
        self.inner.lost_at_disconnect.load(Ordering::Relaxed)
    }

    /// Handshakes the application refused (`websocket.close` before
    /// accept, or an acknowledgement without an accept): 403.
    pub fn connects_refused(&self) -> u64 {
        self.inner.connects_refused.load(Ordering::Relaxed)
    }

    /// Handshakes the application did not answer within
    /// `connect_timeout`: 504.
    pub fn connects_timed_out(&self) -> u64 {
        self.inner.connects_timed_out.load(Ordering::Relaxed)
    }

    /// Acknowledgements (`estuary.ack`, HTTP answers) that came for no
    /// event in flight, mostly after their event was given up: ignored,
    /// messages and state alike (an HTTP answer's messages are not sent).
    pub fn late(&self) -> u64 {
        self.inner.late.load(Ordering::Relaxed)
    }

    /// States refused because they were larger than `max_state_bytes`
    /// (the event was acknowledged; the previous state was kept).
    pub fn states_refused(&self) -> u64 {
        self.inner.states_refused.load(Ordering::Relaxed)
    }

    /// Handshakes refused because the connect event could not be handed
    /// over (the worker channel full, the layer down, the HTTP endpoint
    /// unreachable or failing, `max_in_flight` reached): 503.
    pub fn connects_unavailable(&self) -> u64 {
        self.inner.connects_unavailable.load(Ordering::Relaxed)
    }
}
