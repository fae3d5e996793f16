//! A member's picture of a group's presence, kept by the version rule.

use std::collections::{BTreeMap, HashMap};

use super::{PresenceChange, PresenceDiff, PresenceKey, PresenceList, PresenceMeta};

/// A group's presence as one member sees it: a [`PresenceList`] with the
/// [`PresenceDiff`]s applied by the version rule (an entry counts only when
/// its version is above every version known for its key and above the
/// list's), so that diffs arriving late or out of order never undo newer
/// knowledge. This is the consistency the [presence model](crate::layer::presence)
/// promises: a view fed every diff holds the group's presence once the
/// changes are announced.
///
/// ```
/// use std::collections::BTreeMap;
/// use estuary_core::{
///     GroupName, PresenceChange, PresenceDiff, PresenceKey, PresenceList, PresenceMeta, PresenceView,
/// };
///
/// let room = GroupName::new("room").unwrap();
/// let ann = PresenceKey::new("ann").unwrap();
/// let change = |version| PresenceChange { meta: PresenceMeta::default(), version };
///
/// let mut view = PresenceView::from_list(PresenceList { entries: Vec::new(), version: 10 });
/// let mut left = PresenceDiff::new(room.clone());
/// left.leaves.insert(ann.clone(), change(12));
/// let mut joined = PresenceDiff::new(room);
/// joined.joins.insert(ann.clone(), change(11));
///
/// // The leave (12) arrives before the join (11) it follows: the join is stale.
/// view.apply(&left);
/// assert!(view.apply(&joined).is_empty());
/// assert!(!view.contains(&ann));
/// ```
#[derive(Debug, Clone, Default)]
pub struct PresenceView {
    present: BTreeMap<PresenceKey, (PresenceMeta, u64)>,
    /// Versions of keys that left (after the list).
    gone: HashMap<PresenceKey, u64>,
    /// The list's version: anything at or below it is older than the list.
    floor: u64,
}

impl PresenceView {
    /// An empty view that takes every diff.
    pub fn new() -> Self {
        Self::default()
    }

    /// A view starting from `list`.
    pub fn from_list(list: PresenceList) -> Self {
        let mut view = Self::default();
        view.reset(list);
        view
    }

    /// Starts again from `list` (a fresh read of the group).
    pub fn reset(&mut self, list: PresenceList) {
        self.gone.clear();
        self.floor = list.version;
        self.present = list
            .entries
            .into_iter()
            .map(|e| (e.key, (e.meta, e.version)))
            .collect();
    }

    fn known(&self, key: &PresenceKey) -> u64 {
        let seen = self
            .present
            .get(key)
            .map(|(_, v)| *v)
            .or_else(|| self.gone.get(key).copied())
            .unwrap_or(0);
        seen.max(self.floor)
    }

    /// Applies `diff`; returns the part of it that changed the view (what
    /// to show as "joined" and "left").
    pub fn apply(&mut self, diff: &PresenceDiff) -> PresenceDiff {
        let mut applied = PresenceDiff::new(diff.group.clone());
        for (key, change) in &diff.leaves {
            if change.version <= self.known(key) {
                continue;
            }
            self.gone.insert(key.clone(), change.version);
            if let Some((meta, _)) = self.present.remove(key) {
                applied.leaves.insert(
                    key.clone(),
                    PresenceChange {
                        meta,
                        version: change.version,
                    },
                );
            }
        }
        for (key, change) in &diff.joins {
            if change.version <= self.known(key) {
                continue;
            }
            self.gone.remove(key);
            let before = self
                .present
                .insert(key.clone(), (change.meta.clone(), change.version));
            if before.is_none_or(|(meta, _)| meta != change.meta) {
                applied.joins.insert(key.clone(), change.clone());
            }
        }
        applied.version = applied
            .joins
            .values()
            .chain(applied.leaves.values())
            .map(|c| c.version)
            .max()
            .unwrap_or(0);
        applied
    }

    /// True when `key` is present.
    pub fn contains(&self, key: &PresenceKey) -> bool {
        self.present.contains_key(key)
    }

    /// The metadata of `key`, if present.
    pub fn get(&self, key: &PresenceKey) -> Option<&PresenceMeta> {
        self.present.get(key).map(|(meta, _)| meta)
    }

    /// The present keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &PresenceKey> {
        self.present.keys()
    }

    /// The number of present keys.
    pub fn len(&self) -> usize {
        self.present.len()
    }

    /// True when nobody is present.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }
}
