//! Lua scripts, run with EVALSHA (loaded on first use). Each keeps one
//! operation atomic in one round trip; the keys, members, scores and TTLs
//! they leave are exactly those channels_redis leaves, plus one: a process
//! queue that refused another Estuary process's group message for want of
//! room gets a counter beside it (`<queue key>:refused`, expiring with the
//! queue), which that process's receive task reads and deletes.
//!
//! A key that holds another type than a sorted set (someone wrote over it)
//! would abort a whole script with `WRONGTYPE`, and with it every other
//! key the script serves: each script checks `TYPE` first and reports such a
//! key instead of touching it.

use std::sync::LazyLock;

use redis::Script;

/// `send`: prune expired members, refuse when at capacity, add, refresh TTL.
/// KEYS: queue. ARGV: member, now, prune-up-to, capacity, expiry.
/// Returns 1 when stored, 0 when full, -1 when the key holds another type.
pub(crate) static SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'zset' and t ~= 'none' then
  return -1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[3])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
",
    )
});

/// `group_send` to the queues of one shard: for each key, prune, then add
/// unless at capacity. KEYS: queues (n), then each queue's refusal counter
/// (n). ARGV: members (n), capacities (n), whether to count a refusal (n:
/// `1` for another Estuary process's queue, whose receive task reads the
/// counter and tells its channels; the sender tells its own), now,
/// prune-up-to, expiry. Returns a list of 1 (stored), 0 (full) or -1 (the
/// key holds another type: skipped, the other keys are still served).
pub(crate) static GROUP_SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = #KEYS / 2
local now, prune, expiry = ARGV[3 * n + 1], ARGV[3 * n + 2], ARGV[3 * n + 3]
local stored = {}
for i = 1, n do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'zset' and t ~= 'none' then
    stored[i] = -1
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, prune)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
      redis.call('ZADD', KEYS[i], now, ARGV[i])
      redis.call('EXPIRE', KEYS[i], expiry)
      stored[i] = 1
    else
      stored[i] = 0
      if ARGV[2 * n + i] == '1' then
        redis.call('INCR', KEYS[n + i])
        redis.call('EXPIRE', KEYS[n + i], expiry)
      end
    end
  end
end
return stored
",
    )
});

/// The live members of a group: prune memberships past the group expiry,
/// and those scored where no clock is (below 0, or after the latest score
/// a process could have written: channels_redis scores a membership with
/// the time of its `group_add`, so such a member would never expire), then
/// list. KEYS: group. ARGV: prune-up-to, latest plausible score. Returns
/// `{removed for their score, members}`. A group key of another type is a
/// `WRONGTYPE` error naming no member.
pub(crate) static GROUP_MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'zset' and t ~= 'none' then
  return redis.error_reply('WRONGTYPE group key holds a ' .. t)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local absurd = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(0')
  + redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')
return {absurd, redis.call('ZRANGE', KEYS[1], 0, -1)}
",
    )
});

/// Whether this process's memberships are still in their groups: for each
/// group key, whether one member this process wrote there is still in it.
/// KEYS: groups (n). ARGV: one member of ours for each. Returns a list of
/// 1 (there), 0 (gone: the key was evicted, deleted or Redis restarted
/// empty) or -1 (the key holds another type).
pub(crate) static MEMBERSHIPS_PRESENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local present = {}
for i = 1, #KEYS do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t == 'zset' then
    present[i] = redis.call('ZSCORE', KEYS[i], ARGV[i]) and 1 or 0
  elseif t == 'none' then
    present[i] = 0
  else
    present[i] = -1
  end
end
return present
",
    )
});

/// Which of this process's members some group keys lost. KEYS: groups
/// (n). ARGV: each group's member count (n), then the members of each in
/// turn. Returns, per group, `{state, j...}`: state 1 when the key is a
/// sorted set, 0 when it is absent, -1 when it is another type; then the
/// 1-based positions, among that group's members, of those it lacks.
pub(crate) static MEMBERS_MISSING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = #KEYS
local out = {}
local at = n
for i = 1, n do
  local count = tonumber(ARGV[i])
  local t = redis.call('TYPE', KEYS[i]).ok
  local r
  if t == 'none' then
    r = {0}
  elseif t ~= 'zset' then
    r = {-1}
  else
    r = {1}
    for j = 1, count do
      if not redis.call('ZSCORE', KEYS[i], ARGV[at + j]) then
        r[#r + 1] = j
      end
    end
  end
  out[i] = r
  at = at + count
end
return out
",
    )
});

/// This process's own queue holds another type: nobody else writes there
/// (its name carries this process's random id), so it is taken back.
/// KEYS: queue. Returns 1 when it was deleted, 0 when it was a sorted set
/// (or absent) after all.
pub(crate) static RECLAIM_QUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'zset' and t ~= 'none' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
",
    )
});

/// `flush`: delete every key matching the pattern, in batches.
/// ARGV: pattern.
pub(crate) static FLUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 5000 do
  redis.call('DEL', unpack(keys, i, math.min(i + 4999, #keys)))
end
return #keys
",
    )
});
