//! This process's receive buffers: what the receive loop popped from Redis,
//! waiting for the connection it is addressed to, and the flow control over
//! them (the same rule as the in-memory layer's: see `ChannelLayer`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use estuary_core::{
    ChannelLayerError, ChannelName, ChannelReceiver, Message, OVERFLOW_FACTOR, ReceiverState,
};
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

/// How many live buffers of a layer hold more than their capacity, and
/// whether this process's queue in Redis is deep: while either holds, the
/// layer is backlogged and sessions stop reading their clients, so that
/// producers that are clients wait for the server instead of members
/// losing messages.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    over: AtomicUsize,
    /// The receive loop found more waiting in this process's queue in Redis
    /// than it takes in one round trip: the process is behind its queue,
    /// whose room in Redis is bounded (past it, group messages for this
    /// process's members are dropped there).
    queue_deep: AtomicBool,
    relief: Notify,
    /// Time spent backlogged, for operators: written only when the layer
    /// becomes backlogged or relieved, never per message.
    spent: Mutex<Spent>,
}

/// How long a layer has been backlogged, in all.
#[derive(Debug, Default)]
struct Spent {
    /// Finished episodes.
    total: std::time::Duration,
    /// When the current episode began.
    since: Option<std::time::Instant>,
    /// Episodes begun.
    episodes: u64,
}

impl Backlog {
    /// Time backlogged so far (the current episode included), and episodes.
    pub(crate) fn spent(&self) -> (std::time::Duration, u64) {
        let spent = lock(&self.spent);
        let current = spent.since.map(|at| at.elapsed()).unwrap_or_default();
        (spent.total + current, spent.episodes)
    }

    /// Starts or ends an episode if the backlog's state changed. Called
    /// after each change of either source; the lock orders the calls, so
    /// the last one sees the final state.
    fn settle(&self) {
        let mut spent = lock(&self.spent);
        match (spent.since, self.is_backlogged()) {
            (None, true) => {
                spent.since = Some(std::time::Instant::now());
                spent.episodes += 1;
            }
            (Some(at), false) => {
                spent.total += at.elapsed();
                spent.since = None;
            }
            _ => {}
        }
    }

    /// True while some live buffer is over its capacity, or this process's
    /// queue in Redis is deep.
    pub(crate) fn is_backlogged(&self) -> bool {
        self.over.load(Ordering::SeqCst) > 0 || self.queue_deep.load(Ordering::SeqCst)
    }

    /// True while this process's queue in Redis is deep.
    pub(crate) fn is_queue_deep(&self) -> bool {
        self.queue_deep.load(Ordering::SeqCst)
    }

    /// Records whether the process's queue in Redis is deep (see
    /// `queue_deep`); waiting sessions are woken when that ends the backlog.
    pub(crate) fn set_queue_deep(&self, deep: bool) {
        let was = self.queue_deep.swap(deep, Ordering::SeqCst);
        if was == deep {
            return;
        }
        self.settle();
        if !deep && !self.is_backlogged() {
            self.relief.notify_waiters();
        }
    }

    /// Completes once no live buffer is over its capacity.
    pub(crate) async fn relieved(&self) {
        loop {
            let relief = self.relief.notified();
            tokio::pin!(relief);
            relief.as_mut().enable();
            if !self.is_backlogged() {
                return;
            }
            relief.await;
        }
    }

    /// Recounts `buffer` after its length or receiver changed. A live
    /// buffer counts from above its capacity until it is back to half of
    /// it, so that one hovering at capacity does not wake every waiting
    /// session on each message.
    fn update(&self, buffer: &mut Buffer, capacity: usize) {
        let len = buffer.items.len();
        let over = buffer.receiver == ReceiverState::Live
            && (len > capacity || (buffer.counted && len > capacity / 2));
        if over == buffer.counted {
            return;
        }
        buffer.counted = over;
        if over {
            if self.over.fetch_add(1, Ordering::SeqCst) == 0 {
                self.settle();
            }
        } else if self.over.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.settle();
            if !self.queue_deep.load(Ordering::SeqCst) {
                self.relief.notify_waiters();
            }
        }
    }
}

/// Wake-ups held back while the receive task hands out a batch of
/// messages and takes the next one from Redis: each session then wakes
/// once to what both brought, and writes them to its client together,
/// rather than a frame per wake-up. Released before the receive task waits
/// for messages that are not there yet, and by the time the next batch is
/// in (one round trip later).
#[derive(Debug, Default)]
pub(crate) struct Held {
    queues: Vec<Arc<LocalQueue>>,
}

impl Held {
    /// Wakes every receiver whose wake-up was held back.
    pub(crate) fn release(&mut self) {
        for queue in self.queues.drain(..) {
            let mut buffer = queue.items();
            buffer.held = false;
            queue.wake(buffer);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
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
    /// The layer's backlog, when the layer keeps flow control: a live
    /// receiver's buffer may then hold up to [`OVERFLOW_FACTOR`] times its
    /// capacity while the server catches up.
    backlog: Option<Arc<Backlog>>,
}

#[derive(Debug)]
struct Buffer {
    items: VecDeque<(f64, Message)>,
    /// Messages dropped since the receiver was last told.
    lost: u64,
    /// The bound receiver waiting for a message (see [`QueueReceiver`]).
    waiting: Option<Waker>,
    receiver: ReceiverState,
    /// Whether this buffer is counted in the layer's backlog.
    counted: bool,
    /// A wake-up held back for the rest of a batch (see [`Held`]).
    held: bool,
}

impl Default for Buffer {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            lost: 0,
            waiting: None,
            receiver: ReceiverState::Detached,
            counted: false,
            held: false,
        }
    }
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
            backlog: None,
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

    /// A connection's own channel under flow control (see [`Backlog`]).
    pub(crate) fn flow_controlled(capacity: usize, backlog: Arc<Backlog>) -> Self {
        Self {
            backlog: Some(backlog),
            ..Self::reporting(capacity)
        }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, Buffer> {
        lock(&self.items)
    }

    fn recount(&self, buffer: &mut Buffer) {
        if let Some(backlog) = &self.backlog {
            backlog.update(buffer, self.capacity);
        }
    }

    fn wake(&self, mut buffer: std::sync::MutexGuard<'_, Buffer>) {
        let waiting = buffer.waiting.take();
        drop(buffer);
        match waiting {
            Some(receiver) => receiver.wake(),
            None => self.ready.notify_one(),
        }
    }

    /// Buffers a message; false (and nothing stored) when full or closed.
    pub(crate) fn push(&self, expires: f64, message: Message) -> bool {
        self.push_at(expires, message, now())
    }

    /// [`push`](Self::push) with the wall clock already read (once for a
    /// batch).
    pub(crate) fn push_at(&self, expires: f64, message: Message, now: f64) -> bool {
        match self.insert(expires, message, now) {
            Some(buffer) => {
                self.wake(buffer);
                true
            }
            None => false,
        }
    }

    /// [`push_at`](Self::push_at), the receiver's wake-up held back in
    /// `held` until the batch is over ([`Held::release`]).
    pub(crate) fn push_held(
        self: &Arc<Self>,
        expires: f64,
        message: Message,
        now: f64,
        held: &mut Held,
    ) -> bool {
        match self.insert(expires, message, now) {
            Some(mut buffer) => {
                if !std::mem::replace(&mut buffer.held, true) {
                    held.queues.push(Arc::clone(self));
                }
                true
            }
            None => false,
        }
    }

    /// Stores a message unless the buffer is full (after dropping expired
    /// ones) or closed: the buffer, locked, to wake its receiver; `None`
    /// when it was not stored (a loss to report is reported here).
    fn insert(&self, expires: f64, message: Message, now: f64) -> Option<std::sync::MutexGuard<'_, Buffer>> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut buffer = self.items();
        while buffer.items.front().is_some_and(|(at, _)| *at <= now) {
            buffer.items.pop_front();
        }
        let limit = if self.backlog.is_some() && buffer.receiver == ReceiverState::Live {
            self.capacity.saturating_mul(OVERFLOW_FACTOR)
        } else {
            self.capacity
        };
        if buffer.items.len() >= limit {
            self.recount(&mut buffer);
            if self.reports_loss {
                buffer.lost += 1;
                self.wake(buffer);
            }
            return None;
        }
        buffer.items.push_back((expires, message));
        self.recount(&mut buffer);
        Some(buffer)
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
        self.wake(buffer);
        true
    }

    /// The next unexpired message, or `Err(n)` when `n` messages were
    /// dropped for want of room since the last report (ahead of what is
    /// still buffered), or nothing yet.
    fn take(&self, buffer: &mut Buffer) -> Option<Result<Message, u64>> {
        if buffer.lost > 0 {
            return Some(Err(std::mem::take(&mut buffer.lost)));
        }
        let now = now();
        let mut found = None;
        while let Some((at, message)) = buffer.items.pop_front() {
            if at > now {
                found = Some(message);
                break;
            }
        }
        self.recount(buffer);
        found.map(Ok)
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
            if let Some(taken) = self.take(&mut self.items()) {
                return Some(taken);
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

    /// How its receiver is doing (flow control).
    pub(crate) fn set_receiver(&self, state: ReceiverState) {
        let mut buffer = self.items();
        buffer.receiver = state;
        self.recount(&mut buffer);
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut buffer = self.items();
        buffer.items.clear();
        buffer.receiver = ReceiverState::Detached;
        self.recount(&mut buffer);
        let waiting = buffer.waiting.take();
        drop(buffer);
        if let Some(receiver) = waiting {
            receiver.wake();
        }
        self.ready.notify_waiters();
    }

    /// Drops every buffered message (for `flush`).
    pub(crate) fn clear(&self) {
        let mut buffer = self.items();
        buffer.items.clear();
        buffer.lost = 0;
        self.recount(&mut buffer);
    }
}

/// A session's hold on its channel's buffer: a message costs one lock, not
/// a lookup in the channel map, a boxed future and a `Notify` registration.
pub(crate) struct QueueReceiver<'a> {
    /// `None`: the channel was closed (or never made here) before the
    /// receiver was made.
    pub(crate) queue: Option<Arc<LocalQueue>>,
    pub(crate) channel: &'a ChannelName,
}

impl Drop for QueueReceiver<'_> {
    fn drop(&mut self) {
        // A stored waker would take the next push's wake-up from `pop`.
        if let Some(queue) = &self.queue {
            queue.items().waiting = None;
        }
    }
}

impl ChannelReceiver for QueueReceiver<'_> {
    fn poll_receive(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<Message, ChannelLayerError>> {
        let Some(queue) = &self.queue else {
            return Poll::Ready(Err(ChannelLayerError::ChannelClosed(self.channel.clone())));
        };
        let mut buffer = queue.items();
        match queue.take(&mut buffer) {
            Some(Ok(message)) => return Poll::Ready(Ok(message)),
            Some(Err(count)) => return Poll::Ready(Err(ChannelLayerError::Lost { count })),
            None => {}
        }
        // Checked under the lock that `close` takes after setting it.
        if queue.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(ChannelLayerError::ChannelClosed(self.channel.clone())));
        }
        match &mut buffer.waiting {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u64) -> Message {
        Message::from_json(&serde_json::json!({"type": "t", "n": n})).unwrap()
    }

    #[test]
    fn a_live_buffer_overflows_up_to_the_limit_and_backlogs_the_layer() {
        let backlog = Arc::new(Backlog::default());
        let q = LocalQueue::flow_controlled(2, backlog.clone());
        let far = now() + 60.0;
        assert!(q.push(far, msg(0)) && q.push(far, msg(1)));
        assert!(!q.push(far, msg(2)), "detached: the capacity is the limit");
        q.set_receiver(ReceiverState::Live);
        for n in 2..8 {
            assert!(
                q.push(far, msg(n)),
                "live: up to {OVERFLOW_FACTOR} x the capacity"
            );
        }
        assert!(backlog.is_backlogged());
        assert!(!q.push(far, msg(8)), "the overflow limit");
        let mut buffer = q.items();
        assert!(
            matches!(q.take(&mut buffer), Some(Err(2))),
            "the drops are reported first"
        );
        for _ in 0..6 {
            assert!(matches!(q.take(&mut buffer), Some(Ok(_))));
        }
        assert!(backlog.is_backlogged(), "2 left: at capacity, not yet half of it");
        assert!(matches!(q.take(&mut buffer), Some(Ok(_))));
        assert!(!backlog.is_backlogged(), "back to half the capacity");
        drop(buffer);
        q.set_receiver(ReceiverState::Live);
        for n in 0..3 {
            assert!(q.push(far, msg(n)));
        }
        assert!(backlog.is_backlogged());
        q.close();
        assert!(!backlog.is_backlogged(), "a closed buffer is not counted");
    }

    #[tokio::test]
    async fn a_deep_queue_in_redis_backlogs_the_layer_until_it_is_drained() {
        let backlog = Arc::new(Backlog::default());
        backlog.set_queue_deep(true);
        assert!(backlog.is_backlogged());
        let relieved = tokio::spawn({
            let backlog = backlog.clone();
            async move { backlog.relieved().await }
        });
        // A live buffer over its capacity and back keeps the backlog while
        // the queue is deep.
        let q = LocalQueue::flow_controlled(1, backlog.clone());
        q.set_receiver(ReceiverState::Live);
        let far = now() + 60.0;
        assert!(q.push(far, msg(0)) && q.push(far, msg(1)));
        q.clear();
        assert!(backlog.is_backlogged(), "the queue in Redis is still deep");
        assert_eq!(
            backlog.spent().1,
            1,
            "one episode: the buffer's overflow fell inside it"
        );
        backlog.set_queue_deep(false);
        assert!(!backlog.is_backlogged());
        backlog.set_queue_deep(true);
        backlog.set_queue_deep(false);
        assert_eq!(backlog.spent().1, 2, "a second episode");
        tokio::time::timeout(std::time::Duration::from_secs(10), relieved)
            .await
            .expect("relieved")
            .unwrap();
    }

    #[test]
    fn expired_entries_are_skipped() {
        let q = LocalQueue::reporting(2);
        assert!(q.push(now() - 1.0, msg(0)));
        assert!(q.push(now() + 60.0, msg(1)));
        let got = q.take(&mut q.items());
        assert!(matches!(got, Some(Ok(m)) if m == msg(1)));
    }
}
