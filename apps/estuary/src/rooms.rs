//! Who is in which room right now: the room picker's counts, and the
//! signed-in members whose names guests may not take.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// The number of open connections per chat room in this process, and the
/// names (folded with [`crate::usernames::fold`]) of the signed-in members
/// in each.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    /// One pointer: every connection holds a clone.
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: Mutex<HashMap<String, usize>>,
    signed_in: Mutex<HashMap<String, HashMap<String, usize>>>,
}

/// The keys of a fold, each once (they are often equal).
fn distinct(keys: &[String; 2]) -> impl Iterator<Item = &String> {
    keys.iter().take(if keys[0] == keys[1] { 1 } else { 2 })
}

/// One room and how many connections it has.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoomCount {
    /// The room's name.
    pub room: String,
    /// Open connections in it.
    pub members: usize,
}

impl Rooms {
    /// Counts one more connection in `room`.
    pub fn join(&self, room: &str) {
        let mut counts = estuary::sync::lock(&self.inner.counts);
        *counts.entry(room.to_owned()).or_default() += 1;
    }

    /// Counts one connection fewer in `room`; forgets empty rooms.
    pub fn leave(&self, room: &str) {
        let mut counts = estuary::sync::lock(&self.inner.counts);
        if let Some(n) = counts.get_mut(room) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(room);
            }
        }
    }

    /// Counts a signed-in member in `room`, under the folded `keys` of its
    /// name (one member may have several connections).
    pub fn sign_in(&self, room: &str, keys: &[String; 2]) {
        let mut rooms = estuary::sync::lock(&self.inner.signed_in);
        let names = rooms.entry(room.to_owned()).or_default();
        for key in distinct(keys) {
            *names.entry(key.clone()).or_default() += 1;
        }
    }

    /// Counts one connection of a signed-in member fewer in `room`.
    pub fn sign_out(&self, room: &str, keys: &[String; 2]) {
        let mut rooms = estuary::sync::lock(&self.inner.signed_in);
        let Some(names) = rooms.get_mut(room) else { return };
        for key in distinct(keys) {
            if let Some(n) = names.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    names.remove(key);
                }
            }
        }
        if names.is_empty() {
            rooms.remove(room);
        }
    }

    /// True when a member signed in under the folded name `key` is in `room`
    /// (in this process).
    pub fn is_signed_in(&self, room: &str, key: &str) -> bool {
        let rooms = estuary::sync::lock(&self.inner.signed_in);
        rooms.get(room).is_some_and(|names| names.contains_key(key))
    }

    /// True when `name` looks like the name of a member signed in in `room`
    /// (in this process): a key of its [`crate::usernames::fold`] is one of
    /// theirs. The name is folded only when the room has signed-in members.
    pub fn name_taken(&self, room: &str, name: &str) -> bool {
        let has_members = |keys: Option<&[String; 2]>| {
            let rooms = estuary::sync::lock(&self.inner.signed_in);
            rooms
                .get(room)
                .is_some_and(|names| keys.is_none_or(|keys| keys.iter().any(|k| names.contains_key(k))))
        };
        // Folding allocates: done outside the lock every connection takes.
        has_members(None) && has_members(Some(&crate::usernames::fold(name)))
    }

    /// The occupied rooms, busiest first.
    pub fn list(&self) -> Vec<RoomCount> {
        let counts = estuary::sync::lock(&self.inner.counts);
        let mut rooms: Vec<RoomCount> = counts
            .iter()
            .map(|(room, members)| RoomCount {
                room: room.clone(),
                members: *members,
            })
            .collect();
        rooms.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.room.cmp(&b.room)));
        rooms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_forgets() {
        let rooms = Rooms::default();
        rooms.join("a");
        rooms.join("b");
        rooms.join("b");
        assert_eq!(
            rooms.list()[0],
            RoomCount {
                room: "b".into(),
                members: 2
            }
        );
        rooms.leave("a");
        rooms.leave("a");
        assert_eq!(rooms.list().len(), 1);
    }

    #[test]
    fn signed_in_names_per_room() {
        let rooms = Rooms::default();
        let alice = crate::usernames::fold("alice");
        rooms.sign_in("a", &alice);
        rooms.sign_in("a", &alice);
        assert!(rooms.is_signed_in("a", "alice"));
        assert!(rooms.name_taken("a", "aIice"));
        assert!(!rooms.is_signed_in("b", "alice"));
        rooms.sign_out("a", &alice);
        assert!(rooms.is_signed_in("a", "alice"), "one connection is left");
        rooms.sign_out("a", &alice);
        rooms.sign_out("a", &alice);
        assert!(!rooms.is_signed_in("a", "alice"));
        assert!(
            rooms.inner.signed_in.lock().unwrap().is_empty(),
            "empty rooms are forgotten"
        );
    }
}
