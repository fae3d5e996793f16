//! Join and leave announcements over TCP: a burst of named joins reaches a
//! member in a few frames, not one per joiner, and every name is in them.

mod common;

use std::collections::BTreeSet;

use common::{Client, TestServer};
use futures_util::future::join_all;
use serde_json::Value;

const JOINERS: usize = 200;

/// The names an announcement frame carries: all of `users` when present,
/// else `username`.
fn names(frame: &Value) -> Vec<String> {
    match frame["users"].as_array() {
        Some(users) => users
            .iter()
            .map(|u| u["username"].as_str().unwrap_or_default().to_owned())
            .collect(),
        None => vec![frame["username"].as_str().unwrap_or_default().to_owned()],
    }
}

/// Reads `kind` frames until every name in `expected` was named; returns
/// how many frames that took. Any other frame fails the test.
async fn collect(watcher: &mut Client, kind: &str, expected: &BTreeSet<String>) -> usize {
    let mut seen = BTreeSet::new();
    let mut frames = 0;
    while seen.len() < expected.len() {
        let frame = watcher.recv_json().await;
        assert_eq!(frame["type"], kind, "{frame}");
        frames += 1;
        for name in names(&frame) {
            assert!(expected.contains(&name), "{name} was not expected: {frame}");
            assert!(seen.insert(name.clone()), "{name} was announced twice");
        }
        // What a page written for the tutorial shows.
        assert!(
            frame["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{frame}"
        );
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_named_joins_is_announced_in_a_few_frames_naming_everyone() {
    let server = TestServer::crowded().await;
    let mut watcher = Client::join(&server.url("/ws/chat/crowd/")).await;
    let expected: BTreeSet<String> = (0..JOINERS).map(|i| format!("member-{i}")).collect();

    let joiners = join_all(expected.iter().map(|name| {
        let url = server.url(&format!("/ws/chat/crowd/?username={name}"));
        async move { Client::join(&url).await }
    }))
    .await;
    let joins = collect(&mut watcher, "user_join", &expected).await;
    // One frame per joiner before; now one per period (250 ms) at most.
    assert!(
        joins * 4 <= JOINERS,
        "{JOINERS} joins took {joins} user_join frames"
    );

    join_all(joiners.into_iter().map(Client::close)).await;
    let leaves = collect(&mut watcher, "user_leave", &expected).await;
    assert!(
        leaves * 4 <= JOINERS,
        "{JOINERS} leaves took {leaves} user_leave frames"
    );
    watcher.assert_no_message().await;
}
