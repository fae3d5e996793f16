//! This process's group memberships in Redis: written on `group_add`,
//! renewed before they lapse, checked for loss, and written back after an
//! outage before the layer says it is healthy again.
//!
//! Redis can lose a group key without telling anyone: eviction under
//! `maxmemory`, a `DEL` from outside, a restart without persistence. The
//! process keeps its own channels' memberships (it renews them anyway), so
//! it checks every [`RedisConfig::membership_check`](crate::RedisConfig::membership_check)
//! that one of its members is still in each of its groups, and writes the
//! whole group's share of this process again when it is not.

use std::collections::{BTreeMap, HashMap};
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
            if let Some(held_back) = self.renew_warning.allow() {
                tracing::warn!(%error, held_back, "could not write group memberships; will retry");
            }
            return false;
        }
        let mut gone = Vec::new();
        {
            let mut memberships = lock(&self.memberships);
            for (group, channel) in due {
                match memberships.get_mut(&channel).and_then(|g| g.get_mut(&group)) {
                    Some(at) => *at = Instant::now(),
                    // Discarded while we wrote it back: take it out again.
                    None => gone.push((group, channel)),
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
        let max_age = self.config.layer.group_expiry() / 2;
        let due: Vec<(GroupName, ChannelName)> = lock(&self.memberships)
            .iter()
            .flat_map(|(ch, groups)| {
                groups
                    .iter()
                    .filter(|(_, at)| all || at.elapsed() >= max_age)
                    .map(move |(g, _)| (g.clone(), ch.clone()))
            })
            .collect();
        if !due.is_empty() {
            tracing::debug!(count = due.len(), all, "renewing group memberships");
        }
        self.rewrite(due).await
    }

    /// Checks that each group this process has members in still holds one
    /// of them, and writes this process's memberships of the groups that
    /// lost them again. Returns how many memberships were written back.
    pub(super) async fn repair_lost(&self) -> usize {
        // One member of ours per group, as its sample.
        let samples: BTreeMap<GroupName, ChannelName> = {
            let memberships = lock(&self.memberships);
            let mut samples = BTreeMap::new();
            for (channel, groups) in memberships.iter() {
                for group in groups.keys() {
                    samples.entry(group.clone()).or_insert_with(|| channel.clone());
                }
            }
            samples
        };
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
                        // ZREM comes after it leaves the local map).
                        0 if lock(&self.memberships)
                            .get(sample)
                            .is_some_and(|g| g.contains_key(group)) =>
                        {
                            lost.push(group.clone())
                        }
                        -1 => self.warn_poisoned(&self.group_key(group), 0),
                        _ => {}
                    }
                }
            }
        }
        if lost.is_empty() {
            return 0;
        }
        let due: Vec<(GroupName, ChannelName)> = {
            let memberships = lock(&self.memberships);
            let lost: HashMap<&GroupName, ()> = lost.iter().map(|g| (g, ())).collect();
            memberships
                .iter()
                .flat_map(|(ch, groups)| {
                    groups
                        .keys()
                        .filter(|g| lost.contains_key(g))
                        .map(move |g| (g.clone(), ch.clone()))
                })
                .collect()
        };
        let count = due.len();
        tracing::warn!(
            groups = lost.len(),
            memberships = count,
            "group keys lost this process's members (evicted, deleted or Redis restarted empty); writing them again"
        );
        if self.rewrite(due).await {
            self.repaired.fetch_add(count as u64, Ordering::Relaxed);
            count
        } else {
            0
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
            layer.repair_lost().await;
            layer.renew(false).await;
        }
    }
}
