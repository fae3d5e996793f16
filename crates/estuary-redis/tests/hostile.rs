//! Values in Redis that no process could have written, and keys lost under
//! live members: one bad value skips only itself (counted, and removed when
//! no process could have written it), and a lost membership or process
//! queue is reported to the members who may have missed messages
//! (`ChannelLayerError::Lost` on their next receive), never silently.

use estuary_test_support::redis as common;

use std::time::{Duration, Instant};

use estuary_core::{ChannelLayer, ChannelLayerError, ChannelName, GroupName, Message};
use estuary_redis::{RedisChannelLayer, RedisConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn msg(n: u64) -> Message {
    Message::from_json(&json!({"type": "hostile.test", "n": n})).expect("message")
}

fn layer(prefix: &str) -> RedisChannelLayer {
    RedisChannelLayer::new(RedisConfig::new([common::SHARED_REDIS]).with_prefix(prefix)).expect("layer")
}

/// The next receive on `channel`: a message's `n`, or the loss reported.
async fn next(layer: &RedisChannelLayer, channel: &ChannelName) -> Result<u64, u64> {
    match tokio::time::timeout(WAIT, layer.receive(channel))
        .await
        .expect("nothing received in time")
    {
        Ok(m) => Ok(m.to_json()["n"].as_u64().expect("n")),
        Err(ChannelLayerError::Lost { count }) => Err(count),
        Err(e) => panic!("receive failed: {e}"),
    }
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::SHARED_REDIS)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

async fn zadd(conn: &mut redis::aio::MultiplexedConnection, key: &str, score: &str, member: &[u8]) {
    redis::cmd("ZADD")
        .arg(key)
        .arg(score)
        .arg(member)
        .exec_async(conn)
        .await
        .expect("ZADD");
}

async fn members(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<Vec<u8>> {
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("ZRANGE")
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_member_no_process_could_have_written_skips_only_itself() {
    let prefix = common::unique_prefix();
    let (a, b) = (layer(&prefix), layer(&prefix));
    let room = GroupName::new("chat_lobby").unwrap();
    let (ca, cb) = (a.new_channel().await.unwrap(), b.new_channel().await.unwrap());
    a.group_add(&room, &ca).await.unwrap();
    b.group_add(&room, &cb).await.unwrap();
    let key = format!("{prefix}:group:chat_lobby");
    let mut conn = redis().await;
    let now = format!("{}", now_secs());
    // The member: not UTF-8, scored inf (never pruned by expiry).
    zadd(&mut conn, &key, "inf", b"\xc3\x28").await;
    // Not a channel name any process accepts.
    zadd(&mut conn, &key, &now, b"two words!x").await;
    // A valid name with a score no process writes (channels_redis scores
    // with time.time()): it would never expire, and costs every send.
    zadd(&mut conn, &key, "inf", b"specific.nobody!x").await;
    zadd(&mut conn, &key, "-5", b"specific.negative!x").await;
    // A name Django accepts (Python's \w after the `!`) but Estuary cannot
    // address: skipped, and left in place (a Django process may own it).
    zadd(&mut conn, &key, &now, "specific.django!h\u{e9}llo".as_bytes()).await;

    for n in 0..3 {
        let report = a.group_send(&room, msg(n)).await.expect("the room still works");
        assert_eq!((report.delivered, report.dropped), (2, 0), "{report:?}");
        assert_eq!(next(&a, &ca).await, Ok(n));
        assert_eq!(next(&b, &cb).await, Ok(n));
    }
    // The four impossible ones were counted once and removed; the Django
    // name is skipped (and counted) on every send.
    assert_eq!(a.invalid_members(), 4 + 3, "counted");
    let left = members(&mut conn, &key).await;
    let mut left: Vec<String> = left
        .into_iter()
        .map(|m| String::from_utf8(m).expect("only UTF-8 left"))
        .collect();
    left.sort();
    let mut expected = vec![
        ca.to_string(),
        cb.to_string(),
        "specific.django!h\u{e9}llo".to_owned(),
    ];
    expected.sort();
    assert_eq!(left, expected, "exactly the impossible members were removed");
    // The other process sends to the room too.
    assert_eq!(b.group_send(&room, msg(9)).await.unwrap().delivered, 2);
    assert_eq!(next(&a, &ca).await, Ok(9));
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
}

/// Another process (here a second layer) sends to the room while its key
/// is gone: this process's members are told within the membership check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_deleted_group_key_is_reported_to_the_members_who_missed_messages() {
    let prefix = common::unique_prefix();
    let (a, other) = (layer(&prefix), layer(&prefix));
    let check = a.config().membership_check();
    let room = GroupName::new("room").unwrap();
    let (ca, cb) = (a.new_channel().await.unwrap(), a.new_channel().await.unwrap());
    a.group_add(&room, &ca).await.unwrap();
    a.group_add(&room, &cb).await.unwrap();
    assert_eq!(other.group_send(&room, msg(0)).await.unwrap().delivered, 2);
    assert_eq!(next(&a, &ca).await, Ok(0));
    assert_eq!(next(&a, &cb).await, Ok(0));

    let mut conn = redis().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:group:room"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let deleted = Instant::now();
    // Missed: the key is gone.
    assert_eq!(other.group_send(&room, msg(1)).await.unwrap().delivered, 0);
    for ch in [&ca, &cb] {
        assert!(
            matches!(next(&a, ch).await, Err(n) if n >= 1),
            "the member was told"
        );
    }
    let took = deleted.elapsed();
    println!("members told {took:?} after the group key was deleted (check every {check:?})");
    assert!(
        took < check + Duration::from_secs(2),
        "told within the check (+2 s slack)"
    );
    assert_eq!(a.memberships_repaired(), 2);
    // Counted just after the members were told (the check task may still be
    // at it while this test reads their receives).
    let start = Instant::now();
    while a.losses_reported() < 2 {
        assert!(start.elapsed() < WAIT, "losses reported: {}", a.losses_reported());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(a.losses_reported(), 2);
    // And written back: the room works again.
    assert_eq!(other.group_send(&room, msg(2)).await.unwrap().delivered, 2);
    assert_eq!(next(&a, &ca).await, Ok(2));
    assert_eq!(next(&a, &cb).await, Ok(2));
}

/// A group send from this process notices at once that the key lost its
/// own members. A key that still lists others had these removed one by one
/// (another process's group_discard): the removal stands, only they are
/// told. A key that is gone lost them all: they are written back, the
/// message still reaches them, and they are told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_send_from_this_process_finds_its_lost_members_at_once() {
    let prefix = common::unique_prefix();
    let a = layer(&prefix);
    let room = GroupName::new("room").unwrap();
    let (ca, cb) = (a.new_channel().await.unwrap(), a.new_channel().await.unwrap());
    a.group_add(&room, &ca).await.unwrap();
    a.group_add(&room, &cb).await.unwrap();
    let mut conn = redis().await;
    // One member removed from outside, then the whole key.
    let _: () = redis::cmd("ZREM")
        .arg(format!("{prefix}:group:room"))
        .arg(cb.as_str())
        .query_async(&mut conn)
        .await
        .unwrap();
    let report = a.group_send(&room, msg(1)).await.unwrap();
    assert_eq!(report.delivered, 1, "the removal stands");
    assert_eq!(a.memberships_repaired(), 0);
    assert_eq!(next(&a, &ca).await, Ok(1), "the member still listed is not told");
    assert_eq!(next(&a, &cb).await, Err(1), "the removed member is told");
    assert_eq!(a.losses_reported(), 1);
    a.group_add(&room, &cb).await.unwrap();

    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:group:room"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(a.group_send(&room, msg(2)).await.unwrap().delivered, 2);
    assert_eq!(a.memberships_repaired(), 2);
    for ch in [&ca, &cb] {
        assert_eq!(next(&a, ch).await, Err(1));
        assert_eq!(next(&a, ch).await, Ok(2));
    }
    assert_eq!(a.losses_reported(), 3);
}

/// A Django process discards this process's channels from a group that
/// keeps another member (the check samples one member per group, so it
/// notices a removal when the sample is among them; here all are): the
/// members are told (a session closes 1013; its consumer decides on
/// reconnecting whether to join again) and left out, as channels_redis
/// would leave them; nothing writes them back over the discard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_discard_by_another_process_stands() {
    let prefix = common::unique_prefix();
    let (a, django) = (layer(&prefix), layer(&prefix));
    let room = GroupName::new("room").unwrap();
    let theirs = django.new_channel().await.unwrap();
    django.group_add(&room, &theirs).await.unwrap();
    let mut ours = Vec::new();
    for _ in 0..2 {
        let ch = a.new_channel().await.unwrap();
        a.group_add(&room, &ch).await.unwrap();
        ours.push(ch);
    }
    for ch in &ours {
        django.group_discard(&room, ch).await.unwrap();
    }
    let discarded = Instant::now();
    for ch in &ours {
        assert_eq!(next(&a, ch).await, Err(1), "the discarded member is told");
    }
    println!("told {:?} after the discard", discarded.elapsed());
    let mut conn = redis().await;
    let listed = members(&mut conn, &format!("{prefix}:group:room")).await;
    assert_eq!(
        listed,
        vec![theirs.as_str().as_bytes().to_vec()],
        "written back over the discard"
    );
    assert_eq!(a.memberships_repaired(), 0);
    assert_eq!(django.group_send(&room, msg(7)).await.unwrap().delivered, 1);
    assert_eq!(a.losses_reported(), 2);
    // The consumer joins again (as on reconnecting): the group works.
    a.group_add(&room, &ours[0]).await.unwrap();
    assert_eq!(django.group_send(&room, msg(8)).await.unwrap().delivered, 2);
    assert_eq!(next(&a, &ours[0]).await, Ok(8));
}

/// One channel leaves and joins the same group over and over while the
/// membership check runs every 100 ms: a check that reads the key between
/// the ZREM and the ZADD must not take that for a loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_discard_then_add_racing_the_check_is_no_loss() {
    let prefix = common::unique_prefix();
    let a = RedisChannelLayer::new(
        RedisConfig::new([common::SHARED_REDIS])
            .with_prefix(&prefix)
            .with_membership_check(Duration::from_millis(100)),
    )
    .expect("layer");
    let room = GroupName::new("room").unwrap();
    let mut channels = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let ch = a.new_channel().await.unwrap();
        channels.push(ch.clone());
        let (a, room) = (a.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut rounds = 0;
            while start.elapsed() < Duration::from_secs(3) {
                a.group_discard(&room, &ch).await.unwrap();
                a.group_add(&room, &ch).await.unwrap();
                rounds += 1;
            }
            rounds
        }));
    }
    let mut rounds = 0;
    for task in tasks {
        rounds += task.await.unwrap();
    }
    println!("{rounds} discard/add rounds in 3 s");
    assert_eq!(a.losses_reported(), 0, "a false alarm: no member was ever lost");
    assert_eq!(a.memberships_repaired(), 0);
    assert_eq!(a.group_send(&room, msg(1)).await.unwrap().delivered, 16);
    for ch in &channels {
        assert_eq!(next(&a, ch).await, Ok(1));
    }
}

/// This process's queue written over: what it held, and what others sent
/// until it was taken back, is lost; every channel of the process is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn an_overwritten_process_queue_is_reported_to_its_channels() {
    let prefix = common::unique_prefix();
    let (a, other) = (layer(&prefix), layer(&prefix));
    let check = a.config().membership_check();
    let room = GroupName::new("room").unwrap();
    let ca = a.new_channel().await.unwrap();
    a.group_add(&room, &ca).await.unwrap();
    let mut conn = redis().await;
    redis::cmd("SET")
        .arg(a.process_key())
        .arg("not a queue")
        .exec_async(&mut conn)
        .await
        .unwrap();
    let overwritten = Instant::now();
    let report = other.group_send(&room, msg(1)).await.unwrap();
    assert_eq!(report.dropped, 1, "missed: {report:?}");
    assert!(
        matches!(next(&a, &ca).await, Err(n) if n >= 1),
        "the member was told"
    );
    let took = overwritten.elapsed();
    println!("told {took:?} after the process queue was written over (check every {check:?})");
    assert!(
        took < check + Duration::from_secs(2),
        "told within the check (+2 s slack)"
    );
    // Taken back: messages flow again.
    let start = Instant::now();
    loop {
        if other.group_send(&room, msg(2)).await.unwrap().delivered == 1 {
            break;
        }
        assert!(start.elapsed() < WAIT, "never taken back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (The loss may be reported twice: by the check and the receive loop.)
    loop {
        match next(&a, &ca).await {
            Ok(n) => break assert_eq!(n, 2),
            Err(_) => continue,
        }
    }
}

/// This process's queue full (it fell behind) when another Estuary process
/// sends to a group: the message is skipped there (counted in that
/// sender's report) and nothing reaches this process's member; the sender
/// counts the refusal beside the queue, and this process's receive task
/// tells its channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_group_message_refused_by_a_full_process_queue_is_reported() {
    let prefix = common::unique_prefix();
    let (a, other) = (layer(&prefix), layer(&prefix));
    let room = GroupName::new("room").unwrap();
    let ca = a.new_channel().await.unwrap();
    a.group_add(&room, &ca).await.unwrap();
    let capacity = a.config().layer_config().capacity_for(ca.as_str());
    // Fill a's queue past capacity in one step (as a burst faster than the
    // process drains would), with entries its receive task skips, and send
    // at once; retried until a send finds it still full.
    let mut conn = redis().await;
    let fill = redis::Script::new(
        "for i = 1, tonumber(ARGV[1]) do redis.call('ZADD', KEYS[1], ARGV[2], 'filler' .. i) end",
    );
    let start = Instant::now();
    loop {
        let _: () = fill
            .key(a.process_key())
            .arg(capacity + 1000)
            .arg(now_secs())
            .invoke_async(&mut conn)
            .await
            .unwrap();
        if other.group_send(&room, msg(1)).await.unwrap().dropped == 1 {
            break;
        }
        assert!(start.elapsed() < WAIT, "never found the queue full");
    }
    // Whatever else the member gets (a later attempt's message), it is
    // told of the refused one.
    loop {
        match next(&a, &ca).await {
            Err(n) => break assert!(n >= 1),
            Ok(_) => continue,
        }
    }
}

/// Django discards one of this process's two members of each of sixteen
/// groups. The check samples one member per group: where the sample was
/// the discarded one, only that member is told; its partner, still in the
/// group, is not (it keeps receiving without a gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn only_the_discarded_member_is_told_not_its_group() {
    let prefix = common::unique_prefix();
    let a = RedisChannelLayer::new(
        RedisConfig::new([common::SHARED_REDIS])
            .with_prefix(&prefix)
            .with_membership_check(Duration::from_millis(100)),
    )
    .expect("layer");
    let django = layer(&prefix);
    let mut pairs = Vec::new();
    for k in 0..16 {
        let room = GroupName::new(&format!("room{k}")).unwrap();
        let (stays, goes) = (a.new_channel().await.unwrap(), a.new_channel().await.unwrap());
        a.group_add(&room, &stays).await.unwrap();
        a.group_add(&room, &goes).await.unwrap();
        django.group_discard(&room, &goes).await.unwrap();
        pairs.push((room, stays, goes));
    }
    // Wait for the check to tell some discarded member (the sample is the
    // discarded one in about half of the groups; in none, 1 in 65,536).
    let start = Instant::now();
    while a.losses_reported() == 0 {
        assert!(start.elapsed() < WAIT, "no discarded member told");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{} told when the first was", a.losses_reported());
    for (n, (room, stays, _)) in pairs.iter().enumerate() {
        assert_eq!(django.group_send(room, msg(n as u64)).await.unwrap().delivered, 1);
        assert_eq!(
            next(&a, stays).await,
            Ok(n as u64),
            "a member still in {room} was told"
        );
    }
    assert_eq!(a.memberships_repaired(), 0);
}
