//! What an SSE route's streams did, counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Counters of an [`SseRoute`](super::SseRoute)'s streams, shared by all its
/// clones. Nothing a stream drops is uncounted.
///
/// ```
/// use estuary_core::ChannelLayerHandle;
/// use estuary_server::sse::{SseRequest, SseRoute};
///
/// let route = SseRoute::new(ChannelLayerHandle::default(), |_: &SseRequest| {
///     Ok::<_, http::StatusCode>(vec![])
/// });
/// let now = route.stats().snapshot();
/// assert_eq!((now.open, now.sent, now.lost), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SseStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    opened: AtomicU64,
    sent: AtomicU64,
    lost: AtomicU64,
    skipped: AtomicU64,
    render_failed: AtomicU64,
    resumed: AtomicU64,
    /// Bumped when `open` changes, for [`SseStats::wait_until`].
    changed: watch::Sender<()>,
}

/// A reading of [`SseStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SseSnapshot {
    /// Streams open now: their groups are joined. A stream counts here
    /// until its groups are left again.
    pub open: u64,
    /// Streams opened since the route was made.
    pub opened: u64,
    /// Events sent to clients (notices of missed events included).
    pub sent: u64,
    /// Layer events a slow client never got: its channel was full, so the
    /// layer dropped them (each loss also reaches the client as a notice).
    pub lost: u64,
    /// Layer events the renderer chose not to send (it returned `None`).
    pub skipped: u64,
    /// Layer events the renderer failed on (each one is logged, throttled).
    pub render_failed: u64,
    /// Streams opened with a `Last-Event-ID` (a client reconnecting).
    pub resumed: u64,
}

impl SseStats {
    /// The counters now.
    pub fn snapshot(&self) -> SseSnapshot {
        let c = &self.inner;
        SseSnapshot {
            open: c.open.load(Ordering::Relaxed),
            opened: c.opened.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            render_failed: c.render_failed.load(Ordering::Relaxed),
            resumed: c.resumed.load(Ordering::Relaxed),
        }
    }

    /// Waits until `ready` holds for a snapshot; checked now and again each
    /// time a stream opens or finishes leaving its groups. Put a timeout
    /// around it.
    pub async fn wait_until(&self, mut ready: impl FnMut(&SseSnapshot) -> bool) {
        let mut changes = self.inner.changed.subscribe();
        loop {
            if ready(&self.snapshot()) {
                return;
            }
            // The sender lives in `self`: `changed` cannot fail here.
            let _ = changes.changed().await;
        }
    }

    pub(crate) fn opened(&self, resumed: bool) {
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
        if resumed {
            self.inner.resumed.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.open.fetch_add(1, Ordering::Relaxed);
        self.inner.changed.send_replace(());
    }

    pub(crate) fn closed(&self) {
        self.inner.open.fetch_sub(1, Ordering::Relaxed);
        self.inner.changed.send_replace(());
    }

    pub(crate) fn sent(&self) {
        self.inner.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lost(&self, count: u64) {
        self.inner.lost.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn skipped(&self) {
        self.inner.skipped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render_failed(&self) {
        self.inner.render_failed.fetch_add(1, Ordering::Relaxed);
    }
}
