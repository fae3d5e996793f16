//! Writing to the client: batches with one flush, pings, and the write
//! deadline armed only when a write blocks.

use std::time::Duration;

use futures_util::FutureExt;

use super::conn::Flow;
use super::stats::Tally;
use super::step::{Closing, Step};
use super::transport::Transport;
use crate::close::{CloseCode, CloseFrame};
use crate::outbound::{OutboundReceiver, Outgoing};

/// Writes `first` (if any) and whatever else is queued, then flushes once
/// (with whatever was fed to the transport before). A write
/// that stalls past `limit` means the client stopped reading: close with 1013.
/// The deadline is armed only when the write cannot complete at once (the
/// client's TCP window is full): the usual write costs no timer.
///
/// A write that blocks means the client is not keeping up: with `flow`, the
/// channel is marked [`ReceiverState::Stalled`] before waiting (so that it
/// cannot hold the layer's flow control up while the session is stuck here),
/// and `true` comes back so that the caller marks it live again later.
pub(super) async fn write_batch<T: Transport>(
    transport: &mut T,
    outbound: &mut OutboundReceiver,
    first: Option<Outgoing>,
    limit: Duration,
    flow: Option<&Flow<'_>>,
    tally: &mut Tally,
) -> (Step, bool) {
    // The usual batch is written without a future: what it keeps while
    // waiting would size every connection's (idle) future.
    let written = match write_now(transport, outbound, first, tally) {
        Ok(step) => (step, false),
        // Boxed: only a batch that has to wait (or a transport that only
        // writes asynchronously) needs the rest's state.
        Err(rest) => {
            let mut write = Box::pin(write_rest(transport, outbound, rest, tally));
            // `unconstrained`: with tokio's cooperative budget used up, a
            // socket write looks pending whatever the socket's state.
            match tokio::task::unconstrained(&mut write).now_or_never() {
                Some(step) => (step, false),
                None => {
                    if let Some(flow) = flow {
                        flow.stall();
                    }
                    // Boxed too: the deadline's timer only for a write that waits.
                    let step = match Box::pin(tokio::time::timeout(limit, write)).await {
                        Ok(step) => step,
                        Err(_) => {
                            tracing::info!("client stopped reading; closing it as too slow");
                            Closing::server(CloseCode::TRY_AGAIN_LATER, "client too slow", false)
                        }
                    };
                    (step, flow.is_some())
                }
            }
        }
    };
    tally.batch_done();
    written
}

/// What a batch still has to do once it found it must wait.
enum Rest {
    /// Feed this message (the transport handed it back), then go on.
    Feed(crate::ws::WsMessage),
    /// Everything is fed; finish the flush.
    Flush,
    /// Finish the flush, then close with this frame.
    Close(CloseFrame),
}

/// Writes `first` and whatever else is queued, as far as it goes without
/// waiting: the step, or what is left to do.
fn write_now<T: Transport>(
    transport: &mut T,
    outbound: &mut OutboundReceiver,
    first: Option<Outgoing>,
    tally: &mut Tally,
) -> Result<Step, Rest> {
    let mut next = first.or_else(|| outbound.try_recv());
    while let Some(item) = next {
        match item {
            Outgoing::Close(frame) => {
                return match transport.flush_now() {
                    Ok(false) => Err(Rest::Close(frame)),
                    // A failed flush still ends in the close.
                    Ok(true) | Err(_) => Ok(close_step(frame)),
                };
            }
            Outgoing::Message(m) => {
                // Counted as it is handed to the transport (a write that
                // fails closes the connection).
                tally.sent(m.len());
                match transport.feed_now(m) {
                    Ok(None) => {}
                    Ok(Some(m)) => return Err(Rest::Feed(m)),
                    Err(_) => return Ok(Closing::gone(CloseCode::ABNORMAL, false)),
                }
            }
        }
        next = outbound.try_recv();
    }
    match transport.flush_now() {
        Ok(true) => Ok(Step::Continue),
        Ok(false) => Err(Rest::Flush),
        Err(_) => Ok(Closing::gone(CloseCode::ABNORMAL, false)),
    }
}

/// Finishes a batch [`write_now`] could not.
async fn write_rest<T: Transport>(
    transport: &mut T,
    outbound: &mut OutboundReceiver,
    rest: Rest,
    tally: &mut Tally,
) -> Step {
    match rest {
        Rest::Close(frame) => {
            let _ = transport.flush().await;
            close_step(frame)
        }
        Rest::Flush => match transport.flush().await {
            Ok(()) => Step::Continue,
            Err(_) => Closing::gone(CloseCode::ABNORMAL, false),
        },
        Rest::Feed(m) => {
            if transport.feed(m).await.is_err() {
                return Closing::gone(CloseCode::ABNORMAL, false);
            }
            match outbound.try_recv() {
                Some(next) => write_all(transport, outbound, next, tally).await,
                None => match transport.flush().await {
                    Ok(()) => Step::Continue,
                    Err(_) => Closing::gone(CloseCode::ABNORMAL, false),
                },
            }
        }
    }
}

/// The step that sends a close frame the consumer queued.
fn close_step(frame: CloseFrame) -> Step {
    let code = frame.code();
    Step::Close(Closing {
        frame: Some(frame),
        code,
        client_closed: false,
        drain: false,
    })
}

async fn write_all<T: Transport>(
    transport: &mut T,
    outbound: &mut OutboundReceiver,
    first: Outgoing,
    tally: &mut Tally,
) -> Step {
    let mut item = first;
    loop {
        match item {
            Outgoing::Close(frame) => {
                let _ = transport.flush().await;
                return close_step(frame);
            }
            Outgoing::Message(m) => {
                // Counted as it is handed to the transport (a write that
                // fails closes the connection).
                tally.sent(m.len());
                if transport.feed(m).await.is_err() {
                    return Closing::gone(CloseCode::ABNORMAL, false);
                }
            }
        }
        match outbound.try_recv() {
            Some(next) => item = next,
            None => break,
        }
    }
    match transport.flush().await {
        Ok(()) => Step::Continue,
        Err(_) => Closing::gone(CloseCode::ABNORMAL, false),
    }
}

/// Sends a keepalive ping within `limit`; `(sent, blocked)`. A ping that
/// blocks (the client's TCP window is closed) marks the channel stalled
/// before waiting, as a blocked write does.
pub(super) async fn ping<T: Transport>(transport: &mut T, limit: Duration, flow: &Flow<'_>) -> (bool, bool) {
    let ping = transport.ping();
    tokio::pin!(ping);
    if let Some(done) = tokio::task::unconstrained(&mut ping).now_or_never() {
        return (done.is_ok(), false);
    }
    flow.stall();
    let sent = matches!(tokio::time::timeout(limit, ping).await, Ok(Ok(())));
    (sent, true)
}
