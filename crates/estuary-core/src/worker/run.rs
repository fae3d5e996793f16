//! `run_workers`: Channels' `runworker`, as a future.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::router::{DynWorker, Handled};
use super::{ChannelNameRouter, WorkerContext, WorkerError};
use crate::layer::{ChannelLayer, ChannelLayerError, ChannelLayerHandle};
use crate::names::ChannelName;

/// The counters of a [`ChannelNameRouter`]'s workers, over all its channels.
/// Clones share them; take one with [`ChannelNameRouter::stats`].
///
/// ```
/// use estuary_core::ChannelNameRouter;
///
/// let stats = ChannelNameRouter::new().stats();
/// assert_eq!((stats.handled(), stats.failed(), stats.undecodable()), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    undecodable: AtomicU64,
    lost: AtomicU64,
}

impl WorkerStats {
    /// Messages a worker's [`handle`](super::Worker::handle) returned `Ok` for.
    pub fn handled(&self) -> u64 {
        self.inner.handled.load(Ordering::Relaxed)
    }

    /// Messages a worker's handler returned an error for (including
    /// [`undecodable_event`](super::Worker::undecodable_event)'s errors).
    pub fn failed(&self) -> u64 {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// Messages a worker's handler panicked on.
    pub fn panicked(&self) -> u64 {
        self.inner.panicked.load(Ordering::Relaxed)
    }

    /// Messages that did not decode into the worker's `Event`.
    pub fn undecodable(&self) -> u64 {
        self.inner.undecodable.load(Ordering::Relaxed)
    }

    /// Messages the layer reported lost for a worker's channel
    /// ([`ChannelLayerError::Lost`]).
    pub fn lost(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }
}

/// The first wait after a failed receive; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two failed receives.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs every worker of `router` on `layer` until `shutdown` completes:
/// Channels' `manage.py runworker`, as a future.
///
/// # Contract
///
/// * Each channel is received from by one loop: its worker handles one
///   message at a time, in the order the layer delivers them; the next
///   message is taken from the layer only once the handler has returned.
///   Channels run concurrently, all within the task that polls this future
///   (a handler that blocks the thread holds up the others: use
///   `spawn_blocking` for blocking work).
/// * A handler's error or panic is logged (throttled, with the channel and
///   the message type) and counted in [`WorkerStats`]; the loop goes on.
///   An undecodable message is logged (throttled) and counted.
/// * A receive that fails is logged (throttled) and retried with backoff
///   (100 ms doubling to 5 s); a channel the layer closed for good
///   ([`ChannelLayerError::ChannelClosed`]) stops its loop, logged.
/// * When `shutdown` completes, each worker finishes the message it is
///   handling and takes no other; the future completes once all have. A
///   receive waiting at that moment is dropped: the in-memory layer loses
///   nothing then; the Redis layer may hold one blocking pop for the
///   channel in flight until the layer is dropped, and a message it takes
///   meanwhile is not handled (drop the layer soon after this returns).
///
/// ```
/// use estuary_core::{ChannelLayerHandle, ChannelNameRouter, run_workers};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// // With no worker and a shutdown already signalled, it returns at once.
/// run_workers(ChannelNameRouter::new(), ChannelLayerHandle::default(), async {}).await;
/// # });
/// ```
pub async fn run_workers(
    router: ChannelNameRouter,
    layer: ChannelLayerHandle,
    shutdown: impl Future<Output = ()> + Send,
) {
    let token = CancellationToken::new();
    let stats = router.stats;
    let loops =
        join_all(router.routes.into_iter().map(|(channel, worker)| {
            run_channel(channel, worker, layer.clone(), token.clone(), stats.clone())
        }));
    let signal = async {
        shutdown.await;
        tracing::debug!("workers: shutting down after the messages in hand");
        token.cancel();
    };
    tokio::join!(loops, signal);
}

/// One channel's loop: receive, handle, repeat, until `token` is cancelled.
async fn run_channel(
    channel: ChannelName,
    mut worker: Box<dyn DynWorker>,
    layer: ChannelLayerHandle,
    token: CancellationToken,
    stats: WorkerStats,
) {
    let mut ctx = WorkerContext::new(channel.clone(), layer.clone());
    let mut backoff = MIN_BACKOFF;
    tracing::debug!(%channel, "worker started");
    loop {
        let received = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            received = layer.receive(&channel) => received,
        };
        let error = match received {
            Ok(message) => {
                backoff = MIN_BACKOFF;
                handle_one(&mut *worker, &mut ctx, message, &stats.inner).await;
                continue;
            }
            Err(ChannelLayerError::Lost { count }) => {
                let total = stats.inner.lost.fetch_add(count, Ordering::Relaxed) + count;
                crate::throttled!(
                    warn,
                    %channel,
                    count,
                    total,
                    "the channel layer lost messages for a worker channel (its queue was full, or Redis lost them): run more workers, or raise the channel's capacity"
                );
                continue;
            }
            Err(ChannelLayerError::ChannelClosed(_)) => {
                tracing::error!(%channel, "the channel layer closed this worker's channel; the worker stops: its messages wait in the channel until the process is restarted");
                return;
            }
            Err(error) => error,
        };
        crate::throttled!(
            warn,
            %channel,
            %error,
            retry_in_ms = backoff.as_millis() as u64,
            "a worker's receive failed; retrying. Check that the channel layer is reachable"
        );
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    tracing::debug!(%channel, "worker stopped");
}

/// Decodes and handles one message; counts and logs what went wrong.
async fn handle_one(
    worker: &mut dyn DynWorker,
    ctx: &mut WorkerContext,
    message: crate::Message,
    stats: &Counters,
) {
    // A reference count: the message itself goes to the worker.
    let kept = message.clone();
    let handled = AssertUnwindSafe(worker.handle(ctx, message)).catch_unwind().await;
    let channel = ctx.channel_name();
    let r#type = kept.message_type();
    let error = match handled {
        Ok(Handled::Event(Ok(()))) => {
            stats.handled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Ok(Handled::Undecodable(result)) => {
            stats.undecodable.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(()) => return,
                Err(error) => error,
            }
        }
        Ok(Handled::Event(Err(error))) => error,
        Err(panic) => {
            let total = stats.panicked.fetch_add(1, Ordering::Relaxed) + 1;
            let panic = panic_message(&*panic);
            crate::throttled!(
                error,
                %channel,
                r#type,
                panic,
                total,
                "a worker panicked on a message; the message is lost, the worker goes on with the next. A bug in the handler: fix it"
            );
            return;
        }
    };
    let total = stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
    log_failure(channel, r#type, &error, total);
}

fn log_failure(channel: &ChannelName, r#type: &str, error: &WorkerError, total: u64) {
    crate::throttled!(
        error,
        %channel,
        r#type,
        %error,
        total,
        "a worker failed on a message; the message is not retried, the worker goes on with the next. The error names the cause"
    );
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}
