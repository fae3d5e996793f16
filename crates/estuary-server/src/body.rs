//! A request body with a deadline: a client that trickles its body is cut
//! off instead of holding a connection and a buffer for ever.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a request body fails with when it has not arrived in full
/// within [`ServerConfig::body_timeout`](crate::ServerConfig::body_timeout).
/// Handlers that read bodies can look for it in the error's source chain
/// and answer `408 Request Timeout`.
///
/// ```
/// use estuary_server::BodyTimeout;
///
/// let error: Box<dyn std::error::Error + Send + Sync> = Box::new(BodyTimeout);
/// assert!(error.downcast_ref::<BodyTimeout>().is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request body not received in time")]
pub struct BodyTimeout;

/// `B`, failing with [`BodyTimeout`] once `limit` has passed since it was
/// first polled.
pub(crate) struct TimedBody<B> {
    inner: B,
    limit: Duration,
    /// Made on the first poll: a request that never reads its body pays
    /// no timer.
    deadline: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

impl<B> TimedBody<B> {
    pub(crate) fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: None,
            expired: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let limit = this.limit;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.expired = true;
                Poll::Ready(Some(Err(Box::new(BodyTimeout))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_at_the_deadline() {
        let (mut tx, rx) = futures_channel_body();
        let mut body = TimedBody::new(rx, Duration::from_secs(10));
        tx.send(Bytes::from_static(b"a")).await;
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "a");
        // Nothing more comes; ten seconds after the first poll it fails.
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.downcast_ref::<BodyTimeout>().is_some());
        assert!(body.frame().await.unwrap().is_err(), "and stays failed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_in_time_is_untouched() {
        let body = TimedBody::new(
            http_body_util::Full::new(Bytes::from_static(b"all")),
            Duration::from_secs(1),
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), "all");
    }

    /// A body fed by the test, frame by frame.
    fn futures_channel_body() -> (Feeder, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (Feeder(tx), ChannelBody(rx))
    }

    struct Feeder(tokio::sync::mpsc::Sender<Bytes>);

    impl Feeder {
        async fn send(&mut self, bytes: Bytes) {
            self.0.send(bytes).await.unwrap();
        }
    }

    struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }
}
