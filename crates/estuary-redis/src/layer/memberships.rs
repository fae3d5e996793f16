//! This process's group memberships in Redis: written on `group_add`,
//! renewed before they lapse, checked for loss, and written back after an
//! outage before the layer says it is healthy again.
//!
//! Redis can lose a group key without telling anyone: eviction under
//! `maxmemory`, a `DEL` from outside, a restart without persistence. The
//! process keeps its own channels' memberships (it renews them anyway), so
//! it checks every [`RedisConfig::membership_check`](crate::RedisConfig::membership_check)
//! that one of its members is still in each of its groups and, when it is
//! not, which of its members the group lost: a key that is gone is written
//! again, a key that lists others had these removed (a `group_discard`
//! elsewhere), which stands (a group send from this process finds either
//! at once: see `group_send.rs`). Messages other processes sent to the
//! group in between did not reach these members, and nothing can bring
//! them back: the members are told (`ChannelLayerError::Lost` on their
//! next receive). After an outage the same check runs before memberships
//! are written back, so members Redis lost while away are told too. The same check takes
//! back this process's own queue if something wrote another type over it,
//! and tells every channel of the process.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use estuary_core::{ChannelLayerError, ChannelName, GroupName};
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::registry::Version;
use crate::faults::layer_error;
use crate::local::lock;
use crate::scripts;

/// The longest wait between two attempts to reach Redis again (reconnects
/// and the restoration of memberships): Redis back is noticed within this.
pub(super) const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Group keys checked per script call.
const CHECK_BATCH: usize = 500;

/// This process's members one group key no longer holds.
pub(super) struct Loss {
    group: GroupName,
    members: Vec<ChannelName>,
    /// The key is gone altogether (not just these members).
    key_gone: bool,
}

impl Inner {
    /// Writes memberships (ZADD now + EXPIRE), one pipeline per shard.
    pub(super) async fn write_memberships(
        &self,
        due: &[(GroupName, ChannelName)],
    ) -> Result<(), ChannelLayerError> {
        let mut by_shard: BTreeMap<usize, (String, redis::Pipeline)> = BTreeMap::new();
        let score = self.score().to_string();
        let ttl = self.config.layer.group_expiry().as_secs() as i64;
        for (group, channel) in due {
            let key = self.group_key(group);
            let (_, pipe) = by_shard.entry(self.shard(group.as_str())).or_insert_with(|| {
                let mut p = redis::pipe();
                p.atomic();
                (key.clone(), p)
            });
            pipe.zadd(&key, channel.as_str(), &score)
                .ignore()
                .expire(&key, ttl)
                .ignore();
        }
        for (shard, (first_key, pipe)) in by_shard {
            let mut conn = self.shards[shard].conn.clone();
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| layer_error(e, &first_key))?;
        }
        Ok(())
    }

    /// Writes `due` again and stamps it; a membership discarded meanwhile is
    /// taken out again. True when everything was written.
    async fn rewrite(&self, due: Vec<(GroupName, ChannelName)>) -> bool {
        if due.is_empty() {
            return true;
        }
        if let Err(error) = self.write_memberships(&due).await {
            estuary_core::throttled!(
                warn,
                %error,
                "could not write group memberships; will retry. Check that Redis is reachable"
            );
            return false;
        }
        let mut gone = Vec::new();
        {
            let mut memberships = lock(&self.memberships);
            for (group, channel) in due {
                // Discarded while we wrote it back: take it out again.
                if !memberships.stamp(&group, &channel) {
                    gone.push((group, channel));
                }
            }
        }
        for (group, channel) in gone {
            let mut conn = self.conn(group.as_str());
            let _ = redis::cmd("ZREM")
                .arg(self.group_key(&group))
                .arg(channel.as_str())
                .query_async::<()>(&mut conn)
                .await;
        }
        true
    }

    /// Writes again the memberships older than half the group expiry (or
    /// all of them). True when everything due was written.
    pub(super) async fn renew(&self, all: bool) -> bool {
        let max_age = (!all).then(|| self.config.layer.group_expiry() / 2);
        let due = lock(&self.memberships).due(max_age);
        if !due.is_empty() {
            tracing::debug!(count = due.len(), all, "renewing group memberships");
        }
        self.rewrite(due).await
    }

    /// Finds which of this process's members Redis lost: first one sample
    /// member per group (cheap, every check), then, for a group whose sample
    /// is missing, all of this process's members of it, with the group's
    /// [`Version`](super::registry::Version) taken beside them. A group that
    /// changed locally meanwhile (a `group_discard` then `group_add` of the
    /// same channel can put its ZREM before the check and its ZADD after)
    /// is skipped: the next check sees it settled. The second value is
    /// false when Redis could not be asked about some group.
    async fn find_lost(&self) -> (Vec<Loss>, bool) {
        let samples = lock(&self.memberships).samples();
        let mut by_shard: BTreeMap<usize, Vec<(GroupName, ChannelName)>> = BTreeMap::new();
        for (group, channel) in samples {
            by_shard
                .entry(self.shard(group.as_str()))
                .or_default()
                .push((group, channel));
        }
        let mut complete = true;
        let mut suspects: BTreeMap<usize, Vec<GroupName>> = BTreeMap::new();
        for (shard, groups) in by_shard {
            for batch in groups.chunks(CHECK_BATCH) {
                let mut invocation = scripts::MEMBERSHIPS_PRESENT.prepare_invoke();
                for (group, _) in batch {
                    invocation.key(self.group_key(group));
                }
                for (_, channel) in batch {
                    invocation.arg(channel.as_str());
                }
                let mut conn = self.shards[shard].conn.clone();
                let present = match invocation.invoke_async::<Vec<i64>>(&mut conn).await {
                    Ok(present) => present,
                    Err(error) => {
                        // Redis away: the receive loop notices and restores.
                        tracing::debug!(%error, "membership check failed");
                        complete = false;
                        continue;
                    }
                };
                for ((group, _), state) in batch.iter().zip(present) {
                    match state {
                        0 => suspects.entry(shard).or_default().push(group.clone()),
                        -1 => self.warn_poisoned(&self.group_key(group), 0),
                        _ => {}
                    }
                }
            }
        }
        let mut losses = Vec::new();
        for (shard, groups) in suspects {
            for batch in groups.chunks(CHECK_BATCH) {
                // Each group's members with its version, as one moment.
                let taken: Vec<(&GroupName, Version, Vec<ChannelName>)> = {
                    let memberships = lock(&self.memberships);
                    batch
                        .iter()
                        .filter_map(|group| match memberships.members_at(group) {
                            (Some(version), members) => Some((group, version, members)),
                            (None, _) => None,
                        })
                        .collect()
                };
                if taken.is_empty() {
                    continue;
                }
                let mut invocation = scripts::MEMBERS_MISSING.prepare_invoke();
                for (group, _, _) in &taken {
                    invocation.key(self.group_key(group));
                }
                for (_, _, members) in &taken {
                    invocation.arg(members.len());
                }
                for channel in taken.iter().flat_map(|(_, _, members)| members) {
                    invocation.arg(channel.as_str());
                }
                let mut conn = self.shards[shard].conn.clone();
                let found = match invocation.invoke_async::<Vec<Vec<i64>>>(&mut conn).await {
                    Ok(found) => found,
                    Err(error) => {
                        tracing::debug!(%error, "membership check failed");
                        complete = false;
                        continue;
                    }
                };
                for ((group, version, members), found) in taken.into_iter().zip(found) {
                    if lock(&self.memberships).version(group) != Some(version) {
                        // Joined or left meanwhile: a ZREM and ZADD in
                        // flight look like a loss. The next check decides.
                        continue;
                    }
                    let (key_gone, missing) = match found.split_first() {
                        Some((0, _)) => (true, members),
                        Some((1, positions)) => {
                            let missing: Vec<ChannelName> = positions
                                .iter()
                                .filter_map(|&j| {
                                    usize::try_from(j - 1).ok().and_then(|j| members.get(j)).cloned()
                                })
                                .collect();
                            (false, missing)
                        }
                        _ => {
                            self.warn_poisoned(&self.group_key(group), 0);
                            continue;
                        }
                    };
                    if !missing.is_empty() {
                        losses.push(Loss {
                            group: group.clone(),
                            members: missing,
                            key_gone,
                        });
                    }
                }
            }
        }
        (losses, complete)
    }

    /// Checks that each group this process has members in still holds
    /// them, and acts on what is missing (see [`Inner::act_on_loss`]).
    /// Returns how many memberships were written back.
    pub(super) async fn repair_lost(&self) -> usize {
        let (losses, _) = self.find_lost().await;
        let mut repaired = 0;
        for loss in &losses {
            repaired += self.act_on_loss(loss, false).await;
        }
        repaired
    }

    /// A group key that is gone lost every member (evicted, deleted, Redis
    /// restarted): they are written back and told. A key that still
    /// exists but no longer holds some of this process's members had them
    /// removed one by one, which is what a `group_discard` from another
    /// process (a Django view, say) does: the discard stands (they are
    /// forgotten here, not written back), and they are told, since they may
    /// equally have been lost with a key written again since; a session
    /// then closes 1013, and its consumer decides on reconnecting whether
    /// it joins again. After an outage (`restoring`), every loss is taken
    /// for Redis's and written back. Returns how many were written back.
    pub(super) async fn act_on_loss(&self, loss: &Loss, restoring: bool) -> usize {
        if loss.key_gone || restoring {
            return self.memberships_lost(&loss.group, &loss.members).await;
        }
        self.memberships_removed(&loss.group, &loss.members);
        0
    }

    /// `members` (this process's own) were removed from `group`'s key, which
    /// still exists: forgets them (the removal stands) and tells them.
    pub(super) fn memberships_removed(&self, group: &GroupName, members: &[ChannelName]) {
        {
            let mut memberships = lock(&self.memberships);
            for channel in members {
                memberships.discard(group, channel);
            }
        }
        let told = self.tell_lost(members);
        estuary_core::throttled!(
            info,
            %group,
            told,
            "members of this process were removed from a group by someone else (a \
             group_discard from another process, or the key was lost and written again \
             without them); left out, and told (1013 under slow_client=disconnect)"
        );
    }

    /// `group`'s key lost `members` (this process's own): writes them back
    /// and tells them that they may have missed messages meanwhile (another
    /// process may have sent to the group). Returns how many were written.
    pub(super) async fn memberships_lost(&self, group: &GroupName, members: &[ChannelName]) -> usize {
        if members.is_empty() {
            return 0;
        }
        let due: Vec<(GroupName, ChannelName)> = members.iter().map(|c| (group.clone(), c.clone())).collect();
        let written = if self.rewrite(due).await {
            self.repaired.fetch_add(members.len() as u64, Ordering::Relaxed);
            members.len()
        } else {
            0
        };
        // Told even if the write failed: the loss already happened.
        let told = self.tell_lost(members);
        self.warn_memberships_lost(group, told);
        written
    }

    /// Other Estuary processes' group sends found this process's queue full
    /// `refused` times (they count it beside the queue; the receive task
    /// reads the count): which channels those messages were for is not
    /// known, so every channel of this process is told that it may have
    /// missed messages. Returns how many were told.
    pub(super) fn own_queue_refused(&self, refused: u64) -> usize {
        let channels: Vec<ChannelName> = lock(&self.local).keys().cloned().collect();
        let told = self.tell_lost(&channels);
        estuary_core::throttled!(
            warn,
            refused,
            told,
            "group messages from other processes found this process's queue in Redis full and \
             were dropped; every channel of this process was told it may have missed messages \
             (1013 under slow_client=disconnect). The process falls behind its queue: give it \
             more CPU or fewer connections, or raise the layer's capacity"
        );
        told
    }

    /// Takes this process's queue back if something wrote another type
    /// over it (nobody else has a claim on its name), and tells every
    /// channel of this process: what the queue held, and what was sent to
    /// it meanwhile, is lost. True when it was taken back.
    pub(super) async fn reclaim_own_queue(&self) -> bool {
        let key = self.channel_key(&self.client_prefix);
        let mut conn = self.conn(&self.client_prefix);
        match scripts::RECLAIM_QUEUE
            .key(&key)
            .invoke_async::<i64>(&mut conn)
            .await
        {
            Ok(1) => {
                self.poisoned.fetch_add(1, Ordering::Relaxed);
                let channels: Vec<ChannelName> = lock(&self.local).keys().cloned().collect();
                let told = self.tell_lost(&channels);
                estuary_core::throttled!(
                    error,
                    %key,
                    told,
                    "this process's queue in Redis held another type (written over); deleted \
                     it, and told every channel of this process that it may have missed \
                     messages. Find what writes to this Redis under the layer's prefix"
                );
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::debug!(%error, %key, "could not check this process's queue");
                false
            }
        }
    }
}

/// After an outage (number `outage`): writes every membership again
/// (retrying, at most [`MAX_BACKOFF`] apart), then reports the layer healthy,
/// unless a new outage began meanwhile.
pub(super) async fn restore(inner: Weak<Inner>, outage: u64, key: String, token: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    let started = Instant::now();
    loop {
        let Some(layer) = inner.upgrade() else { return };
        if layer.outage() != outage {
            // A newer outage has its own restoration.
            return;
        }
        // What Redis lost while it was away (restarted empty, say): other
        // processes' sends since it came back missed those members. Asked
        // before anything is written back; a blip that kept the data finds
        // nothing, and tells nobody.
        let (losses, complete) = layer.find_lost().await;
        for loss in &losses {
            layer.act_on_loss(loss, true).await;
        }
        if complete && layer.renew(true).await {
            if layer.mark_restored(outage) {
                tracing::info!(
                    %key,
                    took_ms = started.elapsed().as_millis() as u64,
                    "Redis is reachable again; group memberships restored"
                );
            }
            return;
        }
        drop(layer);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Renews memberships older than half the group expiry, and checks that
/// none was lost, every [`RedisConfig::membership_check`](crate::RedisConfig::membership_check)
/// (or a quarter of the group expiry, if that is shorter, but at least 1 s
/// for renewals).
pub(super) async fn membership_loop(inner: Weak<Inner>, token: CancellationToken) {
    let period = match inner.upgrade() {
        Some(i) => {
            let renew =
                (i.config.layer.group_expiry() / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
            renew.min(i.config.membership_check)
        }
        None => return,
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let Some(layer) = inner.upgrade() else { return };
        // While Redis is away or being restored, `restore` writes everything.
        if layer.is_healthy() {
            layer.reclaim_own_queue().await;
            layer.repair_lost().await;
            layer.renew(false).await;
        }
    }
}
