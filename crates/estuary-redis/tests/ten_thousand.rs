//! 10,000 group messages through Redis to 100 members in two processes:
//! every member receives each exactly once, in order per sender.

use estuary_test_support::redis as common;

use std::sync::Arc;
use std::time::Duration;

use estuary_core::{ChannelLayer, ChannelLayerConfig, GroupName, Message};
use estuary_redis::{RedisChannelLayer, RedisConfig};

const MEMBERS: usize = 100;
const PER_SENDER: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn ten_thousand_group_messages_to_a_hundred_members() {
    let prefix = common::unique_prefix();
    // Capacities above the burst: this test checks delivery, not back-pressure
    // (which the conformance suite checks).
    let config = || {
        RedisConfig::new([common::SHARED_REDIS])
            .with_prefix(prefix.clone())
            .with_layer_config(ChannelLayerConfig::default().with_capacity(20_000))
    };
    let processes = [
        RedisChannelLayer::new(config()).unwrap(),
        RedisChannelLayer::new(config()).unwrap(),
    ];
    let group = GroupName::new("ten_thousand").unwrap();

    let mut receivers = Vec::new();
    for i in 0..MEMBERS {
        let layer = processes[i % 2].clone();
        let ch = layer.new_channel().await.unwrap();
        layer.group_add(&group, &ch).await.unwrap();
        receivers.push(tokio::spawn(async move {
            let mut next = [0u64; 2];
            for _ in 0..2 * PER_SENDER {
                let m = tokio::time::timeout(Duration::from_secs(60), layer.receive(&ch))
                    .await
                    .expect("a member stopped receiving")
                    .unwrap();
                let v = m.to_json();
                let sender = v["sender"].as_u64().unwrap() as usize;
                let n = v["n"].as_u64().unwrap();
                assert_eq!(
                    n, next[sender],
                    "member {i}: sender {sender} out of order or duplicated"
                );
                next[sender] += 1;
            }
            if let Ok(Ok(extra)) = tokio::time::timeout(Duration::from_millis(300), layer.receive(&ch)).await
            {
                panic!("member {i} got an extra message {extra:?}");
            }
            next
        }));
    }

    let group = Arc::new(group);
    let mut senders = Vec::new();
    for (sender, layer) in processes.iter().enumerate() {
        let layer = layer.clone();
        let group = group.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..PER_SENDER {
                let m =
                    Message::from_json(&serde_json::json!({"type": "load.tick", "sender": sender, "n": n}))
                        .unwrap();
                let report = layer.group_send(&group, m).await.unwrap();
                assert_eq!((report.delivered, report.dropped), (MEMBERS, 0));
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    for r in receivers {
        assert_eq!(r.await.unwrap(), [PER_SENDER, PER_SENDER]);
    }
    assert_eq!(processes[0].dropped() + processes[1].dropped(), 0);
}
