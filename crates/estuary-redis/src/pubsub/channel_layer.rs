//! The pub/sub layer's [`ChannelLayer`] operations.

use std::sync::Arc;

use estuary_core::{
    ChannelLayer, ChannelLayerError, ChannelName, GroupName, GroupSendReport, Message, ReceiverState,
    SendError,
};

use super::{NotConnected, RedisPubSubChannelLayer, unavailable};
use crate::local::{LocalQueue, lock};

impl ChannelLayer for RedisPubSubChannelLayer {
    async fn new_channel(&self) -> Result<ChannelName, ChannelLayerError> {
        let inner = &self.inner;
        let name = format!(
            "{}specific.{}",
            inner.config.prefix,
            uuid::Uuid::new_v4().simple()
        );
        let name = ChannelName::new(&name).map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))?;
        inner.connected(name.as_str()).await?;
        let _guard = inner.subscriptions.lock().await;
        let queue = Arc::new(LocalQueue::flow_controlled(
            inner.config.layer.capacity_for(name.as_str()),
            inner.backlog.clone(),
        ));
        lock(&inner.local).insert(name.clone(), queue);
        if let Err(error) = inner.subscribe(name.as_str()).await {
            lock(&inner.local).remove(&name);
            return Err(error);
        }
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
        let payload = inner.encode(&message);
        let mut conn = inner.shards[inner.shard(channel.as_str())].publish.clone();
        match redis::cmd("PUBLISH")
            .arg(channel.as_str())
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(SendError::Backend {
                channel: channel.clone(),
                error: unavailable(e),
                message,
            }),
        }
    }

    async fn receive(&self, channel: &ChannelName) -> Result<Message, ChannelLayerError> {
        let inner = &self.inner;
        let (queue, created) = {
            let mut local = lock(&inner.local);
            match local.get(channel) {
                Some(q) => (q.clone(), false),
                // A connection's channel that was closed (or never made here).
                None if channel
                    .as_str()
                    .starts_with(&format!("{}specific.", inner.config.prefix)) =>
                {
                    return Err(ChannelLayerError::ChannelClosed(channel.clone()));
                }
                None => {
                    // A worker channel: subscribe on first receive, as Python does.
                    let q = Arc::new(LocalQueue::new(inner.config.layer.capacity_for(channel.as_str())));
                    local.insert(channel.clone(), q.clone());
                    (q, true)
                }
            }
        };
        if created {
            let subscribed = match inner.connected(channel.as_str()).await {
                Ok(()) => {
                    let _guard = inner.subscriptions.lock().await;
                    inner.subscribe(channel.as_str()).await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = subscribed {
                lock(&inner.local).remove(channel);
                return Err(error);
            }
        }
        queue
            .pop()
            .await
            .ok_or_else(|| ChannelLayerError::ChannelClosed(channel.clone()))?
            .map_err(|count| ChannelLayerError::Lost { count })
    }

    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        let name = inner.group_channel(group);
        inner.connected(&name).await?;
        let _guard = inner.subscriptions.lock().await;
        let first = {
            let mut groups = lock(&inner.groups);
            let members = groups.entry(group.clone()).or_default();
            let first = members.is_empty();
            members.insert(channel.clone());
            first
        };
        // The group's first member here subscribes to it; a later one only
        // checks that the subscription is still up (a member added while it
        // is down would miss messages without being told; one added before
        // it is found down is told).
        let subscribed = if first {
            inner.subscribe(&name).await
        } else if inner.sink(&name).is_some() {
            Ok(())
        } else {
            Err(unavailable(NotConnected))
        };
        if let Err(error) = subscribed {
            let mut groups = lock(&inner.groups);
            if let Some(members) = groups.get_mut(group) {
                members.remove(channel);
                if members.is_empty() {
                    groups.remove(group);
                }
            }
            return Err(error);
        }
        Ok(())
    }

    async fn group_discard(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        let _guard = inner.subscriptions.lock().await;
        let last = {
            let mut groups = lock(&inner.groups);
            match groups.get_mut(group) {
                Some(members) => {
                    members.remove(channel);
                    let empty = members.is_empty();
                    if empty {
                        groups.remove(group);
                    }
                    empty
                }
                None => false,
            }
        };
        if last {
            inner.unsubscribe(&inner.group_channel(group)).await;
        }
        Ok(())
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
        let name = inner.group_channel(group);
        let payload = inner.encode(&message);
        let mut conn = inner.shards[inner.shard(&name)].publish.clone();
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&name)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(GroupSendReport {
            delivered: receivers.max(0) as usize,
            dropped: 0,
            position: None,
        })
    }

    async fn flush(&self) -> Result<(), ChannelLayerError> {
        let inner = &self.inner;
        let _guard = inner.subscriptions.lock().await;
        let groups: Vec<GroupName> = lock(&inner.groups).drain().map(|(g, _)| g).collect();
        for group in groups {
            inner.unsubscribe(&inner.group_channel(&group)).await;
        }
        for queue in lock(&inner.local).values() {
            queue.clear();
        }
        Ok(())
    }

    fn is_available(&self) -> bool {
        self.is_healthy()
    }

    /// True on one Redis host at a fixed address: `group_send` is one
    /// `PUBLISH` handed to the host's multiplexed connection on its first
    /// poll, and that connection writes commands in the order handed.
    fn pipelines_group_sends(&self) -> bool {
        self.inner.shards.len() == 1 && self.inner.shards.iter().all(|s| s.publish.keeps_order())
    }

    fn set_receiver(&self, channel: &ChannelName, state: ReceiverState) {
        if let Some(queue) = lock(&self.inner.local).get(channel) {
            queue.set_receiver(state);
        }
    }

    fn backlogged(&self) -> bool {
        self.inner.backlog.is_backlogged()
    }

    async fn relieved(&self) {
        self.inner.backlog.relieved().await;
    }

    async fn close_channel(&self, channel: &ChannelName) {
        let inner = &self.inner;
        let _guard = inner.subscriptions.lock().await;
        let removed = lock(&inner.local).remove(channel);
        if let Some(queue) = removed {
            queue.close();
            inner.unsubscribe(channel.as_str()).await;
        }
        let emptied: Vec<GroupName> = {
            let mut groups = lock(&inner.groups);
            let mut emptied = Vec::new();
            groups.retain(|group, members| {
                members.remove(channel);
                if members.is_empty() {
                    emptied.push(group.clone());
                }
                !members.is_empty()
            });
            emptied
        };
        for group in emptied {
            inner.unsubscribe(&inner.group_channel(&group)).await;
        }
    }
}
