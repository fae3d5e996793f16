//! The layers' Redis client and command connection, for a host named by
//! its URL or found through Sentinel.
//!
//! [`Client`] and [`ConnectionManager`] stand in for the redis crate's
//! types of the same names (a layer builds and uses them the same way). For
//! a `redis://` host they are those types. For a `redis+sentinel://` host
//! the connection asks the sentinels for the primary, and follows a
//! failover: a command that fails as a lost primary does (the connection
//! dropped or refused, a timeout, `READONLY` from a primary turned replica,
//! `UNBLOCKED` from one that was demoted under a blocking pop) makes every
//! connection to that host ask the sentinels again before its next
//! command. The failed command still fails: the layer counts and reports
//! it as it does any unavailability of Redis (see `RedisChannelLayer`'s
//! "Faults, and what they cost"), and writes its memberships again once the
//! new primary answers.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManagerConfig, PubSub};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::sentinel::{SCHEME, SentinelTarget, SentinelUrl};

/// How a host is reached.
#[derive(Clone)]
pub(crate) enum Client {
    /// At its URL.
    Direct(redis::Client),
    /// Wherever its sentinels say its primary is.
    Sentinel(Arc<SentinelTarget>),
}

/// Why a host's URL cannot make a client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("not a redis+sentinel:// URL: {0}")]
    Sentinel(#[from] crate::sentinel::SentinelUrlError),
}

impl Client {
    /// The client of `url`: a Sentinel one for `redis+sentinel://`, which
    /// waits at most `timeout` for the sentinels to name the primary.
    pub(crate) fn open(url: &str, timeout: Duration) -> Result<Self, OpenError> {
        if url.starts_with(SCHEME) {
            let target = SentinelTarget::new(SentinelUrl::parse(url)?, timeout)?;
            return Ok(Self::Sentinel(target));
        }
        Ok(Self::Direct(redis::Client::open(crate::tcp::no_delay(
            url.into_connection_info()?,
        ))?))
    }

    /// A pub/sub connection to the host (through Sentinel: to the primary
    /// the sentinels name now, asked afresh each time, since a connection
    /// to a former primary would still subscribe, and miss what is
    /// published on the new one).
    pub(crate) async fn get_async_pubsub(&self) -> RedisResult<PubSub> {
        match self {
            Self::Direct(client) => client.get_async_pubsub().await,
            Self::Sentinel(target) => {
                target.forget(target.generation());
                let (generation, client) = target.primary().await?;
                let connected = client.get_async_pubsub().await;
                if connected.is_err() {
                    target.forget(generation);
                }
                connected
            }
        }
    }
}

impl Client {
    /// Through Sentinel, has every connection to a primary write that
    /// primary's replication id (a promoted replica takes a new one) at
    /// `key` before its first command. History scripts compare it with the
    /// one a group's epoch began under, and start a new epoch when they
    /// differ: what the former primary recorded after the promotion is lost
    /// with its demotion, so its offsets would otherwise be given again to
    /// other messages, and a client recovering from one of them would miss
    /// those silently. Nothing for a host at a fixed address.
    pub(crate) fn mark_primary(&self, key: String) {
        if let Self::Sentinel(target) = self {
            target.mark_primary(key);
        }
    }

    /// For a Sentinel host, what changes when the primary moves; `None`
    /// for a host at a fixed address.
    pub(crate) fn moved(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            Self::Direct(_) => None,
            Self::Sentinel(target) => Some(target.moved()),
        }
    }
}

/// Resolves when `moved` changes; never for a host at a fixed address.
pub(crate) async fn primary_moved(moved: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(moved) = moved {
        if moved.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

impl ConnectionManager {
    /// True when a command is handed to the connection on the first poll of
    /// its future, so that commands started one after the other are written
    /// in that order (the redis crate's multiplexed connection queues them
    /// in a FIFO channel). Through Sentinel the primary may have to be
    /// asked first, and two commands could overtake each other then.
    pub(crate) fn keeps_order(&self) -> bool {
        matches!(self, Self::Direct(_))
    }
}

/// A self-healing command connection to a host (see the module's doc).
#[derive(Clone)]
pub(crate) enum ConnectionManager {
    /// The redis crate's, to a fixed address.
    Direct(redis::aio::ConnectionManager),
    /// One that follows the primary its sentinels name.
    Sentinel(Arc<Following>),
}

/// A connection manager to the primary of one generation, made again when
/// the sentinels name another.
pub(crate) struct Following {
    target: Arc<SentinelTarget>,
    config: ConnectionManagerConfig,
    current: Mutex<Option<(u64, redis::aio::ConnectionManager)>>,
}

impl ConnectionManager {
    /// A connection to `client`'s host, made on first use.
    pub(crate) fn new_lazy_with_config(client: Client, config: ConnectionManagerConfig) -> RedisResult<Self> {
        Ok(match client {
            Client::Direct(client) => Self::Direct(redis::aio::ConnectionManager::new_lazy_with_config(
                client, config,
            )?),
            Client::Sentinel(target) => Self::Sentinel(Arc::new(Following {
                target,
                config,
                current: Mutex::new(None),
            })),
        })
    }
}

/// What a blocking command gave (see [`ConnectionManager::query_blocking`]).
pub(crate) enum Blocking<T> {
    /// Its answer.
    Answered(T),
    /// The primary it waited on was switched for another. The command is
    /// still waiting there (`pending`: dropping it would leave Redis to
    /// hand its next message to a reply nobody reads); `former` is the
    /// connection it waits on, for what else was written to the former
    /// primary before every writer moved.
    Moved {
        pending: futures_util::future::BoxFuture<'static, RedisResult<T>>,
        former: redis::aio::ConnectionManager,
    },
}

impl ConnectionManager {
    /// Runs a blocking command (a pop that waits for a message), as
    /// `cmd.query_async` does, except that through Sentinel it stops
    /// waiting for it when the primary it was sent to is switched for
    /// another, and hands it over ([`Blocking::Moved`]): a pop left waiting
    /// on a former primary (which, after a planned failover, still answers
    /// until it is demoted) would hold the layer's receive loop there while
    /// messages pile up on the new one.
    pub(crate) async fn query_blocking<T: redis::FromRedisValue + Send + 'static>(
        &mut self,
        cmd: &Cmd,
    ) -> RedisResult<Blocking<T>> {
        let following = match self {
            Self::Direct(manager) => return cmd.query_async(manager).await.map(Blocking::Answered),
            Self::Sentinel(following) => following.clone(),
        };
        // Subscribed before the primary is read: a switch in between is seen.
        let mut moved = following.target.moved();
        let (generation, manager) = following.manager().await?;
        let former = manager.clone();
        let cmd = cmd.clone();
        let mut query: futures_util::future::BoxFuture<'static, RedisResult<T>> = Box::pin(async move {
            let mut manager = manager;
            cmd.query_async::<T>(&mut manager).await
        });
        loop {
            tokio::select! {
                answered = &mut query => return following.check(generation, answered).map(Blocking::Answered),
                changed = moved.changed() => {
                    if changed.is_err() {
                        // The target is gone: nothing will switch any more.
                        return following.check(generation, query.await).map(Blocking::Answered);
                    }
                    if following.target.generation() != generation {
                        return Ok(Blocking::Moved { pending: query, former });
                    }
                }
            }
        }
    }
}

/// Whether `error` is what a client of a primary that is gone, or no
/// longer the primary, meets.
fn primary_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(error.code(), Some("READONLY" | "UNBLOCKED" | "MASTERDOWN" | "LOADING"))
        // A script's write refused by a replica comes wrapped.
        || error.to_string().contains("READONLY")
}

impl Following {
    /// The connection to the current primary, and its generation. A new
    /// one marks its primary first (see [`Client::mark_primary`]).
    async fn manager(&self) -> RedisResult<(u64, redis::aio::ConnectionManager)> {
        let (generation, client) = self.target.primary().await?;
        if let Some(made) = self.made_for(generation) {
            return Ok((generation, made));
        }
        let mut manager = redis::aio::ConnectionManager::new_lazy_with_config(client, self.config.clone())?;
        let marked = self.target.mark(&mut manager).await;
        self.check(generation, marked)?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            // Another caller made one meanwhile, or a newer one.
            Some((made_for, made)) if *made_for >= generation => Ok((*made_for, made.clone())),
            _ => {
                *current = Some((generation, manager.clone()));
                Ok((generation, manager))
            }
        }
    }

    /// The connection already made for `generation`.
    fn made_for(&self, generation: u64) -> Option<redis::aio::ConnectionManager> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|(made_for, _)| *made_for == generation)
            .map(|(_, manager)| manager.clone())
    }

    /// `result`, after forgetting the primary when it says the primary is lost.
    fn check<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(error) = &result {
            if primary_lost(error) {
                self.target.forget(generation);
            }
        }
        result
    }
}

impl ConnectionLike for ConnectionManager {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Direct(manager) => manager.req_packed_command(cmd),
            Self::Sentinel(following) => Box::pin(async move {
                let (generation, mut manager) = following.manager().await?;
                let result = manager.req_packed_command(cmd).await;
                following.check(generation, result)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Direct(manager) => manager.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(following) => Box::pin(async move {
                let (generation, mut manager) = following.manager().await?;
                let result = manager.req_packed_commands(pipeline, offset, count).await;
                following.check(generation, result)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Direct(manager) => manager.get_db(),
            Self::Sentinel(following) => following.target.db(),
        }
    }
}
