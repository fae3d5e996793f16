//! Presence: who is in a group, counted once per user however many
//! connections they have, across processes.
//!
//! # The model
//!
//! * **One presence per key.** A connection joins a group's presence with a
//!   [`PresenceKey`] (the authenticated user's id; the channel name for an
//!   anonymous one, [`PresenceKey::for_channel`]) and small
//!   [`PresenceMeta`]data (a name, what the authenticator admitted, what the
//!   consumer adds; at most [`MAX_PRESENCE_META_BYTES`] as JSON). A user in
//!   two tabs is one presence with two connections. A connection holds at
//!   most one key per group; joining again replaces its key or metadata.
//!   The key's metadata is the one its latest join gave.
//! * **Join and leave are transitions of a key.** A key *joins* when its
//!   first connection arrives and *leaves* when its last connection goes; a
//!   second tab, or the first of two closing, changes only the count. A
//!   join that changes a present key's metadata (a name typed after
//!   joining) is announced as a join too: joins are upserts.
//! * **Leaving is automatic.** A connection leaves every presence it holds
//!   when its channel is closed ([`ChannelLayer::close_channel`](crate::ChannelLayer::close_channel)),
//!   which the session does on every way out (as for groups). On a layer
//!   shared by processes, entries are refreshed by their process every
//!   [`PresenceConfig::refresh`] and lapse after [`PresenceConfig::timeout`]
//!   unrefreshed: a process that dies without cleaning up loses its
//!   presences within that bound, and another process announces the leave.
//! * **Changes reach the group as ordinary layer events, coalesced.** Every
//!   [`PresenceConfig::interval`] at most (100 ms by default), the changes
//!   of a group are sent to the group itself as one `presence.diff` event
//!   ([`PresenceDiff`]), so any member hears them: an Estuary consumer
//!   (decode it into [`PresenceDiff`]) or a Django consumer in the same
//!   group (`async def presence_diff(self, event)`). The first change after
//!   a quiet interval leaves at once; a crowd arriving together costs one
//!   diff per interval, not one event per arrival per member (3,000 joins
//!   in one second: about ten diffs). A key that leaves and comes back
//!   within one interval with the same metadata (a reconnect) is not
//!   announced at all. The event, as JSON:
//!
//!   ```json
//!   {"type": "presence.diff", "group": "chat_lobby", "version": 1718000000000012,
//!    "joins": {"42": {"meta": {"name": "ann"}, "version": 1718000000000012}},
//!    "leaves": {"7": {"meta": {"name": "bob"}, "version": 1718000000000009}}}
//!   ```
//! * **Listing and counting are cheap.** [`Presence::presence_list`] gives
//!   every key with its metadata, connection count and version;
//!   [`Presence::presence_count`] the number of keys and connections.
//!
//! # Consistency
//!
//! Eventual, with a bound. Every transition of a group's key gets a
//! *version*, larger than any the group's keys had before; a diff entry
//! carries it, and a list carries the versions of its entries and of the
//! group when it was read. A member that starts from a list and applies each
//! diff entry only when its version is above the version it knows for that
//! key (and above the list's) holds the group's true presence, whatever the
//! order diffs arrive in ([`PresenceView`] does exactly this). Diffs from
//! two processes may arrive in either order; the versions decide. The
//! bound:
//!
//! * a join or leave, explicit or by a closed connection, is announced
//!   within [`PresenceConfig::interval`] (plus delivery);
//! * on a layer shared by processes, the presence of a process that died is
//!   gone from lists and announced within [`PresenceConfig::timeout`] plus
//!   [`PresenceConfig::refresh`] plus the interval.
//!
//! ```
//! use estuary_core::{
//!     ChannelLayer, GroupName, InMemoryChannelLayer, PresenceDiff, PresenceKey, PresenceMeta,
//! };
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let layer = InMemoryChannelLayer::default();
//! let presence = layer.presence().expect("the in-memory layer tracks presence");
//! let room = GroupName::new("chat_lobby").unwrap();
//! let (tab1, tab2) = (layer.new_channel().await.unwrap(), layer.new_channel().await.unwrap());
//! layer.group_add(&room, &tab1).await.unwrap();
//!
//! let ann = PresenceKey::new("user.42").unwrap();
//! let meta = PresenceMeta::new(serde_json::json!({"name": "ann"})).unwrap();
//! assert!(presence.presence_join(&room, &tab1, &ann, &meta).await.unwrap().first);
//! assert!(!presence.presence_join(&room, &tab2, &ann, &meta).await.unwrap().first);
//!
//! let list = presence.presence_list(&room).await.unwrap();
//! assert_eq!((list.entries.len(), list.entries[0].connections), (1, 2));
//!
//! // One join reaches the group, as an ordinary event.
//! let event = layer.receive(&tab1).await.unwrap();
//! let diff: PresenceDiff = event.decode().unwrap();
//! assert_eq!(event.message_type(), "presence.diff");
//! assert!(diff.joins.contains_key(&ann));
//! # });
//! ```

mod coalesce;
mod view;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ChannelLayerError, LayerFuture};
use crate::message::{Message, MessageError};
use crate::names::{ChannelName, GroupName};

pub use coalesce::{PresenceCoalescer, PresenceTransition};
pub use view::PresenceView;

/// The `type` of the event that announces a group's presence changes.
///
/// ```
/// use estuary_core::{GroupName, PRESENCE_DIFF, PresenceDiff};
///
/// let event = PresenceDiff::new(GroupName::new("room").unwrap()).to_message().unwrap();
/// assert_eq!(event.message_type(), PRESENCE_DIFF);
/// ```
pub const PRESENCE_DIFF: &str = "presence.diff";

/// The longest [`PresenceKey`], in bytes.
///
/// ```
/// use estuary_core::{MAX_PRESENCE_KEY_LEN, PresenceKey};
///
/// assert!(PresenceKey::new(&"k".repeat(MAX_PRESENCE_KEY_LEN)).is_ok());
/// assert!(PresenceKey::new(&"k".repeat(MAX_PRESENCE_KEY_LEN + 1)).is_err());
/// ```
pub const MAX_PRESENCE_KEY_LEN: usize = 256;

/// The most bytes a [`PresenceMeta`] may take as JSON.
///
/// ```
/// use estuary_core::{MAX_PRESENCE_META_BYTES, PresenceMeta};
///
/// // A JSON string of n characters takes n + 2 bytes.
/// let fits = "x".repeat(MAX_PRESENCE_META_BYTES - 2);
/// assert!(PresenceMeta::new(serde_json::json!(fits)).is_ok());
/// ```
pub const MAX_PRESENCE_META_BYTES: usize = 1024;

/// Who a presence is: a user id, or a connection's channel name for an
/// anonymous one. 1 to [`MAX_PRESENCE_KEY_LEN`] bytes of text without
/// control characters.
///
/// ```
/// use estuary_core::{ChannelName, PresenceKey};
///
/// let user = PresenceKey::new("42").unwrap();
/// assert_eq!(user.as_str(), "42");
/// assert!(PresenceKey::new("").is_err());
/// assert!(PresenceKey::new("a\nb").is_err());
/// let anonymous = PresenceKey::for_channel(&ChannelName::new("specific.x!y").unwrap());
/// assert_eq!(anonymous.as_str(), "specific.x!y");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PresenceKey(Arc<str>);

impl PresenceKey {
    /// Validates `key`.
    pub fn new(key: &str) -> Result<Self, PresenceError> {
        if key.is_empty() {
            return Err(PresenceError::InvalidKey("empty"));
        }
        if key.len() > MAX_PRESENCE_KEY_LEN {
            return Err(PresenceError::InvalidKey("longer than 256 bytes"));
        }
        if key.chars().any(char::is_control) {
            return Err(PresenceError::InvalidKey("holds a control character"));
        }
        Ok(Self(Arc::from(key)))
    }

    /// The key of an anonymous connection: its channel name.
    pub fn for_channel(channel: &ChannelName) -> Self {
        Self(Arc::from(channel.as_str()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PresenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PresenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresenceKey({:?})", &*self.0)
    }
}

impl Serialize for PresenceKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PresenceKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A presence's metadata: any JSON value of at most
/// [`MAX_PRESENCE_META_BYTES`] bytes (usually an object: a name, an avatar,
/// what the consumer adds). `null` when there is none.
///
/// ```
/// use estuary_core::PresenceMeta;
///
/// let meta = PresenceMeta::new(serde_json::json!({"name": "ann"})).unwrap();
/// assert_eq!(meta.as_value()["name"], "ann");
/// assert!(PresenceMeta::new(serde_json::json!("x".repeat(2000))).is_err());
/// assert!(PresenceMeta::default().as_value().is_null());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceMeta(serde_json::Value);

impl PresenceMeta {
    /// Checks the size of `value`.
    pub fn new(value: serde_json::Value) -> Result<Self, PresenceError> {
        let len = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
        if len > MAX_PRESENCE_META_BYTES {
            return Err(PresenceError::MetaTooLarge {
                len,
                limit: MAX_PRESENCE_META_BYTES,
            });
        }
        Ok(Self(value))
    }

    /// The metadata.
    pub fn as_value(&self) -> &serde_json::Value {
        &self.0
    }

    /// The metadata, by value.
    pub fn into_value(self) -> serde_json::Value {
        self.0
    }
}

impl Serialize for PresenceMeta {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PresenceMeta {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::new(value).map_err(serde::de::Error::custom)
    }
}

/// How presence changes are announced and, on a layer shared by processes,
/// kept alive.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::PresenceConfig;
///
/// let config = PresenceConfig::default();
/// assert_eq!(config.interval(), Duration::from_millis(100));
/// assert_eq!(config.refresh(), Duration::from_secs(5));
/// assert_eq!(config.timeout(), Duration::from_secs(15));
/// let config = config.with_timeout(Duration::from_secs(1));
/// assert!(config.refresh() < config.timeout(), "refresh is kept below the timeout");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceConfig {
    interval: Duration,
    refresh: Duration,
    timeout: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            refresh: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }
}

impl PresenceConfig {
    /// The longest a group's presence change waits to be announced; the
    /// changes within it go out as one diff (default 100 ms).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How often a process renews the presences it holds, on a layer shared
    /// by processes, and looks for lapsed ones to announce (default 5 s).
    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    /// How long a presence outlives its process's last renewal, on a layer
    /// shared by processes (default 15 s).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets [`interval`](Self::interval) (at least 1 ms).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Sets [`refresh`](Self::refresh) (at least 10 ms; kept below the
    /// timeout).
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh.max(Duration::from_millis(10));
        self.keep_order();
        self
    }

    /// Sets [`timeout`](Self::timeout) (at least 20 ms); the refresh is
    /// lowered to a third of it if it was not below it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(20));
        self.keep_order();
        self
    }

    fn keep_order(&mut self) {
        if self.refresh >= self.timeout {
            self.refresh = self.timeout / 3;
        }
    }
}

/// What a [`Presence::presence_join`] did.
///
/// ```
/// use estuary_core::PresenceJoined;
///
/// let joined = PresenceJoined { first: true, connections: 1 };
/// assert!(joined.first);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceJoined {
    /// This was the key's first connection in the group: the key joined.
    pub first: bool,
    /// The key's connections in the group now.
    pub connections: u32,
}

/// One key in a group's presence.
///
/// ```
/// use estuary_core::{ChannelLayer, GroupName, InMemoryChannelLayer, PresenceKey, PresenceMeta};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let layer = InMemoryChannelLayer::default();
/// let room = GroupName::new("room").unwrap();
/// let me = layer.new_channel().await.unwrap();
/// let presence = layer.presence().unwrap();
/// presence.presence_join(&room, &me, &PresenceKey::new("42").unwrap(), &PresenceMeta::default()).await.unwrap();
/// let entry = &presence.presence_list(&room).await.unwrap().entries[0];
/// assert_eq!((entry.key.as_str(), entry.connections), ("42", 1));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// Who.
    pub key: PresenceKey,
    /// Their metadata (from their latest join).
    pub meta: PresenceMeta,
    /// How many connections hold it.
    pub connections: u32,
    /// The version of its last announced transition.
    pub version: u64,
}

/// A group's presence, one entry per key, ordered by key.
///
/// ```
/// use estuary_core::PresenceList;
///
/// let list = PresenceList::default();
/// assert_eq!((list.keys(), list.connections()), (0, 0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceList {
    /// The keys.
    pub entries: Vec<PresenceEntry>,
    /// The group's version when it was read: diff entries at or below it
    /// are older than this list.
    pub version: u64,
}

impl PresenceList {
    /// The number of keys.
    pub fn keys(&self) -> usize {
        self.entries.len()
    }

    /// The number of connections.
    pub fn connections(&self) -> usize {
        self.entries.iter().map(|e| e.connections as usize).sum()
    }
}

/// How many are present in a group.
///
/// ```
/// use estuary_core::PresenceCount;
///
/// assert_eq!(PresenceCount::default(), PresenceCount { keys: 0, connections: 0 });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceCount {
    /// Distinct keys (users).
    pub keys: usize,
    /// Connections holding them.
    pub connections: usize,
}

/// One key's change in a [`PresenceDiff`].
///
/// ```
/// use estuary_core::{PresenceChange, PresenceMeta};
///
/// let change: PresenceChange = serde_json::from_str(r#"{"meta": {"name": "ann"}, "version": 7}"#).unwrap();
/// assert_eq!(change.meta, PresenceMeta::new(serde_json::json!({"name": "ann"})).unwrap());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    /// For a join, the key's metadata now; for a leave, the metadata it had.
    pub meta: PresenceMeta,
    /// The version of the transition.
    pub version: u64,
}

/// The `presence.diff` event: a group's presence changes over one
/// interval. Joins are upserts (a key that arrived, or whose metadata
/// changed); leaves are keys whose last connection went.
///
/// Decode it from the event (`message.decode::<PresenceDiff>()`, or a
/// variant `#[serde(rename = "presence.diff")] Presence(PresenceDiff)` of a
/// consumer's event enum) and apply it with [`PresenceView`].
///
/// ```
/// use estuary_core::{GroupName, PresenceChange, PresenceDiff, PresenceKey, PresenceMeta};
///
/// let mut diff = PresenceDiff::new(GroupName::new("chat_lobby").unwrap());
/// diff.joins.insert(
///     PresenceKey::new("42").unwrap(),
///     PresenceChange { meta: PresenceMeta::default(), version: 3 },
/// );
/// diff.version = 3;
/// let event = diff.to_message().unwrap();
/// assert_eq!(event.message_type(), "presence.diff");
/// assert_eq!(event.decode::<PresenceDiff>().unwrap(), diff);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceDiff {
    /// The group.
    pub group: GroupName,
    /// The highest version in this diff.
    pub version: u64,
    /// Keys that joined, or whose metadata changed.
    #[serde(default)]
    pub joins: BTreeMap<PresenceKey, PresenceChange>,
    /// Keys that left.
    #[serde(default)]
    pub leaves: BTreeMap<PresenceKey, PresenceChange>,
}

impl PresenceDiff {
    /// An empty diff for `group`.
    pub fn new(group: GroupName) -> Self {
        Self {
            group,
            version: 0,
            joins: BTreeMap::new(),
            leaves: BTreeMap::new(),
        }
    }

    /// True when it announces nothing.
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    /// The layer event: this diff with `"type": "presence.diff"`.
    pub fn to_message(&self) -> Result<Message, MessageError> {
        #[derive(Serialize)]
        struct Event<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            group: &'a GroupName,
            version: u64,
            joins: &'a BTreeMap<PresenceKey, PresenceChange>,
            leaves: &'a BTreeMap<PresenceKey, PresenceChange>,
        }
        Message::encode(&Event {
            kind: PRESENCE_DIFF,
            group: &self.group,
            version: self.version,
            joins: &self.joins,
            leaves: &self.leaves,
        })
    }
}

/// A presence operation failed.
///
/// ```
/// use estuary_core::{PresenceError, PresenceKey};
///
/// assert!(matches!(PresenceKey::new(""), Err(PresenceError::InvalidKey(_))));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The key is empty, too long, or holds a control character.
    #[error("invalid presence key: {0}")]
    InvalidKey(&'static str),
    /// The metadata is larger than [`MAX_PRESENCE_META_BYTES`] as JSON.
    #[error("presence metadata is {len} bytes as JSON; at most {limit} are allowed")]
    MetaTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Only an open connection of this process can hold a presence (so
    /// that closing it, or the process dying, takes the presence away).
    #[error("channel {0} is not an open channel of this process")]
    NotLocal(ChannelName),
    /// The layer does not track presence.
    #[error("this channel layer does not track presence")]
    Unsupported,
    /// The layer's backend failed.
    #[error(transparent)]
    Layer(#[from] ChannelLayerError),
}

/// A layer that tracks who is in its groups: the optional presence
/// capability of a [`ChannelLayer`](crate::ChannelLayer), reached through
/// [`ChannelLayer::presence`](crate::ChannelLayer::presence). See the
/// [module](self) for the model and the consistency it guarantees.
///
/// Consumers use it through their [`Context`](crate::Context)
/// (`presence_join`, `presence_leave`, `presence_list`), which passes the
/// connection's own channel; anything holding a layer (an HTTP handler
/// answering "who is online") lists and counts through it directly.
///
/// ```
/// use estuary_core::{ChannelLayer, ChannelLayerHandle, GroupName, PresenceError};
///
/// async fn online(layer: &ChannelLayerHandle, room: &GroupName) -> Result<usize, PresenceError> {
///     let presence = layer.presence().ok_or(PresenceError::Unsupported)?;
///     Ok(presence.presence_count(room).await?.keys)
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let layer = ChannelLayerHandle::default();
/// assert_eq!(online(&layer, &GroupName::new("chat_lobby").unwrap()).await.unwrap(), 0);
/// # });
/// ```
pub trait Presence: Send + Sync {
    /// Adds `channel`, an open connection of this process, to `group`'s
    /// presence as `key` with `meta` (or changes its key or metadata). The
    /// key joins if this is its first connection; a changed metadata is
    /// announced too.
    fn presence_join<'a>(
        &'a self,
        group: &'a GroupName,
        channel: &'a ChannelName,
        key: &'a PresenceKey,
        meta: &'a PresenceMeta,
    ) -> LayerFuture<'a, Result<PresenceJoined, PresenceError>>;

    /// Takes `channel` out of `group`'s presence; the key leaves if it was
    /// its last connection. True when the channel held a presence there.
    fn presence_leave<'a>(
        &'a self,
        group: &'a GroupName,
        channel: &'a ChannelName,
    ) -> LayerFuture<'a, Result<bool, PresenceError>>;

    /// Every key present in `group`.
    fn presence_list<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> LayerFuture<'a, Result<PresenceList, PresenceError>>;

    /// How many keys and connections are present in `group`.
    fn presence_count<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> LayerFuture<'a, Result<PresenceCount, PresenceError>>;
}
