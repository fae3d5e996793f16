//! The in-memory layer's own behaviour, beyond the conformance suite.

use super::budget::MESSAGE_OVERHEAD;
use super::*;
use crate::layer::{
    ChannelLayer, ChannelLayerError, ChannelReceiver, GroupSendReport, ReceiverState, SendError,
};
use crate::message::Message;
use std::time::Duration;

fn msg(n: u32) -> Message {
    Message::from_json(&serde_json::json!({"type": "t", "n": n})).unwrap()
}

fn n(m: &Message) -> u64 {
    m.to_json()["n"].as_u64().unwrap()
}

#[tokio::test]
async fn closed_channel_ends_receive() {
    let layer = InMemoryChannelLayer::default();
    let ch = layer.new_channel().await.unwrap();
    let l2 = layer.clone();
    let c2 = ch.clone();
    let waiter = tokio::spawn(async move { l2.receive(&c2).await });
    tokio::task::yield_now().await;
    layer.close_channel(&ch).await;
    let res = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(res, Err(ChannelLayerError::ChannelClosed(_))));
}

#[tokio::test]
async fn closed_members_are_pruned_from_groups() {
    let layer = InMemoryChannelLayer::default();
    let g = GroupName::new("g").unwrap();
    let ch = layer.new_channel().await.unwrap();
    layer.group_add(&g, &ch).await.unwrap();
    layer.close_channel(&ch).await;
    assert_eq!(
        layer.group_send(&g, msg(1)).await.unwrap(),
        GroupSendReport::default()
    );
    assert_eq!(layer.group_size(&g), 0);
}

async fn member(layer: &InMemoryChannelLayer, g: &GroupName, state: ReceiverState) -> ChannelName {
    let ch = layer.new_channel().await.unwrap();
    layer.group_add(g, &ch).await.unwrap();
    layer.set_receiver(&ch, state);
    ch
}

#[tokio::test]
async fn a_live_member_behind_gets_everything_and_backlogs_the_layer() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(2));
    let g = GroupName::new("g").unwrap();
    let live = member(&layer, &g, ReceiverState::Live).await;
    for i in 0..5 {
        let report = layer.group_send(&g, msg(i)).await.unwrap();
        assert_eq!(
            report,
            GroupSendReport {
                delivered: 1,
                dropped: 0,
                position: None,
            }
        );
    }
    assert!(layer.backlogged(), "5 held for a capacity of 2");
    // A direct send still obeys the capacity (Channels' ChannelFull).
    assert!(layer.send(&live, msg(9)).await.unwrap_err().is_full());
    for i in 0..3 {
        assert_eq!(n(&layer.receive(&live).await.unwrap()), i);
    }
    assert!(layer.backlogged(), "at capacity, not yet back to half of it");
    assert_eq!(n(&layer.receive(&live).await.unwrap()), 3);
    assert!(!layer.backlogged(), "back to half the capacity");
    assert_eq!(layer.backlogged_time().1, 1, "one episode");
    tokio::time::timeout(Duration::from_secs(5), layer.relieved())
        .await
        .unwrap();
    assert_eq!(n(&layer.receive(&live).await.unwrap()), 4);
}

#[tokio::test]
async fn the_overflow_limit_and_stalled_and_detached_members_drop_when_full() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(2));
    let g = GroupName::new("g").unwrap();
    member(&layer, &g, ReceiverState::Live).await;
    member(&layer, &g, ReceiverState::Stalled).await;
    member(&layer, &g, ReceiverState::Detached).await;
    let mut delivered = 0;
    for i in 0..10 {
        delivered += layer.group_send(&g, msg(i)).await.unwrap().delivered;
    }
    // Live: 2 x 4 = 8; stalled and detached: their capacity, 2 each.
    assert_eq!(delivered, 8 + 2 + 2);
    assert_eq!(layer.dropped(), 30 - 12);
    assert!(layer.backlogged());
}

#[tokio::test]
async fn stalling_or_closing_a_backlogged_channel_relieves_the_layer() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(1));
    let g = GroupName::new("g").unwrap();
    let a = member(&layer, &g, ReceiverState::Live).await;
    let b = member(&layer, &g, ReceiverState::Live).await;
    for i in 0..3 {
        layer.group_send(&g, msg(i)).await.unwrap();
    }
    let waiter = {
        let layer = layer.clone();
        tokio::spawn(async move { layer.relieved().await })
    };
    layer.set_receiver(&a, ReceiverState::Stalled);
    assert!(layer.backlogged(), "b is still behind");
    layer.close_channel(&b).await;
    assert!(!layer.backlogged());
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    // Live again while still over capacity: backlogged again.
    layer.set_receiver(&a, ReceiverState::Live);
    assert!(layer.backlogged());
}

#[tokio::test]
async fn abandoned_worker_queues_are_swept() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_expiry(Duration::ZERO));
    for i in 0..5000 {
        let ch = ChannelName::new(&format!("w{i}")).unwrap();
        let _ = layer.send(&ch, msg(i)).await;
    }
    assert!(
        layer.inner.channels().len() < 2100,
        "{}",
        layer.inner.channels().len()
    );
    let ch = ChannelName::new("w1").unwrap();
    layer.send(&ch, msg(1)).await.unwrap_or_else(|_| panic!("send"));
    let _ = n;
}

/// Before: messages to worker channels nobody reads stayed in memory after
/// their expiry until the channel was used again (1.9 GB held 65 s later).
#[tokio::test(start_paused = true)]
async fn expired_messages_are_reclaimed_without_touching_their_queue() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_expiry(Duration::from_secs(60)));
    let big = Message::from_json(&serde_json::json!({"type": "x", "pad": "p".repeat(10_000)})).unwrap();
    for n in 0..1000 {
        let worker = ChannelName::new(&format!("unused{n}")).unwrap();
        layer.send(&worker, big.clone()).await.unwrap();
    }
    assert_eq!(layer.queued(), 1000);
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(layer.queued(), 1000, "not expired yet");
    // Expiry plus one reaper interval later, all of it is gone.
    tokio::time::sleep(Duration::from_secs(1) + REAP_INTERVAL).await;
    assert_eq!(layer.queued(), 0);
    assert_eq!(layer.inner.channels().len(), 0, "the abandoned queues too");
}

#[tokio::test(start_paused = true)]
async fn the_reaper_keeps_live_channels_and_stops_with_the_layer() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_expiry(Duration::from_secs(1)));
    let own = layer.new_channel().await.unwrap();
    let weak = Arc::downgrade(&layer.inner);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let say = Message::from_json(&serde_json::json!({"type": "x"})).unwrap();
    layer.send(&own, say).await.unwrap();
    assert_eq!(
        layer.receive(&own).await.unwrap().message_type(),
        "x",
        "its own channel outlived the reaps"
    );
    drop(layer);
    tokio::time::sleep(REAP_INTERVAL * 2).await;
    assert!(weak.upgrade().is_none(), "the reaper holds no strong reference");
}

#[tokio::test]
async fn callers_cannot_create_channels_past_the_limit() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_max_channels(3));
    let own = layer.new_channel().await.unwrap();
    for n in 0..2 {
        layer
            .send(&ChannelName::new(&format!("w{n}")).unwrap(), msg(n))
            .await
            .unwrap();
    }
    let err = layer
        .send(&ChannelName::new("w2").unwrap(), msg(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            SendError::Backend {
                error: ChannelLayerError::TooManyChannels { limit: 3 },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(n(&err.into_message()), 2, "the message comes back");
    let group = GroupName::new("g").unwrap();
    assert!(matches!(
        layer.group_add(&group, &ChannelName::new("w3").unwrap()).await,
        Err(ChannelLayerError::TooManyChannels { .. })
    ));
    // Existing channels still work, and the connections' own are never refused.
    layer
        .send(&ChannelName::new("w0").unwrap(), msg(9))
        .await
        .unwrap();
    let another = layer.new_channel().await.unwrap();
    layer.send(&another, msg(1)).await.unwrap();
    layer.send(&own, msg(1)).await.unwrap();
    // Own channels count: with four held, a drained worker queue is not
    // enough; once a connection closes too, the slot is free again.
    let w1 = ChannelName::new("w1").unwrap();
    layer.receive(&w1).await.unwrap();
    assert!(
        layer
            .send(&ChannelName::new("w2").unwrap(), msg(2))
            .await
            .is_err()
    );
    layer.close_channel(&another).await;
    layer
        .send(&ChannelName::new("w2").unwrap(), msg(2))
        .await
        .unwrap();
}

/// Group messages a full channel had no room for are reported to its bound
/// receiver (once, ahead of what is still queued), so its session can tell
/// the client instead of losing them silently.
#[tokio::test]
async fn a_bound_receiver_is_told_of_group_messages_lost_for_it() {
    let layer = InMemoryChannelLayer::new(ChannelLayerConfig::default().with_capacity(1));
    let me = layer.new_channel().await.unwrap();
    let group = GroupName::new("g").unwrap();
    layer.group_add(&group, &me).await.unwrap();
    for n in 0..3 {
        layer.group_send(&group, msg(n)).await.unwrap();
    }
    let mut receiver = layer.receiver(&me);
    let next = |r: &mut Box<dyn ChannelReceiver + '_>| {
        futures_util::FutureExt::now_or_never(std::future::poll_fn(|cx| r.poll_receive(cx)))
    };
    assert!(matches!(
        next(&mut receiver),
        Some(Err(ChannelLayerError::Lost { count: 2 }))
    ));
    assert_eq!(n(&next(&mut receiver).unwrap().unwrap()), 0);
    assert!(
        next(&mut receiver).is_none(),
        "reported once, then nothing queued"
    );
    // A direct send that does not fit is refused to its sender: not a loss.
    layer.send(&me, msg(5)).await.unwrap();
    assert!(layer.send(&me, msg(6)).await.is_err());
    assert_eq!(n(&next(&mut receiver).unwrap().unwrap()), 5);
}

/// The bytes the layer holds are bounded: a message is counted once
/// however many members (or sends) share it, given back when its last clone
/// is dropped (taken by its last member, or expired), and a send past the
/// bound is refused whole, the message handed back.
#[tokio::test(start_paused = true)]
async fn the_bytes_held_are_bounded_and_a_shared_message_counts_once() {
    let big = || Message::from_json(&serde_json::json!({"type": "x", "pad": "p".repeat(100_000)})).unwrap();
    let size = big().as_bytes().len() + MESSAGE_OVERHEAD;
    let layer = InMemoryChannelLayer::new(
        ChannelLayerConfig::default()
            .with_max_bytes(3 * size)
            .with_expiry(Duration::from_secs(60)),
    );
    let group = GroupName::new("room").unwrap();
    let mut members = Vec::new();
    for _ in 0..100 {
        let m = layer.new_channel().await.unwrap();
        layer.group_add(&group, &m).await.unwrap();
        members.push(m);
    }
    let report = layer.group_send(&group, big()).await.unwrap();
    assert_eq!(report.delivered, 100);
    assert_eq!(layer.held_bytes(), size, "100 members, one message's bytes");
    let worker = ChannelName::new("never-read").unwrap();
    layer.send(&worker, big()).await.unwrap();
    let twice = big();
    layer.send(&worker, twice.clone()).await.unwrap();
    layer.send(&worker, twice).await.unwrap();
    assert_eq!(layer.held_bytes(), 3 * size, "one message sent twice counts once");
    let err = layer.send(&worker, big()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            SendError::Backend {
                error: ChannelLayerError::TooManyBytes { limit },
                ..
            } if *limit == 3 * size
        ),
        "{err}"
    );
    assert_eq!(err.into_message(), big(), "the message comes back");
    assert!(matches!(
        layer.group_send(&group, big()).await,
        Err(ChannelLayerError::TooManyBytes { .. })
    ));
    assert_eq!(layer.refused(), 2);
    assert_eq!(layer.held_bytes(), 3 * size, "refusals hold nothing");
    // A group with no members stores nothing, and is not refused.
    let nobody = GroupName::new("nobody").unwrap();
    assert_eq!(layer.group_send(&nobody, big()).await.unwrap().delivered, 0);
    // The group message is given back by its last member only.
    for m in &members[..99] {
        layer.receive(m).await.unwrap();
    }
    assert_eq!(layer.held_bytes(), 3 * size);
    layer.receive(&members[99]).await.unwrap();
    assert_eq!(layer.held_bytes(), 2 * size);
    layer.group_send(&group, big()).await.unwrap();
    // Expired messages give their bytes back (the reaper, nobody reading).
    tokio::time::sleep(Duration::from_secs(61) + REAP_INTERVAL).await;
    assert_eq!(layer.held_bytes(), 0);
    layer.send(&worker, big()).await.unwrap();
}
