//! A cloneable, type-erased handle to any channel layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{
    ChannelLayer, ChannelLayerError, ChannelReceiver, GroupSendReport, History, Presence, ReceiverState,
    SendError,
};
use crate::message::Message;
use crate::names::{ChannelName, GroupName};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe twin of [`ChannelLayer`], implemented for every layer.
trait DynChannelLayer: Send + Sync {
    fn new_channel(&self) -> BoxFuture<'_, Result<ChannelName, ChannelLayerError>>;
    fn send<'a>(&'a self, channel: &'a ChannelName, message: Message)
    -> BoxFuture<'a, Result<(), SendError>>;
    fn receive<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, Result<Message, ChannelLayerError>>;
    fn group_add<'a>(
        &'a self,
        group: &'a GroupName,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, Result<(), ChannelLayerError>>;
    fn group_discard<'a>(
        &'a self,
        group: &'a GroupName,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, Result<(), ChannelLayerError>>;
    fn group_send<'a>(
        &'a self,
        group: &'a GroupName,
        message: Message,
    ) -> BoxFuture<'a, Result<GroupSendReport, ChannelLayerError>>;
    fn flush(&self) -> BoxFuture<'_, Result<(), ChannelLayerError>>;
    fn close_channel<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, ()>;
    fn is_available(&self) -> bool;
    fn set_receiver(&self, channel: &ChannelName, state: ReceiverState);
    fn backlogged(&self) -> bool;
    fn pipelines_group_sends(&self) -> bool;
    fn relieved(&self) -> BoxFuture<'_, ()>;
    fn receiver<'a>(&'a self, channel: &'a ChannelName) -> Box<dyn ChannelReceiver + 'a>;
    fn presence(&self) -> Option<&dyn Presence>;
    fn history(&self) -> Option<&dyn History>;
    fn type_name(&self) -> &'static str;
}

impl<L: ChannelLayer> DynChannelLayer for L {
    fn new_channel(&self) -> BoxFuture<'_, Result<ChannelName, ChannelLayerError>> {
        Box::pin(ChannelLayer::new_channel(self))
    }
    fn send<'a>(
        &'a self,
        channel: &'a ChannelName,
        message: Message,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(ChannelLayer::send(self, channel, message))
    }
    fn receive<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, Result<Message, ChannelLayerError>> {
        Box::pin(ChannelLayer::receive(self, channel))
    }
    fn group_add<'a>(
        &'a self,
        group: &'a GroupName,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, Result<(), ChannelLayerError>> {
        Box::pin(ChannelLayer::group_add(self, group, channel))
    }
    fn group_discard<'a>(
        &'a self,
        group: &'a GroupName,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, Result<(), ChannelLayerError>> {
        Box::pin(ChannelLayer::group_discard(self, group, channel))
    }
    fn group_send<'a>(
        &'a self,
        group: &'a GroupName,
        message: Message,
    ) -> BoxFuture<'a, Result<GroupSendReport, ChannelLayerError>> {
        Box::pin(ChannelLayer::group_send(self, group, message))
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), ChannelLayerError>> {
        Box::pin(ChannelLayer::flush(self))
    }
    fn close_channel<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, ()> {
        Box::pin(ChannelLayer::close_channel(self, channel))
    }
    fn is_available(&self) -> bool {
        ChannelLayer::is_available(self)
    }
    fn set_receiver(&self, channel: &ChannelName, state: ReceiverState) {
        ChannelLayer::set_receiver(self, channel, state)
    }
    fn backlogged(&self) -> bool {
        ChannelLayer::backlogged(self)
    }
    fn pipelines_group_sends(&self) -> bool {
        ChannelLayer::pipelines_group_sends(self)
    }
    fn relieved(&self) -> BoxFuture<'_, ()> {
        Box::pin(ChannelLayer::relieved(self))
    }
    fn receiver<'a>(&'a self, channel: &'a ChannelName) -> Box<dyn ChannelReceiver + 'a> {
        ChannelLayer::receiver(self, channel)
    }
    fn presence(&self) -> Option<&dyn Presence> {
        ChannelLayer::presence(self)
    }
    fn history(&self) -> Option<&dyn History> {
        ChannelLayer::history(self)
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<L>()
    }
}

/// A cloneable handle to a channel layer of any type: what the server, the
/// consumers and your HTTP handlers hold (Channels' `get_channel_layer()`).
///
/// It implements [`ChannelLayer`] itself, so everything that takes a layer
/// takes a handle.
///
/// ```
/// use estuary_core::{ChannelLayer, ChannelLayerHandle, GroupName, InMemoryChannelLayer, Message};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let layer = ChannelLayerHandle::new(InMemoryChannelLayer::default());
/// let for_a_view = layer.clone();
/// let group = GroupName::new("dashboard").unwrap();
/// let msg = Message::from_json(&serde_json::json!({"type": "refresh"})).unwrap();
/// let report = for_a_view.group_send(&group, msg).await.unwrap();
/// assert_eq!(report.delivered, 0); // nobody is listening yet
/// # });
/// ```
#[derive(Clone)]
pub struct ChannelLayerHandle {
    inner: Arc<dyn DynChannelLayer>,
}

impl ChannelLayerHandle {
    /// Wraps a layer.
    pub fn new<L: ChannelLayer>(layer: L) -> Self {
        Self {
            inner: Arc::new(layer),
        }
    }
}

impl Default for ChannelLayerHandle {
    /// A handle to a fresh [`InMemoryChannelLayer`](super::InMemoryChannelLayer) with default settings.
    fn default() -> Self {
        Self::new(super::InMemoryChannelLayer::default())
    }
}

impl fmt::Debug for ChannelLayerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ChannelLayerHandle")
            .field(&self.inner.type_name())
            .finish()
    }
}

impl ChannelLayer for ChannelLayerHandle {
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
        self.inner.group_add(group, channel).await
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
    async fn close_channel(&self, channel: &ChannelName) {
        self.inner.close_channel(channel).await
    }
    fn is_available(&self) -> bool {
        self.inner.is_available()
    }
    fn set_receiver(&self, channel: &ChannelName, state: ReceiverState) {
        self.inner.set_receiver(channel, state)
    }
    fn backlogged(&self) -> bool {
        self.inner.backlogged()
    }
    fn pipelines_group_sends(&self) -> bool {
        self.inner.pipelines_group_sends()
    }
    async fn relieved(&self) {
        self.inner.relieved().await
    }
    fn receiver<'a>(&'a self, channel: &'a ChannelName) -> Box<dyn ChannelReceiver + 'a> {
        self.inner.receiver(channel)
    }
    fn presence(&self) -> Option<&dyn Presence> {
        self.inner.presence()
    }
    fn history(&self) -> Option<&dyn History> {
        self.inner.history()
    }
}
