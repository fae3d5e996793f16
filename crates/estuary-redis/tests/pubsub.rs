//! The pub/sub flavour: the parts of the conformance suite that pub/sub
//! semantics keep (nothing is stored, so no capacity, expiry or replay), and
//! interop with Python's `RedisPubSubChannelLayer`.

#[path = "../../../tests/support/probe.rs"]
mod probe;

mod common;

use std::time::Duration;

use estuary_core::{ChannelLayer, ChannelLayerConfig, GroupName, Message};
use estuary_redis::{RedisConfig, RedisPubSubChannelLayer};
use estuary_testing::conformance;
use probe::Probe;
use serde_json::json;

fn layer(prefix: &str, key: Option<&str>) -> RedisPubSubChannelLayer {
    let mut config = RedisConfig::new([common::SHARED_REDIS]).with_prefix(prefix);
    if let Some(k) = key {
        config = config.with_encryption_keys([k]);
    }
    RedisPubSubChannelLayer::new(config).expect("layer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applicable_conformance_checks() {
    let make = || layer(&common::unique_prefix(), None);
    conformance::group_send_reaches_members_only(make()).await;
    conformance::group_discard_stops_delivery(make()).await;
    conformance::receive_is_cancel_safe(make()).await;
    conformance::closed_channels_stay_closed(make()).await;
    conformance::one_order_per_group(make()).await;
    let l = make();
    let a = l.new_channel().await.unwrap();
    let b = l.new_channel().await.unwrap();
    assert_ne!(a, b);
    let _ = ChannelLayerConfig::default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_group() {
    let prefix = common::unique_prefix();
    let (a, b) = (layer(&prefix, None), layer(&prefix, None));
    let g = GroupName::new("shared").unwrap();
    let ca = a.new_channel().await.unwrap();
    let cb = b.new_channel().await.unwrap();
    a.group_add(&g, &ca).await.unwrap();
    b.group_add(&g, &cb).await.unwrap();
    let report = a
        .group_send(&g, Message::from_json(&json!({"type": "x", "n": 1})).unwrap())
        .await
        .unwrap();
    assert_eq!(report.delivered, 2, "two subscribed processes");
    for (l, c) in [(&a, &ca), (&b, &cb)] {
        let m = tokio::time::timeout(Duration::from_secs(10), l.receive(c))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.to_json()["n"], 1);
    }
}

async fn interop(key: Option<&str>) {
    let prefix = common::unique_prefix();
    let layer = layer(&prefix, key);
    let mut probe = Probe::new(common::SHARED_REDIS, &prefix, key);
    probe.layer_args.extend(["--layer".into(), "pubsub".into()]);

    // Estuary group_send → a Python consumer of the group.
    let listening = probe.start(
        "listen",
        &["--group", "chat_lobby", "--count", "2", "--timeout", "20"],
    );
    let python_channel = listening.ready["channel"].as_str().unwrap().to_owned();
    let g = GroupName::new("chat_lobby").unwrap();
    let mine = layer.new_channel().await.unwrap();
    layer.group_add(&g, &mine).await.unwrap();
    let msg =
        Message::from_json(&json!({"type": "chat.message", "message": "from rust", "username": "ferris"}))
            .unwrap();
    layer.group_send(&g, msg).await.unwrap();
    // Estuary send → the Python consumer's own channel.
    let direct = Message::from_json(&json!({"type": "probe.direct", "message": "to you"})).unwrap();
    layer
        .send(&estuary_core::ChannelName::new(&python_channel).unwrap(), direct)
        .await
        .unwrap();
    let (code, lines) = tokio::task::spawn_blocking(move || listening.finish())
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        lines[0],
        json!({"type": "chat.message", "message": "from rust", "username": "ferris"})
    );
    assert_eq!(lines[1]["message"], "to you");
    let own = tokio::time::timeout(Duration::from_secs(10), layer.receive(&mine))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        own.to_json()["message"],
        "from rust",
        "our own member gets it once, through Redis"
    );

    // Python group_send and send → Estuary.
    let python = probe.clone();
    let name = mine.to_string();
    tokio::task::spawn_blocking(move || {
        python.group_send(
            "chat_lobby",
            &json!({"type": "chat.message", "message": "from django"}),
        );
        let (code, err) = python.send(&name, &json!({"type": "probe.direct", "message": "direct"}), 1);
        assert_eq!(code, 0, "{err:?}");
    })
    .await
    .unwrap();
    for expected in ["from django", "direct"] {
        let m = tokio::time::timeout(Duration::from_secs(10), layer.receive(&mine))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.to_json()["message"], expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_with_python_pubsub() {
    interop(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_with_python_pubsub_encrypted() {
    interop(Some("pubsub-secret")).await;
}
