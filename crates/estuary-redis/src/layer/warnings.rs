//! The layer's warnings, each kind at most once a second (with the count of
//! those held back: [`estuary_core::throttled!`]), and what each one asks
//! the operator to do. Most are triggered by what is in Redis, which anyone
//! with access to it can write: a value written in a loop must not fill the
//! disk.

use std::sync::atomic::Ordering;

use estuary_core::{ChannelName, GroupName, throttled};

use super::Inner;
use super::untrusted::shown;

impl Inner {
    /// Counts `members` skipped because `key` holds another type, and warns
    /// naming the key.
    pub(super) fn warn_poisoned(&self, key: &str, members: usize) {
        let total = self.poisoned.fetch_add(members as u64, Ordering::Relaxed) + members as u64;
        throttled!(
            warn,
            %key,
            members,
            total,
            "Redis key holds another type than a sorted set: its members are skipped. Something \
             else writes to this Redis under the layer's prefix: find it, then delete the key"
        );
    }

    /// Counts a group member no process could have written (`removed`), or
    /// that Estuary cannot address, and warns with the value, escaped.
    pub(super) fn warn_invalid_member(&self, group: &GroupName, raw: &[u8], why: &str, removed: bool) {
        let total = self.invalid_members.fetch_add(1, Ordering::Relaxed) + 1;
        // The escaped copy is made only for a line that is written.
        if removed {
            throttled!(
                warn,
                %group,
                member = %shown(raw),
                why,
                total,
                "group member no process could have written; skipped and removed. Something \
                 else writes to this Redis under the layer's prefix: find it"
            );
        } else {
            throttled!(
                warn,
                %group,
                member = %shown(raw),
                why,
                total,
                "group member Estuary cannot address (a Django channel name with non-ASCII \
                 letters?); skipped, left in place. Give channels ASCII names to reach them"
            );
        }
    }

    /// Counts group members removed for a score no process writes.
    pub(super) fn warn_absurd_scores(&self, group: &GroupName, count: u64) {
        let total = self.invalid_members.fetch_add(count, Ordering::Relaxed) + count;
        throttled!(
            warn,
            %group,
            count,
            total,
            "group members scored where no clock is (negative, infinite or far ahead); removed. \
             Something else writes to this Redis under the layer's prefix: find it"
        );
    }

    /// Tells `channels` (this process's own) that messages for them may have
    /// been lost: each reports `ChannelLayerError::Lost` on its next
    /// receive. Returns how many were told.
    pub(super) fn tell_lost<'a>(&self, channels: impl IntoIterator<Item = &'a ChannelName>) -> usize {
        let told = {
            let local = crate::local::lock(&self.local);
            let mut told = 0;
            for channel in channels {
                if local.get(channel).is_some_and(|queue| queue.mark_gap()) {
                    told += 1;
                }
            }
            told
        };
        self.losses_reported.fetch_add(told as u64, Ordering::Relaxed);
        told
    }

    /// Warns that Redis lost group memberships of this process, and how many
    /// members were told.
    pub(super) fn warn_memberships_lost(&self, group: &GroupName, told: usize) {
        throttled!(
            warn,
            %group,
            told,
            "Redis lost group memberships of this process (evicted, deleted, or Redis restarted \
             empty); written back, and the members that may have missed messages were told (1013 \
             under slow_client=disconnect). Use maxmemory-policy noeviction or volatile-*, and \
             find who deletes keys under the layer's prefix"
        );
    }
}
