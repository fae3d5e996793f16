//! Faults in Redis never lose messages silently: a key written over affects
//! only itself, a lost group key is written back within the membership
//! check (and its members told), and a restart of Redis is reported to senders and recovered from
//! (memberships first, then healthy) within two seconds.

use estuary_test_support::redis as common;

use std::time::{Duration, Instant};

use estuary_core::{ChannelLayer, ChannelLayerError, ChannelName, GroupName, Message, SendError};
use estuary_redis::{RedisChannelLayer, RedisConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn msg(n: u64) -> Message {
    Message::from_json(&json!({"type": "fault.test", "n": n})).expect("message")
}

fn layer(url: &str, prefix: &str) -> RedisChannelLayer {
    RedisChannelLayer::new(RedisConfig::new([url]).with_prefix(prefix)).expect("layer")
}

async fn recv(layer: &RedisChannelLayer, channel: &ChannelName) -> u64 {
    let m = tokio::time::timeout(WAIT, layer.receive(channel))
        .await
        .expect("nothing received in time")
        .expect("receive");
    m.to_json()["n"].as_u64().expect("n")
}

async fn redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

/// Polls `ready` every 20 ms until it holds or `limit` passes; returns how long it took.
async fn wait_until<F: FnMut() -> bool>(limit: Duration, what: &str, mut ready: F) -> Duration {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_poisoned_member_affects_only_itself() {
    let prefix = common::unique_prefix();
    let (a, b) = (
        layer(common::SHARED_REDIS, &prefix),
        layer(common::SHARED_REDIS, &prefix),
    );
    let room = GroupName::new("room").unwrap();
    let (ca, cb) = (a.new_channel().await.unwrap(), b.new_channel().await.unwrap());
    // A member of a third process whose queue someone wrote over.
    let poisoned = ChannelName::new("specific.deadbeef!x").unwrap();
    for ch in [&ca, &cb, &poisoned] {
        a.group_add(&room, ch).await.unwrap();
    }
    let poisoned_key = format!("{prefix}specific.deadbeef!");
    let mut conn = redis(common::SHARED_REDIS).await;
    redis::cmd("SET")
        .arg(&poisoned_key)
        .arg("not a queue")
        .exec_async(&mut conn)
        .await
        .unwrap();

    let report = a.group_send(&room, msg(1)).await.expect("group_send");
    assert_eq!((report.delivered, report.dropped), (2, 1), "{report:?}");
    assert_eq!(recv(&a, &ca).await, 1);
    assert_eq!(recv(&b, &cb).await, 1);
    assert_eq!(a.poisoned(), 1);

    // A send to the poisoned channel itself: corrupt, not unavailable.
    let err = a.send(&poisoned, msg(2)).await.expect_err("poisoned");
    match &err {
        SendError::Backend {
            error: ChannelLayerError::Corrupt(e),
            ..
        } => assert!(e.to_string().contains(&poisoned_key), "{e}"),
        other => panic!("wrong error kind: {other:?}"),
    }
    assert_eq!(a.poisoned(), 2);
    assert_eq!(a.failed_sends(), 0, "nothing was unavailable");

    // A poisoned group key: the group send says so, with the right kind.
    let other = GroupName::new("other").unwrap();
    redis::cmd("SET")
        .arg(format!("{prefix}:group:other"))
        .arg("not a group")
        .exec_async(&mut conn)
        .await
        .unwrap();
    let err = a.group_send(&other, msg(3)).await.expect_err("poisoned group");
    assert!(matches!(err, ChannelLayerError::Corrupt(_)), "{err:?}");
    let err = a.group_add(&other, &ca).await.expect_err("poisoned group");
    assert!(matches!(err, ChannelLayerError::Corrupt(_)), "{err:?}");

    // The room still works.
    let report = b.group_send(&room, msg(4)).await.expect("group_send");
    assert_eq!((report.delivered, report.dropped), (2, 1));
    assert_eq!(recv(&a, &ca).await, 4);
    assert_eq!(recv(&b, &cb).await, 4);
    let _: () = redis::cmd("DEL")
        .arg(&poisoned_key)
        .arg(format!("{prefix}:group:other"))
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_poisoned_process_queue_is_taken_back() {
    let prefix = common::unique_prefix();
    let config = RedisConfig::new([common::SHARED_REDIS])
        .with_prefix(&prefix)
        .with_receive_timeout(Duration::from_secs(1));
    let a = RedisChannelLayer::new(config).expect("layer");
    let ca = a.new_channel().await.unwrap();
    let mut conn = redis(common::SHARED_REDIS).await;
    redis::cmd("SET")
        .arg(a.process_key())
        .arg("not a queue")
        .exec_async(&mut conn)
        .await
        .unwrap();
    // Sends fail (corrupt) until the receive loop takes its queue back.
    let start = Instant::now();
    loop {
        match a.send(&ca, msg(1)).await {
            Ok(()) => break,
            Err(SendError::Backend {
                error: ChannelLayerError::Corrupt(_),
                ..
            }) => {}
            Err(e) => panic!("wrong error: {e:?}"),
        }
        assert!(start.elapsed() < WAIT, "the queue was never taken back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The channel is told that it may have missed messages, then gets the next.
    let lost = tokio::time::timeout(WAIT, a.receive(&ca)).await.expect("in time");
    assert!(matches!(lost, Err(ChannelLayerError::Lost { .. })), "{lost:?}");
    assert_eq!(recv(&a, &ca).await, 1);
    assert!(a.poisoned() >= 1);
    assert!(a.is_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_deleted_group_key_is_written_again_within_the_check() {
    let prefix = common::unique_prefix();
    let a = layer(common::SHARED_REDIS, &prefix);
    // Another process sends (a send from `a` itself would find the loss at
    // once: see tests/hostile.rs).
    let other = layer(common::SHARED_REDIS, &prefix);
    let check = a.config().membership_check();
    let room = GroupName::new("room").unwrap();
    let ca = a.new_channel().await.unwrap();
    let cb = a.new_channel().await.unwrap();
    a.group_add(&room, &ca).await.unwrap();
    a.group_add(&room, &cb).await.unwrap();
    assert_eq!(other.group_send(&room, msg(0)).await.unwrap().delivered, 2);
    assert_eq!(recv(&a, &ca).await, 0);
    assert_eq!(recv(&a, &cb).await, 0);

    // Eviction, or someone's DEL.
    let mut conn = redis(common::SHARED_REDIS).await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:group:room"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let deleted = Instant::now();
    // Deliveries resume within the check interval plus a round trip.
    let mut n = 1;
    loop {
        let report = other.group_send(&room, msg(n)).await.expect("group_send");
        if report.delivered == 2 {
            break;
        }
        assert_eq!(report.delivered, 0, "all or nothing: {report:?}");
        assert!(
            deleted.elapsed() < check + Duration::from_secs(2),
            "memberships not written back within {check:?} (+2 s slack)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        n += 1;
    }
    let took = deleted.elapsed();
    println!("deliveries resumed {took:?} after the group key was deleted (check every {check:?})");
    // The members are told they may have missed messages, then get the next.
    for ch in [&ca, &cb] {
        let lost = tokio::time::timeout(WAIT, a.receive(ch)).await.expect("in time");
        assert!(matches!(lost, Err(ChannelLayerError::Lost { .. })), "{lost:?}");
        assert_eq!(recv(&a, ch).await, n);
    }
    assert_eq!(a.memberships_repaired(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary"]
async fn a_restart_is_reported_and_recovered_from_quickly() {
    let mut server = common::RedisServer::start();
    let (url, port) = (server.url(), server.port);
    let a = layer(&url, "asgi");
    let room = GroupName::new("room").unwrap();
    let ca = a.new_channel().await.unwrap();
    a.group_add(&room, &ca).await.unwrap();
    assert_eq!(a.group_send(&room, msg(0)).await.unwrap().delivered, 1);
    assert_eq!(recv(&a, &ca).await, 0);
    assert!(a.is_available());

    server.stop();
    wait_until(WAIT, "unavailable after Redis stopped", || !a.is_available()).await;
    // Sends fail, with an error, and are counted.
    let err = a.send(&ca, msg(1)).await.expect_err("Redis is down");
    assert!(
        matches!(
            err,
            SendError::Backend {
                error: ChannelLayerError::Unavailable(_),
                ..
            }
        ),
        "{err:?}"
    );
    let err = a.group_send(&room, msg(2)).await.expect_err("Redis is down");
    assert!(matches!(err, ChannelLayerError::Unavailable(_)), "{err:?}");
    assert_eq!(a.failed_sends(), 2);

    // Back, empty, on the same port.
    let _server = common::RedisServer::start_on(port);
    let back = Instant::now();
    let mut conn = redis(&url).await;
    let took = wait_until(Duration::from_secs(5), "healthy after the restart", || {
        a.is_healthy()
    })
    .await;
    println!("healthy {took:?} after Redis was back");
    // Memberships were written before the layer said healthy.
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg("asgi:group:room")
        .arg(ca.as_str())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(score.is_some(), "healthy before the memberships were written");
    assert!(
        back.elapsed() < Duration::from_secs(3),
        "healthy only {:?} after Redis was back (bound 2 s + slack)",
        back.elapsed()
    );
    // Redis came back empty: what other processes sent before the
    // membership was written again missed it, so it is told first.
    let told = tokio::time::timeout(WAIT, a.receive(&ca))
        .await
        .expect("told in time");
    assert!(matches!(told, Err(ChannelLayerError::Lost { .. })), "{told:?}");
    assert_eq!(a.losses_reported(), 1);
    // The existing member gets group sends without joining again.
    let report = a.group_send(&room, msg(3)).await.expect("group_send");
    assert_eq!(report.delivered, 1);
    assert_eq!(recv(&a, &ca).await, 3);
}

/// The layer's connections cut while Redis keeps its data (a network
/// blip): the layer restores, and finds nothing lost, so nobody is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary"]
async fn a_blip_that_kept_the_data_tells_nobody() {
    let server = common::RedisServer::start();
    let url = server.url();
    let (a, other) = (layer(&url, "asgi"), layer(&url, "asgi"));
    let room = GroupName::new("room").unwrap();
    let ca = a.new_channel().await.unwrap();
    a.group_add(&room, &ca).await.unwrap();
    let mut conn = redis(&url).await;
    for sent in 0..3u64 {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(killed > 0);
        // The layer reconnects; until it says healthy, sends may fail.
        wait_until(WAIT, "healthy after the blip", || a.is_healthy()).await;
        loop {
            match other.group_send(&room, msg(sent)).await {
                Ok(report) if report.delivered == 1 => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert_eq!(recv(&a, &ca).await, sent, "delivered, and no loss reported");
    }
    assert_eq!(a.losses_reported(), 0);
}

/// Messages for a connection's channel that its local buffer had no room
/// for (its session fell behind) are reported on its next receive, ahead
/// of what is still buffered: the session closes 1013 instead of the
/// client missing them silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_full_local_buffer_reports_its_losses_to_the_receiver() {
    let prefix = common::unique_prefix();
    let layer = RedisChannelLayer::new(
        RedisConfig::new([common::SHARED_REDIS])
            .with_prefix(&prefix)
            .with_layer_config(estuary_core::ChannelLayerConfig::default().with_capacity(5)),
    )
    .expect("layer");
    let me = layer.new_channel().await.unwrap();
    let room = GroupName::new("room").unwrap();
    layer.group_add(&room, &me).await.unwrap();
    // One at a time, each popped into the local buffer before the next:
    // the buffer holds 5, the rest are dropped there.
    for n in 0..12 {
        layer.group_send(&room, msg(n)).await.unwrap();
        wait_until(WAIT, "the receive loop takes the message", || {
            layer.dropped() + 5 > n
        })
        .await;
    }
    match tokio::time::timeout(WAIT, layer.receive(&me))
        .await
        .expect("in time")
    {
        Err(ChannelLayerError::Lost { count }) => assert_eq!(count, 7),
        other => panic!("expected the loss first, got {other:?}"),
    }
    assert_eq!(recv(&layer, &me).await, 0, "then what was buffered, in order");
}
