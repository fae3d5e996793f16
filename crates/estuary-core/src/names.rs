//! Validated channel and group names.
//!
//! Channels checks every name that reaches a channel layer; Estuary checks it
//! once, where the name enters the program, and carries the proof in the type.
//! The rules are Django Channels' own (`channels.layers.BaseChannelLayer`), so a
//! name that Estuary accepts is one a Django process accepts too.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The longest name Django Channels accepts: names must be *under* 100 characters.
pub const MAX_NAME_LEN: usize = 99;

/// Why a string is not a valid channel or group name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name has 100 characters or more.
    #[error("name is {len} characters long; names must be under 100")]
    TooLong {
        /// The length of the rejected name, in bytes.
        len: usize,
    },
    /// The name holds a character outside the allowed set.
    #[error("name contains {found:?} at byte {at}; allowed are ASCII letters, digits, '-', '_' and '.'")]
    InvalidChar {
        /// The offending character.
        found: char,
        /// Its byte offset in the name.
        at: usize,
    },
    /// A `!` in a group name, a second `!`, or nothing before the `!`.
    #[error("'!' may appear once, after a non-empty prefix, and only in channel names")]
    MisplacedBang,
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn check(name: &str, bang_allowed: bool) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    let mut seen_bang = false;
    for (at, c) in name.char_indices() {
        if c == '!' {
            if !bang_allowed || seen_bang || at == 0 {
                return Err(NameError::MisplacedBang);
            }
            seen_bang = true;
        } else if !allowed(c) {
            return Err(NameError::InvalidChar { found: c, at });
        }
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, bang = $bang:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `name`.
            pub fn new(name: &str) -> Result<Self, NameError> {
                check(name, $bang)?;
                Ok(Self(Arc::from(name)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(&s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A channel name: the address of one consumer (or one worker queue).
    ///
    /// ASCII letters, digits, `-`, `_` and `.`, under 100 characters. A
    /// *process-specific* name has one `!`: everything up to and including it is
    /// the process's prefix (its *non-local* part), as channel layers make them
    /// with [`ChannelLayer::new_channel`](crate::ChannelLayer::new_channel).
    ///
    /// ```
    /// use estuary_core::ChannelName;
    ///
    /// let worker = ChannelName::new("thumbnails.resize").unwrap();
    /// assert!(!worker.is_process_specific());
    ///
    /// let conn = ChannelName::new("specific.abc!def").unwrap();
    /// assert_eq!(conn.non_local_name(), "specific.abc!");
    ///
    /// assert!(ChannelName::new("bad name").is_err());
    /// assert!(ChannelName::new(&"x".repeat(100)).is_err());
    /// ```
    ChannelName,
    bang = true
);

name_type!(
    /// A group name: a set of channels that receive the same messages.
    ///
    /// ASCII letters, digits, `-`, `_` and `.`, under 100 characters, no `!`.
    ///
    /// ```
    /// use estuary_core::GroupName;
    ///
    /// let room = GroupName::new("chat_lobby").unwrap();
    /// assert_eq!(room.as_str(), "chat_lobby");
    /// assert!(GroupName::new("chat lobby").is_err());
    /// assert!(GroupName::new("a!b").is_err());
    /// ```
    GroupName,
    bang = false
);

impl ChannelName {
    /// True when the name has a `!`: it belongs to one process's consumers.
    pub fn is_process_specific(&self) -> bool {
        self.0.contains('!')
    }

    /// Everything up to and including the `!`, or the whole name when it has none.
    ///
    /// Every channel of one process shares this part; a Redis layer stores their
    /// messages under one key named after it.
    pub fn non_local_name(&self) -> &str {
        match self.0.find('!') {
            Some(i) => &self.0[..=i],
            None => &self.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rules() {
        assert!(ChannelName::new("a").is_ok());
        assert!(ChannelName::new("a-b_c.d").is_ok());
        assert!(ChannelName::new("specific.x!").is_ok());
        assert!(ChannelName::new(&"a".repeat(99)).is_ok());
        assert_eq!(
            ChannelName::new(&"a".repeat(100)),
            Err(NameError::TooLong { len: 100 })
        );
        assert_eq!(ChannelName::new(""), Err(NameError::Empty));
        assert_eq!(ChannelName::new("!a"), Err(NameError::MisplacedBang));
        assert_eq!(ChannelName::new("a!b!c"), Err(NameError::MisplacedBang));
        assert!(matches!(
            ChannelName::new("caf\u{e9}"),
            Err(NameError::InvalidChar {
                found: '\u{e9}',
                at: 3
            })
        ));
        assert!(ChannelName::new("a b").is_err());
    }

    #[test]
    fn group_rules() {
        assert!(GroupName::new("chat_lobby").is_ok());
        assert_eq!(GroupName::new("a!b"), Err(NameError::MisplacedBang));
        assert!(GroupName::new(&"g".repeat(100)).is_err());
    }

    #[test]
    fn serde_round_trip_validates() {
        let g: GroupName = serde_json::from_str("\"room.1\"").unwrap();
        assert_eq!(g.as_str(), "room.1");
        assert!(serde_json::from_str::<GroupName>("\"room 1\"").is_err());
    }
}
