//! Background workers on named channels: Channels' `ChannelNameRouter` and
//! `runworker`.
//!
//! A [`Worker`] consumes one named channel (`"thumbnails"`): whatever anyone
//! [`send`](crate::ChannelLayer::send)s to that channel (a Django view, an
//! HTTP handler, a consumer) reaches it, one message at a time. A
//! [`ChannelNameRouter`] maps channel names to workers, and
//! [`run_workers`] runs them until a shutdown signal.

mod router;
mod run;

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::layer::{
    BoxError, ChannelLayer, ChannelLayerError, ChannelLayerHandle, GroupSendReport, SendError,
};
use crate::message::{Message, MessageError};
use crate::names::{ChannelName, GroupName, NameError};

pub use router::{ChannelNameRouter, WorkerRouteError};
pub use run::{WorkerStats, run_workers};

/// The code that consumes one named channel: Channels' worker consumer
/// (what `manage.py runworker thumbnails-generate` runs).
///
/// Messages on the channel are decoded into [`Worker::Event`], usually an
/// enum tagged by the message's `type`, as for a
/// [`Consumer`](crate::Consumer): `{"type": "generate", "id": 123}` reaches
/// the variant renamed `generate` (where Channels calls the method
/// `generate`). A message that matches no variant goes to
/// [`undecodable_event`](Worker::undecodable_event), which logs it; the
/// runner counts it in [`WorkerStats::undecodable`].
///
/// # The worker contract
///
/// * **One at a time, in order.** A channel has one worker, and its
///   [`handle`](Worker::handle) runs to completion before the next message
///   is taken from the layer: a worker needs no locks for its own state, and
///   handles a channel's messages in the order the layer delivers them
///   (per sender, the order they were sent). Different channels run
///   concurrently with each other.
/// * **Errors and panics stay local.** A handler that returns an error or
///   panics is logged (throttled, with the channel and the message type) and
///   counted ([`WorkerStats::failed`], [`WorkerStats::panicked`]); the worker
///   then takes the next message. The message is not retried (delivery is at
///   most once, as the layer's). After a panic the worker keeps the state
///   the panic left it in.
/// * **Never a silent drop.** An undecodable message is logged (throttled)
///   and counted.
/// * **Shutdown drains.** When the runner's shutdown signal comes, a worker
///   finishes the message it is handling and takes no other.
///
/// ```
/// use estuary_core::{ChannelName, Worker, WorkerContext, WorkerError};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// #[serde(tag = "type")]
/// enum Job {
///     #[serde(rename = "generate")]
///     Generate { id: u64 },
/// }
///
/// struct Thumbnails {
///     made: u64,
/// }
///
/// impl Worker for Thumbnails {
///     type Event = Job;
///
///     async fn handle(&mut self, ctx: &mut WorkerContext, job: Job) -> Result<(), WorkerError> {
///         let Job::Generate { id } = job;
///         self.made += 1;
///         // Tell whoever waits for it, as a consumer would.
///         let done = ChannelName::new("thumbnails-done")?;
///         ctx.send(&done, &serde_json::json!({"type": "thumbnail.done", "id": id})).await
///     }
/// }
/// ```
pub trait Worker: Send + 'static {
    /// The messages this worker handles.
    type Event: DeserializeOwned + Send;

    /// Handles one message from the channel. Returning an error logs and
    /// counts it; the worker goes on with the next message.
    fn handle(
        &mut self,
        ctx: &mut WorkerContext,
        event: Self::Event,
    ) -> impl Future<Output = Result<(), WorkerError>> + Send;

    /// A message did not decode into [`Worker::Event`]. The default logs a
    /// warning (throttled process-wide to one a second, with the count of
    /// those held back). The runner has counted it in
    /// [`WorkerStats::undecodable`] already; an error returned here is
    /// logged and counted as a failure.
    fn undecodable_event(
        &mut self,
        ctx: &mut WorkerContext,
        message: Message,
        error: MessageError,
    ) -> impl Future<Output = Result<(), WorkerError>> + Send {
        crate::throttled!(
            warn,
            channel = %ctx.channel_name(),
            r#type = message.message_type(),
            %error,
            "no handler for a worker channel's message; dropped: add its type to the worker's Event enum, or stop sending it to this channel (held_back: how many more were not logged since the last warning)"
        );
        async { Ok(()) }
    }
}

/// What a [`Worker`]'s handlers work with: the channel it consumes and the
/// channel layer, to pass results on with [`send`](Self::send) and
/// [`group_send`](Self::group_send).
///
/// The runner makes one per channel and lends it to each handler call.
///
/// ```
/// use estuary_core::{GroupName, Worker, WorkerContext, WorkerError};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// #[serde(tag = "type", rename = "announce")]
/// struct Announce { text: String }
///
/// struct Announcer;
///
/// impl Worker for Announcer {
///     type Event = Announce;
///
///     async fn handle(&mut self, ctx: &mut WorkerContext, event: Announce) -> Result<(), WorkerError> {
///         // Every member of the group gets it, as from a consumer's group_send.
///         let lobby = GroupName::new("lobby")?;
///         let message = serde_json::json!({"type": "chat.message", "message": event.text});
///         let report = ctx.group_send(&lobby, &message).await?;
///         tracing::debug!(channel = %ctx.channel_name(), delivered = report.delivered, "announced");
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct WorkerContext {
    channel: ChannelName,
    layer: ChannelLayerHandle,
}

impl WorkerContext {
    pub(crate) fn new(channel: ChannelName, layer: ChannelLayerHandle) -> Self {
        Self { channel, layer }
    }

    /// The channel this worker consumes.
    pub fn channel_name(&self) -> &ChannelName {
        &self.channel
    }

    /// The channel layer the worker receives from.
    pub fn channel_layer(&self) -> &ChannelLayerHandle {
        &self.layer
    }

    /// Encodes `event` and sends it to `channel` (Channels'
    /// `channel_layer.send`). A full channel fails with
    /// [`SendError::Full`], which hands the message back.
    pub async fn send<T: Serialize + ?Sized>(
        &self,
        channel: &ChannelName,
        event: &T,
    ) -> Result<(), WorkerError> {
        let message = Message::encode(event)?;
        Ok(self.layer.send(channel, message).await?)
    }

    /// Encodes `event` once and sends it to every member of `group`.
    pub async fn group_send<T: Serialize + ?Sized>(
        &self,
        group: &GroupName,
        event: &T,
    ) -> Result<GroupSendReport, WorkerError> {
        let message = Message::encode(event)?;
        Ok(self.layer.group_send(group, message).await?)
    }
}

/// An error returned by a [`Worker`] handler: logged with the channel and
/// the message type, and counted in [`WorkerStats::failed`]; the worker goes
/// on with the next message. `?` converts the errors of Estuary's own
/// operations; wrap your own with [`WorkerError::other`].
///
/// ```
/// use estuary_core::WorkerError;
///
/// let e = WorkerError::other(std::io::Error::other("image store down"));
/// assert_eq!(e.to_string(), "image store down");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A channel-layer operation failed.
    #[error(transparent)]
    ChannelLayer(#[from] ChannelLayerError),
    /// A channel-layer send failed (the error holds the message).
    #[error(transparent)]
    Send(#[from] SendError),
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A channel or group name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// JSON could not be encoded or decoded.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Any other failure.
    #[error(transparent)]
    Other(BoxError),
}

impl WorkerError {
    /// Wraps any error.
    pub fn other(error: impl Into<BoxError>) -> Self {
        WorkerError::Other(error.into())
    }
}

#[cfg(test)]
mod tests;
