//! The chat application's group sends over Redis under a fast sender,
//! through real WebSocket clients: a sender's messages reach every member
//! in the order sent, those in flight when the sender disconnects still
//! arrive, and every one that fails while Redis is down comes back to the
//! sender as an error frame. (Written for the pipelined sends of
//! `Context::group_send_pipelined`; they hold for the awaited ones too,
//! which the chat app uses for now: see docs/BENCHMARKS.md, "Pipelined
//! group sends (issue 20)".)

mod common;

use common::{Client, TestServer};
use estuary_cli::config::Config;
use estuary_test_support::redis::{self as redis_server, SHARED_REDIS, unique_prefix};
use serde_json::json;

fn redis_config(url: &str, prefix: &str) -> Config {
    let mut config = Config::default();
    config.layer.redis = vec![url.to_owned()];
    config.layer.prefix = prefix.to_owned();
    // The senders below are faster than a person types.
    config.websocket.rate_limit = 0.0;
    config.websocket.rate_limit_per_ip = 0.0;
    config
}

/// Sends `count` messages `"{tag}-{n}"` without reading anything.
async fn burst(client: &mut Client, tag: &str, count: usize) {
    for n in 0..count {
        client.send_json(&json!({"message": format!("{tag}-{n}")})).await;
    }
}

/// Reads chat messages until `count` came; returns them, in order.
async fn messages(member: &mut Client, count: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let v = member.recv_type("chat_message").await;
        got.push(v["message"].as_str().expect("a message").to_owned());
    }
    got
}

/// The numbers of `tag`'s messages among `got`, in the order received.
fn sequence(got: &[String], tag: &str) -> Vec<usize> {
    let head = format!("{tag}-");
    got.iter()
        .filter_map(|m| m.strip_prefix(&head)?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn each_senders_messages_arrive_in_order() {
    const SENDS: usize = 400;
    let server = TestServer::with_config(redis_config(SHARED_REDIS, &unique_prefix())).await;
    let url = server.url("/ws/chat/pipelined/");
    let mut members = vec![Client::join(&url).await, Client::join(&url).await];
    let mut a = Client::join(&url).await;
    let mut b = Client::join(&url).await;
    let (_, _) = tokio::join!(burst(&mut a, "a", SENDS), burst(&mut b, "b", SENDS));
    let everything: Vec<usize> = (0..SENDS).collect();
    for member in &mut members {
        let got = messages(member, 2 * SENDS).await;
        assert_eq!(sequence(&got, "a"), everything, "a's messages, in order");
        assert_eq!(sequence(&got, "b"), everything, "b's messages, in order");
    }
    // The senders get their own, in order too.
    assert_eq!(sequence(&messages(&mut a, 2 * SENDS).await, "a"), everything);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn messages_in_flight_when_the_sender_leaves_still_arrive() {
    const SENDS: usize = 300;
    let server = TestServer::with_config(redis_config(SHARED_REDIS, &unique_prefix())).await;
    let url = server.url("/ws/chat/leaving/");
    let mut member = Client::join(&url).await;
    let mut sender = Client::join(&url).await;
    burst(&mut sender, "s", SENDS).await;
    // Gone at once: the server reads the close after the messages, with
    // some of their group sends still in flight.
    sender.close().await;
    let got = messages(&mut member, SENDS).await;
    assert_eq!(sequence(&got, "s"), (0..SENDS).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary"]
async fn every_send_that_fails_while_redis_is_down_is_an_error_frame() {
    const SENDS: usize = 40;
    let mut redis = redis_server::RedisServer::start();
    let server = TestServer::with_config(redis_config(&redis.url(), "asgi")).await;
    let url = server.url("/ws/chat/outage/");
    let mut sender = Client::join(&url).await;
    sender.send_json(&json!({"message": "before"})).await;
    assert_eq!(sender.recv_type("chat_message").await["message"], "before");

    redis.stop();
    burst(&mut sender, "during", SENDS).await;
    // One error frame per message: none dropped without a word, and the
    // connection stays open.
    for _ in 0..SENDS {
        let e = sender.recv_type("error").await;
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Message not delivered")),
            "{e}"
        );
    }
    sender.assert_no_chat_message().await;
    server.stop().await;
}
