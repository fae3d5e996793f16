//! The pub/sub flavour: the parts of the conformance suite that pub/sub
//! semantics keep (nothing is stored, so no capacity, expiry or replay), and
//! interop with Python's `RedisPubSubChannelLayer`.

use estuary_test_support::probe;

use estuary_test_support::redis as common;

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
#[ignore = "needs Redis at 127.0.0.1:6379"]
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
#[ignore = "needs Redis at 127.0.0.1:6379"]
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
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn interop_with_python_pubsub() {
    interop(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn interop_with_python_pubsub_encrypted() {
    interop(Some("pubsub-secret")).await;
}

/// Longest any step of the subscriber tests may take.
const LIMIT: Duration = Duration::from_secs(20);

/// Polls `done` every 10 ms until it holds (a layer counter or health flag,
/// which has no event to wait on); fails after [`LIMIT`], naming `what`.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    estuary_test_support::eventually::poll(what, LIMIT, Duration::from_millis(10), || done().then_some(()))
        .await
}

fn numbered(n: usize) -> Message {
    Message::from_json(&json!({"type": "x", "n": n})).unwrap()
}

/// The subscriber of an idle process answers its keepalive pings (a
/// subscribed RESP2 connection answers `PING` with `["pong", ""]`), so it
/// is never dropped and made again, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn an_idle_subscriber_survives_its_keepalives() {
    let config = RedisConfig::new([common::SHARED_REDIS])
        .with_prefix(common::unique_prefix())
        .with_pubsub_keepalive(Duration::from_millis(100));
    let layer = RedisPubSubChannelLayer::new(config).unwrap();
    let g = GroupName::new("idle").unwrap();
    let me = layer.new_channel().await.unwrap();
    layer.group_add(&g, &me).await.unwrap();
    let from = layer.keepalive_pings();
    wait_for("five keepalive pings answered", || {
        layer.keepalive_pings() >= from + 6
    })
    .await;
    assert_eq!(
        layer.subscriber_reconnects(),
        0,
        "the keepalive dropped the subscriber"
    );
    for n in 0..20 {
        layer.group_send(&g, numbered(n)).await.unwrap();
    }
    for n in 0..20 {
        let m = tokio::time::timeout(LIMIT, layer.receive(&me))
            .await
            .expect("a message never came")
            .expect("receive failed");
        assert_eq!(m.to_json()["n"], n);
    }
    assert_eq!(layer.subscriber_reconnects(), 0);
}

/// A channel of `layer` whose own subscription is on host `shard` of two.
async fn channel_on(layer: &RedisPubSubChannelLayer, shard: usize) -> estuary_core::ChannelName {
    loop {
        let c = layer.new_channel().await.unwrap();
        if estuary_redis::shard_index(c.as_str(), 2) == shard {
            return c;
        }
        layer.close_channel(&c).await;
    }
}

/// A group whose Redis channel (`{prefix}__group__{name}`) is on host
/// `shard` of two.
fn group_on(prefix: &str, shard: usize) -> GroupName {
    (0..)
        .map(|i| format!("g{i}"))
        .find(|g| estuary_redis::shard_index(&format!("{prefix}__group__{g}"), 2) == shard)
        .map(|g| GroupName::new(&g).unwrap())
        .unwrap()
}

/// Losing one host's subscriber tells exactly the channels that received
/// through it (their own subscription, or a group's, on that host), once,
/// at their next receive; the others keep receiving. When the host is back,
/// its subscriptions are too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary"]
async fn a_lost_subscriber_is_reported_to_its_members_only() {
    let first = common::RedisServer::start();
    let mut second = common::RedisServer::start();
    let prefix = common::unique_prefix();
    let config = RedisConfig::new([first.url(), second.url()])
        .with_prefix(&prefix)
        .with_command_timeout(Duration::from_secs(1));
    let layer = RedisPubSubChannelLayer::new(config).unwrap();
    let (g0, g1) = (group_on(&prefix, 0), group_on(&prefix, 1));
    // x: own channel and group on the first host; y: own channel on the
    // first, group on the second; z: own channel on the second, group on
    // the first.
    let x = channel_on(&layer, 0).await;
    let y = channel_on(&layer, 0).await;
    let z = channel_on(&layer, 1).await;
    layer.group_add(&g0, &x).await.unwrap();
    layer.group_add(&g1, &y).await.unwrap();
    layer.group_add(&g0, &z).await.unwrap();
    wait_for("the layer connected", || layer.is_available()).await;

    second.stop();
    wait_for("the second host's subscriber lost", || {
        layer.subscriber_reconnects() == 1
    })
    .await;
    assert!(!layer.is_available());
    for c in [&y, &z] {
        let told = tokio::time::timeout(LIMIT, layer.receive(c))
            .await
            .expect("never told");
        assert!(
            matches!(told, Err(estuary_core::ChannelLayerError::Lost { count: 1 })),
            "{c}: {told:?}"
        );
    }
    // x received through the first host only: not told, still served.
    layer.group_send(&g0, numbered(1)).await.unwrap();
    for c in [&x, &z] {
        let m = tokio::time::timeout(LIMIT, layer.receive(c))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.to_json()["n"], 1, "{c}");
    }
    // While the host is down, nobody joins a group there (they would miss
    // messages untold), and leaving does not wait for it.
    let refused = layer.group_add(&g1, &x).await;
    assert!(
        matches!(refused, Err(estuary_core::ChannelLayerError::Unavailable(_))),
        "{refused:?}"
    );
    tokio::time::timeout(Duration::from_millis(500), layer.close_channel(&z))
        .await
        .expect("closing a channel waited for the lost host");

    let _second = common::RedisServer::start_on(second.port);
    wait_for("the second host's subscriber back", || layer.is_available()).await;
    assert_eq!(layer.subscriber_reconnects(), 1);
    layer.group_send(&g1, numbered(2)).await.unwrap();
    let m = tokio::time::timeout(LIMIT, layer.receive(&y))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.to_json()["n"], 2, "y's group subscription restored");
}

/// Flow control, as in the core flavour and in memory (the conformance
/// check): a live member that is behind loses nothing, the layer is
/// backlogged meanwhile, a detached member is told what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_live_member_that_is_behind_loses_nothing() {
    let config = RedisConfig::new([common::SHARED_REDIS])
        .with_prefix(common::unique_prefix())
        .with_layer_config(ChannelLayerConfig::default().with_capacity(4));
    conformance::a_live_member_behind_loses_nothing(RedisPubSubChannelLayer::new(config).expect("layer"))
        .await;
}
