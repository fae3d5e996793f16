//! The channel layer's operations timed: a [`ChannelLayer`] that forwards
//! every call to the layer it wraps and counts how long each operation took
//! and whether it failed.
//!
//! Only the operations a producer or a joining connection makes are timed
//! (a group send is one operation however many members it reaches); a
//! connection's receive path (`receiver`) is forwarded untouched, so a
//! delivery costs nothing more.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use estuary::{
    ChannelLayer, ChannelLayerError, ChannelLayerHandle, ChannelName, ChannelReceiver, GroupName,
    GroupSendReport, History, Message, Presence, ReceiverState, SendError,
};

use super::http::DURATION_BOUNDS;
use super::text::{Kind, Text};

/// The timed operations, in label order.
const OPS: [&str; 6] = [
    "new_channel",
    "send",
    "group_add",
    "group_discard",
    "group_send",
    "flush",
];

#[derive(Debug, Default)]
struct Op {
    buckets: [AtomicU64; DURATION_BOUNDS.len() + 1],
    nanos: AtomicU64,
    errors: AtomicU64,
}

/// The counters of a [`TimedLayer`]; clones share them.
#[derive(Debug, Clone, Default)]
pub struct LayerOps {
    ops: Arc<[Op; OPS.len()]>,
}

impl LayerOps {
    fn observe<T, E>(&self, op: usize, started: Instant, result: &Result<T, E>) {
        let Some(op) = self.ops.get(op) else {
            return;
        };
        let took = started.elapsed();
        let secs = took.as_secs_f64();
        let at = DURATION_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DURATION_BOUNDS.len());
        if let Some(bucket) = op.buckets.get(at) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        op.nanos.fetch_add(nanos, Ordering::Relaxed);
        if result.is_err() {
            op.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Operations of `name` that failed, in all.
    pub fn errors(&self, name: &str) -> u64 {
        OPS.iter()
            .position(|&op| op == name)
            .and_then(|at| self.ops.get(at))
            .map_or(0, |op| op.errors.load(Ordering::Relaxed))
    }

    pub(super) fn render(&self, text: &mut Text, backend: &str) {
        text.family(
            "estuary_layer_operation_duration_seconds",
            Kind::Histogram,
            "Time the channel layer took per operation (a group send once, however many members), in seconds.",
        );
        for (name, op) in OPS.iter().zip(self.ops.iter()) {
            let counts: Vec<u64> = op.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
            let sum = op.nanos.load(Ordering::Relaxed) as f64 / 1e9;
            text.histogram(
                "estuary_layer_operation_duration_seconds",
                &[("backend", backend), ("operation", name)],
                &DURATION_BOUNDS,
                &counts,
                sum,
            );
        }
        text.family(
            "estuary_layer_operation_errors_total",
            Kind::Counter,
            "Channel-layer operations that failed, by operation (a full channel on send counts).",
        );
        for (name, op) in OPS.iter().zip(self.ops.iter()) {
            text.sample(
                "estuary_layer_operation_errors_total",
                &[("backend", backend), ("operation", name)],
                op.errors.load(Ordering::Relaxed),
            );
        }
    }
}

/// A channel layer whose operations are timed into [`LayerOps`].
///
/// ```
/// use estuary::{ChannelLayer, ChannelLayerHandle};
/// use estuary_cli::metrics::{LayerOps, TimedLayer};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let ops = LayerOps::default();
/// let layer = TimedLayer::new(ChannelLayerHandle::default(), ops.clone());
/// layer.new_channel().await.unwrap();
/// assert_eq!(ops.errors("new_channel"), 0);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct TimedLayer {
    inner: ChannelLayerHandle,
    ops: LayerOps,
}

impl TimedLayer {
    /// Times `inner`'s operations into `ops`.
    pub fn new(inner: ChannelLayerHandle, ops: LayerOps) -> Self {
        Self { inner, ops }
    }
}

impl ChannelLayer for TimedLayer {
    async fn new_channel(&self) -> Result<ChannelName, ChannelLayerError> {
        let started = Instant::now();
        let result = self.inner.new_channel().await;
        self.ops.observe(0, started, &result);
        result
    }
    async fn send(&self, channel: &ChannelName, message: Message) -> Result<(), SendError> {
        let started = Instant::now();
        let result = self.inner.send(channel, message).await;
        self.ops.observe(1, started, &result);
        result
    }
    async fn receive(&self, channel: &ChannelName) -> Result<Message, ChannelLayerError> {
        self.inner.receive(channel).await
    }
    async fn group_add(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let started = Instant::now();
        let result = self.inner.group_add(group, channel).await;
        self.ops.observe(2, started, &result);
        result
    }
    async fn group_discard(&self, group: &GroupName, channel: &ChannelName) -> Result<(), ChannelLayerError> {
        let started = Instant::now();
        let result = self.inner.group_discard(group, channel).await;
        self.ops.observe(3, started, &result);
        result
    }
    async fn group_send(
        &self,
        group: &GroupName,
        message: Message,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        let started = Instant::now();
        let result = self.inner.group_send(group, message).await;
        self.ops.observe(4, started, &result);
        result
    }
    async fn flush(&self) -> Result<(), ChannelLayerError> {
        let started = Instant::now();
        let result = self.inner.flush().await;
        self.ops.observe(5, started, &result);
        result
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
