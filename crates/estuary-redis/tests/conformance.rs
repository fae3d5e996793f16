//! The Redis layer passes the conformance suite: against the shared Redis
//! with a unique prefix, and against a ring of two redis-servers it starts.

use estuary_test_support::redis as common;

use std::time::Duration;

use estuary_core::{ChannelLayer, ChannelLayerConfig, GroupName, Message, PresenceConfig, Recovery};
use estuary_redis::{RedisChannelLayer, RedisConfig};
use estuary_testing::conformance::{self, WallClock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn one_host() {
    conformance::run_all(
        |layer| async move {
            let config = RedisConfig::new([common::SHARED_REDIS])
                .with_prefix(common::unique_prefix())
                .with_layer_config(layer);
            RedisChannelLayer::new(config).expect("layer")
        },
        WallClock,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary"]
async fn ring_of_two_hosts() {
    let a = common::RedisServer::start();
    let b = common::RedisServer::start();
    let hosts = [a.url(), b.url()];
    conformance::run_all(
        |layer| {
            let hosts = hosts.clone();
            async move {
                let config = RedisConfig::new(hosts)
                    .with_prefix(common::unique_prefix())
                    .with_layer_config(layer);
                RedisChannelLayer::new(config).expect("layer")
            }
        },
        WallClock,
    )
    .await;
}

fn layer_on(hosts: &[String], prefix: &str, config: ChannelLayerConfig) -> RedisChannelLayer {
    let config = RedisConfig::new(hosts.iter().cloned())
        .with_prefix(prefix)
        .with_layer_config(config);
    RedisChannelLayer::new(config).expect("layer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn presence_on_one_host() {
    let hosts = [common::SHARED_REDIS.to_owned()];
    conformance::presence::run_all(
        |config| {
            let hosts = hosts.clone();
            async move { layer_on(&hosts, &common::unique_prefix(), config) }
        },
        WallClock,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn history_on_one_host() {
    let hosts = [common::SHARED_REDIS.to_owned()];
    conformance::history::run_all(
        |config| {
            let hosts = hosts.clone();
            async move { layer_on(&hosts, &common::unique_prefix(), config) }
        },
        WallClock,
    )
    .await;
}

/// A process that dies without cleaning up (its layer dropped, its
/// channels never closed) loses its presences within the bound, and the
/// live process announces the leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_dead_process_loses_its_presence_on_one_host() {
    let hosts = [common::SHARED_REDIS.to_owned()];
    let prefix = common::unique_prefix();
    let config = ChannelLayerConfig::default().with_presence(
        PresenceConfig::default()
            .with_timeout(Duration::from_millis(1500))
            .with_refresh(Duration::from_millis(300))
            .with_interval(Duration::from_millis(50)),
    );
    let alive = layer_on(&hosts, &prefix, config.clone());
    let dying = layer_on(&hosts, &prefix, config.clone());
    conformance::presence::a_dead_process_loses_its_presence(alive, dying, &config, |dying| async move {
        drop(dying);
    })
    .await;
}

/// Two processes on one history share one order: offsets from both
/// senders interleave without gap or repeat, and a reader on either
/// recovers the same messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn two_processes_share_one_history() {
    let hosts = [common::SHARED_REDIS.to_owned()];
    let prefix = common::unique_prefix();
    let (a, b) = (
        layer_on(&hosts, &prefix, conformance::history::config()),
        layer_on(&hosts, &prefix, conformance::history::config()),
    );
    let room = GroupName::new("conformance_hist_shared").expect("group");
    let start = a
        .history()
        .expect("history")
        .history_position(&room)
        .await
        .expect("position");
    let m =
        |n: u64| Message::from_json(&serde_json::json!({"type": "test.message", "n": n})).expect("message");
    let mut offsets = Vec::new();
    for n in 1..=4u64 {
        let sender = if n % 2 == 0 { &b } else { &a };
        let report = sender.group_send(&room, m(n)).await.expect("group_send");
        let position = report.position.expect("position");
        assert_eq!(position.epoch, start.epoch, "one epoch for both processes");
        offsets.push(position.offset);
    }
    assert_eq!(offsets, (start.offset + 1..=start.offset + 4).collect::<Vec<_>>());
    for reader in [&a, &b] {
        let recovered = match reader
            .history()
            .expect("history")
            .history_since(&room, start)
            .await
            .expect("since")
        {
            Recovery::Recovered(r) => r,
            other => panic!("expected a recovery, got {other:?}"),
        };
        let ns: Vec<u64> = recovered
            .messages
            .iter()
            .map(|m| m.to_json()["n"].as_u64().expect("n"))
            .collect();
        assert_eq!(ns, [1, 2, 3, 4]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary"]
async fn presence_and_history_on_a_ring_of_two_hosts() {
    let a = common::RedisServer::start();
    let b = common::RedisServer::start();
    let hosts = [a.url(), b.url()];
    conformance::presence::run_all(
        |config| {
            let hosts = hosts.clone();
            async move { layer_on(&hosts, &common::unique_prefix(), config) }
        },
        WallClock,
    )
    .await;
    conformance::history::run_all(
        |config| {
            let hosts = hosts.clone();
            async move { layer_on(&hosts, &common::unique_prefix(), config) }
        },
        WallClock,
    )
    .await;
    let prefix = common::unique_prefix();
    let config = ChannelLayerConfig::default().with_presence(
        PresenceConfig::default()
            .with_timeout(Duration::from_millis(1500))
            .with_refresh(Duration::from_millis(300))
            .with_interval(Duration::from_millis(50)),
    );
    conformance::presence::a_dead_process_loses_its_presence(
        layer_on(&hosts, &prefix, config.clone()),
        layer_on(&hosts, &prefix, config.clone()),
        &config,
        |dying| async move { drop(dying) },
    )
    .await;
}
