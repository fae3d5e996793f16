//! `group_send` in one round trip: one script reads the group's members,
//! records the message when the group is recorded, and stores one payload
//! per destination queue. Another process's queue (Django's or Estuary's)
//! gets the channels_redis form, byte for byte what the general path
//! (`group_send.rs`) writes: Redis builds its `__asgi_channel__` array from
//! the members it holds. This process's own queue, which only this process
//! reads, gets the group's name instead of its members' names
//! (`__estuary_group__`), and the receive task hands the message to this
//! process's members of the group by its own record: a group of a hundred
//! local members costs Redis a count, not a hundred names built, stored,
//! popped and parsed.
//!
//! It applies when the layer has one Redis host (every key on one shard),
//! no encryption (Redis cannot encrypt) and no per-channel capacities
//! (Redis cannot match the patterns). Whatever the script cannot decide
//! alone goes back to the general path, before anything was written: a
//! group member no process could have written (it is removed there,
//! exactly), a message that already carries `__asgi_channel__` or a
//! position. After the script, the process compares what Redis listed of
//! its own members with its own record: a group key gone altogether while
//! this process has members in it is repaired by the general path (which
//! writes the memberships back and still delivers this message to them);
//! fewer of its own members than it holds is checked there too.

use std::sync::LazyLock;

use estuary_core::{
    ChannelLayerError, Epoch, GroupName, GroupSendReport, HistoryConfig, Message, OVERFLOW_FACTOR,
    POSITION_KEY, RESERVED_KEY, StreamPosition,
};
use rand::RngCore;
use redis::{Script, Value};

use super::Inner;
use crate::codec::{GROUP_KEY, RANDOM_PREFIX_LEN};
use crate::faults::layer_error;
use crate::local::lock;

/// The one-trip group send. KEYS: the group; then, for a recorded group,
/// its stream and meta hash. ARGV: 1 group prune-up-to, 2 latest plausible
/// membership score, 3 the layer's key prefix, 4 the payload's head (random
/// prefix, map header, the message's entries), 5 now (the score), 6 queue
/// prune-up-to, 7 expiry, 8 this process's prefix (`specific.<id>!`), 9
/// capacity, 10 this process's own queue's limit, 11 the group's name, 12
/// how many members of the group this process holds by its own record; for
/// a recorded group, 13 a new epoch, 14 meta ttl (ms), 15 the message as
/// recorded, 16 size, 17 ttl (ms).
///
/// Another process's queue gets the channels_redis form (its members in
/// `__asgi_channel__`); this process's own queue gets the group's name
/// instead ([`GROUP_KEY`]) when Redis lists as many of this process's
/// members as its own record holds, and this process hands the message to
/// its own members of the group by that record, so that neither Redis nor
/// this process handles each member's name. When the counts differ
/// (another process removed one of them, or added one of this process's
/// channels), the own queue gets the names too.
///
/// Returns `{0, absurd}` when a member is not a channel name (nothing else
/// done), or `{1, absurd, own, epoch, offset, then per queue: name, members,
/// stored}`: `own` the members listed under this process's prefix, stored
/// 1 (stored), 0 (full) or -1 (the key holds another type). `absurd`: the
/// memberships removed for a score no clock could have given.
static FANOUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local g = KEYS[1]
local t = redis.call('TYPE', g).ok
if t ~= 'zset' and t ~= 'none' then
  return redis.error_reply('WRONGTYPE group key holds a ' .. t)
end
redis.call('ZREMRANGEBYSCORE', g, 0, ARGV[1])
local absurd = redis.call('ZREMRANGEBYSCORE', g, '-inf', '(0')
  + redis.call('ZREMRANGEBYSCORE', g, '(' .. ARGV[2], '+inf')
local members = redis.call('ZRANGE', g, 0, -1)
local ownq = ARGV[8]
local ownlist = {}
local order, by = {}, {}
for i = 1, #members do
  local m = members[i]
  if string.find(m, ownq, 1, true) == 1 then
    -- This process's own: unless its record differs, it delivers to them
    -- by that record.
    ownlist[#ownlist + 1] = m
  else
    if #m > 99 or not string.find(m, '^[%w%-_%.]+!?[%w%-_%.]*$') then
      return {0, absurd}
    end
    local bang = string.find(m, '!', 1, true)
    local q = bang and string.sub(m, 1, bang) or m
    local list = by[q]
    if not list then
      list = {}
      by[q] = list
      order[#order + 1] = q
    end
    list[#list + 1] = m
  end
end
local function be(n, bytes)
  local out = {}
  for i = bytes, 1, -1 do
    out[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(out)
end
local function uint(n)
  if n < 128 then return string.char(n) end
  if n < 256 then return '\204' .. string.char(n) end
  if n < 65536 then return '\205' .. be(n, 2) end
  if n < 4294967296 then return '\206' .. be(n, 4) end
  return '\207' .. be(n, 8)
end
local function str(s)
  local n = #s
  if n < 32 then return string.char(160 + n) .. s end
  if n < 256 then return '\217' .. string.char(n) .. s end
  return '\218' .. be(n, 2) .. s
end
local head = ARGV[4]
local ownhead = head
local epoch, top = '', 0
if #KEYS == 3 then
  local clock = redis.call('TIME')
  local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
  local s, m = KEYS[2], KEYS[3]
  local ts, tm = redis.call('TYPE', s).ok, redis.call('TYPE', m).ok
  if (ts ~= 'stream' and ts ~= 'none') or (tm ~= 'hash' and tm ~= 'none') then
    return redis.error_reply('WRONGTYPE history key holds another type')
  end
  epoch = redis.call('HGET', m, 'epoch')
  if not epoch then
    epoch = ARGV[13]
    redis.call('DEL', s)
    redis.call('HSET', m, 'epoch', epoch, 'top', '0')
  end
  top = redis.call('HINCRBY', m, 'top', 1)
  redis.call('XADD', s, 'MAXLEN', ARGV[16], string.format('%.0f', top) .. '-0', 'd', ARGV[15], 't', string.format('%.0f', now))
  redis.call('PEXPIRE', s, ARGV[17])
  redis.call('PEXPIRE', m, ARGV[14])
  local position = '\172__position__\130\166offset' .. uint(top) .. '\165epoch' .. str(epoch)
  head = head .. position
  ownhead = ownhead .. position
end
head = head .. '\176__asgi_channel__'
local own = #ownlist
local out = {1, absurd, own, epoch, top}
-- As many as this process holds (ARGV[12]): the group's name will do.
-- Otherwise (one of them removed by another process, or one of this
-- process's channels added by another), the names, as for any queue.
local dense = own > 0 and own == tonumber(ARGV[12])
if own > 0 and not dense then
  by[ownq] = ownlist
  table.insert(order, 1, ownq)
end
local function room(key, limit)
  local kt = redis.call('TYPE', key).ok
  if kt ~= 'zset' and kt ~= 'none' then
    return -1
  end
  redis.call('ZREMRANGEBYSCORE', key, 0, ARGV[6])
  if redis.call('ZCARD', key) < tonumber(limit) then
    return 1
  end
  return 0
end
if dense then
  local key = ARGV[3] .. ownq
  local stored = room(key, ARGV[10])
  if stored == 1 then
    redis.call('ZADD', key, ARGV[5], ownhead .. '\177__estuary_group__' .. str(ARGV[11]))
    redis.call('EXPIRE', key, ARGV[7])
  end
  out[#out + 1] = ownq
  out[#out + 1] = own
  out[#out + 1] = stored
end
for _, q in ipairs(order) do
  local names = by[q]
  local key = ARGV[3] .. q
  local stored = room(key, q == ownq and ARGV[10] or ARGV[9])
  if stored == 1 then
    local n = #names
    local parts = {head}
    if n < 16 then
      parts[2] = string.char(144 + n)
    elseif n < 65536 then
      parts[2] = '\220' .. be(n, 2)
    else
      parts[2] = '\221' .. be(n, 4)
    end
    for j = 1, n do
      parts[#parts + 1] = str(names[j])
    end
    redis.call('ZADD', key, ARGV[5], table.concat(parts))
    redis.call('EXPIRE', key, ARGV[7])
  elseif stored == 0 and q ~= ownq and string.sub(q, -1) == '!' then
    redis.call('INCR', key .. ':refused')
    redis.call('EXPIRE', key .. ':refused', ARGV[7])
  end
  out[#out + 1] = q
  out[#out + 1] = #names
  out[#out + 1] = stored
end
return out
",
    )
});

/// What the one-trip send did, or why it handed over to the general path.
pub(super) enum Fanout {
    /// Sent (and recorded); the report is final.
    Done(GroupSendReport),
    /// Nothing was written: the general path takes the send whole
    /// (recording included).
    Declined,
    /// Recorded at this position but not sent: the group key is gone while
    /// this process has members in it; the general path sends the message
    /// with this position (and writes the memberships back).
    KeyGone(StreamPosition),
}

impl Inner {
    /// Whether every group send can take the one-trip path (one host, no
    /// encryption, one capacity for every channel).
    pub(super) fn one_trip(&self) -> bool {
        self.shards.len() == 1 && self.crypto.is_none() && !self.config.layer.has_channel_capacities()
    }

    /// The one-trip group send (see the module's documentation).
    pub(super) async fn fanout(
        &self,
        group: &GroupName,
        message: &Message,
        history: Option<&HistoryConfig>,
    ) -> Result<Fanout, ChannelLayerError> {
        let Some(head) = payload_head(message, history.is_some()) else {
            return Ok(Fanout::Declined);
        };
        let now = self.score();
        let group_expiry = self.config.layer.group_expiry().as_secs();
        let expiry = self.expiry_secs();
        let capacity = self.config.layer.capacity_for(self.client_prefix.as_str());
        // Before the members are read: whoever is in it now was written.
        let local = lock(&self.memberships).count(group);
        let group_key = self.group_key(group);
        let mut invocation = FANOUT.prepare_invoke();
        invocation.key(&group_key);
        let history_key = history.map(|config| {
            let (stream, meta) = self.history_keys(group);
            invocation.key(&stream).key(&meta);
            (config, stream)
        });
        invocation
            .arg(now.floor() as i64 - group_expiry as i64)
            .arg((now + (group_expiry as f64).max(super::group_send::CLOCK_SLACK)).floor() as i64)
            .arg(&self.config.prefix)
            .arg(head)
            .arg(now.to_string())
            .arg(now.floor() as i64 - expiry as i64)
            .arg(expiry)
            .arg(&self.client_prefix)
            .arg(capacity)
            .arg(capacity.saturating_mul(OVERFLOW_FACTOR))
            .arg(group.as_str())
            .arg(local.map_or(0, |(_, held)| held));
        if let Some((config, _)) = history_key {
            invocation
                .arg(Epoch::random().as_str())
                .arg(config.meta_ttl().as_millis() as u64)
                .arg(message.as_bytes().as_ref())
                .arg(config.size())
                .arg(config.ttl().as_millis().max(1) as u64);
        }
        let mut conn = self.shards[0].conn.clone();
        let answer: Vec<Value> = invocation.invoke_async(&mut conn).await.map_err(|e| {
            let key = match &history_key {
                Some((_, stream)) if e.to_string().contains("history key") => stream.as_str(),
                _ => group_key.as_str(),
            };
            let error = layer_error(e, key);
            self.count_failure(&error);
            error
        })?;
        let answer = Answer::read(&answer).ok_or_else(|| ChannelLayerError::Corrupt(Box::new(Unexpected)))?;
        if answer.absurd > 0 {
            self.warn_absurd_scores(group, answer.absurd);
        }
        if !answer.done {
            return Ok(Fanout::Declined);
        }
        let position = match history {
            Some(_) => Some(StreamPosition::new(
                answer.offset,
                answer
                    .epoch
                    .parse()
                    .map_err(|e| ChannelLayerError::Corrupt(Box::new(e)))?,
            )),
            None => None,
        };
        if let Some((version, held)) = local {
            if answer.queues.is_empty() {
                // The key is gone with this process's members in it.
                return Ok(match position {
                    Some(at) => Fanout::KeyGone(at),
                    None => Fanout::Declined,
                });
            }
            if answer.own < held && lock(&self.memberships).count(group) == Some((version, held)) {
                // Some of this process's members are not listed: which,
                // and why, the general path's check finds out.
                self.check_own_members(group, now).await;
            }
        }
        let mut report = GroupSendReport {
            position,
            ..GroupSendReport::default()
        };
        for (name, members, stored) in &answer.queues {
            let members = *members;
            match stored {
                1 => report.delivered += members,
                -1 => {
                    report.dropped += members;
                    self.warn_poisoned(&self.channel_key(name), members);
                }
                _ => report.dropped += members,
            }
            if *stored != 1 && *name == self.client_prefix {
                // This process's own members missed it: they are told.
                let (_, own) = lock(&self.memberships).members_at(group);
                let told = self.tell_lost(&own);
                tracing::debug!(%group, told, stored, "own members missed a group message");
                if *stored == -1 {
                    self.reclaim_own_queue().await;
                }
            }
        }
        if report.dropped > 0 {
            estuary_core::throttled!(
                info,
                %group,
                dropped = report.dropped,
                "group_send skipped members (their queues were full or unusable)"
            );
        }
        Ok(Fanout::Done(report))
    }
}

/// The script's answer, read.
struct Answer {
    done: bool,
    absurd: u64,
    own: usize,
    epoch: String,
    offset: u64,
    queues: Vec<(String, usize, i64)>,
}

impl Answer {
    fn read(values: &[Value]) -> Option<Self> {
        let int = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let done = int(values.first()?)? == 1;
        let absurd = u64::try_from(int(values.get(1)?)?).ok()?;
        if !done {
            return Some(Self {
                done,
                absurd,
                own: 0,
                epoch: String::new(),
                offset: 0,
                queues: Vec::new(),
            });
        }
        let own = usize::try_from(int(values.get(2)?)?).ok()?;
        let epoch = text(values.get(3)?)?;
        let offset = u64::try_from(int(values.get(4)?)?).ok()?;
        let rest = values.get(5..)?;
        if rest.len() % 3 != 0 {
            return None;
        }
        let queues = rest
            .chunks(3)
            .map(|q| Some((text(&q[0])?, usize::try_from(int(&q[1])?).ok()?, int(&q[2])?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            done,
            absurd,
            own,
            epoch,
            offset,
            queues,
        })
    }
}

/// The one-trip script answered in a shape it never gives.
#[derive(Debug, thiserror::Error)]
#[error("unexpected answer from the group send script")]
struct Unexpected;

/// The stored payload up to the `__asgi_channel__` entry (and the position,
/// when `recorded`): the random prefix, the map's header counting the
/// entries the script appends, and the message's own entries. `None` when
/// the message already has one of those keys at its top level (the general
/// path handles it).
fn payload_head(message: &Message, recorded: bool) -> Option<Vec<u8>> {
    let bytes = message.as_bytes();
    let mut rd: &[u8] = bytes;
    let len = rmp::decode::read_map_len(&mut rd).ok()?;
    let entries = bytes.len() - rd.len();
    for _ in 0..len {
        let key_len = rmp::decode::read_str_len(&mut rd).ok()? as usize;
        let key = rd.get(..key_len)?;
        if [RESERVED_KEY, POSITION_KEY, GROUP_KEY]
            .iter()
            .any(|k| key == k.as_bytes())
        {
            return None;
        }
        rd = &rd[key_len..];
        rmpv::decode::read_value_ref(&mut rd).ok()?;
    }
    let mut head = vec![0u8; RANDOM_PREFIX_LEN];
    rand::rng().fill_bytes(&mut head);
    let added = 1 + u32::from(recorded);
    let _ = rmp::encode::write_map_len(&mut head, len + added);
    head.extend_from_slice(&bytes[entries..]);
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_counts_the_entries_the_script_appends() {
        let msg = Message::from_json(&serde_json::json!({"type": "a.b", "x": 1})).unwrap();
        let head = payload_head(&msg, false).unwrap();
        assert_eq!(head[RANDOM_PREFIX_LEN], 0x83);
        assert_eq!(&head[RANDOM_PREFIX_LEN + 1..], &msg.as_bytes()[1..]);
        assert_eq!(payload_head(&msg, true).unwrap()[RANDOM_PREFIX_LEN], 0x84);
        let placed = msg.with_position(StreamPosition::new(1, Epoch::random()));
        assert!(
            payload_head(&placed, false).is_none(),
            "a position is the general path's"
        );
    }
}
