//! The in-memory layer's history: a bounded ring of messages per recorded
//! group, with an epoch per run of offsets.

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

use super::{InMemoryChannelLayer, Inner};
use crate::layer::history::{
    Epoch, History, HistoryConfig, HistoryError, Recovered, Recovery, StreamPosition, Unrecoverable,
};
use crate::layer::{ChannelLayerError, LayerFuture};
use crate::message::Message;
use crate::names::GroupName;
use crate::sync::lock;

/// One recorded group.
pub(super) struct Recorded {
    epoch: Epoch,
    /// The last offset given (0: none yet in this epoch).
    top: u64,
    entries: VecDeque<Kept>,
    /// The last message recorded, or when the record was made.
    touched: Instant,
    config: HistoryConfig,
}

struct Kept {
    offset: u64,
    at: Instant,
    message: Message,
}

impl Recorded {
    fn new(config: HistoryConfig, now: Instant) -> Self {
        Self {
            epoch: Epoch::random(),
            top: 0,
            entries: VecDeque::new(),
            touched: now,
            config,
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition::new(self.top, self.epoch)
    }

    /// Drops what passed its ttl.
    fn prune(&mut self, now: Instant) {
        let ttl = self.config.ttl();
        while self.entries.front().is_some_and(|e| e.at + ttl <= now) {
            self.entries.pop_front();
        }
    }

    /// Its epoch is over: nothing recorded for `meta_ttl`.
    pub(super) fn is_lapsed(&self, now: Instant) -> bool {
        self.touched + self.config.meta_ttl() <= now
    }

    /// The position the next message gets.
    fn next(&self) -> StreamPosition {
        StreamPosition::new(self.top + 1, self.epoch)
    }

    /// Keeps `message`, which carries [`next`](Self::next)'s position.
    fn push(&mut self, message: Message, now: Instant) {
        self.top += 1;
        self.entries.push_back(Kept {
            offset: self.top,
            at: now,
            message,
        });
        while self.entries.len() > self.config.size() {
            self.entries.pop_front();
        }
        self.touched = now;
    }

    fn since(&mut self, since: StreamPosition, now: Instant) -> Recovery {
        self.prune(now);
        let position = self.position();
        if since.epoch != self.epoch || since.offset > self.top {
            return Recovery::Unrecoverable {
                reason: Unrecoverable::EpochChanged,
                position,
            };
        }
        let first_needed = since.offset + 1;
        let start = match self.entries.front() {
            _ if since.offset == self.top => None,
            Some(front) if front.offset <= first_needed => Some((first_needed - front.offset) as usize),
            _ => {
                return Recovery::Unrecoverable {
                    reason: Unrecoverable::TooOld,
                    position,
                };
            }
        };
        let messages = start.map_or_else(Vec::new, |start| {
            self.entries
                .iter()
                .skip(start)
                .map(|e| e.message.clone())
                .collect()
        });
        Recovery::Recovered(Recovered { messages, position })
    }

    fn recent(&mut self, limit: usize, now: Instant) -> Recovered {
        self.prune(now);
        let skip = self.entries.len().saturating_sub(limit);
        Recovered {
            messages: self
                .entries
                .iter()
                .skip(skip)
                .map(|e| e.message.clone())
                .collect(),
            position: self.position(),
        }
    }
}

/// The group's record, made (with a new epoch) when it has none or its
/// epoch lapsed.
fn current<'a>(
    histories: &'a mut HashMap<GroupName, Recorded>,
    group: &GroupName,
    config: &HistoryConfig,
    now: Instant,
) -> &'a mut Recorded {
    let recorded = histories
        .entry(group.clone())
        .or_insert_with(|| Recorded::new(*config, now));
    if recorded.is_lapsed(now) {
        *recorded = Recorded::new(*config, now);
    }
    recorded
}

impl Inner {
    /// Records `message` in `group`'s history (counted against
    /// `max_bytes` for as long as it is kept): the message to deliver, with
    /// its position.
    pub(super) fn record(
        &self,
        group: &GroupName,
        config: &HistoryConfig,
        message: &Message,
        now: Instant,
    ) -> Result<(Message, StreamPosition), ChannelLayerError> {
        let mut histories = lock(&self.histories);
        let recorded = current(&mut histories, group, config, now);
        let position = recorded.next();
        let message = message.with_position(position);
        self.budget.charge(&message)?;
        recorded.push(message.clone(), now);
        Ok((message, position))
    }

    fn with_history<T>(
        &self,
        group: &GroupName,
        read: impl FnOnce(&mut Recorded, Instant) -> T,
    ) -> Result<T, HistoryError> {
        let config = self
            .config
            .history_for(group)
            .ok_or_else(|| HistoryError::NotRecorded(group.clone()))?;
        let now = Instant::now();
        let mut histories = lock(&self.histories);
        let recorded = current(&mut histories, group, config, now);
        Ok(read(recorded, now))
    }

    /// Forgets lapsed histories and drops expired messages.
    pub(super) fn reap_histories(&self, now: Instant) {
        let mut histories = lock(&self.histories);
        histories.retain(|_, recorded| {
            recorded.prune(now);
            !recorded.is_lapsed(now)
        });
    }
}

impl History for InMemoryChannelLayer {
    fn is_recorded(&self, group: &GroupName) -> bool {
        self.inner.config.history_for(group).is_some()
    }

    fn history_position<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> LayerFuture<'a, Result<StreamPosition, HistoryError>> {
        Box::pin(async move { self.inner.with_history(group, |r, _| r.position()) })
    }

    fn history_since<'a>(
        &'a self,
        group: &'a GroupName,
        since: StreamPosition,
    ) -> LayerFuture<'a, Result<Recovery, HistoryError>> {
        Box::pin(async move { self.inner.with_history(group, |r, now| r.since(since, now)) })
    }

    fn history_recent<'a>(
        &'a self,
        group: &'a GroupName,
        limit: usize,
    ) -> LayerFuture<'a, Result<Recovered, HistoryError>> {
        Box::pin(async move { self.inner.with_history(group, |r, now| r.recent(limit, now)) })
    }
}
