//! This process's own record of its channels' group memberships: what it
//! wrote to Redis, when, and which of its channels each group holds. Redis
//! can lose a membership without telling anyone; this record is what the
//! layer compares Redis with, and writes back from.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use estuary_core::{ChannelName, GroupName};

/// Memberships by channel (renewal, closing) and by group (checks, sends).
#[derive(Debug, Default)]
pub(super) struct Registry {
    by_channel: HashMap<ChannelName, HashMap<GroupName, Instant>>,
    by_group: HashMap<GroupName, GroupEntry>,
    /// Counts every change, so that a group's [`Version`] never repeats.
    changes: u64,
}

#[derive(Debug)]
struct GroupEntry {
    channels: HashSet<ChannelName>,
    /// The value of `changes` at this group's last change.
    changed: u64,
}

/// A group's local members at one moment: if the group's version is the
/// same later, nobody joined or left it in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Version(u64);

impl Registry {
    fn touch(&mut self, group: &GroupName) -> u64 {
        self.changes += 1;
        let changes = self.changes;
        if let Some(entry) = self.by_group.get_mut(group) {
            entry.changed = changes;
        }
        changes
    }

    /// Records `channel` in `group` (written to Redis now).
    pub(super) fn add(&mut self, group: &GroupName, channel: &ChannelName) {
        self.by_channel
            .entry(channel.clone())
            .or_default()
            .insert(group.clone(), Instant::now());
        let changes = self.touch(group);
        self.by_group
            .entry(group.clone())
            .or_insert_with(|| GroupEntry {
                channels: HashSet::new(),
                changed: changes,
            })
            .channels
            .insert(channel.clone());
    }

    /// Forgets `channel` in `group`.
    pub(super) fn discard(&mut self, group: &GroupName, channel: &ChannelName) {
        if let Some(groups) = self.by_channel.get_mut(channel) {
            groups.remove(group);
            if groups.is_empty() {
                self.by_channel.remove(channel);
            }
        }
        self.touch(group);
        if let Some(entry) = self.by_group.get_mut(group) {
            entry.channels.remove(channel);
            if entry.channels.is_empty() {
                self.by_group.remove(group);
            }
        }
    }

    /// Forgets every membership of `channel` (it closed).
    pub(super) fn remove_channel(&mut self, channel: &ChannelName) {
        let groups: Vec<GroupName> = self
            .by_channel
            .get(channel)
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default();
        for group in groups {
            self.discard(&group, channel);
        }
    }

    pub(super) fn clear(&mut self) {
        self.by_channel.clear();
        self.by_group.clear();
        self.changes += 1;
    }

    /// Marks `channel`'s membership of `group` as written now; false when it
    /// is no longer recorded (discarded meanwhile).
    pub(super) fn stamp(&mut self, group: &GroupName, channel: &ChannelName) -> bool {
        match self.by_channel.get_mut(channel).and_then(|g| g.get_mut(group)) {
            Some(at) => {
                *at = Instant::now();
                true
            }
            None => false,
        }
    }

    /// The memberships written longer than `max_age` ago (all of them when
    /// `max_age` is `None`).
    pub(super) fn due(&self, max_age: Option<std::time::Duration>) -> Vec<(GroupName, ChannelName)> {
        self.by_channel
            .iter()
            .flat_map(|(ch, groups)| {
                groups
                    .iter()
                    .filter(move |(_, at)| max_age.is_none_or(|age| at.elapsed() >= age))
                    .map(move |(g, _)| (g.clone(), ch.clone()))
            })
            .collect()
    }

    /// Every group this process has members in.
    pub(super) fn groups(&self) -> Vec<GroupName> {
        self.by_group.keys().cloned().collect()
    }

    /// One member of each group, to check the group key still holds it.
    pub(super) fn samples(&self) -> Vec<(GroupName, ChannelName)> {
        self.by_group
            .iter()
            .filter_map(|(g, e)| e.channels.iter().next().map(|c| (g.clone(), c.clone())))
            .collect()
    }

    /// The local members of `group` with the group's version (empty and
    /// `None` when this process has none).
    pub(super) fn members_at(&self, group: &GroupName) -> (Option<Version>, Vec<ChannelName>) {
        match self.by_group.get(group) {
            Some(e) => (Some(Version(e.changed)), e.channels.iter().cloned().collect()),
            None => (None, Vec::new()),
        }
    }

    /// `group`'s version and how many of this process's channels it holds,
    /// when it holds any.
    pub(super) fn count(&self, group: &GroupName) -> Option<(Version, usize)> {
        self.by_group
            .get(group)
            .map(|e| (Version(e.changed), e.channels.len()))
    }

    /// This process's channels in `group`.
    pub(super) fn channels(&self, group: &str) -> impl Iterator<Item = &ChannelName> {
        self.by_group
            .get(group)
            .into_iter()
            .flat_map(|e| e.channels.iter())
    }

    /// `group`'s version, when this process has members in it.
    pub(super) fn version(&self, group: &GroupName) -> Option<Version> {
        self.by_group.get(group).map(|e| Version(e.changed))
    }

    /// The local members of `group` missing from `listed` (what Redis
    /// listed of this process's members), provided the group is still at
    /// `version`: then each of them was in Redis before the listing was
    /// read, and is gone. Empty when the group changed meanwhile (a join
    /// could be newer than the listing; the periodic check covers it).
    pub(super) fn missing(
        &self,
        group: &GroupName,
        version: Version,
        listed: &[ChannelName],
    ) -> Vec<ChannelName> {
        let Some(entry) = self.by_group.get(group) else {
            return Vec::new();
        };
        if entry.changed != version.0 {
            return Vec::new();
        }
        let found = listed.iter().filter(|c| entry.channels.contains(*c)).count();
        if found >= entry.channels.len() {
            return Vec::new();
        }
        let listed: HashSet<&ChannelName> = listed.iter().collect();
        entry
            .channels
            .iter()
            .filter(|c| !listed.contains(c))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    #[test]
    fn missing_members_only_when_nobody_joined_or_left() {
        let (room, a, b) = (GroupName::new("room").unwrap(), ch("p!a"), ch("p!b"));
        let mut r = Registry::default();
        r.add(&room, &a);
        r.add(&room, &b);
        let v = r.version(&room).unwrap();
        assert!(r.missing(&room, v, &[a.clone(), b.clone()]).is_empty());
        assert_eq!(r.missing(&room, v, std::slice::from_ref(&a)), vec![b.clone()]);
        // A stale name of ours in Redis does not hide a missing one.
        assert_eq!(r.missing(&room, v, &[a.clone(), ch("p!old")]), vec![b.clone()]);
        r.discard(&room, &b);
        assert!(r.missing(&room, v, &[]).is_empty(), "changed since");
        let v = r.version(&room).unwrap();
        r.remove_channel(&a);
        assert!(r.version(&room).is_none());
        r.add(&room, &a);
        assert_ne!(r.version(&room), Some(v), "versions never repeat");
        assert_eq!(r.samples(), vec![(room.clone(), a.clone())]);
        assert_eq!(r.members_at(&room), (r.version(&room), vec![a.clone()]));
        assert_eq!(r.count(&room), r.version(&room).map(|v| (v, 1)));
        assert_eq!(r.channels("room").collect::<Vec<_>>(), [&a]);
        assert_eq!(r.channels("elsewhere").count(), 0);
        assert_eq!(r.due(None).len(), 1);
    }
}
