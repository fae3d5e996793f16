//! The conformance suite every [`ChannelLayer`] must pass.
//!
//! It checks the delivery contract written on `estuary_core::ChannelLayer`: order,
//! capacity, `Full` handing the message back, group sends skipping full
//! members, discard, expiry, group expiry, flush, cancel-safe receive and
//! per-channel capacities. Each check makes a fresh layer through your
//! factory, so a shared backend must give each call its own key prefix.
//!
//! The optional capabilities have suites of their own: [`presence`] for a
//! layer that tracks presence, [`history`] for one that records groups.
//!
//! ```
//! use estuary_core::InMemoryChannelLayer;
//! use estuary_testing::conformance::{self, PausedClock};
//!
//! #[tokio::test(start_paused = true)]
//! async fn in_memory_layer_conforms() {
//!     conformance::run_all(|config| async move { InMemoryChannelLayer::new(config) }, PausedClock).await;
//! }
//! # fn main() {}
//! ```

pub mod history;
pub mod presence;

use std::future::Future;
use std::time::Duration;

use estuary_core::{
    ChannelLayer, ChannelLayerConfig, ChannelLayerError, ChannelName, GroupName, Message, SendError,
};

/// How the suite lets time pass for the expiry checks.
pub trait Clock: Send + Sync {
    /// Lets `by` pass for the layer.
    fn advance(&self, by: Duration) -> impl Future<Output = ()> + Send;
}

/// Tokio's paused clock (`start_paused = true`): time jumps, nothing waits.
#[derive(Debug, Clone, Copy)]
pub struct PausedClock;

impl Clock for PausedClock {
    async fn advance(&self, by: Duration) {
        tokio::time::advance(by).await;
    }
}

/// The wall clock, for layers whose expiry lives outside the process (Redis).
#[derive(Debug, Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }
}

const WAIT: Duration = Duration::from_secs(5);

fn msg(n: u64) -> Message {
    Message::from_json(&serde_json::json!({"type": "test.message", "n": n})).expect("valid message")
}

fn n(message: &Message) -> u64 {
    message.to_json()["n"].as_u64().expect("n")
}

async fn recv<L: ChannelLayer>(layer: &L, channel: &ChannelName) -> Message {
    match tokio::time::timeout(WAIT, layer.receive(channel)).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => panic!("receive on {channel} failed: {e}"),
        Err(_) => panic!("nothing received on {channel} within {WAIT:?}"),
    }
}

/// Asserts that `channel` has nothing to receive right now. A layer must
/// answer at once when a message is stored; a short poll proves there is none.
async fn assert_empty<L: ChannelLayer>(layer: &L, channel: &ChannelName) {
    if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), layer.receive(channel)).await {
        panic!("expected nothing on {channel}, got {m:?} (n = {})", n(&m));
    }
}

fn group(name: &str) -> GroupName {
    GroupName::new(name).expect("valid group")
}

/// Runs every check.
pub async fn run_all<L, F, Fut, C>(make: F, clock: C)
where
    L: ChannelLayer,
    F: Fn(ChannelLayerConfig) -> Fut,
    Fut: Future<Output = L>,
    C: Clock,
{
    new_channels_are_unique(make(ChannelLayerConfig::default()).await).await;
    send_receive_in_order(make(ChannelLayerConfig::default()).await).await;
    capacity_full_hands_message_back(make(ChannelLayerConfig::default().with_capacity(3)).await).await;
    process_channel_never_exceeds_capacity(make(ChannelLayerConfig::default().with_capacity(3)).await).await;
    per_channel_capacity(
        make(
            ChannelLayerConfig::default()
                .with_capacity(5)
                .with_channel_capacity_glob("small.*", 1)
                .expect("glob"),
        )
        .await,
    )
    .await;
    group_send_reaches_members_only(make(ChannelLayerConfig::default()).await).await;
    group_send_skips_full_members(make(ChannelLayerConfig::default().with_capacity(1)).await).await;
    group_discard_stops_delivery(make(ChannelLayerConfig::default()).await).await;
    receive_is_cancel_safe(make(ChannelLayerConfig::default()).await).await;
    expired_messages_are_never_delivered(
        make(ChannelLayerConfig::default().with_expiry(Duration::from_secs(2))).await,
        &clock,
    )
    .await;
    group_membership_expires(
        make(ChannelLayerConfig::default().with_group_expiry(Duration::from_secs(2))).await,
        &clock,
    )
    .await;
    flush_removes_everything(make(ChannelLayerConfig::default()).await).await;
    closed_channels_stay_closed(make(ChannelLayerConfig::default()).await).await;
    one_order_per_group(make(ChannelLayerConfig::default()).await).await;
    a_bound_receiver_receives_as_receive_does(make(ChannelLayerConfig::default()).await).await;
    named_channel_receivers_compete(make(ChannelLayerConfig::default()).await).await;
}

/// Receivers waiting at once on one named channel (workers) compete: each
/// message reaches one of them, and each of them gets one.
pub async fn named_channel_receivers_compete<L: ChannelLayer>(layer: L) {
    let ch = ChannelName::new("conformance.workers").expect("name");
    let send = async {
        // Both receivers wait before anything is sent.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        for i in 0..2 {
            layer.send(&ch, msg(i)).await.expect("send");
        }
    };
    let (a, b, ()) = tokio::join!(recv(&layer, &ch), recv(&layer, &ch), send);
    let mut got = [n(&a), n(&b)];
    got.sort_unstable();
    assert_eq!(got, [0, 1], "each message to one receiver");
    assert_empty(&layer, &ch).await;
}

/// After `close_channel`, receiving fails with `ChannelClosed` and a later
/// send does not bring the channel back.
pub async fn closed_channels_stay_closed<L: ChannelLayer>(layer: L) {
    let room = group("conformance_closed");
    let ch = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &ch).await.expect("group_add");
    layer.close_channel(&ch).await;
    let _ = layer.send(&ch, msg(1)).await;
    let _ = layer.group_send(&room, msg(2)).await;
    match tokio::time::timeout(WAIT, layer.receive(&ch)).await {
        Ok(Err(estuary_core::ChannelLayerError::ChannelClosed(_))) => {}
        other => panic!("expected ChannelClosed, got {other:?}"),
    }
}

/// A receiver bound with `ChannelLayer::receiver` gets what `receive` would,
/// in order, loses nothing when a pending poll is abandoned, and fails with
/// `ChannelClosed` once the channel is closed, waking a pending poll.
pub async fn a_bound_receiver_receives_as_receive_does<L: ChannelLayer>(layer: L) {
    let room = group("conformance_bound");
    let ch = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &ch).await.expect("group_add");
    let mut receiver = layer.receiver(&ch);
    // Abandoned polls (cancel safety).
    for _ in 0..3 {
        let poll = std::future::poll_fn(|cx| receiver.poll_receive(cx));
        let _ = tokio::time::timeout(Duration::from_millis(10), poll).await;
    }
    for i in 0..5 {
        layer.send(&ch, msg(i)).await.expect("send");
    }
    layer.group_send(&room, msg(5)).await.expect("group_send");
    for i in 0..6 {
        let got = tokio::time::timeout(WAIT, std::future::poll_fn(|cx| receiver.poll_receive(cx)))
            .await
            .expect("a message in time")
            .expect("a message");
        assert_eq!(n(&got), i, "order through the bound receiver");
    }
    let pending = std::future::poll_fn(|cx| receiver.poll_receive(cx));
    let close = async {
        tokio::task::yield_now().await;
        layer.close_channel(&ch).await;
    };
    let (received, ()) = tokio::time::timeout(WAIT, async { tokio::join!(pending, close) })
        .await
        .expect("closing wakes a pending receive");
    assert!(
        matches!(received, Err(estuary_core::ChannelLayerError::ChannelClosed(_))),
        "expected ChannelClosed, got {received:?}"
    );
}

/// Concurrent group sends reach every member in one and the same order.
pub async fn one_order_per_group<L: ChannelLayer>(layer: L) {
    let room = group("conformance_order");
    let a = layer.new_channel().await.expect("new_channel");
    let b = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &a).await.expect("group_add");
    layer.group_add(&room, &b).await.expect("group_add");
    let sender = |base: u64| {
        let layer = &layer;
        let room = &room;
        async move {
            for i in 0..25 {
                layer.group_send(room, msg(base + i)).await.expect("group_send");
                tokio::task::yield_now().await;
            }
        }
    };
    tokio::join!(sender(0), sender(1000));
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..50 {
        seen_a.push(n(&recv(&layer, &a).await));
        seen_b.push(n(&recv(&layer, &b).await));
    }
    assert_eq!(seen_a, seen_b, "members saw different orders");
    for base in [0, 1000] {
        let mine: Vec<u64> = seen_a
            .iter()
            .copied()
            .filter(|v| (*v >= 1000) == (base == 1000))
            .collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one sender's messages out of order: {mine:?}"
        );
    }
}

/// `new_channel` gives distinct process-specific names.
pub async fn new_channels_are_unique<L: ChannelLayer>(layer: L) {
    let a = layer.new_channel().await.expect("new_channel");
    let b = layer.new_channel().await.expect("new_channel");
    assert_ne!(a, b);
    assert!(a.is_process_specific(), "{a} has no '!'");
    assert_eq!(a.non_local_name(), b.non_local_name(), "one process, one prefix");
}

/// Messages from one sender arrive in order, on process-specific and plain channels.
pub async fn send_receive_in_order<L: ChannelLayer>(layer: L) {
    let mine = layer.new_channel().await.expect("new_channel");
    let worker = ChannelName::new("conformance.worker").expect("name");
    for channel in [&mine, &worker] {
        for i in 0..10 {
            layer.send(channel, msg(i)).await.expect("send");
        }
        for i in 0..10 {
            assert_eq!(n(&recv(&layer, channel).await), i, "order on {channel}");
        }
        assert_empty(&layer, channel).await;
    }
}

/// `send` to a full channel fails with `Full` and hands the message back
/// (checked on a plain channel, which nobody drains while nobody receives).
pub async fn capacity_full_hands_message_back<L: ChannelLayer>(layer: L) {
    let ch = ChannelName::new("conformance.capacity").expect("name");
    for i in 0..3 {
        layer.send(&ch, msg(i)).await.expect("send under capacity");
    }
    match layer.send(&ch, msg(99)).await {
        Err(SendError::Full {
            message, capacity, ..
        }) => {
            assert_eq!(n(&message), 99, "the refused message is handed back");
            assert_eq!(capacity, 3);
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(n(&recv(&layer, &ch).await), 0);
    layer.send(&ch, msg(3)).await.expect("room again after a receive");
}

/// A process channel whose consumer does not read stays bounded: sends past
/// its capacity fail with `Full` (when the layer can tell) or are dropped,
/// and then reported to the receiver as `Lost`.
/// A layer with a shared per-process queue in front of the channel's own
/// buffer (Redis) may hold up to twice the capacity; what arrives is in
/// order and never duplicated.
pub async fn process_channel_never_exceeds_capacity<L: ChannelLayer>(layer: L) {
    let ch = layer.new_channel().await.expect("new_channel");
    for i in 0..10 {
        match layer.send(&ch, msg(i)).await {
            Ok(()) | Err(SendError::Full { .. }) => {}
            Err(e) => panic!("send failed: {e}"),
        }
    }
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(300), layer.receive(&ch)).await {
            Ok(Ok(m)) => got.push(n(&m)),
            // A layer that dropped messages for the channel says so once,
            // ahead of what it still holds.
            Ok(Err(ChannelLayerError::Lost { count })) => assert!(count > 0),
            _ => break,
        }
    }
    assert_eq!(
        got.get(..3),
        Some(&[0, 1, 2][..]),
        "the first messages are kept, in order: {got:?}"
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {got:?}"
    );
    assert!(got.len() <= 6, "bounded by capacity: {got:?}");
}

/// Per-pattern capacities override the default.
pub async fn per_channel_capacity<L: ChannelLayer>(layer: L) {
    let small = ChannelName::new("small.queue").expect("name");
    layer.send(&small, msg(0)).await.expect("send");
    assert!(layer.send(&small, msg(1)).await.is_err_and(|e| e.is_full()));
    let big = ChannelName::new("big.queue").expect("name");
    for i in 0..5 {
        layer.send(&big, msg(i)).await.expect("send");
    }
    assert!(layer.send(&big, msg(5)).await.is_err_and(|e| e.is_full()));
}

/// A group send reaches every member, once, and nobody else.
pub async fn group_send_reaches_members_only<L: ChannelLayer>(layer: L) {
    let room = group("conformance_room");
    let other = group("conformance_other");
    let a = layer.new_channel().await.expect("new_channel");
    let b = layer.new_channel().await.expect("new_channel");
    let c = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &a).await.expect("group_add");
    layer.group_add(&room, &b).await.expect("group_add");
    layer
        .group_add(&room, &b)
        .await
        .expect("adding twice is a renewal");
    layer.group_add(&other, &c).await.expect("group_add");
    let report = layer.group_send(&room, msg(7)).await.expect("group_send");
    assert_eq!(report.dropped, 0);
    for ch in [&a, &b] {
        assert_eq!(n(&recv(&layer, ch).await), 7);
        assert_empty(&layer, ch).await;
    }
    assert_empty(&layer, &c).await;
    let empty = layer
        .group_send(&group("conformance_nobody"), msg(1))
        .await
        .expect("group_send");
    assert_eq!(empty.delivered, 0);
}

/// A full member is skipped; the others still receive. A layer that can see
/// the member's queue counts the skip in the report (the in-memory layer
/// does; a Redis process drops it from its local buffer instead). Either
/// way the skipped member is told: its next receive is `Lost`.
pub async fn group_send_skips_full_members<L: ChannelLayer>(layer: L) {
    let room = group("conformance_full");
    let slow = layer.new_channel().await.expect("new_channel");
    let fast = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &slow).await.expect("group_add");
    layer.group_add(&room, &fast).await.expect("group_add");
    layer.group_send(&room, msg(1)).await.expect("group_send");
    assert_eq!(n(&recv(&layer, &fast).await), 1);
    let report = layer.group_send(&room, msg(2)).await.expect("group_send");
    assert!(report.dropped <= 1, "{report:?}");
    assert_eq!(n(&recv(&layer, &fast).await), 2);
    match tokio::time::timeout(WAIT, layer.receive(&slow)).await {
        Ok(Err(ChannelLayerError::Lost { count: 1 })) => {}
        other => panic!("the skipped member is told of its loss first, got {other:?}"),
    }
    assert_eq!(n(&recv(&layer, &slow).await), 1);
    assert_empty(&layer, &slow).await;
}

/// Flow control (see [`ChannelLayer`]): a [`ReceiverState::Live`] member
/// that is behind (its session has not caught up) is not skipped: it holds
/// up to [`OVERFLOW_FACTOR`] times its capacity, and the layer is
/// [`backlogged`](ChannelLayer::backlogged) until it is back to half of it
/// ([`relieved`](ChannelLayer::relieved) then completes). A detached
/// member keeps the plain capacity and is told what it missed, first.
/// The layer must be made with a capacity of 4.
///
/// [`ReceiverState::Live`]: estuary_core::ReceiverState::Live
/// [`OVERFLOW_FACTOR`]: estuary_core::OVERFLOW_FACTOR
pub async fn a_live_member_behind_loses_nothing<L: ChannelLayer>(layer: L) {
    const CAPACITY: usize = 4;
    let room = group("conformance_behind");
    let live = layer.new_channel().await.expect("new_channel");
    let detached = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &live).await.expect("group_add");
    layer.group_add(&room, &detached).await.expect("group_add");
    layer.set_receiver(&live, estuary_core::ReceiverState::Live);
    let limit = CAPACITY * estuary_core::OVERFLOW_FACTOR;
    for i in 0..limit {
        layer.group_send(&room, msg(i as u64)).await.expect("group_send");
    }
    // A layer behind Redis holds the messages once its receive side has
    // them: backlogged has no event to wait on, so it is polled (bounded).
    let backlogged = async {
        while !layer.backlogged() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(WAIT, backlogged)
        .await
        .expect("the layer backlogged while a live member holds more than its capacity");
    for i in 0..limit {
        assert_eq!(
            n(&recv(&layer, &live).await),
            i as u64,
            "the live member loses nothing"
        );
    }
    assert!(!layer.backlogged(), "caught up");
    tokio::time::timeout(WAIT, layer.relieved())
        .await
        .expect("relieved once caught up");
    match tokio::time::timeout(WAIT, layer.receive(&detached)).await {
        Ok(Err(ChannelLayerError::Lost { count })) => {
            assert_eq!(
                count as usize,
                limit - CAPACITY,
                "what the detached member missed"
            )
        }
        other => panic!("the detached member is told of its loss first, got {other:?}"),
    }
    for i in 0..CAPACITY {
        assert_eq!(n(&recv(&layer, &detached).await), i as u64);
    }
    assert_empty(&layer, &detached).await;
}

/// After `group_discard`, the channel gets no group messages.
pub async fn group_discard_stops_delivery<L: ChannelLayer>(layer: L) {
    let room = group("conformance_discard");
    let a = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &a).await.expect("group_add");
    layer.group_discard(&room, &a).await.expect("group_discard");
    layer
        .group_discard(&room, &a)
        .await
        .expect("discarding a non-member is fine");
    layer.group_send(&room, msg(1)).await.expect("group_send");
    assert_empty(&layer, &a).await;
}

/// A receive dropped before completion loses nothing.
pub async fn receive_is_cancel_safe<L: ChannelLayer>(layer: L) {
    let ch = layer.new_channel().await.expect("new_channel");
    for _ in 0..3 {
        let _ = tokio::time::timeout(Duration::from_millis(10), layer.receive(&ch)).await;
    }
    layer.send(&ch, msg(5)).await.expect("send");
    assert_eq!(n(&recv(&layer, &ch).await), 5);
}

/// Messages older than the expiry are never delivered (layer expiry 2 s).
pub async fn expired_messages_are_never_delivered<L: ChannelLayer, C: Clock>(layer: L, clock: &C) {
    let ch = layer.new_channel().await.expect("new_channel");
    let room = group("conformance_expiry");
    layer.group_add(&room, &ch).await.expect("group_add");
    layer.send(&ch, msg(1)).await.expect("send");
    layer.group_send(&room, msg(2)).await.expect("group_send");
    clock.advance(Duration::from_millis(3100)).await;
    layer.send(&ch, msg(3)).await.expect("send");
    assert_eq!(n(&recv(&layer, &ch).await), 3, "expired messages must be skipped");
    assert_empty(&layer, &ch).await;
}

/// Memberships lapse after the group expiry (2 s) unless renewed; the
/// memberships of this process's open channels are kept alive by the layer,
/// so a long-lived connection never silently leaves its groups.
pub async fn group_membership_expires<L: ChannelLayer, C: Clock>(layer: L, clock: &C) {
    let room = group("conformance_group_expiry");
    let stale = ChannelName::new("conformance.stale").expect("name");
    let renewed = ChannelName::new("conformance.renewed").expect("name");
    let live = layer.new_channel().await.expect("new_channel");
    for ch in [&stale, &renewed, &live] {
        layer.group_add(&room, ch).await.expect("group_add");
    }
    clock.advance(Duration::from_millis(1500)).await;
    layer.group_add(&room, &renewed).await.expect("renew");
    clock.advance(Duration::from_millis(1500)).await;
    layer.group_send(&room, msg(4)).await.expect("group_send");
    assert_eq!(n(&recv(&layer, &renewed).await), 4);
    assert_eq!(
        n(&recv(&layer, &live).await),
        4,
        "an open channel keeps its membership"
    );
    assert_empty(&layer, &stale).await;
}

/// `flush` removes messages and groups.
pub async fn flush_removes_everything<L: ChannelLayer>(layer: L) {
    let room = group("conformance_flush");
    let ch = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &ch).await.expect("group_add");
    layer.send(&ch, msg(1)).await.expect("send");
    layer.flush().await.expect("flush");
    layer.group_send(&room, msg(2)).await.expect("group_send");
    assert_empty(&layer, &ch).await;
}
