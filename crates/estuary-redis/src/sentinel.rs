//! A host reached through Redis Sentinel: its `redis+sentinel://` URL, and
//! the primary it names now.
//!
//! channels_redis accepts a `hosts` entry `{"sentinels": [(host, port), ...],
//! "master_name": ..., "sentinel_kwargs": {...}, ...}`; Estuary writes the
//! same as one URL, so that a ring may mix both kinds of host:
//! `redis+sentinel://[[user]:password@]host:port[,host:port...]/master_name[/db]`
//! `[?sentinel_username=...&sentinel_password=...]`. The credentials before
//! `@` are the primary's (channels_redis's `password` beside `master_name`),
//! the query's are the sentinels' (`sentinel_kwargs`). A sentinel without a
//! port listens on 26379.

use std::time::Duration;

use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

/// The scheme of a host reached through Sentinel.
pub(crate) const SCHEME: &str = "redis+sentinel://";

/// What a `redis+sentinel://` URL says.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    pub(crate) sentinels: Vec<(String, u16)>,
    pub(crate) master_name: String,
    pub(crate) db: i64,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) sentinel_username: Option<String>,
    pub(crate) sentinel_password: Option<String>,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// Why a `redis+sentinel://` URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SentinelUrlError {
    #[error("names no sentinel")]
    NoSentinel,
    #[error("a sentinel's port is not a number")]
    Port,
    #[error("names no master (redis+sentinel://host:port/master_name)")]
    NoMaster,
    #[error("the database is not a number")]
    Db,
    #[error("an unknown query parameter (sentinel_username and sentinel_password are known)")]
    Query,
    #[error("a bad %-escape")]
    Escape,
}

/// `%XX` escapes decoded (so that a password may hold `@`, `,`, `/`).
fn unescape(text: &str) -> Result<String, SentinelUrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or(SentinelUrlError::Escape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| SentinelUrlError::Escape)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| SentinelUrlError::Escape)
}

/// Escapes what would end a part of the URL (`%`, `@`, `:`, `/`, `,`, `?`,
/// `&`, `=`, `#`).
#[cfg_attr(not(feature = "serde"), allow(dead_code))]
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' | '@' | ':' | '/' | ',' | '?' | '&' | '=' | '#' | ' ' => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

impl SentinelUrl {
    /// Reads `url`, which starts with [`SCHEME`].
    pub(crate) fn parse(url: &str) -> Result<Self, SentinelUrlError> {
        let rest = url.strip_prefix(SCHEME).unwrap_or(url);
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, pass)) => (
                    Some(unescape(user)?).filter(|u| !u.is_empty()),
                    Some(unescape(pass)?),
                ),
                None => (Some(unescape(info)?).filter(|u| !u.is_empty()), None),
            },
        };
        let sentinels = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|host| match host.rsplit_once(':') {
                Some((name, port)) => {
                    Ok((name.to_owned(), port.parse().map_err(|_| SentinelUrlError::Port)?))
                }
                None => Ok((host.to_owned(), 26379)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sentinels.is_empty() {
            return Err(SentinelUrlError::NoSentinel);
        }
        let mut parts = path.split('/');
        let master_name = unescape(parts.next().unwrap_or(""))?;
        if master_name.is_empty() {
            return Err(SentinelUrlError::NoMaster);
        }
        let db = match parts.next().filter(|d| !d.is_empty()) {
            Some(db) => db.parse().map_err(|_| SentinelUrlError::Db)?,
            None => 0,
        };
        let mut url = Self {
            sentinels,
            master_name,
            db,
            username,
            password,
            sentinel_username: None,
            sentinel_password: None,
        };
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = Some(unescape(value)?);
            match key {
                "sentinel_username" => url.sentinel_username = value,
                "sentinel_password" => url.sentinel_password = value,
                _ => return Err(SentinelUrlError::Query),
            }
        }
        Ok(url)
    }

    /// The sentinels, as the redis crate asks them.
    pub(crate) fn sentinel(&self) -> redis::RedisResult<Sentinel> {
        let mut auth = RedisConnectionInfo::default();
        if let Some(user) = &self.sentinel_username {
            auth = auth.set_username(user);
        }
        if let Some(password) = &self.sentinel_password {
            auth = auth.set_password(password);
        }
        let nodes = self
            .sentinels
            .iter()
            .map(|(host, port)| {
                ConnectionAddr::Tcp(host.clone(), *port)
                    .into_connection_info()
                    .map(|info| info.set_redis_settings(auth.clone()))
            })
            .collect::<redis::RedisResult<Vec<ConnectionInfo>>>()?;
        Sentinel::build(nodes)
    }

    /// How the primary is reached once found: its database and credentials.
    pub(crate) fn node(&self) -> SentinelNodeConnectionInfo {
        SentinelNodeConnectionInfo::default().set_redis_connection_info(self.primary_settings())
    }

    /// The primary's database and credentials.
    fn primary_settings(&self) -> RedisConnectionInfo {
        let mut redis = RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        redis
    }

    /// A client of the primary at `host:port` (as a `+switch-master`
    /// announcement names it).
    fn primary_at(&self, host: &str, port: u16) -> redis::RedisResult<redis::Client> {
        let info = ConnectionAddr::Tcp(host.to_owned(), port)
            .into_connection_info()?
            .set_redis_settings(self.primary_settings());
        redis::Client::open(crate::tcp::no_delay(info))
    }
}

/// A primary found through Sentinel: the sentinels, and the primary's
/// client once asked (asked again after [`forget`](Self::forget)).
///
/// Besides the failures its connections meet, a task listens to the
/// sentinels' `+switch-master` announcements: a failover moves every
/// connection at once, rather than when each meets the former primary
/// refusing writes (which, after a `SENTINEL FAILOVER`, it does only once
/// the sentinel has made it a replica, seconds later).
pub(crate) struct SentinelTarget {
    url: SentinelUrl,
    sentinel: tokio::sync::Mutex<Sentinel>,
    node: SentinelNodeConnectionInfo,
    current: std::sync::Mutex<Current>,
    timeout: Duration,
    /// Counts the failovers seen (announced, or another address found).
    moved: tokio::sync::watch::Sender<u64>,
    /// Where a connection writes its primary's replication id first (see
    /// `Client::mark_primary`).
    mark: std::sync::OnceLock<String>,
    /// Stops the `+switch-master` listener when the target goes.
    _listener: tokio_util::sync::DropGuard,
}

/// Writes the replication id of the Redis it runs on at KEYS[1].
static MARK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local id = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
if id then redis.call('SET', KEYS[1], id) end
",
    )
});

/// The primary last found.
#[derive(Default)]
struct Current {
    /// Bumped each time the sentinels name another address.
    generation: u64,
    /// The address last named (`Debug` form: the redis crate's type has no
    /// `PartialEq`).
    address: String,
    /// Its client; `None` once forgotten, until asked again.
    client: Option<redis::Client>,
}

impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SentinelTarget {
    /// The target of `url`; asks nothing yet, and starts listening for
    /// failovers (inside a tokio runtime).
    pub(crate) fn new(url: SentinelUrl, timeout: Duration) -> redis::RedisResult<std::sync::Arc<Self>> {
        let token = tokio_util::sync::CancellationToken::new();
        let target = std::sync::Arc::new(Self {
            sentinel: tokio::sync::Mutex::new(url.sentinel()?),
            node: url.node(),
            url,
            current: std::sync::Mutex::default(),
            timeout,
            moved: tokio::sync::watch::Sender::new(0),
            mark: std::sync::OnceLock::new(),
            _listener: token.clone().drop_guard(),
        });
        tokio::spawn(listen(std::sync::Arc::downgrade(&target), token));
        Ok(target)
    }

    /// The sentinels' clients, for the listener.
    fn sentinel_clients(&self) -> Vec<redis::Client> {
        let mut auth = RedisConnectionInfo::default();
        if let Some(user) = &self.url.sentinel_username {
            auth = auth.set_username(user);
        }
        if let Some(password) = &self.url.sentinel_password {
            auth = auth.set_password(password);
        }
        self.url
            .sentinels
            .iter()
            .filter_map(|(host, port)| {
                let info = ConnectionAddr::Tcp(host.clone(), *port)
                    .into_connection_info()
                    .ok()?
                    .set_redis_settings(auth.clone());
                redis::Client::open(info).ok()
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Has each new connection write its primary's replication id at `key`
    /// (the first key given stays).
    pub(crate) fn mark_primary(&self, key: String) {
        let _ = self.mark.set(key);
    }

    /// Writes the primary's replication id where [`mark_primary`](Self::mark_primary)
    /// said, on `connection` (one to the primary); nothing if it said
    /// nowhere. A replica refuses the write (`READONLY`), as a demoted
    /// primary refuses any.
    pub(crate) async fn mark(
        &self,
        connection: &mut redis::aio::ConnectionManager,
    ) -> redis::RedisResult<()> {
        let Some(key) = self.mark.get() else {
            return Ok(());
        };
        MARK.key(key).invoke_async(connection).await
    }

    /// The primary's database.
    pub(crate) fn db(&self) -> i64 {
        self.url.db
    }

    /// The generation of the primary last found.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The primary's client and its generation: the one found last, or
    /// asked of the sentinels (who check that it says it is the primary).
    pub(crate) async fn primary(&self) -> redis::RedisResult<(u64, redis::Client)> {
        {
            let current = self.lock();
            if let Some(client) = &current.client {
                return Ok((current.generation, client.clone()));
            }
        }
        let mut sentinel = self.sentinel.lock().await;
        // Another caller may have asked while this one waited.
        {
            let current = self.lock();
            if let Some(client) = &current.client {
                return Ok((current.generation, client.clone()));
            }
        }
        // What the sentinels answer describes the moment they were asked: a
        // switch announced meanwhile (see `switched`) is newer.
        let asked_in = self.lock().generation;
        let found = tokio::time::timeout(
            self.timeout,
            sentinel.async_master_for(&self.url.master_name, Some(&self.node)),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no sentinel named the primary in time",
            ))
        })??;
        let address = format!("{:?}", found.get_connection_info().addr());
        // As every connection of the layer's: pipelined commands must not
        // wait on Nagle (see `tcp::no_delay`).
        let found = redis::Client::open(crate::tcp::no_delay(found.get_connection_info().clone()))?;
        let mut current = self.lock();
        if current.generation != asked_in {
            if let Some(client) = &current.client {
                return Ok((current.generation, client.clone()));
            }
        }
        if current.address != address {
            current.generation += 1;
            tracing::info!(
                master_name = %self.url.master_name,
                primary = %address,
                generation = current.generation,
                "the sentinels name a new primary"
            );
            current.address = address;
            self.moved.send_modify(|moved| *moved += 1);
        }
        current.client = Some(found.clone());
        Ok((current.generation, found))
    }

    /// Changes at each failover seen from now on (for a connection that
    /// must move, such as a subscriber that meets no error at a failover).
    pub(crate) fn moved(&self) -> tokio::sync::watch::Receiver<u64> {
        self.moved.subscribe()
    }

    /// Forgets the primary of `generation` (it failed, or says it is a
    /// replica): the next [`primary`](Self::primary) asks the sentinels.
    pub(crate) fn forget(&self, generation: u64) {
        let mut current = self.lock();
        if current.generation == generation {
            current.client = None;
        }
    }

    /// Follows a `+switch-master` announcement's payload (`<master name>
    /// <old ip> <old port> <new ip> <new port>`) if it is about this
    /// target's primary: the announced address becomes the primary at once,
    /// a new generation, so that every command from now on goes there and a
    /// blocking pop still waiting on the former primary gives up (see
    /// [`ConnectionManager::query_blocking`](crate::connection::ConnectionManager::query_blocking)).
    /// Between the announcement and the sentinel making it a replica, the
    /// former primary still takes writes, which its demotion then discards;
    /// following the announcement rather than the first refused write keeps
    /// this process's writes out of that window.
    fn switched(&self, announcement: &str) {
        let mut parts = announcement.split(' ');
        if parts.next() != Some(self.url.master_name.as_str()) {
            return;
        }
        let (host, port) = (parts.nth(2), parts.next().and_then(|p| p.parse::<u16>().ok()));
        // Without a usable address, the next command asks the sentinels.
        let client = match (host, port) {
            (Some(host), Some(port)) => self
                .url
                .primary_at(host, port)
                .inspect_err(|error| {
                    tracing::warn!(%error, %announcement, "the announced primary's address is unusable; asking the sentinels instead")
                })
                .ok(),
            _ => {
                tracing::warn!(%announcement, "a +switch-master announcement without the new primary's address; asking the sentinels instead");
                None
            }
        };
        let mut current = self.lock();
        let address = client
            .as_ref()
            .map(|c| format!("{:?}", c.get_connection_info().addr()))
            .unwrap_or_default();
        if client.is_some() && current.client.is_some() && current.address == address {
            // Already found by asking (a command met the former primary
            // refusing it first).
            return;
        }
        current.generation += 1;
        current.address = address;
        current.client = client;
        tracing::warn!(
            master_name = %self.url.master_name,
            %announcement,
            generation = current.generation,
            "the sentinels switched the primary; following it, nothing to do. Writes that were in flight to \
             the former primary may be lost when it is demoted, as with any Redis failover"
        );
        drop(current);
        self.moved.send_modify(|moved| *moved += 1);
    }
}

/// Listens to the sentinels in turn for `+switch-master` of the target's
/// primary, and follows the switch when one comes (see
/// [`SentinelTarget::switched`]); until `token` is cancelled.
async fn listen(target: std::sync::Weak<SentinelTarget>, token: tokio_util::sync::CancellationToken) {
    use futures_util::StreamExt;
    let Some(clients) = target.upgrade().map(|t| t.sentinel_clients()) else {
        return;
    };
    let mut turn = 0usize;
    loop {
        let Some(client) = clients.get(turn % clients.len().max(1)).cloned() else {
            return;
        };
        turn += 1;
        let listened = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                // "<master name> <old ip> <old port> <new ip> <new port>"
                let text: String = message.get_payload().unwrap_or_default();
                let Some(target) = target.upgrade() else {
                    return Ok(());
                };
                target.switched(&text);
            }
            Ok::<(), redis::RedisError>(())
        };
        tokio::select! {
            _ = token.cancelled() => return,
            ended = listened => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "lost a sentinel's announcements; trying the next");
                }
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_read_as_channels_redis_hosts() {
        let url = SentinelUrl::parse(
            "redis+sentinel://:pa%40ss@10.0.0.1:26379,10.0.0.2,s3:26380/mymaster/2?sentinel_password=sp",
        )
        .unwrap();
        assert_eq!(
            url.sentinels,
            [
                ("10.0.0.1".to_owned(), 26379),
                ("10.0.0.2".to_owned(), 26379),
                ("s3".to_owned(), 26380)
            ]
        );
        assert_eq!((url.master_name.as_str(), url.db), ("mymaster", 2));
        assert_eq!(url.password.as_deref(), Some("pa@ss"));
        assert_eq!(url.username, None);
        assert_eq!(url.sentinel_password.as_deref(), Some("sp"));
        assert!(!format!("{url:?}").contains("pa@ss"));
        for (bad, error) in [
            ("redis+sentinel:///m", SentinelUrlError::NoSentinel),
            ("redis+sentinel://h:x/m", SentinelUrlError::Port),
            ("redis+sentinel://h:1", SentinelUrlError::NoMaster),
            ("redis+sentinel://h:1/m/x", SentinelUrlError::Db),
            ("redis+sentinel://h:1/m?socket_timeout=1", SentinelUrlError::Query),
            ("redis+sentinel://:%zz@h:1/m", SentinelUrlError::Escape),
        ] {
            assert_eq!(SentinelUrl::parse(bad), Err(error), "{bad}");
        }
        let password = "a@b:c/d,e%f";
        let url = SentinelUrl::parse(&format!("{SCHEME}:{}@h/m", escape(password))).unwrap();
        assert_eq!(url.password.as_deref(), Some(password));
    }
}
