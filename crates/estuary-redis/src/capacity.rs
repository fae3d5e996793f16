//! [`ChannelCapacity`]: one entry of channels_redis's `channel_capacity`
//! dict, in the form a file, a variable or a flag gives it.

use std::fmt;
use std::str::FromStr;

use estuary_core::ChannelLayerConfig;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The capacity of the channels whose names match a pattern: one entry of
/// channels_redis's `channel_capacity` (a glob key, or a compiled regex key),
/// tried in order; the first that matches decides, and a channel no entry
/// matches has the layer's `capacity`.
///
/// A file writes it as a table (`{ glob = "http.request*", capacity = 200 }`,
/// `{ regex = '^websocket\.send!.+', capacity = 20 }`) or as text, the form a
/// variable or a flag gives: `PATTERN=CAPACITY` for a glob and
/// `re:REGEX=CAPACITY` for a regular expression (split at the last `=`).
///
/// ```
/// use estuary_redis::{ChannelCapacity, LayerSettings};
///
/// let settings: LayerSettings = toml::from_str(
///     r#"
///     capacity = 100
///     channel_capacity = [
///         { glob = "http.request*", capacity = 200 },
///         { regex = '^websocket\.send!.+', capacity = 20 },
///         "worker.*=1000",
///     ]
///     "#,
/// )?;
/// settings.check()?;
/// let config = settings.layer_config();
/// assert_eq!(config.capacity_for("http.request.body"), 200);
/// assert_eq!(config.capacity_for("websocket.send!abc"), 20);
/// assert_eq!(config.capacity_for("worker.thumbnails"), 1000);
/// assert_eq!(config.capacity_for("specific.a!b"), 100);
///
/// let entry: ChannelCapacity = "re:^chat\\..*=5".parse()?;
/// assert_eq!(entry.to_string(), "re:^chat\\..*=5");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCapacity {
    /// What names it applies to.
    pub pattern: CapacityPattern,
    /// Messages such a channel holds (at least 1).
    pub capacity: usize,
}

/// How a [`ChannelCapacity`] matches channel names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapacityPattern {
    /// A shell glob (`*`, `?`, `[...]`, `[!...]`) matched against the whole
    /// name, as Python's `fnmatch` (a plain key of channels_redis's dict).
    Glob(String),
    /// A regular expression matched at the start of the name, as Python's
    /// `re.match` (a `re.compile(...)` key of channels_redis's dict).
    Regex(String),
}

/// The text of a [`ChannelCapacity`] is not `PATTERN=CAPACITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected PATTERN=CAPACITY or re:REGEX=CAPACITY, with CAPACITY a whole number")]
pub struct NotACapacity;

impl FromStr for ChannelCapacity {
    type Err = NotACapacity;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (pattern, capacity) = text.rsplit_once('=').ok_or(NotACapacity)?;
        let capacity = capacity.trim().parse().map_err(|_| NotACapacity)?;
        let pattern = match pattern.strip_prefix("re:") {
            Some(regex) => CapacityPattern::Regex(regex.to_owned()),
            None => CapacityPattern::Glob(pattern.to_owned()),
        };
        if pattern.text().is_empty() {
            return Err(NotACapacity);
        }
        Ok(Self { pattern, capacity })
    }
}

impl fmt::Display for ChannelCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            CapacityPattern::Glob(glob) => write!(f, "{glob}={}", self.capacity),
            CapacityPattern::Regex(regex) => write!(f, "re:{regex}={}", self.capacity),
        }
    }
}

impl CapacityPattern {
    /// The glob or the regular expression, as written.
    pub fn text(&self) -> &str {
        match self {
            Self::Glob(text) | Self::Regex(text) => text,
        }
    }
}

impl ChannelCapacity {
    /// `config` with this entry added after those it has; an error when the
    /// pattern does not compile.
    pub(crate) fn apply(&self, config: ChannelLayerConfig) -> Result<ChannelLayerConfig, regex::Error> {
        match &self.pattern {
            CapacityPattern::Glob(glob) => config.with_channel_capacity_glob(glob, self.capacity),
            CapacityPattern::Regex(regex) => {
                Ok(config.with_channel_capacity_regex(regex::Regex::new(regex)?, self.capacity))
            }
        }
    }
}

/// The table form, as serde sees it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    glob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    capacity: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Either {
    Text(String),
    Table(Table),
}

impl<'de> Deserialize<'de> for ChannelCapacity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let invalid = || {
            D::Error::custom(
                "expected \"PATTERN=CAPACITY\", \"re:REGEX=CAPACITY\", \
                 { glob = \"...\", capacity = N } or { regex = \"...\", capacity = N }",
            )
        };
        match Either::deserialize(deserializer).map_err(|_| invalid())? {
            Either::Text(text) => text.parse().map_err(D::Error::custom),
            Either::Table(table) => {
                let pattern = match (table.glob, table.regex) {
                    (Some(glob), None) => CapacityPattern::Glob(glob),
                    (None, Some(regex)) => CapacityPattern::Regex(regex),
                    _ => return Err(D::Error::custom("give one of glob and regex, with capacity")),
                };
                Ok(Self {
                    pattern,
                    capacity: table.capacity,
                })
            }
        }
    }
}

impl Serialize for ChannelCapacity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (glob, regex) = match &self.pattern {
            CapacityPattern::Glob(glob) => (Some(glob.clone()), None),
            CapacityPattern::Regex(regex) => (None, Some(regex.clone())),
        };
        Table {
            glob,
            regex,
            capacity: self.capacity,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_tables_read_alike_and_print_back() {
        let glob: ChannelCapacity = "http.response!*=10".parse().unwrap();
        assert_eq!(glob.pattern, CapacityPattern::Glob("http.response!*".into()));
        let regex: ChannelCapacity = "re:^a=b{1,2}=3".parse().unwrap();
        assert_eq!(regex.pattern, CapacityPattern::Regex("^a=b{1,2}".into()));
        assert_eq!(regex.capacity, 3);
        for bad in ["nocapacity", "x=", "x=-1", "=5", "re:=5", "x=many"] {
            assert_eq!(bad.parse::<ChannelCapacity>(), Err(NotACapacity), "{bad}");
        }
        #[derive(Deserialize, Serialize)]
        struct Doc {
            c: Vec<ChannelCapacity>,
        }
        let doc: Doc = toml::from_str(
            "c = [\"a*=1\", { regex = \"^b\", capacity = 2 }, { glob = \"c\", capacity = 3 }]",
        )
        .unwrap();
        assert_eq!(doc.c[0].pattern, CapacityPattern::Glob("a*".into()));
        let back: Doc = toml::from_str(&toml::to_string(&doc).unwrap()).unwrap();
        assert_eq!(back.c, doc.c);
        for bad in [
            "c = [{ glob = \"a\", regex = \"b\", capacity = 1 }]",
            "c = [{ capacity = 1 }]",
            "c = [5]",
            "c = [\"a\"]",
        ] {
            assert!(toml::from_str::<Doc>(bad).is_err(), "{bad}");
        }
    }
}
