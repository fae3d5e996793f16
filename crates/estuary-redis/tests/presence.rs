//! Presence and history faults over Redis, beyond the conformance suites:
//! presence keys lost in Redis are written back by the process that holds
//! them, a presence key written over affects only its group, and history
//! keys lost in Redis start a new epoch.

use estuary_test_support::redis as common;

use std::time::Duration;

use estuary_core::{
    ChannelLayer, ChannelLayerConfig, GroupName, HistoryConfig, Message, PresenceConfig, PresenceKey,
    PresenceMeta, Recovery, Unrecoverable,
};
use estuary_redis::{RedisChannelLayer, RedisConfig};
use estuary_testing::conformance::presence::next_diff;

fn layer(prefix: &str) -> RedisChannelLayer {
    let config = ChannelLayerConfig::default()
        .with_presence(
            PresenceConfig::default()
                .with_interval(Duration::from_millis(20))
                .with_timeout(Duration::from_secs(3))
                .with_refresh(Duration::from_millis(200)),
        )
        .with_history_glob("hist_*", HistoryConfig::new(10, Duration::from_secs(60)))
        .expect("glob");
    let config = RedisConfig::new([common::SHARED_REDIS])
        .with_prefix(prefix)
        .with_layer_config(config);
    RedisChannelLayer::new(config).expect("layer")
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::SHARED_REDIS)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn presence_keys_lost_in_redis_are_written_back() {
    let prefix = common::unique_prefix();
    let layer = layer(&prefix);
    let presence = layer.presence().expect("presence");
    let room = GroupName::new("room").expect("group");
    let me = layer.new_channel().await.expect("new_channel");
    layer.group_add(&room, &me).await.expect("group_add");
    let ann = PresenceKey::new("ann").expect("key");
    presence
        .presence_join(&room, &me, &ann, &PresenceMeta::default())
        .await
        .expect("join");
    assert!(next_diff(&layer, &me).await.joins.contains_key(&ann));

    let mut conn = redis().await;
    let base = format!("{prefix}:presence:room");
    redis::cmd("DEL")
        .arg(format!("{base}:c"))
        .arg(format!("{base}:h"))
        .query_async::<()>(&mut conn)
        .await
        .expect("DEL");
    assert_eq!(presence.presence_count(&room).await.expect("count").keys, 0);
    // The next renewal finds the connection missing and joins it again.
    let diff = next_diff(&layer, &me).await;
    assert!(diff.joins.contains_key(&ann), "joined again: {diff:?}");
    let list = presence.presence_list(&room).await.expect("list");
    assert_eq!((list.keys(), list.connections()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_presence_key_written_over_affects_only_its_group() {
    let prefix = common::unique_prefix();
    let layer = layer(&prefix);
    let presence = layer.presence().expect("presence");
    let (spoiled, fine) = (
        GroupName::new("spoiled").expect("group"),
        GroupName::new("fine").expect("group"),
    );
    let me = layer.new_channel().await.expect("new_channel");
    // A member of both: the renewal task sweeps both groups, in one batch.
    layer.group_add(&spoiled, &me).await.expect("group_add");
    layer.group_add(&fine, &me).await.expect("group_add");
    let mut conn = redis().await;
    redis::cmd("SET")
        .arg(format!("{prefix}:presence:spoiled:c"))
        .arg("not a sorted set")
        .query_async::<()>(&mut conn)
        .await
        .expect("SET");
    let bob = PresenceKey::new("bob").expect("key");
    assert!(
        presence
            .presence_join(&spoiled, &me, &bob, &PresenceMeta::default())
            .await
            .is_err(),
        "the spoiled group's presence fails"
    );
    presence
        .presence_join(&fine, &me, &bob, &PresenceMeta::default())
        .await
        .expect("the other group's presence works");
    assert!(next_diff(&layer, &me).await.joins.contains_key(&bob));
    // Another process's presence in the fine group lapses (it dies): the
    // renewal of the batch holding both groups still takes it out and
    // announces it.
    let dying = self::layer(&prefix);
    let there = dying.new_channel().await.expect("new_channel");
    let gone = PresenceKey::new("gone").expect("key");
    dying
        .presence()
        .expect("presence")
        .presence_join(&fine, &there, &gone, &PresenceMeta::default())
        .await
        .expect("join");
    assert!(next_diff(&layer, &me).await.joins.contains_key(&gone));
    drop(dying);
    let diff = next_diff(&layer, &me).await;
    assert!(diff.leaves.contains_key(&gone), "{diff:?}");
    assert_eq!(presence.presence_count(&fine).await.expect("count").keys, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn history_keys_lost_in_redis_start_a_new_epoch() {
    let prefix = common::unique_prefix();
    let layer = layer(&prefix);
    let history = layer.history().expect("history");
    let room = GroupName::new("hist_room").expect("group");
    let m = Message::from_json(&serde_json::json!({"type": "note"})).expect("message");
    let before = layer
        .group_send(&room, m.clone())
        .await
        .expect("group_send")
        .position
        .expect("position");
    let mut conn = redis().await;
    redis::cmd("DEL")
        .arg(format!("{prefix}:history:hist_room"))
        .arg(format!("{prefix}:history:hist_room:meta"))
        .query_async::<()>(&mut conn)
        .await
        .expect("DEL");
    match history.history_since(&room, before).await.expect("since") {
        Recovery::Unrecoverable {
            reason: Unrecoverable::EpochChanged,
            position,
        } => {
            assert_ne!(position.epoch, before.epoch);
            assert_eq!(position.offset, 0);
        }
        other => panic!("expected EpochChanged, got {other:?}"),
    }
    let after = layer
        .group_send(&room, m)
        .await
        .expect("group_send")
        .position
        .expect("position");
    assert_eq!(after.offset, 1);
    assert_ne!(after.epoch, before.epoch);
}
