//! Running a consumer's handler while its connection keeps being written
//! to, and what the handler's result means for the connection.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures_util::FutureExt;

use super::conn::{Conn, Flow};
use super::step::{Closing, Step};
use super::transport::Transport;
use super::write::write_batch;
use crate::close::CloseCode;
use crate::error::ConsumerError;
use crate::layer::{ChannelLayer, ReceiverState};
use crate::outbound::OutboundReceiver;

/// Runs a handler to completion while writing what it queues; then maps its
/// result to the next step. A panicking handler closes with 1011; a shutdown
/// abandons the handler and closes with 1001. Keepalive pings still go out
/// while a long handler runs (so proxies see traffic); their answers are read
/// once it returns, so they decide nothing about the peer being alive.
///
/// A handler that does not finish at once (it awaits I/O, a timer, a full
/// outbound queue) leaves the channel undrained meanwhile: the channel is
/// marked [`ReceiverState::Stalled`] so that it cannot hold the layer's flow
/// control up, and `true` comes back so that the caller marks it live again
/// once it has caught up.
///
/// The handler comes pinned in the caller's frame: taken by value, it would
/// be stored twice in this future (as the argument and as the pinned local),
/// and every connection's future would carry both.
pub(super) async fn drive<T, F>(
    fut: Pin<&mut F>,
    outbound: &mut OutboundReceiver,
    conn: &mut Conn<'_, T>,
    flow: Flow<'_>,
) -> (Step, bool)
where
    T: Transport,
    F: Future<Output = Result<(), ConsumerError>>,
{
    let mut fut = AssertUnwindSafe(fut).catch_unwind();
    // `unconstrained`: a task that used up tokio's cooperative budget would
    // see every resource as pending, and take the handler for a waiting one.
    if let Some(result) = tokio::task::unconstrained(&mut fut).now_or_never() {
        return (handler_step(result), false);
    }
    flow.layer.set_receiver(flow.channel, ReceiverState::Stalled);
    // Boxed: its state (deadlines, writes, pings) is needed only while a
    // handler waits, and would otherwise make every idle connection's
    // future larger.
    (
        Box::pin(wait_for_handler(Pin::new(&mut fut), outbound, conn)).await,
        true,
    )
}

async fn wait_for_handler<T, F>(
    mut fut: std::pin::Pin<&mut F>,
    outbound: &mut OutboundReceiver,
    conn: &mut Conn<'_, T>,
) -> Step
where
    T: Transport,
    F: Future<Output = std::thread::Result<Result<(), ConsumerError>>>,
{
    let limit = conn.config.write_timeout;
    let shutdown = conn.shutdown;
    let mut pending: Option<Step> = None;
    let result = loop {
        tokio::select! {
            biased;
            result = &mut fut => break result,
            Some(item) = outbound.recv(), if pending.is_none() => {
                // The channel is already stalled while the handler waits.
                if let (step @ Step::Close(_), _) = write_batch(conn.transport, outbound, Some(item), limit, None, &mut conn.tally).await {
                    // Stop writing; later sends from the handler fail fast.
                    outbound.close();
                    pending = Some(step);
                }
            }
            _ = shutdown.cancelled(), if pending.is_none() => {
                return Closing::server(CloseCode::GOING_AWAY, "server shutting down", true);
            }
            _ = conn.keepalive.tick(conn.config.ping_interval), if pending.is_none() => {
                if !matches!(tokio::time::timeout(limit, conn.transport.ping()).await, Ok(Ok(()))) {
                    outbound.close();
                    pending = Some(Closing::gone(CloseCode::ABNORMAL, false));
                }
            }
        }
    };
    pending.unwrap_or_else(|| handler_step(result))
}

/// The next step after a handler returned (or panicked).
pub(super) fn handler_step(result: std::thread::Result<Result<(), ConsumerError>>) -> Step {
    match result {
        Ok(Ok(())) => Step::Continue,
        Ok(Err(ConsumerError::ConnectionClosed)) => Closing::gone(CloseCode::ABNORMAL, false),
        Ok(Err(error)) => {
            let code = error.close_code();
            if !matches!(error, ConsumerError::Close { .. }) {
                crate::throttled!(warn, %error, %code, "consumer handler failed; closing the connection with this code. Fix the consumer's error (the \
             client may reconnect)");
            }
            // Messages the handler queued before failing still go out.
            let drain = !matches!(error, ConsumerError::SlowClient);
            Closing::server(code, error.close_reason(), drain)
        }
        Err(_) => {
            crate::throttled!(
                error,
                "consumer handler panicked (a bug in the consumer); closing the connection with 1011"
            );
            Closing::server(CloseCode::INTERNAL_ERROR, "internal error", true)
        }
    }
}
