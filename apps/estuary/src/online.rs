//! Who is in the chat rooms, across processes: the channel layer's presence
//! (see [`estuary::layer::presence`]), as the rooms use it.
//!
//! * Each named member (a signed-in user, or a guest who gave a name) is
//!   present in its room's group `chat_{room}`, keyed by its user id, or
//!   `guest:{name}` for a guest, with its name as metadata: a user in two
//!   tabs is one presence. The layer sends the group a `presence.diff`
//!   when members arrive or leave, which every connection of the room turns
//!   into `user_join` and `user_leave` frames.
//! * A closed connection's member stays present for
//!   [`ChatSettings::leave_delay_ms`](crate::config::ChatSettings::leave_delay_ms):
//!   a channel of the process holds the presence that long, so a page that
//!   reconnects meanwhile (to this process or another) neither leaves nor
//!   joins again. When the process dies, Redis keeps the held presence
//!   until the presence timeout, which covers a restart.
//! * Every connection, named or not, is also counted in the directory
//!   group [`DIRECTORY`], keyed by its room: the rooms and their connection
//!   counts across processes (`GET /api/rooms`).

use std::sync::Arc;
use std::time::Duration;

use estuary::prelude::*;
use estuary::{PresenceError, PresenceKey, PresenceList, PresenceMeta};
use serde::Serialize;

use crate::events::{Member, room_group};
use crate::rooms::RoomCount;

/// The group whose presence counts the connections of each room (keyed by
/// room name); nobody is a member of it, so its diffs reach no one.
pub const DIRECTORY: &str = "estuary.chat.rooms";

/// The most names a `presence` frame lists (the frame also gives the count).
pub const MAX_LISTED: usize = 200;

/// The chat rooms' view of the layer's presence; cheap to clone.
#[derive(Debug, Clone)]
pub struct Online {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layer: ChannelLayerHandle,
    leave_delay: Duration,
    directory: GroupName,
}

/// One room's presence, as `GET /api/rooms/{room}/presence` answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoomPresence {
    /// The room's name.
    pub room: String,
    /// Open connections in the room, named or not.
    pub members: usize,
    /// The named members present, by name (at most [`MAX_LISTED`]).
    pub users: Vec<OnlineUser>,
    /// How many named members are present.
    pub online: usize,
}

/// A named member present in a room.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OnlineUser {
    /// The member's name.
    pub username: String,
    /// Signed in as `username`.
    #[serde(skip_serializing_if = "crate::events::is_false")]
    pub verified: bool,
    /// Its connections (tabs), a departed one held for the leave delay
    /// included.
    pub connections: u32,
}

impl Online {
    /// Presence through `layer`; a closed connection's member stays
    /// `leave_delay`.
    pub fn new(layer: ChannelLayerHandle, leave_delay: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                layer,
                leave_delay,
                // A valid name, checked by the tests.
                directory: GroupName::new(DIRECTORY).unwrap_or_else(|_| unreachable!()),
            }),
        }
    }

    /// True when the layer tracks presence (the in-memory layer and Redis;
    /// not Redis pub/sub).
    pub fn tracks(&self) -> bool {
        self.inner.layer.presence().is_some()
    }

    /// The presence key of `member`: a signed-in user's id, or
    /// `guest:{name}`. `None` for a user id that is no valid key.
    pub fn key(member: &Member, user_id: Option<&str>) -> Option<PresenceKey> {
        match user_id {
            Some(id) => PresenceKey::new(id).ok(),
            None => PresenceKey::new(&format!("guest:{}", member.username)).ok(),
        }
    }

    /// Counts this connection in `room` (the directory); best effort.
    pub async fn enter(&self, ctx: &Context, room: &str) {
        let Ok(key) = PresenceKey::new(room) else { return };
        if let Err(error) = ctx
            .presence_join(&self.inner.directory, &key, &PresenceMeta::default())
            .await
        {
            estuary::throttled!(warn, %error, "could not count a connection in its room (is the channel layer reachable?)");
        }
    }

    /// Makes this connection present in `group` as `key`: joins the
    /// presence, or changes the key it holds there. Best effort: false when
    /// the layer failed.
    pub async fn join(
        &self,
        ctx: &Context,
        group: &GroupName,
        key: &PresenceKey,
        meta: &PresenceMeta,
    ) -> bool {
        match ctx.presence_join(group, key, meta).await {
            Ok(_) => true,
            Err(error) => {
                estuary::throttled!(warn, %error, "could not join a room's presence (is the channel layer reachable?)");
                false
            }
        }
    }

    /// Holds `key`'s presence in `group` for the leave delay, with a channel
    /// of this process: called while the closing connection still holds it,
    /// so the key does not leave if it comes back meanwhile.
    pub async fn linger(&self, group: &GroupName, key: &PresenceKey, meta: &PresenceMeta) {
        let delay = self.inner.leave_delay;
        let layer = &self.inner.layer;
        if delay.is_zero() {
            return;
        }
        let Some(presence) = layer.presence() else { return };
        let Ok(holder) = layer.new_channel().await else {
            return;
        };
        if let Err(error) = presence.presence_join(group, &holder, key, meta).await {
            estuary::throttled!(debug, %error, "could not hold a leaving member's presence");
            layer.close_channel(&holder).await;
            return;
        }
        let layer = layer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            layer.close_channel(&holder).await;
        });
    }

    /// The occupied rooms across processes, busiest first.
    pub async fn rooms(&self) -> Result<Vec<RoomCount>, PresenceError> {
        let presence = self.inner.layer.presence().ok_or(PresenceError::Unsupported)?;
        let list = presence.presence_list(&self.inner.directory).await?;
        let mut rooms: Vec<RoomCount> = list
            .entries
            .into_iter()
            .map(|entry| RoomCount {
                room: entry.key.as_str().to_owned(),
                members: entry.connections as usize,
            })
            .collect();
        rooms.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.room.cmp(&b.room)));
        Ok(rooms)
    }

    /// Who is in `room`, across processes.
    pub async fn room(&self, room: &str) -> Result<RoomPresence, PresenceError> {
        let presence = self.inner.layer.presence().ok_or(PresenceError::Unsupported)?;
        let group = room_group(room).map_err(|_| PresenceError::InvalidKey("not a room"))?;
        let key = PresenceKey::new(room)?;
        let (directory, list) = tokio::join!(
            presence.presence_list(&self.inner.directory),
            presence.presence_list(&group)
        );
        let members = directory?
            .entries
            .into_iter()
            .find(|e| e.key == key)
            .map_or(0, |e| e.connections as usize);
        let (online, users) = users(list?);
        Ok(RoomPresence {
            room: room.to_owned(),
            members,
            users,
            online,
        })
    }
}

/// The named members of a presence list, by name, at most [`MAX_LISTED`];
/// and how many there are.
pub fn users(list: PresenceList) -> (usize, Vec<OnlineUser>) {
    let mut users: Vec<OnlineUser> = list
        .entries
        .into_iter()
        .filter_map(|entry| {
            let member = Member::from_meta(&entry.meta)?;
            Some(OnlineUser {
                username: member.username,
                verified: member.verified,
                connections: entry.connections,
            })
        })
        .collect();
    let count = users.len();
    users.sort_by(|a, b| a.username.cmp(&b.username).then(b.verified.cmp(&a.verified)));
    users.truncate(MAX_LISTED);
    (count, users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_a_group_and_no_room() {
        let directory = GroupName::new(DIRECTORY).unwrap();
        assert!(!directory.as_str().starts_with("chat_"));
    }

    #[test]
    fn keys_tell_users_from_guests() {
        let ann = Member {
            username: "ann".into(),
            verified: true,
        };
        assert_eq!(Online::key(&ann, Some("42")).unwrap().as_str(), "42");
        assert_eq!(Online::key(&ann, None).unwrap().as_str(), "guest:ann");
        assert!(Online::key(&ann, Some("a\nb")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leaving_member_is_held_for_the_delay() {
        let layer = ChannelLayerHandle::default();
        let online = Online::new(layer.clone(), Duration::from_secs(3));
        let presence = layer.presence().unwrap();
        let group = room_group("r").unwrap();
        let tab = layer.new_channel().await.unwrap();
        let key = PresenceKey::new("guest:ann").unwrap();
        let meta = Member {
            username: "ann".into(),
            verified: false,
        }
        .to_meta();
        presence.presence_join(&group, &tab, &key, &meta).await.unwrap();
        online.linger(&group, &key, &meta).await;
        layer.close_channel(&tab).await;
        assert_eq!(presence.presence_count(&group).await.unwrap().keys, 1);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(presence.presence_count(&group).await.unwrap().keys, 0);
    }
}
