//! The chat application while its Redis is killed and restarted (empty)
//! under load: the WebSockets stay open while Redis is away, senders are
//! told their messages were not delivered, `/healthz` answers 503 meanwhile
//! and 200 within two seconds of Redis being back. Redis came back without
//! the room's membership, so what other processes sent before it was
//! written again missed these sockets: each is told (closed 1013, "messages
//! were lost; reconnect"), none is left open having missed messages
//! silently. Clients that reconnect get the room's messages again.

mod common;

use estuary_test_support::eventually::poll_async;
use estuary_test_support::redis as redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, TestServer};
use estuary_cli::config::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Longest any step may take before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

fn redis_config(url: &str) -> Config {
    let mut config = Config::default();
    config.layer.redis = vec![url.to_owned()];
    config.layer.prefix = "asgi".to_owned();
    // The load below is faster than a person types.
    config.websocket.rate_limit = 0.0;
    config
}

/// Reads a socket until it receives the chat message `until`; returns how
/// many chat messages came before it, or the code the server closed it
/// with. Fails if the socket ends otherwise.
async fn read_until(
    mut stream: impl StreamExt<Item = Result<Message, impl std::fmt::Debug>> + Unpin,
    until: &str,
) -> Result<usize, u16> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut count = 0;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("{until:?} never arrived"));
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket failed: {e:?}"),
            None => panic!("socket ended"),
        };
        let v: Value = serde_json::from_str(&text).expect("JSON");
        if v["type"] == "chat_message" {
            if v["message"] == until {
                return Ok(count);
            }
            count += 1;
        }
    }
}

/// Waits until `counter` exceeds `above`.
async fn wait_above(counter: &watch::Sender<usize>, above: usize, what: &str) {
    let mut seen = counter.subscribe();
    tokio::time::timeout(LIMIT, seen.wait_for(|n| *n > above))
        .await
        .unwrap_or_else(|_| panic!("{what}: never happened"))
        .expect("the counter lives as long as the test");
}

/// Polls `/healthz` until it answers `status`; returns how long that took.
/// (It reports the layer's health, which has no event to wait on; what is
/// measured is the HTTP answer, so it is asked every 10 ms.)
async fn wait_for_status(server: &TestServer, status: u16) -> Duration {
    let start = Instant::now();
    poll_async(
        &format!("/healthz to answer {status}"),
        LIMIT,
        Duration::from_millis(10),
        || async { (server.get_status("/healthz").await == status).then_some(()) },
    )
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary"]
async fn redis_killed_and_restarted_under_load() {
    let mut redis = redis_server::RedisServer::start();
    let port = redis.port;
    let server = TestServer::with_config(redis_config(&redis.url())).await;
    let url = server.url("/ws/chat/lobby/");

    let mut readers = Vec::new();
    for _ in 0..8 {
        let client = Client::join(&url).await;
        readers.push(tokio::spawn(async move {
            let (_sink, stream) = client.ws.split();
            read_until(stream, "after").await
        }));
    }

    // The load: one client sends every 5 ms; its own socket tells what
    // became of each message (its echo from the room, or an error frame),
    // until the server closes it.
    let sender = Client::join(&url).await;
    let (mut sink, mut stream) = sender.ws.split();
    let echoes = Arc::new(watch::Sender::new(0usize));
    let errors = Arc::new(watch::Sender::new(0usize));
    let stop = CancellationToken::new();
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.is_cancelled() {
                let m = json!({"message": format!("load-{k}"), "username": "load"});
                if sink.send(Message::text(m.to_string())).await.is_err() {
                    // Closed by the server: the outcome task reads why.
                    break;
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            k
        })
    };
    let outcomes = {
        let (echoes, errors) = (echoes.clone(), errors.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + LIMIT * 2;
            loop {
                let next = tokio::time::timeout_at(deadline, stream.next())
                    .await
                    .expect("the sender's socket went quiet");
                let text = match next {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    other => panic!("sender's socket failed: {other:?}"),
                };
                let v: Value = serde_json::from_str(&text).expect("JSON");
                match v["type"].as_str() {
                    Some("chat_message") => echoes.send_modify(|n| *n += 1),
                    Some("error") => errors.send_modify(|n| *n += 1),
                    _ => {}
                }
            }
        })
    };

    wait_above(&echoes, 20, "load flowing before the outage").await;
    assert_eq!(server.get_status("/healthz").await, 200);
    assert_eq!(*errors.borrow(), 0);

    redis.stop();
    let unhealthy = wait_for_status(&server, 503).await;
    println!("/healthz answered 503 {unhealthy:?} after Redis was killed");
    let errors_then = *errors.borrow();
    // The sockets stay open while Redis is away; senders are told.
    wait_above(&errors, errors_then + 5, "senders told of undelivered messages").await;

    let _redis = redis_server::RedisServer::start_on(port);
    let healthy = wait_for_status(&server, 200).await;
    println!("/healthz answered 200 {healthy:?} after Redis was back");
    assert!(
        healthy < Duration::from_secs(3),
        "healthy {healthy:?} after Redis was back (bound: 2 s + slack)"
    );
    // Redis came back empty: every member of the room is told it may have
    // missed messages (closed 1013), none is left open, silently behind.
    let code = tokio::time::timeout(LIMIT, outcomes)
        .await
        .expect("the sender was never told")
        .expect("outcomes");
    assert_eq!(code, 1013, "the sender's close code");
    stop.cancel();
    let sent = load.await.expect("load");
    let (echoed, refused) = (*echoes.borrow(), *errors.borrow());
    println!(
        "{sent} messages sent: {echoed} delivered to the room, {refused} refused with an error frame, then closed 1013"
    );
    for reader in readers {
        let got = tokio::time::timeout(LIMIT, reader)
            .await
            .expect("a reader was never told")
            .expect("a reader's socket failed");
        assert_eq!(got, Err(1013), "a reader's outcome");
    }

    // Clients reconnect (as browsers do on 1013): messages flow again.
    let mut readers = Vec::new();
    for _ in 0..8 {
        let client = Client::join(&url).await;
        readers.push(tokio::spawn(async move {
            let (_sink, stream) = client.ws.split();
            read_until(stream, "after").await
        }));
    }
    let sender = Client::join(&url).await;
    let (mut sink, stream) = sender.ws.split();
    let echoed = tokio::spawn(read_until(stream, "after"));
    for k in 0..50 {
        let m = json!({"message": format!("again-{k}"), "username": "load"});
        sink.send(Message::text(m.to_string())).await.expect("send");
    }
    sink.send(Message::text(json!({"message": "after"}).to_string()))
        .await
        .expect("send");
    let echoed = tokio::time::timeout(LIMIT, echoed)
        .await
        .expect("the sender never got its last message")
        .expect("sender");
    assert_eq!(echoed, Ok(50), "the sender's echoes after reconnecting");
    for reader in readers {
        let got = tokio::time::timeout(LIMIT, reader)
            .await
            .expect("a reader never got the last message")
            .expect("a reader's socket failed");
        assert_eq!(got, Ok(50), "a reader after reconnecting");
    }
    server.stop().await;
}
