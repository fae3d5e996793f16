//! The relay over the real Redis layer, with a worker written in Python on
//! raw channels_redis (`tests/relay_worker.py`): the wire shape a Django
//! process sees, answers, state, group sends from Python, `estuary.event`,
//! and a worker killed in the middle of an event.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use estuary_core::ChannelLayerHandle;
use estuary_redis::{RedisChannelLayer, RedisConfig};
use estuary_relay::{Relay, Target};
use estuary_server::Router;
use estuary_test_support::process::Process;
use estuary_test_support::redis::{SHARED_REDIS, unique_prefix};
use estuary_test_support::{eventually, server, workspace_root, ws};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ROUTE: &str = "ws/chat/<room>/<int:n>/";

fn python() -> PathBuf {
    std::env::var_os("ESTUARY_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/interop-venv/bin/python"))
}

/// The Python worker on `channel`, once it listens.
fn worker(prefix: &str, channel: &str) -> Process {
    let python = python();
    assert!(
        python.exists(),
        "no Python at {}: run scripts/install-interop.sh or set ESTUARY_INTEROP_PYTHON",
        python.display()
    );
    let mut cmd = Command::new(python);
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/relay_worker.py"))
        .args(["--redis", SHARED_REDIS, "--prefix", prefix, "--channel", channel]);
    Process::start(cmd, "ready", Duration::from_secs(30))
}

/// A server relaying [`ROUTE`] over Redis under `prefix`.
async fn serve(relay: &Relay, prefix: &str) -> server::Served {
    let layer = RedisChannelLayer::new(RedisConfig::new([SHARED_REDIS]).with_prefix(prefix)).expect("layer");
    let app = Router::new()
        .with_channel_layer(ChannelLayerHandle::new(layer))
        .websocket(ROUTE, relay.factory())
        .into_service();
    server::serve(app).await
}

async fn text(ws: &mut ws::Ws) -> String {
    ws::next_text(ws).await
}

#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn a_python_worker_on_channels_redis_answers_relayed_connections() {
    let prefix = unique_prefix();
    let mut python = worker(&prefix, "relay.chat");
    let relay = Relay::builder(Target::channel("relay.chat").unwrap())
        .route(ROUTE)
        .groups(["chat_{room}"])
        .query_param("lang", "en")
        .build()
        .unwrap();
    let served = serve(&relay, &prefix).await;
    let mut request = served.ws("/ws/chat/lobby/7/?x=1").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("cookie", "sessionid=secret".parse().unwrap());
    let mut client = ws::connect(request).await.expect("the worker accepts");

    let seen: serde_json::Value = serde_json::from_str(&text(&mut client).await).unwrap();
    assert_eq!(
        seen["types"],
        json!({"type": "str", "channel": "str", "seq": "int", "scope": "dict", "state": "dict"})
    );
    assert_eq!(seen["scope_types"]["query_string"], "bytes");
    assert_eq!(seen["scope_types"]["headers"], "list");
    assert_eq!(seen["scope_types"]["user"], "NoneType");
    assert_eq!(seen["query_string"], "x=1");
    assert_eq!(seen["header_types"], json!(["bytes"]));
    assert_eq!(seen["has_cookie"], false);
    assert_eq!(seen["kwargs"], json!({"room": "lobby", "n": 7}));
    assert_eq!(seen["kwarg_types"], json!({"room": "str", "n": "int"}));
    assert_eq!(seen["query"], json!({"lang": "en"}));
    assert_eq!(seen["groups"], json!(["chat_lobby"]));
    assert_eq!(seen["seq"], 0);

    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(text(&mut client).await, "hello:1");
    client.send(Message::text("again")).await.unwrap();
    assert_eq!(text(&mut client).await, "again:2", "the state went round");
    client.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(ws::next(&mut client).await, Message::binary(vec![3u8, 2, 1]));
    client.send(Message::text("broadcast")).await.unwrap();
    assert_eq!(text(&mut client).await, "to the room", "a group send from Python");
    client.send(Message::text("note")).await.unwrap();
    assert_eq!(
        text(&mut client).await,
        "note:chat.note:5",
        "back to Python as an estuary.event"
    );

    client.close(None).await.unwrap();
    let code = eventually::poll(
        "the worker to exit after websocket.disconnect",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || python.child.try_wait().ok().flatten(),
    )
    .await;
    assert!(code.success());
    let stats = relay.stats();
    assert_eq!((stats.acked(), stats.timed_out(), stats.undelivered()), (7, 0, 0));
    served.stop.cancel();
}

#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with channels_redis (ESTUARY_INTEROP_PYTHON)"]
async fn a_worker_killed_mid_event_leaves_the_client_told_and_the_loss_counted() {
    let prefix = unique_prefix();
    let mut python = worker(&prefix, "relay.chat");
    let relay = Relay::builder(Target::channel("relay.chat").unwrap())
        .route(ROUTE)
        .groups(["chat_{room}"])
        .reply_timeout(Duration::from_secs(1))
        .busy_frame("busy")
        .build()
        .unwrap();
    let served = serve(&relay, &prefix).await;
    let mut client = ws::connect(served.ws("/ws/chat/lobby/1/"))
        .await
        .expect("accepted");
    let _seen = text(&mut client).await;

    client.send(Message::text("hang")).await.unwrap();
    assert_eq!(text(&mut client).await, "working");
    python.child.kill().unwrap();
    python.child.wait().unwrap();
    assert_eq!(
        text(&mut client).await,
        "busy",
        "the missing acknowledgement is reported"
    );
    assert_eq!(relay.stats().timed_out(), 1);
    assert_eq!(relay.in_flight(), 0);

    // A worker restarted takes the next event; the state is the last one acknowledged.
    let _restarted = worker(&prefix, "relay.chat");
    client.send(Message::text("after")).await.unwrap();
    assert_eq!(text(&mut client).await, "after:1");
    served.stop.cancel();
}
