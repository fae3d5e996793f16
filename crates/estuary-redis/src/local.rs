//! This process's receive buffers: what the receive loop popped from Redis,
//! waiting for the connection it is addressed to.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use estuary_core::Message;
use tokio::sync::Notify;

/// Locks a mutex; the data behind the layers' locks stays consistent even if
/// a holder panicked, so a poisoned lock is used as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
    items: Mutex<VecDeque<(f64, Message)>>,
    ready: Notify,
    closed: AtomicBool,
}

impl LocalQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<(f64, Message)>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Buffers a message; false (and nothing stored) when full or closed.
    pub(crate) fn push(&self, expires: f64, message: Message) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut items = self.items();
        let now = now();
        items.retain(|(at, _)| *at > now);
        if items.len() >= self.capacity {
            return false;
        }
        items.push_back((expires, message));
        drop(items);
        self.ready.notify_one();
        true
    }

    /// Waits for the next unexpired message; `None` once closed. Cancel-safe.
    pub(crate) async fn pop(&self) -> Option<Message> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let now = now();
                let mut items = self.items();
                while let Some((at, message)) = items.pop_front() {
                    if at > now {
                        return Some(message);
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
        self.items().is_empty()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.items().clear();
        self.ready.notify_waiters();
    }
}

impl LocalQueue {
    /// Drops every buffered message (for `flush`).
    pub(crate) fn clear(&self) {
        self.items().clear();
    }
}
