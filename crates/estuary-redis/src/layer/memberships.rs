//! This process's group memberships in Redis: written on `group_add`,
//! renewed before they lapse, checked for loss, and written back after an
//! outage before the layer says it is healthy again.
//!
//! Redis can lose a group key without telling anyone: eviction under
//! `maxmemory`, a `DEL` from outside, a restart without persistence. The
//! process keeps its own channels' memberships (it renews them anyway), so
//! it checks every [`RedisConfig::membership_check`](crate::RedisConfig::membership_check)
//! that one of its members is still in each of its groups, and writes the
//! whole group's share of this process again when it is not (a group send
//! from this process finds such a loss at once: see `group_send.rs`).
//! Messages other processes sent to the group in between did not reach
//! these members, and nothing can bring them back: the members are told
//! (`ChannelLayerError::Lost` on their next receive). The same check takes
//! back this process's own queue if something wrote another type over it,
//! and tells every channel of the process.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use estuary_core::{ChannelLayerError, ChannelName, GroupName};
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::faults::layer_error;
use crate::local::lock;
use crate::scripts;

/// The longest wait between two attempts to reach Redis again (reconnects
/// and the restoration of memberships): Redis back is noticed within this.
pub(super) const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Group keys checked per script call.
const CHECK_BATCH: usize = 500;

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

    /// Checks that each group this process has members in still holds one
    /// of them; writes this process's memberships of the groups that lost
    /// them again, and tells those members. Returns how many memberships
    /// were written back.
    pub(super) async fn repair_lost(&self) -> usize {
        // One member of ours per group, as its sample.
        let samples = lock(&self.memberships).samples();
        let mut by_shard: BTreeMap<usize, Vec<(GroupName, ChannelName)>> = BTreeMap::new();
        for (group, channel) in samples {
            by_shard
                .entry(self.shard(group.as_str()))
                .or_default()
                .push((group, channel));
        }
        let mut lost: Vec<GroupName> = Vec::new();
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
                        continue;
                    }
                };
                for ((group, sample), state) in batch.iter().zip(present) {
                    match state {
                        // Unless the sample was discarded meanwhile (its
                        // ZREM comes after it leaves the local record).
                        0 if lock(&self.memberships).contains(group, sample) => lost.push(group.clone()),
                        -1 => self.warn_poisoned(&self.group_key(group), 0),
                        _ => {}
                    }
                }
            }
        }
        let mut repaired = 0;
        for group in &lost {
            let members = lock(&self.memberships).members(group);
            repaired += self.memberships_lost(group, &members).await;
        }
        repaired
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
        if layer.renew(true).await {
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
