//! Presence changes gathered per group into one diff per interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{PresenceChange, PresenceDiff, PresenceKey, PresenceMeta};
use crate::names::GroupName;
use crate::sync::lock;

/// One transition of a key, as a layer's presence store reports it: what
/// the key was before (`None`: absent) and after, and the transition's
/// version.
///
/// ```
/// use estuary_core::{PresenceKey, PresenceMeta, PresenceTransition};
///
/// let joined = PresenceTransition {
///     key: PresenceKey::new("42").unwrap(),
///     before: None,
///     after: Some(PresenceMeta::default()),
///     version: 1,
/// };
/// # let _ = joined;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceTransition {
    /// Whose.
    pub key: PresenceKey,
    /// The key's metadata before, or `None` when it was absent.
    pub before: Option<PresenceMeta>,
    /// The key's metadata after, or `None` when it left.
    pub after: Option<PresenceMeta>,
    /// The transition's version (larger than any before it in the group).
    pub version: u64,
}

/// Gathers presence transitions per group into [`PresenceDiff`]s, at most
/// one per group per interval: for layer implementations.
///
/// [`record`](Self::record) a transition; when it returns an instant, the
/// caller arranges for [`take`](Self::take) to run then (a timer task) and
/// sends what it returns to the group. The first change after a quiet
/// interval is due at once; later ones wait for the interval since the last
/// diff. A key that ends the interval as it began (it left and came back
/// with the same metadata) is left out.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::{GroupName, PresenceCoalescer, PresenceKey, PresenceMeta, PresenceTransition};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let diffs = PresenceCoalescer::new(Duration::from_millis(100));
/// let room = GroupName::new("room").unwrap();
/// let join = |key: &str, version| PresenceTransition {
///     key: PresenceKey::new(key).unwrap(),
///     before: None,
///     after: Some(PresenceMeta::default()),
///     version,
/// };
/// let due = diffs.record(&room, join("a", 1));
/// assert!(due.is_some(), "the first change asks for a flush");
/// assert!(diffs.record(&room, join("b", 2)).is_none(), "one flush is pending already");
/// let diff = diffs.take(&room).unwrap();
/// assert_eq!((diff.joins.len(), diff.version), (2, 2));
/// # });
/// ```
#[derive(Debug)]
pub struct PresenceCoalescer {
    interval: Duration,
    groups: Mutex<Groups>,
}

#[derive(Debug, Default)]
struct Groups {
    pending: HashMap<GroupName, Pending>,
    /// The map's size after the last sweep of idle groups.
    swept_at: usize,
}

#[derive(Debug, Default)]
struct Pending {
    changes: BTreeMap<PresenceKey, Change>,
    /// A flush is arranged for then.
    due: Option<Instant>,
    /// The last flush.
    flushed: Option<Instant>,
}

#[derive(Debug)]
struct Change {
    before: Option<PresenceMeta>,
    first: u64,
    after: Option<PresenceMeta>,
    last: u64,
}

impl PresenceCoalescer {
    /// One diff per group per `interval` at most.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            groups: Mutex::default(),
        }
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Adds a transition of `group`. Returns when the group's diff is due
    /// if no flush was arranged yet (the caller arranges one), `None` when
    /// one is already.
    pub fn record(&self, group: &GroupName, transition: PresenceTransition) -> Option<Instant> {
        let now = Instant::now();
        let mut groups = lock(&self.groups);
        if groups.pending.len() >= 2 * groups.swept_at.max(64) {
            let interval = self.interval;
            groups
                .pending
                .retain(|_, p| p.due.is_some() || p.flushed.is_some_and(|f| f + interval > now));
            groups.swept_at = groups.pending.len();
        }
        let pending = groups.pending.entry(group.clone()).or_default();
        let PresenceTransition {
            key,
            before,
            after,
            version,
        } = transition;
        match pending.changes.get_mut(&key) {
            Some(change) => {
                // Transitions of one key may be reported out of order (two
                // tasks of one process): the earliest says what the key
                // was, the latest what it is.
                if version > change.last {
                    change.after = after;
                    change.last = version;
                }
                if version < change.first {
                    change.before = before;
                    change.first = version;
                }
            }
            None => {
                pending.changes.insert(
                    key,
                    Change {
                        before,
                        first: version,
                        after,
                        last: version,
                    },
                );
            }
        }
        if pending.due.is_some() {
            return None;
        }
        let due = match pending.flushed {
            Some(flushed) if flushed + self.interval > now => flushed + self.interval,
            _ => now,
        };
        pending.due = Some(due);
        Some(due)
    }

    /// The group's diff since the last one, or `None` when nothing changed
    /// on balance. Marks the group flushed now.
    pub fn take(&self, group: &GroupName) -> Option<PresenceDiff> {
        let changes = {
            let mut groups = lock(&self.groups);
            let pending = groups.pending.get_mut(group)?;
            pending.due = None;
            pending.flushed = Some(Instant::now());
            std::mem::take(&mut pending.changes)
        };
        let mut diff = PresenceDiff::new(group.clone());
        for (key, change) in changes {
            if change.before == change.after {
                continue;
            }
            diff.version = diff.version.max(change.last);
            match (change.after, change.before) {
                (Some(meta), _) => {
                    diff.joins.insert(
                        key,
                        PresenceChange {
                            meta,
                            version: change.last,
                        },
                    );
                }
                (None, Some(meta)) => {
                    diff.leaves.insert(
                        key,
                        PresenceChange {
                            meta,
                            version: change.last,
                        },
                    );
                }
                (None, None) => {}
            }
        }
        (!diff.is_empty()).then_some(diff)
    }

    /// Forgets every pending change (the layer was flushed).
    pub fn clear(&self) {
        lock(&self.groups).pending.clear();
    }
}
