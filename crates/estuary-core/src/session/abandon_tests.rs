//! A handshake abandoned mid-`connect` (the server's `handshake_timeout`,
//! a client gone): the `Session::open` future is dropped, and the
//! connection's groups and channel are released all the same.

use std::time::Duration;

use super::*;
use crate::layer::{ChannelLayerError, GroupSendReport, SendError};
use crate::names::{ChannelName, GroupName};
use crate::{ConsumerError, InMemoryChannelLayer, Message, NoEvent};

/// Joins `lobby` (declared), tells its channel's name, and never decides.
struct Undecided {
    channel: Option<tokio::sync::oneshot::Sender<ChannelName>>,
}

impl Consumer for Undecided {
    type Event = NoEvent;

    fn groups(&self, _scope: &Scope) -> Result<Vec<GroupName>, ConsumerError> {
        Ok(vec![lobby()])
    }

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        if let Some(tell) = self.channel.take() {
            let _ = tell.send(ctx.channel_name().clone());
        }
        std::future::pending().await
    }
}

fn lobby() -> GroupName {
    GroupName::new("lobby").unwrap()
}

/// The in-memory layer, except that `group_add` never returns once it has
/// added the channel (a backend whose answer is lost after the write went
/// out), and that closing a channel leaves its memberships (as Redis keeps
/// them until `group_expiry`): only `group_discard` removes one.
#[derive(Clone, Default)]
struct AnswerLost {
    inner: InMemoryChannelLayer,
}

impl ChannelLayer for AnswerLost {
    async fn new_channel(&self) -> Result<ChannelName, ChannelLayerError> {
        self.inner.new_channel().await
    }
    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), SendError> {
        self.inner.send(channel, message).await
    }
    async fn receive(&self, channel: &ChannelName) -> Result<Message, ChannelLayerError> {
        self.inner.receive(channel).await
    }
    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        self.inner.group_add(group, channel).await?;
        std::future::pending().await
    }
    async fn group_discard(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        self.inner.group_discard(group, channel).await
    }
    async fn group_send(
        &self,
        group: &GroupName,
        message: Message,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        self.inner.group_send(group, message).await
    }
    async fn flush(&self) -> Result<(), ChannelLayerError> {
        self.inner.flush().await
    }
}

/// Opens `Undecided` on `layer`, abandons it after a second, and waits
/// (bounded) until `memory` has nobody in `lobby`; the channel's name when
/// `connect` was reached.
async fn abandon_and_wait_for_release(
    layer: ChannelLayerHandle,
    memory: &InMemoryChannelLayer,
) -> Option<ChannelName> {
    let (tell, told) = tokio::sync::oneshot::channel();
    let opening = Session::open(
        Undecided { channel: Some(tell) },
        Scope::builder("/ws/t").build(),
        layer,
        SessionConfig::default(),
    );
    let abandoned = tokio::time::timeout(Duration::from_secs(1), opening).await;
    assert!(abandoned.is_err(), "connect never decides");
    tokio::time::timeout(Duration::from_secs(30), async {
        // Paused time: the sleep lets the clock run to the timeout when
        // the group is never left.
        while memory.group_size(&lobby()) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the abandoned handshake's group is left");
    told.await.ok()
}

#[tokio::test(start_paused = true)]
async fn a_handshake_dropped_in_connect_leaves_its_groups_and_closes_its_channel() {
    let memory = InMemoryChannelLayer::default();
    let channel = abandon_and_wait_for_release(ChannelLayerHandle::new(memory.clone()), &memory)
        .await
        .expect("connect was reached");
    let read = tokio::time::timeout(Duration::from_secs(30), memory.receive(&channel)).await;
    assert!(
        matches!(read, Ok(Err(ChannelLayerError::ChannelClosed(_)))),
        "the channel is closed: {read:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_handshake_dropped_while_joining_a_group_leaves_it_all_the_same() {
    let layer = AnswerLost::default();
    let memory = layer.inner.clone();
    abandon_and_wait_for_release(ChannelLayerHandle::new(layer), &memory).await;
}
