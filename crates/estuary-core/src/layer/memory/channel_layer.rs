//! The in-memory layer's [`ChannelLayer`] operations.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::queue::QueueReceiver;
use super::{InMemoryChannelLayer, Inner, Member, Missing};
use crate::layer::{
    ChannelLayer, ChannelLayerError, ChannelReceiver, GroupSendReport, History, OVERFLOW_FACTOR, Presence,
    ReceiveLoop, ReceiverState, SendError,
};
use crate::message::Message;
use crate::names::{ChannelName, GroupName};
use crate::sync::{lock, write};

impl ChannelLayer for InMemoryChannelLayer {
    async fn new_channel(&self) -> Result<ChannelName, ChannelLayerError> {
        let name = format!("{}{}", self.inner.client_prefix, uuid::Uuid::new_v4().simple());
        let name = ChannelName::new(&name).map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))?;
        // Own channels are never refused (the connection limit bounds them).
        let _ = self.inner.queue(&name, true);
        Ok(name)
    }

    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), SendError> {
        let queue = match self.inner.queue(channel, false) {
            Ok(queue) => queue,
            Err(Missing::Closed) => {
                tracing::debug!(%channel, "send to a closed channel; dropped");
                return Ok(());
            }
            Err(Missing::TooMany(limit)) => {
                return Err(SendError::Backend {
                    channel: channel.clone(),
                    error: ChannelLayerError::TooManyChannels { limit },
                    message,
                });
            }
        };
        if let Err(error) = self.inner.budget.charge(&message) {
            return Err(SendError::Backend {
                channel: channel.clone(),
                error,
                message,
            });
        }
        let now = Instant::now();
        queue
            .push(message, now + self.inner.config.expiry(), now, false)
            .map_err(|rejected| SendError::Full {
                channel: channel.clone(),
                capacity: queue.capacity(),
                message: rejected.message,
            })
    }

    async fn receive(&self, channel: &ChannelName) -> Result<Message, ChannelLayerError> {
        let queue = self
            .inner
            .queue(channel, false)
            .map_err(|missing| match missing {
                Missing::Closed => ChannelLayerError::ChannelClosed(channel.clone()),
                Missing::TooMany(limit) => ChannelLayerError::TooManyChannels { limit },
            })?;
        loop {
            let ready = queue.ready().notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut state = queue.state();
                if state.lost > 0 {
                    let count = std::mem::take(&mut state.lost);
                    return Err(ChannelLayerError::Lost { count });
                }
                if let Some(message) = queue.pop_locked(&mut state, Instant::now()) {
                    return Ok(message);
                }
            }
            if queue.closed.load(Ordering::Acquire) {
                return Err(ChannelLayerError::ChannelClosed(channel.clone()));
            }
            ready.await;
        }
    }

    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let queue = match self.inner.queue(channel, false) {
            Ok(queue) => queue,
            Err(Missing::Closed) => {
                tracing::debug!(%group, %channel, "group_add of a closed channel; ignored");
                return Ok(());
            }
            Err(Missing::TooMany(limit)) => return Err(ChannelLayerError::TooManyChannels { limit }),
        };
        let members = self.inner.group_or_insert(group);
        lock(&members).insert(
            channel.clone(),
            Member {
                added: Instant::now(),
                queue,
            },
        );
        Ok(())
    }

    async fn group_discard(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        if let Some(members) = self.inner.group(group) {
            lock(&members).remove(channel);
            self.inner.remove_if_empty(group);
        }
        Ok(())
    }

    async fn group_send(
        &self,
        group: &GroupName,
        message: Message,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        self.inner.deliver(group, message, true)
    }

    async fn flush(&self) -> Result<(), ChannelLayerError> {
        write(&self.inner.groups).clear();
        lock(&self.inner.presence).clear();
        self.inner.diffs.clear();
        lock(&self.inner.histories).clear();
        // Open channels stay open (their receivers keep waiting); only
        // messages go, and worker queues are forgotten.
        let own = self.inner.client_prefix.clone();
        self.inner.channels().retain(|name, queue| {
            queue.clear();
            name.as_str().starts_with(&own)
        });
        Ok(())
    }

    async fn close_channel(&self, channel: &ChannelName) {
        let removed = self.inner.channels().remove(channel);
        if let Some(queue) = removed {
            queue.closed.store(true, Ordering::Release);
            queue.set_receiver(ReceiverState::Detached);
            queue.clear();
            queue.notify_closed();
            let waiting = queue.state().waiting.take();
            if let Some(receiver) = waiting {
                receiver.wake();
            }
        }
        // After the channel left the map: a presence join racing this
        // finds it closed, or is cleared here.
        let left = lock(&self.inner.presence).leave_all(channel);
        self.inner.announce(left);
    }

    fn set_receiver(&self, channel: &ChannelName, state: ReceiverState) {
        if let Some(queue) = self.inner.channels().get(channel) {
            queue.set_receiver(state);
        }
    }

    fn backlogged(&self) -> bool {
        self.inner.backlog.over.load(Ordering::Acquire) > 0
    }

    /// A group send completes on its first poll.
    fn pipelines_group_sends(&self) -> bool {
        true
    }

    /// A process-specific channel has one receiver (its connection) and one
    /// queue for its life: the receiver holds that queue. A plain (worker)
    /// channel may have several receivers and its queue may be replaced
    /// (after `flush`), so it is received through `receive`.
    fn receiver<'a>(&'a self, channel: &'a ChannelName) -> Box<dyn ChannelReceiver + 'a> {
        if !channel.is_process_specific() {
            return Box::new(ReceiveLoop {
                layer: self,
                channel,
                pending: None,
            });
        }
        Box::new(QueueReceiver {
            queue: self.inner.queue(channel, false).ok(),
            channel,
        })
    }

    fn presence(&self) -> Option<&dyn Presence> {
        Some(self)
    }

    fn history(&self) -> Option<&dyn History> {
        Some(self)
    }

    async fn relieved(&self) {
        let backlog = &self.inner.backlog;
        loop {
            let relief = backlog.relief.notified();
            tokio::pin!(relief);
            relief.as_mut().enable();
            if backlog.over.load(Ordering::Acquire) == 0 {
                return;
            }
            relief.await;
        }
    }
}

impl Inner {
    /// A group send; `record` false for the layer's own events (presence
    /// diffs), which are never recorded. A recorded group's message is
    /// numbered and kept under the group's lock, so that members receive
    /// the group's messages in offset order.
    pub(super) fn deliver(
        &self,
        group: &GroupName,
        message: Message,
        record: bool,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        let now = Instant::now();
        let recorded = if record {
            self.config.history_for(group)
        } else {
            None
        };
        let mut report = GroupSendReport::default();
        let Some(members) = self.group(group) else {
            if let Some(history) = recorded {
                report.position = Some(self.record(group, history, &message, now)?.1);
            }
            return Ok(report);
        };
        let expires = now + self.config.expiry();
        let ttl = self.config.group_expiry();
        let mut live_dropped = 0;
        let empty = {
            let mut members = lock(&members);
            let message = match recorded {
                Some(history) => {
                    let (message, position) = self.record(group, history, &message, now)?;
                    report.position = Some(position);
                    message
                }
                None => message,
            };
            members.retain(|name, m| !m.is_stale(name, now, ttl));
            if !members.is_empty() {
                // Charged once for every member: they share the message.
                self.budget.charge(&message)?;
                for member in members.values() {
                    // Cloning a Message clones a refcounted Bytes: one encoding for all.
                    match member.queue.push(message.clone(), expires, now, true) {
                        Ok(()) => report.delivered += 1,
                        Err(rejected) => {
                            report.dropped += 1;
                            live_dropped += usize::from(rejected.live);
                        }
                    }
                }
            }
            members.is_empty()
        };
        if empty {
            self.remove_if_empty(group);
        }
        if report.dropped > 0 {
            self.dropped.fetch_add(report.dropped as u64, Ordering::Relaxed);
            tracing::debug!(%group, dropped = report.dropped, "group_send skipped full channels");
        }
        if live_dropped > 0 {
            crate::throttled!(
                warn,
                %group,
                members = live_dropped,
                "group_send dropped messages for members {OVERFLOW_FACTOR} times their capacity behind: the server is overloaded (give it more CPU, or fewer connections per process)"
            );
        }
        Ok(report)
    }
}
