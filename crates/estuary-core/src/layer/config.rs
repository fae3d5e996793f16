//! Settings shared by every channel layer, with Django Channels' defaults.

use std::sync::Arc;
use std::time::Duration;

use regex::{Regex, RegexSet};

use super::history::HistoryConfig;
use super::presence::PresenceConfig;
use crate::names::GroupName;

/// The settings every channel layer honours, named and defaulted as in
/// Channels' `CHANNEL_LAYERS[...]["CONFIG"]`.
///
/// ```
/// use std::time::Duration;
/// use estuary_core::ChannelLayerConfig;
///
/// let config = ChannelLayerConfig::default()
///     .with_capacity(200)
///     .with_channel_capacity_glob("http.request*", 10)
///     .unwrap();
/// assert_eq!(config.expiry(), Duration::from_secs(60));
/// assert_eq!(config.capacity_for("http.request.x"), 10);
/// assert_eq!(config.capacity_for("specific.a!b"), 200);
/// ```
#[derive(Debug, Clone)]
pub struct ChannelLayerConfig {
    capacity: usize,
    expiry: Duration,
    group_expiry: Duration,
    channel_capacity: Vec<(Regex, usize)>,
    max_channels: usize,
    max_bytes: usize,
    history: Option<Arc<HistoryPatterns>>,
    presence: PresenceConfig,
}

/// The recorded group patterns, compiled into one set.
#[derive(Debug)]
struct HistoryPatterns {
    globs: Vec<String>,
    configs: Vec<HistoryConfig>,
    set: RegexSet,
}

impl Default for ChannelLayerConfig {
    fn default() -> Self {
        Self {
            capacity: 100,
            expiry: Duration::from_secs(60),
            group_expiry: Duration::from_secs(86_400),
            channel_capacity: Vec::new(),
            max_channels: 100_000,
            max_bytes: 128 * 1024 * 1024,
            history: None,
            presence: PresenceConfig::default(),
        }
    }
}

impl ChannelLayerConfig {
    /// The most messages a channel holds before sends are refused (default 100).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long a message waits to be received before it is discarded (default 60 s).
    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// How long a group membership lasts without being renewed (default 86400 s).
    pub fn group_expiry(&self) -> Duration {
        self.group_expiry
    }

    /// The capacity of `channel`: the first matching per-pattern override, else
    /// the default capacity.
    pub fn capacity_for(&self, channel: &str) -> usize {
        self.channel_capacity
            .iter()
            .find(|(re, _)| re.is_match(channel))
            .map_or(self.capacity, |(_, c)| *c)
    }

    /// Whether some channels have a capacity of their own (a pattern
    /// override), so that [`capacity_for`](Self::capacity_for) must be asked
    /// per channel.
    ///
    /// ```
    /// use estuary_core::ChannelLayerConfig;
    ///
    /// assert!(!ChannelLayerConfig::default().has_channel_capacities());
    /// let config = ChannelLayerConfig::default().with_channel_capacity_glob("http.request*", 10).unwrap();
    /// assert!(config.has_channel_capacities());
    /// ```
    pub fn has_channel_capacities(&self) -> bool {
        !self.channel_capacity.is_empty()
    }

    /// Sets the default capacity (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sets the message expiry.
    pub fn with_expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// The most channels a layer that keeps them in memory holds (default
    /// 100,000). Sends, receives and group adds that would make a new
    /// channel past it fail with
    /// [`ChannelLayerError::TooManyChannels`](crate::ChannelLayerError::TooManyChannels):
    /// callers (a push API, say) cannot grow the layer without bound by
    /// naming new channels. The in-memory layer counts every channel;
    /// the connections' own channels are never refused (the server's
    /// connection limit bounds them). Redis layers leave the bound to
    /// Redis's `maxmemory`.
    pub fn max_channels(&self) -> usize {
        self.max_channels
    }

    /// The most bytes of messages a layer that keeps them in memory holds
    /// (default 128 MiB). A message is counted once however many members
    /// of a group hold it (they share it), from its first send until its
    /// last copy is dropped (its last member took it, or it expired); it
    /// counts its encoded size and 128 bytes besides. A send or
    /// group send that would go past it fails with
    /// [`ChannelLayerError::TooManyBytes`](crate::ChannelLayerError::TooManyBytes),
    /// so that producers that are not slowed by their own socket (an HTTP
    /// push, a background task) cannot grow the layer without bound with
    /// messages nobody reads. Redis layers leave the bound to Redis's
    /// `maxmemory`.
    ///
    /// ```
    /// use estuary_core::ChannelLayerConfig;
    ///
    /// let config = ChannelLayerConfig::default().with_max_bytes(64 << 20);
    /// assert_eq!(config.max_bytes(), 64 << 20);
    /// assert_eq!(ChannelLayerConfig::default().max_bytes(), 128 << 20);
    /// ```
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Records the groups whose names match a shell glob (`*`, `?`,
    /// `[...]`, as for [`with_channel_capacity_glob`](Self::with_channel_capacity_glob))
    /// with `config`: their group sends are kept and numbered (see the
    /// [history model](crate::layer::history)). Patterns are tried in the
    /// order they were added; the first that matches decides. With no
    /// pattern, nothing is recorded and group sends check nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use estuary_core::{ChannelLayerConfig, GroupName, HistoryConfig};
    ///
    /// let config = ChannelLayerConfig::default()
    ///     .with_history_glob("chat_*", HistoryConfig::new(100, Duration::from_secs(300)))
    ///     .unwrap();
    /// let lobby = GroupName::new("chat_lobby").unwrap();
    /// assert_eq!(config.history_for(&lobby).map(|h| h.size()), Some(100));
    /// assert!(config.history_for(&GroupName::new("user.42").unwrap()).is_none());
    /// assert_eq!(config.history_globs().collect::<Vec<_>>(), ["chat_*"]);
    /// ```
    pub fn with_history_glob(mut self, glob: &str, config: HistoryConfig) -> Result<Self, regex::Error> {
        let (mut globs, mut configs) = match self.history.take() {
            Some(patterns) => (patterns.globs.clone(), patterns.configs.clone()),
            None => (Vec::new(), Vec::new()),
        };
        globs.push(glob.to_owned());
        configs.push(config);
        let set = RegexSet::new(globs.iter().map(|g| glob_to_regex(g)))?;
        self.history = Some(Arc::new(HistoryPatterns { globs, configs, set }));
        Ok(self)
    }

    /// How `group` is recorded: the config of the first history pattern
    /// that matches it, or `None` (not recorded). Free when no pattern is
    /// configured; otherwise one match against the compiled set.
    pub fn history_for(&self, group: &GroupName) -> Option<&HistoryConfig> {
        let patterns = self.history.as_deref()?;
        let first = patterns.set.matches(group.as_str()).into_iter().next()?;
        patterns.configs.get(first)
    }

    /// The recorded group patterns, in the order they are tried.
    pub fn history_globs(&self) -> impl Iterator<Item = &str> {
        self.history
            .iter()
            .flat_map(|patterns| patterns.globs.iter().map(String::as_str))
    }

    /// How presence is announced and, on layers shared by processes,
    /// refreshed (see [`PresenceConfig`]).
    pub fn presence(&self) -> &PresenceConfig {
        &self.presence
    }

    /// Sets [`presence`](Self::presence).
    ///
    /// ```
    /// use std::time::Duration;
    /// use estuary_core::{ChannelLayerConfig, PresenceConfig};
    ///
    /// let config = ChannelLayerConfig::default()
    ///     .with_presence(PresenceConfig::default().with_interval(Duration::from_millis(250)));
    /// assert_eq!(config.presence().interval(), Duration::from_millis(250));
    /// ```
    pub fn with_presence(mut self, presence: PresenceConfig) -> Self {
        self.presence = presence;
        self
    }

    /// Sets [`max_bytes`](Self::max_bytes).
    pub fn with_max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    /// Sets [`max_channels`](Self::max_channels).
    pub fn with_max_channels(mut self, max: usize) -> Self {
        self.max_channels = max;
        self
    }

    /// Sets the group membership expiry.
    pub fn with_group_expiry(mut self, group_expiry: Duration) -> Self {
        self.group_expiry = group_expiry;
        self
    }

    /// Adds a capacity override for channel names matching a shell glob
    /// (`*`, `?`, `[...]`, as Python's `fnmatch`), matched against the full name.
    pub fn with_channel_capacity_glob(self, glob: &str, capacity: usize) -> Result<Self, regex::Error> {
        let re = Regex::new(&glob_to_regex(glob))?;
        Ok(self.with_channel_capacity_regex(re, capacity))
    }

    /// Adds a capacity override for channel names matching a regex (Python's
    /// `re.match`: anchored at the start only).
    pub fn with_channel_capacity_regex(mut self, regex: Regex, capacity: usize) -> Self {
        let anchored = Regex::new(&format!("^(?:{})", regex.as_str())).unwrap_or(regex);
        self.channel_capacity.push((anchored, capacity.max(1)));
        self
    }
}

/// Translates a shell glob into an anchored regex, as Python's `fnmatch.translate`.
fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^(?s:");
    let chars: Vec<char> = glob.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => match chars[i + 1..].iter().position(|&c| c == ']') {
                Some(close) => {
                    let body: String = chars[i + 1..i + 1 + close].iter().collect();
                    let body = body.replace('\\', "\\\\");
                    match body.strip_prefix('!') {
                        Some(rest) => out.push_str(&format!("[^{rest}]")),
                        None => out.push_str(&format!("[{body}]")),
                    }
                    i += close + 1;
                }
                None => out.push_str("\\["),
            },
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    out.push_str(")$");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_fnmatch() {
        let c = ChannelLayerConfig::default()
            .with_channel_capacity_glob("a?c", 1)
            .unwrap()
            .with_channel_capacity_glob("x[!0-9]*", 2)
            .unwrap()
            .with_channel_capacity_glob("dot.*", 3)
            .unwrap();
        assert_eq!(c.capacity_for("abc"), 1);
        assert_eq!(c.capacity_for("abcd"), 100);
        assert_eq!(c.capacity_for("xa1"), 2);
        assert_eq!(c.capacity_for("x1a"), 100);
        assert_eq!(c.capacity_for("dot.x"), 3);
        assert_eq!(c.capacity_for("dotx"), 100);
    }

    #[test]
    fn regex_is_anchored_at_start_only() {
        let c = ChannelLayerConfig::default().with_channel_capacity_regex(Regex::new("http").unwrap(), 5);
        assert_eq!(c.capacity_for("http.request"), 5);
        assert_eq!(c.capacity_for("xhttp"), 100);
    }
}
