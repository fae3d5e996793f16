//! What the session does with the consumer's pipelined group sends
//! ([`Context::group_send_pipelined`](crate::Context::group_send_pipelined)):
//! reports a failed one to the consumer, and completes them all before
//! `disconnect`.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use super::Session;
use super::conn::Conn;
use super::drive::drive;
use super::step::Step;
use super::transport::Transport;
use crate::consumer::Consumer;
use crate::context::PipelineFailure;

impl<C: Consumer> Session<C> {
    /// A pipelined group send failed: the consumer's `group_send_failed`
    /// runs as a handler does (what it queues is written, an error closes).
    pub(super) async fn on_group_send_failed<T: Transport>(
        &mut self,
        conn: &mut Conn<'_, T>,
        (group, error): PipelineFailure,
    ) -> Step {
        let flow = self.flow(conn);
        let (step, waited) = {
            // Boxed: a failure is rare, and the handler's state need not
            // size every connection's future.
            let mut fut = Box::pin(self.consumer.group_send_failed(&mut self.ctx, group, error));
            drive(fut.as_mut(), &mut self.outbound, conn, flow).await
        };
        if waited {
            self.ctx.mark_stalled();
        }
        step
    }

    /// The connection ends: the pipelined sends in flight complete, and
    /// the consumer hears of each that failed (its frames to the client
    /// fail then), before `disconnect`.
    pub(super) async fn settle_pipelined(&mut self) {
        while let Some((group, error)) = self.ctx.settle_pipelined().await {
            let told = AssertUnwindSafe(self.consumer.group_send_failed(&mut self.ctx, group, error))
                .catch_unwind()
                .await;
            match told {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(channel = %self.ctx.channel_name(), %error, "a group send failed as the connection ended");
                }
                Err(_) => {
                    crate::throttled!(error, channel = %self.ctx.channel_name(), "group_send_failed panicked (a bug in the consumer)");
                }
            }
        }
    }
}
