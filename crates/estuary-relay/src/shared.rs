//! What all the connections of one relay share: its settings, the
//! in-flight count, the counters, the watchdog, the HTTP client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use estuary_core::WsMessage;
use tokio::sync::mpsc;

use crate::groups::GroupTemplate;
use crate::http::HttpClient;
use crate::stats::RelayStats;
use crate::target::{ConnectMode, Target};
use crate::watchdog::{self, Watch};

/// `timeout` from now; a timeout too long for the clock (from a
/// configuration) is as good as never.
pub(crate) fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

/// One of the `max_in_flight` slots, given back on drop.
pub(crate) struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release_slot();
    }
}

/// What a relay's connections share.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) target: Target,
    pub(crate) connect: ConnectMode,
    pub(crate) connect_timeout: Duration,
    pub(crate) reply_timeout: Duration,
    pub(crate) max_pending: usize,
    pub(crate) max_pending_bytes: usize,
    pub(crate) max_state_bytes: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) busy_frame: Option<WsMessage>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) int_params: Vec<String>,
    pub(crate) groups: Vec<GroupTemplate>,
    pub(crate) http: Option<HttpClient>,
    pub(crate) in_flight: AtomicUsize,
    /// `websocket.disconnect` POSTs out at once (over HTTP; not awaited
    /// by their connections), at most `max_in_flight`.
    pub(crate) disconnects: Arc<tokio::sync::Semaphore>,
    pub(crate) stats: RelayStats,
    /// The watchdog's queue, started with the first event that needs it
    /// (empty when the relay is built).
    pub(crate) watchdog: OnceLock<Option<mpsc::UnboundedSender<Watch>>>,
}

impl Shared {
    /// Takes one of the `max_in_flight` slots, if one is free.
    pub(crate) fn take_slot(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes a slot held by the returned guard, given back when it is
    /// dropped: a handshake's, which its future may be dropped with (the
    /// server's `handshake_timeout`, a client gone).
    pub(crate) fn slot(self: &Arc<Self>) -> Option<Slot> {
        self.take_slot().then(|| Slot(self.clone()))
    }

    /// Gives a slot back.
    pub(crate) fn release_slot(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Hands a deadline to the watchdog (started on the current runtime
    /// the first time).
    pub(crate) fn watch(&self, watch: Watch) {
        let queue = self.watchdog.get_or_init(|| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                tracing::error!(relay = %self.name, "relay used outside a tokio runtime: acknowledgements will not time out (build and use the relay inside the runtime)");
                return None;
            };
            let (tx, rx) = mpsc::unbounded_channel();
            runtime.spawn(watchdog::run(rx));
            Some(tx)
        });
        if let Some(queue) = queue {
            let _ = queue.send(watch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_too_long_for_the_clock_is_never() {
        assert!(deadline_after(Duration::MAX) > tokio::time::Instant::now() + Duration::from_secs(1 << 20));
    }
}
