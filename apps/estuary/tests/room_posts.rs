//! The room-post worker that `estuary serve` runs beside its WebSocket tier:
//! a post sent to the named channel `estuary.room-posts` (by Django's
//! `channel_layer.send`, over Redis) reaches the room's members; invalid
//! posts are counted, never sent.

use estuary_test_support::probe;

mod common;

use common::{Client, TestServer};
use estuary::{ChannelLayer, ChannelLayerHandle, ChannelName, Message};
use estuary_cli::config::Config;
use estuary_cli::posts::ROOM_POSTS;
use probe::Probe;
use serde_json::json;

const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

fn post(value: serde_json::Value) -> Message {
    Message::from_json(&value).unwrap()
}

#[tokio::test]
async fn a_post_on_the_named_channel_reaches_the_room_and_invalid_ones_are_counted() {
    let layer = ChannelLayerHandle::default();
    let (running, stats) = TestServer::with_workers(Config::default(), layer.clone()).await;
    let mut member = Client::join(&format!("ws://{}/ws/chat/lobby/", running.addr)).await;
    let posts = ChannelName::new(ROOM_POSTS).unwrap();
    for invalid in [
        json!({"type": "room.post", "room": "no spaces", "message": "x"}),
        json!({"type": "room.post", "room": "lobby", "message": "   "}),
        json!({"type": "room.post", "room": "lobby", "message": "x", "username": "n".repeat(51)}),
        json!({"type": "room.delete", "room": "lobby"}),
    ] {
        layer.send(&posts, post(invalid)).await.unwrap();
    }
    layer
        .send(
            &posts,
            post(json!({"type": "room.post", "room": "lobby", "message": " Maintenance at 5 ", "username": "Ops"})),
        )
        .await
        .unwrap();
    let m = member.recv_json().await;
    assert_eq!(
        (m["type"].as_str(), m["message"].as_str(), m["username"].as_str()),
        (Some("chat_message"), Some("Maintenance at 5"), Some("Ops"))
    );
    assert!(m["id"].is_string() && m["ts"].is_i64(), "{m}");
    // One channel, one sender: the invalid posts were handled first.
    assert_eq!((stats.failed(), stats.undecodable(), stats.handled()), (3, 1, 1));
    member.assert_no_message().await;
    running.stop_cleanly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn a_django_send_over_redis_posts_to_the_room() {
    let prefix = format!("estuarytest{}", uuid::Uuid::new_v4().simple());
    let mut config = Config::default();
    config.layer.redis = vec![SHARED_REDIS.to_owned()];
    config.layer.prefix = prefix.clone();
    let layer = estuary_cli::serve::channel_layer(&config).expect("the Redis layer");
    let (running, _stats) = TestServer::with_workers(config, layer).await;
    let mut member = Client::join(&format!("ws://{}/ws/chat/news/", running.addr)).await;

    let django = Probe::new(SHARED_REDIS, &prefix, None);
    tokio::task::spawn_blocking(move || {
        let (code, err) = django.send(
            ROOM_POSTS,
            &json!({"type": "room.post", "room": "news", "message": "from Django"}),
            1,
        );
        assert_eq!(code, 0, "python send failed: {err:?}");
    })
    .await
    .unwrap();
    let m = member.recv_json().await;
    assert_eq!(
        (m["message"].as_str(), m["username"].as_str()),
        (Some("from Django"), Some("Server"))
    );
    running.stop_cleanly().await;
}
