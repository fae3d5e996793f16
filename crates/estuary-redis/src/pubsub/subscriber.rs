//! The subscriber connections: one per host, connected, subscribed, read
//! and kept alive, and reconnected after a loss.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use estuary_core::ChannelName;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::local::lock;

/// How long a subscriber connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before connecting again after a failure; it doubles with
/// each failure in a row, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two connection attempts: Redis back is found
/// within this.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a connection must have lived for the backoff to start again
/// from [`MIN_BACKOFF`] after it is lost.
const STABLE: Duration = Duration::from_secs(1);

/// Why a subscriber connection was given up.
#[derive(Debug)]
enum Loss {
    /// Its stream ended: Redis closed the connection (a restart, a shutdown,
    /// `CLIENT KILL`, an output buffer limit) or the network failed.
    Closed,
    /// A keepalive `PING` had no answer within the command timeout.
    NoPong(Duration),
    /// A keepalive `PING` failed.
    PingFailed(redis::RedisError),
    /// The sentinels named another primary: what is published there does
    /// not reach this connection.
    Moved,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::Closed => f.write_str(
                "the connection was closed (Redis restarted or shut down, the client was killed, or the network failed)",
            ),
            Loss::NoPong(within) => write!(f, "no answer to a keepalive PING within {within:?}"),
            Loss::PingFailed(error) => write!(f, "a keepalive PING failed: {error}"),
            Loss::Moved => f.write_str("the sentinels named another primary (a failover)"),
        }
    }
}

impl Inner {
    /// Subscribes a new connection to `shard` to everything this process
    /// needs there, and makes it the one subscription changes go through.
    /// Holds `subscriptions` throughout, so that no change is missed
    /// between the list and the switch.
    async fn resubscribe(
        &self,
        shard: usize,
        mut sink: PubSubSink,
        down_since: Option<Instant>,
    ) -> Result<(), String> {
        let _guard = self.subscriptions.lock().await;
        let names = self.subscriptions(shard);
        if !names.is_empty() {
            let within = self.config.command_timeout;
            match tokio::time::timeout(within, sink.subscribe(&names)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(format!("SUBSCRIBE failed: {error}")),
                Err(_) => return Err(format!("no answer to SUBSCRIBE within {within:?}")),
            }
        }
        self.now_connected(shard, sink, down_since);
        Ok(())
    }

    /// A subscriber connection to `shard` is up, with this process's
    /// subscriptions there: subscription changes go through `sink` now.
    fn now_connected(&self, shard: usize, sink: PubSubSink, down_since: Option<Instant>) {
        let s = &self.shards[shard];
        s.sink.send_replace(Some(sink));
        s.healthy.store(true, Ordering::Relaxed);
        if let Some(since) = down_since {
            if let Some(held_back) = self.restored_log.allow(Instant::now()) {
                tracing::info!(
                    shard,
                    down_for = ?since.elapsed(),
                    held_back,
                    "Redis pub/sub subscriber connected again; subscriptions restored"
                );
            }
        }
    }

    /// The subscriber connection to `shard` is gone: messages published
    /// there from now until it is back reach no one here. Every connection
    /// that was receiving through it (its own channel, or a group, on that
    /// host) is told it may have missed messages.
    fn lost(&self, shard: usize, loss: &Loss) {
        let s = &self.shards[shard];
        s.sink.send_replace(None);
        s.healthy.store(false, Ordering::Relaxed);
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        let (told, workers) = self.report_gap(shard);
        if let Some(held_back) = self.lost_log.allow(Instant::now()) {
            tracing::error!(
                shard,
                reason = %loss,
                connections_told = told,
                worker_channels = workers,
                held_back,
                "Redis pub/sub subscriber lost: what is published on that host until it is back \
                 reaches no one here; the connections receiving through it were told they may have \
                 missed messages (they close 1013, or count the loss, per their slow-client policy); \
                 reconnecting"
            );
        }
    }

    /// Marks a gap on every local channel that receives through `shard`:
    /// channels subscribed there, and members of groups subscribed there.
    /// Returns how many connections were told, and how many worker
    /// channels (which cannot be told) were affected.
    fn report_gap(&self, shard: usize) -> (usize, usize) {
        let groups = lock(&self.groups);
        let local = lock(&self.local);
        let mut affected: HashSet<&ChannelName> =
            local.keys().filter(|c| self.shard(c.as_str()) == shard).collect();
        for (group, members) in groups.iter() {
            if self.shard(&self.group_channel(group)) == shard {
                affected.extend(members);
            }
        }
        let (mut told, mut workers) = (0, 0);
        for name in affected {
            if let Some(queue) = local.get(name) {
                if queue.mark_gap() {
                    told += 1;
                } else {
                    workers += 1;
                }
            }
        }
        (told, workers)
    }
}

/// Keeps one subscriber connection to one host: connects, subscribes to
/// everything this process needs there, reads and pings, and starts over
/// after a failure, telling the members who may have missed messages.
pub(super) async fn subscriber(
    inner: Weak<Inner>,
    shard: usize,
    client: crate::connection::Client,
    token: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    // Since when this host has been without a subscriber (None: never
    // connected yet, nothing to restore).
    let mut down_since: Option<Instant> = None;
    loop {
        let connected = tokio::select! {
            _ = token.cancelled() => return,
            c = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()) => c,
        };
        let failure = match connected {
            Ok(Ok(pubsub)) => {
                let (sink, stream) = pubsub.split();
                let Some(layer) = inner.upgrade() else { return };
                let subscribed = layer.resubscribe(shard, sink.clone(), down_since).await;
                drop(layer);
                match subscribed {
                    Ok(()) => {
                        let up = Instant::now();
                        let moved = client.moved();
                        let Some(loss) = read(&inner, sink, stream, &token, moved).await else {
                            return;
                        };
                        let Some(layer) = inner.upgrade() else { return };
                        layer.lost(shard, &loss);
                        down_since = Some(Instant::now());
                        if up.elapsed() >= STABLE {
                            backoff = MIN_BACKOFF;
                        }
                        None
                    }
                    Err(error) => Some(error),
                }
            }
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("connection timed out after {CONNECT_TIMEOUT:?}")),
        };
        if let Some(error) = failure {
            let Some(layer) = inner.upgrade() else { return };
            layer.shards[shard].healthy.store(false, Ordering::Relaxed);
            if let Some(held_back) = layer.connect_log.allow(Instant::now()) {
                tracing::warn!(
                    shard,
                    %error,
                    held_back,
                    "cannot connect the Redis pub/sub subscriber; retrying (nothing published on that host reaches this process meanwhile: check that Redis is reachable)"
                );
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

type PingReply = Result<redis::RedisResult<redis::Value>, tokio::time::error::Elapsed>;

/// Reads one subscriber connection and keeps it alive until it fails;
/// `None` when the layer is shut down or dropped.
///
/// The keepalive `PING` runs beside the reads, never instead of them: its
/// answer comes behind every message Redis sent before it, and those keep
/// being dispatched while it is awaited. On a subscribed RESP2 connection
/// Redis answers `PING` with the array `["pong", ""]`, not `PONG`: any
/// answer that is not an error proves the connection alive.
async fn read(
    inner: &Weak<Inner>,
    sink: PubSubSink,
    mut stream: PubSubStream,
    token: &CancellationToken,
    mut moved: Option<tokio::sync::watch::Receiver<u64>>,
) -> Option<Loss> {
    let (every, within) = {
        let layer = inner.upgrade()?;
        (layer.config.pubsub_keepalive, layer.config.command_timeout)
    };
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping: Option<Pin<Box<dyn Future<Output = PingReply> + Send>>> = None;
    loop {
        tokio::select! {
            _ = token.cancelled() => return None,
            _ = crate::connection::primary_moved(&mut moved) => return Some(Loss::Moved),
            next = stream.next() => {
                let Some(msg) = next else { return Some(Loss::Closed) };
                inner.upgrade()?.dispatch(msg.get_channel_name(), msg.get_payload_bytes());
            }
            _ = keepalive.tick(), if ping.is_none() => {
                inner.upgrade()?.pings.fetch_add(1, Ordering::Relaxed);
                let mut sink = sink.clone();
                ping = Some(Box::pin(tokio::time::timeout(within, async move {
                    sink.ping::<redis::Value>().await.and_then(redis::Value::extract_error)
                })));
            }
            answer = async { Some(ping.as_mut()?.await) }, if ping.is_some() => {
                ping = None;
                match answer {
                    Some(Ok(Ok(_))) | None => {}
                    Some(Ok(Err(error))) => return Some(Loss::PingFailed(error)),
                    Some(Err(_)) => return Some(Loss::NoPong(within)),
                }
            }
        }
    }
}
