//! Who is in which room right now (for the room picker).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// The number of open connections per chat room in this process.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    counts: Arc<Mutex<HashMap<String, usize>>>,
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
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(room.to_owned()).or_default() += 1;
    }

    /// Counts one connection fewer in `room`; forgets empty rooms.
    pub fn leave(&self, room: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(room) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(room);
            }
        }
    }

    /// The occupied rooms, busiest first.
    pub fn list(&self) -> Vec<RoomCount> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
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
}
