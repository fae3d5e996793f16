//! The chat application on the Redis pub/sub flavour: an idle room keeps its
//! subscriber through many keepalives and loses nothing, and a Redis restart
//! under load is told to the room's members (closed 1013, which the chat
//! page reconnects on), never a silent gap.

mod common;

use estuary_test_support::redis as redis_server;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Client, TestServer};
use estuary::ChannelLayerHandle;
use estuary::redis::{RedisConfig, RedisPubSubChannelLayer};
use estuary_cli::config::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_util::sync::CancellationToken;

/// Longest any step may take before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

/// The application on the pub/sub flavour, and the layer it serves (kept to
/// read its counters), pinging its subscriber every `keepalive`.
async fn pubsub_server(
    url: &str,
    prefix: &str,
    keepalive: Duration,
) -> (TestServer, RedisPubSubChannelLayer) {
    let mut config = Config::default();
    config.layer.redis = vec![url.to_owned()];
    config.layer.prefix = prefix.to_owned();
    config.layer.flavour = estuary_cli::config::RedisFlavour::PubSub;
    // The load below is faster than a person types.
    config.websocket.rate_limit = 0.0;
    config.websocket.rate_limit_per_ip = 0.0;
    let layer = RedisPubSubChannelLayer::new(
        RedisConfig::new([url])
            .with_prefix(prefix)
            .with_pubsub_keepalive(keepalive),
    )
    .expect("layer");
    let server = TestServer::with_layer(config, ChannelLayerHandle::new(layer.clone())).await;
    (server, layer)
}

/// Polls `done` every 10 ms until it holds (a layer counter or health flag,
/// which has no event to wait on); fails after [`LIMIT`], naming `what`.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    estuary_test_support::eventually::poll(what, LIMIT, Duration::from_millis(10), || done().then_some(()))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn an_idle_room_keeps_its_subscriber_and_loses_nothing() {
    let prefix = redis_server::unique_prefix();
    // A short keepalive, so that an idle room goes through many in a second.
    let keepalive = Duration::from_millis(100);
    let (server, layer) = pubsub_server(redis_server::SHARED_REDIS, &prefix, keepalive).await;
    let url = server.url("/ws/chat/lobby/");
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Client::join(&url).await);
    }

    // The room idles through five keepalives (the sixth is sent once the
    // fifth is answered or failed).
    let from = layer.keepalive_pings();
    wait_for("five keepalive pings", || layer.keepalive_pings() >= from + 6).await;
    assert_eq!(
        layer.subscriber_reconnects(),
        0,
        "the keepalive dropped the subscriber of an idle room"
    );

    for k in 0..50 {
        members[0]
            .send_json(&json!({"message": format!("m{k}"), "username": "alice"}))
            .await;
    }
    for member in &mut members {
        for k in 0..50 {
            let m = member.recv_type("chat_message").await;
            assert_eq!(m["message"], format!("m{k}"), "lost or out of order");
        }
    }
    assert_eq!(layer.subscriber_reconnects(), 0);
    server.stop().await;
}

/// How a member's socket ended, and the load messages it received before.
#[derive(Debug)]
struct Ending {
    close: Option<u16>,
    received: BTreeSet<u64>,
    /// Error frames (a message of its own not delivered).
    errors: usize,
}

/// Reads a member's socket until the server closes it or the message
/// `after` arrives; counts every load message into `progress`, and every
/// error frame into `refused`.
async fn read_member(
    mut stream: impl StreamExt<Item = Result<Message, impl std::fmt::Debug>> + Unpin,
    progress: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
) -> Ending {
    let deadline = tokio::time::Instant::now() + LIMIT * 2;
    let mut received = BTreeSet::new();
    let mut errors = 0;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("a member's socket went quiet: neither told nor sent the last message");
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return Ending {
                    close: Some(frame.map_or(1005, |f: CloseFrame| u16::from(f.code))),
                    received,
                    errors,
                };
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                return Ending {
                    close: None,
                    received,
                    errors,
                };
            }
        };
        let v: Value = serde_json::from_str(&text).expect("JSON");
        if v["type"] == "error" {
            errors += 1;
            refused.fetch_add(1, Ordering::Relaxed);
        }
        if v["type"] != "chat_message" {
            continue;
        }
        match v["message"].as_str() {
            Some("after") => {
                return Ending {
                    close: None,
                    received,
                    errors,
                };
            }
            Some(m) => {
                if let Some(k) = m.strip_prefix("load-").and_then(|k| k.parse().ok()) {
                    received.insert(k);
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary"]
async fn a_redis_restart_under_load_is_told_to_the_members() {
    let mut redis = redis_server::RedisServer::start();
    let port = redis.port;
    let (server, layer) = pubsub_server(&redis.url(), "asgi", Duration::from_secs(10)).await;
    let url = server.url("/ws/chat/lobby/");

    let progress = Arc::new(AtomicUsize::new(0));
    let mut members = Vec::new();
    for _ in 0..4 {
        let (_sink, stream) = Client::join(&url).await.ws.split();
        members.push(tokio::spawn(read_member(
            stream,
            progress.clone(),
            Arc::default(),
        )));
    }
    // The load: a member sends every 5 ms until its socket is closed (or
    // the test ends).
    let sender = Client::join(&url).await;
    let (mut sink, stream) = sender.ws.split();
    let stop = CancellationToken::new();
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let k = sent.load(Ordering::Relaxed);
                let m = json!({"message": format!("load-{k}"), "username": "load"});
                if sink.send(Message::text(m.to_string())).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let refused = Arc::new(AtomicUsize::new(0));
    let sender_ending = tokio::spawn(read_member(stream, Arc::default(), refused.clone()));

    wait_for("load flowing before the restart", || {
        progress.load(Ordering::Relaxed) > 400
    })
    .await;
    assert_eq!(layer.subscriber_reconnects(), 0);
    redis.stop();
    // The outage lasts until the sender has been refused 20 messages (or,
    // told of the loss, closed).
    wait_for("the outage seen by the sender", || {
        refused.load(Ordering::Relaxed) >= 20 || sender_ending.is_finished()
    })
    .await;
    let _redis = redis_server::RedisServer::start_on(port);
    wait_for("the subscriber back", || layer.is_healthy()).await;
    assert!(layer.subscriber_reconnects() >= 1);
    // The load goes on after the restart (unless its socket was closed).
    let at_restart = sent.load(Ordering::Relaxed);
    wait_for("load after the restart", || {
        load.is_finished() || sent.load(Ordering::Relaxed) > at_restart + 100
    })
    .await;
    stop.cancel();
    load.await.expect("load");
    let sent = sent.load(Ordering::Relaxed);
    // Whoever is still in the room gets this last message. The first
    // publish after the restart may be refused (an error frame: the
    // publishing connection reconnects on it); it is sent again then.
    let mut last = Client::join(&url).await;
    let start = Instant::now();
    'delivered: loop {
        assert!(start.elapsed() < LIMIT, "the last message was never delivered");
        last.send_json(&json!({"message": "after", "username": "last"}))
            .await;
        loop {
            let m = last.recv_json().await;
            match m["type"].as_str() {
                Some("chat_message") if m["message"] == "after" => break 'delivered,
                Some("error") => break,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every member of the room learns that it may have missed messages:
    // the server closes it 1013 (try again later), and the chat page
    // reconnects. None is left open with a gap.
    let mut endings = Vec::new();
    members.push(sender_ending);
    for member in members {
        endings.push(
            tokio::time::timeout(LIMIT * 2, member)
                .await
                .expect("a member never ended")
                .expect("reader"),
        );
    }
    let refused = endings.last().map_or(0, |sender| sender.errors);
    println!("{sent} load messages sent, {refused} refused with an error frame");
    for ending in &endings {
        println!(
            "member: closed {:?}, {} load messages received, {} neither received nor refused",
            ending.close,
            ending.received.len(),
            sent.saturating_sub(refused + ending.received.len()),
        );
    }
    for ending in endings {
        assert_eq!(
            ending.close,
            Some(1013),
            "a member was not told of the messages it may have missed"
        );
    }

    // The room works again for whoever (re)joins.
    let mut alice = Client::join(&url).await;
    let mut bob = Client::join(&url).await;
    alice
        .send_json(&json!({"message": "back", "username": "alice"}))
        .await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.recv_type("chat_message").await["message"], "back");
    }
    server.stop().await;
}
