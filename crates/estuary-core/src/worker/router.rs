//! `ChannelNameRouter`: which worker consumes which named channel.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use super::WorkerStats;
use super::{Worker, WorkerContext, WorkerError};
use crate::message::Message;
use crate::names::{ChannelName, NameError};

pub(super) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one message did to a worker.
pub(super) enum Handled {
    /// The handler ran (and returned this).
    Event(Result<(), WorkerError>),
    /// It did not decode; `undecodable_event` ran (and returned this).
    Undecodable(Result<(), WorkerError>),
}

/// The object-safe twin of [`Worker`]: decodes, then calls the handler.
pub(super) trait DynWorker: Send {
    fn handle<'a>(&'a mut self, ctx: &'a mut WorkerContext, message: Message) -> BoxFuture<'a, Handled>;
}

impl<W: Worker> DynWorker for W {
    fn handle<'a>(&'a mut self, ctx: &'a mut WorkerContext, message: Message) -> BoxFuture<'a, Handled> {
        Box::pin(async move {
            match message.decode::<W::Event>() {
                Ok(event) => Handled::Event(Worker::handle(self, ctx, event).await),
                Err(error) => Handled::Undecodable(self.undecodable_event(ctx, message, error).await),
            }
        })
    }
}

/// A route that cannot be added to a [`ChannelNameRouter`].
///
/// ```
/// use estuary_core::{ChannelNameRouter, WorkerRouteError, Worker, WorkerContext, WorkerError};
///
/// struct Idle;
/// impl Worker for Idle {
///     type Event = serde_json::Value;
///     async fn handle(&mut self, _: &mut WorkerContext, _: serde_json::Value) -> Result<(), WorkerError> {
///         Ok(())
///     }
/// }
///
/// let router = ChannelNameRouter::new().route("emails", Idle).unwrap();
/// assert!(matches!(router.route("emails", Idle), Err(WorkerRouteError::Duplicate(_))));
/// let err = ChannelNameRouter::new().route("specific.abc!def", Idle).unwrap_err();
/// assert!(matches!(err, WorkerRouteError::ProcessSpecific(_)));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum WorkerRouteError {
    /// The channel name is not valid.
    #[error("invalid worker channel name: {0}")]
    Name(#[from] NameError),
    /// The name is process-specific (it holds a `!`): such a channel belongs
    /// to one connection of one process, not to a worker.
    #[error("{0} is a process-specific channel; a worker consumes a named channel such as \"thumbnails\"")]
    ProcessSpecific(ChannelName),
    /// The router has a worker for this channel already: a channel has one
    /// worker per router (run several processes to share a channel's work).
    #[error("channel {0} has a worker already")]
    Duplicate(ChannelName),
}

/// Maps named channels to the [`Worker`]s that consume them: Channels'
/// `ChannelNameRouter`. Run it with [`run_workers`](super::run_workers), or
/// beside a server's WebSocket tier (`estuary_server::Server::with_workers`).
///
/// Each channel has one worker, which handles its messages one at a time, in
/// order (see [`Worker`]). Several processes (or routers) that run a worker
/// for the same channel on a shared layer (Redis) compete for its messages:
/// each message reaches one of them.
///
/// ```
/// use estuary_core::{
///     ChannelLayer, ChannelLayerHandle, ChannelName, ChannelNameRouter, InMemoryChannelLayer, Message, Worker,
///     WorkerContext, WorkerError, run_workers,
/// };
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// #[serde(tag = "type")]
/// enum Job {
///     #[serde(rename = "generate")]
///     Generate { id: u64 },
/// }
///
/// struct Thumbnails(tokio::sync::mpsc::Sender<u64>);
///
/// impl Worker for Thumbnails {
///     type Event = Job;
///     async fn handle(&mut self, _ctx: &mut WorkerContext, job: Job) -> Result<(), WorkerError> {
///         let Job::Generate { id } = job;
///         self.0.send(id).await.map_err(WorkerError::other)
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let (done, mut made) = tokio::sync::mpsc::channel(8);
/// let router = ChannelNameRouter::new().route("thumbnails-generate", Thumbnails(done)).unwrap();
/// let layer = InMemoryChannelLayer::default();
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let running = run_workers(router, ChannelLayerHandle::new(layer.clone()), async {
///     let _ = stopped.await;
/// });
///
/// // What a view does: channel_layer.send("thumbnails-generate", {"type": "generate", "id": 123}).
/// let job = Message::from_json(&serde_json::json!({"type": "generate", "id": 123})).unwrap();
/// layer.send(&ChannelName::new("thumbnails-generate").unwrap(), job).await.unwrap();
///
/// let (_, made) = tokio::join!(running, async {
///     let id = made.recv().await;
///     let _ = stop.send(());
///     id
/// });
/// assert_eq!(made, Some(123));
/// # });
/// ```
#[derive(Default)]
pub struct ChannelNameRouter {
    pub(super) routes: Vec<(ChannelName, Box<dyn DynWorker>)>,
    pub(super) stats: WorkerStats,
}

impl ChannelNameRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `worker` for the named `channel`. Fails for an invalid or
    /// process-specific name, and for a channel that has a worker already.
    pub fn route<W: Worker>(mut self, channel: &str, worker: W) -> Result<Self, WorkerRouteError> {
        let channel = ChannelName::new(channel)?;
        if channel.is_process_specific() {
            return Err(WorkerRouteError::ProcessSpecific(channel));
        }
        if self.routes.iter().any(|(c, _)| *c == channel) {
            return Err(WorkerRouteError::Duplicate(channel));
        }
        self.routes.push((channel, Box::new(worker)));
        Ok(self)
    }

    /// The channels that have a worker, in the order they were added.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.routes.iter().map(|(c, _)| c)
    }

    /// The workers' counters (messages handled, failed, undecodable); clones
    /// share them, so take one before running the router.
    pub fn stats(&self) -> WorkerStats {
        self.stats.clone()
    }

    /// True when no channel has a worker.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl fmt::Debug for ChannelNameRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelNameRouter")
            .field("channels", &self.channels().collect::<Vec<_>>())
            .finish()
    }
}
