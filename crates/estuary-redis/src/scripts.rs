//! Lua scripts, run with EVALSHA (loaded on first use). Each keeps one
//! operation atomic in one round trip; the keys, members, scores and TTLs
//! they leave are exactly those channels_redis leaves.

use std::sync::LazyLock;

use redis::Script;

/// `send`: prune expired members, refuse when at capacity, add, refresh TTL.
/// KEYS: queue. ARGV: member, now, prune-up-to, capacity, expiry.
/// Returns 1 when stored, 0 when full.
pub(crate) static SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
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
/// unless at capacity. KEYS: queues (n). ARGV: members (n), capacities (n),
/// now, prune-up-to, expiry. Returns a list of 1 (stored) or 0 (full).
pub(crate) static GROUP_SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = #KEYS
local now, prune, expiry = ARGV[2 * n + 1], ARGV[2 * n + 2], ARGV[2 * n + 3]
local stored = {}
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, prune)
  if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
    redis.call('ZADD', KEYS[i], now, ARGV[i])
    redis.call('EXPIRE', KEYS[i], expiry)
    stored[i] = 1
  else
    stored[i] = 0
  end
end
return stored
",
    )
});

/// The live members of a group: prune memberships past the group expiry,
/// then list. KEYS: group. ARGV: prune-up-to.
pub(crate) static GROUP_MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
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
