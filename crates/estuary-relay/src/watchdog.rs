//! One task per relay keeps the deadlines of the events in flight.
//!
//! A connection hands it a deadline when an event goes out and it holds
//! none of that connection's already (at most one entry per connection,
//! however many events it sends). When a deadline passes, the watchdog
//! looks at the connection: an event still in flight past its deadline
//! expires (on a task of its own: the client is told, the next event
//! goes), one sent since is watched again until its own deadline. So a
//! client that sends nothing more still hears of its timeout, and the
//! session loop has no timer of its own.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Weak;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the watchdog looks at: a relayed connection.
pub(crate) trait Watched: Send + Sync {
    /// A deadline it handed over passed (`now`): expire what is overdue,
    /// hand over the next deadline.
    fn check(&self, now: Instant);
}

/// A connection to look at when `deadline` passes.
pub(crate) struct Watch {
    pub(crate) deadline: Instant,
    pub(crate) link: Weak<dyn Watched>,
}

impl PartialEq for Watch {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}

impl Eq for Watch {}

impl PartialOrd for Watch {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Watch {
    fn cmp(&self, other: &Self) -> Ordering {
        self.deadline.cmp(&other.deadline)
    }
}

/// Runs until every sender (the relay and its connections) is gone.
pub(crate) async fn run(mut queue: mpsc::UnboundedReceiver<Watch>) {
    let mut heap: BinaryHeap<Reverse<Watch>> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|Reverse(w)| w.deadline);
        tokio::select! {
            watch = queue.recv() => match watch {
                Some(watch) => heap.push(Reverse(watch)),
                None => return,
            },
            () = sleep_until(next) => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse(w)| w.deadline <= now) {
                    let Some(Reverse(watch)) = heap.pop() else { break };
                    if let Some(link) = watch.link.upgrade() {
                        link.check(now);
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
