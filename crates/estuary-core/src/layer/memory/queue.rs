//! One channel's queue in the in-memory layer, its flow-control count, and
//! a session's hold on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Poll, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::layer::{ChannelLayerError, ChannelReceiver, OVERFLOW_FACTOR, ReceiverState};
use crate::message::Message;
use crate::names::ChannelName;
use crate::sync::lock;

/// A queued message and when it expires.
pub(super) struct Entry {
    pub(super) expires: Instant,
    pub(super) message: Message,
}

/// Flow control: how many live channels hold more than their capacity, and
/// a wake-up for the sessions waiting for that to reach zero.
#[derive(Default)]
pub(super) struct Backlog {
    pub(super) over: AtomicUsize,
    pub(super) relief: Notify,
    /// Time spent backlogged: written only when the layer becomes
    /// backlogged or relieved, never per message.
    pub(super) spent: Mutex<BacklogTime>,
}

/// How long the layer has been backlogged, in all.
#[derive(Default)]
pub(super) struct BacklogTime {
    /// Finished episodes.
    pub(super) total: std::time::Duration,
    /// When the current episode began.
    pub(super) since: Option<Instant>,
    /// Episodes begun.
    pub(super) episodes: u64,
}

impl Backlog {
    /// Time backlogged so far (the current episode included), and episodes.
    pub(super) fn spent(&self) -> (std::time::Duration, u64) {
        let spent = lock(&self.spent);
        let current = spent.since.map(|at| at.elapsed()).unwrap_or_default();
        (spent.total + current, spent.episodes)
    }
}

impl Backlog {
    /// Recounts `state` after its length or receiver changed. A live queue
    /// counts from above its capacity until it is back to half of it, so
    /// that one hovering at capacity does not wake every waiting session on
    /// each message.
    pub(super) fn update(&self, state: &mut QueueState, capacity: usize) {
        let len = state.items.len();
        let over = state.receiver == ReceiverState::Live
            && (len > capacity || (state.counted && len > capacity / 2));
        if over == state.counted {
            return;
        }
        state.counted = over;
        if over {
            if self.over.fetch_add(1, Ordering::AcqRel) == 0 {
                let mut spent = lock(&self.spent);
                spent.since = Some(Instant::now());
                spent.episodes += 1;
            }
        } else if self.over.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut spent = lock(&self.spent);
            if let Some(at) = spent.since.take() {
                spent.total += at.elapsed();
            }
            drop(spent);
            self.relief.notify_waiters();
        }
    }
}

pub(super) struct Queue {
    /// A `u32`, and `ready` made only when needed: every connection has a
    /// queue, and together they keep it a size class smaller.
    capacity: u32,
    /// A connection's own channel: losses are reported to its receiver.
    pub(super) reports_loss: bool,
    pub(super) state: Mutex<QueueState>,
    /// Wakes unbound receivers (`ChannelLayer::receive`); made by the
    /// first of them, so a queue only a session reads holds none.
    ready: OnceLock<Box<Notify>>,
    pub(super) closed: AtomicBool,
    pub(super) backlog: Arc<Backlog>,
}

pub(super) struct QueueState {
    pub(super) items: VecDeque<Entry>,
    /// The bound receiver waiting for a message ([`ChannelLayer::receiver`]).
    pub(super) waiting: Option<Waker>,
    pub(super) receiver: ReceiverState,
    /// Whether this queue is counted in the layer's backlog.
    pub(super) counted: bool,
    /// Group messages dropped because the queue was full, not yet reported
    /// to the bound receiver.
    pub(super) lost: u64,
}

/// Why a push failed; the message comes back.
pub(super) struct Rejected {
    pub(super) message: Message,
    /// The receiver was live: the overflow limit was reached, not the capacity.
    pub(super) live: bool,
}

impl Queue {
    pub(super) fn new(capacity: usize, backlog: Arc<Backlog>, reports_loss: bool) -> Self {
        Self {
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            reports_loss,
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                waiting: None,
                receiver: ReceiverState::Detached,
                counted: false,
                lost: 0,
            }),
            ready: OnceLock::new(),
            closed: AtomicBool::new(false),
            backlog,
        }
    }

    /// Messages the queue holds before it refuses (or, for group sends to
    /// a live receiver, overflows).
    pub(super) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The wake-up of unbound receivers, made on first use. A receiver
    /// takes it before it looks at the queue (under its lock), so a push
    /// that finds none made has no receiver to wake.
    pub(super) fn ready(&self) -> &Notify {
        self.ready.get_or_init(|| Box::new(Notify::new()))
    }

    /// Wakes one unbound receiver, if any ever waited.
    fn notify_ready(&self) {
        if let Some(ready) = self.ready.get() {
            ready.notify_one();
        }
    }

    /// Wakes every unbound receiver waiting (the channel closed).
    pub(super) fn notify_closed(&self) {
        if let Some(ready) = self.ready.get() {
            ready.notify_waiters();
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, QueueState> {
        lock(&self.state)
    }

    /// Stores `message` unless the queue is full (after dropping expired
    /// ones). A group send (`overflow`) to a live receiver may go past the
    /// capacity, up to the overflow limit.
    pub(super) fn push(
        &self,
        message: Message,
        expires: Instant,
        now: Instant,
        overflow: bool,
    ) -> Result<(), Rejected> {
        let mut state = self.state();
        while state.items.front().is_some_and(|e| e.expires <= now) {
            state.items.pop_front();
        }
        let live = state.receiver == ReceiverState::Live;
        let limit = if overflow && live {
            self.capacity().saturating_mul(OVERFLOW_FACTOR)
        } else {
            self.capacity()
        };
        if state.items.len() >= limit {
            self.backlog.update(&mut state, self.capacity());
            if overflow && self.reports_loss {
                // A group message this connection will never see: its
                // session is told (`ChannelLayerError::Lost`), so the loss
                // is not silent.
                state.lost += 1;
                let waiting = state.waiting.take();
                drop(state);
                match waiting {
                    Some(receiver) => receiver.wake(),
                    None => self.notify_ready(),
                }
            }
            return Err(Rejected {
                message,
                live: live && overflow,
            });
        }
        if state.items.capacity() == 0 {
            // An idle member that got one message keeps room for one, not four.
            state.items.reserve_exact(1);
        }
        state.items.push_back(Entry { expires, message });
        self.backlog.update(&mut state, self.capacity());
        let waiting = state.waiting.take();
        drop(state);
        match waiting {
            Some(receiver) => receiver.wake(),
            None => self.notify_ready(),
        }
        Ok(())
    }

    pub(super) fn pop_locked(&self, state: &mut QueueState, now: Instant) -> Option<Message> {
        let mut found = None;
        while let Some(entry) = state.items.pop_front() {
            if entry.expires > now {
                found = Some(entry.message);
                break;
            }
        }
        if state.items.is_empty() && state.items.capacity() == 1 {
            // A member that only ever held one message at a time (an idle
            // one got its room's last) keeps no slot while it waits; one
            // that had a burst keeps its room (see `push`).
            state.items = VecDeque::new();
        }
        self.backlog.update(state, self.capacity());
        found
    }

    pub(super) fn set_receiver(&self, receiver: ReceiverState) {
        let mut state = self.state();
        state.receiver = receiver;
        self.backlog.update(&mut state, self.capacity());
    }

    pub(super) fn clear(&self) {
        let mut state = self.state();
        state.items.clear();
        self.backlog.update(&mut state, self.capacity());
    }

    pub(super) fn is_abandoned(&self, now: Instant) -> bool {
        let mut state = self.state();
        while state.items.front().is_some_and(|e| e.expires <= now) {
            state.items.pop_front();
        }
        self.backlog.update(&mut state, self.capacity());
        state.items.is_empty()
    }
}

/// A session's hold on its channel's queue: a message costs one lock, not a
/// lookup in the channel map, a boxed future and a `Notify` registration.
pub(super) struct QueueReceiver<'a> {
    /// `None`: the channel was closed before the receiver was made.
    pub(super) queue: Option<Arc<Queue>>,
    pub(super) channel: &'a ChannelName,
}

impl Drop for QueueReceiver<'_> {
    fn drop(&mut self) {
        // A stored waker would take the next push's wake-up from `receive`.
        if let Some(queue) = &self.queue {
            queue.state().waiting = None;
        }
    }
}

impl ChannelReceiver for QueueReceiver<'_> {
    fn poll_receive(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<Message, ChannelLayerError>> {
        let Some(queue) = &self.queue else {
            return Poll::Ready(Err(ChannelLayerError::ChannelClosed(self.channel.clone())));
        };
        let mut state = queue.state();
        if state.lost > 0 {
            let count = std::mem::take(&mut state.lost);
            return Poll::Ready(Err(ChannelLayerError::Lost { count }));
        }
        // The clock is read only when there is something to check: a session
        // polls its receiver on every wake-up, most of them for other reasons.
        if !state.items.is_empty() {
            if let Some(message) = queue.pop_locked(&mut state, Instant::now()) {
                return Poll::Ready(Ok(message));
            }
        }
        // Checked under the lock that `close_channel` takes after setting it.
        if queue.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(ChannelLayerError::ChannelClosed(self.channel.clone())));
        }
        match &mut state.waiting {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
