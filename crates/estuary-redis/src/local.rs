//! This process's receive buffers: what the receive loop popped from Redis,
//! waiting for the connection it is addressed to.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use estuary_core::Message;
use tokio::sync::Notify;

// The data behind the layers' locks stays consistent even if a holder
// panicked: the workspace's poison-tolerant lock, for the whole crate.
pub(crate) use estuary_core::sync::lock;

/// Wall-clock seconds, as channels_redis scores messages.
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A bounded buffer for one channel. Entries carry their wall-clock expiry
/// (the sender's score plus the layer's expiry).
#[derive(Debug)]
pub(crate) struct LocalQueue {
    capacity: usize,
    items: Mutex<Buffer>,
    ready: Notify,
    closed: AtomicBool,
    /// Whether messages dropped for want of room are reported to the
    /// receiver (a connection's own channel), or only counted (a worker's).
    reports_loss: bool,
}

#[derive(Debug, Default)]
struct Buffer {
    items: VecDeque<(f64, Message)>,
    /// Messages dropped since the receiver was last told.
    lost: u64,
}

impl LocalQueue {
    /// A worker channel's buffer: drops are counted by the caller only.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            items: Mutex::new(Buffer::default()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            reports_loss: false,
        }
    }

    /// A connection's own channel: [`pop`](Self::pop) reports drops, so
    /// that its session tells the client (`ChannelLayerError::Lost`).
    pub(crate) fn reporting(capacity: usize) -> Self {
        Self {
            reports_loss: true,
            ..Self::new(capacity)
        }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, Buffer> {
        lock(&self.items)
    }

    /// Buffers a message; false (and nothing stored) when full or closed.
    pub(crate) fn push(&self, expires: f64, message: Message) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut buffer = self.items();
        let now = now();
        buffer.items.retain(|(at, _)| *at > now);
        if buffer.items.len() >= self.capacity {
            if self.reports_loss {
                buffer.lost += 1;
                drop(buffer);
                self.ready.notify_one();
            }
            return false;
        }
        buffer.items.push_back((expires, message));
        drop(buffer);
        self.ready.notify_one();
        true
    }

    /// Records that messages for this channel may have been lost outside
    /// the buffer (the pub/sub layer's subscription to it was down for a
    /// while): a connection's own channel reports it at its next
    /// [`pop`](Self::pop) as one lost message, since how many were
    /// published meanwhile is unknown. False (nothing recorded) for a
    /// worker channel, which does not report losses, or a closed one.
    pub(crate) fn mark_gap(&self) -> bool {
        if !self.reports_loss || self.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut buffer = self.items();
        buffer.lost = buffer.lost.saturating_add(1);
        drop(buffer);
        self.ready.notify_one();
        true
    }

    /// Waits for the next unexpired message, or `Err(n)` when `n` messages
    /// were dropped for want of room since the last report (own channels
    /// only, ahead of what is still buffered); `None` once closed.
    /// Cancel-safe.
    pub(crate) async fn pop(&self) -> Option<Result<Message, u64>> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let now = now();
                let mut buffer = self.items();
                if buffer.lost > 0 {
                    return Some(Err(std::mem::take(&mut buffer.lost)));
                }
                while let Some((at, message)) = buffer.items.pop_front() {
                    if at > now {
                        return Some(Ok(message));
                    }
                }
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            ready.await;
        }
    }

    /// True when nothing is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.items().items.is_empty()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.items().items.clear();
        self.ready.notify_waiters();
    }
}

impl LocalQueue {
    /// Drops every buffered message (for `flush`).
    pub(crate) fn clear(&self) {
        let mut buffer = self.items();
        buffer.items.clear();
        buffer.lost = 0;
    }
}
