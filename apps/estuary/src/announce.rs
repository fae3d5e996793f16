//! Join and leave announcements, at a bounded rate per room.
//!
//! Each named member that arrives or leaves is announced to everyone in the
//! room, so a burst of N joins would cost N × N frames, and the members of
//! other rooms would wait behind them. The [`Announcer`] sends the first
//! announcement of a room at once and then at most one batch per
//! [`ANNOUNCE_EVERY`]: what arrived meanwhile goes out together, in order,
//! consecutive joins as one `user_join` frame and consecutive leaves as one
//! `user_leave` frame naming them all (`users`, at most
//! [`MAX_NAMES_PER_FRAME`] per frame). Nothing is dropped: every name is in a
//! frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estuary::prelude::*;
use tokio::time::Instant;

use crate::events::{ChatEvent, Member, room_group};

/// At most one announcement batch per room this often.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(250);

/// The most names one announcement frame carries (a frame stays under
/// about 25 KB with the longest names).
pub const MAX_NAMES_PER_FRAME: usize = 100;

/// Whether a member arrived or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Arrived (`user_join`).
    Join,
    /// Left (`user_leave`).
    Leave,
}

/// Sends the join and leave announcements of every room in this process;
/// cheap to clone.
#[derive(Debug, Clone)]
pub struct Announcer {
    /// One pointer: every connection holds a clone.
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    layer: ChannelLayerHandle,
    every: Duration,
    rooms: Mutex<HashMap<String, Pending>>,
}

/// A room's announcements waiting for their turn. The room has an entry
/// while its flushing task runs; the task removes it when a whole period
/// passed with nothing to say.
#[derive(Debug, Default)]
struct Pending {
    queue: Vec<(Presence, Member)>,
    last: Option<Instant>,
}

impl Announcer {
    /// Announces through `layer`, at most one batch per room per [`ANNOUNCE_EVERY`].
    pub fn new(layer: ChannelLayerHandle) -> Self {
        Self::with_period(layer, ANNOUNCE_EVERY)
    }

    /// Announces through `layer`, at most one batch per room per `every`.
    pub fn with_period(layer: ChannelLayerHandle, every: Duration) -> Self {
        Self {
            inner: Arc::new(Shared {
                layer,
                every,
                rooms: Mutex::default(),
            }),
        }
    }

    /// Queues an announcement for `room`: sent at once when the room said
    /// nothing for a period, else with the next batch. Must be called inside
    /// the runtime (the first announcement of a quiet room starts a task).
    pub fn announce(&self, room: &str, presence: Presence, member: Member) {
        let mut rooms = estuary::sync::lock(&self.inner.rooms);
        match rooms.get_mut(room) {
            Some(pending) => pending.queue.push((presence, member)),
            None => {
                rooms.insert(
                    room.to_owned(),
                    Pending {
                        queue: vec![(presence, member)],
                        last: None,
                    },
                );
                tokio::spawn(self.clone().flush(room.to_owned()));
            }
        }
    }

    /// Sends `room`'s batches, one per period, until a period passes with
    /// nothing queued.
    async fn flush(self, room: String) {
        loop {
            let due = {
                let rooms = estuary::sync::lock(&self.inner.rooms);
                rooms
                    .get(&room)
                    .and_then(|p| p.last)
                    .map(|last| last + self.inner.every)
            };
            if let Some(due) = due {
                tokio::time::sleep_until(due).await;
            }
            let batch = {
                let mut rooms = estuary::sync::lock(&self.inner.rooms);
                let Some(pending) = rooms.get_mut(&room) else {
                    return;
                };
                if pending.queue.is_empty() {
                    rooms.remove(&room);
                    return;
                }
                pending.last = Some(Instant::now());
                std::mem::take(&mut pending.queue)
            };
            self.send(&room, batch).await;
        }
    }

    async fn send(&self, room: &str, batch: Vec<(Presence, Member)>) {
        let group = match room_group(room) {
            Ok(group) => group,
            Err(error) => {
                estuary::throttled!(warn, %error, %room, "no group for the room; announcements dropped (a room name the chat should have refused: report it as a bug)");
                return;
            }
        };
        let mut failed = 0usize;
        let mut last_error = None;
        for event in batch_events(batch) {
            let sent = match Message::encode(&event) {
                Ok(message) => self
                    .inner
                    .layer
                    .group_send(&group, message)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = sent {
                failed += 1;
                last_error = Some(error);
            }
        }
        if let Some(error) = last_error {
            estuary::throttled!(warn, %error, %room, frames = failed, "could not announce joins or leaves (is the channel layer reachable?)");
        }
    }
}

/// The events a batch becomes: consecutive announcements of one kind
/// together, at most [`MAX_NAMES_PER_FRAME`] names each, in order.
pub fn batch_events(batch: Vec<(Presence, Member)>) -> Vec<ChatEvent> {
    let mut runs: Vec<(Presence, Vec<Member>)> = Vec::new();
    for (presence, member) in batch {
        match runs.last_mut() {
            Some((kind, members)) if *kind == presence && members.len() < MAX_NAMES_PER_FRAME => {
                members.push(member)
            }
            _ => runs.push((presence, vec![member])),
        }
    }
    runs.into_iter()
        .filter_map(|(presence, members)| {
            let first = members.first()?.clone();
            let users = if members.len() > 1 { members } else { Vec::new() };
            Some(match presence {
                Presence::Join => ChatEvent::Join {
                    username: first.username,
                    verified: first.verified,
                    users,
                    position: None,
                },
                Presence::Leave => ChatEvent::Leave {
                    username: first.username,
                    verified: first.verified,
                    users,
                    position: None,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> Member {
        Member {
            username: name.to_owned(),
            verified: false,
        }
    }

    #[test]
    fn runs_keep_their_order_and_names() {
        let batch = vec![
            (Presence::Join, member("a")),
            (Presence::Join, member("b")),
            (Presence::Leave, member("a")),
            (Presence::Join, member("a")),
        ];
        let events = batch_events(batch);
        assert_eq!(events.len(), 3);
        let ChatEvent::Join { username, users, .. } = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!((username.as_str(), users.len()), ("a", 2));
        let ChatEvent::Leave { username, users, .. } = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!((username.as_str(), users.len()), ("a", 0), "one name: no list");
        assert!(matches!(&events[2], ChatEvent::Join { username, .. } if username == "a"));
    }

    #[test]
    fn long_runs_are_split() {
        let batch = (0..250)
            .map(|i| (Presence::Join, member(&format!("u{i}"))))
            .collect();
        let events = batch_events(batch);
        let sizes: Vec<usize> = events
            .iter()
            .map(|e| match e {
                ChatEvent::Join { users, .. } => users.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_goes_at_once_and_the_rest_once_per_period() {
        let layer = ChannelLayerHandle::default();
        let channel = layer.new_channel().await.unwrap();
        layer
            .group_add(&room_group("r").unwrap(), &channel)
            .await
            .unwrap();
        let announcer = Announcer::new(layer.clone());
        announcer.announce("r", Presence::Join, member("first"));
        let started = Instant::now();
        let got: ChatEvent = layer.receive(&channel).await.unwrap().decode().unwrap();
        assert!(
            matches!(got, ChatEvent::Join { ref username, ref users, .. } if username == "first" && users.is_empty())
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
        for i in 0..10 {
            announcer.announce("r", Presence::Join, member(&format!("m{i}")));
        }
        let got: ChatEvent = layer.receive(&channel).await.unwrap().decode().unwrap();
        assert_eq!(started.elapsed(), ANNOUNCE_EVERY);
        let ChatEvent::Join { users, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(users.len(), 10);
        // A quiet period later the room's task is gone, and the next goes at once.
        tokio::time::sleep(ANNOUNCE_EVERY * 3).await;
        assert!(announcer.inner.rooms.lock().unwrap().is_empty());
        let before = Instant::now();
        announcer.announce("r", Presence::Leave, member("first"));
        let _: Message = layer.receive(&channel).await.unwrap();
        assert_eq!(before.elapsed(), Duration::ZERO);
    }
}
