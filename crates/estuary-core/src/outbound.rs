//! A connection's outbound queue: what its handlers send, waiting to be
//! written.
//!
//! The sending side (the [`Context`](crate::Context)) and the receiving side
//! (the session) always live in one task, so the queue is a plain bounded
//! `VecDeque` behind an uncontended lock rather than a channel: nothing is
//! allocated until the first message (an idle connection holds a handful of
//! slots, not a channel's first block of 32), and taking a message costs no
//! permit.
//!
//! Wake-ups: the session's own sender (the one [`outbound`] returns, held by
//! its [`Context`](crate::Context)) never wakes it. Its sends happen inside
//! the session's turn (a handler runs there), and the session looks at the
//! queue before it waits again, so a wake-up would only poll it once more
//! for nothing. Clones of the sender (held by
//! [`ClientHandle`](crate::ClientHandle)s, in other tasks) wake it. The
//! session's waker stays registered between its waits, so that waiting
//! costs one lock, not one to register and one to unregister.
//!
//! Contract, as the session relies on it: at most `capacity` messages are
//! held, and at most `bytes` bytes of payload unless a single larger
//! message is alone in the queue; messages come out in the order they went in; after
//! [`OutboundReceiver::close`] sends fail and what is queued can still be
//! taken.
//!
//! A [`ClientHandle`](crate::ClientHandle) holds a clone of the sending side
//! and sends from other tasks: several senders may wait for room at once,
//! and a handle's close is queued past the capacity (it carries no payload,
//! and is queued once) or, for a client too slow, ahead of everything.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};

use crate::close::CloseFrame;
use crate::ws::WsMessage;

/// An item on a connection's outbound queue.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Message(WsMessage),
    Close(CloseFrame),
}

impl Outgoing {
    /// Payload bytes, for the outbound queue's byte budget.
    pub(crate) fn size(&self) -> usize {
        match self {
            Outgoing::Message(m) => m.len(),
            Outgoing::Close(_) => 0,
        }
    }
}

/// Slots kept after the queue empties; a burst may grow it further, and the
/// excess is given back once it is empty again.
const KEEP: usize = 8;

struct State {
    queue: VecDeque<Outgoing>,
    /// Payload bytes queued.
    bytes: usize,
    closed: bool,
    /// The session, waiting for a message.
    receiver: Option<Waker>,
    /// Senders waiting for room: the handler, and tasks holding a
    /// [`ClientHandle`](crate::ClientHandle). Empty (no allocation) unless
    /// the queue was found full.
    senders: Vec<Waker>,
}

struct Shared {
    state: Mutex<State>,
    /// Messages (a `u32`: with the other fields, it keeps this allocation,
    /// one per connection, a size class smaller).
    capacity: u32,
    byte_capacity: usize,
    /// Messages [`ClientHandle`](crate::ClientHandle)s dropped under
    /// [`SlowClientPolicy::Drop`](crate::SlowClientPolicy::Drop).
    dropped: AtomicU64,
    /// A handle queued a close: later handle sends fail.
    handle_closed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// True when `size` more bytes fit (one message always fits an empty queue).
    fn has_room(&self, state: &State, size: usize) -> bool {
        state.queue.len() < self.capacity as usize
            && (state.queue.is_empty() || state.bytes.saturating_add(size) <= self.byte_capacity)
    }
}

/// A bounded queue of `capacity` messages (at least one) and `bytes` bytes.
pub(crate) fn outbound(capacity: usize, bytes: usize) -> (OutboundSender, OutboundReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            bytes: 0,
            closed: false,
            receiver: None,
            senders: Vec::new(),
        }),
        capacity: u32::try_from(capacity).unwrap_or(u32::MAX).max(1),
        byte_capacity: bytes,
        dropped: AtomicU64::new(0),
        handle_closed: AtomicBool::new(false),
    });
    (
        OutboundSender {
            shared: shared.clone(),
            wakes: false,
        },
        OutboundReceiver { shared },
    )
}

/// Why a message was not queued; the message comes back.
#[derive(Debug)]
pub(crate) enum TrySendError {
    Full(Outgoing),
    Closed,
}

/// The sending side, held by the connection's [`Context`](crate::Context)
/// and its [`ClientHandle`](crate::ClientHandle)s.
pub(crate) struct OutboundSender {
    shared: Arc<Shared>,
    /// Wakes the session after a send: false for the session's own sender
    /// (see the module's documentation), true for every clone.
    wakes: bool,
}

impl Clone for OutboundSender {
    /// Another sender, for another task: its sends wake the session.
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            wakes: true,
        }
    }
}

impl OutboundSender {
    /// Queues a close frame whatever the queue holds: at the back (after
    /// what is queued, past the capacity: a close carries no payload), or,
    /// with `first`, ahead of everything (the client is too slow: what is
    /// queued is not written). `Err` once the queue is closed.
    pub(crate) fn force_close(&self, frame: crate::close::CloseFrame, first: bool) -> Result<(), ()> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(());
        }
        if first {
            state.queue.push_front(Outgoing::Close(frame));
        } else {
            state.queue.push_back(Outgoing::Close(frame));
        }
        drop(state);
        self.wake();
        Ok(())
    }

    /// Wakes the session if it waits for this queue and this sender is not
    /// its own.
    fn wake(&self) {
        if !self.wakes {
            return;
        }
        let waker = self.shared.lock().receiver.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// True once the session stopped taking messages (the connection ended
    /// or is closing).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Counts a message a handle dropped for a slow client.
    pub(crate) fn count_dropped(&self) {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages handles dropped for a slow client.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Marks the queue as closed by a handle; true if it already was.
    pub(crate) fn mark_handle_closed(&self) -> bool {
        self.shared.handle_closed.swap(true, Ordering::AcqRel)
    }

    /// True once a handle queued a close.
    pub(crate) fn is_handle_closed(&self) -> bool {
        self.shared.handle_closed.load(Ordering::Acquire)
    }

    /// Queues `item` if there is room.
    pub(crate) fn try_send(&self, item: Outgoing) -> Result<(), TrySendError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(TrySendError::Closed);
        }
        let size = item.size();
        if !self.shared.has_room(&state, size) {
            return Err(TrySendError::Full(item));
        }
        state.bytes += size;
        if state.queue.capacity() == 0 {
            // An idle connection that got one message keeps room for one,
            // not four; a busy one grows as before.
            state.queue.reserve_exact(1);
        }
        state.queue.push_back(item);
        if self.wakes {
            if let Some(waker) = state.receiver.take() {
                drop(state);
                waker.wake();
            }
        }
        Ok(())
    }

    /// Queues `item`, waiting for room; `Err` once the queue is closed.
    pub(crate) async fn send(&self, item: Outgoing) -> Result<(), ()> {
        let mut item = Some(item);
        std::future::poll_fn(|cx| {
            let Some(next) = item.take() else {
                return Poll::Ready(Err(()));
            };
            match self.try_send(next) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(TrySendError::Closed) => Poll::Ready(Err(())),
                Err(TrySendError::Full(back)) => {
                    let size = back.size();
                    item = Some(back);
                    let mut state = self.shared.lock();
                    // Room may have been made between the two locks.
                    if self.shared.has_room(&state, size) || state.closed {
                        cx.waker().wake_by_ref();
                    } else if !state.senders.iter().any(|w| w.will_wake(cx.waker())) {
                        state.senders.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// The receiving side, held by the session.
pub(crate) struct OutboundReceiver {
    shared: Arc<Shared>,
}

impl OutboundReceiver {
    /// Takes the next message, if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Outgoing> {
        let mut state = self.shared.lock();
        let (item, senders) = take(&mut state);
        drop(state);
        wake_all(senders);
        item
    }

    /// Waits for the next message; `None` once the queue is closed and
    /// empty. Cancel-safe: a message is taken only when this completes.
    pub(crate) fn recv(&mut self) -> Recv<'_> {
        Recv { rx: self }
    }

    /// Messages queued.
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses further sends (a handler waiting for room gets an error);
    /// what is queued can still be taken.
    pub(crate) fn close(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        let senders = std::mem::take(&mut state.senders);
        drop(state);
        wake_all(senders);
    }
}

/// Pops the next message; with it, the wakers of senders waiting for room.
fn take(state: &mut State) -> (Option<Outgoing>, Vec<Waker>) {
    let Some(item) = state.queue.pop_front() else {
        return (None, Vec::new());
    };
    state.bytes -= item.size();
    if state.queue.is_empty() {
        match state.queue.capacity() {
            // A connection sent one message at a time (an idle one, its
            // room's last) keeps no slot while it waits; one that had a
            // burst keeps room (see `try_send`).
            1 => state.queue = VecDeque::new(),
            capacity if capacity > KEEP => state.queue.shrink_to(KEEP),
            _ => {}
        }
    }
    (Some(item), std::mem::take(&mut state.senders))
}

/// Wakes every sender that waited for room (usually none: no allocation).
fn wake_all(senders: Vec<Waker>) {
    for waker in senders {
        waker.wake();
    }
}

/// [`OutboundReceiver::recv`]. While it waits, a send from another task
/// wakes its task. The waker stays registered after it is dropped (the
/// session waits for this queue again before long): a send from another
/// task meanwhile costs one spurious wake-up, a rare thing, where
/// unregistering would cost a lock on every turn.
pub(crate) struct Recv<'a> {
    rx: &'a mut OutboundReceiver,
}

impl Future for Recv<'_> {
    type Output = Option<Outgoing>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Outgoing>> {
        let mut state = self.rx.shared.lock();
        let (item, senders) = take(&mut state);
        if item.is_none() {
            if state.closed {
                return Poll::Ready(None);
            }
            match &mut state.receiver {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        drop(state);
        wake_all(senders);
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::WsMessage;
    use futures_util::FutureExt;

    fn text(s: &'static str) -> Outgoing {
        Outgoing::Message(WsMessage::text(s))
    }

    fn unwrap_text(item: Option<Outgoing>) -> String {
        match item {
            Some(Outgoing::Message(m)) => m.as_text().unwrap_or_default().to_owned(),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn bounded_and_in_order() {
        let (tx, mut rx) = outbound(2, usize::MAX);
        tx.try_send(text("a")).unwrap();
        tx.try_send(text("b")).unwrap();
        assert!(matches!(tx.try_send(text("c")), Err(TrySendError::Full(_))));
        assert_eq!(rx.len(), 2);
        assert_eq!(unwrap_text(rx.try_recv()), "a");
        assert_eq!(unwrap_text(rx.recv().now_or_never().flatten()), "b");
        assert!(rx.is_empty());
        assert!(rx.recv().now_or_never().is_none(), "an empty queue waits");
    }

    #[test]
    fn the_byte_budget_bounds_the_queue_but_never_a_lone_message() {
        let (tx, mut rx) = outbound(64, 4);
        tx.try_send(text("ab")).unwrap();
        tx.try_send(text("cd")).unwrap();
        assert!(
            matches!(tx.try_send(text("e")), Err(TrySendError::Full(_))),
            "4 bytes held"
        );
        assert_eq!(unwrap_text(rx.try_recv()), "ab");
        tx.try_send(text("ef")).unwrap();
        while rx.try_recv().is_some() {}
        tx.try_send(text("larger than the budget")).unwrap();
        assert!(matches!(tx.try_send(text("x")), Err(TrySendError::Full(_))));
        assert_eq!(unwrap_text(rx.try_recv()), "larger than the budget");
        assert_eq!(rx.shared.lock().bytes, 0);
    }

    #[test]
    fn closing_refuses_sends_and_keeps_what_is_queued() {
        let (tx, mut rx) = outbound(4, usize::MAX);
        tx.try_send(text("kept")).unwrap();
        rx.close();
        assert!(matches!(tx.try_send(text("late")), Err(TrySendError::Closed)));
        assert_eq!(unwrap_text(rx.try_recv()), "kept");
        assert!(
            matches!(rx.recv().now_or_never(), Some(None)),
            "closed and empty: the end"
        );
    }

    #[test]
    fn an_emptied_queue_gives_back_a_burst() {
        let (tx, mut rx) = outbound(64, usize::MAX);
        for _ in 0..64 {
            tx.try_send(text("x")).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert!(rx.shared.lock().queue.capacity() <= KEEP);
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_and_a_waiting_receiver_gets_the_message() {
        let (own, mut rx) = outbound(1, usize::MAX);
        own.try_send(text("first")).unwrap();
        // A clone: the sender of another task (a client handle) wakes.
        let tx = own.clone();
        let sender = async {
            tx.send(text("second")).await.unwrap();
            tx.send(text("third")).await.unwrap();
        };
        let receiver = async {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(unwrap_text(rx.recv().await));
            }
            got
        };
        let ((), got) = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::join!(sender, receiver)
        })
        .await
        .expect("no deadlock");
        assert_eq!(got, ["first", "second", "third"]);
    }

    /// Counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn only_another_tasks_sender_wakes_the_waiting_session() {
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = TaskContext::from_waker(&waker);
        let (own, mut rx) = outbound(8, usize::MAX);
        let handle = own.clone();
        assert!(std::pin::pin!(rx.recv()).poll(&mut cx).is_pending());
        // The session's own sends happen in its turn, which looks at the
        // queue before it waits again: no wake-up.
        own.try_send(text("own")).unwrap();
        assert_eq!(count.0.load(Ordering::Relaxed), 0);
        // The registration outlives the dropped `recv`: another task's
        // send wakes the session.
        handle.try_send(text("handle")).unwrap();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert_eq!(unwrap_text(rx.try_recv()), "own");
        assert_eq!(unwrap_text(rx.try_recv()), "handle");
        // Waiting again registers again: a handle's close wakes too.
        assert!(std::pin::pin!(rx.recv()).poll(&mut cx).is_pending());
        handle
            .force_close(CloseFrame::new(crate::CloseCode::NORMAL, ""), false)
            .unwrap();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn closing_wakes_a_waiting_sender_with_an_error() {
        let (tx, mut rx) = outbound(1, usize::MAX);
        tx.try_send(text("full")).unwrap();
        let sender = tx.send(text("waits"));
        let closer = async {
            tokio::task::yield_now().await;
            rx.close();
        };
        let (sent, ()) = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::join!(sender, closer)
        })
        .await
        .expect("the sender is woken");
        assert!(sent.is_err());
    }
}
