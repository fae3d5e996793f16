//! 1,000 concurrent clients in 10 rooms over TCP: every message reaches
//! exactly the members of its room, none lost, none duplicated.

mod common;

use std::collections::HashMap;

use common::{Client, TestServer};
use serde_json::json;

const ROOMS: usize = 10;
const PER_ROOM: usize = 100;
const SENDERS_PER_ROOM: usize = 10;
const MESSAGES_PER_SENDER: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_in_ten_rooms() {
    let server = TestServer::crowded().await;

    // Connect everyone (in parallel per room) and wait for every greeting, so
    // each member has joined its group before anything is sent.
    let mut rooms: Vec<Vec<Client>> = Vec::new();
    for r in 0..ROOMS {
        let url = server.url(&format!("/ws/chat/room{r}/"));
        let joins = (0..PER_ROOM).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Client::join(&url).await })
        });
        let mut members = Vec::new();
        for j in joins {
            members.push(j.await.unwrap());
        }
        rooms.push(members);
    }

    // The first senders of each room send; everyone reads concurrently.
    let expected_per_room = SENDERS_PER_ROOM * MESSAGES_PER_SENDER;
    let mut readers = Vec::new();
    for (r, members) in rooms.into_iter().enumerate() {
        for (i, mut client) in members.into_iter().enumerate() {
            readers.push(tokio::spawn(async move {
                if i < SENDERS_PER_ROOM {
                    for k in 0..MESSAGES_PER_SENDER {
                        let text = format!("r{r}-s{i}-k{k}");
                        client
                            .send_json(&json!({"message": text, "username": format!("u{i}")}))
                            .await;
                    }
                }
                let mut got: HashMap<String, usize> = HashMap::new();
                let mut last_k: HashMap<String, usize> = HashMap::new();
                for _ in 0..expected_per_room {
                    let m = client.recv_type("chat_message").await;
                    let text = m["message"].as_str().unwrap().to_owned();
                    let (room, rest) = text.split_once('-').unwrap();
                    assert_eq!(room, format!("r{r}"), "a message from another room leaked in");
                    let (sender, k) = rest.split_once("-k").unwrap();
                    let k: usize = k.parse().unwrap();
                    if let Some(prev) = last_k.insert(sender.to_owned(), k) {
                        assert!(k > prev, "messages of one sender out of order");
                    }
                    *got.entry(text).or_default() += 1;
                }
                client.assert_no_chat_message().await;
                assert_eq!(got.len(), expected_per_room, "lost messages in room {r}");
                assert!(got.values().all(|&n| n == 1), "duplicated messages in room {r}");
                client
            }));
        }
    }
    let mut clients = Vec::new();
    for reader in readers {
        clients.push(reader.await.expect("a client failed"));
    }
    assert_eq!(clients.len(), ROOMS * PER_ROOM);
    drop(clients);
    server.stop().await;
}

/// Ten clients burst into one room, each within the default rate limit
/// (a burst of 40): every reader gets all 400 messages, in each sender's
/// order, although the server falls behind on the burst (flow control: no
/// member's queue overflows into silent drops).
#[tokio::test]
async fn a_burst_from_ten_senders_reaches_every_reader_complete() {
    let server = TestServer::crowded().await;
    let url = server.url("/ws/chat/burst/");
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(Client::join(&url).await);
    }
    let mut senders = Vec::new();
    for _ in 0..10 {
        senders.push(Client::join(&url).await);
    }
    for (s, sender) in senders.iter_mut().enumerate() {
        for i in 0..40 {
            sender
                .send_json(&json!({"message": format!("{s}:{i}"), "username": format!("s{s}")}))
                .await;
        }
    }
    for reader in readers.iter_mut() {
        let mut next = [0usize; 10];
        for _ in 0..400 {
            let frame = reader.recv_type("chat_message").await;
            let text = frame["message"].as_str().unwrap().to_owned();
            let (s, i) = text.split_once(':').unwrap();
            let (s, i): (usize, usize) = (s.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[s], "sender {s}'s messages out of order or missing");
            next[s] += 1;
        }
        assert_eq!(next, [40; 10]);
    }
    for client in readers.into_iter().chain(senders) {
        client.close().await;
    }
    server.stop().await;
}
