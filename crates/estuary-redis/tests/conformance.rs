//! The Redis layer passes the conformance suite: against the shared Redis
//! with a unique prefix, and against a ring of two redis-servers it starts.

use estuary_test_support::redis as common;

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
