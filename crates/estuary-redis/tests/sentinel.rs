//! Both Redis layers on a primary found through Sentinel, across a
//! failover (`SENTINEL FAILOVER`): group sends reach the members before it
//! and again after it, and a member that may have missed a message in
//! between is told (`Lost`), never left behind silently.

use std::time::Duration;

use estuary_core::{ChannelLayer, ChannelLayerError, ChannelLayerHandle, ChannelName, GroupName, Message};
use estuary_redis::{RedisChannelLayer, RedisConfig, RedisPubSubChannelLayer};
use estuary_test_support::eventually::poll_async;
use estuary_test_support::redis as common;
use estuary_test_support::sentinel::SentinelSetup;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

fn message(n: u64) -> Message {
    Message::from_json(&json!({"type": "chat.message", "n": n})).unwrap()
}

/// What `member` receives next: the `n` of a message, or `None` when it is
/// told it may have missed some.
async fn next(layer: &ChannelLayerHandle, member: &ChannelName) -> Option<u64> {
    match tokio::time::timeout(LIMIT, layer.receive(member))
        .await
        .expect("a receive within 30 s")
    {
        Ok(m) => m.to_json()["n"].as_u64(),
        Err(ChannelLayerError::Lost { .. }) => None,
        Err(other) => panic!("receive: {other}"),
    }
}

async fn across_a_failover(layers: [ChannelLayerHandle; 2], mut sentinel: SentinelSetup) {
    let [sender, receiver] = layers;
    let group = GroupName::new("room").unwrap();
    let member = receiver.new_channel().await.unwrap();
    receiver.group_add(&group, &member).await.unwrap();
    // Before: every message arrives, in order.
    for n in 0..5 {
        sender.group_send(&group, message(n)).await.unwrap();
        assert_eq!(next(&receiver, &member).await, Some(n));
    }
    sentinel.failover().await;
    sentinel.wait_for("+switch-master").await;
    // After: a send succeeds again and reaches the member; whatever the
    // member got in between came in order or was reported missed.
    delivered_again(&sender, &receiver, &group, &member, 100).await;
    assert!(
        !sentinel.logged("+convert-to-slave"),
        "the layers followed the announcement, before the former primary was made a replica"
    );
    // The former primary made a replica: its clients are dropped (the
    // pub/sub layer's subscriber among them, which reconnects to the new
    // primary and tells its members), and sends reach the member again.
    sentinel.wait_for("+convert-to-slave").await;
    delivered_again(&sender, &receiver, &group, &member, 1000).await;
}

/// Sends to `group` (numbers from `from`) until a send reaches a process,
/// then receives on `member` up to that message: what came before it came
/// in order, or the member was told it missed some. A message reported
/// delivered may be among those the member is then told it missed (the
/// subscriber that took it was leaving the former primary): then it sends
/// again.
async fn delivered_again(
    sender: &ChannelLayerHandle,
    receiver: &ChannelLayerHandle,
    group: &GroupName,
    member: &ChannelName,
    from: u64,
) {
    let mut n = from;
    let mut last = from;
    for _ in 0..20 {
        let delivered = poll_async(
            "a group send that reaches a process",
            LIMIT,
            Duration::from_millis(50),
            || {
                n += 1;
                let sent = n;
                let (sender, group) = (sender.clone(), group.clone());
                async move {
                    match sender.group_send(&group, message(sent)).await {
                        Ok(report) if report.delivered > 0 => Some(sent),
                        _ => None,
                    }
                }
            },
        )
        .await;
        loop {
            match next(receiver, member).await {
                Some(got) if got == delivered => return,
                Some(got) => {
                    assert!(
                        got > last && got < delivered,
                        "{got} after {last}, before {delivered}"
                    );
                    last = got;
                }
                None => {
                    println!("the member was told it may have missed messages");
                    break;
                }
            }
        }
    }
    panic!("told of missed messages 20 times in a row");
}

fn config(sentinel: &SentinelSetup, prefix: &str) -> RedisConfig {
    RedisConfig::new([sentinel.url()]).with_prefix(prefix.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server and redis-sentinel binaries (scripts/install-sentinel.sh)"]
async fn the_core_layer_follows_a_failover() {
    let sentinel = SentinelSetup::start().await;
    let prefix = common::unique_prefix();
    let layers =
        [0, 1].map(|_| ChannelLayerHandle::new(RedisChannelLayer::new(config(&sentinel, &prefix)).unwrap()));
    across_a_failover(layers, sentinel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server and redis-sentinel binaries (scripts/install-sentinel.sh)"]
async fn the_pubsub_layer_follows_a_failover() {
    let sentinel = SentinelSetup::start().await;
    let prefix = common::unique_prefix();
    let layers = [0, 1]
        .map(|_| ChannelLayerHandle::new(RedisPubSubChannelLayer::new(config(&sentinel, &prefix)).unwrap()));
    across_a_failover(layers, sentinel).await;
}
