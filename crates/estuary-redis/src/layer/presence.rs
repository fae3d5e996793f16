//! Presence over Redis: entries that lapse unless their process renews
//! them, one store per group shared by every process, transitions numbered
//! in Redis, diffs announced by the process that saw them.
//!
//! Each group has two keys on the group's shard (where its membership key
//! is): `{prefix}:presence:{group}:c`, a sorted set of the connections
//! holding a presence, scored with the instant (Redis's clock, ms) they
//! lapse; and `{prefix}:presence:{group}:h`, a hash with the key each
//! connection holds (`c:<channel>`), each key's connection count, metadata
//! and version (`n:`, `m:`, `v:<key>`), the number of keys (`keys`) and
//! the group's last version (`version`, seeded from the clock in
//! microseconds, so versions grow even after the keys expired). Every
//! script first takes out the connections that lapsed and reports the
//! leaves this causes, so whichever process touches the group next (a
//! join, a list, the renewal task every `refresh`) announces them: a
//! process that died loses its presences within `timeout` plus `refresh`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use estuary_core::{
    ChannelLayerError, ChannelName, GroupName, LayerFuture, Presence, PresenceCount, PresenceEntry,
    PresenceError, PresenceJoined, PresenceKey, PresenceList, PresenceMeta, PresenceTransition,
};
use redis::Script;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Inner, RedisChannelLayer};
use crate::faults::layer_error;
use crate::local::lock;

/// Groups renewed per script call.
const REFRESH_BATCH: usize = 250;

/// What every presence script starts with: the clock, version numbers,
/// taking a connection out, and taking out the lapsed ones. A transition is
/// `{key, before, after, version}`, an absent side as `''`.
const COMMON: &str = r"
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
-- Numbers passed to Redis as text in full (Lua would write 1.7e+15).
local function str(x)
  return string.format('%.0f', x)
end
local function bump(h)
  if redis.call('HEXISTS', h, 'version') == 0 then
    redis.call('HSET', h, 'version', str(clock[1] * 1000000 + clock[2]))
  end
  return redis.call('HINCRBY', h, 'version', 1)
end
local function release(c, h, ch, out)
  redis.call('ZREM', c, ch)
  local key = redis.call('HGET', h, 'c:' .. ch)
  if not key then
    return false
  end
  redis.call('HDEL', h, 'c:' .. ch)
  if redis.call('HINCRBY', h, 'n:' .. key, -1) <= 0 then
    local meta = redis.call('HGET', h, 'm:' .. key) or 'null'
    redis.call('HDEL', h, 'n:' .. key, 'm:' .. key, 'v:' .. key)
    redis.call('HINCRBY', h, 'keys', -1)
    out[#out + 1] = {key, meta, '', bump(h)}
  end
  return true
end
local function prune(c, h, out)
  for _, ch in ipairs(redis.call('ZRANGEBYSCORE', c, '-inf', str(now))) do
    release(c, h, ch, out)
  end
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}{body}"))
}

/// Joins. KEYS: c, h. ARGV: channel, key, meta (JSON), timeout (ms), key
/// ttl (ms). Returns `{first, connections, transitions}`.
static JOIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local c, h = KEYS[1], KEYS[2]
local ch, key, meta = ARGV[1], ARGV[2], ARGV[3]
local out = {}
prune(c, h, out)
local old = redis.call('HGET', h, 'c:' .. ch)
local first = 0
if old ~= key then
  if old then
    release(c, h, ch, out)
  end
  redis.call('HSET', h, 'c:' .. ch, key)
  if redis.call('HINCRBY', h, 'n:' .. key, 1) == 1 then
    redis.call('HINCRBY', h, 'keys', 1)
    local v = bump(h)
    redis.call('HSET', h, 'm:' .. key, meta, 'v:' .. key, str(v))
    out[#out + 1] = {key, '', meta, v}
    first = 1
  end
end
redis.call('ZADD', c, str(now + tonumber(ARGV[4])), ch)
if first == 0 then
  local was = redis.call('HGET', h, 'm:' .. key) or 'null'
  if was ~= meta then
    local v = bump(h)
    redis.call('HSET', h, 'm:' .. key, meta, 'v:' .. key, str(v))
    out[#out + 1] = {key, was, meta, v}
  end
end
redis.call('PEXPIRE', c, ARGV[5])
redis.call('PEXPIRE', h, ARGV[5])
return {first, tonumber(redis.call('HGET', h, 'n:' .. key)), out}
",
    )
});

/// Leaves. KEYS: c, h. ARGV: channel. Returns `{held, transitions}`.
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local out = {}
prune(KEYS[1], KEYS[2], out)
local held = release(KEYS[1], KEYS[2], ARGV[1], out)
return {held and 1 or 0, out}
",
    )
});

/// Lists. KEYS: c, h. Returns `{transitions, hash as a flat list}`.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local out = {}
prune(KEYS[1], KEYS[2], out)
return {out, redis.call('HGETALL', KEYS[2])}
",
    )
});

/// Counts. KEYS: c, h. Returns `{transitions, connections, keys}`.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local out = {}
prune(KEYS[1], KEYS[2], out)
return {out, redis.call('ZCARD', KEYS[1]), tonumber(redis.call('HGET', KEYS[2], 'keys') or '0')}
",
    )
});

/// Renews this process's connections and takes out the lapsed ones, for
/// many groups. KEYS: c and h of each group (2n). ARGV: each group's
/// count of this process's connections (n), the connections of each in
/// turn, then timeout (ms) and key ttl (ms). Returns per group
/// `{transitions, missing}`: the 1-based positions of this process's
/// connections the group no longer holds (`{-1}` when a key holds another
/// type: the group is skipped).
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local n = #KEYS / 2
local timeout, ttl = tonumber(ARGV[#ARGV - 1]), ARGV[#ARGV]
local res = {}
local at = n
for i = 1, n do
  local c, h = KEYS[2 * i - 1], KEYS[2 * i]
  local count = tonumber(ARGV[i])
  local tc, th = redis.call('TYPE', c).ok, redis.call('TYPE', h).ok
  local out, missing = {}, {}
  if (tc == 'zset' or tc == 'none') and (th == 'hash' or th == 'none') then
    prune(c, h, out)
    for j = 1, count do
      local ch = ARGV[at + j]
      if redis.call('ZSCORE', c, ch) then
        redis.call('ZADD', c, 'XX', str(now + timeout), ch)
      else
        missing[#missing + 1] = j
      end
    end
    if count > 0 then
      redis.call('PEXPIRE', c, ttl)
      redis.call('PEXPIRE', h, ttl)
    end
  else
    missing = {-1}
  end
  at = at + count
  res[i] = {out, missing}
end
return res
",
    )
});

/// A transition as the scripts return it.
type RawTransition = (String, String, String, u64);

/// This process's presences: which key and metadata each of its channels
/// holds in each group, renewed every `refresh`.
#[derive(Debug, Default)]
pub(super) struct Held {
    by_channel: HashMap<ChannelName, HashMap<GroupName, (PresenceKey, PresenceMeta)>>,
}

impl Held {
    pub(super) fn clear(&mut self) {
        self.by_channel.clear();
    }

    /// Every group with a presence of this process, with its channels.
    fn by_group(&self) -> BTreeMap<GroupName, Vec<ChannelName>> {
        let mut groups: BTreeMap<GroupName, Vec<ChannelName>> = BTreeMap::new();
        for (channel, held) in &self.by_channel {
            for group in held.keys() {
                groups.entry(group.clone()).or_default().push(channel.clone());
            }
        }
        groups
    }
}

fn parse(raw: Vec<RawTransition>) -> Vec<PresenceTransition> {
    raw.into_iter()
        .filter_map(|(key, before, after, version)| {
            let meta = |json: &str| {
                (!json.is_empty()).then(|| {
                    serde_json::from_str(json)
                        .ok()
                        .and_then(|v| PresenceMeta::new(v).ok())
                        .unwrap_or_default()
                })
            };
            Some(PresenceTransition {
                key: PresenceKey::new(&key).ok()?,
                before: meta(&before),
                after: meta(&after),
                version,
            })
        })
        .collect()
}

/// Reads a group's hash (`HGETALL`) into a list.
fn list_from_hash(fields: HashMap<String, Vec<u8>>) -> PresenceList {
    let mut list = PresenceList::default();
    let mut keys: BTreeMap<String, (Option<PresenceMeta>, u32, u64)> = BTreeMap::new();
    for (field, value) in fields {
        let value = String::from_utf8_lossy(&value);
        match field.split_once(':') {
            None if field == "version" => list.version = value.parse().unwrap_or(0),
            Some(("n", key)) => keys.entry(key.to_owned()).or_default().1 = value.parse().unwrap_or(0),
            Some(("v", key)) => keys.entry(key.to_owned()).or_default().2 = value.parse().unwrap_or(0),
            Some(("m", key)) => {
                keys.entry(key.to_owned()).or_default().0 = serde_json::from_str(&value)
                    .ok()
                    .and_then(|v| PresenceMeta::new(v).ok());
            }
            _ => {}
        }
    }
    list.entries = keys
        .into_iter()
        .filter(|(_, (_, connections, _))| *connections > 0)
        .filter_map(|(key, (meta, connections, version))| {
            Some(PresenceEntry {
                key: PresenceKey::new(&key).ok()?,
                meta: meta.unwrap_or_default(),
                connections,
                version,
            })
        })
        .collect();
    list
}

impl Inner {
    fn presence_keys(&self, group: &GroupName) -> (String, String) {
        let base = format!("{}:presence:{}", self.config.prefix, group);
        (format!("{base}:c"), format!("{base}:h"))
    }

    fn presence_timeout_ms(&self) -> u64 {
        self.config.layer.presence().timeout().as_millis() as u64
    }

    /// How long the keys live after a write: past the last entry's lapse.
    fn presence_ttl_ms(&self) -> u64 {
        let presence = self.config.layer.presence();
        (presence.timeout() + presence.refresh() + Duration::from_secs(60)).as_millis() as u64
    }

    /// Hands transitions to the coalescer and arranges the flushes it asks
    /// for.
    pub(super) fn announce(self: &Arc<Self>, group: &GroupName, transitions: Vec<PresenceTransition>) {
        for transition in transitions {
            if let Some(due) = self.diffs.record(group, transition) {
                tokio::spawn(flush(Arc::downgrade(self), group.clone(), due));
            }
        }
    }

    async fn join(
        self: &Arc<Self>,
        group: &GroupName,
        channel: &ChannelName,
        key: &PresenceKey,
        meta: &PresenceMeta,
    ) -> Result<PresenceJoined, PresenceError> {
        let json = serde_json::to_string(meta.as_value()).unwrap_or_else(|_| "null".into());
        let (c, h) = self.presence_keys(group);
        let mut conn = self.conn(group.as_str());
        let (first, connections, raw): (u8, u32, Vec<RawTransition>) = JOIN
            .key(&c)
            .key(&h)
            .arg(channel.as_str())
            .arg(key.as_str())
            .arg(&json)
            .arg(self.presence_timeout_ms())
            .arg(self.presence_ttl_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| layer_error(e, &h))?;
        self.announce(group, parse(raw));
        Ok(PresenceJoined {
            first: first == 1,
            connections,
        })
    }

    async fn leave(
        self: &Arc<Self>,
        group: &GroupName,
        channel: &ChannelName,
    ) -> Result<bool, ChannelLayerError> {
        let (c, h) = self.presence_keys(group);
        let mut conn = self.conn(group.as_str());
        let (held, raw): (u8, Vec<RawTransition>) = LEAVE
            .key(&c)
            .key(&h)
            .arg(channel.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| layer_error(e, &h))?;
        self.announce(group, parse(raw));
        Ok(held == 1)
    }

    /// Leaves every presence `channel` held (it closed).
    pub(super) async fn leave_all(self: &Arc<Self>, channel: &ChannelName) {
        let held = lock(&self.held).by_channel.remove(channel);
        for group in held.into_iter().flat_map(HashMap::into_keys) {
            if let Err(error) = self.leave(&group, channel).await {
                estuary_core::throttled!(
                    warn,
                    %group,
                    %channel,
                    %error,
                    "could not leave a presence at disconnect; it lapses with the presence timeout. Check that Redis is reachable if this repeats"
                );
            }
        }
    }

    /// Renews this process's presences, takes out lapsed ones (any
    /// process's) in the groups it holds presences or members in, announces
    /// their leaves, and joins again what Redis lost.
    pub(super) async fn refresh_presence(self: &Arc<Self>) {
        let mut groups = lock(&self.held).by_group();
        for group in lock(&self.memberships).groups() {
            groups.entry(group).or_default();
        }
        let mut by_shard: BTreeMap<usize, Vec<(GroupName, Vec<ChannelName>)>> = BTreeMap::new();
        for (group, channels) in groups {
            by_shard
                .entry(self.shard(group.as_str()))
                .or_default()
                .push((group, channels));
        }
        for (shard, groups) in by_shard {
            for batch in groups.chunks(REFRESH_BATCH) {
                self.refresh_batch(shard, batch).await;
            }
        }
    }

    async fn refresh_batch(self: &Arc<Self>, shard: usize, batch: &[(GroupName, Vec<ChannelName>)]) {
        let mut invocation = REFRESH.prepare_invoke();
        for (group, _) in batch {
            let (c, h) = self.presence_keys(group);
            invocation.key(c).key(h);
        }
        for (_, channels) in batch {
            invocation.arg(channels.len());
        }
        for (_, channels) in batch {
            for channel in channels {
                invocation.arg(channel.as_str());
            }
        }
        invocation
            .arg(self.presence_timeout_ms())
            .arg(self.presence_ttl_ms());
        let mut conn = self.shards[shard].conn.clone();
        let results: Vec<(Vec<RawTransition>, Vec<i64>)> = match invocation.invoke_async(&mut conn).await {
            Ok(results) => results,
            Err(error) => {
                tracing::debug!(%error, "could not renew presences; retried at the next refresh");
                return;
            }
        };
        for ((group, channels), (raw, missing)) in batch.iter().zip(results) {
            self.announce(group, parse(raw));
            if missing.first() == Some(&-1) {
                estuary_core::throttled!(
                    warn,
                    %group,
                    "a presence key of this group holds another type (written over); its presence is not renewed. Something else writes to this Redis under the layer's prefix: find it, then delete the key"
                );
                continue;
            }
            for j in missing {
                let Some(channel) = usize::try_from(j - 1).ok().and_then(|i| channels.get(i)) else {
                    continue;
                };
                // Lapsed (a stall longer than the timeout) or lost in
                // Redis: held here still, so joined again.
                let held = lock(&self.held)
                    .by_channel
                    .get(channel)
                    .and_then(|g| g.get(group))
                    .cloned();
                if let Some((key, meta)) = held {
                    tracing::debug!(%group, %channel, "a presence of this process lapsed in Redis; joining again");
                    let _ = self.join(group, channel, &key, &meta).await;
                }
            }
        }
    }
}

/// Sends a group's diff when it is due.
async fn flush(inner: Weak<Inner>, group: GroupName, due: Instant) {
    tokio::time::sleep_until(due).await;
    let Some(inner) = inner.upgrade() else { return };
    let Some(diff) = inner.diffs.take(&group) else {
        return;
    };
    let sent = match diff.to_message() {
        Ok(message) => inner
            .group_send(&group, message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = sent {
        estuary_core::throttled!(warn, %group, %error, "a presence diff could not be sent to its group; members see the change with the next diff. Check that Redis is reachable");
    }
}

/// Renews this process's presences every `refresh`, until the layer goes.
pub(super) async fn presence_loop(inner: Weak<Inner>, token: CancellationToken) {
    let period = match inner.upgrade() {
        Some(i) => i.config.layer.presence().refresh(),
        None => return,
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let Some(layer) = inner.upgrade() else { return };
        if layer.is_healthy() {
            layer.refresh_presence().await;
        }
    }
}

impl Presence for RedisChannelLayer {
    fn presence_join<'a>(
        &'a self,
        group: &'a GroupName,
        channel: &'a ChannelName,
        key: &'a PresenceKey,
        meta: &'a PresenceMeta,
    ) -> LayerFuture<'a, Result<PresenceJoined, PresenceError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if !inner.is_mine(channel) || !lock(&inner.local).contains_key(channel) {
                return Err(PresenceError::NotLocal(channel.clone()));
            }
            let joined = inner.join(group, channel, key, meta).await?;
            lock(&inner.held)
                .by_channel
                .entry(channel.clone())
                .or_default()
                .insert(group.clone(), (key.clone(), meta.clone()));
            if !lock(&inner.local).contains_key(channel) {
                // Closed while joining: `close_channel` may have missed it.
                inner.leave_all(channel).await;
                return Err(PresenceError::NotLocal(channel.clone()));
            }
            Ok(joined)
        })
    }

    fn presence_leave<'a>(
        &'a self,
        group: &'a GroupName,
        channel: &'a ChannelName,
    ) -> LayerFuture<'a, Result<bool, PresenceError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if let Some(held) = lock(&inner.held).by_channel.get_mut(channel) {
                held.remove(group);
            }
            Ok(inner.leave(group, channel).await?)
        })
    }

    fn presence_list<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> LayerFuture<'a, Result<PresenceList, PresenceError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let (c, h) = inner.presence_keys(group);
            let mut conn = inner.conn(group.as_str());
            let (raw, fields): (Vec<RawTransition>, HashMap<String, Vec<u8>>) = LIST
                .key(&c)
                .key(&h)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| layer_error(e, &h))?;
            inner.announce(group, parse(raw));
            Ok(list_from_hash(fields))
        })
    }

    fn presence_count<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> LayerFuture<'a, Result<PresenceCount, PresenceError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let (c, h) = inner.presence_keys(group);
            let mut conn = inner.conn(group.as_str());
            let (raw, connections, keys): (Vec<RawTransition>, usize, i64) = COUNT
                .key(&c)
                .key(&h)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| layer_error(e, &h))?;
            inner.announce(group, parse(raw));
            Ok(PresenceCount {
                keys: keys.max(0) as usize,
                connections,
            })
        })
    }
}
