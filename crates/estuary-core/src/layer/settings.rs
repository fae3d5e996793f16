//! [`PresenceSettings`] and [`HistorySettings`]: presence and history as a
//! configuration file holds them (`[presence]` and `[history]` of `estuary
//! serve`), with the `serde` feature: plain values, checked by `check`,
//! made into the library's [`PresenceConfig`] and [`HistoryConfig`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::ChannelLayerConfig;
use super::history::HistoryConfig;
use super::presence::PresenceConfig;

/// A [`PresenceConfig`] as plain values, the form serde reads and writes
/// (`[presence]` of `estuary serve`'s TOML file): milliseconds as whole
/// numbers. Missing keys take [`PresenceConfig::default`]'s values.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::PresenceSettings;
///
/// let settings: PresenceSettings = serde_json::from_str(r#"{"refresh_ms": 300, "timeout_ms": 1000}"#)?;
/// settings.check()?;
/// let config = settings.presence_config();
/// assert_eq!(config.timeout(), Duration::from_secs(1));
/// assert_eq!(config.interval(), Duration::from_millis(100), "the default");
///
/// let wrong = PresenceSettings { refresh_ms: 2000, timeout_ms: 1000, ..PresenceSettings::default() };
/// assert_eq!(wrong.check().unwrap_err().key(), "refresh_ms");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSettings {
    /// Milliseconds a group's presence change may wait to be announced;
    /// the changes within it go out as one diff (at least 1).
    pub interval_ms: u64,
    /// Milliseconds between a process's renewals of the presences it holds,
    /// on a layer shared by processes (at least 10, below `timeout_ms`).
    pub refresh_ms: u64,
    /// Milliseconds a presence outlives its process's last renewal, on a
    /// layer shared by processes: the bound on a dead process's presences
    /// (at least 20).
    pub timeout_ms: u64,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        let config = PresenceConfig::default();
        Self {
            interval_ms: millis(config.interval()),
            refresh_ms: millis(config.refresh()),
            timeout_ms: millis(config.timeout()),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Why a [`PresenceSettings`] is refused.
///
/// ```
/// use estuary_core::{PresenceSettings, PresenceSettingsError};
///
/// let settings = PresenceSettings { interval_ms: 0, ..PresenceSettings::default() };
/// assert_eq!(settings.check(), Err(PresenceSettingsError::TooSmall { key: "interval_ms", min: 1 }));
/// assert_eq!(settings.check().unwrap_err().to_string(), "interval_ms: must be at least 1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PresenceSettingsError {
    /// A value below its minimum.
    #[error("{key}: must be at least {min}")]
    TooSmall {
        /// `interval_ms`, `refresh_ms` or `timeout_ms`.
        key: &'static str,
        /// Its minimum.
        min: u64,
    },
    /// `refresh_ms` is not below `timeout_ms`: presences would lapse
    /// between two renewals.
    #[error("refresh_ms: must be below timeout_ms")]
    RefreshNotBelowTimeout,
}

impl PresenceSettingsError {
    /// The key whose value is wrong.
    pub fn key(&self) -> &'static str {
        match self {
            Self::TooSmall { key, .. } => key,
            Self::RefreshNotBelowTimeout => "refresh_ms",
        }
    }
}

impl PresenceSettings {
    /// Checks every value against its minimum, and that presences are
    /// renewed before they lapse.
    pub fn check(&self) -> Result<(), PresenceSettingsError> {
        for (key, value, min) in [
            ("interval_ms", self.interval_ms, 1),
            ("refresh_ms", self.refresh_ms, 10),
            ("timeout_ms", self.timeout_ms, 20),
        ] {
            if value < min {
                return Err(PresenceSettingsError::TooSmall { key, min });
            }
        }
        if self.refresh_ms >= self.timeout_ms {
            return Err(PresenceSettingsError::RefreshNotBelowTimeout);
        }
        Ok(())
    }

    /// The library's form (values out of range are raised to their
    /// minimum, as [`PresenceConfig`]'s setters do: call
    /// [`check`](Self::check) first to refuse them).
    pub fn presence_config(&self) -> PresenceConfig {
        PresenceConfig::default()
            .with_interval(Duration::from_millis(self.interval_ms))
            .with_timeout(Duration::from_millis(self.timeout_ms))
            .with_refresh(Duration::from_millis(self.refresh_ms))
    }
}

/// Which groups a channel layer records, and how, as plain values: the form
/// serde reads and writes (`[history]` of `estuary serve`'s TOML file),
/// seconds as whole numbers. Every pattern of `groups` is recorded with the
/// same size and ttls. Missing keys take the defaults: no group recorded,
/// 100 messages for 300 s each, the position kept a day.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::{ChannelLayerConfig, GroupName, HistorySettings};
///
/// let settings: HistorySettings = serde_json::from_str(r#"{"groups": ["chat_*"], "size": 50}"#)?;
/// settings.check()?;
/// let config = settings.apply(ChannelLayerConfig::default())?;
/// let lobby = GroupName::new("chat_lobby")?;
/// assert_eq!(config.history_for(&lobby).map(|h| (h.size(), h.ttl())), Some((50, Duration::from_secs(300))));
///
/// let none = HistorySettings::default();
/// assert!(none.apply(ChannelLayerConfig::default())?.history_for(&lobby).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySettings {
    /// Shell globs (`*`, `?`, `[...]`) of the groups to record, tried in
    /// order (`["chat_*"]`); empty: nothing is recorded.
    pub groups: Vec<String>,
    /// Messages a recorded group keeps (at least 1).
    pub size: usize,
    /// Seconds a recorded message is kept (at least 1).
    pub ttl: u64,
    /// Seconds a group's epoch and last offset survive a silence (at least
    /// `ttl`): a client back within it after seeing everything recovers
    /// nothing, successfully.
    pub meta_ttl: u64,
}

impl Default for HistorySettings {
    fn default() -> Self {
        let config = HistoryConfig::new(100, Duration::from_secs(300));
        Self {
            groups: Vec::new(),
            size: config.size(),
            ttl: config.ttl().as_secs(),
            meta_ttl: config.meta_ttl().as_secs(),
        }
    }
}

/// Why a [`HistorySettings`] is refused.
///
/// ```
/// use estuary_core::{HistorySettings, HistorySettingsError};
///
/// let settings = HistorySettings { groups: vec!["".into()], ..HistorySettings::default() };
/// assert_eq!(settings.check(), Err(HistorySettingsError::EmptyPattern { index: 0 }));
/// assert_eq!(settings.check().unwrap_err().key(), "groups");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HistorySettingsError {
    /// `size` or `ttl` is 0.
    #[error("{key}: must be at least 1")]
    Zero {
        /// `size` or `ttl`.
        key: &'static str,
    },
    /// `meta_ttl` is shorter than `ttl`.
    #[error("meta_ttl: must be at least ttl")]
    MetaTtlBelowTtl,
    /// A pattern of `groups` is empty.
    #[error("groups[{index}]: a pattern cannot be empty")]
    EmptyPattern {
        /// Its place in `groups`, from 0.
        index: usize,
    },
    /// The patterns of `groups` do not compile (too large a set).
    #[error("groups: the patterns do not compile")]
    InvalidPatterns,
}

impl HistorySettingsError {
    /// The key whose value is wrong.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Zero { key } => key,
            Self::MetaTtlBelowTtl => "meta_ttl",
            Self::EmptyPattern { .. } | Self::InvalidPatterns => "groups",
        }
    }
}

impl HistorySettings {
    /// Checks every value (the patterns compile, `size` and `ttl` are at
    /// least 1, `meta_ttl` at least `ttl`).
    pub fn check(&self) -> Result<(), HistorySettingsError> {
        if self.size == 0 {
            return Err(HistorySettingsError::Zero { key: "size" });
        }
        if self.ttl == 0 {
            return Err(HistorySettingsError::Zero { key: "ttl" });
        }
        if self.meta_ttl < self.ttl {
            return Err(HistorySettingsError::MetaTtlBelowTtl);
        }
        if let Some(index) = self.groups.iter().position(|g| g.is_empty()) {
            return Err(HistorySettingsError::EmptyPattern { index });
        }
        self.apply(ChannelLayerConfig::default()).map(drop)
    }

    /// How each recorded group is kept.
    pub fn history_config(&self) -> HistoryConfig {
        HistoryConfig::new(self.size, Duration::from_secs(self.ttl))
            .with_meta_ttl(Duration::from_secs(self.meta_ttl))
    }

    /// `config` recording the groups of [`groups`](Self::groups) with
    /// [`history_config`](Self::history_config).
    pub fn apply(&self, config: ChannelLayerConfig) -> Result<ChannelLayerConfig, HistorySettingsError> {
        let history = self.history_config();
        self.groups.iter().try_fold(config, |config, glob| {
            config
                .with_history_glob(glob, history)
                .map_err(|_| HistorySettingsError::InvalidPatterns)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GroupName;

    #[test]
    fn the_defaults_are_the_libraries_and_round_trip() {
        let presence = PresenceSettings::default();
        assert_eq!(presence.presence_config(), PresenceConfig::default());
        let text = serde_json::to_string(&presence).unwrap();
        assert_eq!(serde_json::from_str::<PresenceSettings>(&text).unwrap(), presence);
        assert_eq!(serde_json::from_str::<PresenceSettings>("{}").unwrap(), presence);
        presence.check().unwrap();

        let history = HistorySettings::default();
        history.check().unwrap();
        let text = serde_json::to_string(&history).unwrap();
        assert_eq!(serde_json::from_str::<HistorySettings>(&text).unwrap(), history);
        assert_eq!(history.history_config().meta_ttl(), Duration::from_secs(86_400));
    }

    #[test]
    fn an_invalid_value_names_its_key() {
        for (json, key) in [
            (r#"{"refresh_ms": 5}"#, "refresh_ms"),
            (r#"{"timeout_ms": 10, "refresh_ms": 10}"#, "timeout_ms"),
            (r#"{"timeout_ms": 100, "refresh_ms": 100}"#, "refresh_ms"),
        ] {
            let settings: PresenceSettings = serde_json::from_str(json).unwrap();
            assert_eq!(settings.check().unwrap_err().key(), key, "{json}");
        }
        for (json, key) in [
            (r#"{"size": 0}"#, "size"),
            (r#"{"ttl": 0}"#, "ttl"),
            (r#"{"ttl": 600, "meta_ttl": 60}"#, "meta_ttl"),
            (r#"{"groups": ["chat_*", ""]}"#, "groups"),
        ] {
            let settings: HistorySettings = serde_json::from_str(json).unwrap();
            assert_eq!(settings.check().unwrap_err().key(), key, "{json}");
        }
        assert!(serde_json::from_str::<HistorySettings>(r#"{"pattern": []}"#).is_err());
    }

    #[test]
    fn patterns_are_tried_in_order() {
        let settings = HistorySettings {
            groups: vec!["chat_*".into(), "news.[!x]*".into()],
            ..HistorySettings::default()
        };
        let config = settings.apply(ChannelLayerConfig::default()).unwrap();
        let recorded = |g: &str| config.history_for(&GroupName::new(g).unwrap()).is_some();
        assert!(recorded("chat_lobby") && recorded("news.a"));
        assert!(!recorded("news.x1") && !recorded("user.42"));
    }
}
