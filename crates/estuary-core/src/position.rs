//! Where a recorded group's stream is: an offset within an [`Epoch`]
//! ([`StreamPosition`]). Its own module so that [`Message`](crate::Message),
//! which carries a position, and the channel layer, which records them,
//! both depend on it and not on each other. The model is in
//! [`layer::history`](crate::layer::history).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The length of an [`Epoch`], in characters.
///
/// ```
/// use estuary_core::{EPOCH_LEN, Epoch};
///
/// assert_eq!(Epoch::random().as_str().len(), EPOCH_LEN);
/// ```
pub const EPOCH_LEN: usize = 8;

/// The name of one unbroken run of a group's offsets: it changes when the
/// history is lost, so that offsets from before are never taken for
/// offsets after. Eight ASCII letters and digits.
///
/// ```
/// use estuary_core::Epoch;
///
/// let epoch: Epoch = "k3vQ9cXa".parse().unwrap();
/// assert_eq!(epoch.as_str(), "k3vQ9cXa");
/// assert!("short".parse::<Epoch>().is_err());
/// assert_ne!(Epoch::random(), Epoch::random());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch([u8; EPOCH_LEN]);

/// A string is not an [`Epoch`]: it must be eight ASCII letters and digits.
///
/// ```
/// use estuary_core::{Epoch, InvalidEpoch};
///
/// assert_eq!("no!".parse::<Epoch>(), Err(InvalidEpoch));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an epoch is {EPOCH_LEN} ASCII letters and digits")]
pub struct InvalidEpoch;

impl Epoch {
    /// A new random epoch (about 47 bits).
    pub fn random() -> Self {
        const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let random = uuid::Uuid::new_v4().as_u128();
        let mut out = [0u8; EPOCH_LEN];
        for (i, c) in out.iter_mut().enumerate() {
            *c = ALPHABET[((random >> (i * 16)) as u16 % 62) as usize];
        }
        Self(out)
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl FromStr for Epoch {
    type Err = InvalidEpoch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; EPOCH_LEN] = s.as_bytes().try_into().map_err(|_| InvalidEpoch)?;
        if bytes.iter().all(u8::is_ascii_alphanumeric) {
            Ok(Self(bytes))
        } else {
            Err(InvalidEpoch)
        }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.as_str())
    }
}

impl Serialize for Epoch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a recorded group's stream is: the offset of a message (or of the
/// last one, for the group's current position) within an [`Epoch`].
/// Offset 0 is the position before the epoch's first message.
///
/// It is what a client keeps and sends back when it reconnects; as JSON,
/// `{"offset": 17, "epoch": "k3vQ9cXa"}`.
///
/// ```
/// use estuary_core::StreamPosition;
///
/// let p: StreamPosition = serde_json::from_str(r#"{"offset": 17, "epoch": "k3vQ9cXa"}"#).unwrap();
/// assert_eq!(p.offset, 17);
/// assert_eq!(serde_json::to_value(p).unwrap()["epoch"], "k3vQ9cXa");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The message's offset: the group's recorded messages count from 1.
    pub offset: u64,
    /// The run of offsets it belongs to.
    pub epoch: Epoch,
}

impl StreamPosition {
    /// A position.
    pub fn new(offset: u64, epoch: Epoch) -> Self {
        Self { offset, epoch }
    }
}
