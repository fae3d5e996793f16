//! Presence and history across `estuary serve` processes on one Redis: a
//! client away from one process recovers what was said on the other (and
//! across a restart), exactly once each; a member in tabs on two processes
//! is one presence; a killed process's members leave within the bound.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Client;
use common::chat_protocol::recv_chat;
use estuary_test_support::eventually::poll_async;
use estuary_test_support::http;
use estuary_test_support::process::{Process, free_port};
use estuary_test_support::redis::{SHARED_REDIS, unique_prefix};
use serde_json::{Value, json};

/// Presence lapses after a second unrenewed, renewed every 300 ms.
const TIMEOUT_MS: u64 = 1000;
const REFRESH_MS: u64 = 300;

/// `estuary serve` on `port`, on the shared Redis under `prefix`.
fn serve(port: u16, prefix: &str, leave_delay_ms: u64) -> Process {
    Process::estuary_serve(
        env!("CARGO_BIN_EXE_estuary"),
        port,
        &[
            "--layer",
            SHARED_REDIS,
            "--redis-prefix",
            prefix,
            "--rate-limit",
            "0",
            "--presence-timeout-ms",
            &TIMEOUT_MS.to_string(),
            "--presence-refresh-ms",
            &REFRESH_MS.to_string(),
            "--leave-delay-ms",
            &leave_delay_ms.to_string(),
        ],
    )
}

fn url(port: u16, path: &str) -> String {
    format!("ws://127.0.0.1:{port}{path}")
}

/// `(epoch, offset)` of a frame's position.
fn position(frame: &Value) -> (String, u64) {
    let p = &frame["position"];
    let epoch = p["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no position in {frame}"));
    (epoch.to_owned(), p["offset"].as_u64().unwrap())
}

/// The JSON body of `GET path`.
async fn get_json(port: u16, path: &str) -> Value {
    let answer = http::get(("127.0.0.1", port), path).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// What a client that came back got: recovered frames, then live ones, by
/// offset; every offset once.
#[derive(Default)]
struct Received {
    by_offset: BTreeMap<u64, (String, bool)>,
}

impl Received {
    fn take(&mut self, frame: &Value) {
        let (_, offset) = position(frame);
        let text = frame["message"].as_str().unwrap().to_owned();
        let recovered = frame["recovered"] == true;
        if let Some(before) = self.by_offset.insert(offset, (text, recovered)) {
            panic!("offset {offset} received twice: {before:?}, then {frame}");
        }
    }
}

/// A client on A goes away; a sender on B talks on, and another on A keeps
/// talking while the client comes back to B with its position: it gets
/// every message after its position exactly once, the missed ones marked
/// recovered (in order), then the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_client_away_from_one_process_recovers_on_the_other() {
    let prefix = unique_prefix();
    let (a_port, b_port) = (free_port(), free_port());
    let _a = serve(a_port, &prefix, 0);
    let _b = serve(b_port, &prefix, 0);
    let room = "/ws/chat/recover/";

    let mut client = Client::join(&url(a_port, room)).await;
    let mut on_b = Client::join(&url(b_port, room)).await;
    on_b.send_json(&json!({"message": "seen"})).await;
    let seen = position(&recv_chat(&mut client).await);
    recv_chat(&mut on_b).await;
    client.close().await;
    for i in 0..10 {
        on_b.send_json(&json!({"message": format!("b{i}")})).await;
        recv_chat(&mut on_b).await;
    }

    // Meanwhile a member of A talks, paced by its own echo, while the
    // client comes back: some of its messages are recovered, some live,
    // some both ways (dropped once).
    let (halfway_tx, halfway) = tokio::sync::oneshot::channel();
    let sender = tokio::spawn(async move {
        let mut on_a = Client::join(&url(a_port, room)).await;
        let mut halfway_tx = Some(halfway_tx);
        let mut last = None;
        for i in 0..30 {
            on_a.send_json(&json!({"message": format!("a{i}")})).await;
            // (It joined a room that talked: its recent history comes first.)
            let echo = on_a.recv_type("chat_message").await;
            last = Some(position(&echo));
            if i == 10 {
                let _ = halfway_tx.take().map(|tx| tx.send(()));
            }
        }
        on_a.close().await;
        last.unwrap()
    });
    halfway.await.unwrap();
    let since = format!("?since={}:{}", seen.0, seen.1);
    let mut back = Client::connect(&url(b_port, &format!("{room}{since}"))).await;
    let hello = back.recv_json().await;
    assert_eq!(
        (hello["type"].as_str(), hello["recovered"].as_bool()),
        (Some("connection_established"), Some(true)),
        "{hello}"
    );
    let recovered_up_to = position(&hello);
    assert_eq!(recovered_up_to.0, seen.0, "one epoch");
    let last = sender.await.unwrap();
    on_b.send_json(&json!({"message": "live on b"})).await;
    // (It heard A's member too.)
    let last_b = loop {
        let frame = recv_chat(&mut on_b).await;
        if frame["message"] == "live on b" {
            break position(&frame);
        }
    };
    let last = last.1.max(last_b.1);

    let mut received = Received::default();
    while received.by_offset.len() < (last - seen.1) as usize {
        let frame = recv_chat(&mut back).await;
        assert_eq!(frame["type"], "chat_message", "{frame}");
        received.take(&frame);
    }
    let offsets: Vec<u64> = received.by_offset.keys().copied().collect();
    assert_eq!(
        offsets,
        (seen.1 + 1..=last).collect::<Vec<_>>(),
        "every message after the position, none missing: {:?}",
        received.by_offset
    );
    back.assert_no_chat_message().await;
    for (offset, (text, recovered)) in &received.by_offset {
        assert_eq!(
            *recovered,
            *offset <= recovered_up_to.1,
            "offset {offset} ({text}): recovered up to the greeting's position, live after"
        );
    }
    let texts: Vec<&str> = received.by_offset.values().map(|(t, _)| t.as_str()).collect();
    for i in 0..10 {
        assert!(texts.contains(&format!("b{i}").as_str()), "b{i} missing");
    }
    for i in 0..30 {
        assert!(texts.contains(&format!("a{i}").as_str()), "a{i} missing");
    }
}

/// The same across a restart: process A is killed under its client, B's
/// member talks meanwhile, A comes back on its port and the client, back
/// with its position, recovers exactly what it missed, then goes on live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn a_client_recovers_across_a_restart_of_its_process() {
    let prefix = unique_prefix();
    let (a_port, b_port) = (free_port(), free_port());
    let mut a = serve(a_port, &prefix, 0);
    let _b = serve(b_port, &prefix, 0);
    let room = "/ws/chat/restart/";
    let mut client = Client::join(&url(a_port, &format!("{room}?username=ann"))).await;
    let mut on_b = Client::join(&url(b_port, room)).await;
    on_b.send_json(&json!({"message": "before"})).await;
    let seen = position(&recv_chat(&mut client).await);
    recv_chat(&mut on_b).await;

    let _ = a.child.kill();
    let _ = a.child.wait();
    assert_eq!(client.recv_close().await, 1006, "the process died under it");
    for i in 0..5 {
        on_b.send_json(&json!({"message": format!("during {i}")})).await;
        recv_chat(&mut on_b).await;
    }
    let _a = serve(a_port, &prefix, 0);
    let since = format!("?username=ann&since={}:{}", seen.0, seen.1);
    let mut back = Client::connect(&url(a_port, &format!("{room}{since}"))).await;
    let hello = back.recv_json().await;
    assert_eq!(hello["recovered"], true, "{hello}");
    assert_eq!(position(&hello), (seen.0.clone(), seen.1 + 5));
    for i in 0..5u64 {
        let m = recv_chat(&mut back).await;
        assert_eq!(
            (m["message"].as_str(), m["recovered"].as_bool()),
            (Some(format!("during {i}").as_str()), Some(true)),
            "{m}"
        );
        assert_eq!(position(&m), (seen.0.clone(), seen.1 + 1 + i));
    }
    on_b.send_json(&json!({"message": "after"})).await;
    let m = recv_chat(&mut back).await;
    assert_eq!(
        (m["message"].as_str(), m.get("recovered")),
        (Some("after"), None),
        "{m}"
    );
    assert_eq!(position(&m), (seen.0, seen.1 + 6));
    back.assert_no_chat_message().await;
}

/// A member with a tab on each process is one presence, counted by both
/// processes' APIs; it leaves once, after its last tab, and a process
/// killed with a member on it has that member announced gone by the other
/// within the bound (timeout + refresh + interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at 127.0.0.1:6379"]
async fn presence_is_one_across_processes_and_a_dead_process_leaves_in_time() {
    let prefix = unique_prefix();
    let (a_port, b_port) = (free_port(), free_port());
    let mut a = serve(a_port, &prefix, 200);
    let _b = serve(b_port, &prefix, 200);
    let room = "/ws/chat/tabs/";
    let mut watcher = Client::join(&url(b_port, room)).await;

    let tab_a = Client::join(&url(a_port, &format!("{room}?username=ann"))).await;
    let join = watcher.recv_json().await;
    assert_eq!(
        (join["type"].as_str(), join["username"].as_str()),
        (Some("user_join"), Some("ann")),
        "{join}"
    );
    let tab_b = Client::join(&url(b_port, &format!("{room}?username=ann"))).await;
    watcher.assert_no_message().await;
    for port in [a_port, b_port] {
        assert_eq!(
            get_json(port, "/api/rooms").await,
            json!({"rooms": [{"room": "tabs", "members": 3}]}),
            "as process {port} counts"
        );
        assert_eq!(
            get_json(port, "/api/rooms/tabs/presence").await,
            json!({"room": "tabs", "members": 3, "online": 1,
                   "users": [{"username": "ann", "connections": 2}]}),
        );
    }
    tab_a.close().await;
    watcher.assert_no_message().await;
    tab_b.close().await;
    let leave = watcher.recv_json().await;
    assert_eq!(
        (leave["type"].as_str(), leave["username"].as_str()),
        (Some("user_leave"), Some("ann")),
        "{leave}"
    );

    // Bob's only tab is on A, which dies without a word.
    let _bob = Client::join(&url(a_port, &format!("{room}?username=bob"))).await;
    assert_eq!(watcher.recv_type("user_join").await["username"], "bob");
    let killed = Instant::now();
    let _ = a.child.kill();
    let _ = a.child.wait();
    let leave = watcher.recv_json().await;
    let took = killed.elapsed();
    assert_eq!(
        (leave["type"].as_str(), leave["username"].as_str()),
        (Some("user_leave"), Some("bob")),
        "{leave}"
    );
    // Plus a second for a loaded machine.
    let bound = Duration::from_millis(TIMEOUT_MS + REFRESH_MS + 100) + Duration::from_secs(1);
    assert!(took <= bound, "bob left {took:?} after A died (bound {bound:?})");
    println!("a dead process's member announced gone after {took:?}");
    // B's API no longer counts A's connections.
    // Another process's counter announces nothing: ask it until it holds.
    poll_async(
        "B to count only its own connection",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            (get_json(b_port, "/api/rooms").await == json!({"rooms": [{"room": "tabs", "members": 1}]}))
                .then_some(())
        },
    )
    .await;
}
