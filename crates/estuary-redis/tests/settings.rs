//! `[layer]` settings read as a Django project writes `CHANNEL_LAYERS`,
//! enforced over the shared Redis: `channel_capacity` patterns.

use std::time::Duration;

use estuary_core::{ChannelLayer, ChannelName, Message, SendError};
use estuary_redis::LayerSettings;
use estuary_test_support::redis as common;
use serde_json::json;

fn message_n(n: usize) -> Message {
    Message::from_json(&json!({"type": "job.run", "n": n})).unwrap()
}

/// A channel whose name matches a `channel_capacity` pattern holds that
/// many messages in Redis, the first matching pattern decides, and the
/// others keep `capacity`: a send past it is refused (`Full`), handing the
/// message back.
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_patterns_capacity_is_enforced_over_redis() {
    let prefix = common::unique_prefix();
    let settings: LayerSettings = toml::from_str(&format!(
        r#"
        redis = ["{}"]
        prefix = "{prefix}"
        capacity = 4
        channel_capacity = [
            {{ glob = "small.*", capacity = 2 }},
            {{ glob = "small.*", capacity = 3 }},
            "re:^tiny[0-9]+=1",
        ]
        "#,
        common::SHARED_REDIS
    ))
    .unwrap();
    settings.check().unwrap();
    let layer = settings.layer().unwrap();
    for (name, holds) in [("small.a", 2), ("tiny42", 1), ("tinyx", 4), ("big", 4)] {
        let channel = ChannelName::new(name).unwrap();
        for n in 0..holds {
            layer
                .send(&channel, message_n(n))
                .await
                .unwrap_or_else(|e| panic!("{name}: send {n} of {holds}: {e}"));
        }
        match layer.send(&channel, message_n(holds)).await {
            Err(SendError::Full {
                capacity, message, ..
            }) => {
                assert_eq!(capacity, holds, "{name}");
                assert_eq!(message, message_n(holds), "{name}: the message is handed back");
            }
            other => panic!("{name} should hold {holds}, got {other:?}"),
        }
        let first = tokio::time::timeout(Duration::from_secs(10), layer.receive(&channel))
            .await
            .expect("a receive within 10 s")
            .unwrap();
        assert_eq!(first, message_n(0), "{name}: nothing was lost before it was full");
    }
}
