//! The Redis layer's [`ChannelLayer`] operations.

use estuary_core::{
    ChannelLayer, ChannelLayerError, ChannelName, ChannelReceiver, GroupName, GroupSendReport, History,
    Message, Presence, ReceiverState, SendError,
};

use std::sync::Arc;

use super::fanout::Fanout;
use super::{RedisChannelLayer, unavailable};
use crate::codec::{Target, encode_member};
use crate::faults::{NotRestored, WrongType, layer_error};
use crate::local::{LocalQueue, QueueReceiver, lock};
use crate::scripts;
impl ChannelLayer for RedisChannelLayer {
    async fn new_channel(&self) -> Result<ChannelName, ChannelLayerError> {
        let inner = &self.inner;
        let name = format!("{}{}", inner.client_prefix, uuid::Uuid::new_v4().simple());
        let name = ChannelName::new(&name).map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))?;
        let queue = LocalQueue::flow_controlled(
            inner.config.layer.capacity_for(name.as_str()),
            inner.backlog.clone(),
        );
        lock(&inner.local).insert(name.clone(), Arc::new(queue));
        Ok(name)
    }

    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), SendError> {
        let inner = &self.inner;
        if let Some(Err(error)) = inner.crypto.as_ref().map(|c| c.accepts(&message)) {
            return Err(SendError::Backend {
                channel: channel.clone(),
                error: ChannelLayerError::Corrupt(Box::new(error)),
                message,
            });
        }
        let (non_local, target) = if channel.is_process_specific() {
            (channel.non_local_name(), Target::One(channel))
        } else {
            (channel.as_str(), Target::None)
        };
        let member = encode_member(&message, target, inner.crypto.as_ref());
        let now = inner.score();
        let expiry = inner.expiry_secs();
        let capacity = inner.config.layer.capacity_for(channel.as_str());
        let mut conn = inner.conn(non_local);
        let key = inner.channel_key(non_local);
        let stored: Result<i64, _> = scripts::SEND
            .key(&key)
            .arg(member)
            .arg(now.to_string())
            .arg(now.floor() as i64 - expiry as i64)
            .arg(capacity)
            .arg(expiry)
            .invoke_async(&mut conn)
            .await;
        match stored {
            Ok(1) => Ok(()),
            Ok(-1) => {
                inner.warn_poisoned(&key, 1);
                if non_local == inner.client_prefix {
                    // This process's own queue, written over: take it back
                    // now (and tell its channels) rather than at the next pop.
                    inner.reclaim_own_queue().await;
                }
                Err(SendError::Backend {
                    channel: channel.clone(),
                    error: ChannelLayerError::Corrupt(Box::new(WrongType::new(&key))),
                    message,
                })
            }
            Ok(_) => Err(SendError::Full {
                channel: channel.clone(),
                capacity,
                message,
            }),
            Err(e) => {
                let error = layer_error(e, &key);
                inner.count_failure(&error);
                Err(SendError::Backend {
                    channel: channel.clone(),
                    error,
                    message,
                })
            }
        }
    }

    async fn receive(&self, channel: &ChannelName) -> Result<Message, ChannelLayerError> {
        let inner = &self.inner;
        if inner.is_mine(channel) {
            let queue = lock(&inner.local).get(channel).cloned();
            let queue = queue.ok_or_else(|| ChannelLayerError::ChannelClosed(channel.clone()))?;
            return queue
                .pop()
                .await
                .ok_or_else(|| ChannelLayerError::ChannelClosed(channel.clone()))?
                .map_err(|count| ChannelLayerError::Lost { count });
        }
        if channel.is_process_specific() {
            return Err(ChannelLayerError::ForeignChannel(channel.clone()));
        }
        inner.receive_plain(channel).await
    }

    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        if inner.is_mine(channel) && !lock(&inner.local).contains_key(channel) {
            tracing::debug!(%group, %channel, "group_add of a closed channel; ignored");
            return Ok(());
        }
        inner
            .write_memberships(&[(group.clone(), channel.clone())])
            .await?;
        if inner.is_mine(channel) {
            lock(&inner.memberships).add(group, channel);
        }
        Ok(())
    }

    async fn group_discard(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        lock(&inner.memberships).discard(group, channel);
        let mut conn = inner.conn(group.as_str());
        let key = inner.group_key(group);
        redis::cmd("ZREM")
            .arg(&key)
            .arg(channel.as_str())
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| layer_error(e, &key))
    }

    async fn group_send(
        &self,
        group: &GroupName,
        message: Message,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        let inner = &self.inner;
        if let Some(Err(error)) = inner.crypto.as_ref().map(|c| c.accepts(&message)) {
            return Err(ChannelLayerError::Corrupt(Box::new(error)));
        }
        let history = inner.config.layer.history_for(group);
        if !inner.is_healthy() {
            // Redis is away, or back without this process's memberships
            // yet: a send now would miss this process's members without a
            // word. Refused before anything is recorded: a retry records
            // it once.
            let error = ChannelLayerError::Unavailable(Box::new(NotRestored));
            inner.count_failure(&error);
            return Err(error);
        }
        if inner.one_trip() {
            match inner.fanout(group, &message, history).await? {
                Fanout::Done(report) => return Ok(report),
                Fanout::KeyGone(position) => {
                    let mut report = inner.group_send(group, message.with_position(position)).await?;
                    report.position = Some(position);
                    return Ok(report);
                }
                Fanout::Declined => {}
            }
        }
        let Some(history) = history else {
            return inner.group_send(group, message).await;
        };
        // Recorded first: a member that sees the message finds it in the
        // history too.
        let position = inner.record(group, history, &message).await?;
        let mut report = inner.group_send(group, message.with_position(position)).await?;
        report.position = Some(position);
        Ok(report)
    }

    async fn flush(&self) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        let pattern = format!("{}*", inner.config.prefix);
        for shard in &inner.shards {
            let mut conn = shard.conn.clone();
            scripts::FLUSH
                .arg(&pattern)
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        lock(&inner.memberships).clear();
        lock(&inner.held).clear();
        inner.diffs.clear();
        for queue in lock(&inner.local).values() {
            queue.clear();
        }
        Ok(())
    }

    fn is_available(&self) -> bool {
        self.is_healthy()
    }

    async fn close_channel(&self, channel: &ChannelName) {
        let inner = &self.inner;
        lock(&inner.memberships).remove_channel(channel);
        if let Some(queue) = lock(&inner.local).remove(channel) {
            queue.close();
        }
        if let Some(rx) = lock(&inner.plain).remove(channel) {
            rx.token.cancel();
            rx.queue.close();
        }
        inner.leave_all(channel).await;
    }

    fn set_receiver(&self, channel: &ChannelName, state: ReceiverState) {
        if let Some(queue) = lock(&self.inner.local).get(channel) {
            queue.set_receiver(state);
        }
    }

    fn backlogged(&self) -> bool {
        self.inner.backlog.is_backlogged()
    }

    /// True on one Redis host at a fixed address with the one-trip send
    /// (no encryption, no per-channel capacities): `group_send` then hands
    /// its one script call to the host's multiplexed connection on its
    /// first poll (nothing before it waits), and that connection writes
    /// commands in the order handed. Through Sentinel (the primary may have
    /// to be asked first), on a ring or on the general path (two round
    /// trips per send) it is false. Two exceptions remain: while the
    /// connection is being made again after it was lost (the sends waiting
    /// for it are woken together, in no set order; they fail or succeed
    /// as Redis comes back), and a send that finds the group key gone from
    /// Redis while this process has members in it (it repairs the key and
    /// delivers through the general path, after sends started later may
    /// have run).
    fn pipelines_group_sends(&self) -> bool {
        self.inner.one_trip() && self.inner.shards.iter().all(|s| s.conn.keeps_order())
    }

    async fn relieved(&self) {
        self.inner.backlog.relieved().await;
    }

    fn receiver<'a>(&'a self, channel: &'a ChannelName) -> Box<dyn ChannelReceiver + 'a> {
        if !self.inner.is_mine(channel) {
            return Box::new(ReceiveLoop {
                layer: self,
                channel,
                pending: None,
            });
        }
        Box::new(QueueReceiver {
            queue: lock(&self.inner.local).get(channel).cloned(),
            channel,
        })
    }

    fn presence(&self) -> Option<&dyn Presence> {
        Some(self)
    }

    fn history(&self) -> Option<&dyn History> {
        Some(self)
    }
}

type ReceiveFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Message, ChannelLayerError>> + Send + 'a>>;

/// A worker (or another process's) channel's receiver: one
/// [`ChannelLayer::receive`] after another.
struct ReceiveLoop<'a> {
    layer: &'a RedisChannelLayer,
    channel: &'a ChannelName,
    pending: Option<ReceiveFuture<'a>>,
}

impl ChannelReceiver for ReceiveLoop<'_> {
    fn poll_receive(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Message, ChannelLayerError>> {
        let (layer, channel) = (self.layer, self.channel);
        let pending = self
            .pending
            .get_or_insert_with(|| Box::pin(layer.receive(channel)));
        let received = pending.as_mut().poll(cx);
        if received.is_ready() {
            self.pending = None;
        }
        received
    }
}
