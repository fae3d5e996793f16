//! History over Redis: one stream per recorded group, shared by every
//! process, so that they share one history and one order.
//!
//! A recorded group has two keys on its shard: `{prefix}:history:{group}`,
//! a stream whose entry ids are the offsets (`<offset>-0`), each entry the
//! message as sent (without its position; encrypted when the layer
//! encrypts) and the instant Redis recorded it, capped with `MAXLEN` at the
//! group's size; and `{prefix}:history:{group}:meta`, a hash with the
//! epoch and the last offset, kept for `meta_ttl` after the last message
//! (the stream for `ttl`). When the meta hash is gone (expired, evicted,
//! flushed, Redis restarted empty) or was begun under a former primary (a
//! Sentinel failover since) the next script starts a new epoch with the
//! random one the caller passes. Scripts read Redis's clock, so the
//! processes' clocks do not matter. A reader gets the message with its
//! position appended again: the bytes the members received.

use std::sync::LazyLock;

use estuary_core::{
    ChannelLayerError, Epoch, GroupName, History, HistoryConfig, HistoryError, LayerFuture, Message,
    Recovered, Recovery, StreamPosition, Unrecoverable,
};
use redis::Script;

use super::{Inner, RedisChannelLayer};
use crate::faults::layer_error;

/// Reads (making it, with epoch ARGV[1], when it is gone) a group's meta
/// hash; KEYS[1] the stream, KEYS[2] the meta hash, KEYS[3] the primary's
/// mark. An epoch begun under another primary than the one marked now (a
/// Sentinel failover happened since: see `Client::mark_primary`) is over
/// too: the former primary's last offsets were lost with it.
const META: &str = r"
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local s, m = KEYS[1], KEYS[2]
local ts, tm = redis.call('TYPE', s).ok, redis.call('TYPE', m).ok
if (ts ~= 'stream' and ts ~= 'none') or (tm ~= 'hash' and tm ~= 'none') then
  return redis.error_reply('WRONGTYPE history key holds another type')
end
local primary = redis.call('GET', KEYS[3]) or ''
local epoch = redis.call('HGET', m, 'epoch')
if not epoch or (redis.call('HGET', m, 'primary') or '') ~= primary then
  epoch = ARGV[1]
  redis.call('DEL', s)
  redis.call('HSET', m, 'epoch', epoch, 'top', '0', 'primary', primary)
  redis.call('PEXPIRE', m, ARGV[2])
end
local top = tonumber(redis.call('HGET', m, 'top'))
";

fn script(body: &str) -> Script {
    Script::new(&format!("{META}{body}"))
}

/// Records. ARGV: new epoch, meta ttl (ms), payload, size, ttl (ms).
/// Returns `{epoch, offset}`.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
top = redis.call('HINCRBY', m, 'top', 1)
redis.call('XADD', s, 'MAXLEN', ARGV[4], string.format('%.0f', top) .. '-0', 'd', ARGV[3], 't', string.format('%.0f', now))
redis.call('PEXPIRE', s, ARGV[5])
redis.call('PEXPIRE', m, ARGV[2])
return {epoch, top}
",
    )
});

/// The position. ARGV: new epoch, meta ttl (ms). Returns `{epoch, top}`.
static POSITION: LazyLock<Script> = LazyLock::new(|| script("return {epoch, top}"));

/// Everything after a position. ARGV: new epoch, meta ttl (ms), epoch,
/// offset, ttl (ms). Returns `{epoch, top, status, payloads...}`: status 1
/// recovered (the payloads are offsets `offset + 1` on, in order), 0 the
/// epoch differs (or the offset is ahead), 2 the first message needed is
/// gone.
static SINCE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local off = tonumber(ARGV[4])
if epoch ~= ARGV[3] or off > top then
  return {epoch, top, 0}
end
if off == top then
  return {epoch, top, 1}
end
local first_id = string.format('%.0f', off + 1) .. '-0'
local entries = redis.call('XRANGE', s, first_id, '+')
local first = entries[1]
if not first or first[1] ~= first_id or #entries ~= top - off or tonumber(first[2][4]) + tonumber(ARGV[5]) <= now then
  return {epoch, top, 2}
end
local out = {epoch, top, 1}
for _, e in ipairs(entries) do
  out[#out + 1] = e[2][2]
end
return out
",
    )
});

/// The last messages. ARGV: new epoch, meta ttl (ms), limit, ttl (ms).
/// Returns `{epoch, top, offset, payload, ...}`, newest first, those past
/// the ttl left out.
static RECENT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local out = {epoch, top}
if tonumber(ARGV[3]) > 0 then
  for _, e in ipairs(redis.call('XREVRANGE', s, '+', '-', 'COUNT', ARGV[3])) do
    if tonumber(e[2][4]) + tonumber(ARGV[4]) > now then
      out[#out + 1] = tonumber(string.match(e[1], '^(%d+)'))
      out[#out + 1] = e[2][2]
    end
  end
end
return out
",
    )
});

impl Inner {
    pub(super) fn history_keys(&self, group: &GroupName) -> (String, String) {
        let stream = format!("{}:history:{}", self.config.prefix, group);
        let meta = format!("{stream}:meta");
        (stream, meta)
    }

    fn history_config(&self, group: &GroupName) -> Result<&HistoryConfig, HistoryError> {
        self.config
            .layer
            .history_for(group)
            .ok_or_else(|| HistoryError::NotRecorded(group.clone()))
    }

    /// A script call on `group`'s history keys, with the arguments every
    /// history script takes first (a new epoch, the meta ttl).
    fn history_invocation(
        &self,
        script: &'static Script,
        group: &GroupName,
        config: &HistoryConfig,
    ) -> (redis::ScriptInvocation<'static>, String) {
        let (stream, meta) = self.history_keys(group);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&stream)
            .key(&meta)
            .key(crate::config::primary_key(&self.config.prefix))
            .arg(Epoch::random().as_str())
            .arg(config.meta_ttl().as_millis() as u64);
        (invocation, stream)
    }

    /// Records `message` in `group`'s stream: its position.
    pub(super) async fn record(
        &self,
        group: &GroupName,
        config: &HistoryConfig,
        message: &Message,
    ) -> Result<StreamPosition, ChannelLayerError> {
        let payload = match &self.crypto {
            Some(crypto) => crypto.encrypt(message.as_bytes()),
            None => message.as_bytes().to_vec(),
        };
        let (mut invocation, stream) = self.history_invocation(&RECORD, group, config);
        invocation
            .arg(payload)
            .arg(config.size())
            .arg(config.ttl().as_millis().max(1) as u64);
        let mut conn = self.conn(group.as_str());
        let (epoch, offset): (String, u64) = invocation.invoke_async(&mut conn).await.map_err(|e| {
            let error = layer_error(e, &stream);
            self.count_failure(&error);
            error
        })?;
        Ok(StreamPosition::new(offset, parse_epoch(&epoch)?))
    }

    /// A stored payload as the message its members received.
    fn stored(&self, payload: &[u8], position: StreamPosition) -> Result<Message, ChannelLayerError> {
        let plain = match &self.crypto {
            Some(crypto) => crypto
                .decrypt(payload)
                .map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))?,
            None => payload.to_vec(),
        };
        let message =
            Message::from_msgpack(plain.into()).map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))?;
        Ok(message.with_position(position))
    }
}

fn parse_epoch(epoch: &str) -> Result<Epoch, ChannelLayerError> {
    epoch.parse().map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))
}

/// One value of a script's answer, read as `T`.
fn value<T: redis::FromRedisValue>(v: &redis::Value) -> Result<T, ChannelLayerError> {
    redis::from_redis_value_ref(v).map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))
}

impl History for RedisChannelLayer {
    fn is_recorded(&self, group: &GroupName) -> bool {
        self.inner.config.layer.history_for(group).is_some()
    }

    fn history_position<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> LayerFuture<'a, Result<StreamPosition, HistoryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let config = inner.history_config(group)?;
            let (invocation, stream) = inner.history_invocation(&POSITION, group, config);
            let mut conn = inner.conn(group.as_str());
            let (epoch, top): (String, u64) = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| layer_error(e, &stream))?;
            Ok(StreamPosition::new(top, parse_epoch(&epoch)?))
        })
    }

    fn history_since<'a>(
        &'a self,
        group: &'a GroupName,
        since: StreamPosition,
    ) -> LayerFuture<'a, Result<Recovery, HistoryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let config = inner.history_config(group)?;
            let (mut invocation, stream) = inner.history_invocation(&SINCE, group, config);
            invocation
                .arg(since.epoch.as_str())
                .arg(since.offset)
                .arg(config.ttl().as_millis().max(1) as u64);
            let mut conn = inner.conn(group.as_str());
            let answer: Vec<redis::Value> = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| layer_error(e, &stream))?;
            let [epoch, top, status, payloads @ ..] = answer.as_slice() else {
                return Err(
                    ChannelLayerError::Corrupt("a short answer from the history script".into()).into(),
                );
            };
            let position = StreamPosition::new(value(top)?, parse_epoch(&value::<String>(epoch)?)?);
            let reason = match value::<i64>(status)? {
                1 => {
                    let mut messages = Vec::with_capacity(payloads.len());
                    for (i, payload) in payloads.iter().enumerate() {
                        let at = StreamPosition::new(since.offset + 1 + i as u64, position.epoch);
                        messages.push(inner.stored(&value::<Vec<u8>>(payload)?, at)?);
                    }
                    return Ok(Recovery::Recovered(Recovered { messages, position }));
                }
                0 => Unrecoverable::EpochChanged,
                _ => Unrecoverable::TooOld,
            };
            Ok(Recovery::Unrecoverable { reason, position })
        })
    }

    fn history_recent<'a>(
        &'a self,
        group: &'a GroupName,
        limit: usize,
    ) -> LayerFuture<'a, Result<Recovered, HistoryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let config = inner.history_config(group)?;
            let (mut invocation, stream) = inner.history_invocation(&RECENT, group, config);
            invocation
                .arg(limit.min(config.size()))
                .arg(config.ttl().as_millis().max(1) as u64);
            let mut conn = inner.conn(group.as_str());
            let answer: Vec<redis::Value> = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| layer_error(e, &stream))?;
            let [epoch, top, entries @ ..] = answer.as_slice() else {
                return Err(
                    ChannelLayerError::Corrupt("a short answer from the history script".into()).into(),
                );
            };
            let position = StreamPosition::new(value(top)?, parse_epoch(&value::<String>(epoch)?)?);
            let mut messages = Vec::with_capacity(entries.len() / 2);
            for pair in entries.chunks_exact(2).rev() {
                let at = StreamPosition::new(value(&pair[0])?, position.epoch);
                messages.push(inner.stored(&value::<Vec<u8>>(&pair[1])?, at)?);
            }
            Ok(Recovered { messages, position })
        })
    }
}
