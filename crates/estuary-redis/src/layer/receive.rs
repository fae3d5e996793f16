//! The Redis layer's background work: the process queue's receive loop and
//! on-demand pops of worker channels.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::connection::{Blocking, ConnectionManager};
use tokio_util::sync::CancellationToken;

use super::group_send::refused_key;
use super::memberships::{MAX_BACKOFF, restore};
use super::{Inner, PlainReceiver};
use crate::codec::decode_member;
use crate::faults::is_wrong_type;
use crate::local::{Held, LocalQueue, lock};
use estuary_core::{ChannelLayerError, ChannelName, Message};

/// One blocking-pop loop: its dedicated connection, key and backoff.
struct Popper {
    conn: ConnectionManager,
    key: String,
    token: CancellationToken,
    backoff: Duration,
}

/// A `BZPOPMIN`'s answer: the key, the member, its score.
type Popped = Option<(Vec<u8>, Vec<u8>, f64)>;

/// What one `BZPOPMIN` gave.
enum Pop {
    Hit {
        member: Vec<u8>,
        score: f64,
    },
    Idle,
    /// Sentinel switched the primary while the pop waited on it: pop again
    /// (on the new one), and drain the former.
    Moved(Former),
    Failed(redis::RedisError),
}

/// How long a former primary is drained at most (see [`Former::drain`]):
/// past Sentinel's usual delay before it demotes one (seconds).
const DRAIN_FOR: Duration = Duration::from_secs(30);

/// A queue on a primary that Sentinel switched for another, with the pop
/// that was waiting on it.
struct Former {
    pending: futures_util::future::BoxFuture<'static, redis::RedisResult<Popped>>,
    conn: redis::aio::ConnectionManager,
    key: String,
    token: CancellationToken,
}

impl Former {
    /// Hands on, batch by batch through `deliver`, what the former primary
    /// holds in the queue or still gets (from a writer that had not yet
    /// followed the switch), until that Redis stops taking pops (demoted
    /// to a replica it answers `READONLY`; its connections are killed; it
    /// is gone), [`DRAIN_FOR`] passes, the layer shuts down, or `deliver`
    /// says to stop; returns how many it handed on. Without it, a message
    /// written there just before the switch would be lost without a trace
    /// when the former primary is demoted. Each pop is awaited to its end:
    /// one given up while Redis still holds it would take the next message
    /// for a reply nobody reads.
    async fn drain(self, mut deliver: impl FnMut(Vec<(Vec<u8>, f64)>) -> bool) -> usize {
        let Self {
            pending,
            mut conn,
            key,
            token,
        } = self;
        let deadline = tokio::time::Instant::now() + DRAIN_FOR;
        let mut pending = Some(pending);
        let mut handed = 0;
        loop {
            let popped = match pending.take() {
                Some(pending) => pending.await,
                None if tokio::time::Instant::now() >= deadline || token.is_cancelled() => return handed,
                None => {
                    redis::cmd("BZPOPMIN")
                        .arg(&key)
                        .arg(1)
                        .query_async::<Popped>(&mut conn)
                        .await
                }
            };
            let (member, score) = match popped {
                Ok(Some((_, member, score))) => (member, score),
                Ok(None) => continue,
                Err(error) => {
                    tracing::debug!(%error, %key, "the former primary takes no more pops; its drain ends");
                    return handed;
                }
            };
            let mut batch = vec![(member, score)];
            if let Ok(more) = redis::cmd("ZPOPMIN")
                .arg(&key)
                .arg(BATCH)
                .query_async::<redis::Value>(&mut conn)
                .await
            {
                batch.extend(member_score_pairs(more));
            }
            handed += batch.len();
            if !deliver(batch) {
                return handed;
            }
        }
    }
}

impl Popper {
    fn new(conn: ConnectionManager, key: String, token: CancellationToken) -> Self {
        Self {
            conn,
            key,
            token,
            backoff: Duration::from_millis(100),
        }
    }

    /// One blocking pop of up to `timeout` seconds; `None` once the layer
    /// shuts down.
    async fn pop(&mut self, timeout: u64) -> Option<Pop> {
        let mut cmd = redis::cmd("BZPOPMIN");
        cmd.arg(&self.key).arg(timeout);
        let popped = tokio::select! {
            _ = self.token.cancelled() => return None,
            r = self.conn.query_blocking::<Popped>(&cmd) => r,
        };
        Some(match popped {
            Ok(Blocking::Answered(Some((_, member, score)))) => {
                self.backoff = Duration::from_millis(100);
                Pop::Hit { member, score }
            }
            Ok(Blocking::Answered(None)) => {
                self.backoff = Duration::from_millis(100);
                Pop::Idle
            }
            Ok(Blocking::Moved { pending, former }) => Pop::Moved(Former {
                pending,
                conn: former,
                key: self.key.clone(),
                token: self.token.clone(),
            }),
            Err(e) => Pop::Failed(e),
        })
    }

    /// Whether Redis answers on this connection; `None` once the layer
    /// shuts down.
    async fn ping(&mut self) -> Option<bool> {
        let cmd = redis::cmd("PING");
        let answered = tokio::select! {
            _ = self.token.cancelled() => return None,
            r = cmd.query_async::<()>(&mut self.conn) => r,
        };
        Some(answered.is_ok())
    }

    /// After a hit: takes up to `count` more messages that are already
    /// waiting, in one round trip (`ZPOPMIN`), so that a backlog reaches the
    /// local channels together and each session writes it in one go. A
    /// command that fails is returned; if Redis ran it and only the reply
    /// was lost, the messages it took are lost, as with any pop (delivery
    /// is at most once).
    /// Also takes (reads and deletes, in the same round trip) the count of
    /// group messages other Estuary processes could not store in this
    /// queue because it was full.
    async fn pop_more(&mut self, count: usize) -> Result<(Vec<(Vec<u8>, f64)>, u64), redis::RedisError> {
        let refused = refused_key(&self.key);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZPOPMIN")
            .arg(&self.key)
            .arg(count)
            .cmd("GET")
            .arg(&refused)
            .cmd("DEL")
            .arg(&refused)
            .ignore();
        let popped = tokio::select! {
            _ = self.token.cancelled() => return Ok((Vec::new(), 0)),
            r = pipe.query_async::<(redis::Value, Option<u64>)>(&mut self.conn) => r,
        };
        popped.map(|(more, refused)| (member_score_pairs(more), refused.unwrap_or(0)))
    }

    /// Waits out the backoff after a failure (doubling it, up to
    /// [`MAX_BACKOFF`], so that Redis back is noticed within that);
    /// `false` once the layer shuts down.
    async fn back_off(&mut self) -> bool {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = self.token.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}

/// Messages taken per round trip after a blocking pop's hit.
const BATCH: usize = 32;

/// The room of this process's queue in Redis (see `Fanout`): its capacity
/// times [`OVERFLOW_FACTOR`](estuary_core::OVERFLOW_FACTOR); `None` once
/// the layer is gone.
fn layer_room(inner: &Weak<Inner>) -> Option<usize> {
    let layer = inner.upgrade()?;
    let capacity = layer.config.layer.capacity_for(layer.client_prefix.as_str());
    Some(capacity.saturating_mul(estuary_core::OVERFLOW_FACTOR))
}

/// Round trips after a hit whose messages join the same wake-up of the
/// sessions, as long as each brings some (see `receive_loop`).
const HOLD_ROUNDS: usize = 4;

/// `ZPOPMIN key count`'s answer as (member, score) pairs: a flat array of
/// member, score (RESP2) or an array of pairs (RESP3). An answer of any
/// other shape (never seen) is dropped with a warning: the messages in it
/// were already taken from Redis.
fn member_score_pairs(value: redis::Value) -> Vec<(Vec<u8>, f64)> {
    use redis::Value;
    fn score(v: &Value) -> Option<f64> {
        match v {
            Value::Double(d) => Some(*d),
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Value::SimpleString(s) => s.parse().ok(),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
    let Value::Array(items) = value else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    let mut flat = items.into_iter();
    while let Some(item) = flat.next() {
        let pair = match item {
            Value::Array(mut pair) if pair.len() == 2 => {
                let s = pair.pop();
                let m = pair.pop();
                m.zip(s)
            }
            member => flat.next().map(|s| (member, s)),
        };
        let Some((Value::BulkString(member), Some(score))) = pair.map(|(m, s)| (m, score(&s))) else {
            // Redis's own answer, never seen: once is enough to say.
            estuary_core::throttled!(
                warn,
                "unexpected ZPOPMIN answer; the rest of this batch is dropped. Something else writes to this Redis under the layer's prefix, or a proxy in between alters replies: find it"
            );
            break;
        };
        pairs.push((member, score));
    }
    pairs
}

fn pop_timeout(inner: &Weak<Inner>) -> Option<u64> {
    inner.upgrade().map(|i| i.config.receive_timeout.as_secs().max(1))
}

/// Pops one message of a plain channel into its buffer (retrying while Redis
/// is away), then stops until the next receive asks again.
pub(super) async fn fetch_one(
    inner: Weak<Inner>,
    rx: Arc<PlainReceiver>,
    key: String,
    token: CancellationToken,
) {
    let mut popper = Popper::new(rx.conn.clone(), key, token);
    loop {
        let Some(timeout) = pop_timeout(&inner) else {
            return;
        };
        match popper.pop(timeout).await {
            None => return,
            Some(Pop::Idle) => continue,
            Some(Pop::Moved(former)) => {
                let (inner, rx, key) = (inner.clone(), rx.clone(), popper.key.clone());
                tokio::spawn(former.drain(move |batch| {
                    let Some(inner) = inner.upgrade() else {
                        return false;
                    };
                    for (member, score) in batch {
                        match decode_member(&member, inner.crypto.as_ref()) {
                            Ok(d) => {
                                let expires = score + inner.config.layer.expiry().as_secs_f64();
                                if !rx.queue.push(expires, d.message) {
                                    inner.dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(error) => inner.warn_undecodable(&error, &key),
                        }
                    }
                    rx.fetched.notify_waiters();
                    true
                }));
            }
            Some(Pop::Hit { member, score }) => {
                let Some(inner) = inner.upgrade() else { return };
                match decode_member(&member, inner.crypto.as_ref()) {
                    Ok(d) => {
                        // Clear the flag before the push: the receiver woken by
                        // the push must be able to start the next fetch.
                        rx.fetching.store(false, Ordering::Release);
                        let expires = score + inner.config.layer.expiry().as_secs_f64();
                        if !rx.queue.push(expires, d.message) {
                            inner.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        rx.fetched.notify_waiters();
                        return;
                    }
                    Err(error) => inner.warn_undecodable(&error, &popper.key),
                }
            }
            Some(Pop::Failed(error)) => {
                match inner.upgrade() {
                    // A worker queue is shared with other processes: it is
                    // not ours to take back, only to report (throttled).
                    Some(layer) if is_wrong_type(&error) => layer.warn_poisoned(&popper.key, 0),
                    Some(_) => {
                        estuary_core::throttled!(
                            warn,
                            %error,
                            key = %popper.key,
                            "blocking pop of a worker channel failed; retrying. Check that Redis is reachable"
                        );
                    }
                    None => return,
                }
                if !popper.back_off().await {
                    return;
                }
            }
        }
    }
}

/// Reads this process's queue and dispatches to local channels, for the
/// life of the layer. Holds only a weak reference while it waits.
pub(super) async fn receive_loop(
    inner: Weak<Inner>,
    conn: ConnectionManager,
    key: String,
    token: CancellationToken,
) {
    let mut popper = Popper::new(conn, key, token);
    let mut failing = false;
    // A quarter of the queue's room (see the flow control below).
    let deep_at = layer_room(&inner).map_or(usize::MAX, |room| (room / 4).max(BATCH));
    loop {
        if failing {
            // A blocking pop on an idle queue answers only after its
            // timeout: a PING says at once whether Redis is back.
            match popper.ping().await {
                None => return,
                Some(true) => {
                    failing = false;
                    let Some(layer) = inner.upgrade() else { return };
                    // Redis may have restarted empty: write every membership
                    // of this process again, beside the loop (which keeps
                    // draining the queue), and say healthy once that is done.
                    tokio::spawn(restore(
                        Arc::downgrade(&layer),
                        layer.outage(),
                        popper.key.clone(),
                        popper.token.clone(),
                    ));
                }
                Some(false) => {
                    if !popper.back_off().await {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(timeout) = pop_timeout(&inner) else {
            return;
        };
        let Some(popped) = popper.pop(timeout).await else {
            return;
        };
        let Some(layer) = inner.upgrade() else { return };
        match popped {
            Pop::Failed(error) if is_wrong_type(&error) => {
                // Someone wrote over this process's queue. Its name carries
                // this process's random id, so nobody else has a claim on it:
                // take it back (unless the membership check or a group send
                // already did), or nothing would reach this process again.
                layer.reclaim_own_queue().await;
                drop(layer);
                if !popper.back_off().await {
                    return;
                }
            }
            Pop::Failed(error) => {
                if !failing {
                    failing = true;
                    layer.mark_down();
                    tracing::error!(%error, key = %popper.key, "Redis unavailable; WebSockets stay open, retrying with backoff. Check that Redis is reachable (estuary_layer_up shows when it is back)");
                }
                drop(layer);
                if !popper.back_off().await {
                    return;
                }
            }
            Pop::Moved(former) => {
                drop(layer);
                let inner = inner.clone();
                tokio::spawn(async move {
                    let handed = former
                        .drain(|batch| {
                            let Some(layer) = inner.upgrade() else {
                                return false;
                            };
                            let mut held = Held::default();
                            for (member, score) in batch {
                                layer.dispatch(&member, score, &mut held);
                            }
                            held.release();
                            true
                        })
                        .await;
                    if handed > 0 {
                        tracing::info!(
                            handed,
                            "delivered what the former primary still held for this process after the switch"
                        );
                    }
                });
            }
            hit_or_idle => {
                if let Pop::Hit { member, score } = hit_or_idle {
                    // Each popped message is put in its channels' buffers as
                    // soon as its reply is in (a `flush` or a capacity check
                    // meanwhile sees it). Then what else is waiting comes in
                    // one batch, and the sessions wake once to both, so that
                    // each writes them to its client together.
                    let mut held = Held::default();
                    layer.dispatch(&member, score, &mut held);
                    // Without the layer held: it must be free to go while
                    // this waits on Redis.
                    drop(layer);
                    // While messages keep coming, a few more batches join
                    // the held ones (each one round trip): the sessions then
                    // write several frames per system call.
                    //
                    // Flow control: the queue's room in Redis is bounded
                    // (past it, group messages for this process's members
                    // are dropped there). Once a quarter of it was waiting
                    // (this run of full batches took that many), the layer
                    // is backlogged, so that sessions stop reading their
                    // clients, and the loop goes on past its rounds
                    // (waking the sessions batch by batch) until a batch
                    // comes back short: it never waits on Redis backlogged.
                    let (mut rounds, mut taken) = (0, 1);
                    loop {
                        let more = popper.pop_more(BATCH).await;
                        let Some(layer) = inner.upgrade() else { return };
                        match more {
                            Ok((more, refused)) => {
                                let got = more.len();
                                taken += got;
                                for (member, score) in more {
                                    layer.dispatch(&member, score, &mut held);
                                }
                                if refused > 0 {
                                    layer.own_queue_refused(refused);
                                }
                                if got < BATCH {
                                    layer.backlog.set_queue_deep(false);
                                } else if taken >= deep_at {
                                    layer.backlog.set_queue_deep(true);
                                }
                                rounds += 1;
                                if got == 0 {
                                    break;
                                }
                                if rounds >= HOLD_ROUNDS {
                                    if !layer.backlog.is_queue_deep() {
                                        break;
                                    }
                                    held.release();
                                }
                            }
                            Err(error) => {
                                layer.backlog.set_queue_deep(false);
                                estuary_core::throttled!(
                                    warn,
                                    %error,
                                    key = %popper.key,
                                    "ZPOPMIN after a hit failed; if Redis ran it, up to {BATCH} messages \
                                     were lost with the reply. Check that Redis is reachable"
                                );
                                break;
                            }
                        }
                    }
                    held.release();
                }
            }
        }
    }
}

impl Inner {
    /// Receives on a plain channel (a worker queue).
    pub(super) async fn receive_plain(
        self: &Arc<Self>,
        channel: &ChannelName,
    ) -> Result<Message, ChannelLayerError> {
        let rx = {
            let mut plain = lock(&self.plain);
            plain
                .entry(channel.clone())
                .or_insert_with(|| {
                    let shard = &self.shards[self.shard(channel.as_str())];
                    // Lazy: this cannot fail for a client that was already opened.
                    let conn =
                        ConnectionManager::new_lazy_with_config(shard.client.clone(), self.blocking_config())
                            .unwrap_or_else(|_| shard.conn.clone());
                    Arc::new(PlainReceiver {
                        queue: LocalQueue::new(self.config.layer.capacity_for(channel.as_str())),
                        fetching: AtomicBool::new(false),
                        fetched: tokio::sync::Notify::new(),
                        conn,
                        token: self.shutdown.child_token(),
                    })
                })
                .clone()
        };
        loop {
            let fetched = rx.fetched.notified();
            tokio::pin!(fetched);
            fetched.as_mut().enable();
            // Fetch only for a receiver that finds nothing buffered, one pop
            // at a time, so an idle worker takes no messages from its peers.
            if rx.queue.is_empty() && !rx.fetching.swap(true, Ordering::AcqRel) {
                let key = self.channel_key(channel.as_str());
                tokio::spawn(fetch_one(Arc::downgrade(self), rx.clone(), key, rx.token.clone()));
            }
            tokio::select! {
                biased;
                popped = rx.queue.pop() => {
                    return popped
                        .ok_or_else(|| ChannelLayerError::ChannelClosed(channel.clone()))?
                        .map_err(|count| ChannelLayerError::Lost { count });
                }
                // Another receiver took what the fetch brought: fetch again.
                () = &mut fetched => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::member_score_pairs;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn zpopmin_answers_in_both_protocols() {
        let resp2 = Value::Array(vec![bulk("a"), bulk("1.5"), bulk("b"), bulk("2")]);
        let resp3 = Value::Array(vec![
            Value::Array(vec![bulk("a"), Value::Double(1.5)]),
            Value::Array(vec![bulk("b"), Value::Double(2.0)]),
        ]);
        let expected = vec![(b"a".to_vec(), 1.5), (b"b".to_vec(), 2.0)];
        assert_eq!(member_score_pairs(resp2), expected);
        assert_eq!(member_score_pairs(resp3), expected);
        assert!(member_score_pairs(Value::Array(vec![])).is_empty());
        assert!(member_score_pairs(Value::Nil).is_empty());
        // A malformed tail keeps what came before it.
        let odd = Value::Array(vec![bulk("a"), bulk("1"), bulk("b")]);
        assert_eq!(member_score_pairs(odd), vec![(b"a".to_vec(), 1.0)]);
    }
}
