//! The chat application while its Redis is down: every message a member
//! sends gets the "not delivered" error frame, and the log says so at most
//! once a second with the count held back, not a line per message (a room
//! of chatty members wrote hundreds of lines a second). Its own file: the
//! throttles are process-wide and the log is captured on this test's thread.

mod common;

use estuary_test_support::redis as redis_server;

use std::time::{Duration, Instant};

use common::{CapturedLog, Client, TestServer, assert_throttled, held_back};
use estuary_cli::config::Config;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
#[ignore = "needs the redis-server binary"]
async fn messages_while_the_layer_is_down_log_a_line_a_second() {
    let (log, _guard) = CapturedLog::start();
    let mut redis = redis_server::RedisServer::start();
    let mut config = Config::default();
    config.layer.redis = vec![redis.url()];
    config.websocket.rate_limit = 0.0;
    config.websocket.rate_limit_per_ip = 0.0;
    let server = TestServer::with_config(config).await;
    let mut members = Vec::new();
    for _ in 0..20 {
        members.push(Client::join(&server.url("/ws/chat/down/")).await);
    }
    redis.stop();

    // Every member sends until 400 messages were refused and a line has
    // reported what it held back.
    let started = Instant::now();
    let mut refused = 0u64;
    loop {
        for member in &mut members {
            member.send_json(&json!({"message": "anyone?"})).await;
            let answer = member.recv_json().await;
            if answer["type"] == "error" {
                refused += 1;
            }
        }
        let lines = log.matching("chat message not delivered");
        if refused >= 400 && lines.iter().any(|l| held_back(l) > 0) {
            break;
        }
        assert!(started.elapsed() < LIMIT, "{refused} refused; {lines:#?}");
    }
    let elapsed = started.elapsed();
    let lines = log.matching("chat message not delivered");
    eprintln!(
        "{refused} messages refused in {elapsed:?}: {} lines\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert_throttled(&lines, elapsed, refused);
    assert!(
        lines[0].contains("is the channel layer reachable?"),
        "{}",
        lines[0]
    );
}
