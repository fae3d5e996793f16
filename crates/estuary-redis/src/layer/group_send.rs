//! `group_send`: read the group's members, skip (and remove) what no
//! process could have written, write one payload per destination queue.
//!
//! It also checks the group against this process's own record: a member of
//! this process the group key no longer lists was lost in Redis. When the
//! key is gone (a `DEL`, an eviction), the members are written back, this
//! message still reaches them, and they are told that they may have missed
//! others' messages meanwhile; when the key lists other members, they were
//! removed one by one (another process's `group_discard`): the removal
//! stands, and they are told.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use estuary_core::{ChannelLayerError, ChannelName, GroupName, GroupSendReport, Message};

use super::untrusted::{self, Member};
use super::{Inner, unavailable};
use crate::codec::{Target, encode_member};
use crate::faults::{NotRestored, layer_error};
use crate::local::lock;
use crate::scripts;

/// How far ahead of this process's clock a membership's score may be
/// (clocks differ between machines) beyond the group expiry, in seconds.
pub(super) const CLOCK_SLACK: f64 = 3600.0;

/// One process's copy of a group message: its queue key, the stored member,
/// the queue's capacity, and the group members it carries.
struct QueuePayload {
    key: String,
    payload: Vec<u8>,
    capacity: usize,
    members: usize,
    /// The queue's non-local name (this process's own queue is told apart).
    non_local: String,
}

/// The key counting group messages a process queue refused for want of
/// room (`:` cannot occur in a channel name, so no queue has this name).
pub(super) fn refused_key(queue_key: &str) -> String {
    format!("{queue_key}:refused")
}

impl Inner {
    /// Reads `group`'s members and acts on what it lacks of this process's
    /// (as a group send does; see [`Inner::group_destinations`]), without
    /// sending anything.
    pub(super) async fn check_own_members(&self, group: &GroupName, now: f64) {
        if let Err(error) = self.group_destinations(group, now).await {
            tracing::debug!(%error, %group, "could not check this process's members of a group");
        }
    }

    /// Sends `message` to every member of `group`: plans the send (which
    /// members, which shards, what payload), then writes it.
    pub(super) async fn group_send(
        &self,
        group: &GroupName,
        message: Message,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        if !self.is_healthy() {
            // Redis is away, or back without this process's memberships yet:
            // a send now would miss this process's members without a word.
            let error = ChannelLayerError::Unavailable(Box::new(NotRestored));
            self.count_failure(&error);
            return Err(error);
        }
        let now = self.score();
        let by_queue = self.group_destinations(group, now).await?;
        if by_queue.is_empty() {
            return Ok(GroupSendReport::default());
        }
        let by_shard = self.group_payloads(&by_queue, &message);
        self.send_group_payloads(group, now, &by_queue, by_shard).await
    }

    /// Which members the send reaches, by destination queue (one per
    /// process): reads the group's members, removes those no process could
    /// have written, and checks the group against this process's own record
    /// (writing lost memberships back when the key is gone).
    pub(super) async fn group_destinations(
        &self,
        group: &GroupName,
        now: f64,
    ) -> Result<BTreeMap<String, Vec<ChannelName>>, ChannelLayerError> {
        let group_expiry = self.config.layer.group_expiry().as_secs();
        // Before the members are read: whoever is in it now was written.
        let version = lock(&self.memberships).version(group);
        let mut conn = self.conn(group.as_str());
        let group_key = self.group_key(group);
        let (absurd, raw): (u64, Vec<Vec<u8>>) = scripts::GROUP_MEMBERS
            .key(&group_key)
            .arg(now.floor() as i64 - group_expiry as i64)
            .arg((now + (group_expiry as f64).max(CLOCK_SLACK)).floor() as i64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| {
                let error = layer_error(e, &group_key);
                self.count_failure(&error);
                error
            })?;
        if absurd > 0 {
            self.warn_absurd_scores(group, absurd);
        }
        // A sorted set is never empty: no member means no key.
        let key_gone = raw.is_empty();
        // One payload per destination queue (one per process), each naming
        // every member it carries, grouped by the shard that holds the queue.
        let mut by_queue: BTreeMap<String, Vec<ChannelName>> = BTreeMap::new();
        let mut impossible: Vec<Vec<u8>> = Vec::new();
        for raw in raw {
            match untrusted::member(&raw) {
                Member::Channel(ch) => by_queue
                    .entry(ch.non_local_name().to_owned())
                    .or_default()
                    .push(ch),
                Member::Foreign(name) => {
                    self.warn_invalid_member(group, name.as_bytes(), "not addressable", false)
                }
                Member::Impossible(why) => {
                    self.warn_invalid_member(group, &raw, why, true);
                    impossible.push(raw);
                }
            }
        }
        if !impossible.is_empty() {
            // Exactly those members: nobody can write them again legitimately.
            let removed = redis::cmd("ZREM")
                .arg(&group_key)
                .arg(&impossible)
                .query_async::<i64>(&mut conn)
                .await;
            if let Err(error) = removed {
                tracing::debug!(%error, %group, "could not remove invalid group members");
            }
        }
        if let Some(version) = version {
            let listed = by_queue
                .get(self.client_prefix.as_str())
                .map_or(&[][..], Vec::as_slice);
            let missing = lock(&self.memberships).missing(group, version, listed);
            if !missing.is_empty() && key_gone {
                self.memberships_lost(group, &missing).await;
                by_queue
                    .entry(self.client_prefix.clone())
                    .or_default()
                    .extend(missing);
            } else if !missing.is_empty() {
                // The key lists others but not these: removed one by one,
                // as another process's group_discard does. The removal
                // stands; they are told (see `Inner::act_on_loss`).
                self.memberships_removed(group, &missing);
            }
        }
        Ok(by_queue)
    }

    /// What is written where: one payload per destination queue, naming
    /// every member it carries, grouped by the shard that holds the queue.
    fn group_payloads(
        &self,
        by_queue: &BTreeMap<String, Vec<ChannelName>>,
        message: &Message,
    ) -> BTreeMap<usize, Vec<QueuePayload>> {
        let mut by_shard: BTreeMap<usize, Vec<QueuePayload>> = BTreeMap::new();
        for (non_local, channels) in by_queue {
            let refs: Vec<&ChannelName> = channels.iter().collect();
            let payload = encode_member(message, Target::Many(&refs), self.crypto.as_ref());
            let mut capacity = self.config.layer.capacity_for(channels[0].as_str());
            if *non_local == self.client_prefix {
                // This process drains its own queue into its connections'
                // buffers, which keep flow control: it may run ahead.
                capacity = capacity.saturating_mul(estuary_core::OVERFLOW_FACTOR);
            }
            by_shard
                .entry(self.shard(non_local))
                .or_default()
                .push(QueuePayload {
                    key: self.channel_key(non_local),
                    payload,
                    capacity,
                    members: channels.len(),
                    non_local: non_local.clone(),
                });
        }
        by_shard
    }

    /// Writes the planned payloads, one script call per shard, and reports
    /// who got the message. Members on an unreachable shard count as
    /// dropped; the send fails only when no shard was reached.
    async fn send_group_payloads(
        &self,
        group: &GroupName,
        now: f64,
        by_queue: &BTreeMap<String, Vec<ChannelName>>,
        by_shard: BTreeMap<usize, Vec<QueuePayload>>,
    ) -> Result<GroupSendReport, ChannelLayerError> {
        let mut report = GroupSendReport::default();
        let expiry = self.expiry_secs();
        let mut failure = None;
        let mut shards_ok = 0;
        let mut own_queue_poisoned = false;
        for (shard, queues) in by_shard {
            let invocation = self.group_send_invocation(&queues, now, expiry);
            let mut conn = self.shards[shard].conn.clone();
            match invocation.invoke_async::<Vec<i64>>(&mut conn).await {
                Ok(stored) => {
                    shards_ok += 1;
                    for (q, stored) in queues.iter().zip(stored) {
                        match stored {
                            1 => report.delivered += q.members,
                            -1 => {
                                report.dropped += q.members;
                                self.warn_poisoned(&q.key, q.members);
                            }
                            _ => report.dropped += q.members,
                        }
                        if stored != 1 && q.non_local == self.client_prefix {
                            // This process's own members missed it: they
                            // are told (the queue is full in Redis, or was
                            // written over).
                            own_queue_poisoned |= stored == -1;
                            let told = self.tell_lost(&by_queue[&q.non_local]);
                            tracing::debug!(%group, told, stored, "own members missed a group message");
                        }
                    }
                }
                Err(e) => {
                    // Members on an unreachable shard are counted as dropped.
                    report.dropped += queues.iter().map(|q| q.members).sum::<usize>();
                    failure = Some(e);
                }
            }
        }
        if own_queue_poisoned {
            // Written over, perhaps: take it back now rather than at the
            // receive loop's next pop.
            self.reclaim_own_queue().await;
        }
        if report.dropped > 0 {
            estuary_core::throttled!(
                info,
                %group,
                dropped = report.dropped,
                "group_send skipped members (their queues were full or unusable)"
            );
        }
        if failure.is_some() {
            self.failed_sends.fetch_add(1, Ordering::Relaxed);
        }
        match failure {
            Some(e) if shards_ok == 0 => Err(unavailable(e)),
            Some(e) => {
                estuary_core::throttled!(
                    warn,
                    %group,
                    error = %e,
                    "group_send reached some Redis hosts only; members on the others were \
                     skipped. Check the hosts of the ring"
                );
                Ok(report)
            }
            None => Ok(report),
        }
    }

    /// The `GROUP_SEND` call for one shard's queues.
    fn group_send_invocation(
        &self,
        queues: &[QueuePayload],
        now: f64,
        expiry: u64,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = scripts::GROUP_SEND.prepare_invoke();
        for q in queues {
            invocation.key(&q.key);
        }
        for q in queues {
            invocation.arg(q.payload.as_slice());
        }
        for q in queues {
            invocation.key(refused_key(&q.key));
        }
        for q in queues {
            invocation.arg(q.capacity);
        }
        for q in queues {
            // Another process's queue (its name ends in `!`): its
            // receive task reads the count and tells its channels.
            let counted = q.non_local != self.client_prefix && q.non_local.ends_with('!');
            invocation.arg(if counted { "1" } else { "0" });
        }
        invocation
            .arg(now.to_string())
            .arg(now.floor() as i64 - expiry as i64)
            .arg(expiry);
        invocation
    }
}
