//! The counters the sessions of one configuration share: connections
//! opened and closed (by close code), messages and bytes each way, losses,
//! and how many messages each write to a client carried.
//!
//! A session never writes a shared counter per message: it counts in a
//! tally of its own and folds the tally into these counters at each
//! keepalive tick and when it closes. The broadcast path stays free of
//! contended atomics; the price is that the message and byte counts of a
//! connection that is still open lag by at most one ping interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::close::CloseCode;
use crate::sync::lock;

/// Upper bounds (inclusive) of the buckets of
/// [`SessionStats::write_batches`], in messages; a last bucket holds larger
/// batches.
pub const WRITE_BATCH_BOUNDS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

const BUCKETS: usize = WRITE_BATCH_BOUNDS.len() + 1;

/// What the sessions of a [`SessionConfig`](crate::SessionConfig) did:
/// clones of a config (and of these stats) share the counters, so a
/// router's sessions add to one set. Read them at any time.
///
/// Messages and bytes are counted per connection and folded in at each
/// keepalive ping and when the connection closes: an open connection's
/// latest traffic shows up within one ping interval.
///
/// ```
/// use estuary_core::{SessionConfig, SessionStats};
///
/// let config = SessionConfig::default();
/// let stats: SessionStats = config.stats.clone();
/// assert_eq!(stats.opened(), 0);
/// assert_eq!(stats.messages_sent(), 0);
/// assert!(stats.closes().is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    closed: AtomicU64,
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    dropped: AtomicU64,
    oversized: AtomicU64,
    lost: AtomicU64,
    batches: [AtomicU64; BUCKETS],
    closes: Mutex<BTreeMap<u16, u64>>,
}

impl SessionStats {
    /// Sessions that started running (accepted connections), in all.
    pub fn opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Sessions that ended, in all.
    pub fn closed(&self) -> u64 {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// Sessions running now.
    pub fn open(&self) -> u64 {
        self.opened().saturating_sub(self.closed())
    }

    /// Data messages received from clients (text and binary; not pings).
    pub fn messages_received(&self) -> u64 {
        self.inner.messages_in.load(Ordering::Relaxed)
    }

    /// Payload bytes of [`messages_received`](Self::messages_received).
    pub fn bytes_received(&self) -> u64 {
        self.inner.bytes_in.load(Ordering::Relaxed)
    }

    /// Data messages written to clients.
    pub fn messages_sent(&self) -> u64 {
        self.inner.messages_out.load(Ordering::Relaxed)
    }

    /// Payload bytes of [`messages_sent`](Self::messages_sent).
    pub fn bytes_sent(&self) -> u64 {
        self.inner.bytes_out.load(Ordering::Relaxed)
    }

    /// Messages dropped for slow clients under
    /// [`SlowClientPolicy::Drop`](crate::SlowClientPolicy::Drop) (the sum
    /// of [`Outcome::dropped`](crate::Outcome::dropped)).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Channel-layer messages dropped for being larger than
    /// [`SessionConfig::max_event_size`](crate::SessionConfig::max_event_size).
    pub fn oversized(&self) -> u64 {
        self.inner.oversized.load(Ordering::Relaxed)
    }

    /// Connections closed (1013) because the channel layer lost messages
    /// for them (their channel was full, or the layer lost its state).
    pub fn closed_for_losses(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }

    /// Ended sessions by the close code handed to `disconnect`, in code
    /// order.
    pub fn closes(&self) -> Vec<(CloseCode, u64)> {
        lock(&self.inner.closes)
            .iter()
            .map(|(&code, &n)| (CloseCode::from(code), n))
            .collect()
    }

    /// Writes to clients by how many messages each carried (one flush):
    /// one count per bucket of [`WRITE_BATCH_BOUNDS`], then larger batches.
    /// A batch holds what was queued for the client when it was written, so
    /// this is the outbound queue's depth as the writer found it.
    pub fn write_batches(&self) -> [u64; WRITE_BATCH_BOUNDS.len() + 1] {
        std::array::from_fn(|i| self.inner.batches[i].load(Ordering::Relaxed))
    }

    pub(super) fn count_open(&self) {
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_lost(&self) {
        self.inner.lost.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_close(&self, code: CloseCode, dropped: u64, oversized: u64) {
        let c = &self.inner;
        *lock(&c.closes).entry(code.as_u16()).or_insert(0) += 1;
        if dropped > 0 {
            c.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if oversized > 0 {
            c.oversized.fetch_add(oversized, Ordering::Relaxed);
        }
        c.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection's counts since they were last folded into the shared
/// [`SessionStats`]. Small on purpose: it lives in every connection's
/// future. The narrow counts saturate rather than wrap; a busy connection
/// folds early ([`is_full`](Self::is_full)) so that they never do.
#[derive(Debug, Default)]
pub(super) struct Tally {
    bytes_in: u64,
    bytes_out: u64,
    messages_in: u32,
    messages_out: u32,
    /// Messages written since the current batch began.
    batch: u16,
    batches: [u16; BUCKETS],
}

/// A narrow count past this asks for a fold.
const FULL: u16 = u16::MAX / 2;

impl Tally {
    pub(super) fn received(&mut self, bytes: usize) {
        self.messages_in = self.messages_in.saturating_add(1);
        self.bytes_in = self.bytes_in.saturating_add(bytes as u64);
    }

    /// A message of `bytes` is written, in the current batch.
    pub(super) fn sent(&mut self, bytes: usize) {
        self.messages_out = self.messages_out.saturating_add(1);
        self.bytes_out = self.bytes_out.saturating_add(bytes as u64);
        self.batch = self.batch.saturating_add(1);
    }

    /// The current batch was flushed: count it by its size.
    pub(super) fn batch_done(&mut self) {
        let messages = u64::from(std::mem::take(&mut self.batch));
        if messages == 0 {
            return;
        }
        let at = WRITE_BATCH_BOUNDS
            .iter()
            .position(|&bound| messages <= bound)
            .unwrap_or(BUCKETS - 1);
        if let Some(n) = self.batches.get_mut(at) {
            *n = n.saturating_add(1);
        }
    }

    /// True when a narrow count is half way to its limit: fold now.
    pub(super) fn is_full(&self) -> bool {
        self.messages_in > u32::MAX / 2
            || self.messages_out > u32::MAX / 2
            || self.batches.iter().any(|&n| n > FULL)
    }

    /// Adds the counts to `stats` and starts again from zero.
    pub(super) fn fold(&mut self, stats: &SessionStats) {
        let c = &stats.inner;
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&c.messages_in, u64::from(self.messages_in));
        add(&c.bytes_in, self.bytes_in);
        add(&c.messages_out, u64::from(self.messages_out));
        add(&c.bytes_out, self.bytes_out);
        for (counter, &n) in c.batches.iter().zip(&self.batches) {
            add(counter, u64::from(n));
        }
        let batch = self.batch;
        *self = Self::default();
        self.batch = batch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_folds_once() {
        let stats = SessionStats::default();
        let mut tally = Tally::default();
        tally.received(3);
        tally.sent(5);
        tally.batch_done();
        tally.sent(7);
        tally.sent(7);
        tally.batch_done();
        for _ in 0..100 {
            tally.sent(0);
        }
        tally.batch_done();
        tally.fold(&stats);
        tally.fold(&stats);
        assert_eq!(stats.messages_received(), 1);
        assert_eq!(stats.bytes_received(), 3);
        assert_eq!(stats.messages_sent(), 103);
        assert_eq!(stats.bytes_sent(), 19);
        assert_eq!(stats.write_batches(), [1, 1, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn closes_count_by_code() {
        let stats = SessionStats::default();
        stats.count_open();
        stats.count_open();
        stats.count_close(CloseCode::NORMAL, 2, 1);
        assert_eq!(stats.open(), 1);
        assert_eq!(stats.closes(), [(CloseCode::NORMAL, 1)]);
        assert_eq!((stats.dropped(), stats.oversized()), (2, 1));
    }
}
