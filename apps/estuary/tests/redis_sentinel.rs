//! The chat application on a Redis found through Sentinel, while the
//! primary fails over: two servers (two layers, two process queues, as two
//! `estuary serve` processes) share a room through a primary and its
//! replica watched by one sentinel. Mid-conversation the primary is either
//! demoted by `SENTINEL FAILOVER` or killed. The servers follow the
//! sentinel to the new primary, messages flow again between them, and no
//! message is lost silently: each one the sender sent is echoed to it or
//! refused with an error frame, and every reader either received every
//! message the sender saw echoed or was told it may have missed messages
//! (closed 1013).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, TestServer};
use estuary::ChannelLayerHandle;
use estuary::redis::RedisChannelLayer;
use estuary_cli::config::Config;
use estuary_test_support::redis as redis_server;
use estuary_test_support::sentinel::{SentinelSetup, connect};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Longest any step may take before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

/// A chat server on the sentinel's primary, with its layer (for its counters).
async fn server(url: &str, prefix: &str) -> (TestServer, RedisChannelLayer) {
    let mut config = Config::default();
    config.layer.redis = vec![url.to_owned()];
    config.layer.prefix = prefix.to_owned();
    config.websocket.rate_limit = 0.0;
    config.chat.leave_delay_ms = 0;
    let layer_config = config.layer_config().expect("the layer's settings");
    let layer =
        RedisChannelLayer::new(config.layer.redis_config().with_layer_config(layer_config)).expect("layer");
    let server = TestServer::with_layer(config, ChannelLayerHandle::new(layer.clone())).await;
    (server, layer)
}

/// What one socket saw: the numbers of the load's messages it received (or
/// the sender saw echoed), the error frames, and how it ended.
#[derive(Debug, Default)]
struct Seen {
    received: BTreeSet<u64>,
    /// The same, in the order they came, with their positions (epoch,
    /// offset).
    arrived: Vec<(u64, String, u64)>,
    errors: usize,
    closed: Option<u16>,
    /// The fence arrived: nothing more is read.
    fenced: bool,
}

/// Reads `client` until a message starting with `fence` arrives or the
/// server closes it; `errors` counts error frames as they come.
fn watch_socket(
    mut stream: impl StreamExt<Item = Result<Message, impl std::fmt::Debug>> + Unpin + Send + 'static,
    fence: &'static str,
    progress: Arc<watch::Sender<Seen>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + LIMIT * 3;
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("a socket went quiet");
            let text = match next {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    progress.send_modify(|seen| seen.closed = Some(code));
                    return;
                }
                Some(Ok(_)) => continue,
                other => panic!("a socket failed: {other:?}"),
            };
            let v: Value = serde_json::from_str(&text).expect("JSON");
            match v["type"].as_str() {
                Some("chat_message") if v["history"] != true => {
                    let message = v["message"].as_str().unwrap_or_default();
                    if message.starts_with(fence) {
                        progress.send_modify(|seen| seen.fenced = true);
                        return;
                    }
                    if let Some(k) = message.strip_prefix("m-").and_then(|k| k.parse().ok()) {
                        let epoch = v["position"]["epoch"].as_str().unwrap_or_default().to_owned();
                        let offset = v["position"]["offset"].as_u64().unwrap_or_default();
                        progress.send_modify(|seen| {
                            seen.received.insert(k);
                            seen.arrived.push((k, epoch, offset));
                        });
                    }
                }
                Some("error") => progress.send_modify(|seen| seen.errors += 1),
                _ => {}
            }
        }
    })
}

/// Waits until `seen` satisfies `done`.
async fn wait_until(seen: &watch::Sender<Seen>, what: &str, done: impl Fn(&Seen) -> bool) {
    let mut rx = seen.subscribe();
    tokio::time::timeout(LIMIT, rx.wait_for(|s| done(s)))
        .await
        .unwrap_or_else(|_| panic!("{what}: never happened"))
        .expect("the watcher lives as long as the test");
}

/// Sends `fence-N` on `sink` until it is echoed (a refusal is an error
/// frame: Redis is not back yet), waiting for each one's outcome in `seen`
/// after the `before` outcomes of what was sent before it; returns how
/// many were refused.
async fn fence(
    mut sink: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        Message,
    >,
    seen: &watch::Sender<Seen>,
    before: usize,
) -> usize {
    let mut fences = 0usize;
    loop {
        fences += 1;
        assert!(fences <= 50, "the fence was never delivered");
        let m = json!({"message": format!("fence-{fences}"), "username": "load"});
        sink.send(Message::text(m.to_string())).await.expect("fence");
        let outcomes = before + fences;
        wait_until(seen, "the fence's outcome", |s| {
            s.fenced || s.closed.is_some() || s.received.len() + s.errors >= outcomes
        })
        .await;
        let (fenced, closed) = {
            let s = seen.borrow();
            (s.fenced, s.closed)
        };
        assert_eq!(closed, None, "the fencer was closed");
        if fenced {
            return fences - 1;
        }
        // Refused: Redis is not back yet; try again shortly.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The id of the last entry of `stream` on the Redis at `port`, as numbers.
async fn last_entry(port: u16, stream: &str) -> (u64, u64) {
    let mut conn = connect(port).await;
    let entries: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .expect("XREVRANGE");
    let id = entries.first().map(|(id, _)| id.clone()).unwrap_or_default();
    let (ms, seq) = id.split_once('-').unwrap_or(("0", "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// A client that got what `reader` got up to its message `from` (one
/// sent about when the failover began) reconnects with that position: it
/// recovers exactly the messages `reader` got after it, in order, or is
/// told that it cannot. What the former primary recorded after the
/// promotion is lost with its demotion; had the new primary given its
/// offsets again to other messages in the same epoch, this client would
/// get those and miss the ones in between silently.
async fn recovers_exactly_or_is_told(
    server: &TestServer,
    room: &str,
    reader: &watch::Sender<Seen>,
    from: usize,
) {
    wait_until(reader, "the reader gets messages after the failover began", |s| {
        s.arrived.len() > from + 1 || s.closed.is_some()
    })
    .await;
    if reader.borrow().closed.is_some() {
        // Told it may have missed messages (checked below).
        return;
    }
    let (since, after): (String, Vec<u64>) = {
        let seen = reader.borrow();
        let Some((_, epoch, offset)) = seen.arrived.get(from) else {
            panic!("the reader got nothing after the failover began")
        };
        (
            format!("{epoch}:{offset}"),
            seen.arrived[from + 1..].iter().map(|(k, ..)| *k).collect(),
        )
    };
    let mut client = Client::connect(&server.url(&format!("{room}?since={since}"))).await;
    let greeting = client.recv_type("connection_established").await;
    if greeting["recovered"] != true {
        let failed = client.recv_type("recovery_failed").await;
        println!("recovery from {since} refused: {failed}");
        return;
    }
    let mut recovered = Vec::new();
    loop {
        let v = client.recv_json().await;
        if v["type"] != "chat_message" || v["recovered"] != true {
            break;
        }
        let message = v["message"].as_str().unwrap_or_default();
        if let Some(k) = message.strip_prefix("m-").and_then(|k| k.parse::<u64>().ok()) {
            recovered.push(k);
        }
    }
    let common = recovered.len().min(after.len());
    assert_eq!(
        recovered[..common],
        after[..common],
        "recovered from {since}: what the reader got after it, in order"
    );
    println!("recovered {} messages from {since}", recovered.len());
}

/// Whether the Redis on `port` says it is a primary (`ROLE`).
async fn is_primary(port: u16) -> bool {
    let mut conn = connect(port).await;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.expect("ROLE");
    matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
}

/// How the primary is failed over.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `SENTINEL FAILOVER`: the primary is demoted to a replica of the new one.
    Demoted,
    /// The primary process is killed; the sentinel promotes the replica.
    Killed,
}

async fn failover_mid_conversation(fault: Fault) {
    let mut sentinel = SentinelSetup::start().await;
    let (primary_port, replica_port) = (sentinel.primary_port, sentinel.replica_port);

    let prefix = redis_server::unique_prefix();
    let (a, layer_a) = server(&sentinel.url(), &prefix).await;
    let (b, layer_b) = server(&sentinel.url(), &prefix).await;
    let room = "/ws/chat/failover/";

    // Readers on both servers; the sender on A.
    let mut readers = Vec::new();
    for (name, server) in [("reader on A", &a), ("reader on B", &b)] {
        let client = Client::join(&server.url(room)).await;
        let (_sink, stream) = client.ws.split();
        let seen = Arc::new(watch::Sender::new(Seen::default()));
        readers.push((name, watch_socket(stream, "fence", seen.clone()), seen, _sink));
    }
    let sender = Client::join(&a.url(room)).await;
    let (mut sink, stream) = sender.ws.split();
    let echoes = Arc::new(watch::Sender::new(Seen::default()));
    let sender_watch = watch_socket(stream, "fence", echoes.clone());
    let stop = CancellationToken::new();
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.is_cancelled() {
                let m = json!({"message": format!("m-{k}"), "username": "load"});
                if sink.send(Message::text(m.to_string())).await.is_err() {
                    return (k, None);
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (k, Some(sink))
        })
    };
    wait_until(&echoes, "load flowing before the failover", |s| {
        s.received.len() > 20
    })
    .await;

    // Where the reader on B was when the failover began: a client that
    // got that far recovers from there below.
    let from = readers[1].2.borrow().arrived.len();
    match fault {
        Fault::Demoted => sentinel.failover().await,
        Fault::Killed => sentinel.kill_primary(),
    }
    let switched = sentinel.wait_for("+switch-master").await;
    println!("{fault:?}: {switched}");
    assert!(
        switched.ends_with(&format!("127.0.0.1 {replica_port}")),
        "the replica was promoted: {switched}"
    );
    let before = echoes.borrow().received.len();
    wait_until(&echoes, "load flowing again on the new primary", |s| {
        s.received.len() > before + 20 || s.closed.is_some()
    })
    .await;
    if let Fault::Demoted = fault {
        // The former primary still takes writes until the sentinel makes
        // it a replica of the new one, seconds later. The servers moved on
        // the sentinel's announcement: from then on the room's history
        // (recorded on the primary) grows on the new primary only.
        let stream = format!("{prefix}:history:chat_failover");
        let old_then = last_entry(primary_port, &stream).await;
        let new_then = last_entry(replica_port, &stream).await;
        let still_primary = is_primary(primary_port).await;
        let before = echoes.borrow().received.len();
        wait_until(&echoes, "more load on the new primary", |s| {
            s.received.len() > before + 20 || s.closed.is_some()
        })
        .await;
        let old_now = last_entry(primary_port, &stream).await;
        let new_now = last_entry(replica_port, &stream).await;
        // (Unless the sender was closed meanwhile, told it may have missed
        // messages: it sends no more, and its closing is checked below.)
        assert!(
            new_now > new_then || echoes.borrow().closed.is_some(),
            "the history grows on the new primary: {new_then:?} then {new_now:?} (on the former: {old_then:?} \
             then {old_now:?}, a primary then: {still_primary})"
        );
        // Unless the sentinel demoted it meanwhile (a replica's copy
        // follows the new primary's).
        if still_primary && is_primary(primary_port).await {
            assert_eq!(
                old_now, old_then,
                "nothing more is written to the former primary after the announcement"
            );
        }
        let converted = sentinel.wait_for("+convert-to-slave").await;
        println!("{fault:?}: {converted}");
        let before = echoes.borrow().received.len();
        wait_until(
            &echoes,
            "load flowing after the former primary became a replica",
            |s| s.received.len() > before + 20 || s.closed.is_some(),
        )
        .await;
    }
    recovers_exactly_or_is_told(&b, room, &readers[1].2, from).await;
    stop.cancel();
    let (sent, sink) = load.await.expect("load");

    // The fence: sent after the load on the same socket (a connection's
    // messages are handled in order, each answered by its echo or an error
    // frame), so that every message before it has its outcome. When the
    // server closed the sender (told it missed messages), a new member
    // sends it, for the readers.
    let seen = echoes.borrow().closed;
    let refused_fences = match (sink, seen) {
        (Some(sink), None) => fence(sink, &echoes, sent as usize).await,
        (_, closed) => {
            assert_eq!(
                closed,
                Some(1013),
                "the sender, closed, was told it missed messages"
            );
            let fencer = Client::join(&a.url(room)).await;
            let (sink, stream) = fencer.ws.split();
            let fenced = Arc::new(watch::Sender::new(Seen::default()));
            let watcher = watch_socket(stream, "fence", fenced.clone());
            fence(sink, &fenced, 0).await;
            watcher.await.expect("the fencer");
            0
        }
    };
    tokio::time::timeout(LIMIT, sender_watch)
        .await
        .expect("the sender's watcher ended")
        .expect("sender");
    let seen = echoes.borrow();
    let refused = seen.errors - refused_fences;
    println!(
        "{fault:?}: {sent} sent: {} echoed, {refused} refused with an error frame (and {refused_fences} \
         fences refused), sender closed: {:?}; layer A: {} failed sends, {} losses reported; \
         layer B: {} failed sends, {} losses reported",
        seen.received.len(),
        seen.closed,
        layer_a.failed_sends(),
        layer_a.losses_reported(),
        layer_b.failed_sends(),
        layer_b.losses_reported(),
    );
    if seen.closed.is_none() {
        assert_eq!(
            seen.received.len() + refused,
            sent as usize,
            "each message sent was echoed or refused"
        );
    }

    for (name, watcher, reader, _sink) in readers {
        tokio::time::timeout(LIMIT, watcher)
            .await
            .unwrap_or_else(|_| panic!("{name} never got the fence nor was closed"))
            .expect("reader");
        let got = reader.borrow();
        match got.closed {
            Some(code) => {
                assert_eq!(code, 1013, "{name}: closed, told it may have missed messages");
                println!("{fault:?}: {name} was told it may have missed messages (1013)");
            }
            None => {
                let missed: Vec<_> = seen.received.difference(&got.received).collect();
                assert!(
                    missed.is_empty(),
                    "{name} missed {} echoed messages silently: {missed:?}",
                    missed.len()
                );
            }
        }
    }
    drop(seen);

    // The session recovers: fresh clients on both servers talk through
    // the new primary.
    let mut on_b = Client::join(&b.url(room)).await;
    let mut on_a = Client::join(&a.url(room)).await;
    on_a.send_json(&json!({"message": "recovered", "username": "fresh"}))
        .await;
    let got = on_b.recv_type("chat_message").await;
    assert_eq!(got["message"], "recovered", "{got}");

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server and redis-sentinel binaries (scripts/install-sentinel.sh)"]
async fn a_primary_demoted_by_sentinel_failover() {
    failover_mid_conversation(Fault::Demoted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server and redis-sentinel binaries (scripts/install-sentinel.sh)"]
async fn a_primary_killed() {
    failover_mid_conversation(Fault::Killed).await;
}
