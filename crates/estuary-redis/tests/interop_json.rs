//! channels_redis's `serializer_format = "json"` against the real Python
//! stack (Django settings → channels_redis 4.3, through the shared probe),
//! with and without `symmetric_encryption_keys`, on the core and the
//! pub/sub layer: messages cross both ways, and what JSON cannot hold
//! (bytes) is refused at the send with an error, not written. The msgpack
//! default is covered by `interop.rs` and `pubsub.rs`.

use std::time::Duration;

use estuary_core::{ChannelLayer, ChannelLayerError, ChannelLayerHandle, ChannelName, GroupName, Message};
use estuary_redis::{NotJson, RedisChannelLayer, RedisConfig, RedisPubSubChannelLayer, SerializerFormat};
use estuary_test_support::probe::Probe;
use estuary_test_support::redis as common;
use serde_json::json;

const KEY: &str = "estuary-interop-json-secret";
const WAIT: Duration = Duration::from_secs(15);

/// A layer with JSON (and `key`) on a fresh prefix, and the probe set alike.
fn setup(key: Option<&str>, pubsub: bool) -> (ChannelLayerHandle, Probe, Option<RedisChannelLayer>) {
    let prefix = common::unique_prefix();
    let mut config = RedisConfig::new([common::SHARED_REDIS])
        .with_prefix(prefix.clone())
        .with_serializer_format(SerializerFormat::Json);
    if let Some(key) = key {
        config = config.with_encryption_keys([key]);
    }
    let mut probe = Probe::new(common::SHARED_REDIS, &prefix, key);
    probe
        .layer_args
        .extend(["--serializer-format".into(), "json".into()]);
    if pubsub {
        probe.layer_args.extend(["--layer".into(), "pubsub".into()]);
        let layer = RedisPubSubChannelLayer::new(config).expect("layer");
        (ChannelLayerHandle::new(layer), probe, None)
    } else {
        let layer = RedisChannelLayer::new(config).expect("layer");
        (ChannelLayerHandle::new(layer.clone()), probe, Some(layer))
    }
}

async fn recv(layer: &ChannelLayerHandle, ch: &ChannelName) -> Message {
    tokio::time::timeout(WAIT, layer.receive(ch))
        .await
        .expect("nothing received")
        .expect("receive")
}

/// Every JSON type; `é` and a large integer.
fn sample() -> serde_json::Value {
    json!({"type": "chat.message", "text": "héllo", "n": -7, "big": 9_007_199_254_740_993u64,
           "f": 1.5, "ok": true, "none": null, "list": [1, "a"], "map": {"k": "v"}})
}

async fn both_ways(key: Option<&str>, pubsub: bool) {
    let (layer, probe, core) = setup(key, pubsub);

    // Python's send reaches an Estuary channel, every value as it was.
    let ch = layer.new_channel().await.unwrap();
    let python = probe.clone();
    let name = ch.to_string();
    tokio::task::spawn_blocking(move || {
        let (code, err) = python.send(&name, &sample(), 1);
        assert_eq!(code, 0, "{err:?}");
    })
    .await
    .unwrap();
    assert_eq!(recv(&layer, &ch).await.to_json(), sample());

    // Estuary's group send reaches a Python consumer in the group, and
    // Python's group send reaches Estuary's member.
    let group = format!("room_{}", uuid::Uuid::new_v4().simple());
    let listening = probe.start("listen", &["--group", &group, "--count", "1", "--timeout", "20"]);
    let gname = GroupName::new(&group).unwrap();
    layer.group_add(&gname, &ch).await.unwrap();
    layer
        .group_send(&gname, Message::from_json(&sample()).unwrap())
        .await
        .unwrap();
    let (code, lines) = tokio::task::spawn_blocking(move || listening.finish())
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(lines, vec![sample()]);
    assert_eq!(recv(&layer, &ch).await.to_json(), sample(), "our own member too");
    let python = probe.clone();
    let g = group.clone();
    tokio::task::spawn_blocking(move || {
        python.group_send(&g, &json!({"type": "chat.message", "message": "from django"}))
    })
    .await
    .unwrap();
    assert_eq!(recv(&layer, &ch).await.to_json()["message"], "from django");

    // Bytes cannot be JSON: refused at the send, as Python's json.dumps
    // refuses them, and nothing is written.
    let with_bytes = Message::encode(&rmpv::Value::Map(vec![
        ("type".into(), "x.y".into()),
        ("raw".into(), rmpv::Value::Binary(vec![0, 1])),
    ]))
    .unwrap();
    let error = layer.send(&ch, with_bytes.clone()).await.unwrap_err();
    assert!(error.to_string().contains("cannot be written as JSON"), "{error}");
    match layer.group_send(&gname, with_bytes).await {
        Err(ChannelLayerError::Corrupt(source)) => {
            assert!(source.downcast_ref::<NotJson>().is_some(), "{source}")
        }
        other => panic!("a group send of bytes: {other:?}"),
    }
    if let Some(core) = core {
        assert_eq!(core.undecodable(), 0);
        // What is stored is JSON (after decryption), read by channels_redis.
        let worker = ChannelName::new(&format!("worker.{}", uuid::Uuid::new_v4().simple())).unwrap();
        layer
            .send(&worker, Message::from_json(&sample()).unwrap())
            .await
            .unwrap();
        let (code, entries, err) = probe.run("dump", &[]);
        assert_eq!(code, 0, "{err:?}");
        assert!(
            entries.iter().any(|e| e.to_string().contains("9007199254740993")),
            "{entries:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn json_core() {
    both_ways(None, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn json_core_encrypted() {
    both_ways(Some(KEY), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn json_pubsub() {
    both_ways(None, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn json_pubsub_encrypted() {
    both_ways(Some(KEY), true).await;
}
