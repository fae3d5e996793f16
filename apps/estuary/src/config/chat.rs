//! `[presence]`, `[history]` and `[chat]`: who is in a room and what it
//! said, for the channel layer (the library's [`PresenceSettings`] and
//! [`HistorySettings`]) and for the chat application ([`ChatSettings`]).
//!
//! [`PresenceSettings`]: estuary::PresenceSettings

use std::time::Duration;

use estuary::{ChannelLayerConfig, ChannelLayerHandle, HistorySettings, InMemoryChannelLayer};
use serde::{Deserialize, Serialize};

use super::{Config, Invalid};

/// `[chat]`: how the chat rooms use presence and history.
///
/// ```
/// use estuary_cli::config::ChatSettings;
///
/// let chat: ChatSettings = toml::from_str("leave_delay_ms = 0")?;
/// assert_eq!(chat.leave_delay().as_millis(), 0);
/// assert_eq!(chat.recent_history, ChatSettings::default().recent_history);
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatSettings {
    /// Milliseconds a closed connection's member stays present: a page
    /// that reconnects within it (a network blip, a reload, a server
    /// restart) is neither announced as leaving nor as joining again
    /// (0: a member leaves with its last connection).
    pub leave_delay_ms: u64,
    /// The recorded messages of its room a page gets when it joins without
    /// a position (`?since=`), marked `"history": true` (0: none).
    pub recent_history: usize,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            leave_delay_ms: 3000,
            recent_history: 50,
        }
    }
}

impl ChatSettings {
    /// The most messages a joining page gets from the history.
    pub const MAX_RECENT_HISTORY: usize = 1000;

    /// [`leave_delay_ms`](Self::leave_delay_ms) as a duration.
    pub fn leave_delay(&self) -> Duration {
        Duration::from_millis(self.leave_delay_ms)
    }
}

/// `[history]`'s defaults in `estuary serve`: the library's, with the chat
/// rooms' groups recorded.
pub(super) fn history_defaults() -> HistorySettings {
    HistorySettings {
        groups: vec!["chat_*".into()],
        ..HistorySettings::default()
    }
}

impl Config {
    /// The channel layer's settings: `[layer]`'s bounds, `[presence]` and
    /// the groups `[history]` records.
    pub fn layer_config(&self) -> anyhow::Result<ChannelLayerConfig> {
        let config = self
            .layer
            .layer_config()
            .with_presence(self.presence.presence_config());
        self.history
            .apply(config)
            .map_err(|e| anyhow::anyhow!("history.{e}"))
    }

    /// The configured channel layer: Redis of `layer.flavour` when hosts
    /// are given, else in-memory, with [`layer_config`](Self::layer_config).
    /// Must be called inside the runtime (the Redis layer starts its tasks).
    pub fn channel_layer(&self) -> anyhow::Result<ChannelLayerHandle> {
        let config = self.layer_config()?;
        if self.layer.redis.is_empty() {
            return Ok(ChannelLayerHandle::new(InMemoryChannelLayer::new(config)));
        }
        Ok(self
            .layer
            .flavour
            .layer(self.layer.redis_config().with_layer_config(config))?)
    }

    /// Checks `[presence]`, `[history]` and `[chat]`.
    pub(super) fn validate_chat(&self) -> Result<(), Invalid> {
        let invalid = |key: String, error: anyhow::Error| Invalid { key, error };
        self.presence
            .check()
            .map_err(|e| invalid(format!("presence.{}", e.key()), anyhow::anyhow!("presence.{e}")))?;
        self.history
            .check()
            .map_err(|e| invalid(format!("history.{}", e.key()), anyhow::anyhow!("history.{e}")))?;
        if self.chat.recent_history > ChatSettings::MAX_RECENT_HISTORY {
            return Err(invalid(
                "chat.recent_history".into(),
                anyhow::anyhow!(
                    "chat.recent_history: at most {}",
                    ChatSettings::MAX_RECENT_HISTORY
                ),
            ));
        }
        Ok(())
    }
}
