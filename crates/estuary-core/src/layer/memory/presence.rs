//! The in-memory layer's presence: one book for the process, diffs sent to
//! the groups through the layer itself.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::time::Instant;

use super::{InMemoryChannelLayer, Inner};
use crate::group_set::GroupSet;
use crate::layer::LayerFuture;
use crate::layer::presence::{
    Presence, PresenceCount, PresenceEntry, PresenceError, PresenceJoined, PresenceKey, PresenceList,
    PresenceMeta, PresenceTransition,
};
use crate::names::{ChannelName, GroupName};
use crate::sync::lock;

/// Who is present where, and which presences each channel holds.
pub(super) struct Book {
    groups: HashMap<GroupName, GroupPresence>,
    channels: HashMap<ChannelName, GroupSet>,
    /// The last version given: versions grow across every group, starting
    /// from the wall clock (microseconds), so that a view kept from an
    /// earlier run of the process never takes new transitions for old ones.
    version: u64,
}

#[derive(Default)]
struct GroupPresence {
    keys: HashMap<PresenceKey, KeyState>,
    /// The key each channel holds.
    held: HashMap<ChannelName, PresenceKey>,
}

struct KeyState {
    meta: PresenceMeta,
    connections: u32,
    version: u64,
}

impl Default for Book {
    fn default() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Self {
            groups: HashMap::new(),
            channels: HashMap::new(),
            version: start,
        }
    }
}

fn next(version: &mut u64) -> u64 {
    *version += 1;
    *version
}

impl GroupPresence {
    /// Takes `channel` out; `None` when it held nothing here, else the
    /// key's leave if it was its last connection.
    fn release(&mut self, channel: &ChannelName, version: &mut u64) -> Option<Option<PresenceTransition>> {
        let key = self.held.remove(channel)?;
        let Some(state) = self.keys.get_mut(&key) else {
            return Some(None);
        };
        state.connections = state.connections.saturating_sub(1);
        if state.connections > 0 {
            return Some(None);
        }
        let state = self.keys.remove(&key)?;
        Some(Some(PresenceTransition {
            key,
            before: Some(state.meta),
            after: None,
            version: next(version),
        }))
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.held.is_empty()
    }
}

impl Book {
    fn join(
        &mut self,
        group: &GroupName,
        channel: &ChannelName,
        key: &PresenceKey,
        meta: &PresenceMeta,
    ) -> (PresenceJoined, Vec<PresenceTransition>) {
        let Book {
            groups,
            channels,
            version,
        } = self;
        let presence = groups.entry(group.clone()).or_default();
        let mut transitions = Vec::new();
        if presence.held.get(channel) != Some(key) {
            if let Some(Some(left)) = presence.release(channel, version) {
                transitions.push(left);
            }
            presence.held.insert(channel.clone(), key.clone());
            channels.entry(channel.clone()).or_default().insert(group.clone());
            if let Some(state) = presence.keys.get_mut(key) {
                state.connections += 1;
            } else {
                let v = next(version);
                presence.keys.insert(
                    key.clone(),
                    KeyState {
                        meta: meta.clone(),
                        connections: 1,
                        version: v,
                    },
                );
                transitions.push(PresenceTransition {
                    key: key.clone(),
                    before: None,
                    after: Some(meta.clone()),
                    version: v,
                });
                return (
                    PresenceJoined {
                        first: true,
                        connections: 1,
                    },
                    transitions,
                );
            }
        }
        let Some(state) = presence.keys.get_mut(key) else {
            return (
                PresenceJoined {
                    first: false,
                    connections: 0,
                },
                transitions,
            );
        };
        if state.meta != *meta {
            let before = std::mem::replace(&mut state.meta, meta.clone());
            state.version = next(version);
            transitions.push(PresenceTransition {
                key: key.clone(),
                before: Some(before),
                after: Some(meta.clone()),
                version: state.version,
            });
        }
        (
            PresenceJoined {
                first: false,
                connections: state.connections,
            },
            transitions,
        )
    }

    fn leave(&mut self, group: &GroupName, channel: &ChannelName) -> Option<Option<PresenceTransition>> {
        let presence = self.groups.get_mut(group)?;
        let left = presence.release(channel, &mut self.version);
        if presence.is_empty() {
            self.groups.remove(group);
        }
        if let Some(held) = self.channels.get_mut(channel) {
            held.remove(group);
            if held.is_empty() {
                self.channels.remove(channel);
            }
        }
        left
    }

    /// Takes `channel` out of every presence it holds (its connection ended).
    pub(super) fn leave_all(&mut self, channel: &ChannelName) -> Vec<(GroupName, PresenceTransition)> {
        let Some(groups) = self.channels.remove(channel) else {
            return Vec::new();
        };
        let mut left = Vec::new();
        for group in groups {
            let Some(presence) = self.groups.get_mut(&group) else {
                continue;
            };
            if let Some(Some(transition)) = presence.release(channel, &mut self.version) {
                left.push((group.clone(), transition));
            }
            if presence.is_empty() {
                self.groups.remove(&group);
            }
        }
        left
    }

    fn list(&self, group: &GroupName) -> PresenceList {
        let mut entries: Vec<PresenceEntry> = self.groups.get(group).map_or_else(Vec::new, |p| {
            p.keys
                .iter()
                .map(|(key, state)| PresenceEntry {
                    key: key.clone(),
                    meta: state.meta.clone(),
                    connections: state.connections,
                    version: state.version,
                })
                .collect()
        });
        entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        PresenceList {
            entries,
            version: self.version,
        }
    }

    fn count(&self, group: &GroupName) -> PresenceCount {
        self.groups
            .get(group)
            .map_or_else(PresenceCount::default, |p| PresenceCount {
                keys: p.keys.len(),
                connections: p.held.len(),
            })
    }

    pub(super) fn clear(&mut self) {
        self.groups.clear();
        self.channels.clear();
    }
}

impl Inner {
    /// Hands transitions to the diff coalescer and arranges the flushes it
    /// asks for.
    pub(super) fn announce(self: &Arc<Self>, transitions: Vec<(GroupName, PresenceTransition)>) {
        for (group, transition) in transitions {
            let Some(due) = self.diffs.record(&group, transition) else {
                continue;
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(flush(Arc::downgrade(self), group, due));
                }
                // No runtime to wait on: announce at once.
                Err(_) => self.flush_presence(&group),
            }
        }
    }

    fn flush_presence(&self, group: &GroupName) {
        let Some(diff) = self.diffs.take(group) else {
            return;
        };
        let sent = diff
            .to_message()
            .map_err(|e| e.to_string())
            .and_then(|message| self.deliver(group, message, false).map_err(|e| e.to_string()));
        if let Err(error) = sent {
            crate::throttled!(warn, %group, %error, "a presence diff could not be sent to its group; members see the change with the next diff or a fresh list (check the channel layer's capacity and max_bytes)");
        }
    }
}

async fn flush(layer: Weak<Inner>, group: GroupName, due: Instant) {
    tokio::time::sleep_until(due).await;
    if let Some(inner) = layer.upgrade() {
        inner.flush_presence(&group);
    }
}

impl Presence for InMemoryChannelLayer {
    fn presence_join<'a>(
        &'a self,
        group: &'a GroupName,
        channel: &'a ChannelName,
        key: &'a PresenceKey,
        meta: &'a PresenceMeta,
    ) -> LayerFuture<'a, Result<PresenceJoined, PresenceError>> {
        Box::pin(async move {
            let (joined, transitions) = {
                let mut book = lock(&self.inner.presence);
                // Checked under the book's lock: `close_channel` takes the
                // channel out of the map before it clears the channel's
                // presences, so a join racing it is either refused here or
                // cleared there.
                if !self.inner.is_open(channel) {
                    return Err(PresenceError::NotLocal(channel.clone()));
                }
                book.join(group, channel, key, meta)
            };
            let transitions = transitions.into_iter().map(|t| (group.clone(), t)).collect();
            self.inner.announce(transitions);
            Ok(joined)
        })
    }

    fn presence_leave<'a>(
        &'a self,
        group: &'a GroupName,
        channel: &'a ChannelName,
    ) -> LayerFuture<'a, Result<bool, PresenceError>> {
        Box::pin(async move {
            let left = lock(&self.inner.presence).leave(group, channel);
            match left {
                None => Ok(false),
                Some(transition) => {
                    let transitions = transition.map(|t| (group.clone(), t)).into_iter().collect();
                    self.inner.announce(transitions);
                    Ok(true)
                }
            }
        })
    }

    fn presence_list<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> LayerFuture<'a, Result<PresenceList, PresenceError>> {
        Box::pin(async move { Ok(lock(&self.inner.presence).list(group)) })
    }

    fn presence_count<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> LayerFuture<'a, Result<PresenceCount, PresenceError>> {
        Box::pin(async move { Ok(lock(&self.inner.presence).count(group)) })
    }
}
