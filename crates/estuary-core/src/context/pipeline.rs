//! The window of a connection's pipelined group sends
//! ([`Context::group_send_pipelined`](crate::Context::group_send_pipelined)):
//! the sends in flight, in the order the consumer issued them, and the
//! failures not yet reported to it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures_util::stream::{FuturesOrdered, StreamExt};

use crate::error::ConsumerError;
use crate::layer::{ChannelLayer, ChannelLayerHandle};
use crate::message::Message;
use crate::names::GroupName;

type Sending = Pin<Box<dyn Future<Output = Option<(GroupName, ConsumerError)>> + Send>>;

/// A group send that failed, for
/// [`Consumer::group_send_failed`](crate::Consumer::group_send_failed).
pub(crate) type Failure = (GroupName, ConsumerError);

/// Up to `limit` group sends in flight, started in the order issued.
///
/// When the layer keeps the order of sends started one after the other
/// ([`ChannelLayer::pipelines_group_sends`]), every send starts (is polled
/// once, which hands its command to the layer) as soon as it is issued;
/// otherwise one runs at a time and the next starts when it completes.
pub(crate) struct Pipeline {
    layer: ChannelLayerHandle,
    /// Started, in the order issued.
    running: FuturesOrdered<Sending>,
    /// Issued, not started (a layer that does not pipeline).
    waiting: VecDeque<(GroupName, Message)>,
    /// Completed with an error, not yet reported to the consumer.
    failed: VecDeque<Failure>,
    limit: usize,
    concurrent: usize,
}

impl Pipeline {
    pub(crate) fn new(layer: ChannelLayerHandle, limit: usize) -> Self {
        let concurrent = if layer.pipelines_group_sends() { limit } else { 1 };
        Self {
            layer,
            running: FuturesOrdered::new(),
            waiting: VecDeque::new(),
            failed: VecDeque::new(),
            limit: limit.max(1),
            concurrent: concurrent.max(1),
        }
    }

    /// Sends issued and not completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.running.len() + self.waiting.len()
    }

    /// No room for another send.
    pub(crate) fn is_full(&self) -> bool {
        self.in_flight() >= self.limit
    }

    /// Nothing in flight and nothing to report.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight() == 0 && self.failed.is_empty()
    }

    /// Queues a send (the caller made room first); it starts at the next
    /// [`progress`](Self::progress).
    pub(crate) fn push(&mut self, group: GroupName, message: Message) {
        self.waiting.push_back((group, message));
    }

    /// Starts what may start, in order, and takes what completed: failures
    /// are kept for the consumer. Returns how many completed.
    pub(crate) fn progress(&mut self, cx: &mut TaskContext<'_>) -> usize {
        let mut completed = 0;
        loop {
            while self.running.len() < self.concurrent {
                let Some((group, message)) = self.waiting.pop_front() else {
                    break;
                };
                let layer = self.layer.clone();
                self.running.push_back(Box::pin(async move {
                    match layer.group_send(&group, message).await {
                        Ok(_) => None,
                        Err(error) => Some((group, ConsumerError::from(error))),
                    }
                }));
            }
            // Polls the newly started sends in the order pushed: each hands
            // its command to the layer before the next is polled.
            match self.running.poll_next_unpin(cx) {
                Poll::Ready(Some(outcome)) => {
                    completed += 1;
                    if let Some(failure) = outcome {
                        self.failed.push_back(failure);
                    }
                }
                Poll::Ready(None) | Poll::Pending => {
                    if self.waiting.is_empty() || self.running.len() >= self.concurrent {
                        return completed;
                    }
                }
            }
        }
    }

    /// The oldest failure not yet reported.
    pub(crate) fn take_failure(&mut self) -> Option<Failure> {
        self.failed.pop_front()
    }

    /// For the session's select: a failure to report, `Ready(None)` when
    /// the window had been full and now has room (the client may be read
    /// again), else pending until a send completes.
    pub(crate) fn poll_turn(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Failure>> {
        let was_full = self.is_full();
        let completed = self.progress(cx);
        if let Some(failure) = self.failed.pop_front() {
            return Poll::Ready(Some(failure));
        }
        if was_full && completed > 0 {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// Completes every send in flight; their failures are kept.
    pub(crate) async fn settle(&mut self) {
        std::future::poll_fn(|cx| {
            self.progress(cx);
            if self.in_flight() == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Completes what is in flight on a task of its own, logging failures:
    /// for a context dropped before its session finished.
    pub(crate) fn finish_detached(mut self, runtime: &tokio::runtime::Handle) {
        if self.is_idle() {
            return;
        }
        runtime.spawn(async move {
            self.settle().await;
            while let Some((group, error)) = self.take_failure() {
                crate::throttled!(warn, %group, %error, "pipelined group send failed after its connection ended");
            }
        });
    }
}
