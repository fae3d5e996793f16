//! Interop with the real Python stack (Django settings → channels_redis 4.3)
//! through the shared probe, against the shared Redis with a unique prefix,
//! with and without symmetric encryption.

use estuary_test_support::probe;

use estuary_test_support::redis as common;

use std::time::Duration;

use estuary_core::{ChannelLayer, ChannelLayerConfig, ChannelName, GroupName, Message, SendError};
use estuary_redis::{RedisChannelLayer, RedisConfig};
use probe::Probe;
use serde_json::json;

const KEY: &str = "estuary-interop-secret";
const WAIT: Duration = Duration::from_secs(15);

fn setup(key: Option<&str>, capacity: usize) -> (RedisChannelLayer, Probe) {
    let prefix = common::unique_prefix();
    let mut config = RedisConfig::new([common::SHARED_REDIS])
        .with_prefix(prefix.clone())
        .with_layer_config(ChannelLayerConfig::default().with_capacity(capacity));
    if let Some(key) = key {
        config = config.with_encryption_keys([key]);
    }
    let mut probe = Probe::new(common::SHARED_REDIS, &prefix, key);
    probe
        .layer_args
        .extend(["--capacity".into(), capacity.to_string()]);
    (RedisChannelLayer::new(config).expect("layer"), probe)
}

async fn recv(layer: &RedisChannelLayer, ch: &ChannelName) -> Message {
    tokio::time::timeout(WAIT, layer.receive(ch))
        .await
        .expect("nothing received")
        .expect("receive")
}

/// A message with every msgpack type Channels allows, bytes included.
fn mixed() -> serde_json::Value {
    json!({"type": "probe.mixed", "text": "héllo", "n": -7, "f": 1.5, "ok": true, "none": null,
           "list": [1, "a"], "map": {"k": "v"}, "raw": {"__bytes_b64__": "AAEC/w=="}})
}

async fn python_send_reaches_an_estuary_channel(key: Option<&str>) {
    let (layer, probe) = setup(key, 100);
    let ch = layer.new_channel().await.unwrap();
    let python = probe.clone();
    let name = ch.to_string();
    tokio::task::spawn_blocking(move || {
        let (code, err) = python.send(&name, &mixed(), 1);
        assert_eq!(code, 0, "{err:?}");
    })
    .await
    .unwrap();
    let got = recv(&layer, &ch).await;
    assert_eq!(got.message_type(), "probe.mixed");
    let value = got.to_value();
    let field = |k: &str| {
        value
            .as_map()
            .unwrap()
            .iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        field("raw"),
        Some(rmpv::Value::Binary(vec![0, 1, 2, 255])),
        "bin stays bin"
    );
    assert_eq!(field("text"), Some(rmpv::Value::from("héllo")), "str stays str");
    assert_eq!(field("f"), Some(rmpv::Value::F64(1.5)));
    assert!(field("__asgi_channel__").is_none(), "the routing key is removed");
}

async fn estuary_send_reaches_python(key: Option<&str>) {
    let (layer, probe) = setup(key, 100);
    // A named (worker) channel that Python receives on.
    let worker = format!("worker.{}", uuid::Uuid::new_v4().simple());
    let receiving = probe.start(
        "receive",
        &["--channel", &worker, "--count", "1", "--timeout", "20"],
    );
    let original = Message::encode(&rmpv::Value::Map(vec![
        ("type".into(), "probe.from_rust".into()),
        ("raw".into(), rmpv::Value::Binary(vec![0, 1])),
        ("text".into(), "ünïcode".into()),
    ]))
    .unwrap();
    layer
        .send(&ChannelName::new(&worker).unwrap(), original.clone())
        .await
        .unwrap();
    let (code, lines) = tokio::task::spawn_blocking(move || receiving.finish())
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        lines,
        vec![json!({"type": "probe.from_rust", "raw": {"__bytes_b64__": "AAE="}, "text": "ünïcode"})]
    );

    // A Python consumer's own process channel.
    let listening = probe.start("listen", &["--count", "1", "--timeout", "20"]);
    let channel = ChannelName::new(listening.ready["channel"].as_str().unwrap()).unwrap();
    layer.send(&channel, original).await.unwrap();
    let (code, lines) = tokio::task::spawn_blocking(move || listening.finish())
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(lines[0]["type"], "probe.from_rust");
}

async fn group_send_both_ways(key: Option<&str>) {
    let (layer, probe) = setup(key, 100);
    let group = format!("room_{}", uuid::Uuid::new_v4().simple());
    // Estuary → a Python consumer in the group.
    let listening = probe.start("listen", &["--group", &group, "--count", "1", "--timeout", "20"]);
    let mine = layer.new_channel().await.unwrap();
    layer
        .group_add(&GroupName::new(&group).unwrap(), &mine)
        .await
        .unwrap();
    let msg =
        Message::from_json(&json!({"type": "chat.message", "message": "from rust", "username": "ferris"}))
            .unwrap();
    let report = layer
        .group_send(&GroupName::new(&group).unwrap(), msg)
        .await
        .unwrap();
    assert_eq!(report.delivered, 2, "the Python listener and our own member");
    let (code, lines) = tokio::task::spawn_blocking(move || listening.finish())
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        lines,
        vec![json!({"type": "chat.message", "message": "from rust", "username": "ferris"})]
    );
    assert_eq!(recv(&layer, &mine).await.message_type(), "chat.message");

    // Python → Estuary's member.
    let python = probe.clone();
    let g = group.clone();
    tokio::task::spawn_blocking(move || {
        python.group_send(&g, &json!({"type": "chat.message", "message": "from django"}))
    })
    .await
    .unwrap();
    let got = recv(&layer, &mine).await;
    assert_eq!(got.to_json()["message"], "from django");
}

async fn stored_messages_decode_in_python(key: Option<&str>) {
    let (layer, probe) = setup(key, 100);
    let worker = ChannelName::new("worker.unread").unwrap();
    layer
        .send(&worker, Message::encode(&mixed_msgpack()).unwrap())
        .await
        .unwrap();
    let group = GroupName::new("dumped").unwrap();
    let gone = ChannelName::new("specific.0123456789abcdef0123456789abcdef!x").unwrap();
    layer.group_add(&group, &gone).await.unwrap();
    layer
        .group_send(
            &group,
            Message::from_json(&json!({"type": "a.b", "k": 1})).unwrap(),
        )
        .await
        .unwrap();
    let (code, entries, err) = probe.run("dump", &[]);
    assert_eq!(code, 0, "{err:?}");
    let members: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| !e["key"].as_str().unwrap_or_default().contains(":group:"))
        .flat_map(|e| e["members"].as_array().unwrap().iter())
        .collect();
    assert_eq!(members.len(), 2, "{entries:?}");
    for m in members {
        assert!(m.get("decode_error").is_none(), "Python could not decode: {m}");
        assert!(m["decoded"]["type"].is_string(), "{m}");
    }
}

fn mixed_msgpack() -> rmpv::Value {
    rmpv::Value::Map(vec![
        ("type".into(), "probe.stored".into()),
        ("raw".into(), rmpv::Value::Binary(vec![9])),
    ])
}

async fn capacity_is_shared(key: Option<&str>) {
    let (layer, probe) = setup(key, 2);
    let worker = ChannelName::new("worker.full").unwrap();
    let m = || Message::from_json(&json!({"type": "t"})).unwrap();
    layer.send(&worker, m()).await.unwrap();
    layer.send(&worker, m()).await.unwrap();
    assert!(
        matches!(layer.send(&worker, m()).await, Err(SendError::Full { .. })),
        "Estuary gets Full"
    );
    let (code, status) =
        tokio::task::spawn_blocking(move || probe.send("worker.full", &json!({"type": "t"}), 1))
            .await
            .unwrap();
    assert_eq!(code, 1);
    assert!(
        status.iter().any(|s| s["event"] == "channel_full"),
        "Python gets ChannelFull: {status:?}"
    );
}

macro_rules! both {
    ($name:ident, $f:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
            async fn plain() {
                super::$f(None).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
            async fn encrypted() {
                super::$f(Some(super::KEY)).await;
            }
        }
    };
}

both!(python_send_to_estuary, python_send_reaches_an_estuary_channel);
both!(estuary_send_to_python, estuary_send_reaches_python);
both!(group_send_in_both_directions, group_send_both_ways);
both!(
    python_decodes_what_estuary_stores,
    stored_messages_decode_in_python
);
both!(full_channel_both_sides, capacity_is_shared);
