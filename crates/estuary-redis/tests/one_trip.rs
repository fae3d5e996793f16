//! The group send in one round trip (one host, no encryption): what it
//! stores for another process is byte for byte the channels_redis form the
//! general path writes (a Django process reads it), with and without
//! recording; and this process's connections keep the flow-control rule:
//! a live member that is merely behind loses nothing, and the layer is
//! backlogged until it catches up.

use estuary_test_support::eventually::poll;
use estuary_test_support::redis as common;

use std::time::Duration;

use estuary_core::{
    ChannelLayer, ChannelLayerConfig, ChannelName, GroupName, Message, OVERFLOW_FACTOR, POSITION_KEY,
    ReceiverState,
};
use estuary_redis::fuzzing::{decode_member, encode_member};
use estuary_redis::{RedisChannelLayer, RedisConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);
/// The random prefix of a stored member.
const RANDOM: usize = 12;

fn layer(prefix: &str, config: ChannelLayerConfig) -> RedisChannelLayer {
    RedisChannelLayer::new(
        RedisConfig::new([common::SHARED_REDIS])
            .with_prefix(prefix)
            .with_layer_config(config),
    )
    .expect("layer")
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::SHARED_REDIS)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

async fn stored(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<Vec<u8>> {
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("ZRANGE")
}

/// Another process's two channels (as a Django process names them).
fn foreign() -> (ChannelName, ChannelName) {
    (
        ChannelName::new("specific.0123456789abcdef0123456789abcdef!aaaa").unwrap(),
        ChannelName::new("specific.0123456789abcdef0123456789abcdef!bbbb").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn another_process_gets_the_channels_redis_form_byte_for_byte() {
    let prefix = common::unique_prefix();
    let config = ChannelLayerConfig::default()
        .with_history_glob(
            "recorded_*",
            estuary_core::HistoryConfig::new(10, Duration::from_secs(60)),
        )
        .expect("pattern");
    let layer = layer(&prefix, config);
    let (a, b) = foreign();
    let queue = format!("{prefix}{}", a.non_local_name());
    let mut conn = redis().await;
    // Long enough for a str8 (names of 32 characters and more) and a
    // 16-bit array header would need 16 members; two cover the rest.
    let message =
        Message::from_json(&json!({"type": "chat.message", "text": "x".repeat(40), "n": 7})).unwrap();
    for (room, recorded) in [("plain_room", false), ("recorded_room", true)] {
        let room = GroupName::new(room).unwrap();
        layer.group_add(&room, &a).await.unwrap();
        layer.group_add(&room, &b).await.unwrap();
        let report = layer.group_send(&room, message.clone()).await.unwrap();
        assert_eq!((report.delivered, report.dropped), (2, 0), "{report:?}");
        assert_eq!(report.position.is_some(), recorded);
        let members = stored(&mut conn, &queue).await;
        assert_eq!(members.len(), 1, "one payload for the process");
        let sent = match report.position {
            Some(at) => message.with_position(at),
            None => message.clone(),
        };
        // The general path's bytes (and channels_redis's): the message, the
        // position when recorded, then `__asgi_channel__` with both names.
        let expected = encode_member(&sent, &[a.clone(), b.clone()], true, None);
        assert_eq!(&members[0][RANDOM..], &expected[RANDOM..], "room {room}");
        let (decoded, targets) = decode_member(&members[0], None).unwrap();
        assert_eq!(targets, vec![a.clone(), b.clone()]);
        assert_eq!(decoded.to_json()["text"], "x".repeat(40));
        assert_eq!(decoded.to_json().get(POSITION_KEY).is_some(), recorded);
        let _: () = redis::cmd("DEL")
            .arg(&queue)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    layer.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_live_member_that_is_behind_loses_nothing() {
    let prefix = common::unique_prefix();
    let capacity = 4;
    let layer = layer(&prefix, ChannelLayerConfig::default().with_capacity(capacity));
    let room = GroupName::new("busy_room").unwrap();
    let (live, detached) = (
        layer.new_channel().await.unwrap(),
        layer.new_channel().await.unwrap(),
    );
    layer.group_add(&room, &live).await.unwrap();
    layer.group_add(&room, &detached).await.unwrap();
    layer.set_receiver(&live, ReceiverState::Live);
    let limit = capacity * OVERFLOW_FACTOR;
    for n in 0..limit {
        let report = layer
            .group_send(&room, Message::from_json(&json!({"type": "t", "n": n})).unwrap())
            .await
            .unwrap();
        assert_eq!(report.dropped, 0, "the process's queue runs ahead: {report:?}");
    }
    // Everything the receive task popped is in the buffers: the live one
    // holds all of it (and the layer is backlogged), the detached one its
    // capacity.
    poll("the layer backlogged", WAIT, Duration::from_millis(1), || {
        layer.backlogged().then_some(())
    })
    .await;
    let mut receiver = layer.receiver(&live);
    for n in 0..limit {
        let got = tokio::time::timeout(WAIT, std::future::poll_fn(|cx| receiver.poll_receive(cx)))
            .await
            .expect("in time")
            .expect("a message, not a loss");
        assert_eq!(got.to_json()["n"], n);
    }
    assert!(!layer.backlogged(), "caught up");
    tokio::time::timeout(WAIT, layer.relieved())
        .await
        .expect("relieved");
    drop(receiver);
    // The detached member kept the plain capacity: it is told what it
    // missed first, then gets what its buffer held.
    match tokio::time::timeout(WAIT, layer.receive(&detached))
        .await
        .expect("in time")
    {
        Err(estuary_core::ChannelLayerError::Lost { count }) => {
            assert_eq!(count as usize, limit - capacity)
        }
        other => panic!("expected the loss first, got {other:?}"),
    }
    for n in 0..capacity {
        let got = tokio::time::timeout(WAIT, layer.receive(&detached))
            .await
            .expect("in time")
            .expect("a message");
        assert_eq!(got.to_json()["n"], n);
    }
    layer.flush().await.unwrap();
}
